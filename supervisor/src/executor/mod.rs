//! The executor: the only code that touches processes.
//!
//! It carries out the state machine's [`Action`]s (spawn a generation, start
//! a build step, signal a process group, exit) and answers each at once with
//! the [`Event`] it causes. It also owns the bookkeeping the state machine
//! does not need to see: which process groups devsup started and what for,
//! reaping (devsup is a child subreaper, so processes a generation leaves
//! behind are reparented to it and reaped here, and a generation counts as
//! gone only when its whole process group is; where it cannot be one, on
//! macOS, a group whose leader has exited is polled until `killpg(pgid, 0)`
//! says ESRCH, see [`Executor::next_poll`]), each generation's notify
//! socket, the `FDSTORE=1` fds, and the guard.
//!
//! It is also where steps are published: the ones the machine returns as
//! [`Action::Report`] and its own (a generation spawned with its pid, a
//! signal sent, a build step started) go to the [`Reporter`]. A build
//! step's output goes through the tee in `tee.rs`, whose end a failed
//! build's step carries.
//!
//! Longer than most modules: every action and every reap goes through the one
//! `Executor`, whose fields (processes, notify sockets, the fd store, the
//! guard, the probes, the reporter) they share; what stands alone is in
//! `main_pid`, `output`, `tee` and `probe`.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use devsup_protocol as proto;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::warn;

use crate::build_output::{outbox, tee};
use crate::config::Config;
use crate::event::{Event, Exit, GenId, Input, Store};
use crate::guard::Guard;
use crate::livereload::down::{self, DownPage};
use crate::machine::{Action, ReadyRule};
use crate::platform;
use crate::process::cgroup::{Cgroup, Cgroups};
use crate::process::{self, ExecStatus, Inherit};
use crate::report::Reporter;
use crate::sockets::Listener;
use crate::sources::notify::{self, Heard, NotifyDir};
use crate::sources::ready_channel;
use crate::step::{FdStore, KillReason, Note, Step, Trouble};

mod main_pid;
mod members;
mod output;
mod pty;
mod unserved;
// Readiness seen from the kernel reads /proc: Linux only; elsewhere every
// generation falls back to READY=1 or the --ready-after timer.
#[cfg(target_os = "linux")]
mod probe;
#[cfg(not(target_os = "linux"))]
#[path = "probe_fallback.rs"]
mod probe;
// The fallback's tests run on Linux too.
#[cfg(all(test, target_os = "linux"))]
#[allow(dead_code)]
#[path = "probe_fallback.rs"]
mod probe_fallback;

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
    /// Whose messages a generation's notify socket hears.
    heard: Option<Arc<Heard>>,
    /// A generation's cgroup, where it has one.
    cgroup: Option<Cgroup>,
    /// The last signal sent to it: a process group found to be its later
    /// (a daemon whose parent exited since) gets it too.
    signalled: Option<Signal>,
    /// Whether its leader's exit while other processes of it run was
    /// said ([`Step::LeaderExited`]).
    leader_told: bool,
}

/// Carries out actions: the only code that touches processes.
pub(crate) struct Executor {
    /// Says once that connections wait while none was ever spawned.
    unserved: unserved::Unserved,
    /// `--livereload`'s page on the served sockets while no generation
    /// runs (`None` while one does), and the live-reload URL it needs.
    down: Option<DownPage>,
    down_url: Option<String>,
    /// The shutdown has begun: no page any more.
    shutting_down: bool,
    config: Config,
    listeners: Vec<Listener>,
    tx: Sender<Input>,
    /// Process groups devsup started, by leader pid (= pgid).
    procs: HashMap<i32, Proc>,
    notify_dir: NotifyDir,
    /// Each live generation's notify socket.
    notify_addrs: HashMap<GenId, SocketAddr>,
    /// `FDSTORE=1` fds, passed to every new generation after the sockets.
    fd_store: Vec<(String, OwnedFd)>,
    /// Stops every group devsup started if devsup dies first.
    guard: Guard,
    /// Where every step is published.
    reporter: Reporter,
    /// Added to the environment of every generation and build step
    /// (`DEVSUP_LIVERELOAD`).
    extra_env: Vec<(OsString, OsString)>,
    /// The running (or last) build step's output.
    build_output: Option<tee::Tail>,
    /// Steps held behind a failed build's output.
    outbox: outbox::Outbox,
    /// Where devsup is no child subreaper (macOS), how often to look at
    /// the groups whose leader has exited: the rest of such a group is not
    /// devsup's children, and its exits raise no SIGCHLD here.
    orphan_poll: Option<Duration>,
    /// When [`Executor::reap`] last looked.
    reaped_at: Instant,
    /// Readiness and drain diagnostics from `/proc`.
    probes: probe::Probes,
    /// Where the generations' cgroups are made, where devsup can.
    cgroups: Option<Cgroups>,
}

