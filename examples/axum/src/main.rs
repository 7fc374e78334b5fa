//! An axum server that reloads under devsup without dropping a request.
//!
//! It is written as axum's own docs and listenfd's write a server, with
//! one line changed. Where axum has
//!
//! ```ignore
//! axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
//! ```
//!
//! this has
//!
//! ```ignore
//! devsup_serve::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
//! ```
//!
//! and nothing else: `devsup_serve::serve` says READY to devsup once it
//! accepts, drains on the signal, and makes the passed socket non-blocking
//! itself. (Without `.with_graceful_shutdown(..)` it drains on SIGTERM or
//! SIGINT; on Windows on CTRL_BREAK_EVENT or Ctrl-C.)
//!
//! Why the line matters: axum's graceful shutdown (hyper's, really) closes
//! idle keep-alive connections the moment it starts, and a client that
//! writes its next request on such a connection in that instant gets no
//! answer. `devsup_serve::serve` keeps each connection through a short idle
//! grace and answers what arrives with `Connection: close`, so the client
//! moves to the new generation on its own; it also closes WebSockets (code
//! 1012) and ends event streams a moment after the drain starts, and it
//! tells devsup when it is ready instead of leaving devsup to guess.
//!
//! Run it with `devsup -- cargo run -p example-axum`, then save a file or
//! send devsup a SIGHUP: the next generation starts, says ready, and this
//! one drains.
//!
//! `GET /` answers `gen=N pid=P` (N from `DEVSUP_GENERATION`), so a client
//! can see which generation served it; `GET /page` is an HTML page, into
//! which the live-reload script is injected when devsup runs with
//! `--livereload`.

use std::net::TcpListener;
use std::process::ExitCode;

use axum::Router;
use axum::response::Html;
use axum::routing::get;

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
    tokio::runtime::Runtime::new()?.block_on(async {
        // The one changed line (was `axum::serve`).
        devsup_serve::serve(listener, app())
            .with_graceful_shutdown(shutdown_signal())
            .await
    })
}

/// As in axum's graceful-shutdown example: Ctrl-C or devsup's drain
/// signal (SIGTERM; on Windows, CTRL_BREAK_EVENT to the process group).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match drain_signal() {
        Ok(term) => term,
        Err(err) => {
            eprintln!("example-axum: cannot handle the drain signal: {err}");
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    eprintln!("example-axum: draining");
}

#[cfg(unix)]
fn drain_signal() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}

#[cfg(windows)]
fn drain_signal() -> std::io::Result<tokio::signal::windows::CtrlBreak> {
    tokio::signal::windows::ctrl_break()
}

fn app() -> Router {
    let generation = devsup_protocol::generation().unwrap_or(0).to_string();
    let body = format!("gen={generation} pid={}\n", std::process::id());
    let page = format!(
        "<!doctype html>\n<html><head><title>devsup example</title></head>\n\
         <body><h1>generation {generation}</h1></body></html>\n"
    );
    Router::new()
        .route(
            "/",
            get(move || async move { ([("x-generation", generation)], body) }),
        )
        .route("/page", get(move || async move { Html(page) }))
        // With `devsup --livereload`, the browser reloads pages once the
        // next generation is ready; without it, this does nothing.
        .layer(devsup_serve::LiveReloadLayer::from_env())
}
