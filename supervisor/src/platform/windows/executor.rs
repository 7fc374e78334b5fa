//! The executor on Windows: the same interface as `crate::executor` (the
//! loop in `event_loop.rs` and the state machine are shared), carried out
//! with Windows' means.
//!
//! - A generation is started with `CREATE_NEW_PROCESS_GROUP` (its pid is
//!   its group) inside a Job Object with kill-on-close, with
//!   `SYSTEMFD_SOCKET_SERVER`/`SECRET` (the sockets, by systemfd's
//!   protocol: [`super::systemfd`]) and `DEVSUP_READY_HANDLE` (the write end
//!   of an anonymous pipe: its ready channel, read by
//!   `sources::ready_channel`).
//! - A build step runs as `cmd /C CMD` in a Job Object too; its stdout and
//!   stderr are piped through the tee Unix uses (`build_output::tee`),
//!   shown as they come and their end kept, and a failed build's
//!   `build_finished` waits for that end (`build_output::outbox`).
//! - The drain signal is `CTRL_BREAK_EVENT` to the generation's group;
//!   the kill (the drain timeout, a second Ctrl-C; `SIGKILL` in the state
//!   machine) is `TerminateJobObject`, and the log says so.
//! - Each process has a waiter thread, which waits for the process and then
//!   for its job to be empty (a generation is gone only when all its
//!   processes are), then says so on the loop's channel
//!   (`Input::ChildExited`), as SIGCHLD does on Unix.
//! - Readiness without READY=1: the moment a process of the generation
//!   fetched the sockets from the socket server is `Event::Listening` (the
//!   connections it will accept wait in the shared backlog meanwhile); a
//!   generation that never fetches them falls back to the uptime timer as on
//!   Unix when `/proc` cannot tell.
//!
//! Not carried out on Windows: the fd store (no fds to pass), `MAINPID=`,
//! `--prefix`, `--signal-on` (refused at start-up by
//! [`unsupported`]), and the inferred cargo build (which needs the build's
//! output read: give the command after `--`).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devsup_protocol as proto;
use windows_sys::Win32::Foundation::{HANDLE, HANDLE_FLAG_INHERIT, SetHandleInformation};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::System::Pipes::CreatePipe;

use super::process::{Job, new_process_group, send_drain};
use super::systemfd::{Fetch, SocketServer};
use crate::build_output::{Tail, outbox::Outbox, tee};
use crate::config::Config;
use crate::event::{Event, Exit, GenId, Input};
use crate::machine::{Action, ReadyRule};
use crate::report::Reporter;
use crate::signal::Signal;
use crate::sockets::Listener;
use crate::sources::ready_channel;
use crate::step::{Step, Trouble};

/// What devsup's options ask that devsup cannot do on Windows yet: one
/// line saying which, for a fatal error at start-up.
pub(crate) fn unsupported(config: &Config) -> Option<&'static str> {
    if config.cargo.is_some() {
        return Some(
            "with no command, devsup reads cargo's build messages, which it does not do on Windows yet: give the command after `--`, e.g. `devsup --build \"cargo build\" -- target\\debug\\server.exe`",
        );
    }
    if config.prefix {
        return Some("--prefix is not supported on Windows yet");
    }
    if config
        .watch
        .as_ref()
        .is_some_and(|w| !w.signal_on.is_empty())
    {
        return Some(
            "--signal-on is not supported on Windows: the one signal devsup sends there is CTRL_BREAK_EVENT, the drain",
        );
    }
    None
}

/// The word the log uses for the drain signal on Windows.
const DRAIN_EVENT: &str = "CTRL_BREAK_EVENT";
/// How often a waiter looks whether a job whose first process has exited
/// still has processes.
const JOB_POLL: Duration = Duration::from_millis(50);
/// The exit code `TerminateJobObject` gives every process of a job.
const KILLED_CODE: u32 = 1;

/// What a process devsup started is for.
#[derive(Debug, Clone, Copy)]
enum Role {
    Generation(GenId),
    Build,
}

#[derive(Debug)]
struct Proc {
    role: Role,
    job: Arc<Job>,
}

/// What the threads tell the loop through shared lists (the loop's channel
/// carries the wake-up, `Input::ChildExited`).
#[derive(Debug, Default)]
struct Shared {
    /// Processes (by pid) whose whole job is gone, and how the first ended.
    exited: Vec<(i32, Exit)>,
    /// Processes that fetched the sockets, and when.
    fetched: Vec<(u32, Instant)>,
}

