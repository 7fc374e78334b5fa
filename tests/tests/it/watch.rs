//! The edit→serve loop on the real binaries: file changes reload, ignored
//! ones do not, bursts are one reload, builds gate and cancel, and
//! `--signal-on` routes changes to a signal.

use std::path::Path;

use devsup_tests::harness::{Devsup, TIMEOUT, event, pid_alive, wait_until};
use devsup_tests::http;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn reloads(devsup: &Devsup) -> Vec<String> {
    devsup
        .lines()
        .into_iter()
        .filter(|l| l.contains("reload requested by change"))
        .collect()
}

#[test]
fn a_source_edit_reloads_and_the_new_generation_serves() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/main.rs", "fn main() {}");
    let devsup = Devsup::builder(dir.path()).spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);

    write(dir.path(), "src/main.rs", "fn main() { println!(); }");
    let line = devsup.wait_for_line("reload requested by change to src/main.rs", TIMEOUT);
    assert!(!line.contains("more"), "{line}");
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(2));
}

#[test]
fn an_atomic_save_by_rename_reloads() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", "x = 1");
    let devsup = Devsup::builder(dir.path()).spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);

    // What vim (backupcopy=no) and JetBrains do: write a temporary file,
    // then rename it over the original.
    write(dir.path(), "app.py.tmp", "x = 2");
    std::fs::rename(dir.path().join("app.py.tmp"), dir.path().join("app.py")).unwrap();
    devsup.wait_for_line("reload requested by change to app.py", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    assert_eq!(reloads(&devsup).len(), 1, "one save is one reload");
}

