//! A drain-correct `serve` for axum/hyper/tonic servers run under devsup
//! (or systemd socket activation, or on their own).
//!
//! Opting in is one line: where an axum server has
//! `axum::serve(listener, app)`, write `devsup_serve::serve(listener, app)`.
//! Same shape (await it, or add `.with_graceful_shutdown(signal)`), and
//! nothing else to call:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     // The socket devsup (or systemd) passed at fd 3, or a bound one when
//!     // run on its own.
//!     let listener = devsup_serve::take_listener("127.0.0.1:8080".parse().unwrap())?;
//!     let app = Router::new().route("/", get(|| async { "hello\n" }));
//!     // Was: axum::serve(listener, app).await
//!     devsup_serve::serve(listener, app).await
//! }
//! ```
//!
//! What that line does:
//!
//! - given a std listener, it makes the socket non-blocking before tokio
//!   sees it (a socket devsup or systemd passes is blocking; a tokio server
//!   accepting on a blocking socket stalls a runtime thread and never
//!   drains, and recent tokio refuses it in debug builds);
//! - it tells devsup READY=1 once it accepts, so the old generation is
//!   drained only then; STOPPING=1 when its own drain starts;
//! - it drains on SIGTERM (devsup's and systemd's drain signal) or SIGINT
//!   (on Windows: `CTRL_BREAK_EVENT`, devsup's drain signal there, or
//!   `CTRL_C_EVENT`), or when the future given to `.with_graceful_shutdown(..)` completes;
//! - it speaks HTTP/1.1 and h2c (HTTP/2 with prior knowledge, as gRPC
//!   uses) on the same socket, and WebSockets and other upgrades;
//! - it drains without losing a request, and ends long-lived connections
//!   quickly, as below.
//!
//! Under devsup no other change is needed. [`take_listener`] is the
//! one-call way to get the passed socket (listenfd's `take_tcp_listener(0)`
//! works too, a std or tokio listener alike).
//!
//! [`serve`] owns the accept loop and every connection, because draining
//! well needs per-connection state (is a request in flight? since when has
//! the connection been quiet?) and a handle on each hyper connection to
//! close it. A tower layer sees requests, not connections, so it could add
//! `Connection: close` but could never close an idle connection; that is why
//! this is a `serve` function and not a layer.
//!
//! # The keep-alive race, and how the drain avoids it
//!
//! hyper's own `graceful_shutdown` closes idle keep-alive connections at
//! once. During a hand-off that loses requests:
//!
//! 1. A client sends request 1 on a keep-alive connection and gets its
//!    response; the connection goes back into the client's pool.
//! 2. devsup starts the next generation and, once it is ready, sends SIGTERM
//!    to this one.
//! 3. This generation stops accepting and, with plain `graceful_shutdown`,
//!    closes the idle connection straight away.
//! 4. At the same moment the client takes the pooled connection and writes
//!    request 2, before the FIN from step 3 has reached it.
//! 5. Request 2 lands on a closed socket: the kernel answers with a reset,
//!    and the client gets an error without a response. It cannot tell
//!    whether the request ran, so it cannot safely retry a POST.
//!
//! [`serve`] instead keeps each connection open through the drain until it
//! has stayed idle for [`Drain::idle_grace`]. A request that arrives in
//! that time (step 4) is answered as usual, with `Connection: close`, so the
//! client learns from the response itself that the connection is done and
//! opens its next one to the new generation. Only a connection that was
//! quiet for the whole grace is closed. The window cannot be shut
//! completely in HTTP/1.1 (a client may still write at the very instant the
//! grace runs out, which is why RFC 9112 §9.3.1 lets clients retry
//! idempotent requests), but it moves from "any request in the first
//! instant of the drain" to "a request sent exactly a grace after the
//! connection went quiet", which clients with a pool timeout below the grace
//! never hit.
//!
//! # HTTP/2
//!
//! An HTTP/2 connection drains the HTTP/2 way, which has no such window:
//! GOAWAY, a PING round trip, a second GOAWAY with the last stream the
//! server took, the streams in flight finish, and the connection closes. A
//! stream the client opened meanwhile is left out by that GOAWAY, which
//! tells the client it was never processed (RFC 9113 §6.8: safe to retry).
//! A connection is HTTP/2 from its client's preface on: one that has made
//! no request yet when the drain begins (or whose preface arrives after)
//! gets the same GOAWAY at once, not the idle grace of HTTP/1.1, which a
//! client streaming on it would never leave it.
//! For the client to read that GOAWAY, the socket must not be reset under
//! it, which the kernel does if the client's late frames reach a closed
//! socket; so `serve` closes an HTTP/2 socket the lingering way: its FIN
//! sent, it reads and discards what still arrives until the client closes
//! its side (at most a second).
//!
//! # Long-lived connections
//!
//! A WebSocket or an event stream would hold the old generation until the
//! drain deadline. [`Drain::long_lived_grace`] (200ms by default) after the
//! drain starts, `serve` ends them itself, with no code in the
//! application:
//!
//! - A response with `Content-Type: text/event-stream` (axum's `Sse`) ends
//!   cleanly between two events: the final chunk is written and, on
//!   HTTP/1.1, the connection closes right after it. `EventSource` clients
//!   reconnect, to the next generation.
//! - An upgraded WebSocket gets a close frame with code 1012 ("service
//!   restart", [`CLOSE_SERVICE_RESTART`]), written by `serve` between two
//!   of the application's frames; what the application writes after it is
//!   dropped, the client answers the close, the application reads that
//!   close as it would any other and ends. This works for any WebSocket
//!   library on top of the upgraded socket (axum's `WebSocketUpgrade`,
//!   tokio-tungstenite), provided the handler keeps reading or writing the
//!   socket, as an echo, chat or push loop does. A grace after the close
//!   frame the socket is shut down: a handler that only writes then gets
//!   an error and ends; one that stops polling the socket altogether never
//!   gets the close frame, only that end.
//!
//! What does need code: ending a stream that is not `text/event-stream`
//! (a long chunked download is left to finish, since ending it early would
//! look complete to the client), closing a WebSocket with a reason of your
//! own, or saving state first. For those, every request carries a
//! [`DrainToken`] in its extensions, and [`draining`] gives one anywhere.
//!
//! Dropping the listeners at the start of the drain loses nothing under
//! devsup, because the socket is shared: connections still waiting in its
//! backlog stay there for the next generation. With a listener only this
//! process holds (a test, or a server run on its own), closing it resets
//! whatever the backlog still holds.
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

