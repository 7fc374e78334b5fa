//! The fork and the child's side of it, up to `execve`.
//!
//! Everything here between `fork` and `execve` runs in the child of a
//! multi-threaded process, so it may only make async-signal-safe system
//! calls: no allocation, no lock. What the child needs (paths, argv, envp,
//! the fd plan, the `LISTEN_PID=` slot) is built before the fork, in
//! [`super::spawn`] and [`super::spawn_build`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::signal::Signal;
use anyhow::Context;
use devsup_protocol as proto;

use super::ExecStatus;
use crate::platform;

pub(super) const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// Room for any pid_t in decimal.
pub(super) const PID_DIGITS: usize = 20;

/// Everything the child needs between fork and exec, made before fork.
pub(super) struct ExecPlan<'a> {
    pub(super) path: &'a CString,
    /// NULL-terminated.
    pub(super) argv: &'a [*const libc::c_char],
    /// NULL-terminated.
    pub(super) envp: &'a [*const libc::c_char],
    /// The fds to place at 3, 4, … in the child, in that order.
    pub(super) sources: &'a [RawFd],
    pub(super) stdin: RawFd,
    /// Write ends for the child's stdout and stderr, when captured.
    pub(super) output: Option<(RawFd, RawFd)>,
    /// Where the child writes its own pid (after `LISTEN_PID=`).
    pub(super) listen_pid_slot: Option<*mut u8>,
    pub(super) pdeathsig: Signal,
    /// The generation's `cgroup.procs`, open for writing: the child moves
    /// itself in before it runs anything ([`super::cgroup`]).
    pub(super) cgroup_procs: Option<RawFd>,
}

/// Forks and execs `plan` in a new process group; returns the pid and the
/// exec status to read later.
///
/// Every signal is blocked across the fork: a signal that reached the child
/// before exec would otherwise run devsup's own handlers there (signal-hook
/// writes to a pipe devsup reads, so a drain signal sent to a generation
/// that has not exec'd yet would look like a SIGTERM to devsup). The child
/// resets its handlers to the default before it unblocks them, so such a
/// signal does to it what it would do after exec.
pub(super) fn fork_exec(plan: &ExecPlan<'_>) -> anyhow::Result<(i32, ExecStatus)> {
    let (err_read, err_write) = platform::fds::pipe().context("cannot create a pipe")?;
    let parent_pid = std::process::id() as libc::pid_t;
    let max_fd = platform::fds::max_fd();
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&all),
        Some(&mut old),
    )
    .context("cannot block signals")?;
    // SAFETY: fork in a multi-threaded process; the child only calls
    // async-signal-safe functions (see `child_after_fork`) and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of a fork; every pointer was made before
        // it and stays valid in this copy of the address space.
        unsafe {
            child_after_fork(ChildPlan {
                path: plan.path.as_ptr(),
                argv: plan.argv.as_ptr(),
                envp: plan.envp.as_ptr(),
                sources: plan.sources,
                stdin: plan.stdin,
                output: plan.output,
                listen_pid_slot: plan.listen_pid_slot,
                cgroup_procs: plan.cgroup_procs,
                parent_pid,
                pdeathsig: plan.pdeathsig as libc::c_int,
                err_pipe: err_write.as_raw_fd(),
                max_fd,
            })
        }
    }
    let forked = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    };
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    let pid = forked.context("fork failed")?;
    // The child makes its own process group too, but a signal sent to the
    // group before the child has run would find no group: make it here as
    // well, as shells do. EACCES (the child has exec'd) means it is done.
    // SAFETY: setpgid on our own child has no memory-safety preconditions.
    unsafe { libc::setpgid(pid, pid) };
    drop(err_write);
    Ok((pid, ExecStatus(std::fs::File::from(err_read))))
}

struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    sources: &'a [RawFd],
    stdin: RawFd,
    output: Option<(RawFd, RawFd)>,
    listen_pid_slot: Option<*mut u8>,
    cgroup_procs: Option<RawFd>,
    parent_pid: libc::pid_t,
    pdeathsig: libc::c_int,
    err_pipe: RawFd,
    max_fd: RawFd,
}

/// Sets every signal that is not ignored back to its default action: the
/// child must not run devsup's handlers. Async-signal-safe (sigaction
/// only), for [`child_after_fork`].
fn default_signal_handlers() {
    for sig in 1..65 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction reads and writes the zeroed structs owned
        // here; a signal number the platform lacks fails with EINVAL.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction != libc::SIG_IGN
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
    }
}

