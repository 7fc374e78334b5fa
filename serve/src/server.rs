//! [`serve`]: the accept loop, READY, the drain; shaped like `axum::serve`.

use std::fmt;
use std::future::{Future, IntoFuture, poll_fn};
use std::io;
use std::pin::{Pin, pin};
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

use crate::conn::{Connection, OpenGuard};
use crate::{BoxError, Connections, Drain, DrainReport, process_drain, shutdown_signal};

/// What [`serve`] serves: a tower service over hyper requests whose
/// futures and bodies can move between the runtime's threads, such as an
/// `axum::Router` or a tonic service. It is implemented for every such
/// service, and written once here instead of at every function that takes
/// one; there is nothing to implement by hand.
pub trait HttpService:
    tower::Service<
        Request<Incoming>,
        Response = Response<Self::ResBody>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
    /// The body of the service's responses.
    type ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type ResBody = B;
}

/// The listening sockets [`serve`] accepts on: a tokio or a std
/// `TcpListener`, or a `Vec` of either (e.g. from
/// [`take_std_listeners`](crate::take_std_listeners)).
///
/// Each socket is made non-blocking before it is used: a socket passed by
/// devsup or systemd is blocking, and an accept loop on it would block a
/// runtime thread (and a graceful shutdown would never run).
pub struct Listeners(Inner);

enum Inner {
    Tokio(Vec<TcpListener>),
    Std(Vec<std::net::TcpListener>),
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Tokio(l) => f.debug_tuple("Listeners").field(l).finish(),
            Inner::Std(l) => f.debug_tuple("Listeners").field(l).finish(),
        }
    }
}

impl From<TcpListener> for Listeners {
    fn from(listener: TcpListener) -> Listeners {
        Listeners(Inner::Tokio(vec![listener]))
    }
}

impl From<Vec<TcpListener>> for Listeners {
    fn from(listeners: Vec<TcpListener>) -> Listeners {
        Listeners(Inner::Tokio(listeners))
    }
}

impl From<std::net::TcpListener> for Listeners {
    fn from(listener: std::net::TcpListener) -> Listeners {
        Listeners(Inner::Std(vec![listener]))
    }
}

impl From<Vec<std::net::TcpListener>> for Listeners {
    fn from(listeners: Vec<std::net::TcpListener>) -> Listeners {
        Listeners(Inner::Std(listeners))
    }
}

impl Listeners {
    /// Non-blocking tokio listeners; needs a runtime.
    fn into_tokio(self) -> io::Result<Vec<TcpListener>> {
        match self.0 {
            Inner::Tokio(listeners) => {
                for listener in &listeners {
                    crate::sys::set_nonblocking(listener)?;
                }
                Ok(listeners)
            }
            Inner::Std(listeners) => listeners
                .into_iter()
                .map(|listener| {
                    listener.set_nonblocking(true)?;
                    TcpListener::from_std(listener)
                })
                .collect(),
        }
    }
}

/// Serves `app` on `listener`: the drop-in replacement for `axum::serve`.
///
/// ```no_run
/// # use axum::{Router, routing::get};
/// # async fn run(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
/// // axum::serve(listener, app).await
/// devsup_serve::serve(listener, app).await
/// # }
/// ```
///
/// Awaiting it (it is [`IntoFuture`]) serves until SIGTERM or SIGINT, then
/// drains as the [crate docs](crate) describe; with
/// [`Serve::with_graceful_shutdown`] it drains when your future completes
/// instead. Either way it tells devsup (or systemd) READY=1 once it
/// accepts, STOPPING=1 when the drain starts, and resolves once every
/// connection is closed or [`Drain::deadline`] has passed.
///
/// `app` is any tower service over hyper requests, such as an
/// `axum::Router` or a tonic service. Each connection runs in its own tokio
/// task and speaks HTTP/1.1 or, with prior knowledge, HTTP/2 (h2c).
///
/// It errors only if READY cannot be sent or a listener itself is broken
/// (accept fails with EBADF, EINVAL, ...). Other accept errors are
/// retried, and errors on single connections end only those connections.
pub fn serve<S>(listener: impl Into<Listeners>, app: S) -> Serve<S> {
    Serve {
        listeners: listener.into(),
        app,
        drain: Drain::default(),
        connections: Connections::default(),
        notify_ready: true,
    }
}

