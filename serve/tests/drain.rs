//! The drain, seen from the client side: raw HTTP/1.1 over loopback, so
//! every byte and every close is exactly what a client would see.
//!
//! Each test runs on tokio's single-threaded runtime. That makes "the drain
//! has started" an event the test can wait on: the shutdown future tells the
//! test it completed, and `serve` drops its listener and flags the drain
//! before it next yields, so both have happened by the time the test runs.
//!
//! One client-side scenario per rule of the drain, each a few dozen lines.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::get;
use bytes::Bytes;
use devsup_serve::{Drain, DrainReport, serve};
use hyper::body::Frame;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Bounds every wait, so a broken drain fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(5);

// ---- the app under test ----

/// Lets handlers tell the test they have started, and lets the test feed a
/// streamed response one chunk at a time.
#[derive(Clone)]
struct Probe {
    entered: mpsc::UnboundedSender<&'static str>,
    stream: Arc<Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>,
}

#[derive(Deserialize)]
struct SleepQuery {
    ms: u64,
}

fn app(probe: Probe) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/sleep",
            get(
                |State(p): State<Probe>, Query(q): Query<SleepQuery>| async move {
                    let _ = p.entered.send("sleep");
                    tokio::time::sleep(Duration::from_millis(q.ms)).await;
                    format!("slept={}\n", q.ms)
                },
            ),
        )
        .route(
            "/stream",
            get(|State(p): State<Probe>| async move {
                let rx = p
                    .stream
                    .lock()
                    .unwrap()
                    .take()
                    .expect("one stream per test");
                Body::new(ChannelBody(rx))
            }),
        )
        .route(
            "/hang",
            get(|State(p): State<Probe>| async move {
                let _ = p.entered.send("hang");
                std::future::pending::<()>().await;
            }),
        )
        .with_state(probe)
}

/// A body whose chunks the test sends; it ends when the sender is dropped.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

// ---- the harness ----

struct Harness {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    started: Option<oneshot::Receiver<()>>,
    served: JoinHandle<io::Result<DrainReport>>,
    entered: mpsc::UnboundedReceiver<&'static str>,
    chunks: mpsc::UnboundedSender<Bytes>,
}

impl Harness {
    async fn start(drain: Drain) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let (chunks, chunks_rx) = mpsc::unbounded_channel();
        let probe = Probe {
            entered: entered_tx,
            stream: Arc::new(Mutex::new(Some(chunks_rx))),
        };
        let (stop, stop_rx) = oneshot::channel();
        let (started_tx, started) = oneshot::channel();
        let shutdown = async move {
            let _ = stop_rx.await;
            let _ = started_tx.send(());
        };
        let served = tokio::spawn(
            serve(listener, app(probe))
                .drain(drain)
                .with_graceful_shutdown(shutdown)
                .run(),
        );
        Harness {
            addr,
            stop: Some(stop),
            started: Some(started),
            served,
            entered,
            chunks,
        }
    }

    /// Starts the drain and returns once `serve` has dropped its listener.
    async fn drain(&mut self) -> Instant {
        self.stop.take().unwrap().send(()).unwrap();
        self.started.take().unwrap().await.unwrap();
        Instant::now()
    }

    async fn entered(&mut self) -> &'static str {
        within(self.entered.recv()).await.unwrap()
    }

    async fn served(self) -> DrainReport {
        within(self.served).await.unwrap().unwrap()
    }

    async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    timeout(PATIENCE, f).await.expect("timed out")
}

fn drain(idle_grace_ms: u64, deadline_ms: u64) -> Drain {
    Drain::default()
        .with_idle_grace(Duration::from_millis(idle_grace_ms))
        .with_deadline(Duration::from_millis(deadline_ms))
}

// ---- a raw HTTP/1.1 client ----

