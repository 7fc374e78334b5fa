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
