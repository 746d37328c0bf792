//! One generated token with a team that lives for the whole token.
//!
//! A token's forward pass is ~210 small products (7 per layer and the output), each a few
//! hundred KB of weights streamed once: 10-20 µs of work apiece on two cores. Run through
//! rayon's parallel iterators, each product and each small step around it (norms, RoPE,
//! attention, SiLU) was a parallel region of its own, ~330 per token, and every region's
//! hand-off (waking a worker, stealing, joining) cost a share of the token's time. Here every
//! thread of the pool enters one [`rayon::broadcast`] per token and runs the whole layer loop;
//! the threads meet at a spin barrier after each step that needs another thread's results
//! (six per layer), and inside a step take chunks of rows from a shared counter, so a thread
//! that the machine slows down takes fewer chunks rather than holding the others up.
//!
//! Every thread keeps its own copy of the residual stream, the normalized row and the
//! activation bytes the kernels read: they are the same computations on the same inputs, so
//! the copies agree to the bit and no step waits for one thread to publish them. Each output
//! of a product is the same kernel call as in the batch path ([`OneToken`]), so the logits are
//! bit-identical to `forward` over the same tokens whatever the thread count.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::{rms_norm_row, rope, swiglu, State};
use crate::kernels::attention::{attend_rows, KeysT};
use crate::kernels::matmul_q::{ActKey, OneToken, GEN_ALIGN};
use crate::model::weights::{LlamaWeights, Matrix};
use crate::par::SPINS_BEFORE_SLEEP;

/// Runs one token at the next position through the model; with `logits` its logits land in
/// `state.logits[..vocab]`.
///
/// The team is every thread of the current pool, so this must not be called from two jobs of
/// one pool at once (two teams would each hold a thread the other waits for). The callers, the
/// speed benchmark and the tests, call it from one thread at a time, inside the pool or not.
pub(super) fn forward_one(w: &LlamaWeights, s: &mut State, token: u32, logits: bool) {
    let c = &w.config;
    let p0 = s.pos;
    let pairs = c.rope_dim / 2;
    s.rope_sc.resize(pairs, (0.0, 0.0));
    super::rope_angles(p0, s.theta_scale, &mut s.rope_sc[..pairs]);

    let threads = rayon::current_num_threads().max(1);
    let n_phases = PHASES_PER_LAYER * c.n_layer + 1;
    let team = Team {
        barrier: Barrier::new(threads),
        cuts: Cuts::new(w, threads),
        counters: (0..n_phases).map(|_| AtomicUsize::new(0)).collect(),
        q: Shared::new(&mut s.q[..c.q_dim()]),
        k: Shared::new(&mut s.k[..c.kv_dim()]),
        v: Shared::new(&mut s.v[..c.kv_dim()]),
        att: Shared::new(&mut s.att[..c.q_dim()]),
        proj: Shared::new(&mut s.proj[..c.d_model]),
        gate: Shared::new(&mut s.gate[..c.ffn_dim]),
        up: Shared::new(&mut s.up[..c.ffn_dim]),
        k_cache: Shared::new(&mut s.k_cache),
        v_cache: Shared::new(&mut s.v_cache),
        logits: Shared::new(&mut s.logits[..c.vocab_size]),
        x_out: Shared::new(&mut s.x[..c.d_model]),
    };
    let job = Job { w, team: &team, token, logits, p0, kts: s.kt_stride, n_ctx: s.n_ctx, rope_sc: &s.rope_sc[..pairs] };
    rayon::broadcast(|ctx| {
        let r = catch_unwind(AssertUnwindSafe(|| job.run(ctx.index(), ctx.num_threads())));
        if let Err(e) = r {
            // Release the others from the barrier before unwinding, or they would spin forever.
            team.barrier.poison();
            resume_unwind(e);
        }
    });
    s.pos += 1;
}

