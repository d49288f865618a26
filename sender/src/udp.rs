//! The sending socket: batches of equal-sized datagrams go out as one UDP
//! GSO send where the kernel offers it (through `quinn-udp`, which also
//! falls back cleanly when GSO fails), one `sendmsg` each otherwise.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// errno EIO, which a GSO send returns when the device cannot segment.
const EIO: i32 = 5;

/// Most segments one GSO send may carry (a kernel limit).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes one GSO send may carry: one UDP datagram's length field,
/// less IPv6 and UDP headers.
const MAX_GSO_BYTES: usize = u16::MAX as usize - 48;

/// A UDP socket aimed at the receiver.
#[derive(Debug)]
pub struct UdpLink {
    socket: UdpSocket,
    state: UdpSocketState,
    destination: SocketAddr,
}

impl UdpLink {
    /// Binds `bind`, asks for a `send_buffer`-byte send buffer and aims at
    /// `destination`. Returns the link and the send buffer actually granted.
    pub fn open(
        bind: SocketAddr,
        destination: SocketAddr,
        send_buffer: usize,
    ) -> io::Result<(Self, usize)> {
        let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
        socket.bind(&bind.into())?;
        let socket: UdpSocket = socket.into();
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // quinn-udp makes the socket non-blocking; the send loop wants a
        // full send buffer to block it rather than spin.
        socket.set_nonblocking(false)?;
        // Best effort: the kernel caps it at net.core.wmem_max.
        let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), send_buffer);
        let granted = state
            .send_buffer_size(UdpSockRef::from(&socket))
            .unwrap_or(0);
        Ok((
            Self {
                socket,
                state,
                destination,
            },
            granted,
        ))
    }

    /// Segments per send the kernel accepts (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().min(MAX_SEGMENTS)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `buf`, which holds datagrams of `segment` bytes back to back
    /// (the last may be shorter).
    pub fn send(&self, buf: &[u8], segment: usize) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let max = self
            .max_segments()
            .min(MAX_GSO_BYTES / segment.max(1))
            .max(1);
        for chunk in buf.chunks(segment * max) {
            let gso = chunk.len() > segment && max > 1;
            let sent_whole = gso && {
                let t = Transmit {
                    destination: self.destination,
                    ecn: None,
                    contents: chunk,
                    segment_size: Some(segment),
                    src_ip: None,
                };
                match self.try_send(&t) {
                    Ok(()) => true,
                    // EIO: the device cannot segment. quinn-udp turns GSO
                    // off for this socket; send this batch one by one.
                    Err(e) if e.raw_os_error() == Some(EIO) => false,
                    Err(e) => return Err(e),
                }
            };
            if !sent_whole {
                for d in chunk.chunks(segment) {
                    let t = Transmit {
                        destination: self.destination,
                        ecn: None,
                        contents: d,
                        segment_size: None,
                        src_ip: None,
                    };
                    self.try_send(&t)?;
                }
            }
        }
        Ok(())
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        loop {
            match self.state.try_send(UdpSockRef::from(&self.socket), t) {
                Ok(()) => return Ok(()),
                // A full send buffer: the kernel will drain it; try again.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
    }
}
