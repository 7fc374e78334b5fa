//! What a generation's processes do beyond the plain case.
//!
//! Servers that daemonize (issue 19, defect 1): a generation whose leader
//! forks, calls `setsid` (and forks again) and exits while the daemon
//! serves. The daemon is the generation's: it is not a crash, it is
//! drained with the generation, and nothing of it outlives devsup. Run
//! with a cgroup per generation where the machine allows one, and with
//! `DEVSUP_NO_CGROUP=1` (adopted orphans told by their environment).
//!
//! Servers that write to a dead output (issue 19, defect 6): once devsup's
//! own stdout and stderr are gone, the generations it starts still get an
//! output that works, and serve.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use devsup_tests::devlog;
use devsup_tests::harness::{
    Devsup, KillOnDrop, Signal, TIMEOUT, binaries, kill, pid_alive, wait_until,
};
use devsup_tests::tools;

/// The issue's fixture, made observable: it daemonizes (fork, setsid,
/// and with `DOUBLE=1` a second fork), writes its pid to `$DAEMON_PIDS`,
/// says READY=1 on the ready channel, and answers every connection with
/// its pid.
const DAEMON: &str = r#"
import os, socket, sys
if os.fork():
    sys.exit(0)
os.setsid()
if os.environ.get("DOUBLE") == "1" and os.fork():
    sys.exit(0)
with open(os.environ["DAEMON_PIDS"], "a") as f:
    f.write(f"{os.getpid()}\n")
os.write(int(os.environ["DEVSUP_READY_FD"]), b"READY=1\n")
s = socket.socket(fileno=3)
while True:
    c, _ = s.accept()
    c.sendall(f"{os.getpid()}\n".encode())
    c.close()
"#;

/// Kills, by pid, every daemon the fixture wrote down, whatever happened.
struct Daemons(PathBuf);

