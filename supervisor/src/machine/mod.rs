//! The decision logic: a pure function of (state, event, now) to actions.
//!
//! Nothing here touches a process, a file or a clock; the loop
//! feeds events in and carries the actions out. That keeps every edge of the
//! failure table testable without processes.
//!
//! A reload, when everything goes well:
//!
//! 1. A trigger arrives (`Reload`). If a build is configured, run its steps
//!    one after the other (`StartBuild`); a failing step ends the reload and
//!    keeps the active generation.
//! 2. `Spawn` generation N+1. It is *starting*: it holds the listening
//!    sockets, and may accept, but is not yet trusted.
//! 3. N+1 is ready (see "Readiness" below): it becomes *active* and N gets
//!    the drain signal (*draining*), with a kill deadline.
//! 4. N's whole process group is gone (`GenExited`): it is forgotten.
//!
//! At most one generation is starting at a time; triggers that arrive while
//! one starts coalesce into one more reload, started when it settles.
//!
//! # Readiness
//!
//! A starting generation is counted ready by the first of these rules that
//! applies (`--ready` chooses between `auto`, the default, `notify` and
//! `listen`):
//!
//! - **READY=1** (ready channel or `NOTIFY_SOCKET`), always.
//! - **The kernel** (`auto` and `listen`): the executor probes the
//!   generation's processes in `/proc` (see `crate::readiness`) and sends
//!   [`Event::Listening`] once one of them waits on a passed socket. With
//!   `listen` that counts at once. With `auto` it counts only until a
//!   generation of this run has sent READY=1: a server that reports
//!   readiness may poll the socket before it is really ready (serving
//!   spawned before a warm-up), so once it is known to speak the protocol,
//!   handoffs wait for its READY=1. (Before the first READY=1 devsup cannot
//!   know; a reload that early uses the kernel rule.) With `notify`, only
//!   READY=1 counts.
//! - **A timer**, `--ready-after DUR` when given. devsup also falls back to
//!   a timer of [`READINESS_PROBE`] of uptime, with a warning saying why, in
//!   two cases only: `/proc` cannot be read ([`Event::ProbeFailed`]), or the
//!   generation that serves has run `--ready-timeout` without READY=1 and
//!   without ever being seen waiting on the socket (a server devsup cannot
//!   see accept: io_uring, a busy loop, a process outside the group, or one
//!   that does not use the passed socket at all). The second is evidence
//!   about the server, not about the successor, so a slow starter is never
//!   taken for a server that does not report readiness; and a reload made
//!   early in such a server's life is not lost: its successor is counted
//!   ready once the evidence is in. A READY=1 ends the fallback.
//!
//! A generation that is not ready by `--ready-timeout` is drained and the
//! active one kept.
//!
//! The code is split by concern: [`handoff`] (reloads, spawning, READY,
//! promotion and drain), [`build`] (build steps and their cancellation),
//! [`exits`] (a generation that fails to start or exits, restarts with
//! back-off), [`shutdown`] (the first and second stop request, the exit
//! status) and [`timers`] (deadlines and what happens when they pass).
//! [`State::step`] is the one entry point; it is a pure function of the
//! state, the event and the `now` it is given, so tests drive it with a
//! simulated clock (see `tests.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::signal::Signal;

#[cfg(doc)]
use crate::event::Event::{Listening, ProbeFailed};
use crate::event::{Event, GenId, Trigger};
use crate::step::{Note, Step};

mod action;
mod build;
mod exits;
mod handoff;
mod shutdown;
mod timers;

pub(crate) use action::{Action, SignalReason};
use build::Build;
use shutdown::Shutdown;

/// The uptime after which a generation counts as ready when readiness falls
/// back to a timer (see "Readiness" above).
pub(crate) const READINESS_PROBE: Duration = Duration::from_secs(1);
/// First restart delay after the active generation exits on its own.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A generation that stays up this long resets the restart delay.
pub(crate) const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long a cancelled build gets to exit before its group is killed.
pub(crate) const BUILD_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// What the decisions depend on, from the command line (see `Config::policy`).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Sent to a generation's group to drain it.
    pub(crate) drain_signal: Signal,
    /// After this long draining, the group gets SIGKILL.
    pub(crate) drain_timeout: Duration,
    /// How long a starting generation has to say READY.
    pub(crate) ready_timeout: Duration,
    /// Count a generation ready once it has stayed up this long.
    pub(crate) ready_after: Option<Duration>,
    /// Which signs of readiness count (`--ready`).
    pub(crate) ready: ReadyRule,
    /// Number of build steps run before each generation.
    pub(crate) build_steps: usize,
    /// Generations get `LISTEN_PID` (`--listen-pid`), which a server that
    /// checks it needs to take the sockets at all.
    pub(crate) listen_pid: bool,
}

