//! Many reloads in a row: SIGHUP, wait for `gen=N ready`, repeat, under a
//! light keep-alive load; devsup's fds, memory and threads must not grow.
//! And the mixed soak ([`mixed`], `--only mixed`): random reloads, edits,
//! failing builds and kills under every kind of client, from
//! `devsup_tests::soak`.
//!
//! Each sample is taken once the generation the last reload replaced has
//! exited and devsup's fd count has been steady for 100 ms, so that a
//! drain still in progress does not read as a leak.

use std::time::{Duration, Instant};

use devsup_tests::devlog::HandoffTimings;
use devsup_tests::harness::{Devsup, TIMEOUT, event};
use devsup_tests::load::{self, LoadConfig, LoadReport, Mode};

use super::record::{Phase, marks_from_log};
use super::{ProcSample, durations, fd_kinds, loadavg, mib, print_load};
use crate::fmt;

/// devsup's state at one point of the run.
#[derive(Debug)]
pub struct Point {
    /// Reloads done (0: gen 1 ready, load running).
    pub reloads: u32,
    /// The sample.
    pub sample: ProcSample,
    /// What the fds are.
    pub fd_kinds: String,
}

/// The results of the part.
#[derive(Debug)]
pub struct SoakReport {
    /// Reloads asked for.
    pub reloads: u32,
    /// Load clients.
    pub conns: usize,
    /// Samples, in order.
    pub points: Vec<Point>,
    /// Wall time of the reloads (samples excluded).
    pub elapsed: Duration,
    /// SIGHUP to `gen=N ready` seen here, one per reload.
    pub per_reload: Vec<Duration>,
    /// The handoff steps devsup logged.
    pub timings: HandoffTimings,
    /// Generations that exited, and those with status 0.
    pub exited: (usize, usize),
    /// The load, if any.
    pub load: Option<LoadReport>,
    /// The load window by window with devsup's marks, for the chart.
    pub phase: Option<Phase>,
    /// Load average before the part.
    pub load_before: String,
}

/// Runs `reloads` reloads with `conns` keep-alive clients (0: none).
/// The load is recorded in windows of `window` for the chart.
pub fn run(reloads: u32, conns: usize, window: Duration, verbose: bool) -> SoakReport {
    let load_before = loadavg();
    let dir = tempfile::tempdir().expect("temporary directory");
    let devsup = Devsup::builder(dir.path()).echo(verbose).spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let pid = devsup.pid();

    let run = (conns > 0).then(|| {
        load::start(LoadConfig {
            conns,
            mode: Mode::KeepAlive,
            duration: Duration::from_secs(24 * 3600),
            window: Some(window),
            ..LoadConfig::new(addr)
        })
    });
    if let Some(run) = &run {
        run.wait_ok(100, TIMEOUT);
    }
    let mark = devsup.mark();
    let mut points = vec![point(0, pid)];

    let sample_at = [10, 100, reloads];
    let mut per_reload = Vec::with_capacity(reloads as usize);
    let mut sampling = Duration::ZERO;
    let started = Instant::now();
    for k in 1..=reloads {
        let next = u64::from(k) + 1;
        devsup.mark();
        let sent = Instant::now();
        devsup.reload();
        devsup.wait_for_new(event(next, "ready"), TIMEOUT);
        per_reload.push(sent.elapsed());
        if k % 100 == 0 {
            eprintln!("devsup-bench: soak: {k}/{reloads} reloads");
        }
        if sample_at.contains(&k) && !points.iter().any(|p| p.reloads == k) {
            let pause = Instant::now();
            devsup.wait_for_line(event(next - 1, "exited"), TIMEOUT);
            points.push(point(k, pid));
            sampling += pause.elapsed();
        }
    }
    let elapsed = started.elapsed() - sampling;
    let load = run.map(|r| r.finish());

    let phase = load.as_ref().map(|load| {
        let marks = marks_from_log(&devsup.timed_lines(), load.started);
        let label = format!("{reloads} reloads in a row, {conns} keep-alive clients");
        Phase::new("soak", &label, load, marks)
    });
    let lines = devsup.lines();
    let (mut exited, mut exited_ok) = (0, 0);
    for line in &lines {
        let Some((g, rest)) = devsup_tests::devlog::subject(line) else {
            continue;
        };
        if (1..=u64::from(reloads)).contains(&g) && rest.starts_with("exited") {
            exited += 1;
            exited_ok += usize::from(rest.contains("status 0"));
        }
    }
    let report = SoakReport {
        reloads,
        conns,
        points,
        elapsed,
        per_reload,
        timings: HandoffTimings::from_lines(&lines[mark..]),
        exited: (exited, exited_ok),
        load,
        phase,
        load_before,
    };
    devsup.terminate(TIMEOUT);
    report
}

