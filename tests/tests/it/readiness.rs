//! Readiness seen from the kernel, with real processes: a server that never
//! says READY=1 is counted ready when one of its processes waits on the
//! passed socket, within 50 ms of doing so and never before; a slow starter
//! is never taken for a ready one (issue 9, defect 2); a reload early in the
//! life of a server devsup cannot see ready is not lost (defect 7).
//!
//! `tests/fixtures/slow_poller.py` is the server that does not report
//! readiness: it sleeps, prints `slow-poller gen=N pid=P: polling`, then
//! waits on fd 3 (blocked in accept, or in epoll). The harness stamps each
//! line as it arrives; the server and devsup write to the same pipe, so the
//! gap between its `polling` line and devsup's `ready` line bounds how long
//! devsup took to see it.
//!
//! The blocking-socket trap (issue 10): `axum-listenfd-graceful` from
//! `tests/fixtures/servers`, written as listenfd's docs show (the passed
//! socket handed to tokio's `from_std` in blocking mode), built with the
//! `trap` profile so that tokio behaves as in a user's release build. Its
//! drain hangs in `accept4`; devsup names the fix, and `--nonblocking` is
//! the fix.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devsup_tests::harness::{
    Devsup, LineMatch, Signal, TIMEOUT, event, fixture, stop_cleanly, temp_dir,
};
use devsup_tests::http;

/// How soon after a server starts polling devsup must count it ready.
const WITHIN: Duration = Duration::from_millis(50);

/// When the first line matching `pattern` arrived, and its text.
fn arrival(devsup: &Devsup, pattern: impl LineMatch) -> (Instant, String) {
    let line = devsup.wait_for_line(pattern, TIMEOUT);
    devsup
        .timed_lines()
        .into_iter()
        .find(|(_, l)| *l == line)
        .expect("the line just waited for")
}

fn polling(generation: u64) -> impl LineMatch {
    move |line: &str| {
        line.starts_with(&format!("slow-poller gen={generation} pid="))
            && line.ends_with(": polling")
    }
}

/// Waits for generation `generation` to poll and to be counted ready;
/// asserts the ready line came after the polling line, within [`WITHIN`],
/// and says how. Returns when it started polling.
fn ready_when_polling(devsup: &Devsup, generation: u64, how: &str) -> Instant {
    let (polled, _) = arrival(devsup, polling(generation));
    let (ready, line) = arrival(devsup, event(generation, "ready"));
    assert!(
        ready >= polled,
        "gen {generation} counted ready before it polled: {line}\n{}",
        devsup.log_text()
    );
    let late = ready - polled;
    eprintln!("gen {generation} ({how}) counted ready {late:?} after it polled");
    assert!(
        late <= WITHIN,
        "gen {generation} counted ready {late:?} after it polled (more than {WITHIN:?}): {line}"
    );
    assert!(line.contains("(listening: pid="), "{line}");
    polled
}

/// A stock server, blocked in accept and in epoll: each generation is
/// counted ready within 50 ms of polling, and the old one is drained only
/// then.
#[test]
fn a_server_that_does_not_report_readiness_is_ready_within_50ms_of_polling() {
    for how in ["accept", "epoll"] {
        let dir = temp_dir();
        let devsup = Devsup::builder(dir.path())
            .arg("--no-watch")
            .server("python3")
            .server_args([fixture("slow_poller.py").to_str().unwrap(), "0.2", how])
            .spawn();
        let addr = devsup.addr();
        ready_when_polling(&devsup, 1, how);
        assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));
        devsup.signal(Signal::SIGHUP);
        let polled = ready_when_polling(&devsup, 2, how);
        let (drained, _) = arrival(&devsup, event(1, "draining"));
        assert!(drained >= polled, "gen 1 drained before gen 2 polled");
        devsup.wait_event(1, "exited", TIMEOUT);
        assert_eq!(http::get(addr, "/").unwrap().generation(), Some(2));
        assert_eq!(devsup.count_lines("does not report readiness"), 0);
        stop_cleanly(&devsup);
    }
}