/// Carries out actions: the only code that touches processes.
pub(crate) struct Executor {
    config: Config,
    /// Kept open for the socket server, which duplicates them.
    _listeners: Vec<Listener>,
    tx: Sender<Input>,
    reporter: Reporter,
    extra_env: Vec<(OsString, OsString)>,
    procs: HashMap<i32, Proc>,
    shared: Arc<Mutex<Shared>>,
    server: SocketServer,
    /// Generations whose fetch of the sockets counts (`auto`, `listen`) and
    /// has not been seen yet.
    unfetched: Vec<(GenId, i32)>,
    /// The last build step's output, shown and its end kept.
    build_output: Option<Tail>,
    /// The steps to publish, held behind a failed build until its output
    /// has ended.
    outbox: Outbox,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("procs", &self.procs)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor with no process yet, and the socket server of
    /// `listeners`. Steps go to `reporter`; `extra_env` is added to the
    /// environment of everything it starts.
    pub(crate) fn new(
        config: Config,
        listeners: Vec<Listener>,
        tx: Sender<Input>,
        reporter: Reporter,
        extra_env: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<Executor> {
        for l in &listeners {
            l.set_nonblocking(config.nonblocking).map_err(|e| {
                anyhow::anyhow!("cannot make the socket {} non-blocking: {e}", l.addr)
            })?;
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let server = SocketServer::start(listeners.iter().map(Listener::raw_socket).collect(), {
            let (shared, tx) = (shared.clone(), Mutex::new(tx.clone()));
            move |fetch| {
                if let Fetch::Sent { pid, .. } = fetch {
                    if let Ok(mut shared) = shared.lock() {
                        shared.fetched.push((pid, Instant::now()));
                    }
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send(Input::ChildExited);
                    }
                }
            }
        })
        .map_err(|e| {
            anyhow::anyhow!("cannot start the socket server (systemfd's protocol): {e}")
        })?;
        Ok(Executor {
            config,
            _listeners: listeners,
            tx,
            reporter,
            extra_env,
            procs: HashMap::new(),
            shared,
            server,
            unfetched: Vec::new(),
            build_output: None,
            outbox: Outbox::default(),
        })
    }

    /// When the loop must look without an input: when the steps held
    /// behind a failed build are due though its output goes on; every
    /// other change comes as `Input::ChildExited`.
    pub(crate) fn next_poll(&self) -> Option<Instant> {
        self.outbox.next_wake()
    }

    /// No probes on Windows: the fetch of the sockets is heard instead.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        None
    }

    pub(crate) fn run_probes(&mut self, _queue: &mut VecDeque<Event>) {}

