//! The state machine driven through every failure edge (a generation that
//! exits, fails to spawn, never says READY or overruns its drain; a build
//! that fails or is cancelled; shutdown, forced or not; the readiness
//! fallback; restarts with back-off) on a simulated clock, without a
//! process. These are the rows of the failure table in `docs/design.md`.
//!
//! One long file on purpose: every scenario uses the `Sim`
//! driver at the top, and they read best as one list.

use std::time::{Duration, Instant};

use crate::signal::Signal;
use devsup_protocol::Message;

use super::*;
use crate::event::{Exit, StopCause};
use crate::machine::SignalReason;
use crate::step::{Rule, Step};

const T: Duration = Duration::from_millis(1);

fn policy() -> Policy {
    Policy {
        drain_signal: Signal::SIGTERM,
        drain_timeout: Duration::from_secs(10),
        ready_timeout: Duration::from_secs(60),
        ready_after: None,
        ready: ReadyRule::Auto,
        build_steps: 0,
        listen_pid: false,
    }
}

/// A state machine driven by a fake clock, with helpers that answer `Spawn`
/// the way the executor would.
struct Sim {
    state: State,
    now: Instant,
    next_pid: i32,
    /// Every step reported (`Action::Report`), in order; `feed` returns
    /// the other actions.
    reported: Vec<Step>,
}

impl Sim {
    fn new(policy: Policy) -> Self {
        Sim {
            state: State::new(policy),
            now: Instant::now(),
            next_pid: 100,
            reported: Vec::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Feeds an event; answers every `Spawn` with `Spawned` at once, as the
    /// executor does, keeps the reported steps in `reported` and returns
    /// all other actions.
    fn feed(&mut self, event: Event) -> Vec<Action> {
        let actions = self.step(event);
        let mut rest = Vec::new();
        for a in actions {
            if let Action::Spawn { gen_id, .. } = a {
                self.next_pid += 1;
                let pid = self.next_pid;
                assert!(self.step(Event::Spawned { gen_id, pid }).is_empty());
                rest.push(a);
            } else {
                rest.push(a);
            }
        }
        rest
    }

    /// Steps the machine once; keeps the reported steps in `reported` and
    /// returns the other actions.
    fn step(&mut self, event: Event) -> Vec<Action> {
        let mut rest = Vec::new();
        for a in self.state.step(event, self.now) {
            match a {
                Action::Report(step) => self.reported.push(step),
                a => rest.push(a),
            }
        }
        rest
    }

    /// The steps reported since the last call, by kind
    /// (`docs/events.md`'s `event`) and generation.
    fn take_reported(&mut self) -> Vec<(String, Option<GenId>)> {
        std::mem::take(&mut self.reported)
            .into_iter()
            .filter(Step::on_wire)
            .map(|s| {
                let json = crate::report::Record::now(s.clone()).to_json();
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                (v["event"].as_str().unwrap().to_owned(), s.generation())
            })
            .collect()
    }

    fn reload(&mut self) -> Vec<Action> {
        let at = self.now;
        self.feed(Event::Reload {
            trigger: Trigger::Sighup,
            at,
        })
    }

    fn ready(&mut self, gen_id: GenId) -> Vec<Action> {
        let at = self.now;
        self.feed(Event::Message {
            gen_id,
            msg: Message::Ready,
            at,
        })
    }

    /// The executor's probe saw `gen_id` wait on the socket.
    fn listening(&mut self, gen_id: GenId) -> Vec<Action> {
        let at = self.now;
        self.feed(Event::Listening {
            gen_id,
            how: "pid=1 polls fd 3 with epoll".into(),
            at,
            accepted: false,
        })
    }

    /// Gen 1 spawned (and active), having said nothing yet.
    fn started(policy: Policy) -> Self {
        let mut sim = Sim::new(policy);
        let at = sim.now;
        let a = sim.feed(Event::Reload {
            trigger: Trigger::Startup,
            at,
        });
        assert_eq!(spawned(&a), [1]);
        sim
    }

    fn exited(&mut self, gen_id: GenId, exit: Exit) -> Vec<Action> {
        self.feed(Event::GenExited { gen_id, exit })
    }

    /// Jumps to the next deadline and ticks.
    fn tick(&mut self) -> Vec<Action> {
        let deadline = self.state.next_deadline().expect("a deadline is due");
        if deadline > self.now {
            self.now = deadline;
        }
        self.feed(Event::Tick)
    }

    /// Gen 1 started and ready.
    fn serving(policy: Policy) -> Self {
        let mut sim = Sim::new(policy);
        let at = sim.now;
        let mut a = sim.feed(Event::Reload {
            trigger: Trigger::Startup,
            at,
        });
        for step in 0..sim.state.policy.build_steps {
            assert_eq!(a, [Action::StartBuild { step }]);
            sim.feed(Event::BuildStarted { pid: 50 });
            a = sim.feed(Event::BuildExited {
                exit: Some(Exit::Code(0)),
            });
        }
        assert!(matches!(a[..], [Action::Spawn { gen_id: 1, .. }]), "{a:?}");
        sim.advance(30 * T);
        assert!(sim.ready(1).is_empty());
        assert_eq!(sim.state.active(), Some(1));
        sim
    }
}

fn spawned(actions: &[Action]) -> Vec<GenId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { gen_id, .. } => Some(*gen_id),
            _ => None,
        })
        .collect()
}

