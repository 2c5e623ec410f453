//! Sink stage: one task per destination takes rendered frames from a bounded queue, batches
//! them and writes them over UDP, TCP or TLS, reconnecting with backoff.
//!
//! Invariant: a frame's [`Ack`] completes only when the destination is truly done with it
//! (UDP: handed to the kernel; TCP: acknowledged by the peer's TCP stack). A frame dropped
//! without completion (close deadline, crash) is redelivered from Kafka.
//!
//! - `batch`: frames → batches (events, bytes, linger); closing flushes without linger.
//! - `connector`: resolve on every attempt, dial with timeout, socket options, backoff.
//! - `udp`: one datagram per frame via `sendmmsg`; acked when the kernel took it.
//! - `tcp`: one write per batch over a `Transport`; `unacked` keeps written frames until
//!   `SIOCOUTQ` shows the peer acknowledged them, and rewrites them all, in order, on a new
//!   connection. Written-but-unacknowledged frames are bounded by the socket send buffer,
//!   since no new batch is taken while a write waits.
//! - `tls`: the same writer over a TLS `Transport` that reports ciphertext bytes, so frames
//!   are acked when the ciphertext that carried them is acknowledged; named handshake errors;
//!   certificate files reloaded when they change.
//! - `status`, `telemetry`: the handle's snapshot; metrics per batch (`events_sent_total` and
//!   `bytes_sent_total` count resends too), logs at most once a minute per error kind.

mod batch;
mod connector;
mod queue;
mod sender;
mod status;
mod tcp;
mod telemetry;
mod tls;
mod udp;
mod unacked;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ack::Ack;
use crate::render::settings::Protocol;

pub use connector::SinkError;
pub use sender::{SendRefused, SinkSender, SinkStopped};
pub use status::{SinkState, SinkStatus};
pub use tls::{TlsReason, TlsSpec};

use batch::{Batcher, Limits};
use status::Shared;
use telemetry::Ctx;

/// How to reach and feed one destination.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Destination name (metric label, log field).
    pub name: String,
    /// Transport.
    pub protocol: Protocol,
    /// `host:port`; the host is resolved again on every connection attempt.
    pub address: String,
    /// Capacity of the destination's queue, in frames (at least 1).
    pub queue_events: usize,
    /// A batch holds at most this many frames.
    pub batch_max_events: usize,
    /// A batch holds at most this many bytes (a larger single frame goes alone).
    pub batch_max_bytes: usize,
    /// A non-full batch is sent this long after its first frame.
    pub batch_linger: Duration,
    /// Limit for resolving and connecting, per attempt.
    pub connect_timeout: Duration,
    /// TLS settings (`protocol = "tls"`); `None` there means verification against the system
    /// roots with the host part of `address` as the name. Ignored for UDP and TCP.
    pub tls: Option<TlsSpec>,
}

/// One rendered message for one destination.
#[derive(Debug)]
pub struct Frame {
    /// The exact wire bytes, framing included.
    pub bytes: Bytes,
    /// Completed when the destination is done with the frame.
    pub ack: Ack,
    /// Kafka timestamp, ms since the epoch (for `end_to_end_seconds`).
    pub event_time_ms: Option<i64>,
}

/// The pipeline's side of a destination task.
#[derive(Debug)]
pub struct SinkHandle {
    name: String,
    tx: queue::QueueTx,
    shared: Arc<Shared>,
    /// Stop taking frames; flush and wait for acknowledgements.
    closing: CancellationToken,
    /// The close deadline passed: stop now, dropping un-acked frames.
    hard_stop: CancellationToken,
    task: JoinHandle<()>,
    /// TLS destinations: the settings, to reload.
    tls: Option<Arc<tls::TlsReloader>>,
}

/// What [`SinkHandle::close`] left behind.
#[derive(Debug, Default, Clone)]
pub struct CloseReport {
    /// Frames accepted and never acked: dropped un-acked, so redelivered from Kafka.
    pub unacked: usize,
    /// Frames acked over the destination's life.
    pub acked: u64,
    /// Frames written again after a reconnect.
    pub resent: u64,
    /// Whether the grace period ran out before everything was acknowledged.
    pub timed_out: bool,
}

