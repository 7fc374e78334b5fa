//! [`Step`]: every fact devsup reports besides its log line, as data.
//!
//! A step is what happened, not what to do: the state machine returns the
//! steps it decides as `Action::Report` (so it stays a pure function and its
//! tests can assert on them), and the executor and the loop add the steps
//! they carry out (a generation spawned with its pid, a signal sent, a build
//! step started, a socket listening). The executor hands every one to the
//! [`Reporter`](crate::report::Reporter), which fans it out to `--events`,
//! `devsup status`, the systemd notifier and `--livereload`.
//!
//! The wire form, one JSON object per line, is documented with an example
//! per kind in `docs/events.md`; the integration test `it::events` checks a
//! real run against it. Every field of a kind is always present (`null`
//! when it does not apply), durations are integers in microseconds
//! (`*_us`). Like `event.rs`, this module sits below the machine, the
//! executor and the loop.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::event::{Exit, GenId, SignalReason, Trigger};

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
        /// `startup`, `sighup`, `key`, `server`, `files` or `restart`.
        cause: &'static str,
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
        cause: &'static str,
        /// As in [`Step::Trigger`].
        path: Option<String>,
        /// As in [`Step::Trigger`].
        more: usize,
        /// `queue` or `build`.
        into: &'static str,
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
        /// `ok`, `failed`, `cancelled` or `stopped`.
        status: &'static str,
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
    },
    /// A generation was started.
    Spawned {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// Its pid, which is its process group.
        pid: i32,
        /// From the trigger to the spawn, when there was one.
        after_trigger_us: Option<u64>,
    },
    /// A generation could not be started.
    SpawnFailed {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// Why, in one line.
        error: String,
    },
    /// A generation became the one new connections go to: promoted once
    /// ready, or spawned with nothing serving (connections then wait for it
    /// in the socket's backlog).
    Active {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// The generation it replaces, which now drains (`null` when
        /// nothing was serving).
        replaces: Option<GenId>,
    },
    /// A generation is ready.
    Ready {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// `notify`: it said `READY=1`; `uptime`: it stayed up
        /// `--ready-after` (or the fallback for servers that never say it).
        rule: &'static str,
        /// From its spawn to its readiness.
        ready_us: u64,
    },
    /// A generation was sent the drain signal.
    Draining {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// The signal, e.g. `SIGTERM`.
        signal: String,
        /// `handoff`, `not_ready` or `shutdown`.
        reason: &'static str,
        /// The generation that replaces it (`reason: "handoff"`).
        successor: Option<GenId>,
        /// From the successor's readiness to this signal.
        after_ready_us: Option<u64>,
    },
    /// A generation's process group was sent SIGKILL.
    Killed {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// `drain_timeout` or `shutdown` (asked twice).
        reason: &'static str,
    },
    /// The active generation was sent a signal instead of a reload
    /// (`--signal-on`).
    Signalled {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// The signal.
        signal: String,
        /// Why.
        because: String,
    },
    /// A generation's whole process group is gone.
    Exited {
        /// The generation.
        #[serde(skip)]
        generation: GenId,
        /// Its leader's exit status, if it exited.
        code: Option<i32>,
        /// The signal that ended its leader, if one did.
        signal: Option<String>,
        /// What it was when it went: `draining`, `starting` (it failed
        /// before ready) or `active` (it exited on its own).
        phase: &'static str,
        /// Since its spawn.
        uptime_us: u64,
        /// Since its drain signal (`phase: "draining"`).
        drain_us: Option<u64>,
    },
    /// devsup is shutting down: every generation is told to drain.
    Shutdown {
        /// What asked (`SIGINT`, `SIGTERM`, `q pressed`, `the terminal closed`).
        cause: String,
        /// Generations alive.
        live: usize,
    },
    /// devsup exits now with this status.
    Stopped {
        /// The exit status.
        code: u8,
    },
}

