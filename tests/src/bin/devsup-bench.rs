//! Throughput, errors and handoff timings of devsup under a reload storm;
//! the same server under a tool that restarts it; edit→serve latency;
//! watch start-up on a large tree; a long run of reloads; long-lived
//! clients (WebSockets, server-sent events) and HTTP/2 through reloads.
//!
//! ```text
//! cargo run --release -p devsup-tests --bin devsup-bench -- \
//!     [--only handoff,compare,edit,watch,soak,mixed,browser,clients,h2,unchanged] [--out DIR] [--window MS] \
//!     [--reloads N] [--conns C] [--interval MS] [--duration SECS] [--keepalive|--close|--both] \
//!     [--compare-duration SECS] \
//!     [--edits N] [--tree DIR] [--starts N] [--soak-reloads N] [--soak-conns C] \
//!     [--ws N] [--sse N] [--client-reloads N] [--h2-rounds N] [--mixed-secs SECS] [--seed N]
//! ```
//!
//! - `handoff`: for each connection mode, start devsup on the reference
//!   server, load it with no reloads (steady), then with a SIGHUP every
//!   interval (reload), and print both phases side by side with the
//!   handoff timings devsup logged.
//! - `compare`: the reference server edited every interval under
//!   `devsup --watch` and under `watchexec --socket -r`, same load (see
//!   `bench/compare.rs`; watchexec is installed on first use).
//! - `edit`: write a watched file, poll until the new generation answers
//!   (see `bench/edit.rs`).
//! - `watch`: watch set-up time and devsup's memory on 5,000 source files
//!   beside a 200,000-file `target/` (see `bench/watch.rs`).
//! - `soak`: 1,000 reloads in a row; devsup's fds and memory after 10 and
//!   after 1,000 (see `bench/soak.rs`), and the load through them.
//! - `mixed`: the mixed soak (`devsup_tests::soak`): for `--mixed-secs`
//!   (180 by default), random SIGHUPs, edits, failing builds and SIGKILLs
//!   of the starting, the active and a draining generation, while HTTP/1.1
//!   keep-alive and close, WebSocket and SSE clients load the reference
//!   server; per kind of client the requests, the failures and those on a
//!   generation it killed; devsup's fds, threads and RSS first and last;
//!   the processes left. It prints its seed; `--seed N` replays it.
//! - `clients`: 200 WebSocket and 50 server-sent-event clients (`--ws`,
//!   `--sse`) stay connected, reconnecting after each close, while
//!   `--conns` keep-alive HTTP clients load the reference server and
//!   devsup reloads 20 times (`--client-reloads`) every `--interval`: how
//!   each connection ended (1012 closes, resets, clean SSE ends), whether
//!   every client was back on the newest generation before the next
//!   reload, the HTTP load, drain signal -> old generation exit (see
//!   `bench/clients.rs`).
//! - `h2`: h2load (`-c 8 -m 8`, installed on first use) in back-to-back
//!   1 s rounds (`--h2-rounds`), with no reload and with a SIGHUP in each
//!   round, side by side: streams sent, answered, failed, never sent after
//!   a GOAWAY, req/s (see `bench/h2.rs`).
//! - `unchanged`: third-party servers as people write them beside their
//!   opted-in forms, 15 reloads (`--reloads`) every `--interval` under
//!   `--conns` clients (see `bench/unchanged.rs`). Not in the default
//!   set (it takes minutes and installs uvicorn and gunicorn): ask for it
//!   with `--only unchanged` (`--server puma` for only the servers whose
//!   name contains `puma`).
//! - `browser`: write a watched file, until headless Chromium shows the new
//!   content through `--livereload` (see `bench/browser.rs`).
//!
//! Every part but `unchanged` by default, each printed as it finishes. A
//! benchmark prints; it asserts nothing. The load phases (handoff, compare,
//! soak, clients) also leave, in `--out DIR` (default `target/devsup-bench/`), per
//! phase a CSV of 100 ms windows (`NAME.csv`: ok, failed, p50, p99), a CSV
//! of the instants of each trigger, READY and drain signal (`NAME-marks.csv`,
//! from devsup's log), and a chart (`NAME.svg`); and a chart that puts the
//! phases side by side (`handoff-keep-alive.svg`, `handoff-close.svg`,
//! `compare.svg`).
//!
//! This file holds the command line and the handoff part; every other part
//! is in `bench/`.

#[cfg(unix)]
mod bench;
#[cfg(unix)]
#[path = "bench/unchanged.rs"]
mod unchanged;

#[cfg(unix)]
use std::process::ExitCode;
#[cfg(unix)]
use std::time::{Duration, Instant};

#[cfg(unix)]
use clap::{Parser, ValueEnum};
#[cfg(unix)]
use devsup_tests::devlog::HandoffTimings;
#[cfg(unix)]
use devsup_tests::harness::{self, Devsup, TIMEOUT};
#[cfg(unix)]
use devsup_tests::load::{self, LoadConfig, LoadReport, Mode};

