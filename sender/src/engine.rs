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
pub struct SendProgress {
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

    /// Changes the pacing rate (the carousel runs at a share of the link
    /// rate).
    pub fn set_rate(&mut self, rate: Rate) {
        if rate == self.config.rate {
            return;
        }
        self.config.rate = rate;
        self.batch_frames = Pacer::batch_frames(rate, self.config.max_datagram, MAX_SEGMENTS);
        self.pacer = Pacer::new(
            rate,
            self.batch_frames * self.config.max_datagram,
            Instant::now(),
        );
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
        let segment = self.lens.first().copied().unwrap_or(bytes);
        pace_and_send(&mut self.pacer, &self.udp, &self.buf, segment)?;
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
    ///
    /// Frames are made on a second thread (reading, Reed–Solomon encoding,
    /// tagging) and handed over in batches through a short queue, so that
    /// encoding a block group never stalls the paced sending.
    pub fn send<S: BlockSource + Send>(
        &mut self,
        chunker: &mut Chunker<S>,
        passes: u32,
        stop: &AtomicBool,
        preempt: &mut (dyn FnMut() -> bool + Send),
        progress: &mut dyn FnMut(&SendProgress),
    ) -> anyhow::Result<SendOutcome> {
        self.flush()?;
        precise_timers();
        self.current = chunker.descriptor().transfer.0;
        let halt = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Batch>>(QUEUE_PARCELS);
        let (recycle_tx, recycle_rx) =
            std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_PARCELS * PARCEL_BATCHES);
        let producer = Producer {
            link: &mut self.link,
            batch_frames: self.batch_frames,
            max_datagram: self.config.max_datagram,
            heartbeat: self.config.heartbeat,
            pass_pause: self.config.pass_pause,
            next_heartbeat: &mut self.next_heartbeat,
            queue_len: self.queue_len,
            current: self.current,
            passes,
        };
        let udp = &self.udp;
        let pacer = &mut self.pacer;
        let stats = &mut self.stats;
        let alive = &self.alive;
        let outcome = std::thread::scope(|scope| -> anyhow::Result<SendOutcome> {
            let queue = Parcels {
                tx,
                recycle: recycle_rx,
                parcel: Vec::with_capacity(PARCEL_BATCHES),
            };
            let worker = std::thread::Builder::new()
                .name("frames".into())
                .spawn_scoped(scope, || producer.run(chunker, preempt, &halt, queue))?;
            let mut sent_bytes = 0u64;
            let mut last_progress = Instant::now();
            let mut result = SendOutcome::Done;
            'parcels: for batch in rx.iter().flatten() {
                alive.fetch_add(1, Ordering::Relaxed);
                if !batch.buf.is_empty() {
                    pace_and_send(pacer, udp, &batch.buf, batch.segment)?;
                    stats.frames += batch.frames as u64;
                    stats.bytes += batch.buf.len() as u64;
                    stats.sends += 1;
                    sent_bytes += batch.buf.len() as u64;
                }
                if last_progress.elapsed() >= Duration::from_millis(200) || batch.end_of_pass {
                    last_progress = Instant::now();
                    progress(&SendProgress {
                        pass: batch.pass.min(passes.saturating_sub(1)),
                        passes,
                        blocks_done: batch.blocks_done,
                        blocks: batch.blocks,
                        bytes: sent_bytes,
                    });
                }
                if let Some(end) = batch.end {
                    result = end;
                    break 'parcels;
                }
                if stop.load(Ordering::Relaxed) {
                    // The batch in flight went out; stop making more.
                    halt.store(true, Ordering::Relaxed);
                    result = SendOutcome::Stopped { pass: batch.pass };
                    break 'parcels;
                }
                // Hand the buffer back for the producer to fill again.
                let mut buf = batch.buf;
                buf.clear();
                let _ = recycle_tx.try_send(buf);
            }
            // Let the producer see the halt (or its closed queue) and end.
            halt.store(true, Ordering::Relaxed);
            drop(rx);
            let made = worker
                .join()
                .map_err(|_| anyhow::anyhow!("frame producer panicked"))??;
            Ok(match result {
                SendOutcome::Stopped { .. } => SendOutcome::Stopped { pass: made.pass },
                other => other,
            })
        })?;
        if outcome == SendOutcome::Done {
            self.current = 0;
        }
        Ok(outcome)
    }
}

/// Parcels queued between the frame producer and the sender.
const QUEUE_PARCELS: usize = 8;
/// Batches handed over at once: fewer thread wake-ups at high rates.
const PARCEL_BATCHES: usize = 8;

/// The producer's end of the queue: batches are handed over in parcels,
/// and sent buffers come back to be filled again (no allocation per batch).
struct Parcels {
    tx: std::sync::mpsc::SyncSender<Vec<Batch>>,
    recycle: std::sync::mpsc::Receiver<Vec<u8>>,
    parcel: Vec<Batch>,
}

impl Parcels {
    /// Queues a batch; hands the parcel over when full, or at once when
    /// `now` (control frames, heartbeats, the end). False if the sender is
    /// gone.
    fn post(&mut self, b: Batch, now: bool) -> bool {
        self.parcel.push(b);
        if now || self.parcel.len() >= PARCEL_BATCHES {
            let parcel = std::mem::replace(&mut self.parcel, Vec::with_capacity(PARCEL_BATCHES));
            return self.tx.send(parcel).is_ok();
        }
        true
    }

