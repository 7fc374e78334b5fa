//! The load generator: `conns` clients on raw tokio sockets, each sending
//! `GET path` until stopped, every request classified exactly.
//!
//! Raw sockets instead of an HTTP client library, because what we measure
//! is exactly what a client library hides: a keep-alive connection closed by
//! the server between two responses. The clients handle the two cases apart:
//!
//! 1. The server answered `Connection: close`, or its FIN has already
//!    arrived when the client is about to reuse the connection: a graceful
//!    close. The client reconnects and counts a *reconnect*, not an error.
//! 2. The FIN arrives after the client has written its next request: the
//!    request was sent and never answered. That is
//!    [`Outcome::EofBeforeResponse`], a real failure: a browser would show
//!    an error or retry a request that might not be idempotent.
//!
//! [`start`] runs the generator on its own thread for synchronous tests:
//! start it, do the reload storm, then [`LoadRun::finish`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::http::{self, Parsed, Response};

/// How the clients use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// HTTP/1.1 keep-alive: one connection per client, reused until the
    /// server closes it.
    KeepAlive,
    /// A new connection per request, with `Connection: close`.
    Close,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "close",
        })
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// `200` with a `gen=N pid=P` body.
    Ok,
    /// `connect` was refused: nobody listened.
    ConnectRefused,
    /// `ECONNRESET` or `EPIPE` while connecting, writing or reading.
    Reset,
    /// The connection closed after the request was sent, before any byte of
    /// the response.
    EofBeforeResponse,
    /// The connection closed in the middle of the response.
    Truncated,
    /// No complete response within the request timeout.
    Timeout,
    /// A complete response with a status other than 200.
    BadStatus(u16),
    /// A 200 whose body is not `gen=N pid=P...` (or disagrees with its
    /// `x-generation` header).
    WrongBody,
    /// Bytes that are not an HTTP/1.1 response.
    Malformed,
    /// Any other socket error, by kind (e.g. `AddrNotAvailable` when
    /// ephemeral ports run out).
    Io(io::ErrorKind),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::ConnectRefused => f.write_str("refused"),
            Outcome::Reset => f.write_str("reset"),
            Outcome::EofBeforeResponse => f.write_str("eof-before-response"),
            Outcome::Truncated => f.write_str("truncated"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::BadStatus(status) => write!(f, "status-{status}"),
            Outcome::WrongBody => f.write_str("wrong-body"),
            Outcome::Malformed => f.write_str("malformed"),
            Outcome::Io(kind) => write!(f, "io-{kind:?}"),
        }
    }
}

/// Classifies a socket error.
pub fn classify_io(error: &io::Error) -> Outcome {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::ConnectRefused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
        io::ErrorKind::TimedOut => Outcome::Timeout,
        io::ErrorKind::InvalidData => Outcome::Malformed,
        kind => Outcome::Io(kind),
    }
}

/// Classifies a complete response; `Ok` carries `(generation, pid)`.
pub fn classify_response(response: &Response) -> Result<(u64, i32), Outcome> {
    if response.status != 200 {
        return Err(Outcome::BadStatus(response.status));
    }
    let (generation, pid) = response.gen_pid().ok_or(Outcome::WrongBody)?;
    match response.header("x-generation") {
        Some(header) if header.parse() != Ok(generation) => Err(Outcome::WrongBody),
        _ => Ok((generation, pid)),
    }
}

/// A stop signal shared between a test and the clients; cloning shares it.
#[derive(Debug, Clone)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Stop(Arc::new(watch::channel(false).0))
    }
}

