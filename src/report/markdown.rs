//! `report.md`: the run's [`Summary`] as GitHub-flavoured markdown, charts linked as the PNGs
//! beside it so the report renders on a forge and in most viewers.

use std::path::{Path, PathBuf};

use super::Summary;
use crate::error::Result;

/// Escapes text for a markdown table cell or list item: pipes would split cells, and `*`,
/// backticks and `<` would start markup. Brackets stay: without a following `(url)` they are
/// plain text, and "ΔPPL [95% CI]" reads better unescaped. Underscores stay as they are: inside words
/// (`Q4_K_M`) GitHub-flavoured markdown does not read them as emphasis, and unescaped names keep
/// the file greppable.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '*' | '`' | '<' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// The markdown text of the report.
pub(crate) fn render(s: &Summary) -> String {
    let mut md = format!("# {}\n\n", esc(&s.title));
    for facts in &s.facts {
        md.push_str(&format!("## {}\n\n", facts.title));
        for (k, v) in &facts.items {
            md.push_str(&format!("- **{k}**: {}\n", esc(v)));
        }
        md.push('\n');
    }

    md.push_str("## Results\n\n");
    md.push_str(&esc(&s.baseline));
    md.push_str("\n\n");
    md.push_str(&format!("| {} |\n", s.header.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | ")));
    // Text columns left-aligned, figures right-aligned.
    let align: Vec<&str> = (0..s.header.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
    md.push_str(&format!("| {} |\n", align.join(" | ")));
    for row in &s.rows {
        md.push_str(&format!("| {} |\n", row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")));
    }
    md.push('\n');

    md.push_str("## Charts\n\n");
    for (stem, title) in &s.charts {
        md.push_str(&format!("### {title}\n\n![{title}](charts/{stem}.png)\n\n([SVG](charts/{stem}.svg))\n\n"));
    }

    md.push_str("## Caveats\n\n");
    if s.caveats.is_empty() {
        md.push_str("None found in this run's data.\n\n");
    }
    for c in &s.caveats {
        md.push_str(&format!("- {}\n", esc(c)));
    }
    if !s.caveats.is_empty() {
        md.push('\n');
    }

    md.push_str("## Recommendation\n\n");
    md.push_str(&esc(&s.recommendation));
    md.push('\n');
    md
}

/// Writes `dir/report.md` atomically and returns its path.
pub(crate) fn write(dir: &Path, s: &Summary) -> Result<PathBuf> {
    let path = dir.join("report.md");
    crate::util::write_bytes_atomic(&path, render(s).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(esc("Q4_K_M"), "Q4_K_M");
        assert_eq!(esc("a*b<c"), "a\\*b\\<c");
        assert_eq!(esc("a|b"), "a\\|b");
        assert_eq!(esc("two\nlines"), "two lines");
    }
}
