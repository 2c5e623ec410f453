//! UDP writer: one datagram per frame, handed to the kernel with `sendmmsg` in chunks on
//! Linux (one `send` per datagram elsewhere). A frame is finished once the kernel took it:
//! UDP has no acknowledgement.

use std::io;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::ack::complete_all;

use super::batch::{Batcher, Next};
use super::connector::{self, Backoff, SinkError};
use super::status::SinkState;
use super::telemetry::Ctx;
use super::Frame;

/// Most datagrams per `sendmmsg` call (the kernel's UIO_MAXIOV).
const SENDMMSG_CHUNK: usize = 1024;

/// The datagram destination task.
pub(crate) struct UdpWriter {
    address: String,
    timeout: Duration,
    ctx: Ctx,
    sock: Option<UdpSocket>,
    backoff: Backoff,
    attempted: bool,
    /// The `sendmmsg` arrays, kept between calls.
    #[cfg(target_os = "linux")]
    mmsg: Mmsg,
}

impl UdpWriter {
    pub fn new(address: String, timeout: Duration, ctx: Ctx) -> Self {
        UdpWriter {
            address,
            timeout,
            ctx,
            sock: None,
            backoff: Backoff::default(),
            attempted: false,
            #[cfg(target_os = "linux")]
            mmsg: Mmsg::default(),
        }
    }

    /// Runs until the queue is closed and everything queued was sent.
    pub async fn run(mut self, mut batcher: Batcher, batch_max_events: usize) {
        let mut batch: Vec<Frame> = Vec::with_capacity(batch_max_events.clamp(1, 4096));
        self.ensure_socket().await;
        loop {
            match batcher.next(&mut batch, None).await {
                Next::Finished => break,
                Next::Idle => continue,
                Next::Batch => {}
            }
            self.ctx.update_queue();
            self.send_batch(&mut batch).await;
        }
    }

    /// Opens the socket if there is none, retrying with backoff until it works or the handle
    /// closes with nothing left to send.
    async fn ensure_socket(&mut self) {
        while self.sock.is_none() && !self.ctx.nothing_left() {
            if self.attempted {
                self.ctx.reconnect_attempt();
            }
            self.attempted = true;
            match connector::dial_udp(&self.address, self.timeout).await {
                Ok(s) => {
                    self.backoff.reset();
                    self.ctx.set_state(SinkState::Connected);
                    self.sock = Some(s);
                }
                Err(e) => {
                    self.ctx.set_state(SinkState::Reconnecting);
                    self.ctx
                        .error(&e, "Cannot open the UDP socket; retrying with backoff.");
                    self.ctx.update_queue();
                    self.ctx
                        .sleep_unless_closing(self.backoff.next_delay())
                        .await;
                }
            }
        }
    }

    /// Hands every frame of `batch` to the kernel, retrying failures with backoff, then
    /// completes their acks. Leaves `batch` empty.
    async fn send_batch(&mut self, batch: &mut Vec<Frame>) {
        let t0 = Instant::now();
        let bytes: usize = batch.iter().map(|f| f.bytes.len()).sum();
        let mut sent = 0;
        let mut refused = 0u32;
        while sent < batch.len() {
            let rest = batch.get(sent..).unwrap_or_default();
            self.ensure_socket().await;
            let Some(sock) = &self.sock else { continue };
            #[cfg(target_os = "linux")]
            let res = send_some(sock, rest, &mut self.mmsg).await;
            #[cfg(not(target_os = "linux"))]
            let res = send_some(sock, rest).await;
            self.ctx.send_calls(1);
            match res {
                Ok(Sent { datagrams, short }) => {
                    sent += datagrams.min(rest.len());
                    refused = 0;
                    self.backoff.reset();
                    if short > 0 {
                        // Cannot happen for UDP (a datagram goes whole or not at all).
                        self.ctx.loss("short_send", short, "Datagrams sent short.");
                    }
                }
                // An ICMP port unreachable from an earlier datagram is reported once on the
                // next send, which did not go out: send it again, then slow down.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused += 1;
                    if refused > 1 {
                        self.ctx.set_state(SinkState::Reconnecting);
                        self.ctx.error(
                            &SinkError::Write(e),
                            "Datagrams refused; retrying with backoff.",
                        );
                        tokio::time::sleep(self.backoff.next_delay()).await;
                        self.ctx.set_state(SinkState::Connected);
                    }
                }
                Err(e) if is_oversize(&e) => {
                    // This datagram can never be sent; retrying would stall the destination
                    // (and its partition's commits) forever. Counted and logged as a loss.
                    self.ctx.dropped_oversize(1);
                    let bytes = rest.first().map_or(0, |f| f.bytes.len());
                    self.ctx
                        .loss("oversize", bytes, "Datagram too large for UDP; dropped.");
                    sent += 1;
                }
                Err(e) => {
                    self.sock = None;
                    self.ctx.set_state(SinkState::Reconnecting);
                    self.ctx.error(
                        &SinkError::Write(e),
                        "UDP send failed; reopening the socket with backoff.",
                    );
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
        self.ctx.written(batch.iter(), bytes, t0.elapsed());
        let n = batch.len();
        complete_all(batch.drain(..).map(|f| f.ack));
        self.ctx.acked(n);
    }
}

/// What one send call did.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Datagrams the kernel took.
    datagrams: usize,
    /// Of those, datagrams shorter than their frame.
    short: usize,
}

fn is_oversize(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        return true;
    }
    let _ = e;
    false
}

