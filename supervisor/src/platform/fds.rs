//! File descriptors: close-on-exec from creation, and the sweeps a forked
//! child makes before `execve`.
//!
//! Linux makes every fd close-on-exec atomically, as it is created
//! (`pipe2(O_CLOEXEC)`, `SOCK_CLOEXEC`, `MSG_CMSG_CLOEXEC`), and sweeps a
//! range of fds with one `close_range`. macOS has none of these: there the
//! fd is created, then marked with `fcntl(F_SETFD, FD_CLOEXEC)`, and a
//! sweep is a loop of `fcntl`/`close` up to the fd limit ([`max_fd`]).
//!
//! **Where that is not atomic, and why it is acceptable.** Between the
//! creation and the `fcntl`, a `fork` + `exec` made by another thread would
//! pass the new fd on.
//!
//! - Pipes and the ready channel's socketpair ([`pipe`], [`stream_pair`])
//!   are created by the main thread, which is also the only thread that
//!   forks (generations and build steps; the guard is forked before any
//!   other thread exists): no fork can happen in their window.
//! - fds received with `SCM_RIGHTS` on a notify socket ([`received`]) are
//!   created by that generation's reader thread, so the main thread may
//!   fork inside their window. The child does not keep them all the same:
//!   before `execve` every child devsup forks marks every fd above the
//!   ones it is given close-on-exec itself ([`cloexec_from`]).
//! - What is left is a library thread that forks and execs behind
//!   devsup's back; none of devsup's dependencies does (notify's FSEvents
//!   thread, signal-hook's, tracing's do not fork).
//!
//! Listening sockets come from socket2, which does the same (`SOCK_CLOEXEC`
//! on Linux, `fcntl` at once on macOS), on the main thread before the
//! first fork.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::MsgFlags;

/// A pipe, both ends close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    #[cfg(target_os = "linux")]
    return nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
    #[cfg(not(target_os = "linux"))]
    return portable::pipe();
}

/// A connected pair of unix stream sockets, both close-on-exec.
pub(crate) fn stream_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    #[cfg(target_os = "linux")]
    let flags = SockFlag::SOCK_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let flags = SockFlag::empty();
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags)?;
    #[cfg(not(target_os = "linux"))]
    {
        set_cloexec(std::os::fd::AsFd::as_fd(&a))?;
        set_cloexec(std::os::fd::AsFd::as_fd(&b))?;
    }
    Ok((a, b))
}

/// The `recvmsg` flags that make received fds close-on-exec, where the
/// platform can; [`received`] does it where it cannot.
pub(crate) fn recv_flags() -> MsgFlags {
    #[cfg(target_os = "linux")]
    return MsgFlags::MSG_CMSG_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    return MsgFlags::empty();
}

/// Makes an fd just received with `SCM_RIGHTS` close-on-exec, where
/// [`recv_flags`] could not (not atomic: see the module's documentation).
pub(crate) fn received(fd: &OwnedFd) {
    #[cfg(not(target_os = "linux"))]
    let _ = set_cloexec(std::os::fd::AsFd::as_fd(fd));
    #[cfg(target_os = "linux")]
    let _ = fd;
}

/// Sets `FD_CLOEXEC` on `fd`.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
    fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC)).map(drop)
}

/// The highest fd number (exclusive) a sweep covers where no
/// `close_range` exists: the soft `RLIMIT_NOFILE`, at most 65536. An fd
/// above the limit can exist only if the limit was lowered after it was
/// opened; the sweep misses it (devsup's own fds are close-on-exec anyway).
pub(crate) fn max_fd() -> RawFd {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    limit.min(65536) as RawFd
}

/// Marks every fd from `first` on close-on-exec (`max_fd` from [`max_fd`],
/// taken before the fork).
///
/// # Safety
/// Async-signal-safe; for the child between fork and exec.
pub(crate) unsafe fn cloexec_from(first: RawFd, max_fd: RawFd) {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return;
        }
    }
    // Linux before 5.11, and every other platform.
    // SAFETY: as this function's.
    unsafe { cloexec_loop(first, max_fd) }
}

