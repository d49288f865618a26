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
