//! `history.csv`: one row per format per run, appended by every `evalq run` into its output root
//! (`reports/` by default), so `evalq history` can draw how PPL, KLD and speed moved over time.
//!
//! The file is rewritten whole, atomically (read, add, write to a temporary file, rename), so a
//! crash never leaves half a row. Running into the same run directory again (a resumed or forced
//! run) replaces that run's rows rather than adding a second copy. The header is checked against
//! [`COLUMNS`] exactly: a file written by another tool or version is refused, naming the file
//! and line, rather than silently misread.

pub mod charts;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::report::csv::quote;
use crate::run::results::RunResults;

/// The file name under the output root.
pub const FILE_NAME: &str = "history.csv";

/// The columns of `history.csv`, in order.
pub const COLUMNS: [&str; 21] = [
    "created",
    "run_dir",
    "git_commit",
    "evalq_version",
    "model",
    "model_sha256",
    "dataset_sha256",
    "n_ctx",
    "n_chunks",
    "cpu",
    "threads",
    "format",
    "bpw",
    "file_bytes",
    "ppl",
    "ppl_err",
    "kld_mean",
    "same_top_pct",
    "pp_tps",
    "tg_tps",
    "tg_gbps",
];

/// One row: one format of one run. Unmeasured figures are NaN (written as empty cells).
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRow {
    /// The run's start, RFC 3339 UTC; rows sort by it.
    pub created: String,
    /// The run directory's name (not its path, so the history survives moving `reports/`).
    pub run_dir: String,
    pub git_commit: String,
    pub evalq_version: String,
    pub model: String,
    pub model_sha256: String,
    pub dataset_sha256: String,
    pub n_ctx: usize,
    pub n_chunks: usize,
    pub cpu: String,
    pub threads: usize,
    pub format: String,
    pub bpw: f64,
    pub file_bytes: u64,
    pub ppl: f64,
    pub ppl_err: f64,
    pub kld_mean: f64,
    pub same_top_pct: f64,
    pub pp_tps: f64,
    pub tg_tps: f64,
    pub tg_gbps: f64,
}

impl HistoryRow {
    /// The rows of one run, one per format.
    pub fn from_results(run_dir_name: &str, r: &RunResults) -> Vec<HistoryRow> {
        r.formats
            .iter()
            .map(|f| HistoryRow {
                created: r.created.clone(),
                run_dir: run_dir_name.to_string(),
                git_commit: r.provenance.git_commit.clone(),
                evalq_version: r.provenance.evalq_version.clone(),
                model: r.model.name.clone(),
                model_sha256: r.model.sha256.clone(),
                dataset_sha256: r.dataset.sha256.clone(),
                n_ctx: r.dataset.n_ctx,
                n_chunks: r.dataset.n_chunks,
                cpu: r.machine.cpu.clone(),
                threads: r.machine.threads,
                format: f.format.clone(),
                bpw: f.bpw,
                file_bytes: f.file_bytes,
                ppl: f.quality.ppl,
                ppl_err: f.quality.ppl_err,
                kld_mean: f.quality.kld_mean,
                same_top_pct: f.quality.same_top_pct,
                pp_tps: f.speed.pp_tps,
                tg_tps: f.speed.tg_tps,
                tg_gbps: f.speed.tg_gbps,
            })
            .collect()
    }

    fn cells(&self) -> Vec<String> {
        let num = |v: f64| if v.is_finite() { format!("{v}") } else { String::new() };
        vec![
            quote(&self.created),
            quote(&self.run_dir),
            quote(&self.git_commit),
            quote(&self.evalq_version),
            quote(&self.model),
            quote(&self.model_sha256),
            quote(&self.dataset_sha256),
            self.n_ctx.to_string(),
            self.n_chunks.to_string(),
            quote(&self.cpu),
            self.threads.to_string(),
            quote(&self.format),
            num(self.bpw),
            self.file_bytes.to_string(),
            num(self.ppl),
            num(self.ppl_err),
            num(self.kld_mean),
            num(self.same_top_pct),
            num(self.pp_tps),
            num(self.tg_tps),
            num(self.tg_gbps),
        ]
    }

    /// Parses the fields of one data line (`line` is 1-based, for the error).
    fn parse(path: &Path, line: usize, f: &[String]) -> Result<HistoryRow> {
        let bad = |col: usize, what: &str| {
            Error::Invalid(format!(
                "{}: line {line}: column '{}' = '{}' is not {what}",
                path.display(),
                COLUMNS[col],
                f[col]
            ))
        };
        let int = |col: usize| f[col].trim().parse::<u64>().map_err(|_| bad(col, "a whole number"));
        // An empty cell is an unmeasured figure, as in results.csv.
        let num = |col: usize| {
            let t = f[col].trim();
            if t.is_empty() {
                Ok(f64::NAN)
            } else {
                t.parse::<f64>().map_err(|_| bad(col, "a number"))
            }
        };
        if f[0].trim().is_empty() {
            return Err(bad(0, "a time"));
        }
        Ok(HistoryRow {
            created: f[0].clone(),
            run_dir: f[1].clone(),
            git_commit: f[2].clone(),
            evalq_version: f[3].clone(),
            model: f[4].clone(),
            model_sha256: f[5].clone(),
            dataset_sha256: f[6].clone(),
            n_ctx: int(7)? as usize,
            n_chunks: int(8)? as usize,
            cpu: f[9].clone(),
            threads: int(10)? as usize,
            format: f[11].clone(),
            bpw: num(12)?,
            file_bytes: int(13)?,
            ppl: num(14)?,
            ppl_err: num(15)?,
            kld_mean: num(16)?,
            same_top_pct: num(17)?,
            pp_tps: num(18)?,
            tg_tps: num(19)?,
            tg_gbps: num(20)?,
        })
    }
}

