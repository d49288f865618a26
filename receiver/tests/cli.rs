//! The real `weir-receiver` binary: exit codes and output of `verify` and
//! `trust`, as operators and scripts see them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output};

fn receiver(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir-receiver"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A minisign public key (valid encoding; its secret key is not needed here).
const PUB: &str = "untrusted comment: minisign public key 981A1601613B1EB4\nRWS0HjthARYamB4LGXmYWFsCpuYOMTEq/NfB9v+KazyH/MSbaPP4Af/P\n";

#[test]
fn trust_add_list_revoke_and_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pub"), PUB).unwrap();
    let add = [
        "trust",
        "add",
        "--trust",
        "trust.toml",
        "--id",
        "ci",
        "--name",
        "CI",
        "--role",
        "build",
        "k.pub",
    ];
    let o = receiver(&add, dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("981A1601613B1EB4"));
    let o = receiver(&add, dir.path());
    assert_eq!(
        o.status.code(),
        Some(2),
        "duplicate id refused: {}",
        text(&o)
    );
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = receiver(&["trust", "list", "--trust", "trust.toml"], dir.path());
    assert!(
        text(&o).contains("ci") && text(&o).contains("usable"),
        "{}",
        text(&o)
    );
    let o = receiver(
        &["trust", "revoke", "--trust", "trust.toml", "ci"],
        dir.path(),
    );
    assert!(o.status.success());
    let o = receiver(
        &["trust", "list", "--trust", "trust.toml", "--json"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["status"], "revoked");
    assert_eq!(v[0]["key_id"], "981A1601613B1EB4");
}

#[test]
fn verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pub"), PUB).unwrap();
    let o = receiver(
        &[
            "trust", "add", "--trust", "t.toml", "--id", "ci", "--name", "CI", "--role", "build",
            "k.pub",
        ],
        dir.path(),
    );
    assert!(o.status.success());
    // Not a bundle at all: ran, rejected, exit 1, with the reason.
    std::fs::write(dir.path().join("junk.weir"), b"junk").unwrap();
    let o = receiver(&["verify", "--trust", "t.toml", "junk.weir"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("rejected"), "{}", text(&o));
    let o = receiver(
        &["verify", "--trust", "t.toml", "junk.weir", "--json"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "rejected");
    // A rejected file still has its transfer digest, to compare with a
    // receipt or the sender's journal.
    let digest = weir_protocol::digest::digest(b"junk").to_hex().to_string();
    assert_eq!(v["digest"], digest.as_str());
    let o = receiver(&["verify", "--trust", "t.toml", "junk.weir"], dir.path());
    assert!(
        text(&o).contains(&format!("digest {digest}")),
        "{}",
        text(&o)
    );
    // Could not run: missing trust store or bundle, exit 2.
    let o = receiver(
        &["verify", "--trust", "missing.toml", "junk.weir"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing.toml"));
}

const CONFIG: &str = r#"
[link]
listen = "127.0.0.1:0"

[spool]
root = "spool"
trust = "trust.toml"
"#;

#[test]
fn check_config_prints_effective_values_with_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("receiver.toml"), CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir-receiver"))
        .args(["run", "--config", "receiver.toml", "--check-config"])
        .env("WEIR_RECEIVER_LIMITS__TRANSFERS", "2")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("valid"), "{t}");
    assert!(t.contains("transfers = 2"), "{t}");
    assert!(t.contains("memory = \"auto\""), "{t}");
    // A bad value: exit 2, and the message names the key.
    let out = Command::new(env!("CARGO_BIN_EXE_weir-receiver"))
        .args(["run", "--config", "receiver.toml", "--check-config"])
        .env("WEIR_RECEIVER_LIMITS__TRANSFER_EXPIRY", "whenever")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("limits.transfer_expiry"),
        "{}",
        text(&out)
    );
}

#[test]
fn status_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("receiver.toml"), CONFIG).unwrap();
    let out = receiver(&["status", "--config", "receiver.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("status.json"), "{}", text(&out));
}