impl Stop {
    /// A signal not yet given.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Tells every client to stop after its current request.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once [`Stop::stop`] is called.
    pub async fn stopped(&self) {
        let mut receiver = self.0.subscribe();
        // The sender lives in self, so this cannot fail.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

/// What load to generate.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Concurrent clients, each with at most one connection.
    pub conns: usize,
    /// Keep-alive or a connection per request.
    pub mode: Mode,
    /// The request path, e.g. `/` or `/sleep?ms=50`.
    pub path: String,
    /// Upper bound on the run; [`LoadConfig::stop`] ends it sooner.
    pub duration: Duration,
    /// Ends the run when given.
    pub stop: Stop,
    /// Bound on one request, connect included.
    pub request_timeout: Duration,
    /// Stop each client after this many requests.
    pub requests_per_conn: Option<u64>,
    /// Whether a 200 must have a `gen=N pid=P` body ([`Outcome::WrongBody`]
    /// otherwise).
    pub check_body: bool,
    /// Runtime worker threads for [`start`] and [`run_blocking`]; 1 means a
    /// current-thread runtime.
    pub threads: usize,
}

impl LoadConfig {
    /// 8 keep-alive clients sending `GET /` for at most 5 minutes, 10 s
    /// request timeout.
    pub fn new(addr: SocketAddr) -> LoadConfig {
        LoadConfig {
            addr,
            conns: 8,
            mode: Mode::KeepAlive,
            path: "/".into(),
            duration: Duration::from_secs(300),
            stop: Stop::new(),
            request_timeout: Duration::from_secs(10),
            requests_per_conn: None,
            check_body: true,
            threads: 1,
        }
    }
}

/// One failed request, kept for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When the request started, from the start of the run.
    pub at: Duration,
    /// Which client.
    pub client: usize,
    /// The class.
    pub outcome: Outcome,
    /// The error or response, for a human.
    pub detail: String,
}

/// Everything a run saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The mode it ran in.
    pub mode: Mode,
    /// The number of clients.
    pub conns: usize,
    /// Requests by outcome, `Ok` included.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Successful requests by the generation that answered.
    pub generations: BTreeMap<u64, u64>,
    /// The pids that answered, by generation.
    pub pids: BTreeMap<u64, BTreeSet<i32>>,
    /// Latency of every successful request (connect included when it
    /// opened a connection), sorted.
    pub latencies: Vec<Duration>,
    /// Connections opened.
    pub connects: u64,
    /// Keep-alive connections the server closed gracefully between
    /// requests, after which the client reconnected.
    pub reconnects: u64,
    /// Keep-alive connections found reset while idle, before a request was
    /// written on them (no request lost, but not a graceful close).
    pub idle_resets: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The first failures, in time order (at most [`MAX_SAMPLES`]).
    pub samples: Vec<Failure>,
}

/// How many failures a report keeps in [`LoadReport::samples`].
pub const MAX_SAMPLES: usize = 20;

impl LoadReport {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// Requests with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.count(Outcome::Ok)
    }

    /// Requests that were not [`Outcome::Ok`].
    pub fn failures(&self) -> u64 {
        self.total() - self.ok()
    }

    /// Requests per second over the run.
    pub fn rps(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0.0..=1.0) of successful requests.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies.len() - 1;
        self.latencies[((last as f64) * q.clamp(0.0, 1.0)).round() as usize]
    }

    /// Median latency.
    pub fn p50(&self) -> Duration {
        self.percentile(0.5)
    }

    /// 99th percentile latency.
    pub fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    /// Slowest successful request.
    pub fn max_latency(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    /// The failure classes and counts, e.g. `reset=2 eof-before-response=1`,
    /// or `none`.
    pub fn failure_summary(&self) -> String {
        let parts: Vec<String> = self
            .outcomes
            .iter()
            .filter(|(outcome, n)| **outcome != Outcome::Ok && **n > 0)
            .map(|(outcome, n)| format!("{outcome}={n}"))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }

    /// Generations and their counts, e.g. `1:500 2:730`.
    pub fn generation_summary(&self) -> String {
        let parts: Vec<String> = self
            .generations
            .iter()
            .map(|(g, n)| format!("{g}:{n}"))
            .collect();
        parts.join(" ")
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} x{}: {} requests in {:.2?} ({:.0} req/s), {} ok, {} failed",
            self.mode,
            self.conns,
            self.total(),
            self.elapsed,
            self.rps(),
            self.ok(),
            self.failures()
        )?;
        writeln!(f, "  failures: {}", self.failure_summary())?;
        writeln!(
            f,
            "  latency: p50 {:.2?}  p99 {:.2?}  max {:.2?}",
            self.p50(),
            self.p99(),
            self.max_latency()
        )?;
        writeln!(
            f,
            "  connects {}  reconnects {}  idle resets {}",
            self.connects, self.reconnects, self.idle_resets
        )?;
        write!(
            f,
            "  generations ({}): {}",
            self.generations.len(),
            self.generation_summary()
        )?;
        for failure in &self.samples {
            write!(
                f,
                "\n  at {:>9.3?} client {:>3} {}: {}",
                failure.at, failure.client, failure.outcome, failure.detail
            )?;
        }
        Ok(())
    }
}

