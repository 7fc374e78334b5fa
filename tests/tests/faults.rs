//! Faults and bad input, on the real binaries: a generation that crashes,
//! crashes at start-up, ignores the drain signal, forks, or writes garbage
//! on its ready channel; reload storms and a soak; devsup itself killed or
//! interrupted at every stage; command lines it must refuse; and what it
//! leaves in the temporary directory.
//!
//! Every test waits on events (a log line, a response, a pid, a file);
//! the only sleep paces the reload storm.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devsup_tests::devlog;
use devsup_tests::harness::{
    self, Devsup, Signal, TIMEOUT, event, open_fds, pid_alive, port_is_free, wait_until,
};
use devsup_tests::{http, load};
use nix::unistd::Pid;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn server() -> &'static Path {
    &harness::binaries().server
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/faults")
        .join(name)
}

/// Sends `signal` to process `pid` (not its group).
fn kill(pid: i32, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
        .unwrap_or_else(|e| panic!("kill({pid}, {signal}): {e}"));
}

/// `(state, ppid, pgrp)` of a process, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Every process on the machine, with its `stat`.
fn processes() -> Vec<(i32, (char, i32, i32))> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().to_str()?.parse().ok()?;
            Some((pid, stat(pid)?))
        })
        .collect()
}

/// The live (not zombie) processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, (state, _, pgrp))| *pgrp == pgid && !matches!(state, 'Z' | 'X'))
        .map(|(pid, _)| pid)
        .collect()
}

/// Whether process `pid` has a handler for `signal` (`SigCgt` in
/// `/proc/<pid>/status`).
fn catches(pid: i32, signal: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// The duration token right after `marker` in `line`.
fn duration_after(line: &str, marker: &str) -> Duration {
    let at = line
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"))
        + marker.len();
    let token = line[at..].split_whitespace().next().unwrap_or_default();
    devlog::parse_duration(token)
        .unwrap_or_else(|| panic!("no duration after {marker:?} in {line:?}"))
}

/// Stops devsup with SIGINT and checks that it drained everything and
/// exited 0, leaving no process of any generation behind.
fn stop_cleanly(devsup: &Devsup) {
    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", devsup.log_text());
    for (generation, pid) in devsup.generation_pids() {
        assert_eq!(
            group_members(pid),
            [] as [i32; 0],
            "gen {generation}'s process group {pid} is gone"
        );
    }
}

// ---------------------------------------------------------------------
// Faults the server makes
// ---------------------------------------------------------------------

/// Crashes the active generation `generation` with `crash`, given the pid
/// of the process that serves (from a response), and sends a request right
/// after: it waits in the backlog and the next generation answers it.
/// devsup logs how the generation ended and when it restarts.
fn crash_and_restart(
    devsup: &Devsup,
    generation: u64,
    crash: impl FnOnce(i32),
    how: &str,
    delay: &str,
) {
    let addr = devsup.addr();
    devsup.wait_event(generation, "ready", TIMEOUT);
    let before = http::get(addr, "/").unwrap();
    assert_eq!(before.generation(), Some(generation), "{}", before.body);
    crash(before.pid().unwrap());

    let after = http::get(addr, "/")
        .expect("a client that connects while no generation runs waits, and is served");
    assert_eq!(after.status, 200);
    assert_eq!(after.generation(), Some(generation + 1), "{}", after.body);
    let exited = devsup.wait_event(generation, "exited", TIMEOUT);
    assert!(
        exited.contains(&format!("exited {how} on its own")),
        "{exited}"
    );
    assert!(
        exited.contains(&format!("restarting in {delay}")),
        "{exited}"
    );
    devsup.wait_event(generation + 1, "spawned", TIMEOUT);
}

#[test]
fn an_active_generation_that_crashes_is_restarted_and_waiting_clients_are_served() {
    let dir = dir();

    // SIGSEGV, then SIGKILL from outside, on the server itself.
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let segv = |pid: i32| {
        // Rust's runtime catches SIGSEGV to report stack overflows; one
        // that is not a fault makes it restore the default action and
        // return. Once the handler is gone, the next one is fatal.
        kill(pid, Signal::SIGSEGV);
        assert!(wait_until(TIMEOUT, || !pid_alive(pid)
            || !catches(pid, Signal::SIGSEGV)));
        if pid_alive(pid) {
            kill(pid, Signal::SIGSEGV);
        }
        // Unlike SIGKILL, a core-dumping signal does not stop every thread
        // at once: until the process is gone, another of its threads may
        // still accept (and then lose) a connection.
        assert!(wait_until(TIMEOUT, || !pid_alive(pid)));
    };
    crash_and_restart(&devsup, 1, segv, "by SIGSEGV", "100ms");
    let sigkill = |pid: i32| kill(pid, Signal::SIGKILL);
    // Up for less than the reset time: the delay doubles.
    crash_and_restart(&devsup, 2, sigkill, "by SIGKILL", "200ms");
    stop_cleanly(&devsup);

    // exit(1): a wrapper whose server died exits with status 1.
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("sh")
        .server_args([
            OsString::from("-c"),
            "\"$0\"; exit 1".into(),
            server().into(),
        ])
        .spawn();
    let leader = devsup.generation_pid(1, TIMEOUT);
    let kill_server = |pid: i32| {
        assert_ne!(pid, leader, "the server is the shell's child");
        kill(pid, Signal::SIGKILL);
    };
    crash_and_restart(&devsup, 1, kill_server, "with status 1", "100ms");
    stop_cleanly(&devsup);
}

#[test]
fn a_generation_crashing_at_startup_backs_off_doubling_and_sighup_starts_one_at_once() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server_args(["--fail-before-ready", "all"])
        .spawn();
    let mut delays = Vec::new();
    let mut last_exit = String::new();
    for generation in 1..=5 {
        last_exit = devsup.wait_event(generation, "exited", TIMEOUT);
        assert!(
            last_exit.contains("exited with status 1 on its own"),
            "{last_exit}"
        );
        delays.push(duration_after(&last_exit, "restarting in "));
    }
    let ms = Duration::from_millis;
    assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1600)]);

    // A change (here SIGHUP) does not wait out the 1.6 s back-off.
    devsup.reload();
    let spawned = devsup.wait_event(6, "spawned", TIMEOUT);
    let lines = devsup.lines();
    let from = lines.iter().position(|l| *l == last_exit).unwrap();
    let to = lines.iter().position(|l| *l == spawned).unwrap();
    let between = &lines[from + 1..to];
    assert!(
        between
            .iter()
            .any(|l| l.contains("reload requested by SIGHUP")),
        "{between:#?}"
    );
    assert!(
        !between.iter().any(|l| l.ends_with("devsup restarting")),
        "gen 6 came from the SIGHUP, not from the back-off timer: {between:#?}"
    );
    assert!(
        duration_after(&spawned, " in ") < ms(1600),
        "spawned at once after the SIGHUP: {spawned}"
    );
    stop_cleanly(&devsup);
}

