//! The llama forward pass over a whole context window at once (prompt-processing style):
//! every projection is one matrix-matrix product over all tokens of the batch.
//!
//! Numerics follow llama.cpp where it matters for agreement: RMSNorm sums squares in f64, RoPE
//! advances θ by repeated multiplication, and keys and values are rounded to f16 as llama.cpp's
//! default f16 KV cache stores them.

mod decode;

use crate::kernels::attention::{attend_rows, AttnShape, KeysT, KEY_BLOCK};
use crate::kernels::exp;
use crate::model::config::{LlamaConfig, RopeMode};
use crate::model::weights::{LayerWeights, LlamaWeights};
use crate::par;

/// Buffers for one batch of up to `n_ctx` tokens, allocated once. Shapes are given per buffer.
pub struct State {
    pub n_ctx: usize,
    /// (n_ctx, d_model): the residual stream.
    x: Vec<f32>,
    /// (n_ctx, d_model): normalized input of the current sub-layer.
    xn: Vec<f32>,
    /// (n_ctx, n_head * head_dim)
    q: Vec<f32>,
    /// (n_ctx, n_kv_head * head_dim)
    k: Vec<f32>,
    /// (n_ctx, n_kv_head * head_dim)
    v: Vec<f32>,
    /// (n_ctx, n_head * head_dim): attention output before `wo`.
    att: Vec<f32>,
    /// The KV cache, keys after RoPE, both rounded to f16 values as llama.cpp's default f16
    /// cache stores them (held as f32 so attention reads them without conversion). Keys are
    /// transposed, per layer (n_kv_head * head_dim, kt_stride), so attention scores 16
    /// positions per vector; values are per layer (n_ctx, n_kv_head * head_dim).
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
    /// Row length of the transposed keys: n_ctx rounded up to whole key blocks, plus one block.
    /// The extra 64 bytes keep a key block's 64 dimension rows off the same few L1 sets: with
    /// rows of exactly 2 KiB (n_ctx 512) they fell on two sets of the 8-way cache and every
    /// score read missed L1.
    kt_stride: usize,
    /// Tokens already in the cache: the position of the next token.
    pos: usize,
    /// (n_ctx, d_model): output of `wo` or `w_down`.
    proj: Vec<f32>,
    /// (n_ctx, ffn_dim)
    gate: Vec<f32>,
    /// (n_ctx, ffn_dim)
    up: Vec<f32>,
    /// base^(-2/n_rot): the ratio between successive pairs' angles.
    theta_scale: f32,
    /// (batch, rope_dim / 2): `(sin, cos)` of every rotated pair's angle for the positions of
    /// the current batch, computed once per batch rather than per layer and head.
    rope_sc: Vec<(f32, f32)>,
    /// Quantized activations for the block kernels, grown on first use.
    qbuf: Vec<u8>,
    /// (n_ctx, vocab): logits of the rows asked for, first row first.
    pub logits: Vec<f32>,
}

impl State {
    pub fn new(c: &LlamaConfig, n_ctx: usize) -> State {
        State {
            n_ctx,
            x: vec![0.0; n_ctx * c.d_model],
            xn: vec![0.0; n_ctx * c.d_model],
            q: vec![0.0; n_ctx * c.q_dim()],
            k: vec![0.0; n_ctx * c.kv_dim()],
            v: vec![0.0; n_ctx * c.kv_dim()],
            att: vec![0.0; n_ctx * c.q_dim()],
            k_cache: vec![0.0; c.n_layer * (n_ctx.next_multiple_of(KEY_BLOCK) + KEY_BLOCK) * c.kv_dim()],
            kt_stride: n_ctx.next_multiple_of(KEY_BLOCK) + KEY_BLOCK,
            v_cache: vec![0.0; c.n_layer * n_ctx * c.kv_dim()],
            pos: 0,
            proj: vec![0.0; n_ctx * c.d_model],
            gate: vec![0.0; n_ctx * c.ffn_dim],
            up: vec![0.0; n_ctx * c.ffn_dim],
            theta_scale: c.rope_base.powf(-2.0 / c.rope_dim as f32),
            rope_sc: Vec::new(),
            qbuf: Vec::new(),
            logits: vec![0.0; n_ctx * c.vocab_size],
        }
    }
}

