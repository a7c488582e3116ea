//! The HTTP side: a thread of its own with a current-thread tokio runtime,
//! accepting on the caller's listener (so it serves in whatever network
//! namespace the listener was made in), one hyper HTTP/1.1 connection task
//! per client, a log of every request, and the outage switch.

use std::{
    convert::Infallible,
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use http_body_util::combinators::BoxBody;
use hyper::{body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};

use super::{allocation::Allocations, routes, store::Store};

/// Every answer's body: a whole JSON document, or a watch's stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Whether the stand-in answers at all, for tests of an agent that loses
/// the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Serving.
    Up,
    /// Every connection is cut at once, open watches included, and new
    /// ones are closed as soon as they are accepted: the client gets an
    /// error straight away (like a restarting API server or a load
    /// balancer without backends).
    Closing,
    /// Connections stay open but nothing is answered and open watches
    /// deliver nothing (like a network partition): the client waits until
    /// its own timeout. Back to `Up`, everything held is answered.
    Silent,
}

/// One request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string (`labelSelector=...&watch=true`), empty if none.
    pub query: String,
    pub at: Instant,
}

/// What the server thread and the test's handles share.
pub struct Shared {
    store: Mutex<Store>,
    allocations: Mutex<Allocations>,
    requests: Mutex<Vec<RequestRecord>>,
    pub reach: watch::Sender<Reachability>,
    bookmark_interval: Mutex<Duration>,
    open_watches: AtomicUsize,
}

/// How often the API server sends a watch a BOOKMARK (about once a minute).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

impl Default for Shared {
    fn default() -> Self {
        Shared {
            store: Mutex::default(),
            allocations: Mutex::default(),
            requests: Mutex::default(),
            reach: watch::Sender::new(Reachability::Up),
            bookmark_interval: Mutex::new(BOOKMARK_INTERVAL),
            open_watches: AtomicUsize::new(0),
        }
    }
}

/// Locks without caring whether a test thread panicked holding the lock:
/// the data stays usable, and one failing test should not hide the rest.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn allocations(&self) -> MutexGuard<'_, Allocations> {
        lock(&self.allocations)
    }

    pub fn requests(&self) -> MutexGuard<'_, Vec<RequestRecord>> {
        lock(&self.requests)
    }

    pub fn bookmark_interval(&self) -> Duration {
        *lock(&self.bookmark_interval)
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        *lock(&self.bookmark_interval) = every;
    }

    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }

    /// Counts an open watch until dropped.
    pub fn watch_opened(self: &Arc<Self>) -> OpenWatch {
        self.open_watches.fetch_add(1, Ordering::SeqCst);
        OpenWatch(self.clone())
    }

    /// Returns at once while `Up`; waits out `Silent`; while `Closing`
    /// returns too (the connection is being cut anyway).
    pub async fn until_answering(&self) {
        let mut reach = self.reach.subscribe();
        let _ = reach.wait_for(|r| *r != Reachability::Silent).await;
    }
}

pub struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The server's thread; dropping this stops it (every connection closes).
pub struct ServerThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `listener` on a new thread until the returned value is dropped.
pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<ServerThread> {
    listener.set_nonblocking(true)?;
    let (stop, stopped) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let thread = std::thread::Builder::new().name("kube-standin".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    let _ = ready_tx.send(Ok(()));
                    accept_until_stopped(listener, shared, stopped).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        // Dropping the runtime here cancels every connection and watch task.
    })?;
    let ready = ready_rx.recv().unwrap_or_else(|_| Err(io::Error::other("the server thread died while starting")));
    let server = ServerThread { stop: Some(stop), thread: Some(thread) };
    ready.map(|()| server)
}

async fn accept_until_stopped(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone()));
                }
                Err(e) => {
                    eprintln!("kube stand-in: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// One client connection (kube-rs keeps them alive and reuses them).
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let mut reach = shared.reach.subscribe();
    // While silent, hold the connection unread; while closing, drop it.
    match reach.wait_for(|r| *r != Reachability::Silent).await.map(|r| *r) {
        Ok(Reachability::Up) => {}
        _ => return,
    }
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(routes::handle(shared, req).await) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Errors here are clients going away mid-answer: nothing to report.
        _ = conn => {}
        _ = reach.wait_for(|r| *r == Reachability::Closing) => {}
    }
}
