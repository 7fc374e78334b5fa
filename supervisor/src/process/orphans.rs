//! Which generation an orphan devsup adopted belongs to, where no cgroup
//! says it ([`super::cgroup`]).
//!
//! devsup is a child subreaper: a process whose parent exits is
//! reparented to it, whether it called `setsid` or not. So once a
//! generation's leader has exited, every process the generation still
//! runs is a child of devsup or a descendant of one. Such a child is told
//! apart by its environment: every generation gets `DEVSUP_GENERATION=N`,
//! and `fork` copies the environment, `execve` keeps it unless the program
//! replaces it. `/proc/PID/environ` is the environment the process was
//! started with, which it cannot lose by `setsid`, `setpgid`, or by
//! changing its own variables later.
//!
//! Other ways were weighed and dropped: a session or process group is
//! what a daemon leaves first (`setsid`); a walk of `/proc` for the
//! leader's descendants at spawn time misses what it forks later, and a
//! double fork's grandchild is nobody's descendant once its parent exits.
//! A process that cleared its environment is not found here (the cgroup
//! finds it); it is reaped when it exits, as before.

use std::fs;

use devsup_protocol as proto;

/// A child of devsup's that a generation left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Adopted {
    pub(crate) pid: i32,
    /// Its process group.
    pub(crate) pgid: i32,
    /// The generation whose environment it has.
    pub(crate) generation: u64,
}

/// devsup's children now.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Those that carry a generation's environment (its own leaders among
    /// them: the caller skips the groups it knows).
    pub(crate) adopted: Vec<Adopted>,
    /// Whether one is exiting (or a zombie): its environment is gone, and
    /// the children it leaves are not yet devsup's. Its exit raises a
    /// SIGCHLD, so the caller may look again then, before it says that a
    /// generation is gone.
    pub(crate) exiting: bool,
}

/// `PF_EXITING` in `/proc/PID/stat`'s flags: the process is in `exit`.
const PF_EXITING: u64 = 0x4;

/// devsup's children, and the generation each belongs to.
pub(crate) fn children() -> Children {
    let mut found = Children::default();
    for pid in child_pids() {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((state, pgid, flags)) = parse_stat(&stat) else {
            continue;
        };
        if state == 'Z' || flags & PF_EXITING != 0 {
            found.exiting = true;
            continue;
        }
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(generation) = generation_in(&environ) {
            found.adopted.push(Adopted {
                pid,
                pgid,
                generation,
            });
        }
    }
    found
}

/// devsup's children: every process whose parent is devsup, from a scan
/// of `/proc/*/stat` (every process). Not `/proc/self/task/TID/children`: an
/// orphan is reparented to any thread of devsup's, and moves again when
/// that thread exits, so a read of the threads one after another can miss
/// it.
fn child_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (ppid_in(&stat)? == me).then_some(pid)
    })
    .collect()
}

/// The parent pid (the 4th field) of a `/proc/PID/stat` line.
fn ppid_in(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `N` of `DEVSUP_GENERATION=N` in a NUL-separated environment.
fn generation_in(environ: &[u8]) -> Option<u64> {
    let key = format!("{}=", proto::GENERATION_ENV);
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(key.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
}

/// The state, process group and flags of a `/proc/PID/stat` line (the
/// 3rd, 5th and 9th fields; the command before them may hold anything).
fn parse_stat(stat: &str) -> Option<(char, i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().take(7).collect();
    let state = fields.first()?.chars().next()?;
    Some((
        state,
        fields.get(2)?.parse().ok()?,
        fields.get(6)?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_generation_from_an_environment() {
        let env = b"PATH=/bin\0DEVSUP_GENERATION=12\0HOME=/root\0";
        assert_eq!(generation_in(env), Some(12));
        assert_eq!(generation_in(b"PATH=/bin\0"), None);
        assert_eq!(generation_in(b"DEVSUP_GENERATION=x\0"), None);
        assert_eq!(generation_in(b"XDEVSUP_GENERATION=3\0"), None);
    }

    #[test]
    fn reads_state_group_and_flags_from_stat() {
        let stat = "42 (py) thon) S 1 40 40 0 -1 4194564 90 0";
        assert_eq!(parse_stat(stat), Some(('S', 40, 4194564)));
        assert_eq!(parse_stat(stat).unwrap().2 & PF_EXITING, PF_EXITING);
        assert_eq!(parse_stat("42 (x) Z 1 40"), None);
        assert_eq!(ppid_in(stat), Some(1));
        assert_eq!(parse_stat("42 (x"), None);
    }
}
