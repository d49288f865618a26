//! Pacing: a token bucket at the configured rate, with no clock inside.
//!
//! Tokens (bytes) accrue at the rate up to the bucket's depth; a batch may
//! go when the bucket holds its size. The depth is one batch (or 2 ms at
//! the rate, whichever is larger, so that sleep jitter does not lose
//! tokens at 10 Gbit/s): the link never sees more than one batch above the
//! rate, and over any second the rate holds.

use std::time::{Duration, Instant};

use weir_protocol::Rate;

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: f64,
    depth: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A bucket for `rate` that holds one batch of `batch_bytes`, starting
    /// full.
    pub fn new(rate: Rate, batch_bytes: usize, now: Instant) -> Self {
        let bytes_per_sec = rate.bytes_per_sec();
        let depth = (batch_bytes as f64).max(bytes_per_sec * 0.002);
        Self {
            bytes_per_sec,
            depth,
            tokens: depth,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.bytes_per_sec).min(self.depth);
        self.last = now;
    }

    /// How long to wait before `bytes` may be sent (zero if now).
    pub fn delay(&mut self, now: Instant, bytes: usize) -> Duration {
        self.refill(now);
        let need = bytes as f64 - self.tokens;
        if need <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(need / self.bytes_per_sec)
        }
    }

    /// Takes `bytes` from the bucket (after [`Pacer::delay`] said zero).
    pub fn consume(&mut self, now: Instant, bytes: usize) {
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// Datagrams per batch for this rate: about a millisecond's worth,
    /// between 1 and `max`.
    pub fn batch_frames(rate: Rate, datagram: usize, max: usize) -> usize {
        let per_ms = rate.bytes_per_sec() / 1000.0 / datagram.max(1) as f64;
        (per_ms as usize).clamp(1, max.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the bucket with a fake clock that jumps exactly to each due
    /// time (plus a fixed oversleep) and measures the achieved rate.
    fn simulate(rate: &str, batch: usize, oversleep: Duration) -> f64 {
        let rate: Rate = rate.parse().unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        let mut p = Pacer::new(rate, batch, now);
        let mut sent = 0usize;
        while now < t0 + Duration::from_secs(2) {
            let d = p.delay(now, batch);
            if d > Duration::ZERO {
                now += d + oversleep;
                continue;
            }
            p.consume(now, batch);
            sent += batch;
        }
        // Discount the initial full bucket.
        (sent as f64 - batch.max((rate.bytes_per_sec() * 0.002) as usize) as f64) * 8.0
            / 2.0
            / rate.bits_per_sec() as f64
    }

    #[test]
    fn holds_the_rate_from_10_mbit_to_10_gbit() {
        for (rate, batch) in [
            ("10Mbit", 1472),
            ("100Mbit", 14720),
            ("1Gbit", 94208),
            ("10Gbit", 94208),
        ] {
            for oversleep in [Duration::ZERO, Duration::from_micros(80)] {
                let ratio = simulate(rate, batch, oversleep);
                assert!(
                    (0.98..=1.02).contains(&ratio),
                    "{rate} oversleep {oversleep:?}: {ratio}"
                );
            }
        }
    }

    /// Sends `batches` batches of `batch` bytes through a bucket on a fake
    /// clock that wakes each sleeper up to `late` after it asked (a fixed
    /// pseudo-random sequence); returns the time of every send.
    fn schedule(rate: Rate, batch: usize, batches: usize, late: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut now = t0;
        let mut p = Pacer::new(rate, batch, now);
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut sends = Vec::with_capacity(batches);
        for _ in 0..batches {
            loop {
                let d = p.delay(now, batch);
                if d.is_zero() {
                    break;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let nanos = late.as_nanos() as u64;
                now += d + Duration::from_nanos(if nanos == 0 { 0 } else { x % nanos });
            }
            p.consume(now, batch);
            sends.push(now - t0);
        }
        sends
    }

    #[test]
    fn no_second_of_the_schedule_exceeds_the_rate_by_two_percent() {
        for (rate, frames) in [
            ("20Mbit", 1),
            ("100Mbit", 8),
            ("400Mbit", 33),
            ("1Gbit", 64),
        ] {
            let rate: Rate = rate.parse().unwrap();
            let batch = frames * 1472;
            // 2.5 s of batches.
            let n = (rate.bytes_per_sec() * 2.5 / batch as f64) as usize;
            for late in [Duration::ZERO, Duration::from_micros(200)] {
                let sends = schedule(rate, batch, n, late);
                // Every window of one second, starting at any send.
                let mut end = 0;
                for (start, t) in sends.iter().enumerate() {
                    while end < sends.len() && sends[end] < *t + Duration::from_secs(1) {
                        end += 1;
                    }
                    let ratio = ((end - start) * batch) as f64 / rate.bytes_per_sec();
                    assert!(
                        ratio <= 1.02,
                        "{rate}, late by up to {late:?}: {ratio:.4} of the rate in the second from {t:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn never_bursts_more_than_the_bucket() {
        let rate: Rate = "100Mbit".parse().unwrap();
        let t0 = Instant::now();
        let mut p = Pacer::new(rate, 50_000, t0);
        // After a long idle period only one bucket is available at once.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.delay(later, 50_000), Duration::ZERO);
        p.consume(later, 50_000);
        assert!(p.delay(later, 50_000) > Duration::from_millis(3));
    }

    #[test]
    fn batch_size_follows_the_rate() {
        assert_eq!(Pacer::batch_frames("10Mbit".parse().unwrap(), 1472, 64), 1);
        assert_eq!(Pacer::batch_frames("1Gbit".parse().unwrap(), 1472, 64), 64);
        assert_eq!(
            Pacer::batch_frames("200Mbit".parse().unwrap(), 1472, 64),
            16
        );
    }
}
