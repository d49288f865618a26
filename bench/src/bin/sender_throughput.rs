//! Sender throughput: the weir send loop with no rate limit (FEC, framing,
//! CRC, batched GSO sends) against a plain sender that sends one datagram
//! per syscall, both into a draining socket on 127.0.0.1, in the same run.
//!
//! Prints datagrams per second and CPU seconds per GB for each, and the
//! ratio. `cargo run --release -p weir-bench --bin sender_throughput [MIB]`

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use weir_protocol::{Chunker, ChunkerConfig, Integrity, LinkEncoder, Mtu, Rate};
use weir_sender::engine::{Engine, EngineConfig};
use weir_sender::udp::UdpLink;
use weir_tests::sim::{describe, sample_bytes};

/// A child process that drains a UDP port (so its CPU is not counted here).
fn drain() -> anyhow::Result<(Child, std::net::SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--drain")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let out = child.stdout.as_mut().context("drain stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    Ok((child, line.trim().parse()?))
}

/// Drains a socket with UDP GRO on (through quinn-udp), as a receiver
/// would: a GSO batch then crosses loopback without being cut up.
fn run_drain() -> anyhow::Result<()> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    // Enable GRO before telling the parent where to send.
    let _ = quinn_udp::UdpSocketState::new((&s).into())?;
    println!("{}", s.local_addr()?);
    weir_bench::gro_receive(&s, Duration::from_secs(5), |_| {})?;
    Ok(())
}

struct Figures {
    datagrams: u64,
    bytes: u64,
    secs: f64,
    cpu: f64,
}

impl Figures {
    fn print(&self, name: &str) {
        println!(
            "{name:<28} {:>10.0} datagrams/s {:>8.0} MB/s {:>6.3} CPU s/GB ({} datagrams, {:.2} s)",
            self.datagrams as f64 / self.secs,
            self.bytes as f64 / self.secs / 1e6,
            self.cpu / (self.bytes as f64 / 1e9),
            self.datagrams,
            self.secs
        );
    }
}

fn weir(mtu: Mtu, bytes: &[u8]) -> anyhow::Result<Figures> {
    let (mut child, dest) = drain()?;
    let max_datagram = mtu.max_datagram(false);
    let link = LinkEncoder::new(1, Integrity::Crc32c);
    let shard = link.shard_size_for(max_datagram).context("shard")?;
    let fec = weir_protocol::FecParams::default_for_shard_size(shard)?;
    let desc = describe("bench.weir", bytes, fec);
    let mut chunker = Chunker::new(
        desc,
        std::io::Cursor::new(bytes.to_vec()),
        ChunkerConfig {
            passes: 1,
            ..ChunkerConfig::default()
        },
    );
    let (udp, _) = UdpLink::open("127.0.0.1:0".parse()?, dest, 16 << 20)?;
    let config = EngineConfig {
        rate: Rate::from_bits_per_sec(100_000_000_000)?,
        max_datagram,
        heartbeat: Duration::from_secs(1),
        pass_pause: Duration::ZERO,
    };
    let mut engine = Engine::new(link, udp, config);
    let stop = AtomicBool::new(false);
    let cpu0 = weir_bench::cpu_seconds(None);
    let t = Instant::now();
    engine.send(&mut chunker, 1, &stop, &mut || false, &mut |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = weir_bench::cpu_seconds(None) - cpu0;
    let _ = child.kill();
    let s = engine.stats();
    Ok(Figures {
        datagrams: s.frames,
        bytes: s.bytes,
        secs,
        cpu,
    })
}

fn plain(size: usize, count: u64) -> anyhow::Result<Figures> {
    let (mut child, dest) = drain()?;
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let _ = socket2::SockRef::from(&s).set_send_buffer_size(16 << 20);
    let buf = vec![0x5au8; size];
    let cpu0 = weir_bench::cpu_seconds(None);
    let t = Instant::now();
    for _ in 0..count {
        s.send_to(&buf, dest)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = weir_bench::cpu_seconds(None) - cpu0;
    let _ = child.kill();
    Ok(Figures {
        datagrams: count,
        bytes: count * size as u64,
        secs,
        cpu,
    })
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--drain") {
        return run_drain();
    }
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(512);
    let bytes = sample_bytes(7, mib << 20);
    for mtu in [Mtu::ETHERNET, Mtu::JUMBO] {
        println!(
            "MTU {} ({} MiB bundle, no rate limit, 127.0.0.1, 5 runs side by side):",
            mtu.get(),
            mib
        );
        let mut ratios = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..5 {
            let w = weir(mtu, &bytes)?;
            if std::env::var_os("WEIR_BENCH_WEIR_ONLY").is_some() {
                w.print("weir sender (FEC 256+64)");
                continue;
            }
            let p = plain(mtu.max_datagram(false), w.datagrams)?;
            w.print("weir sender (FEC 256+64)");
            p.print("plain, 1 datagram/syscall");
            ratios.push((w.datagrams as f64 / w.secs) / (p.datagrams as f64 / p.secs));
            cpu.push(w.cpu / (w.bytes as f64 / 1e9));
        }
        let median = weir_bench::median;
        println!(
            "median ratio: {:.2}x the plain sender's datagrams per second; median weir sender CPU {:.3} s/GB\n",
            median(&ratios),
            median(&cpu)
        );
    }
    Ok(())
}
