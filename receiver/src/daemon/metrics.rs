//! Prometheus metrics (`prometheus-client`) and the small HTTP endpoint
//! that serves them on `GET /metrics`.
//!
//! The receive loop owns the counters of the core; it copies them into the
//! registry a few times a second ([`Metrics::update`]), so a scrape never
//! touches the hot path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};
use weir_protocol::Stats;

type Labels = Vec<(&'static str, String)>;

/// Every metric the receiver exports.
#[derive(Debug, Default)]
pub struct Metrics {
    frames: Counter,
    bytes: Counter,
    dropped: Family<Labels, Counter>,
    lost: Counter,
    blocks: Family<Labels, Counter>,
    unrecovered: Counter,
    blocks_written: Counter,
    transfers: Family<Labels, Counter>,
    verification_failures: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    heartbeat_age: Gauge<f64, AtomicU64>,
    link_up: Gauge,
    sender_restarts: Counter,
    kernel_drops: Counter,
    in_flight: Gauge,
    incoming_bytes: Gauge,
    memory: Gauge,
    write_queue: Gauge,
    stall_seconds: Counter<f64, AtomicU64>,
    disk_errors: Counter,
    loss_1m: Gauge<f64, AtomicU64>,
}

/// A point-in-time reading of everything the loop knows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// The core's counters.
    pub core: Stats,
    /// Seconds since the last heartbeat (`None`: never).
    pub heartbeat_age: Option<f64>,
    /// Link up.
    pub link_up: bool,
    /// Kernel drops for the socket.
    pub kernel_drops: u64,
    /// Transfers in flight.
    pub in_flight: usize,
    /// Bytes reserved in `incoming/`.
    pub incoming_bytes: u64,
    /// Reassembly memory in use.
    pub memory: usize,
    /// Bytes waiting for the writer.
    pub write_queue: usize,
    /// Seconds the loop waited for the writer.
    pub stall_seconds: f64,
    /// Disk errors in the writer and publisher.
    pub disk_errors: u64,
    /// Blocks the writer put on disk.
    pub blocks_written: u64,
    /// Loss over the last minute.
    pub loss_1m: f64,
}

/// Raises a counter to `value` (counters only go up; the core's do too).
fn raise(c: &Counter, value: u64) {
    let now = c.get();
    if value > now {
        c.inc_by(value - now);
    }
}

fn label(key: &'static str, value: &str) -> Labels {
    vec![(key, value.to_owned())]
}

