//! The handoff: a reload spawns the next generation, which becomes active
//! when it is ready (READY=1, the kernel, or a timer: see "Readiness" in
//! the module above); the one it replaces is drained.

use std::time::Instant;

use devsup_protocol::Message;
use nix::sys::signal::Signal;
use tracing::{debug, info, warn};

use super::{Generation, Phase, READINESS_PROBE, ReadyRule, State};
use crate::event::{Action, GenId, SignalReason, Trigger};
use crate::log::ms;
use crate::step::{Step, us};

impl State {
    pub(super) fn on_reload(
        &mut self,
        trigger: Trigger,
        at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.shutdown.is_some() {
            debug!("reload requested by {trigger} during shutdown: ignored");
            return;
        }
        if let Some(b) = &mut self.build {
            out.push(Action::Report(Step::coalesced(&trigger, "build", None)));
            // The build is building stale sources: start it again.
            b.restart = true;
            b.trigger_at = at;
            if b.cancel(now, out) {
                info!(
                    "reload requested by {trigger}: cancelling the running build to start it again"
                );
            }
            return;
        }
        if let Some(starting) = self.starting() {
            out.push(Action::Report(Step::coalesced(
                &trigger,
                "queue",
                Some(starting),
            )));
            if self.pending.is_none() {
                info!("reload requested by {trigger}: queued until gen={starting} has started");
            }
            self.pending = Some((trigger, at));
            return;
        }
        if trigger == Trigger::Startup {
            info!("starting");
        } else {
            info!("reload requested by {trigger}");
        }
        out.push(Action::Report(Step::trigger(&trigger, false)));
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
    pub(super) fn fall_back_to_timer(&mut self, gen_id: GenId, why: &str) {
        if self.fallback_decided || self.ready_after().is_some() {
            return;
        }
        self.fallback_decided = true;
        self.fallback_ready_after = Some(READINESS_PROBE);
        warn!(
            generation = gen_id,
            "this server does not report readiness: {why}; counting each generation ready after {}s of uptime instead. \
             For exact handoffs, send READY=1 once the listener is set up (devsup_protocol::notify_ready()), \
             or pass --ready-after DUR to choose the delay",
            READINESS_PROBE.as_secs()
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
        if g.counted || matches!(g.phase, Phase::Draining { .. }) {
            debug!(
                generation = gen_id,
                "waits on the socket after {}",
                ms(took)
            );
            return;
        }
        if !counts {
            debug!(
                generation = gen_id,
                "waits on the socket after {} ({how}); waiting for READY=1",
                ms(took)
            );
            return;
        }
        g.counted = true;
        // The kernel's two rules: waiting on the socket, or holding a
        // connection accepted from it.
        let (words, rule) = if accepted {
            ("accepted a connection", "accepted")
        } else {
            ("listening", "listening")
        };
        info!(
            generation = gen_id,
            "ready in {} ({words}: {how})",
            ms(took)
        );
        out.push(Action::Report(Step::Ready {
            generation: gen_id,
            rule,
            ready_us: us(took),
        }));
        if matches!(g.phase, Phase::Starting { .. }) {
            self.promote(gen_id, Some(at), now, out);
        }
    }

    /// `/proc` cannot tell for `gen_id`: a timer is all that is left.
    pub(super) fn on_probe_failed(&mut self, gen_id: GenId, why: &str) {
        if self.policy.ready == ReadyRule::Notify || self.speaks_protocol {
            debug!(generation = gen_id, "cannot probe: {why}");
            return;
        }
        if !self.gens.contains_key(&gen_id) {
            return;
        }
        self.fall_back_to_timer(
            gen_id,
            &format!("it has not sent READY=1, and devsup cannot see from /proc whether it waits on its socket ({why})"),
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
                phase,
            },
        );
        out.push(Action::Spawn { gen_id, trigger_at });
        if matches!(phase, Phase::Active { .. }) {
            out.push(Action::Report(Step::Active {
                generation: gen_id,
                replaces: None,
            }));
        }
        if self.gens.len() > self.peak {
            self.peak = self.gens.len();
            if self.peak > 2 {
                info!(
                    "{} generations alive at once, the most so far (the others are draining)",
                    self.peak
                );
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
        match msg {
            Message::Ready => {
                let first = !self.speaks_protocol;
                let Some(g) = self.gens.get_mut(&gen_id) else {
                    return;
                };
                if g.said_ready {
                    debug!(generation = gen_id, "READY=1 again: ignored");
                    return;
                }
                g.said_ready = true;
                self.speaks_protocol = true;
                let took = at.saturating_duration_since(g.spawned_at);
                if g.counted {
                    // Counted ready already, by the kernel or a timer.
                    if first && self.policy.ready == ReadyRule::Auto {
                        info!(
                            generation = gen_id,
                            "sent READY=1 {} after it started: this server reports readiness, so handoffs wait for READY=1 from now on",
                            ms(took)
                        );
                    }
                } else {
                    match g.phase {
                        Phase::Starting { .. } => {
                            g.counted = true;
                            info!(generation = gen_id, "ready in {}", ms(took));
                            out.push(Action::Report(Step::Ready {
                                generation: gen_id,
                                rule: "notify",
                                ready_us: us(took),
                            }));
                            self.promote(gen_id, Some(at), now, out);
                        }
                        Phase::Active { .. } => {
                            g.counted = true;
                            info!(generation = gen_id, "ready in {}", ms(took));
                            out.push(Action::Report(Step::Ready {
                                generation: gen_id,
                                rule: "notify",
                                ready_us: us(took),
                            }));
                        }
                        Phase::Draining { .. } => {
                            debug!(generation = gen_id, "READY=1 while draining: ignored")
                        }
                    }
                }
                if self.fallback_ready_after.take().is_some() {
                    info!(
                        generation = gen_id,
                        "sent READY=1: this server reports readiness after all, so handoffs wait for READY again"
                    );
                }
            }
            Message::Status(status) => info!(generation = gen_id, "status: {status}"),
            Message::Stopping => info!(generation = gen_id, "stopping"),
            Message::Reloading => info!(generation = gen_id, "reloading its configuration"),
            Message::Reload => {
                if self.active() == Some(gen_id) || self.starting() == Some(gen_id) {
                    self.on_reload(Trigger::Server(gen_id), at, now, out);
                } else {
                    debug!(
                        generation = gen_id,
                        "DEVSUP_RELOAD=1 from a draining generation: ignored"
                    );
                }
            }
            // The loop hands MAINPID= to the executor (which checks the
            // process against the generation) before the machine sees it.
            Message::MainPid(pid) => debug!(generation = gen_id, "MAINPID={pid}: noted"),
            Message::Other { key, .. } => debug!(generation = gen_id, "{key}=…: ignored"),
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
            info!("{because}: no generation running to send {signal} to");
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
            out.push(Action::Report(Step::Active {
                generation: gen_id,
                replaces: old,
            }));
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
            info!("starting the reload queued by {trigger}");
            out.push(Action::Report(Step::trigger(&trigger, true)));
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
            None => debug!(generation = gen_id, "draining before its pid is known"),
        }
    }
}