/// Barriers per layer (and so phase counters): after q/k/v, after RoPE and the cache writes,
/// after attention, after `wo`, after gate/up, after `w_down`.
const PHASES_PER_LAYER: usize = 6;

/// What the threads of one token share.
struct Team {
    barrier: Barrier,
    /// The chunk boundaries of every product's row count.
    cuts: Cuts,
    /// One chunk counter per phase of the token.
    counters: Vec<AtomicUsize>,
    q: Shared,
    k: Shared,
    v: Shared,
    att: Shared,
    proj: Shared,
    gate: Shared,
    up: Shared,
    k_cache: Shared,
    v_cache: Shared,
    logits: Shared,
    x_out: Shared,
}

/// An f32 buffer of the state that the team's threads write at disjoint positions within a
/// phase and read only in later phases (after a barrier), never both in one phase.
#[derive(Clone, Copy)]
struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the pointer is only dereferenced under the phase discipline above: within a phase a
// position is written by at most one thread and a buffer being written is not read.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(b: &mut [f32]) -> Shared {
        Shared { ptr: b.as_mut_ptr(), len: b.len() }
    }

    /// Positions `a..a + n` to write.
    ///
    /// # Safety
    /// No other thread touches those positions during this phase, and nobody reads the buffer.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, a: usize, n: usize) -> &mut [f32] {
        assert!(a + n <= self.len, "shared buffer part {a}+{n} of {}", self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(a), n)
    }

    /// Writes `v` at position `i`.
    ///
    /// # Safety
    /// As for [`Shared::part`], for position `i`.
    unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "shared buffer position {i} of {}", self.len);
        *self.ptr.add(i) = v;
    }

    /// The whole buffer to read.
    ///
    /// # Safety
    /// Nobody writes the buffer during this phase.
    unsafe fn all(&self) -> &[f32] {
        std::slice::from_raw_parts(self.ptr, self.len)
    }
}

/// One token's inputs, shared by the team.
struct Job<'a> {
    w: &'a LlamaWeights,
    team: &'a Team,
    token: u32,
    logits: bool,
    p0: usize,
    kts: usize,
    n_ctx: usize,
    rope_sc: &'a [(f32, f32)],
}

/// A product of one step: the matrix, its kernels, where its rows go and their bias.
struct Product<'a> {
    m: &'a Matrix,
    ot: OneToken,
    out: Shared,
    bias: Option<&'a [f32]>,
}

