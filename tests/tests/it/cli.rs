//! The conventions of a Rust CLI, on the real binary: completions, a
//! config file that the command line overrides, `--prefix`, `--version`.

use devsup_tests::harness::{Devsup, TIMEOUT, binaries, wait_until};

fn devsup(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    std::process::Command::new(&binaries().devsup)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef devsup"),
        ("fish", "complete -c devsup"),
    ] {
        let out = devsup(&["completions", shell], dir.path());
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("drain-timeout"), "{shell}");
    }
    let out = devsup(&["completions", "tcsh"], dir.path());
    assert!(!out.status.success());
}

/// `devsup completions bash | head -1`, and `devsup status` with nothing
/// to ask: a closed stdout or a failed query is an error line and a
/// non-zero status, never a panic.
#[test]
fn completions_and_status_never_panic_on_a_closed_stdout() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    for args in [&["completions", "bash"][..], &["status"][..]] {
        // Closed before devsup starts: its first write fails, however
        // soon it comes (the read end of a pipe given to it and closed
        // after the spawn left a race: a short output fits in the pipe).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = Command::new(&binaries().devsup)
            .args(args)
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(!out.status.success(), "{args:?}");
    }
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = devsup(&["--version"], dir.path());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("devsup {}", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8(devsup(&["--help"], dir.path()).stdout).unwrap();
    assert!(
        help.contains("Examples:") && help.contains("--drain-timeout"),
        "{help}"
    );
}

#[test]
fn a_config_file_sets_options_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = binaries().server.display().to_string();
    std::fs::write(
        dir.path().join("devsup.toml"),
        format!("port = 1\nno-watch = true\ndrain-signal = \"INT\"\ncommand = [\"{server}\"]\n"),
    )
    .unwrap();
    // `--port 0` from the command line beats `port = 1` from the file; the
    // drain signal and the command come from the file.
    let devsup = Devsup::spawn_raw(dir.path(), &["--port", "0"], &[]);
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.reload();
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "draining (SIGINT)", TIMEOUT);
    assert_eq!(devsup.count_lines("watching"), 0, "no-watch from the file");
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("devsup.toml"), "drain-timout = \"1s\"\n").unwrap();
    let out = devsup(&["--port", "0", "--", "true"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown field `drain-timout`") && err.contains("devsup.toml"),
        "{err}"
    );
}

#[test]
fn prefix_tags_the_servers_output_with_its_generation() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--prefix"])
        .server("sh")
        .server_args([
            "-c",
            "echo hello from $DEVSUP_GENERATION; echo oops >&2; exec sleep 600",
        ])
        .spawn();
    devsup.wait_event(1, "spawned", TIMEOUT);
    assert!(wait_until(TIMEOUT, || devsup
        .stdout_lines()
        .contains(&"[gen 1] hello from 1".to_owned())));
    devsup.wait_for_line("[gen 1] oops", TIMEOUT);
}
