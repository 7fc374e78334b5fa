//! The supervisor loop: one thread that owns all state.
//!
//! Every source of events (signals, each generation's ready channel, the
//! file watcher, the terminal) runs on its own thread and sends an
//! [`Input`] into one channel. The loop feeds each into
//! [`State::step`](crate::machine::State::step) and carries out the actions
//! it returns. It is also the only place that reaps children: devsup is a
//! child subreaper, so processes a generation leaves behind are reparented
//! to it, reaped here, and a generation counts as gone only when its whole
//! process group is.
//!
//! The loop runs on the main thread on purpose: `PR_SET_PDEATHSIG` fires
//! when the *thread* that forked a child exits, so generations must be
//! forked by a thread that lives as long as devsup.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use devsup_protocol as proto;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::cli::Config;
use crate::generation::{self, ExecStatus, Inherit};
use crate::guard::Guard;
use crate::machine::{Action, Event, Exit, GenId, SignalReason, State, Trigger};
use crate::notify::{self, NotifyDir};
use crate::sockets::{self, Listener};

/// What the loop receives.
#[derive(Debug)]
pub enum Input {
    /// A domain event for the state machine.
    Event(Event),
    /// SIGCHLD: some child changed state; reap.
    ChildExited,
    /// A generation asked devsup to keep or drop file descriptors.
    Store(GenId, crate::notify::Store),
}

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
struct Executor {
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
    /// `--livereload`: what the browsers are told.
    livereload: Option<crate::livereload::Hub>,
}

/// Most fds devsup keeps for `FDSTORE=1`.
const MAX_STORED_FDS: usize = 32;

/// Runs devsup until it is told to stop; returns its exit status.
pub fn run(config: Config) -> anyhow::Result<u8> {
    // Say a missing command before binding anything. With a build step,
    // the build may be what creates it.
    if config.builds.is_empty() {
        config.program.resolve()?;
    }
    become_subreaper();
    // Before any thread exists: the guard is forked.
    let guard = Guard::start(config.drain_signal, config.drain_timeout)?;
    let listeners = sockets::bind_all(&config.sockets, config.backlog)?;
    for (i, l) in listeners.iter().enumerate() {
        info!(
            "listening on {} (name={} fd={})",
            l.addr,
            l.name,
            proto::FIRST_FD + i as i32
        );
    }
    let livereload = crate::livereload::start(config.livereload)?;
    let (tx, rx) = mpsc::channel();
    crate::signals::spawn(tx.clone())?;
    if let Some(watch) = config.watch.clone() {
        crate::watch::spawn(watch, tx.clone())?;
    }
    crate::terminal::spawn(tx.clone());
    let mut state = State::new(config.policy());
    let mut exec = Executor {
        config,
        listeners,
        tx,
        procs: HashMap::new(),
        notify_dir: NotifyDir::create()?,
        notify_paths: HashMap::new(),
        fd_store: Vec::new(),
        guard,
        livereload,
    };
    let mut queue = VecDeque::from([Event::Reload {
        trigger: Trigger::Startup,
        at: Instant::now(),
    }]);
    loop {
        let event = match queue.pop_front() {
            Some(event) => event,
            None => match next_input(&rx, &state) {
                Input::Event(Event::Message {
                    gen_id,
                    msg: proto::Message::MainPid(pid),
                    ..
                }) => {
                    exec.main_pid(gen_id, pid);
                    continue;
                }
                Input::Event(event) => event,
                Input::ChildExited => {
                    exec.reap(&mut queue);
                    continue;
                }
                Input::Store(gen_id, store) => {
                    exec.store(gen_id, store);
                    continue;
                }
            },
        };
        for action in
            crate::livereload::step(exec.livereload.as_ref(), &mut state, event, Instant::now())
        {
            if let Some(code) = exec.execute(action, &mut queue) {
                return Ok(code);
            }
        }
    }
}

fn next_input(rx: &Receiver<Input>, state: &State) -> Input {
    let deadline = state.next_deadline();
    // A due deadline goes first, so that a stream of inputs cannot starve it.
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return Input::Event(Event::Tick);
    }
    match deadline {
        Some(deadline) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(input) => input,
            Err(RecvTimeoutError::Timeout) => Input::Event(Event::Tick),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the loop holds a sender"),
        },
        None => rx.recv().expect("the loop holds a sender"),
    }
}

/// Orphans of a generation (a server that double-forks, `cargo run`'s
/// child once cargo dies) are reparented to devsup, so they are reaped and
/// a generation's group is seen to be gone.
fn become_subreaper() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        warn!(
            "cannot become a child subreaper: processes left behind by a server may not be noticed"
        );
    }
}