impl Job<'_> {
    /// The whole token as thread `ti` of `nt` runs it.
    fn run(&self, ti: usize, nt: usize) {
        let (w, t) = (self.w, self.team);
        let seat = Seat { ti, nt };
        // While it waits at a barrier, a thread that finished its share early asks for the
        // first rows it will compute after it: its first chunk of the next products.
        let first = |m: &Matrix| {
            let b = t.cuts.get(m.rows);
            let (r0, r1) = if ti + 1 < b.len() { (b[ti], b[ti + 1]) } else { (0, 0) };
            m.rows_span(r0, r1)
        };
        let c = &w.config;
        let (d, f, kvd, hd) = (c.d_model, c.ffn_dim, c.kv_dim(), c.head_dim);
        let mut x = vec![0f32; d];
        w.tok_embd.row_into(self.token as usize, &mut x);
        let mut xn = vec![0f32; d];
        let mut acts = Acts::default();
        let mut scores = Vec::new();
        let shape = super::attn_shape(c);

        for (il, l) in w.layers.iter().enumerate() {
            let phase = il * PHASES_PER_LAYER;
            // q, k, v.
            rms_norm_row(&x, &l.attn_norm, &mut xn, c.rms_eps);
            let prods = [
                Product { m: &l.wq, ot: l.wq.one_token(), out: t.q, bias: l.bq.as_deref() },
                Product { m: &l.wk, ot: l.wk.one_token(), out: t.k, bias: l.bk.as_deref() },
                Product { m: &l.wv, ot: l.wv.one_token(), out: t.v, bias: l.bv.as_deref() },
            ];
            acts.clear();
            self.products(&t.counters[phase], &prods, &xn, &mut acts, seat);
            t.barrier.wait(&[]);

            // RoPE on q, head by head; RoPE on k and both into the cache, as one more item.
            let (mode, layer_k, layer_v) = (c.rope_mode, il * kvd * self.kts, il * self.n_ctx * kvd);
            for item in Chunks::new(&t.counters[phase + 1], c.n_head + 1, seat) {
                if item < c.n_head {
                    // SAFETY: head `item` of q is this thread's alone in this phase; q is not read.
                    rope(unsafe { t.q.part(item * hd, hd) }, self.rope_sc, mode);
                    continue;
                }
                // SAFETY: k is only read in this phase, and only by this item; the cache
                // positions written (column p0 of this layer's keys, row p0 of its values) are
                // this item's alone, and the caches are not read in this phase.
                unsafe {
                    let k = t.k.part(0, kvd);
                    for head in k.chunks_exact_mut(hd) {
                        rope(head, self.rope_sc, mode);
                    }
                    for (e, &src) in k.iter().enumerate() {
                        t.k_cache.write(layer_k + e * self.kts + self.p0, half::f16::from_f32(src).to_f32());
                    }
                    let v = t.v.part(0, kvd);
                    for (dst, &src) in t.v_cache.part(layer_v + self.p0 * kvd, kvd).iter_mut().zip(v.iter()) {
                        *dst = half::f16::from_f32(src).to_f32();
                    }
                }
            }
            t.barrier.wait(&[]);

            // Attention, head by head.
            {
                // SAFETY: q and both caches are only read in this phase.
                let (q, kc, vc) = unsafe { (t.q.all(), t.k_cache.all(), t.v_cache.all()) };
                let kt = KeysT { data: &kc[layer_k..layer_k + kvd * self.kts], stride: self.kts };
                let v = &vc[layer_v..layer_v + (self.p0 + 1) * kvd];
                for h in Chunks::new(&t.counters[phase + 2], c.n_head, seat) {
                    // SAFETY: head h of att is this item's alone; att is not read in this phase.
                    let out = unsafe { t.att.part(h * hd, hd) };
                    attend_rows(&shape, q, kt, v, self.p0, h..h + 1, &mut scores, out);
                }
            }
            t.barrier.wait(&[first(&l.wo)]);

            // wo.
            // SAFETY: att is only read in this phase.
            let att = unsafe { t.att.all() };
            acts.clear();
            let prods = [Product { m: &l.wo, ot: l.wo.one_token(), out: t.proj, bias: None }];
            self.products(&t.counters[phase + 3], &prods, att, &mut acts, seat);
            t.barrier.wait(&[first(&l.w_gate), first(&l.w_up)]);
            // SAFETY: proj is only read until the next barrier.
            for (xi, p) in x.iter_mut().zip(unsafe { t.proj.all() }) {
                *xi += p;
            }

            // gate and up, then SiLU(gate) * up on the same rows.
            rms_norm_row(&x, &l.ffn_norm, &mut xn, c.rms_eps);
            acts.clear();
            let (og, ou) = (l.w_gate.one_token(), l.w_up.one_token());
            for (r0, r1) in RowChunks::new(&t.counters[phase + 4], t.cuts.get(f), seat) {
                let ag = acts.get(&og, &xn);
                // SAFETY: rows r0..r1 of gate and up are this chunk's alone; neither is read in
                // this phase.
                let (g, u) = unsafe { (t.gate.part(r0, r1 - r0), t.up.part(r0, r1 - r0)) };
                l.w_gate.one_token_rows(&og, &xn, ag, r0, g);
                let au = acts.get(&ou, &xn);
                l.w_up.one_token_rows(&ou, &xn, au, r0, u);
                swiglu(g, u);
            }
            t.barrier.wait(&[first(&l.w_down)]);

            // w_down.
            // SAFETY: gate is only read in this phase.
            let hidden = unsafe { t.gate.all() };
            acts.clear();
            let prods = [Product { m: &l.w_down, ot: l.w_down.one_token(), out: t.proj, bias: None }];
            self.products(&t.counters[phase + 5], &prods, hidden, &mut acts, seat);
            let next = match w.layers.get(il + 1) {
                Some(next) => first(&next.wq),
                None if self.logits => first(w.output()),
                None => (std::ptr::null(), 0),
            };
            t.barrier.wait(&[next]);
            // SAFETY: proj is only read until the next layer's wo phase, two barriers away.
            for (xi, p) in x.iter_mut().zip(unsafe { t.proj.all() }) {
                *xi += p;
            }
        }

        if ti == 0 {
            // SAFETY: only thread 0 writes x_out, and nobody reads it during the token.
            unsafe { t.x_out.part(0, d) }.copy_from_slice(&x);
        }
        if self.logits {
            rms_norm_row(&x, &w.output_norm, &mut xn, c.rms_eps);
            acts.clear();
            let out = w.output();
            let prods = [Product { m: out, ot: out.one_token(), out: t.logits, bias: None }];
            self.products(&t.counters[PHASES_PER_LAYER * c.n_layer], &prods, &xn, &mut acts, seat);
        }
    }

    /// Every row of `prods` against the activation row `x`, chunk by chunk from `counter`.
    fn products(&self, counter: &AtomicUsize, prods: &[Product], x: &[f32], acts: &mut Acts, seat: Seat) {
        let bounds: [&[usize]; 3] = std::array::from_fn(|i| prods.get(i).map_or(&[0][..], |p| self.team.cuts.get(p.m.rows)));
        assert!(prods.len() <= bounds.len(), "at most three products per step");
        let total = bounds.iter().map(|b| b.len() - 1).sum();
        for mut i in Chunks::new(counter, total, seat) {
            let mut m = 0;
            while i >= bounds[m].len() - 1 {
                i -= bounds[m].len() - 1;
                m += 1;
            }
            let p = &prods[m];
            let (r0, r1) = (bounds[m][i], bounds[m][i + 1]);
            let act = acts.get(&p.ot, x);
            // SAFETY: rows r0..r1 of this product's output are this chunk's alone, and the
            // outputs are not read in this phase.
            let y = unsafe { p.out.part(r0, r1 - r0) };
            p.m.one_token_rows(&p.ot, x, act, r0, y);
            if let Some(b) = p.bias {
                for (yi, bi) in y.iter_mut().zip(&b[r0..r1]) {
                    *yi += bi;
                }
            }
        }
    }
}

