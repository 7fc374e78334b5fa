//! Every example under `examples/` reloads under devsup with zero failed
//! requests: 8 keep-alive clients send `GET /` through three SIGHUP
//! reloads, each old generation drains and exits 0 by itself, and every
//! request is answered by the generation and pid it says.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use devsup_tests::harness::{
    Devsup, KillOnDrop, Signal, TIMEOUT, inherit_fds, wait_until, workspace_root,
};
use devsup_tests::http;
use devsup_tests::load::{self, LoadConfig};

#[test]
fn axum_reloads_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(example("example-axum"))
        .spawn();
    reloads_under_load(&devsup);
}

#[test]
fn actix_reloads_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(example("example-actix"))
        .spawn();
    reloads_under_load(&devsup);
}

#[test]
fn hyper_reloads_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(example("example-hyper"))
        .spawn();
    reloads_under_load(&devsup);
}

#[test]
fn std_blocking_reloads_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server(example("example-std"))
        .spawn();
    reloads_under_load(&devsup);
}

#[test]
fn python_reloads_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let script = workspace_root().join("examples/python/server.py");
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .server("python3")
        .server_args([script])
        .spawn();
    reloads_under_load(&devsup);
}

/// server.py's sd_notify path on its own, without devsup: given a listener
/// at fd 3 and a `NOTIFY_SOCKET` (a path, then an abstract `@name`) and no
/// `DEVSUP_READY_FD`, it sends `READY=1` there, serves, and exits 0 on
/// SIGTERM.
#[test]
fn python_sends_ready_to_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let by_path = UnixDatagram::bind(&path).unwrap();
    python_notifies(&by_path, path.as_os_str());

    let name = format!("devsup-examples-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let by_name = UnixDatagram::bind_addr(&addr).unwrap();
    python_notifies(&by_name, format!("@{name}"));
}

fn python_notifies(notify: &UnixDatagram, notify_socket: impl AsRef<OsStr>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new("python3");
    command
        .arg(workspace_root().join("examples/python/server.py"))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDS_FIRST_FD", "3")
        .env("DEVSUP_GENERATION", "7")
        .env("NOTIFY_SOCKET", notify_socket)
        .env_remove("DEVSUP_READY_FD")
        .stdin(Stdio::null());
    inherit_fds(&mut command, &[fd]);
    let child = KillOnDrop(command.spawn().unwrap());
    // The child's copy at fd 3 is the only one left.
    drop(listener);

    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("a datagram within TIMEOUT");
    assert_eq!(&buf[..n], b"READY=1");
    let response = http::get(addr, "/").unwrap();
    assert_eq!(response.gen_pid(), Some((7, child.0.id() as i32)));

    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let mut child = child;
    assert!(
        wait_until(TIMEOUT, || child.0.try_wait().unwrap().is_some()),
        "server.py exits on SIGTERM"
    );
    assert!(child.0.wait().unwrap().success());
}

/// Generation 1 serves, then three reloads under 8 keep-alive clients; no
/// request may fail, and each old generation must drain and exit 0 by
/// itself (not be killed at the drain timeout).
fn reloads_under_load(devsup: &Devsup) {
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    let first = http::get(addr, "/").unwrap();
    assert_eq!(first.generation(), Some(1), "{first:?}");
    assert_eq!(first.pid(), Some(devsup.generation_pid(1, TIMEOUT)));
    assert_eq!(first.header("x-generation"), Some("1"), "{first:?}");

    let run = load::start(LoadConfig {
        conns: 8,
        ..LoadConfig::new(addr)
    });
    assert!(run.wait_ok(50, TIMEOUT), "generation 1 serves the load");
    for generation in 2..=4 {
        devsup.reload();
        devsup.wait_event(generation, "ready", TIMEOUT);
        let exited = devsup.wait_event(generation - 1, "exited", TIMEOUT);
        assert!(exited.contains("with status 0"), "drained itself: {exited}");
        let ok = run.ok();
        assert!(
            run.wait_ok(ok + 20, TIMEOUT),
            "generation {generation} serves the load"
        );
    }
    let report = run.finish();
    eprintln!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.generations.len() >= 3, "{report}");
    let pids = devsup.generation_pids();
    for (generation, seen) in &report.pids {
        assert_eq!(
            *seen,
            BTreeSet::from([pids[generation]]),
            "generation {generation} answered with its own pid"
        );
    }
}

/// The Rust examples, built together by [`example`].
const PACKAGES: [&str; 4] = [
    "example-axum",
    "example-actix",
    "example-hyper",
    "example-std",
];

/// The path of an example's binary. The first call builds all of them with
/// one `$CARGO build -p ... -p ...` into the target directory and profile
/// this test was built in, as the harness builds devsup: one build resolves
/// one feature set for the dependencies they share (tokio, hyper), where a
/// build per package would compile those once per package.
fn example(package: &str) -> PathBuf {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    assert!(PACKAGES.contains(&package), "{package} is not in PACKAGES");
    PROFILE_DIR.get_or_init(build_examples).join(package)
}

fn build_examples() -> PathBuf {
    devsup_tests::harness::build_packages(&PACKAGES)
}
