//! Sender configuration: a TOML file, overridden by `WEIR_SENDER_*`
//! environment variables, turned into typed [`Settings`] once at start.
//!
//! Environment overrides name the section and key with `__` between them:
//! `WEIR_SENDER_LINK__RATE=100Mbit`, `WEIR_SENDER_TRANSFER__PASSES=3`.
//! Unknown keys are refused, and every error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use weir_protocol::{FecParams, Mtu, Rate};

/// The file as written, before checking.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[link]`
    pub link: RawLink,
    /// `[fec]`
    #[serde(default)]
    pub fec: RawFec,
    /// `[transfer]`
    #[serde(default)]
    pub transfer: RawTransfer,
    /// `[spool]`
    pub spool: RawSpool,
    /// `[log]`
    #[serde(default)]
    pub log: RawLog,
    /// `[carousel]`
    #[serde(default)]
    pub carousel: RawCarousel,
}

/// `[carousel]`: keep cycling recent bundles while idle.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCarousel {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// How many of the most recently sent bundles to cycle.
    #[serde(default = "default_carousel_bundles")]
    pub bundles: usize,
    /// Share of `link.rate` the carousel may use, in (0, 1].
    #[serde(default = "default_carousel_share")]
    pub share: f64,
}

impl Default for RawCarousel {
    fn default() -> Self {
        Self {
            enabled: false,
            bundles: default_carousel_bundles(),
            share: default_carousel_share(),
        }
    }
}

fn default_carousel_bundles() -> usize {
    3
}
fn default_carousel_share() -> f64 {
    0.1
}

/// The carousel, when enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carousel {
    /// Recent bundles cycled.
    pub bundles: usize,
    /// Its pacing rate: the link rate times the share.
    pub rate: Rate,
}

/// `[link]`: where frames go and how fast.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// The receiver's address across the diode.
    pub destination: String,
    /// Local address to send from.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Link MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Pacing rate, such as `900Mbit`.
    pub rate: String,
    /// File holding the 32-byte link key in hex; frames then carry a MAC.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Requested socket send buffer, bytes.
    #[serde(default = "default_sndbuf")]
    pub send_buffer: usize,
}

/// `[fec]`: erasure coding.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFec {
    /// K.
    #[serde(default = "default_k")]
    pub data_shards: u16,
    /// M.
    #[serde(default = "default_m")]
    pub parity_shards: u16,
    /// D; unset, the sender picks it for the MTU
    /// ([`FecParams::auto_interleave`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interleave: Option<u16>,
}

impl Default for RawFec {
    fn default() -> Self {
        Self {
            data_shards: default_k(),
            parity_shards: default_m(),
            interleave: None,
        }
    }
}

/// `[transfer]`: passes, pauses, heartbeats, what happens after sending.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransfer {
    /// Passes per bundle.
    #[serde(default = "default_passes")]
    pub passes: u32,
    /// Pause between two passes of one bundle.
    #[serde(default = "default_pause")]
    pub pass_pause: String,
    /// Heartbeat interval.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: String,
    /// A copied-in bundle is taken once unchanged for this long.
    #[serde(default = "default_settle")]
    pub settle_time: String,
    /// `move` sent bundles to `sent/`, or `delete` them.
    #[serde(default = "default_after_send")]
    pub after_send: String,
}

impl Default for RawTransfer {
    fn default() -> Self {
        Self {
            passes: default_passes(),
            pass_pause: default_pause(),
            heartbeat_interval: default_heartbeat(),
            settle_time: default_settle(),
            after_send: default_after_send(),
        }
    }
}

/// `[spool]`: directories and the trust store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Holds `outbox/`, `outbox/urgent/`, `sent/`, `failed/`, `state/`.
    pub root: PathBuf,
    /// Trust store bundles are checked against before sending.
    pub trust: PathBuf,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `human` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter such as `info` or `weir_sender=debug`.
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

fn default_bind() -> String {
    "0.0.0.0:0".into()
}
fn default_mtu() -> u32 {
    1500
}
fn default_sndbuf() -> usize {
    16 << 20
}
fn default_k() -> u16 {
    256
}
fn default_m() -> u16 {
    64
}
fn default_passes() -> u32 {
    2
}
fn default_pause() -> String {
    "1s".into()
}
fn default_heartbeat() -> String {
    "1s".into()
}
fn default_settle() -> String {
    "5s".into()
}
fn default_after_send() -> String {
    "move".into()
}
fn default_log_format() -> String {
    "human".into()
}
fn default_log_level() -> String {
    "info".into()
}

/// What to do with a bundle once every pass went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSend {
    /// Move it to `sent/`.
    Move,
    /// Delete it.
    Delete,
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
    /// Receiver address.
    pub destination: SocketAddr,
    /// Local address.
    pub bind: SocketAddr,
    /// Link MTU.
    pub mtu: Mtu,
    /// Pacing rate.
    pub rate: Rate,
    /// The link key, if configured.
    pub link_key: Option<[u8; 32]>,
    /// Socket send buffer to ask for.
    pub send_buffer: usize,
    /// K, M, D (the shard size follows the MTU and the tag; D, when not
    /// set, too).
    pub fec: (u16, u16, Option<u16>),
    /// Passes per bundle.
    pub passes: u32,
    /// Pause between passes.
    pub pass_pause: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Settle time for copied-in bundles.
    pub settle: Duration,
    /// After all passes.
    pub after_send: AfterSend,
    /// Spool root.
    pub spool: PathBuf,
    /// Trust store path.
    pub trust: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Cycling of recent bundles while idle.
    pub carousel: Option<Carousel>,
    /// The raw values, for `--check-config`.
    pub raw: RawConfig,
}

