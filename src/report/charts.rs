//! The run's charts, each drawn once per backend into `charts/NAME.svg` and `charts/NAME.png`.
//!
//! Text is rasterized by plotters' `ab_glyph` backend from the DejaVu Sans font bundled in
//! `assets/fonts` (registered once as "sans-serif"), so the PNGs look the same on every machine
//! and no system font is needed. The SVGs name the same family and let the viewer render it.
//!
//! Real runs have gaps: a single format, formats of identical quality, speeds never measured
//! (NaN or 0). Every chart therefore draws only the points it can place, pads degenerate axis
//! ranges, says "no data" when nothing is left, and never panics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::{measured, pareto_front};
use crate::error::{Error, Result};
use crate::run::results::RunResults;

/// What a chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartKind {
    PplVsBpw,
    KldVsBpw,
    SizeVsQuality,
    Speed,
    Bandwidth,
}

/// One chart of the report: what it shows, its file stem under `charts/` and its title.
pub struct ChartSpec {
    pub kind: ChartKind,
    pub stem: &'static str,
    pub title: &'static str,
}

/// The charts, in the order the reports show them.
pub const CHARTS: &[ChartSpec] = &[
    ChartSpec { kind: ChartKind::PplVsBpw, stem: "ppl_vs_bpw", title: "Perplexity vs bits per weight" },
    ChartSpec {
        kind: ChartKind::KldVsBpw,
        stem: "kld_vs_bpw",
        title: "KL divergence from the baseline vs bits per weight",
    },
    ChartSpec { kind: ChartKind::SizeVsQuality, stem: "size_vs_quality", title: "File size vs quality" },
    ChartSpec { kind: ChartKind::Speed, stem: "speed", title: "Prompt processing and generation speed" },
    ChartSpec {
        kind: ChartKind::Bandwidth,
        stem: "bandwidth",
        title: "Generation memory bandwidth vs the measured peak",
    },
];

/// Pixel size of every chart (and the SVG's user units).
pub const SIZE: (u32, u32) = (1100, 660);

pub(crate) const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the bundled font with plotters, once per process; false if the font was rejected.
pub(crate) fn register_font() -> bool {
    REGISTER.call_once(|| {
        let ok = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok();
        REGISTERED.store(ok, Ordering::Release);
    });
    REGISTERED.load(Ordering::Acquire)
}

const FRONT: RGBColor = RGBColor(214, 39, 40);
const OTHER: RGBColor = RGBColor(31, 119, 180);
const TG: RGBColor = RGBColor(255, 127, 14);
const GREYISH: RGBColor = RGBColor(110, 110, 110);

pub(crate) type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws every chart as SVG and PNG under `dir/charts/` and returns the paths written.
pub fn write_all(dir: &Path, r: &RunResults) -> Result<Vec<PathBuf>> {
    if !register_font() {
        return Err(Error::Invalid("charts: the bundled font assets/fonts/DejaVuSans.ttf cannot be parsed".into()));
    }
    let charts_dir = dir.join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(|e| Error::io(&charts_dir, e))?;
    let mut out = Vec::new();
    for spec in CHARTS {
        let svg = charts_dir.join(format!("{}.svg", spec.stem));
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
            draw(spec, &root, r).and_then(|()| root.present()).map_err(|e| draw_error(&svg, e))?;
        }
        crate::util::write_bytes_atomic(&svg, text.as_bytes())?;
        out.push(svg);

        let png = charts_dir.join(format!("{}.png", spec.stem));
        write_png(&png, |root| draw(spec, root, r))?;
        out.push(png);
    }
    Ok(out)
}

pub(crate) fn draw_error<E: std::error::Error + Send + Sync>(path: &Path, e: DrawingAreaErrorKind<E>) -> Error {
    Error::io(path, std::io::Error::other(format!("drawing the chart failed: {e}")))
}

/// Renders a PNG through a temporary file in the same directory, then renames it into place, as
/// [`crate::util::write_atomic`] does. The bitmap backend can only save to a path, and picks the
/// encoder from its extension, so the temporary name ends in `.png` too.
pub(crate) fn write_png<F>(path: &Path, f: F) -> Result<()>
where
    F: for<'a> FnOnce(&DrawingArea<BitMapBackend<'a>, Shift>) -> DrawResult<BitMapBackend<'a>>,
{
    write_png_sized(path, SIZE, f)
}

