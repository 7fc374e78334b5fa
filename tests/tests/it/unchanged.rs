//! Third-party servers as people write them, and each one's opted-in
//! form, under devsup with reloads under load (keep-alive and close
//! clients): failed requests, how long each generation took to be counted
//! ready, how long each drain took (see tests/fixtures/servers/README.md).
//!
//! What is asserted is what holds today:
//!
//! - every opted-in form loses no request and drains by itself;
//! - the axum server that gives tokio the passed socket in blocking mode
//!   and shuts down gracefully on SIGTERM hangs in its drain until devsup
//!   kills it: the blocking-socket trap.
//!
//! The unchanged servers' failures are printed, not asserted: they are the
//! servers' own drains (hyper's and uvicorn's graceful shutdowns close idle
//! keep-alive connections at once), which devsup cannot change from
//! outside.
//!
//! Servers that do not send READY=1 run with `--ready-after 1s`, which is
//! what devsup's readiness fallback does today (it only kicks in after the
//! first generation has been up a second, which a test cannot wait for
//! without a sleep). FLIPS when the supervisor knows kernel readiness
//! (issue 10, supervisor/src/readiness.rs): drop `--ready-after`, and assert
//! every generation of these servers is counted ready by the kernel rule
//! within 50 ms of polling the socket.

use devsup_tests::unchanged;

use std::time::Duration;

use devsup_tests::load::Mode;
use unchanged::{Bins, RunConfig, RunResult, Server};

/// Reloads per run: enough handoffs to see a race, few enough for CI.
const RELOADS: u32 = 4;
/// Short, so that the trap costs seconds, not the default 10 s per reload.
const DRAIN_TIMEOUT: &str = "3s";

fn run(server: Server, mode: Mode, idle_reload: bool) -> Option<RunResult> {
    let bins = Bins::get();
    if !bins.has(server) {
        eprintln!("!!! SKIPPED {server} ({mode}): its tools could not be installed (see above)");
        return None;
    }
    let mut devsup_args = vec!["--drain-timeout".to_owned(), DRAIN_TIMEOUT.to_owned()];
    if !server.sends_ready() {
        devsup_args.extend(["--ready-after".to_owned(), "1s".to_owned()]);
    }
    let result = unchanged::run(
        &RunConfig {
            server,
            mode,
            conns: 8,
            reloads: RELOADS,
            interval: Duration::from_millis(300),
            idle_reload,
            devsup_args,
            verbose: true,
        },
        bins,
    );
    eprintln!("{}\n{}", unchanged::header(), unchanged::row(&result));
    eprintln!("{}", result.report);
    Some(result)
}

/// An opted-in server: no failed request, every generation counted ready by
/// its READY=1, every old generation exits by itself.
fn opted_in_loses_nothing(server: Server) {
    for mode in [Mode::KeepAlive, Mode::Close] {
        let Some(result) = run(server, mode, false) else {
            return;
        };
        let log = result.log.join("\n");
        assert_eq!(
            result.report.failures(),
            0,
            "{server} {mode}: {}",
            result.report
        );
        assert!(result.report.generations.len() >= 2, "{}", result.report);
        assert_eq!(
            result.ready.len(),
            RELOADS as usize,
            "{server} {mode}:\n{log}"
        );
        assert!(
            result.ready.iter().all(|r| r.2 == "READY=1"),
            "{server} {mode}: {:?}",
            result.ready
        );
        assert_eq!(result.killed, [] as [u64; 0], "{server} {mode}:\n{log}");
        assert_eq!(
            result.drains.len(),
            RELOADS as usize,
            "{server} {mode}:\n{log}"
        );
    }
}

/// An unchanged server: the figures only (see the module docs), and that
/// devsup went through every reload.
fn unchanged_figures(server: Server, idle_reload: bool) -> Vec<RunResult> {
    let mut results = Vec::new();
    for mode in [Mode::KeepAlive, Mode::Close] {
        let Some(result) = run(server, mode, idle_reload) else {
            return results;
        };
        assert_eq!(
            result.ready.len(),
            result.reloads as usize,
            "{server} {mode}: every reload made a generation ready:\n{}",
            result.log.join("\n")
        );
        results.push(result);
    }
    results
}

#[test]
fn axum_devsup_serve_loses_nothing() {
    opted_in_loses_nothing(Server::AxumDevsupServe);
}

