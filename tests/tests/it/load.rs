//! Zero-drop under reload storms, CI-sized: every request of every client
//! is classified, and any outcome but Ok fails the test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use devsup_tests::harness::{Devsup, Signal, TIMEOUT, pid_alive, wait_until};
use devsup_tests::load::{self, LoadConfig, LoadReport, Mode};

/// A small xorshift generator: the storm's intervals are random but
/// reproducible from the seed printed at the start.
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("storm seed: {seed}");
        Rng(seed)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

/// Runs `reloads` SIGHUP reloads at random 50-400 ms intervals under
/// `config`'s load, and checks what every storm must give: no failed
/// request, every generation answered with its own pid, and only the last
/// generation alive afterwards.
fn storm(config: impl FnOnce(LoadConfig) -> LoadConfig, reloads: u64) -> (Devsup, LoadReport) {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let run = load::start(config(LoadConfig::new(devsup.addr())));
    assert!(run.wait_ok(20, TIMEOUT), "load is flowing");
    let mut rng = Rng::from_time();
    let started = Instant::now();
    for generation in 2..=reloads + 1 {
        devsup.signal(Signal::SIGHUP);
        devsup.wait_event(generation, "ready", TIMEOUT);
        // Pacing of the storm, not synchronisation: the next trigger comes
        // a random while after this generation took over.
        std::thread::sleep(Duration::from_millis(rng.between(50, 400)));
    }
    let last = reloads + 1;
    devsup.wait_event(last - 1, "exited", TIMEOUT);
    let report = run.finish();
    eprintln!(
        "{reloads} reloads in {:.1}s\n{report}",
        started.elapsed().as_secs_f64()
    );

    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.ok() > 0);
    // Each generation's answers carry the pid devsup spawned for it: no
    // answer came from anywhere else.
    let spawned = devsup.generation_pids();
    for (generation, pids) in &report.pids {
        let expected = spawned[generation];
        assert_eq!(
            pids.iter().copied().collect::<Vec<_>>(),
            [expected],
            "gen {generation}"
        );
    }
    for generation in 1..last {
        let pid = spawned[&generation];
        assert!(
            wait_until(TIMEOUT, || !pid_alive(pid)),
            "gen {generation} (pid {pid}) is gone"
        );
    }
    assert!(pid_alive(spawned[&last]), "the last generation serves on");
    (devsup, report)
}

fn distinct_generations(report: &LoadReport) -> usize {
    report.generations.len()
}

#[test]
fn keep_alive_clients_lose_nothing_in_a_reload_storm() {
    let (_devsup, report) = storm(
        |c| LoadConfig {
            conns: 16,
            mode: Mode::KeepAlive,
            ..c
        },
        25,
    );
    assert!(distinct_generations(&report) >= 25, "{report}");
}

#[test]
fn connection_close_clients_lose_nothing_in_a_reload_storm() {
    let (_devsup, report) = storm(
        |c| LoadConfig {
            conns: 16,
            mode: Mode::Close,
            ..c
        },
        25,
    );
    assert!(distinct_generations(&report) >= 25, "{report}");
}

/// Requests of 300 ms are in flight at every handoff: each completes, with
/// the answer of the generation that accepted it.
#[test]
fn slow_requests_in_flight_complete_across_reloads() {
    let (devsup, report) = storm(
        |c| LoadConfig {
            conns: 16,
            mode: Mode::KeepAlive,
            path: "/sleep?ms=300".into(),
            ..c
        },
        10,
    );
    // The slow requests spanned the handoffs: old generations were still
    // answering after their successor had taken over.
    let drained_with_work: BTreeMap<u64, u64> = report
        .generations
        .iter()
        .filter(|(g, _)| **g <= 10)
        .map(|(g, n)| (*g, *n))
        .collect();
    assert!(drained_with_work.len() >= 5, "{report}");
    assert!(
        devsup.lines().iter().all(|l| !l.contains("SIGKILL")),
        "every generation drained by itself, none was killed"
    );
}
