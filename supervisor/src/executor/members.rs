//! Which processes a generation has: its own process group, its cgroup
//! where it has one ([`process::cgroup`]), and the process groups of the
//! processes that left its group, found in the cgroup or among the orphans
//! devsup adopted with the generation's environment
//! ([`process::orphans`]). Every signal for the generation goes to each of
//! these groups, and the generation is gone only when all are, and its
//! cgroup is empty.

use nix::unistd::Pid;

use super::{Executor, Role, group_is_gone};
use crate::process::{self, cgroup::Cgroups};
use crate::step::{Step, Tracking};

impl Executor {
    /// Makes the generations' cgroups' directory, where devsup can, and
    /// says how the generations' processes are told.
    pub(crate) fn start_tracking(&mut self) {
        let tracking = match Cgroups::create() {
            Ok(cgroups) => {
                self.guard.remove_empty_dir_on_death(cgroups.dir());
                let dir = cgroups.dir().display().to_string();
                self.cgroups = Some(cgroups);
                Tracking::Cgroup(dir)
            }
            Err(why) => Tracking::Orphans(why),
        };
        self.report(Step::Tracking(tracking));
    }

    /// Adds to each generation the process groups of its processes that
    /// left its own group (`setsid`, a double fork): found in its cgroup,
    /// or among devsup's adopted children with its environment. Returns
    /// false if one of devsup's children is exiting: what it leaves is not
    /// devsup's yet, so no generation may be called gone before the next
    /// look (its SIGCHLD brings one).
    pub(super) fn find_members(&mut self) -> bool {
        let mut found: Vec<(i32, i32, i32)> = Vec::new();
        let children = process::orphans::children();
        for adopted in children.adopted {
            let leader = self.procs.iter().find_map(|(&leader, p)| {
                matches!(p.role, Role::Generation(g) if g == adopted.generation).then_some(leader)
            });
            if let Some(leader) = leader {
                found.push((leader, adopted.pid, adopted.pgid));
            }
        }
        for (&leader, p) in &self.procs {
            for pid in p.cgroup.iter().flat_map(|c| c.pids()) {
                if let Ok(group) = nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
                    found.push((leader, pid, group.as_raw()));
                }
            }
        }
        let own_group = nix::unistd::getpgrp().as_raw();
        for (leader, pid, group) in found {
            let known = self
                .procs
                .iter()
                .any(|(&l, p)| l == group || p.extra_groups.contains(&group));
            if known || group <= 1 || group == own_group {
                continue;
            }
            let Some(proc) = self.procs.get_mut(&leader) else {
                continue;
            };
            proc.extra_groups.push(group);
            self.guard.watch(group);
            // Found after the drain signal (its parent, the leader, has
            // exited since, and it was adopted): it gets the signal now.
            if let Some(signal) = proc.signalled {
                super::signal_group(group, signal);
            }
            // Its READY=1 and STATUS= are the generation's.
            if let Some(heard) = &proc.heard {
                heard.decided(pid, Some(group));
            }
        }
        !children.exiting
    }

    /// Whether every process of the group led by `leader` is gone: its
    /// groups, and its cgroup.
    pub(super) fn all_gone(&self, leader: i32) -> bool {
        let Some(p) = self.procs.get(&leader) else {
            return true;
        };
        group_is_gone(leader)
            && p.extra_groups.iter().all(|g| group_is_gone(*g))
            && p.cgroup.as_ref().is_none_or(|c| c.pids().is_empty())
    }

    /// How many processes the generation led by `leader` runs now.
    pub(super) fn remaining(&self, leader: i32) -> usize {
        let Some(p) = self.procs.get(&leader) else {
            return 0;
        };
        if let Some(cgroup) = &p.cgroup {
            return cgroup.pids().len();
        }
        std::iter::once(leader)
            .chain(p.extra_groups.iter().copied())
            .map(group_size)
            .sum()
    }

    /// If the generation led by `leader`, whose leader has exited, runs on
    /// in what it left, says so, once.
    pub(super) fn leader_exited(&mut self, leader: i32) {
        let Some(p) = self.procs.get(&leader) else {
            return;
        };
        let (Role::Generation(generation), Some(exit)) = (p.role, p.leader) else {
            return;
        };
        let remaining = self.remaining(leader);
        if remaining == 0 {
            return;
        }
        if let Some(p) = self.procs.get_mut(&leader) {
            p.leader_told = true;
        }
        self.report(Step::LeaderExited {
            generation,
            pid: leader,
            exit,
            remaining,
        });
    }
}

/// How many processes are in group `pgid` (on Linux, a scan of `/proc`;
/// elsewhere one while the group lives).
fn group_size(pgid: i32) -> usize {
    #[cfg(target_os = "linux")]
    return crate::readiness::group_pids(pgid).len();
    #[cfg(not(target_os = "linux"))]
    return usize::from(!group_is_gone(pgid));
}
