//! The operator's side of the control socket: send one request, print the
//! reply as a table (`print`) or as JSON with `--json`.

mod print;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::control::{protocol::Request, views::ShardView};

/// Sends `req` and returns the reply's `data`, or the agent's error.
pub fn send(socket: &Path, req: &Request) -> Result<Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is `proxy-agent run` up? `--socket` or `--config` picks another socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{}\n", req.to_line()).as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).context("reading the agent's reply")?;
    if line.is_empty() {
        bail!("the agent closed the connection without a reply");
    }
    let reply: Value = serde_json::from_str(&line).context("the agent's reply is not JSON")?;
    if reply["ok"] == Value::Bool(true) {
        return Ok(reply["data"].clone());
    }
    Err(anyhow!("{}", reply["error"].as_str().unwrap_or("the agent refused the request without saying why")))
}

/// Prints the reply of `req` for a human, read through its typed view: a
/// reply that does not match the view is an error, never a "-".
pub fn print_human(req: &Request, data: &Value) -> Result<()> {
    fn view<T: serde::de::DeserializeOwned>(data: &Value) -> Result<T> {
        T::deserialize(data)
            .context("the agent's reply does not match this CLI's version; use the CLI of the agent's release")
    }
    match req {
        Request::Status => print::status(&view(data)?),
        Request::Shards => print::shards(&view::<Vec<ShardView>>(data)?),
        Request::Sessions { .. } => print::sessions(&view::<Vec<_>>(data)?),
        Request::Migrate { .. } => print::moved(&view(data)?),
        Request::Drain { .. } | Request::Undrain { .. } => print::drain(&view(data)?),
        Request::Events => print::events(&view::<Vec<_>>(data)?),
        Request::Failover { shard, .. } => print::failover(shard, &view(data)?),
        Request::Reload => print::reload(&view(data)?),
    }
    Ok(())
}
