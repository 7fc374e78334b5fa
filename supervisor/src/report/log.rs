//! The human log, rendered from steps: one [`Step`] in, at most one
//! [`Line`] out ([`line`], a pure function, snapshot-tested below), written
//! through `tracing` to stderr by [`write`] in the format of `crate::log`
//! (`devsup gen=2 ready in 34ms`).
//!
//! This is the one place the log's wording lives for everything the state
//! machine and the executor report; the integration tests wait on these
//! lines, so a change of wording is a change of contract
//! (`tests/src/devlog.rs`).

use std::time::Duration;

use crate::event::GenId;
use crate::log::{latency, ms};
use crate::step::{
    AfterExit, BuildStatus, Cause, DrainReason, Fallback, FdStore, Into, KillReason, MainPid, Note,
    Phase, Rule, Said, SocketSeen, Step, Tracking, Trouble, Unserved,
};

/// How much a line matters; `DEVSUP_LOG`, `-q` and `-v` filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// One log line, before its prefix: its level, the generation it is about
/// and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) level: Level,
    pub(crate) generation: Option<GenId>,
    pub(crate) text: String,
}

/// Writes `step`'s line, if it has one, to the log.
pub(crate) fn write(step: &Step) {
    let Some(Line {
        level,
        generation,
        text,
    }) = line(step)
    else {
        return;
    };
    macro_rules! emit {
        ($macro:ident) => {
            match generation {
                Some(g) => tracing::$macro!(generation = g, "{text}"),
                None => tracing::$macro!("{text}"),
            }
        };
    }
    match level {
        Level::Error => emit!(error),
        Level::Warn => emit!(warn),
        Level::Info => emit!(info),
        Level::Debug => emit!(debug),
    }
}

/// The log line for `step`; `None` for a step the log does not show.
pub(crate) fn line(step: &Step) -> Option<Line> {
    let (level, text) = match step {
        Step::Listening { name, addr, fd, .. } => (
            Level::Info,
            format!("listening on {addr} (name={name} fd={fd})"),
        ),
        Step::Trigger {
            generation,
            cause,
            path,
            more,
            queued,
        } => (
            Level::Info,
            trigger(*generation, *cause, path, *more, *queued),
        ),
        Step::Coalesced { .. } => (Level::Info, coalesced(step)?),
        Step::Active { .. } => return None,
        Step::BuildStarted {
            step,
            steps,
            command,
        } => (
            Level::Info,
            format!("build step {step}/{steps}: {}", clipped(command)),
        ),
        Step::BuildFinished { .. } => build_finished(step)?,
        Step::Spawned {
            pid,
            after_trigger_us,
            ..
        } => {
            let after = after_trigger_us
                .map(|t| format!(" in {} after trigger", latency(Duration::from_micros(t))))
                .unwrap_or_default();
            (Level::Info, format!("spawned pid={pid}{after}"))
        }
        Step::SpawnFailed { error, keeping, .. } => (
            Level::Error,
            format!("cannot start: {error}{}", keeping_text(*keeping)),
        ),
        Step::Ready {
            rule,
            ready_us,
            how,
            ..
        } => (Level::Info, ready(*rule, *ready_us, how.as_deref())),
        Step::Draining { .. } | Step::Killed { .. } | Step::Signalled { .. } => signal(step)?,
        Step::Exited { .. } => exited(step)?,
        Step::Shutdown { .. } | Step::Stopped { .. } => stopping(step)?,
        _ => log_only(step)?,
    };
    // A trigger's and a coalesced reload's line name the generation in
    // their text, if at all: it is not their subject.
    let generation = match step {
        Step::Trigger { .. } | Step::Coalesced { .. } => None,
        _ => step.generation(),
    };
    Some(Line {
        level,
        generation,
        text,
    })
}

/// A reload asked for during another: only the first that coalesces
/// has a line.
fn coalesced(step: &Step) -> Option<String> {
    let Step::Coalesced {
        generation,
        cause,
        path,
        more,
        into,
        first: true,
    } = step
    else {
        return None;
    };
    let by = trigger_text(None, *cause, path, *more);
    Some(match into {
        Into::Build => {
            format!("reload requested by {by}: cancelling the running build to start it again")
        }
        Into::Queue => format!(
            "reload requested by {by}: queued until gen={} has started",
            generation.unwrap_or_default()
        ),
    })
}

/// The lines of the shutdown and the exit.
fn stopping(step: &Step) -> Option<(Level, String)> {
    Some(match step {
        Step::Shutdown { cause, live } => (
            Level::Info,
            format!(
                "{cause}: shutting down; draining {live} generation{} (again to kill at once)",
                if *live == 1 { "" } else { "s" }
            ),
        ),
        Step::Stopped { code: 0, peak } => (
            Level::Info,
            format!("every generation has exited (at most {peak} were alive at once); bye"),
        ),
        Step::Stopped { .. } => (
            Level::Warn,
            "stopped, but some generation had to be killed".to_owned(),
        ),
        _ => return None,
    })
}

/// The lines of the steps only the log shows.
/// [`Step::Unserved`]'s line.
fn unserved(addrs: &[String], why: Unserved) -> (Level, String) {
    let addrs = addrs.join(", ");
    match why {
        Unserved::Building => (
            Level::Info,
            format!(
                "connections to {addrs} wait unanswered until gen=1 is ready, after the first build \
                 (they are queued, not refused); --livereload shows browsers a page meanwhile"
            ),
        ),
        Unserved::BuildFailed => (
            Level::Warn,
            format!(
                "the first build failed, so connections to {addrs} wait unanswered (curl and browsers \
                 hang): fix the error and save to build again, or press r + Enter"
            ),
        ),
        Unserved::Page => (
            Level::Info,
            format!(
                "live reload: answering connections to {addrs} with a 503 page while no \
                 generation runs (until the next is spawned; then they wait for it)"
            ),
        ),
    }
}

