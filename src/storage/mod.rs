//! The storage seam: the only code in oncelog that touches the operating
//! system.
//!
//! Everything above this module sees files through [`Storage`] and
//! [`StorageFile`]. Two implementations exist:
//! - `FsStorage`: real files (crate-private: its memory maps are sound only
//!   while one handle per file lends bytes, which the engine guarantees). Writes use `pwrite`; reads are zero-copy
//!   slices of a read-only memory map (see `mmap.rs`, the only module allowed
//!   `unsafe`).
//! - [`SimStorage`]: an in-memory disk that keeps written bytes apart from
//!   synced bytes, so tests can crash it and reopen from what a real disk
//!   would have kept, and inject I/O errors.
//!
//! Invariants every implementation keeps:
//! - `write_at` either writes the whole buffer or returns an error (a failed
//!   write may have written a prefix; callers treat the log as poisoned).
//! - Bytes are durable only after `sync_data`/`sync_all` of the file returned
//!   `Ok`; a file's name is durable only after `sync_dir` of its directory.
//! - `read_bytes` never returns bytes past the file's length, and a returned
//!   [`Bytes`] stays valid after the file is removed or the store closed.

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

mod fs;
mod mmap;
pub mod sim;

pub(crate) use fs::FsStorage;
pub use mmap::LazyLargeAlloc;
pub use sim::SimStorage;

/// How [`Storage::open`] treats a missing or existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file; fail with `NotFound` if it is missing.
    Existing,
    /// Create the file if missing, keep its contents otherwise.
    Create,
    /// Create the file, truncating any existing contents.
    Truncate,
}

/// A directory tree of files. Implementations are `Send + Sync` and cheap to
/// share behind an `Arc`.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Create a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Open a file for reading and writing.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Remove a file (its open handles and mapped bytes stay usable).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically rename a file, replacing any file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Take an exclusive lock on `dir`, held until the returned guard drops.
    /// Fails at once with `WouldBlock` when the lock is held elsewhere.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
}

/// One open file.
#[expect(
    clippy::len_without_is_empty,
    reason = "files are not collections; len is fallible"
)]
pub trait StorageFile: Send + Sync + Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Write all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fill `buf` from `offset`; `UnexpectedEof` if the file is too short.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The bytes `[offset, offset + len)`, zero-copy where the implementation
    /// can. Fails if the range is not inside the file.
    fn read_bytes(&self, offset: u64, len: usize) -> io::Result<Bytes>;
    /// Truncate or extend the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserve disk space for `[offset, offset + len)` without changing the
    /// file's length. A full disk surfaces here as an error. Implementations
    /// may do nothing.
    fn preallocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make the file's data (and the metadata needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Make the file's data and all its metadata durable.
    fn sync_all(&self) -> io::Result<()>;
}

/// Read a whole small file.
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}
