//! A newcomer's first minutes (issue 22): `devsup --port 8080` with no
//! command in a fresh Cargo package builds it with cargo and runs the
//! binary `cargo run` would, from wherever cargo says it put it; `cargo
//! devsup` does the same.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use devsup_tests::harness::{
    Devsup, OnTerminal, Signal, TIMEOUT, binaries, stop_cleanly, temp_dir, wait_until,
};
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
    // This server does not drain: gen 1 may still accept until it exits.
    devsup.wait_event(1, "exited", TIMEOUT);
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

/// The build step of the `--livereload` page tests: says a progress line,
/// waits (the first time) until the test writes to the fifo `gate`, and
/// fails like a compiler when `src/page.txt` says `BROKEN`.
pub(crate) const GATED_BUILD: &str = r#"#!/bin/sh
echo '   Compiling page v0.1.0 (gated)' >&2
if [ -p gate ]; then cat gate >/dev/null; rm -f gate; fi
if grep -q BROKEN src/page.txt; then
  printf '\033[1m\033[91merror[E0308]\033[0m: mismatched types: expected `Vec<T>`, found `&str`\n' >&2
  printf '  --> src/page.txt:1:1\n' >&2
  exit 101
fi
mkdir -p out
cp src/page.txt out/page.txt
"#;

