//! The executor: the only code that touches processes.
//!
//! It carries out the state machine's [`Action`]s (spawn a generation, start
//! a build step, signal a process group, exit) and answers each at once with
//! the [`Event`] it causes. It also owns the bookkeeping the state machine
//! does not need to see: which process groups devsup started and what for,
//! reaping (devsup is a child subreaper, so processes a generation leaves
//! behind are reparented to it and reaped here, and a generation counts as
//! gone only when its whole process group is), each generation's notify
//! socket, the `FDSTORE=1` fds, and the guard.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Instant;

use devsup_protocol as proto;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::event::{Action, Event, Exit, GenId, Input, SignalReason, Store};
use crate::guard::Guard;
use crate::log::latency;
use crate::machine::ReadyRule;
use crate::process::{self, ExecStatus, Inherit};
use crate::sockets::Listener;
use crate::sources::notify::{self, NotifyDir};
use crate::sources::ready_channel;

mod main_pid;
mod output;
mod probe;

/// What a process devsup started is for.
#[derive(Debug, Clone, Copy)]
enum Role {
    Generation(GenId),
    Build,
}

#[derive(Debug)]
struct Proc {
    role: Role,
    /// How the group leader ended, once it has.
    leader: Option<Exit>,
    /// Other process groups that belong to it: the group of a `MAINPID=`
    /// that left the generation's own group.
    extra_groups: Vec<i32>,
    /// A generation's exec status and program, read once it has exited: a
    /// child that could not exec exits at once, with status 127.
    exec: Option<(ExecStatus, String)>,
}

/// Carries out actions: the only code that touches processes.
pub(crate) struct Executor {
    config: Config,
    listeners: Vec<Listener>,
    tx: Sender<Input>,
    /// Process groups devsup started, by leader pid (= pgid).
    procs: HashMap<i32, Proc>,
    notify_dir: NotifyDir,
    /// Each live generation's notify socket.
    notify_paths: HashMap<GenId, PathBuf>,
    /// `FDSTORE=1` fds, passed to every new generation after the sockets.
    fd_store: Vec<(String, OwnedFd)>,
    /// Stops every group devsup started if devsup dies first.
    guard: Guard,
    /// Readiness and drain diagnostics from `/proc`.
    probes: probe::Probes,
}

/// Most fds devsup keeps for `FDSTORE=1`.
const MAX_STORED_FDS: usize = 32;

impl Executor {
    /// An executor with no process yet, and the private directory for the
    /// generations' notify sockets.
    pub(crate) fn new(
        config: Config,
        listeners: Vec<Listener>,
        tx: Sender<Input>,
        guard: Guard,
    ) -> anyhow::Result<Executor> {
        for l in &listeners {
            l.set_nonblocking(config.nonblocking).map_err(|e| {
                anyhow::anyhow!("cannot set O_NONBLOCK on the socket {}: {e}", l.addr)
            })?;
        }
        let probes = probe::Probes::new(&listeners, config.ready != ReadyRule::Notify);
        Ok(Executor {
            probes,
            config,
            listeners,
            tx,
            procs: HashMap::new(),
            notify_dir: NotifyDir::create()?,
            notify_paths: HashMap::new(),
            fd_store: Vec::new(),
            guard,
        })
    }