/// The lines of the steps only the log shows: readiness and the
/// generations' lives here, the rest in [`other_log_only`].
fn log_only(step: &Step) -> Option<(Level, String)> {
    Some(match step {
        Step::FellBack { why, after, .. } => (Level::Warn, fell_back(why, *after)),
        Step::FallbackEnded { .. } => (
            Level::Info,
            "sent READY=1: this server reports readiness after all, so handoffs wait for READY again"
                .to_owned(),
        ),
        Step::SpeaksProtocol { after, .. } => (
            Level::Info,
            format!(
                "sent READY=1 {} after it started: this server reports readiness, so handoffs wait for READY=1 from now on",
                ms(*after)
            ),
        ),
        Step::NotReady {
            timeout,
            sent,
            seen,
            keeping,
            ..
        } => (
            Level::Warn,
            format!(
                "not ready after {} (no READY=1; {sent}{}; raise --ready-timeout if it needs longer): draining it{}",
                ms(*timeout),
                seen_text(*seen),
                keeping_text(*keeping)
            ),
        ),
        Step::Peak { live } => (
            Level::Info,
            format!("{live} generations alive at once, the most so far (the others are draining)"),
        ),
        Step::RestartScheduled { delay } => (
            Level::Warn,
            format!(
                "no generation is serving: starting one in {} (or at once on the next change)",
                ms(*delay)
            ),
        ),
        Step::NotSignalled { because, signal } => (
            Level::Info,
            format!("{because}: no generation running to send {signal} to"),
        ),
        Step::BuildKilled { grace } => (
            Level::Warn,
            format!(
                "the build ignored {} for {}: {}",
                words::BUILD_STOP,
                ms(*grace),
                words::KILL_BUILD
            ),
        ),
        Step::ShutdownForced { cause } => (
            Level::Warn,
            format!("{cause} again: killing every generation now"),
        ),
        _ => return other_log_only(step),
    })
}

/// The log-only lines of [`log_only`] about the build, what devsup found
/// out about the server and its processes, and what it noted.
fn other_log_only(step: &Step) -> Option<(Level, String)> {
    Some(match step {
        Step::Unserved { addrs, why } => unserved(addrs, *why),
        Step::Inferred {
            package,
            bin,
            because,
            build,
            target_dir,
        } => (
            Level::Info,
            format!(
                "no command given: running {bin} ({because} of package {package}), as `cargo run` \
                 would, built by `{build}` into {target_dir}; choose with --bin/--package, or give \
                 a command after `--`"
            ),
        ),
        Step::Said { what, .. } => (
            Level::Info,
            match what {
                Said::Status(status) => format!("status: {status}"),
                Said::Stopping => "stopping".to_owned(),
                Said::Reloading => "reloading its configuration".to_owned(),
            },
        ),
        Step::Noted { note, .. } => (Level::Debug, note_text(note)),
        Step::LeaderExited {
            pid,
            exit,
            remaining,
            ..
        } => (
            Level::Info,
            format!(
                "pid={pid}, its first process, exited {exit}, but {remaining} of its processes still run (it daemonized): the generation lives on in them, and is drained and stopped with them"
            ),
        ),
        Step::Restless { path, bursts, hold } => (
            Level::Warn,
            format!(
                "{path} changed all the time through the last {bursts} reloads, and made each wait {} (a log or a journal?): if a change to it needs no reload, pass --ignore '{}'",
                ms(*hold),
                path.replace('\'', "'\\''")
            ),
        ),
        Step::Tracking(Tracking::Cgroup(dir)) => (
            Level::Debug,
            format!(
                "each generation runs in a cgroup of its own under {dir}: every process it starts is drained and stopped with it"
            ),
        ),
        Step::Tracking(Tracking::Orphans(why)) => (
            Level::Debug,
            format!(
                "no cgroup per generation ({why}): a generation's processes are its process group and the orphans devsup adopts with its environment"
            ),
        ),
        Step::FdStored { change, .. } => fd_store(change),
        Step::MainPidDecided { pid, decision, .. } => main_pid(*pid, decision),
        Step::Trouble(trouble) => (Level::Warn, trouble_text(trouble)),
        Step::IgnoresSocket {
            closed,
            own,
            passed,
            listen_pid,
            ..
        } => (
            Level::Warn,
            ignores_socket(*closed, own, passed, *listen_pid),
        ),
        Step::NeverWaited { listen_pid, .. } => (Level::Warn, never_waited(*listen_pid)),
        _ => return None,
    })
}

/// The passed sockets a server that ignores them leaves waiting, and the
/// fix.
fn ignores_socket(
    closed: bool,
    own: &[std::net::SocketAddr],
    passed: &[String],
    listen_pid: bool,
) -> String {
    let passed = passed.join(", ");
    let own = own
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let what = match (closed, own.is_empty()) {
        (true, false) => {
            format!("closed the socket devsup passed it ({passed}) and listens on {own} of its own")
        }
        (true, true) => format!("closed the socket devsup passed it ({passed}) without serving it"),
        (false, _) => {
            format!("listens on {own} of its own, not on the socket devsup passed it ({passed})")
        }
    };
    let fix = if listen_pid {
        "make it take its listener from fd 3 (LISTEN_FDS; puma: -b with that address, uvicorn: --fd 3, gunicorn: --bind fd://3)"
    } else {
        "make it take its listener from fd 3 (LISTEN_FDS); a server that checks LISTEN_PID (puma, go-systemd, sd_listen_fds) ignores it without --listen-pid, and puma needs -b with that address too"
    };
    format!("{what}: clients of {passed} wait; {fix}")
}

/// A server that failed before it waited on its socket, and what to try.
fn never_waited(listen_pid: bool) -> String {
    let why = if listen_pid {
        "see its output above for why, and check that it takes its listener from fd 3 (LISTEN_FDS)"
    } else {
        "a server that checks LISTEN_PID (go-systemd's activation.Listeners, puma, sd_listen_fds) ignores the socket without it: try --listen-pid"
    };
    format!("failed before it ever waited on the socket devsup passed it; {why}")
}

/// "SIGHUP", "change to src/main.rs (+2 more)": what asked for a reload.
fn trigger_text(
    generation: Option<GenId>,
    cause: Cause,
    path: &Option<String>,
    more: usize,
) -> String {
    match cause {
        Cause::Startup => "startup".to_owned(),
        Cause::Sighup => "SIGHUP".to_owned(),
        Cause::Key => "key press".to_owned(),
        Cause::Server => format!("gen={}", generation.unwrap_or_default()),
        Cause::Restart => "restart".to_owned(),
        Cause::Files => {
            let path = path.as_deref().unwrap_or_default();
            match more {
                0 => format!("change to {path}"),
                more => format!("change to {path} (+{more} more)"),
            }
        }
    }
}

fn trigger(
    generation: Option<GenId>,
    cause: Cause,
    path: &Option<String>,
    more: usize,
    queued: bool,
) -> String {
    let by = trigger_text(generation, cause, path, more);
    match cause {
        _ if queued => format!("starting the reload queued by {by}"),
        Cause::Startup => "starting".to_owned(),
        Cause::Restart => "restarting".to_owned(),
        _ => format!("reload requested by {by}"),
    }
}

