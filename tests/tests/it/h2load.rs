//! HTTP/2 across reloads, with an independent load generator: h2load (from
//! nghttp2) speaks h2c with prior knowledge to devsup running the
//! reference server, while devsup reloads by SIGHUP. Each old generation
//! drains the HTTP/2 way (the two-step GOAWAY, streams in flight finish),
//! so h2load must see no failed stream but those it never sent.

use devsup_tests::h2load::{self, Storm};
use devsup_tests::harness::{Devsup, TIMEOUT};
use devsup_tests::tools;

/// Issue 18's storm: 16 connections × 10 concurrent streams, a reload
/// every 0.5 s (each one under a fresh h2load run, since h2load does not
/// reconnect after a GOAWAY), 6 reloads, three times over.
///
/// The check: every stream sent was answered 200, none timed out or was
/// left unfinished, every connection was ended by a drain (not by h2load
/// at the end of its run), and every stream h2load counts as failed (and
/// errored) is one it never sent, refused by its own HTTP/2 library once
/// the first GOAWAY had arrived (see `devsup_tests::h2load` for why, and
/// the frame log that shows it).
///
/// Each reload waits until h2load's streams flow, so every connection has
/// made requests before its drain: this storm does not reach a connection
/// drained before its first request (it passed with and without that fix;
/// its regression test is serve/tests/h2.rs,
/// h2_connection_without_a_request_gets_the_two_step_goaway).
#[test]
fn h2load_storm_16x10_loses_no_stream() {
    let Some(h2load) = tools::require(
        "h2load storm across reloads",
        tools::apt("h2load", "nghttp2-client"),
    ) else {
        return;
    };
    const RUNS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let shape = Storm::default();
    let mut generation = 1;
    let (mut sent, mut never_sent) = (0, 0);
    for run in 1..=RUNS {
        let storm = h2load::storm(&devsup, &h2load, dir.path(), generation, shape);
        generation = storm.generation;
        for outcome in &storm.runs {
            eprintln!("storm {run}: {:?} {:?}", outcome.requests, outcome.log);
        }
        let summary = format!(
            "storm {run}: {} reloads, {} streams sent, {} answered 200, {} failed (sent), \
             {} never sent; h2load: {} failed, {} errored, {} timeout; {} of {} connections drained; \
             errors {:?}",
            storm.reloads,
            storm.sent(),
            storm.ok(),
            storm.failed_sent(),
            storm.never_sent(),
            storm.h2load_failed(),
            storm.h2load_errored(),
            storm.timeouts(),
            storm.closed(),
            storm.conns(&shape.options),
            storm.errors,
        );
        eprintln!("{summary}");
        assert!(storm.errors.is_empty(), "{summary}");
        assert_eq!(storm.runs.len(), shape.reloads as usize, "{summary}");
        assert!(storm.ok() > 0, "{summary}");
        assert_eq!(storm.failed_sent(), 0, "a stream sent failed: {summary}");
        assert_eq!((storm.timeouts(), storm.unfinished()), (0, 0), "{summary}");
        assert_eq!(
            (storm.h2load_failed(), storm.h2load_errored()),
            (storm.never_sent(), storm.never_sent()),
            "h2load failures other than never-sent streams: {summary}"
        );
        assert_eq!(
            storm.closed(),
            storm.conns(&shape.options),
            "every connection drained: {summary}"
        );
        sent += storm.ok();
        never_sent += storm.never_sent();
    }
    eprintln!(
        "h2load storms: {} reloads, {sent} streams sent, all 200; {never_sent} refused by \
         h2load's own library after GOAWAY, never sent",
        RUNS as u32 * shape.reloads
    );
}