/// Chunk boundaries `0 = b[0] < b[1] < ... = rows` of a `rows`-row product on `nt` threads,
/// largest first (guided scheduling): each chunk is what is left over twice the thread count,
/// rounded up to whole 16-row groups, so the threads stream long runs of rows at first and
/// the last chunks, the ones a thread may wait on at the barrier, are 16 rows. A pure function
/// of its arguments; the results never depend on it.
fn chunk_bounds(rows: usize, nt: usize) -> Vec<usize> {
    let mut b = vec![0];
    let mut r = 0;
    while r < rows {
        let left = rows - r;
        let size = left.div_ceil(2 * nt.max(1)).next_multiple_of(GEN_ALIGN).min(left);
        r += size;
        b.push(r);
    }
    b
}

/// [`chunk_bounds`] for every row count of the model's products, built once per token (they
/// depend only on the row count and the team's size).
struct Cuts {
    by_rows: Vec<(usize, Vec<usize>)>,
}

impl Cuts {
    fn new(w: &LlamaWeights, nt: usize) -> Cuts {
        let mut by_rows: Vec<(usize, Vec<usize>)> = Vec::new();
        let layers = w.layers.iter().flat_map(|l| l.matrices());
        for m in layers.chain([w.output()]) {
            if !by_rows.iter().any(|(r, _)| *r == m.rows) {
                by_rows.push((m.rows, chunk_bounds(m.rows, nt)));
            }
        }
        Cuts { by_rows }
    }

