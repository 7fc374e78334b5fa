//! A cgroup v2 per generation, where devsup may make one (Linux, cgroup v2
//! mounted, devsup's own cgroup writable: root, or a delegated subtree as
//! systemd gives a user service with `Delegate=yes`).
//!
//! A cgroup holds every process a generation starts, whatever it does:
//! `setsid`, a double fork, a new process group. systemd tracks services
//! the same way. devsup makes `devsup-PID/` under its own cgroup, and
//! `gen-N/` in it for each generation; the forked child moves itself there
//! before `execve` (a `write` of `0` to `cgroup.procs`, async-signal-safe),
//! so that nothing it starts is ever outside. No controller is enabled:
//! the cgroups only count and kill (`cgroup.procs`, `cgroup.kill`), so
//! devsup may sit beside them in its own cgroup.
//!
//! Without one (`DEVSUP_NO_CGROUP=1`, cgroup v1 only, no permission,
//! macOS), [`super::orphans`] attributes the processes devsup adopts as a
//! child subreaper instead.
//!
//! Written by hand: a few reads and writes of files in `/sys/fs/cgroup`.
//! The cgroup crates (`cgroups-rs`, `controlgroup`) manage controllers
//! and resource limits, which devsup does not use, and pull in far more.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The environment variable that turns the cgroups off: generations are
/// then tracked by process group and adopted orphans only.
pub(crate) const NO_CGROUP_ENV: &str = "DEVSUP_NO_CGROUP";

/// devsup's own directory of generation cgroups, `…/devsup-PID`.
#[derive(Debug)]
pub(crate) struct Cgroups {
    dir: PathBuf,
}

/// One generation's cgroup.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing: the child writes `0` to it.
    procs: OwnedFd,
}

impl Cgroups {
    /// Makes devsup's directory of generation cgroups; why not, if it
    /// cannot (the caller falls back to adopted orphans).
    pub(crate) fn create() -> Result<Cgroups, String> {
        if std::env::var_os(NO_CGROUP_ENV).is_some_and(|v| v != "0") {
            return Err(format!("{NO_CGROUP_ENV} is set"));
        }
        let own = own_cgroup_dir()?;
        let dir = own.join(format!("devsup-{}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        Ok(Cgroups { dir })
    }

    /// Where the generations' cgroups are.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes generation `generation`'s cgroup.
    pub(crate) fn for_generation(&self, generation: u64) -> io::Result<Cgroup> {
        let dir = self.dir.join(format!("gen-{generation}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // std opens with O_CLOEXEC: only the forked child, before exec,
        // writes to it.
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(Cgroup {
            dir,
            procs: procs.into(),
        })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Empty by now unless a generation was left behind; a cgroup with
        // processes cannot be removed, and stays for them.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Cgroup {
    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fd the forked child writes `0` to, to move itself in.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// The pids in the cgroup now (empty when it is gone).
    pub(crate) fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|text| parse_pids(&text))
            .unwrap_or_default()
    }

    /// Sends SIGKILL to every process in it at once (`cgroup.kill`, Linux
    /// 5.14); false where there is no such file.
    pub(crate) fn kill(&self) -> bool {
        fs::write(self.dir.join("cgroup.kill"), "1").is_ok()
    }

    /// Removes the (empty) cgroup.
    pub(crate) fn remove(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The pids of a `cgroup.procs` file.
fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// devsup's own cgroup v2 directory: the cgroup2 mount point from
/// `/proc/self/mountinfo` joined with the `0::PATH` line of
/// `/proc/self/cgroup`.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cgroup = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = unified_path(&cgroup).ok_or("no cgroup v2 hierarchy (cgroup v1 only)")?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("cgroup v2 is not mounted")?;
    Ok(mount.join(path.trim_start_matches('/')))
}

/// The path of the `0::PATH` line (the cgroup v2 hierarchy).
fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The mount point of the first cgroup2 file system in a mountinfo text
/// (fields: id parent major:minor root mountpoint options … - fstype …).
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Octal escapes (`\040` for a space) are left alone: a cgroup
        // mount point with a space in it fails the mkdir and falls back.
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_hierarchy_in_a_hybrid_system() {
        let cgroup = "9:name=systemd:/\n4:memory:/x/y\n0::/user.slice/app\n";
        assert_eq!(unified_path(cgroup), Some("/user.slice/app"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("30 25 0:26 / /a rw - tmpfs tmpfs rw\n"), None);
    }

    #[test]
    fn reads_the_pids_of_cgroup_procs() {
        assert_eq!(parse_pids("12\n345\n"), vec![12, 345]);
        assert!(parse_pids("").is_empty());
    }
}
