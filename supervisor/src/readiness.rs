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

/// One socket of `/proc/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    /// The local port.
    pub local_port: u16,
    /// In state LISTEN (`0A`).
    pub listening: bool,
    /// The socket's inode (0 for one no process holds, e.g. TIME_WAIT).
    pub inode: u64,
}

/// Parses `/proc/net/tcp` or `tcp6`: a header line, then per socket
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
/// with addresses as `HEXADDR:HEXPORT`.
pub fn parse_net_tcp(text: &str) -> Vec<TcpEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            Some(TcpEntry {
                local_port: u16::from_str_radix(port, 16).ok()?,
                listening: *fields.get(3)? == "0A",
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

fn probe_pid(pid: i32, sockets: &[PassedSocket], waits: &mut Vec<Wait>) -> io::Result<()> {
    // fd -> what it is, for the fds that matter.
    let mut passed = Vec::new(); // (fd, inode)
    let mut epolls = Vec::new();
    let mut links = Vec::new(); // (fd, socket inode) for tfd mapping
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
            links.push((fd, inode));
            if sockets.iter().any(|s| s.inode == inode) {
                passed.push((fd, inode));
            }
        } else if target == "anon_inode:[eventpoll]" {
            epolls.push(fd);
        }
    }

    for epfd in epolls {
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}")) else {
            continue;
        };
        for target in parse_epoll_fdinfo(&info) {
            let inode = match target.file {
                Some((ino, sdev)) => sockets
                    .iter()
                    .find(|s| s.inode == ino && s.dev == sdev)
                    .map(|s| s.inode),
                None => links
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

    if passed.is_empty() {
        // Blocked syscalls name fds of this process: none is a passed socket.
        return Ok(());
    }
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
                select_read_fds(mem, call.args[0], call.args[1], &passed).unwrap_or_default()
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

/// The syscalls a listener waits in, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyscallKind {
    Accept(&'static str),
    Poll(&'static str),
    Select(&'static str),
}

impl SyscallKind {
    fn of(nr: i64) -> Option<SyscallKind> {
        #[cfg(target_arch = "x86_64")]
        {
            match nr {
                libc::SYS_poll => return Some(SyscallKind::Poll("poll")),
                libc::SYS_select => return Some(SyscallKind::Select("select")),
                _ => {}
            }
        }
        match nr {
            libc::SYS_accept => Some(SyscallKind::Accept("accept")),
            libc::SYS_accept4 => Some(SyscallKind::Accept("accept4")),
            libc::SYS_ppoll => Some(SyscallKind::Poll("ppoll")),
            libc::SYS_pselect6 => Some(SyscallKind::Select("pselect6")),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SyscallKind::Accept(n) | SyscallKind::Poll(n) | SyscallKind::Select(n) => n,
        }
    }
}

/// A thread's current syscall, from `/proc/PID/task/TID/syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// The syscall number.
    pub nr: i64,
    /// Its six arguments.
    pub args: [u64; 6],
}

/// Parses `/proc/PID/task/TID/syscall`: `NR ARG1 .. ARG6 SP PC` (hex args)
/// for a thread blocked in a syscall; `None` for `running`, for `-1 SP PC`
/// (blocked, not in a syscall) and for anything else.
pub fn parse_syscall(text: &str) -> Option<Syscall> {
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        let field = fields.next()?;
        *arg = u64::from_str_radix(field.strip_prefix("0x")?, 16).ok()?;
    }
    Some(Syscall { nr, args })
}

/// The inode of a `/proc/PID/fd/N` link target `socket:[INODE]`.
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The process group (the 5th field) of a `/proc/PID/stat` line. The
/// command name in parentheses may contain anything, so fields are counted
/// after its last `)`.
pub fn parse_stat_pgrp(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp ...
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The `flags:` field (octal) of `/proc/PID/fdinfo/FD`.
pub fn parse_fdinfo_flags(info: &str) -> Option<u32> {
    let value = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// One entry of an epoll instance's interest list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollTarget {
    /// The fd it was added by (which may have been closed or reused since).
    pub tfd: RawFd,
    /// The watched file's inode and device (`ino:`, `sdev:`, both hex),
    /// when the kernel prints them.
    pub file: Option<(u64, u64)>,
}

/// The interest list in an epoll fd's `/proc/PID/fdinfo/EPFD`:
/// `tfd: 3 events: 19 data: 3  pos:0 ino:26c2f sdev:9` lines.
pub fn parse_epoll_fdinfo(info: &str) -> Vec<EpollTarget> {
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("tfd:")?;
            let tfd = rest.split_whitespace().next()?.parse().ok()?;
            let field = |name: &str| {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            let file = field("ino:").zip(field("sdev:"));
            Some(EpollTarget { tfd, file })
        })
        .collect()
}

/// The fds of a raw `struct pollfd` array (native byte order), negative
/// (ignored) entries left out.
pub fn parse_pollfds(raw: &[u8]) -> Vec<RawFd> {
    raw.chunks_exact(8)
        .filter_map(|entry| {
            let fd = RawFd::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            (fd >= 0).then_some(fd)
        })
        .collect()
}

/// Whether `fd` is set in a raw `fd_set` bitmap: an array of native
/// `long`s, bit `fd % BITS` of word `fd / BITS`.
pub fn fd_set_contains(raw: &[u8], fd: RawFd) -> bool {
    const LONG: usize = std::mem::size_of::<libc::c_ulong>();
    let Ok(fd) = usize::try_from(fd) else {
        return false;
    };
    let word = fd / (8 * LONG);
    let Some(bytes) = raw.get(word * LONG..(word + 1) * LONG) else {
        return false;
    };
    let mut word_bytes = [0u8; LONG];
    word_bytes.copy_from_slice(bytes);
    libc::c_ulong::from_ne_bytes(word_bytes) & (1 << (fd % (8 * LONG))) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        // tokio blocked in accept4 on fd 3 (captured from a real server).
        let line =
            "288 0x3 0x7ffd5aa4d168 0x7ffd5aa4d164 0x80800 0x0 0x0 0x7ffd5aa4d0f8 0x7f3c1a2b3c4d\n";
        let call = parse_syscall(line).unwrap();
        assert_eq!(call.nr, 288);
        assert_eq!(call.args[0], 3);
        assert_eq!(call.args[3], 0x80800);
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd5aa4d0f8 0x7f3c1a2b3c4d\n"), None);
        assert_eq!(parse_syscall("232 0x5 0x55cc52cfcf40\n"), None, "truncated");
        assert_eq!(parse_syscall(""), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[156901]"), Some(156901));
        assert_eq!(parse_socket_link("anon_inode:[eventpoll]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
    }

    #[test]
    fn stat_process_group() {
        let stat = "22158 (axum-listenfd) S 22150 22158 22150 0 -1 4194560 613 0 0 0";
        assert_eq!(parse_stat_pgrp(stat), Some(22158));
        // A command name with spaces and parentheses.
        let odd = "7 (a) b (c) S 1 42 1 0";
        assert_eq!(parse_stat_pgrp(odd), Some(42));
        assert_eq!(parse_stat_pgrp("7 (truncated"), None);
    }

    /// The parsers read text the kernel writes, but must not panic on
    /// anything: random bytes and mangled real lines, from a seeded
    /// generator (the seed is in the failure message).
    #[test]
    fn parsers_never_panic_on_arbitrary_input() {
        let samples = [
            "tfd:        3 events:       19 data:                3  pos:0 ino:26c2f sdev:9\n",
            "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 157002 1\n",
            "288 0x3 0x7ffd 0x80800 0x0 0x0 0x0 0x7ffd 0x7f\n",
            "42 (a) b)) S 1 42 42 0 -1\n",
            "pos:\t0\nflags:\t02004002\n",
        ];
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for round in 0..20_000u32 {
            let mut bytes: Vec<u8> = samples[round as usize % samples.len()].bytes().collect();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, (next() % 256) as u8),
                    _ => {
                        let pick = b" :()x0\n\t-";
                        bytes.insert(at, pick[(next() % pick.len() as u64) as usize])
                    }
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_syscall(&text);
            let _ = parse_socket_link(&text);
            let _ = parse_stat_pgrp(&text);
            let _ = parse_fdinfo_flags(&text);
            let _ = parse_epoll_fdinfo(&text);
            let _ = parse_net_tcp(&text);
            let _ = parse_pollfds(&bytes);
            let fd = (next() % 2048) as i32 - 8;
            let _ = fd_set_contains(&bytes, fd);
        }
    }

    #[test]
    fn net_tcp_tables() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 156901 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 157002 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:1F90 0100007F:D2F2 06 00000000:00000000 03:00000F3C 00000000     0        0 0 3 0000000000000000\n\
   3: garbage\n";
        assert_eq!(
            parse_net_tcp(text),
            [
                TcpEntry {
                    local_port: 8080,
                    listening: true,
                    inode: 156901
                },
                TcpEntry {
                    local_port: 8080,
                    listening: false,
                    inode: 157002
                },
                TcpEntry {
                    local_port: 8080,
                    listening: false,
                    inode: 0
                },
            ]
        );
        let v6 = "header\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42 1\n";
        assert_eq!(
            parse_net_tcp(v6),
            [TcpEntry {
                local_port: 80,
                listening: true,
                inode: 42
            }]
        );
    }

    #[test]
    fn fdinfo_flags() {
        let blocking = "pos:\t0\nflags:\t02000002\nmnt_id:\t10\nino:\t156901\n";
        assert_eq!(parse_fdinfo_flags(blocking), Some(0o2000002));
        assert_eq!(parse_fdinfo_flags(blocking).unwrap() & O_NONBLOCK, 0);
        let nonblocking = "pos:\t0\nflags:\t02004002\nmnt_id:\t10\n";
        assert_ne!(parse_fdinfo_flags(nonblocking).unwrap() & O_NONBLOCK, 0);
        assert_eq!(parse_fdinfo_flags("pos:\t0\n"), None);
    }

    #[test]
    fn epoll_interest_lists() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
                    tfd:        3 events:       19 data:                3  pos:0 ino:26c2f sdev:9\n\
                    tfd:       10 events: 8000201d data:                a  pos:0 ino:26c35 sdev:9\n";
        assert_eq!(
            parse_epoll_fdinfo(info),
            [
                EpollTarget {
                    tfd: 3,
                    file: Some((0x26c2f, 9))
                },
                EpollTarget {
                    tfd: 10,
                    file: Some((0x26c35, 9))
                },
            ]
        );
        // Older kernels print no ino/sdev.
        let old = "tfd:        4 events:       19 data:                4\n";
        assert_eq!(
            parse_epoll_fdinfo(old),
            [EpollTarget { tfd: 4, file: None }]
        );
        assert!(parse_epoll_fdinfo("eventfd-count: 0\n").is_empty());
    }

    #[test]
    fn pollfd_arrays_and_fd_sets() {
        let mut raw = Vec::new();
        for (fd, events) in [(3i32, 1i16), (-1, 1), (7, 1)] {
            raw.extend_from_slice(&fd.to_ne_bytes());
            raw.extend_from_slice(&events.to_ne_bytes());
            raw.extend_from_slice(&0i16.to_ne_bytes());
        }
        assert_eq!(parse_pollfds(&raw), [3, 7]);
        assert!(parse_pollfds(&raw[..7]).is_empty());

        // An fd_set with fds 3 and 70 set.
        let mut set = [0 as libc::c_ulong; 2];
        let bits = 8 * std::mem::size_of::<libc::c_ulong>();
        set[3 / bits] |= 1 << (3 % bits);
        set[70 / bits] |= 1 << (70 % bits);
        let raw: Vec<u8> = set.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert!(fd_set_contains(&raw, 3));
        assert!(fd_set_contains(&raw, 70));
        assert!(!fd_set_contains(&raw, 4));
        assert!(!fd_set_contains(&raw, 1000));
        assert!(!fd_set_contains(&raw, -1));
    }

    #[test]
    fn trap_needs_a_blocking_accept_and_an_epoll_in_the_same_process() {
        let blocked = Wait::Blocked {
            pid: 10,
            tid: 10,
            syscall: "accept4",
            fd: 3,
            inode: 99,
            blocking: true,
        };
        let epoll = Wait::Epoll {
            pid: 10,
            epfd: 5,
            inode: 99,
        };
        let probe = Probe {
            waits: vec![epoll.clone(), blocked.clone()],
            unreadable: vec![],
        };
        assert!(probe.ready());
        assert_eq!(probe.event_loop_blocked_in_accept(), Some(&blocked));
        let advice = probe.trap_advice().unwrap();
        assert!(
            advice.contains("pid=10 is blocked in accept4 on fd 3"),
            "{advice}"
        );
        assert!(advice.contains("set_nonblocking(true)"), "{advice}");
        assert_eq!(probe.reason().unwrap(), "pid=10 has it in epoll fd 5");
        // A plain blocking accept loop (one thread, no event loop) is fine.
        let plain = Probe {
            waits: vec![blocked.clone()],
            unreadable: vec![],
        };
        assert_eq!(plain.blocking_accepts().count(), 1);
        assert_eq!(plain.event_loop_blocked_in_accept(), None);
        assert_eq!(plain.trap_advice(), None);
        // Epoll in another process does not count.
        let other = Probe {
            waits: vec![
                Wait::Epoll {
                    pid: 11,
                    epfd: 5,
                    inode: 99,
                },
                blocked,
            ],
            unreadable: vec![],
        };
        assert_eq!(other.event_loop_blocked_in_accept(), None);
        assert!(!Probe::default().ready());
    }
}

/// The probe against real processes: a python3 child that inherits a
/// listening socket and, on command, waits on it in each way a server does.
#[cfg(test)]
mod proc_tests {
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
}
