//! Shutting down: the first request drains every generation and cancels
//! the build; a second kills them all at once. devsup exits once every
//! generation and the build are gone, with status 1 if any had to be
//! killed.

use std::time::Instant;

use crate::signal::Signal;

use super::{Action, Phase, SignalReason, State, report};
use crate::event::{GenId, StopCause};
use crate::step::Step;

/// A shutdown under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shutdown {
    /// A second request: no more draining.
    pub(super) forced: bool,
    /// Some generation had to be killed.
    pub(super) killed_any: bool,
}

impl State {
    pub(super) fn on_shutdown(&mut self, because: StopCause, now: Instant, out: &mut Vec<Action>) {
        if let Some(sd) = &mut self.shutdown {
            if sd.forced {
                return;
            }
            sd.forced = true;
            sd.killed_any = true;
            report(out, Step::ShutdownForced { cause: because });
            for (&gen_id, g) in &mut self.gens {
                if let Some(pid) = g.pid {
                    out.push(Action::Signal {
                        gen_id,
                        pid,
                        signal: Signal::SIGKILL,
                        reason: SignalReason::Shutdown,
                    });
                }
                if let Phase::Draining { kill_at, .. } = &mut g.phase {
                    *kill_at = None;
                }
            }
            if let Some(b) = &mut self.build {
                if let Some(pid) = b.pid {
                    out.push(Action::SignalBuild {
                        pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
            return;
        }
        self.shutdown = Some(Shutdown {
            forced: false,
            killed_any: false,
        });
        self.pending = None;
        self.restart_at = None;
        report(
            out,
            Step::Shutdown {
                cause: because,
                live: self.gens.len(),
            },
        );
        let ids: Vec<GenId> = self.gens.keys().copied().collect();
        for gen_id in ids {
            self.drain(gen_id, SignalReason::Shutdown, now, out);
        }
        if let Some(b) = &mut self.build {
            b.restart = false;
            b.cancel(now, out);
        }
    }

    pub(super) fn maybe_exit(&mut self, out: &mut Vec<Action>) {
        let Some(sd) = self.shutdown else {
            return;
        };
        if self.gens.is_empty() && self.build.is_none() {
            let code = if sd.killed_any { 1 } else { 0 };
            let peak = self.peak;
            report(out, Step::Stopped { code, peak });
            out.push(Action::Exit(code));
        }
    }
}
