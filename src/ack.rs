//! Completion tracking: an event's Kafka offset may be stored only when every destination it
//! was routed to has finished with it (delivery.md §1). Each (event, destination) pair owes one
//! [`Ack`]; a [`PartitionTracker`] turns completions into a contiguous per-partition watermark.
//!
//! Dropping an `Ack` without completing it never advances the watermark: a lost task stalls
//! commits (and the events are redelivered after a restart) instead of losing data.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Where a partition's watermark goes when it moves (the Kafka consumer's offset store).
pub trait OffsetStore: Send + Sync {
    /// Every event of `topic`/`partition` at or below `offset` is finished.
    fn store(&self, topic: &str, partition: i32, offset: i64);
}

/// An [`OffsetStore`] that only remembers, for tests and the `render` path.
#[derive(Debug, Default)]
pub struct NoStore;

impl OffsetStore for NoStore {
    fn store(&self, _: &str, _: i32, _: i64) {}
}

#[derive(Debug, Default)]
struct Watermark {
    /// (offset, completions still owed), in dispatch order. A finished entry behind an
    /// unfinished one may stand for a run of finished events ending at its offset
    /// ([`Watermark::compact`]).
    pending: VecDeque<(i64, u32)>,
    /// `pending` is compacted when it grows to this length (0: [`COMPACT_MIN`]).
    compact_at: usize,
    /// Highest offset below which everything is finished.
    done: Option<i64>,
    /// Set when the partition is revoked; later completions are ignored.
    closed: bool,
}

/// Below this many entries `pending` is never compacted: in normal operation it stays shorter.
const COMPACT_MIN: usize = 4096;

impl Watermark {
    /// Collapses each run of finished entries into its last one. While a destination holds
    /// the oldest events of a partition (a slow SIEM whose queue stays full, while everything
    /// after them is parked and finished), every later event would otherwise keep its entry
    /// until the oldest is done: 16 bytes an event, about 200 MB after three minutes at 70k
    /// events/s. The watermark is unchanged, since popping a collapsed run moves it to the
    /// run's last offset. The next compaction waits until the length doubles, so the cost per
    /// event stays constant.
    fn compact(&mut self) {
        let q = &mut self.pending;
        let mut kept = 0;
        for i in 0..q.len() {
            let entry = q[i];
            if entry.1 == 0 && kept > 0 && q[kept - 1].1 == 0 {
                q[kept - 1].0 = entry.0;
            } else {
                q[kept] = entry;
                kept += 1;
            }
        }
        q.truncate(kept);
        self.compact_at = (2 * kept).max(COMPACT_MIN);
        if q.capacity() > 4 * self.compact_at {
            q.shrink_to(2 * self.compact_at);
        }
    }
}

/// The completion state of one assigned partition.
pub struct PartitionTracker {
    topic: Arc<str>,
    partition: i32,
    state: Mutex<Watermark>,
    store: Arc<dyn OffsetStore>,
}

