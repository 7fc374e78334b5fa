//! A randomized simulation of the state machine (issue 9): long random
//! sequences of every event, fed to [`State::step`] on a simulated clock
//! by a model of the world around it (the executor and the processes), with
//! the machine's invariants checked after every step.
//!
//! The world answers actions the way the executor and real processes can:
//! a `Spawn` is answered with `Spawned` (at once, or a little later) or
//! `SpawnFailed`; a spawned generation may crash, fail to exec, say READY,
//! be seen waiting on its socket, exit when told to drain or ignore it
//! until SIGKILL; a build step succeeds, fails or cannot start. On top of
//! that come triggers of every kind, `--signal-on` changes, probe failures,
//! garbage messages, shutdown requests (once or twice) and ticks.
//!
//! Checked after every step:
//!
//! - at most one generation is starting and at most one is active;
//! - no generation gets SIGKILL before its drain timeout has passed since
//!   its drain signal, except after a second shutdown request;
//! - the active generation is drained only for a successor that is alive
//!   and was counted ready by a documented rule (READY=1, the kernel's sign
//!   where `--ready` lets it count, or a timer), or on shutdown; never
//!   because a successor failed;
//! - every signal goes to the generation's own process group.
//!
//! And at the end of each sequence, after the world settles (builds
//! succeed, deadlines pass): every trigger was answered, by a generation
//! spawned after it or a reason (a failed build, a shutdown); then, after a
//! shutdown, every generation was told to drain (or killed on the second
//! request), all are gone, and devsup exits with 0, or 1 if one had to be
//! killed.
//!
//! Deterministic: sequence `i` uses seed `i` (a splitmix64 generator).
//! `DEVSUP_SIM_SEED=S` runs one seed; `DEVSUP_SIM_RUNS=N` runs more. A
//! failing seed is printed, and becomes a named test in `tests.rs`.
//!
//! One long file on purpose: the model of the world, the event
//! generator and the invariant checks read as one argument, and each
//! invariant relies on what the model keeps.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::signal::Signal;
use devsup_protocol::Message;

use super::*;
use crate::event::{Exit, StopCause};
use crate::machine::SignalReason;

/// splitmix64: small, fast and good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What the world knows of one generation.
#[derive(Debug, Clone)]
struct Proc {
    pid: Option<i32>,
    spawned_at: Instant,
    /// Its process group is alive (spawned and not yet reported gone).
    alive: bool,
    /// When it got the drain signal.
    drain_at: Option<Instant>,
    /// It exits when told to drain (else it waits for SIGKILL).
    obeys_drain: bool,
    /// It was counted ready by a rule the world can vouch for.
    ready_evidence: bool,
}

/// Something the world will report later.
#[derive(Debug, Clone)]
enum Later {
    Spawned(GenId),
    Exited(GenId, Exit),
}

