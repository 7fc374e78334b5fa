//! The debounce of one burst of changes, with an upper bound, and the
//! paths that keep every burst from going quiet.
//!
//! A burst ends once no relevant change has been seen for `--debounce`,
//! or at the latest [`MAX_HOLD`] after that from its first change: a file
//! written all the time (a log, a journal, a database in the tree) would
//! otherwise hold every reload back for as long as it is written.
//! watchexec and Django bound their waits too. A path still changing when
//! a burst is cut short, [`RESTLESS_BURSTS`] bursts in a row, is named
//! once ([`Burst::end`]), with the `--ignore` that silences it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How much longer than `--debounce` after its first change a burst may
/// last: an edit reloads within `--debounce` + this, whatever else
/// changes.
pub(super) const MAX_HOLD: Duration = Duration::from_secs(1);

/// Bursts cut short in a row by the same path before it is named.
pub(super) const RESTLESS_BURSTS: u32 = 3;

/// The burst under way, and the paths that held the last ones back.
#[derive(Debug)]
pub(super) struct Burst {
    debounce: Duration,
    /// The first and the last relevant change of the burst under way.
    first: Option<Instant>,
    last: Option<Instant>,
    /// When each path of this burst last changed.
    changes: HashMap<PathBuf, Instant>,
    /// Bursts cut short in a row while each path was still changing.
    streaks: HashMap<PathBuf, u32>,
    /// Paths named already.
    named: HashSet<PathBuf>,
}

/// A path named as holding every reload back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Restless {
    pub(super) path: PathBuf,
    /// Bursts it held back in a row.
    pub(super) bursts: u32,
}

impl Burst {
    pub(super) fn new(debounce: Duration) -> Burst {
        Burst {
            debounce,
            first: None,
            last: None,
            changes: HashMap::new(),
            streaks: HashMap::new(),
            named: HashSet::new(),
        }
    }

    /// `paths` changed at `now`.
    pub(super) fn changed<'a>(&mut self, now: Instant, paths: impl IntoIterator<Item = &'a Path>) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        for path in paths {
            self.changes.insert(path.to_path_buf(), now);
        }
    }

    /// When the burst under way ends: `--debounce` after its last change,
    /// or [`MAX_HOLD`] later than that after its first.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let quiet = super::after(self.last?, self.debounce);
        let most = super::after(self.first?, self.debounce + MAX_HOLD);
        Some(quiet.min(most))
    }

    /// The burst ends at `now`; returns the paths that held
    /// [`RESTLESS_BURSTS`] bursts back in a row, each once in devsup's
    /// life. A path holds a burst back when the burst lasted at least
    /// half of [`MAX_HOLD`] past `--debounce` and the path still changed
    /// in its second half: cut short, or ended by a pause in the writes
    /// (a writer on a loaded machine misses its pace now and then).
    pub(super) fn end(&mut self, now: Instant) -> Vec<Restless> {
        let half = MAX_HOLD / 2;
        let late = self
            .first
            .filter(|first| now.saturating_duration_since(*first) >= self.debounce + half)
            .map(|first| super::after(first, half));
        let holding: HashSet<PathBuf> = match late {
            Some(late) => (self.changes.iter())
                .filter(|(_, at)| **at >= late)
                .map(|(p, _)| p.clone())
                .collect(),
            None => HashSet::new(),
        };
        // A path that was in a short burst keeps its streak (a pause
        // right after a cut makes one); one absent from a burst, or early
        // only in a long one, loses it.
        let changes = &self.changes;
        self.streaks
            .retain(|p, _| holding.contains(p) || (late.is_none() && changes.contains_key(p)));
        let mut named = Vec::new();
        for path in holding {
            let streak = self.streaks.entry(path.clone()).or_insert(0);
            *streak += 1;
            if *streak >= RESTLESS_BURSTS && self.named.insert(path.clone()) {
                named.push(Restless {
                    path,
                    bursts: *streak,
                });
            }
        }
        self.first = None;
        self.last = None;
        self.changes.clear();
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_burst_ends_debounce_after_its_last_change() {
        let t0 = Instant::now();
        let mut b = Burst::new(50 * MS);
        assert_eq!(b.deadline(), None);
        b.changed(t0, [Path::new("a.rs")]);
        b.changed(t0 + 30 * MS, [Path::new("b.rs")]);
        assert_eq!(b.deadline(), Some(t0 + 80 * MS));
        assert!(b.end(t0 + 80 * MS).is_empty());
        assert_eq!(b.deadline(), None);
    }

    /// The case: a log written every 20 ms. The edit reloads
    /// within debounce + MAX_HOLD, and the log is named once, after
    /// RESTLESS_BURSTS bursts it held back.
    #[test]
    fn a_path_written_all_the_time_cannot_hold_a_burst_back() {
        let t0 = Instant::now();
        let debounce = 50 * MS;
        let mut b = Burst::new(debounce);
        let log = Path::new("app.log");
        let mut now = t0;
        b.changed(now, [Path::new("main.rs")]);
        let mut named = Vec::new();
        let mut ends = Vec::new();
        while now < t0 + 10 * (debounce + MAX_HOLD) {
            now += 20 * MS;
            if b.deadline().is_some_and(|d| d <= now) {
                ends.push(now);
                named.extend(b.end(now));
            }
            b.changed(now, [log]);
        }
        assert!(ends[0] <= t0 + debounce + MAX_HOLD + 20 * MS, "{ends:?}");
        assert!(ends.len() >= 9, "each burst is cut: {ends:?}");
        assert_eq!(
            named,
            [Restless {
                path: log.into(),
                bursts: RESTLESS_BURSTS
            }],
            "named once"
        );
    }

    /// A writer that misses its pace now and then (a pause longer than
    /// the debounce ends a burst early) is still named.
    #[test]
    fn a_writer_with_pauses_is_named_too() {
        let t0 = Instant::now();
        let debounce = 50 * MS;
        let mut b = Burst::new(debounce);
        let log = Path::new("app.log");
        let mut now = t0;
        let mut named = Vec::new();
        for i in 0..400u32 {
            // Every 20 ms, but 80 ms every 37th write (which falls at
            // every point of the bursts, right after a cut too).
            now += if i % 37 == 36 { 80 * MS } else { 20 * MS };
            if b.deadline().is_some_and(|d| d <= now) {
                named.extend(b.end(now));
            }
            b.changed(now, [log]);
        }
        assert_eq!(named.len(), 1, "{named:?}");
    }

    #[test]
    fn a_path_edited_in_bursts_that_went_quiet_is_not_restless() {
        let t0 = Instant::now();
        let mut b = Burst::new(50 * MS);
        for i in 0..10 {
            let at = t0 + i * 200 * MS;
            b.changed(at, [Path::new("main.rs")]);
            assert!(b.end(b.deadline().unwrap()).is_empty());
        }
    }
}
