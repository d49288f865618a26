//! A minimal blocking UDP driver for the protocol core, over real sockets.
//!
//! This is what the loopback demo and the real-socket tests use until the
//! daemons (`weir-sender`, `weir-receiver`) take over: a paced sender
//! thread and a receiver loop that writes blocks into a partial file and
//! renames it into place once its BLAKE3 is verified.
//!
//! ```text
//!  file ─▶ Chunker ─▶ paced send_to ─▶ 127.0.0.1 ─▶ recv_from ─▶ Reassembler
//!                                                                 │ events
//!                          dir/incoming/<id>.part ◀── write_at ◀──┘
//!                          dir/staging/<name>     ◀── rename after BLAKE3
//! ```

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_protocol::{
    BlockSource, Chunker, Event, LinkEncoder, Reassembler, TransferDescriptor, TransferId,
};

/// The sender's block reader (direct I/O where the file system allows).
pub use weir_sender::source::FileSource;

/// What a paced send did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendReport {
    /// Datagrams sent.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Sends every frame of `chunker` to `dest`, paced at `rate_bytes_per_s`
/// (datagram bytes), in bursts of at most 16 datagrams.
pub fn send_paced<S: BlockSource>(
    socket: &UdpSocket,
    dest: SocketAddr,
    chunker: &mut Chunker<S>,
    link: &mut LinkEncoder,
    rate_bytes_per_s: u64,
) -> io::Result<SendReport> {
    let start = Instant::now();
    let mut report = SendReport::default();
    let mut buf = Vec::with_capacity(9000);
    loop {
        buf.clear();
        let Some(t) = chunker
            .poll_transmit(link, &mut buf)
            .map_err(|e| io::Error::other(e.to_string()))?
        else {
            break;
        };
        socket.send_to(&buf, dest)?;
        report.frames += 1;
        report.bytes += t.len as u64;
        if report.frames % 16 == 0 {
            let due = Duration::from_secs_f64(report.bytes as f64 / rate_bytes_per_s as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// A transfer the receiver published or gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Verified and renamed into `staging/`.
    Published {
        /// Where it landed.
        path: PathBuf,
        /// Its descriptor.
        descriptor: TransferDescriptor,
    },
    /// Complete, but its BLAKE3 did not match: left out of `staging/`.
    Corrupt(TransferDescriptor),
    /// Expired with blocks missing.
    Expired(TransferDescriptor),
}

/// Receives on `socket` into `dir/incoming` and publishes into
/// `dir/staging`, until `want` transfers ended or `deadline` passed.
pub fn receive(
    socket: &UdpSocket,
    reassembler: &mut Reassembler,
    dir: &Path,
    want: usize,
    deadline: Instant,
) -> io::Result<Vec<Received>> {
    let incoming = dir.join("incoming");
    let staging = dir.join("staging");
    fs::create_dir_all(&incoming)?;
    fs::create_dir_all(&staging)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut parts: HashMap<TransferId, (File, PathBuf)> = HashMap::new();
    let mut done = Vec::new();
    let mut buf = vec![0u8; 65536];
    while done.len() < want && Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => reassembler.handle_datagram(Instant::now(), buf.get(..n).unwrap_or(&[])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                reassembler.handle_timeout(Instant::now());
            }
            Err(e) => return Err(e),
        }
        while let Some(event) = reassembler.poll_event() {
            match event {
                Event::TransferStarted(d) => {
                    let path = incoming.join(format!("{}.part", d.transfer));
                    let file = OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .read(true)
                        .write(true)
                        .open(&path)?;
                    file.set_len(d.size)?;
                    parts.insert(d.transfer, (file, path));
                }
                Event::BlockReady {
                    transfer,
                    offset,
                    data,
                    ..
                } => {
                    if let Some((f, _)) = parts.get(&transfer) {
                        f.write_all_at(&data, offset)?;
                    }
                }
                Event::SpillBlock(spill) => {
                    if let Some((f, _)) = parts.get(&spill.transfer) {
                        for (offset, bytes) in spill.segments() {
                            f.write_all_at(bytes, offset)?;
                        }
                    }
                }
                Event::ReloadBlock {
                    transfer,
                    block,
                    offset,
                    len,
                } => {
                    let mut bytes = vec![0u8; len];
                    match parts.get(&transfer) {
                        Some((f, _)) if f.read_exact_at(&mut bytes, offset).is_ok() => {
                            reassembler.reload(transfer, block, &bytes)
                        }
                        _ => reassembler.reload_failed(transfer, block),
                    }
                }
                Event::TransferComplete { descriptor } => {
                    let Some((file, part)) = parts.remove(&descriptor.transfer) else {
                        continue;
                    };
                    let mut h = weir_protocol::digest::Digester::new();
                    std::io::copy(&mut &file, &mut h)?;
                    let ok = h.finalize() == descriptor.digest();
                    if ok {
                        file.sync_all()?;
                        let path = staging.join(descriptor.name.as_str());
                        fs::rename(&part, &path)?;
                        File::open(&staging)?.sync_all()?;
                        done.push(Received::Published { path, descriptor });
                    } else {
                        fs::remove_file(&part)?;
                        done.push(Received::Corrupt(descriptor));
                    }
                }
                Event::TransferExpired { descriptor, .. } => {
                    if let Some((_, part)) = parts.remove(&descriptor.transfer) {
                        fs::remove_file(part)?;
                    }
                    done.push(Received::Expired(descriptor));
                }
                Event::PassEnded { .. }
                | Event::Heartbeat { .. }
                | Event::SenderRestarted { .. }
                | Event::TransferRefused { .. } => {}
            }
        }
    }
    Ok(done)
}

/// Forwards datagrams from `inbound` to `dest` through a [`crate::link::LossyLink`],
/// until nothing arrived for `idle`. Returns what the link did.
pub fn lossy_proxy(
    inbound: &UdpSocket,
    dest: SocketAddr,
    mut link: crate::link::LossyLink,
    idle: Duration,
) -> io::Result<crate::link::LinkCounts> {
    let out = UdpSocket::bind("127.0.0.1:0")?;
    inbound.set_read_timeout(Some(idle))?;
    let mut buf = vec![0u8; 65536];
    loop {
        match inbound.recv_from(&mut buf) {
            Ok((n, _)) => {
                link.send(buf.get(..n).unwrap_or(&[]));
                while let Some(d) = link.recv() {
                    out.send_to(&d, dest)?;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                link.flush();
                while let Some(d) = link.recv() {
                    out.send_to(&d, dest)?;
                }
                return Ok(link.counts());
            }
            Err(e) => return Err(e),
        }
    }
}

/// One datagram a [`recording_relay`] passed on.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// When it arrived at the relay.
    pub at: Instant,
    /// Its header (CRC frames; anything else is passed on unrecorded).
    pub header: weir_protocol::wire::Header,
    /// For an end-of-pass frame, the pass that ended.
    pub pass_ended: Option<u32>,
    /// For a heartbeat, what it said.
    pub heartbeat: Option<weir_protocol::Heartbeat>,
}

/// A relay that passes datagrams on and records them: see
/// [`recording_relay`]. Dropped, it stops.
#[derive(Debug)]
pub struct Tap {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Tap {
    /// What it recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("tap poisoned").clone()
    }

    /// Whether anything recorded so far matches `pred` (looked at in
    /// place: the relay waits meanwhile, so keep it cheap).
    pub fn any(&self, pred: impl FnMut(&Seen) -> bool) -> bool {
        self.seen.lock().expect("tap poisoned").iter().any(pred)
    }

    /// Waits for it to stop by itself; everything it recorded.
    pub fn finish(mut self) -> io::Result<Vec<Seen>> {
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| io::Error::other("the tap panicked"))??;
        }
        Ok(std::mem::take(
            &mut *self.seen.lock().expect("tap poisoned"),
        ))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Passes every datagram from `inbound` to `dest` unchanged, and records
/// each CRC frame among them, on its own thread, until nothing arrived for
/// `idle` (once something did), `deadline` passed, or the [`Tap`] is
/// dropped.
pub fn recording_relay(
    inbound: UdpSocket,
    dest: SocketAddr,
    idle: Duration,
    deadline: Instant,
) -> Tap {
    use weir_protocol::wire::{Integrity, decode_frame};
    use weir_protocol::{EndOfPass, FrameKind, Heartbeat};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let out = UdpSocket::bind("127.0.0.1:0")?;
        inbound.set_read_timeout(Some(Duration::from_millis(20)))?;
        let mut buf = vec![0u8; 65536];
        let mut last = None;
        while Instant::now() < deadline && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            match inbound.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let d = buf.get(..n).unwrap_or(&[]);
                    out.send_to(d, dest)?;
                    let at = Instant::now();
                    last = Some(at);
                    if let Ok(f) = decode_frame(d, &Integrity::Crc32c) {
                        record.lock().expect("tap poisoned").push(Seen {
                            at,
                            header: f.header,
                            pass_ended: (f.header.kind == FrameKind::EndOfPass)
                                .then(|| EndOfPass::decode(f.payload).map(|e| e.pass))
                                .flatten(),
                            heartbeat: (f.header.kind == FrameKind::Heartbeat)
                                .then(|| Heartbeat::decode(f.payload))
                                .flatten(),
                        });
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if last.is_some_and(|t: Instant| t.elapsed() >= idle) {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    Tap {
        seen,
        stop,
        thread: Some(thread),
    }
}

/// Receives on `socket` with UDP GRO (through quinn-udp, which also turns
/// on kernel receive timestamps), the way a fast receiver does, calling
/// `on_batch` with the metadata of each batch, until nothing arrives for
/// `idle`.
pub fn gro_receive(
    socket: &UdpSocket,
    idle: Duration,
    mut on_batch: impl FnMut(&[quinn_udp::RecvMeta]),
) -> io::Result<()> {
    let state = quinn_udp::UdpSocketState::new(socket.into())?;
    let _ = state.set_recv_buffer_size(socket.into(), 64 << 20);
    // quinn-udp makes the socket non-blocking: block, with a timeout.
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(idle))?;
    let mut storage = vec![0u8; 64 * 65536];
    let mut bufs: Vec<io::IoSliceMut<'_>> =
        storage.chunks_mut(65536).map(io::IoSliceMut::new).collect();
    let mut meta = vec![quinn_udp::RecvMeta::default(); bufs.len()];
    while let Ok(n) = state.recv(socket.into(), &mut bufs, &mut meta) {
        on_batch(meta.get(..n).unwrap_or_default());
    }
    Ok(())
}
