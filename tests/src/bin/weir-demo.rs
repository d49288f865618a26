//! The loopback demo: makes a signing key and a signed bundle, sends it
//! with the weir sender's paced send loop across a simulated one-way link
//! on 127.0.0.1 (3% of frames lost, some reordered, a few corrupted), and
//! rebuilds, checks and publishes it on the other side.
//!
//! ```text
//!  keygen ─▶ bundle create ─▶ sender engine ─UDP─▶ lossy link ─UDP─▶ reassembler
//!                                                   ─▶ BLAKE3 ─▶ signature check ─▶ staging/
//! ```
//!
//! Until `weir-receiver run` lands, the receiving side is the protocol core
//! driven by the small UDP driver in `weir_tests::udp`.

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use weir_protocol::bundle::{TrustStore, verify};
use weir_protocol::{
    Chunker, ChunkerConfig, Integrity, LinkEncoder, Rate, Reassembler, ReassemblerConfig,
};
use weir_sender::bundle::create::{CreateRequest, create};
use weir_sender::daemon::{FileSource, check};
use weir_sender::engine::{Engine, EngineConfig, SendOutcome};
use weir_sender::keys;
use weir_sender::udp::UdpLink;
use weir_tests::bundles::{trusted, write_random_file};
use weir_tests::link::{LinkProfile, LossyLink};
use weir_tests::udp::{Received, lossy_proxy, receive};

const RATE: &str = "400Mbit";

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("weir demo in {}", dir.display());

    // High side: a key, artifacts, a signed bundle.
    let (key_path, _, key_id) = keys::keygen(&dir.join("release"))?;
    let key = keys::load(&key_path)?;
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist)?;
    write_random_file(&dist.join("app.img"), 40 << 20, 1)?;
    write_random_file(&dist.join("tools.tar"), 8 << 20, 2)?;
    let sbom = dir.join("app.cdx.json");
    std::fs::write(
        &sbom,
        br#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}"#,
    )?;
    let bundle = dir.join("app-1.0.weir");
    let req = CreateRequest {
        name: "app".into(),
        version: "1.0".into(),
        labels: [("channel".to_string(), "demo".to_string())].into(),
        artifacts: vec![dist],
        sboms: vec![sbom],
        out: bundle.clone(),
    };
    let manifest = create(&req, &key, SystemTime::now())?;
    let mut trust = TrustStore::default();
    trust.add(trusted("release", &key))?;
    println!(
        "  made key {key_id} and bundle {} ({} artifacts, {} MiB)",
        bundle.display(),
        manifest.artifacts.len(),
        std::fs::metadata(&bundle)?.len() >> 20
    );

    // The link: sender -> lossy proxy -> receiver, all on loopback.
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
    println!("  link: 127.0.0.1, 3% loss, 1% reordered, 0.1% corrupted, paced at {RATE}");

    let recv_dir = dir.join("low-side");
    let receiver = std::thread::spawn(move || {
        let mut r = Reassembler::new(ReassemblerConfig {
            transfer_expiry: Duration::from_secs(5),
            ..ReassemblerConfig::default()
        });
        let got = receive(
            &rx_socket,
            &mut r,
            &recv_dir,
            1,
            Instant::now() + Duration::from_secs(60),
        );
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

    // Send: check against the trust store, then two paced passes.
    let rate: Rate = RATE.parse()?;
    let link = LinkEncoder::new(u64::from(std::process::id()), Integrity::Crc32c);
    let shard = link.shard_size_for(1472).context("shard size")?;
    let checked = match check(&bundle, &trust, shard, (256, 64, 16))? {
        Ok(c) => c,
        Err(r) => bail!("the sender refused its own bundle: {r}"),
    };
    let desc = checked.descriptor;
    let (udp, _) = UdpLink::open("127.0.0.1:0".parse()?, proxy_addr, 4 << 20)?;
    let config = EngineConfig {
        rate,
        max_datagram: 1472,
        heartbeat: Duration::from_millis(500),
        pass_pause: Duration::from_millis(200),
    };
    let mut engine = Engine::new(link, udp, config);
    let passes = 2;
    let mut chunker = Chunker::new(
        desc.clone(),
        FileSource(std::fs::File::open(&bundle)?),
        ChunkerConfig {
            passes,
            ..ChunkerConfig::default()
        },
    );
    let t = Instant::now();
    let stop = AtomicBool::new(false);
    let outcome = engine.send(&mut chunker, passes, &stop, &mut || false, &mut |_| {})?;
    if outcome != SendOutcome::Done {
        bail!("sending ended early: {outcome:?}");
    }
    let sent = engine.stats();
    println!(
        "  sent {} frames ({} MiB) in {:.2} s, {passes} passes, FEC {}+{} interleaved x{}",
        sent.frames,
        sent.bytes >> 20,
        t.elapsed().as_secs_f64(),
        desc.fec.data_shards(),
        desc.fec.parity_shards(),
        desc.fec.interleave()
    );

    // Low side: what arrived, verified again against the trust store.
    let (got, stats) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let counts = proxy
        .join()
        .map_err(|_| anyhow::anyhow!("proxy panicked"))??;
    println!(
        "  link dropped {} frames, reordered {}, corrupted {}",
        counts.lost, counts.reordered, counts.flipped
    );
    println!(
        "  receiver: {} blocks clean, {} rebuilt by FEC, {} corrupted frames dropped",
        stats.blocks_clean, stats.blocks_repaired, stats.dropped.corrupt
    );
    match got.context("receiver")?.first() {
        Some(Received::Published { path, .. }) => {
            let v = verify(
                std::io::BufReader::new(std::fs::File::open(path)?),
                &trust,
                SystemTime::now(),
            )
            .map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
            if std::fs::read(path)? != std::fs::read(&bundle)? {
                bail!("{} differs from what was sent", path.display());
            }
            println!(
                "  published {} ({} {}, signed by {})",
                path.display(),
                v.manifest.name,
                v.manifest.version,
                v.signers
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("ok: the bundle arrived bit-identical, verified against the trust store");
            Ok(())
        }
        other => bail!("the bundle did not arrive: {other:?}"),
    }
}