/// A page site for the `--livereload` page: `src/page.txt` holds
/// `content`, the build is [`GATED_BUILD`], gated if `gated`; `extra`
/// devsup options. Returns devsup (watching `src/`) and the live-reload
/// URL.
pub(crate) fn gated_site(
    dir: &Path,
    content: &str,
    gated: bool,
    extra: &[&str],
) -> (Devsup, String) {
    write(&dir.join("src/page.txt"), content);
    write(&dir.join("build.sh"), GATED_BUILD);
    if gated {
        nix::unistd::mkfifo(&dir.join("gate"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    let devsup = Devsup::builder(dir)
        .args([
            "--livereload=127.0.0.1:0",
            "--build",
            "sh build.sh",
            "--watch",
        ])
        .arg(dir.join("src"))
        .args(extra)
        .server(devsup_tests::browser::page_server())
        .server_args(["out/page.txt"])
        .spawn();
    let line = devsup.wait_for_line("live reload at http://", TIMEOUT);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    (devsup, url)
}

/// The page once it says the build failed (it does once the failed
/// step's output has ended, just after the log line).
pub(crate) fn failed_page(devsup: &Devsup) -> http::Response {
    let mut page = None;
    let said = wait_until(TIMEOUT, || {
        page = http::get(devsup.addr(), "/").ok();
        page.as_ref()
            .is_some_and(|p| p.body.contains("<h1 id=\"content\">build failed</h1>"))
    });
    assert!(said, "the page never said the build failed: {page:?}");
    page.unwrap()
}

/// Lets the gated first build go on.
pub(crate) fn open_gate(dir: &Path) {
    // Blocks until the build reads the fifo, which it does right after
    // its progress line.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("gate"))
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
}

/// With `--livereload`, during the first build devsup answers on the
/// served port itself: 503, Retry-After, "building…" with the build's
/// latest line and the live-reload script. It stops before gen 1 is
/// spawned: every connection made after the `spawned` line is gen 1's,
/// and none fails across the switch.
#[test]
fn with_livereload_the_first_build_gets_a_503_building_page_until_gen_1_is_spawned() {
    let dir = temp_dir();
    let (devsup, livereload) = gated_site(dir.path(), "version 1", true, &[]);
    devsup.wait_for_line("Compiling page v0.1.0 (gated)", TIMEOUT);
    devsup.wait_for_line("with a 503 page while no generation runs", TIMEOUT);
    let addr = devsup.addr();
    let page = http::get(addr, "/").unwrap();
    assert_eq!(page.status, 503, "{page:?}");
    assert_eq!(page.header("retry-after"), Some("1"));
    assert!(
        page.body.contains("<h1 id=\"content\">building…</h1>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("   Compiling page v0.1.0 (gated)"),
        "{}",
        page.body
    );
    let script =
        format!("<script src=\"{livereload}/devsup-livereload.js\" data-generation=\"0\">");
    assert!(page.body.contains(&script), "{}", page.body);

    // Requests one after another across the switch, each on a new
    // connection, with the instant each connect began, until gen 1
    // answers; the gate opens once the client has had its first answer.
    let (first, answered) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < 5000 {
            let began = std::time::Instant::now();
            let status = http::get(addr, "/")
                .map(|r| r.status)
                .map_err(|e| e.to_string());
            let done = status == Ok(200);
            seen.push((began, status));
            let _ = first.send(());
            if done {
                break;
            }
        }
        seen
    });
    answered.recv_timeout(TIMEOUT).unwrap();
    open_gate(dir.path());
    devsup.wait_event(1, "ready", TIMEOUT);
    let seen = client.join().unwrap();
    let spawned_at = (devsup.timed_lines().into_iter())
        .find(|(_, l)| l.contains("gen=1 spawned"))
        .map(|(at, _)| at)
        .unwrap();
    let failed: Vec<_> = seen.iter().filter(|(_, s)| s.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let late_503: Vec<_> = (seen.iter())
        .filter(|(began, s)| *began > spawned_at && *s == Ok(503))
        .collect();
    assert!(
        late_503.is_empty(),
        "devsup answered connections made after gen=1 was spawned: {late_503:?}"
    );
    assert!(
        seen.iter().any(|(_, s)| *s == Ok(503)) && seen.iter().any(|(_, s)| *s == Ok(200)),
        "the client saw both sides of the switch: {} requests",
        seen.len()
    );
    stop_cleanly(&devsup);
}

/// With `--livereload`, a failed first build's page shows its output;
/// the fix is served by gen 1.
#[test]
fn with_livereload_a_failed_first_build_page_shows_its_error_and_the_fix_serves() {
    let dir = temp_dir();
    let (devsup, _) = gated_site(dir.path(), "BROKEN", false, &[]);
    devsup.wait_for_line("build step 1 failed (exited with status 101)", TIMEOUT);
    // The page learns of the failure once the step's output has ended,
    // a moment after the log line.
    let page = failed_page(&devsup);
    assert_eq!(page.status, 503, "{page:?}");
    assert!(
        page.body.contains("<h1 id=\"content\">build failed</h1>"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("build failed (exited with status 101): sh build.sh")
            && page
                .body
                .contains("mismatched types: expected `Vec&lt;T&gt;`, found `&amp;str`")
            && !page.body.contains('\u{1b}'),
        "{}",
        page.body
    );
    write(&dir.path().join("src/page.txt"), "version 2");
    devsup.wait_event(1, "ready", TIMEOUT);
    let page = http::get(devsup.addr(), "/").unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("version 2"), "{}", page.body);
    stop_cleanly(&devsup);
}

/// A package whose build script takes a while (so that cargo draws its
/// progress bar) and whose code does not compile.
fn slow_broken_package(dir: &Path) {
    write(
        &dir.join("Cargo.toml"),
        "[package]\nname = \"slowbroken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    );
    // The pause is the fixture's, for cargo to draw its bar; the test
    // waits for events, not for it.
    write(
        &dir.join("build.rs"),
        "fn main() { std::thread::sleep(std::time::Duration::from_millis(1500)); }\n",
    );
    write(
        &dir.join("src/main.rs"),
        "fn main() { let v: Vec<u8> = \"not a vec\"; drop(v); }\n",
    );
}

/// Under a terminal, build steps get one: cargo draws its progress bar and
/// colours to devsup's terminal, while the `build_finished` event's tail
/// reads as plain text.
#[test]
fn under_a_terminal_builds_get_a_terminal_and_the_tail_reads_plain() {
    let package = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    slow_broken_package(package.path());
    let events = package.path().join("events.jsonl");
    let mut command = std::process::Command::new(&binaries().devsup);
    command
        .args(["--port", "0", "--no-watch", "--events"])
        .arg(&events)
        // The log shows the command as given; only its output says `tty`.
        .args([
            "--build",
            "test -t 2 && echo \"stderr-is-a-$(echo tty)\" >&2",
        ])
        .current_dir(package.path())
        .env("CARGO_TARGET_DIR", target.path());
    let mut devsup = OnTerminal::spawn(command, false);
    let finished = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "build_finished")
    };
    let done = wait_until(TIMEOUT * 4, || finished().is_some());
    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    let terminal = devsup.screen();
    assert!(
        done,
        "no build_finished event; the terminal showed:\n{terminal}"
    );
    assert!(
        status.is_some_and(|s| s.code().is_some()),
        "devsup exited: {status:?}"
    );
    let event = finished().unwrap();
    assert_eq!(event["status"], "failed", "{event}");
    assert!(terminal.contains("stderr-is-a-tty"), "{terminal:?}");
    // cargo's progress bar (`Building [=>  ] 1/3: slowbroken(build)`,
    // redrawn after `\r`, erased with `ESC [K`) and its colours.
    assert!(
        terminal.contains("Building")
            && terminal.contains("/3: slowbroken(")
            && terminal.contains("\u{1b}[K")
            && terminal.contains("\u{1b}[1m\u{1b}[92m   Compiling"),
        "{terminal:?}"
    );
    let tail: Vec<&str> = (event["output_tail"].as_array().unwrap().iter())
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("mismatched types")),
        "{tail:?}"
    );
    assert!(
        tail.iter()
            .all(|l| !l.contains('\u{1b}') && !l.contains('\r')),
        "{tail:?}"
    );
}