    fn get(&self, rows: usize) -> &[usize] {
        let (_, b) = self.by_rows.iter().find(|(r, _)| *r == rows).expect("every product's row count has its cuts");
        b
    }
}

/// Which thread of the team this is: `ti` of `nt`.
#[derive(Clone, Copy)]
struct Seat {
    ti: usize,
    nt: usize,
}

/// Item indices `0..n` for the threads of a team: thread `ti` first takes item `ti` (so it
/// knows its first item in advance, and can prefetch for it), then items from `nt` on are
/// handed out one at a time from a shared counter. Every thread of the team runs every
/// `Chunks`, so each item is taken exactly once.
struct Chunks<'a> {
    counter: &'a AtomicUsize,
    n: usize,
    first: Option<usize>,
    nt: usize,
}

impl<'a> Chunks<'a> {
    fn new(counter: &'a AtomicUsize, n: usize, seat: Seat) -> Self {
        Chunks { counter, n, first: Some(seat.ti), nt: seat.nt }
    }
}

impl Iterator for Chunks<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let i = match self.first.take() {
            Some(i) => i,
            None => self.nt + self.counter.fetch_add(1, Ordering::Relaxed),
        };
        (i < self.n).then_some(i)
    }
}

/// Row ranges of a product from a shared counter, as its [`chunk_bounds`] `bounds` cut them.
struct RowChunks<'a> {
    inner: Chunks<'a>,
    bounds: &'a [usize],
}

impl<'a> RowChunks<'a> {
    fn new(counter: &'a AtomicUsize, bounds: &'a [usize], seat: Seat) -> Self {
        RowChunks { inner: Chunks::new(counter, bounds.len() - 1, seat), bounds }
    }
}

impl Iterator for RowChunks<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        let i = self.inner.next()?;
        Some((self.bounds[i], self.bounds[i + 1]))
    }
}

/// A thread's prepared activation rows for the products of one step, by the bytes they hold.
#[derive(Default)]
struct Acts {
    bufs: Vec<(Option<ActKey>, Vec<u8>)>,
}

impl Acts {
    /// Forgets the rows (a new step has a new activation), keeping the allocations.
    fn clear(&mut self) {
        for b in &mut self.bufs {
            b.0 = None;
        }
    }

    /// The bytes `ot` reads for `x`, prepared on first use in this step.
    fn get(&mut self, ot: &OneToken, x: &[f32]) -> &[u8] {
        let key = ot.key();
        let i = match self.bufs.iter().position(|b| b.0 == Some(key)) {
            Some(i) => i,
            None => {
                let i = match self.bufs.iter().position(|b| b.0.is_none()) {
                    Some(i) => i,
                    None => {
                        self.bufs.push((None, Vec::new()));
                        self.bufs.len() - 1
                    }
                };
                let b = &mut self.bufs[i];
                b.1.resize(ot.act_bytes(), 0);
                ot.prepare(x, &mut b.1);
                b.0 = Some(key);
                i
            }
        };
        &self.bufs[i].1[..ot.act_bytes()]
    }
}

/// Bytes of one matrix a waiting thread prefetches: its first chunk, or this much of it (the
/// L2 of the CPUs this was measured on is 512 KiB).
const PREFETCH_CAP: usize = 64 * 1024;

