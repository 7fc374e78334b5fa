//! Deadlines: when the state machine wants an [`Event::Tick`], and what a
//! tick does: count a generation ready after `--ready-after`, give up on
//! one that did not say READY in time, SIGKILL a drain or a cancelled build
//! that overran, start a restart that is due.

use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{info, warn};

use super::{BUILD_CANCEL_GRACE, Phase, State};
#[cfg(doc)]
use crate::event::Event;
use crate::event::{Action, SignalReason};
use crate::log::ms;
use crate::step::{Step, us};

impl State {
    /// The earliest time at which a `Tick` is due, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
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
        let ready_after = self.ready_after();
        let mut promote = None;
        let mut not_ready = None;
        let mut kill = Vec::new();
        for (&gen_id, g) in &mut self.gens {
            match &mut g.phase {
                Phase::Starting { deadline } => {
                    if let Some(after) = ready_after.filter(|&a| now >= g.spawned_at + a) {
                        info!(
                            generation = gen_id,
                            "counted ready: up for {} without exiting",
                            ms(after)
                        );
                        out.push(Action::Report(Step::Ready {
                            generation: gen_id,
                            rule: "uptime",
                            ready_us: us(now.duration_since(g.spawned_at)),
                        }));
                        promote = Some(gen_id);
                    } else if now >= *deadline {
                        not_ready = Some(gen_id);
                    }
                }
                Phase::Draining { since, kill_at } => {
                    if kill_at.is_some_and(|k| now >= k) {
                        *kill_at = None;
                        warn!(
                            generation = gen_id,
                            "still running {} after the drain signal: sending SIGKILL to its group",
                            ms(now.duration_since(*since))
                        );
                        if let Some(pid) = g.pid {
                            kill.push((gen_id, pid));
                        }
                    }
                }
                Phase::Active { .. } => {}
            }
        }
        for (gen_id, pid) in kill {
            if let Some(sd) = &mut self.shutdown {
                sd.killed_any = true;
            }
            out.push(Action::Signal {
                gen_id,
                pid,
                signal: Signal::SIGKILL,
                reason: SignalReason::DrainTimeout,
            });
        }
        if let Some(gen_id) = promote {
            self.promote(gen_id, None, now, out);
        }
        if let Some(gen_id) = not_ready {
            let keep = self.keeping();
            let sent = (self.gens.get(&gen_id)).map_or_else(String::new, |g| g.what_it_sent());
            warn!(
                generation = gen_id,
                "not ready after {} (no READY=1; {sent}; raise --ready-timeout if it needs longer): draining it{keep}",
                ms(self.policy.ready_timeout)
            );
            self.drain(gen_id, SignalReason::NotReady, now, out);
            self.keep_serving(now, out);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            if self.idle() {
                info!("restarting");
                out.push(Action::Report(Step::restart()));
                self.begin(now, now, out);
            }
        }
        if let Some(b) = &mut self.build {
            if b.cancel_kill_at.is_some_and(|k| now >= k) {
                b.cancel_kill_at = None;
                if let Some(pid) = b.pid {
                    warn!(
                        "the build ignored SIGTERM for {}: killing its group",
                        ms(BUILD_CANCEL_GRACE)
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