struct Client {
    io: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = within(TcpStream::connect(addr)).await.unwrap();
        Client {
            io: BufReader::new(stream),
        }
    }

    async fn send(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.write(req.as_bytes()).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        within(self.io.read_line(&mut line)).await.unwrap();
        assert!(line.ends_with("\r\n"), "cut off: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    async fn head(&mut self) -> Head {
        let status_line = self.line().await;
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return Head { status, headers };
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }

    /// The next chunk of a chunked body, `None` at its end.
    async fn chunk(&mut self) -> Option<String> {
        let size = usize::from_str_radix(&self.line().await, 16).expect("chunk size");
        let mut data = vec![0; size + 2];
        within(self.io.read_exact(&mut data)).await.unwrap();
        assert_eq!(&data[size..], b"\r\n");
        data.truncate(size);
        (size > 0).then(|| String::from_utf8(data).unwrap())
    }

    async fn body(&mut self, head: &Head) -> String {
        if let Some(len) = head.header("content-length") {
            let mut data = vec![0; len.parse().unwrap()];
            within(self.io.read_exact(&mut data)).await.unwrap();
            return String::from_utf8(data).unwrap();
        }
        let mut body = String::new();
        while let Some(chunk) = self.chunk().await {
            body.push_str(&chunk);
        }
        body
    }

    async fn response(&mut self) -> (Head, String) {
        let head = self.head().await;
        let body = self.body(&head).await;
        (head, body)
    }

    async fn get(&mut self, path: &str) -> (Head, String) {
        self.send(path).await;
        self.response().await
    }

    /// Waits for the server to close the connection, cleanly.
    async fn eof(&mut self) {
        let mut rest = Vec::new();
        within(self.io.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty(), "unexpected bytes {rest:?}");
    }
}

// ---- the tests ----

#[tokio::test]
async fn request_in_flight_at_drain_completes() {
    let mut h = Harness::start(drain(500, 5000)).await;
    let mut client = h.connect().await;
    client.send("/sleep?ms=300").await;
    assert_eq!(h.entered().await, "sleep");

    h.drain().await;
    let (head, body) = client.response().await;
    assert_eq!(head.status, 200);
    assert_eq!(body, "slept=300\n");
    assert!(head.closes(), "{head:?}");
    client.eof().await;
    assert_eq!(h.served().await.dropped, 0);
}

#[tokio::test]
async fn keep_alive_request_during_drain_gets_connection_close() {
    let mut h = Harness::start(drain(2000, 5000)).await;
    let mut client = h.connect().await;
    let (head, _) = client.get("/").await;
    assert!(!head.closes());

    h.drain().await;
    let (head, body) = client.get("/").await;
    assert_eq!(head.status, 200);
    assert_eq!(body, "hello\n");
    assert!(head.closes(), "{head:?}");
    client.eof().await;
    // The only connection is gone, so serve returns long before the grace.
    let report = h.served().await;
    assert_eq!(report.open_at_start, 1);
    assert!(report.elapsed < Duration::from_millis(2000), "{report:?}");
}

#[tokio::test]
async fn idle_connection_is_kept_for_the_grace_then_closed() {
    let grace = Duration::from_millis(400);
    let mut h = Harness::start(drain(400, 5000)).await;
    let mut early = h.connect().await;
    let mut idle = h.connect().await;
    let mut late = h.connect().await;
    for client in [&mut early, &mut idle, &mut late] {
        assert_eq!(client.get("/").await.0.status, 200);
    }

    let started = h.drain().await;
    // Plain hyper graceful_shutdown would have closed all three idle
    // connections by the time this response arrives.
    let (head, _) = early.get("/").await;
    assert!(head.closes());
    early.eof().await;
    let (head, body) = late.get("/").await;
    assert_eq!((head.status, body.as_str()), (200, "hello\n"));
    assert!(head.closes());
    late.eof().await;

    idle.eof().await;
    assert!(
        started.elapsed() >= grace,
        "closed after {:?}",
        started.elapsed()
    );
    let report = h.served().await;
    assert_eq!((report.open_at_start, report.dropped), (3, 0));
}