fn build_finished(step: &Step) -> Option<(Level, String)> {
    let Step::BuildFinished {
        status,
        step,
        code,
        signal,
        duration_us,
        step_duration,
        keeping,
        ..
    } = step
    else {
        return None;
    };
    let took = ms(Duration::from_micros(*duration_us));
    Some(match status {
        BuildStatus::Stopped => (Level::Info, format!("build stopped after {took}")),
        BuildStatus::Cancelled => (
            Level::Info,
            format!("build cancelled after {took}; starting it again"),
        ),
        BuildStatus::Ok => (Level::Info, format!("build finished in {took}")),
        BuildStatus::Failed => {
            let how = match (code, signal) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("exited by {signal}"),
                (None, None) => "could not start".to_owned(),
            };
            let serving = match keeping {
                Some(a) => format!("keeping gen={a} serving"),
                None => "no generation is running".to_owned(),
            };
            (
                Level::Error,
                format!(
                    "build step {step} failed ({how}) after {}; {serving}. Fix the error and save to try again",
                    ms(*step_duration)
                ),
            )
        }
    })
}

fn ready(rule: Rule, ready_us: u64, how: Option<&str>) -> String {
    let took = ms(Duration::from_micros(ready_us));
    let words = match rule {
        Rule::Notify => "READY=1",
        Rule::Listening => "listening",
        Rule::Accepted => "accepted a connection",
        Rule::Uptime => return format!("counted ready: up for {took} without exiting"),
    };
    match how {
        Some(how) => format!("ready in {took} ({words}: {how})"),
        None => format!("ready in {took} ({words})"),
    }
}

/// How devsup stops and kills processes, in the log's words: Unix signals,
/// or on Windows what it really does instead.
mod words {
    /// What kills a generation (a second Ctrl-C, the drain timeout).
    #[cfg(unix)]
    pub(super) const KILL: &str = "SIGKILL";
    #[cfg(windows)]
    pub(super) const KILL: &str = "TerminateJobObject";
    /// The same, said of a generation that outlived its drain timeout.
    #[cfg(unix)]
    pub(super) const KILL_GROUP: &str = "sending SIGKILL to its group";
    #[cfg(windows)]
    pub(super) const KILL_GROUP: &str = "ending its Job Object (TerminateJobObject)";
    /// What asks a build to stop.
    #[cfg(unix)]
    pub(super) const BUILD_STOP: &str = "SIGTERM";
    #[cfg(windows)]
    pub(super) const BUILD_STOP: &str = "CTRL_BREAK_EVENT";
    /// What kills a build that did not stop.
    #[cfg(unix)]
    pub(super) const KILL_BUILD: &str = "killing its group";
    #[cfg(windows)]
    pub(super) const KILL_BUILD: &str = "ending its Job Object (TerminateJobObject)";
}

/// The lines of the signals devsup sends a generation.
fn signal(step: &Step) -> Option<(Level, String)> {
    Some(match step {
        Step::Draining {
            signal,
            reason: DrainReason::Handoff,
            successor,
            after_ready_us,
            ..
        } => (
            Level::Info,
            format!(
                "draining ({signal}) {} after gen={} ready",
                latency(Duration::from_micros(after_ready_us.unwrap_or_default())),
                successor.unwrap_or_default()
            ),
        ),
        Step::Draining { signal, .. } => (Level::Info, format!("draining ({signal})")),
        Step::Killed {
            reason: KillReason::Shutdown,
            ..
        } => (Level::Info, format!("killing ({})", words::KILL)),
        Step::Killed {
            reason: KillReason::DrainTimeout,
            draining_for,
            ..
        } => (
            Level::Warn,
            format!(
                "still running {} after the drain signal: {}",
                ms(draining_for.unwrap_or_default()),
                words::KILL_GROUP
            ),
        ),
        Step::Signalled {
            signal, because, ..
        } => (Level::Info, format!("{because}: sending {signal}")),
        _ => return None,
    })
}

fn exited(step: &Step) -> Option<(Level, String)> {
    let Step::Exited {
        code,
        signal,
        phase,
        uptime_us,
        drain_us,
        next,
        ..
    } = step
    else {
        return None;
    };
    let exit = match (code, signal) {
        (Some(code), _) => format!("with status {code}"),
        (None, Some(signal)) => format!("by {signal}"),
        (None, None) => "somehow".to_owned(),
    };
    let up = ms(Duration::from_micros(*uptime_us));
    Some(match (phase, next) {
        (Phase::Starting, next) => {
            let keeping = match next {
                AfterExit::FailedStart { keeping } => *keeping,
                _ => None,
            };
            (
                Level::Warn,
                format!(
                    "failed before ready: exited {exit} after {up}{}",
                    keeping_text(keeping)
                ),
            )
        }
        (Phase::Draining, _) => (
            Level::Info,
            format!(
                "exited {exit} after {}",
                ms(Duration::from_micros(drain_us.unwrap_or_default()))
            ),
        ),
        (Phase::Active, AfterExit::Stopping { active_for }) => (
            Level::Info,
            format!("exited {exit} after {}", ms(*active_for)),
        ),
        (Phase::Active, AfterExit::SuccessorStarting { starting }) => (
            Level::Warn,
            format!("exited {exit} after {up} while gen={starting} is starting"),
        ),
        (Phase::Active, AfterExit::Restart { delay }) => (
            Level::Warn,
            format!(
                "exited {exit} on its own after {up}; restarting in {} (connections wait in the backlog meanwhile)",
                ms(*delay)
            ),
        ),
        (Phase::Active, _) => (
            Level::Warn,
            format!("exited {exit} on its own after {up}; the build under way starts the next one"),
        ),
    })
}

fn fell_back(why: &Fallback, after: Duration) -> String {
    let why = match why {
        Fallback::CannotProbe(why) => format!(
            "it has not sent READY=1, and devsup cannot see from /proc whether it waits on its socket ({why})"
        ),
        Fallback::Unseen { ran } => format!(
            "it ran {} (--ready-timeout) without sending READY=1, and devsup never saw it wait on the socket it passed \
             (does it take its listener from LISTEN_FDS, at fd 3? devsup cannot see io_uring, a busy accept loop, \
             or a process outside the generation's process group)",
            ms(*ran)
        ),
    };
    format!(
        "this server does not report readiness: {why}; counting each generation ready after {}s of uptime instead. \
         For exact handoffs, send READY=1 once the listener is set up (devsup_protocol::notify_ready()), \
         or pass --ready-after DUR to choose the delay",
        after.as_secs()
    )
}