/// Splits CSV text into records of fields: commas separate, double quotes enclose fields that
/// hold commas, quotes or line breaks, and `""` inside quotes is one quote (RFC 4180, which is
/// what [`quote`] writes). Returns (1-based line the record starts on, fields).
fn split_csv(path: &Path, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut line, mut start) = (1, 1);
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            '"' => {
                return Err(Error::Invalid(format!(
                    "{}: line {line}: a quote inside an unquoted field",
                    path.display()
                )))
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut fields)));
                line += 1;
                start = line;
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err(Error::Invalid(format!("{}: line {start}: a quoted field is never closed", path.display())));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start, fields));
    }
    // Blank lines carry nothing.
    records.retain(|(_, f)| !(f.len() == 1 && f[0].trim().is_empty()));
    Ok(records)
}

/// Reads `path` (a `history.csv`): every row, in file order. A missing file is an error; use
/// [`read_history_or_empty`] where "no history yet" is normal.
pub fn read_history(path: &Path) -> Result<Vec<HistoryRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let records = split_csv(path, &text)?;
    let Some((_, header)) = records.first() else {
        return Ok(Vec::new());
    };
    if header.iter().map(|h| h.trim()).ne(COLUMNS.iter().copied()) {
        return Err(Error::Invalid(format!(
            "{}: line 1: unknown header '{}'; expected '{}'",
            path.display(),
            header.join(","),
            COLUMNS.join(",")
        )));
    }
    let mut rows = Vec::with_capacity(records.len() - 1);
    for (line, fields) in &records[1..] {
        if fields.len() != COLUMNS.len() {
            return Err(Error::Invalid(format!(
                "{}: line {line}: {} fields, expected {}",
                path.display(),
                fields.len(),
                COLUMNS.len()
            )));
        }
        rows.push(HistoryRow::parse(path, *line, fields)?);
    }
    Ok(rows)
}

/// [`read_history`], or no rows when the file does not exist yet.
pub fn read_history_or_empty(path: &Path) -> Result<Vec<HistoryRow>> {
    if path.exists() {
        read_history(path)
    } else {
        Ok(Vec::new())
    }
}

/// Writes `rows` to `path` atomically, header first.
pub fn write_history(path: &Path, rows: &[HistoryRow]) -> Result<()> {
    crate::util::write_atomic(path, |w| {
        writeln!(w, "{}", COLUMNS.join(",")).map_err(|e| Error::io(path, e))?;
        for r in rows {
            writeln!(w, "{}", r.cells().join(",")).map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    })
}

/// Appends the rows of the run in `run_dir` (results `r`) to `<root>/history.csv`, replacing
/// any rows that run already had, and returns the file's path.
pub fn append_history(root: &Path, run_dir: &Path, r: &RunResults) -> Result<PathBuf> {
    let path = root.join(FILE_NAME);
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("{}: a run directory needs a name", run_dir.display())))?;
    let mut rows = read_history_or_empty(&path)?;
    rows.retain(|row| row.run_dir != name);
    rows.extend(HistoryRow::from_results(&name, r));
    write_history(&path, &rows)?;
    Ok(path)
}

/// One run in a history: its rows grouped, runs in time order.
#[derive(Clone, Debug)]
pub struct HistoryRun {
    pub created: String,
    pub run_dir: String,
    pub git_commit: String,
    pub rows: Vec<HistoryRow>,
}