/// A server that takes 3 s before it polls: neither generation is counted
/// ready before it polls, and gen 1 serves until gen 2 does. (A reload
/// made while gen 1 still starts would race two slow starters, and
/// whichever polls first would rightly win.)
#[test]
fn a_slow_starter_is_counted_ready_when_it_polls_never_before() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args([fixture("slow_poller.py").to_str().unwrap(), "3", "epoll"])
        .spawn();
    let addr = devsup.addr();
    ready_when_polling(&devsup, 1, "epoll after 3 s");
    devsup.signal(Signal::SIGHUP);
    let polled = ready_when_polling(&devsup, 2, "epoll after 3 s");
    let (drained, _) = arrival(&devsup, event(1, "draining"));
    assert!(drained >= polled, "gen 1 drained before gen 2 polled");
    // The fixture dies at once on SIGTERM, with whatever it just accepted.
    devsup.wait_event(1, "exited", TIMEOUT);
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(2));
    assert_eq!(devsup.count_lines("counted ready"), 0);
    assert_eq!(devsup.count_lines("does not report readiness"), 0);
    stop_cleanly(&devsup);
}

/// Issue 9, defect 2: `devsup-server --startup-delay 3000
/// --fail-before-ready 2`, reloaded before gen 1 says READY=1. Gen 1 polls
/// the socket at once; gen 2 never polls and exits after 3 s. Gen 2 must
/// never be counted ready, and gen 1 never drained.
#[test]
fn a_generation_that_fails_before_polling_is_never_counted_ready() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server_args(["--startup-delay", "3000", "--fail-before-ready", "2"])
        .spawn();
    let addr = devsup.addr();
    let ready = devsup.wait_event(1, "ready", TIMEOUT);
    assert!(ready.contains("(listening:"), "{ready}");
    let said_ready = |devsup: &Devsup| {
        devsup.count_matching(|l: &str| {
            l.starts_with("devsup-server gen=1 pid=") && l.ends_with(": ready")
        })
    };
    if said_ready(&devsup) > 0 {
        eprintln!(
            "!!! gen 1 said READY=1 before the reload (a very slow machine): this run checks less"
        );
    }
    devsup.signal(Signal::SIGHUP);
    let failed = devsup.wait_event(2, "failed before ready", TIMEOUT);
    assert!(failed.contains("keeping gen=1 serving"), "{failed}");
    assert_eq!(devsup.count_matching(event(2, "ready")), 0);
    assert_eq!(devsup.count_matching(event(2, "counted ready")), 0);
    assert_eq!(devsup.count_matching(event(1, "draining")), 0);
    assert_eq!(devsup.count_lines("does not report readiness"), 0);
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));
    stop_cleanly(&devsup);
}

/// Issue 9, defect 7: `devsup --ready-timeout 3s -- /bin/sleep 100`,
/// reloaded at once. Neither generation says READY=1 or polls. Once gen 1
/// has run the ready timeout so, devsup says why it falls back to a timer,
/// and gen 2 is counted ready rather than drained: the reload is kept.
#[test]
fn a_reload_early_in_the_life_of_a_server_that_never_polls_is_kept() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--ready-timeout", "3s"])
        .server("/bin/sleep")
        .server_args(["100"])
        .spawn();
    devsup.wait_event(1, "spawned", TIMEOUT);
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "spawned", TIMEOUT);
    let counted = devsup.wait_event(2, "counted ready", TIMEOUT);
    let drain = devsup.wait_event(1, "draining", TIMEOUT);
    assert!(drain.contains("after gen=2 ready"), "{drain}");
    let why = devsup.wait_for_line("does not report readiness", TIMEOUT);
    assert!(
        why.contains("gen=1") && why.contains("never saw it wait on the socket"),
        "{why}"
    );
    assert_eq!(devsup.count_matching(event(2, "not ready")), 0, "{counted}");
    // From then on, a second of uptime counts.
    devsup.wait_event(1, "exited", TIMEOUT);
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(3, "counted ready", TIMEOUT);
    devsup.wait_event(2, "draining", TIMEOUT);
    assert_eq!(devsup.count_lines("does not report readiness"), 1);
    stop_cleanly(&devsup);
}

