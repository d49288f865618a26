//! The transfer descriptor: what a receiver needs to place shards in a file.
//!
//! Sent as the payload of [`crate::FrameKind::Descriptor`] frames, encoded
//! with `postcard` (varints, field order as declared below), at the start of
//! every pass, periodically during it, and at its end, so that a receiver
//! that starts late or lost the first frames still joins.
//!
//! Decoding checks every field: the name is already sanitised, the size is
//! bounded by [`MAX_TRANSFER_LEN`], the FEC parameters are valid, and the
//! block count agrees with size and block length. Nothing is trusted
//! because it arrived: the file's BLAKE3 is checked again once it is whole.

use serde::{Deserialize, Serialize};

use crate::fec::FecParams;

/// Upper bound on the size of one transfer (1 TiB).
pub const MAX_TRANSFER_LEN: u64 = 1 << 40;
/// Upper bound on a bundle file name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Upper bound on an encoded descriptor.
pub const MAX_DESCRIPTOR_LEN: usize = 512;

/// Identifies one transfer. The sender derives it from the bundle's
/// [transfer digest](crate::digest), so a bundle sent again after a restart keeps its id and the
/// receiver merges the new frames with what it kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferId(pub u64);

impl TransferId {
    /// The id a sender uses for a file with this transfer digest: its
    /// first 8 bytes.
    pub fn from_digest(hash: &blake3::Hash) -> Self {
        let mut id = [0u8; 8];
        id.copy_from_slice(hash.as_bytes().get(..8).unwrap_or(&[0; 8]));
        // 0 is reserved for frames that belong to no transfer.
        Self(u64::from_le_bytes(id).max(1))
    }
}

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for TransferId {
    type Err = std::num::ParseIntError;
    /// Parses the 16 hex digits [`Display`](std::fmt::Display) writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Self)
    }
}

/// A file name that is safe to use as one path component on any system:
/// 1..=128 bytes of `[A-Za-z0-9._+-]`, not starting with `.` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BundleName(String);

/// Why a name is not a [`BundleName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME_LEN`].
    #[error("name must be 1..={MAX_NAME_LEN} bytes, got {0}")]
    Length(usize),
    /// A character outside the allowed set, or a leading `.` or `-`.
    #[error("name {0:?} contains a character that is not allowed")]
    Character(String),
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
}

