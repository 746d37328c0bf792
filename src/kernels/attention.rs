//! Causal attention for one query row over all heads, against keys and values of the rows
//! before it.
//!
//! The body is plain Rust written so that it vectorizes (eight independent partial sums, no
//! reassociation needed), compiled once per instruction set through `#[target_feature]`
//! wrappers. No FMA contraction happens in Rust, so every path gives the same bits.

use super::isa::{self, Isa};

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    /// Query heads per key/value head.
    pub group: usize,
    pub head_dim: usize,
    /// Row stride of `k` and `v` (`n_kv_head * head_dim`).
    pub kv_stride: usize,
    /// The softmax scale, usually `1/sqrt(head_dim)`.
    pub scale: f32,
}

/// Writes the attention output of query row `t` (`q_row`, all heads) into `out_row`, attending
/// to key/value rows `0..=t`. `scores` needs room for `t + 1` values.
pub fn attend_row(s: &AttnShape, q_row: &[f32], k: &[f32], v: &[f32], t: usize, scores: &mut [f32], out_row: &mut [f32]) {
    match isa::active() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512 is active only after `Isa::is_available` confirmed the features.
        Isa::Avx512 => unsafe { attend_avx512(s, q_row, k, v, t, scores, out_row) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { attend_avx2(s, q_row, k, v, t, scores, out_row) },
        _ => attend_impl(s, q_row, k, v, t, scores, out_row),
    }
}

/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn attend_avx512(s: &AttnShape, q_row: &[f32], k: &[f32], v: &[f32], t: usize, scores: &mut [f32], out_row: &mut [f32]) {
    attend_impl(s, q_row, k, v, t, scores, out_row)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(s: &AttnShape, q_row: &[f32], k: &[f32], v: &[f32], t: usize, scores: &mut [f32], out_row: &mut [f32]) {
    attend_impl(s, q_row, k, v, t, scores, out_row)
}

#[inline(always)]
fn attend_impl(s: &AttnShape, q_row: &[f32], k: &[f32], v: &[f32], t: usize, scores: &mut [f32], out_row: &mut [f32]) {
    let hd = s.head_dim;
    let sc = &mut scores[..=t];
    for h in 0..s.n_head {
        let kv_off = (h / s.group) * hd;
        let qh = &q_row[h * hd..(h + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (j, sj) in sc.iter_mut().enumerate() {
            let kj = &k[j * s.kv_stride + kv_off..j * s.kv_stride + kv_off + hd];
            *sj = dot8(qh, kj) * s.scale;
            max = max.max(*sj);
        }
        let mut sum = 0f64;
        for sj in sc.iter_mut() {
            *sj = (*sj - max).exp();
            sum += *sj as f64;
        }
        let inv = (1.0 / sum) as f32;
        let o = &mut out_row[h * hd..(h + 1) * hd];
        o.fill(0.0);
        for (j, &p) in sc.iter().enumerate() {
            let vj = &v[j * s.kv_stride + kv_off..j * s.kv_stride + kv_off + hd];
            let p = p * inv;
            for (oi, &vi) in o.iter_mut().zip(vj) {
                *oi += p * vi;
            }
        }
    }
}

/// A dot product with eight independent partial sums, so it vectorizes without reassociation.
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let main = a.len() / 8 * 8;
    for (ca, cb) in a[..main].chunks_exact(8).zip(b[..main].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for i in main..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_matches_the_scalar_body_bit_for_bit() {
        let (t, n_head, n_kv, hd) = (37, 4, 2, 20);
        let shape = AttnShape { n_head, group: n_head / n_kv, head_dim: hd, kv_stride: n_kv * hd, scale: 0.2 };
        let gen = |n: usize, seed: u32| -> Vec<f32> { (0..n).map(|i| ((i as u32 * 2654435761 ^ seed) % 1000) as f32 / 500.0 - 1.0).collect() };
        let q = gen(n_head * hd, 1);
        let k = gen((t + 1) * n_kv * hd, 2);
        let v = gen((t + 1) * n_kv * hd, 3);
        let mut scores = vec![0f32; t + 1];
        let mut want = vec![0f32; n_head * hd];
        attend_impl(&shape, &q, &k, &v, t, &mut scores, &mut want);
        // Softmax weights sum to one, so each output lies within the range of the values.
        assert!(want.iter().all(|o| o.abs() <= 1.0 + 1e-5));
        for isa in Isa::available() {
            let mut got = vec![0f32; n_head * hd];
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { attend_avx512(&shape, &q, &k, &v, t, &mut scores, &mut got) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { attend_avx2(&shape, &q, &k, &v, t, &mut scores, &mut got) },
                _ => attend_impl(&shape, &q, &k, &v, t, &mut scores, &mut got),
            }
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", isa.name());
        }
    }
}
