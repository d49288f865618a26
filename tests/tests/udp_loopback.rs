//! The protocol core over real UDP sockets on 127.0.0.1, through a lossy
//! proxy: what the simulator shows must hold with a kernel in the path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use weir_protocol::{
    Chunker, ChunkerConfig, Integrity, LinkEncoder, Reassembler, ReassemblerConfig,
};
use weir_tests::link::{LinkProfile, LossyLink};
use weir_tests::sim::{default_fec, describe, sample_bytes};
use weir_tests::udp::{FileSource, Received, lossy_proxy, receive, send_paced};

#[test]
fn two_files_cross_a_lossy_loopback_link_bit_identical() {
    let dir = std::env::temp_dir().join(format!("weir-udp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rx_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx_addr = rx_socket.local_addr().unwrap();
    let proxy_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy_socket.local_addr().unwrap();
    let profile = LinkProfile {
        loss: 0.05,
        bit_flip: 0.005,
        duplicate: 0.01,
        ..LinkProfile::default()
    };

    let recv_dir = dir.clone();
    let receiver = std::thread::spawn(move || {
        let mut r = Reassembler::new(ReassemblerConfig {
            transfer_expiry: Duration::from_secs(5),
            ..ReassemblerConfig::default()
        });
        receive(
            &rx_socket,
            &mut r,
            &recv_dir,
            2,
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap()
    });
    let proxy = std::thread::spawn(move || {
        lossy_proxy(
            &proxy_socket,
            rx_addr,
            LossyLink::new(profile, 3),
            Duration::from_secs(2),
        )
        .unwrap()
    });

    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut link = LinkEncoder::new(77, Integrity::Crc32c);
    let mut originals = Vec::new();
    for (i, size) in [(1u64, 4usize << 20), (2, 6 << 20)] {
        let bytes = sample_bytes(i, size);
        let path = dir.join(format!("in-{i}.weir"));
        std::fs::write(&path, &bytes).unwrap();
        let desc = describe(&format!("file-{i}.weir"), &bytes, default_fec());
        let config = ChunkerConfig {
            passes: 2,
            ..ChunkerConfig::default()
        };
        let mut c = Chunker::new(desc, FileSource::open(&path).unwrap(), config);
        send_paced(&tx, proxy_addr, &mut c, &mut link, 30_000_000).unwrap();
        originals.push(bytes);
    }
    let got = receiver.join().unwrap();
    let counts = proxy.join().unwrap();
    assert!(counts.lost > 0 && counts.flipped > 0, "{counts:?}");
    assert_eq!(got.len(), 2, "{got:?}");
    for (r, want) in got.iter().zip(&originals) {
        match r {
            Received::Published { path, .. } => {
                assert!(
                    std::fs::read(path).unwrap() == *want,
                    "{} differs",
                    path.display()
                );
            }
            other => panic!("not published: {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.join("incoming")).unwrap().count(),
        0,
        "no partial file is left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
