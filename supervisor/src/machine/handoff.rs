//! The handoff: a reload spawns the next generation, which becomes active
//! when it is ready (READY=1, the kernel, or a timer: see "Readiness" in
//! the module above); the one it replaces is drained.

use std::time::Instant;

use crate::signal::Signal;
use devsup_protocol::Message;

use super::{
    Action, Generation, Phase, READINESS_PROBE, ReadyRule, SignalReason, State, note, report,
};
use crate::event::{GenId, Trigger};
use crate::step::{Fallback, Into, Note, Rule, Said, Step, us};

impl State {
    pub(super) fn on_reload(
        &mut self,
        trigger: Trigger,
        at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.shutdown.is_some() {
            note(out, None, Note::ReloadDuringShutdown(trigger));
            return;
        }
        if let Some(b) = &mut self.build {
            // The build is building stale sources: start it again.
            b.restart = true;
            b.trigger_at = at;
            let mut signal = Vec::new();
            let first = b.cancel(now, &mut signal);
            report(out, Step::coalesced(&trigger, Into::Build, None, first));
            out.extend(signal);
            return;
        }
        if let Some(starting) = self.starting() {
            let first = self.pending.is_none();
            report(
                out,
                Step::coalesced(&trigger, Into::Queue, Some(starting), first),
            );
            self.pending = Some((trigger, at));
            return;
        }
        report(out, Step::trigger(&trigger, false));
        self.restart_at = None;
        self.begin(at, now, out);
    }

    /// Whether the kernel's word ([`Event::Listening`]) counts a
    /// generation ready now.
    ///
    /// [`Event::Listening`]: crate::event::Event::Listening
    pub(super) fn counts_listening(&self) -> bool {
        match self.policy.ready {
            ReadyRule::Listen => true,
            ReadyRule::Auto => !self.speaks_protocol,
            ReadyRule::Notify => false,
        }
    }

    /// Falls back to counting generations ready after [`READINESS_PROBE`]
    /// of uptime, once per run, saying `why` in a warning.
    pub(super) fn fall_back_to_timer(
        &mut self,
        gen_id: GenId,
        why: Fallback,
        out: &mut Vec<Action>,
    ) {
        if self.fallback_decided || self.ready_after().is_some() {
            return;
        }
        self.fallback_decided = true;
        self.fallback_ready_after = Some(READINESS_PROBE);
        report(
            out,
            Step::FellBack {
                generation: gen_id,
                why,
                after: READINESS_PROBE,
            },
        );
    }

    /// The kernel shows `gen_id` waiting on a passed socket.
    pub(super) fn on_listening(
        &mut self,
        gen_id: GenId,
        how: &str,
        accepted: bool,
        at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let counts = self.counts_listening();
        let Some(g) = self.gens.get_mut(&gen_id) else {
            return;
        };
        if g.listening.is_some() {
            return;
        }
        g.listening = Some(at);
        let took = at.saturating_duration_since(g.spawned_at);
        if g.counted || matches!(g.phase, Phase::Draining { .. }) || !counts {
            let how =
                (!g.counted && !matches!(g.phase, Phase::Draining { .. })).then(|| how.to_owned());
            note(out, Some(gen_id), Note::Waits { after: took, how });
            return;
        }
        g.counted = true;
        // The kernel's two rules: waiting on the socket, or holding a
        // connection accepted from it.
        let rule = if accepted {
            Rule::Accepted
        } else {
            Rule::Listening
        };
        report(
            out,
            Step::Ready {
                generation: gen_id,
                rule,
                ready_us: us(took),
                how: Some(how.to_owned()),
            },
        );
        if matches!(g.phase, Phase::Starting { .. }) {
            self.promote(gen_id, Some(at), now, out);
        }
    }

    /// `/proc` cannot tell for `gen_id`: a timer is all that is left.
    pub(super) fn on_probe_failed(&mut self, gen_id: GenId, why: String, out: &mut Vec<Action>) {
        if let Some(g) = self.gens.get_mut(&gen_id) {
            g.unprobed = true;
        }
        if self.policy.ready == ReadyRule::Notify || self.speaks_protocol {
            note(out, Some(gen_id), Note::CannotProbe(why));
            return;
        }
        if !self.gens.contains_key(&gen_id) {
            return;
        }
        self.fall_back_to_timer(gen_id, Fallback::CannotProbe(why), out);
    }