/// [`write_png`] with another pixel size.
pub(crate) fn write_png_sized<F>(path: &Path, size: (u32, u32), f: F) -> Result<()>
where
    F: for<'a> FnOnce(&DrawingArea<BitMapBackend<'a>, Shift>) -> DrawResult<BitMapBackend<'a>>,
{
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp.png", std::process::id()));
    let result = {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        f(&root).and_then(|()| root.present()).map_err(|e| draw_error(path, e))
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn draw<DB: DrawingBackend>(spec: &ChartSpec, root: &DrawingArea<DB, Shift>, r: &RunResults) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let root = root.margin(10, 10, 10, 10);
    let fs = &r.formats;
    match spec.kind {
        ChartKind::PplVsBpw => {
            let pts = fs.iter().map(|f| (f.format.clone(), f.bpw, f.quality.ppl, f.quality.ppl_err)).collect();
            let base = (r.baseline.ppl, format!("{} baseline", r.baseline.format));
            let s = Scatter {
                title: spec.title,
                x_desc: "bits per weight",
                y_desc: "perplexity (± standard error)",
                pts,
                hline: Some(base),
            };
            scatter(&root, &s, false)
        }
        ChartKind::KldVsBpw => {
            let pts = fs.iter().map(|f| (f.format.clone(), f.bpw, f.quality.kld_mean, f.quality.kld_err)).collect();
            let s = Scatter {
                title: spec.title,
                x_desc: "bits per weight",
                y_desc: "mean KLD, nats (log scale)",
                pts,
                hline: None,
            };
            scatter(&root, &s, true)
        }
        ChartKind::SizeVsQuality => {
            // KLD separates formats even when PPL does not; fall back to PPL only when no KLD
            // was measured (e.g. a run against itself).
            let use_kld = fs.iter().any(|f| measured(f.quality.kld_mean));
            let pts = fs
                .iter()
                .map(|f| {
                    let q = &f.quality;
                    let (y, e) = if use_kld { (q.kld_mean, q.kld_err) } else { (q.ppl, q.ppl_err) };
                    (f.format.clone(), f.file_bytes as f64 / 1e6, y, e)
                })
                .collect();
            let (y_desc, hline) = if use_kld {
                ("mean KLD, nats (log scale)", None)
            } else {
                ("perplexity", Some((r.baseline.ppl, format!("{} baseline", r.baseline.format))))
            };
            let s = Scatter { title: spec.title, x_desc: "file size, MB", y_desc, pts, hline };
            scatter(&root, &s, use_kld)
        }
        ChartKind::Speed => {
            let (left, right) = root.split_horizontally(SIZE.0 / 2 - 10);
            let pp: Vec<(String, f64)> = fs.iter().map(|f| (f.format.clone(), f.speed.pp_tps)).collect();
            let tg: Vec<(String, f64)> = fs.iter().map(|f| (f.format.clone(), f.speed.tg_tps)).collect();
            let pp_title = format!("prompt processing (pp{}), tokens/s", fs.first().map_or(0, |f| f.speed.pp_tokens));
            let tg_title = format!("generation (tg{}), tokens/s", fs.first().map_or(0, |f| f.speed.tg_tokens));
            bars(&left, &Bars::new(&pp_title, "tokens/s", pp, OTHER))?;
            bars(&right, &Bars::new(&tg_title, "tokens/s", tg, TG))
        }
        ChartKind::Bandwidth => {
            let (left, right) = root.split_horizontally(SIZE.0 / 2 - 10);
            let peak = r.machine.peak_read_gbps;
            let gbps: Vec<(String, f64)> = fs.iter().map(|f| (f.format.clone(), f.speed.tg_gbps)).collect();
            let mut gb = Bars::new("generation read bandwidth, GB/s", "GB/s", gbps, TG);
            gb.line = measured(peak).then(|| (peak, format!("measured peak {peak:.1} GB/s")));
            bars(&left, &gb)?;
            let tg: Vec<(String, f64)> = fs.iter().map(|f| (f.format.clone(), f.speed.tg_tps)).collect();
            let mut t = Bars::new("generation tokens/s vs roofline", "tokens/s", tg, OTHER);
            t.marks = fs.iter().map(|f| f.speed.roofline_tg_tps).collect();
            t.marks_label = Some("roofline");
            bars(&right, &t)
        }
    }
}

/// An axis tick label: at most 4 significant digits with trailing zeros dropped, so ticks read
/// "0.001", "2.5" and "60" rather than "0.00100", "2.50" and "60.0".
pub(crate) fn fmt_tick(v: f64) -> String {
    let s = super::fmt_sig(v, 4);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A scatter of formats, lower-left being better on both axes.
struct Scatter<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    /// (format, x, y, y standard error).
    pts: Vec<(String, f64, f64, f64)>,
    /// A labelled horizontal reference line, e.g. the baseline's PPL.
    hline: Option<(f64, String)>,
}

/// The range [lo, hi] of finite `v`, or None when there is none.
pub(crate) fn extent(v: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    v.into_iter().filter(|x| x.is_finite()).fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// A linear axis range around [lo, hi] with `pad` of the span either side; a zero span gets a
/// width from the magnitude of the value so equal values still draw.
fn linear_range(lo: f64, hi: f64, pad_lo: f64, pad_hi: f64) -> (f64, f64) {
    let span = hi - lo;
    let span = if span > f64::EPSILON * hi.abs().max(1.0) { span } else { (hi.abs() * 0.25).max(1e-3) };
    (lo - span * pad_lo, hi + span * pad_hi)
}

/// A log axis range around positive [lo, hi], padded by a fraction of the decades spanned.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let ratio = (hi / lo).max(1.0);
    if ratio < 1.01 {
        (lo / 2.0, hi * 2.0)
    } else {
        (lo / ratio.powf(0.08), hi * ratio.powf(0.15))
    }
}

fn no_data<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, why: &str) -> DrawResult<DB> {
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(title.to_string(), (20, 20), (FONT, 24).into_font()))?;
    let style = TextStyle::from((FONT, 20).into_font()).color(&GREYISH).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(format!("no data: {why}"), (w as i32 / 2, h as i32 / 2), style))
}

