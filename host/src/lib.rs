//! weir-host: what both daemons do to the machine, written once.
//!
//! - [`atomic`]: files that appear whole or not at all: create-new, fsync,
//!   rename or hard link, fsync the directory.

#![forbid(unsafe_code)]

pub mod atomic;