/// Live counters of a run.
#[derive(Debug, Default)]
struct Progress {
    completed: AtomicU64,
    ok: AtomicU64,
}

/// One client's share of the report.
#[derive(Debug, Default)]
struct ClientStats {
    outcomes: BTreeMap<Outcome, u64>,
    generations: BTreeMap<u64, u64>,
    pids: BTreeMap<u64, BTreeSet<i32>>,
    latencies: Vec<Duration>,
    connects: u64,
    reconnects: u64,
    idle_resets: u64,
    samples: Vec<Failure>,
}

/// Runs the load until `config.duration` passes or `config.stop` is given,
/// on the current tokio runtime.
pub async fn run(config: LoadConfig) -> LoadReport {
    run_with(config, Arc::new(Progress::default())).await
}

async fn run_with(config: LoadConfig, progress: Arc<Progress>) -> LoadReport {
    let config = Arc::new(config);
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..config.conns {
        clients.spawn(client(
            id,
            config.clone(),
            started,
            deadline,
            progress.clone(),
        ));
    }
    let mut report = LoadReport {
        mode: config.mode,
        conns: config.conns,
        outcomes: BTreeMap::new(),
        generations: BTreeMap::new(),
        pids: BTreeMap::new(),
        latencies: Vec::new(),
        connects: 0,
        reconnects: 0,
        idle_resets: 0,
        elapsed: Duration::ZERO,
        samples: Vec::new(),
    };
    while let Some(stats) = clients.join_next().await {
        let stats = stats.expect("load client panicked");
        for (outcome, n) in stats.outcomes {
            *report.outcomes.entry(outcome).or_default() += n;
        }
        for (generation, n) in stats.generations {
            *report.generations.entry(generation).or_default() += n;
        }
        for (generation, pids) in stats.pids {
            report.pids.entry(generation).or_default().extend(pids);
        }
        report.latencies.extend(stats.latencies);
        report.connects += stats.connects;
        report.reconnects += stats.reconnects;
        report.idle_resets += stats.idle_resets;
        report.samples.extend(stats.samples);
    }
    report.elapsed = started.elapsed();
    report.latencies.sort_unstable();
    report.samples.sort_by_key(|s| s.at);
    report.samples.truncate(MAX_SAMPLES);
    report
}

/// An open keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A request that failed: its class and a description.
type Failed = (Outcome, String);

fn io_failure(what: &str, error: &io::Error) -> Failed {
    (classify_io(error), format!("{what}: {error}"))
}

async fn client(
    id: usize,
    config: Arc<LoadConfig>,
    started: Instant,
    deadline: Instant,
    progress: Arc<Progress>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let close = config.mode == Mode::Close;
    let request = http::request(config.addr, &config.path, close);
    let mut conn: Option<Connection> = None;
    let mut sent = 0u64;
    while !config.stop.is_stopped()
        && Instant::now() < deadline
        && config.requests_per_conn.is_none_or(|max| sent < max)
    {
        sent += 1;
        if let Some(open) = &conn {
            // Graceful close between responses: the FIN is already here.
            let mut byte = [0u8; 1];
            match open.stream.try_read(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(0) => {
                    stats.reconnects += 1;
                    conn = None;
                }
                Ok(_) => {
                    // Bytes nobody asked for: not HTTP/1.1 as we speak it.
                    conn = None;
                    let at = started.elapsed();
                    record_failure(
                        &mut stats,
                        id,
                        at,
                        (Outcome::Malformed, "unsolicited bytes".into()),
                    );
                    progress.completed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(_) => {
                    stats.idle_resets += 1;
                    conn = None;
                }
            }
        }

        let start = Instant::now();
        let at = start - started;
        let result = tokio::time::timeout(
            config.request_timeout,
            one_request(&config, &request, &mut conn, &mut stats),
        )
        .await
        .unwrap_or_else(|_| {
            Err((
                Outcome::Timeout,
                format!("no response within {:?}", config.request_timeout),
            ))
        });
        let latency = start.elapsed();
        progress.completed.fetch_add(1, Ordering::Relaxed);
        match result.and_then(|response| {
            let keep = !close && !response.closes();
            if !keep && !close {
                stats.reconnects += 1;
            }
            if !keep {
                conn = None;
            }
            if !config.check_body && response.status == 200 {
                return Ok(None);
            }
            classify_response(&response)
                .map(Some)
                .map_err(|outcome| (outcome, format!("{:?}", response)))
        }) {
            Ok(gen_pid) => {
                progress.ok.fetch_add(1, Ordering::Relaxed);
                *stats.outcomes.entry(Outcome::Ok).or_default() += 1;
                stats.latencies.push(latency);
                if let Some((generation, pid)) = gen_pid {
                    *stats.generations.entry(generation).or_default() += 1;
                    stats.pids.entry(generation).or_default().insert(pid);
                }
            }
            Err(failed) => {
                conn = None;
                let refused = failed.0 == Outcome::ConnectRefused;
                record_failure(&mut stats, id, at, failed);
                if refused {
                    // Nobody listens: do not spin.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                        _ = config.stop.stopped() => {}
                    }
                }
            }
        }
    }
    stats
}

