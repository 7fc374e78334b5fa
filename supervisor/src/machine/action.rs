//! What the state machine decides: [`Action`]s for the executor, and why a
//! signal is sent ([`SignalReason`]), written once into the step the
//! executor reports for it.

use std::time::Instant;

use crate::signal::Signal;

use crate::event::GenId;
use crate::step::{DrainReason, KillReason, Step, us};

/// Something to do, decided by the state machine, carried out by the
/// executor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Start generation `gen_id`; the executor answers at once with
    /// `Spawned` or `SpawnFailed`. `trigger_at` (when its trigger was seen)
    /// is for the `spawned` step's latency.
    Spawn {
        gen_id: GenId,
        trigger_at: Option<Instant>,
    },
    /// Send `signal` to generation `gen_id`'s process group `pid` (and to
    /// any group its `MAINPID=` moved to); `reason` chooses the step.
    Signal {
        gen_id: GenId,
        pid: i32,
        signal: Signal,
        reason: SignalReason,
    },
    /// Run build step `step` (0-based); answer with `BuildStarted` or
    /// `BuildExited { exit: None }`.
    StartBuild { step: usize },
    /// Send `signal` to the running build's process group `pid`.
    SignalBuild { pid: i32, signal: Signal },
    /// Report this step: to the log and to the subscribers (`--events`,
    /// `devsup status`, systemd, `--livereload`).
    Report(Step),
    /// Exit devsup with this status.
    Exit(u8),
}

/// Why a signal is sent, for its step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SignalReason {
    /// Handoff: `successor` said READY at `ready_at`; the step gives the
    /// time from that READY to this drain signal.
    Handoff { successor: GenId, ready_at: Instant },
    /// It did not become ready in time.
    NotReady,
    /// devsup is shutting down.
    Shutdown,
    /// The drain timeout passed (the signal is SIGKILL) `since` the drain
    /// signal.
    DrainTimeout { since: Instant },
    /// `--signal-on`, with the change that matched.
    Route(String),
}

impl SignalReason {
    /// The step for sending `signal` to `generation` for this reason, at
    /// `sent`.
    pub(crate) fn step(&self, generation: GenId, signal: Signal, sent: Instant) -> Step {
        let drain = |reason, successor, after_ready_us| Step::Draining {
            generation,
            signal: signal.as_str().to_owned(),
            reason,
            successor,
            after_ready_us,
        };
        match self {
            SignalReason::Handoff {
                successor,
                ready_at,
            } => drain(
                DrainReason::Handoff,
                Some(*successor),
                Some(us(sent.saturating_duration_since(*ready_at))),
            ),
            SignalReason::NotReady => drain(DrainReason::NotReady, None, None),
            SignalReason::Shutdown if signal == Signal::SIGKILL => Step::Killed {
                generation,
                reason: KillReason::Shutdown,
                draining_for: None,
            },
            SignalReason::Shutdown => drain(DrainReason::Shutdown, None, None),
            SignalReason::DrainTimeout { since } => Step::Killed {
                generation,
                reason: KillReason::DrainTimeout,
                draining_for: Some(sent.saturating_duration_since(*since)),
            },
            SignalReason::Route(because) => Step::Signalled {
                generation,
                signal: signal.as_str().to_owned(),
                because: because.clone(),
            },
        }
    }
}
