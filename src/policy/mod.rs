//! Decisions with no state of their own: whom to unchoke
//! ([`choke`]), which piece to ask for ([`picker`]), how many requests a
//! link needs ([`pacing`]). Pure functions of the facts passed in and a
//! seeded RNG; the protocol core ([`crate::machine`]) applies them. The one
//! exception is [`rarity`], the piece counts kept sorted for rarest first,
//! which the core updates as neighbours announce pieces and leave.

pub(crate) mod choke;
pub(crate) mod pacing;
pub mod picker;
pub mod rarity;
