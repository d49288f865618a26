//! Wire format v2: one UDP datagram carries one frame.
//!
//! ```text
//!  0       4     5     6     7     8                               16
//!  +-------+-----+-----+-----+-----+-------------------------------+
//!  | magic | ver |kind |flags| rsv |      sender epoch (u64)       |
//!  +-------+-----+-----+-----+-----+-------------------------------+
//!  16                              24                              32
//!  +-------------------------------+-------------------------------+
//!  |     frame sequence (u64)      |       transfer id (u64)       |
//!  +-------------------------------+---------------+-------+-------+
//!  32              36      38      40
//!  +---------------+-------+-------+-------------------------------+
//!  | block (u32)   | shard | len   |  payload (len bytes) ...      |
//!  +---------------+-------+-------+-------------------------------+
//!  |  tag: CRC32C (4 bytes) or keyed BLAKE3 MAC (16 bytes)         |
//!  +---------------------------------------------------------------+
//! ```
//!
//! All integers are little-endian. `magic` is the ASCII bytes `WEIR`; `ver`
//! is [`VERSION`]. `flags` bit 0 says which tag follows the payload: clear
//! for CRC32C (Castagnoli) over header and payload, set for the first 16
//! bytes of a keyed BLAKE3 hash over header and payload. Every other flag
//! bit and the reserved byte must be zero. The datagram length must equal
//! `40 + len + tag` exactly: nothing may follow the tag.
//!
//! The tag is checked before any other field is trusted, so a frame
//! corrupted on the link is dropped here and never reaches the erasure
//! decoder (Reed–Solomon fills erasures; it cannot find errors).

use bytes::BufMut;
use constant_time_eq::constant_time_eq_16;

use crate::codec::Reader;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"WEIR";
/// The wire format version this crate speaks.
pub const VERSION: u8 = 2;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Bytes of a CRC32C tag.
pub const CRC_TAG_LEN: usize = 4;
/// Bytes of a MAC tag (128 bits of keyed BLAKE3).
pub const MAC_TAG_LEN: usize = 16;
/// The largest datagram weir sends or accepts: a 9000-byte jumbo MTU less
/// the IPv4 and UDP headers.
pub const MAX_DATAGRAM: usize = 9000 - 20 - 8;
/// The largest payload any frame may carry.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - CRC_TAG_LEN;

const FLAG_MAC: u8 = 0b0000_0001;

/// A link MTU, validated: 1280 (the IPv6 minimum) to 9000 (jumbo frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mtu(u16);

/// Why an MTU is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MTU {0} is outside 1280..=9000")]
pub struct MtuError(pub u32);

impl Mtu {
    /// The usual Ethernet MTU.
    pub const ETHERNET: Self = Self(1500);
    /// Jumbo frames.
    pub const JUMBO: Self = Self(9000);

    /// Accepts 1280..=9000.
    pub fn new(mtu: u32) -> Result<Self, MtuError> {
        u16::try_from(mtu)
            .ok()
            .filter(|m| (1280..=9000).contains(m))
            .map(Self)
            .ok_or(MtuError(mtu))
    }

    /// The MTU in bytes.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The largest UDP payload: the MTU less the IP (20 or 40 bytes) and
    /// UDP (8 bytes) headers.
    pub fn max_datagram(self, ipv6: bool) -> usize {
        usize::from(self.0) - if ipv6 { 48 } else { 28 }
    }
}
const MAC_CONTEXT: &str = "weir 2026-11 link frame MAC v1";

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// One data shard: `block` and `shard` (< K) locate it in the file.
    Data = 1,
    /// One parity shard: `shard` is its recovery index within `block`.
    Parity = 2,
    /// A transfer descriptor ([`crate::TransferDescriptor`], postcard).
    Descriptor = 3,
    /// Sender liveness and counters ([`crate::Heartbeat`]); transfer id 0.
    Heartbeat = 4,
    /// The sender finished one pass over a transfer ([`crate::EndOfPass`]).
    EndOfPass = 5,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::Parity,
            3 => Self::Descriptor,
            4 => Self::Heartbeat,
            5 => Self::EndOfPass,
            _ => return None,
        })
    }

    /// Whether the `block` and `shard` fields carry meaning for this kind.
    fn addresses_shard(self) -> bool {
        matches!(self, Self::Data | Self::Parity)
    }
}