#[test]
fn a_generation_that_ignores_the_drain_signal_is_killed_after_the_drain_timeout() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--drain-timeout", "1s"])
        .server_args(["--ignore-drain", "1"])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let pid1 = devsup.generation_pid(1, TIMEOUT);

    devsup.reload();
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "draining", TIMEOUT);
    devsup.wait_for_line(
        format!("devsup-server gen=1 pid={pid1}: ignoring SIGTERM"),
        TIMEOUT,
    );
    let killing = devsup.wait_event(1, "still running", TIMEOUT);
    assert!(killing.contains("sending SIGKILL"), "{killing}");
    assert!(
        duration_after(&killing, "still running ") >= Duration::from_secs(1),
        "{killing}"
    );
    let exited = devsup.wait_event(1, "exited", TIMEOUT);
    assert!(exited.contains("exited by SIGKILL"), "{exited}");
    assert!(!pid_alive(pid1));
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(2));
    stop_cleanly(&devsup);
}

/// devsup running `sh -c '"$0" & wait' devsup-server`: the server is the
/// shell's child. Returns devsup, the address, the shell's pid (the
/// generation's leader) and the server's.
fn forking_generation(dir: &tempfile::TempDir) -> (Devsup, std::net::SocketAddr, i32, i32) {
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("sh")
        .server_args([
            OsString::from("-c"),
            "\"$0\" & wait".into(),
            server().into(),
        ])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let leader = devsup.generation_pid(1, TIMEOUT);
    let server_pid = http::get(addr, "/").unwrap().pid().unwrap();
    assert_ne!(server_pid, leader, "the server is the shell's child");
    (devsup, addr, leader, server_pid)
}