    /// `gen_id` ignores the passed sockets: said once (also of one counted
    /// ready by its READY=1: puma says it serving a port of its own), and no
    /// timer counts it ready from now on (it cannot serve them).
    pub(super) fn on_ignores_socket(
        &mut self,
        gen_id: GenId,
        closed: bool,
        own: Vec<std::net::SocketAddr>,
        passed: Vec<String>,
        out: &mut Vec<Action>,
    ) {
        let Some(g) = self.gens.get_mut(&gen_id) else {
            return;
        };
        if g.ignores_socket || matches!(g.phase, Phase::Draining { .. }) {
            return;
        }
        g.ignores_socket = true;
        report(
            out,
            Step::IgnoresSocket {
                generation: gen_id,
                closed,
                own,
                passed,
                listen_pid: self.policy.listen_pid,
            },
        );
    }

    pub(super) fn spawn(
        &mut self,
        trigger_at: Option<Instant>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.last_gen += 1;
        let gen_id = self.last_gen;
        // With nobody serving, the new generation is the one connections
        // belong to from the start: there is nothing to hand over from.
        let phase = if self.active().is_none() {
            Phase::Active { since: now }
        } else {
            Phase::Starting {
                deadline: now + self.policy.ready_timeout,
            }
        };
        self.gens.insert(
            gen_id,
            Generation {
                pid: None,
                spawned_at: now,
                said_ready: false,
                sent: Vec::new(),
                listening: None,
                counted: false,
                unprobed: false,
                ignores_socket: false,
                phase,
            },
        );
        out.push(Action::Spawn { gen_id, trigger_at });
        if matches!(phase, Phase::Active { .. }) {
            report(
                out,
                Step::Active {
                    generation: gen_id,
                    replaces: None,
                },
            );
        }
        if self.gens.len() > self.peak {
            self.peak = self.gens.len();
            if self.peak > 2 {
                report(out, Step::Peak { live: self.peak });
            }
        }
    }

    /// The executor has started generation `gen_id` as `pid`.
    pub(super) fn on_spawned(
        &mut self,
        gen_id: GenId,
        pid: i32,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let forced = self.shutdown.is_some_and(|s| s.forced);
        let reason = if self.shutdown.is_some() {
            SignalReason::Shutdown
        } else {
            SignalReason::NotReady
        };
        let drain_timeout = self.policy.drain_timeout;
        let drain_signal = self.policy.drain_signal;
        if let Some(g) = self.gens.get_mut(&gen_id) {
            g.pid = Some(pid);
            // Told to drain before its pid was known (the executor
            // answers Spawn at once, but the machine does not rely
            // on it): the signal goes now, and the drain timeout counts
            // from now, so that it gets all of it; after a second stop
            // request, SIGKILL.
            if let Phase::Draining { kill_at, .. } = &mut g.phase {
                if forced {
                    *kill_at = None;
                    out.push(Action::Signal {
                        gen_id,
                        pid,
                        signal: Signal::SIGKILL,
                        reason: SignalReason::Shutdown,
                    });
                } else {
                    *kill_at = Some(now + drain_timeout);
                    out.push(Action::Signal {
                        gen_id,
                        pid,
                        signal: drain_signal,
                        reason,
                    });
                }
            }
        }
    }

    pub(super) fn on_message(
        &mut self,
        gen_id: GenId,
        msg: Message,
        at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(g) = self.gens.get_mut(&gen_id) {
            g.note_sent(&msg);
        }
        let said = |what| Step::Said {
            generation: gen_id,
            what,
        };
        match msg {
            Message::Ready => self.on_ready(gen_id, at, now, out),
            Message::Status(status) => report(out, said(Said::Status(status))),
            Message::Stopping => report(out, said(Said::Stopping)),
            Message::Reloading => report(out, said(Said::Reloading)),
            Message::Reload => {
                if self.active() == Some(gen_id) || self.starting() == Some(gen_id) {
                    self.on_reload(Trigger::Server(gen_id), at, now, out);
                } else {
                    note(out, Some(gen_id), Note::ReloadWhileDraining);
                }
            }
            // The executor takes MAINPID= (it checks the process against
            // the generation) before the machine would see it.
            Message::MainPid(_) => note(out, Some(gen_id), Note::Unhandled("MAINPID".into())),
            Message::Other { key, .. } => note(out, Some(gen_id), Note::Unhandled(key)),
            // A message devsup-protocol knows and this match does not yet
            // (the enum is non-exhaustive): ignored like any other key.
            other => {
                let line = other.to_string();
                let key = line.split_once('=').map_or(line.as_str(), |(key, _)| key);
                note(out, Some(gen_id), Note::Unhandled(key.to_owned()));
            }
        }
    }

