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
//!
//! - `report`: [`Outcome`], how one request is classified, and
//!   [`LoadReport`], what a run saw.
//! - `client`: the clients themselves ([`run`]).
//! - `thread`: a run on its own thread for synchronous callers ([`start`],
//!   [`run_blocking`]).

mod client;
mod report;
mod thread;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use self::client::run;
pub use self::report::{Failure, LoadReport, MAX_SAMPLES, Outcome, classify_io, classify_response};
pub use self::thread::{LoadRun, run_blocking, start};

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

#[cfg(test)]
mod tests;
