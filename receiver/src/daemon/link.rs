//! Link monitoring from the sender's heartbeats and the frames' sequence
//! numbers: up or down, sender restarts, loss over the last minute.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use weir_protocol::{Heartbeat, LossStats};

/// The link is down when no heartbeat came for this many intervals.
const MISSED_HEARTBEATS: u32 = 3;
/// ... but never sooner than this.
const MIN_DOWN_AFTER: Duration = Duration::from_secs(3);
/// Loss is reported over this window.
const WINDOW: Duration = Duration::from_secs(60);

/// What the link looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No heartbeat seen since start.
    Waiting,
    /// Heartbeats arrive.
    Up,
    /// Heartbeats stopped.
    Down,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Waiting => "waiting for the sender",
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// Heartbeat and loss bookkeeping.
#[derive(Debug)]
pub struct LinkMonitor {
    last_heartbeat: Option<Instant>,
    interval: Duration,
    /// The sender's epoch, from its last heartbeat.
    pub epoch: Option<u64>,
    /// The last heartbeat's counters.
    pub last: Option<Heartbeat>,
    state: LinkState,
    /// (when, frames received, frames lost) samples over the window.
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Default for LinkMonitor {
    fn default() -> Self {
        Self {
            last_heartbeat: None,
            interval: Duration::from_secs(1),
            epoch: None,
            last: None,
            state: LinkState::Waiting,
            samples: VecDeque::new(),
        }
    }
}

impl LinkMonitor {
    /// A heartbeat arrived.
    pub fn heartbeat(&mut self, now: Instant, epoch: u64, hb: Heartbeat) {
        self.last_heartbeat = Some(now);
        self.interval = Duration::from_millis(u64::from(hb.interval_ms.clamp(10, 600_000)));
        self.epoch = Some(epoch);
        self.last = Some(hb);
    }

    /// Time since the last heartbeat.
    pub fn since_heartbeat(&self, now: Instant) -> Option<Duration> {
        self.last_heartbeat
            .map(|t| now.saturating_duration_since(t))
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Re-evaluates the state with the core's loss counters; returns the
    /// new state when it changed.
    pub fn tick(&mut self, now: Instant, loss: LossStats) -> Option<LinkState> {
        self.samples.push_back((now, loss.received, loss.lost));
        while self
            .samples
            .front()
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
        let down_after = (self.interval * MISSED_HEARTBEATS).max(MIN_DOWN_AFTER);
        let state = match self.last_heartbeat {
            None => LinkState::Waiting,
            Some(t) if now.saturating_duration_since(t) > down_after => LinkState::Down,
            Some(_) => LinkState::Up,
        };
        (state != self.state).then(|| {
            self.state = state;
            state
        })
    }

    /// Fraction of frames lost over the last minute (0 when none came).
    pub fn loss_last_minute(&self) -> f64 {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        let received = last.1.saturating_sub(first.1);
        let lost = last.2.saturating_sub(first.2);
        let total = received + lost;
        if total == 0 {
            0.0
        } else {
            lost as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(received: u64, lost: u64) -> LossStats {
        LossStats {
            received,
            lost,
            ..LossStats::default()
        }
    }

    #[test]
    fn up_after_a_heartbeat_down_after_three_missed() {
        let t0 = Instant::now();
        let mut m = LinkMonitor::default();
        assert_eq!(m.tick(t0, loss(0, 0)), None);
        assert_eq!(m.state(), LinkState::Waiting);
        let hb = Heartbeat {
            interval_ms: 2000,
            ..Heartbeat::default()
        };
        m.heartbeat(t0, 7, hb);
        assert_eq!(m.tick(t0, loss(0, 0)), Some(LinkState::Up));
        assert_eq!(m.tick(t0 + Duration::from_secs(5), loss(0, 0)), None);
        assert_eq!(
            m.tick(t0 + Duration::from_secs(7), loss(0, 0)),
            Some(LinkState::Down)
        );
        m.heartbeat(t0 + Duration::from_secs(8), 7, hb);
        assert_eq!(
            m.tick(t0 + Duration::from_secs(8), loss(0, 0)),
            Some(LinkState::Up)
        );
    }

    #[test]
    fn loss_is_over_the_last_minute_only() {
        let t0 = Instant::now();
        let mut m = LinkMonitor::default();
        m.tick(t0, loss(0, 0));
        // A bad first minute...
        m.tick(t0 + Duration::from_secs(30), loss(500, 500));
        assert_eq!(m.loss_last_minute(), 0.5);
        // ...then a clean one: the bad samples leave the window.
        m.tick(t0 + Duration::from_secs(61), loss(1000, 500));
        m.tick(t0 + Duration::from_secs(100), loss(2000, 500));
        assert_eq!(m.loss_last_minute(), 0.0);
    }
}
