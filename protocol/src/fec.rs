//! Forward error correction: systematic Reed–Solomon over GF(2^16).
//!
//! A transfer is cut into blocks of `K` data shards of `shard_size` bytes
//! (the last block is zero-padded; the descriptor gives the true length).
//! Each block also has up to [`FecParams::max_recovery`] parity shards, all
//! from one code, so that any `K` distinct shards of a block, data or
//! parity, from any pass, rebuild it.
//!
//! ```text
//!             data shards (sent in pass 0)        parity, by recovery index
//!  block b:  [d0][d1] ... [dK-1]                 [p0 .. pM-1]  [pM .. pM+K+M-1]  [ ...
//!                                                 pass 0        pass 1            pass 2
//! ```
//!
//! Pass 0 sends the `K` data shards and parity `0..M`. Every later pass sends
//! `K + M` parity shards that no earlier pass carried, so that whatever the
//! receiver kept from earlier passes, each frame of the new pass is new
//! information. Recovery indices wrap around after [`FecParams::max_recovery`].
//!
//! The code is the "low rate" Leopard construction of `reed-solomon-simd`:
//! parity shard `i` is the evaluation of the block's polynomial at a point
//! that depends only on `K` and `i`, so parity computed for one pass is
//! identical to the same index computed for any other, and a decoder can mix
//! shards from every pass. A test vector below pins the bytes.

use reed_solomon_simd::engine::DefaultEngine;
use reed_solomon_simd::rate::{LowRateDecoder, LowRateEncoder, RateDecoder, RateEncoder};
use serde::{Deserialize, Serialize};

/// GF(2^16) has this many points; data and parity positions share them.
const GF_ORDER: u32 = 65536;
/// Upper bound on data shards per block.
pub const MAX_DATA_SHARDS: u16 = 4096;
/// Upper bound on the bytes of one block (`K * shard_size`), which bounds
/// what a receiver allocates per block it holds.
pub const MAX_BLOCK_LEN: usize = 16 << 20;
/// Upper bound on the interleave depth.
pub const MAX_INTERLEAVE: u16 = 1024;
/// Bytes of blocks an interleaved group holds when the sender picks the
/// depth ([`FecParams::auto_interleave`]).
pub const AUTO_GROUP_BYTES: usize = 8 << 20;
/// Deepest interleave the sender picks by itself.
pub const AUTO_INTERLEAVE_MAX: u16 = 16;

/// Validated FEC parameters of one transfer.
///
/// Fields are private: a `FecParams` can only be made through
/// [`FecParams::new`], so holding one proves the values fit together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawFecParams", into = "RawFecParams")]
pub struct FecParams {
    data_shards: u16,
    parity_shards: u16,
    shard_size: u16,
    interleave: u16,
}

/// The serialized shape of [`FecParams`], checked on the way in.
#[derive(Serialize, Deserialize)]
struct RawFecParams {
    data_shards: u16,
    parity_shards: u16,
    shard_size: u16,
    interleave: u16,
}

impl TryFrom<RawFecParams> for FecParams {
    type Error = FecParamsError;
    fn try_from(r: RawFecParams) -> Result<Self, Self::Error> {
        Self::new(r.data_shards, r.parity_shards, r.shard_size, r.interleave)
    }
}

impl From<FecParams> for RawFecParams {
    fn from(p: FecParams) -> Self {
        Self {
            data_shards: p.data_shards,
            parity_shards: p.parity_shards,
            shard_size: p.shard_size,
            interleave: p.interleave,
        }
    }
}

/// Why a set of FEC parameters is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FecParamsError {
    /// K must be between 1 and [`MAX_DATA_SHARDS`].
    #[error("data shards must be 1..={MAX_DATA_SHARDS}, got {0}")]
    DataShards(u16),
    /// M must be at least 1 and leave room in GF(2^16) for a second pass.
    #[error("parity shards per pass must be 1..={max}, got {got}")]
    ParityShards {
        /// The value given.
        got: u16,
        /// The largest value that fits with this K.
        max: u32,
    },
    /// The shard size must be even, at least 2 and fit in a frame.
    #[error("shard size must be an even number of bytes in 2..={max}, got {got}")]
    ShardSize {
        /// The value given.
        got: u16,
        /// The largest shard a frame carries.
        max: usize,
    },
    /// K × shard size exceeds [`MAX_BLOCK_LEN`].
    #[error("a block of {0} bytes exceeds the {MAX_BLOCK_LEN}-byte limit")]
    BlockTooLarge(usize),
    /// The interleave depth must be between 1 and [`MAX_INTERLEAVE`].
    #[error("interleave depth must be 1..={MAX_INTERLEAVE}, got {0}")]
    Interleave(u16),
}

