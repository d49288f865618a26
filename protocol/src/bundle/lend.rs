//! Readers that can show their next bytes in place instead of copying them
//! out, so that verification hashes a payload where it already lies in
//! memory.
//!
//! The `tar` reader needs every byte copied into its buffer, but of a
//! payload entry's content only the hash matters, and the transfer digest
//! computes that hash as the bytes pass by. [`verify_digest_lent`] lets
//! those bytes be hashed where the reader holds them and skips the copy
//! (the receiver's verifier reads blocks it was handed in memory).
//!
//! [`verify_digest_lent`]: super::verify::verify_digest_lent

use std::io::{self, Read};

/// A [`Read`] that can also lend its next bytes.
pub trait Lend: Read {
    /// Passes up to `max` of the next bytes to `f`, in one or more slices
    /// in order, and consumes them; returns how many (0 only at the end,
    /// or when `max` is 0). Errors as [`Read::read`].
    ///
    /// The slices given to `f` add up to exactly the count returned, and
    /// `f` is not called when an error is returned: whoever hashes what
    /// is lent relies on both (verification checks the first, and fails
    /// the read when it does not hold).
    fn lend(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize>;
}

/// Lends from any reader by reading into a buffer of its own: what
/// [`verify_digest`](super::verify::verify_digest) uses for a reader that
/// holds nothing in memory (a file).
#[derive(Debug)]
pub struct Copying<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R> Copying<R> {
    /// Wraps `inner`, lending through a buffer of `size` bytes.
    pub fn new(inner: R, size: usize) -> Self {
        Self {
            inner,
            buf: vec![0; size.max(1)],
        }
    }
}

impl<R: Read> Read for Copying<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.inner.read(out)
    }
}

impl<R: Read> Lend for Copying<R> {
    fn lend(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let want = max.min(self.buf.len());
        let dst = self.buf.get_mut(..want).unwrap_or_default();
        let n = self.inner.read(dst)?;
        let read = dst
            .get(..n)
            .ok_or_else(|| io::Error::other("a reader returned more bytes than asked for"))?;
        if n > 0 {
            f(read);
        }
        Ok(n)
    }
}

impl<L: Lend + ?Sized> Lend for &mut L {
    fn lend(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        (**self).lend(max, f)
    }
}

impl Lend for &[u8] {
    fn lend(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let n = max.min(self.len());
        let (now, rest) = self.split_at(n);
        if n > 0 {
            f(now);
        }
        *self = rest;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lent<L: Lend>(mut l: L, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while l.lend(step, &mut |s| got.extend_from_slice(s)).unwrap() > 0 {}
        got
    }

    #[test]
    fn lending_gives_the_bytes_in_order_and_stops_at_the_end() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(lent(data.as_slice(), 333), data);
        assert_eq!(lent(Copying::new(data.as_slice(), 1000), 4096), data);
        assert_eq!(lent(Copying::new(data.as_slice(), 4096), 7), data);
        let mut empty: &[u8] = &[];
        assert_eq!(
            empty.lend(10, &mut |_| panic!("nothing to lend")).unwrap(),
            0
        );
    }
}
