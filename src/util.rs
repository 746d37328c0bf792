//! Small shared helpers: atomic file writes and hashing.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Writes `path` through `f` into a temporary file in the same directory, then renames it into
/// place, so readers never see a half-written file and an interrupted run leaves only a stray
/// `.tmp` that the next write replaces. The data is synced to disk before the rename, so the
/// file survives a power cut too.
pub fn write_atomic<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    write_atomic_with(path, true, f)
}

/// [`write_atomic`] without the sync before the rename, for large files that can be made again
/// (quantized GGUF files): an interrupted process still never leaves a torn file, but syncing
/// 100 MB costs about 0.1 s here, which llama-quantize does not pay either.
pub fn write_atomic_unsynced<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    write_atomic_with(path, false, f)
}

fn write_atomic_with<F>(path: &Path, sync: bool, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = f(&mut w).and_then(|()| {
        w.flush().map_err(|e| Error::io(&tmp, e))?;
        if sync {
            w.get_ref().sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        Ok(())
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// The lowercase hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `path` hashes to `expected`, or returns a [`Error::Sha256Mismatch`].
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::Sha256Mismatch { path: path.to_path_buf(), expected: expected.to_string(), actual })
    }
}

/// Parses a byte size as people write it: `8GiB`, `8G`, `8GB`, `8000MB`, `512MiB`, `8e9`,
/// `1024`. Decimal units (kB, MB, GB, TB) are powers of 1000; binary ones (KiB, MiB, GiB, TiB)
/// and the bare letters (K, M, G, T) are powers of 1024, as `ls -h` and RAM sizes use them.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.trim().parse().map_err(|_| Error::Invalid(format!("size '{s}': '{}' is not a number", num.trim())))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        other => {
            return Err(Error::Invalid(format!("size '{s}': unknown unit '{other}' (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")))
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes <= 0.0 {
        return Err(Error::Invalid(format!("size '{s}' must be positive")));
    }
    if bytes > 1e18 {
        return Err(Error::Invalid(format!("size '{s}' is too large")));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_every_documented_spelling() {
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("8000MB").unwrap(), 8_000_000_000);
        assert_eq!(parse_size("8e9").unwrap(), 8_000_000_000);
        assert_eq!(parse_size("150MB").unwrap(), 150_000_000);
        assert_eq!(parse_size(" 1.5 GB ").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["-8GiB", "0", "8XB", "GiB", "", "nan", "1e30"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