/// Most fds devsup keeps for `FDSTORE=1`.
const MAX_STORED_FDS: usize = 32;
/// How long a spawn waits for the inferred cargo build's messages to end
/// after its process group is gone (normally: at once).
const CARGO_MESSAGES_WAIT: Duration = Duration::from_secs(2);

/// Fails, naming the limit, if `listeners` sockets leave no room in a
/// generation's fds for the ready channel.
fn check_listeners(listeners: usize) -> anyhow::Result<()> {
    let most = crate::process::MAX_PASSED_FDS - 1;
    if listeners > most {
        anyhow::bail!(
            "{listeners} sockets: devsup passes at most {most} to a server (one more fd is its \
             ready channel): pass fewer --socket, or fewer sockets by socket activation"
        );
    }
    Ok(())
}

/// How many more fds the store may take with `listeners` sockets and
/// `stored` fds already kept: at most [`MAX_STORED_FDS`] in all, and no
/// more than a generation's fds have room for beside the listeners and
/// the ready channel.
fn store_room(listeners: usize, stored: usize) -> usize {
    let fit = crate::process::MAX_PASSED_FDS.saturating_sub(listeners + 1);
    MAX_STORED_FDS.min(fit).saturating_sub(stored)
}

impl Executor {
    /// An executor with no process yet, and the private directory for the
    /// generations' notify sockets. Steps go to `reporter`; `extra_env` is
    /// added to the environment of everything it starts.
    pub(crate) fn new(
        config: Config,
        listeners: Vec<Listener>,
        tx: Sender<Input>,
        mut guard: Guard,
        reporter: Reporter,
        extra_env: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<Executor> {
        check_listeners(listeners.len())?;
        let notify_dir = NotifyDir::create();
        if let Some(path) = notify_dir.path() {
            guard.remove_on_death(path);
        }
        for l in &listeners {
            l.set_nonblocking(config.nonblocking).map_err(|e| {
                anyhow::anyhow!("cannot set O_NONBLOCK on the socket {}: {e}", l.addr)
            })?;
        }
        let probes = probe::Probes::new(&listeners, config.ready != ReadyRule::Notify, tx.clone());
        let unserved = unserved::Unserved::new(
            listeners.iter().map(|l| l.addr.to_string()).collect(),
            config.livereload.is_some(),
        );
        // The building page, with the script of the live-reload server.
        let livereload_url = (extra_env.iter())
            .find(|(k, _)| k == crate::livereload::LIVERELOAD_ENV)
            .map(|(_, url)| url.to_string_lossy().into_owned());
        let down_url = livereload_url.filter(|_| !listeners.is_empty());
        let down = match &down_url {
            Some(url) => Some(down::start(&listeners, url, &reporter)?),
            None => None,
        };
        Ok(Executor {
            unserved,
            down,
            down_url,
            shutting_down: false,
            probes,
            config,
            listeners,
            tx,
            procs: HashMap::new(),
            notify_dir,
            notify_addrs: HashMap::new(),
            fd_store: Vec::new(),
            guard,
            reporter,
            extra_env,
            build_output: None,
            outbox: outbox::Outbox::default(),
            orphan_poll: None,
            reaped_at: Instant::now(),
            cgroups: None,
        })
    }

    /// devsup is no child subreaper: poll the groups whose leader has
    /// exited (see [`Executor::next_poll`]).
    pub(crate) fn poll_orphaned_groups(&mut self) {
        self.orphan_poll = Some(platform::process::ORPHAN_POLL);
    }

    /// When the loop must call [`Executor::reap`] even without a SIGCHLD:
    /// without a subreaper, while a group outlives its leader, every
    /// [`platform::process::ORPHAN_POLL`] until it is gone.
    /// Also when the steps held behind a failed build are published even
    /// if its output goes on.
    pub(crate) fn next_poll(&self) -> Option<Instant> {
        let poll = poll_at(
            self.orphan_poll,
            self.procs.values().any(|p| p.leader.is_some()),
            self.reaped_at,
        );
        poll.into_iter().chain(self.outbox.next_wake()).min()
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
                let step = reason.step(gen_id, signal, sent);
                match &step {
                    Step::Killed {
                        reason: KillReason::DrainTimeout,
                        ..
                    } => self.probes.diagnose_drain_timeout(gen_id, pid, sent),
                    Step::Draining { .. } if signal != Signal::SIGKILL => {
                        self.probes.draining(gen_id, pid, sent)
                    }
                    _ => {}
                }
                self.report(step);
                // Processes that left the group since the last look get
                // the signal too (one found later gets it then).
                let _ = self.find_members();
                signal_group(pid, signal);
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.signalled = Some(signal);
                    for &group in &p.extra_groups {
                        signal_group(group, signal);
                    }
                    if let Some(cgroup) = p.cgroup.as_ref().filter(|_| signal == Signal::SIGKILL) {
                        cgroup.kill();
                    }
                }
            }
            Action::StartBuild { step } => queue.push_back(self.start_build(step)),
            Action::SignalBuild { pid, signal } => {
                self.report(Step::Noted {
                    generation: None,
                    note: Note::SignalBuild(signal.as_str().to_owned()),
                });
                signal_group(pid, signal);
            }
            Action::Report(step) => self.report(step),
            Action::Exit(code) => {
                self.let_build_output_end();
                self.flush_held(true);
                self.guard.exit();
                return Some(code);
            }
        }
        None
    }

    /// Reports a step: writes its log line at once, then publishes it; a
    /// failed build's carries the end of what its last step printed, and
    /// waits (with every step after it, without blocking the loop) for that
    /// output to end ([`outbox`]).
    fn report(&mut self, step: Step) {
        crate::report::log::write(&step);
        if let Some(unserved) = self.unserved.after(&step) {
            crate::report::log::write(&unserved);
        }
        self.down_page_after(&step);
        // Counted ready by any rule: readiness is probed no more.
        self.probes.reported(&step);
        let was_held = self.outbox.next_wake().is_some();
        let steps = self
            .outbox
            .push(step, self.build_output.as_ref(), Instant::now());
        if !was_held && self.outbox.next_wake().is_some() {
            // The loop hears when the output ends: it reaps, which
            // publishes what is held.
            if let Some(tail) = &self.build_output {
                let tx = self.tx.clone();
                tail.when_ended(move || {
                    let _ = tx.send(Input::ChildExited);
                });
            }
        }
        for step in steps {
            self.reporter.step(step);
        }
    }

    /// `--livereload`'s page answers again once every generation has
    /// exited (until the next is spawned), but not in the shutdown.
    fn down_page_after(&mut self, step: &Step) {
        match step {
            Step::Shutdown { .. } => {
                self.shutting_down = true;
                if let Some(down) = self.down.take() {
                    down.stop();
                }
            }
            Step::Exited { .. } if self.down.is_none() && !self.shutting_down => {
                let alive = (self.procs.values()).any(|p| matches!(p.role, Role::Generation(_)));
                let Some(url) = self.down_url.clone().filter(|_| !alive) else {
                    return;
                };
                match down::start(&self.listeners, &url, &self.reporter) {
                    Ok(down) => {
                        self.down = Some(down);
                        let addrs = self.listeners.iter().map(|l| l.addr.to_string()).collect();
                        crate::report::log::write(&Step::Unserved {
                            addrs,
                            why: crate::step::Unserved::Page,
                        });
                    }
                    Err(e) => self.report(Step::Trouble(Trouble::DownPageLost(format!("{e:#}")))),
                }
            }
            _ => {}
        }
    }

    /// Publishes the steps held behind a failed build once its output has
    /// ended or its wait has run out (or at once if `force`).
    fn flush_held(&mut self, force: bool) {
        for step in self.outbox.flush(Instant::now(), force) {
            self.reporter.step(step);
        }
    }

    /// Waits, at most [`outbox::OUTPUT_EOF_WAIT`], for the last build's
    /// output to reach its end: what a build printed before it was
    /// stopped (Ctrl-C during a build) may still be in the tee's pipe or
    /// pseudo-terminal, and devsup's exit would drop it unseen.
    fn let_build_output_end(&self) {
        if let Some(tail) = &self.build_output {
            tail.wait_ended(outbox::OUTPUT_EOF_WAIT);
        }
    }

    /// The executable to run: the command's, or with no command the one
    /// cargo's last build named. Its messages are read to their end first
    /// (the build's process group is gone, but its stdout may still be in
    /// the pipe); if they have not ended by then, this fails saying so.
    fn program_path(&self) -> anyhow::Result<std::path::PathBuf> {
        let Some(cargo) = &self.config.cargo else {
            return self.config.program.resolve();
        };
        if let Some(tail) = &self.build_output {
            tail.wait_ended(CARGO_MESSAGES_WAIT);
        }
        cargo.built.path()
    }

    fn spawn(&mut self, gen_id: GenId, trigger_at: Option<Instant>) -> Event {
        let path = match self.program_path() {
            Ok(path) => path,
            Err(e) => {
                return Event::SpawnFailed {
                    gen_id,
                    error: format!("{e:#}"),
                };
            }
        };
        let notify = self.bind_notify(gen_id);
        let cgroup = (self.cgroups.as_ref()).and_then(|c| c.for_generation(gen_id).ok());
        if let Some(cgroup) = &cgroup {
            self.guard.kill_cgroup_on_death(cgroup.dir());
        }
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
            extra_env: (notify.iter())
                .map(|n| (proto::NOTIFY_SOCKET_ENV.into(), n.env.clone()))
                .chain(self.extra_env.iter().cloned())
                .collect(),
            capture_output: self.config.prefix,
            cgroup_procs: cgroup.as_ref().map(Cgroup::procs_fd),
        };
        // devsup accepts no connection from here on: each is the
        // generation's (the page's thread has stopped when this returns).
        if let Some(down) = self.down.take() {
            down.stop();
        }
        match process::spawn(&path, &self.config.program, &inherit) {
            Ok(spawned) => self.spawned(gen_id, trigger_at, spawned, &path, cgroup, notify),
            Err(e) => {
                if let Some(path) = notify.as_ref().and_then(|n| n.addr.as_pathname()) {
                    let _ = std::fs::remove_file(path);
                }
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
                Event::SpawnFailed {
                    gen_id,
                    error: format!("{e:#}"),
                }
            }
        }
    }

    /// Generation `gen_id` was started as `spawned`: said, followed (its
    /// ready channel, output, notify socket, probes) and answered with
    /// `Spawned`.
    fn spawned(
        &mut self,
        gen_id: GenId,
        trigger_at: Option<Instant>,
        spawned: process::Spawned,
        path: &Path,
        cgroup: Option<Cgroup>,
        notify: Option<notify::Bound>,
    ) -> Event {
        self.report(Step::Spawned {
            generation: gen_id,
            pid: spawned.pid,
            after_trigger_us: trigger_at.map(|t| crate::step::us(t.elapsed())),
        });
        self.guard.watch(spawned.pid);
        let heard = Heard::new(spawned.pid);
        self.procs.insert(
            spawned.pid,
            Proc {
                role: Role::Generation(gen_id),
                leader: None,
                extra_groups: Vec::new(),
                exec: Some((spawned.exec_status, path.display().to_string())),
                heard: Some(heard.clone()),
                cgroup,
                signalled: None,
                leader_told: false,
            },
        );
        ready_channel::spawn_reader(gen_id, spawned.channel, self.tx.clone());
        if let Some((stdout, stderr)) = spawned.output {
            output::spawn_prefixer(gen_id, stdout, false);
            output::spawn_prefixer(gen_id, stderr, true);
        }
        if let Some(notify) = notify {
            notify::spawn_reader(gen_id, heard, notify.socket, self.tx.clone());
            self.notify_addrs.insert(gen_id, notify.addr);
        }
        self.probes.spawned(gen_id, spawned.pid, Instant::now());
        Event::Spawned {
            gen_id,
            pid: spawned.pid,
        }
    }

    /// Binds generation `gen_id`'s notify socket; a directory made for it
    /// anew is one more for the guard to remove.
    fn bind_notify(&mut self, gen_id: GenId) -> Option<notify::Bound> {
        let dir_before = self.notify_dir.path().map(Path::to_path_buf);
        let notify = self.notify_dir.bind(gen_id);
        if let Some(dir) = self
            .notify_dir
            .path()
            .filter(|d| Some(*d) != dir_before.as_deref())
        {
            self.guard.remove_on_death(dir);
        }
        notify
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

    /// Takes an input off the loop's channel: what is the executor's own
    /// bookkeeping (reaping, the fd store, a `MAINPID=`, checked against
    /// the generation here) it carries out, pushing the events it causes
    /// onto `queue`; an event for the state machine it hands back.
    pub(crate) fn take(&mut self, input: Input, queue: &mut VecDeque<Event>) -> Option<Event> {
        match input {
            Input::Event(Event::Message {
                gen_id,
                msg: proto::Message::MainPid(pid),
                ..
            }) => self.main_pid(gen_id, pid),
            Input::Event(event) => return Some(event),
            Input::ChildExited => self.reap(queue),
            Input::Store(gen_id, store) => self.store(gen_id, store),
        }
        None
    }

    /// Keeps or drops fds a generation sent with `FDSTORE=1`.
    fn store(&mut self, gen_id: GenId, store: Store) {
        match store {
            Store::Add { name, mut fds } => {
                // The same file sent again (or twice in one message) is
                // kept once, as systemd does: compared by device and inode.
                let before = fds.len();
                let mut seen: Vec<FileId> = self
                    .fd_store
                    .iter()
                    .filter_map(|(_, fd)| file_id(fd))
                    .collect();
                fds.retain(|fd| match file_id(fd) {
                    Some(id) if seen.contains(&id) => false,
                    Some(id) => {
                        seen.push(id);
                        true
                    }
                    None => true,
                });
                if fds.len() < before {
                    self.report(Step::Noted {
                        generation: Some(gen_id),
                        note: Note::KeptOnce {
                            count: before - fds.len(),
                            name: name.clone(),
                        },
                    });
                }
                if fds.is_empty() {
                    return;
                }
                let room = store_room(self.listeners.len(), self.fd_store.len());
                if fds.len() > room {
                    let change = FdStore::Full {
                        full: self.fd_store.len() + room,
                        sockets: self.listeners.len(),
                        dropped: fds.len() - room,
                        name: name.clone(),
                    };
                    self.report_store(gen_id, change);
                }
                let count = fds.len().min(room);
                self.fd_store
                    .extend(fds.into_iter().take(count).map(|fd| (name.clone(), fd)));
                self.report_store(gen_id, FdStore::Stored { count, name });
            }
            Store::Remove { name } => {
                let before = self.fd_store.len();
                self.fd_store.retain(|(n, _)| *n != name);
                let count = before - self.fd_store.len();
                self.report_store(gen_id, FdStore::Removed { count, name });
            }
        }
    }

    fn report_store(&mut self, generation: GenId, change: FdStore) {
        self.report(Step::FdStored { generation, change });
    }

    fn start_build(&mut self, step: usize) -> Event {
        let cmd = self.config.builds[step].clone();
        let total = self.config.builds.len();
        // Reported before the step runs, so that its line comes before
        // the step's output; one that cannot start then finishes failed.
        self.report(Step::BuildStarted {
            step: step + 1,
            steps: total,
            command: cmd.clone(),
        });
        // The step's stdout and stderr go through the tee, which shows them
        // and keeps their end for a failure's report.
        // The inferred cargo step (the last): its stdout is cargo's JSON
        // messages, read for the binary's path rather than shown.
        let messages = (self.config.cargo.as_ref())
            .filter(|_| step + 1 == total)
            .map(|c| c.built.clone());
        // A terminal for the step when devsup has one (its progress bar).
        let started = if pty::wanted() {
            pty::start("build", messages)
        } else {
            tee::start("build", messages).map_err(Into::into)
        };
        let output = match started {
            Ok((tail, out, err)) => {
                if let Some(down) = &self.down {
                    down.progress(tail.clone());
                }
                self.build_output = Some(tail);
                Some((out, err))
            }
            Err(e) => {
                self.report(Step::Trouble(Trouble::BuildOutputLost(e.to_string())));
                self.build_output = None;
                None
            }
        };
        let fds = output.as_ref().map(|(o, e)| (o.as_raw_fd(), e.as_raw_fd()));
        let env: Vec<_> = self
            .extra_env
            .iter()
            .cloned()
            .chain(tee::colour_env())
            .collect();
        let spawned = process::spawn_build(&cmd, fds, &env);
        // Only the child holds the write ends now: the tee sees the end of
        // the output when the step's last process closes them.
        drop(output);
        match spawned {
            Ok((pid, exec_status)) => {
                self.guard.watch(pid);
                self.procs.insert(
                    pid,
                    Proc {
                        role: Role::Build,
                        leader: None,
                        extra_groups: Vec::new(),
                        exec: Some((exec_status, cmd)),
                        heard: None,
                        cgroup: None,
                        signalled: None,
                        leader_told: false,
                    },
                );
                Event::BuildStarted { pid }
            }
            Err(e) => {
                self.report(Step::Trouble(Trouble::BuildCannotRun {
                    command: cmd,
                    error: format!("{e:#}"),
                }));
                Event::BuildExited { exit: None }
            }
        }
    }

    /// Reaps every child that has exited and reports the process groups
    /// that are now empty.
    /// Also publishes the steps held behind a failed build when their
    /// time has come (the loop calls it then: see [`Executor::next_poll`]).
    pub(crate) fn reap(&mut self, queue: &mut VecDeque<Event>) {
        self.flush_held(false);
        self.reaped_at = Instant::now();
        loop {
            let (pid, exit) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.report(Step::Trouble(Trouble::WaitFailed(e.to_string())));
                    break;
                }
            };
            match self.procs.get_mut(&pid.as_raw()) {
                Some(p) => p.leader = Some(exit),
                None => self.report(Step::Noted {
                    generation: None,
                    note: Note::ReapedOrphan {
                        pid: pid.as_raw(),
                        exit: exit.to_string(),
                    },
                }),
            }
        }
        for pid in self.gone() {
            let p = self.procs.remove(&pid).expect("listed by gone");
            if let Some(cgroup) = &p.cgroup {
                cgroup.remove();
            }
            for group in std::iter::once(pid).chain(p.extra_groups.iter().copied()) {
                self.guard.forget(group);
            }
            let exit = p.leader.expect("filtered above");
            queue.push_back(match p.role {
                Role::Generation(gen_id) => {
                    self.probes.gone(gen_id);
                    if let Some(addr) = self.notify_addrs.remove(&gen_id) {
                        notify::stop_reader(&addr, p.heard.as_deref());
                    }
                    // The child has exited, so its end of the exec status
                    // pipe is closed: this read does not block.
                    match p.exec.map(|(status, path)| (status.wait(), path)) {
                        Some((Err(e), path)) => Event::SpawnFailed {
                            gen_id,
                            error: format!(
                                "cannot run {path}: {}",
                                process::exec_error(Path::new(&path), &e)
                            ),
                        },
                        _ => Event::GenExited { gen_id, exit },
                    }
                }
                Role::Build => {
                    // As for a generation: the child has exited, so this
                    // read does not block.
                    if let Some((Err(e), cmd)) = p.exec.map(|(status, cmd)| (status.wait(), cmd)) {
                        let error = process::build_exec_error(&cmd, &e);
                        self.report(Step::Trouble(Trouble::BuildCannotRun {
                            command: cmd,
                            error,
                        }));
                    }
                    Event::BuildExited { exit: Some(exit) }
                }
            });
        }
        // Also for a leader reaped earlier whose daemon was not yet
        // devsup's to see then (its parent was exiting).
        let untold: Vec<i32> = (self.procs.iter())
            .filter(|(_, p)| p.leader.is_some() && !p.leader_told)
            .map(|(pid, _)| *pid)
            .collect();
        for leader in untold {
            self.leader_exited(leader);
        }
    }

    /// The leaders of the groups whose every process is gone. A process
    /// that leaves a group (`setsid`) is looked for after the group is
    /// seen empty: once it has left, the look finds it in its new group.
    fn gone(&mut self) -> Vec<i32> {
        let exited = |procs: &HashMap<i32, Proc>| -> Vec<i32> {
            (procs.iter())
                .filter(|(_, p)| p.leader.is_some())
                .map(|(pid, _)| *pid)
                .collect()
        };
        let seen_gone: Vec<i32> = (exited(&self.procs).into_iter())
            .filter(|&pid| self.all_gone(pid))
            .collect();
        if seen_gone.is_empty() {
            return seen_gone;
        }
        if !self.find_members() {
            return Vec::new();
        }
        (seen_gone.into_iter())
            .filter(|&pid| self.all_gone(pid))
            .collect()
    }
}

