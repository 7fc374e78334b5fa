//! `--only clients`: long-lived connections through reloads. 200 WebSocket
//! clients on `/ws` and 50 server-sent-event clients on `/events` of the
//! reference server stay connected (each reconnects as soon as its
//! connection ends, see `devsup_tests::clients`) while 32 keep-alive HTTP
//! clients load it and devsup reloads 20 times, a second apart.
//!
//! The reference server has no drain code of its own: its serving library
//! closes each WebSocket with 1012 and ends each event stream a short grace
//! after the drain signal. Reported: how every connection ended, whether
//! every client was back on the newest generation before the next reload
//! (and how long after the SIGHUP), the HTTP load, and devsup's drain
//! signal -> old generation exit (the old generation no longer waits for
//! its long-lived connections until the drain deadline).

use std::time::{Duration, Instant};

use devsup_tests::clients::{Clients, Counts};
use devsup_tests::devlog::HandoffTimings;
use devsup_tests::harness::{Devsup, TIMEOUT};
use devsup_tests::load::{self, LoadConfig, LoadReport, Mode};

use super::record::{Phase, marks_from_log};
use super::{durations, loadavg, print_load};
use crate::fmt;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// WebSocket clients.
    pub ws: usize,
    /// Event-stream clients.
    pub sse: usize,
    /// Keep-alive HTTP clients.
    pub http: usize,
    /// Reloads.
    pub reloads: u32,
    /// Between reloads.
    pub interval: Duration,
    /// Timeline window of the HTTP load.
    pub window: Duration,
    /// Load generator threads.
    pub threads: usize,
    /// Echo devsup's log.
    pub verbose: bool,
}

/// The results of the part.
#[derive(Debug)]
pub struct ClientsReport {
    /// What ran.
    pub plan: Plan,
    /// How the long-lived connections ended.
    pub counts: Counts,
    /// Per reload, SIGHUP -> every client connected to the new generation;
    /// `None` if they were not all there before the next reload was due
    /// (or, for the last reload, after 5 s).
    pub all_on_newest: Vec<Option<Duration>>,
    /// The HTTP load.
    pub load: LoadReport,
    /// The handoff steps devsup logged during the reloads.
    pub timings: HandoffTimings,
    /// The HTTP load window by window with devsup's marks, for the chart.
    pub phase: Phase,
    /// Wall time of the reloads.
    pub elapsed: Duration,
    /// Load average before the part.
    pub load_before: String,
}

/// Runs the part.
pub fn run(plan: &Plan) -> ClientsReport {
    let load_before = loadavg();
    let dir = tempfile::tempdir().expect("temporary directory");
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .echo(plan.verbose)
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);

    let clients = Clients::start(addr, plan.ws, plan.sse);
    if !clients.wait_all_on(1, TIMEOUT) {
        eprintln!(
            "devsup-bench: clients: {} clients not connected to gen=1 after {TIMEOUT:?}",
            clients.seen().behind(1)
        );
    }
    let run = load::start(LoadConfig {
        conns: plan.http,
        mode: Mode::KeepAlive,
        duration: Duration::from_secs(24 * 3600),
        threads: plan.threads,
        window: Some(plan.window),
        ..LoadConfig::new(addr)
    });
    run.wait_ok(20, TIMEOUT);
    let mark = devsup.mark();

    let mut all_on_newest = Vec::with_capacity(plan.reloads as usize);
    let started = Instant::now();
    for k in 1..=plan.reloads {
        // Pacing the reloads, not waiting for anything to happen.
        let due = started + plan.interval * (k - 1);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let generation = u64::from(k) + 1;
        let sent = Instant::now();
        devsup.reload();
        // Until the next reload is due: a client not back by then missed
        // this generation.
        let until = if k < plan.reloads {
            (started + plan.interval * k).max(sent + Duration::from_millis(100))
        } else {
            sent + Duration::from_secs(5)
        };
        all_on_newest.push(poll_all_on(&clients, generation, sent, until));
    }
    let elapsed = started.elapsed();
    let load = run.finish();
    if !super::settle(&devsup) {
        eprintln!("devsup-bench: clients: handoffs had not settled after {TIMEOUT:?}");
    }
    let counts = clients.finish();

    let lines = devsup.lines();
    let timings = HandoffTimings::from_lines(&lines[mark..]);
    let marks = marks_from_log(&devsup.timed_lines(), load.started);
    let label = format!(
        "{} keep-alive clients beside {} WebSocket and {} SSE clients, a reload every {}",
        plan.http,
        plan.ws,
        plan.sse,
        fmt(plan.interval)
    );
    let phase = Phase::new("clients", &label, &load, marks);
    devsup.terminate(TIMEOUT);
    ClientsReport {
        plan: plan.clone(),
        counts,
        all_on_newest,
        load,
        timings,
        phase,
        elapsed,
        load_before,
    }
}

