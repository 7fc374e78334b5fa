//! Edit→serve latency: from writing a watched file to the first response
//! of the generation that change started, with no build step, the
//! reference server and the default debounce.
//!
//! The clock starts just before the write; then `GET /` on a new
//! connection each time, in a tight loop, until the body says
//! `gen=N+1`. Polling is the measurement: the first response from the new
//! generation is what a developer reloading a browser would see.

use std::path::Path;
use std::time::{Duration, Instant};

use devsup_tests::devlog::HandoffTimings;
use devsup_tests::harness::{Devsup, TIMEOUT};
use devsup_tests::http;

use super::{durations, loadavg, print_load};
use crate::fmt;

/// The results of one run.
#[derive(Debug)]
pub struct EditReport {
    /// Write to first response from the new generation, one per edit.
    pub latencies: Vec<Duration>,
    /// `GET /` polls answered, all edits together.
    pub polls: u64,
    /// Polls that failed (connect refused, reset, ...): a dropped request.
    pub poll_errors: u64,
    /// The first few poll errors.
    pub error_samples: Vec<String>,
    /// `reload requested by change to ...` lines (one per edit expected).
    pub reloads_logged: usize,
    /// The handoff steps devsup logged for these reloads.
    pub timings: HandoffTimings,
    /// Load average before the part.
    pub load_before: String,
}

/// Runs `edits` edits under a fresh devsup watching a new directory.
pub fn run(edits: usize, verbose: bool) -> EditReport {
    let load_before = loadavg();
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = std::fs::canonicalize(dir.path()).expect("canonical temporary directory");
    let file = root.join("src/main.rs");
    std::fs::create_dir_all(file.parent().unwrap()).expect("mkdir src");
    std::fs::write(&file, "fn main() {}\n").expect("write src/main.rs");

    let devsup = Devsup::builder(&root)
        .echo(verbose)
        .arg("--watch")
        .arg(&root)
        .spawn();
    devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching ", TIMEOUT);
    // Let gen 1 settle before the first edit.
    std::thread::sleep(Duration::from_millis(200));

    let mark = devsup.mark();
    let mut report = EditReport {
        latencies: Vec::new(),
        polls: 0,
        poll_errors: 0,
        error_samples: Vec::new(),
        reloads_logged: 0,
        timings: HandoffTimings::default(),
        load_before,
    };
    for edit in 1..=edits {
        let next = edit as u64 + 1;
        let latency = edit_once(&devsup, &file, edit, next, &mut report);
        report.latencies.push(latency);
        // The handoff finished (so the next edit is a reload of its own,
        // not one coalesced into this start-up), then a quiet pause.
        devsup.wait_event(next, "ready", TIMEOUT);
        devsup.wait_event(next - 1, "exited", TIMEOUT);
        std::thread::sleep(Duration::from_millis(100));
    }

    let lines = devsup.lines();
    report.timings = HandoffTimings::from_lines(&lines[mark..]);
    report.reloads_logged = lines[mark..]
        .iter()
        .filter(|l| l.contains("reload requested by change"))
        .count();
    devsup.terminate(TIMEOUT);
    report
}

/// One edit: write, then poll until generation `next` answers.
fn edit_once(
    devsup: &Devsup,
    file: &Path,
    edit: usize,
    next: u64,
    report: &mut EditReport,
) -> Duration {
    let addr = devsup.addr();
    let started = Instant::now();
    std::fs::write(file, format!("fn main() {{}} // edit {edit}\n")).expect("edit src/main.rs");
    loop {
        match http::get(addr, "/") {
            Ok(response) => {
                report.polls += 1;
                if response.generation() == Some(next) {
                    return started.elapsed();
                }
            }
            Err(e) => {
                report.poll_errors += 1;
                if report.error_samples.len() < 5 {
                    report
                        .error_samples
                        .push(format!("edit {edit} at {}: {e}", fmt(started.elapsed())));
                }
            }
        }
        if started.elapsed() > TIMEOUT {
            panic!(
                "edit {edit}: gen={next} did not answer within {TIMEOUT:?}; devsup log:\n    {}",
                devsup.lines().join("\n    ")
            );
        }
    }
}

/// Prints the section.
pub fn print(r: &EditReport) {
    let min = r.latencies.iter().min().copied().unwrap_or_default();
    println!();
    println!(
        "edit->serve latency: write a watched file, poll GET / until the new generation answers"
    );
    println!("(reference server, no build step, default debounce 50ms; target: under 100ms)");
    println!(
        "{:<11} {:>5} {:>9} {:>9} {:>9} {:>8} {:>12} {:>8}",
        "edit", "edits", "median", "max", "min", "polls", "poll errors", "reloads"
    );
    let (median, max) = super::median_max(&r.latencies).unwrap_or_default();
    println!(
        "{:<11} {:>5} {:>9} {:>9} {:>9} {:>8} {:>12} {:>8}",
        "reference",
        r.latencies.len(),
        fmt(median),
        fmt(max),
        fmt(min),
        r.polls,
        r.poll_errors,
        r.reloads_logged,
    );
    println!(
        "each edit, in order: {}",
        r.latencies
            .iter()
            .map(|d| fmt(*d))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "devsup log, same reloads (median / max): trigger->spawn {}, spawn->READY {}, READY->drain {}",
        durations(&r.timings.trigger_to_spawn),
        durations(&r.timings.spawn_to_ready),
        durations(&r.timings.ready_to_drain),
    );
    println!("(the trigger is the end of the debounce: the write plus 50ms of quiet)");
    for e in &r.error_samples {
        println!("  poll error: {e}");
    }
    print_load(&r.load_before);
}
