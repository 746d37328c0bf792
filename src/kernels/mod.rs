//! Compute kernels: instruction-set detection and the dense products the forward pass runs.
//!
//! Every SIMD kernel has a scalar twin with the same lane structure, and tests compare them. The
//! instruction set is chosen once per process ([`isa::active`]) and can be forced with `--isa`,
//! so one binary can measure scalar against AVX2 against AVX-512 on one machine.
//!
//! Kernels do no I/O and allocate nothing.

pub mod attention;
pub mod exp;
pub mod isa;
pub mod matmul_f32;
pub mod matmul_q;
pub mod packed;
pub mod vec_dot;

pub use isa::Isa;
