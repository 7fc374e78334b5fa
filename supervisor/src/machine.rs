//! The decision logic: a pure function of (state, event, now) to actions.
//!
//! Nothing here touches a process, a file or a clock; [`crate::supervisor`]
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
//! 3. N+1 says `READY=1` (or has stayed up `--ready-after`): it becomes
//!    *active* and N gets the drain signal (*draining*), with a kill deadline.
//! 4. N's whole process group is gone (`GenExited`): it is forgotten.
//!
//! At most one generation is starting at a time; triggers that arrive while
//! one starts coalesce into one more reload, started when it settles.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use devsup_protocol::Message;
use nix::sys::signal::Signal;
use tracing::{debug, error, info, warn};

use crate::report::{Reporter, Step, us};

/// A generation number: 1, 2, 3, …
pub type GenId = u64;

/// How long a generation must have been up, without ever saying `READY=1`,
/// before devsup concludes that the server does not report readiness.
pub const READINESS_PROBE: Duration = Duration::from_secs(1);
/// First restart delay after the active generation exits on its own.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A generation that stays up this long resets the restart delay.
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long a cancelled build gets to exit before its group is killed.
pub const BUILD_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// What the decisions depend on, from the command line.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Sent to a generation's group to drain it.
    pub drain_signal: Signal,
    /// After this long draining, the group gets SIGKILL.
    pub drain_timeout: Duration,
    /// How long a starting generation has to say READY.
    pub ready_timeout: Duration,
    /// Count a generation ready once it has stayed up this long.
    pub ready_after: Option<Duration>,
    /// Number of build steps run before each generation.
    pub build_steps: usize,
}

/// Why a reload happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// devsup has just started.
    Startup,
    /// SIGHUP.
    Sighup,
    /// `r` + Enter in the terminal.
    Key,
    /// The active generation sent `DEVSUP_RELOAD=1`.
    Server(GenId),
    /// Watched files changed.
    Files {
        /// One of the changed paths.
        first: PathBuf,
        /// How many more changed.
        more: usize,
    },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Startup => f.write_str("startup"),
            Trigger::Sighup => f.write_str("SIGHUP"),
            Trigger::Key => f.write_str("key press"),
            Trigger::Server(gen_id) => write!(f, "gen={gen_id}"),
            Trigger::Files { first, more: 0 } => write!(f, "change to {}", first.display()),
            Trigger::Files { first, more } => {
                write!(f, "change to {} (+{more} more)", first.display())
            }
        }
    }
}

/// How a process (group) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// Exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "with status {code}"),
            Exit::Signal(sig) => match Signal::try_from(sig) {
                Ok(sig) => write!(f, "by {sig}"),
                Err(_) => write!(f, "by signal {sig}"),
            },
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start a new generation (through the build, if any).
    Reload {
        /// Why.
        trigger: Trigger,
        /// When the trigger was seen, for the trigger→spawn figure.
        at: Instant,
    },
    /// A message from a generation.
    Message {
        /// From which generation.
        gen_id: GenId,
        /// The message.
        msg: Message,
        /// When it was read.
        at: Instant,
    },
    /// The `Spawn` action succeeded.
    Spawned {
        /// Generation.
        gen_id: GenId,
        /// Its pid, which is its process group id.
        pid: i32,
    },
    /// The `Spawn` action failed (the program could not be run).
    SpawnFailed {
        /// Generation.
        gen_id: GenId,
        /// Why, in one line.
        error: String,
    },
    /// A generation's whole process group is gone.
    GenExited {
        /// Generation.
        gen_id: GenId,
        /// How its leader ended.
        exit: Exit,
    },
    /// The `StartBuild` action started a build step.
    BuildStarted {
        /// Its pid, which is its process group id.
        pid: i32,
    },
    /// A build step's process group is gone, or it could not start.
    BuildExited {
        /// How it ended; `None` if it could not be started.
        exit: Option<Exit>,
    },
    /// Send a signal to the active generation instead of reloading
    /// (`--signal-on`).
    SignalActive {
        /// The signal.
        signal: Signal,
        /// Why, for the log.
        because: String,
    },
    /// SIGINT, SIGTERM, or `q` + Enter.
    Shutdown {
        /// What asked for it, for the log.
        because: String,
    },
    /// A deadline from [`State::next_deadline`] passed.
    Tick,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start generation `gen_id`; answer with `Spawned` or `SpawnFailed`.
    Spawn {
        /// Generation.
        gen_id: GenId,
        /// When its trigger was seen.
        trigger_at: Option<Instant>,
    },
    /// Send `signal` to generation `gen_id`'s process group.
    Signal {
        /// Generation.
        gen_id: GenId,
        /// Its process group.
        pid: i32,
        /// The signal.
        signal: Signal,
        /// Why: a drain after the given generation said READY at the given
        /// time, or another reason.
        reason: SignalReason,
    },
    /// Run build step `step` (0-based); answer with `BuildStarted` or
    /// `BuildExited { exit: None }`.
    StartBuild {
        /// Step index.
        step: usize,
    },
    /// Send a signal to the running build's process group.
    SignalBuild {
        /// Its process group.
        pid: i32,
        /// The signal.
        signal: Signal,
    },
    /// Exit devsup with this status.
    Exit(u8),
}

