//! The probe against real processes: a python3 child that inherits a
//! listening socket and, on command, waits on it in each way a server does.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Reads commands from stdin; `started` once running, then per command
/// one wait on the socket at fd 3 (never returns from it).
const WAITER: &str = r#"
import select, socket, sys, threading
s = socket.socket(fileno=3)
print("started", flush=True)
how = sys.stdin.readline().strip()
print("waiting", flush=True)
if how == "accept":
    s.accept()
elif how == "epoll":
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
    ep.poll()
elif how == "epoll-dup":
    d = socket.socket(fileno=__import__("os").dup(3))
    ep = select.epoll()
    ep.register(d.fileno(), select.EPOLLIN)
    __import__("os").close(d.detach())
    threading.Event().wait()
elif how == "poll":
    p = select.poll()
    p.register(s.fileno(), select.POLLIN)
    p.poll()
elif how == "select":
    select.select([sys.stdin, s], [], [])
elif how == "tokio-trap":
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
    threading.Thread(target=ep.poll, daemon=True).start()
    s.accept()
elif how == "other":
    select.select([sys.stdin], [], [])
"#;

struct Waiter {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    socket: PassedSocket,
    _listener: TcpListener,
}

impl Waiter {
    /// A python3 waiter on a new listener (`nonblocking` or not), past
    /// its `started` line; `None` (after one loud line) without python3.
    fn start(nonblocking: bool) -> Option<Waiter> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(nonblocking).unwrap();
        let fd = listener.as_raw_fd();
        let mut command = Command::new("python3");
        command
            .args(["-c", WAITER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: only dup2/fcntl between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if fd == 3 {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                eprintln!("!!! SKIPPED readiness probe against a real process: no python3");
                return None;
            }
            Err(err) => panic!("spawning python3: {err}"),
        };
        let mut waiter = Waiter {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            socket: PassedSocket::of_fd(fd).unwrap(),
            _listener: listener,
        };
        waiter.expect_line("started");
        Some(waiter)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn expect_line(&mut self, want: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want);
    }

    fn command(&mut self, how: &str) {
        writeln!(self.stdin, "{how}").unwrap();
        self.expect_line("waiting");
    }

    fn probe(&self) -> Probe {
        probe(&[self.pid()], &[self.socket])
    }