/// Groups rows by run directory and sorts the runs by creation time (RFC 3339 UTC sorts as text),
/// ties broken by name.
pub fn runs(rows: &[HistoryRow]) -> Vec<HistoryRun> {
    let mut out: Vec<HistoryRun> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|h| h.run_dir == r.run_dir) {
            Some(h) => h.rows.push(r.clone()),
            None => out.push(HistoryRun {
                created: r.created.clone(),
                run_dir: r.run_dir.clone(),
                git_commit: r.git_commit.clone(),
                rows: vec![r.clone()],
            }),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.run_dir.cmp(&b.run_dir)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::results::*;

    pub(crate) fn results(created: &str, ppl: f64) -> RunResults {
        let f = |name: &str, bpw: f64| FormatResult {
            format: name.into(),
            file_bytes: 100_000_000,
            bpw,
            type_mix: "q4_K:90".into(),
            fallbacks: vec![],
            quantize_s: 1.0,
            quantize_cached: false,
            quality: Quality { ppl, kld_mean: 0.05, same_top_pct: 90.0, ..Quality::default() },
            speed: Speed { pp_tps: 300.0, tg_tps: f64::NAN, tg_gbps: 10.0, ..Speed::default() },
        };
        RunResults {
            schema_version: SCHEMA_VERSION,
            created: created.into(),
            model: ModelInfo {
                name: "M".into(),
                path: "/m".into(),
                sha256: "ab".into(),
                source: "s".into(),
                architecture: "llama".into(),
                n_params: 1,
            },
            dataset: DatasetInfo {
                name: "d".into(),
                path: "/d".into(),
                sha256: "cd".into(),
                n_ctx: 512,
                n_chunks: 20,
                n_tokens_scored: 5100,
            },
            machine: MachineInfo {
                cpu: "AMD EPYC, \"Zen 4\"".into(),
                cores: 2,
                threads: 2,
                isa: "avx512".into(),
                peak_read_gbps: 30.0,
                os: "linux".into(),
            },
            provenance: Provenance { evalq_version: "0.1.0".into(), git_commit: "abc123".into() },
            baseline: BaselineInfo { format: "F32".into(), ppl: 28.0, ppl_err: 1.0, chunk_nll: vec![] },
            formats: vec![f("Q4_K_M", 4.9), f("Q8_0", 8.5)],
        }
    }

    #[test]
    fn append_adds_and_a_rerun_replaces_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = append_history(root, &root.join("2026-11-27-M-aaaa"), &results("2026-11-27T10:00:00Z", 30.0)).unwrap();
        append_history(root, &root.join("2026-11-28-M-bbbb"), &results("2026-11-28T10:00:00Z", 31.0)).unwrap();
        let rows = read_history(&p).unwrap();
        assert_eq!(rows.len(), 4);
        // The second run again, with other figures: its two rows are replaced, not duplicated.
        append_history(root, &root.join("2026-11-28-M-bbbb"), &results("2026-11-28T10:00:00Z", 32.0)).unwrap();
        let rows = read_history(&p).unwrap();
        assert_eq!(rows.len(), 4);
        let second: Vec<&HistoryRow> = rows.iter().filter(|r| r.run_dir == "2026-11-28-M-bbbb").collect();
        assert_eq!(second.len(), 2);
        assert!(second.iter().all(|r| r.ppl == 32.0));
        // A CPU name with a comma and quotes survives, and NaN stays unmeasured.
        assert_eq!(rows[0].cpu, "AMD EPYC, \"Zen 4\"");
        assert!(rows[0].tg_tps.is_nan());
        // Every field reads back as written (Debug, because NaN ≠ NaN).
        let want = HistoryRow::from_results("2026-11-27-M-aaaa", &results("2026-11-27T10:00:00Z", 30.0));
        assert_eq!(format!("{:?}", rows[0]), format!("{:?}", want[0]));
        let rs = runs(&rows);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].run_dir, "2026-11-27-M-aaaa");
    }

    #[test]
    fn a_foreign_header_or_a_malformed_row_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        std::fs::write(&p, "created,run,ppl\n2026,x,3\n").unwrap();
        let e = read_history(&p).unwrap_err().to_string();
        assert!(e.contains("history.csv") && e.contains("line 1") && e.contains("unknown header"), "{e}");
        // append refuses too, and leaves the file alone.
        let e = append_history(dir.path(), &dir.path().join("run"), &results("2026-11-27T10:00:00Z", 30.0));
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "created,run,ppl\n2026,x,3\n");

        let good = HistoryRow::from_results("r", &results("2026-11-27T10:00:00Z", 30.0));
        write_history(&p, &good).unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("2026-11-29T00:00:00Z,r3,abc,0.1.0,M,ab,cd,512,twenty,cpu,2,Q4_0,4.5,1,30,1,0.1,90,1,1,1\n");
        std::fs::write(&p, &text).unwrap();
        let e = read_history(&p).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("n_chunks") && e.contains("twenty"), "{e}");

        write_history(&p, &good).unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("2026-11-29T00:00:00Z,r3,abc\n");
        std::fs::write(&p, &text).unwrap();
        let e = read_history(&p).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("3 fields"), "{e}");

        std::fs::write(&p, format!("{}\n\"unclosed,x\n", COLUMNS.join(","))).unwrap();
        let e = read_history(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("never closed"), "{e}");
    }

    #[test]
    fn csv_fields_split_as_rfc_4180_says() {
        let p = Path::new("x.csv");
        let recs = split_csv(p, "a,\"b,c\",\"d\"\"e\"\r\n\n1,,3").unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0], (1, vec!["a".to_string(), "b,c".into(), "d\"e".into()]));
        assert_eq!(recs[1], (3, vec!["1".to_string(), "".into(), "3".into()]));
        assert!(split_csv(p, "a,b\"c\n").is_err());
    }
}
