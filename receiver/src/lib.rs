//! weir-receiver: the low-side tools and daemon.
//!
//! - [`trust_file`]: loading and atomically saving the trust store.
//! - [`extract`]: writing a verified bundle's files under a new directory.
//! - [`cli`]: the command line (`verify`, `trust add|revoke|list`).

#![forbid(unsafe_code)]

pub mod cli;
pub mod extract;
pub mod trust_file;
