//! Long-lived clients of the reference server: WebSocket clients
//! (tokio-tungstenite) on `/ws` and server-sent-event clients on
//! `/events`, each reconnecting as soon as its connection ends, counting
//! how every connection ended and which generation every connection landed
//! on. Shared by the integration test (`tests/it/clients.rs`), which
//! asserts on the counts, and `devsup-bench --only clients`, which prints
//! them.
//!
//! ```no_run
//! use devsup_tests::clients::Clients;
//! use devsup_tests::harness::{Devsup, TIMEOUT};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
//! devsup.wait_event(1, "ready", TIMEOUT);
//! let clients = Clients::start(devsup.addr(), 200, 50);
//! assert!(clients.wait_all_on(1, TIMEOUT));
//! devsup.reload();
//! devsup.wait_event(2, "ready", TIMEOUT);
//! assert!(clients.wait_all_on(2, TIMEOUT));
//! let counts = clients.finish();
//! assert_eq!(counts.ws_unclean, 0, "{counts:?}");
//! ```
//!
//! A WebSocket connection ends well with a close frame, then the end of
//! the stream (tungstenite answers the close while it reads on); anything
//! else (a reset, an end without a close frame, a protocol error) is
//! unclean. An event stream ends well with the last chunk of its chunked
//! body (`0\r\n\r\n`), then EOF, after at least one `data: gen=N` event.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};

/// How many unclean ends [`Seen`] keeps the text of.
pub const MAX_DETAILS: usize = 20;

/// What the clients saw, counted as they go.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per client, the generation it is connected to now (0: none yet).
    /// WebSocket clients first, then event-stream clients.
    pub generation: Vec<AtomicU64>,
    /// WebSocket connections opened (handshake done).
    pub ws_connects: AtomicU64,
    /// Close frames with code 1012, then a clean end of the stream.
    pub ws_closed_1012: AtomicU64,
    /// Close frames with another code.
    pub ws_closed_other: AtomicU64,
    /// Ends without a close frame, resets and protocol errors.
    pub ws_unclean: AtomicU64,
    /// Event-stream requests sent.
    pub sse_connects: AtomicU64,
    /// Streams that ended with the last chunk and then EOF.
    pub sse_clean_ends: AtomicU64,
    /// Streams that broke off.
    pub sse_unclean: AtomicU64,
    /// Connects that failed (nobody should ever refuse: devsup holds the
    /// socket).
    pub connect_errors: AtomicU64,
    /// Connections that, after a client's first, landed on the generation
    /// the client had before or an older one (a reconnect that did not
    /// reach a newer generation).
    pub stale_reconnects: AtomicU64,
    /// Connections by the generation they landed on.
    pub landed: Mutex<BTreeMap<u64, u64>>,
    /// The first few unclean ends, for a failure message.
    pub details: Mutex<Vec<String>>,
    /// When each failure (unclean end, other close, failed connect) was
    /// seen, and by which kind of client (`"ws"` or `"sse"`): the mixed
    /// soak tells those on a generation it killed by their time.
    pub failed_at: Mutex<Vec<(Instant, &'static str)>>,
}

impl Seen {
    /// Counts for `ws` WebSocket and `sse` event-stream clients.
    pub fn new(ws: usize, sse: usize) -> Seen {
        Seen {
            generation: (0..ws + sse).map(|_| AtomicU64::new(0)).collect(),
            ..Seen::default()
        }
    }

    fn note(&self, what: String) {
        let kind = if what.starts_with("sse") { "sse" } else { "ws" };
        (self.failed_at.lock().unwrap_or_else(|e| e.into_inner())).push((Instant::now(), kind));
        let mut details = self.details.lock().unwrap_or_else(|e| e.into_inner());
        if details.len() < MAX_DETAILS {
            details.push(what);
        }
    }

