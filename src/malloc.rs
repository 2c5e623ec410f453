//! glibc malloc settings for a process that takes Kafka fetch buffers of up to a megabyte
//! many times a second.
//!
//! By default glibc hands big freed blocks back to the kernel (arena trimming, mmap above a
//! moving threshold), so every fetch faulted fresh pages in again: `madvise`, page faults and
//! zeroing were about 10 % of the forwarder's CPU under load (the load harness, A/B with the
//! `MALLOC_*_` variables: 4.3–4.9 µs per event before, 3.7–4.5 after). Freed memory now stays
//! in the arenas up to these bounds; what is kept is bounded by the peak in use, which the
//! memory run of the harness measures.

/// Blocks at least this large still come from `mmap` (and go back at once when freed).
const MMAP_THRESHOLD: i32 = 8 << 20;
/// Free memory at the top of an arena beyond this is given back to the kernel.
const TRIM_THRESHOLD: i32 = 64 << 20;

/// Applies the settings; call once at start, before threads allocate.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Other C libraries keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
