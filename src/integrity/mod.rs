//! That every byte is right and every crash survivable: SHA-1 (two pieces at
//! once where the CPU allows), the metadata document, the check record that
//! spares a seed re-hashing, and a leecher's progress record. Sits on the
//! protocol layer; never touches sockets or protocol state.

pub mod checked;
pub mod meta;
pub mod progress;
pub mod sha1pair;
