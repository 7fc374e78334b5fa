//! Throughput, errors and handoff timings of devsup under a reload storm;
//! edit→serve latency; watch start-up on a large tree; a long run of
//! reloads.
//!
//! ```text
//! cargo run --release -p devsup-tests --bin devsup-bench -- \
//!     [--only handoff,edit,watch,soak] \
//!     [--reloads N] [--conns C] [--interval MS] [--duration SECS] [--keepalive|--close|--both] \
//!     [--edits N] [--tree DIR] [--starts N] [--soak-reloads N] [--soak-conns C]
//! ```
//!
//! - `handoff`: for each connection mode, start devsup on the reference
//!   server, load it with no reloads (steady), then with a SIGHUP every
//!   interval (reload), and print both phases side by side with the
//!   handoff timings devsup logged.
//! - `edit`: write a watched file, poll until the new generation answers
//!   (see `bench/edit.rs`).
//! - `watch`: watch set-up time and devsup's memory on 5,000 source files
//!   beside a 200,000-file `target/` (see `bench/watch.rs`).
//! - `soak`: 1,000 reloads in a row; devsup's fds and memory after 10 and
//!   after 1,000 (see `bench/soak.rs`).
//!
//! Every part by default, each printed as it finishes. A benchmark prints;
//! it asserts nothing.

mod bench;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use devsup_tests::devlog::HandoffTimings;
use devsup_tests::harness::{self, Devsup, TIMEOUT};
use devsup_tests::load::{self, LoadConfig, LoadReport, Mode};

/// Load devsup's reference server while devsup reloads it, and compare with
/// no reloads.
#[derive(Debug, Parser)]
#[command(name = "devsup-bench")]
struct Args {
    /// Reloads per reload phase (default: one per interval for the whole
    /// duration). Given, each phase lasts (N+1) intervals.
    #[arg(long)]
    reloads: Option<u32>,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Milliseconds between reloads.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Keep-alive clients only.
    #[arg(long, group = "mode")]
    keepalive: bool,
    /// A new connection per request only.
    #[arg(long, group = "mode")]
    close: bool,
    /// Both modes (the default).
    #[arg(long, group = "mode")]
    both: bool,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Echo devsup's log to stderr.
    #[arg(short, long)]
    verbose: bool,
    /// Load generator runtime threads (1: current-thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run only these parts (repeat, or a comma list); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// edit: how many edits.
    #[arg(long, default_value_t = 20)]
    edits: usize,
    /// watch: keep the trees in DIR and reuse them in later runs (default:
    /// a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    tree: Option<std::path::PathBuf>,
    /// watch: devsup start-ups per tree.
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// soak: reloads in a row.
    #[arg(long, default_value_t = 1000)]
    soak_reloads: u32,
    /// soak: keep-alive clients during the reloads (0: none).
    #[arg(long, default_value_t = 2)]
    soak_conns: usize,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Load, steady and under a reload storm; handoff timings.
    Handoff,
    /// Edit→serve latency.
    Edit,
    /// Watch start-up time and memory on a large tree.
    Watch,
    /// 1,000 reloads in a row: fds and memory.
    Soak,
}

/// One mode's results.
struct ModeResult {
    mode: Mode,
    steady: LoadReport,
    reload: LoadReport,
    reloads_sent: u32,
    generations_spawned: usize,
    timings: HandoffTimings,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let parts = if args.only.is_empty() {
        vec![Part::Handoff, Part::Edit, Part::Watch, Part::Soak]
    } else {
        args.only.clone()
    };
    let runs = |part| parts.contains(&part);

