//! A generation that fails to start or exits on its own: keep what serves,
//! run the reload queued behind a failed start, or restart with back-off
//! when nothing serves.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{BACKOFF_MAX, BACKOFF_MIN, BACKOFF_RESET, Phase, State};
use crate::event::{Action, Exit, GenId};
use crate::log::ms;
use crate::step::Step;

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
            let keep = self.keeping();
            error!(generation = gen_id, "cannot start: {error}{keep}");
            out.push(Action::Report(Step::SpawnFailed {
                generation: gen_id,
                error: error.to_owned(),
            }));
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
            Phase::Draining { since, .. } => ("draining", Some(now.duration_since(since))),
            Phase::Starting { .. } => ("starting", None),
            Phase::Active { .. } => ("active", None),
        };
        let uptime = now.duration_since(g.spawned_at);
        out.push(Action::Report(Step::exited(
            gen_id, exit, phase, uptime, drain,
        )));
        match g.phase {
            Phase::Draining { since, .. } => {
                info!(
                    generation = gen_id,
                    "exited {exit} after {}",
                    ms(now.duration_since(since))
                );
            }
            Phase::Starting { .. } => {
                let keep = self.keeping();
                warn!(
                    generation = gen_id,
                    "failed before ready: exited {exit} after {}{keep}",
                    ms(now.duration_since(g.spawned_at))
                );
                self.keep_serving(now, out);
            }
            Phase::Active { since } => {
                if self.shutdown.is_some() {
                    info!(
                        generation = gen_id,
                        "exited {exit} after {}",
                        ms(now.duration_since(since))
                    );
                    return;
                }
                let up = now.duration_since(g.spawned_at);
                if up >= BACKOFF_RESET {
                    self.backoff = BACKOFF_MIN;
                }
                if let Some(starting) = self.starting() {
                    // The successor will be promoted when it says READY;
                    // meanwhile connections wait in the kernel's backlog.
                    warn!(
                        generation = gen_id,
                        "exited {exit} after {} while gen={starting} is starting",
                        ms(up)
                    );
                    return;
                }
                match self.schedule_restart(now) {
                    Some(delay) => warn!(
                        generation = gen_id,
                        "exited {exit} on its own after {}; restarting in {} (connections wait in the backlog meanwhile)",
                        ms(up),
                        ms(delay)
                    ),
                    None => warn!(
                        generation = gen_id,
                        "exited {exit} on its own after {}; the build under way starts the next one",
                        ms(up)
                    ),
                }
            }
        }
    }

    /// If nothing serves and nothing is on its way to (no generation
    /// starting, no build), runs the queued reload, or schedules a restart
    /// after the back-off delay.
    pub(super) fn keep_serving(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.pending.is_some() && self.nothing_on_its_way() {
            self.settled(now, out);
        } else if let Some(delay) = self.schedule_restart(now) {
            warn!(
                "no generation is serving: starting one in {} (or at once on the next change)",
                ms(delay)
            );
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
