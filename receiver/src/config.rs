//! Receiver configuration: a TOML file, overridden by `WEIR_RECEIVER_*`
//! environment variables, turned into typed [`Settings`] once at start.
//!
//! Environment overrides name the section and key with `__` between them:
//! `WEIR_RECEIVER_LINK__LISTEN=0.0.0.0:7700`,
//! `WEIR_RECEIVER_LIMITS__MEMORY=256MiB`. Unknown keys are refused, and
//! every error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use weir_protocol::{ByteSize, Mtu, Rate};

/// The file as written, before checking.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[link]`
    pub link: RawLink,
    /// `[spool]`
    pub spool: RawSpool,
    /// `[limits]`
    #[serde(default)]
    pub limits: RawLimits,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[log]`
    #[serde(default)]
    pub log: RawLog,
}

/// `[link]`: where frames arrive.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Address to listen on.
    pub listen: String,
    /// Link MTU (sizes the receive buffers).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// The rate the sender is configured for; sizes the socket buffer
    /// check.
    #[serde(default = "default_rate")]
    pub rate: String,
    /// File holding the 32-byte link key in hex; frames must then carry a
    /// MAC made with it.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Requested socket receive buffer.
    #[serde(default = "default_rcvbuf")]
    pub receive_buffer: String,
}

/// `[spool]`: directories and the trust store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Holds `incoming/`, `staging/`, `quarantine/`, `failed/`.
    pub root: PathBuf,
    /// Trust store bundles are verified against.
    pub trust: PathBuf,
    /// Write whole blocks with direct I/O (bypassing the page cache) where
    /// the filesystem supports it.
    #[serde(default = "default_true")]
    pub direct_io: bool,
}

fn default_true() -> bool {
    true
}

/// `[limits]`: what one receiver may hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Transfers received at once.
    #[serde(default = "default_transfers")]
    pub transfers: usize,
    /// Memory for blocks being rebuilt, across all transfers; `auto`
    /// sizes it for the MTU and the number of transfers.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Blocks waiting to be written to disk; beyond it, reception waits.
    #[serde(default = "default_write_queue")]
    pub write_queue: String,
    /// Disk space `incoming/` may reserve for partial transfers.
    #[serde(default = "default_quota")]
    pub incoming_quota: String,
    /// Largest bundle accepted.
    #[serde(default = "default_max_bundle")]
    pub max_bundle: String,
    /// Bytes of rejected bundles `quarantine/` keeps; past it, only their
    /// reasons are kept.
    #[serde(default = "default_quarantine_quota")]
    pub quarantine_quota: String,
    /// A transfer that receives nothing for this long expires and is
    /// reported in `failed/`.
    #[serde(default = "default_expiry")]
    pub transfer_expiry: String,
    /// How often the state of partial transfers is saved.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            transfers: default_transfers(),
            memory: default_memory(),
            write_queue: default_write_queue(),
            incoming_quota: default_quota(),
            max_bundle: default_max_bundle(),
            quarantine_quota: default_quarantine_quota(),
            transfer_expiry: default_expiry(),
            checkpoint_interval: default_checkpoint(),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address of the Prometheus endpoint (`/metrics`); none when unset.
    #[serde(default)]
    pub listen: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `human` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter such as `info` or `weir_receiver=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_mtu() -> u32 {
    1500
}
fn default_rate() -> String {
    "1Gbit".into()
}
fn default_rcvbuf() -> String {
    "64MiB".into()
}
fn default_transfers() -> usize {
    4
}
fn default_memory() -> String {
    "auto".into()
}

/// Memory one transfer needs to rebuild two interleave groups at once with
/// the sender's default coding (K = 256) and the deepest interleave it
/// picks by itself (D = 16; at jumbo MTU it picks fewer blocks, and this
/// leaves room for a sender configured with 16): less, and every block
/// beyond it is parked on disk and read back.
fn memory_per_transfer(mtu: Mtu, ipv6: bool) -> u64 {
    let shard = weir_protocol::LinkEncoder::new(0, weir_protocol::Integrity::Crc32c)
        .shard_size_for(mtu.max_datagram(ipv6))
        .unwrap_or(0);
    2 * 16 * 256 * u64::from(shard)
}

