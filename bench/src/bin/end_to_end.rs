//! End to end: the real `weir-sender run` and `weir-receiver run` over
//! 127.0.0.1 with a generated signed bundle, against raw UDP baselines of
//! the same datagram size measured in the same run.
//!
//! ```text
//!  outbox/ ─▶ weir-sender run ─UDP─▶ weir-receiver run ─▶ staging/
//!             (verify, FEC 256+64,     (reassemble, write, BLAKE3,
//!              paced, GSO)              verify, publish)
//!  baselines: send_to ─▶ recv_from (one datagram per syscall)
//!             GSO sendmsg ─▶ GRO recvmmsg (quinn-udp)
//! ```
//!
//! Goodput is the bundle's size over the time from the first frame on the
//! link to the bundle's appearance in `staging/` (so the receiver's
//! verification is included; the sender's check, which comes before any
//! frame, is reported apart, as is the time from the outbox to
//! `staging/`). CPU seconds per GB and peak RSS come from `/proc` for each
//! daemon, check included. Baselines count the bytes that arrived at the
//! receiving socket over the time between the first and last arrival, and
//! the CPU seconds both of their ends used: what the kernel alone costs to
//! move those datagrams.
//!
//! ```sh
//! cargo build --release --locked -p weir-sender -p weir-receiver -p weir-bench --bins
//! target/release/end_to_end            # 1 GiB, MTU 1500 and 9000, 3 runs each
//! WEIR_BENCH_SIZE=4GiB WEIR_BENCH_MTUS=9000 WEIR_BENCH_RUNS=1 target/release/end_to_end
//! ```
//! Rates: `WEIR_BENCH_RATE_1500`, `WEIR_BENCH_RATE_9000` (the sender's
//! pacing, 12 and 16 Gbit/s unless set; the header of each set gives the
//! goodput it allows at most).
//! `WEIR_BENCH_DIR` is where the bundle and both spools live (`/var/tmp`,
//! a disk; `/dev/shm` takes the disk out of the measurement).
//! `WEIR_BENCH_PERF=file` records a `perf` profile of both daemons from the
//! drop into the outbox to the publication; `WEIR_BENCH_PERF_ARGS` adds
//! arguments to `perf record` (e.g. `--call-graph dwarf`).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weir_bench::{cpu_seconds, gro_receive, median, peak_rss};
use weir_protocol::{ByteSize, Mtu, Rate};
use weir_sender::udp::UdpLink;
use weir_tests::daemons::{ReceiverProc, free_udp_addr, sender_config, terminate, wait_for};

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join(name);
    if !p.exists() {
        bail!(
            "{} is missing: cargo build --release --locked -p weir-sender -p weir-receiver -p weir-bench --bins",
            p.display()
        );
    }
    Ok(p)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// Bytes per second that arrived at a receiving socket.
#[derive(Debug, Clone, Copy)]
struct Arrivals {
    bytes: u64,
    secs: f64,
    /// CPU seconds both ends used (this process, user and system): the
    /// kernel's own cost of moving the datagrams, since the baselines do
    /// nothing with the bytes.
    cpu: f64,
}

impl Arrivals {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / self.secs
        } else {
            0.0
        }
    }

    /// CPU seconds per GB that arrived.
    fn cpu_per_gb(&self) -> f64 {
        if self.bytes > 0 {
            self.cpu / (self.bytes as f64 / 1e9)
        } else {
            0.0
        }
    }
}

/// Raw UDP, one datagram per `send_to` and per `recv_from`.
fn baseline_plain(size: usize, total: u64) -> anyhow::Result<Arrivals> {
    let cpu = cpu_seconds(None);
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(64 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(500)))?;
    let dest = rx.local_addr()?;
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut bytes = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            bytes += n as u64;
        }
        Arrivals {
            bytes,
            secs: first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0),
            cpu: 0.0,
        }
    });
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let _ = socket2::SockRef::from(&tx).set_send_buffer_size(16 << 20);
    let buf = vec![0x5au8; size];
    for _ in 0..total / size as u64 {
        tx.send_to(&buf, dest)?;
    }
    let mut arrived = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    arrived.cpu = cpu_seconds(None) - cpu;
    Ok(arrived)
}

