//! TCP writer: one write per batch, frames acknowledged only once the peer's TCP stack has
//! acknowledged their bytes (SIOCOUTQ), and every unacknowledged frame written again, in
//! order, after a reconnect.
//!
//! The writer is generic over [`Transport`] so that TLS can be plugged in: it needs the bytes
//! put on the wire per write and the socket's unacknowledged byte count.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::batch::{Batcher, Next};
use super::connector::{self, Backoff, SinkError};
use super::status::{Shared, SinkState};
use super::telemetry::Ctx;
use super::unacked::InFlight;
use super::Frame;

/// A connected byte stream over TCP, as the writer needs it.
pub(crate) trait Transport: AsyncWrite + Unpin + Send + 'static {
    /// Bytes handed to the TCP socket on this connection so far (plain TCP: the bytes written;
    /// TLS: the ciphertext).
    fn wire_bytes(&self) -> u64;
    /// Of [`wire_bytes`](Self::wire_bytes), how many the peer has not acknowledged yet.
    fn unacked_bytes(&self) -> io::Result<u64>;
    /// Whether the peer has closed or reset the connection (checked before each write), and
    /// why: [`SinkError::PeerClosed`], or an error the peer sent (a TLS alert).
    fn peer_closed(&mut self) -> Option<SinkError>;
    /// Whether the connection should be replaced by a new one (its TLS settings changed).
    fn stale(&self) -> bool {
        false
    }
}

/// Opens [`Transport`]s to one destination.
pub(crate) trait Dialer: Send + 'static {
    type Stream: Transport;
    fn dial(&mut self) -> impl Future<Output = Result<Self::Stream, SinkError>> + Send;
}

/// Plain TCP, counting the bytes written.
pub(crate) struct PlainTcp {
    stream: TcpStream,
    written: u64,
}

impl AsyncWrite for PlainTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.written += n as u64;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Transport for PlainTcp {
    fn wire_bytes(&self) -> u64 {
        self.written
    }

    #[cfg(unix)]
    fn unacked_bytes(&self) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        super::unacked::unacked_bytes(self.stream.as_raw_fd())
    }

    #[cfg(not(unix))]
    fn unacked_bytes(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn peer_closed(&mut self) -> Option<SinkError> {
        connector::peer_closed(&self.stream).then_some(SinkError::PeerClosed)
    }
}

/// Dials plain TCP connections.
pub(crate) struct TcpDialer {
    pub address: String,
    pub timeout: Duration,
}

impl Dialer for TcpDialer {
    type Stream = PlainTcp;

    fn dial(&mut self) -> impl Future<Output = Result<PlainTcp, SinkError>> + Send {
        let (address, timeout) = (self.address.clone(), self.timeout);
        async move {
            let stream = connector::dial_tcp(&address, timeout).await?;
            Ok(PlainTcp { stream, written: 0 })
        }
    }
}

/// How long to wait between acknowledgement polls: 1 ms doubling to 50 ms while nothing moves.
#[derive(Debug)]
struct PollDelay(Duration);

impl PollDelay {
    const MIN: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(50);

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

/// The stream destination task.
pub(crate) struct TcpWriter<D: Dialer> {
    dialer: D,
    ctx: Ctx,
    conn: Option<D::Stream>,
    in_flight: InFlight,
    buf: Vec<u8>,
    backoff: Backoff,
    poll: PollDelay,
    attempted: bool,
    /// When the current connection was made, and the acked count then: a connection that
    /// neither lasted nor acknowledged anything does not reset the backoff.
    connected_at: Instant,
    acked_at_connect: u64,
    /// Wait for the backoff before the next attempt (the last connection was not healthy).
    hold_off: bool,
}

/// Without frames in flight, how often an idle connection is checked for a peer close.
const IDLE_PROBE: Duration = Duration::from_secs(1);
/// How long a connection being replaced (settings changed) may take to get its written
/// frames acknowledged; what is still unacknowledged then is written again on the new one.
const RETIRE_SETTLE: Duration = Duration::from_secs(1);
/// A connection that lasted this long was healthy, whatever it acknowledged.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

impl<D: Dialer> TcpWriter<D> {
    pub fn new(dialer: D, ctx: Ctx) -> Self {
        TcpWriter {
            dialer,
            ctx,
            conn: None,
            in_flight: InFlight::default(),
            buf: Vec::new(),
            backoff: Backoff::default(),
            poll: PollDelay(PollDelay::MIN),
            attempted: false,
            connected_at: Instant::now(),
            acked_at_connect: 0,
            hold_off: false,
        }
    }

