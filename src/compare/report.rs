//! The outputs of `evalq compare`: `compare.md`, a self-contained `compare.html` (chart inlined),
//! `compare.json` (the [`Comparison`] as is, for machines) and the chart `compare.svg|png`.
//!
//! Markdown and HTML are rendered from one table built here, so they always say the same thing.
//! The chart puts ΔPPL % with its interval (left) beside the speed changes with their noise band
//! (right): a point outside its band and its interval away from zero is what a verdict means.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Comparison, FormatComparison, SpeedDelta, Verdict};
use crate::error::{Error, Result};
use crate::report::charts::{draw_error, extent, fmt_tick, register_font, write_png_sized, DrawResult, KeyAxis, FONT};

/// Pixel size of the chart.
const SIZE: (u32, u32) = (1200, 720);

/// Rows of blank space under the formats for the legend, and the axis' lower end.
const LEGEND_ROWS: f64 = 3.0;
const BOTTOM: f64 = -0.6 - LEGEND_ROWS;

const RED: RGBColor = RGBColor(214, 39, 40);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(110, 110, 110);
const PP: RGBColor = RGBColor(31, 119, 180);
const TG: RGBColor = RGBColor(255, 127, 14);

/// Writes every output into `dir` (created if needed) and returns the paths.
pub fn write_all(dir: &Path, c: &Comparison) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();

    let json = dir.join("compare.json");
    let bytes = serde_json::to_vec_pretty(c).map_err(|e| Error::Invalid(format!("{}: {e}", json.display())))?;
    crate::util::write_bytes_atomic(&json, &bytes)?;
    out.push(json);

    out.extend(write_chart(dir, c)?);

    let md = dir.join("compare.md");
    crate::util::write_bytes_atomic(&md, markdown(c).as_bytes())?;
    out.push(md);

    let html_path = dir.join("compare.html");
    let png = dir.join("compare.png");
    let png_bytes = std::fs::read(&png).map_err(|e| Error::io(&png, e))?;
    crate::util::write_bytes_atomic(&html_path, html(c, &png_bytes).as_bytes())?;
    out.push(html_path);
    Ok(out)
}

/// One line per format for a terminal: `Q4_K_M  regressed  quality regressed (ΔPPL +1.01%) ...`,
/// then the added and removed formats.
pub fn summary_lines(c: &Comparison) -> Vec<String> {
    let w = c.formats.iter().map(|f| f.format.len()).max().unwrap_or(6).max(6);
    let mut lines: Vec<String> = c
        .formats
        .iter()
        .map(|f| {
            let q = &f.quality;
            format!(
                "{:<w$}  {:<10} quality {} (ΔPPL {}, ΔKLD {}), pp {} ({}), tg {} ({}){}",
                f.format,
                f.verdict.to_string(),
                q.verdict,
                pct(q.dppl_pct),
                pct(q.dkld_pct),
                f.pp.verdict,
                pct(f.pp.delta_pct),
                f.tg.verdict,
                pct(f.tg.delta_pct),
                if f.counted_regression { "  <- counts" } else { "" }
            )
        })
        .collect();
    if !c.added.is_empty() {
        lines.push(format!("added (only in current): {}", c.added.join(" ")));
    }
    if !c.removed.is_empty() {
        lines.push(format!("removed (only in baseline): {}", c.removed.join(" ")));
    }
    lines
}

/// "+1.23%", "n/a" when not finite.
fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.2}%")
    } else {
        "n/a".into()
    }
}

/// A signed number with `sig` significant digits.
fn signed(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = crate::report::fmt_sig(v, sig);
    if v > 0.0 {
        format!("+{s}")
    } else {
        s
    }
}

const HEADER: [&str; 10] = [
    "format",
    "verdict",
    "quality",
    "PPL base → cur",
    "ΔPPL % [CI]",
    "ΔKLD (%)",
    "Δ same-top, points",
    "pp Δ median (noise ±)",
    "tg Δ median (noise ±)",
    "counts for exit",
];

fn speed_cell(s: &SpeedDelta) -> String {
    if s.verdict == Verdict::NotMeasured {
        return "not measured".into();
    }
    format!("{}: {} (±{:.1}%)", s.verdict, pct(s.delta_pct), s.noise_pct)
}

