//! UDP writer: one datagram per frame, handed to the kernel with `sendmmsg` in chunks on
//! Linux (one `send` per datagram elsewhere). A frame is finished once the kernel took it:
//! UDP has no acknowledgement.
//!
//! On Linux the socket is not registered with tokio's reactor while it sends: registered, every
//! datagram the kernel freed woke the reactor's epoll (`sock_wfree` → write-space wake-up →
//! `ep_poll_callback`), a quarter of the sink thread on loopback, and often a parked worker too.
//! Only when the kernel refuses a datagram for want of buffer space does the writer register,
//! for that one wait ([`wait_writable`]).

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
    sock: Option<Sock>,
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
            let dialed = connector::dial_udp(&self.address, self.timeout).await;
            match dialed.and_then(|s| keep(s).map_err(SinkError::Write)) {
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

/// The writer's socket: on Linux not registered with the reactor (see the module doc).
#[cfg(target_os = "linux")]
type Sock = std::net::UdpSocket;
#[cfg(not(target_os = "linux"))]
type Sock = UdpSocket;

/// The dialed socket as the writer keeps it: on Linux taken out of the reactor (it stays
/// non-blocking).
fn keep(s: UdpSocket) -> io::Result<Sock> {
    #[cfg(target_os = "linux")]
    return s.into_std();
    #[cfg(not(target_os = "linux"))]
    Ok(s)
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
async fn send_some(sock: &Sock, frames: &[Frame], mmsg: &mut Mmsg) -> io::Result<Sent> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let chunk = frames
        .get(..frames.len().min(SENDMMSG_CHUNK))
        .unwrap_or_default();
    loop {
        match mmsg.send(fd, chunk) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(sock).await?,
            res => return res,
        }
    }
}

/// Waits until the kernel has room for a datagram on `sock` again. The socket is registered
/// with the reactor for this wait only, through a duplicate of its descriptor (dropped, and so
/// deregistered, on return). Registering reports the current state, so room freed between the
/// refused send and the registration is not missed.
#[cfg(target_os = "linux")]
async fn wait_writable(sock: &impl std::os::fd::AsFd) -> io::Result<()> {
    use tokio::io::{unix::AsyncFd, Interest};
    let dup = sock.as_fd().try_clone_to_owned()?;
    // SAFETY: `dup` is an open descriptor owned by the `AsyncFd`, which closes it only when
    // dropped; its `as_raw_fd` always returns that descriptor.
    let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
        .map_err(io::Error::from)?;
    fd.writable().await?.retain_ready();
    Ok(())
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
async fn send_some(sock: &Sock, frames: &[Frame]) -> io::Result<Sent> {
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// The wait registers only while it lasts: it stays pending while the kernel has no room
    /// and ends once the peer makes some. (A datagram socket pair: loopback UDP never runs
    /// out of send buffer, a full Unix datagram queue does.)
    #[tokio::test]
    async fn a_full_send_buffer_is_waited_out_until_there_is_room() {
        let (tx, rx) = UnixDatagram::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        let mut queued = 0;
        loop {
            match tx.send(&[7u8; 512]) {
                Ok(_) => queued += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        assert!(queued > 0);
        let wait = wait_writable(&tx);
        tokio::pin!(wait);
        let early = tokio::time::timeout(Duration::from_millis(100), &mut wait).await;
        assert!(early.is_err(), "no room yet, the wait must go on");
        let mut buf = [0u8; 512];
        for _ in 0..queued {
            rx.recv(&mut buf).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("woken once the peer made room")
            .unwrap();
        tx.send(&[7u8; 512]).expect("room now");
    }
}
