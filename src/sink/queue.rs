//! A destination's bounded queue of frames, built so that its cost is paid per burst and per
//! batch rather than per frame.
//!
//! A channel that takes one frame per call costs several atomic operations on lines the writer
//! also touches, per frame and per destination (perf: the hand-off was a quarter of the
//! pipeline thread with four destinations). Here the pipeline reserves room for a burst
//! ([`QueueTx::reserve`]), keeps that burst's frames itself, and adds them under one lock
//! ([`QueueTx::send_reserved`]); the writer takes a whole batch under one lock
//! ([`QueueRx::take`]). Single frames ([`QueueTx::try_send`], [`QueueTx::send_timeout`]) remain
//! for the retry consumer and for waiting under backpressure.
//!
//! The queue closes when the writer closes it (frames already queued are still taken), when the
//! writer is dropped (queued frames are dropped un-acked: Kafka redelivers them), or when the
//! last sender is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::Frame;

/// Why the queue refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No room (within the time allowed).
    Full,
    /// The queue is closed: no frame is taken any more.
    Closed,
}

/// What [`QueueRx::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Took {
    /// At least one frame.
    Some,
    /// Nothing queued now.
    Empty,
    /// Closed and empty: no frame will come again.
    Finished,
}

/// The sending side; clones count as senders (the last one dropped closes the queue).
#[derive(Debug)]
pub(crate) struct QueueTx(Arc<Queue>);

/// The writer's side.
#[derive(Debug)]
pub(crate) struct QueueRx(Arc<Queue>);

/// Reads the queue's depth without keeping it open.
#[derive(Debug, Clone)]
pub(crate) struct QueueProbe(Arc<Queue>);

#[derive(Debug)]
struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// `state.frames.len()`, readable without the lock.
    len: AtomicUsize,
    /// Senders that found no room wait here; woken when the writer takes frames.
    room: Notify,
    /// The writer waits here for frames.
    ready: Notify,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Frame>,
    /// Room promised by [`QueueTx::reserve`] and not filled yet.
    reserved: usize,
    closed: bool,
    senders: usize,
    /// The writer found the queue empty and waits on `ready`.
    writer_waiting: bool,
    /// A sender found no room and waits on `room`.
    sender_waiting: bool,
}

/// A queue of `capacity` frames (at least 1).
pub(crate) fn queue(capacity: usize) -> (QueueTx, QueueRx) {
    let q = Arc::new(Queue {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            reserved: 0,
            closed: false,
            senders: 1,
            writer_waiting: false,
            sender_waiting: false,
        }),
        capacity: capacity.max(1),
        len: AtomicUsize::new(0),
        room: Notify::new(),
        ready: Notify::new(),
    });
    (QueueTx(Arc::clone(&q)), QueueRx(q))
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can leave the state half changed: a panic elsewhere while it
        // was held does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames queued now.
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Called with the lock held after frames were added: whether to wake the writer.
    fn added(&self, s: &mut State) -> bool {
        self.len.store(s.frames.len(), Ordering::Relaxed);
        std::mem::take(&mut s.writer_waiting)
    }

    /// Called with the lock held after frames were taken: whether to wake waiting senders.
    fn removed(&self, s: &mut State) -> bool {
        self.len.store(s.frames.len(), Ordering::Relaxed);
        std::mem::take(&mut s.sender_waiting)
    }

    fn free(&self, s: &State) -> usize {
        self.capacity.saturating_sub(s.frames.len() + s.reserved)
    }
}

impl Clone for QueueTx {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        QueueTx(Arc::clone(&self.0))
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.senders -= 1;
        if s.senders == 0 {
            s.closed = true;
            drop(s);
            self.0.ready.notify_one();
        }
    }
}

impl QueueTx {
    /// Queues `f` if there is room now; gives it back otherwise.
    pub fn try_send(&self, f: Frame) -> Result<(), (Refused, Frame)> {
        self.push(f, false)
    }

    fn push(&self, f: Frame, will_wait: bool) -> Result<(), (Refused, Frame)> {
        let q = &*self.0;
        let mut s = q.lock();
        if s.closed {
            return Err((Refused::Closed, f));
        }
        if q.free(&s) == 0 {
            s.sender_waiting |= will_wait;
            return Err((Refused::Full, f));
        }
        s.frames.push_back(f);
        let wake = q.added(&mut s);
        drop(s);
        if wake {
            q.ready.notify_one();
        }
        Ok(())
    }