/// The fixed header fields of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: FrameKind,
    /// Random per sender start: a change tells the receiver the sender restarted.
    pub epoch: u64,
    /// Counts every frame a sender emits within one epoch, to measure loss,
    /// reordering and duplication.
    pub seq: u64,
    /// Which transfer the frame belongs to (0 for heartbeats).
    pub transfer: u64,
    /// Block index within the transfer (shards only, else 0).
    pub block: u32,
    /// Data shard index or recovery index within the block (shards only, else 0).
    pub shard: u16,
}

/// How frames are protected on the link.
#[derive(Clone)]
pub enum Integrity {
    /// A CRC32C catches corruption; anyone can forge frames.
    Crc32c,
    /// A keyed BLAKE3 MAC authenticates every frame.
    Mac(LinkKey),
}

impl std::fmt::Debug for Integrity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Crc32c => f.write_str("Crc32c"),
            Self::Mac(_) => f.write_str("Mac(<key>)"),
        }
    }
}

impl Integrity {
    /// Bytes the tag adds after the payload.
    pub fn tag_len(&self) -> usize {
        match self {
            Self::Crc32c => CRC_TAG_LEN,
            Self::Mac(_) => MAC_TAG_LEN,
        }
    }

    /// Header and tag bytes around each payload.
    pub fn overhead(&self) -> usize {
        HEADER_LEN + self.tag_len()
    }
}

/// A 32-byte secret shared by sender and receiver; the MAC key is derived
/// from it with a context string, so the raw secret never keys BLAKE3.
#[derive(Clone)]
pub struct LinkKey {
    mac_key: [u8; 32],
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(<secret>)")
    }
}

impl LinkKey {
    /// Derives the frame MAC key from a 32-byte shared secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self {
            mac_key: blake3::derive_key(MAC_CONTEXT, secret),
        }
    }

    /// Parses a link key file's text: 64 hex digits, whitespace ignored.
    pub fn secret_from_hex(text: &str) -> Option<[u8; 32]> {
        let hex: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        if hex.len() != 64 {
            return None;
        }
        let mut secret = [0u8; 32];
        for (byte, pair) in secret.iter_mut().zip(hex.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(secret)
    }

    fn tag(&self, header: &[u8; HEADER_LEN], payload: &[u8]) -> [u8; MAC_TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(header);
        h.update(payload);
        let mut tag = [0u8; MAC_TAG_LEN];
        h.finalize_xof().fill(&mut tag);
        tag
    }
}

/// Why a datagram is not a frame of this version. Every variant is a reason to drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header and a tag, or longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes is not a frame")]
    BadLength(usize),
    /// Does not start with [`MAGIC`]: not weir traffic.
    #[error("bad magic")]
    BadMagic,
    /// A weir frame of a version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Reserved bits set, or block/shard set on a kind that has none.
    #[error("reserved field is not zero")]
    Reserved,
    /// The payload length field disagrees with the datagram length.
    #[error("payload length {declared} does not match the datagram")]
    LengthMismatch {
        /// What the header claims.
        declared: usize,
    },
    /// The CRC32C does not match: corrupted on the link.
    #[error("CRC32C mismatch")]
    Corrupt,
    /// A MAC is required and the frame carries a CRC only.
    #[error("frame is not authenticated")]
    Unauthenticated,
    /// The MAC does not match: forged, or keyed with another link key.
    #[error("MAC mismatch")]
    BadMac,
}

/// A decoded frame borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The checked header.
    pub header: Header,
    /// The payload, already covered by the checked tag.
    pub payload: &'a [u8],
}

fn header_bytes(h: &Header, mac: bool, payload_len: u16) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    let mut w = &mut out[..];
    w.put_slice(&MAGIC);
    w.put_u8(VERSION);
    w.put_u8(h.kind as u8);
    w.put_u8(if mac { FLAG_MAC } else { 0 });
    w.put_u8(0);
    w.put_u64_le(h.epoch);
    w.put_u64_le(h.seq);
    w.put_u64_le(h.transfer);
    w.put_u32_le(h.block);
    w.put_u16_le(h.shard);
    w.put_u16_le(payload_len);
    out
}

