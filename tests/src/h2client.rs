//! HTTP/2 clients (h2c with prior knowledge, hyper's client) for the mixed
//! soak: each opens a connection and sends `GET /` on it one request after
//! another, and opens a new connection once the server's GOAWAY has ended
//! it. Unlike h2load, which stops a client for good after a GOAWAY, they
//! follow any number of reloads.
//!
//! A request hyper cancelled before writing it, or that h2 refused unsent
//! (the server's GOAWAY with NO_ERROR, RFC 9113 §6.8, or REFUSED_STREAM),
//! was never processed: the client sends it again on a new connection and
//! counts a retry, not a failure. Every other error is a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the clients saw, counted as they go.
#[derive(Debug, Default)]
struct Seen {
    ok: AtomicU64,
    retried: AtomicU64,
    failed: Mutex<Vec<(Instant, String)>>,
}

impl Seen {
    fn fail(&self, what: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.push((Instant::now(), what));
    }
}

/// What the clients saw in the end.
#[derive(Debug, Clone, Default)]
pub struct H2Counts {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests refused unsent, then sent again.
    pub retried: u64,
    /// Every failure: when, and what.
    pub failed: Vec<(Instant, String)>,
}

/// `n` HTTP/2 clients on a runtime of their own until [`H2Clients::finish`].
#[derive(Debug)]
pub struct H2Clients {
    seen: Arc<Seen>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

impl H2Clients {
    /// Starts `n` clients against `addr`.
    pub fn start(addr: SocketAddr, n: usize) -> H2Clients {
        let seen = Arc::new(Seen::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building the HTTP/2 clients' runtime");
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..n)
            .map(|_| runtime.spawn(client(addr, seen.clone(), stopped.clone())))
            .collect();
        H2Clients {
            seen,
            stop,
            tasks,
            runtime,
        }
    }

    /// Requests answered so far.
    pub fn ok(&self) -> u64 {
        self.seen.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients and returns what they saw.
    pub fn finish(self) -> H2Counts {
        self.stop.send_replace(true);
        let tasks = self.tasks;
        self.runtime.block_on(async {
            for task in tasks {
                let _ = task.await;
            }
        });
        H2Counts {
            ok: self.seen.ok.load(Ordering::Relaxed),
            retried: self.seen.retried.load(Ordering::Relaxed),
            failed: std::mem::take(&mut self.seen.failed.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

async fn client(addr: SocketAddr, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let connected = tokio::select! {
            c = connect(addr) => c,
            _ = stop.changed() => return,
        };
        let mut sender = match connected {
            Ok(sender) => sender,
            Err(err) => {
                seen.fail(format!("h2 connect: {err}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Requests one after another until the connection ends.
        while !*stop.borrow() {
            // A connection the server ended (GOAWAY) is not ready: no
            // request was lost, open a new one.
            if sender.ready().await.is_err() {
                break;
            }
            let outcome = tokio::select! {
                o = tokio::time::timeout(REQUEST_TIMEOUT, get(&mut sender, addr)) => o,
                _ = stop.changed() => return,
            };
            match outcome {
                Ok(Ok(200)) => {
                    seen.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(status)) => seen.fail(format!("h2: status {status}")),
                Ok(Err(err)) if refused_unsent(&err) => {
                    seen.retried.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(err)) => {
                    seen.fail(format!("h2: {err}"));
                    break;
                }
                Err(_) => {
                    seen.fail(format!("h2: no answer in {REQUEST_TIMEOUT:?}"));
                    break;
                }
            }
        }
    }
}

type Sender = http2::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    // Its errors reach the requests on it.
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(sender: &mut Sender, addr: SocketAddr) -> hyper::Result<u16> {
    let request = Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .expect("a valid request");
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// Whether a request failed without having been processed, so that a
/// client may send it again: hyper cancelled it before writing it, or h2
/// refused it after the server's GOAWAY (NO_ERROR), or the server refused
/// the stream (REFUSED_STREAM). (As in serve/tests/h2.rs.)
fn refused_unsent(err: &hyper::Error) -> bool {
    if err.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let go_away =
                h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return go_away || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = e.source();
    }
    false
}
