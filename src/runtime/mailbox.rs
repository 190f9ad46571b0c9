//! One writer's queue: the engine sends, one writer thread receives. A
//! receiver that finds it empty sleeps at once on a condition variable,
//! where a crossbeam channel first spins and yields the CPU a few times:
//! a peer has a writer for every neighbour, and with hundreds of them on two
//! cores those spins and yields take CPU time the busy threads need.
//!
//! Owns the queue and the wake-ups only; never looks at what it carries.
//! The sender wakes the receiver only when it sleeps, so a busy writer costs
//! the engine no system call a message.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct State<T> {
    queue: VecDeque<T>,
    /// The sender is gone: what is queued is the last.
    closed: bool,
    /// The receiver is gone: sends fail.
    abandoned: bool,
    /// The receiver sleeps, waiting for a message or the close.
    sleeping: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

/// The engine's end. Dropping it closes the queue: the receiver takes what
/// is left, then hears [`Closed`].
pub struct MailSender<T> {
    shared: Arc<Shared<T>>,
}

/// The writer's end.
pub struct MailReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// The queue is empty and its sender gone.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// Why [`MailReceiver::try_recv`] or [`MailReceiver::recv_timeout`] gave nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Empty {
    /// Nothing yet (or the time ran out).
    Now,
    /// Nothing ever again.
    Closed,
}

/// A queue without a bound (the engine bounds it by its length).
pub fn mailbox<T>() -> (MailSender<T>, MailReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closed: false,
            abandoned: false,
            sleeping: false,
        }),
        wake: Condvar::new(),
    });
    (
        MailSender {
            shared: Arc::clone(&shared),
        },
        MailReceiver { shared },
    )
}

/// Why [`MailSender::send_within`] gave its value back.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The queue holds its limit already.
    Full(T),
    /// The receiver is gone.
    Gone(T),
}

impl<T> State<T> {
    /// Whether the receiver must be woken (it sleeps); it is then no longer
    /// counted as sleeping, so one wake-up is sent, not one a message.
    fn take_sleeper(&mut self) -> bool {
        std::mem::take(&mut self.sleeping)
    }

    /// What a receiver that finds the queue as it is gets, if not to wait.
    fn take(&mut self) -> Result<T, Empty> {
        match self.queue.pop_front() {
            Some(value) => Ok(value),
            None if self.closed => Err(Empty::Closed),
            None => Err(Empty::Now),
        }
    }
}

impl<T> MailSender<T> {
    /// Queues `value`; gives it back when the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        self.send_within(value, usize::MAX)
            .map_err(|refused| match refused {
                Refused::Full(value) | Refused::Gone(value) => value,
            })
    }

    /// Queues `value` unless `limit` messages wait already or the receiver
    /// is gone: the length is judged under the same lock as the send.
    pub fn send_within(&self, value: T, limit: usize) -> Result<(), Refused<T>> {
        let mut state = self.shared.state.lock();
        if state.abandoned {
            return Err(Refused::Gone(value));
        }
        if state.queue.len() >= limit {
            return Err(Refused::Full(value));
        }
        state.queue.push_back(value);
        if state.take_sleeper() {
            drop(state);
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Messages queued and not yet taken.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for MailSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        if state.take_sleeper() {
            drop(state);
            self.shared.wake.notify_one();
        }
    }
}

impl<T> MailReceiver<T> {
    pub fn try_recv(&self) -> Result<T, Empty> {
        self.shared.state.lock().take()
    }

    /// The next message, sleeping until there is one.
    pub fn recv(&self) -> Result<T, Closed> {
        self.recv_until(None).map_err(|_| Closed)
    }

    /// The next message, sleeping at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, Empty> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    /// The next message, sleeping until there is one, the queue closes, or
    /// `deadline` passes (`Empty::Now`).
    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        let mut state = self.shared.state.lock();
        loop {
            match state.take() {
                Err(Empty::Now) => {}
                done => return done,
            }
            state.sleeping = true;
            let timed_out = match deadline {
                None => {
                    self.shared.wake.wait(&mut state);
                    false
                }
                Some(deadline) => self
                    .shared
                    .wake
                    .wait_until(&mut state, deadline)
                    .timed_out(),
            };
            if timed_out {
                state.sleeping = false;
                return state.take();
            }
        }
    }
}

impl<T> Drop for MailReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.abandoned = true;
        // What is queued is never sent: drop it now, not with the sender.
        state.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn messages_come_in_order_and_the_close_after_the_last() {
        let (tx, rx) = mailbox();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(tx.len(), 2);
        assert!(!tx.is_empty());
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.recv(), Err(Closed));
        assert_eq!(rx.try_recv(), Err(Empty::Closed));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Err(Empty::Closed));
    }

    #[test]
    fn a_sleeping_receiver_wakes_for_a_message_and_for_the_close() {
        let (tx, rx) = mailbox::<u32>();
        let receiver = thread::spawn(move || {
            let first = rx.recv();
            let second = rx.recv_timeout(Duration::from_secs(30));
            let third = rx.recv();
            (first, second, third)
        });
        // Give the receiver time to fall asleep each time (the test passes
        // either way; sleeping is the path it is meant to take).
        thread::sleep(Duration::from_millis(50));
        tx.send(7).unwrap();
        thread::sleep(Duration::from_millis(50));
        tx.send(8).unwrap();
        thread::sleep(Duration::from_millis(50));
        drop(tx);
        let (first, second, third) = receiver.join().unwrap();
        assert_eq!(first, Ok(7));
        assert_eq!(second, Ok(8));
        assert_eq!(third, Err(Closed));
    }

    #[test]
    fn a_timeout_gives_nothing_and_leaves_the_queue_usable() {
        let (tx, rx) = mailbox::<u32>();
        let started = Instant::now();
        assert_eq!(rx.recv_timeout(Duration::from_millis(20)), Err(Empty::Now));
        assert!(started.elapsed() >= Duration::from_millis(20));
        tx.send(3).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_millis(20)), Ok(3));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone() {
        let (tx, rx) = mailbox();
        tx.send(1).unwrap();
        drop(rx);
        assert_eq!(tx.send(2), Err(2));
        assert!(tx.is_empty());
    }

    #[test]
    fn a_send_past_the_limit_is_refused_and_queues_nothing() {
        let (tx, rx) = mailbox();
        tx.send_within(1, 2).unwrap();
        tx.send_within(2, 2).unwrap();
        assert_eq!(tx.send_within(3, 2), Err(Refused::Full(3)));
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.try_recv(), Ok(1));
        tx.send_within(3, 2).unwrap();
        drop(rx);
        assert_eq!(tx.send_within(4, 2), Err(Refused::Gone(4)));
    }

    #[test]
    fn many_messages_from_another_thread_all_arrive() {
        let (tx, rx) = mailbox();
        let sender = thread::spawn(move || {
            for i in 0..100_000u32 {
                tx.send(i).unwrap();
                if i % 1000 == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while let Ok(i) = rx.recv() {
            assert_eq!(i, next);
            next += 1;
        }
        sender.join().unwrap();
        assert_eq!(next, 100_000);
    }
}