fn signals(actions: &[Action]) -> Vec<(GenId, Signal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { gen_id, signal, .. } => Some((*gen_id, *signal)),
            _ => None,
        })
        .collect()
}

#[test]
fn handoff_drains_the_old_generation_only_after_ready() {
    let mut sim = Sim::serving(policy());
    let a = sim.reload();
    assert_eq!(spawned(&a), [2]);
    assert!(signals(&a).is_empty(), "nothing is drained before READY");
    assert_eq!(sim.state.active(), Some(1));

    sim.advance(40 * T);
    let a = sim.ready(2);
    assert_eq!(signals(&a), [(1, Signal::SIGTERM)]);
    let Action::Signal { pid, reason, .. } = &a[0] else {
        unreachable!()
    };
    assert_eq!(*pid, sim.next_pid - 1, "the signal goes to gen 1's group");
    assert!(matches!(reason, SignalReason::Handoff { successor: 2, .. }));
    assert_eq!(sim.state.active(), Some(2));

    assert!(sim.exited(1, Exit::Code(0)).is_empty());
    assert_eq!(sim.state.live_generations(), [2]);
    assert_eq!(sim.state.next_deadline(), None);
}

#[test]
fn exit_before_ready_keeps_the_old_generation() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    let a = sim.exited(2, Exit::Code(1));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(sim.state.active(), Some(1));
    assert_eq!(sim.state.live_generations(), [1]);
    // Nothing is scheduled: the old one serves until the next trigger.
    assert_eq!(sim.state.next_deadline(), None);
    assert_eq!(spawned(&sim.reload()), [3]);
}

#[test]
fn spawn_failure_keeps_the_old_generation() {
    let mut sim = Sim::serving(policy());
    let at = sim.now;
    let a = sim.step(Event::Reload {
        trigger: Trigger::Sighup,
        at,
    });
    assert_eq!(spawned(&a), [2]);
    let a = sim.feed(Event::SpawnFailed {
        gen_id: 2,
        error: "gone".into(),
    });
    assert!(a.is_empty());
    assert_eq!(sim.state.active(), Some(1));
    assert_eq!(sim.state.live_generations(), [1]);
}

#[test]
fn no_ready_within_the_timeout_drains_the_new_generation() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    let spawned_at = sim.now;
    assert_eq!(
        sim.state.next_deadline(),
        Some(spawned_at + Duration::from_secs(60))
    );
    let a = sim.tick();
    // Drained, not killed: it may have accepted connections.
    assert_eq!(signals(&a), [(2, Signal::SIGTERM)]);
    assert_eq!(sim.state.active(), Some(1));
    // And killed only after its own drain timeout.
    let a = sim.tick();
    assert_eq!(sim.now, spawned_at + Duration::from_secs(70));
    assert_eq!(signals(&a), [(2, Signal::SIGKILL)]);
    sim.exited(2, Exit::Signal(Signal::SIGKILL as i32));
    assert_eq!(sim.state.live_generations(), [1]);
}

#[test]
fn triggers_during_startup_coalesce_into_one_more_reload() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    for _ in 0..5 {
        assert!(
            sim.reload().is_empty(),
            "no second generation starts at once"
        );
    }
    let a = sim.ready(2);
    assert_eq!(signals(&a), [(1, Signal::SIGTERM)]);
    assert_eq!(spawned(&a), [3], "exactly one more reload");
    let a = sim.ready(3);
    assert_eq!(signals(&a), [(2, Signal::SIGTERM)]);
    assert!(spawned(&a).is_empty());
}

#[test]
fn a_queued_reload_runs_after_a_failed_start_too() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    sim.reload();
    let a = sim.exited(2, Exit::Code(1));
    assert_eq!(spawned(&a), [3]);
    assert_eq!(sim.state.active(), Some(1));
}

