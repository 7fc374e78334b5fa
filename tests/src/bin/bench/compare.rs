//! The same reference server, loaded the same way and edited on the same
//! schedule, under devsup and under a tool that restarts it: watchexec with
//! `--socket` (it holds the listening socket, as systemfd does) and `-r`
//! (stop the server, then start it again, on every change).
//!
//! watchexec is installed by the bench itself, with
//! `cargo install watchexec-cli --locked --root <target>/bench-tools`, the
//! first time (that takes minutes). If it cannot be installed, its side is
//! skipped with one loud line and only devsup's is drawn.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devsup_tests::harness::{self, Devsup, KillOnDrop, Signal, TIMEOUT};
use devsup_tests::http;
use devsup_tests::load::{self, LoadConfig, LoadReport, Mode};

use super::record::{Mark, MarkKind, Phase, marks_from_log};
use crate::fmt;

/// How to run both sides.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Keep-alive clients.
    pub conns: usize,
    /// How long each side is loaded.
    pub duration: Duration,
    /// Between two edits.
    pub interval: Duration,
    /// The timeline's window.
    pub window: Duration,
    /// Load generator threads.
    pub threads: usize,
    /// Echo the tools' output.
    pub verbose: bool,
}

/// What both sides gave; `watchexec` is `None` when it was skipped.
#[derive(Debug)]
pub struct CompareReport {
    /// devsup --watch.
    pub devsup: (Phase, LoadReport),
    /// watchexec --socket -r.
    pub watchexec: Option<(Phase, LoadReport)>,
    /// Why watchexec was skipped.
    pub skipped: Option<String>,
}

/// Runs devsup's side, then watchexec's.
pub fn run(plan: &Plan, target_dir: &Path) -> CompareReport {
    eprintln!("devsup-bench: compare: devsup --watch");
    let devsup = devsup_side(plan);
    let side = watchexec_binary(target_dir).and_then(|binary| {
        eprintln!("devsup-bench: compare: {} --socket -r", binary.display());
        watchexec_side(plan, &binary)
    });
    let (watchexec, skipped) = match side {
        Ok(side) => (Some(side), None),
        Err(why) => {
            eprintln!("!!! devsup-bench: compare: SKIPPING the watchexec side: {why}");
            (None, Some(why))
        }
    };
    CompareReport {
        devsup,
        watchexec,
        skipped,
    }
}

/// A request unanswered this long counts as failed (a timeout): long
/// enough for any restart to finish, short enough to end the run soon
/// after the load stops.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn config(plan: &Plan, addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        conns: plan.conns,
        mode: Mode::KeepAlive,
        duration: plan.duration,
        threads: plan.threads,
        window: Some(plan.window),
        request_timeout: REQUEST_TIMEOUT,
        ..LoadConfig::new(addr)
    }
}

/// A directory with the file the edits change.
fn project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = std::fs::canonicalize(dir.path()).expect("canonical temporary directory");
    let file = root.join("src/main.rs");
    std::fs::create_dir_all(file.parent().expect("src/")).expect("mkdir src");
    std::fs::write(&file, "fn main() {}\n").expect("write src/main.rs");
    (dir, file)
}

/// Edits `file` every `plan.interval` while the load runs (pacing, not
/// synchronisation), and returns when each edit was written.
fn edit_on_schedule(plan: &Plan, file: &Path, started: Instant) -> Vec<Instant> {
    let edits = (plan.duration.as_millis() / plan.interval.as_millis().max(1)).saturating_sub(1);
    let mut written = Vec::new();
    for k in 1..=edits as u32 {
        let due = started + plan.interval * k;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        std::fs::write(file, format!("fn main() {{}} // edit {k}\n")).expect("edit src/main.rs");
        written.push(Instant::now());
    }
    written
}

fn devsup_side(plan: &Plan) -> (Phase, LoadReport) {
    let (_dir, file) = project();
    let root = file
        .parent()
        .and_then(Path::parent)
        .expect("the project root");
    let devsup = Devsup::builder(root)
        .echo(plan.verbose)
        .arg("--watch")
        .arg(root)
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching ", TIMEOUT);
    let run = load::start(config(plan, addr));
    let started = Instant::now();
    edit_on_schedule(plan, &file, started);
    let report = run.join();
    // The last handoff's READY and drain, if it was still going.
    if !super::settle(&devsup) {
        eprintln!("devsup-bench: compare: devsup's handoffs had not settled after {TIMEOUT:?}");
    }
    let marks = marks_from_log(&devsup.timed_lines(), report.started);
    devsup.terminate(TIMEOUT);
    let phase = Phase::new("compare-devsup", "devsup --watch", &report, marks);
    (phase, report)
}

