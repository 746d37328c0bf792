//! The machine's sustained memory READ bandwidth, the ceiling of token generation: generating one
//! token streams every weight once, so tokens/s can never exceed bandwidth / bytes-per-token.
//!
//! The probe follows STREAM's rules, adapted to a read-only kernel: the array is far larger than
//! the last-level cache (so DRAM is measured, not cache), its pages are touched before any timing
//! (so first-touch page faults are not timed), each of `threads` workers reads its own contiguous
//! slice (the slice it touched first, so pages land on the worker's NUMA node), and the best of
//! several runs is reported (the run least disturbed by other processes). The array asks for
//! transparent huge pages (see `allocate_touched`). The kernel sums the array as u64 words, so
//! every cache line is loaded and the sum is exact whatever the order of additions; every run's
//! sum is checked against a scalar reference, which also keeps the compiler from dropping the
//! loads.
//!
//! Measuring takes about a second, so [`cached_or_measure`] keeps one result per CPU model and
//! thread count on disk. `evalq run --remeasure` deletes [`cache_path`] before calling it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::kernels::isa::Isa;
use crate::run::results::median;

/// Timed runs per measurement by default; the best one is reported.
pub const DEFAULT_RUNS: usize = 7;

/// The smallest default array: 1 GiB.
pub const MIN_DEFAULT_BYTES: usize = 1 << 30;

/// The default array is at least this many times the total last-level cache.
pub const LLC_MULTIPLE: usize = 8;

/// Words per slice granule: every worker's slice is a whole number of 512-byte blocks (8 cache
/// lines), so every slice starts on a cache-line boundary of the page-aligned array.
const GRANULE_WORDS: usize = 64;

/// One bandwidth measurement. Rates are GB/s in decimal units (10⁹ bytes/s), like STREAM's MB/s
/// and [`crate::run::results::MachineInfo::peak_read_gbps`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BandwidthResult {
    /// Workers that read the array in the multi-threaded runs.
    pub threads: usize,
    /// Bytes read per run (the requested size rounded down to whole per-thread blocks).
    pub bytes: usize,
    /// Multi-threaded GB/s of every timed run, in order.
    pub runs_gbps: Vec<f64>,
    pub best_gbps: f64,
    pub median_gbps: f64,
    /// Best GB/s of one thread reading the whole array: the ceiling of a single-threaded decode.
    pub single_thread_gbps: f64,
}

/// Measures sustained read bandwidth over a `bytes`-byte array with `threads` workers, `runs`
/// timed runs each for the multi-threaded and the single-threaded figure.
///
/// Refuses (with [`Error::Invalid`]) zero threads or runs, an array smaller than one 512-byte
/// block per thread, and more than half of `MemAvailable` (or 4 GiB where `/proc/meminfo` cannot
/// be read): the probe must never push the machine into swap.
pub fn measure_read_bandwidth(threads: usize, bytes: usize, runs: usize) -> Result<BandwidthResult> {
    if threads == 0 || runs == 0 {
        return Err(Error::Invalid(format!(
            "bandwidth probe: threads ({threads}) and runs ({runs}) must be at least 1"
        )));
    }
    check_allocation(bytes, mem_available_bytes())?;
    let per_thread_words = bytes / 8 / threads / GRANULE_WORDS * GRANULE_WORDS;
    if per_thread_words == 0 {
        return Err(Error::Invalid(format!(
            "bandwidth probe: {bytes} bytes is too small for {threads} threads (at least {} bytes needed)",
            threads * GRANULE_WORDS * 8
        )));
    }
    let words = per_thread_words * threads;
    let bytes = words * 8;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("evalq-bw-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("bandwidth probe: cannot start {threads} threads: {e}")))?;
    let array = allocate_touched(&pool, words, per_thread_words)?;
    let data = array.words();
    let slices: Vec<&[u64]> = data.chunks(per_thread_words).collect();

    let kernel = select_kernel(Isa::detect());
    let expected = sum_scalar(data);
    let parallel_sum = |slices: &[&[u64]]| -> u64 {
        pool.broadcast(|ctx| kernel(std::hint::black_box(slices[ctx.index()])))
            .into_iter()
            .fold(0u64, u64::wrapping_add)
    };
    // One untimed pass wakes the pool's threads and checks the kernel before anything is timed.
    verify(parallel_sum(&slices), expected)?;

    let mut runs_gbps = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let sum = std::hint::black_box(parallel_sum(&slices));
        runs_gbps.push(gbps(bytes, start));
        verify(sum, expected)?;
    }
    let mut single_gbps = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let sum = std::hint::black_box(kernel(std::hint::black_box(data)));
        single_gbps.push(gbps(bytes, start));
        verify(sum, expected)?;
    }
    Ok(BandwidthResult {
        threads,
        bytes,
        best_gbps: runs_gbps.iter().copied().fold(f64::MIN, f64::max),
        median_gbps: median(&runs_gbps),
        single_thread_gbps: single_gbps.iter().copied().fold(f64::MIN, f64::max),
        runs_gbps,
    })
}

