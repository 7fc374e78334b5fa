//! Pure parsers of what `/proc` says about a process: its syscall, its
//! fds, its epoll sets, its `poll`/`select` arguments, its TCP sockets.
//! Each takes the text or bytes read elsewhere, so each is tested on
//! captured text (`tests.rs`) and on arbitrary input.

use std::os::fd::RawFd;

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

/// The syscalls a listener waits in, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SyscallKind {
    Accept(&'static str),
    Poll(&'static str),
    Select(&'static str),
}

impl SyscallKind {
    pub(super) fn of(nr: i64) -> Option<SyscallKind> {
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

    pub(super) fn name(self) -> &'static str {
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
