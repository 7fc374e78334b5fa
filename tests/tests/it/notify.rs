//! systemd's `NOTIFY_SOCKET` protocol: readiness from a server written for
//! `Type=notify`, the sender check, the private directory, and `FDSTORE`;
//! and what devsup leaves in the temporary directory.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use devsup_tests::harness::{
    Devsup, LineMatch, Signal, TIMEOUT, binaries, event, pid_alive, stop_cleanly, temp_dir,
    wait_until,
};
use devsup_tests::http;

fn fixture() -> PathBuf {
    devsup_tests::harness::fixture("notify_server.py")
}

#[test]
fn a_type_notify_server_reloads_through_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args([fixture()])
        .spawn();
    devsup.wait_event(1, "status: notify server up", TIMEOUT);
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "draining", TIMEOUT);
    let exited = devsup.wait_event(1, "exited", TIMEOUT);
    assert!(exited.contains("with status 0"), "{exited}");
}

#[test]
fn a_stored_memfd_reaches_later_generations_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        fixture().display().to_string(),
        "--store".into(),
        "1".into(),
        "warm cache v1".into(),
        "--remove".into(),
        "3".into(),
    ];
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args(args)
        .spawn();
    devsup.wait_event(1, "stored 1 fd(s) named cache", TIMEOUT);
    devsup.wait_event(1, "ready", TIMEOUT);
    for generation in 2..=4 {
        devsup.signal(Signal::SIGHUP);
        devsup.wait_event(generation, "ready", TIMEOUT);
    }
    let out = |line: &str| {
        let line = line.to_owned();
        wait_until(TIMEOUT, || devsup.stdout_lines().contains(&line))
    };
    // Each later generation gets the socket, then the stored memfd, named,
    // with the content generation 1 wrote.
    assert!(out("gen3 names=http:cache"), "{:?}", devsup.stdout_lines());
    assert!(
        out("gen3 cache=warm cache v1"),
        "{:?}",
        devsup.stdout_lines()
    );
    assert!(
        out("gen2 cache=warm cache v1"),
        "{:?}",
        devsup.stdout_lines()
    );
    // Generation 3 removed it: generation 4 gets the socket alone.
    devsup.wait_event(3, "removed 1 stored fd(s) named cache", TIMEOUT);
    assert!(out("gen4 names=http"), "{:?}", devsup.stdout_lines());
}

/// The notify socket lives in a private directory, hears only the
/// generation's own processes, and is gone with devsup.
#[test]
fn notify_sockets_are_private_and_check_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .args(["--no-watch", "--ready-timeout", "60s", "--ready", "notify"])
        .server_args(["--never-ready", "2"])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let gen1_socket = http::get(devsup.addr(), "/env?name=NOTIFY_SOCKET")
        .unwrap()
        .body;
    let private = Path::new(&gen1_socket).parent().unwrap().to_path_buf();
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", private.display());

    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "spawned", TIMEOUT);
    let gen2_socket = private.join("gen-2.sock");
    assert!(wait_until(TIMEOUT, || gen2_socket.exists()));
    // This test process is not in generation 2's process group: its
    // READY=1 must not hand over.
    let intruder = std::os::unix::net::UnixDatagram::unbound().unwrap();
    intruder.send_to(b"READY=1\n", &gen2_socket).unwrap();
    let warning = devsup.wait_for_line("dropped a notify message from pid", TIMEOUT);
    assert!(
        warning.contains(&std::process::id().to_string()),
        "{warning}"
    );
    assert_eq!(devsup.count_matching(event(2, "ready")), 0);
    assert_eq!(devsup.count_matching(event(1, "draining")), 0);

    devsup.signal(Signal::SIGINT);
    assert_eq!(devsup.wait_exit(TIMEOUT).code(), Some(0));
    assert!(
        !private.exists(),
        "{} is removed on exit",
        private.display()
    );
}

/// `MAINPID=` names a server that left the generation's process group: it
/// gets the drain signal too, and the generation is gone only with it.
#[test]
fn mainpid_outside_the_group_is_drained_with_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = devsup_tests::harness::fixture("launcher.py");
    let server = binaries().server.clone();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args([launcher, server])
        .spawn();
    devsup.wait_event(1, "MAINPID=", TIMEOUT);
    devsup.wait_event(1, "ready", TIMEOUT);
    let server_pid = http::get(devsup.addr(), "/").unwrap().pid().unwrap();
    assert_ne!(
        server_pid,
        devsup.generation_pid(1, TIMEOUT),
        "the server is the launcher's child"
    );

    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    assert!(
        !pid_alive(server_pid),
        "gen 1's server (pid {server_pid}) drained and exited"
    );
}

