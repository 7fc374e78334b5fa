//! [`Step`]: every fact devsup tells anyone, as data.
//!
//! A step is what happened, not what to do: the state machine returns the
//! steps it decides as `Action::Report` (so it stays a pure function and its
//! tests can assert on them), and the executor and the loop add the steps
//! they carry out (a generation spawned with its pid, a signal sent, a build
//! step started, a socket listening). The executor hands every one to the
//! [`Reporter`](crate::report::Reporter): the log renders it as one line
//! (`report/log.rs`), and the subscribers (`--events`, `devsup status`,
//! the systemd notifier, `--livereload`) take what they need.
//!
//! The wire form, one JSON object per line, is documented with an example
//! per kind in `docs/events.md`; the integration test `it::events` checks a
//! real run against it. Every field of a kind is always present (`null`
//! when it does not apply), durations are integers in microseconds
//! (`*_us`), and the words of the vocabulary are the enums below. Fields
//! marked `serde(skip)` are for the log line only. Kinds that only the log
//! shows (warnings, notes, the server's own messages) are not on the wire:
//! see [`Step::on_wire`]. This module sits below the machine, the executor
//! and the loop, above `event.rs` only.
#![cfg_attr(
    windows,
    allow(
        dead_code,
        reason = "the steps of Unix-only parts (fd store, MAINPID=, cgroups, live reload) are not made on Windows"
    )
)]

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::event::{Exit, GenId, StopCause, Trigger, signal_name};

/// Writes an enum's wire word (its serde name) as its `Display`.
macro_rules! words {
    ($ty:ident { $($variant:ident => $word:literal),* $(,)? }) => {
        impl $ty {
            /// The word, as on the wire.
            pub(crate) fn word(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),*
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

/// What started a reload (`trigger`'s and `coalesced`'s `cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Cause {
    Startup,
    Sighup,
    Key,
    Server,
    Files,
    Restart,
}
words!(Cause { Startup => "startup", Sighup => "sighup", Key => "key", Server => "server", Files => "files", Restart => "restart" });

/// Where a reload asked for during another went (`coalesced`'s `into`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Into {
    /// Run once the starting generation settles.
    Queue,
    /// The running build starts again.
    Build,
}
words!(Into { Queue => "queue", Build => "build" });

/// How a build ended (`build_finished`'s `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BuildStatus {
    Ok,
    Failed,
    /// Cancelled by a change, to start again.
    Cancelled,
    /// Cancelled by the shutdown.
    Stopped,
}
words!(BuildStatus { Ok => "ok", Failed => "failed", Cancelled => "cancelled", Stopped => "stopped" });

/// What a generation was when it exited (`exited`'s `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Starting,
    Active,
    Draining,
}
words!(Phase { Starting => "starting", Active => "active", Draining => "draining" });

/// The rule that counted a generation ready (`ready`'s `rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rule {
    /// It said READY=1.
    Notify,
    /// The kernel showed it waiting on a passed socket.
    Listening,
    /// It stayed up `--ready-after` (or the fallback timer).
    Uptime,
    /// It held a connection it accepted on a passed socket.
    Accepted,
}
words!(Rule { Notify => "notify", Listening => "listening", Uptime => "uptime", Accepted => "accepted" });

/// Why a generation is told to drain (`draining`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DrainReason {
    Handoff,
    NotReady,
    Shutdown,
}
words!(DrainReason { Handoff => "handoff", NotReady => "not_ready", Shutdown => "shutdown" });

/// Why a generation's group got SIGKILL (`killed`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KillReason {
    DrainTimeout,
    /// Asked to stop twice.
    Shutdown,
}
words!(KillReason { DrainTimeout => "drain_timeout", Shutdown => "shutdown" });

/// What follows a generation's exit, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum AfterExit {
    /// Nothing to say: it drained.
    #[default]
    Nothing,
    /// devsup is shutting down; it had been active `active_for`.
    Stopping { active_for: Duration },
    /// It failed before ready; `keeping` serves on.
    FailedStart { keeping: Option<GenId> },
    /// It exited on its own while `starting` starts.
    SuccessorStarting { starting: GenId },
    /// It exited on its own; a restart in `delay`.
    Restart { delay: Duration },
    /// It exited on its own; the build under way starts the next one.
    BuildUnderWay,
}

