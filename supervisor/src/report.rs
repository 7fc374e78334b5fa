//! Every step devsup takes, as data: one [`Step`] per log line that says
//! something happened, fanned out in-process to subscribers.
//!
//! The supervisor calls [`Reporter::step`] beside each step's log line.
//! Subscribers are called in order, on the supervisor's thread, with an
//! [`Arc<Record>`]: the `--events` writers ([`crate::events`]), the status
//! tracker behind `devsup status` ([`crate::status`]), the systemd notifier
//! ([`crate::systemd`]), and anything else that wants the same facts (a
//! browser live-reload server needs "building", "build failed with this
//! output" and "generation N ready"). A subscriber must not block: one that
//! does work elsewhere takes a [`Reporter::channel`] and reads it on its own
//! thread.
//!
//! The wire form, one JSON object per line, is documented with an example
//! per kind in `docs/events.md`; `tests/tests/events.rs` checks a real run
//! against it. Every field of a kind is always present (`null` when it does
//! not apply), durations are integers in microseconds (`*_us`), and every
//! object carries the schema version `v`, a UTC timestamp `ts` and the
//! generation `gen` it is about (or `null`).

use std::fmt;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::machine::{Exit, GenId, Trigger};
use crate::tee::Tail;

/// The version of the wire schema; raised on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// How long a failed build's output may take to reach its end of file
/// before its last lines are reported without the rest (a process outside
/// the build's group, such as a compiler cache server, may hold the pipe).
const OUTPUT_EOF_WAIT: Duration = Duration::from_millis(200);

/// One step. Serialized with its kind in `event`, in snake case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Step {
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
        /// removed); filled in by [`Reporter::step`].
        output_tail: Option<Vec<String>>,
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
        /// What asked (`SIGINT`, `SIGTERM`, `key`).
        cause: String,
        /// Generations alive.
        live: usize,
    },
    /// devsup exits now with this status.
    Stopped {
        /// The exit status.
        code: u8,
    },
    /// devsup's state; the first object each socket client reads.
    Status(Box<crate::status::Status>),
}

impl Step {
    /// The generation the step is about.
    pub fn generation(&self) -> Option<GenId> {
        match self {
            Step::Trigger { generation, .. } | Step::Coalesced { generation, .. } => *generation,
            Step::Spawned { generation, .. }
            | Step::SpawnFailed { generation, .. }
            | Step::Ready { generation, .. }
            | Step::Draining { generation, .. }
            | Step::Killed { generation, .. }
            | Step::Signalled { generation, .. }
            | Step::Exited { generation, .. } => Some(*generation),
            Step::Status(status) => status.active,
            Step::Listening { .. }
            | Step::BuildStarted { .. }
            | Step::BuildFinished { .. }
            | Step::Shutdown { .. }
            | Step::Stopped { .. } => None,
        }
    }