/// Why a signal is sent, for its log line.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalReason {
    /// Handoff: the successor said READY at this time.
    Handoff {
        /// The successor.
        successor: GenId,
        /// When its READY was read.
        ready_at: Instant,
    },
    /// It did not become ready in time.
    NotReady,
    /// devsup is shutting down.
    Shutdown,
    /// The drain timeout passed (the signal is SIGKILL).
    DrainTimeout,
    /// `--signal-on`.
    Route(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Spawned, waiting for READY; may already accept.
    Starting {
        /// Give up at this time.
        deadline: Instant,
    },
    /// The generation new connections belong to.
    Active {
        /// Since when.
        since: Instant,
    },
    /// Told to drain.
    Draining {
        /// Since when.
        since: Instant,
        /// SIGKILL at this time, unless already sent.
        kill_at: Option<Instant>,
    },
}

#[derive(Debug, Clone)]
struct Generation {
    pid: Option<i32>,
    spawned_at: Instant,
    said_ready: bool,
    phase: Phase,
}

#[derive(Debug, Clone)]
struct Build {
    step: usize,
    pid: Option<i32>,
    /// When the first step started.
    started: Instant,
    /// When this step started.
    step_started: Instant,
    /// Set once it has been told to stop; SIGKILL at this time.
    cancel_kill_at: Option<Instant>,
    /// Whether to start the build again once the cancelled one is gone.
    restart: bool,
    trigger_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Shutdown {
    /// A second request: no more draining.
    forced: bool,
    /// Some generation had to be killed.
    killed_any: bool,
}

/// Everything the supervisor knows and decides on.
#[derive(Debug)]
pub struct State {
    policy: Policy,
    last_gen: GenId,
    gens: BTreeMap<GenId, Generation>,
    active: Option<GenId>,
    starting: Option<GenId>,
    /// A reload was asked for while a generation was starting.
    pending: Option<(Trigger, Instant)>,
    build: Option<Build>,
    /// Set once the server turned out not to report readiness.
    fallback_ready_after: Option<Duration>,
    restart_at: Option<Instant>,
    backoff: Duration,
    shutdown: Option<Shutdown>,
    /// The most generations alive at once so far.
    peak: usize,
    /// Where each step is reported besides the log.
    report: Reporter,
}

impl State {
    /// A supervisor with no generation yet.
    pub fn new(policy: Policy) -> Self {
        State {
            policy,
            last_gen: 0,
            gens: BTreeMap::new(),
            active: None,
            starting: None,
            pending: None,
            build: None,
            fallback_ready_after: None,
            restart_at: None,
            backoff: BACKOFF_MIN,
            shutdown: None,
            peak: 0,
            report: Reporter::default(),
        }
    }

    /// Reports every step to `reporter` from now on.
    pub fn set_reporter(&mut self, reporter: Reporter) {
        self.report = reporter;
    }

    /// The earliest time at which a `Tick` is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
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

    /// The generations that are alive, for diagnostics and tests.
    pub fn live_generations(&self) -> Vec<GenId> {
        self.gens.keys().copied().collect()
    }

    /// The active generation.
    pub fn active(&self) -> Option<GenId> {
        self.active
    }

    /// "; keeping gen=N serving", for a log line about a failed start.
    fn keeping(&self) -> String {
        self.active
            .map(|a| format!("; keeping gen={a} serving"))
            .unwrap_or_default()
    }

    fn ready_after(&self) -> Option<Duration> {
        self.policy.ready_after.or(self.fallback_ready_after)
    }