fn row(f: &FormatComparison) -> Vec<String> {
    let q = &f.quality;
    vec![
        f.format.clone(),
        f.verdict.to_string(),
        format!("PPL {}, KLD {}", q.ppl_verdict, q.kld_verdict),
        format!("{} → {}", crate::report::fmt_fixed(q.ppl_base, 4), crate::report::fmt_fixed(q.ppl_cur, 4)),
        format!("{} [{}, {}]", pct(q.dppl_pct), pct(q.dppl_pct_ci_low), pct(q.dppl_pct_ci_high)),
        format!("{} ({})", signed(q.dkld, 3), pct(q.dkld_pct)),
        signed(q.dsame_top, 3),
        speed_cell(&f.pp),
        speed_cell(&f.tg),
        if f.counted_regression { "yes".into() } else { "no".into() },
    ]
}

/// The facts both documents open with, as (label, value).
fn facts(c: &Comparison) -> Vec<(String, String)> {
    let side = |l: &super::RunLabel| {
        format!(
            "{} — created {}, evalq {} ({}), {} chunks, {} with {} threads",
            l.name, l.created, l.evalq_version, l.git_commit, l.n_chunks, l.cpu, l.threads
        )
    };
    vec![
        ("baseline".into(), side(&c.baseline)),
        ("current".into(), side(&c.current)),
        ("model".into(), format!("{} (sha256 {})", c.model, c.model_sha256)),
        ("dataset".into(), format!("{} (sha256 {}), n_ctx {}", c.dataset, c.dataset_sha256, c.n_ctx)),
        ("chunks paired".into(), c.n_chunks_paired.to_string()),
        ("speed comparable".into(), if c.speed_comparable { "yes (same CPU and threads)".into() } else { "no".into() }),
    ]
}

/// The counts of verdicts, e.g. "1 regressed, 12 unchanged".
fn tally(c: &Comparison) -> String {
    let mut parts = Vec::new();
    for v in [Verdict::Regressed, Verdict::Improved, Verdict::Unchanged, Verdict::NotComparable, Verdict::NotMeasured] {
        let n = c.formats.iter().filter(|f| f.verdict == v).count();
        if n > 0 {
            parts.push(format!("{n} {v}"));
        }
    }
    let exit = if c.regressed { "exit code 1: a counted aspect regressed" } else { "exit code 0" };
    let fail_on = match c.options.fail_on {
        super::FailOn::Quality => "quality",
        super::FailOn::Speed => "speed",
        super::FailOn::Any => "any",
    };
    format!("{} of {} formats; {exit} (--fail-on {fail_on})", parts.join(", "), c.formats.len())
}

/// The rules, with the thresholds in force.
fn rules(c: &Comparison) -> Vec<String> {
    let o = &c.options;
    vec![
        format!(
            "Quality: a paired t-test over the {} per-chunk differences (chunk NLL for PPL, chunk KLD for KLD), \
             two-sided at alpha = {} ({}% intervals, t with n − 1 degrees of freedom). A change is a regression or \
             an improvement only if it is significant AND relevant: |ΔPPL| ≥ {}% of the baseline PPL, or |ΔKLD| ≥ \
             {}% of the baseline KLD and ≥ {} nats. Nightly runs compare many formats; requiring both keeps float \
             reordering noise (significant but tiny) and single noisy chunks (large but not significant) from \
             raising alarms.",
            c.n_chunks_paired,
            o.alpha,
            fmt_tick(100.0 * (1.0 - o.alpha)),
            fmt_tick(100.0 * o.min_ppl_rel),
            fmt_tick(100.0 * o.min_kld_rel),
            o.min_kld_abs
        ),
        format!(
            "Speed (pp and tg separately): judged against the noise of the repetitions. Regressed only if every \
             current repetition is slower than every baseline repetition (the ranges do not overlap) AND the \
             median drops by more than the larger of either side's relative spread ((max − min) / median) and \
             {}% for pp, {}% for tg (run-to-run noise exceeds the repetitions' spread); improved is the mirror \
             image. Different CPU or thread count: not comparable.",
            fmt_tick(100.0 * o.speed_threshold),
            fmt_tick(100.0 * o.tg_threshold)
        ),
        "A format's verdict is regressed if any aspect regressed, else improved if any improved. --fail-on picks \
         the aspects that set the exit code (quality, speed or any)."
            .into(),
    ]
}

