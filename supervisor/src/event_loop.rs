//! The loop: one thread that owns all state.
//!
//! Every event source (see [`crate::sources`]) runs on its own thread and
//! sends an [`Input`] into one channel. The loop feeds each event into
//! [`State::step`](crate::machine::State::step) and hands the actions it
//! returns to the `Executor`, which carries them out and answers at once
//! with the events they cause (`Spawned`, `BuildStarted`, …), and reports
//! the steps to the log and the [`Reporter`]'s subscribers. Reaping, the fd
//! store and `MAINPID=` bypass the state machine: the executor takes them
//! off the channel ([`Executor::take`]) as its own bookkeeping.
//!
//! The loop runs on the main thread on purpose: `PR_SET_PDEATHSIG` fires
//! when the *thread* that forked a child exits, so generations must be
//! forked by a thread that lives as long as devsup.
//!
//! Where devsup cannot be a child subreaper (macOS), the processes a
//! generation leaves behind are not its children, and no SIGCHLD says when
//! they exit: the loop also wakes when the executor asks
//! ([`Executor::next_poll`]) to look at the groups it waits for.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use devsup_protocol as proto;
#[cfg(unix)]
use tracing::debug;
use tracing::warn;

use crate::config::Config;
use crate::event::{Event, Input, Trigger};
#[cfg(unix)]
use crate::executor::Executor;
#[cfg(unix)]
use crate::guard::Guard;
use crate::livereload;
use crate::machine::State;
#[cfg(windows)]
use crate::platform::windows::executor::{self, Executor};
use crate::report::{self, Reporter, Target};
use crate::sockets;
use crate::sources::{signals, terminal, watch};
use crate::step::Step;

/// What must live as long as the loop: the event outputs (they let the
/// last lines reach their readers, and on Unix remove their sockets, when
/// dropped).
type Outputs = report::events::Events;

/// Runs devsup until it is told to stop; returns its exit status.
pub(crate) fn run(config: Config) -> anyhow::Result<u8> {
    // `outputs` removes the event sockets when dropped: after the
    // executor, whose last steps it lets reach their readers.
    let (_outputs, rx, mut state, mut exec) = start(config)?;
    let mut queue = VecDeque::from([Event::Reload {
        trigger: Trigger::Startup,
        at: Instant::now(),
    }]);
    loop {
        if queue.is_empty() {
            exec.run_probes(&mut queue);
        }
        let event = match queue.pop_front() {
            Some(event) => event,
            None => {
                let due = (state.next_deadline(), exec.next_poll(), exec.next_probe());
                // `None`: woken for a probe only.
                let Some(input) = next_input(&rx, due.0, due.1, due.2) else {
                    continue;
                };
                match exec.take(input, &mut queue) {
                    Some(event) => event,
                    None => continue,
                }
            }
        };
        #[cfg(debug_assertions)]
        debug_panic(&event);
        for action in state.step(event, Instant::now()) {
            if let Some(code) = exec.execute(action, &mut queue) {
                return Ok(code);
            }
        }
    }
}

/// Sets devsup up: checks the command, takes or binds the sockets, forks
/// the guard, starts the subscribers and the event sources. Returns the
/// event outputs, the loop's channel, the state machine and the executor.
///
/// On Windows there is no guard (every process is in a Job Object that
/// ends with devsup), no subreaper, socket activation, status socket or
/// systemd notifier (`--events FILE` is the one subscriber there), and
/// options the Windows executor cannot carry out are refused here.
fn start(config: Config) -> anyhow::Result<(Outputs, Receiver<Input>, State, Executor)> {
    #[cfg(windows)]
    if let Some(why) = executor::unsupported(&config) {
        anyhow::bail!("{why}");
    }
    // The first line: what devsup inferred, when no command was given.
    if let Some(c) = &config.cargo {
        report::log::write(&Step::Inferred {
            package: c.package.clone(),
            bin: c.bin.clone(),
            because: c.because,
            build: c.build.clone(),
            target_dir: c.target_dir.display().to_string(),
        });
    }
    // Say a missing command before binding anything. With a build step,
    // the build may be what creates it.
    if config.builds.is_empty() {
        config.program.resolve()?;
    }
    #[cfg(unix)]
    let subreaper = become_subreaper();
    // Sockets systemd passed (socket activation), owned before any other fd
    // is opened; stdout moved aside for `--events -` before any process is
    // started.
    let inherited = sockets::take_inherited()?;
    if inherited.is_some() && !config.sockets.is_empty() {
        warn!(
            "socket-activated: serving on the sockets systemd passed; --port and --socket are ignored"
        );
    }
    #[cfg(unix)]
    let events_stdout = match config.events {
        Some(Target::Stdout) => Some(report::events::take_stdout()?),
        _ => None,
    };
    // Before any thread exists: the guard is forked.
    #[cfg(unix)]
    let mut guard = Guard::start(config.drain_signal, config.drain_timeout)?;
    let reporter = Reporter::default();
    #[cfg(unix)]
    let outputs = report::start(config.events.as_ref(), events_stdout, &reporter)?;
    #[cfg(unix)]
    outputs.remove_on_death(&mut guard);
    #[cfg(windows)]
    let outputs = report::events::setup(config.events.as_ref(), &reporter)?;
    let listeners = match inherited {
        Some(listeners) => listeners,
        None => sockets::bind_all(&config.sockets, config.backlog)?,
    };
    for (i, l) in listeners.iter().enumerate() {
        #[cfg(unix)]
        if let sockets::Addr::Unix(path) = &l.addr {
            guard.remove_on_death(path);
        }
        reporter.report(Step::Listening {
            name: l.name.clone(),
            addr: l.addr.to_string(),
            fd: proto::FIRST_FD + i as i32,
            inherited: l.is_inherited(),
        });
    }
    let livereload_env = livereload::start(config.livereload, config.editor.as_ref(), &reporter)?;
    let (tx, rx) = mpsc::channel();
    signals::spawn(tx.clone())?;
    if let Some(watch) = config.watch.clone() {
        // What devsup writes itself never reloads.
        let own: Vec<std::path::PathBuf> = (listeners.iter())
            .filter_map(|l| match &l.addr {
                sockets::Addr::Unix(path) => Some(path.clone()),
                _ => None,
            })
            .chain(match &config.events {
                Some(Target::File(path) | Target::Socket(path)) => Some(path.clone()),
                _ => None,
            })
            .collect();
        watch::spawn(watch, &own, tx.clone())?;
    }
    terminal::spawn(tx.clone());
    let state = State::new(config.policy());
    #[cfg(unix)]
    let exec = {
        let extra_env = livereload_env.into_iter().collect();
        let mut exec = Executor::new(config, listeners, tx, guard, reporter, extra_env)?;
        exec.start_tracking();
        if !subreaper {
            exec.poll_orphaned_groups();
        }
        exec
    };
    #[cfg(windows)]
    let exec = {
        let extra_env = livereload_env.into_iter().collect();
        Executor::new(config, listeners, tx, reporter, extra_env)?
    };
    Ok((outputs, rx, state, exec))
}

