//! Readiness seen from the kernel: is one of a generation's processes
//! waiting on a listening socket devsup passed it?
//!
//! A server that never sends `READY=1` is still ready, as far as a client
//! can tell, once it waits for connections on the socket devsup gave it.
//! Linux shows that in `/proc`, for processes devsup may trace (its own
//! descendants, same user):
//!
//! - **epoll** (tokio, asyncio, libuv, Go, ...): `/proc/PID/fdinfo/EPFD` of
//!   each `anon_inode:[eventpoll]` fd lists its interest list, one
//!   `tfd: N events: .. data: .. pos:0 ino:HEX sdev:HEX` line per watched
//!   file. `ino`/`sdev` name the watched file itself (so a dup'd or since
//!   closed fd still matches); on kernels that do not print them, `tfd` is
//!   mapped through `/proc/PID/fd/N`.
//! - **a thread blocked in a syscall** on it: `/proc/PID/task/TID/syscall`
//!   gives the syscall number and its arguments. `accept`/`accept4` take the
//!   fd as the first argument. `poll`/`ppoll` take a `pollfd` array and
//!   `select`/`pselect6` an `fd_set`, both in the process's memory, read
//!   through `/proc/PID/mem` (the same permission as `syscall`).
//!
//! What this does not see: a server that polls the socket with a
//! non-blocking `accept` in a busy loop (never blocked), io_uring accepts,
//! and a thread of another process group that holds the socket. Where
//! `/proc` cannot be read (another user, a hardened `ptrace_scope`, a
//! container without `/proc`), [`Probe::unreadable`] says so and the caller
//! keeps its timer.
//!
//! An epoll registration is a promise to accept, not an accept: a runtime
//! registers the listener when it is created (`TcpListener::from_std`), and
//! an app that does slow set-up between that and `serve` looks ready early.
//!
//! The probe also recognises **the blocking-socket trap**: a thread
//! blocked in `accept`/`accept4` on a passed socket that is in blocking
//! mode ([`Probe::blocking_accepts`]). In an event loop (the same process
//! also has the socket in an epoll set: tokio given a blocking socket by
//! `from_std`) that thread cannot run anything else, so a graceful shutdown
//! it should drive never starts ([`Probe::event_loop_blocked_in_accept`]).
//!
//! The parsers are pure functions over the text of `/proc` files; the
//! [`probe`] reads them.
//!
//! # Cost, and what tokio looks like
//!
//! One [`probe`] of one process (a tokio server: 3 threads, 11 fds) takes
//! 0.1-0.35 ms on a busy 2-core machine; [`descendants`] of one process
//! about 8 us; [`group_pids`] 2-5 ms (it reads every process's `stat`).
//! Polling a starting generation every 5-10 ms therefore costs a few
//! percent of a core while it starts, and finds it ready well within 50 ms
//! of its first wait.
//!
//! tokio registers a listener with epoll when `TcpListener::from_std` (or
//! `bind`) runs, and calls `accept` only once epoll reports a connection: a
//! tokio server is seen through its epoll set, and the blocked `accept4` of
//! the trap appears only after its first connection.

use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// `O_NONBLOCK` in an fdinfo `flags:` field (octal 04000 on Linux).
const O_NONBLOCK: u32 = libc::O_NONBLOCK as u32;

/// A listening socket devsup passed, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassedSocket {
    /// The inode number (`socket:[INODE]`).
    pub inode: u64,
    /// The device of sockfs, as `stat` reports it.
    pub dev: u64,
}

impl PassedSocket {
    /// The socket behind `fd` in this process.
    pub fn of_fd(fd: RawFd) -> io::Result<PassedSocket> {
        let meta = fs::metadata(format!("/proc/self/fd/{fd}"))?;
        Ok(PassedSocket {
            inode: meta.ino(),
            dev: meta.dev(),
        })
    }
}

/// How a process was seen waiting on a passed socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The socket is in the interest list of the epoll instance at `epfd`.
    Epoll {
        /// The process.
        pid: i32,
        /// Its epoll fd.
        epfd: RawFd,
        /// The socket's inode.
        inode: u64,
    },
    /// Thread `tid` is blocked in `syscall` on the socket at `fd`.
    Blocked {
        /// The process.
        pid: i32,
        /// The thread.
        tid: i32,
        /// `accept`, `accept4`, `poll`, `ppoll`, `select` or `pselect6`.
        syscall: &'static str,
        /// The fd the thread waits on.
        fd: RawFd,
        /// The socket's inode.
        inode: u64,
        /// The socket is in blocking mode (no `O_NONBLOCK`).
        blocking: bool,
    },
}