impl BundleName {
    /// Accepts a name only if it is already safe.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::Length(s.len()));
        }
        if !s.chars().all(allowed) || s.starts_with('.') || s.starts_with('-') {
            return Err(NameError::Character(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// Makes a safe name out of any string: disallowed characters become
    /// `_`, a leading `.` or `-` becomes `_`, and the result is cut to
    /// [`MAX_NAME_LEN`] bytes. An empty input becomes `bundle`.
    pub fn sanitise(s: &str) -> Self {
        let mut out: String = s
            .chars()
            .map(|c| if allowed(c) { c } else { '_' })
            .take(MAX_NAME_LEN)
            .collect();
        if out.starts_with('.') || out.starts_with('-') {
            out.replace_range(..1, "_");
        }
        if out.is_empty() {
            out.push_str("bundle");
        }
        Self(out)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BundleName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<BundleName> for String {
    fn from(n: BundleName) -> Self {
        n.0
    }
}

impl std::fmt::Display for BundleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a receiver needs to rebuild one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDescriptor {
    /// Which transfer the shard frames with this id belong to.
    pub transfer: TransferId,
    /// The bundle's file name on the sender, sanitised.
    pub name: BundleName,
    /// The exact length of the file; the last block is padded beyond it.
    pub size: u64,
    /// The file's [transfer digest](crate::digest), checked once every
    /// block is in.
    pub digest: [u8; 32],
    /// How blocks are cut and coded.
    pub fec: FecParams,
    /// ceil(size / block length), carried to catch disagreement.
    pub block_count: u32,
}

/// Why a descriptor is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// Not valid postcard, or a field failed its own check.
    #[error("malformed descriptor: {0}")]
    Malformed(String),
    /// Longer than [`MAX_DESCRIPTOR_LEN`], or bytes left after it.
    #[error("descriptor has bad length")]
    Length,
    /// Larger than [`MAX_TRANSFER_LEN`].
    #[error("transfer of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// The block count does not follow from size and block length.
    #[error("block count {got} does not match size (expected {want})")]
    BlockCount {
        /// Carried in the descriptor.
        got: u32,
        /// Computed from size and FEC parameters.
        want: u64,
    },
    /// Transfer id 0 is reserved.
    #[error("transfer id 0 is reserved")]
    ReservedId,
    /// The transfer id is not the one the file's transfer digest gives: a forged
    /// descriptor could otherwise claim another bundle's id and have it
    /// remembered as finished.
    #[error("transfer id {0} does not follow from the file's transfer digest")]
    IdMismatch(TransferId),
}

impl TransferDescriptor {
    /// Builds a descriptor, computing the block count.
    pub fn new(
        transfer: TransferId,
        name: BundleName,
        size: u64,
        digest: blake3::Hash,
        fec: FecParams,
    ) -> Result<Self, DescriptorError> {
        let count = Self::blocks_for(size, &fec);
        let d = Self {
            transfer,
            name,
            size,
            digest: *digest.as_bytes(),
            fec,
            block_count: u32::try_from(count).map_err(|_| DescriptorError::TooLarge(size))?,
        };
        d.check()?;
        Ok(d)
    }

    fn blocks_for(size: u64, fec: &FecParams) -> u64 {
        size.div_ceil(fec.block_len() as u64)
    }

    fn check(&self) -> Result<(), DescriptorError> {
        if self.transfer.0 == 0 {
            return Err(DescriptorError::ReservedId);
        }
        if self.transfer != TransferId::from_digest(&self.digest()) {
            return Err(DescriptorError::IdMismatch(self.transfer));
        }
        if self.size > MAX_TRANSFER_LEN {
            return Err(DescriptorError::TooLarge(self.size));
        }
        let want = Self::blocks_for(self.size, &self.fec);
        if u64::from(self.block_count) != want {
            return Err(DescriptorError::BlockCount {
                got: self.block_count,
                want,
            });
        }
        Ok(())
    }

    /// The file's transfer digest, compared in constant time.
    pub fn digest(&self) -> blake3::Hash {
        blake3::Hash::from_bytes(self.digest)
    }

    /// Byte offset of block `b` in the file.
    pub fn block_offset(&self, block: u32) -> u64 {
        u64::from(block) * self.fec.block_len() as u64
    }

    /// True length of block `b`: a full block except for the last one.
    pub fn block_len(&self, block: u32) -> usize {
        let full = self.fec.block_len() as u64;
        let rest = self.size.saturating_sub(self.block_offset(block));
        rest.min(full) as usize
    }

    /// Encodes the descriptor as a frame payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a plain struct into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks a frame payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DescriptorError> {
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return Err(DescriptorError::Length);
        }
        let (d, rest): (Self, _) = postcard::take_from_bytes(bytes)
            .map_err(|e| DescriptorError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DescriptorError::Length);
        }
        d.check()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> TransferDescriptor {
        // Any 32 bytes do as a digest here; these are BLAKE3("x").
        let digest = blake3::hash(b"x");
        TransferDescriptor::new(
            TransferId::from_digest(&digest),
            BundleName::parse("app_1.2.weir").unwrap(),
            1_000_000,
            digest,
            FecParams::new(128, 32, 1416, 32).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_vector() {
        let d = sample();
        let bytes = d.to_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "bacee3aee09e9ecd64", // transfer id (first 8 bytes of the digest, LE), varint
                "0c6170705f312e322e77656972", // name: length 12, "app_1.2.weir"
                "c0843d",             // size 1_000_000, varint
                "3ae7d805f6789a6402acb70ad4096a85a56bf6804eaf25c0493ac697548d30b5", // digest
                "8001",
                "20",
                "880b",
                "20", // K 128, M 32, shard 1416, interleave 32
                "06", // block count
            )
        );
        assert_eq!(TransferDescriptor::from_bytes(&bytes).unwrap(), d);
        assert_eq!(d.block_count, 6);
        // An id that does not follow from the hash is refused.
        let mut forged = d.clone();
        forged.transfer = TransferId(0x0102_0304_0506_0708);
        assert_eq!(
            TransferDescriptor::from_bytes(&forged.to_bytes()),
            Err(DescriptorError::IdMismatch(forged.transfer))
        );
        assert_eq!(d.block_len(5), 1_000_000 - 5 * 128 * 1416);
        assert_eq!(d.block_len(0), 128 * 1416);
    }

    #[test]
    fn names_are_sanitised_or_refused() {
        assert_eq!(
            BundleName::sanitise("../../etc/passwd").as_str(),
            "_._.._etc_passwd"
        );
        assert_eq!(BundleName::sanitise("").as_str(), "bundle");
        assert_eq!(BundleName::sanitise("-rf x").as_str(), "_rf_x");
        assert_eq!(
            BundleName::sanitise(&"a".repeat(300)).as_str().len(),
            MAX_NAME_LEN
        );
        assert!(BundleName::parse("a/b").is_err());
        assert!(BundleName::parse(".hidden").is_err());
        assert!(BundleName::parse("ok-1.0+build.tar").is_ok());
    }

    #[test]
    fn inconsistent_descriptors_are_refused() {
        let mut d = sample();
        d.block_count = 7;
        assert_eq!(
            TransferDescriptor::from_bytes(&d.to_bytes()),
            Err(DescriptorError::BlockCount { got: 7, want: 6 })
        );
        let mut d = sample();
        d.size = MAX_TRANSFER_LEN + 1;
        assert!(matches!(
            TransferDescriptor::from_bytes(&d.to_bytes()),
            Err(DescriptorError::TooLarge(_))
        ));
        let mut d = sample();
        d.transfer = TransferId(0);
        assert_eq!(
            TransferDescriptor::from_bytes(&d.to_bytes()),
            Err(DescriptorError::ReservedId)
        );
        let mut bytes = sample().to_bytes();
        bytes.push(0);
        assert_eq!(
            TransferDescriptor::from_bytes(&bytes),
            Err(DescriptorError::Length)
        );
    }

    #[test]
    fn a_descriptor_with_a_hostile_name_does_not_decode() {
        let d = sample();
        let good = d.to_bytes();
        // Replace the name's first byte with '/'.
        let pos = good.windows(3).position(|w| w == b"app").unwrap();
        let mut bad = good.clone();
        bad[pos] = b'/';
        assert!(matches!(
            TransferDescriptor::from_bytes(&bad),
            Err(DescriptorError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = TransferDescriptor::from_bytes(&bytes);
        }

        #[test]
        fn valid_descriptors_round_trip(
            id in 1u64..,
            size in 0u64..MAX_TRANSFER_LEN,
            k in 1u16..512,
            m in 1u16..256,
            s in 1u16..700,
            d in 1u16..64,
            name in "[a-z0-9][a-z0-9._+-]{0,40}",
        ) {
            let fec = FecParams::new(k, m, s * 2, d).unwrap();
            let desc = TransferDescriptor::new(
                TransferId::from_digest(&crate::digest::digest(&id.to_le_bytes())), BundleName::parse(&name).unwrap(), size, crate::digest::digest(&id.to_le_bytes()), fec,
            );
            if let Ok(desc) = desc {
                prop_assert_eq!(TransferDescriptor::from_bytes(&desc.to_bytes()).unwrap(), desc);
            }
        }
    }
}
