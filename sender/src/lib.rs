//! weir-sender: the high-side tools and daemon.
//!
//! - [`keys`]: signing keys (`keygen`, loading with permission checks).
//! - [`bundle`]: `bundle create` and `bundle sign`.
//! - [`config`]: the configuration file and its checked settings.
//! - [`outbox`]: the spool directories, journal and in-flight state.
//! - [`source`]: reading a bundle's blocks.
//! - [`pacer`]: the token bucket.
//! - [`udp`]: the sending socket (batches, GSO).
//! - [`engine`]: the paced send loop with heartbeats.
//! - [`daemon`]: `run` and `send`.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod keys;
pub mod outbox;
pub mod pacer;
pub mod source;
pub mod udp;
