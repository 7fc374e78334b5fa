//! `--only h2`: HTTP/2 (h2c) through reloads, measured by an independent
//! load generator, h2load from nghttp2 (`-c 8 -m 8`: 8 connections of 8
//! concurrent streams), installed with apt-get on first use.
//!
//! h2load never opens a new connection after a GOAWAY, so one long h2load
//! run would stop at the first reload. Instead each phase is a row of
//! back-to-back rounds of `h2load -D 1s`: in the reload phase devsup gets a
//! SIGHUP half-way through each round (so a reload about every second),
//! and every connection of that round ends with the old generation's
//! GOAWAY; the steady phase is the same rounds without a reload. Side by
//! side: streams sent, sent and answered 200, sent and failed, and streams
//! h2load's own HTTP/2 library never sent because a GOAWAY had arrived (see
//! `devsup_tests::h2load`; safe to retry, no server can prevent them).
//!
//! A third phase, the storm (issue 18's shape): 16 connections × 10
//! streams, a reload every 0.5 s, each reload under a fresh h2load run
//! (`devsup_tests::h2load::storm`), twice as many reloads as rounds. It
//! prints streams sent and answered, failed, h2load's errored count, and
//! how many of those were never sent, counted apart.
//!
//! Two rates: h2load's own (requests over the round's whole duration, so
//! the reload phase's is lower simply because h2load does not reconnect),
//! and 200s per second while streams flowed (from h2load's stream log: the
//! first stream's start to the last one's end), the one to compare.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devsup_tests::devlog::HandoffTimings;
use devsup_tests::h2load::{self, Options, Storm, StormOutcome};
use devsup_tests::harness::{Devsup, TIMEOUT};
use devsup_tests::tools;

use super::{durations, loadavg, print_load};
use crate::fmt;

/// One phase: its rounds added up.
#[derive(Debug, Default)]
pub struct PhaseResult {
    /// Rounds run (h2load runs that reported).
    pub rounds: u32,
    /// SIGHUPs sent.
    pub reloads: u32,
    /// Streams sent to the server.
    pub sent: u64,
    /// Streams sent and answered 200.
    pub ok: u64,
    /// Streams sent that did not get a 200.
    pub failed_sent: u64,
    /// Streams h2load's library never sent (after a GOAWAY).
    pub never_sent: u64,
    /// h2load's own failed count.
    pub h2load_failed: u64,
    /// h2load's own timeouts.
    pub timeouts: u64,
    /// Sum of h2load's req/s over the rounds (divided by rounds: its mean).
    pub rps_sum: f64,
    /// Sum of each round's stream-flow span.
    pub span: Duration,
    /// h2load connections that ended before their round did.
    pub closed: usize,
    /// Rounds whose h2load could not be run or read, with why.
    pub errors: Vec<String>,
    /// devsup's handoff timings.
    pub timings: HandoffTimings,
}

impl PhaseResult {
    /// h2load's mean req/s.
    pub fn rps(&self) -> f64 {
        self.rps_sum / f64::from(self.rounds.max(1))
    }