/// Which signs of readiness count (`--ready`); see "Readiness" above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadyRule {
    /// READY=1; the kernel until some generation has sent READY=1.
    Auto,
    /// READY=1 only.
    Notify,
    /// READY=1 or the kernel, whichever comes first.
    Listen,
}

impl std::str::FromStr for ReadyRule {
    type Err = String;

    /// Parses `auto`, `notify` or `listen`.
    fn from_str(s: &str) -> Result<ReadyRule, String> {
        match s {
            "auto" => Ok(ReadyRule::Auto),
            "notify" => Ok(ReadyRule::Notify),
            "listen" => Ok(ReadyRule::Listen),
            _ => Err(format!(
                "{s:?} is not a readiness rule: use auto, notify or listen"
            )),
        }
    }
}

/// Where a generation is in its life; [`State::gens`] holds one per
/// generation, and is the only record of which one is active or starting.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Spawned, waiting for READY; may already accept.
    /// Drained (and the old generation kept) if not ready by `deadline`.
    Starting { deadline: Instant },
    /// The generation new connections belong to, `since` it was promoted
    /// (or spawned, when nothing served); at most one.
    Active { since: Instant },
    /// Told to drain `since` then; SIGKILL at `kill_at`, which is `None`
    /// once SIGKILL has been sent.
    Draining {
        since: Instant,
        kill_at: Option<Instant>,
    },
}

/// One generation whose process group may still be alive.
#[derive(Debug, Clone)]
struct Generation {
    /// Its pid (= process group id), once the executor has answered
    /// `Spawn` with `Spawned`.
    pid: Option<i32>,
    /// For readiness timing, `--ready-after` and the back-off reset.
    spawned_at: Instant,
    /// It has sent `READY=1` (a second one is ignored).
    said_ready: bool,
    /// The first few messages it sent, for the ready timeout's warning.
    sent: Vec<String>,
    /// When the kernel was first seen showing it waiting on a passed
    /// socket ([`Event::Listening`]).
    listening: Option<Instant>,
    /// It has been counted ready (by any rule) and said so in the log.
    counted: bool,
    /// `/proc` could not tell whether it waits on a socket: `listening`
    /// being `None` says nothing.
    unprobed: bool,
    /// It ignores the passed sockets ([`Event::IgnoresSocket`], said
    /// once): it serves something else, so no timer counts it ready.
    ignores_socket: bool,
    phase: Phase,
}

/// Reports `step`: pushes it onto `out`.
fn report(out: &mut Vec<Action>, step: Step) {
    out.push(Action::Report(step));
}

/// Reports a note (shown with `-v`).
fn note(out: &mut Vec<Action>, generation: Option<GenId>, note: Note) {
    report(out, Step::Noted { generation, note });
}

/// How many messages [`Generation::sent`] keeps.
const SENT_KEPT: usize = 4;

impl Generation {
    /// Notes a message it sent, for [`Generation::what_it_sent`].
    fn note_sent(&mut self, msg: &devsup_protocol::Message) {
        if self.sent.len() <= SENT_KEPT {
            let mut text = msg.to_string();
            if text.len() > 60 {
                let cut = (0..=57)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            self.sent.push(text);
        }
    }

    /// "it sent STATUS=…, …" or "it sent nothing", for a warning.
    fn what_it_sent(&self) -> String {
        match self.sent.len() {
            0 => "it sent nothing".to_owned(),
            n if n > SENT_KEPT => format!("it sent {}, …", self.sent[..SENT_KEPT].join(", ")),
            _ => format!("it sent {}", self.sent.join(", ")),
        }
    }
}

/// Everything the supervisor knows and decides on.
///
/// Built with [`State::new`] and changed only by [`State::step`], which
/// never reads a clock: time comes in as `now`, and [`State::next_deadline`]
/// says when the caller should send the next [`Event::Tick`].
#[derive(Debug)]
pub(crate) struct State {
    /// The options the decisions depend on; never changes.
    policy: Policy,
    /// The last generation number handed out; the next one is this + 1.
    last_gen: GenId,
    /// Every generation whose process group may still be alive, from
    /// `Spawn` until `GenExited` (or `SpawnFailed`). The one source of truth
    /// for which generation is active and which is starting (see
    /// [`State::active`], [`State::starting`]): at most one of each.
    gens: BTreeMap<GenId, Generation>,
    /// A reload asked for while a generation was starting: the latest
    /// trigger and when it was seen. However many arrive, they become one
    /// more reload, run once the start-up settles.
    pending: Option<(Trigger, Instant)>,
    /// The build under way, if any; never while a generation is starting.
    build: Option<Build>,
    /// Some generation of this run has sent READY=1: with
    /// [`ReadyRule::Auto`], handoffs wait for READY=1 from then on.
    speaks_protocol: bool,
    /// Set when readiness falls back to a timer (see "Readiness" above):
    /// generations then count as ready after this long, until one does say
    /// READY=1.
    fallback_ready_after: Option<Duration>,
    /// The fallback to a timer has been decided once (and said): it is not
    /// decided again after a READY=1 ended it.
    fallback_decided: bool,
    /// When to start a generation again, after the active one exited on its
    /// own with no successor on its way.
    restart_at: Option<Instant>,
    /// The next restart delay: doubles with each restart up to
    /// [`BACKOFF_MAX`], back to [`BACKOFF_MIN`] once a generation has stayed
    /// up [`BACKOFF_RESET`].
    backoff: Duration,
    /// Set once devsup is shutting down: no more reloads or restarts, and
    /// `Exit` once every generation and the build are gone.
    shutdown: Option<Shutdown>,
    /// The most generations alive at once so far, for the log.
    peak: usize,
    /// [`Step::NeverWaited`] has been said: once per run is enough.
    said_never_waited: bool,
}

impl State {
    /// A supervisor with no generation yet.
    pub(crate) fn new(policy: Policy) -> Self {
        State {
            policy,
            last_gen: 0,
            gens: BTreeMap::new(),
            pending: None,
            build: None,
            speaks_protocol: false,
            fallback_ready_after: None,
            fallback_decided: false,
            restart_at: None,
            backoff: BACKOFF_MIN,
            shutdown: None,
            peak: 0,
            said_never_waited: false,
        }
    }