    /// Carries out one action; pushes the events it causes at once onto
    /// `queue`. Returns an exit status to stop.
    pub(crate) fn execute(&mut self, action: Action, queue: &mut VecDeque<Event>) -> Option<u8> {
        match action {
            Action::Spawn { gen_id, trigger_at } => queue.push_back(self.spawn(gen_id, trigger_at)),
            Action::Signal {
                gen_id,
                pid,
                signal,
                reason,
            } => {
                let sent = Instant::now();
                match &reason {
                    SignalReason::Handoff {
                        successor,
                        ready_at,
                    } => info!(
                        generation = gen_id,
                        "draining ({signal}) {} after gen={successor} ready",
                        latency(sent.saturating_duration_since(*ready_at))
                    ),
                    SignalReason::NotReady => info!(generation = gen_id, "draining ({signal})"),
                    SignalReason::Shutdown if signal == Signal::SIGKILL => {
                        info!(generation = gen_id, "killing (SIGKILL)")
                    }
                    SignalReason::Shutdown => info!(generation = gen_id, "draining ({signal})"),
                    SignalReason::DrainTimeout => {}
                    SignalReason::Route(because) => {
                        info!(generation = gen_id, "{because}: sending {signal}")
                    }
                }
                match &reason {
                    SignalReason::DrainTimeout => {
                        self.probes.diagnose_drain_timeout(gen_id, pid, sent)
                    }
                    SignalReason::Handoff { .. }
                    | SignalReason::NotReady
                    | SignalReason::Shutdown
                        if signal != Signal::SIGKILL =>
                    {
                        self.probes.draining(gen_id, pid, sent)
                    }
                    _ => {}
                }
                signal_group(pid, signal);
                for &group in self
                    .procs
                    .get(&pid)
                    .map(|p| p.extra_groups.as_slice())
                    .unwrap_or_default()
                {
                    signal_group(group, signal);
                }
            }
            Action::StartBuild { step } => queue.push_back(self.start_build(step)),
            Action::SignalBuild { pid, signal } => {
                debug!("sending {signal} to the build");
                signal_group(pid, signal);
            }
            Action::Exit(code) => return Some(code),
        }
        None
    }

    fn spawn(&mut self, gen_id: GenId, trigger_at: Option<Instant>) -> Event {
        let path = match self.config.program.resolve() {
            Ok(path) => path,
            Err(e) => {
                return Event::SpawnFailed {
                    gen_id,
                    error: format!("{e:#}"),
                };
            }
        };
        let (notify_path, notify_socket) = match self.notify_dir.bind(gen_id) {
            Ok(bound) => bound,
            Err(e) => {
                return Event::SpawnFailed {
                    gen_id,
                    error: format!("{e:#}"),
                };
            }
        };
        let fds: Vec<BorrowedFd<'_>> = (self.listeners.iter().map(|l| l.fd()))
            .chain(self.fd_store.iter().map(|(_, fd)| fd.as_fd()))
            .collect();
        let names: Vec<&str> = (self.listeners.iter().map(|l| l.name.as_str()))
            .chain(self.fd_store.iter().map(|(name, _)| name.as_str()))
            .collect();
        let inherit = Inherit {
            sockets: &fds,
            names: &names,
            generation: gen_id,
            listen_pid: self.config.listen_pid,
            parent_death_signal: self.config.drain_signal,
            extra_env: vec![(proto::NOTIFY_SOCKET_ENV.into(), notify_path.clone().into())],
            capture_output: self.config.prefix,
        };
        match process::spawn(&path, &self.config.program, &inherit) {
            Ok(spawned) => {
                let after = trigger_at
                    .map(|t| format!(" in {} after trigger", latency(t.elapsed())))
                    .unwrap_or_default();
                info!(generation = gen_id, "spawned pid={}{after}", spawned.pid);
                self.guard.watch(spawned.pid);
                self.procs.insert(
                    spawned.pid,
                    Proc {
                        role: Role::Generation(gen_id),
                        leader: None,
                        extra_groups: Vec::new(),
                        exec: Some((spawned.exec_status, path.display().to_string())),
                    },
                );
                ready_channel::spawn_reader(gen_id, spawned.channel, self.tx.clone());
                if let Some((stdout, stderr)) = spawned.output {
                    output::spawn_prefixer(gen_id, stdout, false);
                    output::spawn_prefixer(gen_id, stderr, true);
                }
                notify::spawn_reader(
                    gen_id,
                    spawned.pid,
                    notify_socket,
                    notify_path.clone(),
                    self.tx.clone(),
                );
                self.notify_paths.insert(gen_id, notify_path);
                self.probes.spawned(gen_id, spawned.pid, Instant::now());
                Event::Spawned {
                    gen_id,
                    pid: spawned.pid,
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&notify_path);
                Event::SpawnFailed {
                    gen_id,
                    error: format!("{e:#}"),
                }
            }
        }
    }