    /// [`Step::Trigger`] for `trigger` (`queued`: it had waited behind a
    /// starting generation).
    pub fn trigger(trigger: &Trigger, queued: bool) -> Step {
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
    pub fn restart() -> Step {
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
    pub fn coalesced(trigger: &Trigger, into: &'static str, starting: Option<GenId>) -> Step {
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
    pub fn build_finished(
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
        }
    }

    /// [`Step::Exited`].
    pub fn exited(
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
    pub fn signal(
        generation: GenId,
        signal: nix::sys::signal::Signal,
        reason: &crate::machine::SignalReason,
        sent: std::time::Instant,
    ) -> Step {
        use crate::machine::SignalReason;
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
pub fn exit_fields(exit: Option<Exit>) -> (Option<i32>, Option<String>) {
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
pub fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A time as RFC 3339 in UTC with microseconds, the form of `ts`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A step and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When.
    pub at: SystemTime,
    /// What.
    pub step: Step,
}

#[derive(Serialize)]
struct Wire<'a> {
    v: u32,
    ts: String,
    #[serde(rename = "gen")]
    generation: Option<GenId>,
    #[serde(flatten)]
    step: &'a Step,
}

impl Record {
    /// A record of `step`, now.
    pub fn now(step: Step) -> Record {
        Record {
            at: SystemTime::now(),
            step,
        }
    }

    /// The record as one line of JSON, without the newline.
    pub fn to_json(&self) -> String {
        let wire = Wire {
            v: SCHEMA_VERSION,
            ts: timestamp(self.at),
            generation: self.step.generation(),
            step: &self.step,
        };
        // Only strings, numbers, booleans and lists of them: serializing
        // cannot fail; say so in the stream all the same rather than panic.
        serde_json::to_string(&wire).unwrap_or_else(|e| {
            format!(
                "{{\"v\":{SCHEMA_VERSION},\"event\":\"error\",\"error\":{:?}}}",
                e.to_string()
            )
        })
    }
}

/// Something that receives every step.
pub trait Subscriber: Send {
    /// Called for each step, in order, on the supervisor's thread; must
    /// not block. Returns `false` to unsubscribe.
    fn on_step(&mut self, record: &Arc<Record>) -> bool;
}

impl<F: FnMut(&Arc<Record>) -> bool + Send> Subscriber for F {
    fn on_step(&mut self, record: &Arc<Record>) -> bool {
        self(record)
    }
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Box<dyn Subscriber>>,
    /// The running (or last) build step's output.
    build_output: Option<Tail>,
}

/// The fan-out: cheap to clone, shared by everything that reports steps.
/// With no subscriber, reporting a step does nothing but build it.
#[derive(Clone, Default)]
pub struct Reporter {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().subscribers.len();
        f.debug_struct("Reporter").field("subscribers", &n).finish()
    }
}

impl Reporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscriber; it sees every step from now on.
    pub fn subscribe(&self, subscriber: impl Subscriber + 'static) {
        self.lock().subscribers.push(Box::new(subscriber));
    }

    /// A channel that receives every step from now on, for a subscriber
    /// that works on its own thread; dropping the receiver unsubscribes.
    pub fn channel(&self) -> Receiver<Arc<Record>> {
        let (tx, rx) = mpsc::channel();
        self.subscribe(move |record: &Arc<Record>| tx.send(record.clone()).is_ok());
        rx
    }

    /// Whether anything subscribes.
    pub fn is_active(&self) -> bool {
        !self.lock().subscribers.is_empty()
    }

    /// Says where the running build step's output is captured, so that a
    /// failed build's [`Step::BuildFinished`] carries its last lines.
    pub fn build_output(&self, tail: Option<Tail>) {
        self.lock().build_output = tail;
    }

    /// Reports one step to every subscriber.
    pub fn step(&self, mut step: Step) {
        let mut inner = self.lock();
        if let Step::BuildFinished {
            status: "failed",
            output_tail,
            ..
        } = &mut step
        {
            *output_tail = Some(
                inner
                    .build_output
                    .as_ref()
                    .map(|tail| tail.lines(OUTPUT_EOF_WAIT))
                    .unwrap_or_default(),
            );
        }
        if inner.subscribers.is_empty() {
            return;
        }
        let record = Arc::new(Record::now(step));
        inner.subscribers.retain_mut(|s| s.on_step(&record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_version_time_generation_and_kind() {
        let record = Record::now(Step::Ready {
            generation: 3,
            rule: "notify",
            ready_us: 1500,
        });
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["event"], "ready");
        assert_eq!(json["gen"], 3);
        assert_eq!(json["rule"], "notify");
        assert_eq!(json["ready_us"], 1500);
        assert!(json["ts"].as_str().unwrap().ends_with('Z'), "{json}");
        let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 6, "{fields:?}");
    }

    #[test]
    fn absent_fields_are_null_not_missing() {
        let json: serde_json::Value =
            serde_json::from_str(&Record::now(Step::trigger(&Trigger::Sighup, false)).to_json())
                .unwrap();
        assert!(json["gen"].is_null());
        assert!(json.as_object().unwrap().contains_key("path"));
        assert!(json["path"].is_null());
        assert_eq!(json["cause"], "sighup");
    }

    #[test]
    fn subscribers_get_every_step_in_order_and_can_leave() {
        let reporter = Reporter::default();
        let rx = reporter.channel();
        let mut left = 0;
        reporter.subscribe(move |_: &Arc<Record>| {
            left += 1;
            left < 2
        });
        reporter.step(Step::Stopped { code: 0 });
        reporter.step(Step::Stopped { code: 1 });
        reporter.step(Step::Stopped { code: 2 });
        assert_eq!(reporter.lock().subscribers.len(), 1);
        let codes: Vec<Step> = rx.try_iter().map(|r| r.step.clone()).collect();
        assert_eq!(codes, [0, 1, 2].map(|code| Step::Stopped { code }).to_vec());
        drop(rx);
        reporter.step(Step::Stopped { code: 3 });
        assert!(!reporter.is_active());
    }

    #[test]
    fn a_failed_build_carries_its_output_tail() {
        let reporter = Reporter::default();
        let rx = reporter.channel();
        let (tail, write) = crate::tee::start_sink("test", std::io::sink()).unwrap();
        reporter.build_output(Some(tail));
        {
            use std::io::Write;
            let mut w = std::fs::File::from(write);
            writeln!(w, "compiling\nerror: \x1b[1mmismatched types\x1b[0m").unwrap();
        }
        reporter.step(Step::build_finished(
            "failed",
            0,
            1,
            Some(Exit::Code(101)),
            Duration::from_millis(3),
        ));
        let record = rx.try_recv().unwrap();
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(json["code"], 101);
        assert_eq!(json["duration_us"], 3000);
        assert_eq!(
            json["output_tail"],
            serde_json::json!(["compiling", "error: mismatched types"])
        );
    }
}
