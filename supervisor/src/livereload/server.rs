//! The live-reload HTTP server: hyper on a single-threaded tokio runtime,
//! on a thread of its own, so that nothing it does can hold up the
//! supervisor loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use super::{CLIENT_JS, EVENTS_PATH, SCRIPT_PATH, Shared};

/// A comment this often on every event stream finds browsers that are gone
/// (and keeps idle proxies from closing the stream).
const PING_EVERY: Duration = Duration::from_secs(15);

/// Binds `addr` now (so that a taken port is an error at start-up) and
/// serves it on a new thread. Returns the bound address and the runtime.
pub(super) fn start(
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
) -> anyhow::Result<(SocketAddr, tokio::runtime::Handle)> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!(
            "cannot listen on {addr} for --livereload: pass another address, \
             e.g. --livereload=127.0.0.1:0 to pick a free port"
        )
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot set up the live-reload socket")?;
    let bound = listener
        .local_addr()
        .context("cannot read the live-reload address")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the live-reload server's runtime")?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("livereload".into())
        .spawn(move || runtime.block_on(serve(listener, shared)))
        .context("cannot start the live-reload server's thread")?;
    Ok((bound, handle))
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Mutex<Shared>>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!("live reload is off: cannot use its socket: {e}");
            return;
        }
    };
    let pinger = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PING_EVERY);
        loop {
            every.tick().await;
            super::ping(&pinger);
        }
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of fds, most likely: wait for some to be freed.
                debug!("live reload: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = respond(&shared, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("live reload: connection ended: {e}");
            }
        });
    }
}

type ResponseBody = BoxBody<Bytes, Infallible>;

/// Answers one request: the script, the event stream, a CORS preflight,
/// or 404.
fn respond(shared: &Mutex<Shared>, request: &Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    let (status, content_type, body) = match (request.method(), path) {
        (&Method::OPTIONS, _) => (StatusCode::NO_CONTENT, None, Empty::new().boxed()),
        (&Method::GET | &Method::HEAD, SCRIPT_PATH) => (
            StatusCode::OK,
            Some("text/javascript; charset=utf-8"),
            Full::new(Bytes::from_static(CLIENT_JS.as_bytes())).boxed(),
        ),
        (&Method::GET, EVENTS_PATH) => (
            StatusCode::OK,
            Some("text/event-stream"),
            EventStream(super::subscribe(shared)).boxed(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            Some("text/plain; charset=utf-8"),
            Full::new(Bytes::from(format!(
                "devsup live reload serves {SCRIPT_PATH} and {EVENTS_PATH}\n"
            )))
            .boxed(),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    // Pages of any origin (the application's port) load the script and
    // open the stream.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::NO_CONTENT {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*"),
        );
    }
    response
}

/// The body of `/events`: each message is sent, and flushed, as it comes.
struct EventStream(UnboundedReceiver<Bytes>);

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|message| message.map(|bytes| Ok(Frame::data(bytes))))
    }
}