fn record_failure(stats: &mut ClientStats, client: usize, at: Duration, failed: Failed) {
    let (outcome, detail) = failed;
    *stats.outcomes.entry(outcome).or_default() += 1;
    if stats.samples.len() < MAX_SAMPLES {
        stats.samples.push(Failure {
            at,
            client,
            outcome,
            detail,
        });
    }
}

/// Sends one request on `conn` (connecting first if there is none) and
/// reads its response. On error the caller drops the connection.
async fn one_request(
    config: &LoadConfig,
    request: &[u8],
    conn: &mut Option<Connection>,
    stats: &mut ClientStats,
) -> Result<Response, Failed> {
    if conn.is_none() {
        let stream = TcpStream::connect(config.addr)
            .await
            .map_err(|e| io_failure("connect", &e))?;
        stats.connects += 1;
        stream
            .set_nodelay(true)
            .map_err(|e| io_failure("set_nodelay", &e))?;
        *conn = Some(Connection {
            stream,
            buf: Vec::with_capacity(1024),
        });
    }
    let open = conn.as_mut().expect("connected above");
    open.stream
        .write_all(request)
        .await
        .map_err(|e| io_failure("write", &e))?;
    open.buf.clear();
    let mut eof = false;
    loop {
        if !open.buf.is_empty() || eof {
            match http::parse_response(&open.buf, eof) {
                Ok(Parsed::Complete(response, used)) => {
                    if used != open.buf.len() {
                        return Err((
                            Outcome::Malformed,
                            format!("{} bytes after the response", open.buf.len() - used),
                        ));
                    }
                    return Ok(response);
                }
                Ok(Parsed::Incomplete) => {}
                Err(e) => return Err(io_failure("parse", &e)),
            }
        }
        if eof {
            return Err(if open.buf.is_empty() {
                (
                    Outcome::EofBeforeResponse,
                    "closed before any byte of the response".into(),
                )
            } else {
                (
                    Outcome::Truncated,
                    format!(
                        "closed after {} bytes: {:?}",
                        open.buf.len(),
                        String::from_utf8_lossy(&open.buf)
                    ),
                )
            });
        }
        let n = open
            .stream
            .read_buf(&mut open.buf)
            .await
            .map_err(|e| io_failure("read", &e))?;
        eof = n == 0;
    }
}

/// A load run on its own thread and runtime; see [`start`].
#[derive(Debug)]
pub struct LoadRun {
    stop: Stop,
    progress: Arc<Progress>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
}

/// Starts `config` on a new thread with its own tokio runtime.
pub fn start(config: LoadConfig) -> LoadRun {
    let stop = config.stop.clone();
    let progress = Arc::new(Progress::default());
    let shared = progress.clone();
    let thread = std::thread::Builder::new()
        .name("load".into())
        .spawn(move || runtime(config.threads).block_on(run_with(config, shared)))
        .expect("spawn load thread");
    LoadRun {
        stop,
        progress,
        thread: Some(thread),
    }
}

/// Runs `config` to the end on a new runtime, blocking.
pub fn run_blocking(config: LoadConfig) -> LoadReport {
    runtime(config.threads).block_on(run(config))
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build().expect("tokio runtime")
}