    /// `gen_id` said READY=1 at `at`.
    fn on_ready(&mut self, gen_id: GenId, at: Instant, now: Instant, out: &mut Vec<Action>) {
        let first = !self.speaks_protocol;
        let auto = self.policy.ready == ReadyRule::Auto;
        let Some(g) = self.gens.get_mut(&gen_id) else {
            return;
        };
        if g.said_ready {
            note(out, Some(gen_id), Note::ReadyAgain);
            return;
        }
        g.said_ready = true;
        self.speaks_protocol = true;
        let took = at.saturating_duration_since(g.spawned_at);
        if g.counted {
            // Counted ready already, by the kernel or a timer.
            if first && auto {
                report(
                    out,
                    Step::SpeaksProtocol {
                        generation: gen_id,
                        after: took,
                    },
                );
            }
        } else if matches!(g.phase, Phase::Draining { .. }) {
            note(out, Some(gen_id), Note::ReadyWhileDraining);
        } else {
            g.counted = true;
            let starting = matches!(g.phase, Phase::Starting { .. });
            report(
                out,
                Step::Ready {
                    generation: gen_id,
                    rule: Rule::Notify,
                    ready_us: us(took),
                    how: None,
                },
            );
            if starting {
                self.promote(gen_id, Some(at), now, out);
            }
        }
        if self.fallback_ready_after.take().is_some() {
            report(out, Step::FallbackEnded { generation: gen_id });
        }
    }

    /// `--signal-on`: a signal for the active generation instead of a
    /// reload.
    pub(super) fn signal_active(&mut self, signal: Signal, because: String, out: &mut Vec<Action>) {
        if let Some((gen_id, pid)) = self
            .active()
            .and_then(|a| Some((a, self.gens.get(&a)?.pid?)))
        {
            out.push(Action::Signal {
                gen_id,
                pid,
                signal,
                reason: SignalReason::Route(because),
            });
        } else {
            report(
                out,
                Step::NotSignalled {
                    because,
                    signal: signal.as_str().to_owned(),
                },
            );
        }
    }

    /// `gen_id` (starting) becomes active; the previous active drains.
    pub(super) fn promote(
        &mut self,
        gen_id: GenId,
        ready_at: Option<Instant>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let old = self.active();
        if let Some(g) = self.gens.get_mut(&gen_id) {
            g.phase = Phase::Active { since: now };
            report(
                out,
                Step::Active {
                    generation: gen_id,
                    replaces: old,
                },
            );
        }
        if let Some(old) = old {
            let reason = SignalReason::Handoff {
                successor: gen_id,
                ready_at: ready_at.unwrap_or(now),
            };
            self.drain(old, reason, now, out);
        }
        self.settled(now, out);
    }

    /// A start-up ended (well or not): run the reload that was queued
    /// behind it.
    pub(super) fn settled(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some((trigger, at)) = self.pending.take() {
            report(out, Step::trigger(&trigger, true));
            self.begin(at, now, out);
        }
    }

    /// Tells `gen_id` to drain, once, with a SIGKILL deadline; from now on
    /// it is neither active nor starting.
    pub(super) fn drain(
        &mut self,
        gen_id: GenId,
        reason: SignalReason,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(g) = self.gens.get_mut(&gen_id) else {
            return;
        };
        if matches!(g.phase, Phase::Draining { .. }) {
            return;
        }
        g.phase = Phase::Draining {
            since: now,
            kill_at: Some(now + self.policy.drain_timeout),
        };
        match g.pid {
            Some(pid) => out.push(Action::Signal {
                gen_id,
                pid,
                signal: self.policy.drain_signal,
                reason,
            }),
            None => note(out, Some(gen_id), Note::DrainBeforePid),
        }
    }
}