struct World {
    rng: Rng,
    state: State,
    policy: Policy,
    now: Instant,
    next_pid: i32,
    procs: BTreeMap<GenId, Proc>,
    later: VecDeque<(Instant, Later)>,
    build_pid: Option<i32>,
    /// A build was asked for and not yet answered.
    build_asked: bool,
    /// Some generation of this run said READY=1 (while the machine knew it).
    speaks: bool,
    /// Triggers not yet answered.
    outstanding: bool,
    shutdowns: u32,
    killed_in_shutdown: bool,
    exit: Option<u8>,
    log: Vec<String>,
    /// How often each kind of event and action occurred, to check that the
    /// sequences reach every edge.
    seen: BTreeMap<String, u64>,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let policy = Policy {
            drain_signal: rng.pick(&[Signal::SIGTERM, Signal::SIGINT]),
            drain_timeout: Duration::from_millis(rng.pick(&[300, 1000, 10_000])),
            ready_timeout: Duration::from_millis(rng.pick(&[500, 3000, 60_000])),
            ready_after: rng.pick(&[None, None, None, Some(Duration::from_millis(200))]),
            ready: rng.pick(&[
                ReadyRule::Auto,
                ReadyRule::Auto,
                ReadyRule::Notify,
                ReadyRule::Listen,
            ]),
            build_steps: rng.pick(&[0, 0, 1, 2]),
            listen_pid: rng.pick(&[false, true]),
        };
        World {
            rng,
            state: State::new(policy.clone()),
            policy,
            now: Instant::now(),
            next_pid: 1000,
            procs: BTreeMap::new(),
            later: VecDeque::new(),
            build_pid: None,
            build_asked: false,
            speaks: false,
            outstanding: false,
            shutdowns: 0,
            killed_in_shutdown: false,
            exit: None,
            log: Vec::new(),
            seen: BTreeMap::new(),
        }
    }

    /// Feeds one event, carries out the actions as the world would, and
    /// checks the invariants.
    fn feed(&mut self, event: Event) {
        if self.exit.is_some() {
            return;
        }
        self.log.push(format!(
            "{:?} +{:?}: {event:?}",
            self.policy.ready,
            self.elapsed()
        ));
        let active_before = self.state.active();
        let starting_before = self.state.starting();
        let fallback_before = self.state.fallback_ready_after;
        let forced_before = self.state.shutdown.is_some_and(|s| s.forced);
        if let Event::Reload { .. } = &event {
            if self.state.shutdown.is_none() {
                self.outstanding = true;
            }
        }
        let actions = self.state.step(event.clone(), self.now);
        self.log.push(format!("  -> {actions:?}"));
        let kind = format!("{event:?}");
        *self.seen.entry(kind_of(&kind)).or_default() += 1;
        for a in &actions {
            let kind = match a {
                Action::Signal { signal, reason, .. } => {
                    format!("Signal {signal} {}", kind_of(&format!("{reason:?}")))
                }
                Action::Exit(code) => format!("Exit({code})"),
                other => kind_of(&format!("{other:?}")),
            };
            *self.seen.entry(kind).or_default() += 1;
        }
        if self.state.fallback_ready_after.is_some() {
            *self.seen.entry("fallback to a timer".into()).or_default() += 1;
        }
        let forced = self.state.shutdown.is_some_and(|s| s.forced);
        // A timer fallback decided in this very step counts too (the
        // evidence came in with this tick).
        let fallback = fallback_before.or(self.state.fallback_ready_after);
        if forced && !forced_before {
            // The second request kills whatever is left (the build too):
            // documented as exit status 1.
            self.killed_in_shutdown = true;
        }
        if self.state.shutdown.is_some() {
            // A shutdown answers every trigger: no more reloads.
            self.outstanding = false;
        }
        for action in actions {
            self.carry_out(
                action,
                active_before,
                starting_before,
                fallback,
                forced_before || forced,
            );
        }
        // A build that failed (or could not start) and is not started again
        // answers the trigger with its error.
        if let Event::BuildExited { exit } = event {
            if self.state.build.is_none() && !exit.is_some_and(Exit::success) {
                self.outstanding = false;
            }
        }
        self.check_counts();
    }

    fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start_time())
    }

    fn start_time(&self) -> Instant {
        // The world's clock starts at the first generation, or now.
        self.procs
            .values()
            .map(|p| p.spawned_at)
            .min()
            .unwrap_or(self.now)
            .min(self.now)
    }

    fn carry_out(
        &mut self,
        action: Action,
        active_before: Option<GenId>,
        starting_before: Option<GenId>,
        fallback_before: Option<Duration>,
        forced: bool,
    ) {
        match action {
            // What the executor publishes; the machine's tests check the
            // steps themselves.
            Action::Report(_) => {}
            Action::Spawn { gen_id, .. } => {
                self.outstanding = false;
                assert!(
                    !self.procs.contains_key(&gen_id),
                    "gen {gen_id} spawned twice"
                );
                self.procs.insert(
                    gen_id,
                    Proc {
                        pid: None,
                        spawned_at: self.now,
                        alive: false,
                        drain_at: None,
                        obeys_drain: self.rng.chance(80),
                        ready_evidence: false,
                    },
                );
                match self.rng.below(10) {
                    0 => self.later(Duration::ZERO, Later::Spawned(gen_id)),
                    1 => {
                        self.procs.remove(&gen_id);
                        self.feed(Event::SpawnFailed {
                            gen_id,
                            error: "cannot run".into(),
                        })
                    }
                    _ => self.spawned(gen_id),
                }
            }
            Action::Signal {
                gen_id,
                pid,
                signal,
                reason,
            } => {
                let p = self
                    .procs
                    .get(&gen_id)
                    .unwrap_or_else(|| {
                        panic!("signal to gen {gen_id}, which the world does not know")
                    })
                    .clone();
                assert_eq!(
                    p.pid,
                    Some(pid),
                    "signal to the wrong group for gen {gen_id}"
                );
                if signal == Signal::SIGKILL {
                    match reason {
                        SignalReason::DrainTimeout { .. } => {
                            let drain_at = p.drain_at.unwrap_or_else(|| {
                                panic!(
                                    "gen {gen_id} killed at a drain timeout without a drain signal"
                                )
                            });
                            assert!(
                                self.now.duration_since(drain_at) >= self.policy.drain_timeout,
                                "gen {gen_id} killed {:?} after its drain signal, before the drain timeout {:?}",
                                self.now.duration_since(drain_at),
                                self.policy.drain_timeout
                            );
                            if self.state.shutdown.is_some() {
                                self.killed_in_shutdown = true;
                            }
                        }
                        SignalReason::Shutdown => {
                            assert!(
                                forced,
                                "gen {gen_id} killed on shutdown without a second request"
                            );
                            self.killed_in_shutdown = true;
                        }
                        other => panic!("gen {gen_id} killed for {other:?}"),
                    }
                    if p.alive {
                        let delay = Duration::from_millis(self.rng.below(5));
                        self.later(delay, Later::Exited(gen_id, Exit::Signal(9)));
                    }
                    return;
                }
                if let SignalReason::Route(_) = reason {
                    assert_eq!(
                        active_before,
                        Some(gen_id),
                        "--signal-on to a generation that is not active"
                    );
                    return;
                }
                assert_eq!(signal, self.policy.drain_signal);
                match &reason {
                    SignalReason::Handoff { successor, .. } => {
                        assert_eq!(
                            active_before,
                            Some(gen_id),
                            "handoff drains gen {gen_id}, which was not the active one"
                        );
                        assert_eq!(starting_before, Some(*successor));
                        let s = &self.procs[successor];
                        let up = self.now.duration_since(s.spawned_at);
                        let by_timer = self.policy.ready_after.is_some_and(|a| up >= a)
                            || fallback_before.is_some_and(|a| up >= a);
                        assert!(
                            s.ready_evidence || by_timer,
                            "gen {gen_id} drained for gen {successor}, which was not counted ready by any rule (up {up:?})"
                        );
                        assert!(
                            s.alive || s.pid.is_none(),
                            "gen {gen_id} drained for a dead successor"
                        );
                    }
                    SignalReason::NotReady => {
                        assert_ne!(
                            active_before,
                            Some(gen_id),
                            "the active generation drained as not ready"
                        );
                    }
                    SignalReason::Shutdown => {
                        assert!(
                            self.state.shutdown.is_some(),
                            "shutdown drain without a shutdown"
                        );
                    }
                    other => panic!("drain signal for {other:?}"),
                }
                let p = self.procs.get_mut(&gen_id).expect("known");
                if p.drain_at.is_none() {
                    p.drain_at = Some(self.now);
                }
                if p.obeys_drain && p.alive {
                    let delay = Duration::from_millis(self.rng.pick(&[0, 5, 50, 400]));
                    self.later(delay, Later::Exited(gen_id, Exit::Code(0)));
                }
            }
            Action::StartBuild { .. } => {
                self.build_asked = true;
                if self.rng.chance(5) {
                    self.build_asked = false;
                    self.feed(Event::BuildExited { exit: None });
                } else {
                    self.next_pid += 1;
                    self.build_pid = Some(self.next_pid);
                    self.build_asked = false;
                    let pid = self.next_pid;
                    self.feed(Event::BuildStarted { pid });
                }
            }
            Action::SignalBuild { pid, .. } => {
                assert_eq!(
                    self.build_pid,
                    Some(pid),
                    "signal to a build that is not running"
                );
            }
            Action::Exit(code) => {
                self.exit = Some(code);
            }
        }
    }

    fn later(&mut self, delay: Duration, what: Later) {
        self.later.push_back((self.now + delay, what));
    }

    fn spawned(&mut self, gen_id: GenId) {
        let Some(p) = self.procs.get_mut(&gen_id) else {
            return;
        };
        self.next_pid += 1;
        p.pid = Some(self.next_pid);
        p.alive = true;
        let pid = self.next_pid;
        self.feed(Event::Spawned { gen_id, pid });
    }

    fn check_counts(&self) {
        let count =
            |f: fn(&Phase) -> bool| self.state.gens.values().filter(|g| f(&g.phase)).count();
        assert!(
            count(|p| matches!(p, Phase::Active { .. })) <= 1,
            "two active"
        );
        assert!(
            count(|p| matches!(p, Phase::Starting { .. })) <= 1,
            "two starting"
        );
    }

    /// A generation the world may act for: spawned and alive.
    fn some_live(&mut self) -> Option<GenId> {
        let live: Vec<GenId> = self
            .procs
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(&g, _)| g)
            .collect();
        (!live.is_empty()).then(|| self.rng.pick(&live))
    }

    /// One random thing happens.
    fn random_event(&mut self) {
        let at = self.now;
        match self.rng.below(100) {
            0..=14 => {
                let trigger = match self.rng.below(4) {
                    0 => Trigger::Sighup,
                    1 => Trigger::Key,
                    2 => Trigger::Files {
                        first: "src/main.rs".into(),
                        more: self.rng.below(3) as usize,
                    },
                    _ => match self.state.active() {
                        Some(a) => {
                            // DEVSUP_RELOAD=1 from the active generation.
                            self.outstanding |= self.state.shutdown.is_none();
                            return self.feed(Event::Message {
                                gen_id: a,
                                msg: Message::Reload,
                                at,
                            });
                        }
                        None => Trigger::Sighup,
                    },
                };
                self.feed(Event::Reload { trigger, at });
            }
            15..=29 => {
                if let Some(gen_id) = self.some_live() {
                    if self.state.gens.contains_key(&gen_id) {
                        self.speaks = true;
                    }
                    self.procs.get_mut(&gen_id).expect("live").ready_evidence = true;
                    self.feed(Event::Message {
                        gen_id,
                        msg: Message::Ready,
                        at,
                    });
                }
            }
            30..=41 => {
                if let Some(gen_id) = self.some_live() {
                    let counts = match self.policy.ready {
                        ReadyRule::Listen => true,
                        ReadyRule::Auto => !self.speaks,
                        ReadyRule::Notify => false,
                    };
                    if counts
                        && self
                            .state
                            .gens
                            .get(&gen_id)
                            .is_some_and(|g| g.listening.is_none())
                    {
                        self.procs.get_mut(&gen_id).expect("live").ready_evidence = true;
                    }
                    self.feed(Event::Listening {
                        gen_id,
                        how: "pid=1 polls fd 3 with epoll".into(),
                        at,
                        accepted: false,
                    });
                }
            }
            42..=44 => {
                if let Some(gen_id) = self.some_live() {
                    if self.rng.chance(50) {
                        let closed = self.rng.chance(50);
                        self.feed(Event::IgnoresSocket {
                            gen_id,
                            closed,
                            own: vec![([127, 0, 0, 1], 9292).into()],
                            passed: vec!["127.0.0.1:8080".into()],
                        });
                    } else {
                        self.feed(Event::ProbeFailed {
                            gen_id,
                            why: "/proc/1: permission denied".into(),
                        });
                    }
                }
            }
            45..=54 => {
                // A crash (or an exec failure) of any live generation.
                if let Some(gen_id) = self.some_live() {
                    let p = self.procs.get_mut(&gen_id).expect("live");
                    p.alive = false;
                    if self.rng.chance(20) {
                        self.feed(Event::SpawnFailed {
                            gen_id,
                            error: "cannot run ./server: Exec format error".into(),
                        });
                    } else {
                        let exit = self
                            .rng
                            .pick(&[Exit::Code(1), Exit::Signal(11), Exit::Code(0)]);
                        self.feed(Event::GenExited { gen_id, exit });
                    }
                }
            }
            55..=62 => {
                if let Some(pid) = self.build_pid.take() {
                    let _ = pid;
                    let exit = self.rng.pick(&[
                        Some(Exit::Code(0)),
                        Some(Exit::Code(0)),
                        Some(Exit::Code(101)),
                        Some(Exit::Signal(15)),
                    ]);
                    self.feed(Event::BuildExited { exit });
                }
            }
            63..=64 => {
                let gen_id = self.rng.below(self.state.last_gen + 2);
                let msg = self.rng.pick(&[0, 1, 2]);
                let msg = match msg {
                    0 => Message::Status("hi".into()),
                    1 => Message::Stopping,
                    _ => Message::Ready,
                };
                // Unknown or already-gone generations: must change nothing
                // the world can see. A READY from a live one is the case
                // above, so only gone ones here.
                if self
                    .procs
                    .get(&gen_id)
                    .is_some_and(|p| p.alive || p.pid.is_none())
                {
                    return;
                }
                self.feed(Event::Message { gen_id, msg, at });
            }
            65..=66 => self.feed(Event::SignalActive {
                signal: Signal::SIGUSR1,
                because: "change to templates/a.html".into(),
            }),
            67..=68 => {
                if self.rng.chance(30) || self.shutdowns > 0 {
                    self.shutdowns += 1;
                    self.feed(Event::Shutdown {
                        because: StopCause::Sigint,
                    });
                }
            }
            69..=84 => self.deliver_due(),
            _ => self.tick(),
        }
    }

    /// Advances the clock, to the next deadline or by a random step, and
    /// delivers what is due.
    fn tick(&mut self) {
        let step = match self.rng.below(4) {
            0 => self
                .state
                .next_deadline()
                .map_or(Duration::ZERO, |d| d.saturating_duration_since(self.now)),
            1 => Duration::from_millis(self.rng.below(10)),
            2 => Duration::from_millis(self.rng.below(600)),
            _ => Duration::from_millis(self.rng.below(12_000)),
        };
        self.now += step;
        if self.state.next_deadline().is_some_and(|d| d <= self.now) || self.rng.chance(10) {
            self.feed(Event::Tick);
        }
        self.deliver_due();
    }

    fn deliver_due(&mut self) {
        let (due, rest): (Vec<_>, Vec<_>) = self.later.drain(..).partition(|(t, _)| *t <= self.now);
        self.later = rest.into();
        for (_, what) in due {
            match what {
                Later::Spawned(gen_id) => self.spawned(gen_id),
                Later::Exited(gen_id, exit) => {
                    if let Some(p) = self.procs.get_mut(&gen_id) {
                        if p.alive {
                            p.alive = false;
                            self.feed(Event::GenExited { gen_id, exit });
                        }
                    }
                }
            }
        }
    }

    /// Lets the world settle with no new trouble: builds succeed, what was
    /// scheduled happens, deadlines pass. Returns once nothing is left to
    /// happen (or after a bound, which fails the run).
    fn settle(&mut self) {
        for _ in 0..2000 {
            if self.exit.is_some() {
                return;
            }
            if self.build_pid.take().is_some() {
                self.feed(Event::BuildExited {
                    exit: Some(Exit::Code(0)),
                });
                continue;
            }
            if let Some(t) = self.later.iter().map(|(t, _)| *t).min() {
                self.now = self.now.max(t);
                self.deliver_due();
                continue;
            }
            match self.state.next_deadline() {
                Some(d) => {
                    self.now = self.now.max(d);
                    self.feed(Event::Tick);
                }
                None => return,
            }
        }
        panic!("the world did not settle");
    }

    fn run(&mut self, steps: usize) {
        let at = self.now;
        self.outstanding = true;
        self.feed(Event::Reload {
            trigger: Trigger::Startup,
            at,
        });
        for _ in 0..steps {
            if self.exit.is_some() {
                break;
            }
            self.random_event();
        }
        self.settle();
        assert!(!self.outstanding, "a trigger was never answered");
        // Then shut down, if not already, and check how devsup ends.
        if self.exit.is_none() {
            if self.state.shutdown.is_none() {
                self.shutdowns += 1;
                self.feed(Event::Shutdown {
                    because: StopCause::Sigterm,
                });
            }
            self.settle();
        }
        let code = self
            .exit
            .expect("devsup exits once every generation is gone");
        assert!(self.state.gens.is_empty(), "exit with generations alive");
        for (gen_id, p) in &self.procs {
            assert!(!p.alive, "gen {gen_id} still alive at exit");
        }
        let want = u8::from(self.killed_in_shutdown);
        assert_eq!(code, want, "exit status");
    }
}