    /// Client `id` is now on `generation` (its first message said so).
    fn landed_on(&self, id: usize, generation: u64) {
        let before = self.generation[id].swap(generation, Ordering::Relaxed);
        if before != 0 && generation <= before {
            self.stale_reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut landed = self.landed.lock().unwrap_or_else(|e| e.into_inner());
        *landed.entry(generation).or_default() += 1;
    }

    /// Whether every client is connected to `generation`.
    pub fn all_on(&self, generation: u64) -> bool {
        self.generation
            .iter()
            .all(|g| g.load(Ordering::Relaxed) == generation)
    }

    /// How many clients are not connected to `generation`.
    pub fn behind(&self, generation: u64) -> usize {
        self.generation
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) != generation)
            .count()
    }

    /// The counters as they are now.
    pub fn counts(&self) -> Counts {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            ws_connects: count(&self.ws_connects),
            ws_closed_1012: count(&self.ws_closed_1012),
            ws_closed_other: count(&self.ws_closed_other),
            ws_unclean: count(&self.ws_unclean),
            sse_connects: count(&self.sse_connects),
            sse_clean_ends: count(&self.sse_clean_ends),
            sse_unclean: count(&self.sse_unclean),
            connect_errors: count(&self.connect_errors),
            stale_reconnects: count(&self.stale_reconnects),
            landed: self
                .landed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            details: self
                .details
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            failed_at: self
                .failed_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A snapshot of [`Seen`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// See [`Seen::ws_connects`].
    pub ws_connects: u64,
    /// See [`Seen::ws_closed_1012`].
    pub ws_closed_1012: u64,
    /// See [`Seen::ws_closed_other`].
    pub ws_closed_other: u64,
    /// See [`Seen::ws_unclean`].
    pub ws_unclean: u64,
    /// See [`Seen::sse_connects`].
    pub sse_connects: u64,
    /// See [`Seen::sse_clean_ends`].
    pub sse_clean_ends: u64,
    /// See [`Seen::sse_unclean`].
    pub sse_unclean: u64,
    /// See [`Seen::connect_errors`].
    pub connect_errors: u64,
    /// See [`Seen::stale_reconnects`].
    pub stale_reconnects: u64,
    /// See [`Seen::landed`].
    pub landed: BTreeMap<u64, u64>,
    /// See [`Seen::details`].
    pub details: Vec<String>,
    /// See [`Seen::failed_at`].
    pub failed_at: Vec<(Instant, &'static str)>,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WebSocket connects {}, closes 1012 {}, other closes {}, unclean {}; \
             SSE connects {}, clean ends {}, unclean {}; connect errors {}; \
             stale reconnects {}",
            self.ws_connects,
            self.ws_closed_1012,
            self.ws_closed_other,
            self.ws_unclean,
            self.sse_connects,
            self.sse_clean_ends,
            self.sse_unclean,
            self.connect_errors,
            self.stale_reconnects,
        )
    }
}

