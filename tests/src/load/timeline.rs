//! A run's requests over time, window by window, for the benchmark's
//! plots: how many succeeded and failed, and the latency quantiles of the
//! successful ones. A successful request counts in the window in which it
//! finished; a failed one in the window in which it started, when it was
//! lost (a timeout is known only a timeout later).
//!
//! Off unless [`LoadConfig::window`](super::LoadConfig::window) is set:
//! tests need totals only.

use std::time::Duration;

use crate::stats;

/// One window of a [`Timeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Its start, from the start of the run.
    pub start: Duration,
    /// Requests that finished in it, successfully.
    pub ok: u64,
    /// Requests that started in it and failed (any outcome but ok).
    pub failed: u64,
    /// Median latency of its successful requests (`None`: there were none).
    pub p50: Option<Duration>,
    /// 99th percentile latency of its successful requests.
    pub p99: Option<Duration>,
}

/// The requests of a run, window by window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The width of each window (the last one may be cut short by `end`).
    pub window: Duration,
    /// When the run ended, from its start.
    pub end: Duration,
    /// Every window from the start of the run to its end, empty ones too.
    pub windows: Vec<Window>,
}

impl Timeline {
    /// How long `window` lasted: the window's width, or less for the last
    /// one, which the end of the run cuts short.
    pub fn width(&self, window: &Window) -> Duration {
        self.window
            .min(self.end.saturating_sub(window.start))
            .max(Duration::from_micros(1))
    }

    /// Successful requests per second in `window`.
    pub fn ok_per_second(&self, window: &Window) -> f64 {
        window.ok as f64 / self.width(window).as_secs_f64()
    }

    /// All failed requests.
    pub fn failed(&self) -> u64 {
        self.windows.iter().map(|w| w.failed).sum()
    }
}

/// What one client (or the whole run, once merged) recorded per window.
#[derive(Debug, Clone, Default)]
pub(super) struct Recorder {
    window: Duration,
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    ok: u64,
    failed: u64,
    /// Latencies of the successful requests, in microseconds.
    latencies: Vec<u32>,
}

impl Recorder {
    pub(super) fn new(window: Duration) -> Recorder {
        Recorder {
            window: window.max(Duration::from_millis(1)),
            slots: Vec::new(),
        }
    }

    fn slot(&mut self, at: Duration) -> &mut Slot {
        let index = (at.as_nanos() / self.window.as_nanos()) as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, Slot::default);
        }
        &mut self.slots[index]
    }

    /// A request, `at` after the start of the run: successful with
    /// `Some(latency)` (`at` is when it finished), failed with `None` (`at`
    /// is when it started).
    pub(super) fn record(&mut self, at: Duration, latency: Option<Duration>) {
        let slot = self.slot(at);
        match latency {
            Some(latency) => {
                slot.ok += 1;
                let micros = latency.as_micros().min(u128::from(u32::MAX)) as u32;
                slot.latencies.push(micros);
            }
            None => slot.failed += 1,
        }
    }

    pub(super) fn merge(&mut self, other: Recorder) {
        if self.slots.len() < other.slots.len() {
            self.slots.resize_with(other.slots.len(), Slot::default);
        }
        for (mine, theirs) in self.slots.iter_mut().zip(other.slots) {
            mine.ok += theirs.ok;
            mine.failed += theirs.failed;
            mine.latencies.extend(theirs.latencies);
        }
    }

    /// The timeline of a run that lasted `elapsed`.
    pub(super) fn finish(mut self, elapsed: Duration) -> Timeline {
        let last = (elapsed.as_nanos() / self.window.as_nanos()) as usize;
        if self.slots.len() <= last {
            self.slots.resize_with(last + 1, Slot::default);
        }
        let window = self.window;
        let windows = (self.slots.into_iter().enumerate())
            .map(|(i, mut slot)| {
                slot.latencies.sort_unstable();
                let quantile = |q| {
                    stats::quantile(&slot.latencies, q)
                        .map(|us| Duration::from_micros(u64::from(us)))
                };
                Window {
                    start: window * i as u32,
                    ok: slot.ok,
                    failed: slot.failed,
                    p50: quantile(0.5),
                    p99: quantile(0.99),
                }
            })
            .collect();
        Timeline {
            window,
            end: elapsed,
            windows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn windows_by_finish_time() {
        let mut a = Recorder::new(100 * MS);
        a.record(5 * MS, Some(2 * MS));
        a.record(99 * MS, Some(4 * MS));
        a.record(250 * MS, None);
        let mut b = Recorder::new(100 * MS);
        b.record(100 * MS, Some(9 * MS));
        a.merge(b);
        let t = a.finish(450 * MS);
        assert_eq!(t.windows.len(), 5, "{t:?}");
        let w = &t.windows;
        assert_eq!((w[0].ok, w[0].failed), (2, 0));
        assert_eq!((w[0].p50, w[0].p99), (Some(4 * MS), Some(4 * MS)));
        assert_eq!((w[1].start, w[1].ok, w[1].p50), (100 * MS, 1, Some(9 * MS)));
        assert_eq!((w[2].ok, w[2].failed, w[2].p99), (0, 1, None));
        assert_eq!((w[4].start, w[4].ok), (400 * MS, 0));
        assert_eq!(t.failed(), 1);
        assert_eq!(t.ok_per_second(&w[0]), 20.0);
        // The last window lasted 50 ms of its 100.
        assert_eq!(t.width(&w[4]), 50 * MS);
        assert_eq!(t.end, 450 * MS);
    }
}
