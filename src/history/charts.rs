//! `evalq history`'s trend chart: `history.svg` and `history.png`, three panels stacked (PPL,
//! mean KLD on a log axis, generation tokens/s) over the runs in time order, one line per
//! format, and a legend strip on the right that names every format.
//!
//! The x axis is the run's index, not its date: nightly runs are irregular (skipped nights,
//! several runs a day), and equal spacing keeps each run readable. Each tick says the run's date
//! and commit, which is what a reader looks for when a line jumps.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{runs, HistoryRow, HistoryRun};
use crate::error::{Error, Result};
use crate::report::charts::{draw_error, extent, fmt_tick, register_font, write_png_sized, DrawResult, KeyAxis, FONT};

/// Pixel size of the chart.
const SIZE: (u32, u32) = (1200, 1350);
const LEGEND_W: u32 = 170;
const GREY: RGBColor = RGBColor(110, 110, 110);

/// Distinct line colours (Tableau 20's strong half, then its light half), cycled beyond 20.
const COLORS: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// What was drawn.
#[derive(Clone, Debug)]
pub struct TrendChart {
    pub files: Vec<PathBuf>,
    /// Runs on the x axis.
    pub runs: usize,
    /// Formats drawn, in legend order.
    pub formats: Vec<String>,
    /// Things the reader should know (too few runs, mixed models or datasets).
    pub notes: Vec<String>,
}