impl Executor {
    /// Carries out one action; pushes the events it causes at once onto
    /// `queue`. Returns an exit status to stop.
    fn execute(&mut self, action: Action, queue: &mut VecDeque<Event>) -> Option<u8> {
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
            extra_env: std::iter::once((
                proto::NOTIFY_SOCKET_ENV.into(),
                notify_path.clone().into(),
            ))
            .chain(crate::livereload::env(self.livereload.as_ref()))
            .collect(),
            capture_output: self.config.prefix,
        };
        match generation::spawn(&path, &self.config.program, &inherit) {
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
                spawn_channel_reader(gen_id, spawned.channel, self.tx.clone());
                if let Some((stdout, stderr)) = spawned.output {
                    spawn_prefixer(gen_id, stdout, false);
                    spawn_prefixer(gen_id, stderr, true);
                }
                notify::spawn_reader(
                    gen_id,
                    spawned.pid,
                    notify_socket,
                    notify_path.clone(),
                    self.tx.clone(),
                );
                self.notify_paths.insert(gen_id, notify_path);
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

    /// `MAINPID=`: a server started through a launcher names its real
    /// process. If that process has left the generation's process group,
    /// its group gets every signal too, and the generation is gone only
    /// once both groups are.
    fn main_pid(&mut self, gen_id: GenId, pid: u32) {
        let Some(leader) = self
            .procs
            .iter()
            .find(|(_, p)| matches!(p.role, Role::Generation(g) if g == gen_id))
            .map(|(&leader, _)| leader)
        else {
            return;
        };
        let pid = pid as i32;
        let group = match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
            Ok(group) => group.as_raw(),
            Err(e) => {
                warn!(
                    generation = gen_id,
                    "MAINPID={pid}: no such process ({e}); ignored"
                );
                return;
            }
        };
        if group == leader {
            debug!(
                generation = gen_id,
                "MAINPID={pid}, in the generation's own process group"
            );
            return;
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
            warn!(
                generation = gen_id,
                "MAINPID={pid} is not a process of this generation; ignored"
            );
            return;
        }
        info!(
            generation = gen_id,
            "MAINPID={pid} is in process group {group}: signals go there too"
        );
        let proc = self.procs.get_mut(&leader).expect("found above");
        if !proc.extra_groups.contains(&group) {
            proc.extra_groups.push(group);
            self.guard.watch(group);
        }
    }

    /// Keeps or drops fds a generation sent with `FDSTORE=1`.
    fn store(&mut self, gen_id: GenId, store: notify::Store) {
        match store {
            notify::Store::Add { name, fds } => {
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
            notify::Store::Remove { name } => {
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
        match crate::livereload::spawn_build(self.livereload.as_ref(), cmd) {
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
    fn reap(&mut self, queue: &mut VecDeque<Event>) {
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

/// A latency for the log: microseconds while they matter, else like
/// [`crate::machine::ms`].
fn latency(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_millis(10) {
        format!("{}us", d.as_micros())
    } else {
        crate::machine::ms(d)
    }
}

/// The parent pid of `pid`, from `/proc`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields
    // after the last ')' are state, then ppid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

fn group_is_gone(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH)
}

fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!("cannot send {signal} to process group {pgid}: {e}"),
    }
}

/// Copies a generation's output to devsup's, each line prefixed with
/// `[gen N] ` and written in one piece, so lines of overlapping
/// generations never interleave mid-line.
fn spawn_prefixer(gen_id: GenId, pipe: OwnedFd, stderr: bool) {
    use std::io::{BufRead, Write};
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-output"))
        .spawn(move || {
            let mut reader = std::io::BufReader::new(std::fs::File::from(pipe));
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                let mut out = format!("[gen {gen_id}] ").into_bytes();
                out.extend_from_slice(&line);
                let _ = if stderr {
                    std::io::stderr().lock().write_all(&out)
                } else {
                    std::io::stdout().lock().write_all(&out)
                };
            }
        });
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread for its output: {e}"
        );
    }
}

/// Most warnings logged about one generation's bad messages, so that a
/// server writing garbage in a loop cannot flood the terminal.
const MAX_WARNINGS: u32 = 5;

/// Reads one generation's ready channel until EOF (its whole group is gone,
/// or it closed the channel). Lines longer than [`proto::MAX_LINE`] are
/// skipped; bad lines are warned about; nothing read here can stop devsup.
fn spawn_channel_reader(gen_id: GenId, channel: OwnedFd, tx: Sender<Input>) {
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-channel"))
        .spawn(move || read_channel(gen_id, channel, &tx));
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread to read its ready channel: {e}"
        );
    }
}

fn read_channel(gen_id: GenId, channel: OwnedFd, tx: &Sender<Input>) {
    let mut stream = std::os::unix::net::UnixStream::from(channel);
    let mut line = Vec::with_capacity(256);
    let mut overlong = false;
    let mut warnings = 0;
    let mut warn_bad = |what: String| {
        warnings += 1;
        if warnings <= MAX_WARNINGS {
            warn!(
                generation = gen_id,
                "ignoring a bad message on the ready channel: {what}"
            );
        }
        if warnings == MAX_WARNINGS {
            warn!(
                generation = gen_id,
                "further bad messages from this generation are ignored silently"
            );
        }
    };
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!(generation = gen_id, "ready channel: {e}");
                break;
            }
        };
        let at = Instant::now();
        for &b in &buf[..n] {
            if b != b'\n' {
                if line.len() < proto::MAX_LINE {
                    line.push(b);
                } else {
                    overlong = true;
                }
                continue;
            }
            if overlong {
                warn_bad(format!("a line longer than {} bytes", proto::MAX_LINE));
                overlong = false;
            } else if let Some(parsed) = proto::parse_line(&line) {
                match parsed {
                    Ok(msg) => {
                        let _ = tx.send(Input::Event(Event::Message { gen_id, msg, at }));
                    }
                    Err(e) => warn_bad(e.to_string()),
                }
            }
            line.clear();
        }
    }
    if !line.is_empty() && !overlong {
        match proto::parse_line(&line) {
            Some(Ok(msg)) => {
                let _ = tx.send(Input::Event(Event::Message {
                    gen_id,
                    msg,
                    at: Instant::now(),
                }));
            }
            Some(Err(e)) => warn_bad(e.to_string()),
            None => {}
        }
    }
    debug!(generation = gen_id, "ready channel closed");
}
