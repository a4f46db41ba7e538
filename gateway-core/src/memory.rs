//! Process-wide memory settings the gateway needs.
//!
//! argon2id allocates a 19 MiB block for every password hash (claims, first logins). glibc raises
//! its mmap threshold after the first such block is freed, so later blocks come from per-thread
//! arenas and stay in the process after they are freed: 0.5 GB of RSS after 100 claims was
//! measured (docs/benchmarks.md). A fixed threshold keeps large blocks in mmap, so freeing them
//! gives the memory back to the system.

/// Makes freed large allocations return to the system. Idempotent.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Where the process's heap goes, for `/api/health` and `/metrics`: enough to tell SQLite's
/// bounded page caches apart from everything else when memory grows (docs/benchmarks.md, soak).
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    /// Bytes the allocator has handed out and not yet been given back (glibc only).
    pub heap_in_use_bytes: Option<u64>,
    /// Bytes the allocator holds but has not handed out: freed memory kept for reuse (glibc only).
    pub heap_free_bytes: Option<u64>,
    /// Bytes SQLite has allocated (page caches, schema, statements), every connection together.
    pub sqlite_bytes: u64,
    /// The most SQLite has held at once since the start.
    pub sqlite_highwater_bytes: u64,
}

pub fn report() -> MemoryReport {
    let (heap_in_use_bytes, heap_free_bytes) = allocator_bytes();
    // SAFETY: both functions only read SQLite's global memory counters (memstatus is on in the
    // bundled build); resetting is off.
    let (sqlite, highwater) =
        unsafe { (rusqlite::ffi::sqlite3_memory_used(), rusqlite::ffi::sqlite3_memory_highwater(0)) };
    MemoryReport {
        heap_in_use_bytes,
        heap_free_bytes,
        sqlite_bytes: sqlite.max(0) as u64,
        sqlite_highwater_bytes: highwater.max(0) as u64,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn allocator_bytes() -> (Option<u64>, Option<u64>) {
    // SAFETY: mallinfo2 takes the arenas' locks and only reads their statistics.
    let info = unsafe { libc::mallinfo2() };
    // uordblks: in use from the arenas; hblkhd: in use as separate mmap blocks; fordblks: free in the arenas.
    (Some((info.uordblks + info.hblkhd) as u64), Some(info.fordblks as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn allocator_bytes() -> (Option<u64>, Option<u64>) {
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_memory_is_counted() {
        // An in-memory database keeps every page in its cache: at least the 200 kB written.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(200000));").unwrap();
        let during = report();
        assert!(during.sqlite_bytes >= 200_000, "{during:?}");
        assert!(during.sqlite_highwater_bytes >= during.sqlite_bytes);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(during.heap_in_use_bytes.unwrap() >= during.sqlite_bytes);
    }
}
