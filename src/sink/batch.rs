//! Batching: takes frames from a destination's queue until a batch is full (events or bytes)
//! or `linger` has passed since its first frame.
//!
//! Closing the handle closes the queue: what is queued is still handed out, then `Finished`.
//!
//! While a batch lingers the batcher does not wait on the queue, which would wake it for every
//! frame (a context switch each, 10 % of the process under load): it sleeps until the linger
//! ends or the senders see a full batch queued ([`BatchWake`]), then takes what is there.
//!
//! Lingering only pays while more frames are coming. When the pipeline has handed over all it
//! fetched and waits on Kafka, it says so ([`BatchWake::upstream_idle`]): the batch goes out at
//! once instead of waiting out the linger, so that a burst costs its own processing time and
//! not `batch_linger_ms` more. Under full load the pipeline never waits and batches fill.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Fill, QueueRx, Took};
use super::Frame;

/// When a batch is complete.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// At most this many frames (at least 1).
    pub max_events: usize,
    /// At most this many bytes, except that a single larger frame forms a batch of its own.
    pub max_bytes: usize,
    /// Send a non-full batch this long after its first frame.
    pub linger: Duration,
}

/// What [`Batcher::next`] produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// `out` holds a batch (never empty).
    Batch,
    /// `idle` passed with no frame; `out` is empty.
    Idle,
    /// The queue is closed and empty; no frame will come again.
    Finished,
}

/// Wakes a lingering batcher once the queue holds a full batch (one wake per batch, not per
/// frame). Senders report the queue length after each frame.
#[derive(Debug, Default)]
pub(crate) struct BatchWake {
    notify: tokio::sync::Notify,
    /// Queue length that makes a full batch; 0 (unset) wakes on every frame.
    full_at: AtomicUsize,
    /// Whether the batcher is lingering (only then is a wake worth a notify).
    lingering: AtomicBool,
    /// The pipeline had nothing more to send when it last looked: end the batch once the
    /// queue is empty.
    upstream_idle: AtomicBool,
}

