//! Build steps: run one after the other before each generation; a change
//! during a build cancels it and starts it again; a failing step ends the
//! reload and keeps what serves.

use std::time::Instant;

use crate::signal::Signal;

use super::{Action, BUILD_CANCEL_GRACE, State, report};
use crate::event::Exit;
use crate::step::{BuildStatus, Step};

/// The build under way: one step at a time, in order.
#[derive(Debug, Clone)]
pub(super) struct Build {
    /// The step running (0-based).
    pub(super) step: usize,
    /// Its process group, once `BuildStarted` has said.
    pub(super) pid: Option<i32>,
    /// When the first step started.
    pub(super) started: Instant,
    /// When this step started.
    pub(super) step_started: Instant,
    /// Set once it has been told to stop; SIGKILL at this time.
    pub(super) cancel_kill_at: Option<Instant>,
    /// Whether to start the build again once the cancelled one is gone.
    pub(super) restart: bool,
    /// When the trigger of the reload it builds for was seen.
    pub(super) trigger_at: Instant,
}

impl Build {
    /// Tells the build to stop: SIGTERM to its group now (or as soon as its
    /// pid is known), SIGKILL after [`BUILD_CANCEL_GRACE`]. Returns false if
    /// it had already been told.
    pub(super) fn cancel(&mut self, now: Instant, out: &mut Vec<Action>) -> bool {
        if self.cancel_kill_at.is_some() {
            return false;
        }
        self.cancel_kill_at = Some(now + BUILD_CANCEL_GRACE);
        if let Some(pid) = self.pid {
            out.push(Action::SignalBuild {
                pid,
                signal: Signal::SIGTERM,
            });
        }
        true
    }
}

impl State {
    /// Starts the build, or the generation if there is no build.
    pub(super) fn begin(&mut self, trigger_at: Instant, now: Instant, out: &mut Vec<Action>) {
        if self.policy.build_steps > 0 {
            self.build = Some(Build {
                step: 0,
                pid: None,
                started: now,
                step_started: now,
                cancel_kill_at: None,
                restart: false,
                trigger_at,
            });
            out.push(Action::StartBuild { step: 0 });
        } else {
            self.spawn(Some(trigger_at), now, out);
        }
    }

    pub(super) fn on_build_started(&mut self, pid: i32, out: &mut Vec<Action>) {
        if let Some(b) = &mut self.build {
            b.pid = Some(pid);
            // A cancel that came before the pid was known.
            if b.cancel_kill_at.is_some() {
                out.push(Action::SignalBuild {
                    pid,
                    signal: Signal::SIGTERM,
                });
            }
        }
    }

    pub(super) fn on_build_exited(
        &mut self,
        exit: Option<Exit>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(build) = self.build.take() else {
            return;
        };
        let finished = |status| {
            Step::build_finished(
                status,
                build.step,
                self.policy.build_steps,
                exit,
                now.duration_since(build.started),
            )
        };
        if self.shutdown.is_some() {
            report(out, finished(BuildStatus::Stopped));
            return;
        }
        if build.restart {
            report(out, finished(BuildStatus::Cancelled));
            let trigger_at = build.trigger_at;
            self.begin(trigger_at, now, out);
            return;
        }
        let step = build.step;
        match exit {
            Some(exit) if exit.success() => {
                if step + 1 < self.policy.build_steps {
                    self.build = Some(Build {
                        step: step + 1,
                        pid: None,
                        step_started: now,
                        ..build
                    });
                    out.push(Action::StartBuild { step: step + 1 });
                } else {
                    report(out, finished(BuildStatus::Ok));
                    self.spawn(Some(build.trigger_at), now, out);
                }
            }
            _ => {
                let mut step = finished(BuildStatus::Failed);
                if let Step::BuildFinished {
                    step_duration,
                    keeping,
                    ..
                } = &mut step
                {
                    *step_duration = now.duration_since(build.step_started);
                    *keeping = self.active();
                }
                report(out, step);
            }
        }
    }
}
