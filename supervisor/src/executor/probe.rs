//! The executor's side of readiness seen from the kernel
//! ([`crate::readiness`]): when to probe which generation, what to tell the
//! state machine, and what to tell the user about a drain that does not end.
//!
//! A generation that has not said READY=1 is probed from its spawn on,
//! every [`interval`]: every 2 ms at first, so that a stock server is
//! counted ready within a few milliseconds of polling its socket, slowing
//! down to every 10 ms after 400 ms (a slow starter is still seen within
//! 10 ms of polling), every 25 ms after 10 s (a `cargo run` that compiles
//! first) and every 250 ms after a minute. One probe reads a
//! few `/proc` files per process (about 45 µs in a release build on a busy
//! 2-core machine); the group's members are the leader's tree
//! (`/proc/PID/task/TID/children`, about 9 µs) plus the trees of devsup's
//! own children in the group (orphans a server double-forked), never a
//! scan of every process (about 2 ms). Probing stops at the first sign (it is
//! reported once, as [`Event::Listening`]), at READY=1, at the drain signal,
//! when the generation is counted ready by another rule (the
//! `--ready-after` timer), or when `/proc` cannot be read
//! ([`Event::ProbeFailed`]).
//!
//! A draining generation is probed a few times (200 ms, 1 s, 3 s and 6 s
//! after the drain signal) for the blocking-socket trap: a thread blocked in
//! `accept` on a passed socket in blocking mode. When its drain timeout
//! passes, [`Probes::diagnose_drain_timeout`] says what kept it alive.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::event::{Event, GenId, Input};
use crate::log::ms;
use crate::readiness::{self, PassedSocket, Probe, Wait};
use crate::sockets::{Addr, Listener};
use crate::step::Step;

#[path = "accept_probe.rs"]
mod accept_probe;
use accept_probe::AcceptProbe;

/// Probes of a draining generation, after its drain signal.
const DRAIN_PROBES: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(6),
];
/// Where the README explains draining.
const README_DRAINING: &str = "README.md#draining-without-resetting-keep-alive-clients";

/// The time between two readiness probes, `elapsed` after the spawn.
pub(super) fn interval(elapsed: Duration) -> Duration {
    if elapsed >= Duration::from_secs(60) {
        Duration::from_millis(250)
    } else if elapsed >= Duration::from_secs(10) {
        Duration::from_millis(25)
    } else {
        (elapsed / 40).clamp(Duration::from_millis(2), Duration::from_millis(10))
    }
}

#[derive(Debug)]
enum Mode {
    /// Until the first sign of readiness.
    Readiness,
    /// Draining since then; the next of [`DRAIN_PROBES`] is at this index.
    Draining { next_probe: usize },
}

#[derive(Debug)]
struct Watch {
    pgid: i32,
    /// The spawn (readiness) or the drain signal (draining).
    since: Instant,
    next: Instant,
    mode: Mode,
}

/// The generations being probed, and the sockets they were passed.
#[derive(Debug)]
pub(super) struct Probes {
    /// The passed sockets, in fd order (fd 3 first); `Err` says why they
    /// could not be identified, and then every probe fails with it.
    sockets: Result<Vec<PassedSocket>, String>,
    /// Their TCP ports, for counting connections.
    ports: Vec<u16>,
    /// Probe for readiness at all (not with `--ready notify`).
    readiness: bool,
    watches: HashMap<GenId, Watch>,
    /// When each draining generation got its drain signal.
    drain_started: HashMap<GenId, Instant>,
    /// The accepted-connection probe's thread, while readiness is probed
    /// and the sockets could be identified.
    accept_probe: Option<AcceptProbe>,
}

impl Probes {
    pub(super) fn new(listeners: &[Listener], readiness: bool, events: Sender<Input>) -> Probes {
        use std::os::fd::AsRawFd;
        let sockets: Result<Vec<PassedSocket>, String> = listeners
            .iter()
            .map(|l| {
                PassedSocket::of_fd(l.fd().as_raw_fd())
                    .map_err(|e| format!("cannot identify the socket devsup passes: {e}"))
            })
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .filter_map(|l| match l.addr {
                Addr::Tcp(addr) => Some(addr.port()),
                _ => None,
            })
            .collect();
        let accept_probe = match &sockets {
            Ok(passed) if readiness && !ports.is_empty() => {
                let names = listeners.iter().map(|l| l.addr.to_string()).collect();
                AcceptProbe::start(passed.clone(), ports.clone(), names, events)
            }
            _ => None,
        };
        Probes {
            sockets,
            ports,
            readiness,
            watches: HashMap::new(),
            drain_started: HashMap::new(),
            accept_probe,
        }
    }

    /// Tells the accepted-connection probe to stop probing `gen_id`.
    fn stop_accept_probe(&self, gen_id: GenId) {
        if let Some(probe) = &self.accept_probe {
            probe.stop(gen_id);
        }
    }