/// Why readiness falls back to a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// `/proc` cannot tell (why).
    CannotProbe(String),
    /// The generation that serves ran `--ready-timeout` without READY=1 and
    /// without being seen waiting on the socket.
    Unseen { ran: Duration },
}

/// What devsup knew of a generation's socket when it was not ready in
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketSeen {
    /// Waiting since then, which `--ready notify` does not count.
    NotCounted(Duration),
    /// Waiting since then, but earlier generations said READY=1.
    WaitsForReady(Duration),
    /// Never seen waiting.
    Never,
    /// Not looked at (`--ready notify`).
    NotLooked,
}

/// A line a generation sent that devsup shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Said {
    /// `STATUS=`.
    Status(String),
    /// `STOPPING=1`.
    Stopping,
    /// `RELOADING=1`.
    Reloading,
}

/// A change to the fd store (`FDSTORE=1`, `FDSTOREREMOVE=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FdStore {
    /// `count` fds kept under `name`, passed to the next generations.
    Stored { count: usize, name: String },
    /// `count` fds named `name` dropped from the store.
    Removed { count: usize, name: String },
    /// The store is full at `full` fds beside `sockets` sockets: `dropped`
    /// fds named `name` were not kept.
    Full {
        full: usize,
        sockets: usize,
        dropped: usize,
        name: String,
    },
}

/// What devsup made of a generation's `MAINPID=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MainPid {
    /// No such process (why): ignored.
    NoSuchProcess(String),
    /// In the generation's own process group: nothing to add.
    OwnGroup,
    /// Not a process of this generation: ignored.
    NotOurs,
    /// In this other process group, which gets the generation's signals
    /// too.
    Group(i32),
}

/// Something the executor could not do; devsup carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trouble {
    /// The build's output cannot be captured (why): it is shown, not
    /// reported.
    BuildOutputLost(String),
    /// The build command cannot be run.
    BuildCannotRun { command: String, error: String },
    /// `waitpid` failed (why).
    WaitFailed(String),
    /// The status socket `devsup status` looks for cannot be made (why).
    NoStatusSocket(String),
    /// `--livereload`'s page cannot answer on the served sockets (why).
    DownPageLost(String),
    /// A signal (on Windows, `CTRL_BREAK_EVENT` or `TerminateJobObject`)
    /// could not be sent to process group `pid`.
    #[cfg_attr(unix, allow(dead_code, reason = "the Windows executor's"))]
    SignalFailed {
        signal: String,
        pid: i32,
        error: String,
    },
}

/// How devsup tells a generation's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tracking {
    /// A cgroup v2 per generation, under this directory.
    Cgroup(String),
    /// Process groups, and the orphans devsup adopts as a child
    /// subreaper; no cgroup, for this reason.
    Orphans(String),
}

/// Something devsup noted and let be: shown with `-v` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// A reload asked for during the shutdown.
    ReloadDuringShutdown(Trigger),
    /// A second READY=1.
    ReadyAgain,
    /// READY=1 from a draining generation.
    ReadyWhileDraining,
    /// DEVSUP_RELOAD=1 from a draining generation.
    ReloadWhileDraining,
    /// A protocol key devsup does not act on.
    Unhandled(String),
    /// Told to drain before its pid is known.
    DrainBeforePid,
    /// `/proc` cannot tell, and it does not matter (why).
    CannotProbe(String),
    /// Fds sent again that the store holds already, kept once.
    KeptOnce { count: usize, name: String },
    /// A signal sent to the build's process group.
    SignalBuild(String),
    /// A process left behind by a server or a build was reaped.
    ReapedOrphan { pid: i32, exit: String },
    /// Seen waiting on the socket after this long, which does not count:
    /// it was counted already, or drains (`how`: `None`), or only READY=1
    /// counts (`how`: what the kernel showed).
    Waits {
        after: Duration,
        how: Option<String>,
    },
}

