//! The sender's side of the link: stamps every frame with the epoch and the
//! next sequence number, adds the integrity tag, and counts what went out.
//!
//! One `LinkEncoder` serves every transfer and heartbeat of a sender, so the
//! sequence numbers form one series the receiver can measure loss on.

use bytes::BufMut;

use crate::control::Heartbeat;
use crate::wire::{self, EncodeError, FrameKind, Header, Integrity};

/// Stamps and tags frames for one sender epoch.
#[derive(Debug)]
pub struct LinkEncoder {
    /// Random per sender start (the driver draws it), so a receiver tells a
    /// restarted sender apart.
    epoch: u64,
    /// Sequence number of the next frame.
    next_seq: u64,
    /// CRC32C or MAC.
    integrity: Integrity,
    /// Datagram bytes emitted in this epoch.
    bytes_sent: u64,
}

/// Where a frame is addressed: everything in the header but epoch and seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAddr {
    /// What the payload is.
    pub kind: FrameKind,
    /// The transfer, or 0 for heartbeats.
    pub transfer: u64,
    /// Block index (shards only).
    pub block: u32,
    /// Shard or recovery index (shards only).
    pub shard: u16,
}

impl LinkEncoder {
    /// A new epoch, with sequence numbers from 0.
    pub fn new(epoch: u64, integrity: Integrity) -> Self {
        Self {
            epoch,
            next_seq: 0,
            integrity,
            bytes_sent: 0,
        }
    }

    /// Appends one frame to `out` and returns its datagram length.
    pub fn frame(
        &mut self,
        addr: FrameAddr,
        payload: &[u8],
        out: &mut impl BufMut,
    ) -> Result<usize, EncodeError> {
        let header = Header {
            kind: addr.kind,
            epoch: self.epoch,
            seq: self.next_seq,
            transfer: addr.transfer,
            block: addr.block,
            shard: addr.shard,
        };
        wire::encode_frame(&header, payload, &self.integrity, out)?;
        let len = payload.len() + self.integrity.overhead();
        self.next_seq += 1;
        self.bytes_sent += len as u64;
        Ok(len)
    }

    /// Appends a heartbeat carrying this encoder's counters.
    pub fn heartbeat(
        &mut self,
        queue_len: u32,
        interval_ms: u32,
        current_transfer: u64,
        out: &mut impl BufMut,
    ) -> Result<usize, EncodeError> {
        let hb = Heartbeat {
            frames_sent: self.next_seq,
            bytes_sent: self.bytes_sent,
            queue_len,
            interval_ms,
            current_transfer,
        };
        let mut payload = [0u8; crate::control::HEARTBEAT_LEN];
        hb.encode(&mut &mut payload[..]);
        let addr = FrameAddr {
            kind: FrameKind::Heartbeat,
            transfer: 0,
            block: 0,
            shard: 0,
        };
        self.frame(addr, &payload, out)
    }

    /// This sender's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// Frames emitted in this epoch.
    pub fn frames_sent(&self) -> u64 {
        self.next_seq
    }
    /// Datagram bytes emitted in this epoch.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }
    /// Header and tag bytes around each payload.
    pub fn overhead(&self) -> usize {
        self.integrity.overhead()
    }
    /// The largest shard that fits a datagram of `max_datagram` bytes, or
    /// `None` if none does. Shards are a multiple of 16 bytes, so that a
    /// block of 256 shards is a multiple of 4096 bytes and the receiver can
    /// write whole blocks with direct I/O.
    pub fn shard_size_for(&self, max_datagram: usize) -> Option<u16> {
        let room = max_datagram
            .min(wire::MAX_DATAGRAM)
            .checked_sub(self.overhead())?;
        let aligned = room & !15;
        u16::try_from(aligned).ok().filter(|&s| s >= 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_frame;

    #[test]
    fn sequence_numbers_and_counters_advance_per_frame() {
        let mut link = LinkEncoder::new(9, Integrity::Crc32c);
        let mut out = Vec::new();
        let addr = FrameAddr {
            kind: FrameKind::Data,
            transfer: 5,
            block: 1,
            shard: 2,
        };
        let a = link.frame(addr, b"hello", &mut out).unwrap();
        let b = link.heartbeat(3, 1000, 5, &mut out).unwrap();
        assert_eq!(a, 5 + 44);
        assert_eq!(b, 32 + 44);
        let first = decode_frame(&out[..a], &Integrity::Crc32c).unwrap();
        let second = decode_frame(&out[a..], &Integrity::Crc32c).unwrap();
        assert_eq!((first.header.seq, second.header.seq), (0, 1));
        assert_eq!(second.header.epoch, 9);
        let hb = Heartbeat::decode(second.payload).unwrap();
        assert_eq!(
            (hb.frames_sent, hb.bytes_sent, hb.queue_len),
            (1, a as u64, 3)
        );
        assert_eq!(link.frames_sent(), 2);
    }

    #[test]
    fn shard_size_follows_the_mtu() {
        let crc = LinkEncoder::new(0, Integrity::Crc32c);
        assert_eq!(crc.shard_size_for(1472), Some(1424));
        let mac = LinkEncoder::new(
            0,
            Integrity::Mac(crate::wire::LinkKey::from_secret(&[0; 32])),
        );
        assert_eq!(mac.shard_size_for(1472), Some(1408));
        assert_eq!(mac.shard_size_for(8972), Some(8912));
        assert_eq!(crc.shard_size_for(20), None);
        assert_eq!(crc.shard_size_for(65000), Some(8928));
    }
}
