//! An actix-web server that reloads under devsup without dropping a request.
//!
//! Opting in takes two lines: take the listener devsup passed at fd 3, and
//! say "ready" once the server is set up.
//!
//! ```ignore
//! let listener = listenfd::ListenFd::from_env().take_tcp_listener(0)?; // 1
//! let server = HttpServer::new(app).listen(listener)?.run();
//! devsup_protocol::notify_ready()?;                                    // 2
//! server.await
//! ```
//!
//! READY may go out before the server future is first polled: until actix
//! accepts, connections wait in the listening socket's backlog, which the
//! old generation also serves.
//!
//! # SIGTERM
//!
//! actix-web's own signal handling treats SIGTERM as a graceful stop, so
//! devsup's default drain signal works with a stock actix app: it stops
//! accepting and waits up to `shutdown_timeout` for open connections. Two
//! gaps remain, and this example closes them by taking SIGTERM itself
//! (`disable_signals`):
//!
//! 1. actix keeps serving keep-alive connections during a graceful stop and
//!    never tells their clients to leave, so a busy client stays on the old
//!    generation until the timeout drops its connection, perhaps mid-request.
//!    Here every response made after SIGTERM is `Connection: close`
//!    ([`force_close`](actix_web::HttpResponseBuilder::force_close)), so
//!    clients move to the new generation on their own. With many routes,
//!    do the same in a middleware.
//! 2. A graceful stop drops connections the accept thread has handed to a
//!    worker that has not picked them up yet. Here accepting is paused
//!    first, and the stop comes only after [`IDLE_GRACE`], when nothing can
//!    be in flight between the two.
//!
//! `shutdown_timeout` is set to 8s, below devsup's default 10s drain
//! timeout, so a connection that will not close is dropped by actix, and the
//! process exits on its own, before devsup kills it.
//!
//! On Windows devsup's drain signal is `CTRL_BREAK_EVENT` to the
//! generation's process group, and this example drains on it the same way.
//!
//! `GET /` answers `gen=N pid=P` (N from `DEVSUP_GENERATION`).

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};

/// Where to listen when run on its own, without devsup.
const FALLBACK_ADDR: &str = "127.0.0.1:8080";
/// How long keep-alive clients get, after SIGTERM, to send one more request
/// and be told to reconnect, before actix stops.
const IDLE_GRACE: Duration = Duration::from_millis(500);
/// Seconds actix waits for open connections once stopped.
const SHUTDOWN_TIMEOUT: u64 = 8;

/// What every handler sees.
#[derive(Debug)]
struct State {
    generation: u64,
    body: String,
    draining: AtomicBool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("example-actix: {err}");
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
    // actix sets this too; it belongs to the socket all generations share.
    listener.set_nonblocking(true)?;
    actix_web::rt::System::new().block_on(serve(listener))
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let generation = devsup_protocol::generation().unwrap_or(0);
    let state = web::Data::new(State {
        generation,
        body: format!("gen={generation} pid={}\n", std::process::id()),
        draining: AtomicBool::new(false),
    });
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .route("/", web::get().to(index))
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT)
    .run();
    // Installed before READY: from then on devsup may send the drain signal.
    let mut terminate = drain_signal()?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        terminate.recv().await;
        drain(&handle, &state).await;
    });
    devsup_protocol::notify_ready()?;
    server.await
}

/// What devsup sends a generation to drain it: SIGTERM on Unix, and on
/// Windows `CTRL_BREAK_EVENT` to the generation's process group (tokio's,
/// which actix's runtime is).
#[cfg(unix)]
fn drain_signal() -> std::io::Result<actix_web::rt::signal::unix::Signal> {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    signal(SignalKind::terminate())
}

#[cfg(windows)]
fn drain_signal() -> std::io::Result<tokio::signal::windows::CtrlBreak> {
    tokio::signal::windows::ctrl_break()
}

async fn drain(handle: &ServerHandle, state: &State) {
    eprintln!("example-actix: drain signal, draining");
    let _ = devsup_protocol::notify_stopping();
    handle.pause().await;
    state.draining.store(true, Ordering::Relaxed);
    actix_web::rt::time::sleep(IDLE_GRACE).await;
    handle.stop(true).await;
}

async fn index(state: web::Data<State>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/plain")
        .insert_header(("x-generation", state.generation.to_string()));
    // Read when the response is made, so a request in flight at SIGTERM
    // closes its connection too.
    if state.draining.load(Ordering::Relaxed) {
        response.force_close();
    }
    response.body(state.body.clone())
}