/// The array size [`cached_or_measure`] uses: [`MIN_DEFAULT_BYTES`], or [`LLC_MULTIPLE`]× the
/// total last-level cache if that is larger, capped at half of `MemAvailable`.
pub fn default_bytes() -> usize {
    let want = last_level_cache_bytes().map_or(MIN_DEFAULT_BYTES, |llc| MIN_DEFAULT_BYTES.max(llc * LLC_MULTIPLE));
    match mem_available_bytes() {
        Some(avail) => want.min((avail / 2) as usize),
        None => want,
    }
}

/// Where [`cached_or_measure`] keeps the result for this CPU model and thread count:
/// `cache_dir/bandwidth-<16 hex digits of sha256(cpu model)>-<threads>t.json`.
pub fn cache_path(cache_dir: &Path, threads: usize) -> PathBuf {
    let hash = Sha256::digest(super::machine::cpu_model().as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    cache_dir.join(format!("bandwidth-{hex}-{threads}t.json"))
}

/// The cached bandwidth for this CPU model and `threads`, or a fresh measurement
/// ([`default_bytes`], [`DEFAULT_RUNS`]) that is then cached, so that every `evalq run` does not
/// spend a second re-measuring.
///
/// A cache entry that cannot be parsed or does not fit (another thread count, a non-positive
/// rate) is measured again and overwritten. `--remeasure` semantics: the caller deletes
/// [`cache_path`]`(cache_dir, threads)` first (ignoring "not found"), then calls this, which then
/// measures and rewrites the entry. A CPU model string names the chip, not the machine (VMs often
/// report a generic one), so a different memory configuration behind the same name needs
/// `--remeasure`.
pub fn cached_or_measure(cache_dir: &Path, threads: usize) -> Result<BandwidthResult> {
    cached_or_else(&cache_path(cache_dir, threads), threads, || {
        measure_read_bandwidth(threads, default_bytes(), DEFAULT_RUNS)
    })
}

/// [`cached_or_measure`] with the measurement passed in, so the cache logic is testable quickly.
fn cached_or_else(
    path: &Path,
    threads: usize,
    measure: impl FnOnce() -> Result<BandwidthResult>,
) -> Result<BandwidthResult> {
    if let Ok(text) = std::fs::read(path) {
        if let Ok(cached) = serde_json::from_slice::<BandwidthResult>(&text) {
            let usable = cached.threads == threads
                && cached.bytes > 0
                && [cached.best_gbps, cached.median_gbps, cached.single_thread_gbps]
                    .iter()
                    .all(|r| r.is_finite() && *r > 0.0);
            if usable {
                return Ok(cached);
            }
        }
    }
    let result = measure()?;
    let json = serde_json::to_vec_pretty(&result)
        .map_err(|e| Error::Invalid(format!("bandwidth result cannot be serialized: {e}")))?;
    crate::util::write_bytes_atomic(path, &json)?;
    Ok(result)
}

/// Refuses an array larger than half the available memory (`mem_available` bytes), or than
/// 4 GiB when the available memory is unknown.
fn check_allocation(bytes: usize, mem_available: Option<u64>) -> Result<()> {
    let (limit, what) = match mem_available {
        Some(avail) => {
            (avail / 2, format!("half of the {} MiB available (MemAvailable in /proc/meminfo)", avail >> 20))
        }
        None => (4 << 30, "4 GiB, the limit when /proc/meminfo cannot be read".to_string()),
    };
    if bytes as u64 > limit {
        return Err(Error::Invalid(format!(
            "bandwidth probe: refusing to allocate {} MiB, more than {what}; choose a smaller size",
            bytes >> 20
        )));
    }
    Ok(())
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    super::machine::parse_kib(value)
}

/// The total last-level cache: the size of the highest cache level in sysfs times the number of
/// distinct instances of it (an AMD chip has one L3 per core complex, and all of them hold data
/// in a multi-threaded run). `None` where sysfs has no cache information.
pub fn last_level_cache_bytes() -> Option<usize> {
    let cpus = Path::new("/sys/devices/system/cpu");
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    // (level, shared CPU list) -> size, over every CPU's cache indices.
    let mut caches = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(cpus).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(indices) = std::fs::read_dir(entry.path().join("cache")) else { continue };
        for index in indices.flatten() {
            let dir = index.path();
            if !dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("index")) {
                continue;
            }
            let level: Option<u32> = read(dir.join("level")).and_then(|l| l.parse().ok());
            let size = read(dir.join("size")).and_then(|s| parse_cache_size(&s));
            let (Some(level), Some(size)) = (level, size) else { continue };
            let shared = read(dir.join("shared_cpu_list")).unwrap_or_else(|| name.clone());
            caches.insert((level, shared), size);
        }
    }
    let top = caches.keys().map(|(level, _)| *level).max()?;
    Some(caches.iter().filter(|((level, _), _)| *level == top).map(|(_, size)| size).sum())
}