fn seen_text(seen: SocketSeen) -> String {
    match seen {
        SocketSeen::NotCounted(at) => format!(
            "; it waits on the socket since {} after it started, which --ready notify does not count",
            ms(at)
        ),
        SocketSeen::WaitsForReady(at) => format!(
            "; it waits on the socket since {} after it started, but earlier generations sent READY=1, so devsup waits for it (--ready listen counts the socket)",
            ms(at)
        ),
        SocketSeen::Never => "; never seen waiting on the socket".to_owned(),
        SocketSeen::NotLooked => String::new(),
    }
}

/// "; keeping gen=N serving", for a line about a failed start.
fn keeping_text(keeping: Option<GenId>) -> String {
    keeping
        .map(|a| format!("; keeping gen={a} serving"))
        .unwrap_or_default()
}

fn fd_store(change: &FdStore) -> (Level, String) {
    match change {
        FdStore::Stored { count, name } => (
            Level::Info,
            format!("stored {count} fd(s) named {name}, passed to the next generations"),
        ),
        FdStore::Removed { count, name } => (
            Level::Info,
            format!("removed {count} stored fd(s) named {name}"),
        ),
        FdStore::Full {
            full,
            sockets,
            dropped,
            name,
        } => (
            Level::Warn,
            format!(
                "the fd store is full ({full} fds beside {sockets} socket(s)): dropped {dropped} fd(s) named {name}"
            ),
        ),
    }
}

fn main_pid(pid: i32, decision: &MainPid) -> (Level, String) {
    match decision {
        MainPid::NoSuchProcess(why) => (
            Level::Warn,
            format!("MAINPID={pid}: no such process ({why}); ignored"),
        ),
        MainPid::OwnGroup => (
            Level::Debug,
            format!("MAINPID={pid}, in the generation's own process group"),
        ),
        MainPid::NotOurs => (
            Level::Warn,
            format!("MAINPID={pid} is not a process of this generation; ignored"),
        ),
        MainPid::Group(group) => (
            Level::Info,
            format!("MAINPID={pid} is in process group {group}: signals go there too"),
        ),
    }
}

fn trouble_text(trouble: &Trouble) -> String {
    match trouble {
        Trouble::BuildOutputLost(why) => {
            format!("cannot capture the build's output ({why}); it is shown but not reported")
        }
        Trouble::BuildCannotRun { command, error } => {
            format!(
                "cannot run the build command {}: {error}",
                shortened(command)
            )
        }
        Trouble::WaitFailed(why) => format!("waitpid failed: {why}"),
        Trouble::NoStatusSocket(why) => {
            format!("`devsup status` cannot reach this devsup: {why}")
        }
        Trouble::DownPageLost(why) => format!(
            "live reload: cannot answer on the served ports while no generation runs ({why}); \
             connections wait for the next generation instead"
        ),
        Trouble::SignalFailed { signal, pid, error } => {
            format!("cannot send {signal} to process group {pid}: {error}")
        }
    }
}

/// A command as the log quotes it: whole, or its start and its size when
/// it is long.
fn shortened(command: &str) -> String {
    match clip(command) {
        Some((start, len)) => format!("{start:?}… ({len} bytes)"),
        None => format!("{command:?}"),
    }
}

/// A command as the log shows it: whole, or its start and its size when
/// it is long.
fn clipped(command: &str) -> String {
    match clip(command) {
        Some((start, len)) => format!("{start}… ({len} bytes)"),
        None => command.to_owned(),
    }
}

/// The start of a command too long for a log line, and its length.
fn clip(command: &str) -> Option<(&str, usize)> {
    const MOST: usize = 80;
    if command.len() <= MOST {
        return None;
    }
    let cut = (0..=60)
        .rev()
        .find(|&i| command.is_char_boundary(i))
        .unwrap_or(0);
    Some((&command[..cut], command.len()))
}

