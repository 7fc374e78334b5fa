//! Keys in a terminal: `r` + Enter reloads, `q` + Enter quits. devsup
//! reads stdin only when it is a terminal, so the test gives it a pty.

use std::io::Write;

use devsup_tests::harness::{Devsup, TIMEOUT, event};

#[test]
fn r_reloads_and_q_quits_when_stdin_is_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .stdin(pty.slave)
        .spawn();
    devsup.wait_for_line("press r + Enter to reload", TIMEOUT);
    devsup.wait_event(1, "ready", TIMEOUT);
    let mut keys = std::fs::File::from(pty.master);
    keys.write_all(b"r\n").unwrap();
    devsup.wait_for_line("reload requested by key press", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    keys.write_all(b"q\n").unwrap();
    devsup.wait_for_line("q pressed: shutting down", TIMEOUT);
    assert_eq!(devsup.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn stdin_that_is_not_a_terminal_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).arg("--no-watch").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    assert_eq!(devsup.count_lines("press r + Enter"), 0);
    assert_eq!(devsup.count_matching(event(2, "spawned")), 0);
}

/// Ctrl-Z, then `bg`: devsup keeps running in the background (reloads,
/// drains, reaping) instead of being stopped again by SIGTTIN for reading
/// the terminal; after `fg` its keys work again.
#[test]
fn ctrl_z_then_bg_keeps_devsup_running() {
    use devsup_tests::harness::{Signal, fixture, process_state, wait_until};

    let dir = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let tty = nix::unistd::ttyname(&pty.slave).unwrap();
    let (commands_in, commands) = cloexec_pipe();
    let devsup = Devsup::builder(dir.path())
        .launcher([
            "python3".as_ref(),
            fixture("job_shell.py").as_os_str(),
            tty.as_os_str(),
        ])
        .arg("--no-watch")
        .stdin(commands_in)
        .spawn();
    let commands = std::fs::File::from(commands);
    let mut keys = std::fs::File::from(pty.master);
    drop(pty.slave);
    devsup.wait_for_line("press r + Enter to reload", TIMEOUT);
    devsup.wait_event(1, "ready", TIMEOUT);
    let pid_line = |prefix: &str| {
        let mut found = None;
        wait_until(TIMEOUT, || {
            found = (devsup.stdout_lines().iter())
                .find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no {prefix:?} line: {:?}", devsup.stdout_lines()))
    };
    let pid: i32 = pid_line("devsup pid=").parse().unwrap();
    let run = |cmd: &str| {
        let mut commands = &commands;
        commands.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        pid_line(&format!("done {cmd}"));
    };

    keys.write_all(b"\x1a").unwrap(); // Ctrl-Z
    assert!(
        wait_until(TIMEOUT, || process_state(pid) == Some('T')),
        "Ctrl-Z stopped devsup"
    );
    run("bg");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    devsup.wait_for_line("reload requested by SIGHUP", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    assert_ne!(
        process_state(pid),
        Some('T'),
        "devsup runs in the background"
    );

    run("fg");
    keys.write_all(b"r\n").unwrap();
    devsup.wait_for_line("reload requested by key press", TIMEOUT);
    devsup.wait_event(3, "ready", TIMEOUT);
    keys.write_all(b"q\n").unwrap();
    devsup.wait_for_line("q pressed: shutting down", TIMEOUT);
    // The shell exits, with devsup's status, once its commands end.
    drop(commands);
    assert_eq!(devsup.wait_exit(TIMEOUT).code(), Some(0));
}

/// A pipe whose ends no other test's child inherits: atomically on Linux;
/// elsewhere (this compiles for macOS) marked right after it is made.
fn cloexec_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    #[cfg(target_os = "linux")]
    return nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    #[cfg(not(target_os = "linux"))]
    {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let (read, write) = nix::unistd::pipe().unwrap();
        for fd in [&read, &write] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        }
        (read, write)
    }
}
