//! HTTP/2 across reloads, with an independent load generator: h2load (from
//! nghttp2) speaks h2c with prior knowledge to devsup running the
//! reference server, while devsup reloads by SIGHUP. Each old generation
//! drains the HTTP/2 way (GOAWAY, streams in flight finish), so h2load must
//! see 0 failed and 0 errored streams.

use std::path::Path;
use std::time::Instant;

use devsup_tests::h2load::{self, Options, Requests, StreamLog};
use devsup_tests::harness::{Devsup, Signal, TIMEOUT};
use devsup_tests::tools;

/// One h2load run (8 connections, 8 streams each, 4 s) with one reload in
/// the middle: returns h2load's counts, its stream log, and how many of its
/// connections the drain closed while it ran.
fn round(
    devsup: &Devsup,
    h2load: &Path,
    generation: u64,
    dir: &Path,
) -> (Requests, StreamLog, usize) {
    let log = dir.join(format!("h2load-{generation}.log"));
    let run = h2load::Run::start(h2load, devsup.addr(), Options::default(), &log)
        .expect("spawning h2load");
    // h2load logs each finished request: reload once streams flow.
    let flowing = run.wait_flowing(1000, TIMEOUT);
    let reloaded = Instant::now();
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(generation + 1, "ready", TIMEOUT);
    devsup.wait_event(generation, "exited", TIMEOUT);
    let reload_took = reloaded.elapsed();
    let outcome = run.finish();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(why) => panic!("h2load round {generation}: {why}"),
    };
    eprintln!(
        "h2load round {generation} (reload took {reload_took:?}):\n{}",
        outcome.output
    );
    assert!(flowing, "h2load's streams never flowed");
    (outcome.requests, outcome.log, outcome.closed)
}

/// h2load never opens a new connection after a GOAWAY: a client whose
/// connection was drained stops. So each round is a timed run (`-D`) with
/// one reload.
///
/// h2load also counts as failed a stream it submitted just before the
/// GOAWAY was read, which its own HTTP/2 library then refuses to send
/// (see `devsup_tests::h2load`); no server can prevent it, and such a
/// stream is safe to retry. h2load's log tells these apart, so the check
/// is: every stream that was sent succeeded, and every failure h2load
/// counts is a stream that was never sent.
#[test]
fn h2load_sees_no_failed_stream_across_reloads() {
    let Some(h2load) = tools::require(
        "h2load across reloads",
        tools::apt("h2load", "nghttp2-client"),
    ) else {
        return;
    };
    const ROUNDS: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let (mut sent, mut never_sent) = (0, 0);
    for generation in 1..=ROUNDS {
        let (requests, log, closed) = round(&devsup, &h2load, generation, dir.path());
        eprintln!("round {generation}: {requests:?} {log:?}");
        assert!(requests.succeeded > 0, "{requests:?}");
        assert_eq!(requests.timeout, 0, "{requests:?}");
        assert_eq!(requests.started, requests.done, "{requests:?}");
        let ok = log.sent.get(&200).copied().unwrap_or(0);
        assert_eq!(
            log.sent.values().sum::<u64>(),
            ok,
            "a stream sent to the server failed: {log:?}"
        );
        assert_eq!(requests.succeeded, ok, "{requests:?} {log:?}");
        assert_eq!(
            (requests.failed, requests.errored),
            (log.never_sent, log.never_sent),
            "h2load failures other than never-sent streams: {requests:?} {log:?}"
        );
        assert_eq!(closed, 8, "every connection drained while h2load ran");
        sent += ok;
        never_sent += log.never_sent;
    }
    eprintln!(
        "h2load over {ROUNDS} reloads: {sent} streams sent, all 200; \
         {never_sent} refused by h2load's own library after GOAWAY, never sent"
    );
}
