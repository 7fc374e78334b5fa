//! `MAINPID=`: a server started through a launcher (`cargo run`, a shell
//! script, a process manager) names its real process. If that process has
//! left the generation's process group, its group gets every signal too,
//! and the generation counts as gone only once both groups are, and that
//! group's processes are heard on the generation's notify socket.
//!
//! Only a process of the generation may be named, checked through its
//! parents (`/proc` on Linux, libproc on macOS): a descendant of its
//! leader, or an orphan devsup adopted as subreaper. Without a subreaper
//! (macOS) an orphan is init's, not devsup's, and cannot be told from any
//! other process: a `MAINPID=` whose parent has exited and which left the
//! generation's group is ignored there, with the warning. On a platform
//! that cannot say a process's parent (the BSDs), only a `MAINPID=` in the
//! generation's own group is accepted.

use nix::unistd::Pid;

use super::{Executor, Role};
use crate::event::GenId;
use crate::platform::process::parent_of;
use crate::step::{MainPid, Step};

impl Executor {
    /// Generation `gen_id` sent `MAINPID=pid`: if `pid` is a process of
    /// the generation in another process group, add that group to it.
    pub(crate) fn main_pid(&mut self, gen_id: GenId, pid: u32) {
        let Some(leader) = self
            .procs
            .iter()
            .find(|(_, p)| matches!(p.role, Role::Generation(g) if g == gen_id))
            .map(|(&leader, _)| leader)
        else {
            return;
        };
        let pid = pid as i32;
        // Servers repeat MAINPID= with every STATUS=: decide once.
        if self.procs[&leader]
            .heard
            .as_ref()
            .is_some_and(|heard| heard.is_decided(pid))
        {
            return;
        }
        let decision = self.main_pid_group(leader, pid);
        let group = match decision {
            MainPid::Group(group) => Some(group),
            _ => None,
        };
        self.report(Step::MainPidDecided {
            generation: gen_id,
            pid,
            decision,
        });
        let Some(proc) = self.procs.get_mut(&leader) else {
            return;
        };
        if let Some(group) = group {
            if !proc.extra_groups.contains(&group) {
                proc.extra_groups.push(group);
                self.guard.watch(group);
            }
        }
        // The generation's notify socket hears that group from now on; its
        // reader may be waiting for this decision.
        if let Some(heard) = &proc.heard {
            heard.decided(pid, group);
        }
    }

    /// What `MAINPID=pid` means for the generation led by `leader`: the
    /// process group it adds, if any.
    fn main_pid_group(&self, leader: i32, pid: i32) -> MainPid {
        let group = match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
            Ok(group) => group.as_raw(),
            Err(e) => return MainPid::NoSuchProcess(e.to_string()),
        };
        if group == leader {
            return MainPid::OwnGroup;
        }
        // Only a process of this generation may be named: a descendant of
        // its leader, or an orphan devsup adopted (as subreaper) that is in
        // no group devsup knows. Never devsup's own group, nor init's.
        let own_group = nix::unistd::getpgrp().as_raw();
        let known = |g: i32| {
            self.procs
                .iter()
                .any(|(&l, p)| l == g || p.extra_groups.contains(&g))
        };
        let adopted = parent_of(pid) == Some(std::process::id() as i32) && !known(group);
        if group <= 1 || group == own_group || !(descends_from(pid, leader) || adopted) {
            return MainPid::NotOurs;
        }
        MainPid::Group(group)
    }
}

/// Whether `ancestor` is `pid`'s parent, grandparent, …
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        match parent_of(current) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}
