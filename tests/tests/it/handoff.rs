//! The core handoff, on the real devsup and reference server: a reload
//! changes the serving generation without losing a request, every failure
//! edge keeps the old generation serving, and shutdown is clean.

use devsup_tests::harness::{
    Devsup, Signal, TIMEOUT, open_fds, pid_alive, port_is_free, temp_dir as dir, wait_until,
};
use devsup_tests::{http, load};

#[test]
fn sighup_changes_the_generation_and_the_old_process_goes_away() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let first = http::get(addr, "/").unwrap();
    assert_eq!(first.generation(), Some(1));
    let pid1 = devsup.generation_pid(1, TIMEOUT);
    assert_eq!(first.pid(), Some(pid1));

    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "draining", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    let second = http::get(addr, "/").unwrap();
    assert_eq!(second.generation(), Some(2));
    assert_eq!(second.pid(), Some(devsup.generation_pid(2, TIMEOUT)));
    assert!(!pid_alive(pid1), "generation 1 (pid {pid1}) is gone");
}

#[test]
fn a_slow_request_in_flight_completes_across_the_handoff() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let mut conn = http::Conn::connect(addr).unwrap();
    conn.send("/sleep?ms=1500", false).unwrap();
    // The request is being served by generation 1 once it answers a second
    // connection: the server handles both concurrently.
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));

    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(1, "draining", TIMEOUT);
    let slow = conn.recv().unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.gen_pid().map(|(g, _)| g), Some(1), "{}", slow.body);
    assert!(slow.body.contains("slept=1500"), "{}", slow.body);
    assert!(
        slow.closes(),
        "a draining server closes the connection after the request"
    );
    // Drained, not killed: it exited by itself, well before the drain timeout.
    let exited = devsup.wait_event(1, "exited", TIMEOUT);
    assert!(exited.contains("with status 0"), "{exited}");
}

#[test]
fn a_generation_that_exits_before_ready_leaves_the_old_one_serving() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server_args(["--fail-before-ready", "2"])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let run = load::start(load::LoadConfig::new(addr));
    assert!(run.wait_ok(50, TIMEOUT));

    devsup.signal(Signal::SIGHUP);
    let failed = devsup.wait_event(2, "failed before ready", TIMEOUT);
    assert!(failed.contains("keeping gen=1"), "{failed}");
    let ok_before = run.ok();
    assert!(run.wait_ok(ok_before + 50, TIMEOUT), "gen 1 keeps serving");
    let report = run.finish();
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(
        report.generations.keys().copied().collect::<Vec<_>>(),
        [1],
        "{report}"
    );
    assert_eq!(
        devsup.count_matching(devsup_tests::harness::event(1, "draining")),
        0
    );
}

#[test]
fn a_generation_that_never_says_ready_is_drained_and_the_old_one_kept() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        // The server says READY=1 (gen 1 does): only that counts.
        .args(["--no-watch", "--ready-timeout", "1s", "--ready", "notify"])
        .server_args(["--never-ready", "2"])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let run = load::start(load::LoadConfig::new(addr));
    assert!(run.wait_ok(50, TIMEOUT));

    devsup.signal(Signal::SIGHUP);
    let line = devsup.wait_event(2, "not ready", TIMEOUT);
    assert!(line.contains("keeping gen=1"), "{line}");
    devsup.wait_event(2, "draining", TIMEOUT);
    devsup.wait_event(2, "exited", TIMEOUT);
    let ok_before = run.ok();
    assert!(run.wait_ok(ok_before + 50, TIMEOUT), "gen 1 keeps serving");
    let report = run.finish();
    // Generation 2 held the socket for a second and may have answered some
    // requests; what matters is that none failed and gen 1 still serves.
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));
    assert_eq!(
        devsup.count_matching(devsup_tests::harness::event(1, "draining")),
        0
    );
}

#[test]
fn twenty_reloads_under_load_lose_no_request() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let run = load::start(load::LoadConfig {
        conns: 8,
        ..load::LoadConfig::new(addr)
    });
    assert!(run.wait_ok(100, TIMEOUT));
    for generation in 2..=21 {
        devsup.signal(Signal::SIGHUP);
        devsup.wait_event(generation, "ready", TIMEOUT);
        // Let the new generation serve a little before the next reload.
        let ok = run.ok();
        assert!(run.wait_ok(ok + 20, TIMEOUT));
    }
    devsup.wait_event(20, "exited", TIMEOUT);
    let report = run.finish();
    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.generations.len() >= 15, "{report}");
    let pids = devsup.generation_pids();
    for generation in 1..=20 {
        let pid = pids[&generation];
        assert!(
            wait_until(TIMEOUT, || !pid_alive(pid)),
            "gen {generation} pid {pid} is gone"
        );
    }
    assert!(pid_alive(pids[&21]));
}

