//! p2pft: a peer-to-peer file distribution engine for the P2PFILESHARINGPROJ
//! protocol (see `shared/SPEC.md`), shaped as `shared/DESIGN.md` describes:
//! pure codec and policies ([`wire`], [`choke`], [`picker`]), one engine
//! thread owning protocol state ([`engine`]), threads at the socket edges
//! ([`net`]), positioned file I/O ([`store`]), and the launcher ([`swarm`]).
#![deny(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod bitfield;
pub mod checked;
pub mod choke;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod engine;
pub mod events;
pub mod layout;
pub mod meta;
pub mod net;
pub mod pacing;
pub mod peer;
pub mod picker;
pub mod piecebuf;
pub mod process;
pub mod progress;
pub mod rate_limit;
pub mod remote;
pub mod report;
pub mod sched;
pub mod sha1pair;
pub mod speclog;
pub mod ssh;
pub mod status;
pub mod store;
pub mod swarm;
pub mod wire;
pub mod workers;