impl State {
    /// Empties the KV cache: the next batch starts at position 0.
    pub fn clear(&mut self) {
        self.pos = 0;
    }

    /// Tokens in the KV cache.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes of KV cache that attention reads for one new token at the current position, over
    /// all layers (keys and values of every cached position plus the new one).
    pub fn kv_bytes_read_per_token(&self, c: &LlamaConfig) -> usize {
        2 * c.n_layer * (self.pos + 1) * c.kv_dim() * std::mem::size_of::<f32>()
    }
}

/// Runs `tokens` (positions 0..n) through the model from an empty cache and leaves the logits
/// of positions `logits_from..n` in `state.logits`, row `i` holding position `logits_from + i`.
///
/// Token ids must be below the vocabulary size (the tokenizer guarantees it; callers that take
/// ids from elsewhere check first).
pub fn forward(w: &LlamaWeights, state: &mut State, tokens: &[u32], logits_from: usize) {
    state.clear();
    forward_next(w, state, tokens, logits_from);
}

/// Appends `tokens` after the ones already in the KV cache (a prompt batch, or one token when
/// generating) and leaves the logits of batch rows `logits_from..` in `state.logits`.
/// Processing a text in several batches gives the same values as in one.
pub fn forward_next(w: &LlamaWeights, state: &mut State, tokens: &[u32], logits_from: usize) {
    let c = &w.config;
    let n = tokens.len();
    assert!(
        state.pos + n <= state.n_ctx && logits_from <= n,
        "batch of {n} tokens after {} cached exceeds the state's {}",
        state.pos,
        state.n_ctx
    );
    let d = c.d_model;
    if n == 1 {
        // Generation: one parallel region for the whole token rather than one per step.
        decode::forward_one(w, state, tokens[0], logits_from == 0);
        return;
    }

    // A prompt: every parallel step below runs on one team for the whole pass (see `par`).
    par::team(|| {
        for (t, &tok) in tokens.iter().enumerate() {
            w.tok_embd.row_into(tok as usize, &mut state.x[t * d..(t + 1) * d]);
        }

        let pairs = c.rope_dim / 2;
        state.rope_sc.resize(n * pairs, (0.0, 0.0));
        let (p0, theta_scale) = (state.pos, state.theta_scale);
        par::for_each_row(&mut state.rope_sc, pairs, |t, sc| rope_angles(p0 + t, theta_scale, sc));

        for (il, layer) in w.layers.iter().enumerate() {
            attention_block(c, layer, il, state, n);
            // After the last attention only the rows whose logits are asked for are needed
            // (the keys and values of every row are cached by then), as llama.cpp's graphs
            // select them (`inp_out_ids`): a perplexity chunk skips half of the last feed-forward,
            // a prompt all but one row of it. Each row's result is the same either way.
            let r0 = if il + 1 == w.layers.len() { logits_from } else { 0 };
            ffn_block(c, layer, state, r0, n);
        }
        state.pos += n;

        let n_out = n - logits_from;
        let xs = &state.x[logits_from * d..n * d];
        let xn = &mut state.xn[..n_out * d];
        rms_norm(xs, &w.output_norm, xn, d, c.rms_eps);
        w.output().matmul(xn, &mut state.logits[..n_out * c.vocab_size], n_out, &mut state.qbuf);
    })
}

