//! A file whose bytes are read through a shared, read-only memory map and
//! written with `pwrite`. The only module of oncelog allowed `unsafe`.
//!
//! # Why this is sound
//! A memory map of a file is only as good as the file under it: touching a
//! mapped page past the file's end raises SIGBUS, and a file changed by
//! someone else changes bytes that Rust believes immutable. [`MappedFile`]
//! keeps both away with these invariants:
//!
//! 1. Every change of the file's length made by oncelog goes through this
//!    type, which tracks the length in `len`.
//! 2. A byte range is lent out (as a [`Bytes`]) only if it lies below `len`,
//!    and `lent` records the highest end ever lent. `set_len` refuses to
//!    shrink the file below `lent`, so lent bytes never fall past the end.
//! 3. oncelog only appends: a byte range below the committed length of a
//!    segment is never written again while it can be lent, so lent slices are
//!    never mutated. (Recovery truncates a torn tail before anything is lent.)
//! 4. The map is read-only (`PROT_READ`); writes go through `pwrite`, so a full
//!    disk is an `ENOSPC` error from the write, never a SIGBUS from a store
//!    into a hole. Linux's unified page cache makes `pwrite`n bytes visible
//!    through the map.
//! 5. A mapping lives as long as any [`Bytes`] made from it (each holds an
//!    `Arc`), and stays valid after the file is closed or unlinked: the kernel
//!    keeps the inode while it is mapped.
//! 6. No reference is ever made to mapped memory past the lent range, so the
//!    pages between the file's end and the end of the mapping (mappings are
//!    made larger than the file so that a growing segment is remapped rarely)
//!    are never touched.
//!
//! The bookkeeping is per handle, so oncelog keeps at most one `MappedFile`
//! with lent bytes per file: a log opens each segment once, and recovery drops
//! the handle (and every byte range) it scanned with before it opens a fresh
//! handle to cut a torn tail.
//!
//! What this cannot prevent, and `docs/design.md` states as an assumption:
//! another process truncating or rewriting a segment file behind oncelog's
//! back. The store's exclusive directory lock keeps cooperating processes out.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

/// Smallest mapping made, so that small segments are not remapped per append.
const MIN_MAP_BYTES: u64 = 1 << 20;

/// A read-only mapping of (a prefix of, or more than) a file.
#[derive(Debug)]
struct RawMap {
    raw: MmapRaw,
}

/// A lent byte range `[start, start + len)` of a mapping.
struct Window {
    map: Arc<RawMap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `MappedFile::read_bytes` built this window only after checking
        // `start + len <= len_of_file` and after raising `lent` to at least
        // `start + len`, so by invariants 1-2 these bytes stay inside the file
        // for as long as the mapping exists, and by invariant 3 they are never
        // written again. `start + len <= map.raw.len()` was checked there too,
        // so the pointer arithmetic stays inside the mapping, which this window
        // keeps alive through its `Arc` (invariant 5). The memory is read-only
        // and never freed while `self` lives, so a shared slice tied to
        // `&self` is valid.
        unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr().add(self.start), self.len) }
    }
}

/// A file read through a memory map and written with `pwrite`.
#[derive(Debug)]
pub(crate) struct MappedFile {
    file: File,
    /// The file's length as oncelog made it (invariant 1).
    len: AtomicU64,
    /// The highest end of any range lent out (invariant 2).
    lent: AtomicU64,
    /// The current mapping; replaced by a larger one when reads pass its end.
    map: Mutex<Option<Arc<RawMap>>>,
    /// Serializes length changes.
    resize: Mutex<()>,
}