fn scatter<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, s: &Scatter, log_y: bool) -> DrawResult<DB> {
    // A point is drawable when both coordinates are finite (and y positive on a log axis).
    let ok = |y: f64| y.is_finite() && (!log_y || y > 0.0);
    let pts: Vec<&(String, f64, f64, f64)> = s.pts.iter().filter(|p| p.1.is_finite() && ok(p.2)).collect();
    let Some((x_lo, x_hi)) = extent(pts.iter().map(|p| p.1)) else {
        return no_data(root, s.title, "no format has both coordinates measured");
    };
    let err = |p: &(String, f64, f64, f64)| if p.3.is_finite() && p.3 > 0.0 && !log_y { p.3 } else { 0.0 };
    let hline = s.hline.as_ref().filter(|(y, _)| ok(*y));
    let ys = pts.iter().flat_map(|p| [p.2 - err(p), p.2 + err(p)]).chain(hline.map(|h| h.0));
    let (y_lo, y_hi) = extent(ys.filter(|&y| ok(y))).unwrap_or((1.0, 1.0));
    // The right pad leaves room for the labels of the largest format.
    let (x0, x1) = linear_range(x_lo, x_hi, 0.08, 0.18);
    if log_y {
        let (y0, y1) = log_range(y_lo, y_hi);
        scatter_on(root, s, &pts, (x0..x1, (y0..y1).log_scale()), log_y)
    } else {
        let (y0, y1) = linear_range(y_lo, y_hi, 0.08, 0.12);
        scatter_on(root, s, &pts, (x0..x1, y0..y1), log_y)
    }
}

