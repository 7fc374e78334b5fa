//! A plain hyper 1 server that reloads under devsup without dropping a
//! request, with no framework and no helper crate beyond the protocol.
//!
//! Opting in takes two lines: take the listener devsup passed at fd 3, and
//! say "ready" once it is set up.
//!
//! ```ignore
//! let listener = listenfd::ListenFd::from_env().take_tcp_listener(0)?; // 1
//! // ... install the SIGTERM handler ...
//! devsup_protocol::notify_ready()?;                                    // 2
//! ```
//!
//! On SIGTERM (devsup's drain signal; on Windows, `CTRL_BREAK_EVENT`) it
//! stops accepting, then drains:
//!
//! 1. It drops its copy of the listener. The socket stays open in devsup
//!    and in the new generation, so nothing queued in it is lost.
//! 2. For [`IDLE_GRACE`] it keeps serving the connections it has, and marks
//!    every response `Connection: close`, so a keep-alive client learns from
//!    the response itself to reconnect, and reaches the new generation.
//! 3. Then hyper-util's `GracefulShutdown` closes what is left: idle
//!    connections at once, busy ones after their response.
//!
//! Step 2 is what plain `GracefulShutdown` lacks: on its own it closes an
//! idle keep-alive connection at the very moment the client may be writing
//! its next request on it, and that request gets no answer. A client whose
//! connection stays quiet for the whole grace and then writes at the instant
//! it ends can still lose that race; `devsup_serve::serve` (see
//! examples/axum) narrows it further by timing the grace per connection.
//!
//! `GET /` answers `gen=N pid=P` (N from `DEVSUP_GENERATION`).

use std::convert::Infallible;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::header::{CONNECTION, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

/// Where to listen when run on its own, without devsup.
const FALLBACK_ADDR: &str = "127.0.0.1:8080";
/// How long the drain keeps connections open for their next request.
const IDLE_GRACE: Duration = Duration::from_millis(500);
/// How long the rest of the drain may take; below devsup's default drain
/// timeout (10s), so the server exits before it is killed.
const DEADLINE: Duration = Duration::from_secs(8);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("example-hyper: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<()> {
    // Before the runtime starts: listenfd edits the environment, which is
    // only sound while no other thread runs.
    let listener = match listenfd::ListenFd::from_env().take_tcp_listener(0)? {
        Some(listener) => listener,
        None => TcpListener::bind(FALLBACK_ADDR)?,
    };
    // tokio needs a non-blocking socket, and O_NONBLOCK belongs to the
    // socket all generations share: nobody else sets it for us.
    listener.set_nonblocking(true)?;
    tokio::runtime::Runtime::new()?.block_on(serve(listener))
}

/// What devsup sends a generation to drain it: SIGTERM on Unix, and on
/// Windows `CTRL_BREAK_EVENT` to the generation's process group.
#[cfg(unix)]
fn drain_signal() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}

#[cfg(windows)]
fn drain_signal() -> std::io::Result<tokio::signal::windows::CtrlBreak> {
    tokio::signal::windows::ctrl_break()
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // Installed before READY: from then on devsup may send the drain signal.
    let mut terminate = drain_signal()?;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let draining = Arc::new(AtomicBool::new(false));
    let generation = devsup_protocol::generation().unwrap_or(0);
    let body = format!("gen={generation} pid={}\n", std::process::id());

    // Connections wait in the socket's backlog until we accept them, so the
    // previous generation can be drained now.
    devsup_protocol::notify_ready()?;

    loop {
        let stream = tokio::select! {
            _ = terminate.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // A connection reset in the backlog, or out of fds: go on,
                    // but do not spin.
                    eprintln!("example-hyper: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let draining = draining.clone();
        let body = body.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = respond(&request, generation, &body, &draining);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors are the client's (a reset, a bad request) and end only
            // this connection.
            let _ = conn.await;
        });
    }

    eprintln!("example-hyper: drain signal, draining");
    let _ = devsup_protocol::notify_stopping();
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    tokio::time::sleep(IDLE_GRACE).await;
    if tokio::time::timeout(DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("example-hyper: connections still open after {DEADLINE:?}, exiting");
    }
    Ok(())
}

fn respond<B>(
    request: &Request<B>,
    generation: u64,
    body: &str,
    draining: &AtomicBool,
) -> Response<String> {
    let mut response = if request.uri().path() == "/" {
        Response::new(body.to_owned())
    } else {
        let mut response = Response::new("not found\n".to_owned());
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-generation"),
        HeaderValue::from(generation),
    );
    // Read when the response is made, so a request that was in flight when
    // the drain began closes its connection too. hyper closes the
    // connection after writing such a response.
    if draining.load(Ordering::Relaxed) {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