/// What a generation says about other processes and names is checked: a
/// `MAINPID=` outside the generation is refused (MAINPID=1 would otherwise
/// make every signal a kill(-1)), and so is an `FDNAME` that would break
/// `LISTEN_FDNAMES`. The READY=1 beside them still counts.
#[test]
fn mainpid_and_fdname_from_a_generation_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import array, os, signal, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
fd = os.memfd_create("x")
s.sendmsg([b"FDSTORE=1\nFDNAME=a:b\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0, os.environ["NOTIFY_SOCKET"])
s.sendto(b"MAINPID=1\nREADY=1\n", os.environ["NOTIFY_SOCKET"])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    signal.pause()
"#;
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args(["-c", script])
        .spawn();
    devsup.wait_event(1, "FDNAME=\"a:b\" is not a valid name", TIMEOUT);
    devsup.wait_event(1, "MAINPID=1 is not a process of this generation", TIMEOUT);
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    assert_eq!(devsup.count_lines("stored"), 0);
    devsup.signal(Signal::SIGINT);
    assert_eq!(devsup.wait_exit(TIMEOUT).code(), Some(0));
}

/// Every path under `root` (not `root` itself), with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            }
            out.push((entry.path(), meta.permissions().mode()));
        }
    }
    out
}

#[test]
fn nothing_devsup_creates_is_world_writable_or_left_in_the_temp_dir() {
    // XDG_RUNTIME_DIR empty (so the temporary directory is used), then a
    // fresh one.
    for use_runtime_dir in [false, true] {
        let dir = temp_dir();
        let tmp = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let runtime_env = match use_runtime_dir {
            true => runtime.path().as_os_str().to_owned(),
            false => OsString::new(),
        };
        let devsup = Devsup::builder(dir.path())
            .arg("--no-watch")
            .env("TMPDIR", tmp.path())
            .env("XDG_RUNTIME_DIR", &runtime_env)
            .spawn();
        devsup.wait_event(1, "ready", TIMEOUT);
        devsup.reload();
        devsup.wait_event(2, "ready", TIMEOUT);

        let (used, unused) = match use_runtime_dir {
            true => (runtime.path(), tmp.path()),
            false => (tmp.path(), runtime.path()),
        };
        let created = walk(used);
        let shown: Vec<String> = (created.iter())
            .map(|(p, mode)| format!("{} {mode:o}", p.display()))
            .collect();
        eprintln!("devsup created in {}: {shown:#?}", used.display());
        assert!(
            created.iter().any(|(p, _)| p.ends_with("gen-2.sock")),
            "the notify sockets are there: {created:?}"
        );
        for (path, mode) in &created {
            assert_eq!(
                mode & 0o002,
                0,
                "{} is world-writable ({mode:o})",
                path.display()
            );
            if path.parent() == Some(used) {
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{} is private to the user ({mode:o})",
                    path.display()
                );
            }
        }
        assert!(walk(unused).is_empty(), "nothing in {}", unused.display());

        stop_cleanly(&devsup);
        let left: Vec<_> = walk(tmp.path())
            .into_iter()
            .chain(walk(runtime.path()))
            .collect();
        assert!(left.is_empty(), "left behind after exit: {left:?}");
    }
}

/// devsup SIGKILLed leaves nothing behind either: its guard removes the
/// private notify directory and the unix socket's path once it has
/// stopped the generations.
#[test]
fn the_guard_removes_devsups_files_after_a_sigkill() {
    let dir = temp_dir();
    let runtime = tempfile::tempdir().unwrap();
    let unix = dir.path().join("app.sock");
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .arg("-s")
        .arg(format!("admin=unix::{}", unix.display()))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    assert!(unix.exists());
    assert!(!walk(runtime.path()).is_empty(), "the notify directory");

    devsup.signal(Signal::SIGKILL);
    devsup.wait_exit(TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || !unix.exists()),
        "{} is removed",
        unix.display()
    );
    assert!(
        wait_until(TIMEOUT, || walk(runtime.path()).is_empty()),
        "left in the runtime directory: {:?}",
        walk(runtime.path())
    );
}

