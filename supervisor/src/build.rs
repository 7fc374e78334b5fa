//! The build command: run in its own process group, cancellable.
//!
//! A build step is `sh -c CMD`, started in a new process group so that
//! cancelling it (a change arrived mid-build) stops cargo and every rustc
//! it started, not only the shell. It inherits none of devsup's sockets or
//! pipes, only stdout and stderr, which the supervisor points at
//! [`crate::tee`] pipes that show the output and keep its last lines. Its exit is
//! seen by the supervisor's reaper like any other child. It is forked the
//! way generations are ([`crate::generation::spawn_shell`]): a signal that
//! reaches it before its exec is its own, never devsup's.

/// Starts `cmd` and returns its pid, which is also its process group id.
/// If devsup dies, the shell gets SIGTERM and the guard stops the rest of
/// its group. A shell that cannot be run exits with status 127, which
/// fails the step.
/// Its stdout and stderr go to `output` when given (see [`crate::tee`]).
pub fn spawn(
    cmd: &str,
    output: Option<(std::os::fd::RawFd, std::os::fd::RawFd)>,
) -> anyhow::Result<i32> {
    let (pid, _exec_status) = crate::generation::spawn_shell(cmd, output)?;
    Ok(pid)
}