impl FecParams {
    /// Validates a set of parameters: `data_shards` (K) and `parity_shards`
    /// (M) per block, `shard_size` bytes per shard, and `interleave` blocks
    /// sent side by side.
    pub fn new(
        data_shards: u16,
        parity_shards: u16,
        shard_size: u16,
        interleave: u16,
    ) -> Result<Self, FecParamsError> {
        if !(1..=MAX_DATA_SHARDS).contains(&data_shards) {
            return Err(FecParamsError::DataShards(data_shards));
        }
        let k = u32::from(data_shards);
        // One full later pass (K + M fresh parity) must fit after pass 0.
        let max_m = (GF_ORDER - k.next_power_of_two() - k) / 2;
        if parity_shards == 0 || u32::from(parity_shards) > max_m {
            return Err(FecParamsError::ParityShards {
                got: parity_shards,
                max: max_m,
            });
        }
        if shard_size < 2
            || !shard_size.is_multiple_of(2)
            || usize::from(shard_size) > crate::wire::MAX_PAYLOAD
        {
            return Err(FecParamsError::ShardSize {
                got: shard_size,
                max: crate::wire::MAX_PAYLOAD,
            });
        }
        let block = usize::from(data_shards) * usize::from(shard_size);
        if block > MAX_BLOCK_LEN {
            return Err(FecParamsError::BlockTooLarge(block));
        }
        if !(1..=MAX_INTERLEAVE).contains(&interleave) {
            return Err(FecParamsError::Interleave(interleave));
        }
        Ok(Self {
            data_shards,
            parity_shards,
            shard_size,
            interleave,
        })
    }

    /// The weir defaults for a given shard size: K = 256, M = 64 (20% of
    /// the frames of pass 0 are parity), interleave depth 16, so that a
    /// burst of 500 lost frames costs each block about 32 of its 64 parity
    /// shards. Large blocks matter because every Reed–Solomon decode has a
    /// fixed cost (a transform over all of GF(2^16), about 0.4 ms here)
    /// that a bigger block spreads over more bytes.
    pub fn default_for_shard_size(shard_size: u16) -> Result<Self, FecParamsError> {
        Self::new(256, 64, shard_size, 16)
    }

    /// The interleave depth for blocks of `data_shards` × `shard_size`
    /// bytes when none is configured: as many blocks as fit in
    /// [`AUTO_GROUP_BYTES`], at most [`AUTO_INTERLEAVE_MAX`]. A burst of lost
    /// frames then costs each block about the same share of its parity at
    /// any MTU (16 blocks at 1500, 3 at 9000, for K = 256), and a group stays
    /// small enough for the CPU caches on both ends and for the receiver's
    /// write queue, which takes a whole group at once when its blocks
    /// complete together.
    pub fn auto_interleave(data_shards: u16, shard_size: u16) -> u16 {
        let block = usize::from(data_shards).max(1) * usize::from(shard_size).max(1);
        let d = (AUTO_GROUP_BYTES / block).clamp(1, usize::from(AUTO_INTERLEAVE_MAX));
        u16::try_from(d).unwrap_or(AUTO_INTERLEAVE_MAX)
    }

    /// Shrinks K (and M in proportion, keeping at least `min(M, 4)` parity
    /// shards) so that a transfer smaller than one block is not padded to a
    /// full block. Larger transfers keep these parameters.
    pub fn fitted_to(self, size: u64) -> Self {
        let shard = u64::from(self.shard_size);
        let needed = size.div_ceil(shard).max(1);
        if needed >= u64::from(self.data_shards) {
            return self;
        }
        let k = u16::try_from(needed).unwrap_or(self.data_shards);
        let scaled =
            (u32::from(self.parity_shards) * u32::from(k)).div_ceil(u32::from(self.data_shards));
        let m = u16::try_from(scaled)
            .unwrap_or(self.parity_shards)
            .max(self.parity_shards.min(4));
        Self::new(k, m, self.shard_size, self.interleave).unwrap_or(self)
    }