    /// When the next `/proc` probe is due (see [`probe`]), if any.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        self.probes.next_due()
    }

    /// Runs the `/proc` probes due by now; pushes the events they cause
    /// (`Listening`, `ProbeFailed`) onto `queue`.
    pub(crate) fn run_probes(&mut self, queue: &mut VecDeque<Event>) {
        self.probes.run_due(Instant::now(), queue);
    }

    /// Generation `gen_id` said READY=1: stops probing it for readiness.
    pub(crate) fn said_ready(&mut self, gen_id: GenId) {
        self.probes.said_ready(gen_id);
    }

    /// Keeps or drops fds a generation sent with `FDSTORE=1`.
    pub(crate) fn store(&mut self, gen_id: GenId, store: Store) {
        match store {
            Store::Add { name, fds } => {
                let room = MAX_STORED_FDS.saturating_sub(self.fd_store.len());
                if fds.len() > room {
                    warn!(
                        generation = gen_id,
                        "the fd store is full ({MAX_STORED_FDS}): dropped {} fd(s) named {name}",
                        fds.len() - room
                    );
                }
                let n = fds.len().min(room);
                self.fd_store
                    .extend(fds.into_iter().take(n).map(|fd| (name.clone(), fd)));
                info!(
                    generation = gen_id,
                    "stored {n} fd(s) named {name}, passed to the next generations"
                );
            }
            Store::Remove { name } => {
                let before = self.fd_store.len();
                self.fd_store.retain(|(n, _)| *n != name);
                info!(
                    generation = gen_id,
                    "removed {} stored fd(s) named {name}",
                    before - self.fd_store.len()
                );
            }
        }
    }

    fn start_build(&mut self, step: usize) -> Event {
        let cmd = &self.config.builds[step];
        let total = self.config.builds.len();
        info!("build step {}/{total}: {cmd}", step + 1);
        match process::spawn_build(cmd) {
            Ok(pid) => {
                self.guard.watch(pid);
                self.procs.insert(
                    pid,
                    Proc {
                        role: Role::Build,
                        leader: None,
                        extra_groups: Vec::new(),
                        exec: None,
                    },
                );
                Event::BuildStarted { pid }
            }
            Err(e) => {
                warn!("cannot run the build command {cmd:?}: {e:#}");
                Event::BuildExited { exit: None }
            }
        }
    }

    /// Reaps every child that has exited and reports the process groups
    /// that are now empty.
    pub(crate) fn reap(&mut self, queue: &mut VecDeque<Event>) {
        loop {
            let (pid, exit) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid failed: {e}");
                    break;
                }
            };
            match self.procs.get_mut(&pid.as_raw()) {
                Some(p) => p.leader = Some(exit),
                None => {
                    debug!("reaped pid={pid} (exited {exit}), left behind by a server or build")
                }
            }
        }
        let gone: Vec<i32> = self
            .procs
            .iter()
            .filter(|(pid, p)| {
                p.leader.is_some()
                    && group_is_gone(**pid)
                    && p.extra_groups.iter().all(|g| group_is_gone(*g))
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            let p = self.procs.remove(&pid).expect("listed above");
            for group in std::iter::once(pid).chain(p.extra_groups.iter().copied()) {
                self.guard.forget(group);
            }
            let exit = p.leader.expect("filtered above");
            queue.push_back(match p.role {
                Role::Generation(gen_id) => {
                    self.probes.gone(gen_id);
                    if let Some(path) = self.notify_paths.remove(&gen_id) {
                        notify::stop_reader(&path);
                    }
                    // The child has exited, so its end of the exec status
                    // pipe is closed: this read does not block.
                    match p.exec.map(|(status, path)| (status.wait(), path)) {
                        Some((Err(e), path)) => Event::SpawnFailed {
                            gen_id,
                            error: format!("cannot run {path}: {e}"),
                        },
                        _ => Event::GenExited { gen_id, exit },
                    }
                }
                Role::Build => Event::BuildExited { exit: Some(exit) },
            });
        }
    }
}

fn group_is_gone(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH)
}

fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!("cannot send {signal} to process group {pgid}: {e}"),
    }
}
