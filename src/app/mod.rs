//! The application over the library: the command line ([`cli`]), the local
//! launcher ([`swarm`], over ssh [`remote`] and [`ssh`]), the benchmark ([`bench`](mod@bench)) and the picture of a
//! swarm ([`report`]). The binaries call [`cli`] and nothing else; nothing
//! below this layer imports it.

pub(crate) mod bench;
pub(crate) mod bench_hosts;
pub mod cli;
pub(crate) mod exit;
pub(crate) mod netns;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod sim;
pub(crate) mod ssh;
pub(crate) mod swarm;