#[test]
fn a_forking_generation_gets_signals_as_a_group_and_is_gone_only_with_its_last_process() {
    let dir = dir();
    let (devsup, addr, leader, server_pid) = forking_generation(&dir);

    // Keep the server busy past its shell's death.
    let mut slow = http::Conn::connect(addr).unwrap();
    slow.send("/sleep?ms=2000", false).unwrap();
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));

    devsup.reload();
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "draining", TIMEOUT);
    // The drain signal went to the group: the real server drains...
    devsup.wait_for_line(
        format!("devsup-server gen=1 pid={server_pid}: draining after SIGTERM"),
        TIMEOUT,
    );
    // ...and the shell, the group leader, died of it.
    assert!(wait_until(TIMEOUT, || !pid_alive(leader)));
    // The server still runs, so generation 1 is not gone yet.
    assert!(pid_alive(server_pid), "the slow request keeps it busy");
    assert_eq!(devsup.count_matching(event(1, "exited")), 0);

    let response = slow.recv().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.pid(), Some(server_pid));
    let exited = devsup.wait_event(1, "exited", TIMEOUT);
    assert!(
        !pid_alive(server_pid),
        "gen 1 logged as exited while its server pid {server_pid} runs: {exited}"
    );
    assert!(exited.contains("exited by SIGTERM"), "{exited}");
    stop_cleanly(&devsup);
}

#[test]
fn garbage_on_the_ready_channel_is_warned_about_and_reloads_still_work() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--ready-after", "200ms"])
        .server("sh")
        .server_args([fixture("ready_channel.sh")])
        .spawn();
    let bad = "ignoring a bad message on the ready channel";

    // Gen 1: seven bad lines, at most five warnings, then a good line that
    // is still understood.
    devsup.wait_event(1, "status: garbage written", TIMEOUT);
    assert_eq!(
        devsup.count_matching(event(1, bad)),
        5,
        "{}",
        devsup.log_text()
    );
    assert_eq!(
        devsup.count_matching(event(1, "further bad messages")),
        1,
        "{}",
        devsup.log_text()
    );

    // Gen 2: a 1 MiB line; gen 3: nothing; gen 4: closes the channel at
    // once; gen 5: nothing. Each counts ready, and the previous drains.
    for generation in 2..=5 {
        devsup.reload();
        devsup.wait_event(generation, "counted ready", TIMEOUT);
        devsup.wait_event(generation - 1, "exited", TIMEOUT);
        assert!(devsup.try_exit_status().is_none(), "devsup is alive");
    }
    let long = devsup.wait_event(2, "status: after a long line", TIMEOUT);
    assert_eq!(
        devsup.count_matching(event(2, bad)),
        1,
        "{long}\n{}",
        devsup.log_text()
    );
    assert!(
        devsup
            .lines()
            .iter()
            .any(|l| devlog::is_event(l, 2, bad) && l.contains("longer than 4096 bytes")),
        "{}",
        devsup.log_text()
    );
    for generation in 3..=5 {
        assert_eq!(devsup.count_matching(event(generation, bad)), 0);
    }
    assert_eq!(devsup.count_lines("panicked"), 0);
    stop_cleanly(&devsup);
}

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
    let dir = dir();
    // The reference server says READY within a few milliseconds, before
    // the next SIGHUP of the storm: each would be a reload of its own. A
    // start-up of 50 ms makes triggers arrive while a generation starts.
    let startup = Duration::from_millis(50);
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
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

// ---------------------------------------------------------------------
// Faults around devsup
// ---------------------------------------------------------------------

#[test]
fn devsup_killed_with_sigkill_drains_every_generation_and_frees_the_port() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server_args(["--never-ready", "2"])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    // Gen 1 active, gen 2 starting (it never says READY): two generations,
    // neither told to drain yet.
    devsup.reload();
    let pid2 = devsup.generation_pid(2, TIMEOUT);
    devsup.wait_for_line(
        format!("devsup-server gen=2 pid={pid2}: serving, never sending READY"),
        TIMEOUT,
    );
    let pids = devsup.generation_pids();
    assert_eq!(pids.len(), 2);

    devsup.signal(Signal::SIGKILL);
    let killed = Instant::now();
    for (generation, pid) in &pids {
        // Generations write to the same stderr pipe, read on after devsup
        // is gone.
        let within = (killed + Duration::from_secs(1)).saturating_duration_since(Instant::now());
        devsup.wait_for_line(
            format!("devsup-server gen={generation} pid={pid}: draining after SIGTERM"),
            within,
        );
    }
    eprintln!(
        "every generation draining {:?} after SIGKILL",
        killed.elapsed()
    );
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(
        wait_until(TIMEOUT, || port_is_free(addr)),
        "the port is released"
    );
    for (generation, pid) in &pids {
        assert!(
            wait_until(TIMEOUT, || group_members(*pid).is_empty()),
            "gen {generation} (group {pid}) is gone: {:?}",
            group_members(*pid)
        );
    }
}