#[cfg(unix)]
use bench::plot::{self, Line};
#[cfg(unix)]
use bench::record::{self, Phase};

/// Load devsup's reference server while devsup reloads it, and compare with
/// no reloads.
#[cfg(unix)]
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
    /// compare: seconds each tool is loaded and edited (one edit per
    /// --interval).
    #[arg(long, default_value_t = 10)]
    compare_duration: u64,
    /// clients: WebSocket clients.
    #[arg(long, default_value_t = 200)]
    ws: usize,
    /// clients: server-sent-event clients.
    #[arg(long, default_value_t = 50)]
    sse: usize,
    /// clients: reloads, one per --interval.
    #[arg(long, default_value_t = 20)]
    client_reloads: u32,
    /// h2: one-second h2load rounds per phase.
    #[arg(long, default_value_t = 10)]
    h2_rounds: u32,
    /// Where the CSV files and charts go (default: target/devsup-bench).
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// unchanged: only the servers whose name contains this (repeat, or a
    /// comma list; case-insensitive), e.g. `--server puma`.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    server: Vec<String>,
    /// Width of the timeline windows, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    window: u64,
    /// mixed: how long the random actions go on, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    mixed_secs: u64,
    /// mixed: the seed of the random actions (default: a new one, printed).
    #[arg(long)]
    seed: Option<u64>,
}

/// A part of the benchmark.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Load, steady and under a reload storm; handoff timings.
    Handoff,
    /// The same server under devsup and under watchexec --socket -r.
    Compare,
    /// Edit→serve latency.
    Edit,
    /// Watch start-up time and memory on a large tree.
    Watch,
    /// 1,000 reloads in a row: fds and memory.
    Soak,
    /// Random reloads, edits, failing builds and kills under every kind
    /// of client (see devsup_tests::soak).
    Mixed,
    /// WebSocket and SSE clients through reloads, beside HTTP load.
    Clients,
    /// HTTP/2 (h2load) through reloads, and without.
    H2,
    /// Third-party servers unchanged and opted in (see bench/unchanged.rs).
    Unchanged,
    /// Edit→browser latency through --livereload, in headless Chromium.
    Browser,
}

/// One mode's results.
#[cfg(unix)]
struct ModeResult {
    mode: Mode,
    steady: LoadReport,
    reload: LoadReport,
    reloads_sent: u32,
    generations_spawned: usize,
    timings: HandoffTimings,
    /// The steady phase and the reload phase, for the CSV files and charts.
    phases: [Phase; 2],
}

#[cfg(unix)]
fn main() -> ExitCode {
    let args = Args::parse();
    let parts = if args.only.is_empty() {
        vec![
            Part::Handoff,
            Part::Compare,
            Part::Edit,
            Part::Watch,
            Part::Soak,
            Part::Mixed,
            Part::Browser,
            Part::Clients,
            Part::H2,
        ]
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

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| bench::target_dir().join("devsup-bench"));
    let mut written = Vec::new();
    if runs(Part::Handoff) {
        written.extend(handoff(&args, &out));
    }
    if runs(Part::Compare) {
        written.extend(compare(&args, &out));
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
        let report = bench::soak::run(
            args.soak_reloads,
            args.soak_conns,
            Duration::from_millis(args.window.max(1)),
            args.verbose,
        );
        bench::soak::print(&report);
        if let Some(phase) = &report.phase {
            written.extend(bench::write_phase(&out, phase));
        }
    }
    if runs(Part::Mixed) {
        bench::soak::mixed(args.mixed_secs, args.seed, args.verbose);
    }
    if runs(Part::Clients) {
        let plan = bench::clients::Plan {
            ws: args.ws,
            sse: args.sse,
            http: args.conns,
            reloads: args.client_reloads,
            interval: Duration::from_millis(args.interval.max(1)),
            window: Duration::from_millis(args.window.max(1)),
            threads: args.threads,
            verbose: args.verbose,
        };
        eprintln!(
            "devsup-bench: clients: {} WebSocket + {} SSE + {} HTTP clients, {} reloads every {:?}",
            plan.ws, plan.sse, plan.http, plan.reloads, plan.interval
        );
        let report = bench::clients::run(&plan);
        bench::clients::print(&report);
        written.extend(bench::write_phase(&out, &report.phase));
    }
    if runs(Part::H2) {
        let round = Duration::from_secs(1);
        if let Some(report) = bench::h2::run(args.h2_rounds.max(1), round, args.verbose) {
            bench::h2::print(&report);
        }
    }
    if runs(Part::Unchanged) {
        let modes = if args.keepalive {
            vec![Mode::KeepAlive]
        } else if args.close {
            vec![Mode::Close]
        } else {
            vec![Mode::KeepAlive, Mode::Close]
        };
        let interval = Duration::from_millis(args.interval.max(1));
        let reloads = args.reloads.unwrap_or(15);
        unchanged::run(
            args.conns,
            reloads,
            interval,
            &modes,
            &args.server,
            args.verbose,
        );
    }
    if !written.is_empty() {
        println!();
        println!("written to {}:", out.display());
        for path in &written {
            let name = path.strip_prefix(&out).unwrap_or(path);
            println!("  {}", name.display());
        }
    }
    if runs(Part::Browser) {
        bench::browser::print(bench::browser::run(args.edits, args.verbose).as_ref());
    }
    ExitCode::SUCCESS
}

