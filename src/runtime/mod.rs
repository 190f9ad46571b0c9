//! A running peer: the engine that drives the protocol core
//! ([`crate::machine`]) with real time, its event channel and timers; the
//! sockets and their reader and writer threads; the store and the disk
//! threads; the spec log; rate caps; send buffers; the process's start-up
//! ([`peer`]).
//! The concurrency contract is in [`engine`]'s header.

pub(crate) mod coalesce;
pub(crate) mod connect_error;
pub(crate) mod engine;
pub(crate) mod events;
pub mod mailbox;
pub mod net;
pub(crate) mod peer;
pub(crate) mod rate_limit;
pub(crate) mod sched;
pub(crate) mod send_buffer;
pub(crate) mod speclog;
pub mod store;
pub(crate) mod workers;