/// A server to await; made by [`serve`].
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S> {
    listeners: Listeners,
    app: S,
    drain: Drain,
    connections: Connections,
    notify_ready: bool,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listeners", &self.listeners)
            .field("drain", &self.drain)
            .field("notify_ready", &self.notify_ready)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// Drains when `signal` completes instead of on SIGTERM or SIGINT, as
    /// axum's method of the same name.
    ///
    /// Under devsup, SIGTERM is the drain signal, so `signal` should
    /// complete on SIGTERM ([`shutdown_signal`] does). READY is sent only
    /// after `signal` has been polled once, so a signal handler it installs
    /// on its first poll is in place before devsup can send SIGTERM.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    /// Sets how the server drains (default [`Drain::default`]).
    pub fn drain(mut self, drain: Drain) -> Self {
        self.drain = drain;
        self
    }

    /// Whether to send READY=1 once accepting (default: yes). Turn it off
    /// to send it yourself later, after more set-up.
    pub fn notify_ready(mut self, notify: bool) -> Self {
        self.notify_ready = notify;
        self
    }

    /// A live count of the connections this server holds, to read while it
    /// runs.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }
}

impl<S: HttpService> Serve<S> {
    /// Serves until SIGTERM or SIGINT and drains, like awaiting the server,
    /// and returns what the drain came to.
    pub async fn run(self) -> io::Result<DrainReport> {
        let signal = shutdown_signal()?;
        self.with_graceful_shutdown(async move {
            signal.await;
        })
        .run()
        .await
    }
}

impl<S: HttpService> IntoFuture for Serve<S> {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.run().await.map(drop) })
    }
}

/// A server that drains when its signal completes; made by
/// [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing until awaited"]
pub struct WithGracefulShutdown<S, F> {
    serve: Serve<S>,
    signal: F,
}

impl<S, F> fmt::Debug for WithGracefulShutdown<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl<S, F> WithGracefulShutdown<S, F> {
    /// See [`Serve::drain`].
    pub fn drain(mut self, drain: Drain) -> Self {
        self.serve.drain = drain;
        self
    }

    /// See [`Serve::notify_ready`].
    pub fn notify_ready(mut self, notify: bool) -> Self {
        self.serve.notify_ready = notify;
        self
    }

    /// See [`Serve::connections`].
    pub fn connections(&self) -> Connections {
        self.serve.connections.clone()
    }
}

impl<S, F> WithGracefulShutdown<S, F>
where
    S: HttpService,
    F: Future<Output = ()> + Send + 'static,
{
    /// Serves until the signal and drains, like awaiting the server, and
    /// returns what the drain came to.
    pub async fn run(self) -> io::Result<DrainReport> {
        let WithGracefulShutdown { serve, signal } = self;
        let listeners = serve.listeners.into_tokio()?;
        run(
            listeners,
            serve.app,
            signal,
            serve.drain,
            serve.connections,
            serve.notify_ready,
        )
        .await
    }
}

impl<S, F> IntoFuture for WithGracefulShutdown<S, F>
where
    S: HttpService,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.run().await.map(drop) })
    }
}