/// Why connections wait unanswered ([`Step::Unserved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unserved {
    /// The first build runs.
    Building,
    /// The first build failed: nothing will serve until one succeeds.
    BuildFailed,
    /// `--livereload`: devsup answers them with its page meanwhile.
    Page,
}

/// One step. Serialized with its kind in `event`, in snake case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Step {
    /// A listening socket is ready for the generations.
    Listening {
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
        /// Its address (`127.0.0.1:8080`, `unix:/run/app.sock`).
        addr: String,
        /// Its fd number in each generation.
        fd: i32,
        /// Passed to devsup by systemd (socket activation), not bound by it.
        inherited: bool,
    },
    /// A reload (or the first start) begins now.
    Trigger {
        /// The generation that asked (`cause: "server"`).
        #[serde(skip)]
        generation: Option<GenId>,
        cause: Cause,
        /// One changed path (`cause: "files"`).
        path: Option<String>,
        /// How many more paths changed.
        more: usize,
        /// It had been queued behind a generation that was starting.
        queued: bool,
    },
    /// A reload was asked for while one was under way: it runs once that
    /// one settles (`into: "queue"`), or restarts the running build
    /// (`into: "build"`).
    Coalesced {
        /// The generation that is starting (`into: "queue"`).
        #[serde(skip)]
        generation: Option<GenId>,
        /// As in [`Step::Trigger`].
        cause: Cause,
        /// As in [`Step::Trigger`].
        path: Option<String>,
        /// As in [`Step::Trigger`].
        more: usize,
        into: Into,
        /// The first to coalesce (a reload queued, a build cancelled);
        /// only that one is logged.
        #[serde(skip)]
        first: bool,
    },
    /// A build step started.
    BuildStarted {
        /// 1-based.
        step: usize,
        /// How many steps the build has.
        steps: usize,
        /// The shell command.
        command: String,
    },
    /// The build ended: every step succeeded, one failed, or it was
    /// cancelled (to start again, or for shutdown).
    BuildFinished {
        status: BuildStatus,
        /// The last step run, 1-based.
        step: usize,
        /// How many steps the build has.
        steps: usize,
        /// The last step's exit status, if it exited.
        code: Option<i32>,
        /// The signal that ended the last step, if one did.
        signal: Option<String>,
        /// Since the first step started.
        duration_us: u64,
        /// On failure, the last lines the step printed (ANSI colours
        /// removed); filled in by the executor, which captures the output.
        output_tail: Option<Vec<String>>,
        /// On failure, the end of what the step printed, as printed
        /// (colours kept), for the browser's overlay; not on the wire.
        #[serde(skip)]
        output: Option<String>,
        /// Since the last step started (the log's failure line).
        #[serde(skip)]
        step_duration: Duration,
        /// The generation that serves on after a failure.
        #[serde(skip)]
        keeping: Option<GenId>,
    },
    /// A generation was started.
    Spawned {
        #[serde(skip)]
        generation: GenId,
        /// Its pid, which is its process group.
        pid: i32,
        /// From the trigger to the spawn, when there was one.
        after_trigger_us: Option<u64>,
    },
    /// A generation could not be started.
    SpawnFailed {
        #[serde(skip)]
        generation: GenId,
        /// Why, in one line.
        error: String,
        /// The generation that serves on.
        #[serde(skip)]
        keeping: Option<GenId>,
    },
    /// A generation became the one new connections go to: promoted once
    /// ready, or spawned with nothing serving (connections then wait for it
    /// in the socket's backlog).
    Active {
        #[serde(skip)]
        generation: GenId,
        /// The generation it replaces, which now drains (`null` when
        /// nothing was serving).
        replaces: Option<GenId>,
    },
    /// A generation is ready.
    Ready {
        #[serde(skip)]
        generation: GenId,
        rule: Rule,
        /// From its spawn to its readiness.
        ready_us: u64,
        /// What the kernel showed (`rule: "listening"`).
        #[serde(skip)]
        how: Option<String>,
    },
    /// A generation was sent the drain signal.
    Draining {
        #[serde(skip)]
        generation: GenId,
        /// The signal, e.g. `SIGTERM`.
        signal: String,
        reason: DrainReason,
        /// The generation that replaces it (`reason: "handoff"`).
        successor: Option<GenId>,
        /// From the successor's readiness to this signal.
        after_ready_us: Option<u64>,
    },
    /// A generation's process group was sent SIGKILL.
    Killed {
        #[serde(skip)]
        generation: GenId,
        reason: KillReason,
        /// Since the drain signal (`reason: "drain_timeout"`).
        #[serde(skip)]
        draining_for: Option<Duration>,
    },
    /// The active generation was sent a signal instead of a reload
    /// (`--signal-on`).
    Signalled {
        #[serde(skip)]
        generation: GenId,
        /// The signal.
        signal: String,
        /// Why.
        because: String,
    },
    /// A generation's whole process group is gone.
    Exited {
        #[serde(skip)]
        generation: GenId,
        /// Its leader's exit status, if it exited.
        code: Option<i32>,
        /// The signal that ended its leader, if one did.
        signal: Option<String>,
        /// What it was when it went.
        phase: Phase,
        /// Since its spawn.
        uptime_us: u64,
        /// Since its drain signal (`phase: "draining"`).
        drain_us: Option<u64>,
        /// What follows, for the log.
        #[serde(skip)]
        next: AfterExit,
    },
    /// devsup is shutting down: every generation is told to drain.
    Shutdown {
        /// What asked.
        cause: StopCause,
        /// Generations alive.
        live: usize,
    },
    /// devsup exits now with this status.
    Stopped {
        /// The exit status.
        code: u8,
        /// The most generations alive at once, for the log.
        #[serde(skip)]
        peak: usize,
    },
    // The kinds below are shown by the log only (see `Step::on_wire`).
    /// Readiness falls back to a timer of `after` of uptime.
    #[serde(skip_serializing)]
    FellBack {
        generation: GenId,
        why: Fallback,
        after: Duration,
    },
    /// A READY=1 ended the fallback to a timer.
    #[serde(skip_serializing)]
    FallbackEnded { generation: GenId },
    /// The first READY=1 came from a generation counted ready already:
    /// handoffs wait for READY=1 from now on.
    #[serde(skip_serializing)]
    SpeaksProtocol { generation: GenId, after: Duration },
    /// A starting generation was not ready by `--ready-timeout`.
    #[serde(skip_serializing)]
    NotReady {
        generation: GenId,
        timeout: Duration,
        /// "it sent nothing", "it sent STATUS=…, …".
        sent: String,
        seen: SocketSeen,
        keeping: Option<GenId>,
    },
    /// More generations alive at once than ever before (more than two).
    #[serde(skip_serializing)]
    Peak { live: usize },
    /// Nothing serves: a generation starts after `delay`.
    #[serde(skip_serializing)]
    RestartScheduled { delay: Duration },
    /// `--signal-on` matched, but no generation runs to take the signal.
    #[serde(skip_serializing)]
    NotSignalled { because: String, signal: String },
    /// A cancelled build ignored SIGTERM for `grace`: its group is killed.
    #[serde(skip_serializing)]
    BuildKilled { grace: Duration },
    /// Asked to stop a second time: every generation is killed.
    #[serde(skip_serializing)]
    ShutdownForced { cause: StopCause },
    /// A generation said something devsup shows.
    #[serde(skip_serializing)]
    Said { generation: GenId, what: Said },
    /// The fd store changed.
    #[serde(skip_serializing)]
    FdStored { generation: GenId, change: FdStore },
    /// A `MAINPID=` was decided.
    #[serde(skip_serializing)]
    MainPidDecided {
        generation: GenId,
        pid: i32,
        decision: MainPid,
    },
    /// A generation ignores the sockets devsup passed: it closed them
    /// (`closed`), or listens on addresses of its own (`own`) and was not
    /// seen waiting on a passed one.
    #[serde(skip_serializing)]
    IgnoresSocket {
        generation: GenId,
        closed: bool,
        own: Vec<std::net::SocketAddr>,
        /// The passed TCP sockets' addresses.
        passed: Vec<String>,
        /// `--listen-pid` is on.
        listen_pid: bool,
    },
    /// A generation failed before it was ever seen waiting on a passed
    /// socket (said once per run).
    #[serde(skip_serializing)]
    NeverWaited { generation: GenId, listen_pid: bool },
    /// Something the executor could not do.
    #[serde(skip_serializing)]
    Trouble(Trouble),
    /// A generation's leader (its first process) exited, but processes
    /// it left (a daemon, after `setsid` or a double fork) still run: the
    /// generation lives on in them, and is drained and stopped with them.
    #[serde(skip_serializing)]
    LeaderExited {
        generation: GenId,
        pid: i32,
        exit: Exit,
        /// How many of its processes still run.
        remaining: usize,
    },
    /// A watched path changed all the time through the last `bursts`
    /// bursts of changes, and cut each short at its longest, `hold`: a
    /// log or a journal in the tree (named once).
    #[serde(skip_serializing)]
    Restless {
        path: String,
        bursts: usize,
        hold: Duration,
    },
    /// How devsup tells which processes belong to a generation (once, at
    /// start-up).
    #[serde(skip_serializing)]
    Tracking(Tracking),
    /// Something devsup noted and let be.
    #[serde(skip_serializing)]
    Noted {
        generation: Option<GenId>,
        note: Note,
    },
    /// No command was given: the Cargo binary devsup builds and runs, as
    /// `cargo run` would. The log's first line.
    #[serde(skip_serializing)]
    Inferred {
        package: String,
        bin: String,
        /// Why this binary: `--bin`, `default-run` or `the only binary`.
        because: &'static str,
        /// The build step.
        build: String,
        target_dir: String,
    },
    /// No generation was ever spawned: connections to `addrs` wait in the
    /// accept queue unanswered, or get `--livereload`'s page (said once
    /// each).
    #[serde(skip_serializing)]
    Unserved { addrs: Vec<String>, why: Unserved },
}

