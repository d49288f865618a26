//! Throughput of the protocol core's primitives, in bytes of payload or file
//! per second: frame codec, Reed–Solomon, chunker and reassembler in memory.
//!
//! Run with `cargo bench -p weir-bench --bench core`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_protocol::fec::{BlockDecoder, BlockEncoder, Slot};
use weir_protocol::wire::{Header, decode_frame, encode_frame};
use weir_protocol::{
    Chunker, ChunkerConfig, FecParams, FrameKind, Integrity, LinkEncoder, LinkKey, Reassembler,
    ReassemblerConfig,
};
use weir_tests::sim::{default_fec, describe, sample_bytes};

const SHARD: usize = 1428;

fn frame_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(SHARD as u64));
    let header = Header {
        kind: FrameKind::Data,
        epoch: 1,
        seq: 2,
        transfer: 3,
        block: 4,
        shard: 5,
    };
    let payload = vec![0x5a; SHARD];
    for (name, integrity) in [
        ("crc32c", Integrity::Crc32c),
        ("mac", Integrity::Mac(LinkKey::from_secret(&[1; 32]))),
    ] {
        let mut out = Vec::with_capacity(1500);
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(&header, black_box(&payload), &integrity, &mut out).unwrap();
            })
        });
        let mut datagram = Vec::new();
        encode_frame(&header, &payload, &integrity, &mut datagram).unwrap();
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| decode_frame(black_box(&datagram), &integrity).unwrap())
        });
    }
    g.finish();
}

fn fec(c: &mut Criterion) {
    let mut g = c.benchmark_group("fec");
    for (k, m) in [(32u16, 8u16), (128, 32), (256, 64)] {
        let params = FecParams::new(k, m, SHARD as u16, 1).unwrap();
        let block = sample_bytes(u64::from(k), params.block_len());
        g.throughput(Throughput::Bytes(params.block_len() as u64));
        let mut enc = BlockEncoder::new(params);
        let mut parity = Vec::new();
        g.bench_function(BenchmarkId::new("encode", format!("{k}+{m}")), |b| {
            b.iter(|| {
                parity.clear();
                enc.encode_pass(black_box(&block), 0, &mut parity).unwrap();
            })
        });
        // Lose M data shards; rebuild them from the M parity shards.
        parity.clear();
        enc.encode_pass(&block, 0, &mut parity).unwrap();
        let mut damaged = block.clone();
        let mut slots = vec![Slot::Data; usize::from(k)];
        for i in 0..usize::from(m) {
            damaged[i * SHARD..(i + 1) * SHARD]
                .copy_from_slice(&parity[i * SHARD..(i + 1) * SHARD]);
            slots[i] = Slot::Parity(i as u32);
        }
        let mut dec = BlockDecoder::new();
        g.bench_function(BenchmarkId::new("decode", format!("{k}+{m}")), |b| {
            b.iter_batched_ref(
                || damaged.clone(),
                |buf| dec.decode(&params, buf, &slots).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

const FILE: usize = 64 << 20;

fn all_frames(bytes: &[u8], loss_every: usize) -> Vec<Vec<u8>> {
    let desc = describe("bench.weir", bytes, default_fec());
    let config = ChunkerConfig {
        passes: 1,
        ..ChunkerConfig::default()
    };
    let mut chunker = Chunker::new(desc, Cursor::new(bytes.to_vec()), config);
    let mut link = LinkEncoder::new(1, Integrity::Crc32c);
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0;
    while chunker
        .poll_transmit(&mut link, &mut buf)
        .unwrap()
        .is_some()
    {
        n += 1;
        let keep = loss_every == 0 || n % loss_every != 0;
        if keep {
            frames.push(buf.clone());
        }
        buf.clear();
    }
    frames
}

fn chunker(c: &mut Criterion) {
    let bytes = sample_bytes(1, FILE);
    let desc = describe("bench.weir", &bytes, default_fec());
    let mut g = c.benchmark_group("chunker");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(FILE as u64));
    let source = bytes.clone();
    g.bench_function("one_pass_64MiB", |b| {
        b.iter_batched(
            || {
                let config = ChunkerConfig {
                    passes: 1,
                    ..ChunkerConfig::default()
                };
                Chunker::new(desc.clone(), Cursor::new(source.as_slice()), config)
            },
            |mut ch| {
                let mut link = LinkEncoder::new(1, Integrity::Crc32c);
                let mut buf = Vec::with_capacity(64 * 1500);
                while ch.poll_transmit(&mut link, &mut buf).unwrap().is_some() {
                    // A driver sends batches of up to 64 datagrams.
                    if buf.len() > 63 * 1500 {
                        buf.clear();
                    }
                }
                black_box(buf.len())
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn reassembler(c: &mut Criterion) {
    let bytes = sample_bytes(2, FILE);
    let mut g = c.benchmark_group("reassembler");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(FILE as u64));
    for (name, loss_every) in [("no_loss_64MiB", 0), ("5pct_loss_64MiB", 20)] {
        let frames = all_frames(&bytes, loss_every);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut r = Reassembler::new(ReassemblerConfig::default());
                let now = Instant::now();
                let mut delivered = 0usize;
                for f in &frames {
                    r.handle_datagram(now, f);
                    while let Some(e) = r.poll_event() {
                        if let weir_protocol::Event::BlockReady { data, .. } = e {
                            delivered += data.len();
                        }
                    }
                }
                assert_eq!(delivered, FILE);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frame_codec, fec, chunker, reassembler);
criterion_main!(benches);