    /// Probes until ready (the child prints `waiting` just before its
    /// syscall, so this is a bounded wait, not a sleep).
    fn wait_ready(&self) -> Probe {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = self.probe();
            if probe.ready() {
                return probe;
            }
            assert!(Instant::now() < deadline, "never ready: {probe:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a waiter, checks it is not ready before it waits, commands
/// `how` and returns the ready probe.
fn ready_after(how: &str, nonblocking: bool) -> Option<(Waiter, Probe)> {
    let mut waiter = Waiter::start(nonblocking)?;
    // Blocked in read(stdin): it holds the socket but does not wait on it.
    let before = waiter.probe();
    assert!(!before.ready(), "{before:?}");
    assert!(before.unreadable.is_empty(), "{before:?}");
    waiter.command(how);
    let probe = waiter.wait_ready();
    Some((waiter, probe))
}

#[test]
fn blocking_accept() {
    let Some((w, probe)) = ready_after("accept", false) else {
        return;
    };
    assert!(
        probe.waits.iter().any(|wait| matches!(wait,
                Wait::Blocked { pid, syscall, fd: 3, blocking: true, .. }
                    if *pid == w.pid() && syscall.starts_with("accept"))),
        "{probe:?}"
    );
    assert_eq!(probe.blocking_accepts().count(), 1);
    // One thread, no event loop: not the trap.
    assert_eq!(probe.event_loop_blocked_in_accept(), None);
}

#[test]
fn epoll_interest_list() {
    let Some((w, probe)) = ready_after("epoll", true) else {
        return;
    };
    assert!(
        probe.waits.iter().any(|wait| matches!(wait,
                Wait::Epoll { pid, inode, .. } if *pid == w.pid() && *inode == w.socket.inode)),
        "{probe:?}"
    );
    assert_eq!(probe.blocking_accepts().count(), 0);
}

/// The socket was added to epoll through a dup that is closed since:
/// the interest list still names the socket (by ino/sdev).
#[test]
fn epoll_through_a_closed_dup() {
    let Some((_w, probe)) = ready_after("epoll-dup", true) else {
        return;
    };
    assert!(
        probe.waits.iter().any(|w| matches!(w, Wait::Epoll { .. })),
        "{probe:?}"
    );
}

#[test]
fn poll_array_in_memory() {
    let Some((_w, probe)) = ready_after("poll", true) else {
        return;
    };
    assert!(
        probe.waits.iter().any(|w| matches!(w,
                Wait::Blocked { syscall, fd: 3, .. } if syscall.contains("poll"))),
        "{probe:?}"
    );
}

#[test]
fn select_read_set_in_memory() {
    let Some((_w, probe)) = ready_after("select", true) else {
        return;
    };
    assert!(
        probe.waits.iter().any(|w| matches!(w,
                Wait::Blocked { syscall, fd: 3, .. } if syscall.contains("select"))),
        "{probe:?}"
    );
}

#[test]
fn event_loop_blocked_in_a_blocking_accept_is_the_trap() {
    let Some((w, _)) = ready_after("tokio-trap", false) else {
        return;
    };
    // Both the epoll registration and the blocked accept must be seen;
    // the accept thread may not have entered the syscall yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = w.probe();
        if let Some(Wait::Blocked { pid, fd, .. }) = probe.event_loop_blocked_in_accept() {
            assert_eq!((*pid, *fd), (w.pid(), 3));
            break;
        }
        assert!(Instant::now() < deadline, "trap not seen: {probe:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waiting on something else (stdin) while holding the socket is not
/// readiness, even in select.
#[test]
fn select_on_other_fds_is_not_ready() {
    let Some(mut w) = Waiter::start(true) else {
        return;
    };
    w.command("other");
    // The child is in select (or about to be): wait until it is, then
    // the probe must still say no.
    let deadline = Instant::now() + Duration::from_secs(30);
    let task = format!("/proc/{}/syscall", w.pid());
    loop {
        let call = fs::read_to_string(&task)
            .ok()
            .and_then(|t| parse_syscall(&t));
        if call.is_some_and(|c| SyscallKind::of(c.nr).is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "child never entered select");
        std::thread::sleep(Duration::from_millis(1));
    }
    let probe = w.probe();
    assert!(!probe.ready(), "{probe:?}");
}

#[test]
fn group_pids_finds_the_group() {
    let mut child = Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    assert_eq!(group_pids(pid), [pid]);
    assert!(!group_pids(pid).contains(&(std::process::id() as i32)));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(group_pids(pid).is_empty());
}

#[test]
fn descendants_follow_the_tree() {
    let mut child = Command::new("sh")
        .args(["-c", "sleep 30 & echo $!; wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleep: i32 = line.trim().parse().unwrap();
    let pid = child.id() as i32;
    let mut found = descendants(pid);
    found.sort_unstable();
    let mut want = vec![pid, sleep];
    want.sort_unstable();
    assert_eq!(found, want);
    // SAFETY: kill(2) on a pid we started.
    unsafe { libc::kill(sleep, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(descendants(pid).is_empty());
}

/// A group leader's tree, and a member that is this process's own
/// child (as an orphan reparented to devsup is).
#[test]
fn generation_pids_finds_the_tree_and_orphans() {
    let mut leader = Command::new("sh")
        .args(["-c", "sleep 30 & echo $!; wait"])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(leader.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleep: i32 = line.trim().parse().unwrap();
    let pgid = leader.id() as i32;
    let mut orphan = Command::new("sleep")
        .arg("30")
        .process_group(pgid)
        .spawn()
        .unwrap();
    let mut found = generation_pids(pgid);
    found.sort_unstable();
    let mut want = vec![pgid, sleep, orphan.id() as i32];
    want.sort_unstable();
    assert_eq!(found, want);
    // SAFETY: kill(2) on a pid we started.
    unsafe { libc::kill(sleep, libc::SIGKILL) };
    leader.wait().unwrap();
    orphan.kill().unwrap();
    orphan.wait().unwrap();
}

#[test]
fn exited_processes_are_skipped() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let probe = probe(&[pid], &[]);
    assert_eq!(probe, Probe::default());
}

/// The cost of one probe of one process and of one process-group scan,
/// printed for choosing a polling interval (asserts nothing about speed).
#[test]
fn probe_cost() {
    let Some((w, _)) = ready_after("epoll", true) else {
        return;
    };
    let n = 200;
    let started = Instant::now();
    for _ in 0..n {
        assert!(w.probe().ready());
    }
    let per_probe = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        assert_eq!(group_pids(w.pid()), Vec::<i32>::new());
    }
    let per_scan = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        assert_eq!(descendants(w.pid()), [w.pid()]);
    }
    let per_tree = started.elapsed() / n;
    let processes = fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<i32>().is_ok())
            })
        })
        .count();
    eprintln!(
        "readiness probe: {per_probe:?} per probe of one process; \
             {per_scan:?} per /proc scan for a process group ({processes} processes); \
             {per_tree:?} per descendants() of one process"
    );
}