    /// The generation new connections belong to: the one in
    /// [`Phase::Active`], if any.
    pub(crate) fn active(&self) -> Option<GenId> {
        self.in_phase(|p| matches!(p, Phase::Active { .. }))
    }

    /// The generation on its way to replace the active one, waiting for
    /// READY: the one in [`Phase::Starting`], if any.
    fn starting(&self) -> Option<GenId> {
        self.in_phase(|p| matches!(p, Phase::Starting { .. }))
    }

    fn in_phase(&self, phase: impl Fn(&Phase) -> bool) -> Option<GenId> {
        self.gens
            .iter()
            .find(|(_, g)| phase(&g.phase))
            .map(|(&gen_id, _)| gen_id)
    }

    /// The generations that are alive, oldest first.
    #[cfg(test)]
    fn live_generations(&self) -> Vec<GenId> {
        self.gens.keys().copied().collect()
    }

    /// No generation starting and no build: nothing is on its way to
    /// replace what serves (if anything does), and devsup is not shutting
    /// down.
    fn nothing_on_its_way(&self) -> bool {
        self.starting().is_none() && self.build.is_none() && self.shutdown.is_none()
    }

    /// Nothing serving and nothing on its way: the only state in which
    /// devsup starts a generation of its own accord (a restart).
    fn idle(&self) -> bool {
        self.active().is_none() && self.nothing_on_its_way()
    }

    fn ready_after(&self) -> Option<Duration> {
        self.policy.ready_after.or(self.fallback_ready_after)
    }

    /// Decides what to do about `event`, at time `now`.
    pub(crate) fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Reload { trigger, at } => self.on_reload(trigger, at, now, &mut out),
            Event::Message { gen_id, msg, at } => self.on_message(gen_id, msg, at, now, &mut out),
            Event::Listening {
                gen_id,
                how,
                at,
                accepted,
            } => self.on_listening(gen_id, &how, accepted, at, now, &mut out),
            Event::ProbeFailed { gen_id, why } => self.on_probe_failed(gen_id, why, &mut out),
            Event::IgnoresSocket {
                gen_id,
                closed,
                own,
                passed,
            } => self.on_ignores_socket(gen_id, closed, own, passed, &mut out),
            Event::Spawned { gen_id, pid } => self.on_spawned(gen_id, pid, now, &mut out),
            Event::SpawnFailed { gen_id, error } => {
                self.on_spawn_failed(gen_id, &error, now, &mut out)
            }
            Event::GenExited { gen_id, exit } => self.on_exited(gen_id, exit, now, &mut out),
            Event::BuildStarted { pid } => self.on_build_started(pid, &mut out),
            Event::BuildExited { exit } => self.on_build_exited(exit, now, &mut out),
            Event::SignalActive { signal, because } => {
                self.signal_active(signal, because, &mut out)
            }
            Event::Shutdown { because } => self.on_shutdown(because, now, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
        }
        self.maybe_exit(&mut out);
        self.debug_check();
        out
    }

    /// The invariants every step keeps, checked in debug builds (and so in
    /// every test, including the integration tests' devsup).
    fn debug_check(&self) {
        let count =
            |phase: fn(&Phase) -> bool| self.gens.values().filter(|g| phase(&g.phase)).count();
        debug_assert!(
            count(|p| matches!(p, Phase::Active { .. })) <= 1,
            "more than one active generation: {self:?}"
        );
        debug_assert!(
            count(|p| matches!(p, Phase::Starting { .. })) <= 1,
            "more than one starting generation: {self:?}"
        );
        debug_assert!(
            self.build.is_none() || self.starting().is_none(),
            "a build runs while a generation starts: {self:?}"
        );
    }
}

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
