//! Published quality figures for models evalq has not measured, kept as data with their sources
//! (`datasets/reference-points.csv`, compiled in; `--reference-points FILE` replaces it).
//!
//! Columns: `model,format,metric,value,source_url,note`; `metric` is `ppl` (WikiText-2
//! perplexity) or `kld` (mean KL-divergence against the FP16 model). Fields may be quoted with
//! `"`, doubling a quote inside. Where a model lacks a format, [`quality`] extrapolates it from
//! the model's neighbouring formats and the Llama-3-8B table (the one complete series), and
//! labels it so.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Error, Result};

/// The compiled-in table.
pub const BUILTIN_CSV: &str = include_str!("../../datasets/reference-points.csv");
/// What error messages call the compiled-in table.
pub const BUILTIN_NAME: &str = "datasets/reference-points.csv (built in)";
/// The model whose table has every format, used as the shape of the curve when extrapolating.
pub const REFERENCE_SERIES: &str = "Llama-3-8B";

/// One published figure.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RefPoint {
    pub model: String,
    pub format: String,
    pub metric: String,
    pub value: f64,
    pub source_url: String,
    pub note: String,
}

/// Splits one CSV line into fields (RFC 4180 quoting, no embedded newlines).
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote".into());
                    }
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Parses the table; `origin` names the file in errors (`FILE: line N: ...`).
pub fn parse(text: &str, origin: &str) -> Result<Vec<RefPoint>> {
    let bad = |line: usize, msg: String| Error::Invalid(format!("{origin}: line {line}: {msg}"));
    const HEADER: [&str; 6] = ["model", "format", "metric", "value", "source_url", "note"];
    let mut out = Vec::new();
    let mut seen_header = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f = split_csv(line).map_err(|m| bad(n, m))?;
        if !seen_header {
            if f.iter().map(|s| s.trim()).ne(HEADER) {
                return Err(bad(n, format!("expected the header '{}'", HEADER.join(","))));
            }
            seen_header = true;
            continue;
        }
        if f.len() != HEADER.len() {
            return Err(bad(n, format!("{} fields, expected {} ({})", f.len(), HEADER.len(), HEADER.join(","))));
        }
        let metric = f[2].trim().to_ascii_lowercase();
        if metric != "ppl" && metric != "kld" {
            return Err(bad(n, format!("metric '{}' is not ppl or kld", f[2].trim())));
        }
        let value: f64 = f[3].trim().parse().map_err(|_| bad(n, format!("value '{}' is not a number", f[3].trim())))?;
        let ok = value.is_finite() && if metric == "ppl" { value >= 1.0 } else { value >= 0.0 };
        if !ok {
            return Err(bad(n, format!("value {value} is out of range for {metric}")));
        }
        let format = f[1].trim();
        if crate::quant::mix::FileType::from_name(format).is_none() {
            return Err(bad(n, format!("unknown format '{format}'")));
        }
        if f[0].trim().is_empty() || f[4].trim().is_empty() {
            return Err(bad(n, "model and source_url must not be empty".into()));
        }
        out.push(RefPoint {
            model: f[0].trim().to_string(),
            format: crate::quant::mix::FileType::from_name(format).map(|t| t.name().to_string()).unwrap_or_default(),
            metric,
            value,
            source_url: f[4].trim().to_string(),
            note: f[5].trim().to_string(),
        });
    }
    if !seen_header {
        return Err(Error::Invalid(format!("{origin}: empty (expected the header '{}')", HEADER.join(","))));
    }
    Ok(out)
}

/// The compiled-in table.
pub fn builtin() -> Vec<RefPoint> {
    parse(BUILTIN_CSV, BUILTIN_NAME).expect("the built-in reference points parse (tested)")
}

/// Reads a table from a file.
pub fn load(path: &Path) -> Result<Vec<RefPoint>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, &path.display().to_string())
}

/// A model's quality in one format.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RefQuality {
    pub kld: Option<f64>,
    pub ppl: Option<f64>,
    /// True when any figure is extrapolated rather than published.
    pub extrapolated: bool,
    /// Where the figures come from, or how they were extrapolated.
    pub source: String,
}

fn series(points: &[RefPoint], model: &str, metric: &str) -> BTreeMap<String, f64> {
    points.iter().filter(|p| p.model == model && p.metric == metric).map(|p| (p.format.clone(), p.value)).collect()
}

/// Extrapolates `target[format]` from the reference series: the reference's value times the
/// geometric mean of target/reference over the nearest neighbours below and above `format` in
/// the reference's order (the formats whose reference value brackets it). Works on `x` as given
/// (KLD, or ln(PPL/PPL_F16)); values ≤ 0 cannot be scaled and are skipped.
fn scale_from_neighbours(
    target: &BTreeMap<String, f64>,
    reference: &BTreeMap<String, f64>,
    format: &str,
) -> Option<(f64, String)> {
    let r = *reference.get(format)?;
    if r <= 0.0 {
        return None;
    }
    let common: Vec<(&String, f64, f64)> = target
        .iter()
        .filter_map(|(f, &t)| reference.get(f).map(|&rv| (f, t, rv)))
        .filter(|(_, t, rv)| *t > 0.0 && *rv > 0.0)
        .collect();
    let below = common.iter().filter(|c| c.2 <= r).max_by(|a, b| a.2.total_cmp(&b.2));
    let above = common.iter().filter(|c| c.2 > r).min_by(|a, b| a.2.total_cmp(&b.2));
    let used: Vec<_> = below.into_iter().chain(above).collect();
    if used.is_empty() {
        return None;
    }
    let ln_scale = used.iter().map(|c| (c.1 / c.2).ln()).sum::<f64>() / used.len() as f64;
    let names = used.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(" and ");
    Some((r * ln_scale.exp(), names))
}

