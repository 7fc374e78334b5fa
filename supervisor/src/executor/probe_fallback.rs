//! Readiness seen from the kernel where there is no `/proc` (macOS, the
//! BSDs): the same interface as `probe.rs`, which reads Linux's `/proc`.
//!
//! Each generation that would be probed is reported at once as
//! [`Event::ProbeFailed`], so the state machine takes its documented
//! fallback: `READY=1` when the server sends it, else the `--ready-after`
//! timer. Drains get no diagnosis beyond the drain timeout's own line.

use std::collections::VecDeque;
use std::time::Instant;

use crate::event::{Event, GenId};
use crate::sockets::Listener;
use crate::step::Step;

/// What the executor asks of the probes; here, only to say they cannot.
#[derive(Debug)]
pub(super) struct Probes {
    readiness: bool,
    /// Spawned generations not yet told that the kernel cannot be read.
    unreported: Vec<GenId>,
}

impl Probes {
    pub(super) fn new(
        _listeners: &[Listener],
        readiness: bool,
        _events: std::sync::mpsc::Sender<crate::event::Input>,
    ) -> Probes {
        Probes {
            readiness,
            unreported: Vec::new(),
        }
    }

    pub(super) fn spawned(&mut self, gen_id: GenId, _pgid: i32, _now: Instant) {
        if self.readiness {
            self.unreported.push(gen_id);
        }
    }

    pub(super) fn said_ready(&mut self, gen_id: GenId) {
        self.unreported.retain(|&g| g != gen_id);
    }

    /// A generation counted ready by any rule needs no report either.
    pub(super) fn reported(&mut self, step: &Step) {
        if let Step::Ready { generation, .. } = step {
            self.said_ready(*generation);
        }
    }

    pub(super) fn draining(&mut self, _gen_id: GenId, _pgid: i32, _now: Instant) {}

    pub(super) fn gone(&mut self, gen_id: GenId) {
        self.unreported.retain(|&g| g != gen_id);
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        (!self.unreported.is_empty()).then(Instant::now)
    }

    pub(super) fn run_due(&mut self, _now: Instant, queue: &mut VecDeque<Event>) {
        for gen_id in self.unreported.drain(..) {
            queue.push_back(Event::ProbeFailed {
                gen_id,
                why: "this platform has no /proc to see it wait on the socket".into(),
            });
        }
    }

    pub(super) fn diagnose_drain_timeout(&self, _gen_id: GenId, _pgid: i32, _now: Instant) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spawned_generation_is_reported_once_as_unprobeable() {
        let mut probes = Probes::new(&[], true, std::sync::mpsc::channel().0);
        assert_eq!(probes.next_due(), None);
        probes.spawned(1, 100, Instant::now());
        probes.spawned(2, 200, Instant::now());
        probes.said_ready(2);
        assert!(probes.next_due().is_some());
        let mut queue = VecDeque::new();
        probes.run_due(Instant::now(), &mut queue);
        assert!(matches!(
            queue.as_slices().0,
            [Event::ProbeFailed { gen_id: 1, .. }]
        ));
        assert_eq!(probes.next_due(), None);
    }

    #[test]
    fn ready_notify_never_probes() {
        let mut probes = Probes::new(&[], false, std::sync::mpsc::channel().0);
        probes.spawned(1, 100, Instant::now());
        assert_eq!(probes.next_due(), None);
    }
}