#[test]
fn drain_timeout_kills_the_group() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    sim.ready(2);
    let drained_at = sim.now;
    let a = sim.tick();
    assert_eq!(sim.now, drained_at + Duration::from_secs(10));
    assert_eq!(signals(&a), [(1, Signal::SIGKILL)]);
    assert!(matches!(
        a[0],
        Action::Signal {
            reason: SignalReason::DrainTimeout { .. },
            ..
        }
    ));
    assert_eq!(sim.state.next_deadline(), None, "SIGKILL is sent once");
}

#[test]
fn active_generation_exiting_restarts_with_backoff() {
    let mut sim = Sim::serving(policy());
    let a = sim.exited(1, Exit::Signal(libc::SIGSEGV));
    assert!(a.is_empty());
    let died = sim.now;
    assert_eq!(sim.state.next_deadline(), Some(died + BACKOFF_MIN));
    let a = sim.tick();
    assert_eq!(spawned(&a), [2]);
    // It dies at once again: the delay doubles.
    sim.exited(2, Exit::Code(1));
    assert_eq!(sim.state.next_deadline(), Some(sim.now + 2 * BACKOFF_MIN));
    // A change does not wait for the back-off.
    assert_eq!(spawned(&sim.reload()), [3]);
    assert_eq!(sim.state.next_deadline(), None);
}

#[test]
fn backoff_caps_and_resets_after_a_long_life() {
    let mut sim = Sim::serving(policy());
    let mut gen_id = 1;
    for _ in 0..10 {
        sim.exited(gen_id, Exit::Code(1));
        sim.tick();
        gen_id += 1;
    }
    sim.exited(gen_id, Exit::Code(1));
    assert_eq!(sim.state.next_deadline(), Some(sim.now + BACKOFF_MAX));
    sim.tick();
    gen_id += 1;
    sim.advance(BACKOFF_RESET);
    sim.exited(gen_id, Exit::Code(1));
    assert_eq!(sim.state.next_deadline(), Some(sim.now + BACKOFF_MIN));
}

#[test]
fn active_exit_while_successor_starts_waits_for_the_successor() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    assert!(sim.exited(1, Exit::Code(1)).is_empty());
    let a = sim.ready(2);
    assert!(signals(&a).is_empty(), "nothing left to drain");
    assert_eq!(sim.state.active(), Some(2));
}

#[test]
fn ready_after_counts_an_uptime_as_ready() {
    let mut sim = Sim::serving(Policy {
        ready_after: Some(Duration::from_millis(500)),
        ..policy()
    });
    sim.reload();
    let a = sim.tick();
    assert_eq!(signals(&a), [(1, Signal::SIGTERM)]);
    assert_eq!(sim.state.active(), Some(2));
}

#[test]
fn a_server_that_says_ready_never_falls_back() {
    let mut sim = Sim::serving(policy());
    sim.advance(Duration::from_secs(5));
    sim.reload();
    assert_eq!(
        sim.state.next_deadline(),
        Some(sim.now + Duration::from_secs(60))
    );
}

#[test]
fn server_can_ask_for_its_own_reload() {
    let mut sim = Sim::serving(policy());
    let at = sim.now;
    let a = sim.feed(Event::Message {
        gen_id: 1,
        msg: Message::Reload,
        at,
    });
    assert_eq!(spawned(&a), [2]);
    // A draining generation cannot.
    sim.ready(2);
    let a = sim.feed(Event::Message {
        gen_id: 1,
        msg: Message::Reload,
        at,
    });
    assert!(a.is_empty());
}

#[test]
fn garbage_messages_change_nothing() {
    let mut sim = Sim::serving(policy());
    let at = sim.now;
    for msg in [
        Message::Status("hi".into()),
        Message::Other {
            key: "X".into(),
            value: "y".into(),
        },
        Message::MainPid(1),
        Message::Stopping,
    ] {
        assert!(sim.feed(Event::Message { gen_id: 1, msg, at }).is_empty());
    }
    // Messages from generations devsup does not know are ignored.
    assert!(sim.ready(42).is_empty());
    assert_eq!(sim.state.active(), Some(1));
}

#[test]
fn build_runs_each_step_then_spawns() {
    let mut sim = Sim::new(Policy {
        build_steps: 2,
        ..policy()
    });
    let at = sim.now;
    let a = sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at,
    });
    assert_eq!(a, [Action::StartBuild { step: 0 }]);
    sim.feed(Event::BuildStarted { pid: 50 });
    let a = sim.feed(Event::BuildExited {
        exit: Some(Exit::Code(0)),
    });
    assert_eq!(a, [Action::StartBuild { step: 1 }]);
    sim.feed(Event::BuildStarted { pid: 51 });
    let a = sim.feed(Event::BuildExited {
        exit: Some(Exit::Code(0)),
    });
    assert_eq!(spawned(&a), [1]);
}