/// The next input: one from the channel, `Tick` at the state machine's
/// `deadline`, `ChildExited` when the executor's `poll` time comes (to look
/// at process groups no SIGCHLD will speak for), or `None` when `probe`
/// (the executor's next `/proc` probe) came first.
fn next_input(
    rx: &Receiver<Input>,
    deadline: Option<Instant>,
    poll: Option<Instant>,
    probe: Option<Instant>,
) -> Option<Input> {
    let due = |at: Option<Instant>| at.is_some_and(|d| d <= Instant::now());
    // A due deadline goes first, so that a stream of inputs cannot starve it.
    if due(deadline) {
        return Some(Input::Event(Event::Tick));
    }
    if due(poll) {
        return Some(Input::ChildExited);
    }
    match deadline.into_iter().chain(poll).chain(probe).min() {
        Some(wake) => match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) if due(deadline) => Some(Input::Event(Event::Tick)),
            Err(RecvTimeoutError::Timeout) if due(poll) => Some(Input::ChildExited),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => unreachable!("the loop holds a sender"),
        },
        None => Some(rx.recv().expect("the loop holds a sender")),
    }
}

/// In debug builds only, `DEVSUP_DEBUG_PANIC_ON_SIGHUP` makes a SIGHUP panic
/// the main thread: the tests' way to check that a panic leaves no orphan.
#[cfg(debug_assertions)]
fn debug_panic(event: &Event) {
    if matches!(
        event,
        Event::Reload {
            trigger: Trigger::Sighup,
            ..
        }
    ) && std::env::var_os("DEVSUP_DEBUG_PANIC_ON_SIGHUP").is_some()
    {
        panic!("DEVSUP_DEBUG_PANIC_ON_SIGHUP is set");
    }
}

/// Orphans of a generation (a server that double-forks, `cargo run`'s
/// child once cargo dies) are reparented to devsup, so they are reaped and
/// a generation's group is seen to be gone. False where devsup is no
/// subreaper: the executor then polls such groups.
///
/// In debug builds, `DEVSUP_DEBUG_NO_SUBREAPER` makes Linux behave like
/// macOS here: the tests' way to run the polling on Linux.
#[cfg(unix)]
fn become_subreaper() -> bool {
    use crate::platform::process::{ORPHAN_POLL, Subreaper};
    if cfg!(debug_assertions) && std::env::var_os("DEVSUP_DEBUG_NO_SUBREAPER").is_some() {
        debug!("DEVSUP_DEBUG_NO_SUBREAPER is set: not a child subreaper");
        return false;
    }
    match crate::platform::process::become_subreaper() {
        Subreaper::Yes => true,
        Subreaper::Failed(e) => {
            warn!(
                "cannot become a child subreaper ({e}): the processes a server leaves behind are looked for every {}",
                crate::log::ms(ORPHAN_POLL)
            );
            false
        }
        Subreaper::Unsupported => {
            debug!(
                "no child subreaper on this platform: the processes a server leaves behind are looked for every {}",
                crate::log::ms(ORPHAN_POLL)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn is_tick(input: &Option<Input>) -> bool {
        matches!(input, Some(Input::Event(Event::Tick)))
    }

    /// Without a subreaper the loop wakes for the executor's poll, and the
    /// state machine's deadline still goes first; a probe wakes it with
    /// nothing to hand on.
    #[test]
    fn the_loop_wakes_for_the_deadline_the_poll_and_a_probe() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let past = now - Duration::from_millis(1);
        assert!(is_tick(&next_input(
            &rx,
            Some(past),
            Some(past),
            Some(past)
        )));
        assert!(matches!(
            next_input(&rx, None, Some(past), None),
            Some(Input::ChildExited)
        ));
        let soon = Instant::now() + Duration::from_millis(20);
        let later = soon + Duration::from_secs(60);
        assert!(matches!(
            next_input(&rx, Some(later), Some(soon), None),
            Some(Input::ChildExited)
        ));
        assert!(Instant::now() >= soon, "it waited for the poll");
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(is_tick(&next_input(&rx, Some(soon), Some(later), None)));
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(next_input(&rx, Some(later), Some(later), Some(soon)).is_none());
        assert!(Instant::now() >= soon, "it waited for the probe");
        tx.send(Input::ChildExited).unwrap();
        assert!(matches!(
            next_input(&rx, None, None, None),
            Some(Input::ChildExited)
        ));
    }
}
