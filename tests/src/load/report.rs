//! How one request is classified ([`Outcome`]) and what a run saw
//! ([`LoadReport`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::time::Duration;

use super::Mode;
use crate::http::Response;

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
        crate::stats::quantile(&self.latencies, q).unwrap_or_default()
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