fn note_text(note: &Note) -> String {
    match note {
        Note::ReloadDuringShutdown(trigger) => {
            format!("reload requested by {trigger} during shutdown: ignored")
        }
        Note::ReadyAgain => "READY=1 again: ignored".to_owned(),
        Note::ReadyWhileDraining => "READY=1 while draining: ignored".to_owned(),
        Note::ReloadWhileDraining => {
            "DEVSUP_RELOAD=1 from a draining generation: ignored".to_owned()
        }
        Note::Unhandled(key) => format!("{key}=…: ignored"),
        Note::DrainBeforePid => "draining before its pid is known".to_owned(),
        Note::KeptOnce { count, name } => {
            format!("{count} fd(s) named {name} already stored: kept once")
        }
        Note::SignalBuild(signal) => format!("sending {signal} to the build"),
        Note::ReapedOrphan { pid, exit } => {
            format!("reaped pid={pid} (exited {exit}), left behind by a server or build")
        }
        Note::CannotProbe(why) => format!("cannot probe: {why}"),
        Note::Waits { after, how: None } => format!("waits on the socket after {}", ms(*after)),
        Note::Waits {
            after,
            how: Some(how),
        } => format!(
            "waits on the socket after {} ({how}); waiting for READY=1",
            ms(*after)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::event::{Exit, StopCause, Trigger};

    const MS: Duration = Duration::from_millis(1);

    /// The lines that read otherwise on Windows, where a generation or a
    /// build is killed by `TerminateJobObject`, a build asked to stop by
    /// `CTRL_BREAK_EVENT`, and devsup stopped by Ctrl-C at its console.
    #[cfg(windows)]
    const WINDOWS_LINES: [(&str, &str); 5] = [
        (
            "gen=1 killing (SIGKILL)",
            "gen=1 killing (TerminateJobObject)",
        ),
        (
            "warning: gen=1 still running 10.0s after the drain signal: sending SIGKILL to its group",
            "warning: gen=1 still running 10.0s after the drain signal: ending its Job Object (TerminateJobObject)",
        ),
        (
            "SIGINT: shutting down; draining 2 generations (again to kill at once)",
            "Ctrl-C: shutting down; draining 2 generations (again to kill at once)",
        ),
        (
            "warning: SIGINT again: killing every generation now",
            "warning: Ctrl-C again: killing every generation now",
        ),
        (
            "warning: the build ignored SIGTERM for 5000ms: killing its group",
            "warning: the build ignored CTRL_BREAK_EVENT for 5000ms: ending its Job Object (TerminateJobObject)",
        ),
    ];

    /// The line expected here for a case written with Linux's line: itself,
    /// or on Windows its Windows line.
    fn here(linux: &str) -> String {
        #[cfg(windows)]
        if let Some((_, windows)) = WINDOWS_LINES.iter().find(|(l, _)| *l == linux) {
            return (*windows).to_owned();
        }
        linux.to_owned()
    }

    /// A line as `crate::log` prints it, without colours: the level's
    /// label, the generation, the text; `-` for a step with no line.
    fn show(step: Step) -> String {
        let Some(line) = line(&step) else {
            return "-".to_owned();
        };
        let label = match line.level {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug => "debug: ",
        };
        let generation = line
            .generation
            .map(|g| format!("gen={g} "))
            .unwrap_or_default();
        format!("{label}{generation}{}", line.text)
    }

    fn exited(phase: Phase, exit: Exit, next: AfterExit) -> Step {
        let drain = (phase == Phase::Draining).then_some(12 * MS);
        let mut step = Step::exited(2, exit, phase, 1500 * MS, drain);
        if let Step::Exited { next: n, .. } = &mut step {
            *n = next;
        }
        step
    }

    fn failed_build(exit: Option<Exit>, keeping: Option<GenId>) -> Step {
        let mut step = Step::build_finished(BuildStatus::Failed, 0, 2, exit, 1100 * MS);
        if let Step::BuildFinished {
            step_duration: d,
            keeping: k,
            ..
        } = &mut step
        {
            *d = 800 * MS;
            *k = keeping;
        }
        step
    }

    /// Every kind of step with a line, and the line it renders to: the
    /// log's wording in one place (the integration tests wait on it).
    #[test]
    fn each_step_renders_to_its_line() {
        let files = Trigger::Files {
            first: PathBuf::from("src/main.rs"),
            more: 2,
        };
        let cases: Vec<(Step, &str)> = vec![
            (
                Step::Listening {
                    name: "http".into(),
                    addr: "127.0.0.1:8080".into(),
                    fd: 3,
                    inherited: false,
                },
                "listening on 127.0.0.1:8080 (name=http fd=3)",
            ),
            (Step::trigger(&Trigger::Startup, false), "starting"),
            (
                Step::trigger(&Trigger::Sighup, false),
                "reload requested by SIGHUP",
            ),
            (
                Step::trigger(&Trigger::Key, false),
                "reload requested by key press",
            ),
            (
                Step::trigger(&Trigger::Server(3), false),
                "reload requested by gen=3",
            ),
            (
                Step::trigger(&files, false),
                "reload requested by change to src/main.rs (+2 more)",
            ),
            (
                Step::trigger(&Trigger::Sighup, true),
                "starting the reload queued by SIGHUP",
            ),
            (Step::restart(), "restarting"),
            (
                Step::coalesced(&Trigger::Sighup, Into::Queue, Some(2), true),
                "reload requested by SIGHUP: queued until gen=2 has started",
            ),
            (
                Step::coalesced(&Trigger::Sighup, Into::Queue, Some(2), false),
                "-",
            ),
            (
                Step::coalesced(&Trigger::Key, Into::Build, None, true),
                "reload requested by key press: cancelling the running build to start it again",
            ),
            (
                Step::coalesced(&Trigger::Key, Into::Build, None, false),
                "-",
            ),
            (
                Step::BuildStarted {
                    step: 1,
                    steps: 2,
                    command: "cargo build".into(),
                },
                "build step 1/2: cargo build",
            ),
            (
                Step::BuildStarted {
                    step: 1,
                    steps: 1,
                    command: format!("echo {}", "y".repeat(200 * 1024)),
                },
                "build step 1/1: echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy… (204805 bytes)",
            ),
            (
                Step::build_finished(BuildStatus::Ok, 1, 2, Some(Exit::Code(0)), 1100 * MS),
                "build finished in 1100ms",
            ),
            (
                Step::build_finished(BuildStatus::Cancelled, 0, 2, None, 30 * MS),
                "build cancelled after 30ms; starting it again",
            ),
            (
                Step::build_finished(
                    BuildStatus::Stopped,
                    0,
                    2,
                    None,
                    12 * Duration::from_secs(1),
                ),
                "build stopped after 12.0s",
            ),
            (
                failed_build(Some(Exit::Code(101)), Some(1)),
                "error: build step 1 failed (exited with status 101) after 800ms; keeping gen=1 serving. Fix the error and save to try again",
            ),
            (
                failed_build(Some(Exit::Signal(9)), None),
                "error: build step 1 failed (exited by SIGKILL) after 800ms; no generation is running. Fix the error and save to try again",
            ),
            (
                failed_build(None, Some(1)),
                "error: build step 1 failed (could not start) after 800ms; keeping gen=1 serving. Fix the error and save to try again",
            ),
            (
                Step::Spawned {
                    generation: 2,
                    pid: 4242,
                    after_trigger_us: Some(85),
                },
                "gen=2 spawned pid=4242 in 85us after trigger",
            ),
            (
                Step::Spawned {
                    generation: 1,
                    pid: 4242,
                    after_trigger_us: None,
                },
                "gen=1 spawned pid=4242",
            ),
            (
                Step::SpawnFailed {
                    generation: 2,
                    error: "cannot run ./server: no such file".into(),
                    keeping: Some(1),
                },
                "error: gen=2 cannot start: cannot run ./server: no such file; keeping gen=1 serving",
            ),
            (
                Step::Active {
                    generation: 2,
                    replaces: Some(1),
                },
                "-",
            ),
            (
                Step::Ready {
                    generation: 2,
                    rule: Rule::Notify,
                    ready_us: 34_567,
                    how: None,
                },
                // Named like the other rules (issue 19, defect 8).
                "gen=2 ready in 34ms (READY=1)",
            ),
            (
                Step::Ready {
                    generation: 2,
                    rule: Rule::Listening,
                    ready_us: 34_567,
                    how: Some("pid 7 in epoll_wait on fd 3".into()),
                },
                "gen=2 ready in 34ms (listening: pid 7 in epoll_wait on fd 3)",
            ),
            (
                Step::Ready {
                    generation: 2,
                    rule: Rule::Accepted,
                    ready_us: 34_567,
                    how: Some("pid=7 holds fd 9 from port 8080".into()),
                },
                "gen=2 ready in 34ms (accepted a connection: pid=7 holds fd 9 from port 8080)",
            ),
            (
                Step::Ready {
                    generation: 2,
                    rule: Rule::Uptime,
                    ready_us: 1_000_100,
                    how: None,
                },
                "gen=2 counted ready: up for 1000ms without exiting",
            ),
            (
                Step::Draining {
                    generation: 1,
                    signal: "SIGTERM".into(),
                    reason: DrainReason::Handoff,
                    successor: Some(2),
                    after_ready_us: Some(40),
                },
                "gen=1 draining (SIGTERM) 40us after gen=2 ready",
            ),
            (
                Step::Draining {
                    generation: 2,
                    signal: "SIGINT".into(),
                    reason: DrainReason::NotReady,
                    successor: None,
                    after_ready_us: None,
                },
                "gen=2 draining (SIGINT)",
            ),
            (
                Step::Killed {
                    generation: 1,
                    reason: KillReason::Shutdown,
                    draining_for: None,
                },
                "gen=1 killing (SIGKILL)",
            ),
            (
                Step::Killed {
                    generation: 1,
                    reason: KillReason::DrainTimeout,
                    draining_for: Some(10 * Duration::from_secs(1)),
                },
                "warning: gen=1 still running 10.0s after the drain signal: sending SIGKILL to its group",
            ),
            (
                Step::Signalled {
                    generation: 2,
                    signal: "SIGWINCH".into(),
                    because: "change to web/style.css".into(),
                },
                "gen=2 change to web/style.css: sending SIGWINCH",
            ),
            (
                exited(Phase::Draining, Exit::Code(0), AfterExit::Nothing),
                "gen=2 exited with status 0 after 12ms",
            ),
            (
                exited(
                    Phase::Starting,
                    Exit::Code(3),
                    AfterExit::FailedStart { keeping: Some(1) },
                ),
                "warning: gen=2 failed before ready: exited with status 3 after 1500ms; keeping gen=1 serving",
            ),
            (
                exited(
                    Phase::Active,
                    Exit::Signal(15),
                    AfterExit::Stopping {
                        active_for: 700 * MS,
                    },
                ),
                "gen=2 exited by SIGTERM after 700ms",
            ),
            (
                exited(
                    Phase::Active,
                    Exit::Code(1),
                    AfterExit::SuccessorStarting { starting: 3 },
                ),
                "warning: gen=2 exited with status 1 after 1500ms while gen=3 is starting",
            ),
            (
                exited(
                    Phase::Active,
                    Exit::Code(1),
                    AfterExit::Restart { delay: 200 * MS },
                ),
                "warning: gen=2 exited with status 1 on its own after 1500ms; restarting in 200ms (connections wait in the backlog meanwhile)",
            ),
            (
                exited(Phase::Active, Exit::Code(1), AfterExit::BuildUnderWay),
                "warning: gen=2 exited with status 1 on its own after 1500ms; the build under way starts the next one",
            ),
            (
                Step::Shutdown {
                    cause: StopCause::Key,
                    live: 1,
                },
                "q pressed: shutting down; draining 1 generation (again to kill at once)",
            ),
            (
                Step::Shutdown {
                    cause: StopCause::Sigint,
                    live: 2,
                },
                "SIGINT: shutting down; draining 2 generations (again to kill at once)",
            ),
            (
                Step::ShutdownForced {
                    cause: StopCause::Sigint,
                },
                "warning: SIGINT again: killing every generation now",
            ),
            (
                Step::Stopped { code: 0, peak: 2 },
                "every generation has exited (at most 2 were alive at once); bye",
            ),
            (
                Step::Stopped { code: 1, peak: 2 },
                "warning: stopped, but some generation had to be killed",
            ),
        ];
        let mut wrong = Vec::new();
        for (step, expected) in cases {
            let expected = here(expected);
            let got = show(step.clone());
            if got != expected {
                wrong.push(format!(
                    "{step:?}\n  expected: {expected}\n  got:      {got}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The steps only the log shows, and their lines.
    #[test]
    fn log_only_steps_render_to_their_lines_and_stay_off_the_wire() {
        let cases: Vec<(Step, &str)> = vec![
            (
                Step::FellBack {
                    generation: 1,
                    why: Fallback::CannotProbe("permission denied".into()),
                    after: Duration::from_secs(1),
                },
                "warning: gen=1 this server does not report readiness: it has not sent READY=1, and devsup cannot see from /proc whether it waits on its socket (permission denied); counting each generation ready after 1s of uptime instead. For exact handoffs, send READY=1 once the listener is set up (devsup_protocol::notify_ready()), or pass --ready-after DUR to choose the delay",
            ),
            (
                Step::FellBack {
                    generation: 1,
                    why: Fallback::Unseen { ran: 5000 * MS },
                    after: Duration::from_secs(1),
                },
                "warning: gen=1 this server does not report readiness: it ran 5000ms (--ready-timeout) without sending READY=1, and devsup never saw it wait on the socket it passed (does it take its listener from LISTEN_FDS, at fd 3? devsup cannot see io_uring, a busy accept loop, or a process outside the generation's process group); counting each generation ready after 1s of uptime instead. For exact handoffs, send READY=1 once the listener is set up (devsup_protocol::notify_ready()), or pass --ready-after DUR to choose the delay",
            ),
            (
                Step::FallbackEnded { generation: 2 },
                "gen=2 sent READY=1: this server reports readiness after all, so handoffs wait for READY again",
            ),
            (
                Step::SpeaksProtocol {
                    generation: 1,
                    after: 30 * MS,
                },
                "gen=1 sent READY=1 30ms after it started: this server reports readiness, so handoffs wait for READY=1 from now on",
            ),
            (
                Step::NotReady {
                    generation: 2,
                    timeout: 5000 * MS,
                    sent: "it sent nothing".into(),
                    seen: SocketSeen::Never,
                    keeping: Some(1),
                },
                "warning: gen=2 not ready after 5000ms (no READY=1; it sent nothing; never seen waiting on the socket; raise --ready-timeout if it needs longer): draining it; keeping gen=1 serving",
            ),
            (
                Step::NotReady {
                    generation: 2,
                    timeout: 5000 * MS,
                    sent: "it sent STATUS=warming".into(),
                    seen: SocketSeen::NotCounted(20 * MS),
                    keeping: None,
                },
                "warning: gen=2 not ready after 5000ms (no READY=1; it sent STATUS=warming; it waits on the socket since 20ms after it started, which --ready notify does not count; raise --ready-timeout if it needs longer): draining it",
            ),
            (
                Step::NotReady {
                    generation: 2,
                    timeout: 5000 * MS,
                    sent: "it sent nothing".into(),
                    seen: SocketSeen::WaitsForReady(20 * MS),
                    keeping: Some(1),
                },
                "warning: gen=2 not ready after 5000ms (no READY=1; it sent nothing; it waits on the socket since 20ms after it started, but earlier generations sent READY=1, so devsup waits for it (--ready listen counts the socket); raise --ready-timeout if it needs longer): draining it; keeping gen=1 serving",
            ),
            (
                Step::NotReady {
                    generation: 2,
                    timeout: 5000 * MS,
                    sent: "it sent nothing".into(),
                    seen: SocketSeen::NotLooked,
                    keeping: Some(1),
                },
                "warning: gen=2 not ready after 5000ms (no READY=1; it sent nothing; raise --ready-timeout if it needs longer): draining it; keeping gen=1 serving",
            ),
            (
                Step::Peak { live: 3 },
                "3 generations alive at once, the most so far (the others are draining)",
            ),
            (
                Step::RestartScheduled { delay: 400 * MS },
                "warning: no generation is serving: starting one in 400ms (or at once on the next change)",
            ),
            (
                Step::NotSignalled {
                    because: "change to a.css".into(),
                    signal: "SIGUSR1".into(),
                },
                "change to a.css: no generation running to send SIGUSR1 to",
            ),
            (
                Step::BuildKilled {
                    grace: Duration::from_secs(5),
                },
                "warning: the build ignored SIGTERM for 5000ms: killing its group",
            ),
            (
                Step::Said {
                    generation: 2,
                    what: Said::Status("warming up".into()),
                },
                "gen=2 status: warming up",
            ),
            (
                Step::Said {
                    generation: 2,
                    what: Said::Stopping,
                },
                "gen=2 stopping",
            ),
            (
                Step::Said {
                    generation: 2,
                    what: Said::Reloading,
                },
                "gen=2 reloading its configuration",
            ),
            (
                Step::Noted {
                    generation: None,
                    note: Note::ReloadDuringShutdown(Trigger::Sighup),
                },
                "debug: reload requested by SIGHUP during shutdown: ignored",
            ),
            (
                Step::Noted {
                    generation: Some(2),
                    note: Note::ReadyAgain,
                },
                "debug: gen=2 READY=1 again: ignored",
            ),
            (
                Step::Noted {
                    generation: Some(2),
                    note: Note::ReadyWhileDraining,
                },
                "debug: gen=2 READY=1 while draining: ignored",
            ),
            (
                Step::Noted {
                    generation: Some(1),
                    note: Note::ReloadWhileDraining,
                },
                "debug: gen=1 DEVSUP_RELOAD=1 from a draining generation: ignored",
            ),
            (
                Step::Noted {
                    generation: Some(1),
                    note: Note::Unhandled("WATCHDOG".into()),
                },
                "debug: gen=1 WATCHDOG=…: ignored",
            ),
            (
                Step::Noted {
                    generation: Some(1),
                    note: Note::DrainBeforePid,
                },
                "debug: gen=1 draining before its pid is known",
            ),
            (
                Step::Noted {
                    generation: Some(1),
                    note: Note::CannotProbe("no /proc".into()),
                },
                "debug: gen=1 cannot probe: no /proc",
            ),
            (
                Step::Noted {
                    generation: Some(1),
                    note: Note::Waits {
                        after: 3 * MS,
                        how: None,
                    },
                },
                "debug: gen=1 waits on the socket after 3ms",
            ),
            (
                Step::Noted {
                    generation: Some(2),
                    note: Note::Waits {
                        after: 3 * MS,
                        how: Some("pid 9 in accept on fd 3".into()),
                    },
                },
                "debug: gen=2 waits on the socket after 3ms (pid 9 in accept on fd 3); waiting for READY=1",
            ),
            (
                Step::Noted {
                    generation: Some(2),
                    note: Note::KeptOnce {
                        count: 1,
                        name: "db".into(),
                    },
                },
                "debug: gen=2 1 fd(s) named db already stored: kept once",
            ),
            (
                Step::Noted {
                    generation: None,
                    note: Note::SignalBuild("SIGTERM".into()),
                },
                "debug: sending SIGTERM to the build",
            ),
            (
                Step::Noted {
                    generation: None,
                    note: Note::ReapedOrphan {
                        pid: 77,
                        exit: Exit::Code(0).to_string(),
                    },
                },
                "debug: reaped pid=77 (exited with status 0), left behind by a server or build",
            ),
            (
                Step::FdStored {
                    generation: 2,
                    change: FdStore::Stored {
                        count: 2,
                        name: "db".into(),
                    },
                },
                "gen=2 stored 2 fd(s) named db, passed to the next generations",
            ),
            (
                Step::FdStored {
                    generation: 2,
                    change: FdStore::Removed {
                        count: 2,
                        name: "db".into(),
                    },
                },
                "gen=2 removed 2 stored fd(s) named db",
            ),
            (
                Step::Unserved {
                    addrs: vec!["127.0.0.1:8080".into(), "/tmp/a.sock".into()],
                    why: Unserved::Building,
                },
                "connections to 127.0.0.1:8080, /tmp/a.sock wait unanswered until gen=1 is ready, after the first build (they are queued, not refused); --livereload shows browsers a page meanwhile",
            ),
            (
                Step::Unserved {
                    addrs: vec!["127.0.0.1:8080".into()],
                    why: Unserved::Page,
                },
                "live reload: answering connections to 127.0.0.1:8080 with a 503 page while no generation runs (until the next is spawned; then they wait for it)",
            ),
            (
                Step::Unserved {
                    addrs: vec!["127.0.0.1:8080".into()],
                    why: Unserved::BuildFailed,
                },
                "warning: the first build failed, so connections to 127.0.0.1:8080 wait unanswered (curl and browsers hang): fix the error and save to build again, or press r + Enter",
            ),
            (
                Step::Inferred {
                    package: "app".into(),
                    bin: "server".into(),
                    because: "default-run",
                    build: "cargo build --message-format=json-render-diagnostics --package app --bin server".into(),
                    target_dir: "/tmp/t".into(),
                },
                "no command given: running server (default-run of package app), as `cargo run` would, built by `cargo build --message-format=json-render-diagnostics --package app --bin server` into /tmp/t; choose with --bin/--package, or give a command after `--`",
            ),
            (
                Step::FdStored {
                    generation: 2,
                    change: FdStore::Full {
                        full: 32,
                        sockets: 1,
                        dropped: 3,
                        name: "db".into(),
                    },
                },
                "warning: gen=2 the fd store is full (32 fds beside 1 socket(s)): dropped 3 fd(s) named db",
            ),
            (
                Step::MainPidDecided {
                    generation: 1,
                    pid: 42,
                    decision: MainPid::Group(40),
                },
                "gen=1 MAINPID=42 is in process group 40: signals go there too",
            ),
            (
                Step::MainPidDecided {
                    generation: 1,
                    pid: 42,
                    decision: MainPid::NotOurs,
                },
                "warning: gen=1 MAINPID=42 is not a process of this generation; ignored",
            ),
            (
                Step::MainPidDecided {
                    generation: 1,
                    pid: 42,
                    decision: MainPid::OwnGroup,
                },
                "debug: gen=1 MAINPID=42, in the generation's own process group",
            ),
            (
                Step::MainPidDecided {
                    generation: 1,
                    pid: 42,
                    decision: MainPid::NoSuchProcess("ESRCH: No such process".into()),
                },
                "warning: gen=1 MAINPID=42: no such process (ESRCH: No such process); ignored",
            ),
            (
                Step::Trouble(Trouble::BuildOutputLost("EMFILE".into())),
                "warning: cannot capture the build's output (EMFILE); it is shown but not reported",
            ),
            (
                Step::Trouble(Trouble::BuildCannotRun {
                    command: "make".into(),
                    error: "fork failed".into(),
                }),
                "warning: cannot run the build command \"make\": fork failed",
            ),
            (
                Step::Trouble(Trouble::BuildCannotRun {
                    command: format!("echo {}", "x".repeat(100)),
                    error: "too long".into(),
                }),
                "warning: cannot run the build command \"echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"… (105 bytes): too long",
            ),
            (
                Step::Trouble(Trouble::DownPageLost("EMFILE".into())),
                "warning: live reload: cannot answer on the served ports while no generation runs (EMFILE); connections wait for the next generation instead",
            ),
            (
                Step::Trouble(Trouble::WaitFailed("EINVAL".into())),
                "warning: waitpid failed: EINVAL",
            ),
            (
                Step::Trouble(Trouble::SignalFailed {
                    signal: "CTRL_BREAK_EVENT".into(),
                    pid: 42,
                    error: "Access is denied. (os error 5)".into(),
                }),
                "warning: cannot send CTRL_BREAK_EVENT to process group 42: Access is denied. (os error 5)",
            ),
            (
                Step::Trouble(Trouble::NoStatusSocket(
                    "/run/user/1000/devsup-status is not a private directory of this user (mode 755); remove it".into(),
                )),
                "warning: `devsup status` cannot reach this devsup: /run/user/1000/devsup-status is not a private directory of this user (mode 755); remove it",
            ),
            (
                Step::IgnoresSocket {
                    generation: 1,
                    closed: true,
                    own: vec![([0, 0, 0, 0], 9292).into()],
                    passed: vec!["127.0.0.1:8080".into()],
                    listen_pid: false,
                },
                "warning: gen=1 closed the socket devsup passed it (127.0.0.1:8080) and listens on 0.0.0.0:9292 of its own: clients of 127.0.0.1:8080 wait; make it take its listener from fd 3 (LISTEN_FDS); a server that checks LISTEN_PID (puma, go-systemd, sd_listen_fds) ignores it without --listen-pid, and puma needs -b with that address too",
            ),
            (
                Step::IgnoresSocket {
                    generation: 2,
                    closed: true,
                    own: vec![],
                    passed: vec!["127.0.0.1:8080".into()],
                    listen_pid: true,
                },
                "warning: gen=2 closed the socket devsup passed it (127.0.0.1:8080) without serving it: clients of 127.0.0.1:8080 wait; make it take its listener from fd 3 (LISTEN_FDS; puma: -b with that address, uvicorn: --fd 3, gunicorn: --bind fd://3)",
            ),
            (
                Step::IgnoresSocket {
                    generation: 2,
                    closed: false,
                    own: vec![([127, 0, 0, 1], 3000).into()],
                    passed: vec!["127.0.0.1:8080".into()],
                    listen_pid: true,
                },
                "warning: gen=2 listens on 127.0.0.1:3000 of its own, not on the socket devsup passed it (127.0.0.1:8080): clients of 127.0.0.1:8080 wait; make it take its listener from fd 3 (LISTEN_FDS; puma: -b with that address, uvicorn: --fd 3, gunicorn: --bind fd://3)",
            ),
            (
                Step::NeverWaited {
                    generation: 3,
                    listen_pid: false,
                },
                "warning: gen=3 failed before it ever waited on the socket devsup passed it; a server that checks LISTEN_PID (go-systemd's activation.Listeners, puma, sd_listen_fds) ignores the socket without it: try --listen-pid",
            ),
            (
                Step::NeverWaited {
                    generation: 3,
                    listen_pid: true,
                },
                "warning: gen=3 failed before it ever waited on the socket devsup passed it; see its output above for why, and check that it takes its listener from fd 3 (LISTEN_FDS)",
            ),
            (
                Step::LeaderExited {
                    generation: 3,
                    pid: 4242,
                    exit: Exit::Code(0),
                    remaining: 2,
                },
                "gen=3 pid=4242, its first process, exited with status 0, but 2 of its processes still run (it daemonized): the generation lives on in them, and is drained and stopped with them",
            ),
            (
                Step::Restless {
                    path: "logs/app.log".into(),
                    bursts: 3,
                    hold: 1050 * MS,
                },
                "warning: logs/app.log changed all the time through the last 3 reloads, and made each wait 1050ms (a log or a journal?): if a change to it needs no reload, pass --ignore 'logs/app.log'",
            ),
            (
                Step::Tracking(Tracking::Cgroup("/sys/fs/cgroup/devsup-7".into())),
                "debug: each generation runs in a cgroup of its own under /sys/fs/cgroup/devsup-7: every process it starts is drained and stopped with it",
            ),
            (
                Step::Tracking(Tracking::Orphans("DEVSUP_NO_CGROUP is set".into())),
                "debug: no cgroup per generation (DEVSUP_NO_CGROUP is set): a generation's processes are its process group and the orphans devsup adopts with its environment",
            ),
        ];
        let mut wrong = Vec::new();
        for (step, expected) in cases {
            let expected = here(expected);
            assert!(!step.on_wire(), "{step:?} is the log's alone");
            let got = show(step.clone());
            if got != expected {
                wrong.push(format!(
                    "{step:?}\n  expected: {expected}\n  got:      {got}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