/// `compare.md`.
pub fn markdown(c: &Comparison) -> String {
    let mut m = format!("# evalq compare: {}\n\n", c.model);
    for (k, v) in facts(c) {
        m.push_str(&format!("- **{k}:** {v}\n"));
    }
    m.push_str(&format!("\n**{}**\n\n", tally(c)));
    if !c.notes.is_empty() {
        m.push_str("## Notes\n\n");
        for n in &c.notes {
            m.push_str(&format!("- {n}\n"));
        }
        m.push('\n');
    }
    m.push_str("## Verdicts\n\n");
    m.push_str(&format!("| {} |\n|", HEADER.join(" | ")));
    m.push_str(&"---|".repeat(HEADER.len()));
    m.push('\n');
    for f in &c.formats {
        let cells: Vec<String> = row(f).into_iter().map(|s| s.replace('|', "\\|")).collect();
        m.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    m.push_str(&format!(
        "\nΔ are current − baseline. The ΔPPL interval is the {}% paired interval.\n",
        fmt_tick(100.0 * (1.0 - c.options.alpha))
    ));
    if !c.added.is_empty() || !c.removed.is_empty() {
        m.push_str("\n## Formats in one run only\n\n");
        m.push_str(&format!("- added (only in current): {}\n", list(&c.added)));
        m.push_str(&format!("- removed (only in baseline): {}\n", list(&c.removed)));
    }
    m.push_str("\n## Chart\n\n![ΔPPL and speed changes per format](compare.svg)\n\n## How the verdicts are made\n\n");
    for r in rules(c) {
        m.push_str(&format!("- {r}\n"));
    }
    m
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
dl{display:grid;grid-template-columns:minmax(5em,11em) minmax(0,1fr);gap:.25em .8em}dt{font-weight:600}dd{margin:0}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .5em}th{background:#f3f3f3}
td{text-align:right;font-variant-numeric:tabular-nums}td:first-child{text-align:left;font-weight:600}
.regressed{background:#fde2e2}.improved{background:#e3f6e3}
img{max-width:100%;height:auto;border:1px solid #eee}
";

/// `compare.html`, with the chart's PNG inlined.
pub fn html(c: &Comparison, png: &[u8]) -> String {
    let title = format!("evalq compare: {}", c.model);
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>\n{CSS}</style>\n\
         </head>\n<body>\n<h1>{t}</h1>\n<dl>\n",
        t = esc(&title)
    );
    for (k, v) in facts(c) {
        h.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", esc(&k), esc(&v)));
    }
    h.push_str(&format!("</dl>\n<p><strong>{}</strong></p>\n", esc(&tally(c))));
    if !c.notes.is_empty() {
        h.push_str("<h2>Notes</h2>\n<ul>\n");
        for n in &c.notes {
            h.push_str(&format!("<li>{}</li>\n", esc(n)));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Verdicts</h2>\n<table>\n<thead><tr>");
    for col in HEADER {
        h.push_str(&format!("<th>{}</th>", esc(col)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for f in &c.formats {
        let class = match f.verdict {
            Verdict::Regressed => " class=\"regressed\"",
            Verdict::Improved => " class=\"improved\"",
            _ => "",
        };
        h.push_str(&format!("<tr{class}>"));
        for cell in row(f) {
            h.push_str(&format!("<td>{}</td>", esc(&cell)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    if !c.added.is_empty() || !c.removed.is_empty() {
        h.push_str(&format!(
            "<h2>Formats in one run only</h2>\n<ul>\n<li>added (only in current): {}</li>\n<li>removed (only in \
             baseline): {}</li>\n</ul>\n",
            esc(&list(&c.added)),
            esc(&list(&c.removed))
        ));
    }
    h.push_str(&format!(
        "<h2>Chart</h2>\n<img alt=\"ΔPPL and speed changes per format\" src=\"data:image/png;base64,{}\">\n",
        crate::report::html::base64(png)
    ));
    h.push_str("<h2>How the verdicts are made</h2>\n<ul>\n");
    for r in rules(c) {
        h.push_str(&format!("<li>{}</li>\n", esc(&r)));
    }
    h.push_str("</ul>\n</body>\n</html>\n");
    h
}

/// Draws `compare.svg` and `compare.png`.
fn write_chart(dir: &Path, c: &Comparison) -> Result<Vec<PathBuf>> {
    if !register_font() {
        return Err(Error::Invalid("charts: the bundled font assets/fonts/DejaVuSans.ttf cannot be parsed".into()));
    }
    let svg = dir.join("compare.svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, c).and_then(|()| root.present()).map_err(|e| draw_error(&svg, e))?;
    }
    crate::util::write_bytes_atomic(&svg, text.as_bytes())?;
    let png = dir.join("compare.png");
    write_png_sized(&png, SIZE, |root| draw(root, c))?;
    Ok(vec![svg, png])
}

fn verdict_color(v: Verdict) -> RGBColor {
    match v {
        Verdict::Regressed => RED,
        Verdict::Improved => GREEN,
        _ => GREY,
    }
}

/// An x range around the finite values, zero always included, padded 8% either side.
fn x_range(v: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = extent(v.into_iter().chain([0.0])).unwrap_or((0.0, 0.0));
    let span = if hi - lo > 1e-9 { hi - lo } else { 1.0 };
    (lo - 0.08 * span, hi + 0.08 * span)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Comparison) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let root = root.margin(10, 10, 10, 10);
    let (title, body) = root.split_vertically(40);
    let caption = format!(
        "{}: current vs baseline, {} chunks paired — {}",
        c.model,
        c.n_chunks_paired,
        tally(c).split(';').next().unwrap_or("")
    );
    title.draw(&Text::new(caption, (10, 8), (FONT, 20).into_font()))?;
    let (left, right) = body.split_horizontally(SIZE.0 / 2 - 10);
    quality_panel(&left, c)?;
    speed_panel(&right, c)
}

/// Row `k` (the k-th format) sits at y = n − 1 − k, so the first format is at the top. Below
/// row 0 the axis leaves [`LEGEND_ROWS`] rows of empty space, where the legend goes without
/// covering a point.
fn y_axis(n: usize) -> KeyAxis {
    KeyAxis { lo: BOTTOM, hi: n as f64 - 0.4, keys: (0..n).map(|i| i as f64).collect() }
}

/// The coordinates of a per-format panel: percent on x, one key per format on y.
type RowsChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, KeyAxis>>;

/// A panel with one row per format (named on the y axis, first at the top) over the x range
/// `x`, with its mesh drawn: what both panels of the compare chart stand on.
fn format_rows<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    c: &Comparison,
    title: &str,
    x: std::ops::Range<f64>,
    x_desc: &str,
) -> std::result::Result<RowsChart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let n = c.formats.len();
    let names: Vec<&str> = c.formats.iter().map(|f| f.format.as_str()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(8)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y_axis(n))?;
    let fmt_y = |v: &f64| label(&names, *v);
    // A tick at rounding distance from zero would print "-0".
    let fmt_x = |v: &f64| fmt_tick(if v.abs() < 1e-9 { 0.0 } else { *v });
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .y_labels(n)
        .y_label_formatter(&fmt_y)
        .x_label_formatter(&fmt_x)
        .light_line_style(RGBColor(246, 246, 246))
        .draw()?;
    Ok(chart)
}

fn quality_panel<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Comparison) -> DrawResult<DB> {
    let n = c.formats.len();
    let level = fmt_tick(100.0 * (1.0 - c.options.alpha));
    let title = format!("ΔPPL % with its {level}% interval");
    if n == 0 {
        return empty(root, &title, "no format in both runs");
    }
    let band = 100.0 * c.options.min_ppl_rel;
    let xs = c.formats.iter().flat_map(|f| {
        let q = &f.quality;
        [q.dppl_pct, q.dppl_pct_ci_low, q.dppl_pct_ci_high]
    });
    let (x0, x1) = x_range(xs.chain([-band, band]));
    let mut chart = format_rows(root, c, &title, x0..x1, "ΔPPL, % of the baseline run's PPL (current − baseline)")?;
    let top = n as f64 - 0.4;
    let relevance = format!("±{}%: not relevant", fmt_tick(band));
    chart
        .draw_series(std::iter::once(Rectangle::new([(-band, -0.6), (band, top)], RGBColor(225, 225, 225).filled())))?
        .label(relevance)
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], RGBColor(225, 225, 225).filled()));
    chart.draw_series(std::iter::once(PathElement::new([(0.0, BOTTOM), (0.0, top)], BLACK.stroke_width(1))))?;
    for (k, f) in c.formats.iter().enumerate() {
        let y = (n - 1 - k) as f64;
        let q = &f.quality;
        let color = verdict_color(q.ppl_verdict);
        if q.dppl_pct_ci_low.is_finite() && q.dppl_pct_ci_high.is_finite() {
            let (lo, hi) = (q.dppl_pct_ci_low, q.dppl_pct_ci_high);
            let style = color.stroke_width(2);
            chart.draw_series([
                PathElement::new([(lo, y), (hi, y)], style),
                PathElement::new([(lo, y - 0.18), (lo, y + 0.18)], style),
                PathElement::new([(hi, y - 0.18), (hi, y + 0.18)], style),
            ])?;
        }
        if q.dppl_pct.is_finite() {
            chart.draw_series(std::iter::once(Circle::new((q.dppl_pct, y), 5, color.filled())))?;
        }
    }
    for (v, name) in
        [(Verdict::Regressed, "regressed"), (Verdict::Improved, "improved"), (Verdict::Unchanged, "unchanged")]
    {
        let color = verdict_color(v);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

fn speed_panel<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Comparison) -> DrawResult<DB> {
    let n = c.formats.len();
    let title = if c.speed_comparable {
        "Δ median tokens/s % with the noise band".to_string()
    } else {
        "Δ median tokens/s % (different machines: not comparable)".to_string()
    };
    let measured = |s: &SpeedDelta| s.delta_pct.is_finite();
    if n == 0 || !c.formats.iter().any(|f| measured(&f.pp) || measured(&f.tg)) {
        return empty(root, &title, "speed was not measured in both runs");
    }
    let xs = c.formats.iter().flat_map(|f| {
        [f.pp.delta_pct, f.tg.delta_pct, f.pp.noise_pct, -f.pp.noise_pct, f.tg.noise_pct, -f.tg.noise_pct]
    });
    let (x0, x1) = x_range(xs);
    let mut chart = format_rows(root, c, &title, x0..x1, "Δ median tokens/s, % (current − baseline)")?;
    let top = n as f64 - 0.4;
    chart.draw_series(std::iter::once(PathElement::new([(0.0, BOTTOM), (0.0, top)], BLACK.stroke_width(1))))?;
    // pp sits just above the format's row line and tg just below, each with its own band.
    for (aspect, dy, color, name) in [(0, 0.2, PP, "pp"), (1, -0.2, TG, "tg")] {
        let band_color = color.mix(0.18);
        let mut bands = Vec::new();
        let mut points = Vec::new();
        let mut rings = Vec::new();
        for (k, f) in c.formats.iter().enumerate() {
            let s = if aspect == 0 { &f.pp } else { &f.tg };
            let y = (n - 1 - k) as f64 + dy;
            if s.noise_pct.is_finite() {
                bands.push(Rectangle::new([(-s.noise_pct, y - 0.13), (s.noise_pct, y + 0.13)], band_color.filled()));
            }
            if s.delta_pct.is_finite() {
                points.push(Circle::new((s.delta_pct, y), 5, color.filled()));
                if matches!(s.verdict, Verdict::Regressed | Verdict::Improved) {
                    rings.push(Circle::new((s.delta_pct, y), 9, verdict_color(s.verdict).stroke_width(2)));
                }
            }
        }
        chart
            .draw_series(bands)?
            .label(format!("{name} noise band"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], band_color.filled()));
        chart
            .draw_series(points)?
            .label(format!("{name} Δ median"))
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
        chart.draw_series(rings)?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("ring: regressed (red) / improved (green)")
        .legend(|(x, y)| Circle::new((x + 8, y), 7, RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

/// The format name of the row at `v` (rows are at whole numbers, the first at the top).
fn label(names: &[&str], v: f64) -> String {
    let n = names.len();
    let r = v.round();
    if (v - r).abs() > 1e-6 || r < 0.0 || r as usize >= n {
        return String::new();
    }
    names[n - 1 - r as usize].to_string()
}

fn empty<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, why: &str) -> DrawResult<DB> {
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(title.to_string(), (20, 20), (FONT, 18).into_font()))?;
    let style = TextStyle::from((FONT, 18).into_font()).color(&GREY).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(format!("no data: {why}"), (w as i32 / 2, h as i32 / 2), style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_labelled_top_down_and_only_at_whole_numbers() {
        let names = ["A", "B", "C"];
        assert_eq!(label(&names, 2.0), "A");
        assert_eq!(label(&names, 0.0), "C");
        assert_eq!(label(&names, 0.5), "");
        assert_eq!(label(&names, 3.0), "");
        assert_eq!(label(&names, -1.0), "");
    }

    #[test]
    fn percentages_are_signed_and_nan_is_na() {
        assert_eq!(pct(1.234), "+1.23%");
        assert_eq!(pct(-0.5), "-0.50%");
        assert_eq!(pct(f64::NAN), "n/a");
        assert_eq!(signed(0.0123, 3), "+0.0123");
    }
}
