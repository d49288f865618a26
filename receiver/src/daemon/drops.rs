//! What the log says about lost datagrams: the kernel's drop counter and
//! the receive loop's waits for the writer, both read once a tick, tell
//! whether the spool disk held reception up.
//!
//! ```text
//!  tick: stall (waits so far), kernel drops ─▶ DropWatch ─▶ Finding
//!        drops within DISK_WAIT_BLAMED of a wait  ─▶ the disk's doing
//!        drops without a wait lately              ─▶ the socket buffer
//!        a wait ≥ DISK_WAIT_TOLD, then a tick without drops or wait
//!                                                 ─▶ a wait, nothing lost
//! ```

use std::time::{Duration, Instant};

use super::Throttled;

/// Waits for the disk shorter than this, with nothing lost, go untold.
pub const DISK_WAIT_TOLD: Duration = Duration::from_millis(100);
/// Kernel drops seen this long after the receive loop waited for the disk
/// are put down to the disk (the loop drains the full socket buffer after
/// the wait, and the counter is read once a tick).
pub const DISK_WAIT_BLAMED: Duration = Duration::from_secs(3);

/// What a tick found worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// The kernel dropped datagrams while (or just after) the receive loop
    /// waited for the disk, `waited` in all over those waits.
    DroppedWhileWaiting {
        /// Datagrams dropped since the last tick.
        new: u64,
        /// Since the socket was opened.
        total: u64,
        /// The waits for the disk they follow.
        waited: Duration,
    },
    /// The kernel dropped datagrams with no wait for the disk lately.
    Dropped {
        /// Datagrams dropped since the last tick.
        new: u64,
        /// Since the socket was opened.
        total: u64,
    },
    /// The loop waited for the disk and no drop followed; told at most once
    /// a minute, with the waits since the last time.
    Waited {
        /// The waits for the disk.
        waited: Duration,
        /// False when the drop counter cannot be read: datagrams may have
        /// been lost unseen.
        drops_readable: bool,
    },
}

/// The state between ticks.
#[derive(Debug, Default)]
pub struct DropWatch {
    /// Kernel drops at the last tick.
    drops: u64,
    /// The loop's waits for the writer at the last tick.
    stall_seen: Duration,
    /// When the loop last waited, and for how long over the waits close
    /// before it.
    last_wait: Option<Instant>,
    recent_wait: Duration,
    /// A wait worth telling, without drops so far.
    untold: bool,
    told: Throttled,
}

impl DropWatch {
    /// Kernel drops seen so far.
    pub fn kernel_drops(&self) -> u64 {
        self.drops
    }

    /// One tick: `stall` is all the loop waited for the writer so far,
    /// `drops` the kernel's drop counter (`None` when it cannot be read).
    pub fn tick(&mut self, stall: Duration, drops: Option<u64>, now: Instant) -> Option<Finding> {
        let waited = stall.saturating_sub(self.stall_seen);
        self.stall_seen = stall;
        if !waited.is_zero() {
            self.last_wait = Some(now);
        }
        let disk_lately = self
            .last_wait
            .is_some_and(|t| now.saturating_duration_since(t) <= DISK_WAIT_BLAMED);
        if !disk_lately {
            self.recent_wait = Duration::ZERO;
        }
        self.recent_wait += waited;
        if let Some(total) = drops.filter(|d| *d > self.drops) {
            let new = total - self.drops;
            self.drops = total;
            self.untold = false;
            return Some(if disk_lately {
                Finding::DroppedWhileWaiting {
                    new,
                    total,
                    waited: self.recent_wait,
                }
            } else {
                Finding::Dropped { new, total }
            });
        }
        // Told at the first tick without a wait, once drops the loop met
        // while catching up would have shown.
        if waited >= DISK_WAIT_TOLD {
            self.untold = true;
        }
        if !waited.is_zero() || !std::mem::take(&mut self.untold) {
            return None;
        }
        let ms = self.told.due(stall.as_millis() as u64, now)?;
        Some(Finding::Waited {
            waited: Duration::from_millis(ms),
            drops_readable: drops.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(250);

    #[test]
    fn drops_are_put_down_to_the_disk_only_soon_after_a_wait() {
        let mut w = DropWatch::default();
        let t0 = Instant::now();
        assert_eq!(w.tick(Duration::ZERO, Some(0), t0), None);
        // Drops with no wait: the socket buffer.
        assert_eq!(
            w.tick(Duration::ZERO, Some(5), t0 + TICK),
            Some(Finding::Dropped { new: 5, total: 5 })
        );
        // A wait, and drops a tick later (met while catching up): the disk,
        // with the whole wait.
        let stall = Duration::from_millis(400);
        assert_eq!(w.tick(stall, Some(5), t0 + 2 * TICK), None);
        assert_eq!(
            w.tick(stall, Some(9), t0 + 3 * TICK),
            Some(Finding::DroppedWhileWaiting {
                new: 4,
                total: 9,
                waited: stall
            })
        );
        // Long after the wait, drops are the socket buffer's again.
        let later = t0 + 2 * TICK + DISK_WAIT_BLAMED + TICK;
        assert_eq!(
            w.tick(stall, Some(10), later),
            Some(Finding::Dropped { new: 1, total: 10 })
        );
        assert_eq!(w.kernel_drops(), 10);
    }

    #[test]
    fn a_wait_without_drops_is_told_once_the_loop_caught_up_and_once_a_minute() {
        let mut w = DropWatch::default();
        let t0 = Instant::now();
        let mut stall = Duration::from_millis(300);
        // Still waiting at the next tick: not yet.
        assert_eq!(w.tick(stall, Some(0), t0), None);
        stall += Duration::from_millis(200);
        assert_eq!(w.tick(stall, Some(0), t0 + TICK), None);
        assert_eq!(
            w.tick(stall, Some(0), t0 + 2 * TICK),
            Some(Finding::Waited {
                waited: Duration::from_millis(500),
                drops_readable: true
            })
        );
        assert_eq!(w.tick(stall, Some(0), t0 + 3 * TICK), None);
        // Another wait within the minute: untold; after it, told with both.
        stall += Duration::from_millis(150);
        assert_eq!(w.tick(stall, Some(0), t0 + 4 * TICK), None);
        assert_eq!(w.tick(stall, Some(0), t0 + 5 * TICK), None);
        let minute = t0 + Duration::from_secs(61);
        stall += Duration::from_millis(150);
        assert_eq!(w.tick(stall, None, minute), None);
        assert_eq!(
            w.tick(stall, None, minute + TICK),
            Some(Finding::Waited {
                waited: Duration::from_millis(300),
                drops_readable: false
            })
        );
        // A short wait is not worth a line.
        stall += Duration::from_millis(50);
        let later = minute + Duration::from_secs(61);
        assert_eq!(w.tick(stall, Some(0), later), None);
        assert_eq!(w.tick(stall, Some(0), later + TICK), None);
    }

    #[test]
    fn a_wait_followed_by_drops_is_told_as_drops_not_as_a_wait() {
        let mut w = DropWatch::default();
        let t0 = Instant::now();
        let stall = Duration::from_millis(300);
        assert_eq!(w.tick(stall, Some(0), t0), None);
        assert!(matches!(
            w.tick(stall, Some(3), t0 + TICK),
            Some(Finding::DroppedWhileWaiting { .. })
        ));
        assert_eq!(w.tick(stall, Some(3), t0 + 2 * TICK), None);
    }
}
