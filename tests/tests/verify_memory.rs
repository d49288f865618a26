//! The whole process, measured by the kernel: `weir-receiver verify` and
//! `weir-sender bundle inspect` on a bundle with a 300 MB GNU long-name or
//! PAX entry, before and after the manifest, keep a peak RSS under 32 MiB.
//!
//! Regression: the tar crate read such an entry whole; a 300 MB long name
//! took `weir-receiver verify` to about 1 GB.
//!
//! The peak is the children's `ru_maxrss` (the kernel's high-water mark of
//! the resident set, what `VmHWM` shows while a process lives), read with
//! `getrusage(RUSAGE_CHILDREN)` after each command is waited for. This
//! file holds one test, so that no other child of this process counts.
//! The bundles are sparse files: the 300 MB are a hole, read as zeros.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::process::Command;

use nix::sys::resource::{UsageWho, getrusage};
use weir_tests::bundles::{FILES, Fixture, Raw};

const MB300: u64 = 300 << 20;
const LIMIT_KIB: i64 = 32 << 10;

#[test]
fn verify_and_inspect_stay_small_on_a_300_mb_long_name() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let trust = dir.path().join("trust.toml");
    std::fs::write(&trust, toml_of(&fx)).unwrap();
    let m = fx.manifest(FILES);
    let signed = Raw::new().signed(&fx, &m, &[&fx.key]).unfinished();
    let receiver = weir_tests::bin::path("weir-receiver");
    let sender = weir_tests::bin::path("weir-sender");
    let mut peaks = Vec::new();
    for flag in [b'L', b'x'] {
        for (where_, before) in [("before", &[][..]), ("after", &signed[..])] {
            let path = dir.path().join(format!("{}-{where_}.weir", flag as char));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(before).unwrap();
            f.write_all(&Raw::extension_header(flag, MB300)).unwrap();
            // The entry's content: a hole, then the end blocks.
            let len = before.len() as u64 + 512 + MB300 + 1024;
            f.set_len(len).unwrap();
            drop(f);
            for cmd in [
                Command::new(&receiver)
                    .arg("verify")
                    .arg("--trust")
                    .arg(&trust)
                    .arg(&path)
                    .output()
                    .unwrap(),
                Command::new(&sender)
                    .args(["bundle", "inspect"])
                    .arg(&path)
                    .output()
                    .unwrap(),
            ] {
                // Rejected, with a reason, and a short report.
                assert!(!cmd.status.success());
                let text = String::from_utf8_lossy(&cmd.stdout).into_owned()
                    + &String::from_utf8_lossy(&cmd.stderr);
                assert!(
                    text.contains("canonical") || text.contains("manifest"),
                    "{text}"
                );
                assert!(text.len() < 4096, "{} bytes of output", text.len());
            }
            let peak = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
            peaks.push(format!(
                "{} {where_} the manifest: {peak} KiB",
                flag as char
            ));
            assert!(
                peak < LIMIT_KIB,
                "peak RSS {peak} KiB with a 300 MB {} entry {where_} the manifest",
                flag as char
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
    eprintln!(
        "largest peak RSS of any command so far: {}",
        peaks.join("; ")
    );
}

/// A trust store file trusting the fixture's key.
fn toml_of(fx: &Fixture) -> String {
    format!(
        "[[key]]\nid = \"builder\"\nname = \"builder\"\npublic_key = \"{}\"\nroles = [\"build\"]\n",
        weir_tests::bundles::public_line(&fx.key)
    )
}
