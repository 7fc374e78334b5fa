//! An axum server that reloads under devsup without dropping a request.
//!
//! Opting in takes two lines: take the listener devsup passed at fd 3, and
//! say "ready" once it is set up.
//!
//! ```ignore
//! let listener = listenfd::ListenFd::from_env().take_tcp_listener(0)?; // 1
//! // ... build the app, start serving ...
//! devsup_protocol::notify_ready()?;                                    // 2
//! ```
//!
//! Run it with `devsup -- cargo run -p example-axum`, then save a file or
//! send devsup a SIGHUP: the next generation starts, says ready, and this
//! one drains.
//!
//! The drain is `devsup_serve::serve`, not `axum::serve(..)
//! .with_graceful_shutdown(..)`. axum's graceful shutdown (hyper's, really)
//! closes idle keep-alive connections the moment it starts, and a client
//! that writes its next request on such a connection in that instant gets
//! no answer. `serve` keeps each connection through a short idle grace and
//! answers what arrives with `Connection: close`, so the client moves to the
//! new generation on its own. With plain `axum::serve` the server would be
//! one dependency lighter and lose the odd request on every reload.
//!
//! `GET /` answers `gen=N pid=P` (N from `DEVSUP_GENERATION`), so a client
//! can see which generation served it.

use std::net::TcpListener;
use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use devsup_serve::{Drain, serve, shutdown_signal};

/// Where to listen when run on its own, without devsup.
const FALLBACK_ADDR: &str = "127.0.0.1:8080";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("example-axum: {err}");
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
    tokio::runtime::Runtime::new()?.block_on(serve_app(listener))
}

async fn serve_app(listener: TcpListener) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // Installed before READY: from then on devsup may send SIGTERM.
    let stop = shutdown_signal()?;
    let server = tokio::spawn(serve(
        listener,
        app(),
        stop_then_log(stop),
        Drain::default(),
    ));
    // Connections wait in the socket's backlog until `serve` accepts them,
    // so the previous generation can be drained now.
    devsup_protocol::notify_ready()?;
    server.await?
}

async fn stop_then_log(stop: impl Future<Output = devsup_serve::StopSignal>) {
    let signal = stop.await;
    eprintln!("example-axum: {signal}, draining");
    let _ = devsup_protocol::notify_stopping();
}

fn app() -> Router {
    let generation = devsup_protocol::generation().unwrap_or(0).to_string();
    let body = format!("gen={generation} pid={}\n", std::process::id());
    Router::new().route(
        "/",
        get(move || async move { ([("x-generation", generation)], body) }),
    )
}