impl std::fmt::Debug for PartitionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionTracker")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl PartitionTracker {
    /// A tracker for a newly assigned partition.
    pub fn new(topic: &str, partition: i32, store: Arc<dyn OffsetStore>) -> Arc<Self> {
        Arc::new(PartitionTracker {
            topic: topic.into(),
            partition,
            state: Mutex::new(Watermark::default()),
            store,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watermark> {
        // A poisoned lock only means another thread panicked mid-update; the data is plain.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the event at `offset` (offsets must increase) owing `parts` completions and
    /// returns its acks. With `parts == 0` the event is finished at once (filtered everywhere).
    pub fn dispatch(self: &Arc<Self>, offset: i64, parts: u32) -> Vec<Ack> {
        let mut acks = Vec::with_capacity(parts as usize);
        self.dispatch_into(offset, parts, &mut acks);
        acks
    }

    /// As [`dispatch`](Self::dispatch), appending to `out` (no allocation when it has room).
    pub fn dispatch_into(self: &Arc<Self>, offset: i64, parts: u32, out: &mut Vec<Ack>) {
        let mut st = self.lock();
        debug_assert!(st.pending.back().is_none_or(|&(o, _)| o < offset));
        st.pending.push_back((offset, parts));
        if parts == 0 {
            self.advance(&mut st);
        }
        if st.pending.len() >= st.compact_at.max(COMPACT_MIN) {
            st.compact();
        }
        drop(st);
        out.extend((0..parts).map(|_| Ack {
            tracker: Arc::clone(self),
            offset,
        }));
    }

    /// Counts one completion of `offset`. `near` is where the previous completion of the same
    /// run was found (0 for none): destinations finish a partition's events in order, so the
    /// one completed is nearly always at or just after it, and no search is needed.
    fn complete(&self, offset: i64, st: &mut Watermark, near: &mut usize) {
        if st.closed {
            return;
        }
        let at = |i: usize| st.pending.get(i).map(|&(o, _)| o);
        let i = if at(*near) == Some(offset) {
            Some(*near)
        } else if at(*near + 1) == Some(offset) {
            Some(*near + 1)
        } else {
            st.pending.binary_search_by_key(&offset, |&(o, _)| o).ok()
        };
        if let Some(i) = i {
            *near = i;
            if let Some(n) = st.pending.get_mut(i) {
                n.1 = n.1.saturating_sub(1);
            }
        }
    }

    fn advance(&self, st: &mut Watermark) {
        let mut moved = None;
        while let Some(&(o, 0)) = st.pending.front() {
            moved = Some(o);
            st.pending.pop_front();
        }
        crate::malloc::release_drained(&mut st.pending);
        if let Some(o) = moved {
            st.done = Some(o);
            if !st.closed {
                // Inside the lock so that concurrent completers store in increasing order.
                self.store.store(&self.topic, self.partition, o);
            }
        }
    }

    /// The highest offset below which every event is finished.
    pub fn done_upto(&self) -> Option<i64> {
        self.lock().done
    }

    /// Events dispatched and not yet popped from the watermark: every unfinished one, and
    /// finished ones behind the oldest unfinished (runs of them collapsed). 0 when all are done.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Stops storing offsets (the partition was revoked).
    pub fn close(&self) {
        self.lock().closed = true;
    }
}

/// One completion owed for one event. Complete it with [`Ack::done`] or [`complete_all`].
#[derive(Debug)]
#[must_use = "an Ack that is dropped never lets its offset be committed"]
pub struct Ack {
    tracker: Arc<PartitionTracker>,
    offset: i64,
}

impl Ack {
    /// This part of the event is finished (delivered, parked, dead-lettered or filtered).
    pub fn done(self) {
        let mut st = self.tracker.lock();
        self.tracker.complete(self.offset, &mut st, &mut 0);
        self.tracker.advance(&mut st);
    }

    /// The event's offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The partition's tracker.
    pub fn tracker(&self) -> &Arc<PartitionTracker> {
        &self.tracker
    }
}

/// Completes many acks, taking each partition's lock once per run of equal trackers.
pub fn complete_all(acks: impl IntoIterator<Item = Ack>) {
    let mut iter = acks.into_iter().peekable();
    while let Some(first) = iter.next() {
        let tracker = Arc::clone(&first.tracker);
        let mut st = tracker.lock();
        let mut near = 0;
        tracker.complete(first.offset, &mut st, &mut near);
        while let Some(next) = iter.next_if(|a| Arc::ptr_eq(&a.tracker, &tracker)) {
            tracker.complete(next.offset, &mut st, &mut near);
        }
        tracker.advance(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Default)]
    struct Last(AtomicI64);
    impl OffsetStore for Last {
        fn store(&self, _: &str, _: i32, o: i64) {
            let prev = self.0.swap(o, Ordering::SeqCst);
            assert!(o > prev, "stored offsets must increase");
        }
    }

    #[test]
    fn watermark_waits_for_every_part() {
        let store = Arc::new(Last(AtomicI64::new(-1)));
        let t = PartitionTracker::new("t", 0, store.clone());
        let a0 = t.dispatch(0, 2);
        let a1 = t.dispatch(1, 1);
        let _ = t.dispatch(2, 0);
        let mut a0 = a0.into_iter();
        a1.into_iter().for_each(Ack::done);
        assert_eq!(t.done_upto(), None);
        a0.next().unwrap().done();
        assert_eq!(t.done_upto(), None);
        a0.next().unwrap().done();
        assert_eq!(t.done_upto(), Some(2));
        assert_eq!(store.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn dropped_ack_never_commits() {
        let t = PartitionTracker::new("t", 0, Arc::new(NoStore));
        drop(t.dispatch(5, 1));
        let _ = t.dispatch(6, 0);
        assert_eq!(t.done_upto(), None);
        assert_eq!(t.in_flight(), 2);
    }

    /// A slow destination holds the oldest event while 100,000 later ones finish: the
    /// watermark keeps a few thousand entries, not one per event, and still lands on the last
    /// offset once the oldest is done.
    #[test]
    fn finished_events_behind_a_slow_one_are_collapsed() {
        let store = Arc::new(Last(AtomicI64::new(-1)));
        let t = PartitionTracker::new("t", 0, store.clone());
        let oldest = t.dispatch(0, 1);
        let mut parked = Vec::new();
        for offset in 1..=100_000 {
            parked.extend(t.dispatch(offset, 2));
            if parked.len() >= 200 {
                complete_all(parked.drain(..));
            }
        }
        complete_all(parked);
        assert!(
            t.in_flight() <= 2 * COMPACT_MIN,
            "{} entries kept for one unfinished event",
            t.in_flight()
        );
        assert_eq!(t.done_upto(), None, "the oldest is still owed");
        oldest.into_iter().for_each(Ack::done);
        assert_eq!(t.done_upto(), Some(100_000));
        assert_eq!(store.0.load(Ordering::SeqCst), 100_000);
        assert_eq!(t.in_flight(), 0);
    }

    proptest! {
        /// Compacting at any moment never moves the watermark past an unfinished offset, and
        /// it still reaches the last offset.
        #[test]
        fn compaction_keeps_the_watermark(
            order in Just((0..60usize).collect::<Vec<_>>()).prop_shuffle(),
            compact_every in 1usize..8,
        ) {
            let t = PartitionTracker::new("t", 0, Arc::new(Last(AtomicI64::new(-1))));
            let mut acks = Vec::new();
            for offset in 0..30 {
                acks.extend(t.dispatch(offset * 3, 2));
            }
            let mut slots: Vec<Option<Ack>> = acks.into_iter().map(Some).collect();
            let mut finished = std::collections::HashMap::<i64, u32>::new();
            for (n, i) in order.into_iter().enumerate() {
                let ack = slots[i].take().unwrap();
                *finished.entry(ack.offset()).or_default() += 1;
                ack.done();
                if n % compact_every == 0 {
                    t.lock().compact();
                }
                if let Some(mark) = t.done_upto() {
                    for o in (0..=mark).step_by(3) {
                        prop_assert_eq!(finished.get(&o), Some(&2));
                    }
                }
            }
            prop_assert_eq!(t.done_upto(), Some(87));
            prop_assert_eq!(t.in_flight(), 0);
        }

        #[test]
        fn watermark_never_passes_an_unfinished_offset(
            order in Just((0..60usize).collect::<Vec<_>>()).prop_shuffle(),
            gaps in proptest::collection::vec(1i64..4, 20),
        ) {
            let t = PartitionTracker::new("t", 0, Arc::new(Last(AtomicI64::new(-1))));
            // 20 events with gapped offsets, 3 parts each.
            let mut offset = 0;
            let mut acks = Vec::new();
            let mut offsets = Vec::new();
            for g in &gaps {
                offset += g;
                offsets.push(offset);
                acks.extend(t.dispatch(offset, 3));
            }
            let mut slots: Vec<Option<Ack>> = acks.into_iter().map(Some).collect();
            let mut finished = std::collections::HashMap::<i64, u32>::new();
            for i in order {
                let ack = slots[i].take().unwrap();
                *finished.entry(ack.offset()).or_default() += 1;
                ack.done();
                if let Some(mark) = t.done_upto() {
                    for o in offsets.iter().filter(|&&o| o <= mark) {
                        prop_assert_eq!(finished.get(o), Some(&3));
                    }
                }
            }
            prop_assert_eq!(t.done_upto(), offsets.last().copied());
        }

        /// The same through `complete_all` in batches, in order or not (its search hint).
        #[test]
        fn batches_complete_like_single_acks(
            shuffled in Just((0..60usize).collect::<Vec<_>>()).prop_shuffle(),
            in_order in any::<bool>(),
            chunk in 1usize..12,
        ) {
            let t = PartitionTracker::new("t", 0, Arc::new(Last(AtomicI64::new(-1))));
            let mut acks = Vec::new();
            for offset in 0..20 {
                acks.extend(t.dispatch(offset * 2, 3));
            }
            let order: Vec<usize> = if in_order { (0..60).collect() } else { shuffled };
            let mut slots: Vec<Option<Ack>> = acks.into_iter().map(Some).collect();
            let mut finished = std::collections::HashMap::<i64, u32>::new();
            for part in order.chunks(chunk) {
                let batch: Vec<Ack> = part.iter().map(|&i| slots[i].take().unwrap()).collect();
                for a in &batch {
                    *finished.entry(a.offset()).or_default() += 1;
                }
                complete_all(batch);
                if let Some(mark) = t.done_upto() {
                    for o in (0..=mark).step_by(2) {
                        prop_assert_eq!(finished.get(&o), Some(&3));
                    }
                }
            }
            prop_assert_eq!(t.done_upto(), Some(38));
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
