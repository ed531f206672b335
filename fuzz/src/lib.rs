//! What every fuzz target shares: the bounds that turn an over-allocation
//! into a crash libFuzzer reports.
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's allocator hooks,
//! which stable Rust has not: without them it never fires. So Rust's
//! allocations pass through [`Bounded`], which aborts (a crash, with the
//! input saved) on any single one larger than [`ALLOCATION_LIMIT`];
//! libFuzzer's `-rss_limit_mb` still bounds the whole process, C
//! decoders' buffers included. Files written are bounded by
//! `RLIMIT_FSIZE` ([`init`]): a decompression bomb meets an error (EFBIG)
//! as it would meet a full disk, instead of filling this machine's.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation allowed. ops keeps every buffer it sizes
/// from an input below a few MiB (documents 4 MiB, headers 1 MiB); zstd's
/// 128 MiB window is the decoders' largest and is made by C, not here.
pub const ALLOCATION_LIMIT: usize = 256 << 20;

/// The largest file a target may write (`RLIMIT_FSIZE`).
pub const FILE_LIMIT: u64 = 64 << 20;

/// The system allocator, refusing any allocation above the limit.
#[derive(Debug)]
pub struct Bounded;

// SAFETY: every call is passed to the system allocator unchanged; only
// the size is looked at first.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn check(size: usize) {
    if size > ALLOCATION_LIMIT {
        // No allocation here: say it with a fixed message and abort, which
        // libFuzzer reports as a crash and saves the input of.
        let msg = b"==ops-fuzz== over-allocation: one allocation of more than 256 MiB\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
    }
}

/// Once per process, before the first input: bound the files written, and
/// make a write past the bound an error instead of SIGXFSZ.
pub fn init() {
    let limit = libc::rlimit {
        rlim_cur: FILE_LIMIT,
        rlim_max: FILE_LIMIT,
    };
    // SAFETY: plain system calls with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0, "setrlimit");
    }
}
