//! Named worker threads fed from one crossbeam channel, for the per-piece jobs
//! of a running peer: blocking disk work (piece writes, checkpoints, the final
//! flush). (Readers verify pieces themselves: see `net::spawn_reader`.)
//!
//! Why not the rayon pool for these: a piece job arrives every few hundred
//! microseconds, so a worker goes idle thousands of times a second, and an
//! idle rayon worker calls `sched_yield` 33 times before it sleeps. Profiles
//! of the 1+4 / 512 MiB bench showed those yields at about 5% of all CPU. An
//! idle worker here sleeps on a [`crate::queue`] at once. Bulk data-parallel
//! work (hashing a whole file) stays on rayon.
//!
//! Owns only its threads. A job must not block on the engine; the threads end
//! when the last handle (and every job holding one) is gone, after running
//! every job queued before that.

use crate::queue::{self, Receiver, Sender};
use std::io;
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A handle to a set of worker threads; cheap to clone.
#[derive(Clone)]
pub struct Workers {
    jobs: Sender<Job>,
}

impl Workers {
    /// Starts `threads` threads (at least one) named `<name>-<i>`.
    pub fn new(name: &str, threads: usize) -> io::Result<Workers> {
        // Unbounded: what may be queued is bounded by the caller (the engine
        // hands out at most `max_storing` pieces at a time).
        let (jobs, queue) = queue::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let queue: Receiver<Job> = queue.clone();
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in &queue {
                        job();
                    }
                })?;
        }
        Ok(Workers { jobs })
    }

    /// Runs `job` on one of the threads, in arrival order.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // The threads live as long as a handle does, and the queue has no
        // bound, so this cannot fail.
        let _ = self.jobs.try_send(Box::new(job));
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