/// The variant name at the start of a `Debug` string.
fn kind_of(debug: &str) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Runs the sequence of `seed`; on failure, prints the seed and the last
/// steps, then fails. Returns what it saw.
fn run_seed(seed: u64, steps: usize) -> BTreeMap<String, u64> {
    let mut world = World::new(seed);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run(steps)));
    if let Err(panic) = result {
        let tail: Vec<&String> = world.log.iter().rev().take(40).collect();
        eprintln!(
            "simulation seed {seed} failed ({:?}); last steps:",
            world.policy
        );
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        eprintln!("rerun: DEVSUP_SIM_SEED={seed} cargo test -p devsup simulation");
        std::panic::resume_unwind(panic);
    }
    world.seen
}

#[test]
fn simulation_keeps_every_invariant() {
    if let Some(seed) = std::env::var("DEVSUP_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("simulation seed {seed}: {:?}", run_seed(seed, 400));
        return;
    }
    let runs = std::env::var("DEVSUP_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let started = std::time::Instant::now();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for seed in 0..runs {
        for (kind, n) in run_seed(seed, 400) {
            *seen.entry(kind).or_default() += n;
        }
    }
    eprintln!(
        "simulation: {runs} sequences of up to 400 events in {:?}; seen: {seen:?}",
        started.elapsed()
    );
    // The sequences reach every edge the invariants are about.
    for kind in [
        "Reload",
        "Message",
        "Listening",
        "ProbeFailed",
        "IgnoresSocket",
        "Spawned",
        "SpawnFailed",
        "GenExited",
        "BuildStarted",
        "BuildExited",
        "SignalActive",
        "Shutdown",
        "Tick",
        "Spawn",
        "StartBuild",
        "SignalBuild",
        "Exit(0)",
        "Exit(1)",
        "Signal SIGTERM Handoff",
        "Signal SIGTERM NotReady",
        "Signal SIGTERM Shutdown",
        "Signal SIGKILL DrainTimeout",
        "Signal SIGKILL Shutdown",
        "Signal SIGUSR1 Route",
        "fallback to a timer",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no sequence reached {kind}: {seen:?}"
        );
    }
}
