//! Memory: the allocator of the whole process, and giving memory back after a burst.
//!
//! The binary's global allocator is mimalloc built with `override`, so that librdkafka's
//! `malloc`/`free` go to it too. librdkafka allocates a message in its fetch thread and the
//! pipeline thread frees it; in glibc every such free takes the allocating arena's lock, which
//! the fetch thread holds to allocate the next ones (futex wake-ups were about 8 % of the
//! pipeline thread, and the fetch thread's `calloc` three times the baseline's). mimalloc hands
//! a block freed by another thread back with one atomic push, no lock. Built without
//! transparent huge pages (`no_thp`): with them, the kernel zeroed a fresh 2 MiB page for the
//! fetch buffers again and again (half of the fetch thread) and RSS doubled. Measured in the
//! README ("changes").
//!
//! A queue or heap that grew during a burst (a backlog of prefetched Kafka batches, full
//! destination queues) would stay resident: [`release_drained`] shrinks drained queues, and
//! [`collect_when_idle`] has the allocator give free memory back once the process has gone
//! quiet, where refaulting it costs nothing.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Entries a drained queue keeps allocated (see [`release_drained`]).
const KEEP_ENTRIES: usize = 1024;

/// Gives back the memory of a queue that grew during a backlog once it has drained: a
/// `VecDeque` otherwise keeps its largest capacity for good (after a minute of backpressure
/// the sink's unacknowledged frames, the partitions' pending offsets and the held messages
/// kept about 13 MiB). Cheap to call after every removal: it acts only on an empty queue
/// holding more than 1,024 entries.
#[inline]
pub fn release_drained<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > KEEP_ENTRIES {
        q.shrink_to(KEEP_ENTRIES);
    }
}

/// How often the idle collector looks at the process's CPU time.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Below this share of one core over [`IDLE_CHECK`] the process counts as idle.
const IDLE_CPU_SHARE: f64 = 0.05;

/// Starts a thread that, each time the process goes idle (under 5 % of a core for 5 s) after
/// having been busy, asks every thread to give back its free memory (each collects its own
/// heap). Under load it never asks, so memory that the fetch buffers reuse stays mapped.
#[cfg(target_os = "linux")]
pub fn collect_when_idle() {
    let spawned = std::thread::Builder::new()
        .name("mem-collect".into())
        .spawn(|| {
            let mut last = cpu_seconds();
            let mut collected = true;
            loop {
                std::thread::sleep(IDLE_CHECK);
                let now = cpu_seconds();
                let idle = now - last < IDLE_CHECK.as_secs_f64() * IDLE_CPU_SHARE;
                last = now;
                if !idle {
                    collected = false;
                } else if !collected {
                    ask_collect();
                    tracing::debug!("Idle: free heap memory given back to the kernel.");
                    collected = true;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "The idle memory collector could not start.");
    }
}

/// Asks every thread to collect its heap (the next time it parks or, for the pipeline, at
/// once), and collects the calling thread's heap and the shared arenas now.
#[cfg(target_os = "linux")]
pub(crate) fn ask_collect() {
    COLLECT_EPOCH.fetch_add(1, Ordering::Relaxed);
    COLLECT_ASKED.notify_waiters();
    collect_if_asked();
}

/// Bumped by the idle collector: threads that see a new value collect their own heap.
static COLLECT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Wakes the threads that wait in [`collect_asked`].
static COLLECT_ASKED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Resolves when the idle collector asks threads to collect their heaps: for a thread that
/// sleeps in an async wait when idle (the pipeline), which then calls [`collect_if_asked`].
pub async fn collect_asked() {
    COLLECT_ASKED.notified().await;
}

thread_local! {
    static SEEN_EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// Collects the calling thread's heap if the idle collector asked since this thread last did.
/// A block freed by another thread (a frame the sink wrote, a message librdkafka delivered)
/// waits in the page of the thread that allocated it until that thread looks, so only that
/// thread can give the page back; call this where a thread goes quiet (a tokio worker
/// parking). Costs one atomic load otherwise.
/// Returns whether it collected.
#[inline]
pub fn collect_if_asked() -> bool {
    let epoch = COLLECT_EPOCH.load(Ordering::Relaxed);
    if epoch == SEEN_EPOCH.get() {
        return false;
    }
    SEEN_EPOCH.set(epoch);
    // SAFETY: mi_collect has no preconditions; it gives back only memory no block uses.
    unsafe { libmimalloc_sys::mi_collect(true) };
    true
}

/// Elsewhere the allocator keeps its own policy.
#[cfg(not(target_os = "linux"))]
pub fn collect_when_idle() {}

/// User + system CPU seconds of the whole process (0 when unreadable).
#[cfg(unix)]
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_queue_gives_back_what_it_grew_to() {
        let mut q: VecDeque<u64> = (0..100_000).collect();
        release_drained(&mut q);
        assert!(
            q.capacity() >= 100_000,
            "a queue that still holds entries keeps them"
        );
        q.clear();
        release_drained(&mut q);
        assert!(
            q.capacity() <= 2 * KEEP_ENTRIES,
            "capacity {}",
            q.capacity()
        );
        let mut small: VecDeque<u64> = VecDeque::with_capacity(16);
        release_drained(&mut small);
        assert!(small.capacity() >= 16, "small queues are left alone");
    }

    /// Resident memory of this process, MiB (NaN when unreadable, which fails the test).
    #[cfg(target_os = "linux")]
    fn rss_mb() -> f64 {
        crate::bench::measure::rss_mb(std::process::id(), "VmRSS:")
    }

    /// The pipeline's pattern: this thread allocates, another frees. Until this thread
    /// collects, its heap keeps the pages; when asked, it gives them back.
    #[cfg(target_os = "linux")]
    #[test]
    fn blocks_freed_by_another_thread_come_back_when_the_allocating_thread_is_asked() {
        let blocks: Vec<Vec<u8>> = (0..128 * 1024).map(|i| vec![i as u8 | 1; 1000]).collect();
        std::thread::spawn(move || drop(blocks))
            .join()
            .expect("the freeing thread");
        let before = rss_mb();
        COLLECT_EPOCH.fetch_add(1, Ordering::Relaxed);
        collect_if_asked();
        let after = rss_mb();
        assert!(
            before - after > 64.0,
            "RSS {before:.0} MiB before the collect, {after:.0} MiB after"
        );
    }
}