/// When to look at the groups again: `every` after `last`, while `waiting`
/// for a group whose leader has exited; never without `every` (a
/// subreaper hears every exit).
fn poll_at(every: Option<Duration>, waiting: bool, last: Instant) -> Option<Instant> {
    let every = every.filter(|_| waiting)?;
    Some(last.checked_add(every).unwrap_or(last))
}

/// A file's identity: its device and inode (in the platform's types:
/// `dev_t` is an `i32` on macOS).
type FileId = (libc::dev_t, libc::ino_t);

/// A file's identity: its device and inode.
fn file_id(fd: &OwnedFd) -> Option<FileId> {
    nix::sys::stat::fstat(fd)
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_never_takes_more_fds_than_a_generation_has_room_for() {
        let slots = crate::process::MAX_PASSED_FDS;
        for listeners in 0..slots {
            let mut stored = 0;
            // Fill the store as repeated FDSTORE=1 messages would.
            while store_room(listeners, stored) > 0 {
                stored += 1;
            }
            assert!(
                listeners + stored < slots,
                "{listeners} sockets + {stored} stored fds + the ready channel > {slots}"
            );
            assert!(stored <= MAX_STORED_FDS);
        }
        assert_eq!(store_room(1, 0), MAX_STORED_FDS);
        assert_eq!(store_room(60, 0), 3);
        assert_eq!(store_room(60, 3), 0);
        assert_eq!(store_room(63, 0), 0);
    }

    #[test]
    fn too_many_sockets_is_a_clear_error_naming_the_limit() {
        let most = crate::process::MAX_PASSED_FDS - 1;
        assert!(check_listeners(most).is_ok());
        let err = check_listeners(most + 1).unwrap_err().to_string();
        assert!(err.contains(&format!("at most {most}")), "{err}");
    }

    #[test]
    fn groups_are_polled_only_without_a_subreaper_and_while_one_is_waited_for() {
        let last = Instant::now();
        let every = Some(Duration::from_millis(100));
        assert_eq!(
            poll_at(None, true, last),
            None,
            "a subreaper hears every exit"
        );
        assert_eq!(poll_at(every, false, last), None, "no leader has exited");
        assert_eq!(
            poll_at(every, true, last),
            Some(last + Duration::from_millis(100))
        );
    }

    /// What the poll relies on: a group stays alive while any member does,
    /// after its leader has exited and been reaped, and is gone (ESRCH)
    /// once its last member is.
    #[test]
    fn a_group_is_gone_only_when_its_last_member_is() {
        use std::os::unix::process::CommandExt;
        use std::process::Command;
        // The leader lives until its stdin closes, so the member can join.
        let mut leader = Command::new("cat")
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pgid = leader.id() as i32;
        let mut member = Command::new("sleep")
            .arg("30")
            .process_group(pgid)
            .spawn()
            .unwrap();
        drop(leader.stdin.take());
        assert!(leader.wait().unwrap().success());
        assert!(!group_is_gone(pgid), "the member keeps the group");
        signal_group(pgid, Signal::SIGKILL);
        let _ = member.wait();
        assert!(
            group_is_gone(pgid),
            "the group is gone with its last member"
        );
    }
}
