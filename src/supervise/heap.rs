//! The daemon's own heap: freed memory handed back to the system. glibc
//! keeps what the daemon frees resident for reuse, and a burst over a
//! thousand processes (or a few large answers at once) leaves megabytes of
//! it; the history tick and the executor's end of a burst call `trim`.

/// Free heap above which `trim` hands it back to the system.
pub const TRIM_ABOVE: usize = 2 << 20;

/// Hands freed heap memory back to the system when more than `TRIM_ABOVE`
/// of it is free (measured at 1,000 processes: ten parallel `list`s left
/// 2.7 MiB more resident, given back at the next history tick). `mallinfo2`
/// sums the free chunks of every arena (the daemon keeps to one) and the
/// top of the heap; pages already given back still count as free, so a
/// fragmented heap is trimmed again at each call, each time re-advising
/// pages no longer resident: 0.2–0.9 ms a call at 1,000 processes.
pub fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: mallinfo2 reads the allocator's counters, malloc_trim returns
    // free pages to the system; neither touches memory in use.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free > TRIM_ABOVE {
        // SAFETY: as above.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            "heap trimmed: {} KiB free in malloc, in {} µs",
            free >> 10,
            started.elapsed().as_micros()
        );
    }
}
