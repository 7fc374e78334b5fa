//! Long-lived clients through reloads: 200 WebSocket clients
//! (tokio-tungstenite) and 50 server-sent-event clients stay connected to
//! devsup running the reference server while HTTP load runs and devsup
//! reloads 20 times.
//!
//! The reference server's `/ws` and `/events` have no drain code: its
//! serving library closes each WebSocket with 1012 and ends each event
//! stream cleanly a short grace after the drain starts. So: every
//! WebSocket client gets a close frame on every reload (never a reset),
//! every client reconnects to the newest generation before the next reload,
//! the HTTP load sees no failure, and each old generation exits within 1 s
//! of its drain (devsup's `gen=N exited ... after X`), not at the 8 s
//! deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devsup_tests::devlog;
use devsup_tests::harness::{Devsup, TIMEOUT, wait_until};
use devsup_tests::load::{self, LoadConfig};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};

const WS_CLIENTS: usize = 200;
const SSE_CLIENTS: usize = 50;
const RELOADS: u64 = 20;

/// What the clients saw, counted as they go.
#[derive(Debug, Default)]
struct Seen {
    /// Per client, the generation it is connected to now (0: none yet).
    generation: Vec<AtomicU64>,
    ws_connects: AtomicU64,
    /// Close frames with code 1012, then a clean end of the stream.
    ws_closed_1012: AtomicU64,
    /// Close frames with another code.
    ws_closed_other: AtomicU64,
    /// Ends without a close frame, resets and protocol errors.
    ws_unclean: AtomicU64,
    sse_connects: AtomicU64,
    /// Streams that ended with the last chunk and then EOF.
    sse_clean_ends: AtomicU64,
    /// Streams that broke off.
    sse_unclean: AtomicU64,
    /// Connects that failed (nobody should ever refuse: devsup holds the
    /// socket).
    connect_errors: AtomicU64,
    /// The last few unclean ends, for the failure message.
    details: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    fn note(&self, what: String) {
        let mut details = self.details.lock().unwrap();
        if details.len() < 20 {
            details.push(what);
        }
    }

    fn all_on(&self, generation: u64) -> bool {
        self.generation
            .iter()
            .all(|g| g.load(Ordering::Relaxed) == generation)
    }

    fn behind(&self, generation: u64) -> usize {
        self.generation
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) != generation)
            .count()
    }
}

/// `gen=N` at the start of `text` (after `data: ` for events).
fn generation_of(text: &str) -> Option<u64> {
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
        loop {
            let next = tokio::select! {
                next = ws.next() => next,
                _ = stop.changed() => return,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    if let Some(generation) = generation_of(&text) {
                        seen.generation[id].store(generation, Ordering::Relaxed);
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
                        _ => seen.ws_closed_other.fetch_add(1, Ordering::Relaxed),
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

async fn sse_client(
    id: usize,
    addr: std::net::SocketAddr,
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
) {
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
                        seen.generation[id].store(generation, Ordering::Relaxed);
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

#[test]
fn websockets_and_event_streams_follow_every_reload() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let addr = devsup.addr();

    let seen = Arc::new(Seen {
        generation: (0..WS_CLIENTS + SSE_CLIENTS)
            .map(|_| AtomicU64::new(0))
            .collect(),
        ..Seen::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let mut clients = Vec::new();
    for id in 0..WS_CLIENTS {
        let url = format!("ws://{addr}/ws");
        clients.push(runtime.spawn(ws_client(id, url, seen.clone(), stopped.clone())));
    }
    for id in WS_CLIENTS..WS_CLIENTS + SSE_CLIENTS {
        clients.push(runtime.spawn(sse_client(id, addr, seen.clone(), stopped.clone())));
    }
    let all_on = |generation: u64| {
        assert!(
            wait_until(TIMEOUT, || seen.all_on(generation)),
            "{} clients not on gen={generation}: {seen:?}",
            seen.behind(generation)
        );
    };
    all_on(1);

    let run = load::start(LoadConfig::new(addr));
    assert!(run.wait_ok(20, TIMEOUT), "load is flowing");
    let started = Instant::now();
    for generation in 2..=RELOADS + 1 {
        devsup.reload();
        devsup.wait_event(generation, "ready", TIMEOUT);
        // Every client was closed by the old generation and is back, on
        // this one.
        all_on(generation);
        devsup.wait_event(generation - 1, "exited", TIMEOUT);
    }
    let took = started.elapsed();
    let report = run.finish();
    stop.send_replace(true);
    runtime.block_on(async {
        for client in clients {
            client.await.unwrap();
        }
    });

    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{RELOADS} reloads in {took:.1?}: WebSocket connects {}, closes 1012 {}, other closes {}, \
         unclean {}; SSE connects {}, clean ends {}, unclean {}; connect errors {}\n{report}",
        count(&seen.ws_connects),
        count(&seen.ws_closed_1012),
        count(&seen.ws_closed_other),
        count(&seen.ws_unclean),
        count(&seen.sse_connects),
        count(&seen.sse_clean_ends),
        count(&seen.sse_unclean),
        count(&seen.connect_errors),
    );
    let details = seen.details.lock().unwrap().join("\n");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(count(&seen.ws_unclean), 0, "{details}");
    assert_eq!(count(&seen.ws_closed_other), 0, "{details}");
    assert_eq!(count(&seen.sse_unclean), 0, "{details}");
    assert_eq!(count(&seen.connect_errors), 0, "{details}");
    // Each reload closed each client exactly once.
    let reloads = RELOADS;
    assert_eq!(count(&seen.ws_closed_1012), WS_CLIENTS as u64 * reloads);
    assert_eq!(count(&seen.sse_clean_ends), SSE_CLIENTS as u64 * reloads);
    assert_eq!(count(&seen.ws_connects), WS_CLIENTS as u64 * (reloads + 1));

    // Each old generation exited within 1 s of its drain.
    let lines = devsup.lines();
    let mut drains = Vec::new();
    for generation in 1..=RELOADS {
        let exited = lines
            .iter()
            .find(|l| devlog::is_event(l, generation, "exited"))
            .unwrap_or_else(|| panic!("no exit line for gen={generation}"));
        let after = exited
            .rfind(" after ")
            .and_then(|at| exited[at + 7..].split_whitespace().next())
            .and_then(devlog::parse_duration)
            .unwrap_or_else(|| panic!("no duration in {exited:?}"));
        assert!(
            lines
                .iter()
                .any(|l| devlog::is_event(l, generation, "draining")),
            "gen={generation} exited without a drain"
        );
        assert!(after < Duration::from_secs(1), "{exited}");
        drains.push(after);
    }
    let (median, max) = devlog::median_max(&drains).unwrap();
    eprintln!("drain to exit: median {median:?}, max {max:?}");
}