fn scatter_on<DB, Y>(
    root: &DrawingArea<DB, Shift>,
    s: &Scatter,
    pts: &[&(String, f64, f64, f64)],
    (xr, yr): (std::ops::Range<f64>, Y),
    log_y: bool,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let (x0, x1) = (xr.start, xr.end);
    let mut chart = ChartBuilder::on(root)
        .caption(s.title, (FONT, 24))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(xr, yr)?;
    let fmt_y = |v: &f64| fmt_tick(*v);
    let fmt_x = |v: &f64| fmt_tick(*v);
    chart
        .configure_mesh()
        .x_desc(s.x_desc)
        .y_desc(s.y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .y_label_formatter(&fmt_y)
        .x_label_formatter(&fmt_x)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    if let Some((y, label)) = &s.hline {
        if y.is_finite() && (!log_y || *y > 0.0) {
            let line = ShapeStyle::from(&GREYISH).stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new([(x0, *y), (x1, *y)], 8, 6, line))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], line));
        }
    }

    for p in pts.iter().filter(|p| !log_y && p.3.is_finite() && p.3 > 0.0) {
        let (x, y, e) = (p.1, p.2, p.3);
        chart
            .draw_series(std::iter::once(PathElement::new([(x, y - e), (x, y + e)], OTHER.mix(0.6).stroke_width(2))))?;
    }

    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.1, p.2)).collect();
    let front = pareto_front(&xy);
    if front.len() >= 2 {
        let line = FRONT.mix(0.7).stroke_width(2);
        chart
            .draw_series(LineSeries::new(front.iter().map(|&i| xy[i]), line))?
            .label("Pareto front (smaller and better)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], line));
    }

    // Labels alternate above and below the points in x order, which keeps neighbours with close
    // bits per weight from printing on top of each other. Formats at exactly the same spot share
    // one label, "A, B", instead of overprinting.
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by(|&a, &b| xy[a].0.total_cmp(&xy[b].0).then(xy[a].1.total_cmp(&xy[b].1)));
    let mut rank = 0;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && xy[order[k - 1]] == xy[i] {
            continue;
        }
        let group: Vec<usize> = order[k..].iter().copied().take_while(|&j| xy[j] == xy[i]).collect();
        let on_front = group.iter().any(|j| front.contains(j));
        let same: Vec<&str> = group.iter().map(|&j| pts[j].0.as_str()).collect();
        let marker = if on_front { FRONT } else { OTHER }.filled();
        let dy = if rank % 2 == 0 { -22 } else { 8 };
        rank += 1;
        let label = Text::new(same.join(", "), (8, dy), (FONT, 14).into_font().color(&BLACK));
        chart.draw_series(std::iter::once(EmptyElement::at(xy[i]) + Circle::new((0, 0), 5, marker) + label))?;
    }

    if s.hline.is_some() || front.len() >= 2 {
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(GREYISH)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// A horizontal bar per format, formats listed top to bottom in run order.
struct Bars<'a> {
    title: &'a str,
    x_desc: &'a str,
    values: Vec<(String, f64)>,
    /// Optional per-format tick drawn across the bar (e.g. the roofline), same units as x, and
    /// its legend entry.
    marks: Vec<f64>,
    marks_label: Option<&'a str>,
    color: RGBColor,
    /// An optional labelled vertical reference line, e.g. the measured peak bandwidth.
    line: Option<(f64, String)>,
}

impl<'a> Bars<'a> {
    fn new(title: &'a str, x_desc: &'a str, values: Vec<(String, f64)>, color: RGBColor) -> Self {
        Bars { title, x_desc, values, marks: vec![], marks_label: None, color, line: None }
    }
}

