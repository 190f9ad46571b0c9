//! The scheduling class of a peer process: batch work (`SCHED_BATCH`).
//!
//! A peer is a bulk transfer: its threads hand each piece on (reader,
//! engine, disk thread, writers) and wake one another tens of thousands of
//! times a second. Under the default class each wake-up may preempt
//! whatever runs on that core, another peer's reader half way through a
//! piece included; as batch work a woken thread waits for the running one's
//! slice instead, which made runs faster and cheaper in CPU, most of all
//! with peers in sessions of their own (see docs/PERFORMANCE.md).
//!
//! Owns one system call, one of the crate's three `unsafe` modules (with
//! [`crate::integrity::sha1pair`] and [`crate::runtime::send_buffer`]).
//! Must be called before the peer starts its threads (they inherit the
//! class), and only in a process of its own.
#![allow(unsafe_code)]

use std::io;

/// Makes the calling thread batch work; every thread it starts afterwards
/// inherits that. A no-op where `SCHED_BATCH` does not exist.
pub(crate) fn batch() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` that outlives the call;
        // pid 0 names the calling thread; the call changes nothing else.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_made_batch_work_starts_threads_that_are_batch_work_too() {
        // A thread of its own, so the test harness's threads keep their class.
        std::thread::spawn(|| {
            super::batch().unwrap();
            // `policy` is field 41 of the thread's stat.
            let policy =
                || crate::support::status::stat_fields("/proc/thread-self/stat")[41 - 3] as i32;
            assert_eq!(policy(), libc::SCHED_BATCH);
            assert_eq!(
                std::thread::spawn(policy).join().unwrap(),
                libc::SCHED_BATCH
            );
        })
        .join()
        .unwrap();
    }
}