/// A sysfs cache size such as "32768K", "1M" or "512" (bytes).
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The probe's array: an anonymous mapping (page-aligned, so every slice starts on a cache line;
/// malloc would start a large block 16 bytes into a page, making every 64-byte load span two
/// lines) of `words` u64s.
struct Array {
    map: memmap2::MmapMut,
    words: usize,
}

impl Array {
    fn words(&self) -> &[u64] {
        // SAFETY: the mapping is page-aligned and at least `words * 8` bytes long, and every bit
        // pattern is a valid u64.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const u64, self.words) }
    }
}

/// Maps `words` u64s and writes them from the pool, worker `i` writing slice `i` of `per_thread`
/// words: every page is faulted in before timing, by the worker that will read it.
///
/// On Linux the mapping is advised to use transparent huge pages, as numpy and STREAM builds
/// commonly get: the probe measures what the memory system can deliver, and with 4 KiB pages a
/// single core also pays a page walk every 4 KiB (on the 2-core EPYC VM this was written on, one
/// thread read ~15-20% less with 4 KiB pages). Where huge pages are disabled the advice is ignored and 4 KiB pages are measured.
fn allocate_touched(pool: &rayon::ThreadPool, words: usize, per_thread: usize) -> Result<Array> {
    let mut map = memmap2::MmapOptions::new()
        .len(words * 8)
        .map_anon()
        .map_err(|e| Error::Invalid(format!("bandwidth probe: cannot map {} MiB: {e}", (words * 8) >> 20)))?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    // SAFETY: the mapping is page-aligned (so `head` and `tail` are empty) and every bit pattern is
    // a valid u64.
    let (head, body, tail) = unsafe { map.align_to_mut::<u64>() };
    debug_assert!(head.is_empty() && tail.is_empty() && body.len() == words);
    let slots: Vec<Mutex<&mut [u64]>> = body.chunks_mut(per_thread).map(Mutex::new).collect();
    pool.broadcast(|ctx| {
        let mut slice = slots[ctx.index()].lock().unwrap_or_else(|e| e.into_inner());
        let base = ctx.index() * per_thread;
        for (i, w) in slice.iter_mut().enumerate() {
            *w = fill_value(base + i);
        }
    });
    drop(slots);
    Ok(Array { map, words })
}

/// The value stored at word `i`: distinct per word, so a kernel that skips or repeats a block
/// produces a wrong sum.
fn fill_value(i: usize) -> u64 {
    (i as u64 ^ 0x5555_5555).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn gbps(bytes: usize, start: Instant) -> f64 {
    // Instant has nanosecond resolution on Linux; the floor only guards a clock that does not.
    bytes as f64 / start.elapsed().as_secs_f64().max(1e-9) / 1e9
}

fn verify(sum: u64, expected: u64) -> Result<()> {
    if sum != expected {
        return Err(Error::Invalid(format!(
            "bandwidth probe: read kernel summed {sum:#x}, expected {expected:#x} (a kernel bug or memory error)"
        )));
    }
    Ok(())
}

/// A read kernel: the wrapping sum of the words.
type ReadKernel = fn(&[u64]) -> u64;

/// The read kernel for `isa`. The probe uses [`Isa::detect`], not the `--isa` the kernels run on:
/// the peak is a property of the machine. NEON has no kernel of its own because the scalar one,
/// with independent accumulators, compiles to NEON adds on AArch64 (NEON is baseline there).
///
/// # Panics
/// If `isa` is not available on this CPU.
fn select_kernel(isa: Isa) -> ReadKernel {
    assert!(isa.is_available(), "instruction set {} is not available", isa.name());
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::sum_avx512_checked,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::sum_avx2_checked,
        _ => sum_scalar,
    }
}

