//! Deadlines: when the state machine wants an [`Event::Tick`], and what a
//! tick does: fall back to a timer for a server devsup cannot see ready,
//! count a generation ready after `--ready-after` (or that fallback), give
//! up on one that was not ready in time, SIGKILL a drain or a cancelled
//! build that overran, start a restart that is due.

use std::time::Instant;

use crate::signal::Signal;

use super::{Action, BUILD_CANCEL_GRACE, Phase, ReadyRule, SignalReason, State, report};
#[cfg(doc)]
use crate::event::Event;
use crate::event::GenId;
use crate::step::{Fallback, Rule, SocketSeen, Step, us};

impl State {
    /// When the evidence that the server cannot be seen ready will be in:
    /// the active generation, never seen ready, will have run
    /// `--ready-timeout` (see "Readiness" in the module above). `None` when
    /// that cannot happen (a timer already counts, `--ready notify`, the
    /// server says READY=1, or the active one has been seen ready).
    fn invisible_at(&self) -> Option<(u64, Instant)> {
        if self.fallback_decided
            || self.ready_after().is_some()
            || self.speaks_protocol
            || self.policy.ready == ReadyRule::Notify
        {
            return None;
        }
        let gen_id = self.active()?;
        let g = self.gens.get(&gen_id)?;
        // One that ignores the socket is not invisible: it serves
        // something else, and was told so.
        if g.said_ready || g.listening.is_some() || g.ignores_socket {
            return None;
        }
        Some((gen_id, g.spawned_at + self.policy.ready_timeout))
    }

    /// The earliest time at which a `Tick` is due, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
        deadlines.extend(self.invisible_at().map(|(_, at)| at));
        for g in self.gens.values() {
            match g.phase {
                Phase::Starting { deadline } => {
                    deadlines.push(deadline);
                    if let Some(after) = self.ready_after() {
                        deadlines.push(g.spawned_at + after);
                    }
                }
                Phase::Draining { kill_at, .. } => deadlines.extend(kill_at),
                Phase::Active { .. } => {}
            }
        }
        deadlines.extend(self.restart_at);
        if let Some(build) = &self.build {
            deadlines.extend(build.cancel_kill_at);
        }
        deadlines.into_iter().min()
    }

    pub(super) fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some((gen_id, at)) = self.invisible_at().filter(|&(_, at)| now >= at) {
            let ran = at.duration_since(self.gens[&gen_id].spawned_at);
            self.fall_back_to_timer(gen_id, Fallback::Unseen { ran }, out);
        }
        let (promote, not_ready) = self.tick_generations(now, out);
        if let Some(gen_id) = promote {
            self.promote(gen_id, None, now, out);
        }
        if let Some(gen_id) = not_ready {
            self.not_ready(gen_id, now, out);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            if self.idle() {
                report(out, Step::restart());
                self.begin(now, now, out);
            }
        }
        self.tick_build(now, out);
    }

    /// The generations' deadlines at `now`: counts a starting one ready
    /// after `--ready-after` (returned first, to promote), finds one not
    /// ready in time (returned second), and kills the drains that overran.
    fn tick_generations(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> (Option<GenId>, Option<GenId>) {
        let ready_after = self.ready_after();
        let mut promote = None;
        let mut not_ready = None;
        let mut kill = Vec::new();
        for (&gen_id, g) in &mut self.gens {
            match &mut g.phase {
                Phase::Starting { deadline } => {
                    if ready_after.is_some_and(|a| now >= g.spawned_at + a) {
                        report(
                            out,
                            Step::Ready {
                                generation: gen_id,
                                rule: Rule::Uptime,
                                ready_us: us(now.duration_since(g.spawned_at)),
                                how: None,
                            },
                        );
                        g.counted = true;
                        promote = Some(gen_id);
                    } else if now >= *deadline {
                        not_ready = Some(gen_id);
                    }
                }
                Phase::Draining { since, kill_at } => {
                    if kill_at.is_some_and(|k| now >= k) {
                        *kill_at = None;
                        if let Some(pid) = g.pid {
                            kill.push((gen_id, pid, *since));
                        }
                    }
                }
                Phase::Active { .. } => {}
            }
        }
        for (gen_id, pid, since) in kill {
            if let Some(sd) = &mut self.shutdown {
                sd.killed_any = true;
            }
            out.push(Action::Signal {
                gen_id,
                pid,
                signal: Signal::SIGKILL,
                reason: SignalReason::DrainTimeout { since },
            });
        }
        (promote, not_ready)
    }

    /// `gen_id` was not ready by `--ready-timeout`: it drains, and what
    /// served serves on.
    fn not_ready(&mut self, gen_id: GenId, now: Instant, out: &mut Vec<Action>) {
        let g = &self.gens[&gen_id];
        let notify = self.policy.ready == ReadyRule::Notify;
        let seen = match g
            .listening
            .map(|at| at.saturating_duration_since(g.spawned_at))
        {
            Some(after) if notify => SocketSeen::NotCounted(after),
            Some(after) => SocketSeen::WaitsForReady(after),
            None if notify => SocketSeen::NotLooked,
            None => SocketSeen::Never,
        };
        report(
            out,
            Step::NotReady {
                generation: gen_id,
                timeout: self.policy.ready_timeout,
                sent: g.what_it_sent(),
                seen,
                keeping: self.active(),
            },
        );
        self.drain(gen_id, SignalReason::NotReady, now, out);
        self.keep_serving(now, out);
    }

    /// A cancelled build that overran its grace gets SIGKILL.
    fn tick_build(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(b) = &mut self.build {
            if b.cancel_kill_at.is_some_and(|k| now >= k) {
                b.cancel_kill_at = None;
                if let Some(pid) = b.pid {
                    report(
                        out,
                        Step::BuildKilled {
                            grace: BUILD_CANCEL_GRACE,
                        },
                    );
                    out.push(Action::SignalBuild {
                        pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
        }
    }
}
