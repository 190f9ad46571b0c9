//! Decisions with no state of their own: whom to unchoke
//! ([`choke`]), which piece to ask for ([`picker`]), how many requests a
//! link needs ([`pacing`]). Pure functions of the facts passed in and a
//! seeded RNG; the protocol core ([`crate::machine`]) applies them.

pub(crate) mod choke;
pub(crate) mod pacing;
pub mod picker;
