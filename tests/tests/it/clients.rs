//! Long-lived clients through reloads: 200 WebSocket clients
//! (tokio-tungstenite) and 50 server-sent-event clients stay connected to
//! devsup running the reference server while HTTP load runs and devsup
//! reloads 20 times.
//!
//! The reference server's `/ws` and `/events` have no drain code: its
//! serving library closes each WebSocket with 1012 and ends each event
//! stream cleanly a short grace after the drain starts. So: every
//! WebSocket client gets a close frame on every reload (never a reset),
//! every client reconnects to the newest generation before the next reload,
//! the HTTP load sees no failure, and each old generation ends its drain by
//! itself (`exited with status 0`, and its serving library dropped no
//! connection at its 8 s deadline). How long each drain took (devsup's
//! `gen=N exited ... after X`) is printed, not asserted: on a shared
//! two-core machine a drain of 258 connections in a debug build took from
//! 0.4 s to 4.2 s, all of it ending cleanly.

use std::time::Instant;

use devsup_tests::clients::Clients;
use devsup_tests::devlog;
use devsup_tests::harness::{Devsup, TIMEOUT};
use devsup_tests::load::{self, LoadConfig};

const WS_CLIENTS: usize = 200;
const SSE_CLIENTS: usize = 50;
const RELOADS: u64 = 20;

#[test]
fn websockets_and_event_streams_follow_every_reload() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let addr = devsup.addr();

    let clients = Clients::start(addr, WS_CLIENTS, SSE_CLIENTS);
    let seen = clients.seen();
    let all_on = |generation: u64| {
        assert!(
            clients.wait_all_on(generation, TIMEOUT),
            "{} clients not on gen={generation}: {seen:?}",
            seen.behind(generation)
        );
    };
    all_on(1);

    let run = load::start(LoadConfig::new(addr));
    assert!(run.wait_ok(20, TIMEOUT), "load is flowing");
    let started = Instant::now();
    for generation in 2..=RELOADS + 1 {
        devsup.reload();
        devsup.wait_event(generation, "ready", TIMEOUT);
        // Every client was closed by the old generation and is back, on
        // this one.
        all_on(generation);
        devsup.wait_event(generation - 1, "exited", TIMEOUT);
    }
    let took = started.elapsed();
    let report = run.finish();
    let seen = clients.finish();

    eprintln!("{RELOADS} reloads in {took:.1?}: {seen}\n{report}");
    let details = seen.details.join("\n");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(seen.ws_unclean, 0, "{details}");
    assert_eq!(seen.ws_closed_other, 0, "{details}");
    assert_eq!(seen.sse_unclean, 0, "{details}");
    assert_eq!(seen.connect_errors, 0, "{details}");
    // Each reload closed each client exactly once.
    let reloads = RELOADS;
    assert_eq!(seen.ws_closed_1012, WS_CLIENTS as u64 * reloads);
    assert_eq!(seen.sse_clean_ends, SSE_CLIENTS as u64 * reloads);
    assert_eq!(seen.ws_connects, WS_CLIENTS as u64 * (reloads + 1));

    // Each old generation drained by itself: it exited with status 0 (not
    // killed at devsup's drain timeout) and the server's drain dropped no
    // connection at its deadline.
    let lines = devsup.lines();
    let mut drains = Vec::new();
    for generation in 1..=RELOADS {
        let exited = lines
            .iter()
            .find(|l| devlog::is_event(l, generation, "exited"))
            .unwrap_or_else(|| panic!("no exit line for gen={generation}"));
        let after = exited
            .rfind(" after ")
            .and_then(|at| exited[at + 7..].split_whitespace().next())
            .and_then(devlog::parse_duration)
            .unwrap_or_else(|| panic!("no duration in {exited:?}"));
        assert!(
            lines
                .iter()
                .any(|l| devlog::is_event(l, generation, "draining")),
            "gen={generation} exited without a drain"
        );
        assert!(exited.contains("with status 0"), "{exited}");
        let server_exit = format!("devsup-server gen={generation} pid=");
        let dropped = lines
            .iter()
            .find(|l| l.contains(&server_exit) && l.contains(": exited after "))
            .unwrap_or_else(|| panic!("no exit line of gen={generation}'s server"));
        assert!(!dropped.contains("dropped"), "{dropped}");
        drains.push(after);
    }
    let (median, max) = devlog::median_max(&drains).unwrap();
    eprintln!("drain to exit: median {median:?}, max {max:?}");
}
