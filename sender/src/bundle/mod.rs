//! Bundle tools of the sender: create and sign (their output appears whole,
//! through `weir_host::atomic`).

pub mod create;
pub mod sign;