impl Daemons {
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The pid of the server that answers on `addr`.
fn served_by(addr: SocketAddr) -> i32 {
    try_served_by(addr).expect("an answer with a pid")
}

/// The pid of the server that answers on `addr` within a few seconds.
fn try_served_by(addr: SocketAddr) -> Option<i32> {
    // Sends nothing: the fixtures close without reading.
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    answer.trim().parse().ok()
}

fn start(dir: &Path, cgroup: bool, double: bool) -> Devsup {
    std::fs::write(dir.join("daemon.py"), DAEMON).unwrap();
    Devsup::builder(dir)
        .args(["--no-watch", "-v"])
        .server("python3")
        .server_args(["daemon.py"])
        .env("DAEMON_PIDS", dir.join("pids"))
        .env("DOUBLE", if double { "1" } else { "0" })
        .env("DEVSUP_NO_CGROUP", if cgroup { "0" } else { "1" })
        .spawn()
}

/// Whether the log says each generation runs in a cgroup; with `cgroup`
/// asked for and none possible here, one loud SKIPPED line (a failure
/// with DEVSUP_REQUIRE_TOOLS=1).
fn tracking_as_asked(devsup: &Devsup, cgroup: bool) -> bool {
    let line = devsup.wait_for_line("cgroup", TIMEOUT);
    let has = line.contains("each generation runs in a cgroup");
    if cgroup && !has {
        let why = Err(tools::Unavailable(format!("no cgroup v2 here: {line}")));
        return tools::require::<()>("daemons in a cgroup per generation", why).is_some();
    }
    assert_eq!(has, cgroup, "{line}");
    true
}

/// The issue's scenario: the daemon serves, survives no restart, is
/// drained with its generation on a reload, and is gone when devsup is.
fn daemon_lives_and_dies_with_its_generation(cgroup: bool, double: bool) {
    let dir = tempfile::tempdir().unwrap();
    let daemons = Daemons(dir.path().join("pids"));
    let devsup = start(dir.path(), cgroup, double);
    if !tracking_as_asked(&devsup, cgroup) {
        return;
    }
    let addr = devsup.addr();
    devsup.wait_event(1, "ready", TIMEOUT);
    // Its leader exited: said so, not taken for a crash.
    devsup.wait_for_line("its first process, exited with status 0", TIMEOUT);
    let first = served_by(addr);
    assert_eq!(daemons.pids(), [first], "gen 1's daemon serves");

    devsup.signal(Signal::SIGHUP);
    devsup.wait_event(2, "ready", TIMEOUT);
    devsup.wait_event(1, "exited", TIMEOUT);
    // Gone means gone: no process of gen 1 lives once devsup says so.
    assert!(!pid_alive(first), "gen 1's daemon outlived gen 1");
    let second = served_by(addr);
    assert_ne!(second, first);

    devsup.signal(Signal::SIGINT);
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", devsup.log_text());
    // Its last lines may still be on their way through the pipe.
    devsup.wait_for_line("every generation has exited", TIMEOUT);
    let log = devsup.log_text();
    assert!(!log.contains("on its own"), "no crash was seen:\n{log}");
    assert!(!log.contains("gen=3"), "no restart:\n{log}");
    let pids = daemons.pids();
    assert_eq!(pids.len(), 2, "one daemon per generation: {pids:?}");
    // Reaped by devsup before it exited: nothing is left, not even a
    // zombie.
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
    assert!(alive.is_empty(), "daemons outlived devsup: {alive:?}");
}

#[test]
fn a_daemon_is_its_generation_in_a_cgroup() {
    daemon_lives_and_dies_with_its_generation(true, false);
}

#[test]
fn a_daemon_is_its_generation_without_a_cgroup() {
    daemon_lives_and_dies_with_its_generation(false, false);
}

#[test]
fn a_double_forked_daemon_is_its_generation_in_a_cgroup() {
    daemon_lives_and_dies_with_its_generation(true, true);
}

#[test]
fn a_double_forked_daemon_is_its_generation_without_a_cgroup() {
    daemon_lives_and_dies_with_its_generation(false, true);
}

/// A server that writes a line to stdout and one to stderr at start (and
/// dies of it if they are dead: Python raises BrokenPipeError), writes its
/// pid to `$SERVER_PIDS`, says READY=1 and answers with its pid.
const CHATTY: &str = r#"
import os, socket, sys
print(f"gen {os.environ['DEVSUP_GENERATION']} up", flush=True)
print("and on stderr", file=sys.stderr, flush=True)
with open(os.environ["SERVER_PIDS"], "a") as f:
    f.write(f"{os.getpid()}\n")
os.write(int(os.environ["DEVSUP_READY_FD"]), b"READY=1\n")
s = socket.socket(fileno=3)
while True:
    c, _ = s.accept()
    c.sendall(f"{os.getpid()}\n".encode())
    c.close()
"#;

/// devsup's stdout and stderr are pipes whose reader goes away once gen
/// 1 serves (`devsup … 2>&1 | head -c 1`): the next two generations still
/// start, write their lines, and serve.
#[test]
fn generations_serve_after_devsup_lost_its_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatty.py"), CHATTY).unwrap();
    let servers = Daemons(dir.path().join("pids"));
    let mut child = Command::new(&binaries().devsup)
        .args(["--port", "0", "--no-watch", "--", "python3", "chatty.py"])
        .current_dir(dir.path())
        .env("SERVER_PIDS", dir.path().join("pids"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devsup starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let devsup = KillOnDrop(child);
    let pid = devsup.0.id() as i32;
    let mut addr = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("devsup's log");
        eprintln!("[devsup] {line}");
        addr = addr.or_else(|| devlog::parse_listen_addr(&line));
        if line.contains("gen=1 ready") {
            break;
        }
    }
    // The reader goes away: devsup's stdout and stderr are dead pipes.
    drop(stdout);
    let addr = addr.expect("a listening line");
    assert_eq!(Some(served_by(addr)), servers.pids().first().copied());
    for generation in 2..=3 {
        kill(pid, Signal::SIGHUP);
        // The newest generation wrote its pid down and answers (the one
        // before may answer too until it has drained).
        let newest_serves = || {
            let pids = servers.pids();
            pids.len() >= generation && try_served_by(addr) == Some(pids[generation - 1])
        };
        assert!(
            wait_until(TIMEOUT, newest_serves),
            "gen {generation} never served: pids started {:?}",
            servers.pids()
        );
    }
    assert_eq!(
        servers.pids().len(),
        3,
        "no generation died and was restarted"
    );
    kill(pid, Signal::SIGINT);
    let mut devsup = devsup;
    assert!(wait_until(TIMEOUT, || devsup
        .0
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
}
