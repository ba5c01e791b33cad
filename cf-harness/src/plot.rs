//! SVG charts (`plotters`) of a sim run (`cfctl sim --plot DIR`) and of a
//! benchmark run (`cfctl bench --plot DIR`).

use anyhow::Result;
use cf_core::events::{Event, EventKind};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Draw<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Write `labels[i]` left of the chart's row `i` (its centre at `y(i)`),
/// right-aligned against the axis: plotters' own labels sit on its ticks,
/// which need not fall on the rows.
fn label_rows<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    at: impl Fn(f64) -> (i32, i32),
    labels: &[String],
    y: impl Fn(usize) -> f64,
) -> Draw<()>
where
    DB::ErrorType: 'static,
{
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, l) in labels.iter().enumerate() {
        let (px, py) = at(y(i));
        root.draw(&Text::new(l.clone(), (px - 6, py), style.clone()))?;
    }
    Ok(())
}

fn wrap<T>(path: &Path, r: Draw<T>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// A line chart of `series`, with vertical marks (time, label) coloured by
/// label and listed in the legend.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    marks: &[(f64, String)],
) -> Result<()> {
    wrap(path, draw_lines(path, title, x_desc, y_desc, series, marks))
}

fn draw_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    marks: &[(f64, String)],
) -> Draw<()> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts = series.iter().flat_map(|(_, v)| v.iter());
    let xmax = pts
        .clone()
        .map(|p| p.0)
        .chain(marks.iter().map(|m| m.0))
        .fold(1e-9, f64::max);
    // Headroom above the highest point for the legend.
    let ymax = pts.map(|p| p.1).fold(1.0, f64::max) * 1.45;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|y| figure(*y))
        .draw()?;
    for (i, (name, v)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    let mut kinds: Vec<&str> = marks.iter().map(|m| m.1.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for (k, kind) in kinds.iter().enumerate() {
        let c = color(k + series.len());
        let lines: Vec<_> = marks
            .iter()
            .filter(|m| m.1 == *kind)
            .map(|m| PathElement::new(vec![(m.0, 0.0), (m.0, ymax)], c.mix(0.6).stroke_width(1)))
            .collect();
        chart
            .draw_series(lines)?
            .label(format!("fault: {kind}"))
            .legend(move |(x, y)| PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A histogram of `values` (in `unit`) in about 30 bins.
pub fn histogram(path: &Path, title: &str, unit: &str, values: &[f64]) -> Result<()> {
    wrap(path, draw_histogram(path, title, unit, values))
}

fn draw_histogram(path: &Path, title: &str, unit: &str, values: &[f64]) -> Draw<()> {
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = values.iter().copied().fold(0.0, f64::max).max(1e-9);
    let bins = 30usize;
    let width = max / bins as f64;
    let mut counts = vec![0u64; bins];
    for &v in values {
        let b = ((v / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let caption = format!("{title} (n={})", values.len());
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max * 1.02, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("count")
        .x_label_formatter(&|x| figure(*x))
        .y_label_formatter(&|y| figure(*y))
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new(
            [(x0, 0.0), (x0 + width * 0.95, c as f64)],
            color(0).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Horizontal bars: `(label, value)` in `unit`, on a log scale (the paths
/// of a benchmark span orders of magnitude), each bar with its value.
pub fn bar_chart(path: &Path, title: &str, unit: &str, bars: &[(String, f64)]) -> Result<()> {
    wrap(path, draw_bars(path, title, unit, bars))
}

fn draw_bars(path: &Path, title: &str, unit: &str, bars: &[(String, f64)]) -> Draw<()> {
    let h = 80 + 26 * bars.len().max(1) as u32;
    let root = SVGBackend::new(path, (960, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let positive = || bars.iter().map(|b| b.1).filter(|v| *v > 0.0);
    let max = positive().fold(1e-9, f64::max) * 3.0;
    let min = positive().fold(max, f64::min) / 2.0;
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(330)
        .build_cartesian_2d((min..max).log_scale(), 0f64..n)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .x_desc(format!("{unit} (log scale)"))
        .x_label_formatter(&|x| figure(*x))
        .y_labels(0)
        .disable_y_mesh()
        .draw()?;
    label_rows(
        &root,
        |y| chart.backend_coord(&(min, y)),
        &labels,
        |i| n - i as f64 - 0.5,
    )?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let y = n - i as f64;
        Rectangle::new(
            [(min, y - 0.85), (b.1.max(min), y - 0.15)],
            color(i).filled(),
        )
    }))?;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let style =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let y = n - i as f64 - 0.5;
        Text::new(
            format!("  {}", figure(b.1)),
            (b.1.max(min), y),
            style.clone(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// The marks of a recovery's timeline: its death, then each step of
/// [`crate::sim::check::STEPS`].
fn step_labels() -> impl Iterator<Item = &'static str> {
    std::iter::once("death").chain(crate::sim::check::STEPS.iter().map(|(_, l)| *l))
}

/// The steps of the recovery of `name` dead at `death_ns`: the first event
/// of each kind about it after the death and before its next `connected`,
/// as ms after the death.
pub fn recovery_steps(
    events: &BTreeMap<u64, Event>,
    name: &str,
    death_ns: u64,
) -> Vec<(&'static str, f64)> {
    let mut out = vec![("death", 0.0)];
    let after: Vec<&Event> = events
        .values()
        .filter(|e| e.member == name && e.time_ns + 5_000_000 >= death_ns)
        .take_while(|e| !(e.kind() == EventKind::Connected && e.time_ns > death_ns))
        .collect();
    for (kind, label) in crate::sim::check::STEPS {
        if let Some(e) = after.iter().find(|e| e.kind() == kind) {
            out.push((label, e.time_ns.saturating_sub(death_ns) as f64 / 1e6));
        }
    }
    out
}

/// A timeline: one row per recovery, a mark per step (ms after the death).
pub fn timeline(
    path: &Path,
    title: &str,
    rows: &[(String, Vec<(&'static str, f64)>)],
) -> Result<()> {
    wrap(path, draw_timeline(path, title, rows))
}

fn draw_timeline(
    path: &Path,
    title: &str,
    rows: &[(String, Vec<(&'static str, f64)>)],
) -> Draw<()> {
    let h = 120 + 22 * rows.len().max(1) as u32;
    let root = SVGBackend::new(path, (960, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let xmax = rows
        .iter()
        .flat_map(|r| r.1.iter().map(|s| s.1))
        .fold(1e-6, f64::max)
        * 1.05;
    let n = rows.len().max(1) as f64;
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    // Room on the right for the legend, beyond the last step.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(190)
        .build_cartesian_2d(0f64..xmax * 1.3, 0f64..n)?;
    chart
        .configure_mesh()
        .x_desc("ms after the death")
        .x_label_formatter(&|x| figure(*x))
        .y_labels(0)
        .disable_y_mesh()
        .draw()?;
    label_rows(
        &root,
        |y| chart.backend_coord(&(0.0, y)),
        &labels,
        |i| n - i as f64 - 0.5,
    )?;
    for (r, (_, steps)) in rows.iter().enumerate() {
        let y = n - r as f64 - 0.5;
        let end = steps.iter().map(|s| s.1).fold(0.0, f64::max);
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, y), (end, y)],
            BLACK.mix(0.4),
        )))?;
    }
    for (k, label) in step_labels().enumerate() {
        let c = color(k);
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(r, (_, steps))| {
                steps
                    .iter()
                    .find(|s| s.0 == label)
                    .map(|s| (s.1, n - r as f64 - 0.5))
            })
            .collect();
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// An axis figure: no decimals from 100 up, else at most two, trailing zeros
/// dropped (`5000`, `2.5`, `0.25`).
fn figure(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Throughput per interval from cumulative samples `(t, total)`.
pub fn rates(samples: &[(f64, u64)]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| {
            (
                w[1].0,
                w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0),
            )
        })
        .collect()
}

/// Create `dir` if missing (its parent exists: checked before the run).
pub fn ensure_dir(dir: &Path) -> Result<()> {
    crate::plexdir::create_last(dir, false).map(|_| ())
}

/// The files a chart set is written to.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
