//! The accepted-connection probe: a thread of its own that looks, for each
//! starting generation, for a connection one of its processes accepted on
//! a passed port (see [`crate::readiness::accepted_connection`]), and sends
//! the loop [`Event::Listening`] with `accepted: true` when it finds one.
//!
//! It complements the sampling `/proc` probe on the loop's thread (see
//! `probe.rs`), which misses servers that are never caught waiting on the
//! socket while load lasts (a pool server whose acceptor waits for a free
//! worker, a single-threaded server that polls between requests). The
//! query (a `sock_diag` dump of the passed ports' live connections, and
//! the processes' `/proc/PID/fd`) runs here, off the loop, so that however
//! long it takes under load, no handoff waits for it. It probes a
//! generation from its spawn until the loop says stop (it was counted ready
//! by any rule, told to drain, or is gone), on the same schedule as the
//! `/proc` probe but at most every [`MIN_INTERVAL`].
//!
//! Each generation's probe cost (median and max per probe) is logged at
//! debug level when its probing ends (`DEVSUP_LOG=devsup::executor=debug`);
//! devsup-bench reads it.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::event::{Event, GenId, Input};
use crate::readiness::{self, PassedSocket, SockDiag};

/// The most often one generation is probed.
const MIN_INTERVAL: Duration = Duration::from_millis(5);
/// Probe costs kept per generation, for the debug line.
const MAX_SAMPLES: usize = 10_000;

/// What the loop tells the thread.
#[derive(Debug)]
enum Command {
    /// Generation `gen_id`, process group `pgid`, spawned at `since`.
    Watch {
        gen_id: GenId,
        pgid: i32,
        since: Instant,
    },
    /// Stop probing `gen_id`.
    Stop(GenId),
}

/// The loop's handle on the thread; dropping it ends the thread.
#[derive(Debug)]
pub(super) struct AcceptProbe {
    commands: Sender<Command>,
}

impl AcceptProbe {
    /// Starts the thread, which sends what it finds into `events`; `None`
    /// (after a debug line) if the thread cannot be started.
    pub(super) fn start(
        sockets: Vec<PassedSocket>,
        ports: Vec<u16>,
        events: Sender<Input>,
    ) -> Option<AcceptProbe> {
        let (commands, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("accept-probe".into())
            .spawn(move || run(&rx, &events, &sockets, &ports));
        match spawned {
            Ok(_) => Some(AcceptProbe { commands }),
            Err(e) => {
                debug!("cannot start the accepted-connection probe: {e}");
                None
            }
        }
    }

    /// Probe generation `gen_id` (group `pgid`) from `since` on.
    pub(super) fn watch(&self, gen_id: GenId, pgid: i32, since: Instant) {
        // A thread that has ended (no sock_diag here) needs no word.
        let _ = self.commands.send(Command::Watch {
            gen_id,
            pgid,
            since,
        });
    }

    /// Probe `gen_id` no more.
    pub(super) fn stop(&self, gen_id: GenId) {
        let _ = self.commands.send(Command::Stop(gen_id));
    }
}

#[derive(Debug)]
struct Watch {
    pgid: i32,
    since: Instant,
    next: Instant,
    /// What each probe cost.
    costs: Vec<Duration>,
}

fn run(
    commands: &Receiver<Command>,
    events: &Sender<Input>,
    sockets: &[PassedSocket],
    ports: &[u16],
) {
    let mut diag = match SockDiag::open() {
        Ok(diag) => diag,
        Err(e) => {
            debug!("no sock_diag ({e}): accepted connections do not count a generation ready");
            return;
        }
    };
    let mut watches: HashMap<GenId, Watch> = HashMap::new();
    loop {
        let command = match watches.values().map(|w| w.next).min() {
            None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(due) => commands.recv_timeout(due.saturating_duration_since(Instant::now())),
        };
        match command {
            Ok(Command::Watch {
                gen_id,
                pgid,
                since,
            }) => {
                let watch = Watch {
                    pgid,
                    since,
                    next: Instant::now(),
                    costs: Vec::new(),
                };
                watches.insert(gen_id, watch);
            }
            Ok(Command::Stop(gen_id)) => {
                if let Some(w) = watches.remove(&gen_id) {
                    log_costs(gen_id, &w, "stopped");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let due: Vec<GenId> = watches
            .iter()
            .filter(|(_, w)| w.next <= now)
            .map(|(&g, _)| g)
            .collect();
        for gen_id in due {
            let Some(w) = watches.get_mut(&gen_id) else {
                continue;
            };
            if probe_one(gen_id, w, &mut diag, sockets, ports, events) {
                if let Some(w) = watches.remove(&gen_id) {
                    log_costs(gen_id, &w, "done");
                }
            }
        }
    }
}

/// One probe of one generation; `true` when its probing is over (found, or
/// it cannot be probed).
fn probe_one(
    gen_id: GenId,
    w: &mut Watch,
    diag: &mut SockDiag,
    sockets: &[PassedSocket],
    ports: &[u16],
    events: &Sender<Input>,
) -> bool {
    let started = Instant::now();
    let pids = readiness::generation_pids(w.pgid);
    let found = readiness::accepted_connection(diag, &pids, sockets, ports);
    let at = Instant::now();
    if w.costs.len() < MAX_SAMPLES {
        w.costs.push(at - started);
    }
    match found {
        Ok(Some(accepted)) => {
            let event = Event::Listening {
                gen_id,
                how: accepted.describe(),
                at,
                accepted: true,
            };
            // The loop is gone: devsup is exiting.
            let _ = events.send(Input::Event(event));
            true
        }
        Ok(None) => {
            w.next = at + super::interval(at.saturating_duration_since(w.since)).max(MIN_INTERVAL);
            false
        }
        Err(e) => {
            debug!(
                generation = gen_id,
                "cannot look for accepted connections: {e}"
            );
            true
        }
    }
}

/// The debug line with what the probes of one generation cost.
fn log_costs(gen_id: GenId, w: &Watch, how: &str) {
    let mut costs = w.costs.clone();
    costs.sort_unstable();
    let (Some(median), Some(max)) = (costs.get(costs.len() / 2), costs.last()) else {
        return;
    };
    debug!(
        generation = gen_id,
        "accepted-connection probe {how}: {} probes, {}us median, {}us max",
        costs.len(),
        median.as_micros(),
        max.as_micros()
    );
}