#[test]
fn uvicorn_devsup_loses_nothing() {
    opted_in_loses_nothing(Server::UvicornDevsup);
}

#[test]
fn gunicorn_sync_workers_lose_nothing_unchanged() {
    opted_in_loses_nothing(Server::Gunicorn);
}

#[test]
fn stdlib_example_loses_nothing() {
    opted_in_loses_nothing(Server::StdlibExample);
}

#[test]
fn axum_listenfd_figures() {
    unchanged_figures(Server::AxumListenfd, false);
}

/// The same graceful axum server with the socket made non-blocking (axum's
/// current example): the trap is gone, every drain ends by itself, even the
/// idle one. (Its failed requests are hyper's drain closing idle keep-alive
/// connections at once, printed, not asserted.)
#[test]
fn axum_graceful_with_a_nonblocking_socket_drains_by_itself() {
    for result in unchanged_figures(Server::AxumNonblockingGraceful, true) {
        let log = result.log.join("\n");
        assert_eq!(result.killed, [] as [u64; 0], "{log}");
        assert_eq!(result.drains.len(), result.reloads as usize, "{log}");
        assert!(
            result.drains.iter().all(|d| d.1 < Duration::from_secs(3)),
            "{:?}",
            result.drains
        );
    }
}

#[test]
fn uvicorn_unchanged_figures() {
    unchanged_figures(Server::Uvicorn, false);
}

#[test]
fn stdlib_unchanged_figures() {
    unchanged_figures(Server::Stdlib, false);
}

/// The blocking-socket trap: the graceful axum server's accept loop sits in
/// a blocking accept4 on fd 3, so after SIGTERM its graceful shutdown waits
/// for one more connection. Under load one soon comes; so after the load a
/// last reload drains a generation that gets none, and it is killed at the
/// drain timeout.
///
/// FLIPS with a `--nonblocking` devsup option (issue 10): with it, no drain
/// reaches the timeout (`killed` is empty and every drain is well under
/// DRAIN_TIMEOUT). Until devsup reports it, the log says nothing about why;
/// then assert the line naming the trap (readiness.rs's
/// `event_loop_blocked_in_accept`).
#[test]
fn axum_graceful_with_a_blocking_socket_hangs_until_the_drain_timeout() {
    for result in unchanged_figures(Server::AxumListenfdGraceful, true) {
        let mode = result.report.mode;
        let log = result.log.join("\n");
        // The generation the idle reload drained.
        let last_drained = u64::from(result.reloads);
        assert!(
            result.killed.contains(&last_drained),
            "{mode}: gen={last_drained} drained after the load stopped and was killed at the drain timeout: killed {:?}\n{log}",
            result.killed
        );
        let (_, took) = result
            .drains
            .iter()
            .find(|d| d.0 == last_drained)
            .copied()
            .unwrap_or_else(|| panic!("{mode}: gen={last_drained} exited\n{log}"));
        assert!(took >= Duration::from_secs(3), "{mode}: {took:?}\n{log}");
    }
}

/// The same unchanged axum server in a dev build (`devsup -- cargo run`):
/// since tokio 1.44 `from_std` panics on the blocking socket in debug
/// builds, so every generation dies at start and devsup restarts it with
/// back-off; it never serves.
///
/// FLIPS with a `--nonblocking` devsup option (issue 10): with it the dev
/// build serves.
#[test]
fn axum_listenfd_dev_build_panics_on_the_blocking_socket() {
    if devsup_tests::harness::binaries().release {
        // A release build has no such check: the trap test covers it.
        eprintln!("!!! SKIPPED the dev-build panic check: this is a release build");
        return;
    }
    let bins = devsup_tests::harness::build_packages(&["devsup-fixture-servers"]);
    let dir = tempfile::tempdir().unwrap();
    let devsup = devsup_tests::harness::Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(bins.join("axum-listenfd"))
        .spawn();
    let exited = devsup.wait_event(1, "exited", devsup_tests::harness::TIMEOUT);
    assert!(exited.contains("status 101"), "{exited}");
    devsup.wait_for_line(
        "Registering a blocking socket with the tokio runtime is unsupported",
        devsup_tests::harness::TIMEOUT,
    );
    // devsup restarts it, and it dies the same way.
    devsup.wait_event(2, "exited", devsup_tests::harness::TIMEOUT);
    devsup.terminate(devsup_tests::harness::TIMEOUT);
}