    /// K: data shards per block.
    pub fn data_shards(&self) -> u16 {
        self.data_shards
    }
    /// M: parity shards per block in pass 0.
    pub fn parity_shards(&self) -> u16 {
        self.parity_shards
    }
    /// Bytes per shard, which is the payload of every shard frame.
    pub fn shard_size(&self) -> u16 {
        self.shard_size
    }
    /// Blocks sent side by side.
    pub fn interleave(&self) -> u16 {
        self.interleave
    }
    /// Bytes of one full block: K × shard size.
    pub fn block_len(&self) -> usize {
        usize::from(self.data_shards) * usize::from(self.shard_size)
    }
    /// Number of distinct recovery indices; later passes wrap around.
    pub fn max_recovery(&self) -> u32 {
        GF_ORDER - u32::from(self.data_shards).next_power_of_two()
    }
    /// Shard frames each block gets in one pass: K + M.
    pub fn frames_per_block_per_pass(&self) -> u32 {
        u32::from(self.data_shards) + u32::from(self.parity_shards)
    }

    /// What the `slot`-th shard of a block is in pass `pass`:
    /// `slot` runs over `0..K+M` in every pass.
    pub fn shard_at(&self, pass: u32, slot: u32) -> ShardId {
        let k = u32::from(self.data_shards);
        let m = u32::from(self.parity_shards);
        if pass == 0 {
            if slot < k {
                return ShardId::Data(slot as u16);
            }
            return ShardId::Parity(slot - k);
        }
        let per_pass = u64::from(k + m);
        let index = u64::from(m) + u64::from(pass - 1) * per_pass + u64::from(slot);
        let wrapped = index % u64::from(self.max_recovery());
        ShardId::Parity(wrapped as u32)
    }

    /// The highest recovery index pass `pass` uses, plus one, or `None` for
    /// pass 0's data-only slots. An encoder must produce this many.
    fn recovery_needed(&self, pass: u32) -> u32 {
        let slots = self.frames_per_block_per_pass();
        (0..slots)
            .filter_map(|s| match self.shard_at(pass, s) {
                ShardId::Parity(i) => Some(i + 1),
                ShardId::Data(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// One shard of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardId {
    /// Data shard index (< K).
    Data(u16),
    /// Recovery index (< [`FecParams::max_recovery`]).
    Parity(u32),
}

/// Errors from the erasure coder. With validated parameters these mean a
/// bug or an exhausted allocator, never bad input from the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Reed-Solomon: {0}")]
pub struct FecError(String);

impl From<reed_solomon_simd::Error> for FecError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        Self(e.to_string())
    }
}

/// Computes the parity shards of blocks, one pass at a time.
pub struct BlockEncoder {
    params: FecParams,
    encoder: Option<LowRateEncoder<DefaultEngine>>,
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockEncoder")
            .field("params", &self.params)
            .finish()
    }
}

impl BlockEncoder {
    /// An encoder for blocks with these parameters.
    pub fn new(params: FecParams) -> Self {
        Self {
            params,
            encoder: None,
        }
    }

    /// Computes the parity shards that pass `pass` sends for one block and
    /// appends them to `parity`, in slot order: `parity` then holds, for
    /// every parity slot of that pass, `shard_size` bytes. `block` must be
    /// exactly [`FecParams::block_len`] bytes (padded with zeros).
    ///
    /// Returns the recovery indices in the same order.
    pub fn encode_pass(
        &mut self,
        block: &[u8],
        pass: u32,
        parity: &mut Vec<u8>,
    ) -> Result<Vec<u32>, FecError> {
        let p = self.params;
        let shard = usize::from(p.shard_size);
        if block.len() != p.block_len() {
            return Err(FecError(format!(
                "block of {} bytes, expected {}",
                block.len(),
                p.block_len()
            )));
        }
        let needed = p.recovery_needed(pass) as usize;
        let indices: Vec<u32> = (0..p.frames_per_block_per_pass())
            .filter_map(|s| match p.shard_at(pass, s) {
                ShardId::Parity(i) => Some(i),
                ShardId::Data(_) => None,
            })
            .collect();
        if needed == 0 {
            return Ok(indices);
        }
        let k = usize::from(p.data_shards);
        let mut enc = match self.encoder.take() {
            Some(mut e) => {
                e.reset(k, needed, shard)?;
                e
            }
            None => LowRateEncoder::new(k, needed, shard, DefaultEngine::new(), None)?,
        };
        for s in block.chunks_exact(shard) {
            enc.add_original_shard(s)?;
        }
        {
            let result = enc.encode()?;
            for &i in &indices {
                let bytes = result
                    .recovery(i as usize)
                    .ok_or_else(|| FecError(format!("no recovery shard {i}")))?;
                parity.extend_from_slice(bytes);
            }
        }
        self.encoder = Some(enc);
        Ok(indices)
    }
}

/// What one shard-sized slot of a block buffer holds while the block is
/// being collected. Parity shards are parked in slots whose data shard is
/// missing, so a block never needs more than K × shard size bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Nothing yet.
    Empty,
    /// The data shard of this index.
    Data,
    /// A parity shard with this recovery index.
    Parity(u32),
}