    /// Generation `gen_id` was spawned as process group `pgid`.
    pub(super) fn spawned(&mut self, gen_id: GenId, pgid: i32, now: Instant) {
        if !self.readiness {
            return;
        }
        self.watches.insert(
            gen_id,
            Watch {
                pgid,
                since: now,
                next: now,
                mode: Mode::Readiness,
            },
        );
        if let Some(probe) = &self.accept_probe {
            probe.watch(gen_id, pgid, now);
        }
    }

    /// It said READY=1: no need to look any more.
    pub(super) fn said_ready(&mut self, gen_id: GenId) {
        self.stop_accept_probe(gen_id);
        if self
            .watches
            .get(&gen_id)
            .is_some_and(|w| matches!(w.mode, Mode::Readiness))
        {
            self.watches.remove(&gen_id);
        }
    }

    /// A step devsup published: a generation counted ready by any rule
    /// (READY=1, or the `--ready-after` timer) is no longer probed for
    /// readiness.
    pub(super) fn reported(&mut self, step: &Step) {
        if let Step::Ready { generation, .. } = step {
            self.said_ready(*generation);
        }
    }

    /// It was told to drain: look for the blocking-socket trap.
    pub(super) fn draining(&mut self, gen_id: GenId, pgid: i32, now: Instant) {
        self.stop_accept_probe(gen_id);
        if self.drain_started.contains_key(&gen_id) {
            return;
        }
        self.drain_started.insert(gen_id, now);
        self.watches.insert(
            gen_id,
            Watch {
                pgid,
                since: now,
                next: now + DRAIN_PROBES[0],
                mode: Mode::Draining { next_probe: 0 },
            },
        );
    }

    /// Its process group is gone.
    pub(super) fn gone(&mut self, gen_id: GenId) {
        self.stop_accept_probe(gen_id);
        self.watches.remove(&gen_id);
        self.drain_started.remove(&gen_id);
    }

    /// When the next probe is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.watches.values().map(|w| w.next).min()
    }

    /// Runs every probe due at `now`; pushes what the state machine must
    /// hear onto `queue`.
    pub(super) fn run_due(&mut self, now: Instant, queue: &mut VecDeque<Event>) {
        let due: Vec<GenId> = self
            .watches
            .iter()
            .filter(|(_, w)| w.next <= now)
            .map(|(&gen_id, _)| gen_id)
            .collect();
        for gen_id in due {
            self.run(gen_id, now, queue);
        }
    }

    fn run(&mut self, gen_id: GenId, now: Instant, queue: &mut VecDeque<Event>) {
        let sockets = match &self.sockets {
            Ok(sockets) => sockets.clone(),
            Err(why) => {
                if let Some(Watch {
                    mode: Mode::Readiness,
                    ..
                }) = self.watches.remove(&gen_id)
                {
                    queue.push_back(Event::ProbeFailed {
                        gen_id,
                        why: why.clone(),
                    });
                }
                return;
            }
        };
        let Some(w) = self.watches.get_mut(&gen_id) else {
            return;
        };
        let pids = readiness::generation_pids(w.pgid);
        let probe = readiness::probe(&pids, &sockets);
        match w.mode {
            Mode::Readiness => {
                if probe.ready() {
                    self.watches.remove(&gen_id);
                    let how = match probe.waits.first() {
                        Some(wait) => describe(wait, &sockets),
                        None => probe.reason().unwrap_or_default(),
                    };
                    queue.push_back(Event::Listening {
                        gen_id,
                        how,
                        at: now,
                        accepted: false,
                    });
                } else if let Some((pid, kind)) = probe.unreadable.first() {
                    self.watches.remove(&gen_id);
                    queue.push_back(Event::ProbeFailed {
                        gen_id,
                        why: format!("/proc/{pid}: {kind}"),
                    });
                } else {
                    w.next = now + interval(now.saturating_duration_since(w.since));
                }
            }
            Mode::Draining { next_probe } => {
                let draining_for = now.saturating_duration_since(w.since);
                if let Some(why) = trap(&probe, draining_for) {
                    warn!(generation = gen_id, "{why}");
                    self.watches.remove(&gen_id);
                    return;
                }
                match DRAIN_PROBES.get(next_probe + 1) {
                    Some(after) => {
                        w.mode = Mode::Draining {
                            next_probe: next_probe + 1,
                        };
                        w.next = w.since + *after;
                    }
                    None => {
                        self.watches.remove(&gen_id);
                    }
                }
            }
        }
    }

    /// Generation `gen_id` (group `pgid`) is about to get SIGKILL at its
    /// drain timeout: says why it is still running, as far as `/proc`
    /// shows, in words a user can act on.
    pub(super) fn diagnose_drain_timeout(&self, gen_id: GenId, pgid: i32, now: Instant) {
        let Ok(sockets) = &self.sockets else {
            return;
        };
        let Some(since) = self.drain_started.get(&gen_id) else {
            return;
        };
        let draining_for = now.saturating_duration_since(*since);
        let pids = readiness::group_pids(pgid);
        if pids.is_empty() {
            return;
        }
        let probe = readiness::probe(&pids, sockets);
        if let Some(why) = trap(&probe, draining_for) {
            warn!(generation = gen_id, "{why}");
            return;
        }
        match readiness::open_connections(&pids, &self.ports) {
            Some(0) => warn!(
                generation = gen_id,
                "had no connection open after {}, yet did not exit: its shutdown waits for something else \
                 (a background task, a child process), or it ignores the drain signal; see {README_DRAINING}",
                ms(draining_for)
            ),
            Some(n) => warn!(
                generation = gen_id,
                "still had {n} connection{} open after {}: its shutdown does not close idle keep-alive connections \
                 (or waits for long requests); see {README_DRAINING}",
                if n == 1 { "" } else { "s" },
                ms(draining_for)
            ),
            None => debug!(generation = gen_id, "cannot count its connections"),
        }
    }
}

