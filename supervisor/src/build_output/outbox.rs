//! The steps the executor publishes, in order, without ever blocking the
//! loop on a failed build's output.
//!
//! A failed build's `Step::BuildFinished` carries the end of what its last
//! step printed. Its process group is gone by then, but the last of the
//! output may still be on its way through the tee's pipes, or a process
//! that left the group (a compiler cache server) may hold them open. So
//! that step, and every step after it, is held until the output has ended
//! or [`OUTPUT_EOF_WAIT`] has passed, then published with what was
//! captured. The tee wakes the loop when the output ends
//! ([`tee::Tail::when_ended`]); [`Outbox::next_wake`] says when the wait
//! runs out.

use std::time::{Duration, Instant};

use super::tee;
use crate::step::{BuildStatus, Step};

/// How long a failed build step's output may take to reach its end of
/// file once its process group is gone, before its end is reported
/// without the rest.
pub(crate) const OUTPUT_EOF_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Held {
    /// The failed build's output.
    tail: tee::Tail,
    /// When to publish without the rest of it.
    until: Instant,
    /// The failed build's step first, then the steps reported since.
    steps: Vec<Step>,
}

/// Steps to publish, in order; see the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    held: Option<Held>,
}

impl Outbox {
    /// Takes `step`; returns the steps to publish now, in order. `output`
    /// is the last build step's, if it was captured.
    pub(crate) fn push(
        &mut self,
        step: Step,
        output: Option<&tee::Tail>,
        now: Instant,
    ) -> Vec<Step> {
        if let Some(held) = &mut self.held {
            held.steps.push(step);
            return Vec::new();
        }
        let failed = matches!(
            step,
            Step::BuildFinished {
                status: BuildStatus::Failed,
                ..
            }
        );
        match output {
            Some(tail) if failed && !tail.ended() => {
                self.held = Some(Held {
                    tail: tail.clone(),
                    until: now + OUTPUT_EOF_WAIT,
                    steps: vec![step],
                });
                Vec::new()
            }
            _ if failed => vec![with_output(step, output)],
            _ => vec![step],
        }
    }

    /// The steps held, to publish now: once the failed build's output has
    /// ended, its wait has run out, or `force` (devsup exits).
    pub(crate) fn flush(&mut self, now: Instant, force: bool) -> Vec<Step> {
        let due = self
            .held
            .as_ref()
            .is_some_and(|h| force || now >= h.until || h.tail.ended());
        if !due {
            return Vec::new();
        }
        let Some(held) = self.held.take() else {
            return Vec::new();
        };
        let mut steps = held.steps.into_iter();
        let first = steps.next().map(|s| with_output(s, Some(&held.tail)));
        first.into_iter().chain(steps).collect()
    }

    /// When the held steps are published even if the output goes on.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.until)
    }
}

/// A failed build's step with the end of what it printed.
fn with_output(mut step: Step, output: Option<&tee::Tail>) -> Step {
    if let Step::BuildFinished {
        output_tail,
        output: text,
        ..
    } = &mut step
    {
        match output.map(|t| t.printed(Duration::ZERO)) {
            Some(printed) => {
                *output_tail = Some(printed.lines);
                *text = Some(printed.text);
            }
            None => *output_tail = Some(Vec::new()),
        }
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Step {
        Step::BuildFinished {
            status: BuildStatus::Failed,
            step: 1,
            steps: 1,
            code: Some(1),
            signal: None,
            duration_us: 0,
            output_tail: None,
            output: None,
            step_duration: std::time::Duration::ZERO,
            keeping: None,
        }
    }

    fn tail_of(step: &Step) -> Vec<String> {
        match step {
            Step::BuildFinished { output_tail, .. } => output_tail.clone().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_build_whose_output_goes_on_is_held_not_waited_for() {
        let (tail, end) = tee::Tail::open_for_test();
        tail.feed_for_test(b"error: one\n");
        let now = Instant::now();
        let mut outbox = Outbox::default();
        // Returns at once, publishing nothing yet (it used to wait here).
        assert!(outbox.push(failed(), Some(&tail), now).is_empty());
        assert!(
            outbox
                .push(Step::Stopped { code: 1, peak: 0 }, Some(&tail), now)
                .is_empty(),
            "a later step waits behind it"
        );
        assert_eq!(outbox.next_wake(), Some(now + OUTPUT_EOF_WAIT));
        assert!(outbox.flush(now, false).is_empty());
        // The last line arrives, then the output ends.
        tail.feed_for_test(b"error: two\n");
        end();
        let steps = outbox.flush(now, false);
        assert_eq!(steps.len(), 2);
        assert_eq!(tail_of(&steps[0]), ["error: one", "error: two"]);
        assert_eq!(steps[1], Step::Stopped { code: 1, peak: 0 });
        assert_eq!(outbox.next_wake(), None);
    }

    #[test]
    fn a_held_build_is_published_with_what_it_printed_once_the_wait_runs_out() {
        let (tail, _end) = tee::Tail::open_for_test();
        tail.feed_for_test(b"error: one\n");
        let now = Instant::now();
        let mut outbox = Outbox::default();
        assert!(outbox.push(failed(), Some(&tail), now).is_empty());
        let steps = outbox.flush(now + OUTPUT_EOF_WAIT, false);
        assert_eq!(tail_of(&steps[0]), ["error: one"]);
        // Nothing is held any more.
        let next = Step::Stopped { code: 0, peak: 0 };
        assert_eq!(outbox.push(next.clone(), Some(&tail), now), [next]);
    }

    #[test]
    fn other_steps_and_ended_output_go_at_once() {
        let now = Instant::now();
        let mut outbox = Outbox::default();
        let (tail, end) = tee::Tail::open_for_test();
        let started = Step::Stopped { code: 0, peak: 0 };
        assert_eq!(
            outbox.push(started.clone(), Some(&tail), now),
            [started],
            "only a failed build waits"
        );
        tail.feed_for_test(b"last\n");
        end();
        let steps = outbox.push(failed(), Some(&tail), now);
        assert_eq!(tail_of(&steps[0]), ["last"]);
        let steps = outbox.push(failed(), None, now);
        assert_eq!(tail_of(&steps[0]), Vec::<String>::new());
        // devsup exiting publishes what is held.
        let (open, _end) = tee::Tail::open_for_test();
        assert!(outbox.push(failed(), Some(&open), now).is_empty());
        assert_eq!(outbox.flush(now, true).len(), 1);
    }
}
