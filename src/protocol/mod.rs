//! The contract other implementations rely on (SPEC.md): piece geometry,
//! bitfields, the handshake and the eight messages (plus p2pft's own,
//! negotiated), the authenticated mode's exchange, and the two config
//! files. Pure: byte slices and text in, values out; no sockets, no clock.

pub mod auth;
pub mod bitfield;
pub mod config;
pub mod layout;
pub mod wire;
