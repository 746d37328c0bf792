//! What machine a run happened on, and how much memory the process holds: the context every
//! result file records so that numbers from different machines are never compared blindly.
//!
//! Everything here reads Linux's `/proc` and `/sys` and degrades to a fallback ("unknown",
//! `available_parallelism`, `None`, `false`) elsewhere rather than failing: a missing CPU name must
//! not stop a run.

use std::collections::BTreeSet;
use std::path::Path;

/// The CPU's marketing name: `/proc/cpuinfo`'s "model name" (x86), or on ARM, where the kernel
/// prints no name, the "CPU implementer" and "CPU part" codes (the implementer named when known).
/// "unknown" when neither is available.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| parse_cpu_model(&text))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The model name from the text of `/proc/cpuinfo`, for [`cpu_model`].
fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.trim();
            (k.trim() == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    if let Some(name) = field("model name") {
        return Some(name);
    }
    let implementer = field("CPU implementer")?;
    let part = field("CPU part").unwrap_or_else(|| "?".to_string());
    // The implementer codes of the ARM architecture reference manual (MIDR_EL1), for the vendors
    // whose chips evalq is likely to meet; others are printed as the raw code.
    let vendor = match implementer.to_ascii_lowercase().as_str() {
        "0x41" => "ARM",
        "0x42" => "Broadcom",
        "0x46" => "Fujitsu",
        "0x48" => "HiSilicon",
        "0x4e" => "NVIDIA",
        "0x51" => "Qualcomm",
        "0x61" => "Apple",
        "0x6d" => "Microsoft",
        "0xc0" => "Ampere",
        _ => "",
    };
    Some(if vendor.is_empty() {
        format!("CPU implementer {implementer} part {part}")
    } else {
        format!("{vendor} (implementer {implementer}) part {part}")
    })
}

/// The distribution and kernel, e.g. "Debian GNU/Linux 12 (bookworm), Linux 6.1.0-18-amd64":
/// `PRETTY_NAME` from os-release and the kernel release from `/proc/sys/kernel/osrelease`. Falls
/// back to Rust's name for the OS.
pub fn os_description() -> String {
    let pretty = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| parse_os_release_pretty_name(&text));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    match (pretty, kernel) {
        (Some(p), Some(k)) => format!("{p}, Linux {k}"),
        (Some(p), None) => p,
        (None, Some(k)) => format!("Linux {k}"),
        (None, None) => std::env::consts::OS.to_string(),
    }
}

/// `PRETTY_NAME` from the text of an os-release file, with its shell quoting removed.
fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    let name = unquoted.replace("\\\"", "\"").replace("\\\\", "\\");
    (!name.is_empty()).then_some(name)
}

/// Physical cores this process may run on: distinct (package, core) pairs among the CPUs in
/// `Cpus_allowed_list`, from sysfs topology, so SMT siblings count once and a container's CPU set
/// is respected. Falls back to `available_parallelism` (logical CPUs) where topology is unreadable.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let allowed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_field(&s, "Cpus_allowed_list").map(str::to_string))
        .and_then(|list| parse_cpu_list(&list));
    let Some(allowed) = allowed else { return logical };
    let topology = Path::new("/sys/devices/system/cpu");
    let mut cores = BTreeSet::new();
    for cpu in allowed {
        let dir = topology.join(format!("cpu{cpu}/topology"));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().map(|s| s.trim().to_string());
        // An offline CPU has no topology directory; skip it rather than give up.
        if let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((package, core));
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len()
    }
}

/// Expands a kernel CPU list such as "0-3,8,10-11" into CPU numbers; `None` if malformed.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM")
}

/// The process's current resident set size (`VmRSS` in `/proc/self/status`), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS")
}

/// Resets the peak RSS to the current RSS, so each format's peak can be measured on its own
/// within one process. Linux (4.0+) does this when "5" is written to `/proc/self/clear_refs`.
/// Returns false where that is unsupported (other systems, or a kernel that refuses the write).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Hands memory that the allocator holds free back to the operating system, so that a following
/// [`reset_peak_rss`] starts from what is really in use. Without it, the first format measured
/// after the quality pass inherited that pass's freed-but-retained heap in its peak (2.3 GiB for
/// a 271 MB F16 model). glibc only; elsewhere a no-op that returns false.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and is thread-safe in glibc.
        unsafe { malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The short (12 hex digit) git commit evalq was built from, or "unknown" when it was built
/// outside a git checkout (a source tarball). Set by `build.rs`.
pub fn git_commit() -> String {
    env!("EVALQ_GIT_COMMIT").to_string()
}

/// A `Key:   value` field of a `/proc/*/status` text.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// A "<n> kB" field of `/proc/self/status`, in bytes.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(status_field(&status, key)?)
}

