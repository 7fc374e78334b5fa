//! The values that flow through devsup: what sources send the loop
//! ([`Input`], [`Event`]), what the state machine decides ([`Action`]), and
//! the small types both carry ([`GenId`], [`Trigger`], [`Exit`]).
//!
//! This module sits below everything else: the event sources, the state
//! machine, the executor and the loop all import it, and it imports none of
//! them. That is what keeps the sources from depending on the loop that
//! consumes them.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use devsup_protocol::Message;
use nix::sys::signal::Signal;

/// A generation number: 1, 2, 3, …
pub type GenId = u64;

/// What the loop receives on its one channel, from every source thread.
#[derive(Debug)]
pub enum Input {
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
pub enum Store {
    /// `FDSTORE=1`: keep these fds under `name`.
    Add {
        /// `FDNAME=`, or `stored`.
        name: String,
        /// The fds received.
        fds: Vec<OwnedFd>,
    },
    /// `FDSTOREREMOVE=1`: drop the fds stored under `name`.
    Remove {
        /// `FDNAME=`.
        name: String,
    },
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
    /// A deadline from the state machine's `next_deadline` passed.
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
