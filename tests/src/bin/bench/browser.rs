//! Edit→browser latency: from writing a watched file to headless Chromium
//! showing the new content, through `devsup --livereload`, with no build
//! step and the default debounce.
//!
//! The page (served by `devsup-page`, which reads its content at start)
//! carries the live-reload script tag. The clock starts just before the
//! write and stops when the browser driver reports the load of the page
//! that shows the new content: debounce, spawn, READY, the `ready` event,
//! the reload and the page load, all included.

use std::time::{Duration, Instant};

use devsup_tests::browser::{Browser, PageSite};
use devsup_tests::devlog::HandoffTimings;
use devsup_tests::harness::TIMEOUT;
use serde_json::json;

use super::{durations, loadavg, print_load};
use crate::fmt;

/// The results of one run.
#[derive(Debug)]
pub struct BrowserReport {
    /// Write to the browser showing the new content, one per edit.
    pub latencies: Vec<Duration>,
    /// Page loads seen (one per edit expected, plus the first).
    pub loads: usize,
    /// Failed requests the browser saw.
    pub failed: u64,
    /// The handoff steps devsup logged for these reloads.
    pub timings: HandoffTimings,
    /// Load average before the part.
    pub load_before: String,
}

/// Runs `edits` edits; `None` if Chromium or playwright-core could not be
/// installed (one loud line says so).
pub fn run(edits: usize, verbose: bool) -> Option<BrowserReport> {
    let load_before = loadavg();
    let site = PageSite::new("edit 0", verbose, &[]);
    let mut browser = Browser::launch("devsup-bench browser")?;
    site.devsup.wait_event(1, "ready", TIMEOUT);
    browser.call(json!({"cmd": "open", "url": site.url}));
    browser.wait_load("edit 0", TIMEOUT);
    browser.call(json!({"cmd": "connected"}));
    // Let gen 1 and the browser settle before the first edit.
    std::thread::sleep(Duration::from_millis(200));

    let mark = site.devsup.mark();
    let mut latencies = Vec::new();
    for edit in 1..=edits {
        let content = format!("edit {edit}");
        let started = Instant::now();
        site.edit(&content);
        browser.wait_load(&content, TIMEOUT);
        latencies.push(started.elapsed());
        // The handoff finished, then a quiet pause before the next edit.
        site.devsup.wait_event(edit as u64, "exited", TIMEOUT);
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = browser.call(json!({"cmd": "stats"}));
    let lines = site.devsup.lines();
    Some(BrowserReport {
        latencies,
        loads: browser.loads().len(),
        failed: stats["fail"].as_u64().unwrap_or(0),
        timings: HandoffTimings::from_lines(&lines[mark..]),
        load_before,
    })
}

/// Prints the section.
pub fn print(report: Option<&BrowserReport>) {
    println!();
    println!(
        "edit->browser latency: write a watched file, until headless Chromium shows the new content"
    );
    println!(
        "(devsup --livereload, devsup-page, no build step, default debounce 50ms; target: median under 150ms)"
    );
    let Some(r) = report else {
        println!("not run: Chromium or playwright-core is unavailable (see above)");
        return;
    };
    let (median, max) = super::median_max(&r.latencies).unwrap_or_default();
    let min = r.latencies.iter().min().copied().unwrap_or_default();
    println!(
        "{:<11} {:>5} {:>9} {:>9} {:>9} {:>6} {:>15}",
        "browser", "edits", "median", "max", "min", "loads", "failed requests"
    );
    println!(
        "{:<11} {:>5} {:>9} {:>9} {:>9} {:>6} {:>15}",
        "chromium",
        r.latencies.len(),
        fmt(median),
        fmt(max),
        fmt(min),
        r.loads,
        r.failed,
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
        "devsup log, same reloads (median / max): trigger->spawn {}, spawn->READY {}, READY->drain {}, drain->old exited {}",
        durations(&r.timings.trigger_to_spawn),
        durations(&r.timings.spawn_to_ready),
        durations(&r.timings.ready_to_drain),
        durations(&r.timings.drain_to_exit),
    );
    println!(
        "(the browser is told when the old generation has exited, at most 250ms after READY; the trigger is the end of the 50ms debounce)"
    );
    print_load(&r.load_before);
}
