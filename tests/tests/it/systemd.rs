//! systemd above devsup: devsup socket-activated by `systemd-socket-activate`
//! (Debian's systemd package), with a `NOTIFY_SOCKET` this test listens
//! on as the service manager would. It serves on the inherited socket,
//! reloads on SIGHUP under load without a failed request, and reports
//! READY=1, RELOADING=1 + MONOTONIC_USEC, READY=1 around each reload, and
//! STOPPING=1, in that order.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};

use devsup_tests::harness::{Signal, TIMEOUT, binaries, pid_alive, wait_until};
use devsup_tests::{http, load};
use nix::unistd::Pid;
use serde_json::Value;

/// Ends the processes a test started, by pid, whatever happens.
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if pid_alive(pid) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// devsup's events from its stdout, one JSON object per line.
fn event_reader(child: &mut Child) -> Receiver<Result<Value, String>> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // One write, so that devsup's own stderr does not land inside it.
            let shown = format!("[devsup event] {line}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), shown.as_bytes());
            let value = serde_json::from_str(&line)
                .map_err(|e| format!("stdout holds only events, but: {e}: {line}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_event(rx: &Receiver<Result<Value, String>>, kind: &str, generation: Option<u64>) -> Value {
    loop {
        let event = rx
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("waiting for {kind} gen={generation:?}: {e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        if event["event"] == kind && generation.is_none_or(|g| event["gen"] == g) {
            return event;
        }
    }
}

/// Reads the notify socket as systemd would, at once and all along.
fn notify_reader(socket: UnixDatagram) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

fn free_port() -> u16 {
    // systemd-socket-activate takes no port 0; a port just freed is
    // free unless another process takes it in between (then the bind
    // error says so).
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[test]
fn socket_activated_devsup_reloads_under_load_with_the_notify_sequence() {
    let activate = Path::new("/usr/bin/systemd-socket-activate");
    assert!(
        activate.exists(),
        "systemd-socket-activate is missing: apt-get install systemd"
    );
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = notify_reader(UnixDatagram::bind(&notify_path).unwrap());
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let mut child = Command::new(activate)
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--fdname=web")
        // It passes on only what -E names (and HOME, PATH, TERM).
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg(format!(
            "--setenv=XDG_RUNTIME_DIR={}",
            runtime.path().display()
        ))
        .arg("--setenv=NO_COLOR=1")
        .arg(&binaries().devsup)
        .args([
            "--no-watch",
            "--events",
            "-",
            "--build",
            "env > build-env.txt",
        ])
        .arg("--")
        .arg(&binaries().server)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _reap = Reap(vec![child.id() as i32]);
    let events = event_reader(&mut child);

    // systemd-socket-activate starts devsup on the first connection; that
    // connection waits in the inherited socket's backlog until gen 1 takes it.
    let first = wait_until(TIMEOUT, || TcpListener::bind(addr).is_err());
    assert!(first, "systemd-socket-activate listens on {addr}");
    let answer = http::get(addr, "/").unwrap();
    assert_eq!(answer.generation(), Some(1), "{}", answer.body);
    let listening = next_event(&events, "listening", None);
    assert_eq!(listening["inherited"], true, "{listening}");
    assert_eq!(listening["name"], "web", "{listening}");
    assert_eq!(listening["addr"], addr.to_string(), "{listening}");
    next_event(&events, "ready", Some(1));

    // devsup's pid, from its status socket.
    let status = Command::new(&binaries().devsup)
        .args(["status", "--json"])
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let devsup_pid = status["pid"].as_i64().unwrap() as i32;
    // systemd-socket-activate execs devsup in its place, as systemd would.
    assert_eq!(devsup_pid, child.id() as i32);

    // What devsup passes on is its own, not systemd's.
    let own_socket = http::get(addr, "/env?name=NOTIFY_SOCKET").unwrap().body;
    assert!(
        own_socket.contains("gen-1.sock") && !own_socket.contains("notify.sock"),
        "a generation gets devsup's per-generation NOTIFY_SOCKET: {own_socket}"
    );
    let names = http::get(addr, "/env?name=LISTEN_FDNAMES").unwrap().body;
    assert_eq!(names, "web", "the socket's name is passed on");
    let build_env = std::fs::read_to_string(dir.path().join("build-env.txt")).unwrap();
    for var in [
        "NOTIFY_SOCKET=",
        "LISTEN_FDS=",
        "LISTEN_PID=",
        "LISTEN_FDNAMES=",
    ] {
        assert!(
            !build_env.lines().any(|l| l.starts_with(var)),
            "the build must not see devsup's own {var}"
        );
    }

    // Reloads under load: not a request lost.
    let run = load::start(load::LoadConfig::new(addr));
    assert!(run.wait_ok(50, TIMEOUT), "load is flowing");
    let reloads = 5;
    let mut reload_started = Vec::new();
    for generation in 2..=reloads + 1 {
        reload_started.push(monotonic_usec());
        nix::sys::signal::kill(Pid::from_raw(devsup_pid), Signal::SIGHUP).unwrap();
        next_event(&events, "exited", Some(generation - 1));
        assert!(run.wait_completed(run.completed() + 20, TIMEOUT));
    }
    let report = run.finish();
    eprintln!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.generations.len() >= 3, "{report}");

    nix::sys::signal::kill(Pid::from_raw(devsup_pid), Signal::SIGTERM).unwrap();
    let stopped = next_event(&events, "stopped", None);
    assert_eq!(stopped["code"], 0);
    assert!(
        wait_until(TIMEOUT, || !pid_alive(devsup_pid)),
        "devsup exits"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    // Every message was sent before devsup exited; read them all.
    let mut messages: Vec<String> = Vec::new();
    while !messages.last().is_some_and(|m| m.starts_with("STOPPING=1")) {
        match notify.recv_timeout(TIMEOUT) {
            Ok(m) => messages.push(m),
            Err(e) => panic!("no STOPPING=1 ({e}); got {messages:#?}"),
        }
    }
    eprintln!("notify messages: {messages:#?}");
    let mut expected = vec!["READY=1\nSTATUS=gen=1 ready, serving".to_owned()];
    for generation in 2..=reloads + 1 {
        expected.push(format!("RELOADING=1 (gen={})", generation - 1));
        expected.push(format!("READY=1\nSTATUS=gen={generation} ready, serving"));
    }
    expected.push("STOPPING=1\nSTATUS=shutting down (SIGTERM)".to_owned());
    // RELOADING=1 carries MONOTONIC_USEC, taken after the test sent SIGHUP.
    let shown: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Some(rest) = m.strip_prefix("RELOADING=1\nMONOTONIC_USEC=") else {
                return m.clone();
            };
            let (usec, status) = rest.split_once('\n').unwrap();
            let usec: u64 = usec.parse().unwrap();
            let sent = reload_started[(i - 1) / 2];
            assert!(
                usec >= sent,
                "MONOTONIC_USEC={usec} before the SIGHUP at {sent}"
            );
            assert!(status.starts_with("STATUS=reloading (sighup)"), "{m}");
            let serving = status
                .rsplit("; ")
                .next()
                .unwrap()
                .trim_end_matches(" serving");
            format!("RELOADING=1 ({serving})")
        })
        .collect();
    assert_eq!(shown, expected);
}
