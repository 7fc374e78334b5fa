//! The reference server run the way devsup runs it, without devsup: a
//! listening socket at fd 3, the ready channel at fd 4,
//! `DEVSUP_GENERATION` set. Each test waits on what the process says
//! (READY on the channel, a log line, a response), never on a fixed sleep.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use devsup_tests::harness::{KillOnDrop, Signal, TIMEOUT, binaries, inherit_fds, kill, wait_until};
use devsup_tests::http;

/// One server process, as devsup would start it.
struct Generation {
    child: KillOnDrop,
    addr: SocketAddr,
    ready: UnixStream,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Generation {
    fn spawn(generation: u64, args: &[&str]) -> Generation {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ready, theirs) = UnixStream::pair().unwrap();
        ready.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut command = Command::new(&binaries().server);
        command
            .args(args)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDS_FIRST_FD", "3")
            .env("LISTEN_FDNAMES", "http")
            .env("DEVSUP_READY_FD", "4")
            .env("DEVSUP_GENERATION", generation.to_string())
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        inherit_fds(&mut command, &[listener.as_raw_fd(), theirs.as_raw_fd()]);
        let mut child = KillOnDrop(command.spawn().unwrap());
        let (tx, stderr) = mpsc::channel();
        let pipe = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Generation {
            child,
            addr,
            ready,
            stderr,
            log: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The next message line on the ready channel, or `None` at EOF.
    fn message(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let mut byte = [0];
        loop {
            match self.ready.read(&mut byte).expect("ready channel") {
                0 if line.is_empty() => return None,
                0 => panic!("cut-off message {line:?}"),
                _ if byte[0] == b'\n' => return Some(String::from_utf8(line).unwrap()),
                _ => line.push(byte[0]),
            }
        }
    }

    /// Waits for a log line containing `needle`, and returns it.
    fn log_line(&mut self, needle: &str) -> String {
        let until = Instant::now() + TIMEOUT;
        loop {
            if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!("no log line with {needle:?} in {:#?}", self.log),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid() as i32, signal);
    }

    fn wait(&mut self) -> ExitStatus {
        let child = &mut self.child.0;
        let mut status = None;
        let exited = wait_until(TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert!(exited, "generation did not exit");
        status.unwrap()
    }

    /// One request on its own connection (`Connection: close`).
    fn get(&self, path: &str) -> http::Response {
        http::get(self.addr, path).unwrap()
    }
}

#[test]
fn serves_the_inherited_socket_then_drains_on_sigterm() {
    let mut g = Generation::spawn(3, &["--drain-grace", "100"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
    let pid = g.pid();
    let tag = format!("devsup-server gen=3 pid={pid}: ");
    assert!(g.log_line("started").starts_with(&tag));
    assert!(g.log_line("(inherited)").contains(&g.addr.to_string()));
    g.log_line(&format!("{tag}ready"));

    let root = g.get("/");
    assert_eq!(root.status, 200);
    assert_eq!(root.body, format!("gen=3 pid={pid}\n"));
    assert_eq!(root.header("x-generation"), Some("3"));
    assert_eq!(root.header("x-pid"), Some(pid.to_string().as_str()));

    // Captured before listenfd removed it.
    assert_eq!(g.get("/env?name=LISTEN_FDS").body, "1");
    assert_eq!(g.get("/env?name=LISTEN_FDNAMES").body, "http");
    assert_eq!(g.get("/env?name=DEVSUP_GENERATION").body, "3");
    let unset = g.get("/env?name=LISTEN_PID");
    assert_eq!(unset.status, 404);
    assert_eq!(unset.header("x-generation"), Some("3"));

    assert_eq!(
        g.get("/sleep?ms=10").body,
        format!("gen=3 pid={pid} slept=10\n")
    );
    let stream = g.get("/stream?chunks=3&interval_ms=5");
    assert_eq!(stream.body, "gen=3 chunk=0\ngen=3 chunk=1\ngen=3 chunk=2\n");

    let fds = g.get("/fds").body;
    let fds: Vec<u32> = fds.lines().map(|l| l.parse().unwrap()).collect();
    assert!(fds.contains(&3) && fds.contains(&4), "{fds:?}");

    assert_eq!(g.get("/reload").body, "reload requested\n");
    assert_eq!(g.message().as_deref(), Some("DEVSUP_RELOAD=1"));

    g.signal(Signal::SIGTERM);
    assert_eq!(g.message().as_deref(), Some("STOPPING=1"));
    assert!(g.log_line("draining").contains("after SIGTERM, "));
    assert!(g.wait().success());
    assert!(g.log_line("exited after ").starts_with(&tag));
}

#[test]
fn fail_before_ready_exits_1_without_ready() {
    let mut g = Generation::spawn(2, &["--fail-before-ready", "1,2"]);
    assert_eq!(g.message(), None);
    assert_eq!(g.wait().code(), Some(1));
    g.log_line("exiting before ready");
}

#[test]
fn fail_before_ready_spares_other_generations() {
    let mut g = Generation::spawn(3, &["--fail-before-ready", "1,2"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
}

#[test]
fn never_ready_serves_without_ready() {
    let mut g = Generation::spawn(1, &["--never-ready", "all"]);
    g.log_line("never sending READY");
    assert_eq!(g.get("/").status, 200);
    g.signal(Signal::SIGTERM);
    // The first message is the STOPPING of the drain: READY never came.
    assert_eq!(g.message().as_deref(), Some("STOPPING=1"));
    assert!(g.wait().success());
}

#[test]
fn ignore_drain_keeps_serving_through_sigterm() {
    let mut g = Generation::spawn(4, &["--ignore-drain", "4"]);
    assert_eq!(g.message().as_deref(), Some("READY=1"));
    g.signal(Signal::SIGTERM);
    g.log_line("ignoring SIGTERM");
    assert_eq!(g.get("/").body, format!("gen=4 pid={}\n", g.pid()));
    g.signal(Signal::SIGINT);
    assert_eq!(g.message().as_deref(), Some("STOPPING=1"));
    assert!(g.wait().success());
}
