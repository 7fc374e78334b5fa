//! A generation that fails to start or exits on its own: keep what serves,
//! run the reload queued behind a failed start, or restart with back-off
//! when nothing serves.

use std::time::{Duration, Instant};

use super::{
    Action, BACKOFF_MAX, BACKOFF_MIN, BACKOFF_RESET, Generation, Phase, ReadyRule, State, report,
};
use crate::event::{Exit, GenId};
use crate::step::{self, AfterExit, Step};

impl State {
    /// The executor could not start generation `gen_id`.
    pub(super) fn on_spawn_failed(
        &mut self,
        gen_id: GenId,
        error: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.gens.remove(&gen_id).is_some() {
            report(
                out,
                Step::SpawnFailed {
                    generation: gen_id,
                    error: error.to_owned(),
                    keeping: self.active(),
                },
            );
            self.keep_serving(now, out);
        }
    }

    pub(super) fn on_exited(
        &mut self,
        gen_id: GenId,
        exit: Exit,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(g) = self.gens.remove(&gen_id) else {
            return;
        };
        let (phase, drain) = match g.phase {
            Phase::Draining { since, .. } => (
                step::Phase::Draining,
                Some(now.saturating_duration_since(since)),
            ),
            Phase::Starting { .. } => (step::Phase::Starting, None),
            Phase::Active { .. } => (step::Phase::Active, None),
        };
        let uptime = now.duration_since(g.spawned_at);
        let mut exited = Step::exited(gen_id, exit, phase, uptime, drain);
        let next = match g.phase {
            Phase::Draining { .. } => AfterExit::Nothing,
            Phase::Starting { .. } => AfterExit::FailedStart {
                keeping: self.active(),
            },
            Phase::Active { since } => {
                self.after_active_exit(now.saturating_duration_since(since), uptime, now)
            }
        };
        if let Step::Exited { next: n, .. } = &mut exited {
            *n = next;
        }
        report(out, exited);
        if !self.said_never_waited && self.never_waited(&g, exit) {
            self.said_never_waited = true;
            report(
                out,
                Step::NeverWaited {
                    generation: gen_id,
                    listen_pid: self.policy.listen_pid,
                },
            );
        }
        if matches!(g.phase, Phase::Starting { .. }) {
            self.keep_serving(now, out);
        }
    }

    /// `g` failed (`exit`) on its own before it was ever seen waiting on a
    /// passed socket, where the probe would have seen it: it may never
    /// have taken its sockets.
    fn never_waited(&self, g: &Generation, exit: Exit) -> bool {
        !exit.success()
            && !matches!(g.phase, Phase::Draining { .. })
            && self.shutdown.is_none()
            && self.policy.ready != ReadyRule::Notify
            && !g.unprobed
            && !g.said_ready
            && g.listening.is_none()
    }

    /// What follows the exit of the generation that was active for
    /// `active_for`, up `uptime`: the shutdown goes on, the successor
    /// starting takes over, or a restart is scheduled.
    fn after_active_exit(
        &mut self,
        active_for: Duration,
        uptime: Duration,
        now: Instant,
    ) -> AfterExit {
        if self.shutdown.is_some() {
            return AfterExit::Stopping { active_for };
        }
        if uptime >= BACKOFF_RESET {
            self.backoff = BACKOFF_MIN;
        }
        if let Some(starting) = self.starting() {
            // The successor will be promoted when it says READY;
            // meanwhile connections wait in the kernel's backlog.
            return AfterExit::SuccessorStarting { starting };
        }
        match self.schedule_restart(now) {
            Some(delay) => AfterExit::Restart { delay },
            None => AfterExit::BuildUnderWay,
        }
    }

    /// If nothing serves and nothing is on its way to (no generation
    /// starting, no build), runs the queued reload, or schedules a restart
    /// after the back-off delay.
    pub(super) fn keep_serving(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.pending.is_some() && self.nothing_on_its_way() {
            self.settled(now, out);
        } else if let Some(delay) = self.schedule_restart(now) {
            report(out, Step::RestartScheduled { delay });
        }
    }

    /// Schedules a restart if nothing serves and nothing is on its way to;
    /// the delay doubles each time, up to [`BACKOFF_MAX`].
    pub(super) fn schedule_restart(&mut self, now: Instant) -> Option<Duration> {
        if !self.idle() {
            return None;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.restart_at = Some(now + delay);
        Some(delay)
    }
}