    /// Decides what to do about `event`.
    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Reload { trigger, at } => self.on_reload(trigger, at, now, &mut out),
            Event::Message { gen_id, msg, at } => self.on_message(gen_id, msg, at, now, &mut out),
            Event::Spawned { gen_id, pid } => {
                if let Some(g) = self.gens.get_mut(&gen_id) {
                    g.pid = Some(pid);
                    // Told to drain before its pid was known (the executor
                    // answers Spawn at once, but the machine does not rely
                    // on it).
                    if matches!(g.phase, Phase::Draining { .. }) {
                        let reason = if self.shutdown.is_some() {
                            SignalReason::Shutdown
                        } else {
                            SignalReason::NotReady
                        };
                        out.push(Action::Signal {
                            gen_id,
                            pid,
                            signal: self.policy.drain_signal,
                            reason,
                        });
                    }
                }
            }
            Event::SpawnFailed { gen_id, error } => {
                if self.gens.remove(&gen_id).is_some() {
                    if self.active == Some(gen_id) {
                        self.active = None;
                    }
                    if self.starting == Some(gen_id) {
                        self.starting = None;
                    }
                    let keep = self.keeping();
                    error!(generation = gen_id, "cannot start: {error}{keep}");
                    self.report.step(Step::SpawnFailed {
                        generation: gen_id,
                        error: error.clone(),
                    });
                    self.keep_serving(now, &mut out);
                }
            }
            Event::GenExited { gen_id, exit } => self.on_exited(gen_id, exit, now, &mut out),
            Event::BuildStarted { pid } => {
                if let Some(b) = &mut self.build {
                    b.pid = Some(pid);
                    // A cancel that came before the pid was known.
                    if b.cancel_kill_at.is_some() {
                        out.push(Action::SignalBuild {
                            pid,
                            signal: Signal::SIGTERM,
                        });
                    }
                }
            }
            Event::BuildExited { exit } => self.on_build_exited(exit, now, &mut out),
            Event::SignalActive { signal, because } => {
                if let Some((gen_id, pid)) =
                    self.active.and_then(|a| Some((a, self.gens.get(&a)?.pid?)))
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
            Event::Shutdown { because } => self.on_shutdown(because, now, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
        }
        self.maybe_exit(&mut out);
        out
    }

    fn on_reload(&mut self, trigger: Trigger, at: Instant, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            debug!("reload requested by {trigger} during shutdown: ignored");
            return;
        }
        if let Some(b) = &mut self.build {
            self.report.step(Step::coalesced(&trigger, "build", None));
            // The build is building stale sources: start it again.
            b.restart = true;
            b.trigger_at = at;
            if b.cancel_kill_at.is_none() {
                info!(
                    "reload requested by {trigger}: cancelling the running build to start it again"
                );
                b.cancel_kill_at = Some(now + BUILD_CANCEL_GRACE);
                if let Some(pid) = b.pid {
                    out.push(Action::SignalBuild {
                        pid,
                        signal: Signal::SIGTERM,
                    });
                }
            }
            return;
        }
        if let Some(starting) = self.starting {
            self.report
                .step(Step::coalesced(&trigger, "queue", Some(starting)));
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
        self.report.step(Step::trigger(&trigger, false));
        self.check_readiness_support(now);
        self.restart_at = None;
        self.begin(at, now, out);
    }

    /// The readiness fallback: a server that has never said READY although
    /// it has been up a while does not report readiness. Waiting the full
    /// ready timeout on every reload would make devsup useless with it.
    fn check_readiness_support(&mut self, now: Instant) {
        if self.ready_after().is_some() {
            return;
        }
        let Some(active) = self.active.and_then(|a| self.gens.get(&a).map(|g| (a, g))) else {
            return;
        };
        let (gen_id, g) = active;
        if !g.said_ready && now.duration_since(g.spawned_at) > READINESS_PROBE {
            warn!(
                generation = gen_id,
                "this server does not report readiness (no READY=1 after {:.1}s); counting each generation ready after {}s of uptime. \
                 Opt in to exact handoffs with one line after the listener is set up: devsup_protocol::notify_ready(), \
                 or pass --ready-after DUR to choose the delay",
                now.duration_since(g.spawned_at).as_secs_f64(),
                READINESS_PROBE.as_secs()
            );
            self.fallback_ready_after = Some(READINESS_PROBE);
        }
    }

    /// Starts the build, or the generation if there is no build.
    fn begin(&mut self, trigger_at: Instant, now: Instant, out: &mut Vec<Action>) {
        if self.policy.build_steps > 0 {
            self.build = Some(Build {
                step: 0,
                pid: None,
                started: now,
                step_started: now,
                cancel_kill_at: None,
                restart: false,
                trigger_at,
            });
            out.push(Action::StartBuild { step: 0 });
        } else {
            self.spawn(Some(trigger_at), now, out);
        }
    }