impl Step {
    /// The generation the step is about.
    pub(crate) fn generation(&self) -> Option<GenId> {
        match self {
            Step::Trigger { generation, .. }
            | Step::Coalesced { generation, .. }
            | Step::Noted { generation, .. } => *generation,
            Step::Spawned { generation, .. }
            | Step::SpawnFailed { generation, .. }
            | Step::Active { generation, .. }
            | Step::Ready { generation, .. }
            | Step::Draining { generation, .. }
            | Step::Killed { generation, .. }
            | Step::Signalled { generation, .. }
            | Step::Exited { generation, .. }
            | Step::FellBack { generation, .. }
            | Step::FallbackEnded { generation }
            | Step::SpeaksProtocol { generation, .. }
            | Step::NotReady { generation, .. }
            | Step::Said { generation, .. }
            | Step::FdStored { generation, .. }
            | Step::MainPidDecided { generation, .. }
            | Step::IgnoresSocket { generation, .. }
            | Step::NeverWaited { generation, .. }
            | Step::LeaderExited { generation, .. } => Some(*generation),
            Step::Listening { .. }
            | Step::Tracking(_)
            | Step::Restless { .. }
            | Step::BuildStarted { .. }
            | Step::BuildFinished { .. }
            | Step::Shutdown { .. }
            | Step::Stopped { .. }
            | Step::Peak { .. }
            | Step::RestartScheduled { .. }
            | Step::NotSignalled { .. }
            | Step::BuildKilled { .. }
            | Step::ShutdownForced { .. }
            | Step::Inferred { .. }
            | Step::Unserved { .. }
            | Step::Trouble(_) => None,
        }
    }

