//! Pacing accuracy over real UDP on 127.0.0.1: the weir send loop at set
//! rates from 10 Mbit/s to 10 Gbit/s, measured second by second by a
//! receiving socket with UDP GRO (so that it keeps up).
//!
//! `cargo run --release -p weir-bench --bin pacing_accuracy` (set `RATES=1Gbit,10Gbit`
//! to choose the rates).

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use weir_protocol::{Chunker, ChunkerConfig, Integrity, LinkEncoder, Rate};
use weir_sender::engine::{Engine, EngineConfig};
use weir_sender::udp::UdpLink;
use weir_tests::sim::{default_fec, describe, sample_bytes};

fn main() -> anyhow::Result<()> {
    let secs = 3.5;
    for rate in std::env::var("RATES")
        .map(|r| r.split(",").map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_else(|_| {
            [
                "10Mbit", "20Mbit", "100Mbit", "400Mbit", "1Gbit", "5Gbit", "10Gbit",
            ]
            .map(String::from)
            .to_vec()
        })
    {
        let rate: Rate = rate.parse()?;
        let size = (rate.bytes_per_sec() * secs * 0.8) as usize;
        let bytes = sample_bytes(3, size);
        let desc = describe("pace.weir", &bytes, default_fec());
        let mut chunker = Chunker::new(
            desc,
            std::io::Cursor::new(bytes),
            ChunkerConfig {
                passes: 1,
                ..ChunkerConfig::default()
            },
        );
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        let dest = rx.local_addr()?;
        // Kernel receive timestamps (SO_TIMESTAMPNS, which quinn-udp turns
        // on), so that the receiving thread's own scheduling does not blur
        // the windows.
        let receiver = std::thread::spawn(move || -> anyhow::Result<Vec<(Duration, usize)>> {
            let mut arrivals = Vec::new();
            weir_bench::gro_receive(&rx, Duration::from_millis(500), |batch| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                for m in batch {
                    arrivals.push((m.timestamp.unwrap_or(now), m.len));
                }
            })?;
            Ok(arrivals)
        });
        let (udp, _) = UdpLink::open("127.0.0.1:0".parse()?, dest, 16 << 20)?;
        let config = EngineConfig {
            rate,
            max_datagram: 1472,
            heartbeat: Duration::from_secs(1),
            pass_pause: Duration::ZERO,
        };
        let mut engine = Engine::new(LinkEncoder::new(1, Integrity::Crc32c), udp, config);
        let stop = AtomicBool::new(false);
        let t = Instant::now();
        engine.send(&mut chunker, 1, &stop, &mut || false, &mut |_| {})?;
        let elapsed = t.elapsed().as_secs_f64();
        let sent = engine.stats().bytes;
        let arrivals = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        let Some(t0) = arrivals.first().map(|a| a.0) else {
            anyhow::bail!("nothing arrived");
        };
        let whole = elapsed.floor() as usize;
        let mut per_second = vec![0f64; whole + 1];
        for (t, n) in &arrivals {
            if let Some(w) = per_second.get_mut(t.saturating_sub(t0).as_secs() as usize) {
                *w += *n as f64;
            }
        }
        per_second.truncate(whole);
        let ratios: Vec<String> = per_second
            .iter()
            .map(|b| format!("{:.4}", b * 8.0 / rate.bits_per_sec() as f64))
            .collect();
        let received: usize = arrivals.iter().map(|a| a.1).sum();
        println!(
            "{rate:>8}: sender {:.4} of the rate over {elapsed:.2} s; received {:.1}% of what was sent; per second at the receiver: [{}]",
            sent as f64 * 8.0 / elapsed / rate.bits_per_sec() as f64,
            received as f64 * 100.0 / sent as f64,
            ratios.join(", ")
        );
    }
    Ok(())
}
