//! Benchmark support; the benchmarks are in `benches/` and `src/bin/`.

use std::net::UdpSocket;
use std::time::Duration;

use quinn_udp::{RecvMeta, UdpSocketState};

/// Receives on `socket` with UDP GRO (through quinn-udp, which also turns
/// on kernel receive timestamps), the way a fast receiver does, calling
/// `on_batch` with the metadata of each batch, until nothing arrives for
/// `idle`.
pub fn gro_receive(
    socket: &UdpSocket,
    idle: Duration,
    mut on_batch: impl FnMut(&[RecvMeta]),
) -> std::io::Result<()> {
    let state = UdpSocketState::new(socket.into())?;
    let _ = state.set_recv_buffer_size(socket.into(), 64 << 20);
    // quinn-udp makes the socket non-blocking: block, with a timeout.
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(idle))?;
    let mut storage = vec![0u8; 64 * 65536];
    let mut bufs: Vec<std::io::IoSliceMut<'_>> = storage
        .chunks_mut(65536)
        .map(std::io::IoSliceMut::new)
        .collect();
    let mut meta = vec![RecvMeta::default(); bufs.len()];
    while let Ok(n) = state.recv(socket.into(), &mut bufs, &mut meta) {
        on_batch(meta.get(..n).unwrap_or_default());
    }
    Ok(())
}

/// CPU seconds (user + system) process `pid` used so far (`None`: this
/// process), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set of process `pid` in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The median of some figures (the upper one for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}
