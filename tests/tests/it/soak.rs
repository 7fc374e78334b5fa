//! The mixed soak, short (see `devsup_tests::soak` and
//! `devsup-bench --only mixed` for the long one): for 12 s, a seeded random
//! sequence of SIGHUPs, edits, failing builds and SIGKILLs of the starting,
//! the active and a draining generation, while HTTP/1.1 keep-alive and
//! close, HTTP/2, WebSocket and event-stream clients load the reference
//! server.
//!
//! Asserted: no failure of any kind of client except near a SIGKILL the
//! soak sent; devsup's fds and threads back to where they were once only
//! the active generation is left; no process of any generation left after
//! devsup exits. The seed is printed; `DEVSUP_SOAK_SEED=N` replays it.

use std::time::Duration;

use devsup_tests::soak::{self, SoakConfig};

#[test]
fn a_mixed_soak_fails_only_on_killed_generations_and_leaks_nothing() {
    let seed = std::env::var("DEVSUP_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("soak seed: {seed} (DEVSUP_SOAK_SEED={seed} replays it)");
    let report = soak::run(&SoakConfig {
        duration: Duration::from_secs(12),
        seed,
        http_conns: 2,
        ws: 10,
        sse: 5,
        h2: 2,
        verbose: false,
    });
    let table = soak::table(&report);
    eprintln!("{table}");
    for kind in &report.kinds {
        assert!(
            kind.requests > 0,
            "no {} traffic at all:\n{table}",
            kind.kind
        );
        assert_eq!(
            kind.unexplained(),
            0,
            "{} failures not near a kill (seed {seed}):\n{table}\n{}",
            kind.kind,
            report.details.join("\n")
        );
    }
    assert!(report.actions.len() >= 3, "{table}");
    assert!(
        report.last.fds <= report.first.fds && report.last.threads <= report.first.threads,
        "devsup's fds or threads grew (seed {seed}):\n{table}"
    );
    assert_eq!(report.left_behind, [] as [i32; 0], "seed {seed}:\n{table}");
}
