//! Loss, reordering and duplication, measured from frame sequence numbers.
//!
//! The sender numbers every frame of an epoch from 0. The receiver keeps the
//! next number it expects and a window of the last [`WINDOW`] numbers it saw:
//!
//! ```text
//!            seen?  1 1 0 1 1 1 0 1 1 1 | next
//!   seq:  ... n-10                  n-1 | n
//!   a frame with seq >= n:  the gap is counted lost, the window slides
//!   a frame in the window:  seen -> duplicate, else reordered (and one
//!                           fewer lost)
//!   older than the window:  stale
//! ```
//!
//! A frame from another epoch means the sender restarted: the meter starts
//! over and counts the restart.

/// Sequence numbers remembered for duplicate detection.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// Counters since the receiver started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossStats {
    /// Frames seen for the first time.
    pub received: u64,
    /// Sequence numbers never seen (so far).
    pub lost: u64,
    /// Frames that came after a higher sequence number.
    pub reordered: u64,
    /// Frames whose sequence number was already seen.
    pub duplicated: u64,
    /// Frames older than the window: too late to tell.
    pub stale: u64,
    /// Epoch changes: the sender restarted.
    pub sender_restarts: u64,
}

/// What a sequence number says about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// Next in order, or ahead of a gap.
    InOrder,
    /// Filled a gap.
    Reordered,
    /// Seen before: drop it.
    Duplicate,
    /// Too old to tell: drop it.
    Stale,
    /// First frame of a new sender epoch (`previous` is `None` for the
    /// first epoch this receiver sees).
    NewEpoch {
        /// The epoch it replaces.
        previous: Option<u64>,
    },
}

/// Tracks one sender's sequence numbers.
#[derive(Debug, Clone)]
pub struct LossMeter {
    epoch: Option<u64>,
    next: u64,
    seen: [u64; WORDS],
    stats: LossStats,
}

impl Default for LossMeter {
    fn default() -> Self {
        Self {
            epoch: None,
            next: 0,
            seen: [0; WORDS],
            stats: LossStats::default(),
        }
    }
}

impl LossMeter {
    /// Counters so far.
    pub fn stats(&self) -> LossStats {
        self.stats
    }

    /// The current sender epoch, once one frame was seen.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    fn bit(seq: u64) -> (usize, u64) {
        let pos = seq % WINDOW;
        ((pos / 64) as usize, 1u64 << (pos % 64))
    }

    fn mark(&mut self, seq: u64) -> bool {
        let (w, m) = Self::bit(seq);
        match self.seen.get_mut(w) {
            Some(word) => {
                let was = *word & m != 0;
                *word |= m;
                was
            }
            None => false,
        }
    }

    fn clear(&mut self, seq: u64) {
        let (w, m) = Self::bit(seq);
        if let Some(word) = self.seen.get_mut(w) {
            *word &= !m;
        }
    }

    /// Records one frame that passed its integrity check.
    pub fn observe(&mut self, epoch: u64, seq: u64) -> SeqVerdict {
        if self.epoch != Some(epoch) {
            let previous = self.epoch;
            if previous.is_some() {
                self.stats.sender_restarts += 1;
            }
            self.epoch = Some(epoch);
            self.seen = [0; WORDS];
            self.next = seq.saturating_add(1);
            self.mark(seq);
            self.stats.received += 1;
            return SeqVerdict::NewEpoch { previous };
        }
        if seq >= self.next {
            let gap = seq - self.next;
            self.stats.lost += gap;
            if gap >= WINDOW {
                self.seen = [0; WORDS];
            } else {
                for s in self.next..seq {
                    self.clear(s);
                }
            }
            self.clear(seq);
            self.mark(seq);
            self.next = seq.saturating_add(1);
            self.stats.received += 1;
            return SeqVerdict::InOrder;
        }
        if self.next - seq > WINDOW {
            self.stats.stale += 1;
            return SeqVerdict::Stale;
        }
        if self.mark(seq) {
            self.stats.duplicated += 1;
            return SeqVerdict::Duplicate;
        }
        self.stats.reordered += 1;
        self.stats.lost = self.stats.lost.saturating_sub(1);
        self.stats.received += 1;
        SeqVerdict::Reordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_reordering_and_duplicates() {
        let mut m = LossMeter::default();
        assert_eq!(m.observe(7, 100), SeqVerdict::NewEpoch { previous: None });
        assert_eq!(m.observe(7, 101), SeqVerdict::InOrder);
        assert_eq!(m.observe(7, 105), SeqVerdict::InOrder); // 102..=104 missing
        assert_eq!(m.stats().lost, 3);
        assert_eq!(m.observe(7, 103), SeqVerdict::Reordered);
        assert_eq!(m.observe(7, 103), SeqVerdict::Duplicate);
        assert_eq!(m.observe(7, 105), SeqVerdict::Duplicate);
        let s = m.stats();
        assert_eq!(
            (s.received, s.lost, s.reordered, s.duplicated),
            (4, 2, 1, 2)
        );
    }

    #[test]
    fn old_frames_are_stale_and_a_new_epoch_restarts() {
        let mut m = LossMeter::default();
        m.observe(1, 0);
        m.observe(1, WINDOW * 3);
        assert_eq!(m.observe(1, 5), SeqVerdict::Stale);
        assert_eq!(m.observe(2, 0), SeqVerdict::NewEpoch { previous: Some(1) });
        assert_eq!(m.stats().sender_restarts, 1);
        assert_eq!(m.observe(2, 0), SeqVerdict::Duplicate);
    }

    #[test]
    fn the_window_forgets_slots_it_slides_over() {
        let mut m = LossMeter::default();
        m.observe(1, 0);
        m.observe(1, 1);
        // Jump so that slot 1 % WINDOW is reused by a new sequence number.
        m.observe(1, WINDOW + 2);
        assert_eq!(m.observe(1, WINDOW + 1), SeqVerdict::Reordered);
    }
}
