//! `report.html`: the run's [`Summary`] as one self-contained page. The charts' PNGs are inlined
//! as base64 `data:` URIs and the CSS is embedded, so the file can be mailed or archived alone
//! and still shows everything; it loads nothing from the network or from beside it.

use std::path::{Path, PathBuf};

use super::Summary;
use crate::error::{Error, Result};

/// Standard base64 (RFC 4648 §4, with `=` padding). A dozen lines do not justify a dependency.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes carries k+1 sextets; the rest of the quartet is padding.
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 2.5em}
dl{display:grid;grid-template-columns:minmax(5em,9em) minmax(0,1fr);gap:.25em .8em;margin:.4em 0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:.92em;margin:.8em 0}th,td{border:1px solid #ccc;padding:.3em .55em}
th{background:#f3f3f3}td{text-align:right;font-variant-numeric:tabular-nums}td:first-child{text-align:left;font-weight:600}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-weight:600;margin-bottom:.3em}
";

/// The HTML text of the report; `charts_dir` holds the PNGs to inline.
pub(crate) fn render(s: &Summary, charts_dir: &Path) -> Result<String> {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!("<title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n", esc(&s.title)));
    h.push_str(&format!("<h1>{}</h1>\n<div class=\"facts\">\n", esc(&s.title)));
    for facts in &s.facts {
        h.push_str(&format!("<section>\n<h2>{}</h2>\n<dl>\n", esc(facts.title)));
        for (k, v) in &facts.items {
            h.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", esc(k), esc(v)));
        }
        h.push_str("</dl>\n</section>\n");
    }
    h.push_str("</div>\n");

    h.push_str(&format!("<h2>Results</h2>\n<p>{}</p>\n<table>\n<thead><tr>", esc(&s.baseline)));
    for col in &s.header {
        h.push_str(&format!("<th>{}</th>", esc(col)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &s.rows {
        h.push_str("<tr>");
        for cell in row {
            h.push_str(&format!("<td>{}</td>", esc(cell)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");

    h.push_str("<h2>Charts</h2>\n");
    for (stem, title) in &s.charts {
        let png = charts_dir.join(format!("{stem}.png"));
        let bytes = std::fs::read(&png).map_err(|e| Error::io(&png, e))?;
        h.push_str(&format!(
            "<figure id=\"{stem}\">\n<figcaption>{t}</figcaption>\n<img alt=\"{t}\" src=\"data:image/png;base64,{}\">\n</figure>\n",
            base64(&bytes),
            t = esc(title)
        ));
    }

    h.push_str("<h2>Caveats</h2>\n");
    if s.caveats.is_empty() {
        h.push_str("<p>None found in this run's data.</p>\n");
    } else {
        h.push_str("<ul>\n");
        for c in &s.caveats {
            h.push_str(&format!("<li>{}</li>\n", esc(c)));
        }
        h.push_str("</ul>\n");
    }
    h.push_str(&format!("<h2>Recommendation</h2>\n<p>{}</p>\n</body>\n</html>\n", esc(&s.recommendation)));
    Ok(h)
}

/// Writes `dir/report.html` atomically (after the charts exist) and returns its path.
pub(crate) fn write(dir: &Path, s: &Summary) -> Result<PathBuf> {
    let path = dir.join("report.html");
    let text = render(s, &dir.join("charts"))?;
    crate::util::write_bytes_atomic(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
