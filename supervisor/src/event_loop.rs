//! The loop: one thread that owns all state.
//!
//! Every event source (see [`crate::sources`]) runs on its own thread and
//! sends an [`Input`] into one channel. The loop feeds each event into
//! [`State::step`](crate::machine::State::step) and hands the actions it
//! returns to the `Executor`, which carries them out and answers at once
//! with the events they cause (`Spawned`, `BuildStarted`, …). Reaping and
//! the fd store bypass the state machine: they are the executor's own
//! bookkeeping.
//!
//! The loop runs on the main thread on purpose: `PR_SET_PDEATHSIG` fires
//! when the *thread* that forked a child exits, so generations must be
//! forked by a thread that lives as long as devsup.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use devsup_protocol as proto;
use tracing::{info, warn};

use crate::config::Config;
use crate::event::{Event, Input, Trigger};
use crate::executor::Executor;
use crate::guard::Guard;
use crate::machine::State;
use crate::sockets;
use crate::sources::{signals, terminal, watch};

/// Runs devsup until it is told to stop; returns its exit status.
pub(crate) fn run(config: Config) -> anyhow::Result<u8> {
    // Say a missing command before binding anything. With a build step,
    // the build may be what creates it.
    if config.builds.is_empty() {
        config.program.resolve()?;
    }
    become_subreaper();
    // Before any thread exists: the guard is forked.
    let guard = Guard::start(config.drain_signal, config.drain_timeout)?;
    let listeners = sockets::bind_all(&config.sockets, config.backlog)?;
    for (i, l) in listeners.iter().enumerate() {
        info!(
            "listening on {} (name={} fd={})",
            l.addr,
            l.name,
            proto::FIRST_FD + i as i32
        );
    }
    let (tx, rx) = mpsc::channel();
    signals::spawn(tx.clone())?;
    if let Some(watch) = config.watch.clone() {
        watch::spawn(watch, tx.clone())?;
    }
    terminal::spawn(tx.clone());
    let mut state = State::new(config.policy());
    let mut exec = Executor::new(config, listeners, tx, guard)?;
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
            None => match next_input(&rx, &state, exec.next_probe()) {
                // Woken for a probe only.
                None => continue,
                Some(Input::Event(Event::Message {
                    gen_id,
                    msg: proto::Message::MainPid(pid),
                    ..
                })) => {
                    exec.main_pid(gen_id, pid);
                    continue;
                }
                Some(Input::Event(event)) => event,
                Some(Input::ChildExited) => {
                    exec.reap(&mut queue);
                    continue;
                }
                Some(Input::Store(gen_id, store)) => {
                    exec.store(gen_id, store);
                    continue;
                }
            },
        };
        if let Event::Message {
            gen_id,
            msg: proto::Message::Ready,
            ..
        } = &event
        {
            exec.said_ready(*gen_id);
        }
        for action in state.step(event, Instant::now()) {
            if let Some(code) = exec.execute(action, &mut queue) {
                return Ok(code);
            }
        }
    }
}

/// The next input, or `None` when `probe_due` (the executor's next `/proc`
/// probe) came first.
fn next_input(rx: &Receiver<Input>, state: &State, probe_due: Option<Instant>) -> Option<Input> {
    let deadline = state.next_deadline();
    // A due deadline goes first, so that a stream of inputs cannot starve it.
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return Some(Input::Event(Event::Tick));
    }
    let wake = match (deadline, probe_due) {
        (Some(d), Some(p)) => Some(d.min(p)),
        (d, p) => d.or(p),
    };
    match wake {
        Some(wake) => match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => deadline
                .is_some_and(|d| d <= Instant::now())
                .then_some(Input::Event(Event::Tick)),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the loop holds a sender"),
        },
        None => Some(rx.recv().expect("the loop holds a sender")),
    }
}

/// Orphans of a generation (a server that double-forks, `cargo run`'s
/// child once cargo dies) are reparented to devsup, so they are reaped and
/// a generation's group is seen to be gone.
fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        warn!(
            "cannot become a child subreaper: processes left behind by a server may not be noticed"
        );
    }
}
