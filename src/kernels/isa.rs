//! Runtime instruction-set selection, done once (memchr's pattern: an atomic that starts at
//! "undetected" and is filled on first use).

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set path that the kernels implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust with no target features: the reference every SIMD path is tested against.
    Scalar,
    /// x86-64 AVX2 with FMA.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, DQ).
    Avx512,
    /// AArch64 NEON.
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().find(|i| i.name() == s)
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(c: u8) -> Isa {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon][(c - 1) as usize]
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU can run, slowest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().filter(|i| i.is_available()).collect()
    }

    /// The best path this CPU can run.
    pub fn detect() -> Isa {
        *Isa::available().last().expect("scalar is always available")
    }
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The instruction set the kernels use, detected on first call unless [`force`] set it.
pub fn active() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => {
            let isa = Isa::detect();
            ACTIVE.store(isa.code(), Ordering::Relaxed);
            isa
        }
        c => Isa::from_code(c),
    }
}

/// Forces the kernels onto `isa`, or returns an error if this CPU cannot run it.
pub fn force(isa: Isa) -> Result<(), String> {
    if !isa.is_available() {
        let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        return Err(format!("instruction set '{}' is not available on this CPU (available: {})", isa.name(), have.join(", ")));
    }
    ACTIVE.store(isa.code(), Ordering::Relaxed);
    Ok(())
}
