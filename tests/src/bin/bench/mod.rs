//! The parts of devsup-bench beyond the handoff table: edit→serve latency,
//! watch start-up on a large tree, and a long run of reloads; plus what
//! they share (reading `/proc`, medians).

pub mod edit;
pub mod soak;
pub mod watch;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use devsup_tests::harness;
pub use devsup_tests::procfs::{self, fd_count, loadavg};
pub use devsup_tests::stats::median_max;

/// One look at a process in `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Entries in `/proc/<pid>/fd`.
    pub fds: usize,
    /// `VmRSS`, in KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS), in KiB.
    pub hwm_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/status` and counts `/proc/<pid>/fd`.
    pub fn take(pid: i32) -> ProcSample {
        ProcSample {
            fds: fd_count(pid),
            rss_kib: procfs::status_number(pid, "VmRSS"),
            hwm_kib: procfs::status_number(pid, "VmHWM"),
            threads: procfs::status_number(pid, "Threads"),
        }
    }

    /// Waits until the fd count of `pid` has not changed for 100 ms (at
    /// most 2 s: closes that follow a log line lag it a little), then
    /// samples.
    pub fn settled(pid: i32) -> ProcSample {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = fd_count(pid);
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(10));
            let now = fd_count(pid);
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        ProcSample::take(pid)
    }
}

/// What `pid`'s fds point to, by kind: `socket=4 pipe=3 anon_inode:[eventpoll]=2 /dev/null=1`.
pub fn fd_kinds(pid: i32) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (_, target) in harness::open_fds(pid) {
        let kind = match target.find(":[") {
            Some(at) if !target.starts_with("anon_inode") => target[..at].to_owned(),
            _ => target,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the load average before and after a part, to judge whether
/// other work on the machine disturbed it.
pub fn print_load(before: &str) {
    println!("(load average before: {before}; after: {})", loadavg());
}

/// KiB as `5.9 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `median / max` of durations, or `n/a`.
pub fn durations(samples: &[Duration]) -> String {
    match median_max(samples) {
        Some((median, max)) => format!("{} / {}", crate::fmt(median), crate::fmt(max)),
        None => "n/a".into(),
    }
}

/// `median / max` of KiB figures in MiB, or `n/a`.
pub fn sizes(samples: &[u64]) -> String {
    match median_max(samples) {
        Some((median, max)) => format!("{} / {}", mib(median), mib(max)),
        None => "n/a".into(),
    }
}
