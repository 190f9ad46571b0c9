//! Named worker threads fed from one queue, for the per-piece jobs of a
//! running peer: blocking disk work (piece writes, checkpoints, the final
//! flush). (Readers verify pieces themselves: see `net::spawn_reader`.)
//!
//! Why not the rayon pool for these: a piece job arrives every few hundred
//! microseconds, so a worker goes idle thousands of times a second, and an
//! idle rayon worker yields many times before it sleeps, a visible share of
//! all CPU in profiles. Why not a crossbeam channel either: its receiver
//! spins and yields before it parks, for the same cost (see
//! docs/PERFORMANCE.md). An idle worker here waits on a condition variable
//! at once, and a job makes the wake-up call only when a worker waits. Bulk
//! data-parallel work (hashing a whole file) stays on rayon.
//!
//! Owns only its threads and the jobs queued for them. A job must not block
//! on the engine; the threads end when the last handle (and every job holding
//! one) is gone, after running every job queued before that.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A handle to a set of worker threads; cheap to clone.
pub(crate) struct Workers {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job arrives for a waiting worker, or the last handle goes.
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    /// Live [`Workers`] handles: at zero, idle threads end.
    handles: usize,
    /// Threads asleep on `ready`.
    waiting: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a panicking job cannot poison it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, waiting for one; `None` once no handle is left and
    /// every job has been taken.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.handles == 0 {
                return None;
            }
            state.waiting += 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }
}

impl Workers {
    /// Starts `threads` threads (at least one) named `<name>-<i>`.
    pub(crate) fn new(name: &str, threads: usize) -> io::Result<Workers> {
        // No bound: what may be queued is bounded by the caller (the engine
        // hands out at most `max_storing` pieces at a time).
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                handles: 1,
                waiting: 0,
            }),
            ready: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Some(job) = shared.next_job() {
                        job();
                    }
                })?;
        }
        Ok(Workers { shared })
    }

    /// Runs `job` on one of the threads, in arrival order.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let mut state = self.shared.lock();
        state.jobs.push_back(Box::new(job));
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

impl Clone for Workers {
    fn clone(&self) -> Workers {
        self.shared.lock().handles += 1;
        Workers {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.handles -= 1;
        let end = state.handles == 0;
        drop(state);
        if end {
            self.shared.ready.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_job_runs_once_on_a_named_worker_and_jobs_may_spawn_jobs() {
        let workers = Workers::new("t", 3).unwrap();
        let (done, results) = crossbeam_channel::unbounded();
        for i in 0..100u32 {
            let (done, inner) = (done.clone(), workers.clone());
            workers.spawn(move || {
                let name = thread::current().name().unwrap().to_string();
                assert!(name.starts_with("t-"), "{name}");
                inner.spawn(move || done.send(i).unwrap());
            });
        }
        drop(done);
        drop(workers);
        let seen: BTreeSet<u32> = results.iter().collect();
        assert_eq!(seen, (0..100).collect());
    }
}
