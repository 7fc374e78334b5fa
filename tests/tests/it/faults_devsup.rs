//! Faults around devsup, on the real binaries: devsup itself SIGKILLed or
//! interrupted at every stage (mid-build, mid-start-up, mid-drain); no
//! process of any generation or build may outlive it, and the port is
//! released.

use std::time::{Duration, Instant};

use devsup_tests::harness::{
    Devsup, KillOnDrop, Signal, TIMEOUT, binaries, event, forking_generation, pid_alive,
    port_is_free, stop_cleanly, temp_dir, wait_until,
};
use devsup_tests::procfs::group_members;
use devsup_tests::{devlog, http};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;

#[test]
fn devsup_killed_with_sigkill_drains_every_generation_and_frees_the_port() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        // Gen 2 polls the socket but never says READY=1: not ready.
        .args(["--no-watch", "--ready", "notify"])
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
    let dir = temp_dir();
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
    let dir = temp_dir();
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
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        // Gen 2 polls the socket at once, and says READY=1 after 3 s:
        // only READY=1 counts here.
        .args(["--no-watch", "--ready", "notify"])
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
    let dir = temp_dir();
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

/// A build's own children outlive the parent-death signal (it reaches the
/// shell only); devsup's guard stops the whole build group when devsup is
/// SIGKILLed mid-build, so no `cargo` keeps running and holding its lock.
#[test]
fn devsup_killed_with_sigkill_mid_build_leaves_no_build_process() {
    let dir = temp_dir();
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

/// Ends, by pid, the processes a test found serving, if a failure left
/// them running (the harness knows only generation leaders).
struct EndOnDrop(Vec<i32>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if pid_alive(pid) {
                eprintln!("[test] pid {pid} outlived devsup: SIGKILL");
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// `devsup … 2>&1 | head -4`, then a reload: the log stream is dead, and
/// devsup must keep running (and reloading) all the same, and leave nothing
/// on the port when it is stopped.
#[test]
fn devsup_keeps_serving_after_its_stderr_is_closed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = temp_dir();
    let mut command = Command::new(&binaries().devsup);
    command
        .args(["--port", "0", "--no-watch", "--", "sh", "-c"])
        // The server writes elsewhere: only devsup's own log is cut.
        .arg("\"$0\" 2>/dev/null; true")
        .arg(&binaries().server)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut devsup = KillOnDrop(command.spawn().unwrap());
    let devsup_pid = devsup.0.id() as i32;
    let mut lines = BufReader::new(devsup.0.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        eprintln!("[devsup] {line}");
        addr = addr.or(devlog::parse_listen_addr(&line));
        if devlog::is_event(&line, 1, "ready") {
            break;
        }
    }
    let addr = addr.expect("devsup said where it listens");
    let server1 = http::get(addr, "/").unwrap().pid().unwrap();
    let mut end = EndOnDrop(vec![server1]);
    // `head` exits: the read end of devsup's stderr is closed.
    drop(lines);

    nix::sys::signal::kill(Pid::from_raw(devsup_pid), Signal::SIGHUP).unwrap();
    let mut last = None;
    let reloaded = wait_until(TIMEOUT, || {
        last = http::get(addr, "/").ok().and_then(|r| r.gen_pid());
        last.is_some_and(|(generation, _)| generation == 2)
    });
    assert!(
        reloaded,
        "gen 2 serves after the reload (devsup alive: {}; last answer {last:?})",
        pid_alive(devsup_pid)
    );
    end.0.push(last.unwrap().1);
    assert!(
        wait_until(TIMEOUT, || !pid_alive(server1)),
        "gen 1 was drained"
    );

    nix::sys::signal::kill(Pid::from_raw(devsup_pid), Signal::SIGTERM).unwrap();
    assert!(wait_until(TIMEOUT, || devsup
        .0
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(
        wait_until(TIMEOUT, || port_is_free(addr)),
        "nothing holds the port once devsup has stopped"
    );
}

/// A panic on devsup's main thread (injected, in debug builds, by
/// `DEVSUP_DEBUG_PANIC_ON_SIGHUP`) ends devsup; the guard must still stop
/// the server a `sh -c` started, so that no orphan keeps the port.
#[test]
fn a_panic_in_devsup_leaves_no_orphan_on_the_port() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--drain-timeout", "5s"])
        .env("DEVSUP_DEBUG_PANIC_ON_SIGHUP", "1")
        .server("sh")
        .server_args([
            std::ffi::OsString::from("-c"),
            "\"$0\" & wait".into(),
            binaries().server.clone().into(),
        ])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let server = http::get(addr, "/").unwrap().pid().unwrap();
    let _end = EndOnDrop(vec![server]);

    devsup.reload();
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(101), "devsup panicked");
    assert!(
        wait_until(TIMEOUT, || !pid_alive(server)),
        "the server (pid {server}) was stopped by the guard"
    );
    assert!(
        wait_until(TIMEOUT, || port_is_free(addr)),
        "the port is released"
    );
}