    /// Runs until the queue is closed and every frame is acknowledged.
    pub async fn run(mut self, mut batcher: Batcher, batch_max_events: usize) {
        let mut batch: Vec<Frame> = Vec::with_capacity(batch_max_events.clamp(1, 4096));
        let mut finished = false;
        // Connect before the first frame so that a dead destination shows at once.
        let Some(first) = self.connect().await else {
            return;
        };
        self.conn = Some(first);
        loop {
            if finished {
                if self.in_flight.is_empty() {
                    break;
                }
                if self.in_flight.unwritten() == 0 {
                    tokio::time::sleep(self.poll.next()).await;
                    self.check_idle_connection();
                }
            } else {
                let idle = if self.in_flight.is_empty() {
                    IDLE_PROBE
                } else {
                    self.poll.next()
                };
                match batcher.next(&mut batch, Some(idle)).await {
                    Next::Finished => finished = true,
                    Next::Idle => {
                        self.check_idle_connection();
                        if self.conn.is_none() {
                            // Reconnect now, so that state and `destination_up` tell the truth.
                            let Some(conn) = self.connect().await else {
                                return;
                            };
                            self.conn = Some(conn);
                        }
                    }
                    Next::Batch => self.in_flight.push_unwritten(batch.drain(..)),
                }
                self.ctx.update_queue();
            }
            if self.in_flight.unwritten() > 0 {
                self.flush().await;
            }
            self.ctx.in_flight(self.in_flight.len());
        }
    }

    /// Between batches: collect acknowledgements, and notice a peer that went away while
    /// frames wait for acknowledgement (they would never be acknowledged on that connection).
    fn check_idle_connection(&mut self) {
        self.poll_acks();
        let Some(conn) = &mut self.conn else { return };
        if let Some(e) = conn.peer_closed() {
            let graceful = matches!(e, SinkError::PeerClosed);
            self.lose_connection(e, graceful);
        } else if self.in_flight.is_empty() && conn.stale() {
            self.retire_connection();
        }
    }

    /// Replaces a healthy connection whose settings changed (TLS files rotated): what it has
    /// not acknowledged yet is written again on the new one. Not an error.
    fn retire_connection(&mut self) {
        self.poll_acks();
        self.conn = None;
        self.backoff.reset();
        let resent = self.in_flight.mark_all_unwritten();
        Shared::add(&self.ctx.shared.resent, resent as u64);
        self.ctx
            .note("retired", "Settings changed; replacing the connection.");
    }

    /// Before replacing a healthy connection, lets its written frames be acknowledged (bounded
    /// by [`RETIRE_SETTLE`]) so that few are written twice.
    async fn settle_before_retiring(&mut self) {
        let end = Instant::now() + RETIRE_SETTLE;
        self.poll.reset();
        while self.in_flight.len() > self.in_flight.unwritten() && Instant::now() < end {
            tokio::time::sleep(self.poll.next()).await;
            self.poll_acks();
        }
    }

    /// Acknowledges every frame the peer's TCP stack has acknowledged.
    fn poll_acks(&mut self) {
        let Some(conn) = &self.conn else { return };
        poll_acks(conn, &mut self.in_flight, &self.ctx, &mut self.poll);
    }

    /// Drops the connection; its unacknowledged frames will be written on the next one. With
    /// `graceful` (the peer closed; no reset seen yet) a last poll collects what it acknowledged.
    fn lose_connection(&mut self, e: SinkError, graceful: bool) {
        if graceful {
            self.poll_acks();
        }
        self.conn = None;
        let healthy = self.connected_at.elapsed() >= HEALTHY_AFTER
            || Shared::get(&self.ctx.shared.acked) > self.acked_at_connect;
        if healthy {
            self.backoff.reset();
        }
        self.hold_off = !healthy;
        let resent = self.in_flight.mark_all_unwritten();
        Shared::add(&self.ctx.shared.resent, resent as u64);
        self.ctx.set_state(SinkState::Reconnecting);
        self.ctx.error(
            &e,
            "Connection lost; reconnecting and resending unacknowledged frames.",
        );
    }

