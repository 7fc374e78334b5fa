//! One connection through its life and through the drain: the hyper
//! connection, the request tracking, the socket wrapper, and what happens
//! to an upgraded connection after hyper has let go of it.
//!
//! The states of a connection (serving, draining, upgraded, lingering
//! after an HTTP/2 drain) share the socket wrapper and the activity
//! tracker, so they stay together in one module.

use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::upgrade::Upgrade;
use crate::{Connections, Drain, DrainToken, HttpService};

/// Keeps [`Connections`] right however a connection task ends, aborts
/// included.
pub(crate) struct OpenGuard(Connections);

impl OpenGuard {
    pub(crate) fn new(connections: &Connections) -> OpenGuard {
        connections.0.fetch_add(1, Ordering::Relaxed);
        OpenGuard(connections.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Connection<S> {
    pub(crate) stream: TcpStream,
    pub(crate) app: S,
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) drain: Drain,
    pub(crate) _open: OpenGuard,
}

impl<S: HttpService> Connection<S> {
    /// The socket and the application, wrapped to follow the connection's
    /// activity.
    fn wrap(
        stream: TcpStream,
        app: S,
        draining: &watch::Receiver<bool>,
        drain: &Drain,
    ) -> (
        Arc<Activity>,
        TokioIo<ActiveIo>,
        Tracked<TowerToHyperService<S>>,
    ) {
        // Small responses should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(crate::sys::raw_sock(&stream)));
        let io = TokioIo::new(ActiveIo {
            inner: ManuallyDrop::new(stream),
            activity: activity.clone(),
            preface: Some(0),
        });
        let service = Tracked {
            inner: TowerToHyperService::new(app),
            activity: activity.clone(),
            draining: draining.clone(),
            long_lived_grace: drain.long_lived_grace,
        };
        (activity, io, service)
    }

    pub(crate) async fn run(self, http: auto::Builder<TokioExecutor>) {
        let Connection {
            stream,
            app,
            mut draining,
            drain,
            _open,
        } = self;
        let (activity, io, service) = Self::wrap(stream, app, &draining, &drain);
        // With upgrades, so a WebSocket (or any `Upgrade:`) route works:
        // hyper hands the socket to the app once the 101 response is written.
        // Boxed to be dropped once it is done: that hands the socket back.
        let mut conn = Box::pin(http.serve_connection_with_upgrades(io, service));

        let idle_grace = drain.idle_grace;
        let mut in_drain = false;
        let mut closing = false;
        let mut check = pin!(tokio::time::sleep(Duration::ZERO));
        let mut check_armed = false;
        loop {
            tokio::select! {
                // Errors here are the client's doing (reset, bad request) and
                // end only this connection.
                _ = conn.as_mut() => break,
                // An error means the server is gone, which also means drain.
                _ = draining.wait_for(|&d| d), if !in_drain => {
                    in_drain = true;
                    match activity.at_drain(idle_grace) {
                        AtDrain::Shutdown => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        AtDrain::Idle(Some(at)) => {
                            check.as_mut().reset(at);
                            check_armed = true;
                        }
                        AtDrain::Idle(None) => {}
                    }
                }
                () = &mut check, if in_drain && !closing && check_armed => {
                    check_armed = false;
                    match activity.idle_until(idle_grace) {
                        Some(at) if at <= Instant::now() => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Some(at) => {
                            check.as_mut().reset(at);
                            check_armed = true;
                        }
                        // Busy: the end of the request re-arms the check.
                        None => {}
                    }
                }
                // The preface arrived after the drain began: the connection
                // is HTTP/2 after all, and gets its GOAWAY now, not after an
                // idle grace its streams may never leave it (hyper 1.12
                // sends it once its handshake is done, if it is not yet).
                () = activity.became_http2.notified(), if in_drain && !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.became_idle.notified(), if in_drain && !closing => {
                    if let Some(at) = activity.idle_until(idle_grace) {
                        check.as_mut().reset(at);
                        check_armed = true;
                    }
                }
            }
        }
        // hyper is done with the socket: dropping the connection hands it
        // back (HTTP/2 only, see ActiveIo's Drop).
        drop(conn);
        if let Some(stream) = activity.take_leftover() {
            linger(stream).await;
        }
        if activity.upgrade.is_flagged() {
            upgraded(&activity.upgrade, draining, drain.long_lived_grace).await;
        }
    }
}

/// What a connection does as the drain begins.
enum AtDrain {
    /// Shut down gracefully now: GOAWAY for HTTP/2, a close after the
    /// response in flight for HTTP/1.1.
    Shutdown,
    /// Close once idle for the idle grace: the first check is due then
    /// (`None`: busy; the end of its request arms the check).
    Idle(Option<Instant>),
}

impl Activity {
    fn at_drain(&self, idle_grace: Duration) -> AtDrain {
        if self.is_http2() {
            // HTTP/2 drains the HTTP/2 way: GOAWAY (hyper sends one that
            // admits every stream, then after a ping the last stream id),
            // the streams in flight finish, then the connection closes. The
            // client learns from GOAWAY itself that it must open its next
            // stream elsewhere: no idle grace needed.
            return AtDrain::Shutdown;
        }
        if self.long_lived.load(Ordering::Relaxed) > 0 {
            // An event stream is in flight: it will be ended at the
            // long-lived grace, and the connection must close right after
            // it (hyper closes after the response in flight), not serve a
            // reconnect.
            return AtDrain::Shutdown;
        }
        // The grace counts from the start of the drain at the earliest: a
        // connection quiet for a minute before it may be about to be reused
        // right now.
        self.touch();
        AtDrain::Idle(self.idle_until(idle_grace))
    }
}

/// How long an HTTP/2 connection's socket stays open after hyper is done
/// with it, at most, for the client to close its side; see [`linger`].
const LINGER: Duration = Duration::from_secs(1);

/// The lingering close of an HTTP/2 connection: its write side shut down
/// (hyper's last GOAWAY and the FIN are out), the socket is read, and what
/// arrives discarded, until the client closes its side (or [`LINGER`]).
///
/// Closing at once loses calls. A client may have opened a stream before
/// it read the server's GOAWAY, and write it after: the final GOAWAY
/// (whose last stream id leaves that stream out) tells it so. But bytes
/// that reach a closed socket, or sit unread in it when it closes, make
/// the kernel answer with a reset; the client's next write then fails
/// before it has read that GOAWAY, and it fails the stream as broken
/// (hyper: "stream closed because of a broken pipe"), which it cannot
/// know is safe to send again, instead of as refused by the GOAWAY, which
/// it can retry. With the socket read until the client closes, the client
/// reads the GOAWAY, and then the FIN, and closes on its own, at once.
async fn linger(mut stream: TcpStream) {
    // hyper shut the write side down already, unless the connection ended
    // on an error; a second shutdown changes nothing, and an error means
    // the peer is gone, which the read below will see.
    let _ = stream.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        // Until the client's FIN (0) or its reset (an error).
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}

/// Waits for an upgraded connection, now the application's, to end, and on
/// a drain ends it: the application first has the grace to close it itself
/// (it has a [`DrainToken`]); then `serve` writes a WebSocket close frame
/// (see [`crate::upgrade`]; not for an upgrade to anything else); a grace
/// after that it shuts the socket down.
async fn upgraded(upgrade: &Upgrade, mut draining: watch::Receiver<bool>, grace: Duration) {
    let dropped = upgrade.dropped.notified();
    let mut dropped = pin!(dropped);
    tokio::select! {
        () = &mut dropped => return,
        _ = draining.wait_for(|&d| d) => {}
    }
    tokio::select! {
        () = &mut dropped => return,
        () = tokio::time::sleep(grace) => {}
    }
    if !upgrade.closed_by_frame() {
        upgrade.request_close();
    }
    tokio::select! {
        () = &mut dropped => return,
        () = tokio::time::sleep(grace) => {}
    }
    // The client has had the close frame for a grace: a well-behaved
    // application has ended by now. Otherwise end the connection: with the
    // socket shut down both ways it is over for the client, whatever the
    // application's task still holds, so the drain need not wait for it.
    upgrade.shutdown();
}

/// What the drain needs to know of one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<ActivityState>,
    /// Signalled (with a stored permit) whenever the last in-flight request
    /// ends, so the drain can start the idle clock without polling.
    became_idle: Notify,
    /// Event streams in flight on this connection.
    long_lived: AtomicUsize,
    /// The connection speaks HTTP/2: seen on a request's version (see
    /// [`Activity::is_http2`] for the preface).
    http2: AtomicBool,
    /// The client opened with the HTTP/2 preface: the connection drains by
    /// GOAWAY, and its socket gets a lingering close ([`linger`]). Set
    /// while hyper's connection is polled, in the same poll in which
    /// hyper-util's `auto` picks HTTP/2 for it (it decides on the same 24
    /// bytes), so a graceful shutdown after it reaches hyper's HTTP/2
    /// connection, never `auto`'s version sniffing (which would close the
    /// socket with no GOAWAY).
    h2_preface: AtomicBool,
    /// Signalled (with a stored permit) when the connection is found to be
    /// HTTP/2, so a drain that began before can send its GOAWAY.
    became_http2: Notify,
    /// The socket, handed back by hyper for the lingering close.
    leftover: Mutex<Option<TcpStream>>,
    upgrade: Upgrade,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    last: Instant,
}

impl Activity {
    pub(crate) fn new(fd: crate::sys::RawSock) -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                last: Instant::now(),
            }),
            became_idle: Notify::new(),
            long_lived: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            h2_preface: AtomicBool::new(false),
            became_http2: Notify::new(),
            leftover: Mutex::new(None),
            upgrade: Upgrade::new(fd),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // The state stays consistent even if a holder panicked: every
        // critical section is a single assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket hyper handed back, if it is to linger.
    fn take_leftover(&self) -> Option<TcpStream> {
        self.leftover
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Whether the connection speaks HTTP/2: its client sent the preface,
    /// or a request came in as HTTP/2.
    fn is_http2(&self) -> bool {
        self.h2_preface.load(Ordering::Relaxed) || self.http2.load(Ordering::Relaxed)
    }

    /// Notes what [`Activity::is_http2`] reads, and wakes a drain that began
    /// before it was known.
    fn found_http2(&self, flag: &AtomicBool) {
        let known = self.is_http2();
        flag.store(true, Ordering::Relaxed);
        if !known {
            self.became_http2.notify_one();
        }
    }

    pub(crate) fn touch(&self) {
        self.lock().last = Instant::now();
    }

    fn begin(&self) {
        let mut state = self.lock();
        state.in_flight += 1;
        state.last = Instant::now();
    }

    fn end(&self) {
        let idle = {
            let mut state = self.lock();
            state.in_flight -= 1;
            state.last = Instant::now();
            state.in_flight == 0
        };
        if idle {
            self.became_idle.notify_one();
        }
    }

    /// When the connection will have been idle for `grace`, or `None` while
    /// a request is in flight.
    pub(crate) fn idle_until(&self, grace: Duration) -> Option<Instant> {
        let state = self.lock();
        (state.in_flight == 0).then(|| state.last + grace)
    }
}