/// Closes every fd from `first` on.
///
/// # Safety
/// Closes fds other code may own: only for a forked child that uses none
/// of them (the guard).
pub(crate) unsafe fn close_from(first: RawFd, max_fd: RawFd) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range only closes fds; see this function's contract.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            )
        };
        if r == 0 {
            return;
        }
    }
    // SAFETY: as this function's.
    unsafe { close_loop(first, max_fd) }
}

/// The portable sweep: `fcntl` on each fd number; closed ones fail with
/// EBADF, harmlessly.
///
/// # Safety
/// Async-signal-safe.
unsafe fn cloexec_loop(first: RawFd, max_fd: RawFd) {
    for fd in first.max(0)..max_fd {
        // SAFETY: fcntl on a closed fd fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// # Safety
/// As [`close_from`].
unsafe fn close_loop(first: RawFd, max_fd: RawFd) {
    for fd in first.max(0)..max_fd {
        // SAFETY: see close_from; a closed fd gives EBADF.
        unsafe { libc::close(fd) };
    }
}

/// The bodies macOS and the BSDs use, compiled on Linux for the tests.
#[cfg(any(test, not(target_os = "linux")))]
mod portable {
    use std::os::fd::{AsFd, OwnedFd};

    /// `pipe`, then `FD_CLOEXEC` on both ends (not atomic: see above).
    pub(super) fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
        let (read, write) = nix::unistd::pipe()?;
        super::set_cloexec(read.as_fd())?;
        super::set_cloexec(write.as_fd())?;
        Ok((read, write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0, "fd {fd} is open");
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn every_made_fd_is_close_on_exec() {
        let (r, w) = pipe().unwrap();
        assert!(cloexec(r.as_raw_fd()) && cloexec(w.as_raw_fd()));
        let (r, w) = portable::pipe().unwrap();
        assert!(cloexec(r.as_raw_fd()) && cloexec(w.as_raw_fd()));
        let (a, b) = stream_pair().unwrap();
        assert!(cloexec(a.as_raw_fd()) && cloexec(b.as_raw_fd()));
        // The received-fd path: an inheritable fd becomes close-on-exec
        // where the platform needs it, and stays so on Linux.
        // SAFETY: dup gives a new fd this test owns.
        let plain = unsafe { OwnedFd::from_raw_fd(libc::dup(a.as_raw_fd())) };
        assert!(!cloexec(plain.as_raw_fd()));
        set_cloexec(plain.as_fd()).unwrap();
        assert!(cloexec(plain.as_raw_fd()));
    }

    /// Three inheritable fds (`dup2` clears close-on-exec) at numbers no
    /// other test uses: `below` under the fd limit.
    fn high_fds(below: RawFd) -> Vec<RawFd> {
        let from = max_fd() - below;
        assert!(from > 64, "the tests need an fd limit above 64");
        let (r, _w) = pipe().unwrap();
        (from..from + 3)
            .inspect(|&fd| {
                // SAFETY: dup2 onto a number this test alone uses.
                assert_eq!(unsafe { libc::dup2(r.as_raw_fd(), fd) }, fd);
                assert!(!cloexec(fd));
            })
            .collect()
    }

    #[test]
    fn the_portable_sweeps_reach_every_fd_up_to_the_limit() {
        let fds = high_fds(8);
        let (first, end) = (fds[0], fds[2] + 1);
        // SAFETY: only this test's fds are in first..end.
        unsafe { cloexec_loop(first, end) };
        assert!(fds.iter().all(|&fd| cloexec(fd)));
        // SAFETY: as above.
        unsafe { close_loop(first, end) };
        for fd in fds {
            // SAFETY: F_GETFD only reads flags.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
        }
    }

    #[test]
    fn the_platform_sweeps_too() {
        let fds = high_fds(4);
        let (first, end) = (fds[0], fds[2] + 1);
        // SAFETY: only this test's fds are at first and above (on Linux
        // the sweep goes to the top of the fd space, with close_range).
        unsafe { cloexec_from(first, end) };
        assert!(fds.iter().all(|&fd| cloexec(fd)));
        // SAFETY: as above.
        unsafe { close_from(first, end) };
        for fd in fds {
            // SAFETY: F_GETFD only reads flags.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
        }
    }
}