/// watchexec's side; `Err` if its server never answered.
fn watchexec_side(plan: &Plan, binary: &Path) -> Result<(Phase, LoadReport), String> {
    let (_dir, file) = project();
    let root = file
        .parent()
        .and_then(Path::parent)
        .expect("the project root");
    let addr = free_port();
    let mut command = Command::new(binary);
    command
        .arg("--socket")
        .arg(addr.to_string())
        .args(["-r", "-w"])
        .arg(root)
        .arg("--")
        .arg(&harness::binaries().server)
        .current_dir(root)
        .stdin(Stdio::null());
    if !plan.verbose {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let watchexec = KillOnDrop(command.spawn().expect("spawning watchexec"));
    let up = harness::wait_until(TIMEOUT, || http::get(addr, "/").is_ok());
    assert!(
        up,
        "watchexec's server did not answer on {addr} within {TIMEOUT:?}"
    );

    let run = load::start(config(plan, addr));
    let started = Instant::now();
    let written = edit_on_schedule(plan, &file, started);
    let report = run.join();
    let marks = written
        .iter()
        .filter_map(|at| at.checked_duration_since(report.started))
        .map(|at| Mark {
            at,
            kind: MarkKind::Trigger,
            generation: None,
        })
        .collect();

    // watchexec stops its command on SIGTERM; then any server it left is
    // ended by pid.
    let pid = watchexec.0.id() as i32;
    harness::kill(pid, Signal::SIGTERM);
    let mut watchexec = watchexec;
    if !harness::wait_until(TIMEOUT, || watchexec.0.try_wait().ok().flatten().is_some()) {
        eprintln!("devsup-bench: compare: watchexec did not exit on SIGTERM; SIGKILL");
    }
    drop(watchexec);
    for pid in report.pids.values().flatten() {
        if harness::pid_alive(*pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
    let phase = Phase::new("compare-watchexec", "watchexec --socket -r", &report, marks);
    Ok((phase, report))
}

/// A loopback address nothing listens on right now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// watchexec under `<target>/bench-tools`, installed there first if it is
/// missing; `Err` says why it cannot be had.
fn watchexec_binary(target_dir: &Path) -> Result<PathBuf, String> {
    let root = target_dir.join("bench-tools");
    let binary = root.join("bin/watchexec");
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!(
        "devsup-bench: compare: installing watchexec-cli into {} (cargo install, takes minutes)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", "watchexec-cli", "--locked", "--root"])
        .arg(&root)
        .status();
    match status {
        Ok(status) if status.success() && binary.exists() => Ok(binary),
        Ok(status) => Err(format!("cargo install watchexec-cli failed: {status}")),
        Err(e) => Err(format!("cannot run cargo install: {e}")),
    }
}

/// Prints the section.
pub fn print(r: &CompareReport) {
    println!();
    println!("the reference server, edited on the same schedule under load: devsup vs a restart");
    println!(
        "{:<24} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  failures",
        "tool", "requests", "errors", "req/s", "p50", "p99", "max", "servers"
    );
    let mut rows = vec![&r.devsup];
    rows.extend(&r.watchexec);
    for (phase, report) in rows {
        let servers: usize = report.pids.values().map(|p| p.len()).sum();
        println!(
            "{:<24} {:>9} {:>8} {:>9.0} {:>9} {:>9} {:>9} {:>9}  {}",
            phase.label,
            report.total(),
            report.failures(),
            report.rps(),
            fmt(report.p50()),
            fmt(report.p99()),
            fmt(report.max_latency()),
            servers,
            report.failure_summary(),
        );
    }
    println!(
        "(servers: distinct server processes that answered; a request unanswered after {} is a timeout)",
        fmt(REQUEST_TIMEOUT)
    );
    if let Some(why) = &r.skipped {
        println!(
            "!!! devsup-bench: compare: the watchexec side was SKIPPED: {why}; its chart has devsup alone"
        );
    }
}
