//! A one-way link made by the kernel, for fault tests of the real daemons:
//! three network namespaces joined by veth pairs. nftables and tc make the
//! faults on the link's egress toward the receiver; everything coming back
//! from the receiver's side is dropped, so the link is a diode.
//!
//! ```text
//!  NAME-tx                NAME-link                                 NAME-rx
//!  weir-sender            forwards 10.77.1.0/24 -> 10.77.2.0/24     weir-receiver
//!  10.77.1.1 tx0 ═════ l0 10.77.1.254        10.77.2.254 l1 ═════ rx0 10.77.2.1:7700
//!                      │ egress: drop all          │ egress: nft table weir_faults
//!                      │ (nothing goes back)       │   offered ─▶ lost ─▶ duplicated ─▶
//!                      │                           │   corrupted ─▶ delivered, then the
//!                      │                           │   root qdisc (tc tbf: the rate cap)
//!                      │                           │ ingress: drop all (ARP, ICMP, ...)
//! ```
//!
//! Neighbours are static (`nud permanent`), so no ARP answer is needed in
//! either direction; IPv6 is off in all three namespaces (no neighbour
//! discovery); the sender's veth segments GSO batches itself
//! (`gso_max_segs 1`), so every rule sees one datagram at a time, as a real
//! diode would carry them. The duplication rule is `dup to` on the netdev
//! egress hook (on this kernel `dup` misbehaves in the `inet` family and
//! on a receiver's prerouting); its copies are marked and pass the chain
//! again untouched.
//!
//! Every lost frame is counted by exactly one of these ([`Counters`]):
//!
//! | where                 | counter                                    | read with |
//! |-----------------------|--------------------------------------------|-----------|
//! | the fault rules       | nft named counters `lost`, `corrupted`     | `nft -j list counters` |
//! | the rate cap          | the tbf qdisc's `dropped`                  | `tc -s -j qdisc show` |
//! | the veth pairs        | `tx dropped` of `tx0` and `l1`             | `ip -s -j link show` |
//! | the receiver's socket | `Udp RcvbufErrors` (weir's `kernel_drops`) | `/proc/net/snmp` in `NAME-rx` |
//!
//! and weir counts what it saw of them: `frames_lost` (sequence numbers
//! never received: all of the above), `frames_dropped{reason="corrupt"}`
//! (frames whose CRC32C failed: veth delivers a corrupted payload
//! unchecked) and `frames_dropped{reason="duplicate"}`. [`Accounting`]
//! puts the two side by side and checks that they agree.
//!
//! Cleanup: dropping the [`Link`] kills whatever still runs in its
//! namespaces and deletes them (with them go their rules and qdiscs), and
//! restores `net.core.rmem_max`. A watchdog process in its own process
//! group does the same once the test process is gone, so a test killed
//! midway leaves nothing behind; it also kills a test process that
//! outlives its time limit.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::daemons::{signal, terminate, wait_for};

/// The sender's address (on `tx0`, in `NAME-tx`).
pub const TX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The link's address toward the sender (on `l0`, in `NAME-link`).
const LINK_TX_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 254);
/// The link's address toward the receiver (on `l1`, in `NAME-link`).
const LINK_RX_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 254);
/// The receiver's address (on `rx0`, in `NAME-rx`).
pub const RX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
/// The port the receiver listens on.
pub const RX_PORT: u16 = 7700;

/// The receiver's listening address.
pub fn rx_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(RX_ADDR, RX_PORT))
}

/// The socket receive buffer limit the link raises `net.core.rmem_max` to:
/// what the receiver asks for by default (64 MiB), so that its socket
/// holds a quarter of a second at 1 Gbit/s and more.
const RMEM_MAX: u64 = 64 << 20;

/// Fault probabilities are drawn from `numgen random mod SCALE`.
const SCALE: u64 = 1_000_000;

/// The mark of copies made by the duplication rule, so that they pass the
/// chain again untouched (and are not duplicated again).
const DUP_MARK: u32 = 0x7765;

/// One of the three namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The high side: `weir-sender`.
    Tx,
    /// The link between, where the faults are.
    Link,
    /// The low side: `weir-receiver`.
    Rx,
}

/// Faults on the link's egress toward the receiver, each a probability
/// per frame (0 to 1), drawn independently by the kernel's `numgen`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Dropped.
    pub loss: f64,
    /// Sent twice.
    pub duplicate: f64,
    /// Four payload bytes overwritten (shard frames only: they are the
    /// ones with a payload long enough).
    pub corrupt: f64,
}