#[test]
fn failed_build_keeps_the_old_generation() {
    let mut sim = Sim::serving(Policy {
        build_steps: 1,
        ..policy()
    });
    sim.reload();
    sim.feed(Event::BuildStarted { pid: 50 });
    let a = sim.feed(Event::BuildExited {
        exit: Some(Exit::Code(101)),
    });
    assert!(a.is_empty());
    assert_eq!(sim.state.active(), Some(1));
    assert_eq!(sim.state.next_deadline(), None, "waits for the next change");
    assert_eq!(sim.reload(), [Action::StartBuild { step: 0 }]);
}

#[test]
fn a_change_during_a_build_cancels_and_restarts_it() {
    let mut sim = Sim::serving(Policy {
        build_steps: 1,
        ..policy()
    });
    sim.reload();
    sim.feed(Event::BuildStarted { pid: 50 });
    let a = sim.reload();
    assert_eq!(
        a,
        [Action::SignalBuild {
            pid: 50,
            signal: Signal::SIGTERM
        }]
    );
    assert!(sim.reload().is_empty(), "signalled once");
    let a = sim.feed(Event::BuildExited {
        exit: Some(Exit::Signal(libc::SIGTERM)),
    });
    assert_eq!(a, [Action::StartBuild { step: 0 }]);
}

#[test]
fn a_build_that_ignores_cancel_is_killed() {
    let mut sim = Sim::serving(Policy {
        build_steps: 1,
        ..policy()
    });
    sim.reload();
    sim.feed(Event::BuildStarted { pid: 50 });
    sim.reload();
    let a = sim.tick();
    assert_eq!(
        a,
        [Action::SignalBuild {
            pid: 50,
            signal: Signal::SIGKILL
        }]
    );
}

#[test]
fn signal_on_goes_to_the_active_generation_only() {
    let mut sim = Sim::serving(policy());
    let a = sim.feed(Event::SignalActive {
        signal: Signal::SIGUSR1,
        because: "x.html".into(),
    });
    assert_eq!(signals(&a), [(1, Signal::SIGUSR1)]);
    assert!(spawned(&a).is_empty());
}

#[test]
fn shutdown_drains_everything_and_exits_cleanly() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    let a = sim.feed(Event::Shutdown {
        because: StopCause::Sigint,
    });
    assert_eq!(signals(&a), [(1, Signal::SIGTERM), (2, Signal::SIGTERM)]);
    assert!(sim.reload().is_empty(), "no reload during shutdown");
    assert!(sim.exited(1, Exit::Code(0)).is_empty());
    assert_eq!(sim.exited(2, Exit::Code(0)), [Action::Exit(0)]);
}

#[test]
fn second_shutdown_kills_and_exit_status_says_so() {
    let mut sim = Sim::serving(policy());
    sim.feed(Event::Shutdown {
        because: StopCause::Sigint,
    });
    let a = sim.feed(Event::Shutdown {
        because: StopCause::Sigint,
    });
    assert_eq!(signals(&a), [(1, Signal::SIGKILL)]);
    assert_eq!(
        sim.exited(1, Exit::Signal(Signal::SIGKILL as i32)),
        [Action::Exit(1)]
    );
}