/// `target/trap/`, with the fixture servers built in the `trap` profile
/// (once per run): a dev build whose tokio has no debug assertions, so that
/// `from_std` on a blocking socket behaves as in a release build instead of
/// panicking (see the workspace `Cargo.toml`).
fn trap_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Tests run from <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let mut profile = exe.parent().expect("exe has a parent").to_path_buf();
        if profile.file_name() == Some(OsStr::new("deps")) {
            profile.pop();
        }
        let target = profile
            .parent()
            .expect("the target directory")
            .to_path_buf();
        let manifest = devsup_tests::harness::workspace_root().join("Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let started = Instant::now();
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--profile", "trap", "--bins"])
            .args(["-p", "devsup-fixture-servers", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the fixture servers failed");
        eprintln!(
            "[readiness] built devsup-fixture-servers (profile trap) in {:.1?}",
            started.elapsed()
        );
        target.join("trap")
    })
}

/// devsup running the unchanged axum + listenfd server with graceful
/// shutdown, gen 1 ready and in the state a user's server is in once it
/// has served a request: its accept loop back in `accept4` on fd 3.
fn axum_listenfd_graceful(dir: &Path, extra: &[&str]) -> Devsup {
    let devsup = Devsup::builder(dir)
        .args(["--no-watch", "--drain-timeout", "2s"])
        .args(extra)
        .server(trap_fixtures().join("axum-listenfd-graceful"))
        .spawn();
    let ready = devsup.wait_event(1, "ready", TIMEOUT);
    assert!(ready.contains("(listening: pid="), "{ready}");
    // tokio accepts again right after a connection: on a blocking socket
    // that accept blocks.
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(1));
    devsup
}

#[test]
fn the_blocking_socket_trap_is_named_with_its_fix() {
    let dir = temp_dir();
    let devsup = axum_listenfd_graceful(dir.path(), &[]);
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    let trap = devsup.wait_event(1, "draining for", TIMEOUT);
    for words in [
        "blocked in accept4 on fd 3",
        "blocking mode",
        "set_nonblocking(true) before tokio's from_std",
        "--nonblocking",
    ] {
        assert!(trap.contains(words), "{words:?} missing from: {trap}");
    }
    // And it does hang until the drain timeout.
    devsup.wait_event(1, "still running", TIMEOUT);
    let exited = devsup.wait_event(1, "exited", TIMEOUT);
    assert!(exited.contains("by SIGKILL"), "{exited}");
    // Gen 2, having served a request, is caught the same way on shutdown,
    // and devsup's exit status says a generation had to be killed.
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(2));
    devsup.signal(Signal::SIGINT);
    devsup.wait_event(2, "draining for", TIMEOUT);
    assert_eq!(devsup.wait_exit(TIMEOUT).code(), Some(1));
}

/// `--nonblocking`: the same unchanged server drains at once.
#[test]
fn with_nonblocking_the_same_server_drains_without_the_timeout() {
    let dir = temp_dir();
    let devsup = axum_listenfd_graceful(dir.path(), &["--nonblocking"]);
    devsup.signal(Signal::SIGHUP);
    let ready = devsup.wait_event(2, "ready", TIMEOUT);
    assert!(ready.contains("(listening: pid="), "{ready}");
    let exited = devsup.wait_event(1, "exited", TIMEOUT);
    assert!(exited.contains("with status 0"), "{exited}");
    assert_eq!(devsup.count_matching(event(1, "still running")), 0);
    assert_eq!(devsup.count_matching(event(1, "draining for")), 0);
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(2));
    stop_cleanly(&devsup);
}

/// A generation that outlives its drain timeout with a keep-alive
/// connection open: the log counts the connections and says what to do.
#[test]
fn a_drain_timeout_says_how_many_connections_were_left_open() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--drain-timeout", "1s"])
        .server_args(["--ignore-drain", "1"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let mut conn = http::Conn::connect(devsup.addr()).unwrap();
    assert_eq!(conn.get("/").unwrap().generation(), Some(1));
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    let why = devsup.wait_event(1, "still had", TIMEOUT);
    assert!(
        why.contains("still had 1 connection open after")
            && why.contains("keep-alive")
            && why.contains("README.md#draining"),
        "{why}"
    );
    devsup.wait_event(1, "exited", TIMEOUT);
    drop(conn);
    stop_cleanly(&devsup);
}
