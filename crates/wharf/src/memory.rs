//! Allocator settings for the long-running server.
//!
//! glibc's malloc raises its mmap threshold every time a large block is
//! freed, up to 32 MiB, after which the ~100–400 KiB buffers a streaming
//! request allocates come from the heap and stay resident after the stream
//! ends: RSS creeps up by megabytes under a 4 GiB push. A fixed threshold
//! keeps such buffers in their own mappings, returned to the kernel when
//! freed, so memory stays flat however many bytes flow through.

/// Large allocations get their own mapping from this size on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Apply the settings; call before any thread is started.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc tunables; it takes no pointers and
    // is called from `main` before any other thread exists. Setting
    // M_MMAP_THRESHOLD explicitly also turns off glibc's dynamic adjustment.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