/// `ws` WebSocket clients and `sse` event-stream clients running on a
/// runtime of their own (two worker threads) until [`Clients::finish`].
/// Dropping it without `finish` stops them too (the runtime shuts down).
#[derive(Debug)]
pub struct Clients {
    seen: Arc<Seen>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Clients {
    /// Starts the clients against `addr` (`ws://ADDR/ws`, `GET /events`).
    pub fn start(addr: SocketAddr, ws: usize, sse: usize) -> Clients {
        let seen = Arc::new(Seen::new(ws, sse));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building the clients' runtime");
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::with_capacity(ws + sse);
        for id in 0..ws {
            let url = format!("ws://{addr}/ws");
            tasks.push(runtime.spawn(ws_client(id, url, seen.clone(), stopped.clone())));
        }
        for id in ws..ws + sse {
            tasks.push(runtime.spawn(sse_client(id, addr, seen.clone(), stopped.clone())));
        }
        Clients {
            seen,
            stop,
            tasks,
            runtime,
        }
    }

    /// The live counters.
    pub fn seen(&self) -> &Seen {
        &self.seen
    }

    /// Waits until every client is connected to `generation`; `false` if
    /// they were not after `timeout`.
    pub fn wait_all_on(&self, generation: u64, timeout: Duration) -> bool {
        crate::harness::wait_until(timeout, || self.seen.all_on(generation))
    }

    /// Stops the clients (each drops its connection where it is) and
    /// returns the final counts. Panics if a client task panicked.
    pub fn finish(self) -> Counts {
        self.stop.send_replace(true);
        let tasks = self.tasks;
        self.runtime.block_on(async {
            for task in tasks {
                task.await.expect("a client task panicked");
            }
        });
        self.seen.counts()
    }
}

/// `gen=N` at the start of `text` (after `data: ` for events).
pub fn generation_of(text: &str) -> Option<u64> {
    let rest = &text[text.find("gen=")? + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

async fn ws_client(id: usize, url: String, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let connected = tokio::select! {
            c = tokio_tungstenite::connect_async(url.as_str()) => c,
            _ = stop.changed() => return,
        };
        let mut ws = match connected {
            Ok((ws, _)) => ws,
            Err(err) => {
                seen.connect_errors.fetch_add(1, Ordering::Relaxed);
                seen.note(format!("ws {id}: connect: {err}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        seen.ws_connects.fetch_add(1, Ordering::Relaxed);
        let mut close_code = None;
        let mut found = false;
        loop {
            let next = tokio::select! {
                next = ws.next() => next,
                _ = stop.changed() => return,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    if let Some(generation) = generation_of(&text).filter(|_| !found) {
                        seen.landed_on(id, generation);
                        found = true;
                    }
                }
                // Reading on sends tungstenite's answer to the close.
                Some(Ok(Message::Close(frame))) => {
                    close_code = Some(frame.map_or(0, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed)) | None if close_code.is_some() => {
                    match close_code {
                        Some(1012) => seen.ws_closed_1012.fetch_add(1, Ordering::Relaxed),
                        code => {
                            seen.note(format!("ws {id}: closed with {code:?}"));
                            seen.ws_closed_other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    break;
                }
                end => {
                    seen.ws_unclean.fetch_add(1, Ordering::Relaxed);
                    seen.note(format!("ws {id}: {end:?} (close so far: {close_code:?})"));
                    break;
                }
            }
        }
    }
}

async fn sse_client(id: usize, addr: SocketAddr, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let connected = tokio::select! {
            c = TcpStream::connect(addr) => c,
            _ = stop.changed() => return,
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(err) => {
                seen.connect_errors.fetch_add(1, Ordering::Relaxed);
                seen.note(format!("sse {id}: connect: {err}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(err) = stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: devsup\r\n\r\n")
            .await
        {
            seen.sse_unclean.fetch_add(1, Ordering::Relaxed);
            seen.note(format!("sse {id}: write: {err}"));
            continue;
        }
        seen.sse_connects.fetch_add(1, Ordering::Relaxed);
        // The first event names the generation; after that only the tail
        // matters, to see how the stream ended.
        let mut text = String::new();
        let mut found = false;
        let mut buf = [0; 4096];
        loop {
            let read = tokio::select! {
                r = stream.read(&mut buf) => r,
                _ = stop.changed() => return,
            };
            match read {
                Ok(0) => {
                    if text.ends_with("\r\n0\r\n\r\n") && found {
                        seen.sse_clean_ends.fetch_add(1, Ordering::Relaxed);
                    } else {
                        seen.sse_unclean.fetch_add(1, Ordering::Relaxed);
                        seen.note(format!("sse {id}: ended with {text:?}"));
                    }
                    break;
                }
                Ok(n) => {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    let first = text.find("data: gen=").filter(|_| !found);
                    if let Some(generation) = first.and_then(|at| generation_of(&text[at..])) {
                        seen.landed_on(id, generation);
                        found = true;
                    }
                    if text.len() > 64 {
                        let keep = text.len() - 32;
                        let keep = (keep..text.len())
                            .find(|&i| text.is_char_boundary(i))
                            .unwrap_or(text.len());
                        text.drain(..keep);
                    }
                }
                Err(err) => {
                    seen.sse_unclean.fetch_add(1, Ordering::Relaxed);
                    seen.note(format!("sse {id}: read: {err}"));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_of_reads_the_number_after_gen() {
        assert_eq!(generation_of("gen=12 pid=4"), Some(12));
        assert_eq!(generation_of("data: gen=3\n\n"), Some(3));
        assert_eq!(generation_of("gen=7"), Some(7));
        assert_eq!(generation_of("no generation"), None);
        assert_eq!(generation_of("gen=x"), None);
    }

    #[test]
    fn a_reconnect_to_the_same_or_an_older_generation_is_stale() {
        let seen = Seen::new(1, 1);
        seen.landed_on(0, 1);
        seen.landed_on(1, 1);
        seen.landed_on(0, 2);
        assert_eq!(seen.counts().stale_reconnects, 0);
        seen.landed_on(0, 2);
        seen.landed_on(1, 1);
        let counts = seen.counts();
        assert_eq!(counts.stale_reconnects, 2);
        assert_eq!(counts.landed, BTreeMap::from([(1, 3), (2, 2)]));
        assert!(!seen.all_on(2));
        assert_eq!(seen.behind(2), 1);
        seen.landed_on(1, 2);
        assert!(seen.all_on(2));
    }
}
