//! The control socket: a Unix socket (mode 0600) serving newline-delimited
//! JSON. Connections from other users are refused; oversized and malformed
//! lines get an error reply and change nothing. Requests go to the cluster's
//! owner; this module only reads lines and writes replies.
//!
//! `protocol` is the wire format, `views` the typed replies, `error` the
//! typed refusals: the agent, the CLI and the metrics share them.

pub mod error;
pub mod protocol;
pub mod views;

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use error::ControlError;
use views::Reply;

/// A control request's answer: its view, or why it was refused.
pub type ControlReply = Result<Reply, ControlError>;

/// What the control socket needs of the cluster's owner.
pub trait ControlOwner: Clone + Send + Sync + 'static {
    /// Carries out one request and waits for its reply.
    fn call(&self, req: Request) -> impl std::future::Future<Output = ControlReply> + Send;
}
use protocol::{error_line, ok_line, Request, MAX_REQUEST_BYTES};

/// Binds the socket, replacing a stale one but never a live agent's.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another agent is serving {}; stop it or set `control_socket` to another path", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, owner: impl ControlOwner) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, owner.clone()));
            }
            Err(e) => back_off("control socket: accepting a connection", e).await,
        }
    }
}

/// A socket operation that failed (EMFILE on accept, an ICMP error on
/// receive): log it and wait a little instead of spinning on it.
pub async fn back_off(what: &str, e: std::io::Error) {
    log::warn!("{what}: {e}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection(stream: UnixStream, owner: impl ControlOwner) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let peer = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    if peer != Some(me) {
        let _ = write
            .write_all(
                format!("{}\n", error_line(&format!("permission denied: the control socket serves uid {me} only")))
                    .as_bytes(),
            )
            .await;
        return;
    }
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let n = match (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let reply = if line.len() > MAX_REQUEST_BYTES && !line.ends_with(b"\n") {
            // Too long: answer, then drop the connection (the rest of the
            // line cannot be told apart from the next request).
            let reply =
                error_line(&format!("request too large: more than {MAX_REQUEST_BYTES} bytes without a newline"));
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
            return;
        } else {
            match std::str::from_utf8(&line) {
                Err(_) => error_line("malformed request: not UTF-8"),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => match Request::parse(text.trim()) {
                    Err(e) => error_line(&e.to_string()),
                    Ok(req) => match owner.call(req).await {
                        Ok(reply) => ok_line(&reply),
                        Err(e) => error_line(&e.to_string()),
                    },
                },
            }
        };
        if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}