fn duration(key: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| anyhow!("{key}: {s:?} is not a duration such as 1s or 500ms: {e}"))
}

/// Reads a link key file: 64 hex digits (whitespace ignored), mode 0600.
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
                config::Environment::with_prefix("WEIR_SENDER")
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
        let destination: SocketAddr = raw
            .link
            .destination
            .parse()
            .map_err(|e| anyhow!("link.destination: {:?}: {e}", raw.link.destination))?;
        let bind: SocketAddr = raw
            .link
            .bind
            .parse()
            .map_err(|e| anyhow!("link.bind: {:?}: {e}", raw.link.bind))?;
        let mtu = Mtu::new(raw.link.mtu).map_err(|e| anyhow!("link.mtu: {e}"))?;
        let rate: Rate = raw
            .link
            .rate
            .parse()
            .map_err(|e| anyhow!("link.rate: {e}"))?;
        let link_key = raw
            .link
            .key_file
            .as_deref()
            .map(read_link_key)
            .transpose()
            .context("link.key_file")?;
        let f = &raw.fec;
        // The shard size follows the MTU; check K, M, D with the smallest.
        FecParams::new(
            f.data_shards,
            f.parity_shards,
            1392,
            f.interleave.unwrap_or(1),
        )
        .map_err(|e| anyhow!("fec: {e}"))?;
        if raw.transfer.passes == 0 {
            anyhow::bail!("transfer.passes: must be at least 1");
        }
        let after_send = match raw.transfer.after_send.as_str() {
            "move" => AfterSend::Move,
            "delete" => AfterSend::Delete,
            other => anyhow::bail!("transfer.after_send: {other:?} is not \"move\" or \"delete\""),
        };
        let log_format = match raw.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => anyhow::bail!("log.format: {other:?} is not \"human\" or \"json\""),
        };
        tracing_subscriber::EnvFilter::try_new(&raw.log.level)
            .map_err(|e| anyhow!("log.level: {e}"))?;
        let c = &raw.carousel;
        let carousel = if c.enabled {
            if !(c.share > 0.0 && c.share <= 1.0) {
                anyhow::bail!("carousel.share: {} is not in (0, 1]", c.share);
            }
            if !(1..=100).contains(&c.bundles) {
                anyhow::bail!("carousel.bundles: {} is not in 1..=100", c.bundles);
            }
            if after_send != AfterSend::Move {
                anyhow::bail!(
                    "carousel.enabled: needs transfer.after_send = \"move\" (it resends from sent/)"
                );
            }
            let bps = (rate.bits_per_sec() as f64 * c.share) as u64;
            let rate = Rate::from_bits_per_sec(bps.max(1000))
                .map_err(|e| anyhow!("carousel.share: {e}"))?;
            Some(Carousel {
                bundles: c.bundles,
                rate,
            })
        } else {
            None
        };
        Ok(Self {
            destination,
            bind,
            mtu,
            rate,
            link_key,
            send_buffer: raw.link.send_buffer,
            fec: (f.data_shards, f.parity_shards, f.interleave),
            passes: raw.transfer.passes,
            pass_pause: duration("transfer.pass_pause", &raw.transfer.pass_pause)?,
            heartbeat: duration(
                "transfer.heartbeat_interval",
                &raw.transfer.heartbeat_interval,
            )?,
            settle: duration("transfer.settle_time", &raw.transfer.settle_time)?,
            after_send,
            spool: raw.spool.root.clone(),
            trust: raw.spool.trust.clone(),
            log_format,
            log_level: raw.log.level.clone(),
            carousel,
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
destination = "127.0.0.1:7700"
rate = "100Mbit"

[spool]
root = "/tmp/spool"
trust = "/tmp/trust.toml"
"#;

    fn load_str(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sender.toml");
        std::fs::write(&p, text).unwrap();
        Settings::load(&p)
    }

    #[test]
    fn defaults_fill_in() {
        let s = load_str(MINIMAL).unwrap();
        assert_eq!(s.rate.bits_per_sec(), 100_000_000);
        assert_eq!(s.mtu, Mtu::ETHERNET);
        assert_eq!(s.passes, 2);
        assert_eq!(s.fec, (256, 64, None));
        assert_eq!(s.after_send, AfterSend::Move);
        assert!(s.effective_toml().contains("[link]"));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let example = include_str!("../sender.example.toml");
        let s = load_str(example).unwrap();
        assert_eq!(s.rate.bits_per_sec(), 900_000_000);
        assert_eq!(s.destination.port(), 7700);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_str(&MINIMAL.replace("100Mbit", "fast")).unwrap_err();
        assert!(format!("{e:#}").contains("link.rate"), "{e:#}");
        let e = load_str(&(MINIMAL.to_owned() + "\n[transfer]\npasses = 0\n")).unwrap_err();
        assert!(format!("{e:#}").contains("transfer.passes"), "{e:#}");
        let e = load_str(&MINIMAL.replace("rate =", "speed = \"1\"\nrate =")).unwrap_err();
        assert!(format!("{e:#}").contains("speed"), "{e:#}");
        let e = load_str(&(MINIMAL.to_owned() + "\n[fec]\ninterleave = 0\n")).unwrap_err();
        assert!(format!("{e:#}").contains("fec"), "{e:#}");
    }
}