/// Rebuilds the missing data shards of one block from any K shards.
#[derive(Default)]
pub struct BlockDecoder {
    decoder: Option<LowRateDecoder<DefaultEngine>>,
}

impl std::fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockDecoder")
    }
}

impl BlockDecoder {
    /// A decoder; it keeps its working memory between blocks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the block in place: `block` is K × shard size bytes, and
    /// `slots[i]` says what its `i`-th shard-sized slot holds. Afterwards
    /// every slot holds its data shard. The caller guarantees at least K
    /// slots are not [`Slot::Empty`].
    pub fn decode(
        &mut self,
        params: &FecParams,
        block: &mut [u8],
        slots: &[Slot],
    ) -> Result<(), FecError> {
        let k = usize::from(params.data_shards);
        let shard = usize::from(params.shard_size);
        let recovery_count = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Parity(i) => Some(*i as usize + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        if recovery_count == 0 {
            // Every data shard is present: nothing to rebuild.
            return Ok(());
        }
        let mut dec = match self.decoder.take() {
            Some(mut d) => {
                d.reset(k, recovery_count, shard)?;
                d
            }
            None => LowRateDecoder::new(k, recovery_count, shard, DefaultEngine::new(), None)?,
        };
        for (i, (bytes, slot)) in block.chunks_exact(shard).zip(slots).enumerate() {
            match slot {
                Slot::Data => dec.add_original_shard(i, bytes)?,
                Slot::Parity(r) => dec.add_recovery_shard(*r as usize, bytes)?,
                Slot::Empty => {}
            }
        }
        {
            let result = dec.decode()?;
            for (i, restored) in result.restored_original_iter() {
                let dst = block
                    .get_mut(i * shard..(i + 1) * shard)
                    .ok_or_else(|| FecError(format!("restored shard {i} out of range")))?;
                dst.copy_from_slice(restored);
            }
        }
        self.decoder = Some(dec);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_interleave_keeps_a_group_near_8_mib() {
        // MTU 1500 with CRC (1424-byte shards) and 9000 (8928).
        assert_eq!(FecParams::auto_interleave(256, 1424), 16);
        assert_eq!(FecParams::auto_interleave(256, 8928), 3);
        // Small blocks stop at 16; a block past 8 MiB still gets 1.
        assert_eq!(FecParams::auto_interleave(4, 16), 16);
        assert_eq!(FecParams::auto_interleave(4096, 4096), 1);
        for (k, s) in [(256, 1424), (256, 8928), (64, 8928), (1024, 1424)] {
            let d = FecParams::auto_interleave(k, s);
            assert!(FecParams::new(k, 16, s, d).is_ok());
            assert!(usize::from(d) * usize::from(k) * usize::from(s) <= AUTO_GROUP_BYTES);
        }
    }

    fn block(p: &FecParams, seed: u8) -> Vec<u8> {
        (0..p.block_len())
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn parameter_bounds_are_enforced() {
        assert!(FecParams::new(128, 32, 1416, 32).is_ok());
        assert_eq!(
            FecParams::new(0, 32, 1416, 32),
            Err(FecParamsError::DataShards(0))
        );
        assert!(matches!(
            FecParams::new(128, 0, 1416, 32),
            Err(FecParamsError::ParityShards { .. })
        ));
        assert!(matches!(
            FecParams::new(128, 40000, 1416, 32),
            Err(FecParamsError::ParityShards { .. })
        ));
        assert!(matches!(
            FecParams::new(128, 32, 1415, 32),
            Err(FecParamsError::ShardSize { .. })
        ));
        assert!(matches!(
            FecParams::new(128, 32, 9000, 32),
            Err(FecParamsError::ShardSize { .. })
        ));
        assert_eq!(
            FecParams::new(4096, 32, 8000, 32),
            Err(FecParamsError::BlockTooLarge(4096 * 8000))
        );
        assert_eq!(
            FecParams::new(128, 32, 1416, 0),
            Err(FecParamsError::Interleave(0))
        );
    }

    #[test]
    fn pass_schedule_never_repeats_a_shard_before_wrapping() {
        let p = FecParams::new(4, 2, 64, 1).unwrap();
        let shards: Vec<ShardId> = (0..3)
            .flat_map(|pass| (0..6).map(move |s| (pass, s)))
            .map(|(pass, s)| p.shard_at(pass, s))
            .collect();
        assert_eq!(
            &shards[..6],
            &[
                ShardId::Data(0),
                ShardId::Data(1),
                ShardId::Data(2),
                ShardId::Data(3),
                ShardId::Parity(0),
                ShardId::Parity(1),
            ]
        );
        assert_eq!(shards[6], ShardId::Parity(2));
        assert_eq!(shards[17], ShardId::Parity(13));
        // Wrap-around stays within the code.
        let last = p.max_recovery() - 1;
        let pass = 1 + (last - 2) / 6;
        let slot = (last - 2) % 6;
        assert_eq!(p.shard_at(pass, slot), ShardId::Parity(last));
        assert_eq!(p.shard_at(pass, slot + 1), ShardId::Parity(0));
    }

    #[test]
    fn fitted_params_shrink_small_transfers_only() {
        let p = FecParams::new(128, 32, 1000, 32).unwrap();
        assert_eq!(p.fitted_to(10 << 20), p);
        let small = p.fitted_to(2500);
        assert_eq!((small.data_shards(), small.parity_shards()), (3, 4));
        let empty = p.fitted_to(0);
        assert_eq!(empty.data_shards(), 1);
        let half = p.fitted_to(64_000);
        assert_eq!((half.data_shards(), half.parity_shards()), (64, 16));
    }

    /// Pins the parity bytes: if this changes, receivers of different
    /// builds would stop understanding each other.
    #[test]
    fn parity_test_vector() {
        let p = FecParams::new(4, 2, 8, 1).unwrap();
        let data: Vec<u8> = (0u8..32).collect();
        let mut parity = Vec::new();
        let idx = BlockEncoder::new(p)
            .encode_pass(&data, 0, &mut parity)
            .unwrap();
        assert_eq!(idx, vec![0, 1]);
        let hex: String = parity.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "7170737229282b2a79787b7a21202322");
    }

    #[test]
    fn parity_is_the_same_whichever_pass_computes_it() {
        let p = FecParams::new(10, 3, 64, 1).unwrap();
        let data = block(&p, 9);
        let mut enc = BlockEncoder::new(p);
        let mut all = std::collections::HashMap::new();
        for pass in 0..4 {
            let mut parity = Vec::new();
            let idx = enc.encode_pass(&data, pass, &mut parity).unwrap();
            for (i, bytes) in idx.iter().zip(parity.chunks_exact(64)) {
                assert!(
                    all.insert(*i, bytes.to_vec()).is_none(),
                    "index {i} repeated"
                );
            }
        }
        // A fresh encoder asked for a later pass first gives the same bytes.
        let mut parity = Vec::new();
        let idx = BlockEncoder::new(p)
            .encode_pass(&data, 2, &mut parity)
            .unwrap();
        for (i, bytes) in idx.iter().zip(parity.chunks_exact(64)) {
            assert_eq!(all[i], bytes);
        }
    }

    #[test]
    fn any_k_shards_from_any_passes_rebuild_the_block() {
        let p = FecParams::new(16, 4, 128, 1).unwrap();
        let data = block(&p, 1);
        let mut enc = BlockEncoder::new(p);
        let mut parity_by_index = Vec::new();
        for pass in 0..3 {
            let mut parity = Vec::new();
            let idx = enc.encode_pass(&data, pass, &mut parity).unwrap();
            for (i, b) in idx.into_iter().zip(parity.chunks_exact(128)) {
                parity_by_index.push((i, b.to_vec()));
            }
        }
        // Keep data shards 0..5, and park 11 parity shards from three passes
        // in the slots of the missing data shards.
        let mut damaged = data.clone();
        let mut slots = vec![Slot::Data; 16];
        let chosen: Vec<&(u32, Vec<u8>)> = parity_by_index
            .iter()
            .filter(|(i, _)| [1, 3, 4, 9, 10, 15, 20, 30, 41, 42, 43].contains(i))
            .collect();
        assert_eq!(chosen.len(), 11);
        for (slot, (i, bytes)) in (5..16).zip(chosen) {
            damaged[slot * 128..(slot + 1) * 128].copy_from_slice(bytes);
            slots[slot] = Slot::Parity(*i);
        }
        BlockDecoder::new()
            .decode(&p, &mut damaged, &slots)
            .unwrap();
        assert_eq!(damaged, data);
    }
}