    /// An empty batch whose buffer holds `cap` bytes.
    fn fresh(&self, cap: usize) -> Batch {
        Batch {
            buf: self
                .recycle
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(cap)),
            ..Batch::default()
        }
    }
}

/// Datagrams of one size, ready to send, with where the transfer was.
#[derive(Debug, Default)]
struct Batch {
    buf: Vec<u8>,
    segment: usize,
    frames: usize,
    pass: u32,
    blocks_done: u32,
    blocks: u32,
    end_of_pass: bool,
    /// Set on the last batch: how the transfer ended.
    end: Option<SendOutcome>,
}

/// What the producer thread made, returned when it ends.
struct Made {
    pass: u32,
}

/// Makes batches of frames on its own thread.
struct Producer<'a> {
    link: &'a mut LinkEncoder,
    batch_frames: usize,
    max_datagram: usize,
    heartbeat: Duration,
    pass_pause: Duration,
    next_heartbeat: &'a mut Instant,
    queue_len: u32,
    current: u64,
    passes: u32,
}

impl Producer<'_> {
    fn heartbeat(&mut self, batch: &mut Batch) -> anyhow::Result<()> {
        let ms = u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX);
        let len = self
            .link
            .heartbeat(self.queue_len, ms, self.current, &mut batch.buf)
            .map_err(std::io::Error::other)?;
        batch.segment = len;
        batch.frames = 1;
        *self.next_heartbeat = Instant::now() + self.heartbeat;
        Ok(())
    }

    fn run<S: BlockSource>(
        mut self,
        chunker: &mut Chunker<S>,
        preempt: &mut (dyn FnMut() -> bool + Send),
        halt: &AtomicBool,
        mut queue: Parcels,
    ) -> anyhow::Result<Made> {
        let cap = self.batch_frames * self.max_datagram;
        let mut batch = queue.fresh(cap);
        loop {
            if halt.load(Ordering::Relaxed) {
                return Ok(Made {
                    pass: chunker.pass(),
                });
            }
            // The clock is read once per batch (at most 64 frames, well
            // under a millisecond), not per frame.
            if batch.frames == 0 && Instant::now() >= *self.next_heartbeat {
                let mut hb = Batch::default();
                self.heartbeat(&mut hb)?;
                hb.pass = chunker.pass();
                if !queue.post(hb, true) {
                    return Ok(Made {
                        pass: chunker.pass(),
                    });
                }
            }
            if chunker.at_group_boundary() && preempt() {
                let end = Batch {
                    end: Some(SendOutcome::Preempted),
                    pass: chunker.pass(),
                    ..Batch::default()
                };
                queue.post(end, true);
                return Ok(Made {
                    pass: chunker.pass(),
                });
            }
            let before = batch.buf.len();
            let Some(t) = chunker.poll_transmit(self.link, &mut batch.buf)? else {
                batch.end = Some(SendOutcome::Done);
                queue.post(batch, true);
                return Ok(Made {
                    pass: chunker.pass(),
                });
            };
            let is_shard = matches!(t.kind, FrameKind::Data | FrameKind::Parity);
            // A batch holds datagrams of one size (GSO) and at most one
            // control frame: a frame that does not fit starts the next one.
            if batch.frames > 0 && (batch.segment != t.len || !is_shard || before + t.len > cap) {
                let mut next = queue.fresh(cap);
                next.buf
                    .extend_from_slice(batch.buf.get(before..).unwrap_or_default());
                batch.buf.truncate(before);
                if !queue.post(std::mem::replace(&mut batch, next), false) {
                    return Ok(Made {
                        pass: chunker.pass(),
                    });
                }
            }
            batch.segment = t.len;
            batch.frames += 1;
            batch.pass = t.pass;
            let (done, blocks) = chunker.progress();
            batch.blocks_done = done;
            batch.blocks = blocks;
            if !is_shard || batch.frames >= self.batch_frames {
                batch.end_of_pass = t.pass_done;
                let next = queue.fresh(cap);
                if !queue.post(std::mem::replace(&mut batch, next), !is_shard) {
                    return Ok(Made {
                        pass: chunker.pass(),
                    });
                }
            }
            if t.pass_done && t.pass + 1 < self.passes {
                // Pause between passes, beating on time.
                let until = Instant::now() + self.pass_pause;
                while Instant::now() < until && !halt.load(Ordering::Relaxed) {
                    if Instant::now() >= *self.next_heartbeat {
                        let mut hb = Batch::default();
                        self.heartbeat(&mut hb)?;
                        hb.pass = t.pass + 1;
                        if !queue.post(hb, true) {
                            return Ok(Made {
                                pass: chunker.pass(),
                            });
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

/// Waits for the pacer, then sends one batch.
fn pace_and_send(
    pacer: &mut Pacer,
    udp: &UdpLink,
    buf: &[u8],
    segment: usize,
) -> std::io::Result<()> {
    loop {
        let now = Instant::now();
        let wait = pacer.delay(now, buf.len());
        if wait.is_zero() {
            pacer.consume(now, buf.len());
            break;
        }
        // The bucket holds at least 2 ms at the rate, so a late wake-up
        // costs no tokens; spinning for precision would only burn a core.
        std::thread::sleep(wait);
    }
    udp.send(buf, segment)
}

/// Asks the kernel to wake this thread within a microsecond of the time it
/// asked for, instead of the default 50 µs: the pacer sleeps between
/// batches rather than spinning, and short gaps at high rates are kept.
/// Best effort: without it pacing holds the rate, with coarser gaps.
fn precise_timers() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
        tracing::debug!("cannot set the timer slack: {e}");
    }
}