/// "1708 kB" → 1708 × 1024 (the kernel's "kB" is KiB). Shared with the MemAvailable reader.
pub(crate) fn parse_kib(value: &str) -> Option<u64> {
    let number = value.trim().strip_suffix("kB").unwrap_or(value).trim();
    number.parse::<u64>().ok()?.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_from_x86_and_arm_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n";
        assert_eq!(parse_cpu_model(x86).as_deref(), Some("AMD EPYC 9654 96-Core Processor"));
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n\
                   CPU variant\t: 0x3\nCPU part\t: 0xd0c\n";
        assert_eq!(parse_cpu_model(arm).as_deref(), Some("ARM (implementer 0x41) part 0xd0c"));
        let other = "CPU implementer\t: 0x99\nCPU part\t: 0x001\n";
        assert_eq!(parse_cpu_model(other).as_deref(), Some("CPU implementer 0x99 part 0x001"));
        assert_eq!(parse_cpu_model("processor\t: 0\nmodel name\t:\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn machine_description_on_linux() {
        let cpu = cpu_model();
        assert!(!cpu.is_empty() && cpu != "unknown", "cpu model: {cpu:?}");
        let os = os_description();
        assert!(os.contains("Linux"), "os: {os:?}");
        let cores = physical_cores();
        let logical = std::thread::available_parallelism().unwrap().get();
        assert!(cores >= 1 && cores <= logical, "{cores} physical cores, {logical} logical");
    }

    #[test]
    fn os_release_pretty_name_unquoted() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(parse_os_release_pretty_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(parse_os_release_pretty_name("PRETTY_NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(parse_os_release_pretty_name("PRETTY_NAME='Arch Linux'\n").as_deref(), Some("Arch Linux"));
        assert_eq!(parse_os_release_pretty_name("PRETTY_NAME=\"\"\n"), None);
        assert_eq!(parse_os_release_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn cpu_lists_and_kib_fields() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_kib("    1708 kB"), Some(1708 * 1024));
        assert_eq!(parse_kib("x kB"), None);
    }

    #[test]
    fn git_commit_is_hex_or_unknown() {
        let c = git_commit();
        assert!(c == "unknown" || (c.len() >= 7 && c.chars().all(|ch| ch.is_ascii_hexdigit())), "{c:?}");
    }

    /// Peak RSS must rise by the size of a touched buffer, and a reset must bring it back to the
    /// current RSS once the buffer is freed. Other tests allocate concurrently, so the tests that
    /// hold large buffers share [`crate::bench::MEMORY_TEST_LOCK`].
    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_tracks_a_touched_buffer_and_resets() {
        let _guard = crate::bench::MEMORY_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        const MIB: u64 = 1 << 20;
        let supported = reset_peak_rss();
        let before = peak_rss_bytes().expect("VmHWM in /proc/self/status");
        let mut buffer = vec![0u8; 200 * MIB as usize];
        for page in buffer.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&mut buffer);
        let peak = peak_rss_bytes().unwrap();
        assert!(peak >= before + 190 * MIB, "peak {} MiB after touching 200 MiB, was {} MiB", peak / MIB, before / MIB);
        drop(buffer);
        if !supported {
            eprintln!("/proc/self/clear_refs is not writable here: peak RSS reset not checked");
            return;
        }
        assert!(reset_peak_rss());
        let (hwm, rss) = (peak_rss_bytes().unwrap(), current_rss_bytes().unwrap());
        assert!(hwm + 150 * MIB <= peak, "peak after reset {} MiB, before {} MiB", hwm / MIB, peak / MIB);
        assert!(hwm <= rss + 16 * MIB, "peak after reset {} MiB, current {} MiB", hwm / MIB, rss / MIB);
    }

    /// Freed heap memory that the allocator keeps (blocks pinned between live small ones) must go
    /// back to the system, otherwise the next format's peak RSS starts from it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn release_free_memory_returns_retained_heap() {
        let _guard = crate::bench::MEMORY_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        const MIB: u64 = 1 << 20;
        // 64 KiB blocks stay below glibc's mmap threshold, so they come from the heap; the small
        // block after each one stays alive, so the freed space is fragmented and the heap cannot
        // shrink from its top on its own.
        let (mut blocks, mut pins): (Vec<Vec<u8>>, Vec<Box<u64>>) = (Vec::new(), Vec::new());
        for i in 0..3000u64 {
            blocks.push(vec![1u8; 64 << 10]);
            pins.push(std::hint::black_box(Box::new(i)));
        }
        std::hint::black_box(&mut blocks);
        drop(blocks);
        let retained = current_rss_bytes().unwrap();
        assert!(release_free_memory(), "malloc_trim released nothing");
        let after = current_rss_bytes().unwrap();
        assert!(after + 100 * MIB <= retained, "RSS {} MiB before trim, {} MiB after", retained / MIB, after / MIB);
        assert_eq!(pins.iter().map(|b| **b).sum::<u64>(), 3000 * 2999 / 2);
    }
}
