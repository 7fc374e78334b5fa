//! What the supervisor loop calls to report its steps: set-up at start,
//! and the capture of each build step's output. Kept apart so the loop
//! needs one line per call site.

use std::os::fd::OwnedFd;

use tracing::warn;

use crate::cli::Config;
use crate::events::{Events, Target};
use crate::report::{Reporter, Step};
use crate::sockets::Listener;

/// The reporter every step goes to, and the outputs it feeds (kept open
/// while this lives).
#[derive(Debug)]
pub struct Steps {
    /// The reporter.
    pub reporter: Reporter,
    _outputs: Events,
}

/// Start-up work that must come before any fd is opened or any process
/// started: the sockets systemd passed devsup (if it did), and stdout
/// moved aside for `--events -`.
pub fn early(config: &Config) -> anyhow::Result<(Option<Vec<Listener>>, Option<OwnedFd>)> {
    let inherited = crate::systemd::take_listeners()?;
    if inherited.is_some() && !config.sockets.is_empty() {
        warn!(
            "socket-activated: serving on the sockets systemd passed; --port and --socket are ignored"
        );
    }
    let stdout = match config.events {
        Some(Target::Stdout) => Some(crate::events::take_stdout()?),
        _ => None,
    };
    Ok((inherited, stdout))
}

/// The reporter, with `--events`, the status socket and the systemd
/// notifier subscribed.
pub fn reporter(config: &Config, stdout: Option<OwnedFd>) -> anyhow::Result<Steps> {
    let reporter = Reporter::default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let status = crate::status::default_socket(&cwd);
    let events = crate::events::setup(config.events.as_ref(), stdout, Some(&status), &reporter)?;
    crate::systemd::notify_from_env(&reporter)?;
    Ok(Steps {
        reporter,
        _outputs: events,
    })
}

/// Reports listener `i`.
pub fn listening(reporter: &Reporter, listener: &Listener, i: usize) {
    reporter.step(Step::Listening {
        name: listener.name.clone(),
        addr: listener.addr.to_string(),
        fd: devsup_protocol::FIRST_FD + i as i32,
        inherited: listener.is_inherited(),
    });
}

/// Pipes for the next build step's stdout and stderr, shown on devsup's
/// and remembered for a failed build's report; `None` (the step then
/// writes to devsup's own stdout and stderr) if they cannot be made.
pub fn build_output(reporter: &Reporter) -> Option<(OwnedFd, OwnedFd)> {
    match crate::tee::start("build") {
        Ok((tail, out, err)) => {
            reporter.build_output(Some(tail));
            Some((out, err))
        }
        Err(e) => {
            warn!("cannot capture the build's output ({e}); it is shown but not reported");
            reporter.build_output(None);
            None
        }
    }
}
