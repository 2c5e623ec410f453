//! glibc malloc settings for a process that takes Kafka fetch buffers of up to a megabyte
//! many times a second.
//!
//! By default glibc hands big freed blocks back to the kernel (arena trimming, mmap above a
//! moving threshold), so every fetch faulted fresh pages in again: `madvise`, page faults and
//! zeroing were about 10 % of the forwarder's CPU under load (the load harness, A/B with the
//! `MALLOC_*_` variables: 4.3–4.9 µs per event before, 3.7–4.5 after). Freed memory now stays
//! in the arenas up to these bounds; what is kept is bounded by the peak in use, which the
//! memory run of the harness measures.
//!
//! The price is that memory freed after a burst (a backlog of prefetched Kafka batches, full
//! destination queues) stays resident. [`trim_when_idle`] gives it back once the process has
//! gone quiet, where refaulting it costs nothing.

use std::collections::VecDeque;
use std::time::Duration;

/// Blocks at least this large still come from `mmap` (and go back at once when freed).
const MMAP_THRESHOLD: i32 = 8 << 20;
/// Free memory at the top of an arena beyond this is given back to the kernel.
const TRIM_THRESHOLD: i32 = 64 << 20;
/// Arenas (see [`tune`]).
const ARENA_MAX: i32 = 1;

/// Applies the settings; call once at start, before threads allocate.
///
/// One arena for all threads: `malloc_trim` gives back the free pages inside every arena but
/// the top chunk of the main one only, so with an arena per thread the freed tops of the
/// Kafka and pipeline threads stayed resident after a backlog (malloc_info: 60–90 MiB free
/// and resident). Most allocations here cross threads anyway (librdkafka allocates a message
/// in its broker thread, the pipeline frees it), which locks the allocating thread's arena
/// whatever the arena count; small ones come from each thread's cache without a lock.
///
/// A setting given in glibc's own environment variable (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) is left as the operator set it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    for (param, value, env) in [
        (
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
        ),
        (
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
        ),
        (libc::M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only changes allocator parameters; called before other threads
            // exist.
            unsafe { libc::mallopt(param, value) };
        }
    }
}

/// Other C libraries keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

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

/// How often the idle trimmer looks at the process's CPU time.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Below this share of one core over [`IDLE_CHECK`] the process counts as idle.
const IDLE_CPU_SHARE: f64 = 0.05;

/// Starts a thread that calls `malloc_trim(0)` once each time the process goes idle (under
/// 5 % of a core for 5 s) after having been busy. Under load it never trims, so the settings of
/// [`tune`] keep their effect.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_when_idle() {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            let mut last = cpu_seconds();
            let mut trimmed = true;
            loop {
                std::thread::sleep(IDLE_CHECK);
                let now = cpu_seconds();
                let idle = now - last < IDLE_CHECK.as_secs_f64() * IDLE_CPU_SHARE;
                last = now;
                if !idle {
                    trimmed = false;
                } else if !trimmed {
                    // SAFETY: malloc_trim has no preconditions; it takes the arena locks.
                    let released = unsafe { libc::malloc_trim(0) };
                    tracing::debug!(released, "Idle: free heap memory given back to the kernel.");
                    trimmed = true;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "The idle memory trimmer could not start.");
    }
}

/// Other C libraries keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_when_idle() {}

/// User + system CPU seconds of the whole process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cpu_seconds() -> f64 {
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
}
