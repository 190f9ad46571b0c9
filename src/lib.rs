//! p2pft: a peer-to-peer file distribution engine for the P2PFILESHARINGPROJ
//! protocol (see `shared/SPEC.md`), in layers that only ever import
//! downwards (docs/ARCHITECTURE.md draws them):
//!
//! - [`app`]: the command line, the launcher, the benchmark, the report;
//! - [`runtime`]: threads, sockets, the disk, and the engine that drives
//!   the protocol core with them;
//! - [`machine`]: the protocol core, every decision and no I/O;
//! - [`integrity`]: hashing, metadata, the check and progress records;
//! - [`policy`]: choking, piece picking, request pacing, as pure functions;
//! - [`protocol`]: the wire format, the handshake's authentication, piece
//!   geometry, bitfields, the two config files;
//! - [`support`]: diagnostics, piece buffers, status counters and lines.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
// The docs are read with private items (`.ci/run`): internals link to each other.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod integrity;
pub mod machine;
pub mod policy;
pub mod protocol;
pub mod runtime;
pub mod support;