fn point(reloads: u32, pid: i32) -> Point {
    let sample = ProcSample::settled(pid);
    Point {
        reloads,
        sample,
        fd_kinds: fd_kinds(pid),
    }
}

/// Prints the section.
pub fn print(r: &SoakReport) {
    println!();
    println!(
        "{} reloads in a row: SIGHUP, wait for gen=N ready, repeat; {}",
        r.reloads,
        match r.conns {
            0 => "no load".to_owned(),
            n => format!("{n} keep-alive clients"),
        }
    );
    println!("(devsup's own process, sampled once the replaced generation has exited)");
    println!(
        "{:<11} {:>5} {:>10} {:>10} {:>8}  fds by kind",
        "after", "fds", "RSS", "peak RSS", "threads"
    );
    for p in &r.points {
        let label = match p.reloads {
            0 => "gen1 ready".to_owned(),
            k => format!("reload {k}"),
        };
        println!(
            "{:<11} {:>5} {:>10} {:>10} {:>8}  {}",
            label,
            p.sample.fds,
            mib(p.sample.rss_kib),
            mib(p.sample.hwm_kib),
            p.sample.threads,
            p.fd_kinds
        );
    }
    let n = r.per_reload.len().max(1) as u32;
    println!(
        "{} reloads in {} ({} per reload, {:.0} reloads/s); SIGHUP->ready seen here (median / max): {}",
        r.per_reload.len(),
        fmt(r.elapsed),
        fmt(r.elapsed / n),
        r.per_reload.len() as f64 / r.elapsed.as_secs_f64().max(1e-9),
        durations(&r.per_reload),
    );
    println!(
        "devsup log (median / max): trigger->spawn {}, spawn->READY {}, READY->drain {}, drain->exit {}",
        durations(&r.timings.trigger_to_spawn),
        durations(&r.timings.spawn_to_ready),
        durations(&r.timings.ready_to_drain),
        durations(&r.timings.drain_to_exit),
    );
    println!(
        "replaced generations exited: {} of {} ({} with status 0)",
        r.exited.0, r.reloads, r.exited.1
    );
    match &r.load {
        None => println!("load: none"),
        Some(load) => {
            println!(
                "load: {} requests, {} errors ({}), {} reconnects (graceful closes, not errors), p50 {}, p99 {}, max {}",
                load.total(),
                load.failures(),
                load.failure_summary(),
                load.reconnects,
                fmt(load.p50()),
                fmt(load.p99()),
                fmt(load.max_latency()),
            );
            for failure in load.samples.iter().take(5) {
                println!(
                    "  at {:>9.3?} client {:>3} {}: {}",
                    failure.at, failure.client, failure.outcome, failure.detail
                );
            }
        }
    }
    print_load(&r.load_before);
}

/// Runs and prints the mixed soak for `secs` seconds with `seed` (a new
/// one when `None`; printed first, so that a failing run can be replayed
/// with `--seed`).
pub fn mixed(secs: u64, seed: Option<u64>, verbose: bool) {
    let load_before = loadavg();
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!(
        "devsup-bench: mixed: {secs} s of random actions, seed {seed} (--seed {seed} replays it)"
    );
    let report = devsup_tests::soak::run(&devsup_tests::soak::SoakConfig {
        duration: Duration::from_secs(secs),
        seed,
        http_conns: 4,
        ws: 50,
        sse: 20,
        h2: 4,
        verbose,
    });
    println!();
    println!("{}", devsup_tests::soak::table(&report));
    print_load(&load_before);
}
