//! A cheap, clonable sending side of a destination, for the pipeline's parking decisions and
//! the retry consumer (both feed the same destination task as the main pipeline).

use std::sync::Arc;
use std::time::Duration;

use super::queue::{QueueTx, Refused};
use super::status::{Shared, SinkState};
use super::{Frame, SinkHandle};

fn refused(why: Refused, f: Frame) -> SendRefused {
    match why {
        Refused::Full => SendRefused::Full(f),
        Refused::Closed => SendRefused::Closed(f),
    }
}

/// The destination task has stopped: it takes no frames.
#[derive(Debug, thiserror::Error)]
#[error("the destination task has stopped")]
pub struct SinkStopped;

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
    tx: QueueTx,
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
                self.accepted(1);
                Ok(())
            }
            Err((why, f)) => Err(refused(why, f)),
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
                self.accepted(1);
                Ok(())
            }
            Err((why, f)) => Err(refused(why, f)),
        }
    }

    /// Promises room in the queue for up to `want` frames (0: none now, or the task has
    /// stopped), to be filled with [`SinkSender::send_reserved`]: a burst's frames are then
    /// queued in one step instead of one by one.
    pub fn reserve(&self, want: usize) -> usize {
        self.tx.reserve(want)
    }

    /// Queues `frames` (in order, at most `reserved`, emptying it) into the room promised by
    /// [`SinkSender::reserve`], and frees what was promised and not used.
    ///
    /// # Errors
    /// The task has stopped; the frames stay in `frames`.
    pub fn send_reserved(
        &self,
        frames: &mut Vec<Frame>,
        reserved: usize,
    ) -> Result<(), SinkStopped> {
        let n = frames.len();
        self.tx
            .send_reserved(frames, reserved)
            .map_err(|_| SinkStopped)?;
        if n > 0 {
            self.accepted(n);
        }
        Ok(())
    }

    fn accepted(&self, n: usize) {
        Shared::add(&self.shared.accepted, n as u64);
        self.shared.batch_wake.queued(self.queued());
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
        self.tx.len()
    }

    /// The queue's capacity, in frames.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Takes back every frame still waiting in the queue. The frames are no longer this
    /// destination's: the caller must finish their acks (parking them) or drop them
    /// (redelivery). Frames the writer has taken (in a batch, written or in flight) stay with
    /// the writer.
    pub fn reclaim(&self) -> Vec<Frame> {
        let out = self.tx.drain();
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