/// The portable kernel: eight independent accumulators (one cache line per step) so the adds do
/// not form one dependency chain; the compiler vectorizes it (SSE2 on x86-64, NEON on AArch64).
fn sum_scalar(data: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut lines = data.chunks_exact(8);
    for line in &mut lines {
        for (a, w) in acc.iter_mut().zip(line) {
            *a = a.wrapping_add(*w);
        }
    }
    let tail = lines.remainder().iter().fold(0u64, |s, w| s.wrapping_add(*w));
    acc.iter().fold(tail, |s, a| s.wrapping_add(*a))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Safe entry for [`super::select_kernel`].
    pub(super) fn sum_avx2_checked(data: &[u64]) -> u64 {
        // SAFETY: only handed out by `select_kernel` after `Isa::Avx2.is_available()` confirmed
        // AVX2 on this CPU.
        unsafe { sum_avx2(data) }
    }

    /// Safe entry for [`super::select_kernel`].
    pub(super) fn sum_avx512_checked(data: &[u64]) -> u64 {
        // SAFETY: only handed out by `select_kernel` after `Isa::Avx512.is_available()` confirmed
        // AVX-512F on this CPU.
        unsafe { sum_avx512(data) }
    }

    /// Wrapping u64 sum, four 256-bit accumulators (two cache lines per step).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn sum_avx2(data: &[u64]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut blocks = data.chunks_exact(16);
        for block in &mut blocks {
            let p = block.as_ptr() as *const __m256i;
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `block` holds 16 u64s = four 32-byte vectors; loadu needs no alignment.
                *a = _mm256_add_epi64(*a, unsafe { _mm256_loadu_si256(p.add(k)) });
            }
        }
        let total = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 bytes; storeu needs no alignment.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, total) };
        lanes.iter().chain(blocks.remainder()).fold(0u64, |s, w| s.wrapping_add(*w))
    }

    /// Wrapping u64 sum, four 512-bit accumulators (four cache lines per step).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_avx512(data: &[u64]) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut blocks = data.chunks_exact(32);
        for block in &mut blocks {
            let p = block.as_ptr() as *const __m512i;
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `block` holds 32 u64s = four 64-byte vectors; loadu needs no alignment.
                *a = _mm512_add_epi64(*a, unsafe { _mm512_loadu_si512(p.add(k)) });
            }
        }
        let total = _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
        let mut lanes = [0u64; 8];
        // SAFETY: `lanes` is 64 bytes; storeu needs no alignment.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr() as *mut __m512i, total) };
        lanes.iter().chain(blocks.remainder()).fold(0u64, |s, w| s.wrapping_add(*w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU can run agrees with the scalar one, for lengths around every block
    /// size and for a misaligned start.
    #[test]
    fn every_read_kernel_matches_scalar() {
        let data: Vec<u64> = (0..4099).map(fill_value).collect();
        for isa in Isa::available() {
            let kernel = select_kernel(isa);
            for start in [0, 1, 3] {
                for len in [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4096] {
                    let s = &data[start..start + len];
                    let naive = s.iter().fold(0u64, |a, w| a.wrapping_add(*w));
                    assert_eq!(sum_scalar(s), naive, "scalar, start {start}, len {len}");
                    assert_eq!(kernel(s), naive, "{}, start {start}, len {len}", isa.name());
                }
            }
            // Wrapping overflow must wrap identically in every lane layout.
            let big = vec![u64::MAX - 3; 1001];
            assert_eq!(kernel(&big), sum_scalar(&big), "{} overflow", isa.name());
        }
    }

    #[test]
    fn small_probe_gives_finite_positive_rates() {
        let _guard = crate::bench::MEMORY_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let r = measure_read_bandwidth(2, 64 << 20, 2).unwrap();
        assert_eq!((r.threads, r.bytes, r.runs_gbps.len()), (2, 64 << 20, 2));
        for g in r.runs_gbps.iter().chain([&r.best_gbps, &r.median_gbps, &r.single_thread_gbps]) {
            assert!(g.is_finite() && *g > 0.0, "{r:?}");
        }
        assert_eq!(r.best_gbps, r.runs_gbps[0].max(r.runs_gbps[1]));
        assert!(r.median_gbps <= r.best_gbps);

        // Sizes that are not whole blocks per thread are rounded down, and the result says so.
        let r = measure_read_bandwidth(3, (1 << 20) + 100, 1).unwrap();
        assert_eq!(r.bytes, (1 << 20) / (3 * 512) * 3 * 512);
    }

    #[test]
    fn refuses_oversized_and_degenerate_requests() {
        let gib = 1u64 << 30;
        assert!(check_allocation(1 << 30, Some(2 * gib)).is_ok());
        assert!(matches!(check_allocation((1 << 30) + 1, Some(2 * gib)), Err(Error::Invalid(_))));
        assert!(check_allocation(4 << 30, None).is_ok());
        let err = check_allocation((4 << 30) + 1, None).unwrap_err();
        assert!(err.to_string().contains("refusing to allocate"), "{err}");

        // The real entry point refuses before allocating anything.
        if let Some(avail) = mem_available_bytes() {
            let err = measure_read_bandwidth(1, avail as usize, 1).unwrap_err();
            assert!(matches!(err, Error::Invalid(ref m) if m.contains("MemAvailable")), "{err}");
        }
        assert!(matches!(measure_read_bandwidth(0, 1 << 20, 1), Err(Error::Invalid(_))));
        assert!(matches!(measure_read_bandwidth(1, 1 << 20, 0), Err(Error::Invalid(_))));
        assert!(matches!(measure_read_bandwidth(4, 1024, 1), Err(Error::Invalid(_))));
    }

    #[test]
    fn cache_sizes_and_default_size() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("12X"), None);
        assert_eq!(parse_cache_size(""), None);
        let bytes = default_bytes();
        if let Some(llc) = last_level_cache_bytes() {
            assert!(llc > 0);
            let capped = mem_available_bytes().is_some_and(|a| bytes as u64 == a / 2);
            assert!(capped || bytes >= LLC_MULTIPLE * llc, "default {bytes} bytes, llc {llc}");
        }
    }

    #[test]
    fn cache_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), 2);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("bandwidth-") && name.ends_with("-2t.json"), "{name}");
        assert_ne!(cache_path(dir.path(), 1), path);

        let measured = BandwidthResult {
            threads: 2,
            bytes: 1 << 30,
            runs_gbps: vec![10.5, 11.25],
            best_gbps: 11.25,
            median_gbps: 10.875,
            single_thread_gbps: 7.5,
        };
        let first = cached_or_else(&path, 2, || Ok(measured.clone())).unwrap();
        assert_eq!(first, measured);
        assert!(path.exists());
        // The second call must come from the file.
        let second = cached_or_else(&path, 2, || panic!("measured again despite a cache entry")).unwrap();
        assert_eq!(second, measured);

        // An entry for another thread count, or a corrupt one, is measured again and replaced.
        let mut other = measured.clone();
        other.threads = 1;
        assert_eq!(cached_or_else(&path, 1, || Ok(other.clone())).unwrap(), other);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(cached_or_else(&path, 2, || Ok(measured.clone())).unwrap(), measured);
        assert_eq!(cached_or_else(&path, 2, || panic!("corrupt entry was not replaced")).unwrap(), measured);

        // A failed measurement is returned and caches nothing.
        let fresh = dir.path().join("nested").join("bw.json");
        assert!(cached_or_else(&fresh, 2, || Err(Error::Invalid("boom".into()))).is_err());
        assert!(!fresh.exists());
    }

    /// The real probe at the default size: `cargo test --release --lib bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "takes a few seconds and 1 GiB; run by hand"]
    fn probe_this_machine() {
        let _guard = crate::bench::MEMORY_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = default_bytes();
        println!("isa {}, llc {:?} bytes, array {} MiB", Isa::detect().name(), last_level_cache_bytes(), bytes >> 20);
        for threads in [2, 1] {
            let r = measure_read_bandwidth(threads, bytes, DEFAULT_RUNS).unwrap();
            println!(
                "{threads} threads: best {:.2} GB/s, median {:.2} GB/s, single-thread {:.2} GB/s, runs {:.2?}",
                r.best_gbps, r.median_gbps, r.single_thread_gbps, r.runs_gbps
            );
            assert!(r.best_gbps > 0.5 && r.single_thread_gbps > 0.5, "{r:?}");
        }
    }
}