impl MappedFile {
    pub(crate) fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(MappedFile {
            file,
            len: AtomicU64::new(len),
            lent: AtomicU64::new(0),
            map: Mutex::new(None),
            resize: Mutex::new(()),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past u64::MAX"))?;
        // Under `resize`, so a concurrent shrink cannot interleave; a failed
        // write may have grown the file without `len` knowing, which only
        // makes `len` an underestimate (safe: we lend less).
        let _guard = self.resize.lock().unwrap_or_else(PoisonError::into_inner);
        // Invariant 3: lent bytes are never written again.
        let lent = self.lent.load(Ordering::SeqCst);
        if offset < lent && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "refusing to write at {offset}: bytes up to {lent} are lent out and immutable"
            )));
        }
        self.file.write_all_at(buf, offset)?;
        self.len.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub(crate) fn set_len(&self, new_len: u64) -> io::Result<()> {
        let _guard = self.resize.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.len.load(Ordering::SeqCst);
        if new_len < old {
            // Publish the smaller length first, then check that nothing at or
            // past it was lent. A reader racing with us either raised `lent`
            // before our check (we see it and refuse) or reads `len` after our
            // store (it sees the new length and refuses its own read).
            self.len.store(new_len, Ordering::SeqCst);
            let lent = self.lent.load(Ordering::SeqCst);
            if lent > new_len {
                self.len.store(old, Ordering::SeqCst);
                return Err(io::Error::other(format!(
                    "refusing to shrink a mapped file to {new_len} bytes: bytes up to {lent} are lent out"
                )));
            }
            // On failure the file kept its old length (or some length >=
            // new_len); keeping the smaller value is safe: an underestimate.
            self.file.set_len(new_len)?;
        } else {
            self.file.set_len(new_len)?;
            self.len.store(new_len, Ordering::SeqCst);
        }
        Ok(())
    }

    pub(crate) fn read_bytes(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past u64::MAX"))?;
        let past_end = |file_len: u64| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of [{offset}, {end}) past the end of a {file_len}-byte file"),
            )
        };
        // Check, raise `lent`, check again: a shrink racing with us either
        // sees our `lent` and refuses, or we see its smaller `len` and refuse.
        let file_len = self.len.load(Ordering::SeqCst);
        if end > file_len {
            return Err(past_end(file_len));
        }
        self.lent.fetch_max(end, Ordering::SeqCst);
        let file_len = self.len.load(Ordering::SeqCst);
        if end > file_len {
            return Err(past_end(file_len));
        }
        let map = self.map_covering(end, file_len)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        Ok(Bytes::from_owner(Window { map, start, len }))
    }

    /// The current mapping if it reaches `end`, else a new, larger one.
    fn map_covering(&self, end: u64, file_len: u64) -> io::Result<Arc<RawMap>> {
        let mut slot = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = slot.as_ref()
            && map.raw.len() as u64 >= end
        {
            return Ok(Arc::clone(map));
        }
        let want = end
            .max(file_len)
            .checked_next_power_of_two()
            .unwrap_or(end)
            .max(MIN_MAP_BYTES);
        let want = usize::try_from(want).map_err(io::Error::other)?;
        // A raw map hands out only a pointer; creating it is safe. The map may
        // extend past the file's end; no reference past the lent range is ever
        // made from it (invariant 6), which `Window::as_ref` relies on.
        let raw = MmapOptions::new().len(want).map_raw_read_only(&self.file)?;
        let map = Arc::new(RawMap { raw });
        *slot = Some(Arc::clone(&map));
        Ok(map)
    }

    pub(crate) fn preallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: `fallocate` takes a file descriptor we own (kept open by
        // `self.file` for the duration of the call) and plain integers; it
        // touches no memory of ours. KEEP_SIZE leaves the file length, and so
        // every invariant above, unchanged.
        let rc =
            unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Filesystems without fallocate (tmpfs on old kernels, some FUSE):
            // preallocation is an optimization, so go on without it.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
            _ => Err(err),
        }
    }

    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub(crate) fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file() -> (tempfile::TempDir, MappedFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        (dir, MappedFile::new(file).unwrap())
    }

    #[test]
    fn written_bytes_are_visible_through_the_map() {
        let (_dir, f) = temp_file();
        f.write_at(b"hello", 0).unwrap();
        let a = f.read_bytes(0, 5).unwrap();
        assert_eq!(&a[..], b"hello");
        // Growing past the first mapping forces a remap; old slices survive.
        let big = vec![7u8; (MIN_MAP_BYTES as usize) * 2];
        f.write_at(&big, 5).unwrap();
        let b = f.read_bytes(5 + big.len() as u64 - 3, 3).unwrap();
        assert_eq!(&b[..], &[7, 7, 7]);
        assert_eq!(&a[..], b"hello");
    }

    #[test]
    fn reads_past_the_end_are_refused() {
        let (_dir, f) = temp_file();
        f.write_at(b"abc", 0).unwrap();
        assert!(f.read_bytes(0, 4).is_err());
        assert!(f.read_bytes(3, 1).is_err());
        assert!(f.read_bytes(u64::MAX, 1).is_err());
        assert_eq!(f.read_bytes(3, 0).unwrap().len(), 0);
    }

    #[test]
    fn shrinking_below_lent_bytes_is_refused() {
        let (_dir, f) = temp_file();
        f.write_at(&[1u8; 100], 0).unwrap();
        f.set_len(90).unwrap(); // nothing lent yet
        let lent = f.read_bytes(10, 50).unwrap();
        assert!(f.set_len(59).is_err());
        assert_eq!(f.len(), 90);
        f.set_len(60).unwrap();
        assert_eq!(&lent[..], &[1u8; 50][..]);
        assert!(f.write_at(b"x", 59).is_err(), "lent bytes are immutable");
        f.write_at(b"x", 60).unwrap();
    }

    #[test]
    fn slices_survive_unlink() {
        let (dir, f) = temp_file();
        f.write_at(b"durable bytes", 0).unwrap();
        let s = f.read_bytes(0, 13).unwrap();
        std::fs::remove_file(dir.path().join("f")).unwrap();
        drop(f);
        assert_eq!(&s[..], b"durable bytes");
    }
}