    /// Whether the step is on the wire (`--events`, docs/events.md); the
    /// others are the log's alone.
    pub(crate) fn on_wire(&self) -> bool {
        !matches!(
            self,
            Step::FellBack { .. }
                | Step::FallbackEnded { .. }
                | Step::SpeaksProtocol { .. }
                | Step::NotReady { .. }
                | Step::Peak { .. }
                | Step::RestartScheduled { .. }
                | Step::NotSignalled { .. }
                | Step::BuildKilled { .. }
                | Step::ShutdownForced { .. }
                | Step::Said { .. }
                | Step::FdStored { .. }
                | Step::MainPidDecided { .. }
                | Step::IgnoresSocket { .. }
                | Step::NeverWaited { .. }
                | Step::LeaderExited { .. }
                | Step::Tracking(_)
                | Step::Restless { .. }
                | Step::Trouble(_)
                | Step::Noted { .. }
                | Step::Inferred { .. }
                | Step::Unserved { .. }
        )
    }

    /// [`Step::Trigger`] for `trigger` (`queued`: it had waited behind a
    /// starting generation).
    pub(crate) fn trigger(trigger: &Trigger, queued: bool) -> Step {
        let (cause, generation, path, more) = describe(trigger);
        Step::Trigger {
            generation,
            cause,
            path,
            more,
            queued,
        }
    }