mod conn;
mod livereload;
mod server;
mod sys;
mod upgrade;

pub use livereload::{LiveReload, LiveReloadBody, LiveReloadLayer};
pub use server::{HttpService, Listeners, Serve, WithGracefulShutdown, serve};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How [`serve`] drains once its shutdown future completes.
///
/// Made from [`Drain::default`] and changed with the `with_` methods (or
/// by assigning to its fields); it is non-exhaustive, so that a new drain
/// setting, with its default, is not a breaking change:
///
/// ```
/// use std::time::Duration;
/// use devsup_serve::Drain;
///
/// let drain = Drain::default()
///     .with_idle_grace(Duration::from_millis(250))
///     .with_deadline(Duration::from_secs(4));
/// assert_eq!(drain.idle_grace, Duration::from_millis(250));
/// assert_eq!(drain.long_lived_grace, Drain::default().long_lived_grace);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drain {
    /// How long a connection must stay idle (no request in flight, no bytes
    /// received) during the drain before it is closed. Default 500ms.
    pub idle_grace: Duration,
    /// How long the drain may take in all; connections still open then are
    /// dropped. Default 8s, below devsup's default drain timeout so that a
    /// server exits on its own before it is killed.
    pub deadline: Duration,
    /// How long after the drain starts long-lived exchanges are ended for
    /// the application: a server-sent event stream (`text/event-stream`)
    /// ends cleanly, and an upgraded WebSocket gets a close frame with code
    /// 1012 ("service restart"), so their clients reconnect to the next
    /// generation. The application may end them sooner itself (see
    /// [`DrainToken`]). Default 200ms.
    pub long_lived_grace: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            idle_grace: Duration::from_millis(500),
            deadline: Duration::from_secs(8),
            long_lived_grace: Duration::from_millis(200),
        }
    }
}

