//! weir-sender: the high-side tools and daemon.
//!
//! - [`keys`]: signing keys (`keygen`, loading with permission checks).
//! - [`bundle`]: `bundle create` and `bundle sign`.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod cli;
pub mod keys;