/// The same for a generation whose server is a child of its leader
/// (`sh -c`, `cargo run`-like wrappers): the parent-death signal reaches
/// only the leader, yet no orphan may keep the port.
#[test]
fn devsup_killed_with_sigkill_leaves_no_process_of_a_forking_generation() {
    let dir = dir();
    let (devsup, addr, leader, server_pid) = forking_generation(&dir);

    devsup.signal(Signal::SIGKILL);
    devsup.wait_exit(TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || !pid_alive(leader)),
        "the shell got the parent-death signal"
    );
    // The server's drain takes milliseconds once it is told; five seconds
    // is ample, and keeps the failure report quick.
    let gone = wait_until(Duration::from_secs(5), || group_members(leader).is_empty());
    let survivors = group_members(leader);
    let answer = http::get(addr, "/").map(|r| r.body);
    // The harness ends only generations whose leader outlived devsup:
    // end the survivors here, by pid, before reporting them.
    for pid in &survivors {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(
        gone,
        "gen 1's server pid {server_pid} outlived devsup (group {leader}: {survivors:?}) and \
         still served its port: {answer:?}"
    );
    assert!(
        wait_until(TIMEOUT, || port_is_free(addr)),
        "the port is released"
    );
}

#[test]
fn ctrl_c_during_a_build_stops_the_build_group_and_exits_0() {
    let dir = dir();
    // The first build is fast; the second records its process group and
    // hangs (a shell and its `sleep`).
    let build = "if [ -e marker ]; then echo $$ > pgid.tmp && mv pgid.tmp pgid; sleep 30; echo unreachable; else touch marker; fi";
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--build", build])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.reload();
    let pgid_file = dir.path().join("pgid");
    assert!(wait_until(TIMEOUT, || pgid_file.exists()));
    let pgid: i32 = std::fs::read_to_string(&pgid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(TIMEOUT, || group_members(pgid).len() == 2),
        "the build runs as a shell and its sleep: {:?}",
        group_members(pgid)
    );

    stop_cleanly(&devsup);
    assert_eq!(
        group_members(pgid),
        [] as [i32; 0],
        "the build's group is gone"
    );
    assert!(
        devsup.count_lines("build stopped") == 1,
        "{}",
        devsup.log_text()
    );
    assert_eq!(devsup.count_matching(event(2, "spawned")), 0);
}

#[test]
fn ctrl_c_during_a_start_up_drains_the_starting_generation_and_exits_0() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server_args(["--startup-delay", "3000"])
        .spawn();
    let pid1 = devsup.generation_pid(1, TIMEOUT);
    devsup.wait_for_line(format!("devsup-server gen=1 pid={pid1}: started"), TIMEOUT);
    devsup.reload();
    let pid2 = devsup.generation_pid(2, TIMEOUT);
    devsup.wait_for_line(format!("devsup-server gen=2 pid={pid2}: started"), TIMEOUT);

    let interrupted = Instant::now();
    stop_cleanly(&devsup);
    eprintln!("stopped {:?} after SIGINT", interrupted.elapsed());
    assert_eq!(
        devsup.count_matching(event(2, "ready")),
        0,
        "interrupted while starting"
    );
    devsup.wait_event(2, "draining", TIMEOUT);
    assert!(!pid_alive(pid1) && !pid_alive(pid2));
}

#[test]
fn ctrl_c_during_a_drain_lets_the_request_in_flight_finish_and_exits_0() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let mut slow = http::Conn::connect(addr).unwrap();
    slow.send("/sleep?ms=2000", false).unwrap();
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));
    devsup.reload();
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "draining", TIMEOUT);

    devsup.signal(Signal::SIGINT);
    devsup.wait_for_line("shutting down", TIMEOUT);
    let response = slow.recv().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.generation(), Some(1), "{}", response.body);
    assert!(response.body.contains("slept=2000"), "{}", response.body);
    // Already stopped: stop_cleanly's SIGINT would be a second one.
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", devsup.log_text());
    for (generation, pid) in devsup.generation_pids() {
        assert_eq!(
            group_members(pid),
            [] as [i32; 0],
            "gen {generation} is gone"
        );
    }
}