    /// [`Step::Trigger`] for a restart after the active generation exited
    /// on its own.
    pub(crate) fn restart() -> Step {
        Step::Trigger {
            generation: None,
            cause: Cause::Restart,
            path: None,
            more: 0,
            queued: false,
        }
    }

    /// [`Step::Coalesced`] into the queue behind `starting`, or into the
    /// build; `first`: the first to coalesce.
    pub(crate) fn coalesced(
        trigger: &Trigger,
        into: Into,
        starting: Option<GenId>,
        first: bool,
    ) -> Step {
        let (cause, _, path, more) = describe(trigger);
        Step::Coalesced {
            generation: starting,
            cause,
            path,
            more,
            into,
            first,
        }
    }

    /// [`Step::BuildFinished`] (`step` 0-based), its output tail left for
    /// the reporter.
    pub(crate) fn build_finished(
        status: BuildStatus,
        step: usize,
        steps: usize,
        exit: Option<Exit>,
        duration: Duration,
    ) -> Step {
        let (code, signal) = exit_fields(exit);
        Step::BuildFinished {
            status,
            step: step + 1,
            steps,
            code,
            signal,
            duration_us: us(duration),
            output_tail: None,
            output: None,
            step_duration: Duration::ZERO,
            keeping: None,
        }
    }

    /// [`Step::Exited`].
    pub(crate) fn exited(
        generation: GenId,
        exit: Exit,
        phase: Phase,
        uptime: Duration,
        drain: Option<Duration>,
    ) -> Step {
        let (code, signal) = exit_fields(Some(exit));
        Step::Exited {
            generation,
            code,
            signal,
            phase,
            uptime_us: us(uptime),
            drain_us: drain.map(us),
            next: AfterExit::Nothing,
        }
    }
}

/// `(cause, generation, path, more)` of a trigger.
fn describe(trigger: &Trigger) -> (Cause, Option<GenId>, Option<String>, usize) {
    match trigger {
        Trigger::Startup => (Cause::Startup, None, None, 0),
        Trigger::Sighup => (Cause::Sighup, None, None, 0),
        Trigger::Key => (Cause::Key, None, None, 0),
        Trigger::Server(generation) => (Cause::Server, Some(*generation), None, 0),
        Trigger::Files { first, more } => {
            (Cause::Files, None, Some(first.display().to_string()), *more)
        }
    }
}

/// `(code, signal)` of an exit.
pub(crate) fn exit_fields(exit: Option<Exit>) -> (Option<i32>, Option<String>) {
    match exit {
        Some(Exit::Code(code)) => (Some(code), None),
        Some(Exit::Signal(sig)) => (None, Some(signal_name(sig))),
        None => (None, None),
    }
}

/// A duration in whole microseconds, the unit of every `*_us` field.
pub(crate) fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
