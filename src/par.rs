//! Parallel loops for the prompt forward pass, on a team that holds the pool's threads for a
//! whole forward.
//!
//! A 512-token forward of the default model is ~20 parallel regions per layer, ~600 in all,
//! many of them a few tens of microseconds long (norms, RoPE, the cache writes, small
//! products). Run as rayon parallel iterators, the idle worker fell asleep between regions and
//! behind their tails and was woken by the next: `perf stat` counted 300-400 context switches
//! per forward against ~40 for llama.cpp, and 1.875 of 2 CPUs busy. With one thread, evalq and
//! llama-bench process an F16 prompt at the same speed; with two, evalq trailed by ~12%.
//!
//! [`team`] enters one [`rayon::broadcast`]: one thread (the driver) runs the caller's code,
//! the others wait for work, spinning for a while and then sleeping on a condition variable
//! (spinning without end costs a scheduler time slice whenever another process holds a CPU;
//! see the generation team in `model::forward::decode`). [`for_each`] called by the driver
//! publishes its tasks to the team; every thread, the driver too, takes task indices from a
//! shared counter, and the driver returns once every helper has checked out of the job.
//! Called anywhere else (outside a team, or from inside a task) it is a rayon parallel loop.
//!
//! A task's result must not depend on which thread runs it or on what the other tasks do:
//! then, as with rayon, the results do not depend on the thread count.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;

/// Runs `f` with the current rayon pool's threads held as a team for [`for_each`] (see the
/// module documentation). Inside a team, or with a pool of one thread, it just runs `f`.
///
/// The team is every thread of the pool, so two teams must not run on one pool at once (each
/// would hold a thread the other waits for); like the generation team, the callers (a forward
/// pass, a perplexity chunk) run one at a time.
pub fn team<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    if threads <= 1 || DRIVER.with(|d| !d.get().is_null()) {
        return f();
    }
    let team = Team::new(threads - 1);
    let f = Mutex::new(Some(f));
    let out = Mutex::new(None);
    rayon::broadcast(|ctx| {
        if ctx.index() == 0 {
            let f = f.lock().unwrap_or_else(|e| e.into_inner()).take().expect("one driver");
            let _driving = Driving::enter(&team);
            // Whatever happens, release the helpers, or they would wait for jobs forever.
            let r = catch_unwind(AssertUnwindSafe(f));
            team.quit.store(true, Ordering::SeqCst);
            team.job_posted.notify();
            match r {
                Ok(v) => *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(v),
                Err(e) => resume_unwind(e),
            }
        } else {
            team.help();
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner()).expect("the driver returned a value")
}

/// Calls `f(i)` for every `i` in `0..n`, in parallel: on the team when called by a team's
/// driver, with rayon otherwise. Tasks should be a few microseconds of work or more (each
/// takes its index from a counter shared by the threads).
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    let team = DRIVER.with(|d| d.get());
    if team.is_null() {
        (0..n).into_par_iter().for_each(&f);
    } else if n == 1 {
        f(0);
    } else if n > 1 {
        // SAFETY: DRIVER points at the team of the enclosing `team` call, which outlives the
        // driver's use of it (`Driving` clears it before the team is dropped).
        unsafe { &*team }.run(n, &f);
    }
}

/// Calls `f(i, row)` for every row of `data` (rows of `row_len` items; the last may be
/// shorter), in parallel as [`for_each`], a few rows per task.
pub fn for_each_row<T: Send>(data: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let row_len = row_len.max(1);
    let rows = data.len().div_ceil(row_len);
    // Enough tasks per thread to balance, few enough that taking one costs little.
    let per_task = rows.div_ceil(8 * rayon::current_num_threads().max(1)).max(1);
    for_each_chunk(data, per_task * row_len, |c, chunk| {
        for (j, row) in chunk.chunks_mut(row_len).enumerate() {
            f(c * per_task + j, row);
        }
    });
}

/// Calls `f(i, chunk)` for every chunk `data[i * chunk_len..]` of `chunk_len` items (the last
/// may be shorter), one task per chunk, in parallel as [`for_each`].
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk_len = chunk_len.max(1);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(chunk_len), |i| {
        let start = i * chunk_len;
        let end = (start + chunk_len).min(len);
        // SAFETY: the chunks of distinct tasks are disjoint ranges inside `data`, which is
        // borrowed mutably for the whole loop; every index runs exactly once.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        f(i, chunk);
    });
}

struct SendPtr<T>(*mut T);
// SAFETY: hands disjoint ranges of one exclusively borrowed slice to the tasks of one loop.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// The team this thread drives, if any.
    static DRIVER: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// Marks the current thread as `team`'s driver until dropped.
struct Driving;

impl Driving {
    fn enter(team: &Team) -> Driving {
        DRIVER.with(|d| d.set(team as *const Team));
        Driving
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        DRIVER.with(|d| d.set(std::ptr::null()));
    }
}

/// One parallel loop, on the driver's stack while it runs.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    /// The first panic of a task on a helper, re-raised by the driver.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Runs tasks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(i);
        }
    }
}

