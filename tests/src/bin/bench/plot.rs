//! Charts of load phases, drawn with plotters into SVG: throughput on top,
//! latency below (p99 bold, p50 thin, log scale), one line per phase, a
//! vertical mark for each trigger, READY and drain signal, and a red dot
//! under every window in which a request failed.

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::prelude::*;

use devsup_tests::load::Window;

use super::record::{MarkKind, Phase, millis};

/// One phase on a chart.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The phase.
    pub phase: &'a Phase,
    /// Its colour.
    pub color: RGBColor,
    /// Whether to draw its marks.
    pub marks: bool,
}

/// The colour of the phase being measured (devsup reloading).
pub const MEASURED: RGBColor = RGBColor(31, 119, 180);
/// The colour of the phase it is compared with (steady, or another tool).
pub const BASELINE: RGBColor = RGBColor(150, 150, 150);
/// The colour of another tool.
pub const OTHER: RGBColor = RGBColor(230, 120, 20);
const FAILED: RGBColor = RGBColor(220, 20, 20);
/// More marks of one kind than this are not drawn (only counted in the
/// legend): they would cover the lines.
const MAX_MARKS: usize = 300;

fn mark_style(kind: MarkKind) -> (RGBColor, &'static str) {
    match kind {
        MarkKind::Trigger => (RGBColor(120, 120, 120), "trigger (SIGHUP or edit)"),
        MarkKind::Ready => (RGBColor(40, 160, 40), "new generation READY"),
        MarkKind::Drain => (RGBColor(150, 60, 190), "old generation told to drain"),
    }
}

/// Draws `lines` under `title` and returns the SVG text.
pub fn svg(title: &str, lines: &[Line<'_>]) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1000, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 20))?;
        let (upper, lower) = root.split_vertically(330);
        throughput(&upper, lines)?;
        latency(&lower, lines)?;
        root.present()?;
    }
    Ok(buf)
}