impl Faults {
    /// No faults.
    pub const NONE: Self = Self {
        loss: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
    };

    /// Random loss alone.
    pub fn loss(p: f64) -> Self {
        Self {
            loss: p,
            ..Self::NONE
        }
    }

    /// The chain's rules, as an `nft -f` script that replaces the old ones
    /// in one transaction (the named counters keep counting).
    fn script(&self) -> String {
        let threshold = |p: f64| (p.clamp(0.0, 1.0) * SCALE as f64).round() as u64;
        let mut s = String::from("flush chain netdev weir_faults to_rx\n");
        let mut rule = |r: &str| {
            s.push_str("add rule netdev weir_faults to_rx ");
            s.push_str(r);
            s.push('\n');
        };
        rule(&format!("meta mark {DUP_MARK:#x} accept"));
        rule("counter name \"offered\"");
        if self.loss > 0.0 {
            rule(&format!(
                "numgen random mod {SCALE} < {} counter name \"lost\" drop",
                threshold(self.loss)
            ));
        }
        if self.duplicate > 0.0 {
            rule(&format!(
                "numgen random mod {SCALE} < {} meta mark set {DUP_MARK:#x} \
                 counter name \"duplicated\" dup to \"l1\"",
                threshold(self.duplicate)
            ));
        }
        if self.corrupt > 0.0 {
            // Bytes 64..68 of the frame's payload (a frame has a 40-byte
            // header after the 8 bytes of UDP header): past every field
            // the receiver reads before the CRC32C, which must catch it.
            let bit = (8 + 40 + 64) * 8;
            rule(&format!(
                "udp length > 200 numgen random mod {SCALE} < {} \
                 @th,{bit},32 set 0xdeadbeef counter name \"corrupted\"",
                threshold(self.corrupt)
            ));
        }
        rule("counter name \"delivered\"");
        s
    }
}

/// The ruleset the link starts with: the diode, and the fault chain empty
/// but counting.
fn base_ruleset() -> String {
    format!(
        r#"table netdev weir_diode {{
    counter back_arp {{ }}
    counter back_other {{ }}
    counter to_tx {{ }}
    chain from_rx {{
        type filter hook ingress device "l1" priority 0; policy drop;
        ether type arp counter name "back_arp" drop
        counter name "back_other" drop
    }}
    chain toward_tx {{
        type filter hook egress device "l0" priority 0; policy drop;
        counter name "to_tx" drop
    }}
}}
table netdev weir_faults {{
    counter offered {{ }}
    counter lost {{ }}
    counter duplicated {{ }}
    counter corrupted {{ }}
    counter delivered {{ }}
    chain to_rx {{
        type filter hook egress device "l1" priority 0; policy accept;
    }}
}}
{}"#,
        Faults::NONE.script()
    )
}

/// Runs a command to its end; its stdout, or an error with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS`.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// Names of this process's links, so that parallel and stale runs never
/// share a namespace.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Three namespaces and the link between them; see the module doc.
/// Removed, with everything in them, on drop.
#[derive(Debug)]
pub struct Link {
    /// The namespaces: tx, link, rx.
    ns: [String; 3],
    /// Cleans up once this process is gone; killed on drop.
    watchdog: Option<Child>,
    /// `net.core.rmem_max` before the link raised it, and the raised value.
    rmem: Option<(u64, u64)>,
}

const RMEM_PATH: &str = "/proc/sys/net/core/rmem_max";

