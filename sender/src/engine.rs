//! The send loop: frames from a [`Chunker`] go out in paced batches, with
//! heartbeats on time whether a transfer is running or not.
//!
//! ```text
//!  Chunker::poll_transmit ─▶ batch buffer (equal-sized datagrams, ≤ 64)
//!        ─▶ Pacer (token bucket) ─▶ UdpLink::send (one GSO send per batch)
//!  every heartbeat interval: one heartbeat frame, busy or idle
//!  end of a pass: pause, sending heartbeats, before the next one
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_protocol::{BlockSource, Chunker, FrameKind, LinkEncoder, Rate};

use crate::pacer::Pacer;
use crate::udp::{MAX_SEGMENTS, UdpLink};

/// Where a transfer is, for status lines and progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// The pass being sent (from 0).
    pub pass: u32,
    /// Passes planned.
    pub passes: u32,
    /// Blocks of this pass sent.
    pub blocks_done: u32,
    /// Blocks per pass.
    pub blocks: u32,
    /// Datagram bytes sent for this transfer so far.
    pub bytes: u64,
}

/// How a call to [`Engine::send`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Every planned pass went out.
    Done,
    /// Stopped on request (shutdown) at a batch boundary; `pass` is the
    /// pass in progress, to resume from.
    Stopped {
        /// The pass in progress.
        pass: u32,
    },
    /// Yielded between two block groups because `preempt` said so.
    Preempted,
}

/// Settings of the send loop.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Pacing rate.
    pub rate: Rate,
    /// Largest datagram.
    pub max_datagram: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Pause between passes.
    pub pass_pause: Duration,
}

/// Counters of what went out.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    /// Datagrams sent.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Send calls (one per batch with GSO).
    pub sends: u64,
}

/// The send loop: link encoder, socket and pacer.
#[derive(Debug)]
pub struct Engine {
    link: LinkEncoder,
    udp: UdpLink,
    pacer: Pacer,
    config: EngineConfig,
    batch_frames: usize,
    next_heartbeat: Instant,
    buf: Vec<u8>,
    /// Sizes of the datagrams in `buf`.
    lens: Vec<usize>,
    /// Outbox length, carried in heartbeats.
    pub queue_len: u32,
    /// The transfer being sent (0 when idle), carried in heartbeats.
    pub current: u64,
    stats: EngineStats,
    /// Ticks on every pass through the loop, for the watchdog.
    alive: Arc<AtomicU64>,
}

impl Engine {
    /// A send loop over `udp`, stamping frames with `link`.
    pub fn new(link: LinkEncoder, udp: UdpLink, config: EngineConfig) -> Self {
        let batch_frames = Pacer::batch_frames(config.rate, config.max_datagram, MAX_SEGMENTS);
        let now = Instant::now();
        Self {
            pacer: Pacer::new(config.rate, batch_frames * config.max_datagram, now),
            link,
            udp,
            config,
            batch_frames,
            next_heartbeat: now,
            buf: Vec::with_capacity(MAX_SEGMENTS * config.max_datagram),
            lens: Vec::with_capacity(MAX_SEGMENTS),
            queue_len: 0,
            current: 0,
            stats: EngineStats::default(),
            alive: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A counter that moves while the loop is alive.
    pub fn alive(&self) -> Arc<AtomicU64> {
        self.alive.clone()
    }

    /// What went out so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Datagrams per batch.
    pub fn batch_frames(&self) -> usize {
        self.batch_frames
    }

    /// Sends the buffered datagrams, paced.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.lens.is_empty() {
            return Ok(());
        }
        let bytes = self.buf.len();
        loop {
            let now = Instant::now();
            let wait = self.pacer.delay(now, bytes);
            if wait.is_zero() {
                self.pacer.consume(now, bytes);
                break;
            }
            sleep_precise(wait);
        }
        let segment = self.lens.first().copied().unwrap_or(bytes);
        self.udp.send(&self.buf, segment)?;
        self.stats.frames += self.lens.len() as u64;
        self.stats.bytes += bytes as u64;
        self.stats.sends += 1;
        self.buf.clear();
        self.lens.clear();
        Ok(())
    }

    /// Sends a heartbeat if one is due.
    pub fn heartbeat_if_due(&mut self) -> std::io::Result<()> {
        self.alive.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if now < self.next_heartbeat {
            return Ok(());
        }
        self.flush()?;
        let ms = u32::try_from(self.config.heartbeat.as_millis()).unwrap_or(u32::MAX);
        self.link
            .heartbeat(self.queue_len, ms, self.current, &mut self.buf)
            .map_err(std::io::Error::other)?;
        self.lens.push(self.buf.len());
        self.flush()?;
        self.next_heartbeat = now + self.config.heartbeat;
        Ok(())
    }

    /// Idles until `until` or `stop`, sending heartbeats on time.
    pub fn idle(&mut self, until: Instant, stop: &AtomicBool) -> std::io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.heartbeat_if_due()?;
            let now = Instant::now();
            if now >= until {
                break;
            }
            let next = until.min(self.next_heartbeat);
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .min(Duration::from_millis(50)),
            );
        }
        Ok(())
    }

    /// Sends `chunker`'s frames until its passes are done, `stop` is set, or
    /// `preempt` returns true at a block-group boundary.
    pub fn send<S: BlockSource>(
        &mut self,
        chunker: &mut Chunker<S>,
        passes: u32,
        stop: &AtomicBool,
        preempt: &mut dyn FnMut() -> bool,
        progress: &mut dyn FnMut(&Progress),
    ) -> anyhow::Result<SendOutcome> {
        self.current = chunker.descriptor().transfer.0;
        let mut sent_bytes = 0u64;
        let mut last_progress = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                self.flush()?;
                return Ok(SendOutcome::Stopped {
                    pass: chunker.pass(),
                });
            }
            if chunker.at_group_boundary() && self.lens.is_empty() && preempt() {
                return Ok(SendOutcome::Preempted);
            }
            self.heartbeat_if_due()?;
            let before = self.buf.len();
            let Some(t) = chunker.poll_transmit(&mut self.link, &mut self.buf)? else {
                self.flush()?;
                self.current = 0;
                return Ok(SendOutcome::Done);
            };
            sent_bytes += t.len as u64;
            // A batch holds datagrams of one size (GSO); a different size
            // starts a new batch.
            if let Some(&first) = self.lens.first()
                && first != t.len
            {
                let tail = self.buf.split_off(before);
                self.flush()?;
                self.buf = tail;
            }
            self.lens.push(t.len);
            if self.lens.len() >= self.batch_frames
                || t.kind != FrameKind::Data && t.kind != FrameKind::Parity
            {
                self.flush()?;
            }
            if t.kind == FrameKind::EndOfPass && t.pass + 1 < passes {
                self.idle(Instant::now() + self.config.pass_pause, stop)?;
            }
            if last_progress.elapsed() >= Duration::from_millis(200)
                || t.kind == FrameKind::EndOfPass
            {
                last_progress = Instant::now();
                let (blocks_done, blocks) = chunker.progress();
                progress(&Progress {
                    pass: chunker.pass().min(passes.saturating_sub(1)),
                    passes,
                    blocks_done,
                    blocks,
                    bytes: sent_bytes,
                });
            }
        }
    }
}

/// Sleeps for `d`: the kernel for most of it, a spin for the last 50 µs,
/// so short pacing gaps at high rates are kept.
fn sleep_precise(d: Duration) {
    let end = Instant::now() + d;
    if d > Duration::from_micros(100) {
        std::thread::sleep(d - Duration::from_micros(50));
    }
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}
