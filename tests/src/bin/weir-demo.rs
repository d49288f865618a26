//! The loopback demo: one bundle-sized file crosses a simulated one-way
//! link on 127.0.0.1 (3% of frames lost, some reordered, a few corrupted)
//! and is rebuilt, verified and published by the protocol core.
//!
//! ```text
//!  outbox/demo-1.0.weir ─▶ sender ─UDP─▶ lossy link ─UDP─▶ receiver ─▶ staging/
//! ```
//!
//! Until the daemons land, this drives the protocol core directly through
//! the small UDP driver in `weir_tests::udp`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weir_protocol::{ChunkerConfig, Integrity, LinkEncoder, Reassembler, ReassemblerConfig};
use weir_tests::link::{LinkProfile, LossyLink};
use weir_tests::sim::{default_fec, describe, sample_bytes};
use weir_tests::udp::{FileSource, Received, lossy_proxy, receive, send_paced};

const SIZE: usize = 48 << 20;
const RATE: u64 = 30_000_000; // bytes per second on the link

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox)?;
    let bundle = outbox.join("demo-1.0.weir");
    let bytes = sample_bytes(2026, SIZE);
    std::fs::write(&bundle, &bytes)?;
    println!("weir demo in {}", dir.display());
    println!("  made {} ({} MiB)", bundle.display(), SIZE >> 20);

    let rx_socket = UdpSocket::bind("127.0.0.1:0")?;
    let rx_addr = rx_socket.local_addr()?;
    let proxy_socket = UdpSocket::bind("127.0.0.1:0")?;
    let proxy_addr = proxy_socket.local_addr()?;
    let profile = LinkProfile {
        loss: 0.03,
        reorder: 0.01,
        reorder_depth: 20,
        bit_flip: 0.001,
        ..LinkProfile::default()
    };
    println!(
        "  link: 127.0.0.1, 3% loss, 1% reordered, 0.1% corrupted, {} Mbit/s",
        RATE * 8 / 1_000_000
    );

    let recv_dir = dir.clone();
    let receiver = std::thread::spawn(move || {
        let mut r = Reassembler::new(ReassemblerConfig {
            transfer_expiry: Duration::from_secs(5),
            ..ReassemblerConfig::default()
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = receive(&rx_socket, &mut r, &recv_dir, 1, deadline);
        (got, r.stats())
    });
    let proxy = std::thread::spawn(move || {
        lossy_proxy(
            &proxy_socket,
            rx_addr,
            LossyLink::new(profile, 7),
            Duration::from_secs(2),
        )
    });

    let desc = describe("demo-1.0.weir", &bytes, default_fec());
    let source = FileSource(std::fs::File::open(&bundle)?);
    let config = ChunkerConfig {
        passes: 2,
        ..ChunkerConfig::default()
    };
    let mut chunker = weir_protocol::Chunker::new(desc.clone(), source, config);
    let mut link = LinkEncoder::new(std::process::id().into(), Integrity::Crc32c);
    let tx_socket = UdpSocket::bind("127.0.0.1:0")?;
    let sent = send_paced(&tx_socket, proxy_addr, &mut chunker, &mut link, RATE)?;
    println!(
        "  sent {} frames, {} MiB in {:.2} s ({} passes, FEC {}+{} x{})",
        sent.frames,
        sent.bytes >> 20,
        sent.elapsed.as_secs_f64(),
        config.passes,
        desc.fec.data_shards(),
        desc.fec.parity_shards(),
        desc.fec.interleave()
    );

    let (got, stats) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let link_counts = proxy
        .join()
        .map_err(|_| anyhow::anyhow!("proxy panicked"))??;
    println!(
        "  link dropped {} frames, reordered {}, corrupted {}",
        link_counts.lost, link_counts.reordered, link_counts.flipped
    );
    println!(
        "  receiver: {} blocks clean, {} repaired by FEC, {} corrupt frames dropped, {} frames missing (link and socket buffers)",
        stats.blocks_clean, stats.blocks_repaired, stats.dropped.corrupt, stats.loss.lost
    );
    match got.context("receiver")?.first() {
        Some(Received::Published { path, descriptor }) => {
            let landed = std::fs::read(path)?;
            if landed != bytes {
                bail!("{} differs from what was sent", path.display());
            }
            println!(
                "  published {} ({} bytes, BLAKE3 {})",
                path.display(),
                landed.len(),
                descriptor.hash()
            );
            println!("ok: bit-identical in staging/");
            Ok(())
        }
        other => bail!("the bundle did not arrive: {other:?}"),
    }
}
