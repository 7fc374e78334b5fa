//! The values that flow into devsup's loop: what sources send it
//! ([`Input`], [`Event`]) and the small types they carry ([`GenId`],
//! [`Trigger`], [`Exit`], [`StopCause`]).
//!
//! This module sits below everything else: the event sources, the state
//! machine, the steps, the executor and the loop all import it, and it
//! imports nothing from the crate. That is what keeps the sources from
//! depending on the loop that consumes them. What the machine decides
//! (`Action`) lives beside the machine, in `machine/action.rs`.

use std::fmt;
#[cfg(unix)]
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use crate::signal::Signal;
use devsup_protocol::Message;
use serde::Serialize;

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
    #[cfg(unix)]
    Store(GenId, Store),
}

/// A file-descriptor store request, read from a generation's notify socket
/// (`FDSTORE=1` / `FDSTOREREMOVE=1`). It bypasses the state machine: the
/// executor owns the stored fds. Unix only: there are no fds to pass
/// elsewhere.
#[cfg(unix)]
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
    /// SIGHUP (none on Windows).
    #[cfg_attr(not(unix), allow(dead_code))]
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
    /// A signal ended it (never on Windows).
    #[cfg_attr(not(unix), allow(dead_code))]
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
            Exit::Signal(sig) => write!(f, "by {}", signal_name(sig)),
        }
    }
}

/// A signal number's name (`SIGTERM`), or `signal N` for one nix does not
/// know.
pub(crate) fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(sig) => sig.as_str().to_owned(),
        Err(_) => format!("signal {sig}"),
    }
}

/// What asked devsup to stop. On the wire (`shutdown`'s `cause`) and in
/// the log, as it reads to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum StopCause {
    /// SIGINT (Ctrl-C); on Windows a Ctrl-C or Ctrl-Break at devsup's
    /// console, or the console closing: "Ctrl-C" in the log, "SIGINT" on
    /// the wire still.
    #[serde(rename = "SIGINT")]
    Sigint,
    /// SIGTERM (none on Windows).
    #[cfg_attr(not(unix), allow(dead_code))]
    #[serde(rename = "SIGTERM")]
    Sigterm,
    /// `q` + Enter.
    #[serde(rename = "q pressed")]
    Key,
    /// The terminal devsup reads keys from closed.
    #[serde(rename = "the terminal closed")]
    TerminalClosed,
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopCause::Sigint if cfg!(windows) => "Ctrl-C",
            StopCause::Sigint => "SIGINT",
            StopCause::Sigterm => "SIGTERM",
            StopCause::Key => "q pressed",
            StopCause::TerminalClosed => "the terminal closed",
        })
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
    /// Generation `gen_id` ignores the sockets devsup passed it: it closed
    /// every one of them (`closed`), or it listens on TCP addresses of its
    /// own (`own`) and has not been seen waiting on a passed one.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    IgnoresSocket {
        gen_id: GenId,
        closed: bool,
        own: Vec<std::net::SocketAddr>,
        /// The passed TCP sockets' addresses, for the log.
        passed: Vec<String>,
    },
    /// `/proc` cannot tell whether generation `gen_id` waits on a socket;
    /// `why` is one line for the log.
    #[cfg_attr(windows, allow(dead_code))]
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
    /// SIGINT, SIGTERM, `q` + Enter or the terminal closing.
    Shutdown { because: StopCause },
    /// A deadline from the state machine's `next_deadline` passed.
    Tick,
}