/// Raw UDP with GSO batches out and GRO batches in (quinn-udp).
fn baseline_gso(size: usize, total: u64) -> anyhow::Result<Arrivals> {
    let cpu = cpu_seconds(None);
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let _ = quinn_udp::UdpSocketState::new((&rx).into())?;
    let dest = rx.local_addr()?;
    let ready = Arc::new(AtomicBool::new(false));
    let receiver = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            let mut bytes = 0u64;
            let mut first = None;
            let mut last = Instant::now();
            ready.store(true, Ordering::Relaxed);
            let r = gro_receive(&rx, Duration::from_millis(500), |metas| {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                bytes += metas.iter().map(|m| m.len as u64).sum::<u64>();
            });
            r.map(|()| Arrivals {
                bytes,
                secs: first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0),
                cpu: 0.0,
            })
        })
    };
    while !ready.load(Ordering::Relaxed) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
    let (link, _) = UdpLink::open("127.0.0.1:0".parse()?, dest, 16 << 20)?;
    let segments = link.max_segments().min(65_000 / size).max(1);
    let batch = vec![0x5au8; size * segments];
    let mut sent = 0u64;
    while sent < total {
        link.send(&batch, size)?;
        sent += batch.len() as u64;
    }
    let mut arrived = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    arrived.cpu = cpu_seconds(None) - cpu;
    Ok(arrived)
}

/// One transfer through both daemons.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Bundle bytes per second from the first frame to publication.
    goodput: f64,
    /// Seconds from the outbox to staging/.
    latency: f64,
    /// Seconds before the first frame (settle time and the sender's check).
    first: f64,
    /// Seconds the receiver spent verifying and publishing.
    verify: f64,
    sender_cpu: f64,
    /// Of which before the first frame (the check of the bundle).
    sender_check_cpu: f64,
    receiver_cpu: f64,
    sender_rss: u64,
    receiver_rss: u64,
    repaired: f64,
    lost: f64,
    kernel_drops: f64,
    /// Seconds the receive loop waited for the writer.
    stall: f64,
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn pid(child: &Child) -> u32 {
    child.id()
}

struct Bins {
    sender: PathBuf,
    receiver: PathBuf,
}

