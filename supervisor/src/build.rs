//! The build command: run in its own process group, cancellable.
//!
//! A build step is `sh -c CMD`, started in a new process group so that
//! cancelling it (a change arrived mid-build) stops cargo and every rustc
//! it started, not only the shell. It inherits none of devsup's sockets or
//! pipes (they are all close-on-exec) and passes its output through. Its
//! exit is seen by the supervisor's reaper like any other child.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Starts `cmd` and returns its pid, which is also its process group id.
/// The child is reaped by the supervisor, never through a `Child` handle.
/// If devsup dies, the shell gets SIGTERM (whatever the drain signal, which
/// need not stop a build) and the guard stops the rest of its group.
pub fn spawn(cmd: &str) -> std::io::Result<i32> {
    let parent = std::process::id() as libc::pid_t;
    let max_fd = crate::generation::max_fd();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .process_group(0);
    // SAFETY: prctl, getppid and close_range/fcntl are async-signal-safe,
    // and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // devsup may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            // Only stdin, stdout and stderr: not even fds devsup inherited.
            crate::generation::close_from_on_exec(3, max_fd);
            Ok(())
        });
    }
    Ok(command.spawn()?.id() as i32)
}