/// Quality of `model` in `format` from the table: published figures where they exist, else
/// extrapolated from the model's own figures for the neighbouring formats scaled by the
/// reference series (KLD directly; PPL through ln(PPL/PPL_F16), which needs the model's F16 PPL).
/// `None` when the table has nothing for the model.
pub fn quality(points: &[RefPoint], model: &str, format: &str) -> Option<RefQuality> {
    let kld = series(points, model, "kld");
    let ppl = series(points, model, "ppl");
    if kld.is_empty() && ppl.is_empty() {
        return None;
    }
    let rk = series(points, REFERENCE_SERIES, "kld");
    let rp = series(points, REFERENCE_SERIES, "ppl");
    let mut notes: Vec<String> = Vec::new();
    let mut extrapolated = false;
    let src = points.iter().find(|p| p.model == model && p.format == format).map(|p| p.source_url.clone());
    let k = match kld.get(format) {
        Some(&v) => Some(v),
        None if !kld.is_empty() => scale_from_neighbours(&kld, &rk, format).map(|(v, n)| {
            extrapolated = true;
            notes.push(format!("KLD extrapolated from {model}'s {n} scaled by {REFERENCE_SERIES}"));
            v
        }),
        None => None,
    };
    let p = match ppl.get(format) {
        Some(&v) => Some(v),
        None => {
            let (b, rb) = (ppl.get("F16").copied(), rp.get("F16").copied());
            match (b, rb) {
                (Some(b), Some(rb)) => {
                    let ln = |m: &BTreeMap<String, f64>, base: f64| -> BTreeMap<String, f64> {
                        m.iter()
                            .filter(|(f, _)| f.as_str() != "F16")
                            .map(|(f, v)| (f.clone(), (v / base).ln()))
                            .collect()
                    };
                    scale_from_neighbours(&ln(&ppl, b), &ln(&rp, rb), format).map(|(x, n)| {
                        extrapolated = true;
                        notes.push(format!("PPL extrapolated from {model}'s {n} scaled by {REFERENCE_SERIES}"));
                        b * x.exp()
                    })
                }
                _ => None,
            }
        }
    };
    if k.is_none() && p.is_none() {
        return None;
    }
    let source = if notes.is_empty() { src.unwrap_or_default() } else { notes.join("; ") };
    Some(RefQuality { kld: k, ppl: p, extrapolated, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_with_sources() {
        let pts = builtin();
        assert!(pts.len() > 40);
        assert!(pts.iter().all(|p| p.source_url.starts_with("https://")));
        let q = quality(&pts, "Llama-3-8B", "Q4_K_M").unwrap();
        assert_eq!((q.kld, q.ppl, q.extrapolated), (Some(0.031273), Some(6.407115), false));
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let h = "model,format,metric,value,source_url,note\n";
        let cases = [
            (format!("{h}M,Q4_0,ppl,abc,https://x,n\n"), "line 2: value 'abc' is not a number"),
            (format!("{h}M,Q4_0,ppl,5\n"), "line 2: 4 fields, expected 6"),
            (format!("{h}\nM,Q9_9,ppl,5,https://x,n\n"), "line 3: unknown format 'Q9_9'"),
            (format!("{h}M,Q4_0,bleu,5,https://x,n\n"), "line 2: metric 'bleu'"),
            (format!("{h}M,Q4_0,kld,-1,https://x,n\n"), "line 2: value -1 is out of range"),
            (format!("{h}M,Q4_0,kld,1,https://x,\"open\n"), "line 2: unterminated quote"),
            ("model,fmt\n".to_string(), "line 1: expected the header"),
        ];
        for (text, want) in cases {
            let e = parse(&text, "my.csv").unwrap_err().to_string();
            assert!(e.starts_with("my.csv: ") && e.contains(want), "{e} / {want}");
        }
        let ok = parse(&format!("{h}M,q4_k_m,ppl,5.5,https://x,\"a, \"\"b\"\"\"\n"), "ok.csv").unwrap();
        assert_eq!(ok[0].format, "Q4_K_M");
        assert_eq!(ok[0].note, "a, \"b\"");
    }

    #[test]
    fn missing_formats_are_extrapolated_from_neighbours() {
        let pts = builtin();
        // Llama-2-7B has Q4_K_M and Q6_K published; Q5_K_M sits between them in the 8B table.
        let q = quality(&pts, "Llama-2-7B", "Q5_K_M").unwrap();
        assert!(q.extrapolated && q.source.contains("Q6_K and Q4_K_M"), "{q:?}");
        let k = q.kld.unwrap();
        // Hand check: 0.010762 × sqrt((0.012686/0.031273) × (0.002098/0.005452)).
        let want = 0.010762 * ((0.012686f64 / 0.031273) * (0.002098 / 0.005452)).sqrt();
        assert!((k - want).abs() < 1e-12, "{k} vs {want}");
        let p = q.ppl.unwrap();
        assert!(p > 5.808494 && p < 5.877078, "{p}");
        // Published figures are not touched; models without figures give None.
        assert!(!quality(&pts, "Llama-2-7B", "Q4_K_M").unwrap().extrapolated);
        assert!(quality(&pts, "Llama-2-13B", "Q4_K_M").is_none());
    }
}