/// Serves until `shutdown` completes, then drains: the body of every
/// `run` and `.await` of [`Serve`] and [`WithGracefulShutdown`].
async fn run<S: HttpService>(
    listeners: Vec<TcpListener>,
    app: S,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
    connections: Connections,
    notify_ready: bool,
) -> io::Result<DrainReport> {
    let http = http_builder();
    let (draining_tx, draining_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);

    // Each accepted connection is served by its own task. The closure owns
    // what it hands out and is lent to the accept loop as `&mut`, so that
    // loop's future is Send for any Send app, Sync or not.
    let mut serve_connection = {
        let connections = connections.clone();
        move |stream| {
            let conn = Connection {
                stream,
                app: app.clone(),
                draining: draining_rx.clone(),
                drain,
                _open: OpenGuard::new(&connections),
            };
            conn.run(http.clone())
        }
    };

    // Poll the shutdown future once before READY, so that a signal handler
    // it installs on its first poll is there before devsup may send
    // SIGTERM. Told to stop already: drain at once, without READY.
    let stopped_early = poll_fn(|cx| Poll::Ready(shutdown.as_mut().poll(cx).is_ready())).await;
    if !stopped_early {
        if notify_ready {
            // The listeners are ours now: connections that arrive before
            // the first accept wait in the socket's backlog.
            devsup_protocol::notify_ready()?;
        }
        accept_until(&listeners, shutdown, &mut tasks, &mut serve_connection).await?;
    }

    // New connections must go to the next generation, which accepts from
    // the same socket: drop our copies before anything else.
    drop(listeners);
    let started = Instant::now();
    let open_at_start = connections.open();
    // No receiver means no connection left to tell.
    draining_tx.send_replace(true);
    process_drain().send_replace(true);
    // For devsup's log; nobody to tell is fine, and so is a failure.
    let _ = devsup_protocol::notify_stopping();
    let dropped = join_until(tasks, drain.deadline).await;
    Ok(DrainReport {
        open_at_start,
        dropped,
        elapsed: started.elapsed(),
    })
}

/// HTTP/1.1 and h2c with prior knowledge on the same socket, told apart
/// by the HTTP/2 preface.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's default header-read timeout would not run.
    http.http1().timer(TokioTimer::new());
    http.http2().timer(TokioTimer::new());
    http
}

/// The accept loop: each connection accepted becomes a task in `tasks`,
/// serving it, until `shutdown` completes. Errs only when a listener is
/// broken, and then at once, without a drain.
async fn accept_until<F>(
    listeners: &[TcpListener],
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    tasks: &mut JoinSet<()>,
    serve_connection: &mut impl FnMut(TcpStream) -> F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut next = 0;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            accepted = accept_any(listeners, &mut next) => {
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(err) if is_per_connection(&err) => continue,
                    Err(err) if crate::sys::is_listener_broken(&err) => return Err(err),
                    Err(_) => {
                        // Out of fds or memory, or a network error the
                        // kernel reports at accept: retrying at once would
                        // spin. Connections wait in the backlog.
                        tokio::select! {
                            () = &mut shutdown => return Ok(()),
                            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        }
                    }
                };
                tasks.spawn(serve_connection(stream));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = tasks.join_next() => {}
        }
    }
}

/// The drain's wait: until every connection task has ended, or until
/// `deadline` from now, when the rest are aborted. Returns how many were.
async fn join_until(mut tasks: JoinSet<()>, deadline: Duration) -> usize {
    let deadline = tokio::time::sleep(deadline);
    let mut deadline = pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { return 0 },
            () = &mut deadline => {
                let dropped = tasks.len();
                tasks.abort_all();
                // Wait for the aborts so the sockets are closed when we return.
                while tasks.join_next().await.is_some() {}
                return dropped;
            }
        }
    }
}

/// Accepts from whichever listener has a connection first, starting with
/// the one after the listener that was accepted from last: polled always in
/// the same order, a busy first listener would starve the others.
async fn accept_any(listeners: &[TcpListener], next: &mut usize) -> io::Result<TcpStream> {
    poll_fn(|cx| {
        let n = listeners.len();
        for i in (0..n).map(|k| (*next + k) % n) {
            if let Poll::Ready(accepted) = listeners[i].poll_accept(cx) {
                *next = (i + 1) % n;
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