    fn spawn(&mut self, trigger_at: Option<Instant>, now: Instant, out: &mut Vec<Action>) {
        self.last_gen += 1;
        let gen_id = self.last_gen;
        // With nobody serving, the new generation is the one connections
        // belong to from the start: there is nothing to hand over from.
        let phase = if self.active.is_none() {
            self.active = Some(gen_id);
            Phase::Active { since: now }
        } else {
            self.starting = Some(gen_id);
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
                phase,
            },
        );
        out.push(Action::Spawn { gen_id, trigger_at });
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

    /// The most generations that were alive at once.
    pub fn peak_live(&self) -> usize {
        self.peak
    }

    fn on_message(
        &mut self,
        gen_id: GenId,
        msg: Message,
        at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match msg {
            Message::Ready => {
                let Some(g) = self.gens.get_mut(&gen_id) else {
                    return;
                };
                if g.said_ready {
                    debug!(generation = gen_id, "READY=1 again: ignored");
                    return;
                }
                g.said_ready = true;
                if self.fallback_ready_after.take().is_some() {
                    info!(
                        generation = gen_id,
                        "sent READY=1: this server reports readiness after all, so handoffs wait for READY again"
                    );
                }
                let took = at.saturating_duration_since(g.spawned_at);
                match g.phase {
                    Phase::Starting { .. } => {
                        info!(generation = gen_id, "ready in {}", ms(took));
                        self.report.step(Step::Ready {
                            generation: gen_id,
                            rule: "notify",
                            ready_us: us(took),
                        });
                        self.promote(gen_id, Some(at), now, out);
                    }
                    Phase::Active { .. } => {
                        info!(generation = gen_id, "ready in {}", ms(took));
                        self.report.step(Step::Ready {
                            generation: gen_id,
                            rule: "notify",
                            ready_us: us(took),
                        });
                    }
                    Phase::Draining { .. } => {
                        debug!(generation = gen_id, "READY=1 while draining: ignored")
                    }
                }
            }
            Message::Status(status) => info!(generation = gen_id, "status: {status}"),
            Message::Stopping => info!(generation = gen_id, "stopping"),
            Message::Reloading => info!(generation = gen_id, "reloading its configuration"),
            Message::Reload => {
                if self.active == Some(gen_id) || self.starting == Some(gen_id) {
                    self.on_reload(Trigger::Server(gen_id), at, now, out);
                } else {
                    debug!(
                        generation = gen_id,
                        "DEVSUP_RELOAD=1 from a draining generation: ignored"
                    );
                }
            }
            Message::MainPid(pid) => debug!(generation = gen_id, "MAINPID={pid}: noted"),
            Message::Other { key, .. } => debug!(generation = gen_id, "{key}=…: ignored"),
        }
    }

