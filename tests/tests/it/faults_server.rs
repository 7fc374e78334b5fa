//! Faults the server makes, on the real binaries: a generation that
//! crashes, crashes at start-up, ignores the drain signal, forks, writes
//! garbage on its ready channel, or stops being runnable between reloads.
//!
//! Every test waits on events (a log line, a response, a pid, a file).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use devsup_tests::harness::{
    Devsup, Signal, TIMEOUT, binaries, event, fixture, forking_generation, kill, pid_alive,
    stop_cleanly, temp_dir, wait_until,
};
use devsup_tests::procfs::catches;
use devsup_tests::{devlog, http};

fn server() -> &'static Path {
    &binaries().server
}

/// The duration token right after `marker` in `line`; panics without one.
fn duration_after(line: &str, marker: &str) -> Duration {
    devlog::duration_after(line, marker)
        .unwrap_or_else(|| panic!("no duration after {marker:?} in {line:?}"))
}

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
    let dir = temp_dir();

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
    let dir = temp_dir();
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
    let dir = temp_dir();
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

#[test]
fn a_forking_generation_gets_signals_as_a_group_and_is_gone_only_with_its_last_process() {
    let dir = temp_dir();
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
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--ready-after", "200ms"])
        .server("sh")
        .server_args([fixture("faults/ready_channel.sh")])
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

/// A program that stops being runnable between reloads (here: no longer an
/// executable format, as with a half-written build output) fails at exec;
/// the running generation keeps serving.
#[test]
fn a_program_that_cannot_be_exec_d_keeps_the_old_generation() {
    let dir = temp_dir();
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
