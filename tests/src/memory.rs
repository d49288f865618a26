//! What a receiver daemon may hold in memory, computed from its
//! configuration, and what a process really held (its peak RSS).
//!
//! Every whole-process test that bounds the receiver's memory uses
//! [`receiver_bound`], so that the bound is written down once:
//!
//! ```text
//!   limits.memory            blocks being rebuilt (the core's own bound)
//! + limits.write_queue       blocks waiting for the disk
//! + hand-over budget         written blocks the verifiers hold in memory
//! + buffers                  socket batch, block buffers on their way back,
//!                            each verifier's read buffer
//! + margin                   code, heap metadata, thread stacks, allocator
//! ```

use std::fmt;
use std::path::Path;

use anyhow::Context;
use weir_protocol::{Integrity, LinkEncoder};
use weir_receiver::config::Settings;

/// Code, libraries, thread stacks, the trust store, metrics, allocator
/// slack: what a receiver holds with nothing in flight, and then some.
pub const MARGIN: u64 = 32 << 20;

/// Datagram buffers of the listening socket.
const SOCKET_BUFFERS: u64 = (weir_receiver::socket::BATCH * weir_receiver::socket::BUF_LEN) as u64;
/// Block buffers that may be on their way back to the core at once.
const RECYCLED_BLOCKS: u64 = weir_receiver::daemon::recycle::BACKLOG as u64;
/// Each verifier's read buffer (and its alignment slack).
const VERIFIER_CHUNK: u64 =
    weir_receiver::daemon::streaming::CHUNK as u64 + weir_receiver::daemon::direct::ALIGN;
/// Data shards per block at the sender's default coding.
const SHARDS_PER_BLOCK: u64 = 256;

/// A memory bound and what it is made of.
#[derive(Debug, Clone)]
pub struct MemoryBound {
    /// Each part, named as in the module doc.
    pub parts: Vec<(&'static str, u64)>,
}

impl MemoryBound {
    /// The bound, bytes.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}

impl fmt::Display for MemoryBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB (", self.total() >> 20)?;
        for (i, (name, bytes)) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{name} {:.1}", *bytes as f64 / f64::from(1 << 20))?;
        }
        f.write_str(")")
    }
}

/// The most a receiver run with the configuration at `config` may hold.
pub fn receiver_bound(config: &Path) -> anyhow::Result<MemoryBound> {
    let s = Settings::load(config).with_context(|| format!("loading {}", config.display()))?;
    let shard = LinkEncoder::new(0, Integrity::Crc32c)
        .shard_size_for(s.mtu.max_datagram(s.listen.is_ipv6()))
        .context("no shard fits the MTU")?;
    let block = SHARDS_PER_BLOCK * u64::from(shard);
    let verifiers = s.transfers as u64;
    Ok(MemoryBound {
        parts: vec![
            ("limits.memory", s.memory as u64),
            ("limits.write_queue", s.write_queue as u64),
            (
                "hand-over budget",
                weir_receiver::daemon::streaming::HANDOFF_BYTES as u64,
            ),
            (
                "buffers",
                SOCKET_BUFFERS + RECYCLED_BLOCKS * block + verifiers * VERIFIER_CHUNK,
            ),
            ("margin", MARGIN),
        ],
    })
}

/// The peak resident set (`VmHWM`) of a running process, bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/PID/status")?;
    let kib: u64 = line
        .trim()
        .strip_suffix("kB")
        .context("VmHWM not in kB")?
        .trim()
        .parse()
        .context("VmHWM is not a number")?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_adds_up_its_parts_from_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("r.toml");
        std::fs::write(
            &config,
            "[link]\nlisten = \"127.0.0.1:0\"\n[spool]\nroot = \"s\"\ntrust = \"t\"\n\
             [limits]\nmemory = \"64MiB\"\nwrite_queue = \"8MiB\"\n",
        )
        .unwrap();
        let b = receiver_bound(&config).unwrap();
        let block = 256 * 1424;
        assert_eq!(
            b.total(),
            (64 << 20)
                + (8 << 20)
                + (32 << 20)
                + 32 * 65536
                + 64 * block
                + 4 * ((1 << 20) + 4096)
                + MARGIN
        );
        assert!(b.to_string().contains("limits.memory 64.0"), "{b}");
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        let rss = peak_rss(std::process::id()).unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }
}