/// Regression: devsup spawned as soon as the inferred build's process
/// group was gone, and read the binary's path before cargo's last
/// messages had left the pipe: under load, "gen=1 cannot start: cargo's
/// build messages named no executable". Here a `cargo` wrapper makes that
/// certain: the messages come from a process that left the build's group
/// (as a compiler cache's server may), after the group is gone.
#[test]
fn the_binary_path_is_taken_after_cargos_last_message() {
    let package = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    fresh_package(package.path());
    let wrapper = bin.path().join("cargo");
    write(
        &wrapper,
        &format!(
            "#!/bin/sh\n\
             [ \"$1\" = build ] || exec '{real}' \"$@\"\n\
             '{real}' \"$@\" > messages.json || exit $?\n\
             # The messages, later, from outside the build's process group.\n\
             setsid sh -c 'sleep 0.5; cat messages.json' &\n",
            real = cargo().display()
        ),
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = std::env::join_paths(std::iter::once(bin.path().to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let devsup = Devsup::builder(package.path())
        .no_command()
        .arg("--no-watch")
        .env("CARGO_TARGET_DIR", target.path())
        .env("PATH", path)
        .env_remove("CARGO")
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    assert_eq!(body(&devsup), "hello v1\n");
    assert_eq!(
        devsup.count_lines("cannot start"),
        0,
        "{}",
        devsup.log_text()
    );
    stop_cleanly(&devsup);
}

/// With `--livereload`, once every generation has exited, devsup answers
/// again (here while the restart's build waits on the gate), and stops
/// when the next generation is spawned.
#[test]
fn with_livereload_the_page_answers_again_once_every_generation_has_exited() {
    let dir = temp_dir();
    let (devsup, _) = gated_site(dir.path(), "version 1", false, &[]);
    devsup.wait_event(1, "ready", TIMEOUT);
    let addr = devsup.addr();
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
    nix::unistd::mkfifo(&dir.path().join("gate"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    devsup.mark();
    let pid = devsup.generation_pid(1, TIMEOUT);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    devsup.wait_for_new("with a 503 page while no generation runs", TIMEOUT);
    devsup.wait_for_new("Compiling page v0.1.0 (gated)", TIMEOUT);
    let mut page = None;
    let building = wait_until(TIMEOUT, || {
        page = http::get(addr, "/").ok();
        page.as_ref().is_some_and(|p| {
            p.status == 503 && p.body.contains("<h1 id=\"content\">building…</h1>")
        })
    });
    assert!(building, "{page:?}");
    open_gate(dir.path());
    devsup.wait_event(2, "ready", TIMEOUT);
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
    stop_cleanly(&devsup);
}

/// Under a terminal, Ctrl-C (SIGINT) during a build still stops the
/// build's process group, which runs on devsup's pseudo-terminal, and
/// devsup exits 0.
#[test]
fn under_a_terminal_ctrl_c_during_a_build_stops_it() {
    let dir = temp_dir();
    // `tty-ok` is said before the group is recorded: the test interrupts
    // once the record is there, so the line is printed by then.
    let build = "test -t 2 && echo \"tty-$(echo ok)\" >&2; echo $$ > pgid.tmp && mv pgid.tmp pgid; sleep 30";
    let mut command = std::process::Command::new(&binaries().devsup);
    command
        .args(["--port", "0", "--no-watch", "--build", build, "--"])
        .arg(&binaries().server)
        .current_dir(dir.path());
    let mut devsup = OnTerminal::spawn(command, false);
    let pgid_file = dir.path().join("pgid");
    let started = wait_until(TIMEOUT, || {
        std::fs::read_to_string(&pgid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|pgid| devsup_tests::procfs::group_members(pgid).len() == 2)
    });
    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    let terminal = devsup.screen();
    assert!(started, "{terminal}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{terminal}");
    let pgid: i32 = std::fs::read_to_string(&pgid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(devsup_tests::procfs::group_members(pgid), [] as [i32; 0]);
    assert!(
        terminal.contains("tty-ok") && terminal.contains("build stopped"),
        "{terminal}"
    );
}

/// Under a terminal, `r` + Enter during a build still reaches devsup: its
/// keys are read from its own terminal while the build draws on the
/// pseudo-terminal devsup gives it, and the key cancels the build and
/// starts it again (the first build's group is ended), after which the
/// second build serves gen 1.
#[test]
fn under_a_terminal_r_during_a_build_starts_it_again() {
    let dir = temp_dir();
    let events = dir.path().join("events.jsonl");
    // Each build records its process group, says whether it has a
    // terminal, and waits for the test's `go` (the second build finds it).
    let build = "echo $$ >> builds; test -t 2 && echo \"tty-$(echo ok)\" >&2; \
                 while [ ! -f go ]; do sleep 0.05; done";
    let mut command = std::process::Command::new(&binaries().devsup);
    command
        .args(["--port", "0", "--no-watch", "--events"])
        .arg(&events)
        .args(["--build", build, "--"])
        .arg(&binaries().server)
        .current_dir(dir.path());
    let mut devsup = OnTerminal::spawn(command, true);
    let builds = || -> Vec<i32> {
        std::fs::read_to_string(dir.path().join("builds"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let count = |name: &str| {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == name)
            .count()
    };
    let first = wait_until(TIMEOUT, || builds().len() == 1);
    devsup.press(b"r\n");
    let second = wait_until(TIMEOUT, || builds().len() == 2);
    std::fs::write(dir.path().join("go"), "").unwrap();
    let ready = wait_until(TIMEOUT * 2, || count("ready") == 1);
    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    let terminal = devsup.screen();
    assert!(first && second && ready, "{terminal}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{terminal}");
    assert!(
        terminal.contains("tty-ok") && terminal.contains("reload requested by key press"),
        "{terminal}"
    );
    assert_eq!(count("build_started"), 2, "{terminal}");
    // The cancelled build's group is gone, not left waiting for `go`.
    assert_eq!(
        devsup_tests::procfs::group_members(builds()[0]),
        [] as [i32; 0]
    );
}

/// Regression: at Ctrl-C during a build devsup exited as soon as the
/// build's group was gone, dropping what the build had printed that was
/// still on its way through the tee (under load, `tty-ok` was missing from
/// the terminal in under_a_terminal_ctrl_c_during_a_build_stops_it). Here
/// a process that left the build's group holds its output open and
/// writes a line 100 ms after the build's group is killed (its pipe from
/// the group's `sleep` ends): devsup shows that line before it exits (it
/// waits for the output's end, 500 ms at most).
#[test]
fn output_a_stopped_build_printed_is_shown_before_devsup_exits() {
    let dir = temp_dir();
    // The writer's output comes 100 ms after the group is killed: later
    // than devsup took to exit, well within the 500 ms it now waits.
    let build = "sleep 30 | setsid sh -c 'echo $$ > writer; cat; sleep 0.1; echo \"late-$(echo line)\" >&2'";
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--build", build])
        .spawn();
    let writer_file = dir.path().join("writer");
    let writer = || {
        std::fs::read_to_string(&writer_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
    };
    assert!(
        wait_until(TIMEOUT, || writer().is_some()),
        "the build started"
    );
    devsup.signal(nix::sys::signal::Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    let writer = writer().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(writer),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(devsup.count_lines("late-line"), 1, "{:?}", devsup.lines());
}