fn weir_run(bins: &Bins, dir: &Path, bundle: &Path, mtu: Mtu, rate: &str) -> anyhow::Result<Run> {
    let size = std::fs::metadata(bundle)?.len();
    let run_dir = tempfile::tempdir_in(dir)?;
    let trust = dir.join("trust.toml");
    let rx_addr: SocketAddr = free_udp_addr()?;
    let mut rx = ReceiverProc::configure(
        &bins.receiver,
        run_dir.path(),
        rx_addr,
        &trust,
        &format!("mtu = {}\nrate = \"{rate}\"", mtu.get()),
        "",
    )?;
    rx.start()?;
    let rx_pid = rx.pid().context("receiver pid")?;
    let config = sender_config(run_dir.path(), rx_addr, &trust, rate, 2, "")?;
    let mut tx = Command::new(&bins.sender)
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_SENDER_LINK__MTU", mtu.get().to_string())
        .env("WEIR_SENDER_LINK__SEND_BUFFER", (32u32 << 20).to_string())
        .stderr(Stdio::null())
        .spawn()?;
    let outbox = run_dir.path().join("tx-spool").join("outbox");
    wait_for("the sender's outbox", Duration::from_secs(10), || {
        outbox.exists()
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let (tx_cpu0, rx_cpu0) = (cpu_seconds(Some(pid(&tx))), cpu_seconds(Some(rx_pid)));
    // Optional profile of both daemons over the transfer alone.
    let perf = match std::env::var_os("WEIR_BENCH_PERF") {
        Some(out) => Some(
            Command::new("perf")
                .args(["record", "-F", "999", "-o"])
                .arg(out)
                .args(
                    std::env::var("WEIR_BENCH_PERF_ARGS")
                        .unwrap_or_default()
                        .split_whitespace(),
                )
                .arg("-p")
                .arg(format!("{},{rx_pid}", pid(&tx)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ),
        None => None,
    };
    let t0 = Instant::now();
    std::fs::hard_link(bundle, outbox.join("bench.weir"))?;
    let staged = rx.spool.join("staging").join("bench_1.weir");
    // The transfer starts when the receiver creates its partial file (at
    // the first descriptor, after the sender's settle time and check).
    let incoming = rx.spool.join("incoming");
    let mut first = None;
    let mut tx_cpu_first = 0.0;
    let tx_pid = pid(&tx);
    let arrived = wait_for("the bundle in staging/", Duration::from_secs(60), || {
        if first.is_none()
            && std::fs::read_dir(&incoming).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
            })
        {
            first = Some(t0.elapsed().as_secs_f64());
            tx_cpu_first = cpu_seconds(Some(tx_pid));
        }
        staged.exists()
    });
    let secs = t0.elapsed().as_secs_f64();
    let first = first.unwrap_or(0.0);
    let (tx_cpu, rx_cpu) = (
        cpu_seconds(Some(pid(&tx))) - tx_cpu0,
        cpu_seconds(Some(rx_pid)) - rx_cpu0,
    );
    let (tx_rss, rx_rss) = (peak_rss(pid(&tx)), peak_rss(rx_pid));
    if let Some(mut p) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
    if let Err(e) = arrived {
        let _ = terminate(&mut tx);
        let m = rx.scrape().unwrap_or_default();
        let counters: Vec<&str> = m
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .collect();
        bail!("{e}\n{}\nmetrics:\n{}", rx.log_text(), counters.join("\n"));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let m = rx.scrape()?;
    let verify = rx
        .status()?
        .pointer("/recent/0/seconds")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    terminate(&mut tx)?;
    rx.stop()?;
    if std::fs::metadata(&staged)?.len() != size {
        bail!("staged bundle has the wrong size");
    }
    let gb = size as f64 / 1e9;
    Ok(Run {
        goodput: size as f64 / (secs - first),
        latency: secs,
        first,
        verify,
        sender_cpu: tx_cpu / gb,
        sender_check_cpu: (tx_cpu_first - tx_cpu0) / gb,
        receiver_cpu: rx_cpu / gb,
        sender_rss: tx_rss,
        receiver_rss: rx_rss,
        repaired: metric(&m, "weir_receiver_blocks_total{how=\"repaired\"}"),
        lost: metric(&m, "weir_receiver_frames_lost_total"),
        kernel_drops: metric(&m, "weir_receiver_kernel_drops_total"),
        stall: metric(&m, "weir_receiver_receive_stall_seconds_total"),
    })
}

/// The sender's pacing unless `WEIR_BENCH_RATE_<MTU>` says otherwise: fast
/// enough not to cap goodput on this machine (at 7 Gbit/s the pacing alone
/// held MTU 1500 to 677 MB/s of bundle, and the runs were at that cap),
/// slow enough for the receiver's disk, which writes 1.0-1.5 GB/s here (at
/// MTU 9000 and 20 Gbit/s the receive loop began to wait for it).
fn default_rate(mtu: Mtu) -> &'static str {
    if mtu.get() >= 9000 {
        "16Gbit"
    } else {
        "12Gbit"
    }
}

fn make_bundle(bins: &Bins, dir: &Path, size: u64) -> anyhow::Result<PathBuf> {
    let key = dir.join("bench");
    let ok = Command::new(&bins.sender)
        .args(["keygen", "--out"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()?;
    if !ok.success() {
        bail!("keygen failed");
    }
    let ok = Command::new(&bins.receiver)
        .args(["trust", "add", "--trust"])
        .arg(dir.join("trust.toml"))
        .args(["--id", "bench", "--name", "bench", "--role", "build"])
        .arg(dir.join("bench.pub"))
        .stdout(Stdio::null())
        .status()?;
    if !ok.success() {
        bail!("trust add failed");
    }
    // Leave room for the tar headers and manifest.
    let artifact = dir.join("payload.bin");
    weir_tests::bundles::write_random_file(&artifact, size - (64 << 10), 1)?;
    let bundle = dir.join("bench.weir");
    let ok = Command::new(&bins.sender)
        .args(["bundle", "create", "--key"])
        .arg(dir.join("bench.key"))
        .args(["--name", "bench", "--version", "1", "--out"])
        .arg(&bundle)
        .arg(&artifact)
        .stdout(Stdio::null())
        .status()?;
    if !ok.success() {
        bail!("bundle create failed");
    }
    std::fs::remove_file(&artifact)?;
    // On disk before the runs: otherwise the kernel writes the new bundle
    // back half a minute later, in the middle of a run, competing with the
    // receiver's writes.
    std::fs::File::open(&bundle)?.sync_all()?;
    Ok(bundle)
}

/// Socket buffer limits raised for the run (the receiver asks for 64 MiB
/// and says which sysctl to raise when it gets less; this does what an
/// operator would), restored on drop.
struct Sysctls(Vec<(&'static str, String)>);

impl Sysctls {
    fn raise() -> Self {
        let mut old = Vec::new();
        for path in ["/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"] {
            let Ok(v) = std::fs::read_to_string(path) else {
                continue;
            };
            let cur: u64 = v.trim().parse().unwrap_or(0);
            if cur >= 64 << 20 {
                continue;
            }
            if std::fs::write(path, (64u64 << 20).to_string()).is_ok() {
                println!("raised {path} from {cur} to {} for the run", 64u64 << 20);
                old.push((path, v));
            } else {
                println!(
                    "{path} is {cur}: the receiver's 64 MiB socket buffer is capped (run as root to raise it)"
                );
            }
        }
        Self(old)
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        for (path, v) in &self.0 {
            let _ = std::fs::write(path, v);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let _sysctls = Sysctls::raise();
    let bins = Bins {
        sender: sibling("weir-sender")?,
        receiver: sibling("weir-receiver")?,
    };
    let size: ByteSize = env_or("WEIR_BENCH_SIZE", "1GiB").parse()?;
    let runs: usize = env_or("WEIR_BENCH_RUNS", "3").parse()?;
    let mtus: Vec<u32> = env_or("WEIR_BENCH_MTUS", "1500,9000")
        .split(',')
        .map(|m| m.trim().parse())
        .collect::<Result<_, _>>()?;
    let dir = tempfile::Builder::new()
        .prefix("weir-e2e-")
        .tempdir_in(env_or("WEIR_BENCH_DIR", "/var/tmp"))?;
    let bundle = make_bundle(&bins, dir.path(), size.bytes())?;
    let size = std::fs::metadata(&bundle)?.len();
    println!(
        "end to end: {} bundle ({size} bytes), FEC 256+64 (20% parity) with the sender's interleave for the MTU, 2 passes planned, {runs} run(s) per setting, 127.0.0.1",
        ByteSize(size)
    );
    for mtu in mtus {
        let mtu = Mtu::new(mtu).map_err(|e| anyhow::anyhow!("{e}"))?;
        let datagram = mtu.max_datagram(false);
        let rate = env_or(&format!("WEIR_BENCH_RATE_{}", mtu.get()), default_rate(mtu));
        let shard = weir_protocol::LinkEncoder::new(0, weir_protocol::Integrity::Crc32c)
            .shard_size_for(datagram)
            .context("no room for a shard")?;
        // The most bundle bytes per second the pacing lets through: the
        // rate, less frame overhead and the 20% parity.
        let cap = rate
            .parse::<Rate>()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .bytes_per_sec()
            * shard as f64
            / datagram as f64
            * 256.0
            / 320.0;
        println!(
            "\nMTU {} ({datagram}-byte datagrams, {shard}-byte shards, interleave {}), sender paced at {rate} (at most {:.0} MB/s of bundle):",
            mtu.get(),
            weir_protocol::FecParams::auto_interleave(256, shard),
            cap / 1e6,
        );
        let (mut plain, mut gso, mut weir) = (Vec::new(), Vec::new(), Vec::new());
        let weir_only = std::env::var_os("WEIR_BENCH_WEIR_ONLY").is_some();
        for i in 0..runs {
            let (p, g) = if weir_only {
                let none = Arrivals {
                    bytes: 0,
                    secs: 0.0,
                    cpu: 0.0,
                };
                (none, none)
            } else {
                eprintln!("  run {}: baseline, one datagram per syscall", i + 1);
                let p = baseline_plain(datagram, size)?;
                eprintln!("  run {}: baseline, GSO/GRO", i + 1);
                (p, baseline_gso(datagram, size)?)
            };
            if std::env::var_os("WEIR_BENCH_BASELINES_ONLY").is_some() {
                println!(
                    "  run {}: 1/syscall {:6.0} MB/s ({} of {} bytes arrived, {:.2} CPU s/GB) | GSO/GRO {:6.0} MB/s ({} bytes arrived, {:.2} CPU s/GB)",
                    i + 1,
                    p.rate() / 1e6,
                    p.bytes,
                    size,
                    p.cpu_per_gb(),
                    g.rate() / 1e6,
                    g.bytes,
                    g.cpu_per_gb(),
                );
                continue;
            }
            eprintln!("  run {}: weir-sender run -> weir-receiver run", i + 1);
            let w = weir_run(&bins, dir.path(), &bundle, mtu, &rate)?;
            let baselines = if weir_only {
                String::new()
            } else {
                format!(
                    " | 1/syscall {:6.0} MB/s | GSO/GRO {:6.0} MB/s at {:.2} CPU s/GB",
                    p.rate() / 1e6,
                    g.rate() / 1e6,
                    g.cpu_per_gb(),
                )
            };
            println!(
                "  run {}: weir {:6.0} MB/s (outbox to staging/ {:.2} s, first frame after {:.2} s, verify and publish {:.2} s; sender {:.2} (check {:.2}) + receiver {:.2} CPU s/GB, RSS {:.0} / {:.0} MiB, {} frames lost, {} kernel drops, {:.2} s stalled on the disk, {} blocks repaired){baselines}",
                i + 1,
                w.goodput / 1e6,
                w.latency,
                w.first,
                w.verify,
                w.sender_cpu,
                w.sender_check_cpu,
                w.receiver_cpu,
                w.sender_rss as f64 / 1048576.0,
                w.receiver_rss as f64 / 1048576.0,
                w.lost,
                w.kernel_drops,
                w.stall,
                w.repaired,
            );
            plain.push(p.rate());
            gso.push(g.rate());
            weir.push(w);
        }
        let good: Vec<f64> = weir.iter().map(|w| w.goodput).collect();
        let cpu: Vec<f64> = weir.iter().map(|w| w.sender_cpu + w.receiver_cpu).collect();
        let ratio_plain: Vec<f64> = good.iter().zip(&plain).map(|(w, p)| w / p).collect();
        let ratio_gso: Vec<f64> = good.iter().zip(&gso).map(|(w, g)| w / g).collect();
        let rss = weir.iter().map(|w| w.receiver_rss).max().unwrap_or(0);
        if weir_only {
            println!(
                "  median: weir {:.0} MB/s; both daemons {:.2} CPU s/GB; receiver peak RSS {:.0} MiB",
                median(&good) / 1e6,
                median(&cpu),
                rss as f64 / 1048576.0
            );
            continue;
        }
        println!(
            "  median: weir {:.0} MB/s = {:.2}x one-datagram-per-syscall ({:.0} MB/s), {:.0}% of GSO/GRO ({:.0} MB/s); both daemons {:.2} CPU s/GB; receiver peak RSS {:.0} MiB",
            median(&good) / 1e6,
            median(&ratio_plain),
            median(&plain) / 1e6,
            median(&ratio_gso) * 100.0,
            median(&gso) / 1e6,
            median(&cpu),
            rss as f64 / 1048576.0
        );
    }
    Ok(())
}