impl Metrics {
    /// Registers every metric under `weir_receiver_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("weir_receiver");
        r.register(
            "frames_received",
            "Datagrams received from the link",
            self.frames.clone(),
        );
        r.register(
            "bytes_received",
            "Datagram bytes received from the link",
            self.bytes.clone(),
        );
        r.register(
            "frames_dropped",
            "Datagrams dropped, by reason",
            self.dropped.clone(),
        );
        r.register(
            "frames_lost",
            "Sequence numbers never received (link loss)",
            self.lost.clone(),
        );
        r.register(
            "blocks",
            "Blocks rebuilt, clean or repaired by FEC",
            self.blocks.clone(),
        );
        r.register(
            "blocks_unrecovered",
            "Blocks still missing when a pass ended",
            self.unrecovered.clone(),
        );
        r.register(
            "blocks_written",
            "Blocks written to partial files",
            self.blocks_written.clone(),
        );
        r.register(
            "transfers",
            "Transfers ended, by outcome",
            self.transfers.clone(),
        );
        r.register(
            "verification_failures",
            "Bundles rejected, by reason",
            self.verification_failures.clone(),
        );
        r.register(
            "transfers_refused",
            "Transfers turned away by a limit (incoming_quota, max_bundle, memory: once a minute per \
             transfer while it keeps coming; reopen_queue: each complete transfer sent back to be \
             received afresh)",
            self.refused.clone(),
        );
        r.register(
            "heartbeat_age_seconds",
            "Seconds since the last heartbeat (-1: none yet)",
            self.heartbeat_age.clone(),
        );
        r.register("link_up", "1 while heartbeats arrive", self.link_up.clone());
        r.register(
            "sender_restarts",
            "Sender restarts seen (epoch changes)",
            self.sender_restarts.clone(),
        );
        r.register(
            "kernel_drops",
            "Receive-buffer overflows the kernel counted for the socket (a GRO batch of datagrams counts once)",
            self.kernel_drops.clone(),
        );
        r.register(
            "transfers_in_flight",
            "Transfers being received",
            self.in_flight.clone(),
        );
        r.register(
            "incoming_bytes",
            "Bytes reserved by partial files in incoming/",
            self.incoming_bytes.clone(),
        );
        r.register(
            "reassembly_memory_bytes",
            "Bytes held for blocks being rebuilt",
            self.memory.clone(),
        );
        r.register(
            "write_queue_bytes",
            "Bytes of blocks waiting for the disk",
            self.write_queue.clone(),
        );
        r.register(
            "receive_stall_seconds",
            "Seconds reception waited for a full write queue",
            self.stall_seconds.clone(),
        );
        r.register(
            "disk_errors",
            "Errors writing incoming/, staging/ or reports",
            self.disk_errors.clone(),
        );
        r.register(
            "loss_ratio_1m",
            "Fraction of frames lost over the last minute",
            self.loss_1m.clone(),
        );
    }

    /// Copies a reading into the registry.
    pub fn update(&self, r: &Reading) {
        let s = &r.core;
        raise(&self.frames, s.datagrams);
        raise(&self.bytes, s.bytes);
        let d = &s.dropped;
        for (reason, n) in [
            ("malformed", d.malformed),
            ("unsupported", d.unsupported),
            ("corrupt", d.corrupt),
            ("unauthenticated", d.unauthenticated),
            ("duplicate", d.duplicate),
            ("no_descriptor", d.no_descriptor),
            ("finished", d.finished),
            ("redundant", d.redundant),
            ("invalid", d.invalid),
            ("too_many_transfers", d.too_many_transfers),
            ("descriptor_conflict", d.descriptor_conflict),
            ("refused", d.refused),
            ("overload", d.overload),
        ] {
            raise(&self.dropped.get_or_create(&label("reason", reason)), n);
        }
        raise(&self.lost, s.loss.lost);
        raise(
            &self.blocks.get_or_create(&label("how", "clean")),
            s.blocks_clean,
        );
        raise(
            &self.blocks.get_or_create(&label("how", "repaired")),
            s.blocks_repaired,
        );
        raise(&self.unrecovered, s.blocks_unrecovered_at_pass_end);
        raise(&self.blocks_written, r.blocks_written);
        raise(&self.sender_restarts, s.loss.sender_restarts);
        raise(&self.kernel_drops, r.kernel_drops);
        self.heartbeat_age.set(r.heartbeat_age.unwrap_or(-1.0));
        self.link_up.set(i64::from(r.link_up));
        self.in_flight.set(r.in_flight as i64);
        self.incoming_bytes
            .set(i64::try_from(r.incoming_bytes).unwrap_or(i64::MAX));
        self.memory.set(r.memory as i64);
        self.write_queue.set(r.write_queue as i64);
        let stalled = r.stall_seconds - self.stall_seconds.get();
        if stalled > 0.0 {
            self.stall_seconds.inc_by(stalled);
        }
        raise(&self.disk_errors, r.disk_errors);
        self.loss_1m.set(r.loss_1m);
    }

    /// Counts a transfer's outcome.
    pub fn transfer(&self, outcome: &str) {
        self.transfers
            .get_or_create(&label("outcome", outcome))
            .inc();
    }

    /// Counts a verification failure.
    pub fn verification_failure(&self, reason: &str) {
        self.verification_failures
            .get_or_create(&label("reason", reason))
            .inc();
    }

    /// Counts a transfer turned away.
    pub fn refused(&self, reason: &str) {
        self.refused.get_or_create(&label("reason", reason)).inc();
    }
}

/// Serves `registry` on `addr` from a thread. Returns the bound address.
pub fn serve(addr: SocketAddr, registry: Arc<Mutex<Registry>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    info!(%bound, "metrics on http://{bound}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &registry) {
                    warn!("metrics request: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// Answers one HTTP request: `GET /metrics` or 404.
fn answer(mut stream: TcpStream, registry: &Mutex<Registry>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // The request line and headers, bounded.
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = req.split(|b| *b == b'\r').next().unwrap_or_default();
    let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
    let openmetrics = head.contains("application/openmetrics-text");
    let (status, ctype, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
        let mut body = String::new();
        let encoded = registry
            .lock()
            .map_err(|_| std::io::Error::other("registry lock poisoned"))
            .and_then(|r| encode(&mut body, &r).map_err(std::io::Error::other));
        match encoded {
            Ok(()) if openmetrics => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Ok(()) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus_text(&body),
            ),
            Err(e) => ("500 Internal Server Error", "text/plain", e.to_string()),
        }
    } else {
        (
            "404 Not Found",
            "text/plain",
            "only /metrics here\n".to_owned(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Turns OpenMetrics text into the classic Prometheus text format (0.0.4),
/// for scrapers that do not ask for OpenMetrics: a counter family `x` is
/// named by its sample `x_total` there, and there is no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let m = Metrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.transfer("published");
        let mut om = String::new();
        encode(&mut om, &r).unwrap();
        assert!(om.contains("# TYPE weir_receiver_transfers counter"));
        let text = prometheus_text(&om);
        assert!(
            text.contains("# TYPE weir_receiver_transfers_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP weir_receiver_transfers_total Transfers ended"),
            "{text}"
        );
        assert!(
            text.contains("weir_receiver_transfers_total{outcome=\"published\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weir_receiver_link_up gauge"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