/// The children of `ppid` that are zombies: exited, not reaped.
fn zombie_children(ppid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, (state, parent, _))| *parent == ppid && *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// The names of the threads of process `pid`, sorted.
fn thread_names(pid: i32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect();
    names.sort();
    names
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
    let dir = dir();
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

// ---------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------

/// Runs devsup with exactly `args` and returns its error line, which must
/// be the first thing on stderr (so no generation was spawned, nothing
/// was logged as started), after a non-zero exit.
fn refused<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> String {
    let devsup = Devsup::spawn_raw(dir, args, &[]);
    let status = devsup.wait_exit(TIMEOUT);
    assert!(
        status.code().is_some_and(|c| c != 0),
        "exits non-zero, not by a signal: {status}"
    );
    let error = devsup.wait_for_line(|l: &str| l.contains("error"), TIMEOUT);
    let lines = devsup.lines();
    assert_eq!(
        lines[0], error,
        "the error comes first and alone: {lines:#?}"
    );
    assert_eq!(devsup.count_lines("spawned"), 0);
    error
}

fn assert_says(error: &str, words: &[&str]) {
    for word in words {
        assert!(error.contains(word), "{word:?} is not in: {error}");
    }
}

#[test]
fn bad_sockets_are_refused_with_the_problem_and_the_fix() {
    let dir = dir();
    let server = server().as_os_str().to_str().unwrap();

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let error = refused(dir.path(), &["--no-watch", "--port", &port, "--", server]);
    assert_says(
        &error,
        &[&format!("port {port} is in use"), "pick another --port"],
    );

    let error = refused(
        dir.path(),
        &[
            "--no-watch",
            "-s",
            "unix::/nonexistent/dir/s.sock",
            "--",
            server,
        ],
    );
    assert_says(
        &error,
        &[
            "cannot listen on unix:/nonexistent/dir/s.sock",
            "directory /nonexistent/dir does not exist",
            "create it or choose another path",
        ],
    );

    let error = refused(dir.path(), &["--no-watch", "-s", "foo", "--", server]);
    assert_says(
        &error,
        &[
            "unknown socket spec \"foo\"",
            "expected [NAME=]tcp::[HOST:]PORT",
        ],
    );

    let error = refused(dir.path(), &["--no-watch", "--port", "99999", "--", server]);
    assert_says(&error, &["'99999'", "--port", "0..=65535"]);

    let error = refused(dir.path(), &["--no-watch", "--", server]);
    assert_says(&error, &["nothing to listen on", "pass --port"]);
    // Nothing was left behind in the working directory either.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_command_that_cannot_run_is_refused_before_binding() {
    let dir = dir();
    let error = refused(
        dir.path(),
        &["--no-watch", "-p", "0", "--", "/nonexistent/server"],
    );
    assert_says(
        &error,
        &[
            "cannot run /nonexistent/server",
            "no such file",
            "build it first, or pass --build",
        ],
    );

    let plain = dir.path().join("server.sh");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plain = plain.to_str().unwrap();
    let error = refused(dir.path(), &["--no-watch", "-p", "0", "--", plain]);
    assert_says(
        &error,
        &[&format!("cannot run {plain}"), "not executable", "chmod +x"],
    );

    let error = refused(
        dir.path(),
        &["--no-watch", "-p", "0", "--", "no-such-server-xyz"],
    );
    assert_says(
        &error,
        &["command not found", "not in PATH", "give its path"],
    );

    // The command is checked first: with the port taken too, the command
    // is what devsup reports.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let error = refused(
        dir.path(),
        &["--no-watch", "--port", &port, "--", "/nonexistent/server"],
    );
    assert_says(&error, &["cannot run /nonexistent/server"]);
    assert!(!error.contains("in use"), "{error}");
}

#[test]
fn bad_options_are_refused_with_the_problem_and_the_fix() {
    let dir = dir();
    let server = server().as_os_str().to_str().unwrap();

    let error = refused(dir.path(), &["--no-watch", "-p", "0", "--"]);
    assert_says(
        &error,
        &["no command to run", "put the server command after `--`"],
    );

    let error = refused(
        dir.path(),
        &["--no-watch", "-p", "0", "-q", "-v", "--", server],
    );
    assert_says(&error, &["'--quiet' cannot be used with '--verbose'"]);

    let error = refused(
        dir.path(),
        &[
            "--no-watch",
            "-p",
            "0",
            "--drain-signal",
            "NOPE",
            "--",
            server,
        ],
    );
    assert_says(
        &error,
        &[
            "--drain-signal",
            "\"NOPE\" is not a signal",
            "use a name such as TERM",
        ],
    );

    let error = refused(
        dir.path(),
        &[
            "--no-watch",
            "-p",
            "0",
            "--drain-timeout",
            "10x",
            "--",
            server,
        ],
    );
    assert_says(
        &error,
        &[
            "--drain-timeout",
            "\"10x\" is not a duration",
            "write it like 500ms",
        ],
    );
}

