//! Bundle tools of the sender: create, sign, and the atomic output they share.

pub mod create;
pub mod output;
pub mod sign;