/// Asks for the cache line at `p` (into L2 and L1), where the instruction set has a prefetch;
/// never faults.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64, and a prefetch of any address never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A sense-counting barrier for the team: threads spin for a while (a wait is a few
/// microseconds when every thread has a CPU), then sleep on a condition variable. Spinning and
/// yielding without end cost a scheduler time slice per barrier whenever another process held
/// one of the CPUs: generation fell from ~109 to ~4 t/s (Q8_0) while the tests ran beside it.
struct Barrier {
    n: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
    /// Threads that are (or are about to be) asleep in `wait`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Barrier {
    fn new(n: usize) -> Barrier {
        Barrier {
            n,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Wakes the threads asleep in `wait`, after the generation moved on or the barrier was
    /// poisoned. A sleeper announces itself (`sleepers`, SeqCst) before it checks the
    /// generation under the lock, and the waker changes the generation before it reads
    /// `sleepers`: so either the waker sees the sleeper and notifies under the lock (after the
    /// sleeper's check, so the notification reaches it), or the sleeper sees the new generation.
    fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }

    /// Returns once all `n` threads have called it (for this generation). Every write a thread
    /// made before its call is visible to every thread after the return. While it waits, the
    /// thread prefetches the bytes of `spans` (address, length; at most [`PREFETCH_CAP`] of
    /// each), a cache line per turn of the spin loop.
    fn wait(&self, spans: &[(*const u8, usize)]) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.wake_sleepers();
            return;
        }
        let mut spins = 0u32;
        let (mut span, mut off) = (0, 0);
        while self.generation.load(Ordering::Acquire) == gen {
            if self.poisoned.load(Ordering::Relaxed) {
                panic!("a thread of the generation team panicked");
            }
            if let Some(&(p, len)) = spans.get(span) {
                if off < len.min(PREFETCH_CAP) {
                    prefetch(p.wrapping_add(off));
                    off += 64;
                } else {
                    (span, off) = (span + 1, 0);
                }
            }
            if spins < SPINS_BEFORE_SLEEP {
                spins += 1;
                std::hint::spin_loop();
            } else {
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                while self.generation.load(Ordering::SeqCst) == gen && !self.poisoned.load(Ordering::SeqCst) {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                drop(guard);
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.wake_sleepers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hand_out_every_item_once_each_thread_its_own_first() {
        for nt in 1..5 {
            for n in 0..20 {
                let counter = AtomicUsize::new(0);
                let mut its: Vec<Chunks> = (0..nt).map(|ti| Chunks::new(&counter, n, Seat { ti, nt })).collect();
                let mut taken: Vec<Vec<usize>> = vec![Vec::new(); nt];
                // Round robin, the way a team's threads might interleave.
                let mut live = true;
                while live {
                    live = false;
                    for (ti, it) in its.iter_mut().enumerate() {
                        if let Some(i) = it.next() {
                            taken[ti].push(i);
                            live = true;
                        }
                    }
                }
                for (ti, t) in taken.iter().enumerate() {
                    if ti < n {
                        assert_eq!(t[0], ti, "{nt} threads, {n} items: thread {ti} took {t:?}");
                    }
                }
                let mut all: Vec<usize> = taken.concat();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "{nt} threads, {n} items");
            }
        }
    }

    #[test]
    fn chunk_bounds_cover_the_rows_in_whole_groups_largest_first() {
        for rows in [16, 32, 192, 576, 1536, 49152, 49155] {
            for nt in [1, 2, 3, 8] {
                let b = chunk_bounds(rows, nt);
                assert_eq!((b[0], *b.last().unwrap()), (0, rows), "{rows} rows, {nt} threads");
                let sizes: Vec<usize> = b.windows(2).map(|w| w[1] - w[0]).collect();
                assert!(sizes.iter().all(|&s| s > 0), "{rows}/{nt}: {b:?}");
                assert!(b[..b.len() - 1].iter().all(|r| r % GEN_ALIGN == 0), "{rows}/{nt}: {b:?}");
                assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{rows}/{nt}: not largest first: {sizes:?}");
                if rows >= 32 * nt {
                    assert!(sizes.len() >= 2 * nt, "{rows}/{nt}: too few chunks to balance: {sizes:?}");
                }
            }
        }
    }
}