/// Polls every 2 ms until every client is on `generation` (the time since
/// `sent`) or `until` passes (`None`).
fn poll_all_on(
    clients: &Clients,
    generation: u64,
    sent: Instant,
    until: Instant,
) -> Option<Duration> {
    loop {
        if clients.seen().all_on(generation) {
            return Some(sent.elapsed());
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Prints the section.
pub fn print(r: &ClientsReport) {
    let p = &r.plan;
    let c = &r.counts;
    let reloads = r.all_on_newest.len() as u64;
    println!();
    println!(
        "long-lived clients: {} WebSocket + {} SSE + {} keep-alive HTTP clients, {} reloads every {} (took {})",
        p.ws,
        p.sse,
        p.http,
        reloads,
        fmt(p.interval),
        fmt(r.elapsed)
    );
    let row = |what: &str, value: String, expect: String| {
        println!("  {what:<34} {value:>22}  {expect}");
    };
    row("", "measured".into(), "(a perfect run)".into());
    row(
        "WebSocket connects",
        c.ws_connects.to_string(),
        format!("({})", p.ws as u64 * (reloads + 1)),
    );
    row(
        "WebSocket closes with 1012",
        c.ws_closed_1012.to_string(),
        format!("({})", p.ws as u64 * reloads),
    );
    row(
        "WebSocket other closes",
        c.ws_closed_other.to_string(),
        "(0)".into(),
    );
    row(
        "WebSocket resets / no close frame",
        c.ws_unclean.to_string(),
        "(0)".into(),
    );
    row(
        "SSE connects",
        c.sse_connects.to_string(),
        format!("({})", p.sse as u64 * (reloads + 1)),
    );
    row(
        "SSE clean ends",
        c.sse_clean_ends.to_string(),
        format!("({})", p.sse as u64 * reloads),
    );
    row("SSE unclean ends", c.sse_unclean.to_string(), "(0)".into());
    row("connect errors", c.connect_errors.to_string(), "(0)".into());
    row(
        "reconnects to an old generation",
        c.stale_reconnects.to_string(),
        "(0)".into(),
    );
    let on_newest: Vec<Duration> = r.all_on_newest.iter().flatten().copied().collect();
    row(
        "all clients on newest gen (y/n)",
        format!(
            "{} ({}/{})",
            if on_newest.len() as u64 == reloads {
                "y"
            } else {
                "n"
            },
            on_newest.len(),
            reloads
        ),
        "(y)".into(),
    );
    row(
        "  SIGHUP -> all reconnected",
        durations(&on_newest),
        "(median / max)".into(),
    );
    row(
        "HTTP requests",
        r.load.total().to_string(),
        format!("({:.0} req/s)", r.load.rps()),
    );
    row(
        "HTTP failed",
        r.load.failures().to_string(),
        format!("(0) {}", r.load.failure_summary()),
    );
    row(
        "HTTP p50 / p99 / max",
        format!(
            "{} / {} / {}",
            fmt(r.load.p50()),
            fmt(r.load.p99()),
            fmt(r.load.max_latency())
        ),
        String::new(),
    );
    row(
        "drain signal -> old gen exit",
        durations(&r.timings.drain_to_exit),
        format!(
            "(median / max over {} exits; the server's drain deadline is 8s)",
            r.timings.drain_to_exit.len()
        ),
    );
    row(
        "spawn -> READY",
        durations(&r.timings.spawn_to_ready),
        "(median / max)".into(),
    );
    for detail in c.details.iter().take(5) {
        println!("  unclean: {detail}");
    }
    for failure in r.load.samples.iter().take(5) {
        println!(
            "  HTTP failure at {:>9.3?} client {:>3} {}: {}",
            failure.at, failure.client, failure.outcome, failure.detail
        );
    }
    print_load(&r.load_before);
}
