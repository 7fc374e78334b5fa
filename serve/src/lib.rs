//! A drain-correct graceful shutdown for axum/hyper servers run under devsup
//! (or systemd socket activation, or on their own).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use devsup_serve::{Drain, serve, shutdown_signal, take_listener};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     // The socket devsup (or systemd) passed at fd 3, or a bound one when
//!     // run on its own.
//!     let listener = take_listener("127.0.0.1:8080".parse().unwrap())?;
//!     // Installed before READY: from then on a SIGTERM drains.
//!     let stop = shutdown_signal()?;
//!     let app = Router::new().route("/", get(|| async { "hello\n" }));
//!     let shutdown = async {
//!         stop.await;
//!         let _ = devsup_protocol::notify_stopping();
//!     };
//!     let server = tokio::spawn(serve(listener, app, shutdown, Drain::default()));
//!     // Connections queue in the socket's backlog until serve accepts them,
//!     // so the old generation may be drained now.
//!     devsup_protocol::notify_ready()?;
//!     server.await??;
//!     Ok(())
//! }
//! ```
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
//!   tokio-tungstenite), provided the handler keeps reading the socket, as
//!   an echo or chat loop does. A handler that stops polling the socket
//!   gets it shut down a grace later (an end without a close frame).
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

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

mod conn;
mod upgrade;

use conn::{Connection, OpenGuard};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How [`serve`] drains once its shutdown future completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// What a drain came to, returned by [`Server::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections open when the drain started.
    pub open_at_start: usize,
    /// Connections still open at the deadline, and so dropped.
    pub dropped: usize,
    /// Time from the shutdown future completing to the last connection
    /// closing.
    pub elapsed: Duration,
}

/// A live count of the connections a [`Server`] holds open, for logging
/// while it runs. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    /// The number of connections open right now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One or more listeners served with the same app and drain; [`serve`] is
/// the one-call form of it.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<TcpListener>,
    drain: Drain,
    connections: Connections,
}

impl Server {
    /// A server for these listeners, with the default [`Drain`].
    pub fn new(listeners: impl IntoIterator<Item = TcpListener>) -> Server {
        Server {
            listeners: listeners.into_iter().collect(),
            drain: Drain::default(),
            connections: Connections::default(),
        }
    }

    /// Sets how the server drains.
    pub fn drain(mut self, drain: Drain) -> Server {
        self.drain = drain;
        self
    }

    /// A handle on the count of open connections, readable while
    /// [`Server::serve`] runs.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// Serves `app` on every listener until `shutdown` completes, then
    /// drains as the [module docs](crate) describe and returns once every
    /// connection is closed or the drain deadline has passed.
    ///
    /// Errors only if the listener itself is broken (accept fails with
    /// EBADF, EINVAL, ...). Other accept errors are retried, and errors on
    /// single connections end only those connections.
    pub async fn serve<S, B>(
        self,
        app: S,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<DrainReport>
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let Server {
            listeners,
            drain,
            connections,
        } = self;
        // HTTP/1.1 and h2c with prior knowledge on the same socket, told
        // apart by the HTTP/2 preface.
        let mut http = auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper's default header-read timeout would not run.
        http.http1().timer(TokioTimer::new());
        http.http2().timer(TokioTimer::new());
        let (draining_tx, draining_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut shutdown = pin!(shutdown);

        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = accept_any(&listeners) => {
                    let stream = match accepted {
                        Ok(stream) => stream,
                        Err(err) if is_per_connection(&err) => continue,
                        Err(err) if is_listener_broken(&err) => return Err(err),
                        Err(_) => {
                            // Out of fds or memory, or a network error the
                            // kernel reports at accept: retrying at once
                            // would spin. Connections wait in the backlog.
                            tokio::select! {
                                () = &mut shutdown => break,
                                () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                            }
                        }
                    };
                    let conn = Connection {
                        stream,
                        app: app.clone(),
                        draining: draining_rx.clone(),
                        drain,
                        _open: OpenGuard::new(&connections),
                    };
                    tasks.spawn(conn.run(http.clone()));
                }
                // Reap finished connections so the set does not grow.
                Some(_) = tasks.join_next() => {}
            }
        }

        // New connections must go to the next generation, which accepts
        // from the same socket: drop our copies before anything else.
        drop(listeners);
        let started = Instant::now();
        let open_at_start = connections.open();
        // No receiver means no connection left to tell.
        draining_tx.send_replace(true);
        process_drain().send_replace(true);

        let deadline = tokio::time::sleep(drain.deadline);
        let mut deadline = pin!(deadline);
        let mut dropped = 0;
        loop {
            tokio::select! {
                joined = tasks.join_next() => if joined.is_none() { break },
                () = &mut deadline => {
                    dropped = tasks.len();
                    tasks.abort_all();
                    // Wait for the aborts so the sockets are closed when we return.
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        Ok(DrainReport {
            open_at_start,
            dropped,
            elapsed: started.elapsed(),
        })
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains with
/// `drain` (see the [module docs](crate)) and returns.
///
/// `app` is any tower service over hyper requests, such as an
/// `axum::Router`. Each connection runs in its own tokio task. Use
/// [`Server`] for several listeners or to watch the connection count.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use axum::{Router, routing::get};
/// use devsup_serve::{Drain, serve};
///
/// // As in a test: a listener of our own, and a shutdown that is already due,
/// // so serve stops accepting at once and returns with nothing to drain.
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let app = Router::new().route("/", get(|| async { "hello\n" }));
/// serve(listener, app, async {}, Drain::default()).await?;
/// # Ok(()) }
/// ```
pub async fn serve<S, B>(
    listener: TcpListener,
    app: S,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
) -> io::Result<()>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new([listener])
        .drain(drain)
        .serve(app, shutdown)
        .await
        .map(drop)
}

/// Accepts from whichever listener has a connection first.
async fn accept_any(listeners: &[TcpListener]) -> io::Result<TcpStream> {
    poll_fn(|cx| {
        for listener in listeners {
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                return Poll::Ready(accepted.map(|(stream, _)| stream));
            }
        }
        Poll::Pending
    })
    .await
}

/// Errors that concern one connection that died in the backlog, not the
/// listener: accept the next one.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Errors that mean the listener itself is unusable, so that retrying can
/// never succeed.
fn is_listener_broken(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: devsup's (and systemd's) drain signal.
    Terminate,
    /// SIGINT: Ctrl-C when run by hand.
    Interrupt,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        })
    }
}

/// A future that completes on the first SIGTERM or SIGINT.
///
/// The handlers are installed by this call, not when the future is first
/// polled: a SIGTERM that arrives between `notify_ready` and the first poll
/// would otherwise kill the process without a drain. Call it inside a tokio
/// runtime, before telling devsup the server is ready.
pub fn shutdown_signal() -> io::Result<impl Future<Output = StopSignal> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
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
