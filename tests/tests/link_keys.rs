//! Link keys, end to end: `weir-sender link-key`, the 0600 check in both
//! daemons, a transfer with frames authenticated by the key, and the
//! frames of a sender with the wrong key, or with none, dropped and
//! counted by a receiver that has one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weir_tests::daemons::wait_for;
use weir_tests::rig::{Setup, metric};

/// `weir-sender link-key --out PATH`; it must succeed.
fn link_key(path: &Path) {
    let o = Command::new(weir_tests::bin::path("weir-sender"))
        .args(["link-key", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A receiver of `s` whose frames must carry a MAC made with `key`.
fn keyed_receiver(s: &mut Setup, key: &Path) {
    let dir = s.dir.path().to_owned();
    s.reconfigure(&dir, &format!("key_file = \"{}\"", key.display()), "");
}

/// `weir-sender send` of `bundle` with `key` (or none), at 200 Mbit/s,
/// one pass.
fn send_with(s: &Setup, key: Option<&Path>, bundle: &Path) -> std::process::Output {
    let mut cmd = Command::new(weir_tests::bin::path("weir-sender"));
    cmd.args(["send", "--config"])
        .arg(s.sender_config("200Mbit", 1))
        .arg(bundle);
    if let Some(k) = key {
        cmd.env("WEIR_SENDER_LINK__KEY_FILE", k);
    }
    cmd.output().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn link_key_writes_64_hex_digits_at_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("link.key");
    link_key(&path);
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let hex = text.trim();
    assert_eq!(hex.len(), 64, "{text:?}");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{text:?}");
    // A second key is another key.
    let other = dir.path().join("other.key");
    link_key(&other);
    assert_ne!(std::fs::read_to_string(&other).unwrap().trim(), hex);
    // An existing file is never replaced.
    let o = Command::new(weir_tests::bin::path("weir-sender"))
        .args(["link-key", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn both_daemons_refuse_a_key_file_others_can_read() {
    let mut s = Setup::new("");
    let key = s.dir.path().join("link.key");
    link_key(&key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    keyed_receiver(&mut s, &key);
    let o = Command::new(weir_tests::bin::path("weir-receiver"))
        .args(["run", "--check-config", "--config"])
        .arg(&s.rx.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // 2: the receiver could not run at all.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mode 0640") && err.contains("must be 0600"),
        "{err}"
    );
    assert!(err.contains(&key.display().to_string()), "{err}");
    let (bundle, _) = s.bundle("app", 16, 1);
    let o = send_with(&s, Some(&key), &bundle);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("mode 0640") && err.contains("must be 0600"),
        "{err}"
    );
}

/// A receiver with a key of its own, and a 2 MiB bundle sent to it by a
/// sender using the key file `sender_key` picks (given the receiver's), or
/// none.
fn keyed_transfer(sender_key: impl FnOnce(&Path) -> Option<PathBuf>) -> (Setup, Vec<u8>) {
    let mut s = Setup::new("");
    let key = s.dir.path().join("link.key");
    link_key(&key);
    keyed_receiver(&mut s, &key);
    s.rx.start().unwrap();
    assert!(
        s.rx.log_text().contains("authenticated=true"),
        "{}",
        s.rx.log_text()
    );
    let (bundle, bytes) = s.bundle("app", 2048, 2);
    let sender_key = sender_key(&key);
    let o = send_with(&s, sender_key.as_deref(), &bundle);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (s, bytes)
}

#[test]
fn a_transfer_with_the_shared_key_arrives() {
    let (s, bytes) = keyed_transfer(|k| Some(k.to_owned()));
    assert!(s.wait_staged("app_1.weir", 30) == bytes, "content differs");
    std::thread::sleep(Duration::from_millis(600));
    let text = s.rx.scrape().unwrap();
    assert_eq!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"unauthenticated\"}"
        ),
        0.0
    );
}

/// Every frame of the sender was dropped as unauthenticated, and nothing
/// reached any spool directory.
fn all_dropped(s: &Setup) {
    let line = "weir_receiver_frames_dropped_total{reason=\"unauthenticated\"}";
    let counts = || {
        let text = s.rx.scrape().unwrap();
        (
            metric(&text, "weir_receiver_frames_received_total"),
            metric(&text, line),
        )
    };
    // Until the receiver has taken in all it will (two scrapes agree):
    // every datagram that arrived, heartbeats included, was dropped.
    let mut last = counts();
    wait_for("the counts to settle", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = counts();
        let settled = now == last;
        last = now;
        settled
    })
    .unwrap();
    let (received, dropped) = last;
    // One pass of a 2 MiB bundle is about 1,900 frames.
    assert!(dropped > 100.0, "{dropped} dropped");
    assert_eq!(received, dropped);
    assert!(s.rx.files("staging").is_empty());
    assert!(s.rx.files("quarantine").is_empty());
    assert_eq!(s.rx.files("incoming"), Vec::<String>::new());
}

#[test]
fn a_sender_with_the_wrong_key_has_every_frame_dropped_and_counted() {
    let (s, _) = keyed_transfer(|k| {
        let wrong = k.with_file_name("wrong.key");
        link_key(&wrong);
        Some(wrong)
    });
    all_dropped(&s);
}

#[test]
fn a_sender_without_a_key_has_every_frame_dropped_and_counted() {
    let (s, _) = keyed_transfer(|_| None);
    all_dropped(&s);
}