/// Why a frame could not be encoded: a caller bug, not a link condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload does not fit in [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the maximum frame payload")]
    PayloadTooLarge(usize),
}

/// Appends one complete frame (header, payload, tag) to `out`.
pub fn encode_frame(
    header: &Header,
    payload: &[u8],
    integrity: &Integrity,
    out: &mut impl BufMut,
) -> Result<(), EncodeError> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_PAYLOAD)
        .ok_or(EncodeError::PayloadTooLarge(payload.len()))?;
    let header_kind_ok = header.kind.addresses_shard() || (header.block == 0 && header.shard == 0);
    debug_assert!(
        header_kind_ok,
        "block/shard set on a {:?} frame",
        header.kind
    );
    let mac = matches!(integrity, Integrity::Mac(_));
    let head = header_bytes(header, mac, len);
    out.put_slice(&head);
    out.put_slice(payload);
    match integrity {
        Integrity::Crc32c => {
            let crc = crc32c(&head, payload);
            out.put_u32_le(crc);
        }
        Integrity::Mac(key) => out.put_slice(&key.tag(&head, payload)),
    }
    Ok(())
}

/// Decodes and checks one datagram.
///
/// With [`Integrity::Mac`], frames that carry only a CRC are refused
/// ([`DecodeError::Unauthenticated`]). With [`Integrity::Crc32c`], frames
/// that carry a MAC are refused too ([`DecodeError::BadMac`]): this end has
/// no key to check it.
pub fn decode_frame<'a>(
    datagram: &'a [u8],
    integrity: &Integrity,
) -> Result<FrameRef<'a>, DecodeError> {
    let n = datagram.len();
    if !(HEADER_LEN + CRC_TAG_LEN..=MAX_DATAGRAM).contains(&n) {
        return Err(DecodeError::BadLength(n));
    }
    let mut r = Reader::new(datagram);
    let head_bytes: [u8; HEADER_LEN] = r.array().ok_or(DecodeError::BadLength(n))?;
    let mut h = Reader::new(&head_bytes);
    let short = DecodeError::BadLength(n);
    if h.array::<4>().ok_or(short)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = h.u8().ok_or(short)?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind_byte = h.u8().ok_or(short)?;
    let flags = h.u8().ok_or(short)?;
    let reserved = h.u8().ok_or(short)?;
    let epoch = h.u64().ok_or(short)?;
    let seq = h.u64().ok_or(short)?;
    let transfer = h.u64().ok_or(short)?;
    let block = h.u32().ok_or(short)?;
    let shard = h.u16().ok_or(short)?;
    let len = usize::from(h.u16().ok_or(short)?);

    if flags & !FLAG_MAC != 0 || reserved != 0 {
        return Err(DecodeError::Reserved);
    }
    let has_mac = flags & FLAG_MAC != 0;
    let tag_len = if has_mac { MAC_TAG_LEN } else { CRC_TAG_LEN };
    if HEADER_LEN + len + tag_len != n {
        return Err(DecodeError::LengthMismatch { declared: len });
    }
    let payload = r.take(len).ok_or(short)?;
    let tag = r.take(tag_len).ok_or(short)?;

    // Integrity first: nothing else in the header is trusted before this.
    match (integrity, has_mac) {
        (Integrity::Crc32c, false) => {
            // Header and payload are contiguous here: one call is faster.
            let covered = datagram.get(..HEADER_LEN + len).ok_or(short)?;
            let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, covered) as u32;
            if tag != crc.to_le_bytes() {
                return Err(DecodeError::Corrupt);
            }
        }
        (Integrity::Mac(key), true) => {
            let want = key.tag(&head_bytes, payload);
            let got: &[u8; MAC_TAG_LEN] = tag.try_into().map_err(|_| short)?;
            if !constant_time_eq_16(&want, got) {
                return Err(DecodeError::BadMac);
            }
        }
        (Integrity::Mac(_), false) => return Err(DecodeError::Unauthenticated),
        (Integrity::Crc32c, true) => return Err(DecodeError::BadMac),
    }

    let kind = FrameKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    if !kind.addresses_shard() && (block != 0 || shard != 0) {
        return Err(DecodeError::Reserved);
    }
    Ok(FrameRef {
        header: Header {
            kind,
            epoch,
            seq,
            transfer,
            block,
            shard,
        },
        payload,
    })
}

