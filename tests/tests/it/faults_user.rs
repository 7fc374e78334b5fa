//! Faults the user makes: triggers faster than generations can start (200
//! SIGHUPs in two seconds must coalesce and lose no request) and reloads
//! without end (300 in a row must leave devsup's fds and threads flat and
//! no zombie).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use devsup_tests::devlog;
use devsup_tests::harness::{
    Devsup, TIMEOUT, open_fds, pid_alive, stop_cleanly, temp_dir, wait_until,
};
use devsup_tests::load;
use devsup_tests::procfs::{thread_names, zombie_children};

/// Whether the storm has settled: the last generation spawned is ready, no
/// reload is queued, and every other generation has exited. Returns the
/// last generation.
fn settled(devsup: &Devsup) -> Option<u64> {
    let lines = devsup.lines();
    let last = *devsup.generation_pids().keys().max()?;
    let queued = lines.iter().filter(|l| l.contains("queued until")).count();
    let started = lines
        .iter()
        .filter(|l| l.contains("starting the reload queued"))
        .count();
    let ready = lines.iter().any(|l| devlog::is_event(l, last, "ready"));
    let exited: BTreeSet<u64> = lines
        .iter()
        .filter_map(|l| devlog::subject(l))
        .filter(|(_, rest)| rest.starts_with("exited"))
        .map(|(g, _)| g)
        .collect();
    let all_exited = (1..last).all(|g| exited.contains(&g));
    (ready && queued == started && all_exited).then_some(last)
}

#[test]
fn a_storm_of_200_sighups_coalesces_and_loses_no_request() {
    let dir = temp_dir();
    // The reference server says READY within a few milliseconds, before
    // the next SIGHUP of the storm: each would be a reload of its own. A
    // start-up of 50 ms makes triggers arrive while a generation starts.
    let startup = Duration::from_millis(50);
    // The start-up is the time to READY=1: the server polls the socket at
    // once, and with --ready auto a reload made before its first READY=1
    // would count that instead.
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--ready", "notify"])
        .server_args(["--startup-delay", "50"])
        .echo(false)
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let run = load::start(load::LoadConfig {
        conns: 4,
        ..load::LoadConfig::new(devsup.addr())
    });
    assert!(run.wait_ok(20, TIMEOUT), "load is flowing");

    let started = Instant::now();
    for _ in 0..200 {
        devsup.reload();
        // Pacing of the storm, not synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    }
    let storm = started.elapsed();
    let mut last = None;
    assert!(
        wait_until(TIMEOUT, || {
            last = settled(&devsup);
            last.is_some()
        }),
        "the storm settles: {}",
        devsup.log_text()
    );
    let last = last.unwrap();
    let report = run.finish();
    assert_eq!(
        settled(&devsup),
        Some(last),
        "nothing started after settling"
    );
    let lines = devsup.lines();
    let pids = devsup.generation_pids();
    eprintln!(
        "200 SIGHUPs in {:.1}s: {} generations spawned\n{report}",
        storm.as_secs_f64(),
        pids.len()
    );

    assert_eq!(report.failures(), 0, "{report}");
    // One start-up at a time, each at least 50 ms long: the triggers that
    // came meanwhile were coalesced (plus gen 1, and one queued at the end).
    let most = (storm.as_millis() / startup.as_millis()) as usize + 2;
    assert!(
        pids.len() <= most,
        "coalesced: {} generations for 200 SIGHUPs in {storm:?}, expected at most {most}",
        pids.len()
    );
    assert!(
        !lines.iter().any(|l| l.contains("SIGKILL")),
        "no generation was killed: {}",
        devsup.log_text()
    );
    for (generation, answered) in &report.pids {
        assert_eq!(
            answered.iter().copied().collect::<Vec<_>>(),
            [pids[generation]],
            "gen {generation} answered with its own pid"
        );
    }

    // At most one generation starting at a time, and the peak of live
    // generations, from the order of the log lines.
    let mut starting: Option<u64> = None;
    let mut alive = BTreeSet::new();
    let mut peak = 0;
    for line in &lines {
        let Some((generation, rest)) = devlog::subject(line) else {
            continue;
        };
        if rest.starts_with("spawned") {
            if generation > 1 {
                assert_eq!(
                    starting, None,
                    "gen={generation} spawned while another was starting"
                );
                starting = Some(generation);
            }
            alive.insert(generation);
            peak = peak.max(alive.len());
        } else if rest.starts_with("exited") {
            alive.remove(&generation);
        }
        let settled = ["ready", "counted ready", "failed", "not ready"];
        if starting == Some(generation) && settled.iter().any(|w| rest.starts_with(w)) {
            starting = None;
        }
    }
    eprintln!("at most {peak} generations alive at once");
    if peak > 2 {
        let said = format!("{peak} generations alive at once");
        assert!(
            lines.iter().any(|l| l.contains(&said)),
            "devsup logs its peak ({said}): {}",
            devsup.log_text()
        );
    }

    for generation in 1..last {
        assert!(!pid_alive(pids[&generation]), "gen {generation} is gone");
    }
    assert!(pid_alive(pids[&last]), "the last generation serves on");
    stop_cleanly(&devsup);
}

/// The fds and thread names of devsup once generation `next` alone is
/// alive and every reader thread of the earlier ones has finished.
fn quiet_snapshot(devsup: &Devsup, next: u64) -> (Vec<(i32, String)>, Vec<String>) {
    let pid = devsup.pid();
    for generation in 1..next {
        devsup.wait_event(generation, "exited", TIMEOUT);
    }
    let own = [format!("gen-{next}-channel"), format!("gen-{next}-notify")];
    assert!(
        wait_until(TIMEOUT, || {
            let gens: Vec<String> = thread_names(pid)
                .into_iter()
                .filter(|t| t.starts_with("gen-"))
                .collect();
            gens == own
        }),
        "only gen {next}'s reader threads are left: {:?}",
        thread_names(pid)
    );
    let zombies = zombie_children(pid);
    assert!(
        zombies.is_empty(),
        "unreaped children of devsup: {zombies:?}"
    );
    (open_fds(pid), thread_names(pid))
}

#[test]
fn soak_300_reloads_keep_devsup_fds_flat_and_leave_no_zombies() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .echo(false)
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let run = load::start(load::LoadConfig {
        conns: 2,
        ..load::LoadConfig::new(devsup.addr())
    });
    assert!(run.wait_ok(20, TIMEOUT), "load is flowing");

    let started = Instant::now();
    let mut snapshots = BTreeMap::new();
    for reload in 1..=300u64 {
        devsup.reload();
        devsup.wait_event(reload + 1, "ready", TIMEOUT);
        if reload == 10 || reload == 300 {
            snapshots.insert(reload, quiet_snapshot(&devsup, reload + 1));
        }
    }
    let took = started.elapsed();
    let report = run.finish();
    let (fds10, threads10) = &snapshots[&10];
    let (fds300, threads300) = &snapshots[&300];
    eprintln!(
        "300 reloads in {:.1}s; devsup fds after reload 10: {}, after 300: {} {fds300:?}\n{report}",
        took.as_secs_f64(),
        fds10.len(),
        fds300.len()
    );

    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(
        fds10.len(),
        fds300.len(),
        "devsup's fds grew:\nafter reload 10: {fds10:#?}\nafter reload 300: {fds300:#?}"
    );
    assert_eq!(
        threads10.len(),
        threads300.len(),
        "devsup's threads grew:\nafter reload 10: {threads10:?}\nafter reload 300: {threads300:?}"
    );
    stop_cleanly(&devsup);
    assert!(took < Duration::from_secs(120), "300 reloads took {took:?}");
}