impl Wait {
    /// For a log line: `pid=P epoll fd 5` or `pid=P tid=T accept4 on fd 3`.
    pub fn describe(&self) -> String {
        match self {
            Wait::Epoll { pid, epfd, .. } => format!("pid={pid} has it in epoll fd {epfd}"),
            Wait::Blocked {
                pid,
                tid,
                syscall,
                fd,
                blocking,
                ..
            } => format!(
                "pid={pid} tid={tid} blocked in {syscall} on fd {fd}{}",
                if *blocking { " (blocking socket)" } else { "" }
            ),
        }
    }
}

/// What one probe of a generation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Every way a process was seen waiting on a passed socket.
    pub waits: Vec<Wait>,
    /// Processes whose `/proc` entries could not be read (besides having
    /// exited): with any here and no wait found, the probe cannot tell.
    pub unreadable: Vec<(i32, io::ErrorKind)>,
}

impl Probe {
    /// Whether some process waits on a passed socket: the generation
    /// accepts connections.
    pub fn ready(&self) -> bool {
        !self.waits.is_empty()
    }

    /// Threads blocked in `accept`/`accept4` on a passed socket in
    /// blocking mode.
    pub fn blocking_accepts(&self) -> impl Iterator<Item = &Wait> {
        self.waits.iter().filter(|w| {
            matches!(w, Wait::Blocked { syscall, blocking: true, .. } if syscall.starts_with("accept"))
        })
    }

    /// What made the generation ready, for the log line that says which
    /// rule counted it ready, e.g. `pid=42 has it in epoll fd 5`.
    pub fn reason(&self) -> Option<String> {
        self.waits.first().map(Wait::describe)
    }

    /// The words for the log when [`Probe::event_loop_blocked_in_accept`]
    /// finds the trap (say, while a drain takes long).
    pub fn trap_advice(&self) -> Option<String> {
        let Wait::Blocked {
            pid,
            tid,
            syscall,
            fd,
            ..
        } = self.event_loop_blocked_in_accept()?
        else {
            return None;
        };
        Some(format!(
            "pid={pid} is blocked in {syscall} on fd {fd} (thread {tid}) inside an event loop: \
             the passed socket is in blocking mode, so the loop cannot run its shutdown until \
             another connection arrives. Make the listener non-blocking before handing it to the \
             runtime (Rust: listener.set_nonblocking(true) before tokio's from_std)"
        ))
    }

    /// The blocking-socket trap: a thread blocked in `accept` on a
    /// blocking passed socket in a process that also has that socket in an
    /// epoll set, i.e. an event loop (tokio after `from_std` without
    /// `set_nonblocking(true)`) whose thread is stuck in the kernel: a
    /// graceful shutdown that thread should drive does not run until a
    /// connection arrives. Returns that blocked thread.
    pub fn event_loop_blocked_in_accept(&self) -> Option<&Wait> {
        self.blocking_accepts().find(|blocked| {
            let Wait::Blocked { pid, inode, .. } = blocked else {
                return false;
            };
            self.waits.iter().any(
                |w| matches!(w, Wait::Epoll { pid: p, inode: i, .. } if p == pid && i == inode),
            )
        })
    }
}

/// Probes `pids` for waits on `sockets`. Processes that exited meanwhile
/// are skipped; other read errors are listed in [`Probe::unreadable`].
pub fn probe(pids: &[i32], sockets: &[PassedSocket]) -> Probe {
    let mut result = Probe::default();
    for &pid in pids {
        match probe_pid(pid, sockets, &mut result.waits) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            // ESRCH from /proc/PID/mem of a process that is exiting.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
            Err(err) => result.unreadable.push((pid, err.kind())),
        }
    }
    result
}

/// The pids of every process in process group `pgid`, from
/// `/proc/*/stat` (a scan of every process on the machine).
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (parse_stat_pgrp(&stat)? == pgid).then_some(pid)
    })
    .collect()
}