/// Draws `lines` into `<out>/<name>.svg` and returns its path.
pub fn write(out: &Path, name: &str, title: &str, lines: &[Line<'_>]) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{name}.svg"));
    std::fs::write(&path, svg(title, lines)?)?;
    Ok(path)
}

/// The end of the longest phase, in seconds.
fn x_max(lines: &[Line<'_>]) -> f64 {
    (lines.iter())
        .map(|l| l.phase.timeline.end.as_secs_f64())
        .fold(0.1, f64::max)
}

/// The middle of a window, in seconds.
fn centre(line: &Line<'_>, window: &Window) -> f64 {
    (window.start + line.phase.timeline.width(window) / 2).as_secs_f64()
}

fn throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    lines: &[Line<'_>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let top = (lines.iter())
        .flat_map(|l| l.phase.timeline.windows.iter().map(|w| l.phase.timeline.ok_per_second(w)))
        .fold(1.0, f64::max)
        // Room above the lines for the legend.
        * 1.6;
    let window_ms = lines
        .first()
        .map_or(0.0, |l| millis(l.phase.timeline.window));
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max(lines), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_desc(format!("ok requests/s ({window_ms:.0} ms windows)"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;

    draw_marks(&mut chart, lines, top, true)?;
    for line in lines {
        let timeline = &line.phase.timeline;
        let points =
            (timeline.windows.iter()).map(|w| (centre(line, w), timeline.ok_per_second(w)));
        let color = line.color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!(
                "{} ({} failed)",
                line.phase.label, line.phase.failed
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    let failed: Vec<(f64, f64)> = (lines.iter())
        .flat_map(|line| {
            (line.phase.timeline.windows.iter())
                .filter(|w| w.failed > 0)
                .map(move |w| (centre(line, w), 0.0))
        })
        .collect();
    if !failed.is_empty() {
        chart
            .draw_series(
                failed
                    .into_iter()
                    .map(|p| Circle::new(p, 5, FAILED.filled())),
            )?
            .label("a window with failed requests")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, FAILED.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    lines: &[Line<'_>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let quantiles = || {
        (lines.iter())
            .flat_map(|l| l.phase.timeline.windows.iter())
            .flat_map(|w| [w.p50, w.p99])
            .flatten()
            .map(millis)
    };
    let high = quantiles().fold(1.0, f64::max) * 2.0;
    let low = quantiles().fold(high, f64::min).max(0.001) / 2.0;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max(lines), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_desc("seconds since the load started")
        .y_desc("latency, ms (p99 bold, p50 thin)")
        .y_label_formatter(&log_label)
        .draw()?;
    draw_marks(&mut chart, lines, high, false)?;
    for line in lines {
        for (q, width) in [(0.5, 1), (0.99, 2)] {
            // A window without a successful request breaks the line.
            let mut segment: Vec<(f64, f64)> = Vec::new();
            let mut segments = Vec::new();
            for w in &line.phase.timeline.windows {
                match if q < 0.9 { w.p50 } else { w.p99 } {
                    Some(d) => segment.push((centre(line, w), millis(d))),
                    None => segments.push(std::mem::take(&mut segment)),
                }
            }
            segments.push(segment);
            let style = line
                .color
                .mix(if width == 1 { 0.6 } else { 1.0 })
                .stroke_width(width);
            for segment in segments.into_iter().filter(|s| !s.is_empty()) {
                chart.draw_series(LineSeries::new(segment, style))?;
            }
        }
    }
    Ok(())
}

/// A log axis label: 1, 2 and 5 of each decade, the others blank (plotters
/// places one at every integer multiple, which overlap).
fn log_label(v: &f64) -> String {
    let decade = 10f64.powf(v.log10().floor());
    let mantissa = (v / decade * 1000.0).round() / 1000.0;
    if [1.0, 2.0, 5.0].contains(&mantissa) {
        format!("{v}")
    } else {
        String::new()
    }
}

/// Vertical lines at each mark of the lines that want them; with
/// `legend`, one legend entry per kind drawn.
fn draw_marks<DB, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    lines: &[Line<'_>],
    top: f64,
    legend: bool,
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    let bottom = chart.y_range().start;
    for kind in [MarkKind::Trigger, MarkKind::Drain, MarkKind::Ready] {
        let (color, label) = mark_style(kind);
        let xs: Vec<f64> = (lines.iter())
            .filter(|l| l.marks)
            .flat_map(|l| l.phase.marks.iter())
            .filter(|m| m.kind == kind)
            .map(|m| m.at.as_secs_f64())
            .collect();
        if xs.is_empty() {
            continue;
        }
        if xs.len() > MAX_MARKS {
            // Hundreds of lines would paint the chart over; say so instead.
            if legend {
                let n = xs.len();
                chart
                    .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
                    .label(format!("{n} x {label}: too many to mark"))
                    .legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x + 10, y - 6), (x + 10, y + 6)],
                            color.stroke_width(2),
                        )
                    });
            }
            continue;
        }
        let style = color.mix(0.7).stroke_width(1);
        let drawn = chart.draw_series(
            xs.into_iter()
                .map(move |x| PathElement::new(vec![(x, bottom), (x, top)], style)),
        )?;
        if legend {
            drawn.label(label).legend(move |(x, y)| {
                PathElement::new(
                    vec![(x + 10, y - 6), (x + 10, y + 6)],
                    color.stroke_width(2),
                )
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use devsup_tests::load::Timeline;

    use super::super::record::{Mark, Phase};
    use super::*;

    fn phase(label: &str, failed_at: Option<usize>) -> Phase {
        let ms = Duration::from_millis;
        let windows = (0..20)
            .map(|i| Window {
                start: ms(100) * i as u32,
                ok: if Some(i) == failed_at {
                    0
                } else {
                    100 + i as u64
                },
                failed: u64::from(Some(i) == failed_at),
                p50: (Some(i) != failed_at).then(|| ms(1)),
                p99: (Some(i) != failed_at).then(|| ms(3)),
            })
            .collect();
        Phase {
            name: label.to_owned(),
            label: label.to_owned(),
            timeline: Timeline {
                window: ms(100),
                end: ms(2000),
                windows,
            },
            marks: vec![Mark {
                at: ms(1000),
                kind: MarkKind::Trigger,
                generation: None,
            }],
            failed: u64::from(failed_at.is_some()),
        }
    }

    #[test]
    fn too_many_marks_are_counted_not_drawn() {
        let mut soak = phase("soak", None);
        let one = soak.marks[0];
        let draw = |soak: &Phase| {
            let line = Line {
                phase: soak,
                color: MEASURED,
                marks: true,
            };
            super::svg("soak", &[line]).unwrap()
        };
        soak.marks = (0..400)
            .map(|i| Mark {
                at: Duration::from_millis(5 * i),
                ..one
            })
            .collect();
        let many = draw(&soak);
        soak.marks.truncate(10);
        let ten = draw(&soak);
        assert!(many.contains("400 x trigger (SIGHUP or edit): too many to mark"));
        assert!(!ten.contains("too many to mark"));
        // Not drawn: 400 lines would make it thousands of bytes longer.
        assert!(
            many.len() < ten.len() + 1000,
            "{} vs {}",
            many.len(),
            ten.len()
        );
    }

    #[test]
    fn log_labels() {
        let labels: Vec<String> = [0.1, 0.2, 0.3, 1.0, 5.0, 9.0, 20.0, 40.0]
            .iter()
            .map(log_label)
            .collect();
        assert_eq!(labels, ["0.1", "0.2", "", "1", "5", "", "20", ""]);
    }

    #[test]
    fn draws_lines_marks_and_failures() {
        let steady = phase("steady", None);
        let reload = phase("reload", Some(7));
        let svg = svg(
            "a chart",
            &[
                Line {
                    phase: &steady,
                    color: BASELINE,
                    marks: false,
                },
                Line {
                    phase: &reload,
                    color: MEASURED,
                    marks: true,
                },
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("a chart") && svg.contains("reload (1 failed)"));
        assert!(svg.contains("steady (0 failed)") && svg.contains("trigger"));
        assert!(svg.contains("a window with failed requests"));
        assert!(svg.contains("#DC1414"), "a red dot");
        // Without failures, no red dot and no legend for it.
        let calm = super::svg(
            "calm",
            &[Line {
                phase: &steady,
                color: MEASURED,
                marks: true,
            }],
        )
        .unwrap();
        assert!(!calm.contains("a window with failed requests"));
        assert!(!calm.contains("#DC1414"), "no red");
    }
}