fn attention_block(c: &LlamaConfig, l: &LayerWeights, il: usize, s: &mut State, n: usize) {
    let d = c.d_model;
    let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
    rms_norm(&s.x[..n * d], &l.attn_norm, &mut s.xn[..n * d], d, c.rms_eps);
    let xn = &s.xn[..n * d];
    l.wq.matmul(xn, &mut s.q[..n * qd], n, &mut s.qbuf);
    l.wk.matmul(xn, &mut s.k[..n * kvd], n, &mut s.qbuf);
    l.wv.matmul(xn, &mut s.v[..n * kvd], n, &mut s.qbuf);
    add_bias(&mut s.q[..n * qd], l.bq.as_deref());
    add_bias(&mut s.k[..n * kvd], l.bk.as_deref());
    add_bias(&mut s.v[..n * kvd], l.bv.as_deref());

    let (mode, pairs, p0) = (c.rope_mode, c.rope_dim / 2, s.pos);
    let rope_sc = &s.rope_sc;
    let rope_row = |t: usize, row: &mut [f32]| {
        for head in row.chunks_exact_mut(hd) {
            rope(head, &rope_sc[t * pairs..(t + 1) * pairs], mode);
        }
    };
    if n >= 16 {
        par::for_each_row(&mut s.q[..n * qd], qd, rope_row);
    } else {
        s.q[..n * qd].chunks_exact_mut(qd).enumerate().for_each(|(t, row)| rope_row(t, row));
    }
    // The KV cache holds f16 in llama.cpp by default; round as it does.
    let kts = s.kt_stride;
    let kt_layer = &mut s.k_cache[il * kvd * kts..(il + 1) * kvd * kts];
    let layer_cache = il * s.n_ctx * kvd;
    let vc = &mut s.v_cache[layer_cache + p0 * kvd..layer_cache + (p0 + n) * kvd];
    let round = |x: f32| half::f16::from_f32(x).to_f32();
    if n >= 16 {
        // In parallel, like every other step of a prompt: a serial step keeps the team's
        // other threads waiting.
        par::for_each_row(&mut s.k[..n * kvd], kvd, rope_row);
        let k = &s.k[..n * kvd];
        par::for_each_row(kt_layer, kts, |e, dst| {
            for (t, d) in dst[p0..p0 + n].iter_mut().enumerate() {
                *d = round(k[t * kvd + e]);
            }
        });
        let v = &s.v[..n * kvd];
        par::for_each_row(vc, kvd, |t, dst| {
            dst.iter_mut().zip(&v[t * kvd..(t + 1) * kvd]).for_each(|(d, &x)| *d = round(x));
        });
    } else {
        s.k[..n * kvd].chunks_exact_mut(kvd).enumerate().for_each(|(t, row)| rope_row(t, row));
        for (t, row) in s.k[..n * kvd].chunks_exact(kvd).enumerate() {
            for (e, &src) in row.iter().enumerate() {
                kt_layer[e * kts + p0 + t] = round(src);
            }
        }
        for (dst, &src) in vc.iter_mut().zip(&s.v[..n * kvd]) {
            *dst = round(src);
        }
    }

    let q = &s.q;
    let kt = KeysT { data: &s.k_cache[il * kvd * kts..(il + 1) * kvd * kts], stride: kts };
    let v = &s.v_cache[layer_cache..layer_cache + (p0 + n) * kvd];
    let shape = attn_shape(c);
    // Rows are independent; small chunks balance the causal triangle's uneven rows. One row
    // (generation) is split by heads instead, so that every thread takes part.
    const ROWS: usize = 8;
    if n == 1 {
        par::for_each_chunk(&mut s.att[..qd], hd, |h, out| {
            attend_rows(&shape, &q[..qd], kt, v, p0, h..h + 1, &mut Vec::new(), out);
        });
    } else {
        par::for_each_chunk(&mut s.att[..n * qd], ROWS * qd, |chunk, out| {
            let r0 = chunk * ROWS;
            let nr = out.len() / qd;
            let mut scores = Vec::new();
            attend_rows(&shape, &q[r0 * qd..(r0 + nr) * qd], kt, v, p0 + r0, 0..c.n_head, &mut scores, out);
        });
    }

    l.wo.matmul(&s.att[..n * qd], &mut s.proj[..n * d], n, &mut s.qbuf);
    add_residual(&mut s.x[..n * d], &s.proj[..n * d], d);
}

/// `x += p`, row by row (`d` values), in parallel for a prompt (see `attention_block`).
fn add_residual(x: &mut [f32], p: &[f32], d: usize) {
    let add = |(x, p): (&mut [f32], &[f32])| x.iter_mut().zip(p).for_each(|(x, p)| *x += p);
    if x.len() >= 16 * d {
        par::for_each_row(x, d, |t, x| add((x, &p[t * d..(t + 1) * d])));
    } else {
        x.chunks_mut(d).zip(p.chunks(d)).for_each(add);
    }
}

