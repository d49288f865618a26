//! What `weir-receiver status` shows: a snapshot the daemon writes to
//! `status.json` in the spool root every second, and its rendering.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The daemon's snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was written, seconds since the Unix epoch.
    pub written_unix: u64,
    /// The daemon's process id.
    pub pid: u32,
    /// The listening address.
    pub listen: String,
    /// The metrics endpoint, if enabled.
    #[serde(default)]
    pub metrics: Option<String>,
    /// `up`, `down` or `waiting`.
    pub link: String,
    /// Seconds since the last heartbeat, if any came.
    pub heartbeat_age_seconds: Option<f64>,
    /// The sender's epoch (changes when it restarts).
    pub sender_epoch: Option<String>,
    /// Bundles waiting in the sender's outbox, from its last heartbeat.
    pub sender_queue: Option<u32>,
    /// Sender restarts seen.
    pub sender_restarts: u64,
    /// Fraction of frames lost over the last minute.
    pub loss_last_minute: f64,
    /// Datagrams received.
    pub frames: u64,
    /// Receive-buffer overflows the kernel counted (a GRO batch counts once).
    pub kernel_drops: u64,
    /// Transfers in flight.
    pub transfers: Vec<TransferProgress>,
    /// The most recent outcomes, newest first.
    pub recent: Vec<serde_json::Value>,
}

/// One transfer in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferProgress {
    /// Transfer id.
    pub transfer: String,
    /// Name the sender gave.
    pub name: String,
    /// Size.
    pub size: u64,
    /// Blocks rebuilt.
    pub blocks_done: u32,
    /// Blocks in all.
    pub blocks: u32,
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A snapshot older than this means the daemon is not running.
const STALE_AFTER: u64 = 10;

/// Reads the snapshot in `spool_root`.
pub fn read(spool_root: &Path) -> anyhow::Result<Snapshot> {
    let path = spool_root.join("status.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (has weir-receiver run started with this spool?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn bar(done: u32, total: u32, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width) / total as usize
    };
    format!(
        "[{}{}]",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width))
    )
}

/// The snapshot as text for a terminal.
pub fn render(s: &Snapshot, now_unix: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let age = now_unix.saturating_sub(s.written_unix);
    if age > STALE_AFTER {
        let _ = writeln!(
            out,
            "weir-receiver is NOT running (last status {age} s ago, pid {})",
            s.pid
        );
    } else {
        let _ = writeln!(out, "weir-receiver running (pid {}) on {}", s.pid, s.listen);
    }
    let hb = match s.heartbeat_age_seconds {
        Some(a) => format!("last heartbeat {a:.1} s ago"),
        None => "no heartbeat yet".into(),
    };
    let _ = writeln!(
        out,
        "link: {} ({hb}), loss {:.2}% over the last minute, {} sender restart(s), {} kernel drop(s)",
        s.link,
        s.loss_last_minute * 100.0,
        s.sender_restarts,
        s.kernel_drops
    );
    if let Some(q) = s.sender_queue {
        let _ = writeln!(out, "sender queue: {q} bundle(s) waiting");
    }
    if s.transfers.is_empty() {
        let _ = writeln!(out, "transfers in flight: none");
    } else {
        let _ = writeln!(out, "transfers in flight:");
        for t in &s.transfers {
            let pct = if t.blocks == 0 {
                100.0
            } else {
                f64::from(t.blocks_done) * 100.0 / f64::from(t.blocks)
            };
            let _ = writeln!(
                out,
                "  {} {} {:5.1}% {}/{} blocks  {} ({} bytes)",
                t.transfer,
                bar(t.blocks_done, t.blocks, 30),
                pct,
                t.blocks_done,
                t.blocks,
                t.name,
                t.size
            );
        }
    }
    if s.recent.is_empty() {
        let _ = writeln!(out, "recent outcomes: none");
    } else {
        let _ = writeln!(out, "recent outcomes:");
        for o in &s.recent {
            let get = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            let detail = match get("verdict").as_str() {
                "published" | "duplicate" => get("file"),
                "quarantined" => o
                    .get("reasons")
                    .and_then(|r| r.as_array())
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                "expired" => format!(
                    "{} block(s) missing",
                    o.get("blocks_missing")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0)
                ),
                _ => get("error"),
            };
            let _ = writeln!(
                out,
                "  {}  {:<11} {}  {}",
                get("at"),
                get("verdict"),
                get("name"),
                detail
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_progress_and_staleness() {
        let s = Snapshot {
            written_unix: 1000,
            pid: 42,
            listen: "127.0.0.1:7700".into(),
            link: "up".into(),
            heartbeat_age_seconds: Some(0.4),
            transfers: vec![TransferProgress {
                transfer: "00000000000000ab".into(),
                name: "app.weir".into(),
                size: 1 << 20,
                blocks_done: 5,
                blocks: 10,
            }],
            recent: vec![serde_json::json!({
                "verdict": "quarantined", "name": "bad.weir", "at": "2026-11-27T00:00:00Z",
                "reasons": ["signature_bad"]
            })],
            ..Snapshot::default()
        };
        let text = render(&s, 1001);
        assert!(text.contains("running (pid 42)"), "{text}");
        assert!(
            text.contains("[###############---------------]  50.0%"),
            "{text}"
        );
        assert!(text.contains("signature_bad"), "{text}");
        assert!(render(&s, 1100).contains("NOT running"));
    }
}
