//! What a destination task is doing, shared lock-free with its handle (admin API, tests).
//!
//! Counters only grow; the state and last error are overwritten as the connection changes.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Connection state of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkState {
    /// First connection attempt in progress (UDP: resolving and binding).
    Connecting,
    /// Connected; frames are being written.
    Connected,
    /// The connection failed; retrying with backoff. Frames not acknowledged will be resent.
    Reconnecting,
    /// The destination cannot work in this build; frames stay queued, un-acked (unused since
    /// TLS is served; kept for the admin API).
    Unavailable,
    /// The task has stopped.
    Closed,
}

impl SinkState {
    const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Connected,
            2 => Self::Reconnecting,
            3 => Self::Unavailable,
            _ => Self::Closed,
        }
    }

    const fn as_u8(self) -> u8 {
        match self {
            Self::Connecting => 0,
            Self::Connected => 1,
            Self::Reconnecting => 2,
            Self::Unavailable => 3,
            Self::Closed => 4,
        }
    }

    /// Lower-case name, as the admin API shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Unavailable => "unavailable",
            Self::Closed => "closed",
        }
    }
}

/// A snapshot of one destination, from [`SinkHandle::status`](super::SinkHandle::status).
#[derive(Debug, Clone)]
pub struct SinkStatus {
    /// Frames waiting in the destination's queue.
    pub queued: usize,
    /// Connection state.
    pub state: SinkState,
    /// The last connection or write error, if any since start.
    pub last_error: Option<String>,
    /// Frames accepted into the queue.
    pub accepted: u64,
    /// Frames written to a socket, resends included.
    pub written: u64,
    /// Bytes written to a socket, resends included.
    pub written_bytes: u64,
    /// Frames finished (acked): UDP handed to the kernel, TCP acknowledged by the peer.
    pub acked: u64,
    /// Frames written again on a new connection because the old one failed before the peer
    /// acknowledged them.
    pub resent: u64,
    /// Frames written and not yet acknowledged.
    pub in_flight: u64,
    /// Batches written (TCP: one write call sequence per batch; UDP: one batch of datagrams).
    pub batches: u64,
    /// Send system calls (UDP: `sendmmsg` or `send` calls).
    pub send_calls: u64,
    /// Connection attempts after a failure.
    pub reconnects: u64,
}

/// The task's side of [`SinkStatus`].
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    pub accepted: AtomicU64,
    pub written: AtomicU64,
    pub written_bytes: AtomicU64,
    pub acked: AtomicU64,
    pub resent: AtomicU64,
    pub in_flight: AtomicU64,
    pub batches: AtomicU64,
    pub send_calls: AtomicU64,
    pub reconnects: AtomicU64,
    /// Wakes the lingering batcher once a full batch is queued (see [`super::batch`]).
    pub batch_wake: super::batch::BatchWake,
}

impl Shared {
    pub fn state(&self) -> SinkState {
        SinkState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: SinkState) {
        self.state.store(s.as_u8(), Ordering::Relaxed);
    }

    pub fn set_error(&self, e: &dyn std::fmt::Display) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(e.to_string());
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self, queued: usize) -> SinkStatus {
        SinkStatus {
            queued,
            state: self.state(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            accepted: Self::get(&self.accepted),
            written: Self::get(&self.written),
            written_bytes: Self::get(&self.written_bytes),
            acked: Self::get(&self.acked),
            resent: Self::get(&self.resent),
            in_flight: Self::get(&self.in_flight),
            batches: Self::get(&self.batches),
            send_calls: Self::get(&self.send_calls),
            reconnects: Self::get(&self.reconnects),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        for s in [
            SinkState::Connecting,
            SinkState::Connected,
            SinkState::Reconnecting,
            SinkState::Unavailable,
            SinkState::Closed,
        ] {
            assert_eq!(SinkState::from_u8(s.as_u8()), s);
        }
        let sh = Shared::default();
        assert_eq!(sh.state(), SinkState::Connecting);
        sh.set_error(&"boom");
        assert_eq!(sh.snapshot(3).last_error.as_deref(), Some("boom"));
    }
}