    /// `gen_id` (starting) becomes active; the previous active drains.
    fn promote(
        &mut self,
        gen_id: GenId,
        ready_at: Option<Instant>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.starting = None;
        if let Some(g) = self.gens.get_mut(&gen_id) {
            g.phase = Phase::Active { since: now };
        }
        if let Some(old) = self.active.replace(gen_id) {
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
    fn settled(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some((trigger, at)) = self.pending.take() {
            info!("starting the reload queued by {trigger}");
            self.report.step(Step::trigger(&trigger, true));
            self.check_readiness_support(now);
            self.begin(at, now, out);
        }
    }

    fn drain(&mut self, gen_id: GenId, reason: SignalReason, now: Instant, out: &mut Vec<Action>) {
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
        if self.active == Some(gen_id) {
            self.active = None;
        }
        if self.starting == Some(gen_id) {
            self.starting = None;
        }
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

    fn on_exited(&mut self, gen_id: GenId, exit: Exit, now: Instant, out: &mut Vec<Action>) {
        let Some(g) = self.gens.remove(&gen_id) else {
            return;
        };
        let (phase, drain) = match g.phase {
            Phase::Draining { since, .. } => ("draining", Some(now.duration_since(since))),
            Phase::Starting { .. } => ("starting", None),
            Phase::Active { .. } => ("active", None),
        };
        let uptime = now.duration_since(g.spawned_at);
        self.report
            .step(Step::exited(gen_id, exit, phase, uptime, drain));
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
                self.starting = None;
                self.keep_serving(now, out);
            }
            Phase::Active { since } => {
                self.active = None;
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
                if let Some(starting) = self.starting {
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
    fn keep_serving(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.pending.is_some()
            && self.starting.is_none()
            && self.build.is_none()
            && self.shutdown.is_none()
        {
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
    fn schedule_restart(&mut self, now: Instant) -> Option<Duration> {
        if self.shutdown.is_some()
            || self.active.is_some()
            || self.starting.is_some()
            || self.build.is_some()
        {
            return None;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.restart_at = Some(now + delay);
        Some(delay)
    }

    fn on_build_exited(&mut self, exit: Option<Exit>, now: Instant, out: &mut Vec<Action>) {
        let Some(build) = self.build.take() else {
            return;
        };
        let took = ms(now.duration_since(build.started));
        let step_took = ms(now.duration_since(build.step_started));
        let finished = |status| {
            Step::build_finished(
                status,
                build.step,
                self.policy.build_steps,
                exit,
                now.duration_since(build.started),
            )
        };
        if self.shutdown.is_some() {
            info!("build stopped after {took}");
            self.report.step(finished("stopped"));
            return;
        }
        if build.restart {
            info!("build cancelled after {took}; starting it again");
            self.report.step(finished("cancelled"));
            let trigger_at = build.trigger_at;
            self.begin(trigger_at, now, out);
            return;
        }
        let step = build.step;
        match exit {
            Some(exit) if exit.success() => {
                if step + 1 < self.policy.build_steps {
                    self.build = Some(Build {
                        step: step + 1,
                        pid: None,
                        step_started: now,
                        ..build
                    });
                    out.push(Action::StartBuild { step: step + 1 });
                } else {
                    info!("build finished in {took}");
                    self.report.step(finished("ok"));
                    self.spawn(Some(build.trigger_at), now, out);
                }
            }
            failed => {
                self.report.step(finished("failed"));
                let how = failed
                    .map(|e| format!("exited {e}"))
                    .unwrap_or_else(|| "could not start".into());
                match self.active {
                    Some(a) => error!(
                        "build step {} failed ({how}) after {step_took}; keeping gen={a} serving. Fix the error and save to try again",
                        step + 1
                    ),
                    None => error!(
                        "build step {} failed ({how}) after {step_took}; no generation is running. Fix the error and save to try again",
                        step + 1
                    ),
                }
            }
        }
    }

    fn on_shutdown(&mut self, because: String, now: Instant, out: &mut Vec<Action>) {
        if let Some(sd) = &mut self.shutdown {
            if sd.forced {
                return;
            }
            sd.forced = true;
            sd.killed_any = true;
            warn!("{because} again: killing every generation now");
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
        let live = self.gens.len();
        info!(
            "{because}: shutting down; draining {live} generation{} (again to kill at once)",
            if live == 1 { "" } else { "s" }
        );
        self.report.step(Step::Shutdown {
            cause: because.clone(),
            live,
        });
        let ids: Vec<GenId> = self.gens.keys().copied().collect();
        for gen_id in ids {
            self.drain(gen_id, SignalReason::Shutdown, now, out);
        }
        if let Some(b) = &mut self.build {
            b.restart = false;
            if b.cancel_kill_at.is_none() {
                b.cancel_kill_at = Some(now + BUILD_CANCEL_GRACE);
                if let Some(pid) = b.pid {
                    out.push(Action::SignalBuild {
                        pid,
                        signal: Signal::SIGTERM,
                    });
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
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
                        self.report.step(Step::Ready {
                            generation: gen_id,
                            rule: "uptime",
                            ready_us: us(now.duration_since(g.spawned_at)),
                        });
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
            warn!(
                generation = gen_id,
                "not ready after {} (no READY=1; raise --ready-timeout if it needs longer): draining it{keep}",
                ms(self.policy.ready_timeout)
            );
            self.drain(gen_id, SignalReason::NotReady, now, out);
            self.keep_serving(now, out);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            if self.active.is_none()
                && self.starting.is_none()
                && self.build.is_none()
                && self.shutdown.is_none()
            {
                info!("restarting");
                self.report.step(Step::restart());
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

    fn maybe_exit(&mut self, out: &mut Vec<Action>) {
        let Some(sd) = self.shutdown else {
            return;
        };
        if self.gens.is_empty() && self.build.is_none() {
            let code = if sd.killed_any { 1 } else { 0 };
            if code == 0 {
                info!(
                    "every generation has exited (at most {} were alive at once); bye",
                    self.peak
                );
            } else {
                warn!("stopped, but some generation had to be killed");
            }
            self.report.step(Step::Stopped { code });
            out.push(Action::Exit(code));
        }
    }
}

/// Formats a duration for the log: `34ms`, `1.2s`.
pub fn ms(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