/// CRC32C (Castagnoli) of a frame's header and payload, in two pieces.
/// (`crc-fast` folds with carry-less multiplication, VPCLMULQDQ where
/// the CPU has it: about twice the speed of the `crc32` instruction on
/// 1424-byte frames, measured in `bench/benches/core.rs`.)
fn crc32c(head: &[u8], payload: &[u8]) -> u32 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(head);
    d.update(payload);
    // A 32-bit CRC in the low half.
    d.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            kind: FrameKind::Data,
            epoch: 0x1122_3344_5566_7788,
            seq: 42,
            transfer: 0xdead_beef,
            block: 7,
            shard: 3,
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn crc_frame_matches_the_documented_layout() {
        let mut out = Vec::new();
        encode_frame(&header(), b"abc", &Integrity::Crc32c, &mut out).unwrap();
        assert_eq!(
            hex(&out),
            concat!(
                "57454952",
                "02",
                "01",
                "00",
                "00",               // magic, version, kind, flags, reserved
                "8877665544332211", // epoch
                "2a00000000000000", // seq
                "efbeadde00000000", // transfer
                "07000000",
                "0300",
                "0300",     // block, shard, len
                "616263",   // payload
                "625a5763", // CRC32C
            )
        );
        let f = decode_frame(&out, &Integrity::Crc32c).unwrap();
        assert_eq!(f.header, header());
        assert_eq!(f.payload, b"abc");
    }

    #[test]
    fn mtu_bounds_and_datagram_sizes() {
        assert_eq!(Mtu::ETHERNET.max_datagram(false), 1472);
        assert_eq!(Mtu::ETHERNET.max_datagram(true), 1452);
        assert_eq!(Mtu::JUMBO.max_datagram(false), MAX_DATAGRAM);
        assert_eq!(Mtu::new(1279), Err(MtuError(1279)));
        assert_eq!(Mtu::new(9001), Err(MtuError(9001)));
        assert_eq!(Mtu::new(70000), Err(MtuError(70000)));
        assert_eq!(Mtu::new(1500), Ok(Mtu::ETHERNET));
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard check value of CRC-32C (RFC 3720, appendix B.4),
        // whole and in the two pieces frames are tagged in.
        assert_eq!(crc32c(b"123456789", b""), 0xe306_9283);
        assert_eq!(crc32c(b"1234", b"56789"), 0xe306_9283);
        assert_eq!(
            crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, b"123456789"),
            0xe306_9283
        );
    }

    #[test]
    fn mac_frame_round_trips_and_sets_the_flag() {
        let key = Integrity::Mac(LinkKey::from_secret(&[7; 32]));
        let mut out = Vec::new();
        encode_frame(&header(), b"payload", &key, &mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + 7 + MAC_TAG_LEN);
        assert_eq!(out[6], FLAG_MAC);
        let f = decode_frame(&out, &key).unwrap();
        assert_eq!(f.payload, b"payload");
    }

    #[test]
    fn a_keyed_receiver_refuses_crc_frames_and_other_keys() {
        let key = Integrity::Mac(LinkKey::from_secret(&[7; 32]));
        let other = Integrity::Mac(LinkKey::from_secret(&[8; 32]));
        let mut crc = Vec::new();
        encode_frame(&header(), b"x", &Integrity::Crc32c, &mut crc).unwrap();
        assert_eq!(decode_frame(&crc, &key), Err(DecodeError::Unauthenticated));
        let mut mac = Vec::new();
        encode_frame(&header(), b"x", &other, &mut mac).unwrap();
        assert_eq!(decode_frame(&mac, &key), Err(DecodeError::BadMac));
        assert_eq!(
            decode_frame(&mac, &Integrity::Crc32c),
            Err(DecodeError::BadMac)
        );
    }

    #[test]
    fn typed_errors_for_each_malformation() {
        let mut good = Vec::new();
        encode_frame(&header(), b"abc", &Integrity::Crc32c, &mut good).unwrap();
        let check = |mutate: &dyn Fn(&mut Vec<u8>), want: DecodeError| {
            let mut d = good.clone();
            mutate(&mut d);
            assert_eq!(decode_frame(&d, &Integrity::Crc32c), Err(want));
        };
        check(&|d| d.truncate(10), DecodeError::BadLength(10));
        check(&|d| d[0] = b'X', DecodeError::BadMagic);
        check(&|d| d[4] = 1, DecodeError::UnsupportedVersion(1));
        check(&|d| d[6] = 0x80, DecodeError::Reserved);
        check(&|d| d[7] = 1, DecodeError::Reserved);
        check(&|d| d.push(0), DecodeError::LengthMismatch { declared: 3 });
        check(&|d| d[41] ^= 1, DecodeError::Corrupt);
        // A kind byte this version does not know, with a valid CRC.
        let mut unknown = good.clone();
        unknown[5] = 9;
        let n = unknown.len();
        let crc = crc32c(&unknown[..n - 4], b"");
        unknown[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_frame(&unknown, &Integrity::Crc32c),
            Err(DecodeError::UnknownKind(9))
        );
    }

    #[test]
    fn control_frames_must_not_carry_block_or_shard() {
        let mut h = header();
        h.kind = FrameKind::Heartbeat;
        let mut out = Vec::new();
        // Encode through a raw header to bypass the debug assertion.
        let head = header_bytes(&h, false, 0);
        out.extend_from_slice(&head);
        out.extend_from_slice(&crc32c(&head, b"").to_le_bytes());
        assert_eq!(
            decode_frame(&out, &Integrity::Crc32c),
            Err(DecodeError::Reserved)
        );
    }

    #[test]
    fn oversized_payload_is_refused_on_encode() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&header(), &big, &Integrity::Crc32c, &mut out),
            Err(EncodeError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
        let max = vec![0u8; MAX_PAYLOAD];
        encode_frame(&header(), &max, &Integrity::Crc32c, &mut out).unwrap();
        assert_eq!(out.len(), MAX_DATAGRAM);
    }

    fn any_header() -> impl Strategy<Value = Header> {
        (
            prop_oneof![Just(FrameKind::Data), Just(FrameKind::Parity)],
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u16>(),
        )
            .prop_map(|(kind, epoch, seq, transfer, block, shard)| Header {
                kind,
                epoch,
                seq,
                transfer,
                block,
                shard,
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            h in any_header(),
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
            keyed in any::<bool>(),
        ) {
            let integrity = if keyed {
                Integrity::Mac(LinkKey::from_secret(&[1; 32]))
            } else {
                Integrity::Crc32c
            };
            let mut out = Vec::new();
            encode_frame(&h, &payload, &integrity, &mut out).unwrap();
            prop_assert_eq!(out.len(), integrity.overhead() + payload.len());
            let f = decode_frame(&out, &integrity).unwrap();
            prop_assert_eq!(f.header, h);
            prop_assert_eq!(f.payload, &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10000)) {
            let _ = decode_frame(&bytes, &Integrity::Crc32c);
            let _ = decode_frame(&bytes, &Integrity::Mac(LinkKey::from_secret(&[0; 32])));
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..1500),
            bit in any::<usize>(),
        ) {
            let mut out = Vec::new();
            encode_frame(&header(), &payload, &Integrity::Crc32c, &mut out).unwrap();
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&out, &Integrity::Crc32c).is_err());
        }
    }

    #[test]
    fn link_key_text_is_64_hex_digits() {
        let text = "00112233445566778899aabbccddeeff\n00112233445566778899AABBCCDDEEFF\n";
        let k = LinkKey::secret_from_hex(text).unwrap();
        assert_eq!(k[1], 0x11);
        assert_eq!(k[31], 0xff);
        assert!(LinkKey::secret_from_hex("abcd").is_none());
        assert!(LinkKey::secret_from_hex(&"zz".repeat(32)).is_none());
        assert!(LinkKey::secret_from_hex(&"é".repeat(32)).is_none());
    }
}
