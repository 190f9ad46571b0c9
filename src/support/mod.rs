//! What every layer leans on: the process's diagnostics sink and signals,
//! piece buffers and their pool, a peer's live counters and the status
//! lines made of them. Knows nothing of the protocol; imports no other layer.

pub(crate) mod files;
pub mod piecebuf;
pub(crate) mod process;
pub(crate) mod status;
