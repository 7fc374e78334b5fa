//! Acting on processes by pid: is it alive, signal it, start a child with
//! fds placed where devsup would place them, and end it whatever happens.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::procfs;

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    match process_state(pid) {
        Some(state) => state != 'Z' && state != 'X',
        // Gone between the two checks.
        None => false,
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
pub fn process_state(pid: i32) -> Option<char> {
    procfs::stat(pid).map(|stat| stat.state)
}

/// Sends `signal` to process `pid` (not its group); panics if it cannot be
/// delivered.
pub fn kill(pid: i32, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
        .unwrap_or_else(|e| panic!("kill({pid}, {signal}): {e}"));
}

/// A child that is SIGKILLed and reaped if a test fails before it exits.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The most fds [`inherit_fds`] places.
pub const MAX_INHERITED: usize = 8;

/// Makes `command`'s child inherit `fds` as fd 3, 4, ... in order, as
/// devsup places a generation's sockets and channels (close-on-exec
/// cleared on each). Panics if given more than [`MAX_INHERITED`].
pub fn inherit_fds(command: &mut Command, fds: &[RawFd]) {
    assert!(fds.len() <= MAX_INHERITED, "at most {MAX_INHERITED} fds");
    let mut sources = [-1; MAX_INHERITED];
    sources[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) and no
    // allocation between fork and exec. Every fd is first copied to 10 or
    // above so that no dup2 can clobber another's source, and dup2 clears
    // close-on-exec on its target.
    unsafe {
        command.pre_exec(move || {
            let mut copies = [-1; MAX_INHERITED];
            for (copy, source) in copies.iter_mut().zip(&sources[..count]) {
                *copy = libc::fcntl(*source, libc::F_DUPFD, 10);
                if *copy < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (target, copy) in (3..).zip(&copies[..count]) {
                if libc::dup2(*copy, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(*copy);
            }
            Ok(())
        });
    }
}