fn bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, b: &Bars) -> DrawResult<DB> {
    let n = b.values.len();
    if n == 0 {
        return no_data(root, b.title, "no formats");
    }
    let vals = b.values.iter().map(|v| v.1);
    let marks = b.marks.iter().copied();
    let line = b.line.as_ref().map(|l| l.0);
    let Some((_, hi)) = extent(vals.chain(marks).chain(line).filter(|&v| measured(v))) else {
        return no_data(root, b.title, "nothing was measured");
    };
    // Room right of the longest bar for its value label.
    let x1 = hi * 1.25;
    let mut chart = ChartBuilder::on(root)
        .caption(b.title, (FONT, 18))
        .margin(8)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x1, (0..n - 1).into_segmented())?;
    // plotters' integer ranges include their end, so 0..n-1 gives one segment per format. Row k
    // (run order) sits at segment n-1-k so the first format is at the top.
    let seg = |k: usize| n - 1 - k;
    let names: Vec<&str> = b.values.iter().map(|v| v.0.as_str()).collect();
    let fmt_y = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < n => names[n - 1 - *i].to_string(),
        _ => String::new(),
    };
    let fmt_x = |v: &f64| fmt_tick(*v);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(b.x_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .y_labels(n)
        .y_label_formatter(&fmt_y)
        .x_label_formatter(&fmt_x)
        .x_labels(6)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    for (k, (_, v)) in b.values.iter().enumerate() {
        let i = seg(k);
        let (text, at) = if measured(*v) {
            let mut bar =
                Rectangle::new([(0.0, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))], b.color.filled());
            bar.set_margin(4, 4, 0, 0);
            chart.draw_series(std::iter::once(bar))?;
            (super::fmt_sig(*v, 3), *v)
        } else {
            ("n/a".to_string(), 0.0)
        };
        let label = Text::new(text, (6, -8), (FONT, 15).into_font().color(&BLACK));
        chart.draw_series(std::iter::once(EmptyElement::at((at, SegmentValue::CenterOf(i))) + label))?;
    }
    let marks: Vec<Rectangle<(f64, SegmentValue<usize>)>> = b
        .marks
        .iter()
        .enumerate()
        .filter(|(_, m)| measured(**m))
        .map(|(k, m)| {
            let i = seg(k);
            // A zero-width outline is a vertical tick as tall as the bar.
            let mut tick =
                Rectangle::new([(*m, SegmentValue::Exact(i)), (*m, SegmentValue::Exact(i + 1))], BLACK.stroke_width(3));
            tick.set_margin(2, 2, 0, 0);
            tick
        })
        .collect();
    let has_marks = !marks.is_empty();
    if has_marks {
        let drawn = chart.draw_series(marks)?;
        if let Some(label) = b.marks_label {
            drawn
                .label(label)
                .legend(|(x, y)| PathElement::new([(x + 10, y - 6), (x + 10, y + 6)], BLACK.stroke_width(3)));
        }
    }
    let line = b.line.as_ref().filter(|l| measured(l.0));
    if let Some((x, label)) = line {
        let style = ShapeStyle::from(&FRONT).stroke_width(2);
        let ends = [(*x, SegmentValue::Exact(0)), (*x, SegmentValue::Exact(n))];
        chart
            .draw_series(DashedLineSeries::new(ends, 8, 6, style))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    if line.is_some() || (has_marks && b.marks_label.is_some()) {
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(GREYISH)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    Ok(())
}

/// A linear f64 axis whose ticks are exactly `keys` (thinned evenly when there are more than
/// the axis has room for), so row and run indices get one label each and never a fractional
/// one. plotters' own `with_key_points` cannot take a label formatter.
pub(crate) struct KeyAxis {
    pub lo: f64,
    pub hi: f64,
    pub keys: Vec<f64>,
}

impl Ranged for KeyAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let frac = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold points: the keys are the grid, without light lines in between.
        if hint.weight().allow_light_points() && hint.max_num_points() != self.keys.len() {
            return Vec::new();
        }
        let max = hint.max_num_points().max(1);
        let step = self.keys.len().div_ceil(max).max(1);
        self.keys.iter().copied().step_by(step).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_ranges_still_have_width() {
        let (a, b) = linear_range(5.0, 5.0, 0.1, 0.1);
        assert!(a < 5.0 && b > 5.0);
        let (a, b) = linear_range(0.0, 0.0, 0.1, 0.1);
        assert!(a < 0.0 && b > 0.0);
        let (a, b) = log_range(0.01, 0.01);
        assert!(a > 0.0 && a < 0.01 && b > 0.01);
        assert_eq!(extent([f64::NAN, 2.0, 1.0, f64::INFINITY]), Some((1.0, 2.0)));
        assert_eq!(extent([f64::NAN]), None);
        assert_eq!(fmt_tick(0.0010000001), "0.001");
        assert_eq!(fmt_tick(60.0), "60");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(1500.0), "1500");
    }

    #[test]
    fn the_bundled_font_registers() {
        assert!(register_font());
    }
}
