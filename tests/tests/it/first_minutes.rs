//! A newcomer's first minutes (issue 22): `devsup --port 8080` with no
//! command in a fresh Cargo package builds it with cargo and runs the
//! binary `cargo run` would, from wherever cargo says it put it; `cargo
//! devsup` does the same.

use std::path::{Path, PathBuf};

use devsup_tests::harness::{Devsup, TIMEOUT, binaries, stop_cleanly, temp_dir, wait_until};
use devsup_tests::http;

/// A std-only server that takes the listener devsup passes at fd 3 and
/// answers every request with `hello WORD`.
fn server_source(word: &str) -> String {
    format!(
        r#"use std::io::{{Read, Write}};
use std::os::fd::FromRawFd;

fn main() {{
    assert_eq!(std::env::var("LISTEN_FDS").as_deref(), Ok("1"), "run me under devsup");
    // SAFETY: devsup passes the listening socket at fd 3 (LISTEN_FDS=1).
    let listener = unsafe {{ std::net::TcpListener::from_raw_fd(3) }};
    for conn in listener.incoming() {{
        let Ok(mut conn) = conn else {{ continue }};
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let body = "hello {word}\n";
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: {{}}\r\nConnection: close\r\n\r\n{{}}",
            body.len(),
            body
        );
    }}
}}
"#
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A fresh package `firstapp` with two binaries, `web` (the server,
/// `default-run`) and `tool`.
fn fresh_package(dir: &Path) {
    write(
        &dir.join("Cargo.toml"),
        "[package]\nname = \"firstapp\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         default-run = \"web\"\n\n[workspace]\n",
    );
    write(&dir.join("src/bin/web.rs"), &server_source("v1"));
    write(&dir.join("src/bin/tool.rs"), "fn main() {}\n");
}

fn body(devsup: &Devsup) -> String {
    http::get(devsup.addr(), "/").unwrap().body
}

/// The done-when of issue 22's third part: `devsup --port 0` and nothing
/// else serves the package's `default-run` binary, built into a
/// `CARGO_TARGET_DIR` outside it, and reloads it on an edit. The log's
/// first line says what was inferred; cargo's JSON messages are read, not
/// printed.
#[test]
fn no_command_in_a_cargo_package_runs_what_cargo_run_would_and_reloads_on_an_edit() {
    let package = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    fresh_package(package.path());
    let devsup = Devsup::builder(package.path())
        .no_command()
        .env("CARGO_TARGET_DIR", target.path())
        .spawn();
    devsup.wait_for_line("no command given", TIMEOUT);
    let first = &devsup.lines()[0];
    assert!(
        first.contains("no command given: running web (default-run of package firstapp)")
            && first.contains(&target.path().display().to_string()),
        "the first line says what was inferred: {first}"
    );
    devsup.wait_event(1, "ready", TIMEOUT);
    assert_eq!(body(&devsup), "hello v1\n");
    assert!(
        target.path().join("debug/web").exists() && !package.path().join("target").exists(),
        "built into CARGO_TARGET_DIR"
    );
    write(&package.path().join("src/bin/web.rs"), &server_source("v2"));
    devsup.wait_event(2, "ready", TIMEOUT);
    assert_eq!(body(&devsup), "hello v2\n");
    stop_cleanly(&devsup);
    let json: Vec<String> = (devsup.stdout_lines().into_iter())
        .filter(|l| l.contains("\"reason\""))
        .collect();
    assert!(json.is_empty(), "cargo's JSON messages shown: {json:?}");
}

/// The cargo binary the tests run under.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from)
}

/// A workspace of two members, `srv` with binaries `one` and `two` and no
/// `default-run`, and `other` with one binary; its target directory set by `[build]
/// target-dir` in `.cargo/config.toml`, to `target_dir`.
fn workspace(dir: &Path, target_dir: &Path) {
    write(
        &dir.join("Cargo.toml"),
        "[workspace]\nmembers = [\"srv\", \"other\"]\nresolver = \"2\"\n",
    );
    write(
        &dir.join(".cargo/config.toml"),
        &format!(
            "[build]\ntarget-dir = {:?}\n",
            target_dir.display().to_string()
        ),
    );
    write(
        &dir.join("srv/Cargo.toml"),
        "[package]\nname = \"srv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(&dir.join("srv/src/bin/one.rs"), &server_source("one"));
    write(&dir.join("srv/src/bin/two.rs"), &server_source("two"));
    write(
        &dir.join("other/Cargo.toml"),
        "[package]\nname = \"other\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(&dir.join("other/src/main.rs"), "fn main() {}\n");
}

/// `cargo devsup --package srv --bin two` in a workspace whose target
/// directory is set by `[build] target-dir`; and what devsup says when it
/// cannot choose, or is given a choice and a command.
#[test]
fn cargo_devsup_chooses_with_package_and_bin_in_a_workspace() {
    let ws = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    workspace(ws.path(), target.path());
    let refused = |args: &[&str], expected: &[&str]| {
        let out = std::process::Command::new(&binaries().devsup)
            .args(args)
            .current_dir(ws.path())
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for word in expected {
            assert!(err.contains(word), "{args:?}: {word:?} in {err}");
        }
    };
    refused(&["-p", "0"], &["--package NAME", "srv"]);
    refused(
        &["-p", "0", "--package", "srv"],
        &["--bin NAME", "one, two"],
    );
    refused(
        &["-p", "0", "--package", "nope"],
        &["--package nope", "srv, other"],
    );
    refused(&["-p", "0", "--bin", "two", "--", "x"], &["--bin", "drop"]);

    let profile_dir = binaries().devsup.parent().unwrap().to_owned();
    assert!(
        profile_dir.join("cargo-devsup").exists(),
        "built with devsup"
    );
    let path = std::env::join_paths(std::iter::once(profile_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    // `sh -c 'shift; exec cargo devsup "$@"'`: the harness puts devsup's
    // own path first; cargo execs cargo-devsup in its place, so devsup's
    // pid is the one the harness started.
    let devsup = Devsup::builder(ws.path())
        .launcher([
            "sh".into(),
            "-c".into(),
            format!("shift; exec '{}' devsup \"$@\"", cargo().display()),
            "sh".into(),
        ])
        .no_command()
        .args(["--package", "srv", "--bin", "two"])
        .env("PATH", path)
        .env_remove("CARGO_TARGET_DIR")
        .spawn();
    devsup.wait_for_line("no command given", TIMEOUT);
    let first = &devsup.lines()[0];
    assert!(
        first.contains("running two (--bin of package srv)")
            && first.contains(&target.path().display().to_string()),
        "{first}"
    );
    devsup.wait_event(1, "ready", TIMEOUT);
    assert_eq!(body(&devsup), "hello two\n");
    assert!(target.path().join("debug/two").exists());
    stop_cleanly(&devsup);
}

/// Without `--livereload`, while no generation was ever spawned, the log
/// says once that connections wait and why, and once after a failed
/// first build what to do; a second failure says nothing more, and the
/// fixed build serves.
#[test]
fn without_livereload_the_log_says_once_that_connections_wait_and_what_to_do() {
    let dir = temp_dir();
    let devsup = Devsup::builder(dir.path())
        .args(["--build", "test -f ok"])
        .spawn();
    let waiting = devsup.wait_for_line("wait unanswered until gen=1 is ready", TIMEOUT);
    let addr = devsup.addr().to_string();
    assert!(
        waiting.contains(&format!("connections to {addr} ")),
        "{waiting}"
    );
    devsup.wait_for_line("build step 1 failed", TIMEOUT);
    let failed = devsup.wait_for_line("the first build failed, so connections to", TIMEOUT);
    assert!(
        failed.contains(&addr) && failed.contains("fix the error and save"),
        "{failed}"
    );
    std::fs::write(dir.path().join("again.txt"), "1").unwrap();
    assert!(
        wait_until(TIMEOUT, || devsup.count_lines("build step 1 failed") == 2),
        "{}",
        devsup.log_text()
    );
    std::fs::write(dir.path().join("ok"), "").unwrap();
    devsup.wait_event(1, "ready", TIMEOUT);
    assert!(http::get(devsup.addr(), "/").unwrap().status == 200);
    stop_cleanly(&devsup);
    for said in ["wait unanswered until gen=1", "the first build failed, so"] {
        assert_eq!(devsup.count_lines(said), 1, "{said}: {}", devsup.log_text());
    }
}