impl Drain {
    /// Sets [`Drain::idle_grace`].
    #[must_use]
    pub const fn with_idle_grace(mut self, idle_grace: Duration) -> Drain {
        self.idle_grace = idle_grace;
        self
    }

    /// Sets [`Drain::deadline`].
    #[must_use]
    pub const fn with_deadline(mut self, deadline: Duration) -> Drain {
        self.deadline = deadline;
        self
    }

    /// Sets [`Drain::long_lived_grace`].
    #[must_use]
    pub const fn with_long_lived_grace(mut self, long_lived_grace: Duration) -> Drain {
        self.long_lived_grace = long_lived_grace;
        self
    }
}

/// The WebSocket close code `serve` sends on a drain, and that an
/// application closing its WebSockets itself should send: 1012, "service
/// restart" (the server is restarting; reconnect).
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

/// Tells a handler that the server is draining: this generation will exit
/// soon, and long-lived exchanges should end so that their clients
/// reconnect to the next one.
///
/// [`serve`] puts one in every request's extensions (in axum:
/// `Extension(token): Extension<DrainToken>`); [`draining`] gives one
/// anywhere. Clones are cheap and share the state.
///
/// Most servers need no code for this: `serve` ends event streams and
/// closes WebSockets itself, [`Drain::long_lived_grace`] after the drain
/// starts. A handler that awaits the token can do better: close with a
/// reason of its own, flush state, or end a stream that is not
/// `text/event-stream`.
///
/// ```
/// use axum::extract::ws::{CloseFrame, Message, WebSocket};
/// use devsup_serve::{CLOSE_SERVICE_RESTART, DrainToken};
///
/// async fn echo(mut socket: WebSocket, drain: DrainToken) {
///     loop {
///         tokio::select! {
///             msg = socket.recv() => match msg {
///                 Some(Ok(msg)) => if socket.send(msg).await.is_err() { return },
///                 _ => return,
///             },
///             () = drain.drained() => {
///                 let close = CloseFrame { code: CLOSE_SERVICE_RESTART, reason: "restarting".into() };
///                 let _ = socket.send(Message::Close(Some(close))).await;
///                 return;
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct DrainToken(watch::Receiver<bool>);

impl DrainToken {
    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when the drain starts (at once if it has), or when the
    /// server is gone.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            // An error means the server is gone: as good as drained.
            let _ = rx.wait_for(|&d| d).await;
        }
    }
}

fn process_drain() -> &'static watch::Sender<bool> {
    static DRAIN: OnceLock<watch::Sender<bool>> = OnceLock::new();
    DRAIN.get_or_init(|| watch::channel(false).0)
}

/// A [`DrainToken`] for the whole process: it is draining once any
/// [`serve`] in it has started to drain. For handlers that cannot reach the
/// request's extensions (a background task, a library).
pub fn draining() -> DrainToken {
    DrainToken(process_drain().subscribe())
}

/// What a drain came to, returned by [`Serve::run`].
///
/// Non-exhaustive: made by `serve` only, and it may report more later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections open when the drain started.
    pub open_at_start: usize,
    /// Connections still open at the deadline, and so dropped.
    pub dropped: usize,
    /// Time from the shutdown future completing to the last connection
    /// closing.
    pub elapsed: Duration,
}

