//! The devsup reference server: the integration the library documents, plus
//! the fault switches the tests need.

mod app;
mod cli;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use devsup_serve::StopSignal;

/// Prints one log line to stderr, tagged with this process's generation
/// and pid so interleaved generations can be told apart.
macro_rules! log {
    ($tag:expr, $($arg:tt)*) => {
        // One write per line: stderr is shared with devsup, whose lines
        // must not be cut into.
        eprint!("{}", format!("devsup-server {}: {}\n", $tag, format_args!($($arg)*)))
    };
}

fn main() -> ExitCode {
    // Before anything else: listenfd removes LISTEN_FDS and LISTEN_PID.
    let env: HashMap<_, _> = std::env::vars_os().collect();
    let args = cli::Args::parse();
    let id = app::Identity {
        generation: devsup_protocol::generation().unwrap_or(0),
        pid: std::process::id(),
        env: Arc::new(env),
    };
    let tag = format!("gen={} pid={}", id.generation, id.pid);
    match run(args, id, &tag) {
        Ok(code) => code,
        Err(err) => {
            log!(tag, "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: cli::Args, id: app::Identity, tag: &str) -> anyhow::Result<ExitCode> {
    // Taken before the runtime starts its threads, because listenfd changes
    // the environment, which is only sound while one thread runs.
    let fallback = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listeners = devsup_serve::take_std_listeners(fallback).context("taking the listener")?;
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        })
        .collect();
    let how = match id.env.contains_key(std::ffi::OsStr::new("LISTEN_FDS")) {
        true => "inherited",
        false => "bound",
    };
    log!(tag, "started, listening on {} ({how})", addrs.join(" "));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args, id, listeners, tag))
}

async fn serve(
    args: cli::Args,
    id: app::Identity,
    listeners: Vec<std::net::TcpListener>,
    tag: &str,
) -> anyhow::Result<ExitCode> {
    let generation = id.generation;
    if args.fail_before_ready.contains(generation) {
        tokio::time::sleep(args.startup_delay()).await;
        log!(tag, "exiting before ready (--fail-before-ready)");
        return Ok(ExitCode::FAILURE);
    }

    // Installed now, before READY: from then on devsup may send SIGTERM.
    let stop = stop_signal(args.ignore_drain.contains(generation), tag.to_owned())
        .context("installing signal handlers")?;

    // READY is ours to send (after --startup-delay, or never); serve sends
    // STOPPING=1 when it drains.
    let server = devsup_serve::serve(listeners, app::router(id))
        .drain(args.drain())
        .notify_ready(false);
    let connections = server.connections();
    let shutdown_tag = tag.to_owned();
    // Told to stop while still starting up: there is no READY to send.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopped = stopping.clone();
    let shutdown = async move {
        let signal = stop.await;
        stopped.notify_one();
        log!(
            shutdown_tag,
            "draining after {signal}, {} open connections",
            connections.open()
        );
    };
    let serving = tokio::spawn(server.with_graceful_shutdown(shutdown).run());

    // The socket has been listening all along, and the serve task now owns
    // it: connections that arrive before its first accept wait in the
    // kernel's queue, so READY may be sent at once.
    let stopped_early = tokio::select! {
        () = tokio::time::sleep(args.startup_delay()) => false,
        () = stopping.notified() => true,
    };
    if stopped_early {
        log!(tag, "stopped while starting up: no READY");
    } else if args.never_ready.contains(generation) {
        log!(tag, "serving, never sending READY (--never-ready)");
    } else {
        let told = devsup_protocol::notify_ready().context("sending READY=1")?;
        match told {
            true => log!(tag, "ready"),
            false => log!(tag, "ready (no supervisor to tell)"),
        }
    }

    let report = serving.await.context("the server task failed")??;
    let dropped = match report.dropped {
        0 => String::new(),
        n => format!(", dropped {n} connections at the deadline"),
    };
    log!(
        tag,
        "exited after {}ms{dropped}",
        report.elapsed.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

type StopFuture = Pin<Box<dyn Future<Output = StopSignal> + Send>>;

/// The future that starts the drain: the first SIGTERM or SIGINT, or with
/// `ignore_term` only SIGINT, so that a test can make a generation that
/// outlives devsup's drain timeout and still stop it by hand.
fn stop_signal(ignore_term: bool, tag: String) -> std::io::Result<StopFuture> {
    if !ignore_term {
        return Ok(Box::pin(devsup_serve::shutdown_signal()?));
    }
    #[cfg(unix)]
    let (mut term, mut int, drain) = {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())?;
        (term, signal(SignalKind::interrupt())?, "SIGTERM")
    };
    // On Windows the drain signal is CTRL_BREAK_EVENT, and Ctrl-C interrupts.
    #[cfg(windows)]
    let (mut term, mut int, drain) = {
        use tokio::signal::windows::{ctrl_break, ctrl_c};
        (ctrl_break()?, ctrl_c()?, "CTRL_BREAK_EVENT")
    };
    Ok(Box::pin(async move {
        loop {
            tokio::select! {
                _ = term.recv() => log!(tag, "ignoring {drain} (--ignore-drain)"),
                _ = int.recv() => return StopSignal::Interrupt,
            }
        }
    }))
}