impl BatchWake {
    /// A sender queued a frame; `len` frames are queued now.
    pub fn queued(&self, len: usize) {
        if len >= self.full_at.load(Ordering::Relaxed) && self.lingering.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// The pipeline has queued everything it had and waits for input: a lingering batch can
    /// go now. Cheap when nothing lingers (two atomic operations).
    pub fn upstream_idle(&self) {
        // SeqCst pairs with the batcher's store of `lingering` and its load of
        // `upstream_idle`: at least one side sees the other.
        self.upstream_idle.store(true, Ordering::SeqCst);
        if self.lingering.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Takes the idle mark (one batch per mark).
    fn take_upstream_idle(&self) -> bool {
        self.upstream_idle.load(Ordering::Relaxed)
            && self.upstream_idle.swap(false, Ordering::SeqCst)
    }
}

/// Pulls batches from one destination's queue.
pub(crate) struct Batcher {
    rx: QueueRx,
    wake: Arc<super::status::Shared>,
    limits: Limits,
    closing: CancellationToken,
    /// A frame that did not fit the previous batch.
    held: Option<Frame>,
}

impl Batcher {
    pub fn new(
        rx: QueueRx,
        limits: Limits,
        closing: CancellationToken,
        wake: Arc<super::status::Shared>,
    ) -> Self {
        let limits = Limits {
            max_events: limits.max_events.max(1),
            ..limits
        };
        // A queue smaller than a batch is "full" at its capacity.
        let full_at = limits.max_events.min(rx.capacity());
        wake.batch_wake.full_at.store(full_at, Ordering::Relaxed);
        Batcher {
            wake,
            rx,
            limits,
            closing,
            held: None,
        }
    }

    /// Whether the handle asked to close (no linger then: flush what is there at once).
    fn draining(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Moves what is queued into `out`, within the batch limits (one lock).
    fn take(&mut self, out: &mut Vec<Frame>, bytes: &mut usize) -> Took {
        let fill = Fill {
            max_events: self.limits.max_events,
            max_bytes: self.limits.max_bytes,
        };
        self.rx.take(out, bytes, &mut self.held, fill)
    }

    /// Whether `out` is a whole batch: no more frames may join it.
    fn complete(&self, out: &[Frame], bytes: usize) -> bool {
        out.len() >= self.limits.max_events || bytes >= self.limits.max_bytes || self.held.is_some()
    }

    /// Waits for a first frame (moved into `out`), or for the queue to finish.
    async fn first(&mut self, out: &mut Vec<Frame>, bytes: &mut usize) -> Next {
        loop {
            if self.closing.is_cancelled() {
                // Stop taking frames; those already queued are still handed out.
                self.rx.close();
            }
            match self.take(out, bytes) {
                Took::Some => return Next::Batch,
                Took::Finished => return Next::Finished,
                Took::Empty => {}
            }
            // Once closing, the queue is closed above and `take` never finds it empty but
            // open: this wait is for frames, the close, or the handle starting to close.
            tokio::select! {
                biased;
                () = self.closing.cancelled() => {}
                () = self.rx.wait() => {}
            }
        }
    }

    /// Fills `out` (which must be empty) with the next batch. With `idle`, gives up waiting for
    /// a first frame after that long (the caller has acknowledgements to poll).
    pub async fn next(&mut self, out: &mut Vec<Frame>, idle: Option<Duration>) -> Next {
        debug_assert!(out.is_empty());
        let mut bytes = 0;
        match self.held.take() {
            Some(f) => {
                bytes = f.bytes.len();
                out.push(f);
            }
            None => {
                let first = match idle {
                    None => self.first(out, &mut bytes).await,
                    Some(d) => match tokio::time::timeout(d, self.first(out, &mut bytes)).await {
                        Ok(next) => next,
                        Err(_) => return Next::Idle,
                    },
                };
                if first == Next::Finished {
                    return Next::Finished;
                }
            }
        }
        let deadline = Instant::now() + self.limits.linger;
        loop {
            if self.complete(out, bytes) {
                return Next::Batch;
            }
            // Whatever is already queued joins without waiting.
            match self.take(out, &mut bytes) {
                Took::Some => continue,
                Took::Finished => return Next::Batch,
                Took::Empty => {}
            }
            let wake = &self.wake.batch_wake;
            if self.draining() || self.limits.linger.is_zero() || wake.take_upstream_idle() {
                return Next::Batch;
            }
            if Instant::now() >= deadline {
                return Next::Batch;
            }
            // Linger without waiting on the queue; then look again from the top (the idle mark
            // that woke it is taken there, by the batch it ends).
            wake.lingering.store(true, Ordering::SeqCst);
            let full = wake.notify.notified();
            tokio::pin!(full);
            full.as_mut().enable();
            // A full batch, or the idle mark, may have come before `lingering` was seen.
            let queued = self.rx.len();
            if queued + out.len() < self.limits.max_events
                && queued < self.rx.capacity()
                && !wake.upstream_idle.load(Ordering::SeqCst)
            {
                tokio::select! {
                    biased;
                    () = self.closing.cancelled() => {}
                    () = &mut full => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            wake.lingering.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::queue::tests::frames;
    use crate::sink::queue::QueueTx;
    use std::sync::Arc;

    fn batcher(
        max_events: usize,
        max_bytes: usize,
        linger_ms: u64,
    ) -> (QueueTx, Batcher, CancellationToken) {
        let (tx, rx) = super::super::queue::queue(64);
        let closing = CancellationToken::new();
        let limits = Limits {
            max_events,
            max_bytes,
            linger: Duration::from_millis(linger_ms),
        };
        (
            tx,
            Batcher::new(rx, limits, closing.clone(), Arc::default()),
            closing,
        )
    }

    /// A batcher that lingers 5 s, with the state its senders share.
    fn lingering_batcher(
        max_events: usize,
    ) -> (QueueTx, Batcher, Arc<super::super::status::Shared>) {
        let (tx, rx) = super::super::queue::queue(64);
        let shared: Arc<super::super::status::Shared> = Arc::default();
        let limits = Limits {
            max_events,
            max_bytes: 1 << 20,
            linger: Duration::from_secs(5),
        };
        let b = Batcher::new(rx, limits, CancellationToken::new(), Arc::clone(&shared));
        (tx, b, shared)
    }

    /// The next batch, taken in a task of its own: what it returned, its size, and the batcher.
    fn next_in_task(mut b: Batcher) -> tokio::task::JoinHandle<((Next, usize), Batcher)> {
        tokio::spawn(async move {
            let mut out = Vec::new();
            let next = b.next(&mut out, None).await;
            ((next, out.len()), b)
        })
    }

    #[tokio::test]
    async fn batches_by_events_and_bytes() {
        let (tx, mut b, _c) = batcher(4, 250, 5);
        for f in frames(10, 100) {
            tx.try_send(f).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(b.next(&mut out, None).await, Next::Batch);
        assert_eq!(out.len(), 2, "byte limit: 2 × 100 ≤ 250 < 3 × 100");
        out.clear();
        assert_eq!(b.next(&mut out, None).await, Next::Batch);
        assert_eq!(out.len(), 2);
        let (tx2, mut b2, _c2) = batcher(4, 1 << 20, 5);
        for f in frames(10, 100) {
            tx2.try_send(f).unwrap();
        }
        out.clear();
        assert_eq!(b2.next(&mut out, None).await, Next::Batch);
        assert_eq!(out.len(), 4, "event limit");
        drop(tx);
    }

    #[tokio::test]
    async fn linger_closes_a_partial_batch_and_idle_returns() {
        let (tx, mut b, _c) = batcher(100, 1 << 20, 5);
        let mut fs = frames(2, 10);
        tx.try_send(fs.remove(0)).unwrap();
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert_eq!(b.next(&mut out, None).await, Next::Batch);
        assert_eq!(out.len(), 1);
        assert!(t0.elapsed() >= Duration::from_millis(5));
        out.clear();
        assert_eq!(
            b.next(&mut out, Some(Duration::from_millis(3))).await,
            Next::Idle
        );
        drop(tx);
        assert_eq!(b.next(&mut out, None).await, Next::Finished);
    }

    #[tokio::test]
    async fn a_full_batch_queued_ends_the_linger_early() {
        let (tx, b, shared) = lingering_batcher(4);
        let mut fs = frames(5, 10);
        tx.try_send(fs.remove(0)).unwrap();
        let t0 = Instant::now();
        let task = next_in_task(b);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for f in fs {
            tx.try_send(f).unwrap();
            // What a `SinkSender` reports after each frame.
            shared.batch_wake.queued(tx.len());
        }
        assert_eq!(task.await.unwrap().0, (Next::Batch, 4));
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "woken by the full queue, not the 5 s linger"
        );
    }

    #[tokio::test]
    async fn idle_upstream_ends_the_linger_early() {
        let (tx, b, shared) = lingering_batcher(100);
        let mut fs = frames(3, 10);
        tx.try_send(fs.remove(0)).unwrap();
        let t0 = Instant::now();
        let task = next_in_task(b);
        // The batch is lingering by now; two more frames, then the sender goes idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for f in fs {
            tx.try_send(f).unwrap();
        }
        shared.batch_wake.upstream_idle();
        let ((next, len), mut b) = task.await.unwrap();
        assert_eq!((next, len), (Next::Batch, 3));
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "ended by the idle sender, not the 5 s linger"
        );
        // The mark is used up: the next batch lingers again.
        tx.try_send(frames(1, 10).pop().unwrap()).unwrap();
        let mut out = Vec::new();
        let waited = tokio::time::timeout(Duration::from_millis(200), b.next(&mut out, None)).await;
        assert!(waited.is_err(), "one idle mark ends one batch");
    }

    #[tokio::test]
    async fn an_idle_mark_with_nothing_new_ends_only_the_lingering_batch() {
        let (tx, b, shared) = lingering_batcher(100);
        tx.try_send(frames(1, 10).pop().unwrap()).unwrap();
        let task = next_in_task(b);
        // The batch is lingering by now; the sender goes idle without sending more.
        tokio::time::sleep(Duration::from_millis(50)).await;
        shared.batch_wake.upstream_idle();
        let ((next, len), mut b) = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("ended by the idle mark, not the 5 s linger")
            .unwrap();
        assert_eq!((next, len), (Next::Batch, 1));
        tx.try_send(frames(1, 10).pop().unwrap()).unwrap();
        let mut out = Vec::new();
        let waited = tokio::time::timeout(Duration::from_millis(200), b.next(&mut out, None)).await;
        assert!(waited.is_err(), "the mark was used by the batch it ended");
    }

    #[tokio::test]
    async fn an_idle_mark_before_the_batch_ends_it_once_the_queue_is_empty() {
        let (tx, mut b, shared) = lingering_batcher(100);
        // The sender queued its burst and went idle while the writer was busy elsewhere.
        for f in frames(3, 10) {
            tx.try_send(f).unwrap();
        }
        shared.batch_wake.upstream_idle();
        let mut out = Vec::new();
        let next = tokio::time::timeout(Duration::from_secs(2), b.next(&mut out, None)).await;
        assert_eq!(next.ok(), Some(Next::Batch));
        assert_eq!(out.len(), 3, "the whole burst in one batch");
    }

    #[tokio::test]
    async fn closing_flushes_queued_frames_without_linger() {
        let (tx, mut b, closing) = batcher(100, 1 << 20, 1000);
        for f in frames(3, 10) {
            tx.try_send(f).unwrap();
        }
        closing.cancel();
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert_eq!(b.next(&mut out, None).await, Next::Batch);
        assert_eq!(out.len(), 3);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "no linger while closing"
        );
        assert!(
            tx.try_send(frames(1, 1).pop().unwrap()).is_err(),
            "closed queue refuses frames"
        );
        out.clear();
        assert_eq!(b.next(&mut out, None).await, Next::Finished);
    }
}