// ---------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------

/// Every path under `root` (not `root` itself), with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            }
            out.push((entry.path(), meta.permissions().mode()));
        }
    }
    out
}

#[test]
fn nothing_devsup_creates_is_world_writable_or_left_in_the_temp_dir() {
    // XDG_RUNTIME_DIR empty (so the temporary directory is used), then a
    // fresh one.
    for use_runtime_dir in [false, true] {
        let dir = dir();
        let tmp = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let runtime_env = match use_runtime_dir {
            true => runtime.path().as_os_str().to_owned(),
            false => OsString::new(),
        };
        let devsup = Devsup::builder(dir.path())
            .arg("--no-watch")
            .env("TMPDIR", tmp.path())
            .env("XDG_RUNTIME_DIR", &runtime_env)
            .spawn();
        devsup.wait_event(1, "ready", TIMEOUT);
        devsup.reload();
        devsup.wait_event(2, "ready", TIMEOUT);

        let (used, unused) = match use_runtime_dir {
            true => (runtime.path(), tmp.path()),
            false => (tmp.path(), runtime.path()),
        };
        let created = walk(used);
        let shown: Vec<String> = (created.iter())
            .map(|(p, mode)| format!("{} {mode:o}", p.display()))
            .collect();
        eprintln!("devsup created in {}: {shown:#?}", used.display());
        assert!(
            created.iter().any(|(p, _)| p.ends_with("gen-2.sock")),
            "the notify sockets are there: {created:?}"
        );
        for (path, mode) in &created {
            assert_eq!(
                mode & 0o002,
                0,
                "{} is world-writable ({mode:o})",
                path.display()
            );
            if path.parent() == Some(used) {
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{} is private to the user ({mode:o})",
                    path.display()
                );
            }
        }
        assert!(walk(unused).is_empty(), "nothing in {}", unused.display());

        stop_cleanly(&devsup);
        let left: Vec<_> = walk(tmp.path())
            .into_iter()
            .chain(walk(runtime.path()))
            .collect();
        assert!(left.is_empty(), "left behind after exit: {left:?}");
    }
}

/// A build's own children outlive the parent-death signal (it reaches the
/// shell only); devsup's guard stops the whole build group when devsup is
/// SIGKILLed mid-build, so no `cargo` keeps running and holding its lock.
#[test]
fn devsup_killed_with_sigkill_mid_build_leaves_no_build_process() {
    let dir = dir();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let build =
        "sleep 60 & echo $! > state/sleep.pid.tmp; mv state/sleep.pid.tmp state/sleep.pid; wait";
    let devsup = Devsup::builder(dir.path())
        .args([
            "--ignore",
            "state/",
            "--drain-timeout",
            "2s",
            "--build",
            build,
        ])
        .spawn();
    let pid_file = dir.path().join("state/sleep.pid");
    assert!(
        wait_until(TIMEOUT, || pid_file.exists()),
        "the build started"
    );
    let sleep: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(sleep));

    devsup.signal(Signal::SIGKILL);
    assert!(
        wait_until(TIMEOUT, || !pid_alive(sleep)),
        "the build's child (pid {sleep}) is stopped"
    );
}

/// A program that stops being runnable between reloads (here: no longer an
/// executable format, as with a half-written build output) fails at exec;
/// the running generation keeps serving.
#[test]
fn a_program_that_cannot_be_exec_d_keeps_the_old_generation() {
    let dir = dir();
    let program = dir.path().join("srv");
    std::fs::copy(server(), &program).unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(&program)
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    std::fs::remove_file(&program).unwrap();
    std::fs::write(&program, "not a program").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();

    devsup.reload();
    let error = devsup.wait_event(2, "cannot start", TIMEOUT);
    assert!(
        error.contains("Exec format error") && error.contains("keeping gen=1 serving"),
        "{error}"
    );
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(1));
}