/// Allocations at least this large are lazily committed mappings.
const LAZY_ALLOC_MIN: usize = 1 << 30;

/// A global allocator for the `oncelog` server binary: the system
/// allocator, except that an allocation of 1 GiB or more is an anonymous
/// mapping with `MAP_NORESERVE`, whose pages cost memory only once touched.
///
/// Why: the Kafka codec reserves room for as many elements as a request
/// claims before it reads one (`Vec::with_capacity` of a count from the
/// wire), so a 12-byte frame can ask for hundreds of GiB; the system
/// allocator refuses, and a refused allocation aborts the process. With
/// this allocator the reservation is address space, the decoder fails at
/// the first missing byte, and the mapping is unmapped: the connection
/// closes and the server goes on. (Under `vm.overcommit_memory=2` the
/// kernel refuses such mappings too.)
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyLargeAlloc;

impl LazyLargeAlloc {
    fn lazy(layout: std::alloc::Layout) -> bool {
        layout.size() >= LAZY_ALLOC_MIN && layout.align() <= 4096
    }
}

// SAFETY: small allocations go to `System` unchanged. Large ones are fresh
// private anonymous mappings: page aligned (so any alignment up to 4096 is
// met), zero-filled, of at least `layout.size()` bytes, owned by the caller
// until `dealloc` unmaps exactly that range with the same layout, which
// `GlobalAlloc`'s contract guarantees. `realloc` keeps the default
// (allocate, copy, free), so a block never moves between the two kinds.
unsafe impl std::alloc::GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if !Self::lazy(layout) {
            // SAFETY: the caller's contract is `System`'s.
            return unsafe { std::alloc::System.alloc(layout) };
        }
        // SAFETY: a new anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Self::lazy(layout) {
            // SAFETY: as `alloc`; anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller's contract is `System`'s.
            unsafe { std::alloc::System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if Self::lazy(layout) {
            // SAFETY: `ptr` came from `alloc` with this layout: a mapping of
            // `layout.size()` bytes that the caller no longer uses.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: the caller's contract is `System`'s.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }
}

#[cfg(test)]
mod lazy_alloc_tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn a_huge_allocation_is_address_space_until_touched() {
        let a = LazyLargeAlloc;
        // 256 GiB: far more than the machine's memory.
        let layout = Layout::from_size_align(256 << 30, 8).unwrap();
        // SAFETY: a valid non-zero layout; freed below with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write(7);
            p.add(1 << 30).write(9);
            assert_eq!((p.read(), p.add(1 << 30).read()), (7, 9));
            a.dealloc(p, layout);
        }
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc_zeroed(small);
            assert!(!p.is_null() && p.read() == 0);
            a.dealloc(p, small);
        }
    }
}