/// `pid` and its descendants, from `/proc/PID/task/TID/children`
/// (cheaper than [`group_pids`]'s scan of every process). Misses orphans a
/// server double-forked (they are reparented away from its tree); empty
/// when `pid` is gone.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{next}/task")) else {
            continue;
        };
        found.push(next);
        for task in tasks.flatten() {
            let Ok(children) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !found.contains(&child) && !queue.contains(&child) {
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// The processes of group `pgid` that a probe must look at, cheaply: the
/// leader's tree ([`descendants`]), plus the trees of this process's own
/// children in the group other than the leader. devsup is a child
/// subreaper, so an orphan a server double-forked is reparented to it.
/// Processes that left the group inside the leader's tree are included
/// (they still hold what the generation gave them).
pub fn generation_pids(pgid: i32) -> Vec<i32> {
    let mut pids = descendants(pgid);
    // Every thread's children: devsup forks from its main thread, and
    // orphans are reparented to it too, but a thread that forks (a test)
    // lists its children under its own task.
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        let Ok(children) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            if child == pgid || pids.contains(&child) {
                continue;
            }
            let in_group = fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| parse_stat_pgrp(&stat))
                == Some(pgid);
            if in_group {
                for pid in descendants(child) {
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
            }
        }
    }
    pids
}

/// The TCP connections accepted on the passed sockets that `pids` still
/// hold: their sockets whose local port is one of `ports` and that are not
/// listening, looked up in `/proc/PID/net/tcp` and `tcp6` (the network
/// namespace of the first pid that can be read). `None` if `/proc` cannot
/// say. (Connections on passed unix sockets are not counted.)
pub fn open_connections(pids: &[i32], ports: &[u16]) -> Option<usize> {
    let mut inodes = std::collections::HashSet::new();
    let mut table_of = None;
    for &pid in pids {
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        table_of.get_or_insert(pid);
        for entry in dir.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                if let Some(inode) = parse_socket_link(&target.to_string_lossy()) {
                    inodes.insert(inode);
                }
            }
        }
    }
    let pid = table_of?;
    let mut count = 0;
    let mut read_any = false;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        read_any = true;
        count += parse_net_tcp(&text)
            .into_iter()
            .filter(|e| !e.listening && ports.contains(&e.local_port) && inodes.contains(&e.inode))
            .count();
    }
    read_any.then_some(count)
}

fn probe_pid(pid: i32, sockets: &[PassedSocket], waits: &mut Vec<Wait>) -> io::Result<()> {
    let fds = ProcessFds::read(pid, sockets)?;
    epoll_waits(pid, &fds, sockets, waits);
    if fds.passed.is_empty() {
        // Blocked syscalls name fds of this process: none is a passed socket.
        return Ok(());
    }
    blocked_waits(pid, &fds.passed, waits)
}

/// The fds of one process that a probe looks at.
#[derive(Debug, Default)]
struct ProcessFds {
    /// `(fd, inode)` of the passed sockets it holds.
    passed: Vec<(RawFd, u64)>,
    /// Its epoll instances.
    epolls: Vec<RawFd>,
    /// `(fd, inode)` of every socket, for mapping an epoll `tfd`.
    links: Vec<(RawFd, u64)>,
}

impl ProcessFds {
    fn read(pid: i32, sockets: &[PassedSocket]) -> io::Result<ProcessFds> {
        let mut fds = ProcessFds::default();
        for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
            let entry = entry?;
            let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // The fd may close between listing and reading.
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = parse_socket_link(&target) {
                fds.links.push((fd, inode));
                if sockets.iter().any(|s| s.inode == inode) {
                    fds.passed.push((fd, inode));
                }
            } else if target == "anon_inode:[eventpoll]" {
                fds.epolls.push(fd);
            }
        }
        Ok(fds)
    }
}

/// The passed sockets in the interest lists of `pid`'s epoll instances.
fn epoll_waits(pid: i32, fds: &ProcessFds, sockets: &[PassedSocket], waits: &mut Vec<Wait>) {
    for &epfd in &fds.epolls {
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}")) else {
            continue;
        };
        for target in parse_epoll_fdinfo(&info) {
            let inode = match target.file {
                Some((ino, sdev)) => sockets
                    .iter()
                    .find(|s| s.inode == ino && s.dev == sdev)
                    .map(|s| s.inode),
                None => fds
                    .links
                    .iter()
                    .find(|(fd, _)| *fd == target.tfd)
                    .map(|(_, inode)| *inode)
                    .filter(|inode| sockets.iter().any(|s| s.inode == *inode)),
            };
            if let Some(inode) = inode {
                waits.push(Wait::Epoll { pid, epfd, inode });
            }
        }
    }
}