/// A live count of the connections a server holds open, for logging while
/// it runs ([`Serve::connections`]). Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    /// The number of connections open right now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Takes the first listening socket passed by devsup or systemd (fd 3),
/// or binds `fallback` when there is none, ready for tokio.
///
/// The socket is made non-blocking before tokio sees it: tokio expects a
/// non-blocking socket (a blocking accept would stall a runtime thread),
/// and since O_NONBLOCK belongs to the socket the generations share, not to
/// this process's fd, nothing else will have set it.
///
/// listenfd removes `LISTEN_FDS` and `LISTEN_PID` from the environment, so
/// read them before calling this if you need them. Changing the
/// environment is only sound while no other thread reads it: from inside a
/// multi-threaded runtime, call this before spawning anything, or use
/// [`take_std_listener`] before the runtime starts.
pub fn take_listener(fallback: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(take_std_listener(fallback)?)
}

/// [`take_listener`] without tokio: the same socket, already non-blocking,
/// for use before a runtime is started.
pub fn take_std_listener(fallback: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = match listenfd::ListenFd::from_env().take_tcp_listener(0)? {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(fallback)?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Takes every listening socket passed by devsup or systemd, in fd order,
/// or binds `fallback` when there is none; each already non-blocking.
/// Passed fds that are not TCP listeners are skipped. The same environment
/// caveat as [`take_listener`] applies.
pub fn take_std_listeners(fallback: SocketAddr) -> io::Result<Vec<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::with_capacity(fds.len());
    for idx in 0..fds.len() {
        // Passed fds that are not TCP listeners (a unix socket, an fd a
        // previous generation stored with FDSTORE=1) are left for the
        // application.
        if let Ok(Some(listener)) = fds.take_tcp_listener(idx) {
            listeners.push(listener);
        }
    }
    if listeners.is_empty() {
        listeners.push(std::net::TcpListener::bind(fallback)?);
    }
    for listener in &listeners {
        listener.set_nonblocking(true)?;
    }
    Ok(listeners)
}

/// The signal that ended a [`shutdown_signal`] future.
///
/// Non-exhaustive: another platform's (or another) stop signal adds a
/// variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopSignal {
    /// devsup's (and systemd's) drain signal: SIGTERM on unix,
    /// `CTRL_BREAK_EVENT` on Windows.
    Terminate,
    /// Ctrl-C when run by hand: SIGINT on unix, `CTRL_C_EVENT` on Windows.
    Interrupt,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (terminate, interrupt) = if cfg!(windows) {
            ("CTRL_BREAK", "CTRL_C")
        } else {
            ("SIGTERM", "SIGINT")
        };
        f.write_str(match self {
            StopSignal::Terminate => terminate,
            StopSignal::Interrupt => interrupt,
        })
    }
}

/// A future that completes on the first SIGTERM or SIGINT (on Windows: the
/// first `CTRL_BREAK_EVENT`, which devsup sends to a generation's process
/// group to drain it, or `CTRL_C_EVENT`).
///
/// The handlers are installed by this call, not when the future is first
/// polled: a SIGTERM that arrives between `notify_ready` and the first poll
/// would otherwise kill the process without a drain. Call it inside a tokio
/// runtime, before telling devsup the server is ready.
pub fn shutdown_signal() -> io::Result<impl Future<Output = StopSignal> + Send + 'static> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    #[cfg(windows)]
    let (mut term, mut int) = {
        use tokio::signal::windows::{ctrl_break, ctrl_c};
        (ctrl_break()?, ctrl_c()?)
    };
    Ok(async move {
        tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = int.recv() => StopSignal::Interrupt,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_drain_is_half_a_second_and_eight() {
        let drain = Drain::default();
        assert_eq!(drain.idle_grace, Duration::from_millis(500));
        assert_eq!(drain.deadline, Duration::from_secs(8));
        assert_eq!(drain.long_lived_grace, Duration::from_millis(200));
    }
}