/// The sockets and the ready channel reach the generation and nothing else:
/// `sleep` opens no fd of its own, so its fd table is exactly what it
/// inherited; a build step gets only stdin, stdout and stderr, not even the
/// fds devsup itself inherited from the test runner.
#[test]
fn only_the_generation_inherits_the_socket_and_the_ready_channel() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--build", "ls /proc/self/fd"])
        .server("sleep")
        .server_args(["600"])
        .spawn();
    let pid = devsup.generation_pid(1, TIMEOUT);
    // "spawned" is logged at fork, and `sleep` briefly opens locale files
    // while it starts: wait for it to settle. An fd it inherited would
    // stay, and the wait would fail.
    let numbers = || {
        open_fds(pid)
            .iter()
            .map(|(fd, _)| *fd)
            .collect::<Vec<i32>>()
    };
    let settled = wait_until(TIMEOUT, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
            && numbers() == [0, 1, 2, 3, 4]
    });
    let fds = open_fds(pid);
    assert!(settled, "{fds:?}");
    assert_eq!(fds[0].1, "/dev/null", "stdin is not devsup's terminal");
    assert!(fds[3].1.starts_with("socket:"), "{fds:?}");
    assert!(fds[4].1.starts_with("socket:"), "{fds:?}");
    // fd 3 is devsup's own listening socket, not a copy bound anew.
    let ours = open_fds(devsup.pid());
    assert!(
        ours.iter().any(|(_, target)| *target == fds[3].1),
        "{ours:?}"
    );

    // The build ran before generation 1 and printed the fds of `ls`:
    // stdin, stdout, stderr and the directory it lists. (Its stdout is read
    // apart from the log: the `spawned` line does not mean it has arrived.)
    assert_eq!(devsup.wait_stdout_lines(4, TIMEOUT), ["0", "1", "2", "3"]);
}

#[test]
fn listen_pid_is_the_direct_child() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--listen-pid"])
        .spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let response = http::get(addr, "/env?name=LISTEN_PID").unwrap();
    assert_eq!(response.status, 200);
    let pid = devsup.generation_pid(1, TIMEOUT);
    assert_eq!(response.body.trim(), pid.to_string());
    assert_eq!(response.header("x-pid"), Some(pid.to_string().as_str()));

    // Without the flag there is no LISTEN_PID (so `cargo run` works).
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    assert_eq!(
        http::get(devsup.addr(), "/env?name=LISTEN_PID")
            .unwrap()
            .status,
        404
    );
}

#[test]
fn sigint_finishes_in_flight_requests_and_exits_cleanly() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    let pids = devsup.generation_pids();
    let mut conn = http::Conn::connect(addr).unwrap();
    conn.send("/sleep?ms=1000", false).unwrap();
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(2));

    devsup.signal(Signal::SIGINT);
    devsup.wait_for_line("shutting down", TIMEOUT);
    let slow = conn.recv().unwrap();
    assert_eq!(slow.status, 200);
    assert!(slow.body.contains("slept=1000"), "{}", slow.body);
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", devsup.log_text());
    for pid in pids.values() {
        assert!(!pid_alive(*pid), "pid {pid} is gone");
    }
    // A snapshot can be fooled by another test's child that has not yet
    // exec'd (it briefly holds copies of every fd): poll.
    assert!(
        wait_until(TIMEOUT, || port_is_free(addr)),
        "the port is released"
    );
}

#[test]
fn a_second_sigint_kills_at_once_and_says_so_in_the_exit_status() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--drain-timeout", "60s"])
        .server_args(["--ignore-drain", "1"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let pid = devsup.generation_pid(1, TIMEOUT);
    devsup.signal(Signal::SIGINT);
    devsup.wait_for_line("shutting down", TIMEOUT);
    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1));
    assert!(!pid_alive(pid));
}

#[test]
fn the_server_can_ask_for_its_own_reload() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    assert_eq!(http::get(addr, "/reload").unwrap().status, 200);
    devsup.wait_for_line("reload requested by gen=1", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    // Until it has drained, gen 1 may still take a connection or two.
    devsup.wait_event(1, "exited", TIMEOUT);
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(2));
}

/// A server that never reports readiness reloads as fast as one that does:
/// each generation is counted ready when the kernel shows it polling the
/// socket (`ready in … (listening: …)`), with no timer and no warning.
#[test]
fn a_server_without_readiness_is_ready_when_it_polls_the_socket() {
    let dir = dir();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server_args(["--never-ready", "all"])
        .spawn();
    let addr = devsup.addr();
    let line = devsup.wait_event(1, "ready", TIMEOUT);
    assert!(line.contains("(listening: pid="), "{line}");
    assert_eq!(http::get(addr, "/").unwrap().generation(), Some(1));
    for generation in 2..=3 {
        devsup.signal(Signal::SIGHUP);
        let line = devsup.wait_event(generation, "ready", TIMEOUT);
        assert!(line.contains("polls fd 3 with epoll"), "{line}");
        devsup.wait_event(generation - 1, "exited", TIMEOUT);
        assert_eq!(http::get(addr, "/").unwrap().generation(), Some(generation));
    }
    assert_eq!(devsup.count_lines("does not report readiness"), 0);
    assert_eq!(devsup.count_lines("counted ready"), 0);
}
