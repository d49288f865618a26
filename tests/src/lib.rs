//! Test support for weir: the seeded lossy-link simulator and in-memory
//! drivers for the protocol core. The tests themselves live in `tests/`.

// Test support: a failed expectation here is a failed test, so panics and
// direct indexing are the right tools.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod bin;
pub mod bundles;
pub mod daemons;
pub mod link;
pub mod memory;
pub mod netns;
pub mod rig;
pub mod sim;
pub mod udp;
