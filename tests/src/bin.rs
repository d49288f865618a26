//! Finding the real binaries for whole-process tests.
//!
//! `cargo test --workspace` builds `weir-sender` and `weir-receiver` (their
//! crates have integration tests) next to this crate's test executables.

use std::path::PathBuf;

/// Path of a workspace binary in the same target directory as this test.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --bins` (or `cargo test --workspace`, which builds it)",
        p.display()
    );
    p
}