/// Sends a prefix of `frames` (at least one datagram unless it fails).
#[cfg(target_os = "linux")]
async fn send_some(sock: &UdpSocket, frames: &[Frame], mmsg: &mut Mmsg) -> io::Result<Sent> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let chunk = frames
        .get(..frames.len().min(SENDMMSG_CHUNK))
        .unwrap_or_default();
    loop {
        sock.writable().await?;
        match sock.try_io(tokio::io::Interest::WRITABLE, || mmsg.send(fd, chunk)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            res => return res,
        }
    }
}

/// The arrays `sendmmsg` reads, reused so that a call allocates nothing (two allocations of
/// up to 80 KB per call were about 5 % of the sink thread, under the one malloc arena's lock).
#[cfg(target_os = "linux")]
#[derive(Default)]
struct Mmsg {
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the arrays are written and read only inside `Mmsg::send`, which
// clears both arrays before it returns: between calls they hold no pointer at all.
#[cfg(target_os = "linux")]
unsafe impl Send for Mmsg {}

#[cfg(target_os = "linux")]
impl Mmsg {
    /// One `sendmmsg` call; checks that every datagram went out whole.
    fn send(&mut self, fd: std::os::fd::RawFd, frames: &[Frame]) -> io::Result<Sent> {
        let result = self.fill_and_send(fd, frames);
        self.msgs.clear();
        self.iov.clear();
        result
    }

    /// Fills the arrays (empty on entry: `send` clears them after every call) and sends.
    fn fill_and_send(&mut self, fd: std::os::fd::RawFd, frames: &[Frame]) -> io::Result<Sent> {
        self.iov.extend(frames.iter().map(|f| libc::iovec {
            iov_base: f.bytes.as_ptr() as *mut libc::c_void,
            iov_len: f.bytes.len(),
        }));
        // `iov` is complete: it does not move while `msgs` points into it.
        self.msgs.extend(self.iov.iter_mut().map(|v| {
            // SAFETY: mmsghdr is a plain C struct; all-zero is a valid "no name, no control" value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        }));
        let vlen = libc::c_uint::try_from(self.msgs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `msgs` and the iovecs it points to live until the call returns, each iovec
        // points into a live `Bytes`, and the kernel writes only `msg_len` fields.
        let r = unsafe { libc::sendmmsg(fd, self.msgs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let datagrams = usize::try_from(r).unwrap_or(0);
        let short = self
            .msgs
            .iter()
            .zip(frames)
            .take(datagrams)
            .filter(|(m, f)| m.msg_len as usize != f.bytes.len())
            .count();
        Ok(Sent { datagrams, short })
    }
}

/// Elsewhere: one `send` per datagram.
#[cfg(not(target_os = "linux"))]
async fn send_some(sock: &UdpSocket, frames: &[Frame]) -> io::Result<Sent> {
    let _ = SENDMMSG_CHUNK;
    let Some(f) = frames.first() else {
        return Ok(Sent {
            datagrams: 0,
            short: 0,
        });
    };
    let n = sock.send(&f.bytes).await?;
    Ok(Sent {
        datagrams: 1,
        short: usize::from(n != f.bytes.len()),
    })
}
