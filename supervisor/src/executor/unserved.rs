//! Saying, once, that connections wait while no generation serves.
//!
//! devsup binds the ports before the first build; until the first
//! generation is spawned, nobody accepts, and a browser or `curl` hangs
//! with no word why. Without `--livereload` (which answers them with a
//! page instead, see `livereload/down.rs`), the log says so once when the
//! first build starts, and once after a first build failed, with what to
//! do. With `--livereload`, it says once that devsup answers them with
//! its page. Once a generation was spawned, the steps of later builds say
//! it all.

use crate::step::{BuildStatus, Step, Unserved as Why};

/// What was said, and whether a generation was ever spawned.
#[derive(Debug)]
pub(crate) struct Unserved {
    addrs: Vec<String>,
    /// Off when there is nothing to say it of.
    on: bool,
    /// `--livereload`: devsup answers them with its page.
    page: bool,
    spawned: bool,
    said_building: bool,
    said_failed: bool,
}

impl Unserved {
    /// For the served addresses `addrs`; `page` with `--livereload`.
    pub(crate) fn new(addrs: Vec<String>, page: bool) -> Unserved {
        Unserved {
            on: !addrs.is_empty(),
            page,
            addrs,
            spawned: false,
            said_building: false,
            said_failed: false,
        }
    }

    /// The step to report after `step`, if there is one.
    pub(crate) fn after(&mut self, step: &Step) -> Option<Step> {
        if !self.on || self.spawned {
            return None;
        }
        let why = match step {
            Step::Spawned { .. } => {
                self.spawned = true;
                return None;
            }
            Step::BuildStarted { step: 1, .. } if !self.said_building => {
                self.said_building = true;
                if self.page { Why::Page } else { Why::Building }
            }
            Step::BuildFinished {
                status: BuildStatus::Failed,
                ..
            } if !self.said_failed && !self.page => {
                self.said_failed = true;
                Why::BuildFailed
            }
            _ => return None,
        };
        Some(Step::Unserved {
            addrs: self.addrs.clone(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(step: usize) -> Step {
        Step::BuildStarted {
            step,
            steps: 2,
            command: "make".into(),
        }
    }

    fn failed() -> Step {
        Step::BuildFinished {
            status: BuildStatus::Failed,
            step: 1,
            steps: 2,
            code: Some(1),
            signal: None,
            duration_us: 1,
            output_tail: None,
            output: None,
            step_duration: std::time::Duration::ZERO,
            keeping: None,
        }
    }

    fn why(step: Option<Step>) -> Option<Why> {
        step.map(|s| match s {
            Step::Unserved { why, addrs } => {
                assert_eq!(addrs, ["127.0.0.1:8080"]);
                why
            }
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn said_once_while_building_and_once_after_a_failure_until_a_spawn() {
        let mut u = Unserved::new(vec!["127.0.0.1:8080".into()], false);
        assert_eq!(why(u.after(&started(1))), Some(Why::Building));
        assert_eq!(why(u.after(&started(2))), None, "one build, one line");
        assert_eq!(why(u.after(&failed())), Some(Why::BuildFailed));
        assert_eq!(why(u.after(&started(1))), None, "once");
        assert_eq!(why(u.after(&failed())), None, "once");
        let spawned = Step::Spawned {
            generation: 1,
            pid: 9,
            after_trigger_us: None,
        };
        let mut u = Unserved::new(vec!["127.0.0.1:8080".into()], false);
        assert_eq!(why(u.after(&spawned)), None);
        assert_eq!(why(u.after(&started(1))), None, "a generation was spawned");
        assert_eq!(
            why(u.after(&failed())),
            None,
            "the overlay or keeping line says it"
        );
    }

    #[test]
    fn with_livereload_the_page_is_said_once() {
        let mut u = Unserved::new(vec!["127.0.0.1:8080".into()], true);
        assert_eq!(why(u.after(&started(1))), Some(Why::Page));
        assert_eq!(why(u.after(&failed())), None, "the page shows it");
        assert_eq!(why(u.after(&started(1))), None);
    }
}