/// Room for shards whose descriptor has not arrived (the core's default).
const LIMBO: u64 = 2 << 20;
fn default_write_queue() -> String {
    "32MiB".into()
}
fn default_quota() -> String {
    "64GiB".into()
}
fn default_max_bundle() -> String {
    "16GiB".into()
}
fn default_quarantine_quota() -> String {
    "16GiB".into()
}
fn default_expiry() -> String {
    "10m".into()
}
fn default_checkpoint() -> String {
    "5s".into()
}
fn default_log_format() -> String {
    "human".into()
}
fn default_log_level() -> String {
    "info".into()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Checked settings: every value here is valid.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listening address.
    pub listen: SocketAddr,
    /// Link MTU.
    pub mtu: Mtu,
    /// The sender's rate, for the buffer check.
    pub rate: Rate,
    /// The link key, if configured.
    pub link_key: Option<[u8; 32]>,
    /// Socket receive buffer to ask for.
    pub receive_buffer: usize,
    /// Spool root.
    pub spool: PathBuf,
    /// Trust store path.
    pub trust: PathBuf,
    /// Direct I/O for whole blocks.
    pub direct_io: bool,
    /// Transfers at once.
    pub transfers: usize,
    /// Reassembly memory.
    pub memory: usize,
    /// Write queue bound, bytes.
    pub write_queue: usize,
    /// `incoming/` reservation bound, bytes.
    pub incoming_quota: u64,
    /// Largest bundle.
    pub max_bundle: u64,
    /// Bytes of bundles kept in `quarantine/`.
    pub quarantine_quota: u64,
    /// Idle time before a transfer expires.
    pub transfer_expiry: Duration,
    /// State save interval.
    pub checkpoint: Duration,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The raw values, for `--check-config`.
    pub raw: RawConfig,
}

fn duration(key: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| anyhow!("{key}: {s:?} is not a duration such as 10m or 5s: {e}"))
}

fn size(key: &str, s: &str) -> anyhow::Result<u64> {
    s.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| anyhow!("{key}: {e}"))
}

/// Reads a link key file: 64 hex digits, mode 0600 or stricter.
pub fn read_link_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("link key {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "link key {} has mode {mode:04o}; it must be 0600",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("link key {}", path.display()))?;
    weir_protocol::LinkKey::secret_from_hex(&text)
        .ok_or_else(|| anyhow!("link key {} must hold 64 hex digits", path.display()))
}

impl Settings {
    /// Loads the file at `path` with environment overrides and checks it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let cfg = config::Config::builder()
            .add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            .add_source(
                config::Environment::with_prefix("WEIR_RECEIVER")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .with_context(|| format!("reading {}", path.display()))?;
        let raw: RawConfig = cfg
            .try_deserialize()
            .with_context(|| format!("in {}", path.display()))?;
        Self::from_raw(raw)
    }