/// Spawns the destination task on the current tokio runtime.
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn`).
pub fn spawn(spec: SinkSpec) -> SinkHandle {
    let (tx, rx) = queue::queue(spec.queue_events.max(1));
    let shared = Arc::new(Shared::default());
    let closing = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let ctx = Ctx::new(&spec.name, Arc::clone(&shared), tx.probe(), closing.clone());
    ctx.set_state(status::SinkState::Connecting);
    let limits = Limits {
        max_events: spec.batch_max_events,
        max_bytes: spec.batch_max_bytes,
        linger: spec.batch_linger,
    };
    let batcher = Batcher::new(rx, limits, closing.clone(), Arc::clone(&shared));
    let stop = hard_stop.clone();
    let up = metrics::gauge!(crate::metrics::DESTINATION_UP, "destination" => spec.name.clone());
    let max_events = spec.batch_max_events;
    let mut tls_settings = None;
    let task = match spec.protocol {
        Protocol::Udp => {
            let w = udp::UdpWriter::new(spec.address, spec.connect_timeout, ctx);
            tokio::spawn(supervise(
                stop,
                up,
                Arc::clone(&shared),
                w.run(batcher, max_events),
            ))
        }
        Protocol::Tcp => {
            let dialer = tcp::TcpDialer {
                address: spec.address,
                timeout: spec.connect_timeout,
            };
            let w = tcp::TcpWriter::new(dialer, ctx);
            tokio::spawn(supervise(
                stop,
                up,
                Arc::clone(&shared),
                w.run(batcher, max_events),
            ))
        }
        Protocol::Tls => {
            let t = spec
                .tls
                .unwrap_or_else(|| TlsSpec::defaults_for(&spec.address));
            if !t.config.verify {
                tracing::warn!(
                    destination = %spec.name,
                    "TLS verification is OFF (tls.verify = false): any server certificate is accepted; lab use only."
                );
            }
            let settings = Arc::new(tls::TlsReloader::new(&spec.name, t.config));
            tls_settings = Some(Arc::clone(&settings));
            let dialer = tls::TlsDialer {
                address: spec.address,
                connect_timeout: spec.connect_timeout,
                handshake_timeout: t.handshake_timeout,
                settings,
            };
            let w = tcp::TcpWriter::new(dialer, ctx);
            tokio::spawn(supervise(
                stop,
                up,
                Arc::clone(&shared),
                w.run(batcher, max_events),
            ))
        }
    };
    SinkHandle {
        name: spec.name,
        tx,
        shared,
        closing,
        hard_stop,
        task,
        tls: tls_settings,
    }
}

/// Reads a destination's status without holding it open.
#[derive(Clone)]
pub struct StatusReader {
    shared: Arc<Shared>,
    queue: queue::QueueProbe,
}

impl StatusReader {
    /// The same snapshot as [`SinkHandle::status`]; queue depth 0 once the sink is closed.
    pub fn status(&self) -> SinkStatus {
        self.shared.snapshot(self.queue.len())
    }
}

/// Runs `work` until it ends or the close deadline passes; dropping it drops its frames
/// un-acked.
async fn supervise(
    hard_stop: CancellationToken,
    up: metrics::Gauge,
    shared: Arc<Shared>,
    work: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        biased;
        () = hard_stop.cancelled() => {}
        () = work => {}
    }
    shared.set_state(SinkState::Closed);
    up.set(0.0);
    shared
        .in_flight
        .store(0, std::sync::atomic::Ordering::Relaxed);
}

impl SinkHandle {
    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues a frame, waiting for room (backpressure).
    ///
    /// # Errors
    /// Gives the frame back when the destination task has stopped.
    pub async fn send(&self, f: Frame) -> Result<(), Frame> {
        self.tx.send(f).await.map_err(|e| e.1)?;
        Shared::add(&self.shared.accepted, 1);
        Ok(())
    }

    /// Queues a frame if there is room now.
    ///
    /// # Errors
    /// Gives the frame back when the queue is full or the task has stopped.
    pub fn try_send(&self, f: Frame) -> Result<(), Frame> {
        self.tx.try_send(f).map_err(|e| e.1)?;
        Shared::add(&self.shared.accepted, 1);
        Ok(())
    }

    /// TLS destinations: rebuilds the TLS settings from the CA, certificate and key files now
    /// (they are also checked on every connection attempt and every 2 s). New connections use
    /// them; the open connection is replaced at its next batch, or at once when idle, and what
    /// it had not got acknowledged is written again. Returns `Ok(false)` for UDP and TCP.
    ///
    /// # Errors
    /// When the files cannot be used; the previous settings stay in force.
    pub fn reload_tls(&self) -> Result<bool, SinkError> {
        match &self.tls {
            Some(t) => t.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// A cheap, cloneable view of [`SinkHandle::status`] for the admin API; it does not keep
    /// the destination open.
    pub fn status_reader(&self) -> StatusReader {
        StatusReader {
            shared: Arc::clone(&self.shared),
            queue: self.tx.probe(),
        }
    }

    /// A snapshot of the destination's state and counters.
    pub fn status(&self) -> SinkStatus {
        self.shared.snapshot(self.tx.len())
    }

    /// Stops taking frames, flushes what is queued and in flight and waits for its
    /// acknowledgement up to `grace`. Frames not finished by then are dropped un-acked (Kafka
    /// redelivers them). Returns within `grace` plus a few milliseconds.
    pub async fn close(self, grace: Duration) -> CloseReport {
        let deadline = tokio::time::Instant::now() + grace;
        let SinkHandle {
            tx,
            shared,
            closing,
            hard_stop,
            mut task,
            ..
        } = self;
        closing.cancel();
        drop(tx);
        let mut timed_out = false;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            timed_out = true;
            hard_stop.cancel();
            if tokio::time::timeout(Duration::from_millis(100), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let accepted = Shared::get(&shared.accepted);
        let acked = Shared::get(&shared.acked);
        CloseReport {
            unacked: usize::try_from(accepted.saturating_sub(acked)).unwrap_or(usize::MAX),
            acked,
            resent: Shared::get(&shared.resent),
            timed_out,
        }
    }
}