    /// Takes an input off the loop's channel: `ChildExited` (a job emptied,
    /// or sockets were fetched) is the executor's own, and pushes the
    /// events it causes onto `queue`; an event it hands back.
    pub(crate) fn take(&mut self, input: Input, queue: &mut VecDeque<Event>) -> Option<Event> {
        match input {
            Input::Event(event) => return Some(event),
            Input::ChildExited => self.reap(queue),
        }
        None
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
                let mut step = reason.step(gen_id, signal, Instant::now());
                if let Step::Draining { signal: word, .. } = &mut step {
                    if signal != Signal::SIGKILL {
                        *word = DRAIN_EVENT.to_owned();
                    }
                }
                self.report(step);
                self.signal(pid, signal);
            }
            Action::StartBuild { step } => queue.push_back(self.start_build(step)),
            Action::SignalBuild { pid, signal } => self.signal(pid, signal),
            Action::Report(step) => self.report(step),
            Action::Exit(code) => {
                // What a stopped build printed may still be in its pipes:
                // let it reach the console before devsup exits.
                if let Some(tail) = &self.build_output {
                    tail.wait_ended(crate::build_output::outbox::OUTPUT_EOF_WAIT);
                }
                self.flush_held(true);
                return Some(code);
            }
        }
        None
    }

    /// Writes a step's log line, then publishes it; a failed build's
    /// carries the end of what its last step printed, and waits (with every
    /// step after it, without blocking the loop) for that output to end.
    fn report(&mut self, step: Step) {
        crate::report::log::write(&step);
        let was_held = self.outbox.next_wake().is_some();
        let steps = self
            .outbox
            .push(step, self.build_output.as_ref(), Instant::now());
        if !was_held && self.outbox.next_wake().is_some() {
            if let Some(tail) = &self.build_output {
                let tx = Mutex::new(self.tx.clone());
                tail.when_ended(move || {
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send(Input::ChildExited);
                    }
                });
            }
        }
        for step in steps {
            self.reporter.step(step);
        }
    }

    /// Publishes the steps held behind a failed build once its output has
    /// ended or its wait has run out (or at once if `force`).
    fn flush_held(&mut self, force: bool) {
        for step in self.outbox.flush(Instant::now(), force) {
            self.reporter.step(step);
        }
    }

    /// `SIGKILL` ends the job; any other signal is the drain signal,
    /// `CTRL_BREAK_EVENT` to the process group.
    fn signal(&mut self, pid: i32, signal: Signal) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let (what, sent) = if signal == Signal::SIGKILL {
            ("TerminateJobObject", p.job.terminate(KILLED_CODE))
        } else {
            (DRAIN_EVENT, send_drain(pid as u32))
        };
        if let Err(e) = sent {
            self.report(Step::Trouble(Trouble::SignalFailed {
                signal: what.to_owned(),
                pid,
                error: e.to_string(),
            }));
        }
    }

    fn spawn(&mut self, gen_id: GenId, trigger_at: Option<Instant>) -> Event {
        let spawned = self.config.program.resolve().and_then(|path| {
            let (read, write) = ready_pipe()?;
            let mut command = Command::new(&path);
            command.args(&self.config.program.argv[1..]);
            for key in INHERITED_NOT {
                command.env_remove(key);
            }
            command
                .envs(self.server.env())
                .env(proto::GENERATION_ENV, gen_id.to_string())
                .env(
                    proto::READY_HANDLE_ENV,
                    (write.as_raw_handle() as usize).to_string(),
                )
                .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
            let (child, job) = start_in_job(new_process_group(&mut command))
                .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", path.display()))?;
            // Only the generation holds the write end now: the reader sees
            // end of file when its last process is gone.
            drop(write);
            Ok((child, job, read))
        });
        let (child, job, read) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                return Event::SpawnFailed {
                    gen_id,
                    error: format!("{e:#}"),
                };
            }
        };
        let pid = child.id() as i32;
        self.report(Step::Spawned {
            generation: gen_id,
            pid,
            after_trigger_us: trigger_at.map(|t| crate::step::us(t.elapsed())),
        });
        let job = self.watch(child, job);
        self.procs.insert(
            pid,
            Proc {
                role: Role::Generation(gen_id),
                job,
            },
        );
        ready_channel::spawn_reader(gen_id, read, self.tx.clone());
        if self.config.ready != ReadyRule::Notify {
            self.unfetched.push((gen_id, pid));
        }
        Event::Spawned { gen_id, pid }
    }

    fn start_build(&mut self, step: usize) -> Event {
        let cmd = self.config.builds[step].clone();
        self.report(Step::BuildStarted {
            step: step + 1,
            steps: self.config.builds.len(),
            command: cmd.clone(),
        });
        match start_build_step(&cmd, &self.extra_env) {
            Ok((child, job, tail)) => {
                self.build_output = tail;
                let pid = child.id() as i32;
                let job = self.watch(child, job);
                self.procs.insert(
                    pid,
                    Proc {
                        role: Role::Build,
                        job,
                    },
                );
                Event::BuildStarted { pid }
            }
            Err(e) => {
                self.build_output = None;
                self.report(Step::Trouble(Trouble::BuildCannotRun {
                    command: cmd,
                    error: e.to_string(),
                }));
                Event::BuildExited { exit: None }
            }
        }
    }

    /// Starts the thread that waits for `child`, then for its job to be
    /// empty, and says so.
    fn watch(&self, mut child: Child, job: Job) -> Arc<Job> {
        let job = Arc::new(job);
        let pid = child.id() as i32;
        let (shared, tx, waited) = (self.shared.clone(), self.tx.clone(), job.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                let exit = match child.wait() {
                    Ok(status) => Exit::Code(status.code().unwrap_or(-1)),
                    Err(_) => Exit::Code(-1),
                };
                while waited.active_processes().is_ok_and(|n| n > 0) {
                    std::thread::sleep(JOB_POLL);
                }
                if let Ok(mut shared) = shared.lock() {
                    shared.exited.push((pid, exit));
                }
                let _ = tx.send(Input::ChildExited);
            });
        if let Err(e) = spawned {
            self.reporter
                .step(Step::Trouble(Trouble::WaitFailed(e.to_string())));
        }
        job
    }

    /// Hands on what the threads saw: fetches of the sockets, as
    /// `Listening`, and emptied jobs, as `GenExited` / `BuildExited`.
    fn reap(&mut self, queue: &mut VecDeque<Event>) {
        self.flush_held(false);
        let (exited, fetched) = match self.shared.lock() {
            Ok(mut shared) => (
                std::mem::take(&mut shared.exited),
                std::mem::take(&mut shared.fetched),
            ),
            Err(_) => return,
        };
        for (fetcher, at) in fetched {
            let Some(i) = self.unfetched.iter().position(|(_, pid)| {
                self.procs
                    .get(pid)
                    .is_some_and(|p| *pid as u32 == fetcher || p.job.contains(fetcher))
            }) else {
                continue;
            };
            let (gen_id, _) = self.unfetched.remove(i);
            queue.push_back(Event::Listening {
                gen_id,
                how: format!("pid={fetcher} fetched the sockets (systemfd's protocol)"),
                at,
                accepted: false,
            });
        }
        for (pid, exit) in exited {
            let Some(p) = self.procs.remove(&pid) else {
                continue;
            };
            queue.push_back(match p.role {
                Role::Generation(gen_id) => {
                    self.unfetched.retain(|(g, _)| *g != gen_id);
                    Event::GenExited { gen_id, exit }
                }
                Role::Build => Event::BuildExited { exit: Some(exit) },
            });
        }
    }
}

