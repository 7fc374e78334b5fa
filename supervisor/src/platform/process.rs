//! Processes: the parent-death signal, the child subreaper, the thread
//! count the guard checks, and a process's parent.
//!
//! | | Linux | macOS (and the BSDs) |
//! | --- | --- | --- |
//! | devsup dies | `PR_SET_PDEATHSIG` reaches each direct child at once; the guard stops every group | the guard alone stops every group |
//! | a generation's orphans | reparented to devsup (child subreaper), reaped, SIGCHLD says so | reparented to init/launchd: the executor polls each group whose leader exited every [`ORPHAN_POLL`] |
//! | threads of devsup | `/proc/self/task` | libproc (`proc_pidinfo`); unknown on the BSDs |
//! | a process's parent | `/proc/PID/stat` | libproc (`proc_pidinfo`); unknown on the BSDs |

use std::io;
use std::time::Duration;

/// How often the executor looks at a process group whose leader has exited
/// where no subreaper hears the rest of the group exit.
pub(crate) const ORPHAN_POLL: Duration = Duration::from_millis(100);

/// Sets the signal this child gets when the thread that forked it exits,
/// where the platform has one; false if that failed (errno is set).
///
/// # Safety
/// Async-signal-safe; for the child between fork and exec.
pub(crate) unsafe fn set_parent_death_signal(signal: libc::c_int) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
    return unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) } == 0;
    // No such call: the guard stops the child's group when devsup dies.
    #[cfg(not(target_os = "linux"))]
    {
        let _ = signal;
        true
    }
}

/// Whether devsup is a child subreaper: the processes its children leave
/// behind are reparented to it, and their exits reach it as SIGCHLD.
#[derive(Debug)]
pub(crate) enum Subreaper {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Yes,
    /// The platform has it, but it failed.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Failed(io::Error),
    /// The platform has no such thing (macOS, the BSDs but FreeBSD's
    /// `procctl`, which is not used).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Unsupported,
}

/// Makes devsup a child subreaper, where the platform can.
pub(crate) fn become_subreaper() -> Subreaper {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
            Subreaper::Yes
        } else {
            Subreaper::Failed(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    Subreaper::Unsupported
}

/// How many threads this process runs, if the platform says.
pub(crate) fn thread_count() -> Option<usize> {
    #[cfg(target_os = "linux")]
    return std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count);
    #[cfg(target_vendor = "apple")]
    return apple::task_info(std::process::id() as i32).map(|t| t.pti_threadnum.max(0) as usize);
    #[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
    return None;
}

/// The parent pid of `pid`, if it exists and the platform says.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    #[cfg(target_os = "linux")]
    return parse_stat_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?);
    #[cfg(target_vendor = "apple")]
    return apple::bsd_info(pid).map(|info| info.pbi_ppid as i32);
    #[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
    {
        let _ = pid;
        None
    }
}

/// The parent pid in the text of `/proc/PID/stat`.
#[cfg(any(test, target_os = "linux"))]
fn parse_stat_ppid(stat: &str) -> Option<i32> {
    // The command name is in parentheses and may hold spaces: the fields
    // after the last ')' are state, then ppid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// libproc: `proc_pidinfo` fills one fixed-size struct per flavour.
#[cfg(target_vendor = "apple")]
mod apple {
    use std::mem::{MaybeUninit, size_of};

    fn pidinfo<T>(pid: i32, flavor: libc::c_int) -> Option<T> {
        let mut info = MaybeUninit::<T>::zeroed();
        let size = size_of::<T>() as libc::c_int;
        // SAFETY: proc_pidinfo writes at most `size` bytes into `info`.
        let n = unsafe { libc::proc_pidinfo(pid, flavor, 0, info.as_mut_ptr().cast(), size) };
        // SAFETY: a full-size answer filled the struct (plain integers,
        // valid when zeroed too).
        (n == size).then(|| unsafe { info.assume_init() })
    }

    pub(super) fn bsd_info(pid: i32) -> Option<libc::proc_bsdinfo> {
        pidinfo(pid, libc::PROC_PIDTBSDINFO)
    }

    pub(super) fn task_info(pid: i32) -> Option<libc::proc_taskinfo> {
        pidinfo(pid, libc::PROC_PIDTASKINFO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_with_parentheses_and_spaces() {
        assert_eq!(
            parse_stat_ppid("4242 (my (odd) server) S 17 4242 4242 0 -1"),
            Some(17)
        );
        assert_eq!(parse_stat_ppid("4242 (truncated"), None);
        assert_eq!(parse_stat_ppid(""), None);
    }

    #[test]
    fn this_process_has_its_parent_and_threads() {
        let me = std::process::id() as i32;
        assert_eq!(
            parent_of(me),
            Some(nix::unistd::getppid().as_raw()),
            "the parent of this test process"
        );
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || rx.recv());
        // This test's thread and the one it started, at least.
        let threads = thread_count().expect("a thread count on Linux");
        assert!(threads >= 2, "{threads} threads");
        drop(tx);
        let _ = thread.join();
        assert_eq!(parent_of(i32::MAX), None, "no such process");
    }
}