/// The handoff part: load, steady and under a reload storm, per mode;
/// returns the files written.
#[cfg(unix)]
fn handoff(args: &Args, out: &std::path::Path) -> Vec<std::path::PathBuf> {
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

    let mut written = Vec::new();
    for r in &results {
        let [steady, reload] = &r.phases;
        let title = format!(
            "devsup, {} clients ({}): steady vs a SIGHUP reload every {}",
            r.steady.conns,
            r.mode,
            fmt(interval)
        );
        let lines = [
            Line {
                phase: steady,
                color: plot::BASELINE,
                marks: false,
            },
            Line {
                phase: reload,
                color: plot::MEASURED,
                marks: true,
            },
        ];
        written.extend(bench::write_phase(out, steady));
        written.extend(bench::write_phase(out, reload));
        written.extend(bench::write_chart(
            out,
            &format!("handoff-{}", r.mode),
            &title,
            &lines,
        ));
    }
    written
}

/// The compare part; returns the files written.
#[cfg(unix)]
fn compare(args: &Args, out: &std::path::Path) -> Vec<std::path::PathBuf> {
    let load_before = bench::loadavg();
    let plan = bench::compare::Plan {
        conns: args.conns,
        duration: Duration::from_secs(args.compare_duration.max(1)),
        interval: Duration::from_millis(args.interval.max(1)),
        window: Duration::from_millis(args.window.max(1)),
        threads: args.threads,
        verbose: args.verbose,
    };
    eprintln!(
        "devsup-bench: compare: {} keep-alive clients, {:?} per tool, an edit every {:?}",
        plan.conns, plan.duration, plan.interval
    );
    let report = bench::compare::run(&plan, &bench::target_dir());
    bench::compare::print(&report);
    bench::print_load(&load_before);

    let mut written = Vec::new();
    let (devsup, _) = &report.devsup;
    written.extend(bench::write_phase(out, devsup));
    let mut lines = vec![Line {
        phase: devsup,
        color: plot::MEASURED,
        marks: true,
    }];
    if let Some((watchexec, _)) = &report.watchexec {
        written.extend(bench::write_phase(out, watchexec));
        lines.insert(
            0,
            Line {
                phase: watchexec,
                color: plot::OTHER,
                marks: true,
            },
        );
    }
    let title = format!(
        "the reference server edited every {}, {} keep-alive clients: devsup vs a restart",
        fmt(plan.interval),
        plan.conns
    );
    written.extend(bench::write_chart(out, "compare", &title, &lines));
    written
}

#[cfg(unix)]
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
        window: Some(Duration::from_millis(args.window.max(1))),
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

    // Let the last handoff finish so its drain is measured too.
    if !bench::settle(&devsup) {
        eprintln!("devsup-bench: {mode}: handoffs had not settled after {TIMEOUT:?}");
    }
    let lines = devsup.lines();
    let timings = HandoffTimings::from_lines(&lines[mark..]);
    let generations_spawned = devsup.generation_pids().len();
    let marks = record::marks_from_log(&devsup.timed_lines(), reload.started);
    devsup.terminate(TIMEOUT);
    let name = |phase| format!("handoff-{mode}-{phase}");
    let phases = [
        Phase::new(&name("steady"), "steady: no reload", &steady, Vec::new()),
        Phase::new(
            &name("reload"),
            &format!("a SIGHUP reload every {}", fmt(interval)),
            &reload,
            marks,
        ),
    ];
    ModeResult {
        mode,
        steady,
        reload,
        reloads_sent: reloads,
        generations_spawned,
        timings,
        phases,
    }
}

/// devsup on the reference server, generation 1 ready, in a new
/// directory (kept as long as the returned guard).
#[cfg(unix)]
fn start_devsup(args: &Args) -> (Devsup, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    // At info level: the handoff lines are the measurement.
    let devsup = Devsup::builder(dir.path()).echo(args.verbose).spawn();
    devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    (devsup, dir)
}

#[cfg(unix)]
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
#[cfg(unix)]
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

/// devsup-bench is Unix-only: on other platforms it compiles to this one loud line.
#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "devsup-bench: runs on Unix only (it drives devsup through the Unix-only harness (signals, process groups, /proc)); nothing was run"
    );
    std::process::ExitCode::from(2)
}