#[test]
fn ignored_paths_do_not_reload_and_get_no_watch() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".gitignore", "*.log\n/data/\n");
    write(dir.path(), "src/lib.rs", "");
    // A target/ with many directories costs no watch at all.
    for i in 0..50 {
        write(dir.path(), &format!("target/debug/deps/d{i}/x.o"), "");
    }
    write(dir.path(), "data/db.sqlite", "");
    let devsup = Devsup::builder(dir.path())
        .args(["--ignore", "tmp/"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let watching = devsup.wait_for_line("watching", TIMEOUT);
    assert!(
        watching.contains("watching 2 directories"),
        "the root and src/ only: {watching}"
    );

    // Each of these is ignored: build output, .gitignore'd files and
    // directories, an --ignore'd directory, editor swap, backup and probe
    // files.
    for name in [
        "target/debug/app",
        "target/debug/deps/d3/x.o",
        "server.log",
        "data/db.sqlite",
        "tmp/cache",
        "src/.lib.rs.swp",
        "src/lib.rs~",
        "src/4913",
        "src/.#lib.rs",
    ] {
        write(dir.path(), name, "changed");
    }
    // Then one real change. Had any of the above counted, it would show
    // as a reload of its own or as "+N more" on this one.
    write(dir.path(), "src/lib.rs", "pub fn f() {}");
    devsup.wait_for_line("reload requested by change to src/lib.rs", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    let reloads = reloads(&devsup);
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert!(!reloads[0].contains("more"), "{reloads:?}");
}

#[test]
fn two_hundred_files_at_once_are_one_reload() {
    let dir = tempfile::tempdir().unwrap();
    // A longer quiet time than the default, so that a loaded machine
    // pausing this loop does not end the burst early; what is tested is
    // that a burst is one reload, whatever its length.
    let devsup = Devsup::builder(dir.path())
        .args(["--debounce", "300ms"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);

    // Like a `git checkout`: a new directory and 200 files in it.
    for i in 0..200 {
        write(dir.path(), &format!("pkg/f{i:03}.rs"), "// new");
    }
    devsup.wait_event(2, "ready", TIMEOUT);
    // A later edit is the second reload: the burst above was one.
    write(dir.path(), "pkg/f000.rs", "// edited");
    devsup.wait_event(3, "ready", TIMEOUT);
    let reloads = reloads(&devsup);
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    // The directory and its 200 files, each named once, whether its watch
    // was placed before or after they were written.
    assert!(reloads[0].contains("(+200 more)"), "{reloads:?}");
    assert!(
        reloads[1].contains("pkg/f000.rs") && !reloads[1].contains("more"),
        "{reloads:?}"
    );
}

#[test]
fn a_failing_build_keeps_the_old_generation_and_a_fixed_one_reloads() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/main.rs", "ok");
    let devsup = Devsup::builder(dir.path())
        .args(["--build", "! grep -q error src/main.rs"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);

    write(dir.path(), "src/main.rs", "syntax error");
    let failed = devsup.wait_for_line("build step 1 failed", TIMEOUT);
    assert!(
        failed.contains("exited with status 1") && failed.contains("keeping gen=1 serving"),
        "{failed}"
    );
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(1));
    assert_eq!(devsup.count_matching(event(2, "spawned")), 0);

    write(dir.path(), "src/main.rs", "fixed");
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    assert_eq!(http::get(devsup.addr(), "/").unwrap().generation(), Some(2));
}

#[test]
fn the_first_generation_waits_for_a_successful_build() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/main.rs", "error");
    let devsup = Devsup::builder(dir.path())
        .args(["--build", "! grep -q error src/main.rs"])
        .spawn();
    let failed = devsup.wait_for_line("build step 1 failed", TIMEOUT);
    assert!(failed.contains("no generation is running"), "{failed}");
    devsup.wait_for_line("watching", TIMEOUT);
    write(dir.path(), "src/main.rs", "fine");
    devsup.wait_event(1, "ready", TIMEOUT);
}

#[test]
fn a_change_during_a_slow_build_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/main.rs", "fast");
    // The build records its pid (= its process group) under an ignored
    // directory, then takes "forever" while src/slow exists.
    let build = "echo $$ >> state/builds.pid.log; if [ -e src/slow ]; then sleep 60; fi";
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let devsup = Devsup::builder(dir.path())
        .args(["--ignore", "state/", "--build", build])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);
    let build_pids = || -> Vec<i32> {
        std::fs::read_to_string(dir.path().join("state/builds.pid.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };

    write(dir.path(), "src/slow", "");
    assert!(
        wait_until(TIMEOUT, || build_pids().len() == 2),
        "the slow build started"
    );
    let slow = build_pids()[1];
    assert!(pid_alive(slow));

    std::fs::remove_file(dir.path().join("src/slow")).unwrap();
    devsup.wait_for_line("cancelling the running build", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    // The whole group of the cancelled build is gone: the shell and its
    // `sleep 60`.
    let group_gone = || nix::sys::signal::killpg(nix::unistd::Pid::from_raw(slow), None).is_err();
    assert!(
        wait_until(TIMEOUT, group_gone),
        "build group {slow} is gone"
    );
    assert_eq!(
        build_pids().len(),
        3,
        "the build ran again after the cancel"
    );
}

#[test]
fn signal_on_sends_the_signal_and_starts_no_generation() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "templates/index.html", "<p>1</p>");
    // A server that reports the signals it receives on stdout.
    let server = "trap 'echo got-usr1' USR1; echo started; while :; do sleep 1 & wait; done";
    let devsup = Devsup::builder(dir.path())
        .args(["--signal-on", "templates/**=USR1", "--ready-after", "10ms"])
        .server("sh")
        .server_args(["-c", server])
        .spawn();
    devsup.wait_event(1, "spawned", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);
    assert!(wait_until(TIMEOUT, || devsup
        .stdout_lines()
        .contains(&"started".to_owned())));

    write(dir.path(), "templates/index.html", "<p>2</p>");
    devsup.wait_for_line("sending SIGUSR1", TIMEOUT);
    assert!(wait_until(TIMEOUT, || devsup
        .stdout_lines()
        .contains(&"got-usr1".to_owned())));
    assert_eq!(devsup.count_matching(event(2, "spawned")), 0);
    assert_eq!(reloads(&devsup).len(), 0);

    // Anything else still reloads.
    write(dir.path(), "main.sh", "");
    devsup.wait_event(2, "spawned", TIMEOUT);
}

#[test]
fn polling_sees_a_change() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/main.rs", "1");
    let devsup = Devsup::builder(dir.path()).arg("--poll=100ms").spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let watching = devsup.wait_for_line("watching", TIMEOUT);
    assert!(watching.contains("polling every 100ms"), "{watching}");
    write(dir.path(), "src/main.rs", "22");
    devsup.wait_for_line("reload requested by change to src/main.rs", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
}

#[test]
fn an_edited_gitignore_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path()).spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.wait_for_line("watching", TIMEOUT);

    write(dir.path(), ".gitignore", "*.log\n");
    devsup.wait_for_line("reload requested by change to .gitignore", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    // The new rule holds for the next burst: the log file is not counted.
    write(dir.path(), "server.log", "noise");
    write(dir.path(), "main.rs", "fn main() {}");
    devsup.wait_for_line("reload requested by change to main.rs", TIMEOUT);
    devsup.wait_event(3, "ready", TIMEOUT);
    let reloads = reloads(&devsup);
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert!(!reloads[1].contains("more"), "{reloads:?}");
}
