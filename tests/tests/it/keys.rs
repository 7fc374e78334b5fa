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