/// Undoes what devsup changed for itself, right before exec: Rust ignores
/// SIGPIPE, and exec keeps ignored signals ignored; the signal mask is
/// inherited too. Async-signal-safe, for [`child_after_fork`].
fn undo_signal_changes() {
    // SAFETY: signal and sigprocmask on a sigset_t owned here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Writes errno to `err_pipe` and exits 127: the exec failed, and devsup
/// reads why.
///
/// # Safety
/// Only in the child of a `fork` (it calls `_exit`).
unsafe fn fail(err_pipe: RawFd) -> ! {
    let errno = nix::errno::Errno::last_raw();
    let bytes = errno.to_ne_bytes();
    // SAFETY: a write of a stack buffer to an fd, then `_exit`.
    unsafe {
        libc::write(err_pipe, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// Puts the passed sockets at fds 3, 4, …, stdin at 0 and the captured
/// output at 1 and 2; returns the error pipe's new fd and the highest
/// target fd.
///
/// # Safety
/// Only in the child of a `fork`, with fds valid there.
unsafe fn place_fds(plan: &ChildPlan<'_>) -> (RawFd, RawFd) {
    // SAFETY: plain system calls on fds this process owns.
    unsafe {
        // Copy every fd the child still needs (the sources, stdin, the
        // output pipes, the error pipe) above every target first, so that
        // none sitting on a target number is overwritten before it is used.
        let first = proto::FIRST_FD;
        let high = first + plan.sources.len() as RawFd;
        let lift = |fd: RawFd, err_pipe: RawFd| -> RawFd {
            let lifted = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high + 1);
            if lifted < 0 {
                fail(err_pipe);
            }
            lifted
        };
        let err_pipe = lift(plan.err_pipe, plan.err_pipe);
        let stdin = lift(plan.stdin, err_pipe);
        let output = plan
            .output
            .map(|(out, err)| (lift(out, err_pipe), lift(err, err_pipe)));
        let mut moved = [0 as RawFd; super::MAX_PASSED_FDS];
        if plan.sources.len() > moved.len() {
            nix::errno::Errno::set_raw(libc::EMFILE);
            fail(err_pipe);
        }
        for (i, &src) in plan.sources.iter().enumerate() {
            moved[i] = lift(src, err_pipe);
        }
        // dup2 clears close-on-exec on the target: these, and stdio, are
        // the only fds the program inherits from devsup.
        for (i, &fd) in moved[..plan.sources.len()].iter().enumerate() {
            if libc::dup2(fd, first + i as RawFd) < 0 {
                fail(err_pipe);
            }
        }
        if libc::dup2(stdin, 0) < 0 {
            fail(err_pipe);
        }
        if let Some((out, err)) = output {
            if libc::dup2(out, 1) < 0 || libc::dup2(err, 2) < 0 {
                fail(err_pipe);
            }
        }
        (err_pipe, high)
    }
}

/// The child between fork and exec. Never returns.
///
/// # Safety
/// Must only be called in the child of a `fork`, with pointers that are
/// valid there.
unsafe fn child_after_fork(plan: ChildPlan<'_>) -> ! {
    // SAFETY: (for the whole function) plain system calls on fds and memory
    // owned by this process; none allocates or takes a lock.
    unsafe {
        // devsup's signal handlers must not run here (the mask, blocked
        // across the fork, is cleared right before exec).
        default_signal_handlers();
        // Own process group: every signal devsup sends goes to the group,
        // so `sh -c` and `cargo run` pass it on to the real server.
        if libc::setpgid(0, 0) != 0 {
            fail(plan.err_pipe);
        }
        // Into the generation's cgroup, before any fd is moved (this one
        // may sit on a target number) and before the program can fork. If
        // the move is refused, the adopted orphans still tell its
        // processes ([`super::orphans`]).
        if let Some(fd) = plan.cgroup_procs {
            libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        // Linux only; elsewhere the guard stops this group if devsup dies.
        if !platform::process::set_parent_death_signal(plan.pdeathsig) {
            fail(plan.err_pipe);
        }
        // devsup may have died between fork and prctl (or, without one,
        // before this child ran: the guard may not know its group yet).
        if libc::getppid() != plan.parent_pid {
            libc::_exit(1);
        }
        let (err_pipe, high) = place_fds(&plan);
        // devsup's own fds are all close-on-exec, but devsup may have
        // inherited others (a shell's, or cargo's jobserver pipes): the
        // generation gets none of them.
        platform::fds::cloexec_from(high, plan.max_fd);
        if let Some(slot) = plan.listen_pid_slot {
            write_pid(slot.add(LISTEN_PID_PREFIX.len()), libc::getpid());
        }
        undo_signal_changes();
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(err_pipe)
    }
}

/// Writes `pid` in decimal at `dst` followed by a NUL. `dst` has room for
/// [`PID_DIGITS`] bytes.
///
/// # Safety
/// `dst` must be valid for `PID_DIGITS` bytes of writes.
unsafe fn write_pid(dst: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = pid as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: len < PID_DIGITS, and the caller gives PID_DIGITS bytes.
        unsafe { *dst.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above; a pid has at most 10 digits, so len < PID_DIGITS.
    unsafe { *dst.add(len) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_pid_formats_decimal() {
        let mut buf = [b'x'; PID_DIGITS];
        // SAFETY: buf has PID_DIGITS bytes.
        unsafe { write_pid(buf.as_mut_ptr(), 4194304) };
        assert_eq!(&buf[..8], b"4194304\0");
        // SAFETY: as above.
        unsafe { write_pid(buf.as_mut_ptr(), 0) };
        assert_eq!(&buf[..2], b"0\0");
    }
}