/// A directory at least `len` bytes long under `root`.
fn long_dir(root: &Path, len: usize) -> PathBuf {
    let mut dir = root.to_path_buf();
    while dir.as_os_str().len() < len {
        dir.push("a-directory-with-a-long-name");
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `NOTIFY_SOCKET` is never a hard requirement: a runtime or temporary
/// directory too long for a socket path (over `SUN_LEN`), or one devsup
/// cannot create anything in, makes devsup use another place, and a Type=notify
/// server still gets its socket and hands over through it.
#[test]
fn an_unusable_runtime_or_temp_dir_does_not_stop_notify() {
    let root = temp_dir();
    let long = long_dir(root.path(), 120);
    let long = long.as_os_str();
    // (XDG_RUNTIME_DIR, TMPDIR)
    let cases: [(&std::ffi::OsStr, &std::ffi::OsStr); 2] = [(long, long), ("/proc".as_ref(), long)];
    for (runtime, tmp) in cases {
        eprintln!("XDG_RUNTIME_DIR={runtime:?} TMPDIR={tmp:?}");
        let dir = temp_dir();
        let devsup = Devsup::builder(dir.path())
            .arg("--no-watch")
            .env("XDG_RUNTIME_DIR", runtime)
            .env("TMPDIR", tmp)
            .server("python3")
            .server_args([fixture()])
            .spawn();
        devsup.wait_event(1, "status: notify server up", TIMEOUT);
        devsup.wait_event(1, "ready", TIMEOUT);
        devsup.reload();
        devsup.wait_event(2, "ready", TIMEOUT);
        stop_cleanly(&devsup);
        // The status socket cannot be made there either, which is said
        // once (`devsup status` cannot reach it); nothing else warns.
        let status = devsup.count_lines("`devsup status` cannot reach this devsup");
        assert!(status <= 1, "{}", devsup.log_text());
        assert_eq!(
            devsup.count_lines("warning") - status,
            0,
            "{}",
            devsup.log_text()
        );
    }
}

/// The private directory removed while devsup runs (`rm -rf
/// $XDG_RUNTIME_DIR/devsup-*`): the next generation gets a new one.
#[test]
fn a_removed_notify_directory_is_made_again() {
    let dir = temp_dir();
    let runtime = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .server("python3")
        .server_args([fixture()])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    for entry in std::fs::read_dir(runtime.path()).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    devsup.reload();
    devsup.wait_event(2, "status: notify server up", TIMEOUT);
    devsup.wait_event(2, "ready", TIMEOUT);
    stop_cleanly(&devsup);
    assert!(
        walk(runtime.path()).is_empty(),
        "the new directory is removed on exit too: {:?}",
        walk(runtime.path())
    );
}

/// A launcher names its server with `MAINPID=`, in a session of its own;
/// the server's own messages (sent at once) are heard, as its group
/// already gets the generation's signals.
#[test]
fn messages_from_the_mainpid_process_are_heard() {
    let dir = temp_dir();
    let script = dir.path().join("launch.py");
    std::fs::write(
        &script,
        r#"
import os, signal, socket, subprocess, sys
def notify(msg):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg, os.environ["NOTIFY_SOCKET"])
if sys.argv[1:] == ["main"]:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stdin.readline()
    notify(b"STATUS=main up\n")
    notify(b"READY=1\n")
    while True:
        signal.pause()
child = subprocess.Popen([sys.executable, __file__, "main"], stdin=subprocess.PIPE, start_new_session=True)
notify(f"MAINPID={child.pid}\n".encode())
child.stdin.write(b"go\n")
child.stdin.close()
sys.exit(child.wait())
"#,
    )
    .unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args([&script])
        .spawn();
    devsup.wait_event(1, "MAINPID=", TIMEOUT);
    let line = devsup.wait_for_line(
        |l: &str| event(1, "ready").is_match(l) || l.contains("dropped a notify message"),
        TIMEOUT,
    );
    assert!(event(1, "ready").is_match(&line), "{}", devsup.log_text());
    devsup.wait_event(1, "status: main up", TIMEOUT);
    assert_eq!(devsup.count_lines("dropped a notify message"), 0);
    stop_cleanly(&devsup);
}

/// The same file sent twice with `FDSTORE=1` (twice in one datagram, then
/// again) is stored once, as systemd does: the next generation gets it
/// once.
#[test]
fn the_same_fd_stored_twice_is_kept_once() {
    let dir = temp_dir();
    let script = r#"
import array, os, signal, socket
gen = os.environ["DEVSUP_GENERATION"]
print(f"gen{gen} names={os.environ.get('LISTEN_FDNAMES', '')}", flush=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
if gen == "1":
    fd = os.memfd_create("cache")
    for fds in ([fd, fd], [fd]):
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        s.sendmsg([b"FDSTORE=1\nFDNAME=cache\n"], rights, 0, os.environ["NOTIFY_SOCKET"])
s.sendto(b"READY=1\n", os.environ["NOTIFY_SOCKET"])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    signal.pause()
"#;
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args(["-c", script])
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    devsup.reload();
    devsup.wait_event(2, "ready", TIMEOUT);
    let names = |generation: &str| {
        let prefix = format!("gen{generation} names=");
        (devsup.stdout_lines().iter()).find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    };
    assert!(wait_until(TIMEOUT, || names("2").is_some()));
    assert_eq!(names("2").unwrap(), "http:cache", "{}", devsup.log_text());
    stop_cleanly(&devsup);
}
