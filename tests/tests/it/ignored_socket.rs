//! A server that does not take the socket devsup passes it is named at the
//! time, with the fix (issue 19, defects 7 and 8).
//!
//! - It closes the passed socket and listens on a port of its own (puma
//!   given `-b` another address; `tests/fixtures/own_port.py close`), or
//!   keeps it unused and listens on its own (a server that ignores
//!   LISTEN_FDS: puma without `--listen-pid`; `own_port.py keep`): one
//!   warning names the port it listens on and the fix, and no timer counts
//!   it ready (before the fix, the active generation fell back to the
//!   uptime timer at `--ready-timeout`, and every later one was counted
//!   ready by it while clients of the passed port waited).
//! - It exits because it found no socket (go-systemd's
//!   `activation.Listeners()` without `LISTEN_PID`: "unexpected number of
//!   socket activation (0 != 1)"): devsup says it never waited on the
//!   socket and names `--listen-pid`; with `--listen-pid` it serves.

use std::ffi::OsString;

use devsup_tests::harness::{Devsup, TIMEOUT, event, fixture, stop_cleanly, temp_dir};
use devsup_tests::{tools, unchanged};

/// Short enough that the test does not wait long for the not-ready line,
/// long enough that a loaded machine starts python within it.
const READY_TIMEOUT: &str = "3s";

/// The port generation `generation` of `own_port.py` says it listens on.
fn own_port(devsup: &Devsup, generation: u64) -> u16 {
    let prefix = format!("own-port gen={generation} listening on ");
    let line = devsup.wait_for_line(|l: &str| l.starts_with(&prefix), TIMEOUT);
    line[prefix.len()..].trim().parse().expect("a port")
}

/// What the warning of each mode starts with, and says further on.
fn words(closed: bool) -> (&'static str, &'static str) {
    if closed {
        ("closed the socket devsup passed it", "and listens on")
    } else {
        (
            "listens on",
            "of its own, not on the socket devsup passed it",
        )
    }
}

/// Runs `own_port.py MODE` under devsup; checks that each of two
/// generations is named once as ignoring the socket, with the port it
/// listens on, and that neither is counted ready by a timer: gen 2 is not
/// ready at `--ready-timeout` and drained, gen 1 keeps the place.
fn ignoring_server_is_named(mode: &str) {
    let (starts, says) = words(mode == "close");
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--ready-timeout", READY_TIMEOUT])
        .server("python3")
        .server_args([
            fixture("own_port.py").into_os_string(),
            OsString::from(mode),
        ])
        .spawn();
    let passed = devsup.addr();
    for generation in [1, 2] {
        let port = own_port(&devsup, generation);
        let warning = devsup.wait_for_line(
            |l: &str| {
                devsup_tests::devlog::is_event(l, generation, starts)
                    && l.contains(says)
                    && l.contains(&format!("127.0.0.1:{port}"))
            },
            TIMEOUT,
        );
        assert!(
            warning.contains(&format!("clients of {passed} wait")),
            "{warning}"
        );
        assert!(warning.contains("fd 3"), "names the fix: {warning}");
        if generation == 1 {
            devsup.reload();
        }
    }
    devsup.wait_for_line(event(2, "not ready after"), TIMEOUT);
    let log = devsup.log_text();
    assert!(
        !log.contains("does not report readiness") && !log.contains("ready in"),
        "a server that ignores its socket was counted ready by a timer:\n{log}"
    );
    assert_eq!(
        devsup.count_lines(says),
        2,
        "said once per generation:\n{log}"
    );
    stop_cleanly(&devsup);
}

#[test]
fn a_server_that_closes_the_passed_socket_and_listens_on_its_own_is_named() {
    ignoring_server_is_named("close");
}

#[test]
fn a_server_that_leaves_the_passed_socket_unused_and_listens_on_its_own_is_named() {
    ignoring_server_is_named("keep");
}

/// puma as its docs show it, told to bind another address than the passed
/// one: with `--listen-pid` it closes the activated socket ("Closing
/// unused activated socket"); without, it ignores LISTEN_FDS and leaves the
/// socket unused. Either way it serves a port of its own, which devsup names.
#[test]
fn puma_bound_elsewhere_is_named_with_the_port_it_took() {
    let Some(puma) = tools::require("ignored socket: puma", tools::apt("puma", "puma")) else {
        return;
    };
    let own = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let own_port = own.local_addr().expect("an address").port();
    drop(own);
    for listen_pid in [true, false] {
        let (starts, says) = words(listen_pid);
        let dir = temp_dir();
        let mut args = vec!["--no-watch"];
        if listen_pid {
            args.push("--listen-pid");
        }
        let devsup = Devsup::builder(dir.path())
            .args(args)
            .server(&puma)
            .server_args([
                OsString::from("--quiet"),
                "-b".into(),
                format!("tcp://127.0.0.1:{own_port}").into(),
                unchanged::fixtures_dir().join("ruby/config.ru").into(),
            ])
            .spawn();
        let warning = devsup.wait_for_line(
            |l: &str| devsup_tests::devlog::is_event(l, 1, starts) && l.contains(says),
            TIMEOUT,
        );
        assert!(
            warning.contains(&format!("127.0.0.1:{own_port}")),
            "names puma's own port: {warning}"
        );
        stop_cleanly(&devsup);
    }
}

/// go-systemd's `activation.Listeners()` takes the sockets only when
/// LISTEN_PID is its pid: without `--listen-pid` the server exits, and
/// devsup says it never waited on the socket and names `--listen-pid`
/// (once, though it restarts); with it, the server is counted ready.
#[test]
fn a_go_systemd_server_without_listen_pid_is_told_to_use_it() {
    let Some(go) = tools::require(
        "ignored socket: Go and go-systemd",
        unchanged::build_go_fixtures(),
    ) else {
        return;
    };
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch"])
        .server(go.join("activation"))
        .spawn();
    let hint = devsup.wait_for_line(
        event(
            1,
            "failed before it ever waited on the socket devsup passed it",
        ),
        TIMEOUT,
    );
    assert!(hint.contains("--listen-pid"), "{hint}");
    // It restarts and fails again: the hint is not repeated.
    devsup.wait_for_line(event(2, "exited"), TIMEOUT);
    devsup.wait_for_line(event(3, "spawned"), TIMEOUT);
    assert_eq!(
        devsup.count_lines("failed before it ever waited"),
        1,
        "{}",
        devsup.log_text()
    );
    stop_cleanly(&devsup);

    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--listen-pid"])
        .server(go.join("activation"))
        .spawn();
    let ready = devsup.wait_event(1, "ready in", TIMEOUT);
    assert!(ready.contains("listening"), "{ready}");
    assert_eq!(devsup.count_lines("failed before it ever waited"), 0);
    stop_cleanly(&devsup);
}