impl Link {
    /// Makes the three namespaces and the link, with no faults yet.
    /// `limit` bounds the test: past it, the watchdog kills the test
    /// process (and cleans up). `scratch`, if given, is removed by the
    /// watchdog too once the test process is gone (its own drop removes it
    /// otherwise).
    ///
    /// Panics, loudly, where namespaces cannot be made: a skipped fault
    /// suite is a failed one.
    pub fn new(limit: Duration, scratch: Option<&Path>) -> Self {
        for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "the fault suite needs `{tool}` (package {package}): install it (.ci/run does)"
            );
        }
        let base = format!(
            "weir-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut link = Self {
            ns: [
                format!("{base}-tx"),
                format!("{base}-link"),
                format!("{base}-rx"),
            ],
            watchdog: None,
            rmem: None,
        };
        let old = std::fs::read_to_string(RMEM_PATH)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let rmem = old.filter(|o| *o < RMEM_MAX).map(|o| (o, RMEM_MAX));
        // The watchdog first, so that nothing made below can outlive a
        // killed test.
        link.watchdog = Some(link.spawn_watchdog(limit, scratch, rmem));
        if let Err(e) = link.build() {
            panic!(
                "could not make the fault suite's network namespaces: {e:#}\n\
                 The suite needs root, network namespaces, veth and nftables \
                 (CI runs it as root); it is never skipped."
            );
        }
        if let Some((_, new)) = rmem {
            std::fs::write(RMEM_PATH, new.to_string()).unwrap_or_else(|e| {
                panic!("raising {RMEM_PATH}: {e} (the fault suite needs root)")
            });
            link.rmem = rmem;
        }
        link
    }

    fn spawn_watchdog(
        &self,
        limit: Duration,
        scratch: Option<&Path>,
        rmem: Option<(u64, u64)>,
    ) -> Child {
        let ns = self.ns.join(" ");
        let restore = rmem.map_or(String::new(), |(old, new)| {
            format!("[ \"$(cat {RMEM_PATH})\" = {new} ] && echo {old} > {RMEM_PATH}; ")
        });
        let scratch = scratch.map_or(String::new(), |d| format!("rm -rf -- '{}'; ", d.display()));
        let script = format!(
            "end=$(( $(date +%s) + {limit} )); \
             while kill -0 {pid} 2>/dev/null; do \
               if [ \"$(date +%s)\" -gt \"$end\" ]; then \
                 echo 'weir fault test: over its {limit} s limit, killing the test process {pid}' >&2; \
                 kill -9 {pid}; \
               fi; \
               sleep 0.5; \
             done; \
             for ns in {ns}; do for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p; done; done; \
             sleep 0.3; \
             for ns in {ns}; do ip netns del $ns 2>/dev/null; done; \
             {restore}{scratch}true",
            limit = limit.as_secs().max(1),
            pid = std::process::id(),
        );
        // In its own process group, so that killing the tests' group
        // leaves it to clean up. Killed (by its id) when the link is
        // dropped; otherwise it outlives this process.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting the namespace watchdog")
    }

    /// Makes the namespaces, the veth pairs, addresses, routes, static
    /// neighbours and the ruleset.
    fn build(&self) -> anyhow::Result<()> {
        let [tx, link, rx] = [&self.ns[0], &self.ns[1], &self.ns[2]];
        for ns in &self.ns {
            ip(&["netns", "add", ns])?;
        }
        ip(&[
            "link", "add", "tx0", "netns", tx, "type", "veth", "peer", "name", "l0", "netns", link,
        ])?;
        ip(&[
            "link", "add", "l1", "netns", link, "type", "veth", "peer", "name", "rx0", "netns", rx,
        ])?;
        for ns in &self.ns {
            run(self.cmd_in(ns, "sysctl").args([
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]))?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Each datagram its own packet on the way: the sender's GSO
        // batches are cut up in its namespace, before any rule sees them.
        ip(&["-n", tx, "link", "set", "tx0", "gso_max_segs", "1"])?;
        for (ns, dev, addr) in [
            (tx, "tx0", TX_ADDR),
            (link, "l0", LINK_TX_SIDE),
            (link, "l1", LINK_RX_SIDE),
            (rx, "rx0", RX_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        run(self
            .cmd_in(link, "sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;
        ip(&[
            "-n",
            tx,
            "route",
            "add",
            "10.77.2.0/24",
            "via",
            &LINK_TX_SIDE.to_string(),
        ])?;
        // The receiver has a way back, as on a real network: what it would
        // send (ICMP errors, ARP) reaches the link and is dropped there.
        ip(&[
            "-n",
            rx,
            "route",
            "add",
            "default",
            "via",
            &LINK_RX_SIDE.to_string(),
        ])?;
        for (ns, dev, addr, peer_ns, peer_dev) in [
            (tx, "tx0", LINK_TX_SIDE, link, "l0"),
            (link, "l1", RX_ADDR, rx, "rx0"),
            (rx, "rx0", LINK_RX_SIDE, link, "l1"),
        ] {
            let mac = mac_of(peer_ns, peer_dev)?;
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        self.nft_script(&base_ruleset())?;
        Ok(())
    }

    /// The name of one namespace.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Tx => &self.ns[0],
            Side::Link => &self.ns[1],
            Side::Rx => &self.ns[2],
        }
    }

    fn cmd_in(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// `program` to be run in one of the namespaces (`ip netns exec`, which
    /// execs it: the child's pid is the program's).
    pub fn cmd(&self, side: Side, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cmd_in(self.ns(side), program)
    }

    /// Loads an `nft -f` script (from stdin) in the link's namespace.
    fn nft_script(&self, script: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = self
            .cmd(Side::Link, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft -f failed: {}\nloading\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Replaces the faults, in one transaction (the counters go on).
    pub fn set_faults(&self, f: &Faults) {
        self.nft_script(&f.script())
            .unwrap_or_else(|e| panic!("setting faults {f:?}: {e:#}"));
    }

    /// Caps the rate of the link toward the receiver with a tbf qdisc
    /// (`rate` as tc writes it: `400mbit`), queueing at most `latency`.
    pub fn rate_cap(&self, rate: &str, latency: &str) {
        run(self.cmd(Side::Link, "tc").args([
            "qdisc", "replace", "dev", "l1", "root", "tbf", "rate", rate, "burst", "64kb",
            "latency", latency,
        ]))
        .unwrap_or_else(|e| panic!("tc tbf: {e:#}"));
    }

    /// Puts netem on the link toward the receiver (`args` as tc takes
    /// them: `delay 5ms 2ms reorder 1%`). `Ok(false)` when the kernel has
    /// no netem (this project's machine has none); any other failure is
    /// an error.
    pub fn netem(&self, args: &[&str]) -> anyhow::Result<bool> {
        let res = run(self
            .cmd(Side::Link, "tc")
            .args(["qdisc", "replace", "dev", "l1", "root", "netem"])
            .args(args));
        match res {
            Ok(_) => Ok(true),
            Err(e) if format!("{e:#}").contains("Specified qdisc kind is unknown") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What every counter on the way says now.
    pub fn counters(&self) -> Counters {
        self.try_counters()
            .unwrap_or_else(|e| panic!("reading the link's counters: {e:#}"))
    }

    fn try_counters(&self) -> anyhow::Result<Counters> {
        let mut c = Counters::default();
        for table in ["weir_faults", "weir_diode"] {
            let text = run(self
                .cmd(Side::Link, "nft")
                .args(["-j", "list", "counters", "table", "netdev", table]))?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            for item in v["nftables"].as_array().into_iter().flatten() {
                let Some(k) = item.get("counter") else {
                    continue;
                };
                let n = k["packets"].as_u64().unwrap_or(0);
                match k["name"].as_str().unwrap_or_default() {
                    "offered" => c.offered = n,
                    "lost" => c.lost = n,
                    "duplicated" => c.duplicated = n,
                    "corrupted" => c.corrupted = n,
                    "delivered" => c.delivered = n,
                    "back_arp" => c.back_arp = n,
                    "back_other" => c.back_other = n,
                    "to_tx" => c.to_tx = n,
                    _ => {}
                }
            }
        }
        let q = run(self
            .cmd(Side::Link, "tc")
            .args(["-s", "-j", "qdisc", "show", "dev", "l1"]))?;
        let q: serde_json::Value = serde_json::from_str(&q)?;
        for qd in q.as_array().into_iter().flatten() {
            c.qdisc_dropped += qd["drops"].as_u64().unwrap_or(0);
        }
        let stats = |side: Side, dev: &str| -> anyhow::Result<serde_json::Value> {
            let t = ip(&["-n", self.ns(side), "-s", "-j", "link", "show", "dev", dev])?;
            let v: serde_json::Value = serde_json::from_str(&t)?;
            Ok(v[0]["stats64"].clone())
        };
        let tx0 = stats(Side::Tx, "tx0")?;
        let l1 = stats(Side::Link, "l1")?;
        let rx0 = stats(Side::Rx, "rx0")?;
        let n = |v: &serde_json::Value, dir: &str, what: &str| v[dir][what].as_u64().unwrap_or(0);
        c.veth_dropped = n(&tx0, "tx", "dropped") + n(&l1, "tx", "dropped");
        c.rx_veth_dropped = n(&rx0, "rx", "dropped");
        c.tx_received = n(&tx0, "rx", "packets");
        let snmp = run(self.cmd(Side::Rx, "cat").arg("/proc/net/snmp"))?;
        let udp = snmp_row(&snmp, "Udp:");
        c.socket_drops = udp.get("RcvbufErrors").copied().unwrap_or(0);
        c.udp_in = udp.get("InDatagrams").copied().unwrap_or(0);
        c.udp_csum_errors = udp.get("InCsumErrors").copied().unwrap_or(0);
        c.udp_no_ports = udp.get("NoPorts").copied().unwrap_or(0);
        Ok(c)
    }

    /// `GET /metrics` from `addr` inside the receiver's namespace (bash's
    /// `/dev/tcp`: nothing to install), bounded to 5 s.
    pub fn scrape(&self, addr: SocketAddr) -> anyhow::Result<String> {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{port} && \
             printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3 && cat <&3",
            ip = addr.ip(),
            port = addr.port()
        );
        let out = run(self
            .cmd(Side::Rx, "timeout")
            .args(["5", "bash", "-c", &script]))?;
        let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("metrics answered {head}");
        }
        Ok(body.to_owned())
    }

    /// Sends one UDP datagram from the receiver's side toward the sender
    /// (which the diode must drop), with ARP for the link's address first
    /// (its static entry removed and put back).
    pub fn try_to_talk_back(&self) {
        let rx = self.ns(Side::Rx);
        let mac = mac_of(self.ns(Side::Link), "l1").unwrap();
        let gw = LINK_RX_SIDE.to_string();
        ip(&["-n", rx, "neigh", "del", &gw, "dev", "rx0"]).unwrap();
        for _ in 0..3 {
            let _ = run(self
                .cmd(Side::Rx, "bash")
                .args(["-c", &format!("echo back > /dev/udp/{TX_ADDR}/9")]));
            std::thread::sleep(Duration::from_millis(1100));
        }
        ip(&[
            "-n",
            rx,
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &mac,
            "dev",
            "rx0",
            "nud",
            "permanent",
        ])
        .unwrap();
        // Now with the neighbour known: an IP packet reaches the link.
        for _ in 0..3 {
            run(self
                .cmd(Side::Rx, "bash")
                .args(["-c", &format!("echo back > /dev/udp/{TX_ADDR}/9")]))
            .unwrap();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Whatever still runs in the namespaces was started by this test.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left = 0;
            for ns in &self.ns {
                let pids = ip(&["netns", "pids", ns]).unwrap_or_default();
                for pid in pids.split_whitespace() {
                    left += 1;
                    let _ = Command::new("kill")
                        .args(["-9", pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            if left == 0 || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for ns in &self.ns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if let Some((old, new)) = self.rmem {
            let now = std::fs::read_to_string(RMEM_PATH).unwrap_or_default();
            if now.trim() == new.to_string() {
                let _ = std::fs::write(RMEM_PATH, old.to_string());
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &str, dev: &str) -> anyhow::Result<String> {
    let t = ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&t)?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no address for {dev} in {t}"))
}

/// One protocol's row of `/proc/net/snmp`: header names to values.
fn snmp_row(text: &str, proto: &str) -> std::collections::HashMap<String, u64> {
    let mut rows = text.lines().filter(|l| l.starts_with(proto));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return Default::default();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Every counter on the way from the sender to the receiver's socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames that reached the fault rules (copies made by them aside).
    pub offered: u64,
    /// Dropped by the loss rule.
    pub lost: u64,
    /// Copied by the duplication rule (each copy is a frame more).
    pub duplicated: u64,
    /// Payload overwritten by the corruption rule.
    pub corrupted: u64,
    /// Left the rules toward the qdisc (copies aside).
    pub delivered: u64,
    /// Dropped by the qdisc on the link's egress (the tbf rate cap).
    pub qdisc_dropped: u64,
    /// Dropped by a veth on transmit (`tx0`, `l1`).
    pub veth_dropped: u64,
    /// Dropped by the receiver's veth on receive (`rx0`).
    pub rx_veth_dropped: u64,
    /// The receiver namespace's UDP receive-buffer overflows.
    pub socket_drops: u64,
    /// UDP datagrams the receiver namespace delivered to a socket.
    pub udp_in: u64,
    /// UDP checksum failures in the receiver namespace (veth skips the
    /// check: a corrupted payload arrives).
    pub udp_csum_errors: u64,
    /// Datagrams that found no socket (the receiver was down).
    pub udp_no_ports: u64,
    /// ARP from the receiver's side, dropped by the diode.
    pub back_arp: u64,
    /// Everything else from the receiver's side, dropped by the diode.
    pub back_other: u64,
    /// Anything the link tried to send toward the sender, dropped.
    pub to_tx: u64,
    /// Packets that arrived at the sender's veth: none, ever.
    pub tx_received: u64,
}

/// What the kernel counted next to what the receiver reported, for one
/// receiver run on a link whose counters started with it.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    /// The link's counters.
    pub kernel: Counters,
    /// `weir_receiver_frames_received_total`.
    pub received: u64,
    /// `weir_receiver_frames_lost_total`.
    pub weir_lost: u64,
    /// `weir_receiver_frames_dropped_total{reason="corrupt"}`.
    pub weir_corrupt: u64,
    /// `weir_receiver_frames_dropped_total{reason="duplicate"}`.
    pub weir_duplicate: u64,
    /// `weir_receiver_kernel_drops_total`.
    pub weir_kernel_drops: u64,
}

impl Accounting {
    /// Reads both sides.
    pub fn new(kernel: Counters, metrics: &str) -> Self {
        let m = |name: &str| crate::rig::metric(metrics, name) as u64;
        Self {
            kernel,
            received: m("weir_receiver_frames_received_total"),
            weir_lost: m("weir_receiver_frames_lost_total"),
            weir_corrupt: m("weir_receiver_frames_dropped_total{reason=\"corrupt\"}"),
            weir_duplicate: m("weir_receiver_frames_dropped_total{reason=\"duplicate\"}"),
            weir_kernel_drops: m("weir_receiver_kernel_drops_total"),
        }
    }

    /// Checks that the two sides agree, once the link is quiet (the
    /// sender stopped and the receiver's metrics caught up):
    ///
    /// - every frame that left the rules, and every copy, reached the
    ///   receiver unless the qdisc, a veth or the socket counted it (or it
    ///   found no socket);
    /// - weir's kernel drop count is the socket's;
    /// - weir counts as corrupt every frame the rule corrupted that
    ///   reached it, and as duplicates every copy that did;
    /// - weir's loss is what the rules, the qdisc, the veths and the
    ///   socket dropped, plus the corrupted frames (their sequence number
    ///   is never trusted), less the copies that stood in for a lost
    ///   original, with a few frames of slack for the last heartbeats (a
    ///   gap shows only when a later frame comes).
    pub fn check(&self) -> Result<(), String> {
        let k = &self.kernel;
        let mut errors = Vec::new();
        let after_link = k.delivered + k.duplicated;
        let dropped_after =
            k.qdisc_dropped + k.veth_dropped + k.rx_veth_dropped + k.socket_drops + k.udp_no_ports;
        if self.received + dropped_after != after_link {
            errors.push(format!(
                "received {} + dropped after the rules {dropped_after} != delivered {} + copies {}",
                self.received, k.delivered, k.duplicated
            ));
        }
        if self.weir_kernel_drops != k.socket_drops {
            errors.push(format!(
                "weir's kernel drops {} != the socket's RcvbufErrors {}",
                self.weir_kernel_drops, k.socket_drops
            ));
        }
        if self.weir_corrupt > k.corrupted || self.weir_corrupt + dropped_after < k.corrupted {
            errors.push(format!(
                "weir counted {} corrupt of {} corrupted ({dropped_after} dropped after the rules)",
                self.weir_corrupt, k.corrupted
            ));
        }
        if self.weir_duplicate > k.duplicated
            || self.weir_duplicate + 2 * dropped_after < k.duplicated
        {
            errors.push(format!(
                "weir counted {} duplicates of {} copies ({dropped_after} dropped after the rules)",
                self.weir_duplicate, k.duplicated
            ));
        }
        let expected = k.lost + dropped_after + k.corrupted;
        let slack = 16 + k.duplicated.min(dropped_after);
        if self.weir_lost > expected || self.weir_lost + slack < expected {
            errors.push(format!(
                "weir lost {} frames; the kernel's counters make it {expected} (slack {slack})",
                self.weir_lost
            ));
        }
        if k.tx_received != 0 {
            errors.push(format!(
                "{} packets came back to the sender's side",
                k.tx_received
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n{self}", errors.join("\n")))
        }
    }
}

impl std::fmt::Display for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = &self.kernel;
        writeln!(f, "frames offered to the fault rules     {:>9}", k.offered)?;
        writeln!(
            f,
            "  dropped by the loss rule            {:>9}   (nft counter lost)",
            k.lost
        )?;
        writeln!(
            f,
            "  copied by the duplication rule      {:>9}   (nft counter duplicated)",
            k.duplicated
        )?;
        writeln!(
            f,
            "  corrupted by the corruption rule    {:>9}   (nft counter corrupted)",
            k.corrupted
        )?;
        writeln!(
            f,
            "  dropped by the qdisc                {:>9}   (tc -s qdisc: dropped)",
            k.qdisc_dropped
        )?;
        writeln!(
            f,
            "  dropped by the veths                {:>9}   (ip -s link: tx0, l1 tx dropped; rx0 rx dropped {})",
            k.veth_dropped, k.rx_veth_dropped
        )?;
        writeln!(
            f,
            "  dropped by the receiver's socket    {:>9}   (/proc/net/snmp Udp RcvbufErrors)",
            k.socket_drops
        )?;
        writeln!(
            f,
            "  found no socket                     {:>9}   (Udp NoPorts: the receiver was down)",
            k.udp_no_ports
        )?;
        writeln!(
            f,
            "  UDP checksum errors                 {:>9}   (veth delivers unchecked)",
            k.udp_csum_errors
        )?;
        writeln!(
            f,
            "  from the receiver's side, dropped   {:>9}   (diode: ARP {}, other {}; toward the sender {}; arrived there {})",
            k.back_arp + k.back_other,
            k.back_arp,
            k.back_other,
            k.to_tx,
            k.tx_received
        )?;
        writeln!(
            f,
            "weir: received {}, lost {}, corrupt {}, duplicate {}, kernel drops {}",
            self.received,
            self.weir_lost,
            self.weir_corrupt,
            self.weir_duplicate,
            self.weir_kernel_drops
        )
    }
}

/// A daemon running in one of the link's namespaces, its stderr appended
/// to a log file. Killed on drop.
#[derive(Debug)]
pub struct NsProc {
    /// The namespace.
    ns: String,
    /// The binary.
    program: PathBuf,
    /// Its arguments.
    args: Vec<OsString>,
    /// Where its stderr goes (appended to, across restarts).
    pub log: PathBuf,
    /// The process, while running.
    child: Option<Child>,
}

impl NsProc {
    fn new(link: &Link, side: Side, program: PathBuf, args: Vec<OsString>, log: PathBuf) -> Self {
        Self {
            ns: link.ns(side).to_owned(),
            program,
            args,
            log,
            child: None,
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} is running already", self.program.display());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.program)
            .args(&self.args)
            .env("WEIR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {} in {}", self.program.display(), self.ns))?;
        self.child = Some(child);
        Ok(())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and has not exited.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("not running")?;
        signal(&child, "KILL")?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        terminate(&mut child)
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `weir-receiver run` in the link's receiver namespace, listening on
/// [`rx_listen`], its spool under a test directory.
#[derive(Debug)]
pub struct Receiver {
    /// The daemon.
    pub proc: NsProc,
    /// The configuration file.
    pub config: PathBuf,
    /// The spool root.
    pub spool: PathBuf,
}

impl Receiver {
    /// Writes the configuration (`rate`: the sender's, for the receiver's
    /// buffer check; `extra`: TOML lines for the `[limits]` section).
    pub fn configure(
        link: &Link,
        dir: &Path,
        trust: &Path,
        rate: &str,
        limits: &str,
    ) -> anyhow::Result<Self> {
        let (config, spool) = crate::daemons::receiver_config(
            dir,
            rx_listen(),
            trust,
            &format!("rate = \"{rate}\"\nreceive_buffer = \"64MiB\""),
            &format!("[limits]\ncheckpoint_interval = \"200ms\"\n{limits}"),
        )?;
        let proc = NsProc::new(
            link,
            Side::Rx,
            crate::bin::path("weir-receiver"),
            vec!["run".into(), "--config".into(), config.clone().into()],
            dir.join("receiver.log"),
        );
        Ok(Self {
            proc,
            config,
            spool,
        })
    }

    /// Starts it and waits (up to 20 s) for its first status snapshot.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.spool.join("status.json"));
        self.proc.spawn()?;
        let pid = self.proc.pid().map(u64::from);
        let res = wait_for(
            "the receiver's status file",
            Duration::from_secs(20),
            || self.status().is_ok_and(|s| s["pid"].as_u64() == pid),
        );
        if res.is_err() {
            bail!("the receiver did not start:\n{}", self.proc.log_tail(40));
        }
        Ok(())
    }

    /// Its latest status snapshot.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(self.spool.join("status.json"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET /metrics`, from inside its namespace.
    pub fn scrape(&self, link: &Link) -> anyhow::Result<String> {
        let s = self.status()?;
        let addr: SocketAddr = s["metrics"]
            .as_str()
            .context("no metrics address in status.json")?
            .parse()?;
        link.scrape(addr)
    }

    /// Files in a spool directory (`staging`, `quarantine`, ...), sorted.
    pub fn files(&self, sub: &str) -> Vec<String> {
        list(&self.spool.join(sub))
    }

    /// Blocks done and blocks in all of the first transfer in flight, from
    /// the status snapshot (written every second).
    pub fn progress(&self) -> Option<(u64, u64)> {
        let s = self.status().ok()?;
        let t = s["transfers"].as_array()?.first()?.clone();
        Some((t["blocks_done"].as_u64()?, t["blocks"].as_u64()?))
    }
}

/// `weir-sender run` in the link's sender namespace, aimed at the
/// receiver, its spool under a test directory.
#[derive(Debug)]
pub struct Sender {
    /// The daemon.
    pub proc: NsProc,
    /// The configuration file.
    pub config: PathBuf,
    /// The spool root (`outbox/`, `sent/`, `journal.jsonl`, ...).
    pub spool: PathBuf,
}

impl Sender {
    /// Writes the configuration: `rate`, `passes`, and `extra` TOML lines
    /// for the `[transfer]` section.
    pub fn configure(
        link: &Link,
        dir: &Path,
        trust: &Path,
        rate: &str,
        passes: u32,
        transfer_extra: &str,
    ) -> anyhow::Result<Self> {
        let spool = dir.join("tx-spool");
        let config = crate::daemons::sender_config_from(
            dir,
            &format!("{TX_ADDR}:0"),
            rx_listen(),
            trust,
            rate,
            passes,
            transfer_extra,
            "",
        )?;
        let proc = NsProc::new(
            link,
            Side::Tx,
            crate::bin::path("weir-sender"),
            vec!["run".into(), "--config".into(), config.clone().into()],
            dir.join("sender.log"),
        );
        Ok(Self {
            proc,
            config,
            spool,
        })
    }

    /// Starts it and waits (up to 20 s) until it runs.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let before = self.proc.log_text().matches("weir-sender running").count();
        self.proc.spawn()?;
        let res = wait_for("the sender to run", Duration::from_secs(20), || {
            self.proc.log_text().matches("weir-sender running").count() > before
        });
        if res.is_err() {
            bail!("the sender did not start:\n{}", self.proc.log_tail(40));
        }
        Ok(())
    }

    /// Puts a bundle in the outbox as an operator would: a hard link under
    /// a temporary name in the spool, then a rename (the test keeps its
    /// own name for the bytes).
    pub fn offer(&self, bundle: &Path) -> anyhow::Result<()> {
        let name = bundle.file_name().context("bundle without a name")?;
        let outbox = self.spool.join("outbox");
        std::fs::create_dir_all(&outbox)?;
        let tmp = self.spool.join(format!(".{}.tmp", name.to_string_lossy()));
        std::fs::hard_link(bundle, &tmp)
            .with_context(|| format!("linking {} into the spool", bundle.display()))?;
        std::fs::rename(&tmp, outbox.join(name))?;
        Ok(())
    }

    /// The journal: one record per bundle whose every pass went out (none
    /// before the first). A line that is not a record fails the test.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let path = self.spool.join("journal.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("reading {}: {e}", path.display()),
        };
        text.lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{} holds {l:?}: {e}", path.display()))
            })
            .collect()
    }

    /// Files in a spool directory (`outbox`, `sent`, `failed`), sorted.
    pub fn files(&self, sub: &str) -> Vec<String> {
        list(&self.spool.join(sub))
            .into_iter()
            .filter(|f| f != "urgent")
            .collect()
    }
}

/// Names in a directory, sorted; none if it does not exist (a sender
/// makes some of its directories only when it needs them). Any other
/// error fails the test.
fn list(dir: &Path) -> Vec<String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("listing {}: {e}", dir.display()),
    };
    let mut v: Vec<String> = rd
        .map(|e| {
            e.unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}
