//! What a load phase leaves for its chart: the load generator's
//! [`Timeline`] and the instants of each trigger, READY and drain signal,
//! from devsup's log; written as CSV beside the printed tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devsup_tests::devlog;
use devsup_tests::load::{LoadReport, Timeline};

/// What a vertical mark on a chart stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A reload was asked for: `reload requested by ...` in devsup's log,
    /// or the bench's own file write for a tool that logs nothing.
    Trigger,
    /// `gen=N ready` (or `counted ready`): the new generation took over.
    Ready,
    /// `gen=M draining`: the old generation got its drain signal.
    Drain,
}

impl MarkKind {
    /// The name in the CSV file.
    pub fn name(self) -> &'static str {
        match self {
            MarkKind::Trigger => "trigger",
            MarkKind::Ready => "ready",
            MarkKind::Drain => "drain",
        }
    }
}

/// One instant of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// From the start of the phase's load.
    pub at: Duration,
    /// What happened.
    pub kind: MarkKind,
    /// The generation the log line is about, if any.
    pub generation: Option<u64>,
}

/// One load phase, ready to be written and drawn.
#[derive(Debug, Clone)]
pub struct Phase {
    /// File name stem, e.g. `handoff-keep-alive-reload`.
    pub name: String,
    /// What the chart says it is, e.g. `devsup, keep-alive, SIGHUP every 1s`.
    pub label: String,
    /// Requests window by window.
    pub timeline: Timeline,
    /// Triggers, READY and drain signals.
    pub marks: Vec<Mark>,
    /// Failed requests in the whole phase.
    pub failed: u64,
}

impl Phase {
    /// A phase from a load report run with a window (panics without one:
    /// a bug in the bench).
    pub fn new(name: &str, label: &str, report: &LoadReport, marks: Vec<Mark>) -> Phase {
        Phase {
            name: name.to_owned(),
            label: label.to_owned(),
            timeline: report
                .timeline
                .clone()
                .expect("the bench asks for a timeline"),
            marks,
            failed: report.failures(),
        }
    }
}

/// The marks in devsup's log `lines` (each with the instant it arrived),
/// from `started` on; earlier lines (generation 1 starting) are skipped.
pub fn marks_from_log(lines: &[(Instant, String)], started: Instant) -> Vec<Mark> {
    let mut marks = Vec::new();
    for (arrived, line) in lines {
        let Some(at) = arrived.checked_duration_since(started) else {
            continue;
        };
        let subject = devlog::subject(line);
        let kind = match subject {
            _ if line.contains("reload requested by") => MarkKind::Trigger,
            Some((_, rest)) if rest.starts_with("ready") || rest.starts_with("counted ready") => {
                MarkKind::Ready
            }
            Some((_, rest)) if rest.starts_with("draining") => MarkKind::Drain,
            _ => continue,
        };
        let generation = subject
            .map(|(g, _)| g)
            .filter(|_| kind != MarkKind::Trigger);
        marks.push(Mark {
            at,
            kind,
            generation,
        });
    }
    marks
}

/// The timeline as CSV: one row per window.
pub fn timeline_csv(timeline: &Timeline) -> String {
    let mut csv = String::from("t_s,ok,failed,ok_per_s,p50_ms,p99_ms\n");
    let ms = |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.3}", millis(d)));
    for w in &timeline.windows {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{:.0},{},{}",
            w.start.as_secs_f64(),
            w.ok,
            w.failed,
            timeline.ok_per_second(w),
            ms(w.p50),
            ms(w.p99),
        );
    }
    csv
}

/// The marks as CSV: one row per mark.
pub fn marks_csv(marks: &[Mark]) -> String {
    let mut csv = String::from("t_s,kind,generation\n");
    for m in marks {
        let generation = m.generation.map_or(String::new(), |g| g.to_string());
        let _ = writeln!(
            csv,
            "{:.4},{},{generation}",
            m.at.as_secs_f64(),
            m.kind.name()
        );
    }
    csv
}

/// Writes `<out>/<name>.csv` and `<out>/<name>-marks.csv`; returns the
/// first path.
pub fn write_csv(out: &Path, phase: &Phase) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{}.csv", phase.name));
    std::fs::write(&path, timeline_csv(&phase.timeline))?;
    std::fs::write(
        out.join(format!("{}-marks.csv", phase.name)),
        marks_csv(&phase.marks),
    )?;
    Ok(path)
}

/// A duration in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use devsup_tests::load::Window;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn marks_from_devsup_log() {
        let t0 = Instant::now();
        let lines: Vec<(Instant, String)> = [
            (0, "devsup gen=1 ready in 3ms"),
            (10, "devsup reload requested by SIGHUP"),
            (11, "devsup gen=2 spawned pid=7 in 80us after trigger"),
            (15, "devsup gen=2 ready in 4ms"),
            (16, "devsup gen=1 draining (SIGTERM) 40us after gen=2 ready"),
            (20, "devsup-server gen=1 pid=5: draining after SIGTERM"),
            (30, "devsup gen=3 counted ready after 1s"),
        ]
        .into_iter()
        .map(|(ms, line)| (t0 + ms * MS, line.to_owned()))
        .collect();
        let marks = marks_from_log(&lines, t0 + 5 * MS);
        let got: Vec<(Duration, MarkKind, Option<u64>)> =
            marks.iter().map(|m| (m.at, m.kind, m.generation)).collect();
        assert_eq!(
            got,
            [
                (5 * MS, MarkKind::Trigger, None),
                (10 * MS, MarkKind::Ready, Some(2)),
                (11 * MS, MarkKind::Drain, Some(1)),
                (25 * MS, MarkKind::Ready, Some(3)),
            ]
        );
        assert_eq!(
            marks_csv(&marks[..2]),
            "t_s,kind,generation\n0.0050,trigger,\n0.0100,ready,2\n"
        );
    }

    #[test]
    fn timeline_rows() {
        let timeline = Timeline {
            window: 100 * MS,
            end: 150 * MS,
            windows: vec![
                Window {
                    start: Duration::ZERO,
                    ok: 250,
                    failed: 0,
                    p50: Some(Duration::from_micros(250)),
                    p99: Some(2 * MS),
                },
                Window {
                    start: 100 * MS,
                    ok: 0,
                    failed: 3,
                    p50: None,
                    p99: None,
                },
            ],
        };
        assert_eq!(
            timeline_csv(&timeline),
            "t_s,ok,failed,ok_per_s,p50_ms,p99_ms\n\
             0.000,250,0,2500,0.250,2.000\n\
             0.100,0,3,0,,\n"
        );
    }
}
