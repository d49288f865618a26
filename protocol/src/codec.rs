//! A bounded reader for hand-encoded, fixed little-endian fields.
//!
//! Every decoder in this crate reads through [`Reader`]: it never reads past
//! the slice it was given, returns `None` instead of panicking when the input
//! is short, and lets the caller insist that nothing is left over
//! ([`Reader::finish`]).

/// A cursor over a byte slice that is never read out of bounds.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Takes the next `n` bytes, or `None` when fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// Succeeds only when every byte was consumed.
    pub(crate) fn finish(self) -> Option<()> {
        self.rest.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u16(), Some(0x0201));
        assert_eq!(r.u32(), Some(0x0605_0403));
        assert_eq!(r.u16(), None, "one byte left is not a u16");
        assert_eq!(r.u8(), Some(0x07));
        assert_eq!(r.finish(), Some(()));
    }

    #[test]
    fn finish_rejects_leftovers() {
        let mut r = Reader::new(&[0, 0, 0]);
        assert_eq!(r.u16(), Some(0));
        assert_eq!(r.finish(), None);
    }
}