#[tokio::test]
async fn bytes_of_an_unfinished_request_count_as_activity() {
    let mut h = Harness::start(drain(1500, 8000)).await;
    let mut client = h.connect().await;
    // A first request proves the connection was accepted: one still in the
    // backlog of a listener that is dropped would be reset.
    assert_eq!(client.get("/").await.0.status, 200);
    let started = h.drain().await;
    // Each pause stays below the grace; together they exceed it.
    client.write(b"GET / HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    client.write(b"Host: test\r\n").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(started.elapsed() > Duration::from_millis(1500));
    client.write(b"\r\n").await;
    let (head, body) = client.response().await;
    assert_eq!((head.status, body.as_str()), (200, "hello\n"));
    assert!(head.closes());
    client.eof().await;
    h.served().await;
}

#[tokio::test]
async fn new_connections_are_refused_once_draining() {
    let mut h = Harness::start(drain(500, 5000)).await;
    let mut client = h.connect().await;
    assert_eq!(client.get("/").await.0.status, 200);
    h.drain().await;
    let err = TcpStream::connect(h.addr)
        .await
        .expect_err("still accepting");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // The connection that was already open is still served.
    let (head, _) = client.get("/").await;
    assert_eq!(head.status, 200);
    client.eof().await;
    h.served().await;
}

#[tokio::test]
async fn streamed_response_survives_the_drain() {
    let mut h = Harness::start(drain(200, 5000)).await;
    let mut client = h.connect().await;
    h.chunks.send(Bytes::from("chunk 0\n")).unwrap();
    client.send("/stream").await;
    let head = client.head().await;
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(client.chunk().await.as_deref(), Some("chunk 0\n"));

    h.drain().await;
    // Longer than the grace: the connection is busy, not idle, meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 1..5 {
        h.chunks.send(Bytes::from(format!("chunk {i}\n"))).unwrap();
        assert_eq!(client.chunk().await, Some(format!("chunk {i}\n")));
    }
    drop(h.chunks);
    assert_eq!(client.chunk().await, None);
    // The head went out before the drain, without `Connection: close`: the
    // connection is closed once it has been idle for the grace.
    client.eof().await;
    let report = within(h.served).await.unwrap().unwrap();
    assert_eq!(report.dropped, 0);
}

#[tokio::test]
async fn serve_returns_when_the_last_connection_goes() {
    let mut h = Harness::start(drain(5000, 8000)).await;
    let mut client = h.connect().await;
    assert_eq!(client.get("/").await.0.status, 200);
    h.drain().await;
    drop(client);
    let report = h.served().await;
    assert_eq!(report.dropped, 0);
    assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
}

#[tokio::test]
async fn serve_returns_at_once_with_no_connections() {
    let mut h = Harness::start(Drain::default()).await;
    h.drain().await;
    let report = h.served().await;
    assert_eq!((report.open_at_start, report.dropped), (0, 0));
}

#[tokio::test]
async fn serve_drops_a_hung_connection_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let mut h = Harness::start(drain(100, 300)).await;
    let mut client = h.connect().await;
    client.send("/hang").await;
    assert_eq!(h.entered().await, "hang");

    h.drain().await;
    let report = h.served().await;
    assert!(report.elapsed >= deadline, "{report:?}");
    assert_eq!((report.open_at_start, report.dropped), (1, 1));
    // Dropped without a response.
    client.eof().await;
}

/// Regression: the accept loop polled its listeners always in the same
/// order, so a busy first listener starved the second.
#[tokio::test]
async fn a_busy_listener_does_not_starve_another() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Below the backlog std gives a listener (128).
    const BUSY: usize = 100;
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (first_addr, second_addr) = (first.local_addr().unwrap(), second.local_addr().unwrap());
    // Everything queued before serve starts: 100 requests in the first
    // listener's backlog, one in the second's.
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..BUSY {
        let mut stream = std::net::TcpStream::connect(first_addr).unwrap();
        stream.write_all(request).unwrap();
        held.push(stream);
    }
    let mut lone = std::net::TcpStream::connect(second_addr).unwrap();
    lone.write_all(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();

    let served = Arc::new(AtomicUsize::new(0));
    let second_at = Arc::new(AtomicUsize::new(usize::MAX));
    let app = Router::new()
        .route(
            "/",
            get({
                let served = served.clone();
                move || async move {
                    served.fetch_add(1, Ordering::SeqCst);
                    "first\n"
                }
            }),
        )
        .route(
            "/second",
            get({
                let (served, second_at) = (served.clone(), second_at.clone());
                move || async move {
                    second_at.store(served.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
                    "second\n"
                }
            }),
        );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        devsup_serve::serve(vec![first, second], app)
            .notify_ready(false)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .run(),
    );
    let mut lone = TcpStream::from_std({
        lone.set_nonblocking(true).unwrap();
        lone
    })
    .unwrap();
    let mut buf = [0; 256];
    let n = within(lone.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("second"));
    let at = second_at.load(Ordering::SeqCst);
    // Fair polling accepts it second; first-listener-first, after all 100.
    assert!(at < 10, "the second listener's request was served {at}th");
    drop(held);
    stop.send(()).unwrap();
    within(server).await.unwrap().unwrap();
}
