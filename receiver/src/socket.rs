//! The listening socket: batched receive (`recvmmsg` with UDP GRO, through
//! `quinn-udp`), a receive buffer as large as the kernel allows, and the
//! kernel's count of datagrams it dropped for this socket.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// Datagram buffers per batch; each holds one GRO super-datagram.
pub const BATCH: usize = 32;
/// Largest GRO super-datagram.
pub const BUF_LEN: usize = 65536;

/// The receiving socket with its batch buffers.
#[derive(Debug)]
pub struct Listener {
    socket: UdpSocket,
    state: UdpSocketState,
    storage: Vec<u8>,
    meta: Vec<RecvMeta>,
    inode: Option<u64>,
}

impl Listener {
    /// Binds `addr` and asks for a `receive_buffer`-byte receive buffer.
    /// Returns the listener and the buffer the kernel granted (as it
    /// reports it: twice what it accounts for).
    pub fn bind(addr: SocketAddr, receive_buffer: usize) -> io::Result<(Self, usize)> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.bind(&addr.into())?;
        let socket: UdpSocket = socket.into();
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // quinn-udp makes the socket non-blocking; the loop blocks with a
        // timeout instead, so it wakes for timers.
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), receive_buffer);
        let granted = state
            .recv_buffer_size(UdpSockRef::from(&socket))
            .unwrap_or(0);
        let inode = socket_inode(&socket);
        Ok((
            Self {
                socket,
                state,
                storage: vec![0; BATCH * BUF_LEN],
                meta: vec![RecvMeta::default(); BATCH],
                inode,
            },
            granted,
        ))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams one GRO receive may carry (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Waits up to the read timeout for a batch and calls `on_datagram`
    /// for every datagram in it (GRO super-datagrams are split at their
    /// stride). Returns the number of datagrams; 0 on timeout.
    pub fn recv_batch(&mut self, mut on_datagram: impl FnMut(&[u8])) -> io::Result<usize> {
        let mut bufs: Vec<IoSliceMut<'_>> = self
            .storage
            .chunks_mut(BUF_LEN)
            .map(IoSliceMut::new)
            .collect();
        let n = match self
            .state
            .recv(UdpSockRef::from(&self.socket), &mut bufs, &mut self.meta)
        {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let mut count = 0;
        for (meta, buf) in self.meta.iter().zip(bufs.iter()).take(n) {
            let data = buf.get(..meta.len).unwrap_or_default();
            let stride = meta.stride.max(1);
            for d in data.chunks(stride) {
                on_datagram(d);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Times the kernel dropped for this socket since it was opened because
    /// its receive buffer was full, from `/proc/net/udp`. A drop of a GRO
    /// batch counts once however many datagrams it held; the loss counter
    /// from sequence numbers tells how many frames went missing.
    pub fn kernel_drops(&self) -> Option<u64> {
        let inode = self.inode?;
        ["/proc/self/net/udp", "/proc/self/net/udp6"]
            .iter()
            .find_map(|p| drops_for_inode(&std::fs::read_to_string(p).ok()?, inode))
    }
}

/// The socket's inode, which names it in `/proc/net/udp`.
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let fd = socket.as_raw_fd();
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// The `drops` column of the line of `table` (the text of
/// `/proc/net/udp`) whose inode column is `inode`.
fn drops_for_inode(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref ptr drops
        let ino: u64 = cols.get(9)?.parse().ok()?;
        if ino != inode {
            return None;
        }
        cols.get(12)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_from_the_socket_s_line() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1E14 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  2: 0100007F:1E15 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 5\n";
        assert_eq!(drops_for_inode(table, 4343), Some(5));
        assert_eq!(drops_for_inode(table, 4242), Some(17));
        assert_eq!(drops_for_inode(table, 1), None);
    }

    #[test]
    fn a_real_socket_finds_its_line_and_receives_a_batch() {
        let (mut l, granted) = Listener::bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(granted > 0);
        assert_eq!(l.kernel_drops(), Some(0));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 100], l.local_addr().unwrap()).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..50 {
            l.recv_batch(|d| got.push(d.to_vec())).unwrap();
            if got.len() == 5 {
                break;
            }
        }
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|d| d.len() == 100));
    }
}