impl LoadRun {
    /// Requests finished so far, any outcome.
    pub fn completed(&self) -> u64 {
        self.progress.completed.load(Ordering::Relaxed)
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.progress.ok.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn failed(&self) -> u64 {
        self.completed().saturating_sub(self.ok())
    }

    /// Waits until at least `n` requests have succeeded (so the load is
    /// really flowing); `false` on timeout.
    pub fn wait_ok(&self, n: u64, timeout: Duration) -> bool {
        crate::harness::wait_until(timeout, || self.ok() >= n)
    }

    /// Waits until at least `n` requests have finished, any outcome;
    /// `false` on timeout.
    pub fn wait_completed(&self, n: u64, timeout: Duration) -> bool {
        crate::harness::wait_until(timeout, || self.completed() >= n)
    }

    /// Tells the clients to stop after their current request.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Stops the clients and returns the report.
    pub fn finish(mut self) -> LoadReport {
        self.stop();
        self.join_thread()
    }

    /// Waits for the run to end by itself (its duration or request count)
    /// and returns the report.
    pub fn join(mut self) -> LoadReport {
        self.join_thread()
    }

    fn join_thread(&mut self) -> LoadReport {
        match self.thread.take().expect("joined once").join() {
            Ok(report) => report,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.stop();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nx-generation: 4\r\n\r\ngen=4 pid=9\n";

    async fn read_request(stream: &mut TcpStream) -> bool {
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            match stream.read_u8().await {
                Ok(byte) => buf.push(byte),
                Err(_) => return false,
            }
        }
        true
    }

    /// A server on 127.0.0.1:0 that runs `handle` for every connection.
    async fn serve<F, Fut>(handle: F) -> SocketAddr
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(handle(stream));
            }
        });
        addr
    }

    fn config(addr: SocketAddr, mode: Mode, requests: u64) -> LoadConfig {
        LoadConfig {
            conns: 2,
            mode,
            requests_per_conn: Some(requests),
            request_timeout: Duration::from_secs(10),
            ..LoadConfig::new(addr)
        }
    }

    /// Runs 2 clients x `requests` against `handle`; asserts every request
    /// was `expected`.
    async fn only<F, Fut>(mode: Mode, requests: u64, expected: Outcome, handle: F) -> LoadReport
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let addr = serve(handle).await;
        let report = run(config(addr, mode, requests)).await;
        assert_eq!(report.total(), 2 * requests, "{report}");
        assert_eq!(report.count(expected), 2 * requests, "{report}");
        report
    }

    async fn keep_alive_ok(mut s: TcpStream) {
        while read_request(&mut s).await {
            s.write_all(OK).await.unwrap();
        }
    }

    #[tokio::test]
    async fn ok_keep_alive() {
        let report = only(Mode::KeepAlive, 5, Outcome::Ok, keep_alive_ok).await;
        assert_eq!(report.connects, 2);
        assert_eq!(report.reconnects, 0);
        assert_eq!(report.generations, BTreeMap::from([(4, 10)]));
        assert_eq!(report.pids[&4], BTreeSet::from([9]));
        assert_eq!(report.latencies.len(), 10);
        assert!(report.p50() <= report.p99() && report.p99() <= report.max_latency());
        assert_eq!(report.failures(), 0);
        assert!(report.to_string().contains("failures: none"), "{report}");
    }

    #[tokio::test]
    async fn ok_close() {
        let report = only(Mode::Close, 3, Outcome::Ok, |mut s| async move {
            read_request(&mut s).await;
            let close =
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\ngen=1 pid=2\n";
            s.write_all(close).await.unwrap();
        })
        .await;
        assert_eq!(report.connects, 6);
        assert_eq!(report.reconnects, 0, "close mode does not reconnect");
    }

    #[tokio::test]
    async fn connection_close_header_is_a_reconnect() {
        let report = only(Mode::KeepAlive, 3, Outcome::Ok, |mut s| async move {
            read_request(&mut s).await;
            let close =
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\ngen=1 pid=2\n";
            s.write_all(close).await.unwrap();
            // Keep the socket open: the header alone must make us reconnect.
            let _ = s.read_u8().await;
        })
        .await;
        assert_eq!((report.connects, report.reconnects), (6, 6));
    }

    #[tokio::test]
    async fn fin_before_reuse_is_a_reconnect() {
        // Current-thread runtime: the server writes and closes before the
        // client task runs again, so the FIN is there when it checks.
        let report = only(Mode::KeepAlive, 3, Outcome::Ok, |mut s| async move {
            read_request(&mut s).await;
            s.write_all(OK).await.unwrap();
            s.shutdown().await.unwrap();
            let _ = s.read_u8().await;
        })
        .await;
        assert_eq!(report.connects, 6);
        // The last response of each client is never followed by a check.
        assert_eq!(report.reconnects, 4);
    }

    #[tokio::test]
    async fn reset() {
        only(Mode::KeepAlive, 2, Outcome::Reset, |mut s| async move {
            read_request(&mut s).await;
            s.set_zero_linger().unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn eof_before_response() {
        only(
            Mode::KeepAlive,
            2,
            Outcome::EofBeforeResponse,
            |mut s| async move {
                read_request(&mut s).await;
            },
        )
        .await;
    }

    #[tokio::test]
    async fn eof_racing_the_next_request() {
        // The server answers, then closes only after the next request is
        // in: the race a graceful drain must not lose.
        let report = run(config(
            serve(|mut s| async move {
                read_request(&mut s).await;
                s.write_all(OK).await.unwrap();
                read_request(&mut s).await;
            })
            .await,
            Mode::KeepAlive,
            2,
        ))
        .await;
        assert_eq!(report.ok(), 2, "{report}");
        assert_eq!(report.count(Outcome::EofBeforeResponse), 2, "{report}");
        assert_eq!(report.samples.len(), 2);
    }

    #[tokio::test]
    async fn truncated() {
        only(Mode::Close, 2, Outcome::Truncated, |mut s| async move {
            read_request(&mut s).await;
            s.write_all(&OK[..OK.len() - 3]).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn bad_status_and_wrong_bodies() {
        only(
            Mode::KeepAlive,
            2,
            Outcome::BadStatus(503),
            |mut s| async move {
                while read_request(&mut s).await {
                    s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                }
            },
        )
        .await;
        only(Mode::KeepAlive, 2, Outcome::WrongBody, |mut s| async move {
            while read_request(&mut s).await {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
                    .await
                    .unwrap();
            }
        })
        .await;
        // The header says another generation than the body.
        only(Mode::KeepAlive, 2, Outcome::WrongBody, |mut s| async move {
            while read_request(&mut s).await {
                let wrong = b"HTTP/1.1 200 OK\r\nx-generation: 5\r\nContent-Length: 12\r\n\r\ngen=4 pid=9\n";
                s.write_all(wrong).await.unwrap();
            }
        })
        .await;
    }

    #[tokio::test]
    async fn malformed() {
        only(Mode::Close, 1, Outcome::Malformed, |mut s| async move {
            read_request(&mut s).await;
            s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn timeout() {
        let addr = serve(|mut s| async move {
            read_request(&mut s).await;
            let _ = s.read_u8().await;
        })
        .await;
        let report = run(LoadConfig {
            request_timeout: Duration::from_millis(50),
            ..config(addr, Mode::KeepAlive, 2)
        })
        .await;
        assert_eq!(report.count(Outcome::Timeout), 4, "{report}");
    }

    #[tokio::test]
    async fn connect_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let report = run(config(addr, Mode::KeepAlive, 3)).await;
        assert_eq!(report.count(Outcome::ConnectRefused), 6, "{report}");
        assert_eq!(report.connects, 0);
        assert!(report.to_string().contains("refused=6"), "{report}");
    }

    #[test]
    fn start_stop_and_progress() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server runs on its own runtime thread, like devsup would.
        let server = std::thread::spawn(move || {
            runtime(1).block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = TcpListener::from_std(listener).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                keep_alive_ok(stream).await;
            })
        });
        let run = start(LoadConfig {
            conns: 1,
            ..LoadConfig::new(addr)
        });
        assert!(run.wait_ok(50, Duration::from_secs(30)));
        let report = run.finish();
        assert!(report.ok() >= 50, "{report}");
        assert_eq!(report.failures(), 0, "{report}");
        server.join().unwrap();
    }
}
