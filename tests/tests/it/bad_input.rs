//! Bad input: command lines devsup must refuse, each with one line saying
//! the problem and the fix, a non-zero exit, and nothing spawned.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use devsup_tests::harness::{Devsup, TIMEOUT, binaries, temp_dir};

fn server() -> &'static Path {
    &binaries().server
}

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
    let dir = temp_dir();
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
    let dir = temp_dir();
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
    let dir = temp_dir();
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

/// Durations out of range are refused when parsed, naming the option and
/// the limit: `--drain-timeout 1e20s` used to panic, `1e19s` to overflow
/// an `Instant` at the first reload, `--poll=0` to keep a core busy.
#[test]
fn out_of_range_durations_are_refused_with_the_limit() {
    let dir = temp_dir();
    let server = server().as_os_str().to_str().unwrap();
    for (option, value, says) in [
        ("--drain-timeout", "1e20s", "at most 1 day"),
        ("--ready-timeout", "1e19s", "at most 1 day"),
        ("--ready-after", "1e19s", "at most 1 day"),
        ("--debounce", "1e19s", "at most 1 day"),
    ] {
        let error = refused(dir.path(), &["-p", "0", option, value, "--", server]);
        assert_says(&error, &[option, value, says]);
    }
    let error = refused(dir.path(), &["-p", "0", "--poll=0", "--", server]);
    assert_says(&error, &["--poll", "too short", "10ms"]);
}

/// A status directory other users can use (issue 19, defect 8): devsup
/// makes no socket there, and says so at start, instead of only at debug
/// level; `devsup status` says why it finds none, instead of "start devsup
/// in this directory" while one runs.
#[test]
fn a_status_directory_open_to_others_is_named_at_start_and_by_status() {
    let dir = temp_dir();
    let runtime = temp_dir();
    let status_dir = runtime.path().join("devsup-status");
    std::fs::create_dir(&status_dir).unwrap();
    std::fs::set_permissions(&status_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .spawn();
    let warning = devsup.wait_for_line(
        |l: &str| l.contains("`devsup status` cannot reach this devsup"),
        TIMEOUT,
    );
    assert!(
        warning.contains("is open to other users (mode 755)") && warning.contains("remove it"),
        "{warning}"
    );
    devsup.wait_event(1, "ready", TIMEOUT);
    let out = std::process::Command::new(&binaries().devsup)
        .arg("status")
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is open to other users (mode 755)")
            && stderr.contains("then restart devsup")
            && !stderr.contains("start devsup in this directory"),
        "{stderr}"
    );
    devsup_tests::harness::stop_cleanly(&devsup);
}
