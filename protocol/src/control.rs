//! Payloads of the control frames: heartbeat and end of pass.
//!
//! Both are fixed-size, little-endian, encoded by hand like the header.
//!
//! ```text
//! Heartbeat (32 bytes)
//!  0                 8                 16        20        24                32
//!  +-----------------+-----------------+---------+---------+-----------------+
//!  | frames sent u64 | bytes sent u64  | queue   | interval| current transfer|
//!  |  (this epoch)   |  (this epoch)   | len u32 | ms u32  | id u64 (0: idle)|
//!  +-----------------+-----------------+---------+---------+-----------------+
//!
//! End of pass (8 bytes), in a frame whose transfer field names the transfer
//!  0         4         8
//!  +---------+---------+
//!  | pass    | passes  |   passes: how many the sender plans, 0 if open-ended
//!  | u32     | u32     |
//!  +---------+---------+
//! ```

use bytes::BufMut;

use crate::codec::Reader;

/// Sender liveness and counters, sent every heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Frames sent in this epoch before this one.
    pub frames_sent: u64,
    /// Datagram bytes sent in this epoch before this one.
    pub bytes_sent: u64,
    /// Bundles waiting in the sender's outbox.
    pub queue_len: u32,
    /// The sender's heartbeat interval, so the receiver knows when the link
    /// has been silent too long.
    pub interval_ms: u32,
    /// The transfer being sent, or 0 when idle.
    pub current_transfer: u64,
}

/// Encoded length of a [`Heartbeat`].
pub const HEARTBEAT_LEN: usize = 32;

impl Heartbeat {
    /// Appends the 32-byte payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64_le(self.frames_sent);
        out.put_u64_le(self.bytes_sent);
        out.put_u32_le(self.queue_len);
        out.put_u32_le(self.interval_ms);
        out.put_u64_le(self.current_transfer);
    }

    /// Decodes a payload of exactly [`HEARTBEAT_LEN`] bytes.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let mut r = Reader::new(payload);
        let hb = Self {
            frames_sent: r.u64()?,
            bytes_sent: r.u64()?,
            queue_len: r.u32()?,
            interval_ms: r.u32()?,
            current_transfer: r.u64()?,
        };
        r.finish()?;
        Some(hb)
    }
}

/// Marks the end of one pass over a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOfPass {
    /// The pass that just ended, from 0.
    pub pass: u32,
    /// Passes the sender plans for this transfer; 0 when open-ended.
    pub passes: u32,
}

/// Encoded length of an [`EndOfPass`].
pub const END_OF_PASS_LEN: usize = 8;

impl EndOfPass {
    /// Appends the 8-byte payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32_le(self.pass);
        out.put_u32_le(self.passes);
    }

    /// Decodes a payload of exactly [`END_OF_PASS_LEN`] bytes.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let mut r = Reader::new(payload);
        let e = Self {
            pass: r.u32()?,
            passes: r.u32()?,
        };
        r.finish()?;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heartbeat_vector() {
        let hb = Heartbeat {
            frames_sent: 1,
            bytes_sent: 0x0203,
            queue_len: 4,
            interval_ms: 1000,
            current_transfer: 0xff,
        };
        let mut out = Vec::new();
        hb.encode(&mut out);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0100000000000000030200000000000004000000e8030000ff00000000000000"
        );
        assert_eq!(Heartbeat::decode(&out), Some(hb));
        assert_eq!(Heartbeat::decode(&out[..31]), None);
    }

    #[test]
    fn end_of_pass_vector() {
        let e = EndOfPass { pass: 1, passes: 2 };
        let mut out = Vec::new();
        e.encode(&mut out);
        assert_eq!(out, [1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(EndOfPass::decode(&out), Some(e));
        out.push(0);
        assert_eq!(EndOfPass::decode(&out), None);
    }

    proptest! {
        #[test]
        fn heartbeat_round_trips(a: u64, b: u64, c: u32, d: u32, e: u64) {
            let hb = Heartbeat { frames_sent: a, bytes_sent: b, queue_len: c, interval_ms: d, current_transfer: e };
            let mut out = Vec::new();
            hb.encode(&mut out);
            prop_assert_eq!(out.len(), HEARTBEAT_LEN);
            prop_assert_eq!(Heartbeat::decode(&out), Some(hb));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Heartbeat::decode(&bytes);
            let _ = EndOfPass::decode(&bytes);
        }
    }
}
