//! The guard: stops every process group devsup started if devsup itself
//! dies without doing so (SIGKILL, a crash).
//!
//! `PR_SET_PDEATHSIG` reaches only a generation's direct child; a fork
//! clears it. So with `devsup -- sh -c 'server & wait'` or `cargo run`,
//! the real server would outlive a killed devsup and keep the port, and a
//! build's `rustc` would keep cargo's lock. The guard closes that hole for
//! servers that do nothing special:
//!
//! 1. At start-up, while devsup is still single-threaded, it forks the
//!    guard. The guard keeps only the read end of a pipe; devsup keeps the
//!    write end (close-on-exec, so no generation or build holds it).
//! 2. devsup writes `+PGID` when it starts a process group and `-PGID`
//!    once the group is gone, so the guard always knows the live groups.
//! 3. On a clean exit (and only then: not while unwinding from a panic)
//!    devsup writes `exit`, and the guard exits.
//! 4. devsup names the files it would remove on exit (a unix socket's
//!    path, the private notify directory) with `rm HEX`, the path's bytes
//!    in hex; the guard notes which file is there then (device, inode).
//! 5. If the pipe reaches end of file without `exit`, devsup died: the
//!    guard sends the drain signal to every live group, waits up to the
//!    drain timeout for them to go, SIGKILLs what is left, removes the
//!    files it was named that are still the same ones, and exits.
//!
//! On macOS, which has no `PR_SET_PDEATHSIG`, the guard is the only
//! mechanism: a killed devsup's generations get the drain signal from it,
//! direct children included. One window is left there: devsup killed
//! between a fork and its `+PGID` line (the next few system calls on the
//! main thread). A child that finds devsup gone before it execs exits
//! (`getppid` changed); one that has exec'd already is not stopped.
//!
//! The guard runs in a session of its own, so that a signal to devsup's
//! whole process group (Ctrl-C, an IDE's stop button, `timeout -s KILL`)
//! does not take it down together with devsup.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::platform;

/// devsup's side of the guard.
#[derive(Debug)]
pub(crate) struct Guard {
    pipe: File,
}

impl Guard {
    /// Forks the guard. The guard runs ordinary Rust code after `fork`,
    /// which is sound only while this process has a single thread: that is
    /// checked, and an error otherwise.
    pub(crate) fn start(drain_signal: Signal, drain_timeout: Duration) -> anyhow::Result<Guard> {
        // Where the platform cannot count threads (the BSDs), this rests on
        // the caller: `event_loop::run` starts the guard first.
        if let Some(threads) = platform::process::thread_count() {
            anyhow::ensure!(
                threads == 1,
                "the guard must be started before any other thread ({threads} threads run)"
            );
        }
        let max_fd = platform::fds::max_fd();
        let (read, write) = platform::fds::pipe().context("cannot create a pipe")?;
        // SAFETY: this process has one thread (checked above), so the
        // child may allocate and take locks; it never returns.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).context("cannot fork the guard"),
            0 => {
                drop(write);
                guard_main(read, max_fd, drain_signal, drain_timeout)
            }
            _ => Ok(Guard {
                pipe: File::from(write),
            }),
        }
    }

    /// The guard is to stop process group `pgid` if devsup dies.
    pub(crate) fn watch(&mut self, pgid: i32) {
        let _ = writeln!(self.pipe, "+{pgid}");
    }

    /// Process group `pgid` is gone.
    pub(crate) fn forget(&mut self, pgid: i32) {
        let _ = writeln!(self.pipe, "-{pgid}");
    }

    /// The guard is to remove `path` (a unix socket, or a directory of
    /// devsup's own) if devsup dies, provided it is still the file that is
    /// there now.
    pub(crate) fn remove_on_death(&mut self, path: &Path) {
        self.note("rm", path);
    }

    /// The guard is to remove the directory at `path` if devsup dies, but
    /// only if it is empty then: a directory devsup shares with other
    /// devsups (the status sockets').
    pub(crate) fn remove_empty_dir_on_death(&mut self, path: &Path) {
        self.note("rmdir", path);
    }

    /// The guard is to kill every process left in the generation cgroup
    /// at `path` if devsup dies, then remove it.
    pub(crate) fn kill_cgroup_on_death(&mut self, path: &Path) {
        self.note("cgroup", path);
    }

    fn note(&mut self, command: &str, path: &Path) {
        let hex: String = (path.as_os_str().as_bytes().iter())
            .map(|b| format!("{b:02x}"))
            .collect();
        let _ = writeln!(self.pipe, "{command} {hex}");
    }

    /// devsup exits cleanly: every group is stopped already, and the guard
    /// may go. Only an explicit call on the clean exit path says so, never
    /// a `Drop`: a `Guard` dropped while devsup unwinds from a panic leaves
    /// the guard to stop every group.
    pub(crate) fn exit(&mut self) {
        let _ = writeln!(self.pipe, "exit");
    }
}