    /// Queues `f`, waiting at most `wait` for room; gives it back on refusal.
    pub async fn send_timeout(&self, f: Frame, wait: Duration) -> Result<(), (Refused, Frame)> {
        self.send_until(f, Some(tokio::time::Instant::now() + wait))
            .await
    }

    /// Queues `f`, waiting as long as it takes for room; gives it back if the queue closes.
    pub async fn send(&self, f: Frame) -> Result<(), (Refused, Frame)> {
        self.send_until(f, None).await
    }

    async fn send_until(
        &self,
        mut f: Frame,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), (Refused, Frame)> {
        loop {
            // Registered before looking, so that room made in between is not missed.
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push(f, true) {
                Err((Refused::Full, back)) => f = back,
                done => return done,
            }
            match deadline {
                None => room.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, room).await.is_err() {
                        return Err((Refused::Full, f));
                    }
                }
            }
        }
    }

    /// Promises room for up to `want` frames, to be filled with [`QueueTx::send_reserved`].
    /// Returns how many it could promise (0: full or closed).
    pub fn reserve(&self, want: usize) -> usize {
        let q = &*self.0;
        let mut s = q.lock();
        if s.closed {
            return 0;
        }
        let n = q.free(&s).min(want);
        s.reserved += n;
        n
    }

    /// Queues `frames` (all of them, in order: at most `reserved` frames) into room promised by
    /// [`QueueTx::reserve`], and gives back the rest of that promise. On a closed queue the
    /// frames stay in `frames`.
    ///
    /// # Errors
    /// The queue closed since the room was promised.
    pub fn send_reserved(&self, frames: &mut Vec<Frame>, reserved: usize) -> Result<(), Refused> {
        debug_assert!(frames.len() <= reserved);
        let q = &*self.0;
        let mut s = q.lock();
        s.reserved = s.reserved.saturating_sub(reserved);
        // Room promised and not used is free again: a sender may be waiting for it.
        let freed = reserved > frames.len() && std::mem::take(&mut s.sender_waiting);
        if s.closed {
            drop(s);
            q.room.notify_waiters();
            return Err(Refused::Closed);
        }
        s.frames.extend(frames.drain(..));
        let wake = q.added(&mut s);
        drop(s);
        if wake {
            q.ready.notify_one();
        }
        if freed {
            q.room.notify_waiters();
        }
        Ok(())
    }

    /// Takes every queued frame back (they are no longer the writer's).
    pub fn drain(&self) -> Vec<Frame> {
        let q = &*self.0;
        let mut s = q.lock();
        let out: Vec<Frame> = s.frames.drain(..).collect();
        let wake = q.removed(&mut s);
        drop(s);
        if wake {
            q.room.notify_waiters();
        }
        out
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Capacity, in frames.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// A depth reader that does not keep the queue open.
    pub fn probe(&self) -> QueueProbe {
        QueueProbe(Arc::clone(&self.0))
    }
}

impl QueueProbe {
    /// Frames queued now (0 once the writer has gone).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The limits of one batch, for [`QueueRx::take`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill {
    /// At most this many frames in `out`.
    pub max_events: usize,
    /// At most this many bytes in `out`, except that a first frame always goes.
    pub max_bytes: usize,
}

impl QueueRx {
    /// Moves queued frames to `out` under one lock until it holds `limit.max_events` frames or
    /// `*bytes` (the bytes already in `out`) would pass `limit.max_bytes`: the frame that does
    /// not fit goes to `over` and ends the batch (`out` non-empty). `over` must be empty.
    pub fn take(
        &mut self,
        out: &mut Vec<Frame>,
        bytes: &mut usize,
        over: &mut Option<Frame>,
        limit: Fill,
    ) -> Took {
        debug_assert!(over.is_none());
        let q = &*self.0;
        let mut s = q.lock();
        let before = out.len();
        while out.len() < limit.max_events {
            let Some(f) = s.frames.pop_front() else { break };
            if !out.is_empty() && *bytes + f.bytes.len() > limit.max_bytes {
                *over = Some(f);
                break;
            }
            *bytes += f.bytes.len();
            out.push(f);
        }
        let took = out.len() > before || over.is_some();
        let finished = !took && s.closed && s.frames.is_empty();
        let wake = took && q.removed(&mut s);
        drop(s);
        if wake {
            q.room.notify_waiters();
        }
        if took {
            Took::Some
        } else if finished {
            Took::Finished
        } else {
            Took::Empty
        }
    }