/// The variables a generation must not inherit from devsup's own
/// environment: the protocol's, which devsup sets for each generation.
const INHERITED_NOT: [&str; 9] = [
    proto::LISTEN_FDS_ENV,
    proto::LISTEN_FDS_FIRST_FD_ENV,
    proto::LISTEN_FDNAMES_ENV,
    proto::LISTEN_PID_ENV,
    proto::READY_FD_ENV,
    proto::NOTIFY_SOCKET_ENV,
    proto::READY_HANDLE_ENV,
    proto::SYSTEMFD_SOCKET_SERVER_ENV,
    proto::SYSTEMFD_SOCKET_SECRET_ENV,
];

/// Starts `command` and puts it in a new Job Object with kill-on-close.
/// A process it starts in the moment before the assignment is outside the
/// job; everything started after is inside.
fn start_in_job(command: &mut Command) -> io::Result<(Child, Job)> {
    let job = Job::new()?;
    let mut child = command.spawn()?;
    if let Err(e) = job.assign(&child) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok((child, job))
}

/// Starts a build step, `cmd /C CMD` (as typed: cmd parses its own
/// command line) in a new group and Job Object, its stdout and stderr
/// piped through the tee: shown as devsup's own as they come, their end
/// kept in the tail returned. If they cannot be piped the step still runs,
/// its output shown but not kept (no tail), after a warning.
fn start_build_step(
    cmd: &str,
    env: &[(OsString, OsString)],
) -> io::Result<(Child, Job, Option<Tail>)> {
    let mut command = Command::new("cmd");
    command
        .arg("/C")
        .raw_arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(tee::colour_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, job) = start_in_job(new_process_group(&mut command))?;
    let tail = Tail::with_streams(2);
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let copied = match (out, err) {
        (Some(out), Some(err)) => tee::copy("build", out, std::io::stdout(), tail.clone(), 0)
            .and_then(|()| tee::copy("build", err, std::io::stderr(), tail.clone(), 1)),
        _ => Err(io::Error::other("no pipe")),
    };
    match copied {
        Ok(()) => Ok((child, job, Some(tail))),
        Err(e) => {
            crate::report::log::write(&Step::Trouble(Trouble::BuildOutputLost(e.to_string())));
            Ok((child, job, None))
        }
    }
}

/// A ready channel: the read end (devsup's, not inheritable) and the write
/// end, inheritable, for the generation.
fn ready_pipe() -> io::Result<(File, OwnedHandle)> {
    let attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: std::ptr::null_mut(),
        bInheritHandle: 1,
    };
    let (mut read, mut write): (HANDLE, HANDLE) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: both out-pointers and the attributes are valid for the call.
    if unsafe { CreatePipe(&mut read, &mut write, &attributes, 0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new handles that nothing else owns.
    let (read, write) = unsafe {
        (
            OwnedHandle::from_raw_handle(read as RawHandle),
            OwnedHandle::from_raw_handle(write as RawHandle),
        )
    };
    // SAFETY: the read end is open; only its inherit flag changes.
    if unsafe { SetHandleInformation(read.as_raw_handle() as HANDLE, HANDLE_FLAG_INHERIT, 0) } == 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((File::from(read), write))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn the_ready_pipe_carries_lines_and_ends_when_the_writer_is_gone() {
        let (mut read, write) = ready_pipe().unwrap();
        let mut writer = File::from(write);
        writer.write_all(b"READY=1\n").unwrap();
        drop(writer);
        let mut got = String::new();
        read.read_to_string(&mut got).unwrap();
        assert_eq!(got, "READY=1\n");
    }

    /// A build step's stdout and stderr go through the tee: its end is
    /// kept for a failed build's report, and ends once the step is gone.
    #[test]
    fn a_build_steps_output_is_kept() {
        let (mut child, _job, tail) =
            start_build_step("echo to stdout& echo to stderr 1>&2& exit /b 3", &[]).unwrap();
        let tail = tail.expect("the output is piped");
        assert_eq!(child.wait().unwrap().code(), Some(3));
        assert!(tail.wait_ended(Duration::from_secs(10)), "the tee ended");
        let mut lines: Vec<String> = tail
            .printed(Duration::ZERO)
            .lines
            .iter()
            .map(|l| l.trim().to_owned())
            .collect();
        lines.sort();
        assert_eq!(lines, ["to stderr", "to stdout"]);
    }
}