/// `pid`'s threads blocked in `accept`, `poll` or `select` on one of the
/// `passed` sockets it holds.
fn blocked_waits(pid: i32, passed: &[(RawFd, u64)], waits: &mut Vec<Wait>) -> io::Result<()> {
    let mut mem = None;
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("syscall")) else {
            continue;
        };
        let Some(call) = parse_syscall(&text) else {
            continue;
        };
        let Some(kind) = SyscallKind::of(call.nr) else {
            continue;
        };
        // Not being allowed to open `mem` is a reason the probe cannot
        // tell; failing to read it is a thread that left its syscall (its
        // stack buffer gone) and waits on nothing now.
        let fds: Vec<RawFd> = match kind {
            SyscallKind::Accept(_) => vec![call.args[0] as RawFd],
            SyscallKind::Poll(_) => {
                let mem = open_mem(pid, &mut mem)?;
                poll_fds(mem, call.args[0], call.args[1]).unwrap_or_default()
            }
            SyscallKind::Select(_) => {
                let mem = open_mem(pid, &mut mem)?;
                select_read_fds(mem, call.args[0], call.args[1], passed).unwrap_or_default()
            }
        };
        for fd in fds {
            let Some(&(_, inode)) = passed.iter().find(|(p, _)| *p == fd) else {
                continue;
            };
            let blocking = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .ok()
                .and_then(|info| parse_fdinfo_flags(&info))
                .is_some_and(|flags| flags & O_NONBLOCK == 0);
            waits.push(Wait::Blocked {
                pid,
                tid,
                syscall: kind.name(),
                fd,
                inode,
                blocking,
            });
        }
    }
    Ok(())
}

fn open_mem(pid: i32, mem: &mut Option<fs::File>) -> io::Result<&fs::File> {
    if mem.is_none() {
        *mem = Some(fs::File::open(format!("/proc/{pid}/mem"))?);
    }
    // Just set if it was not.
    mem.as_ref().ok_or_else(|| io::Error::other("unreachable"))
}

/// Most pollfd entries read from one `poll` call: a listener's poll set
/// is small; a bound keeps a corrupt argument from reading megabytes.
const MAX_POLLFDS: u64 = 4096;

/// The fds in the `pollfd` array at `addr` (`nfds` entries of
/// `{ int fd; short events; short revents; }`).
fn poll_fds(mem: &fs::File, addr: u64, nfds: u64) -> io::Result<Vec<RawFd>> {
    let n = nfds.min(MAX_POLLFDS) as usize;
    let mut buf = vec![0u8; n * 8];
    mem.read_exact_at(&mut buf, addr)?;
    Ok(parse_pollfds(&buf))
}

/// Which of `passed` are set in the read `fd_set` at `addr` of a
/// `select(nfds, readfds, ...)`.
fn select_read_fds(
    mem: &fs::File,
    nfds: u64,
    addr: u64,
    passed: &[(RawFd, u64)],
) -> io::Result<Vec<RawFd>> {
    if addr == 0 {
        return Ok(Vec::new());
    }
    // select cannot watch fds >= FD_SETSIZE (1024).
    const LONG_BITS: usize = 8 * std::mem::size_of::<libc::c_ulong>();
    let nfds = nfds.min(1024) as usize;
    let mut buf = vec![0u8; nfds.div_ceil(LONG_BITS) * LONG_BITS / 8];
    mem.read_exact_at(&mut buf, addr)?;
    Ok(passed
        .iter()
        .map(|(fd, _)| *fd)
        .filter(|&fd| fd_set_contains(&buf, fd))
        .collect())
}

mod accepted;
pub use accepted::{Holdings, SockDiag, holdings};
mod parse;
use parse::SyscallKind;
pub use parse::*;

#[cfg(test)]
mod proc_tests;
#[cfg(test)]
mod tests;
