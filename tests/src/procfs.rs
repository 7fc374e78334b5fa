//! Reading `/proc`: one parser for `/proc/<pid>/stat` and one for
//! `/proc/<pid>/status`, and what the tests and the benchmark ask of them
//! (a process group's members, zombies, threads, fds, age, memory).
//!
//! Every function returns nothing (`None`, empty, 0) for a process that is
//! gone: processes end between a listing and a read.

use std::time::Duration;

use nix::sys::signal::Signal;

/// The fields of `/proc/<pid>/stat` the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter: `R`, `S`, `Z`, ...
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group.
    pub pgrp: i32,
    /// When the process started, in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses the text of a `/proc/<pid>/stat` file.
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may contain anything.
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Field 22 (starttime) is the 20th after the command name; 3 are read.
    let start_ticks = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        start_ticks,
    })
}

/// `/proc/<pid>/stat`, parsed.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process on the machine, with its [`Stat`].
pub fn processes() -> Vec<(i32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid = entry.ok()?.file_name().to_str()?.parse().ok()?;
        Some((pid, stat(pid)?))
    })
    .collect()
}

/// The live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, stat)| stat.pgrp == pgid && !matches!(stat.state, 'Z' | 'X'))
        .map(|(pid, _)| pid)
        .collect()
}

/// The children of `ppid` that are zombies: exited, not reaped.
pub fn zombie_children(ppid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, stat)| stat.ppid == ppid && stat.state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// How long process `pid` has been running (zero if it is gone).
pub fn process_age(pid: i32) -> Duration {
    let Some(stat) = stat(pid) else {
        return Duration::ZERO;
    };
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64((uptime - stat.start_ticks as f64 / hz).max(0.0))
}

/// The first number of field `key` of `/proc/<pid>/status` (`VmRSS` in
/// KiB, `Threads`, ...), or 0.
pub fn status_number(pid: i32, key: &str) -> u64 {
    status_field(pid, key)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The value of field `key` of `/proc/<pid>/status`, trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Whether process `pid` has a handler for `signal` (`SigCgt` in
/// `/proc/<pid>/status`).
pub fn catches(pid: i32, signal: Signal) -> bool {
    status_field(pid, "SigCgt")
        .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
        .is_some_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// The names of the threads of process `pid`, sorted.
pub fn thread_names(pid: i32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// The open fds of process `pid` and what each points to
/// (`/proc/<pid>/fd/N` link targets, e.g. `socket:[1234]`), sorted by fd.
pub fn open_fds(pid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<(i32, String)> = dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            // The fd may close between listing and reading.
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// Number of open fds of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        // A command name with spaces and parentheses.
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    12345 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 1,
                pgrp: 42,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("42 (x) S 1"), None);
    }

    #[test]
    fn this_process() {
        let me = std::process::id() as i32;
        let own = stat(me).unwrap();
        assert!(own.ppid > 0 && own.pgrp > 0, "{own:?}");
        assert!(process_age(me) < Duration::from_secs(24 * 3600));
        assert!(status_number(me, "VmRSS") > 0);
        assert!(status_number(me, "Threads") >= 1);
        assert!(!thread_names(me).is_empty());
        assert!(fd_count(me) >= 3);
        assert!(open_fds(me).iter().any(|(fd, _)| *fd == 0));
        assert!(processes().iter().any(|(pid, _)| *pid == me));
        assert_eq!(stat(-5), None);
        assert_eq!(process_age(-5), Duration::ZERO);
    }
}