#[test]
fn shutdown_with_nothing_running_exits_at_once() {
    let mut sim = Sim::new(Policy {
        build_steps: 1,
        ..policy()
    });
    let at = sim.now;
    sim.feed(Event::Reload {
        trigger: Trigger::Startup,
        at,
    });
    sim.feed(Event::BuildStarted { pid: 9 });
    let a = sim.feed(Event::Shutdown {
        because: StopCause::Sigint,
    });
    assert_eq!(
        a,
        [Action::SignalBuild {
            pid: 9,
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(
        sim.feed(Event::BuildExited {
            exit: Some(Exit::Signal(15))
        }),
        [Action::Exit(0)]
    );
}

#[test]
fn nothing_serving_after_a_successor_times_out_schedules_a_restart() {
    let mut sim = Sim::serving(policy());
    sim.reload();
    // The active generation dies while its successor starts…
    sim.exited(1, Exit::Signal(libc::SIGSEGV));
    // …and the successor never gets ready: drained, and a new one started.
    let a = sim.tick();
    assert_eq!(signals(&a), [(2, Signal::SIGTERM)]);
    assert_eq!(sim.state.active(), None);
    let restart = sim.state.next_deadline().unwrap();
    assert_eq!(restart, sim.now + BACKOFF_MIN);
    let a = sim.tick();
    assert_eq!(spawned(&a), [3]);
}

#[test]
fn a_drain_decided_before_the_pid_is_known_is_sent_once_it_is() {
    let mut sim = Sim::new(policy());
    let now = sim.now;
    let a = sim.step(Event::Reload {
        trigger: Trigger::Startup,
        at: now,
    });
    assert!(matches!(a[..], [Action::Spawn { gen_id: 1, .. }]));
    let a = sim.step(Event::Shutdown {
        because: StopCause::Sigint,
    });
    assert!(signals(&a).is_empty(), "no pid to signal yet");
    let a = sim.step(Event::Spawned { gen_id: 1, pid: 77 });
    assert!(
        matches!(
            a[..],
            [Action::Signal {
                gen_id: 1,
                pid: 77,
                signal: Signal::SIGTERM,
                ..
            }]
        ),
        "{a:?}"
    );
}

#[test]
fn a_spawn_failure_of_the_only_generation_retries_with_backoff() {
    let mut sim = Sim::new(policy());
    let now = sim.now;
    sim.step(Event::Reload {
        trigger: Trigger::Startup,
        at: now,
    });
    let a = sim.step(Event::SpawnFailed {
        gen_id: 1,
        error: "ENOEXEC".into(),
    });
    assert!(a.is_empty());
    assert_eq!(sim.state.active(), None);
    assert_eq!(sim.state.next_deadline(), Some(now + BACKOFF_MIN));
    // The exit of the child that failed to exec is then ignored.
    assert!(
        sim.step(Event::GenExited {
            gen_id: 1,
            exit: Exit::Code(127)
        })
        .is_empty()
    );
    assert_eq!(
        sim.take_reported(),
        [
            ("trigger".into(), None),
            ("active".into(), Some(1)),
            ("spawn_failed".into(), Some(1)),
        ],
        "nothing is reported of the exit of a generation already gone"
    );
}

#[test]
fn each_decision_is_reported_as_a_step() {
    let mut sim = Sim::serving(policy());
    assert_eq!(
        sim.take_reported(),
        [
            ("trigger".into(), None),
            ("active".into(), Some(1)),
            ("ready".into(), Some(1)),
        ]
    );
    sim.reload();
    // A trigger while gen 2 starts is queued: one coalesced step.
    let at = sim.now;
    sim.feed(Event::Reload {
        trigger: Trigger::Key,
        at,
    });
    // gen 2 ready: promoted, replacing gen 1; then the queued reload runs.
    sim.ready(2);
    sim.exited(1, Exit::Code(0));
    assert_eq!(
        sim.take_reported(),
        [
            ("trigger".into(), None),
            ("coalesced".into(), Some(2)),
            ("ready".into(), Some(2)),
            ("active".into(), Some(2)),
            ("trigger".into(), None),
            ("exited".into(), Some(1)),
        ]
    );
    sim.ready(3);
    let promoted = sim
        .reported
        .iter()
        .find(|s| matches!(s, Step::Active { .. }))
        .cloned();
    assert_eq!(
        promoted,
        Some(Step::Active {
            generation: 3,
            replaces: Some(2)
        })
    );
    sim.reported.clear();
    sim.feed(Event::Shutdown {
        because: StopCause::Sigterm,
    });
    sim.exited(2, Exit::Code(0));
    sim.exited(3, Exit::Code(0));
    let reported = std::mem::take(&mut sim.reported);
    assert_eq!(
        reported[0],
        Step::Shutdown {
            cause: StopCause::Sigterm,
            live: 2
        }
    );
    assert_eq!(reported.last(), Some(&Step::Stopped { code: 0, peak: 3 }));
}

#[test]
fn a_failed_build_is_reported_once_and_a_cancelled_one_as_cancelled() {
    let mut sim = Sim::serving(Policy {
        build_steps: 1,
        ..policy()
    });
    sim.reported.clear();
    sim.reload();
    sim.feed(Event::BuildStarted { pid: 60 });
    sim.reload();
    sim.feed(Event::BuildExited {
        exit: Some(Exit::Signal(Signal::SIGTERM as i32)),
    });
    sim.feed(Event::BuildStarted { pid: 61 });
    sim.feed(Event::BuildExited {
        exit: Some(Exit::Code(101)),
    });
    let finished: Vec<(&str, Option<i32>)> = sim
        .reported
        .iter()
        .filter_map(|s| match s {
            Step::BuildFinished { status, code, .. } => Some((status.word(), *code)),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [("cancelled", None), ("failed", Some(101))]);
    // The machine leaves the output to the executor, which captured it.
    assert!(sim.reported.iter().all(|s| !matches!(
        s,
        Step::BuildFinished {
            output_tail: Some(_),
            ..
        }
    )));
}

// Readiness: READY=1, the kernel, and the timer fallback (see "Readiness" in
// machine/mod.rs).

#[test]
fn the_kernel_counts_a_server_that_does_not_say_ready() {
    let mut sim = Sim::started(policy());
    sim.advance(5 * T);
    assert!(sim.listening(1).is_empty());
    sim.advance(Duration::from_secs(5));
    let a = sim.reload();
    assert_eq!(spawned(&a), [2]);
    sim.advance(4 * T);
    let a = sim.listening(2);
    assert_eq!(signals(&a), [(1, Signal::SIGTERM)]);
    assert!(matches!(
        a[0],
        Action::Signal {
            reason: SignalReason::Handoff { successor: 2, .. },
            ..
        }
    ));
    assert_eq!(sim.state.active(), Some(2));
    // A second sign changes nothing.
    assert!(sim.listening(2).is_empty());
}

/// A generation seen holding a connection it accepted (issue 19: a pool
/// server under load is never seen waiting) is counted ready by the rule
/// `accepted`, and the handoff goes on as for `listening`.
#[test]
fn a_generation_holding_an_accepted_connection_is_ready_by_the_accepted_rule() {
    let mut sim = Sim::started(policy());
    sim.listening(1);
    sim.reload();
    sim.advance(4 * T);
    sim.reported.clear();
    let at = sim.now;
    let a = sim.feed(Event::Listening {
        gen_id: 2,
        how: "pid=7 holds fd 9 from port 8080".into(),
        at,
        accepted: true,
    });
    assert_eq!(signals(&a), [(1, Signal::SIGTERM)]);
    assert_eq!(sim.state.active(), Some(2));
    assert!(
        sim.reported.iter().any(|s| matches!(
            s,
            Step::Ready {
                generation: 2,
                rule: Rule::Accepted,
                ..
            }
        )),
        "{:?}",
        sim.reported
    );
}

#[test]
fn once_the_server_says_ready_handoffs_wait_for_ready() {
    // Gen 1 waited on the socket first, then said READY=1.
    let mut sim = Sim::started(policy());
    sim.advance(2 * T);
    sim.listening(1);
    sim.advance(30 * T);
    sim.ready(1);
    sim.reload();
    // Gen 2 polls the socket before its warm-up is done: not yet ready.
    sim.advance(2 * T);
    assert!(sim.listening(2).is_empty());
    assert_eq!(sim.state.active(), Some(1));
    sim.advance(500 * T);
    assert_eq!(signals(&sim.ready(2)), [(1, Signal::SIGTERM)]);
}

#[test]
fn ready_notify_ignores_the_kernel() {
    let mut sim = Sim::started(Policy {
        ready: ReadyRule::Notify,
        ..policy()
    });
    sim.listening(1);
    sim.reload();
    assert!(sim.listening(2).is_empty());
    // No fallback either: only READY=1 counts, until the ready timeout.
    assert_eq!(
        sim.state.next_deadline(),
        Some(sim.now + Duration::from_secs(60))
    );
    let a = sim.tick();
    assert_eq!(signals(&a), [(2, Signal::SIGTERM)]);
    assert_eq!(sim.state.active(), Some(1));
}

#[test]
fn ready_listen_counts_the_kernel_even_for_a_server_that_says_ready() {
    let mut sim = Sim::serving(Policy {
        ready: ReadyRule::Listen,
        ..policy()
    });
    sim.reload();
    assert_eq!(signals(&sim.listening(2)), [(1, Signal::SIGTERM)]);
    // Its READY=1 afterwards changes nothing.
    assert!(sim.ready(2).is_empty());
}

/// Issue 9, defect 2: `devsup-server --startup-delay 3000
/// --fail-before-ready 2`, SIGHUP at 1.5 s. Gen 1 polls the socket at once
/// and says READY=1 at 3 s; gen 2 sleeps 3 s without polling, then exits.
/// Gen 2 must never be counted ready, and gen 1 never drained.
#[test]
fn a_slow_starter_is_never_counted_ready_early() {
    let mut sim = Sim::started(policy());
    let t0 = sim.now;
    sim.advance(5 * T);
    sim.listening(1);
    sim.now = t0 + Duration::from_millis(1500);
    let a = sim.reload();
    assert_eq!(spawned(&a), [2]);
    // Nothing is due before gen 2's ready timeout.
    assert_eq!(
        sim.state.next_deadline(),
        Some(sim.now + Duration::from_secs(60))
    );
    sim.now = t0 + Duration::from_secs(3);
    assert!(sim.ready(1).is_empty());
    sim.now = t0 + Duration::from_millis(4500);
    assert!(sim.exited(2, Exit::Code(1)).is_empty(), "gen 1 is kept");
    assert_eq!(sim.state.active(), Some(1));
}

/// The same with a server that is slow before it polls at all (3 s), and
/// never says READY=1: each generation is ready when it polls, not before.
#[test]
fn a_server_slow_to_poll_is_ready_when_it_polls() {
    let mut sim = Sim::started(policy());
    let t0 = sim.now;
    sim.now = t0 + Duration::from_millis(1500);
    sim.reload();
    sim.now = t0 + Duration::from_secs(3);
    assert!(sim.listening(1).is_empty(), "gen 1 is already active");
    assert_eq!(
        sim.state.next_deadline(),
        Some(t0 + Duration::from_millis(61_500)),
        "no timer: the kernel shows this server's readiness"
    );
    sim.now = t0 + Duration::from_millis(4500);
    assert_eq!(signals(&sim.listening(2)), [(1, Signal::SIGTERM)]);
}

/// Issue 9, defect 7: `devsup --ready-timeout 3s -- /bin/sleep 100`,
/// SIGHUP at 0.3 s. Gen 1 never says READY=1 nor polls the socket; once it
/// has run --ready-timeout so, devsup falls back to a timer, and gen 2
/// (up for 2.7 s) is counted ready instead of being drained.
#[test]
fn a_reload_early_in_the_life_of_a_server_devsup_cannot_see_ready_is_kept() {
    let policy = Policy {
        ready_timeout: Duration::from_secs(3),
        ..policy()
    };
    let mut sim = Sim::started(policy);
    let t0 = sim.now;
    sim.now = t0 + Duration::from_millis(300);
    sim.reload();
    assert_eq!(sim.state.next_deadline(), Some(t0 + Duration::from_secs(3)));
    let a = sim.tick();
    assert_eq!(signals(&a), [(1, Signal::SIGTERM)], "gen 2 counted ready");
    assert!(matches!(
        a[0],
        Action::Signal {
            reason: SignalReason::Handoff { successor: 2, .. },
            ..
        }
    ));
    assert_eq!(sim.state.active(), Some(2));
    sim.exited(1, Exit::Signal(libc::SIGTERM));
    // From then on, a second of uptime counts.
    sim.reload();
    assert_eq!(sim.state.next_deadline(), Some(sim.now + READINESS_PROBE));
    assert_eq!(signals(&sim.tick()), [(2, Signal::SIGTERM)]);
}

#[test]
fn a_probe_failure_falls_back_to_a_timer_at_once() {
    let mut sim = Sim::started(policy());
    sim.feed(Event::ProbeFailed {
        gen_id: 1,
        why: "/proc/7: permission denied".into(),
    });
    sim.reload();
    assert_eq!(sim.state.next_deadline(), Some(sim.now + READINESS_PROBE));
    assert_eq!(signals(&sim.tick()), [(1, Signal::SIGTERM)]);
}

#[test]
fn a_ready_after_the_fallback_restores_waiting_for_ready() {
    let mut sim = Sim::started(policy());
    sim.feed(Event::ProbeFailed {
        gen_id: 1,
        why: "no /proc".into(),
    });
    sim.reload();
    // Then it turns out the server does say READY.
    sim.ready(2);
    sim.exited(1, Exit::Code(0));
    sim.reload();
    assert_eq!(
        sim.state.next_deadline(),
        Some(sim.now + Duration::from_secs(60))
    );
}

/// A successor that hangs before it polls is drained at the ready timeout
/// when the active one was seen ready: the fallback is evidence about the
/// server, never about a successor.
#[test]
fn a_successor_that_never_polls_is_drained_if_the_active_one_did() {
    let mut sim = Sim::started(policy());
    sim.listening(1);
    sim.reload();
    let a = sim.tick();
    assert_eq!(signals(&a), [(2, Signal::SIGTERM)]);
    assert_eq!(sim.state.active(), Some(1));
}

/// Found by the simulation (seed 58): a generation told to drain before its
/// pid was known got its drain signal only once it was, but its SIGKILL
/// deadline counted from the decision, so it was killed before its drain
/// timeout had passed since the signal.
#[test]
fn a_drain_sent_late_still_gets_the_whole_drain_timeout() {
    let mut state = State::new(policy());
    let t0 = Instant::now();
    state.step(
        Event::Reload {
            trigger: Trigger::Startup,
            at: t0,
        },
        t0,
    );
    state.step(Event::Spawned { gen_id: 1, pid: 10 }, t0);
    state.step(
        Event::Reload {
            trigger: Trigger::Sighup,
            at: t0,
        },
        t0,
    );
    // Gen 2 is spawned, but its pid comes late; a shutdown meanwhile.
    state.step(
        Event::Shutdown {
            because: StopCause::Sigint,
        },
        t0,
    );
    let t1 = t0 + Duration::from_millis(9);
    let a = state.step(Event::Spawned { gen_id: 2, pid: 11 }, t1);
    assert_eq!(signals(&a), [(2, Signal::SIGTERM)]);
    let timeout = policy().drain_timeout;
    let a = state.step(Event::Tick, t0 + timeout);
    assert_eq!(
        signals(&a),
        [(1, Signal::SIGKILL)],
        "gen 2's timeout is not up"
    );
    assert_eq!(state.next_deadline(), Some(t1 + timeout));
    let a = state.step(Event::Tick, t1 + timeout);
    assert_eq!(signals(&a), [(2, Signal::SIGKILL)]);
}

/// The same after a second stop request: a generation whose pid comes
/// after it is killed at once, not sent the drain signal and forgotten.
#[test]
fn a_generation_spawned_after_a_second_stop_request_is_killed() {
    let mut state = State::new(policy());
    let t0 = Instant::now();
    state.step(
        Event::Reload {
            trigger: Trigger::Startup,
            at: t0,
        },
        t0,
    );
    state.step(
        Event::Shutdown {
            because: StopCause::Sigint,
        },
        t0,
    );
    state.step(
        Event::Shutdown {
            because: StopCause::Sigint,
        },
        t0,
    );
    let a = state.step(Event::Spawned { gen_id: 1, pid: 10 }, t0);
    assert_eq!(signals(&a), [(1, Signal::SIGKILL)]);
    let a = state.step(
        Event::GenExited {
            gen_id: 1,
            exit: Exit::Signal(9),
        },
        t0,
    );
    assert_eq!(a.last(), Some(&Action::Exit(1)), "{a:?}");
}

/// The steps of one kind reported since the start, by generation.
fn reported_kind(sim: &Sim, kind: fn(&Step) -> bool) -> Vec<Option<GenId>> {
    sim.reported
        .iter()
        .filter(|s| kind(s))
        .map(Step::generation)
        .collect()
}

#[test]
fn a_server_that_fails_before_it_waited_on_its_socket_is_told_about_listen_pid_once() {
    let never = |s: &Step| matches!(s, Step::NeverWaited { .. });
    let mut sim = Sim::started(policy());
    sim.exited(1, Exit::Code(1));
    assert_eq!(reported_kind(&sim, never), [Some(1)]);
    assert!(matches!(
        sim.reported.last(),
        Some(Step::NeverWaited {
            generation: 1,
            listen_pid: false
        })
    ));
    // The restart fails the same way: said once per run.
    sim.tick();
    sim.exited(2, Exit::Code(1));
    assert_eq!(reported_kind(&sim, never), [Some(1)]);
}

#[test]
fn a_server_seen_waiting_or_exiting_cleanly_or_unprobed_is_not_told_it_never_waited() {
    let never = |s: &Step| matches!(s, Step::NeverWaited { .. });
    // Seen waiting, then crashed.
    let mut sim = Sim::started(policy());
    sim.listening(1);
    sim.exited(1, Exit::Code(1));
    // Exited 0 (a daemon's parent, a script that ended).
    let mut clean = Sim::started(policy());
    clean.exited(1, Exit::Code(0));
    // `/proc` could not tell.
    let mut unprobed = Sim::started(policy());
    unprobed.feed(Event::ProbeFailed {
        gen_id: 1,
        why: "EACCES".into(),
    });
    unprobed.exited(1, Exit::Code(1));
    // `--ready notify` does not probe.
    let mut notify = Sim::started(Policy {
        ready: ReadyRule::Notify,
        ..policy()
    });
    notify.exited(1, Exit::Signal(11));
    for sim in [sim, clean, unprobed, notify] {
        assert!(reported_kind(&sim, never).is_empty(), "{:?}", sim.reported);
    }
}

#[test]
fn a_server_that_ignores_its_socket_is_said_once_and_never_counted_by_a_timer() {
    let ignores = |s: &Step| matches!(s, Step::IgnoresSocket { .. });
    let fell_back = |s: &Step| matches!(s, Step::FellBack { .. });
    let mut sim = Sim::started(policy());
    for _ in 0..2 {
        sim.feed(Event::IgnoresSocket {
            gen_id: 1,
            closed: true,
            own: vec![([0, 0, 0, 0], 9292).into()],
            passed: vec!["127.0.0.1:8080".into()],
        });
    }
    assert_eq!(reported_kind(&sim, ignores), [Some(1)]);
    // Without it, gen 1 would fall back to a timer at --ready-timeout (the
    // test below checks that this is so).
    assert_eq!(sim.state.next_deadline(), None);
    assert!(reported_kind(&sim, fell_back).is_empty());

    let mut unseen = Sim::started(policy());
    unseen.tick();
    assert_eq!(reported_kind(&unseen, fell_back), [Some(1)]);
}