    /// Waits until a frame is queued or the queue is closed (then [`QueueRx::take`] answers
    /// `Some` or `Finished`).
    pub async fn wait(&self) {
        let q = &*self.0;
        let ready = q.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        {
            let mut s = q.lock();
            if !s.frames.is_empty() || s.closed {
                return;
            }
            s.writer_waiting = true;
        }
        ready.await;
    }

    /// Stops accepting frames; those queued are still taken.
    pub fn close(&self) {
        let q = &*self.0;
        q.lock().closed = true;
        q.room.notify_waiters();
        q.ready.notify_one();
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Capacity, in frames.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let q = &*self.0;
        let mut s = q.lock();
        s.closed = true;
        // Dropped un-acked: their events are redelivered from Kafka.
        let dropped = std::mem::take(&mut s.frames);
        q.removed(&mut s);
        drop(s);
        drop(dropped);
        q.room.notify_waiters();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ack::{NoStore, PartitionTracker};
    use bytes::Bytes;

    /// `n` frames of `size` bytes, the first byte of each telling its place (`a`, `b`, …).
    pub(crate) fn frames(n: usize, size: usize) -> Vec<Frame> {
        let t = PartitionTracker::new("t", 0, Arc::new(NoStore));
        (0..n)
            .map(|i| Frame {
                bytes: Bytes::from(vec![b'a' + (i % 26) as u8; size]),
                ack: t.dispatch(i as i64, 1).pop().unwrap(),
                event_time_ms: None,
            })
            .collect()
    }

    const ALL: Fill = Fill {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
    };

    fn take_all(rx: &mut QueueRx) -> (Took, Vec<Frame>) {
        let (mut out, mut bytes, mut over) = (Vec::new(), 0, None);
        let took = rx.take(&mut out, &mut bytes, &mut over, ALL);
        (took, out)
    }

    #[test]
    fn reserved_room_is_kept_for_the_burst_and_frames_keep_their_order() {
        let (tx, mut rx) = queue(4);
        assert_eq!(tx.reserve(3), 3);
        // Single frames see only what is not promised.
        let mut fs = frames(5, 1);
        let last = fs.pop().unwrap();
        let single = fs.pop().unwrap();
        assert!(tx.try_send(single).is_ok());
        assert_eq!(
            tx.try_send(last).map_err(|e| e.0).err(),
            Some(Refused::Full)
        );
        let mut burst = fs;
        assert!(tx.send_reserved(&mut burst, 3).is_ok());
        assert!(burst.is_empty());
        let (took, out) = take_all(&mut rx);
        assert_eq!(took, Took::Some);
        let firsts: Vec<u8> = out.iter().map(|f| f.bytes[0]).collect();
        assert_eq!(firsts, b"dabc", "the single frame went before the burst");
    }

    #[test]
    fn an_unused_promise_is_given_back() {
        let (tx, _rx) = queue(4);
        assert_eq!(tx.reserve(10), 4);
        assert_eq!(tx.reserve(1), 0, "everything promised");
        let mut two = frames(2, 1);
        tx.send_reserved(&mut two, 4).unwrap();
        assert_eq!(tx.len(), 2);
        assert_eq!(tx.reserve(10), 2, "the two unused places are free again");
    }

    #[test]
    fn take_stops_at_the_limits_and_keeps_the_frame_over_the_byte_limit() {
        let (tx, mut rx) = queue(16);
        for f in frames(10, 100) {
            tx.try_send(f).unwrap();
        }
        let (mut out, mut bytes, mut over) = (Vec::new(), 0, None);
        let limit = Fill {
            max_events: 8,
            max_bytes: 250,
        };
        assert_eq!(rx.take(&mut out, &mut bytes, &mut over, limit), Took::Some);
        assert_eq!((out.len(), bytes), (2, 200));
        assert_eq!(over.take().map(|f| f.bytes[0]), Some(b'c'));
        out.clear();
        bytes = 0;
        let limit = Fill {
            max_events: 3,
            max_bytes: 1 << 20,
        };
        assert_eq!(rx.take(&mut out, &mut bytes, &mut over, limit), Took::Some);
        assert_eq!(out.len(), 3);
        assert!(over.is_none());
        assert_eq!(tx.len(), 4);
    }

    #[test]
    fn closing_refuses_new_frames_but_hands_out_queued_ones() {
        let (tx, mut rx) = queue(4);
        tx.try_send(frames(1, 1).pop().unwrap()).unwrap();
        rx.close();
        assert_eq!(
            tx.try_send(frames(1, 1).pop().unwrap())
                .map_err(|e| e.0)
                .err(),
            Some(Refused::Closed)
        );
        assert_eq!(tx.reserve(1), 0);
        assert_eq!(take_all(&mut rx).0, Took::Some);
        assert_eq!(take_all(&mut rx).0, Took::Finished);
    }

    #[test]
    fn the_last_sender_gone_finishes_the_queue_after_its_frames() {
        let (tx, mut rx) = queue(4);
        let tx2 = tx.clone();
        tx.try_send(frames(1, 1).pop().unwrap()).unwrap();
        drop(tx);
        assert_eq!(take_all(&mut rx).0, Took::Some);
        assert_eq!(take_all(&mut rx).0, Took::Empty, "one sender is left");
        drop(tx2);
        assert_eq!(take_all(&mut rx).0, Took::Finished);
    }

    #[test]
    fn a_dropped_writer_drops_its_frames_and_refuses_more() {
        let (tx, rx) = queue(4);
        tx.try_send(frames(1, 1).pop().unwrap()).unwrap();
        let probe = tx.probe();
        drop(rx);
        assert_eq!(probe.len(), 0);
        let mut burst = frames(1, 1);
        assert_eq!(tx.send_reserved(&mut burst, 1), Err(Refused::Closed));
        assert_eq!(burst.len(), 1, "the frames come back");
    }

    /// A task sending one frame to a full queue, waiting up to 10 s for room.
    fn waiting_sender(tx: QueueTx) -> tokio::task::JoinHandle<Result<(), Refused>> {
        tokio::spawn(async move {
            let f = frames(1, 1).pop().unwrap();
            tx.send_timeout(f, Duration::from_secs(10))
                .await
                .map_err(|e| e.0)
        })
    }

    /// The waiting sender's frame was queued within 5 s (`why` says what should have woken it).
    async fn sent_soon(sender: tokio::task::JoinHandle<Result<(), Refused>>, why: &str) {
        let sent = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect(why)
            .unwrap();
        assert_eq!(sent, Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_when_the_writer_takes() {
        let (tx, mut rx) = queue(1);
        tx.try_send(frames(1, 1).pop().unwrap()).unwrap();
        let sender = waiting_sender(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(take_all(&mut rx).0, Took::Some);
        sent_soon(sender, "woken by the take, not by its 10 s limit").await;
        assert_eq!(rx.len(), 1);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_given_back_unused() {
        let (tx, _rx) = queue(2);
        assert_eq!(tx.reserve(2), 2);
        let sender = waiting_sender(tx.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut one = frames(1, 1);
        tx.send_reserved(&mut one, 2).unwrap();
        sent_soon(
            sender,
            "woken when the unused place was given back, not by its 10 s limit",
        )
        .await;
        assert_eq!(tx.len(), 2);
    }

    #[tokio::test]
    async fn send_timeout_gives_the_frame_back_when_no_room_comes() {
        let (tx, _rx) = queue(1);
        tx.try_send(frames(1, 1).pop().unwrap()).unwrap();
        let f = frames(1, 1).pop().unwrap();
        let got = tx.send_timeout(f, Duration::from_millis(20)).await;
        assert!(matches!(got, Err((Refused::Full, _))));
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_burst_and_for_the_close() {
        let (tx, rx) = queue(8);
        let waiter = tokio::spawn(async move {
            rx.wait().await;
            rx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = tx.reserve(2);
        let mut burst = frames(2, 1);
        tx.send_reserved(&mut burst, n).unwrap();
        let mut rx = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the burst")
            .unwrap();
        assert_eq!(take_all(&mut rx).1.len(), 2);
        let waiter = tokio::spawn(async move {
            rx.wait().await;
            rx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let mut rx = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the last sender leaving")
            .unwrap();
        assert_eq!(take_all(&mut rx).0, Took::Finished);
    }
}