    /// Checks raw values; the error names the key at fault.
    pub fn from_raw(raw: RawConfig) -> anyhow::Result<Self> {
        let l = &raw.link;
        let listen: SocketAddr = l
            .listen
            .parse()
            .map_err(|e| anyhow!("link.listen: {:?}: {e}", l.listen))?;
        let mtu = Mtu::new(l.mtu).map_err(|e| anyhow!("link.mtu: {e}"))?;
        let rate: Rate = l.rate.parse().map_err(|e| anyhow!("link.rate: {e}"))?;
        let link_key = l
            .key_file
            .as_deref()
            .map(read_link_key)
            .transpose()
            .context("link.key_file")?;
        let receive_buffer = size("link.receive_buffer", &l.receive_buffer)?;
        let m = &raw.limits;
        if !(1..=64).contains(&m.transfers) {
            anyhow::bail!("limits.transfers: {} is not in 1..=64", m.transfers);
        }
        let per_transfer = memory_per_transfer(mtu, listen.is_ipv6());
        let needed = per_transfer * m.transfers as u64 + LIMBO;
        let memory = if m.memory.trim() == "auto" {
            needed.max(96 << 20)
        } else {
            size("limits.memory", &m.memory)?
        };
        if memory < needed {
            anyhow::bail!(
                "limits.memory: {} shared by {} transfers is too little at MTU {}: each needs {} \
                 (two interleave groups of 16 blocks of 256 shards); set it to {} or more, \
                 lower limits.transfers, or use \"auto\"",
                ByteSize(memory),
                m.transfers,
                mtu.get(),
                ByteSize(per_transfer),
                ByteSize(needed)
            );
        }
        let write_queue = size("limits.write_queue", &m.write_queue)?;
        if write_queue < 1 << 20 {
            anyhow::bail!("limits.write_queue: at least 1MiB");
        }
        let metrics = raw
            .metrics
            .listen
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|e| anyhow!("metrics.listen: {s:?}: {e}"))
            })
            .transpose()?;
        let log_format = match raw.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => anyhow::bail!("log.format: {other:?} is not \"human\" or \"json\""),
        };
        tracing_subscriber::EnvFilter::try_new(&raw.log.level)
            .map_err(|e| anyhow!("log.level: {e}"))?;
        let checkpoint = duration("limits.checkpoint_interval", &m.checkpoint_interval)?;
        if checkpoint < Duration::from_millis(100) {
            anyhow::bail!("limits.checkpoint_interval: at least 100ms");
        }
        let incoming_quota = size("limits.incoming_quota", &m.incoming_quota)?;
        let max_bundle = size("limits.max_bundle", &m.max_bundle)?;
        if incoming_quota < max_bundle {
            anyhow::bail!(
                "limits.incoming_quota: {} is below limits.max_bundle ({}): the largest bundle could never be received",
                m.incoming_quota,
                m.max_bundle
            );
        }
        let transfer_expiry = duration("limits.transfer_expiry", &m.transfer_expiry)?;
        if transfer_expiry < Duration::from_secs(1) {
            anyhow::bail!("limits.transfer_expiry: at least 1s");
        }
        Ok(Self {
            listen,
            mtu,
            rate,
            link_key,
            receive_buffer: usize::try_from(receive_buffer).unwrap_or(usize::MAX),
            spool: raw.spool.root.clone(),
            trust: raw.spool.trust.clone(),
            direct_io: raw.spool.direct_io,
            transfers: m.transfers,
            memory: usize::try_from(memory).unwrap_or(usize::MAX),
            write_queue: usize::try_from(write_queue).unwrap_or(usize::MAX),
            incoming_quota,
            max_bundle,
            quarantine_quota: size("limits.quarantine_quota", &m.quarantine_quota)?,
            transfer_expiry,
            checkpoint,
            metrics,
            log_format,
            log_level: raw.log.level.clone(),
            raw,
        })
    }

    /// The effective configuration as TOML (for `--check-config`).
    pub fn effective_toml(&self) -> String {
        toml::to_string_pretty(&self.raw).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[link]
listen = "127.0.0.1:7700"

[spool]
root = "/tmp/spool"
trust = "/tmp/trust.toml"
"#;

    fn load_str(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("receiver.toml");
        std::fs::write(&p, text).unwrap();
        Settings::load(&p)
    }

    #[test]
    fn defaults_fill_in() {
        let s = load_str(MINIMAL).unwrap();
        assert_eq!(s.mtu, Mtu::ETHERNET);
        assert_eq!(s.transfers, 4);
        assert_eq!(s.memory, 96 << 20);
        // Jumbo frames make bigger blocks: auto makes room for them.
        let jumbo = load_str(&MINIMAL.replace("listen =", "mtu = 9000\nlisten =")).unwrap();
        assert_eq!(jumbo.memory, 4 * 2 * 16 * 256 * 8928 + (2 << 20));
        assert_eq!(s.incoming_quota, 64 << 30);
        assert_eq!(s.transfer_expiry, Duration::from_secs(600));
        assert!(s.metrics.is_none());
        assert!(s.effective_toml().contains("[limits]"));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let s = load_str(include_str!("../receiver.example.toml")).unwrap();
        assert_eq!(s.listen.port(), 7700);
        assert!(s.metrics.is_some());
    }

    #[test]
    fn errors_name_the_key() {
        for (bad, key) in [
            (MINIMAL.replace("127.0.0.1:7700", "nowhere"), "link.listen"),
            (
                MINIMAL.to_owned() + "[limits]\nmemory = \"lots\"\n",
                "limits.memory",
            ),
            (
                MINIMAL.to_owned() + "[limits]\nmemory = \"8MiB\"\n",
                "limits.memory",
            ),
            (
                MINIMAL.to_owned() + "[limits]\ntransfers = 0\n",
                "limits.transfers",
            ),
            (
                MINIMAL.to_owned() + "[limits]\ntransfer_expiry = \"soon\"\n",
                "limits.transfer_expiry",
            ),
            (
                MINIMAL.to_owned() + "[metrics]\nlisten = \"x\"\n",
                "metrics.listen",
            ),
            (
                MINIMAL.replace("listen =", "colour = \"blue\"\nlisten ="),
                "colour",
            ),
        ] {
            let e = load_str(&bad).unwrap_err();
            assert!(format!("{e:#}").contains(key), "{key}: {e:#}");
        }
    }
}