impl Step {
    /// The generation the step is about.
    pub(crate) fn generation(&self) -> Option<GenId> {
        match self {
            Step::Trigger { generation, .. } | Step::Coalesced { generation, .. } => *generation,
            Step::Spawned { generation, .. }
            | Step::SpawnFailed { generation, .. }
            | Step::Active { generation, .. }
            | Step::Ready { generation, .. }
            | Step::Draining { generation, .. }
            | Step::Killed { generation, .. }
            | Step::Signalled { generation, .. }
            | Step::Exited { generation, .. } => Some(*generation),
            Step::Listening { .. }
            | Step::BuildStarted { .. }
            | Step::BuildFinished { .. }
            | Step::Shutdown { .. }
            | Step::Stopped { .. } => None,
        }
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
            cause: "restart",
            path: None,
            more: 0,
            queued: false,
        }
    }

    /// [`Step::Coalesced`]: `into` is `"queue"` (behind `starting`) or
    /// `"build"`.
    pub(crate) fn coalesced(
        trigger: &Trigger,
        into: &'static str,
        starting: Option<GenId>,
    ) -> Step {
        let (cause, _, path, more) = describe(trigger);
        Step::Coalesced {
            generation: starting,
            cause,
            path,
            more,
            into,
        }
    }

    /// [`Step::BuildFinished`], its output tail left for the reporter.
    pub(crate) fn build_finished(
        status: &'static str,
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
        }
    }

    /// [`Step::Exited`].
    pub(crate) fn exited(
        generation: GenId,
        exit: Exit,
        phase: &'static str,
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
        }
    }

    /// The step for a signal the supervisor sends to a generation.
    pub(crate) fn signal(
        generation: GenId,
        signal: nix::sys::signal::Signal,
        reason: &SignalReason,
        sent: Instant,
    ) -> Step {
        let drain = |reason, successor, after_ready_us| Step::Draining {
            generation,
            signal: signal.as_str().to_owned(),
            reason,
            successor,
            after_ready_us,
        };
        match reason {
            SignalReason::Handoff {
                successor,
                ready_at,
            } => drain(
                "handoff",
                Some(*successor),
                Some(us(sent.saturating_duration_since(*ready_at))),
            ),
            SignalReason::NotReady => drain("not_ready", None, None),
            SignalReason::Shutdown if signal == nix::sys::signal::Signal::SIGKILL => Step::Killed {
                generation,
                reason: "shutdown",
            },
            SignalReason::Shutdown => drain("shutdown", None, None),
            SignalReason::DrainTimeout => Step::Killed {
                generation,
                reason: "drain_timeout",
            },
            SignalReason::Route(because) => Step::Signalled {
                generation,
                signal: signal.as_str().to_owned(),
                because: because.clone(),
            },
        }
    }
}

/// `(cause, generation, path, more)` of a trigger.
fn describe(trigger: &Trigger) -> (&'static str, Option<GenId>, Option<String>, usize) {
    match trigger {
        Trigger::Startup => ("startup", None, None, 0),
        Trigger::Sighup => ("sighup", None, None, 0),
        Trigger::Key => ("key", None, None, 0),
        Trigger::Server(generation) => ("server", Some(*generation), None, 0),
        Trigger::Files { first, more } => ("files", None, Some(first.display().to_string()), *more),
    }
}

/// `(code, signal)` of an exit.
pub(crate) fn exit_fields(exit: Option<Exit>) -> (Option<i32>, Option<String>) {
    match exit {
        Some(Exit::Code(code)) => (Some(code), None),
        Some(Exit::Signal(sig)) => (
            None,
            Some(match nix::sys::signal::Signal::try_from(sig) {
                Ok(sig) => sig.as_str().to_owned(),
                Err(_) => format!("signal {sig}"),
            }),
        ),
        None => (None, None),
    }
}

/// A duration in whole microseconds, the unit of every `*_us` field.
pub(crate) fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
