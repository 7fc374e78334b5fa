//! The values that flow through devsup: what sources send the loop
//! ([`Input`], [`Event`]), what the state machine decides ([`Action`]), and
//! the small types both carry ([`GenId`], [`Trigger`], [`Exit`]).
//!
//! This module sits below everything else: the event sources, the state
//! machine, the executor and the loop all import it, and it imports none of
//! them (only [`crate::step`], the facts reported, which sits beside it). That is what keeps the sources from depending on the loop that
//! consumes them.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use devsup_protocol::Message;
use nix::sys::signal::Signal;

use crate::step::Step;

/// A generation number: 1, 2, 3, …
pub(crate) type GenId = u64;

/// What the loop receives on its one channel, from every source thread.
#[derive(Debug)]
pub(crate) enum Input {
    /// A domain event for the state machine.
    Event(Event),
    /// SIGCHLD: some child changed state; reap.
    ChildExited,
    /// A generation asked devsup to keep or drop file descriptors.
    Store(GenId, Store),
}

/// A file-descriptor store request, read from a generation's notify socket
/// (`FDSTORE=1` / `FDSTOREREMOVE=1`). It bypasses the state machine: the
/// executor owns the stored fds.
#[derive(Debug)]
pub(crate) enum Store {
    /// `FDSTORE=1`: keep `fds` under `name` (`FDNAME=`, or `stored`).
    Add { name: String, fds: Vec<OwnedFd> },
    /// `FDSTOREREMOVE=1`: drop the fds stored under `name` (`FDNAME=`).
    Remove { name: String },
}

/// Why a reload happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// devsup has just started.
    Startup,
    /// SIGHUP.
    Sighup,
    /// `r` + Enter in the terminal.
    Key,
    /// The active generation sent `DEVSUP_RELOAD=1`.
    Server(GenId),
    /// Watched files changed: `first` of them, and `more` others in the
    /// same burst.
    Files { first: PathBuf, more: usize },
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
pub(crate) enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// Exited with status 0.
    pub(crate) fn success(self) -> bool {
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

/// Something that happened, for [`State::step`](crate::machine::State::step).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Start a new generation (through the build, if any); `at` is when the
    /// trigger was seen, for the "spawned in N after trigger" figure.
    Reload { trigger: Trigger, at: Instant },
    /// A protocol line from a generation's ready channel or notify socket;
    /// `at` is when it was read, so that handoff latencies do not include
    /// the loop's queueing.
    Message {
        gen_id: GenId,
        msg: Message,
        at: Instant,
    },
    /// The kernel shows one of generation `gen_id`'s processes waiting on a
    /// passed listening socket (`crate::readiness`); `how` says which and how,
    /// for the log; `at` is when the probe saw it.
    // Only the /proc probe (Linux) sees it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Listening {
        gen_id: GenId,
        how: String,
        at: Instant,
        /// Seen holding a connection it accepted on a passed port (rule
        /// `accepted`), not waiting on the socket (rule `listening`).
        accepted: bool,
    },
    /// `/proc` cannot tell whether generation `gen_id` waits on a socket;
    /// `why` is one line for the log.
    ProbeFailed { gen_id: GenId, why: String },
    /// The `Spawn` action succeeded; `pid` is also the generation's process
    /// group id, which every signal goes to.
    Spawned { gen_id: GenId, pid: i32 },
    /// The `Spawn` action failed, or the child could not exec; `error` is
    /// one line for the log.
    SpawnFailed { gen_id: GenId, error: String },
    /// A generation's whole process group is gone (and any group its
    /// `MAINPID=` moved to); `exit` is how its leader ended.
    GenExited { gen_id: GenId, exit: Exit },
    /// The `StartBuild` action started a build step; `pid` is its process
    /// group id.
    BuildStarted { pid: i32 },
    /// A build step's process group is gone (`Some`), or it could not be
    /// started (`None`).
    BuildExited { exit: Option<Exit> },
    /// Send a signal to the active generation instead of reloading
    /// (`--signal-on`); `because` names the change, for the log.
    SignalActive { signal: Signal, because: String },
    /// SIGINT, SIGTERM, `q` + Enter or the terminal closing; `because`
    /// names it, for the log.
    Shutdown { because: String },
    /// A deadline from the state machine's `next_deadline` passed.
    Tick,
}

/// Something to do, decided by the state machine, carried out by the
/// executor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Start generation `gen_id`; the executor answers at once with
    /// `Spawned` or `SpawnFailed`. `trigger_at` (when its trigger was seen)
    /// is only for the log.
    Spawn {
        gen_id: GenId,
        trigger_at: Option<Instant>,
    },
    /// Send `signal` to generation `gen_id`'s process group `pid` (and to
    /// any group its `MAINPID=` moved to); `reason` chooses the log line.
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
    /// Report this step to the subscribers (`--events`, `devsup status`,
    /// systemd, `--livereload`): a fact the machine decided, beside the log
    /// line it wrote for it.
    Report(Step),
    /// Exit devsup with this status.
    Exit(u8),
}

/// Why a signal is sent, for its log line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SignalReason {
    /// Handoff: `successor` said READY at `ready_at`; the log line gives the
    /// time from that READY to this drain signal.
    Handoff { successor: GenId, ready_at: Instant },
    /// It did not become ready in time.
    NotReady,
    /// devsup is shutting down.
    Shutdown,
    /// The drain timeout passed (the signal is SIGKILL).
    DrainTimeout,
    /// `--signal-on`, with the change that matched.
    Route(String),
}