    /// Connects, retrying with backoff until it succeeds (the close deadline stops this task).
    /// `None` when closing with nothing left to deliver: a dead destination then does not
    /// hold shutdown for the whole grace period.
    async fn connect(&mut self) -> Option<D::Stream> {
        loop {
            if self.ctx.nothing_left() {
                return None;
            }
            if std::mem::take(&mut self.hold_off) {
                self.ctx.update_queue();
                self.ctx
                    .sleep_unless_closing(self.backoff.next_delay())
                    .await;
                continue;
            }
            if self.attempted {
                self.ctx.reconnect_attempt();
            }
            self.attempted = true;
            match self.dialer.dial().await {
                Ok(stream) => {
                    self.ctx.set_state(SinkState::Connected);
                    self.connected_at = Instant::now();
                    self.acked_at_connect = Shared::get(&self.ctx.shared.acked);
                    self.ctx.note("connected", "Connected.");
                    return Some(stream);
                }
                Err(e) => {
                    if self.ctx.shared.state() == SinkState::Connected {
                        self.ctx.set_state(SinkState::Reconnecting);
                    }
                    self.ctx.error(&e, "Cannot connect; retrying with backoff.");
                    self.hold_off = true;
                }
            }
        }
    }

    /// Writes every unwritten frame in one write, reconnecting as often as needed.
    async fn flush(&mut self) {
        while self.in_flight.unwritten() > 0 {
            let mut conn = match self.conn.take() {
                Some(mut c) => {
                    if let Some(e) = c.peer_closed() {
                        self.conn = Some(c);
                        let graceful = matches!(e, SinkError::PeerClosed);
                        self.lose_connection(e, graceful);
                        continue;
                    }
                    if c.stale() {
                        self.conn = Some(c);
                        self.settle_before_retiring().await;
                        self.retire_connection();
                        continue;
                    }
                    c
                }
                None => match self.connect().await {
                    Some(c) => c,
                    None => return,
                },
            };
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            for f in self.in_flight.unwritten_frames() {
                buf.extend_from_slice(&f.bytes);
            }
            let start = conn.wire_bytes();
            let t0 = Instant::now();
            let res = write_polling(
                &mut conn,
                &buf,
                &mut self.in_flight,
                &self.ctx,
                &mut self.poll,
            )
            .await;
            match res {
                Ok(()) => {
                    let end = conn.wire_bytes();
                    self.ctx
                        .written(self.in_flight.unwritten_frames(), buf.len(), t0.elapsed());
                    self.in_flight.mark_written(start, end);
                    self.poll.reset();
                    self.conn = Some(conn);
                    // On loopback and LANs the acknowledgement is often back already.
                    self.poll_acks();
                }
                Err(e) => {
                    self.conn = Some(conn);
                    self.lose_connection(SinkError::Write(e), false);
                }
            }
            // Keep a big resend buffer from pinning memory forever.
            if buf.capacity() > 4 << 20 {
                buf = Vec::new();
            }
            self.buf = buf;
        }
    }
}

fn poll_acks<S: Transport>(conn: &S, in_flight: &mut InFlight, ctx: &Ctx, poll: &mut PollDelay) {
    if in_flight.is_empty() {
        return;
    }
    // After a reset the kernel keeps `write_seq − snd_una`, so the count stays correct; an
    // error here only means "cannot tell", and nothing is acknowledged.
    let Ok(outq) = conn.unacked_bytes() else {
        return;
    };
    let acked_upto = conn.wire_bytes().saturating_sub(outq);
    let acked = in_flight.ack_upto(acked_upto);
    if acked.frames > 0 {
        ctx.acked(acked.frames);
        poll.reset();
    }
}

/// `write_all`, polling acknowledgements while the socket buffer is full (a slow peer).
/// `write` on a socket is cancel-safe: a timed-out write wrote nothing.
async fn write_polling<S: Transport>(
    conn: &mut S,
    buf: &[u8],
    in_flight: &mut InFlight,
    ctx: &Ctx,
    poll: &mut PollDelay,
) -> io::Result<()> {
    let mut pos = 0;
    let mut delay = PollDelay(PollDelay::MIN);
    while pos < buf.len() {
        let chunk = buf.get(pos..).unwrap_or_default();
        match tokio::time::timeout(delay.next(), conn.write(chunk)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => {
                pos += n;
                ctx.send_calls(1);
                delay.reset();
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => poll_acks(conn, in_flight, ctx, poll),
        }
    }
    conn.flush().await
}