/// For the log: `pid=P polls fd 3 with epoll` or `pid=P blocked in accept4 on fd 3`.
fn describe(wait: &Wait, sockets: &[PassedSocket]) -> String {
    let fd_of = |inode: u64| {
        sockets
            .iter()
            .position(|s| s.inode == inode)
            .map(|i| devsup_protocol::FIRST_FD + i as i32)
    };
    match wait {
        Wait::Epoll { pid, inode, .. } => match fd_of(*inode) {
            Some(fd) => format!("pid={pid} polls fd {fd} with epoll"),
            None => wait.describe(),
        },
        Wait::Blocked {
            pid, syscall, fd, ..
        } => format!("pid={pid} blocked in {syscall} on fd {fd}"),
    }
}

/// The blocking-socket trap in a draining generation, as a warning that
/// names the fix; `None` if there is none to see (or not yet).
fn trap(probe: &Probe, draining_for: Duration) -> Option<String> {
    if let Some(advice) = probe.trap_advice() {
        return Some(format!(
            "draining for {}, but {advice}, or run devsup with --nonblocking. \
             Until then each reload waits for the drain timeout, then kills it with the connections it holds",
            ms(draining_for)
        ));
    }
    // A plain blocking accept loop: only a sign of trouble once the drain
    // has had time to start.
    if draining_for < Duration::from_secs(1) {
        return None;
    }
    match probe.blocking_accepts().next() {
        Some(Wait::Blocked {
            pid, syscall, fd, ..
        }) => Some(format!(
            "draining for {}, but pid={pid} is still blocked in {syscall} on fd {fd}, a blocking socket: \
             it cannot notice the drain signal until a connection arrives. \
             Fix: stop accepting from the signal handler (or let the signal end the process), \
             or make the listener non-blocking and wait for it with poll/epoll (--nonblocking passes it non-blocking)",
            ms(draining_for)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::Rule;

    #[test]
    fn a_generation_counted_ready_by_the_timer_is_probed_no_more() {
        let (tx, _rx) = std::sync::mpsc::channel();
        let mut probes = Probes::new(&[], true, tx);
        let now = Instant::now();
        probes.spawned(1, 100, now);
        probes.spawned(2, 200, now);
        assert_eq!(probes.next_due(), Some(now));
        probes.reported(&Step::Ready {
            generation: 1,
            rule: Rule::Uptime,
            how: None,
            ready_us: 1000,
        });
        assert!(!probes.watches.contains_key(&1));
        assert!(probes.watches.contains_key(&2), "only that generation");
        probes.reported(&Step::Ready {
            generation: 2,
            rule: Rule::Notify,
            how: None,
            ready_us: 1000,
        });
        assert_eq!(probes.next_due(), None);
    }

    #[test]
    fn probes_are_frequent_at_first_then_slow_down() {
        let ms = Duration::from_millis;
        assert_eq!(interval(ms(0)), ms(2));
        assert_eq!(interval(ms(80)), ms(2));
        assert_eq!(interval(ms(200)), ms(5));
        assert_eq!(interval(ms(400)), ms(10));
        assert_eq!(interval(ms(5000)), ms(10));
        assert_eq!(interval(Duration::from_secs(30)), ms(25));
        assert_eq!(interval(Duration::from_secs(60)), ms(250));
    }

    #[test]
    fn the_trap_is_named_with_its_fix() {
        let blocked = Wait::Blocked {
            pid: 10,
            tid: 11,
            syscall: "accept4",
            fd: 3,
            inode: 99,
            blocking: true,
        };
        let epoll = Wait::Epoll {
            pid: 10,
            epfd: 5,
            inode: 99,
        };
        let probe = Probe {
            waits: vec![epoll, blocked.clone()],
            unreadable: vec![],
        };
        let why = trap(&probe, Duration::from_millis(200)).unwrap();
        assert!(
            why.contains("set_nonblocking(true)") && why.contains("--nonblocking"),
            "{why}"
        );
        // A plain blocking loop: only after a second of draining.
        let plain = Probe {
            waits: vec![blocked],
            unreadable: vec![],
        };
        assert_eq!(trap(&plain, Duration::from_millis(200)), None);
        let why = trap(&plain, Duration::from_secs(1)).unwrap();
        assert!(why.contains("still blocked in accept4 on fd 3"), "{why}");
        assert_eq!(trap(&Probe::default(), Duration::from_secs(5)), None);
    }
}