/// The attention shapes of `c`, with the softmax scale `1/sqrt(head_dim)`.
fn attn_shape(c: &LlamaConfig) -> AttnShape {
    AttnShape {
        n_head: c.n_head,
        group: c.n_head / c.n_kv_head,
        head_dim: c.head_dim,
        kv_stride: c.kv_dim(),
        scale: 1.0 / (c.head_dim as f32).sqrt(),
    }
}

/// The feed-forward block for the batch rows `r0..n` (the others are left as they are).
fn ffn_block(c: &LlamaConfig, l: &LayerWeights, s: &mut State, r0: usize, n: usize) {
    let (d, f) = (c.d_model, c.ffn_dim);
    let x = &mut s.x[r0 * d..n * d];
    let m = n - r0;
    rms_norm(x, &l.ffn_norm, &mut s.xn[..m * d], d, c.rms_eps);
    l.w_gate.matmul(&s.xn[..m * d], &mut s.gate[..m * f], m, &mut s.qbuf);
    l.w_up.matmul(&s.xn[..m * d], &mut s.up[..m * f], m, &mut s.qbuf);
    let up = &s.up[..m * f];
    par::for_each_row(&mut s.gate[..m * f], f, |t, g| swiglu(g, &up[t * f..(t + 1) * f]));
    l.w_down.matmul(&s.gate[..m * f], &mut s.proj[..m * d], m, &mut s.qbuf);
    add_residual(x, &s.proj[..m * d], d);
}

/// `g = silu(g) * u = g / (1 + e^-g) * u`, element by element, with libm's `expf` bits
/// ([`exp::exp_in_place`], vectorized: libm's scalar calls were 2.8% of an F16 pp512). The
/// exponentials go first into a small buffer, so that the divisions and products (the same
/// operations in the same order, so the same bits) vectorize: one scalar division per element
/// was 1.5% of an F16 pp512.
fn swiglu(g: &mut [f32], u: &[f32]) {
    const CHUNK: usize = 64;
    let mut e = [0f32; CHUNK];
    for (g, u) in g.chunks_mut(CHUNK).zip(u.chunks(CHUNK)) {
        let e = &mut e[..g.len()];
        for (ei, &gi) in e.iter_mut().zip(g.iter()) {
            *ei = -gi;
        }
        exp::exp_in_place(e);
        for ((gi, &ui), &ei) in g.iter_mut().zip(u).zip(e.iter()) {
            *gi = *gi / (1.0 + ei) * ui;
        }
    }
}

/// `out = x / rms(x) * weight`, row by row, with the sum of squares in f64 as ggml does.
fn rms_norm(x: &[f32], weight: &[f32], out: &mut [f32], d: usize, eps: f32) {
    par::for_each_row(out, d, |t, o| rms_norm_row(&x[t * d..(t + 1) * d], weight, o, eps));
}

/// [`rms_norm`] of one row.
fn rms_norm_row(x: &[f32], weight: &[f32], out: &mut [f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((oi, &xi), &wi) in out.iter_mut().zip(x).zip(weight) {
        *oi = (xi * scale) * wi;
    }
}

fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            for (yi, bi) in row.iter_mut().zip(b) {
                *yi += bi;
            }
        }
    }
}

/// `(sin, cos)` of every rotated pair's angle at position `pos`, into `sc`.
///
/// The angle of pair `i` is `pos · scale^i`, advanced by repeated multiplication from `pos` as
/// llama.cpp's rope cache does, so the angles agree with it to the last bit.
fn rope_angles(pos: usize, theta_scale: f32, sc: &mut [(f32, f32)]) {
    let mut theta = pos as f32;
    for v in sc.iter_mut() {
        *v = theta.sin_cos();
        theta *= theta_scale;
    }
}

/// Rotates one head in place by the angles `sc` of [`rope_angles`] (one per rotated pair).
fn rope(head: &mut [f32], sc: &[(f32, f32)], mode: RopeMode) {
    let n_rot = 2 * sc.len();
    for (i, &(sin, cos)) in sc.iter().enumerate() {
        let (a, b) = match mode {
            RopeMode::Normal => (2 * i, 2 * i + 1),
            RopeMode::Neox => (i, i + n_rot / 2),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}
