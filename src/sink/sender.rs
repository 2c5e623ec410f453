//! A cheap, clonable sending side of a destination, for the pipeline's parking decisions and
//! the retry consumer (both feed the same destination task as the main pipeline).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::status::{Shared, SinkState};
use super::{Frame, SinkHandle};

/// Why [`SinkSender::send_timeout`] gave the frame back.
#[derive(Debug)]
pub enum SendRefused {
    /// No room within the time allowed.
    Full(Frame),
    /// The destination task has stopped.
    Closed(Frame),
}

impl SendRefused {
    /// The frame, back to the caller.
    pub fn into_frame(self) -> Frame {
        match self {
            SendRefused::Full(f) | SendRefused::Closed(f) => f,
        }
    }
}

/// The queue and state of one destination, shared with its [`SinkHandle`].
#[derive(Debug, Clone)]
pub struct SinkSender {
    tx: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
}

impl SinkHandle {
    /// A clonable sender to this destination's queue, with cheap state reads.
    pub fn sender(&self) -> SinkSender {
        SinkSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl SinkSender {
    /// Queues a frame if there is room now.
    ///
    /// # Errors
    /// Gives the frame back when the queue is full or the task has stopped.
    pub fn try_send(&self, f: Frame) -> Result<(), SendRefused> {
        match self.tx.try_send(f) {
            Ok(()) => {
                Shared::add(&self.shared.accepted, 1);
                self.shared.batch_wake.queued(self.queued());
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(f)) => Err(SendRefused::Full(f)),
            Err(mpsc::error::TrySendError::Closed(f)) => Err(SendRefused::Closed(f)),
        }
    }

    /// Queues a frame, waiting at most `wait` for room. The frame is never dropped: it comes
    /// back on refusal.
    ///
    /// # Errors
    /// When there was no room in time, or the task has stopped.
    pub async fn send_timeout(&self, f: Frame, wait: Duration) -> Result<(), SendRefused> {
        match self.tx.send_timeout(f, wait).await {
            Ok(()) => {
                Shared::add(&self.shared.accepted, 1);
                self.shared.batch_wake.queued(self.queued());
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(f)) => Err(SendRefused::Full(f)),
            Err(mpsc::error::SendTimeoutError::Closed(f)) => Err(SendRefused::Closed(f)),
        }
    }

    /// The sender has nothing more for now: a lingering batch can be written at once instead
    /// of waiting out `batch_linger_ms`.
    pub fn upstream_idle(&self) {
        self.shared.batch_wake.upstream_idle();
    }

    /// The connection state (one atomic load).
    pub fn state(&self) -> SinkState {
        self.shared.state()
    }

    /// Down: not connected after a connection attempt failed (or cannot work at all).
    /// A first attempt still in progress is not down.
    pub fn is_down(&self) -> bool {
        match self.shared.state() {
            SinkState::Connected => false,
            SinkState::Connecting => Shared::get(&self.shared.reconnects) > 0,
            SinkState::Reconnecting | SinkState::Unavailable | SinkState::Closed => true,
        }
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The queue's capacity, in frames.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Takes back every frame still waiting in the queue, if the writer is not assembling a
    /// batch right now (it is not while it reconnects). The frames are no longer this
    /// destination's: the caller must finish their acks (parking them) or drop them
    /// (redelivery). Frames already written and not acknowledged stay with the writer.
    pub fn reclaim(&self) -> Vec<Frame> {
        let Some(rx) = self.shared.reclaim.get() else {
            return Vec::new();
        };
        let Ok(mut rx) = rx.try_lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push(f);
        }
        drop(rx);
        // No longer accepted here, so that closing does not wait for them.
        self.shared
            .accepted
            .fetch_sub(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        out
    }

    /// Frames accepted and not yet acknowledged (queued, being written or in flight).
    pub fn unfinished(&self) -> u64 {
        Shared::get(&self.shared.accepted).saturating_sub(Shared::get(&self.shared.acked))
    }
}