/// Counts a request as in flight from the moment hyper hands it over until
/// its response body is finished or dropped.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(crate) fn new(activity: &Arc<Activity>) -> InFlight {
        activity.begin();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Counts an event stream in flight, for as long as its body lives.
struct LongLived(Arc<Activity>);

impl LongLived {
    fn new(activity: &Arc<Activity>) -> LongLived {
        activity.long_lived.fetch_add(1, Ordering::Relaxed);
        LongLived(activity.clone())
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.0.long_lived.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The service wrapper that tracks requests, hands out the [`DrainToken`],
/// marks drain-time responses `Connection: close`, and notes upgrades and
/// event streams.
struct Tracked<H> {
    inner: H,
    activity: Arc<Activity>,
    draining: watch::Receiver<bool>,
    long_lived_grace: Duration,
}

impl<H, B> hyper::service::Service<Request<Incoming>> for Tracked<H>
where
    H: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    H::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = H::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, H::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(&self.activity);
        let websocket = req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let http1 = req.version() < Version::HTTP_2;
        if !http1 {
            self.activity.found_http2(&self.activity.http2);
        }
        req.extensions_mut()
            .insert(DrainToken(self.draining.clone()));
        let response = self.inner.call(req);
        let draining = self.draining.clone();
        let activity = self.activity.clone();
        let grace = self.long_lived_grace;
        Box::pin(async move {
            let mut response = response.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // Before hyper writes the head: the socket follows it.
                activity.upgrade.flag(websocket);
            } else if http1 && *draining.borrow() {
                // Decided when the head is written, not when the request
                // came in: a slow request that started before the drain
                // must close too. hyper closes the connection after such a
                // response. (HTTP/2 has GOAWAY instead, and forbids the
                // header.)
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            let event_stream = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let cut: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = event_stream.then(|| {
                let mut draining = draining.clone();
                Box::pin(async move {
                    let _ = draining.wait_for(|&d| d).await;
                    tokio::time::sleep(grace).await;
                }) as _
            });
            let long_lived = event_stream.then(|| LongLived::new(&activity));
            Ok(response.map(|body| TrackedBody {
                inner: Box::pin(body),
                in_flight: Some(in_flight),
                cut,
                ended: false,
                _long_lived: long_lived,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it ends, so a
/// streamed response is never cut by the idle close; an event stream is
/// ended (between two events, cleanly) once the drain is a long-lived
/// grace old.
pub(crate) struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    in_flight: Option<InFlight>,
    cut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ended: bool,
    _long_lived: Option<LongLived>,
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let cut_due = self
            .cut
            .as_mut()
            .is_some_and(|cut| cut.as_mut().poll(cx).is_ready());
        if cut_due {
            // Frames are whole events (axum's Sse writes one per event),
            // so ending here ends the stream between two events.
            self.ended = true;
            self.in_flight = None;
            return Poll::Ready(None);
        }
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection's socket, noting every received byte as activity (a
/// client halfway through sending a request head has no request in flight
/// yet, but closing on it would lose that request all the same), and,
/// after an upgrade, following what the application writes (see
/// [`crate::upgrade`]).
struct ActiveIo {
    /// Taken out only in Drop.
    inner: ManuallyDrop<TcpStream>,
    activity: Arc<Activity>,
    /// How many bytes of the HTTP/2 preface the bytes received so far
    /// matched; `None` once told (either way).
    preface: Option<usize>,
}

impl ActiveIo {
    /// After an upgrade: writes the close frame if it is due (inside the
    /// application's own read or write, where there is a task to wake).
    fn poll_upgrade(
        inner: &mut TcpStream,
        state: &mut crate::upgrade::UpgradeState,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        state.register(cx.waker());
        while state.inject_due() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, state.close_rest()))?;
            state.close_advance(n)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for ActiveIo {
    fn drop(&mut self) {
        // SAFETY: `inner` is taken here, once, and never used again.
        let stream = unsafe { ManuallyDrop::take(&mut self.inner) };
        // Before the fd is closed; see Upgrade::shutdown.
        self.activity.upgrade.io_dropped();
        if self.activity.h2_preface.load(Ordering::Relaxed) && !self.activity.upgrade.is_flagged() {
            // For the lingering close, in the connection's task.
            *self
                .activity
                .leftover
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(stream);
        }
    }
}

impl AsyncRead for ActiveIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.upgrade.is_flagged() {
            let mut state = this.activity.upgrade.lock();
            ready!(ActiveIo::poll_upgrade(&mut this.inner, &mut state, cx))?;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
            if let Some(matched) = this.preface {
                let got = &buf.filled()[before..];
                let n = got.len().min(H2_PREFACE.len() - matched);
                this.preface = match got[..n] == H2_PREFACE[matched..matched + n] {
                    true if matched + n == H2_PREFACE.len() => {
                        this.activity.found_http2(&this.activity.h2_preface);
                        None
                    }
                    true => Some(matched + n),
                    false => None,
                };
            }
        }
        polled
    }
}

impl AsyncWrite for ActiveIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.activity.upgrade.is_flagged() {
            return Pin::new(&mut *this.inner).poll_write(cx, buf);
        }
        let mut state = this.activity.upgrade.lock();
        if state.is_shut() {
            state.register(cx.waker());
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(ActiveIo::poll_upgrade(&mut this.inner, &mut state, cx))?;
        if state.swallowing() {
            // Nothing may follow our close frame.
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut *this.inner).poll_write(cx, buf))?;
        state.written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.activity.upgrade.is_flagged() {
            return Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs);
        }
        // Followed byte by byte: one buffer at a time is simplest.
        let buf = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.upgrade.is_flagged() {
            let mut state = this.activity.upgrade.lock();
            ready!(ActiveIo::poll_upgrade(&mut this.inner, &mut state, cx))?;
        }
        Pin::new(&mut *this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_clock_waits_for_in_flight_requests() {
        let activity = Arc::new(Activity::new(crate::sys::NO_SOCK));
        let grace = Duration::from_millis(500);
        let a = InFlight::new(&activity);
        let b = InFlight::new(&activity);
        assert_eq!(activity.idle_until(grace), None);
        drop(a);
        assert_eq!(activity.idle_until(grace), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(b);
        let until = activity.idle_until(grace).expect("idle");
        assert_eq!(until, Instant::now() + grace);
    }

    #[tokio::test(start_paused = true)]
    async fn touch_restarts_the_idle_clock() {
        let activity = Activity::new(crate::sys::NO_SOCK);
        let grace = Duration::from_millis(500);
        tokio::time::advance(Duration::from_secs(10)).await;
        activity.touch();
        assert_eq!(activity.idle_until(grace), Some(Instant::now() + grace));
    }
}