    let bins = harness::binaries();
    if !bins.release {
        eprintln!("devsup-bench: warning: debug build; run with --release for real numbers");
    }
    println!(
        "devsup-bench: {} build, {} CPUs, load average {}",
        if bins.release { "release" } else { "debug" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bench::loadavg()
    );

    if runs(Part::Handoff) {
        handoff(&args);
    }
    if runs(Part::Edit) {
        eprintln!("devsup-bench: edit: {} edits", args.edits);
        bench::edit::print(&bench::edit::run(args.edits, args.verbose));
    }
    if runs(Part::Watch) {
        let report = bench::watch::run(args.tree.as_deref(), args.starts.max(1), args.verbose);
        bench::watch::print(&report);
    }
    if runs(Part::Soak) {
        eprintln!(
            "devsup-bench: soak: {} reloads, {} keep-alive clients",
            args.soak_reloads, args.soak_conns
        );
        bench::soak::print(&bench::soak::run(
            args.soak_reloads,
            args.soak_conns,
            args.verbose,
        ));
    }
    ExitCode::SUCCESS
}

/// The handoff part: load, steady and under a reload storm, per mode.
fn handoff(args: &Args) {
    let load_before = bench::loadavg();
    let interval = Duration::from_millis(args.interval.max(1));
    let (reloads, phase) = match args.reloads {
        Some(n) => (n, interval * (n + 1)),
        None => {
            let phase = Duration::from_secs(args.duration);
            let n = (phase.as_millis() / interval.as_millis()).saturating_sub(1);
            (n as u32, phase)
        }
    };
    let modes = if args.keepalive {
        vec![Mode::KeepAlive]
    } else if args.close {
        vec![Mode::Close]
    } else {
        vec![Mode::KeepAlive, Mode::Close]
    };

    eprintln!(
        "devsup-bench: {} conns, {phase:?} per phase, {reloads} reloads every {interval:?}",
        args.conns
    );

    let mut results = Vec::new();
    for mode in modes {
        results.push(bench_mode(args, mode, phase, interval, reloads));
    }
    print_results(&results);
    bench::print_load(&load_before);
}

fn bench_mode(
    args: &Args,
    mode: Mode,
    phase: Duration,
    interval: Duration,
    reloads: u32,
) -> ModeResult {
    let config = |addr| LoadConfig {
        conns: args.conns,
        mode,
        path: args.path.clone(),
        duration: phase,
        threads: args.threads,
        ..LoadConfig::new(addr)
    };

    // A devsup (so a port) per phase: in close mode the steady phase leaves
    // tens of thousands of TIME_WAIT sockets on its port, which would slow
    // the next phase's connects to that port and read as a reload cost.
    eprintln!("devsup-bench: {mode}: steady phase");
    let (devsup, _dir) = start_devsup(args);
    let steady = load::run_blocking(config(devsup.addr()));
    devsup.terminate(TIMEOUT);

    eprintln!("devsup-bench: {mode}: reload phase");
    let (devsup, _dir) = start_devsup(args);
    let mark = devsup.mark();
    let run = load::start(config(devsup.addr()));
    let started = Instant::now();
    for k in 1..=reloads {
        // Pacing the storm, not waiting for anything to happen.
        let due = started + interval * k;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        devsup.reload();
    }
    let reload = run.join();

    // Let the last handoff finish so its drain is measured too: the newest
    // generation ready and every older one exited.
    let settled = harness::wait_until(TIMEOUT, || {
        let pids = devsup.generation_pids();
        let newest = pids.keys().copied().max().unwrap_or(1);
        devsup.count_matching(harness::event(newest, "ready")) > 0
            && (1..newest).all(|g| devsup.count_matching(harness::event(g, "exited")) > 0)
    });
    if !settled {
        eprintln!("devsup-bench: {mode}: handoffs had not settled after {TIMEOUT:?}");
    }
    let lines = devsup.lines();
    let timings = HandoffTimings::from_lines(&lines[mark..]);
    let generations_spawned = devsup.generation_pids().len();
    devsup.terminate(TIMEOUT);
    ModeResult {
        mode,
        steady,
        reload,
        reloads_sent: reloads,
        generations_spawned,
        timings,
    }
}

/// devsup on the reference server, generation 1 ready, in a new
/// directory (kept as long as the returned guard).
fn start_devsup(args: &Args) -> (Devsup, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    // At info level: the handoff lines are the measurement.
    let devsup = Devsup::builder(dir.path()).echo(args.verbose).spawn();
    devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    (devsup, dir)
}

fn print_results(results: &[ModeResult]) {
    println!();
    println!(
        "{:<11} {:<7} {:>9} {:>8} {:>9} {:>6} {:>9} {:>9} {:>9} {:>5}  failures",
        "mode", "phase", "requests", "errors", "req/s", "ratio", "p50", "p99", "max", "gens"
    );
    for r in results {
        for (phase, report) in [("steady", &r.steady), ("reload", &r.reload)] {
            println!(
                "{:<11} {:<7} {:>9} {:>8} {:>9.0} {:>6.2} {:>9} {:>9} {:>9} {:>5}  {}",
                r.mode.to_string(),
                phase,
                report.total(),
                report.failures(),
                report.rps(),
                report.rps() / r.steady.rps().max(1e-9),
                fmt(report.p50()),
                fmt(report.p99()),
                fmt(report.max_latency()),
                report.generations.len(),
                report.failure_summary(),
            );
        }
    }

    println!();
    println!(
        "{:<11} {:>7} {:>6}  {:>17} {:>17} {:>17} {:>17}",
        "handoff",
        "reloads",
        "gens",
        "trigger->spawn",
        "spawn->READY",
        "READY->drain",
        "drain->exit"
    );
    for r in results {
        let t = &r.timings;
        println!(
            "{:<11} {:>7} {:>6}  {:>17} {:>17} {:>17} {:>17}",
            r.mode.to_string(),
            r.reloads_sent,
            r.generations_spawned,
            bench::durations(&t.trigger_to_spawn),
            bench::durations(&t.spawn_to_ready),
            bench::durations(&t.ready_to_drain),
            bench::durations(&t.drain_to_exit),
        );
    }
    println!("(handoff columns: median / max over the reload phase, from devsup's log)");
    println!("(keep-alive reconnects are graceful closes, not errors)");
    for r in results {
        println!(
            "{}: reconnects steady {} reload {}",
            r.mode, r.steady.reconnects, r.reload.reconnects
        );
    }

    for r in results {
        for (phase, report) in [("steady", &r.steady), ("reload", &r.reload)] {
            if !report.samples.is_empty() {
                println!("\nfirst failures, {} {phase}:", r.mode);
                for failure in report.samples.iter().take(5) {
                    println!(
                        "  at {:>9.3?} client {:>3} {}: {}",
                        failure.at, failure.client, failure.outcome, failure.detail
                    );
                }
            }
        }
    }
}

/// A duration with about 3 significant figures: `812us`, `1.23ms`, `2.50s`.
fn fmt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    match ms {
        ms if ms < 1.0 => format!("{:.0}us", ms * 1e3),
        ms if ms < 10.0 => format!("{ms:.2}ms"),
        ms if ms < 100.0 => format!("{ms:.1}ms"),
        ms if ms < 1000.0 => format!("{ms:.0}ms"),
        ms => format!("{:.2}s", ms / 1e3),
    }
}
