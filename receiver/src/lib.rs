//! weir-receiver: the low-side daemon and tools.
//!
//! - [`daemon`]: `weir-receiver run`: receive, rebuild, verify, publish.
//! - [`config`]: the daemon's settings (TOML + `WEIR_RECEIVER_*`).
//! - [`spool`]: `incoming/`, `staging/`, `quarantine/`, `failed/` and the
//!   disk discipline between them.
//! - [`socket`]: batched UDP receive and the kernel's drop counter.
//! - [`status`]: what `weir-receiver status` shows.
//! - [`trust_file`]: loading and atomically saving the trust store.
//! - [`extract`]: writing a verified bundle's files under a new directory.
//! - [`cli`]: the command line (`run`, `status`, `verify`, `trust ...`).

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod extract;
pub mod socket;
pub mod spool;
pub mod status;
pub mod trust_file;