    /// 200s per second of stream flow.
    pub fn ok_per_s(&self) -> f64 {
        self.ok as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

/// The results of the part.
#[derive(Debug)]
pub struct H2Report {
    /// Round length.
    pub round: Duration,
    /// The phase without reloads.
    pub steady: PhaseResult,
    /// The phase with a reload per round.
    pub reload: PhaseResult,
    /// The storm phase: its shape and what h2load saw.
    pub storm: (Storm, StormOutcome),
    /// Load average before the part.
    pub load_before: String,
}

/// Runs `rounds` rounds of `round` per phase; `None` (after one loud line)
/// if h2load is not available.
pub fn run(rounds: u32, round: Duration, verbose: bool) -> Option<H2Report> {
    let program = tools::require("devsup-bench h2", tools::apt("h2load", "nghttp2-client"))?;
    let load_before = loadavg();
    let dir = tempfile::tempdir().expect("temporary directory");
    eprintln!("devsup-bench: h2: steady phase, {rounds} rounds of {round:?}");
    let steady = phase(&program, dir.path(), rounds, round, false, verbose);
    eprintln!("devsup-bench: h2: reload phase, {rounds} rounds of {round:?}");
    let reload = phase(&program, dir.path(), rounds, round, true, verbose);
    let shape = Storm {
        reloads: rounds * 2,
        ..Storm::default()
    };
    eprintln!(
        "devsup-bench: h2: storm phase, {} reloads every {:?}",
        shape.reloads, shape.every
    );
    let storm = storm(&program, dir.path(), shape, verbose);
    Some(H2Report {
        round,
        steady,
        reload,
        storm: (shape, storm),
        load_before,
    })
}

fn phase(
    program: &Path,
    dir: &Path,
    rounds: u32,
    round: Duration,
    reloads: bool,
    verbose: bool,
) -> PhaseResult {
    let cwd = tempfile::tempdir_in(dir).expect("temporary directory");
    let devsup = Devsup::builder(cwd.path())
        .arg("--no-watch")
        .echo(verbose)
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let mark = devsup.mark();
    let options = Options {
        duration: round,
        ..Options::default()
    };
    let mut result = PhaseResult::default();
    let mut generation = 1;
    for k in 1..=rounds {
        let log: PathBuf = cwd.path().join(format!(
            "h2load-{}-{k}.log",
            if reloads { "reload" } else { "steady" }
        ));
        let run = match h2load::Run::start(program, addr, options, &log) {
            Ok(run) => run,
            Err(e) => {
                result
                    .errors
                    .push(format!("round {k}: spawning h2load: {e}"));
                continue;
            }
        };
        if reloads {
            // Half-way through the round: pacing, not waiting for
            // anything to happen.
            let started = Instant::now();
            if !run.wait_flowing(1, TIMEOUT) {
                result
                    .errors
                    .push(format!("round {k}: h2load's streams never flowed"));
            }
            std::thread::sleep((started + round / 2).saturating_duration_since(Instant::now()));
            devsup.reload();
            result.reloads += 1;
            generation += 1;
            devsup.wait_event(generation, "ready", TIMEOUT);
        }
        match run.finish() {
            Ok(outcome) => {
                result.rounds += 1;
                result.sent += outcome.log.total_sent();
                result.ok += outcome.log.ok();
                result.failed_sent += outcome.log.failed_sent();
                result.never_sent += outcome.log.never_sent;
                result.h2load_failed += outcome.requests.failed;
                result.timeouts += outcome.requests.timeout;
                result.rps_sum += outcome.rps;
                result.span += outcome.log.span;
                result.closed += outcome.closed;
                if verbose {
                    eprintln!("{}", outcome.output);
                }
            }
            Err(why) => result.errors.push(format!("round {k}: {why}")),
        }
    }
    if !super::settle(&devsup) {
        eprintln!("devsup-bench: h2: handoffs had not settled after {TIMEOUT:?}");
    }
    result.timings = HandoffTimings::from_lines(&devsup.lines()[mark..]);
    devsup.terminate(TIMEOUT);
    result
}

/// The storm phase on a devsup of its own.
fn storm(program: &Path, dir: &Path, shape: Storm, verbose: bool) -> StormOutcome {
    let cwd = tempfile::tempdir_in(dir).expect("temporary directory");
    let devsup = Devsup::builder(cwd.path())
        .arg("--no-watch")
        .echo(verbose)
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let outcome = h2load::storm(&devsup, program, cwd.path(), 1, shape);
    if !super::settle(&devsup) {
        eprintln!("devsup-bench: h2: storm handoffs had not settled after {TIMEOUT:?}");
    }
    devsup.terminate(TIMEOUT);
    outcome
}

/// Prints the storm phase's lines.
fn print_storm(shape: &Storm, s: &StormOutcome) {
    println!(
        "storm: h2load -c {} -m {}, a reload every {} ({} reloads, a fresh h2load run each): \
         {} streams sent, {} answered 200, {} failed (sent); h2load: {} failed, {} errored, \
         {} timeout, {} unfinished; never sent (GOAWAY): {}; errored and not never-sent: {}; \
         {} of {} connections drained",
        shape.options.conns,
        shape.options.streams,
        fmt(shape.every),
        s.reloads,
        s.sent(),
        s.ok(),
        s.failed_sent(),
        s.h2load_failed(),
        s.h2load_errored(),
        s.timeouts(),
        s.unfinished(),
        s.never_sent(),
        s.h2load_errored().saturating_sub(s.never_sent()),
        s.closed(),
        s.conns(&shape.options),
    );
    for error in &s.errors {
        println!("  storm: {error}");
    }
}

/// Prints the section.
pub fn print(r: &H2Report) {
    println!();
    println!(
        "HTTP/2 (h2c): h2load -c 8 -m 8, back-to-back rounds of {}; reload phase: a SIGHUP half-way through each round",
        fmt(r.round)
    );
    println!(
        "{:<7} {:>6} {:>7} {:>9} {:>9} {:>7} {:>10} {:>9} {:>8} {:>9} {:>10} {:>8}",
        "phase",
        "rounds",
        "reloads",
        "sent",
        "200",
        "failed",
        "never-sent",
        "h2load",
        "timeout",
        "req/s",
        "200/s",
        "drained"
    );
    println!(
        "{:<7} {:>6} {:>7} {:>9} {:>9} {:>7} {:>10} {:>9} {:>8} {:>9} {:>10} {:>8}",
        "",
        "",
        "",
        "streams",
        "",
        "(sent)",
        "(GOAWAY)",
        "failed",
        "",
        "(h2load)",
        "(flowing)",
        "conns"
    );
    for (name, p) in [("steady", &r.steady), ("reload", &r.reload)] {
        println!(
            "{:<7} {:>6} {:>7} {:>9} {:>9} {:>7} {:>10} {:>9} {:>8} {:>9.0} {:>10.0} {:>8}",
            name,
            p.rounds,
            p.reloads,
            p.sent,
            p.ok,
            p.failed_sent,
            p.never_sent,
            p.h2load_failed,
            p.timeouts,
            p.rps(),
            p.ok_per_s(),
            p.closed,
        );
    }
    println!(
        "(failed (sent): streams sent to the server without a 200; never-sent: refused by h2load's own \
         HTTP/2 library after a GOAWAY arrived, safe to retry; req/s: h2load's own, over each whole round, \
         h2load does not reconnect after a GOAWAY; 200/s: while streams flowed)"
    );
    print_storm(&r.storm.0, &r.storm.1);
    let t = &r.reload.timings;
    println!(
        "reload phase, devsup log (median / max): spawn->READY {}, READY->drain {}, drain->exit {}",
        durations(&t.spawn_to_ready),
        durations(&t.ready_to_drain),
        durations(&t.drain_to_exit),
    );
    for (name, p) in [("steady", &r.steady), ("reload", &r.reload)] {
        for error in &p.errors {
            println!("  {name}: {error}");
        }
    }
    print_load(&r.load_before);
}
