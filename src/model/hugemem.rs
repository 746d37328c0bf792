//! Weight bytes that generation streams, gathered into one mapping advised for transparent huge
//! pages.
//!
//! Why: a generated token reads every weight matrix once, so generation is a stream over the
//! whole model. In 4 KiB pages that stream takes a TLB miss every 4 KiB (this model's 100-270 MB
//! are 25-70 thousand pages, far beyond the TLB), and a heap `Vec` per matrix never gets huge
//! pages where the kernel gives them only on request (`madvise` mode, the common default). The
//! bandwidth probe (`bench::bandwidth`) asks for huge pages too, so generation and its ceiling
//! are measured alike.

use std::ops::Deref;
use std::sync::Arc;

/// A matrix's bytes: its own buffer, or a range of a shared mapping ([`gather`]).
pub struct WeightBytes(Repr);

enum Repr {
    Owned(Vec<u8>),
    Shared { map: Arc<memmap2::MmapMut>, start: usize, len: usize },
}

impl From<Vec<u8>> for WeightBytes {
    fn from(v: Vec<u8>) -> WeightBytes {
        WeightBytes(Repr::Owned(v))
    }
}

impl Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { map, start, len } => &map[*start..*start + *len],
        }
    }
}

/// Where each buffer starts in the shared mapping: on a cache line, in the given order.
const ALIGN: usize = 64;
/// The x86-64 (and common arm64) transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Moves every buffer of `parts`, in order (the order generation reads them, so the stream runs
/// forward), into one anonymous mapping advised for huge pages, and points each at its copy.
/// Returns whether it did: where the mapping cannot be made, the buffers stay where they are
/// (nothing is lost but the huge pages).
pub fn gather(parts: &mut [&mut WeightBytes]) -> bool {
    let mut total = 0usize;
    for p in parts.iter() {
        total = total.next_multiple_of(ALIGN) + p.len();
    }
    if total == 0 {
        return false;
    }
    // One huge page more than needed, so that the data can start on a huge-page boundary
    // (kernels before 6.7 do not align anonymous mappings to one).
    let Ok(mut map) = memmap2::MmapOptions::new().len(total + HUGE_PAGE).map_anon() else {
        return false;
    };
    // Advice only: ignored where transparent huge pages are off, and given before the first
    // write so that the pages are huge from the first fault.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    // Each buffer is freed as soon as it is copied, so the model is held about once, not twice.
    let mut off = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
    let mut at = Vec::with_capacity(parts.len());
    for p in parts.iter_mut() {
        off = off.next_multiple_of(ALIGN);
        map[off..off + p.len()].copy_from_slice(p);
        at.push((off, p.len()));
        off += p.len();
        **p = WeightBytes::from(Vec::new());
    }
    // Never written again (it stays writable only so that nothing can fail after the first
    // buffer was freed).
    let map = Arc::new(map);
    for (p, (start, len)) in parts.iter_mut().zip(at) {
        **p = WeightBytes(Repr::Shared { map: Arc::clone(&map), start, len });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugemem_gather_keeps_every_byte_and_aligns() {
        let mut a = WeightBytes::from((0..1000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut b = WeightBytes::from(vec![7u8; 3]);
        let mut c = WeightBytes::from(Vec::new());
        let mut d = WeightBytes::from((0..5000u32).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
        let want: Vec<Vec<u8>> = [&a, &b, &c, &d].iter().map(|x| x.to_vec()).collect();
        assert!(gather(&mut [&mut a, &mut b, &mut c, &mut d]));
        for (got, want) in [&a, &b, &c, &d].iter().zip(&want) {
            assert_eq!(&got[..], &want[..]);
            assert_eq!(got.as_ptr() as usize % ALIGN, 0);
        }
        assert!(!gather(&mut [&mut WeightBytes::from(Vec::new())]), "nothing to gather");
    }
}
