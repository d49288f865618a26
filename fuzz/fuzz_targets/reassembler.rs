//! The reassembler driven by a fuzzed sequence of datagrams: raw bytes, and
//! well-formed frames (valid CRC) with fuzzed fields, descriptors with
//! fuzzed FEC parameters, spills and reloads, clock jumps and restarts of
//! the saved state. Never a panic, memory never above its bound, and no
//! transfer ever completes "verified" with bytes that do not hash to its
//! descriptor.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir_protocol::{
    BundleName, FecParams, FrameAddr, FrameKind, Integrity, LinkEncoder, ReassemblerConfig,
    TransferDescriptor, TransferId,
};
use weir_tests::sim::{MemReceiver, Outcome};

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Descriptor {
        transfer: u8,
        size: u32,
        k: u8,
        m: u8,
        shard: u8,
        interleave: u8,
        hash_of: u8,
    },
    Shard {
        parity: bool,
        transfer: u8,
        block: u8,
        index: u16,
        len: u16,
        fill: u8,
    },
    EndOfPass {
        transfer: u8,
        pass: u8,
    },
    Heartbeat,
    NewEpoch(u64),
    Advance(u16),
    SpillAll,
    Restart,
}

fuzz_target!(|ops: Vec<Op>| {
    let config = ReassemblerConfig {
        max_transfers: 3,
        max_memory: 1 << 20,
        limbo_memory: 64 << 10,
        max_transfer_size: 1 << 20,
        transfer_expiry: Duration::from_secs(30),
        ..ReassemblerConfig::default()
    };
    let mut rx = MemReceiver::new(config.clone());
    let mut link = LinkEncoder::new(1, Integrity::Crc32c);
    let mut buf = Vec::new();
    // Ids of the transfers described so far (an id follows from the
    // file's hash), so that shards can name them.
    let mut ids: Vec<u64> = Vec::new();
    let id_of = |ids: &[u64], t: u8| ids.get(usize::from(t) % ids.len().max(1)).copied().unwrap_or(u64::from(t) + 1);
    for op in ops.into_iter().take(2000) {
        buf.clear();
        match op {
            Op::Raw(bytes) => rx.handle(&bytes),
            Op::Descriptor { transfer, size, k, m, shard, interleave, hash_of } => {
                let Ok(fec) = FecParams::new(
                    u16::from(k),
                    u16::from(m),
                    u16::from(shard) * 2,
                    u16::from(interleave),
                ) else {
                    continue;
                };
                let Ok(desc) = TransferDescriptor::new(
                    TransferId::from_digest(&blake3_of(hash_of)),
                    BundleName::sanitise("fuzz"),
                    u64::from(size % (1 << 20)),
                    blake3_of(hash_of),
                    fec,
                ) else {
                    continue;
                };
                let _ = transfer;
                if !ids.contains(&desc.transfer.0) {
                    ids.push(desc.transfer.0);
                }
                let addr = FrameAddr { kind: FrameKind::Descriptor, transfer: desc.transfer.0, block: 0, shard: 0 };
                if link.frame(addr, &desc.to_bytes(), &mut buf).is_ok() {
                    rx.handle(&buf);
                }
            }
            Op::Shard { parity, transfer, block, index, len, fill } => {
                let kind = if parity { FrameKind::Parity } else { FrameKind::Data };
                let addr = FrameAddr { kind, transfer: id_of(&ids, transfer), block: u32::from(block), shard: index };
                let payload = vec![fill; usize::from(len % 600)];
                if link.frame(addr, &payload, &mut buf).is_ok() {
                    rx.handle(&buf);
                }
            }
            Op::EndOfPass { transfer, pass } => {
                let addr = FrameAddr { kind: FrameKind::EndOfPass, transfer: id_of(&ids, transfer), block: 0, shard: 0 };
                let mut payload = Vec::new();
                weir_protocol::EndOfPass { pass: u32::from(pass), passes: 2 }.encode(&mut payload);
                if link.frame(addr, &payload, &mut buf).is_ok() {
                    rx.handle(&buf);
                }
            }
            Op::Heartbeat => {
                if link.heartbeat(1, 1000, 0, &mut buf).is_ok() {
                    rx.handle(&buf);
                }
            }
            Op::NewEpoch(e) => link = LinkEncoder::new(e, Integrity::Crc32c),
            Op::Advance(secs) => rx.advance(Duration::from_secs(u64::from(secs))),
            Op::SpillAll => {
                rx.reassembler.spill_all();
                rx.drain();
            }
            Op::Restart => {
                rx.reassembler.spill_all();
                rx.drain();
                let ids: Vec<TransferId> = rx.files.keys().copied().collect();
                let states: Vec<_> = ids.iter().filter_map(|id| rx.reassembler.export_state(*id)).collect();
                let files = std::mem::take(&mut rx.files);
                let outcomes = std::mem::take(&mut rx.outcomes);
                rx = MemReceiver::new(config.clone());
                rx.outcomes = outcomes;
                rx.files = files;
                for s in states {
                    rx.reassembler.import_state(rx.now, s).expect("a state it exported");
                }
            }
        }
        assert!(rx.reassembler.memory_in_use() <= config.max_memory);
    }
    for o in &rx.outcomes {
        if let Outcome::Complete { descriptor, bytes, verified: true, .. } = o {
            assert_eq!(weir_protocol::digest::digest(bytes), descriptor.digest());
        }
    }
});

fn blake3_of(seed: u8) -> blake3::Hash {
    blake3::hash(&[seed])
}
