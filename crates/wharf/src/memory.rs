//! Allocator settings for the long-running server.
//!
//! A streaming request allocates read buffers of up to 256 KiB, a few of
//! them in flight at a time (received, queued to the hashing and writing
//! threads, freed). Two glibc defaults make that costly or leaky:
//!
//! - The mmap threshold adapts: every time a large block is freed it rises,
//!   up to 32 MiB, after which such buffers come from the heap and the heap
//!   keeps growing in RSS under a 4 GiB push. Setting it explicitly turns
//!   the adaptation off.
//! - Below the threshold, a freed block at the top of the heap is given back
//!   to the kernel once the free top exceeds the trim threshold (128 KiB),
//!   so the next buffer faults in and zeroes fresh pages: about a quarter
//!   of the server's kernel time during a push, measured with `perf`.
//!
//! So buffers up to 1 MiB come from the heap and are reused while they are
//! warm, and up to 2 MiB of free heap top is kept instead of being returned
//! at once. Memory stays bounded by the buffers in flight (a few MiB),
//! however many bytes flow through; see docs/benchmarks.md. What startup
//! used and freed (configuration, indexes) is given back once it is done.

/// Large allocations get their own mapping from this size on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;
/// Free memory at the top of a heap kept for reuse before it is returned
/// (a few receive buffers: more kept RSS up after a push for no gain).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 2 * 1024 * 1024;

/// Apply the settings; call before any thread is started.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc tunables; it takes no pointers and
    // is called from `main` before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Give back the free memory startup left in the heaps; call once the
/// server is ready to accept requests.
pub(crate) fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // takes no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