fn guard_main(pipe: OwnedFd, max_fd: RawFd, drain_signal: Signal, drain_timeout: Duration) -> ! {
    // Hold nothing of devsup's but the pipe: not stdin (a terminal), not
    // a socket devsup may have inherited.
    // SAFETY: plain system calls on this process's own fds and signals.
    unsafe {
        let fd = pipe.as_raw_fd();
        for other in 0..fd {
            libc::close(other);
        }
        platform::fds::close_from(fd + 1, max_fd);
        libc::setsid();
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut groups = HashSet::new();
    let mut files = Vec::new();
    let mut cgroups: Vec<PathBuf> = Vec::new();
    for line in BufReader::new(File::from(pipe)).lines() {
        let Ok(line) = line else { break };
        if line == "exit" {
            // SAFETY: _exit ends this process without running devsup's
            // destructors, which are not the guard's to run.
            unsafe { libc::_exit(0) };
        }
        if let Some(pgid) = line.strip_prefix('+').and_then(|p| p.parse::<i32>().ok()) {
            groups.insert(pgid);
        } else if let Some(pgid) = line.strip_prefix('-').and_then(|p| p.parse::<i32>().ok()) {
            groups.remove(&pgid);
        } else if let Some(file) = line
            .strip_prefix("rm ")
            .and_then(|h| Leftover::noted(h, false))
        {
            files.push(file);
        } else if let Some(dir) = line
            .strip_prefix("rmdir ")
            .and_then(|h| Leftover::noted(h, true))
        {
            files.push(dir);
        } else if let Some(dir) = line
            .strip_prefix("cgroup ")
            .and_then(|h| Leftover::noted(h, true))
        {
            cgroups.push(dir.path.clone());
            files.push(dir);
        }
    }
    stop_groups(&mut groups, drain_signal, drain_timeout);
    // What escaped every group devsup knew (a daemon it had not seen yet)
    // is still in a generation's cgroup: killed, and waited for briefly.
    for dir in &cgroups {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline
        && cgroups.iter().any(|d| {
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
        })
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Deepest first: a directory named before what devsup made in it
    // (the generations' cgroups) is empty by its turn.
    files.sort_by_key(|f| std::cmp::Reverse(f.path.components().count()));
    for file in files {
        file.remove();
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Drains every group, then SIGKILLs those still there after the timeout.
fn stop_groups(groups: &mut HashSet<i32>, drain_signal: Signal, drain_timeout: Duration) {
    let alive = |pgid: &i32| killpg(Pid::from_raw(*pgid), None) != Err(Errno::ESRCH);
    groups.retain(alive);
    for &pgid in groups.iter() {
        let _ = killpg(Pid::from_raw(pgid), drain_signal);
    }
    let deadline = Instant::now() + drain_timeout;
    while !groups.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        groups.retain(alive);
    }
    for &pgid in groups.iter() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// A file the guard removes if devsup dies: its path, and which file was
/// there when devsup named it, so that a file someone else has put there
/// since is left alone.
struct Leftover {
    path: PathBuf,
    id: (u64, u64),
    /// A shared directory: removed only if nothing is left in it.
    only_if_empty: bool,
}

impl Leftover {
    /// Reads `HEX` (the path's bytes) and notes the file there now.
    fn noted(hex: &str, only_if_empty: bool) -> Option<Leftover> {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let path = PathBuf::from(OsString::from_vec(bytes));
        let meta = std::fs::symlink_metadata(&path).ok()?;
        Some(Leftover {
            id: (meta.dev(), meta.ino()),
            path,
            only_if_empty,
        })
    }

    fn remove(&self) {
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else {
            return;
        };
        if (meta.dev(), meta.ino()) != self.id {
            return;
        }
        let _ = if self.only_if_empty {
            std::fs::remove_dir(&self.path)
        } else if meta.is_dir() {
            std::fs::remove_dir_all(&self.path)
        } else {
            std::fs::remove_file(&self.path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(path: &Path) -> String {
        (path.as_os_str().as_bytes().iter())
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_shared_directory_is_removed_only_when_empty() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("devsup-status");
        std::fs::create_dir(&shared).unwrap();
        let other = shared.join("other-devsup.sock");
        std::fs::write(&other, "").unwrap();

        Leftover::noted(&hex(&shared), true).unwrap().remove();
        assert!(other.exists(), "another devsup's file is left alone");

        std::fs::remove_file(&other).unwrap();
        Leftover::noted(&hex(&shared), true).unwrap().remove();
        assert!(!shared.exists(), "an empty shared directory goes");
    }

    #[test]
    fn a_file_replaced_since_it_was_named_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("app.sock");
        std::fs::write(&path, "").unwrap();
        let noted = Leftover::noted(&hex(&path), false).unwrap();
        // Moved away, not deleted, so that the new file cannot reuse its
        // inode number.
        std::fs::rename(&path, root.path().join("moved")).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        noted.remove();
        assert!(path.exists());
    }
}
