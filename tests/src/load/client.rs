//! The clients: each sends `GET path` until stopped, on raw tokio sockets,
//! and classifies every request (see the [module](super) for why raw
//! sockets, and how a graceful close differs from a lost request).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::report::{MAX_SAMPLES, classify_io, classify_response};
use super::{Failure, LoadConfig, LoadReport, Mode, Outcome};
use crate::http::{self, Parsed, Response};

/// Live counters of a run.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) completed: AtomicU64,
    pub(super) ok: AtomicU64,
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

pub(super) async fn run_with(config: LoadConfig, progress: Arc<Progress>) -> LoadReport {
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
