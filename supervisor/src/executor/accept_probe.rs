//! The accepted-connection probe: a thread of its own that looks, for each
//! starting generation, for a connection one of its processes accepted on
//! a passed port (see [`crate::readiness::holdings`]), and sends
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
//! The same look at a generation's sockets tells **a server that ignores
//! the passed socket** ([`Event::IgnoresSocket`], once per generation): it
//! holds none of the passed sockets any more (it closed them: puma without
//! `-b` "closes unused activated sockets"), or for [`OWN_GRACE`] it has
//! listened on a TCP address of its own (`sock_diag`'s listening sockets,
//! matched by inode) while the `/proc` probe sees it wait on no passed
//! socket. A closed socket is said once the server listens elsewhere too,
//! or after [`OWN_GRACE`], so that the line names where it went.
//!
//! Each generation's probe cost (median and max per probe) is logged at
//! debug level when its probing ends (`DEVSUP_LOG=devsup::executor=debug`);
//! devsup-bench reads it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::event::{Event, GenId, Input};
use crate::readiness::{self, PassedSocket, SockDiag};

/// The most often one generation is probed.
const MIN_INTERVAL: Duration = Duration::from_millis(5);
/// Probe costs kept per generation, for the debug line.
const MAX_SAMPLES: usize = 10_000;
/// How long a generation may hold a listener of its own, not waiting on a
/// passed socket, before devsup says it ignores the socket: a server may
/// open another port (metrics, admin) just before it serves the passed one.
const OWN_GRACE: Duration = Duration::from_secs(1);
/// How often a generation's own listeners are looked up.
const OWN_INTERVAL: Duration = Duration::from_millis(100);

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
        names: Vec<String>,
        events: Sender<Input>,
    ) -> Option<AcceptProbe> {
        let (commands, rx) = mpsc::channel();
        let passed = Passed {
            sockets,
            ports,
            names,
        };
        let spawned = std::thread::Builder::new()
            .name("accept-probe".into())
            .spawn(move || run(&rx, &events, &passed));
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

/// The sockets devsup passes.
#[derive(Debug)]
struct Passed {
    sockets: Vec<PassedSocket>,
    /// Their TCP ports.
    ports: Vec<u16>,
    /// Their addresses, for the log.
    names: Vec<String>,
}

#[derive(Debug)]
struct Watch {
    pgid: i32,
    since: Instant,
    next: Instant,
    /// What each probe cost.
    costs: Vec<Duration>,
    /// Whether it ignores the passed sockets, until said.
    ignoring: Ignoring,
    /// Sockets it holds that are known not to be accepted connections.
    known: HashSet<u64>,
    /// Told to stop: only whether it ignores the sockets is still looked
    /// at, until then (a server may say READY=1 while it serves a port of
    /// its own).
    stopped: Option<Instant>,
}

/// What a generation was seen doing with the passed sockets, for
/// [`Event::IgnoresSocket`].
#[derive(Debug, Clone, Copy)]
enum Ignoring {
    /// Nothing to say so far; its own listeners are looked up next then.
    No { look_at: Instant },
    /// Seen holding none of the passed sockets since then.
    Closed { since: Instant },
    /// Seen listening on its own since then, holding a passed socket.
    Own { since: Instant },
    /// Said (or no longer worth saying).
    Done,
}

fn run(commands: &Receiver<Command>, events: &Sender<Input>, passed: &Passed) {
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
                let now = Instant::now();
                let watch = Watch {
                    pgid,
                    since,
                    next: now,
                    costs: Vec::new(),
                    ignoring: Ignoring::No { look_at: now },
                    stopped: None,
                    known: HashSet::new(),
                };
                watches.insert(gen_id, watch);
            }
            Ok(Command::Stop(gen_id)) => {
                let stopped = Instant::now();
                if let Some(w) = watches.get_mut(&gen_id) {
                    if matches!(w.ignoring, Ignoring::Done) || w.stopped.is_some() {
                        if let Some(w) = watches.remove(&gen_id) {
                            log_costs(gen_id, &w, "stopped");
                        }
                    } else {
                        // One more look at once; more only if it was
                        // seen ignoring the sockets.
                        w.stopped = Some(stopped + 2 * OWN_GRACE);
                        w.next = stopped;
                        if let Ignoring::No { look_at } = &mut w.ignoring {
                            *look_at = stopped;
                        }
                    }
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
            if probe_one(gen_id, w, &mut diag, passed, events) {
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
    passed: &Passed,
    events: &Sender<Input>,
) -> bool {
    let started = Instant::now();
    let pids = readiness::generation_pids(w.pgid);
    let listeners = matches!(w.ignoring, Ignoring::No { look_at } | Ignoring::Own { since: look_at } if started >= look_at)
        || matches!(w.ignoring, Ignoring::Closed { .. });
    let found = readiness::holdings(
        diag,
        &pids,
        &passed.sockets,
        &passed.ports,
        &mut w.known,
        listeners,
    );
    let at = Instant::now();
    if w.costs.len() < MAX_SAMPLES {
        w.costs.push(at - started);
    }
    let holdings = match found {
        Ok(holdings) => holdings,
        Err(e) => {
            debug!(
                generation = gen_id,
                "cannot look for accepted connections: {e}"
            );
            return true;
        }
    };
    if w.stopped.is_none() {
        if let Some(accepted) = holdings.accepted {
            let event = Event::Listening {
                gen_id,
                how: accepted.describe(),
                at,
                accepted: true,
            };
            // The loop is gone: devsup is exiting.
            let _ = events.send(Input::Event(event));
            return true;
        }
    }
    if holdings.seen && listeners {
        if let Some(closed) = ignores(w, &holdings, &pids, &passed.sockets, at) {
            let event = Event::IgnoresSocket {
                gen_id,
                closed,
                own: holdings.own_listeners,
                passed: passed.names.clone(),
            };
            let _ = events.send(Input::Event(event));
        }
    }
    if let Some(until) = w.stopped {
        // Stopped: looked at only while it may turn out to ignore them.
        if at >= until || matches!(w.ignoring, Ignoring::No { .. } | Ignoring::Done) {
            return true;
        }
    }
    w.next = at + super::interval(at.saturating_duration_since(w.since)).max(MIN_INTERVAL);
    false
}

/// Moves `w.ignoring` on with what one look found; `Some(closed)` when it
/// is time to say that the generation ignores the passed sockets.
fn ignores(
    w: &mut Watch,
    found: &readiness::Holdings,
    pids: &[i32],
    sockets: &[PassedSocket],
    now: Instant,
) -> Option<bool> {
    let own = !found.own_listeners.is_empty();
    match (w.ignoring, found.holds_passed) {
        (Ignoring::Done, _) => None,
        (Ignoring::Closed { since }, false) => (own || now >= since + OWN_GRACE).then(|| {
            w.ignoring = Ignoring::Done;
            true
        }),
        (_, false) => {
            w.ignoring = Ignoring::Closed { since: now };
            own.then(|| {
                w.ignoring = Ignoring::Done;
                true
            })
        }
        (Ignoring::Own { since }, true) if own && now >= since + OWN_GRACE => {
            // Waiting on a passed socket as well: it serves it (the /proc
            // probe counts it ready); a listener of its own is its business.
            w.ignoring = Ignoring::Done;
            readiness::probe(pids, sockets)
                .waits
                .is_empty()
                .then_some(false)
        }
        (Ignoring::Own { since }, true) if own => {
            w.ignoring = Ignoring::Own { since };
            None
        }
        (Ignoring::No { .. }, true) if own => {
            w.ignoring = Ignoring::Own { since: now };
            None
        }
        (_, true) => {
            w.ignoring = Ignoring::No {
                look_at: now + OWN_INTERVAL,
            };
            None
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