struct Team {
    helpers: usize,
    /// Bumped for every job; a helper runs each epoch's job once.
    epoch: AtomicUsize,
    /// The current job. Valid from the epoch's bump until every helper checked out of it: the
    /// driver waits for that before its `run` returns and the job goes out of scope.
    job: AtomicPtr<Job<'static>>,
    checked_out: AtomicUsize,
    quit: AtomicBool,
    job_posted: Event,
    all_out: Event,
}

impl Team {
    fn new(helpers: usize) -> Team {
        Team {
            helpers,
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            checked_out: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            job_posted: Event::default(),
            all_out: Event::default(),
        }
    }

    /// The driver's side of [`for_each`].
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job { f, n, next: AtomicUsize::new(0), panic: Mutex::new(None) };
        self.checked_out.store(0, Ordering::Relaxed);
        // SAFETY (of the lifetime erasure): helpers dereference the pointer only between the
        // epoch's bump and their check-out, and this function does not return (or unwind)
        // before every helper checked out.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        self.job.store(ptr, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.job_posted.notify();
        let mine = catch_unwind(AssertUnwindSafe(|| job.work()));
        if mine.is_err() {
            // Let the helpers run out of tasks quickly.
            job.next.store(n, Ordering::Relaxed);
        }
        self.all_out.wait_until(|| self.checked_out.load(Ordering::SeqCst) == self.helpers);
        if let Err(e) = mine {
            resume_unwind(e);
        }
        let helper_panic = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(e) = helper_panic {
            resume_unwind(e);
        }
    }

    /// A helper's loop: every new job until the driver quits.
    fn help(&self) {
        let mut seen = 0;
        loop {
            self.job_posted.wait_until(|| self.epoch.load(Ordering::SeqCst) != seen || self.quit.load(Ordering::SeqCst));
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch == seen {
                return; // quit, and no job left to check out of
            }
            seen = epoch;
            // SAFETY: the epoch moved, so the job it posted is live until this thread checks out.
            let job = unsafe { &*self.job.load(Ordering::Relaxed) };
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| job.work())) {
                job.next.store(job.n, Ordering::Relaxed);
                job.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            }
            self.checked_out.fetch_add(1, Ordering::SeqCst);
            self.all_out.notify();
        }
    }
}

/// Spin-loop turns before a waiting thread goes to sleep (~50-100 µs); the generation team's
/// barrier (`model::forward::decode`) waits as long.
pub(crate) const SPINS_BEFORE_SLEEP: u32 = 1 << 12;

/// Waiting for a condition another thread makes true: spin for a while, then sleep on a
/// condition variable. The waker makes the condition true (SeqCst) before [`Event::notify`]
/// reads `sleepers`; a sleeper announces itself (SeqCst) before it checks the condition under
/// the lock: so either the waker sees the sleeper and notifies under the lock, after the
/// sleeper's check, or the sleeper sees the condition.
#[derive(Default)]
struct Event {
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Event {
    fn wait_until(&self, cond: impl Fn() -> bool) {
        for _ in 0..SPINS_BEFORE_SLEEP {
            if cond() {
                return;
            }
            std::hint::spin_loop();
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !cond() {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    fn notify(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()
    }

    #[test]
    fn every_task_runs_once_in_and_out_of_a_team() {
        for threads in [1, 2, 3] {
            pool(threads).install(|| {
                for in_team in [false, true] {
                    let check = || {
                        for n in [0usize, 1, 2, 7, 100, 1000] {
                            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                            for_each(n, |i| {
                                hits[i].fetch_add(1, Ordering::Relaxed);
                            });
                            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads, n={n}");
                        }
                        let mut data: Vec<usize> = vec![0; 1003];
                        for_each_row(&mut data, 10, |i, row| row.iter_mut().for_each(|v| *v += i));
                        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 10), "{threads} threads");
                        for_each_chunk(&mut data, 64, |i, c| c.iter_mut().for_each(|v| *v = i));
                        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 64), "{threads} threads");
                    };
                    if in_team {
                        team(check);
                    } else {
                        check();
                    }
                }
            });
        }
    }

    #[test]
    fn the_team_shares_the_work_and_keeps_its_helpers_between_loops() {
        pool(2).install(|| {
            let (a, b) = team(|| {
                // Many loops in a row: every one must see both threads take part, and a helper
                // must not miss a job posted right after the previous one.
                let mut on_helper = 0;
                for _ in 0..2000 {
                    let driver = std::thread::current().id();
                    let others = AtomicUsize::new(0);
                    for_each(64, |_| {
                        if std::thread::current().id() != driver {
                            others.fetch_add(1, Ordering::Relaxed);
                        }
                        std::hint::black_box((0..200).sum::<u64>());
                    });
                    on_helper += others.load(Ordering::Relaxed).min(1);
                }
                (on_helper, team(|| 5))
            });
            assert!(a > 0, "the helper never took a task");
            assert_eq!(b, 5, "a nested team runs inline");
        });
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_frees_the_team() {
        pool(2).install(|| {
            for bad in [0usize, 63] {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    team(|| {
                        for_each(64, |i| {
                            if i == bad {
                                panic!("task {i} failed");
                            }
                        })
                    })
                }));
                let msg = r.expect_err("the panic must propagate");
                let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
                assert_eq!(msg, format!("task {bad} failed"));
            }
            // The pool is still usable afterwards.
            assert_eq!(team(|| 7), 7);
        });
    }
}