/// Draws `dir/history.svg` and `dir/history.png` from `rows`, restricted to `formats` when
/// given (each must appear in the history).
pub fn write_trend_charts(dir: &Path, rows: &[HistoryRow], formats: Option<&[String]>) -> Result<TrendChart> {
    if !register_font() {
        return Err(Error::Invalid("charts: the bundled font assets/fonts/DejaVuSans.ttf cannot be parsed".into()));
    }
    let mut known: Vec<String> = Vec::new();
    for r in rows {
        if !known.contains(&r.format) {
            known.push(r.format.clone());
        }
    }
    let chosen: Vec<String> = match formats {
        None => known.clone(),
        Some(list) => {
            for f in list {
                if !known.contains(f) {
                    return Err(Error::Invalid(format!(
                        "--formats: '{f}' is not in the history (it has: {})",
                        if known.is_empty() { "nothing".to_string() } else { known.join(", ") }
                    )));
                }
            }
            list.to_vec()
        }
    };
    let rows: Vec<HistoryRow> = rows.iter().filter(|r| chosen.contains(&r.format)).cloned().collect();
    let runs = runs(&rows);
    let mut notes = Vec::new();
    if runs.len() < 2 {
        notes.push(format!("only {} run in the history: no trend yet, the chart shows single points", runs.len()));
    }
    let distinct = |key: fn(&HistoryRow) -> String| {
        let mut v: Vec<String> = rows.iter().map(key).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    let models = distinct(|r| r.model_sha256.clone());
    let data = distinct(|r| format!("{} {}", r.dataset_sha256, r.n_ctx));
    if models > 1 || data > 1 {
        notes.push(format!(
            "the history mixes {models} model(s) and {data} dataset/n_ctx setting(s); lines join runs that do not \
             measure the same thing"
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let svg = dir.join("history.svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, &runs, &chosen, &notes).and_then(|()| root.present()).map_err(|e| draw_error(&svg, e))?;
    }
    crate::util::write_bytes_atomic(&svg, text.as_bytes())?;
    let png = dir.join("history.png");
    write_png_sized(&png, SIZE, |root| draw(root, &runs, &chosen, &notes))?;
    Ok(TrendChart { files: vec![svg, png], runs: runs.len(), formats: chosen, notes })
}

/// One panel: which figure, its axis description, log or linear.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    value: fn(&HistoryRow) -> f64,
    log: bool,
}

const PANELS: [Panel; 3] = [
    Panel { title: "Perplexity", y_desc: "PPL", value: |r| r.ppl, log: false },
    Panel {
        title: "Mean KL divergence from the baseline",
        y_desc: "mean KLD, nats (log)",
        value: |r| r.kld_mean,
        log: true,
    },
    Panel { title: "Generation speed", y_desc: "tg tokens/s", value: |r| r.tg_tps, log: false },
];

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[HistoryRun],
    formats: &[String],
    notes: &[String],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let root = root.margin(10, 10, 10, 10);
    let header_h = 40 + 22 * notes.len() as u32;
    let (header, body) = root.split_vertically(header_h);
    let model = runs.last().and_then(|r| r.rows.first()).map(|r| r.model.as_str()).unwrap_or("no runs");
    header.draw(&Text::new(format!("evalq history: {model}, {} runs", runs.len()), (10, 6), (FONT, 22).into_font()))?;
    for (i, n) in notes.iter().enumerate() {
        let style = (FONT, 16).into_font().color(&RGBColor(180, 30, 30));
        header.draw(&Text::new(format!("note: {n}"), (10, 36 + 22 * i as i32), style))?;
    }
    let (w, _) = body.dim_in_pixel();
    let (plots, legend) = body.split_horizontally(w - LEGEND_W);
    draw_legend(&legend, formats)?;
    let panels = plots.split_evenly((3, 1));
    for (area, p) in panels.iter().zip(PANELS.iter()) {
        panel(area, p, runs, formats)?;
    }
    Ok(())
}

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, formats: &[String]) -> DrawResult<DB> {
    area.draw(&Text::new("formats", (12, 40), (FONT, 16).into_font()))?;
    for (i, f) in formats.iter().enumerate() {
        let y = 70 + 24 * i as i32;
        let c = color(i);
        area.draw(&PathElement::new([(12, y), (42, y)], c.stroke_width(3)))?;
        area.draw(&Circle::new((27, y), 4, c.filled()))?;
        area.draw(&Text::new(f.clone(), (50, y - 8), (FONT, 15).into_font()))?;
    }
    Ok(())
}

/// The tick label of run `i`: "MM-DD commit".
fn run_label(r: &HistoryRun) -> String {
    let date = r.created.get(5..10).unwrap_or(&r.created);
    let commit: String = r.git_commit.chars().take(7).collect();
    format!("{date} {commit}")
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    runs: &[HistoryRun],
    formats: &[String],
) -> DrawResult<DB> {
    let ok = |v: f64| v.is_finite() && (!p.log || v > 0.0);
    let values = runs.iter().flat_map(|r| r.rows.iter().filter(|row| formats.contains(&row.format)).map(p.value));
    let Some((lo, hi)) = extent(values.filter(|v| ok(*v))) else {
        let style = TextStyle::from((FONT, 18).into_font()).color(&GREY);
        area.draw(&Text::new(format!("{}: no data (nothing measured)", p.title), (20, 20), style))?;
        return Ok(());
    };
    let n = runs.len();
    // At most ~10 labelled ticks, so dates and commits stay readable.
    let step = n.div_ceil(10).max(1);
    let keys: Vec<f64> = (0..n).step_by(step).map(|i| i as f64).collect();
    let x = KeyAxis { lo: -0.4, hi: (n as f64 - 0.6).max(0.4), keys };
    if p.log {
        let ratio = (hi / lo).max(1.0);
        let (y0, y1) = if ratio < 1.01 { (lo / 2.0, hi * 2.0) } else { (lo / ratio.powf(0.08), hi * ratio.powf(0.08)) };
        panel_on(area, p, runs, formats, x, (y0..y1).log_scale())
    } else {
        let span = if hi - lo > 1e-9 * hi.abs().max(1.0) { hi - lo } else { (hi.abs() * 0.05).max(1e-3) };
        panel_on(area, p, runs, formats, x, (lo - 0.08 * span)..(hi + 0.08 * span))
    }
}

fn panel_on<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    runs: &[HistoryRun],
    formats: &[String],
    x: KeyAxis,
    y: Y,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let ok = |v: f64| v.is_finite() && (!p.log || v > 0.0);
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, (FONT, 18))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    let labels: Vec<String> = runs.iter().map(run_label).collect();
    let fmt_x = |v: &f64| {
        let r = v.round();
        if (v - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < labels.len() {
            labels[r as usize].clone()
        } else {
            String::new()
        }
    };
    let fmt_y = |v: &f64| fmt_tick(*v);
    chart
        .configure_mesh()
        .x_desc("run (date and commit, oldest first)")
        .y_desc(p.y_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    for (i, f) in formats.iter().enumerate() {
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.rows.iter().find(|row| &row.format == f).map(|row| (k as f64, (p.value)(row))))
            .filter(|(_, v)| ok(*v))
            .collect();
        let c = color(i);
        chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&xy| Circle::new(xy, 4, c.filled())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::results;

    #[test]
    fn unknown_formats_are_refused_and_one_run_still_draws() {
        let dir = tempfile::tempdir().unwrap();
        let rows = HistoryRow::from_results("run-a", &results("2026-11-27T10:00:00Z", 30.0));
        let e = write_trend_charts(dir.path(), &rows, Some(&["Q9_9".to_string()])).unwrap_err().to_string();
        assert!(e.contains("Q9_9") && e.contains("Q4_K_M"), "{e}");
        let t = write_trend_charts(dir.path(), &rows, None).unwrap();
        assert_eq!(t.runs, 1);
        assert!(t.notes.iter().any(|n| n.contains("no trend yet")));
        let svg = std::fs::read_to_string(dir.path().join("history.svg")).unwrap();
        assert!(svg.contains("Q4_K_M") && svg.contains("Q8_0") && svg.contains("no trend yet"));
        // tg was not measured in these rows: that panel says so instead of drawing nothing.
        assert!(svg.contains("Generation speed: no data"));
    }

    #[test]
    fn run_labels_are_date_and_short_commit() {
        let rows = HistoryRow::from_results("run-a", &results("2026-11-27T10:00:00Z", 30.0));
        let r = &runs(&rows)[0];
        assert_eq!(run_label(r), "11-27 abc123");
    }
}
