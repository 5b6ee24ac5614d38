//! Peer log engines behind one trait, for side-by-side runs of the same
//! workload (../shared/reference/peers.md §4 has the survey).
//!
//! Written against commitlog 0.2.0, raft-engine 0.4.2 (with protobuf 2.28),
//! okaywal 0.3.1 and walrus-rust 0.2.0, from a reading of their sources;
//! the comment above each adapter says what the engine really does.
//!
//! Every adapter opens its engine in a fresh directory given by the caller.
//! "sync" means: when `append_batch` returns, the batch is on stable storage
//! (fdatasync/fsync issued and waited for) and will be found after a crash.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Opens one engine's log in a fresh directory.
pub type Open = fn(&Path) -> io::Result<Box<dyn PeerLog>>;

/// Every engine measured side by side, oncelog first.
pub const ENGINES: [(&str, Open); 5] = [
    ("oncelog", |d| Ok(Box::new(OncelogPeer::open(d)?))),
    ("commitlog", |d| Ok(Box::new(CommitlogPeer::open(d, true)?))),
    ("raft-engine", |d| Ok(Box::new(RaftEnginePeer::open(d)?))),
    ("okaywal", |d| Ok(Box::new(OkaywalPeer::open(d, 32 << 20)?))),
    ("walrus", |_| Ok(Box::new(WalrusPeer::open_shared()?))),
];

pub trait PeerLog {
    fn name(&self) -> &'static str;
    /// Append one batch of records, durable (fsync'd before return) if `sync`.
    fn append_batch(&mut self, records: &[&[u8]], sync: bool) -> io::Result<()>;
    /// Read everything back sequentially from the start; (records, payload bytes).
    /// Every payload is touched (length summed, first byte folded into a checksum).
    fn read_all(&mut self) -> io::Result<(u64, u64)>;
    /// Point read of record `n` (0-based, append order); its length. None if unsupported.
    fn read_one(&mut self, n: u64) -> Option<io::Result<usize>>;
    fn supports_sync(&self) -> bool;
    fn supports_nosync(&self) -> bool;
}

fn io_err<E: Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

/// Touch a payload so the read cannot be optimised away.
#[inline]
fn touch(acc: &mut u64, p: &[u8]) {
    *acc = acc
        .wrapping_mul(31)
        .wrapping_add(p.first().copied().unwrap_or(0) as u64);
}

// ---------------------------------------------------------------------------
// oncelog (ours)
// ---------------------------------------------------------------------------

/// oncelog through its embedding API: batches made by `BatchBuilder` and
/// appended with `append_built_with` (an embedded caller's path; bytes from
/// the network would take `append`, which also checks CRC and records).
pub struct OncelogPeer {
    log: oncelog::Log, // dropped before the store
    _store: oncelog::Store,
    ts: i64,
}

impl OncelogPeer {
    pub fn open(dir: &Path) -> io::Result<Self> {
        let store = oncelog::Store::open(dir, oncelog::Config::default()).map_err(io_err)?;
        let log = store.log("t", 0).map_err(io_err)?;
        Ok(Self {
            _store: store,
            log,
            ts: 1_700_000_000_000,
        })
    }
}

impl PeerLog for OncelogPeer {
    fn name(&self) -> &'static str {
        "oncelog"
    }
    fn append_batch(&mut self, records: &[&[u8]], sync: bool) -> io::Result<()> {
        let bytes: usize = records.iter().map(|r| r.len() + 16).sum();
        let mut b = oncelog::format::BatchBuilder::with_capacity(bytes);
        for r in records {
            b.push(self.ts, None, Some(r), &[]);
        }
        self.ts += 1;
        let d = if sync {
            oncelog::Durability::Sync
        } else {
            oncelog::Durability::Os
        };
        self.log.append_built_with(&b.finish(), d).map_err(io_err)?;
        Ok(())
    }
    fn read_all(&mut self) -> io::Result<(u64, u64)> {
        let (mut n, mut bytes, mut acc) = (0u64, 0u64, 0u64);
        let mut off = self.log.log_start_offset();
        let end = self.log.next_offset();
        while off < end {
            let batches = self.log.read(off, 1 << 20).map_err(io_err)?;
            for b in &batches {
                let b = b.map_err(io_err)?;
                for r in b.view().records().map_err(io_err)? {
                    let v = r.map_err(io_err)?.value.unwrap_or(&[]);
                    touch(&mut acc, v);
                    n += 1;
                    bytes += v.len() as u64;
                }
            }
            off = batches
                .next_offset()
                .ok_or_else(|| io_err("read made no progress"))?;
        }
        black_box(acc);
        Ok((n, bytes))
    }
    fn read_one(&mut self, n: u64) -> Option<io::Result<usize>> {
        let f = || -> io::Result<usize> {
            let batches = self.log.read(n as i64, 1).map_err(io_err)?;
            for b in &batches {
                let b = b.map_err(io_err)?;
                let view = b.view();
                for r in view.records().map_err(io_err)? {
                    let r = r.map_err(io_err)?;
                    if view.record_offset(&r) == n as i64 {
                        let v = r.value.unwrap_or(&[]);
                        black_box(v.first());
                        return Ok(v.len());
                    }
                }
            }
            Err(io_err(format!("offset {n} not found")))
        };
        Some(f())
    }
    fn supports_sync(&self) -> bool {
        true
    }
    fn supports_nosync(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// commitlog 0.2.0
// ---------------------------------------------------------------------------
//
// The crate never fsyncs segment data (`CommitLog::flush` = `File::flush`, a
// no-op, plus an msync of whole index pages only). For `sync = true` the adapter
// fdatasyncs, through its own File handles, the `.log` of every segment written
// since the last sync and (if `sync_index`) its mmap'd `.index` too; fdatasync
// on another fd writes back the pages dirtied through the crate's mmap. Without
// the index sync a crash can leave the index behind the log, and commitlog does
// not repair that (`file_set.rs` TODO), so data would be on disk but unreachable.
// Segment rolls are mirrored exactly from `Segment::append`'s rule
// (roll when write_pos + batch_bytes > segment_max_bytes; new base = first offset).

const CL_SEGMENT_MAX: usize = 1_000_000_000; // LogOptions default
const CL_HEADER: usize = 20; // commitlog::message::HEADER_SIZE

pub struct CommitlogPeer {
    log: commitlog::CommitLog,
    dir: PathBuf,
    sync_index: bool,
    seg_base: u64,
    seg_pos: usize,
    dirty: Vec<u64>,                    // segment bases written since the last sync
    handles: Option<(u64, File, File)>, // (base, .log, .index) of the active segment
}

impl CommitlogPeer {
    pub fn open(dir: &Path, sync_index: bool) -> io::Result<Self> {
        let mut opts = commitlog::LogOptions::new(dir);
        opts.segment_max_bytes(CL_SEGMENT_MAX);
        let log = commitlog::CommitLog::new(opts)?;
        assert_eq!(
            log.next_offset(),
            0,
            "CommitlogPeer wants a fresh directory"
        );
        Ok(Self {
            log,
            dir: dir.to_path_buf(),
            sync_index,
            seg_base: 0,
            seg_pos: 2, // 2-byte magic
            dirty: Vec::new(),
            handles: None,
        })
    }

    fn files(&self, base: u64) -> io::Result<(File, File)> {
        let open = |ext: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join(format!("{base:020}.{ext}")))
        };
        Ok((open("log")?, open("index")?))
    }

    fn sync_dirty(&mut self) -> io::Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        for base in dirty {
            if self.handles.as_ref().map(|h| h.0) != Some(base) {
                let (l, i) = self.files(base)?;
                if base == self.seg_base {
                    self.handles = Some((base, l, i));
                } else {
                    // sealed segment: sync once and drop the handles
                    l.sync_data()?;
                    if self.sync_index {
                        i.sync_data()?;
                    }
                    continue;
                }
            }
            let (_, l, i) = self.handles.as_ref().unwrap();
            l.sync_data()?;
            if self.sync_index {
                i.sync_data()?;
            }
        }
        Ok(())
    }
}

impl PeerLog for CommitlogPeer {
    fn name(&self) -> &'static str {
        if self.sync_index {
            "commitlog"
        } else {
            "commitlog(log-only sync)"
        }
    }
    fn append_batch(&mut self, records: &[&[u8]], sync: bool) -> io::Result<()> {
        use commitlog::message::MessageBuf;
        let mut buf = MessageBuf::default();
        let mut bytes = 0usize;
        for r in records {
            buf.push(r).map_err(|e| io_err(format!("{e:?}")))?;
            bytes += CL_HEADER + r.len();
        }
        let first = self.log.next_offset();
        self.log.append(&mut buf).map_err(io_err)?;
        if self.seg_pos + bytes > CL_SEGMENT_MAX {
            self.seg_base = first;
            self.seg_pos = 2;
        }
        self.seg_pos += bytes;
        if self.dirty.last() != Some(&self.seg_base) {
            self.dirty.push(self.seg_base);
        }
        if sync {
            self.sync_dirty()?;
        }
        Ok(())
    }
    fn read_all(&mut self) -> io::Result<(u64, u64)> {
        use commitlog::message::MessageSet;
        let (mut n, mut bytes, mut acc) = (0u64, 0u64, 0u64);
        let end = self.log.next_offset();
        let mut off = 0;
        while off < end {
            let ms = self
                .log
                .read(off, commitlog::ReadLimit::max_bytes(1 << 20))
                .map_err(io_err)?;
            if ms.len() == 0 {
                return Err(io_err(format!("empty read at {off}")));
            }
            for m in ms.iter() {
                let p = m.payload();
                touch(&mut acc, p);
                n += 1;
                bytes += p.len() as u64;
            }
            off += ms.len() as u64;
        }
        black_box(acc);
        Ok((n, bytes))
    }
    fn read_one(&mut self, n: u64) -> Option<io::Result<usize>> {
        use commitlog::message::MessageSet;
        // ReadLimit is a byte budget that must cover the whole message (else an
        // empty read); try one page, then the crate's max message size (1 MB).
        // Each read is a pread + CRC check of every message in the range.
        let read = |lim| {
            self.log
                .read(n, commitlog::ReadLimit::max_bytes(lim))
                .map_err(io_err)
        };
        let r = read(4096).and_then(|ms| if ms.len() == 0 { read(1 << 20) } else { Ok(ms) });
        Some(r.and_then(|ms| {
            let m = ms.iter().next().ok_or_else(|| io_err("not found"))?;
            debug_assert_eq!(m.offset(), n);
            black_box(m.payload().first());
            Ok(m.payload().len())
        }))
    }
    fn supports_sync(&self) -> bool {
        true // only through the adapter's external fdatasync
    }
    fn supports_nosync(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// raft-engine 0.4.2
// ---------------------------------------------------------------------------
//
// One region = one log. Entries must be protobuf-2 Messages: BytesValue whose
// value is [index u64 LE][payload], so each record costs an owned Vec copy plus
// 8 B index + ~3 B protobuf framing. LZ4 off (batch_compression_threshold = 0).
// `write(batch, true)` -> leader appends the group, then `fdatasync` (nix) on the
// active file; a failed sync panics (`expect("pipe::sync()")`). Files are
// fallocate'd 128 MB. Spawns a "re-metrics" thread; the memtable index is in RAM.

#[derive(Clone)]
pub struct BytesEntry;
impl raft_engine::MessageExt for BytesEntry {
    type Entry = protobuf::well_known_types::BytesValue;
    fn index(e: &Self::Entry) -> u64 {
        u64::from_le_bytes(e.value[..8].try_into().unwrap())
    }
}

const REGION: u64 = 1;

pub struct RaftEnginePeer {
    engine: raft_engine::Engine,
    next: u64,
    batch: raft_engine::LogBatch,
    ents: Vec<protobuf::well_known_types::BytesValue>,
}

impl RaftEnginePeer {
    pub fn open(dir: &Path) -> io::Result<Self> {
        let cfg = raft_engine::Config {
            dir: dir.to_string_lossy().into_owned(),
            batch_compression_threshold: raft_engine::ReadableSize(0),
            ..Default::default()
        };
        let engine = raft_engine::Engine::open(cfg).map_err(io_err)?;
        Ok(Self {
            engine,
            next: 0,
            batch: raft_engine::LogBatch::default(),
            ents: Vec::new(),
        })
    }
}

impl PeerLog for RaftEnginePeer {
    fn name(&self) -> &'static str {
        "raft-engine"
    }
    fn append_batch(&mut self, records: &[&[u8]], sync: bool) -> io::Result<()> {
        self.ents.clear();
        for r in records {
            let mut v = Vec::with_capacity(8 + r.len());
            v.extend_from_slice(&self.next.to_le_bytes());
            v.extend_from_slice(r);
            let mut e = protobuf::well_known_types::BytesValue::new();
            e.value = v;
            self.ents.push(e);
            self.next += 1;
        }
        self.batch
            .add_entries::<BytesEntry>(REGION, &self.ents)
            .map_err(io_err)?;
        self.engine.write(&mut self.batch, sync).map_err(io_err)?;
        Ok(())
    }
    fn read_all(&mut self) -> io::Result<(u64, u64)> {
        let (mut n, mut bytes, mut acc) = (0u64, 0u64, 0u64);
        let first = self.engine.first_index(REGION).unwrap_or(0);
        let end = self.engine.last_index(REGION).map_or(0, |l| l + 1);
        let mut v = Vec::with_capacity(4096);
        let mut lo = first;
        while lo < end {
            let hi = (lo + 4096).min(end);
            v.clear();
            self.engine
                .fetch_entries_to::<BytesEntry>(REGION, lo, hi, None, &mut v)
                .map_err(io_err)?;
            for e in &v {
                let p = &e.value[8..];
                touch(&mut acc, p);
                n += 1;
                bytes += p.len() as u64;
            }
            lo = hi;
        }
        black_box(acc);
        Ok((n, bytes))
    }
    fn read_one(&mut self, n: u64) -> Option<io::Result<usize>> {
        Some(match self.engine.get_entry::<BytesEntry>(REGION, n) {
            Ok(Some(e)) => Ok(e.value.len() - 8),
            Ok(None) => Err(io_err("not found")),
            Err(e) => Err(io_err(e)),
        })
    }
    fn supports_sync(&self) -> bool {
        true
    }
    fn supports_nosync(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// okaywal 0.3.1
// ---------------------------------------------------------------------------
//
// Batch -> one entry with one chunk per record. `commit()` always waits for
// `sync_data` (batched across threads), so there is no no-sync mode.
// checkpoint_after_bytes(u64::MAX): no checkpoint/recycling mid-run (otherwise
// read_at positions vanish). The active segment then grows past its
// preallocation; we preallocate `prealloc` bytes (zero-filled by okaywal at
// open) and commit one empty warm-up entry so those zeros are on disk before
// timing starts. Random access is `read_at(LogPosition)` only (each call opens
// the file + BufReader), so `read_all` = one read_at per record; the only
// sequential reader is recovery on reopen (`read_all_by_reopen`).
// A checkpointer thread is spawned per WAL.

#[derive(Debug, Default)]
struct CountingManager {
    counts: Arc<(AtomicU64, AtomicU64, AtomicU64)>, // records, bytes, acc
}

impl okaywal::LogManager for CountingManager {
    fn recover(&mut self, entry: &mut okaywal::Entry<'_>) -> io::Result<()> {
        // Tolerant: an aborted entry or a CRC error ends this entry (peers.md §2.3).
        let (mut n, mut b, mut acc) = (0, 0, 0);
        loop {
            match entry.read_chunk()? {
                okaywal::ReadChunkResult::Chunk(mut c) => {
                    let data = c.read_all()?;
                    if !c.check_crc()? {
                        return Ok(());
                    }
                    touch(&mut acc, &data);
                    n += 1;
                    b += data.len() as u64;
                }
                okaywal::ReadChunkResult::EndOfEntry => break,
                okaywal::ReadChunkResult::AbortedEntry => return Ok(()),
            }
        }
        self.counts.0.fetch_add(n, Ordering::Relaxed);
        self.counts.1.fetch_add(b, Ordering::Relaxed);
        self.counts.2.fetch_add(acc, Ordering::Relaxed);
        Ok(())
    }
    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

pub struct OkaywalPeer {
    wal: Option<okaywal::WriteAheadLog>,
    dir: PathBuf,
    prealloc: u32,
    positions: Vec<okaywal::LogPosition>,
    buf: Vec<u8>,
}

impl OkaywalPeer {
    pub fn open(dir: &Path, prealloc: u32) -> io::Result<Self> {
        let wal = Self::open_wal(dir, prealloc, CountingManager::default())?;
        wal.begin_entry()?.commit()?; // warm-up: syncs the preallocated zeros
        Ok(Self {
            wal: Some(wal),
            dir: dir.to_path_buf(),
            prealloc,
            positions: Vec::new(),
            buf: Vec::new(),
        })
    }
    fn open_wal(
        dir: &Path,
        prealloc: u32,
        m: CountingManager,
    ) -> io::Result<okaywal::WriteAheadLog> {
        okaywal::Configuration::default_for(dir)
            .preallocate_bytes(prealloc)
            .checkpoint_after_bytes(u64::MAX)
            .open(m)
    }
    /// Sequential read through okaywal's only sequential reader: shut the WAL
    /// down and reopen it, replaying every entry into a counting LogManager.
    pub fn read_all_by_reopen(&mut self) -> io::Result<(u64, u64)> {
        self.wal.take().unwrap().shutdown()?;
        let m = CountingManager::default();
        let counts = m.counts.clone();
        self.wal = Some(Self::open_wal(&self.dir, self.prealloc, m)?);
        black_box(counts.2.load(Ordering::Relaxed));
        Ok((
            counts.0.load(Ordering::Relaxed),
            counts.1.load(Ordering::Relaxed),
        ))
    }
    fn read_pos(&mut self, i: usize) -> io::Result<usize> {
        let wal = self.wal.as_ref().unwrap();
        let mut r = wal.read_at(self.positions[i])?;
        self.buf.clear();
        r.read_to_end(&mut self.buf)?;
        if !r.crc_is_valid()? {
            return Err(io_err("crc check failed"));
        }
        Ok(self.buf.len())
    }
}

impl PeerLog for OkaywalPeer {
    fn name(&self) -> &'static str {
        if self.prealloc == 1 << 20 {
            "okaywal(prealloc 1MiB)"
        } else {
            "okaywal"
        }
    }
    fn append_batch(&mut self, records: &[&[u8]], _sync: bool) -> io::Result<()> {
        // Always durable: commit() fsyncs whatever `sync` says.
        let wal = self.wal.as_ref().unwrap();
        let mut w = wal.begin_entry()?;
        for r in records {
            self.positions.push(w.write_chunk(r)?.position);
        }
        w.commit()?;
        Ok(())
    }
    fn read_all(&mut self) -> io::Result<(u64, u64)> {
        let (mut n, mut bytes, mut acc) = (0u64, 0u64, 0u64);
        for i in 0..self.positions.len() {
            let len = self.read_pos(i)?;
            touch(&mut acc, &self.buf);
            n += 1;
            bytes += len as u64;
        }
        black_box(acc);
        Ok((n, bytes))
    }
    fn read_one(&mut self, n: u64) -> Option<io::Result<usize>> {
        Some(self.read_pos(n as usize))
    }
    fn supports_sync(&self) -> bool {
        true
    }
    fn supports_nosync(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------
// walrus-rust 0.2.0
// ---------------------------------------------------------------------------
//
// What the source really does (FD backend, the Linux default):
// * `append_for_topic` (one record): pwrite; then per schedule: SyncEach ->
//   `sync_all` (fsync) after every record; NoFsync -> nothing;
//   Milliseconds(n) -> path queued to a background io_uring fsync thread.
// * `batch_append_for_topic`: a fresh io_uring (IoUring::new) per call, one write
//   SQE per record, then **always `sync_all` (fsync)** of the touched file(s),
//   whatever the schedule. So a "batch" is always durable; there is no cheap
//   non-durable batch path.
// * SyncEach additionally opens data files with O_SYNC -- decided by a
//   process-global OnceLock set by the *first* Walrus constructed. After a
//   SyncEach instance, every later instance (even NoFsync) writes O_SYNC.
// So this adapter uses NoFsync and expresses: nosync = one append_for_topic per
// record (not atomic as a batch); sync = one batch_append_for_topic per batch
// (atomic batch + one fsync). Per-record durability = batches of 1.
// Reads are consumer-cursor reads (`batch_read_for_topic(.., checkpoint=true)`,
// <= 2000 entries per call): read_all consumes the topic, so a second read_all
// returns 0; no point reads by index.
// Process-global state: WALRUS_DATA_DIR / WALRUS_QUIET env vars (read at
// construction / at every debug print), the O_SYNC OnceLock, the deletion
// channel (first instance's thread only), a global mmap/fd cache keyed by path
// (fds are never closed), block-state maps keyed by per-instance block ids
// (they start at 1 in every instance, so they collide across instances). Each
// instance leaks one background thread (sleeps 10 s with NoFsync) + a 2048-entry
// io_uring. Several cases in one process: use a unique key per case
// (`with_consistency_and_schedule_for_key` -> $WALRUS_DATA_DIR/<key>) or a
// unique topic on one shared instance; both work, same fsync schedule only.

pub struct WalrusPeer {
    w: &'static walrus_rust::Walrus,
    topic: String,
    sync_each: bool,
}

/// The one walrus instance of this process (see above: instances share
/// process-wide state) and its scratch directory.
static WALRUS: std::sync::OnceLock<walrus_rust::Walrus> = std::sync::OnceLock::new();
static WALRUS_DIR: std::sync::Mutex<Option<tempfile::TempDir>> = std::sync::Mutex::new(None);
static WALRUS_TOPIC: AtomicU64 = AtomicU64::new(0);

impl WalrusPeer {
    /// A fresh topic on this process's walrus instance (created on first use,
    /// `NoFsync` schedule, in a scratch directory that [`remove_walrus_dir`]
    /// deletes).
    pub fn open_shared() -> io::Result<Self> {
        if WALRUS.get().is_none() {
            let dir = super::scratch_dir();
            Self::open(dir.path(), walrus_rust::FsyncSchedule::NoFsync)?;
            *WALRUS_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        }
        let w = WALRUS.get().ok_or_else(|| io_err("walrus did not open"))?;
        let n = WALRUS_TOPIC.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            w,
            topic: format!("t{n}"),
            sync_each: false,
        })
    }

    /// Builds this process's walrus instance rooted at `dir` (sets
    /// WALRUS_DATA_DIR for this construction; the env var is read only at
    /// construction). Only the first call in a process builds one.
    pub fn open(dir: &Path, schedule: walrus_rust::FsyncSchedule) -> io::Result<Self> {
        // walrus reads its directory from the environment when it is built.
        #[allow(unsafe_code)]
        // SAFETY: no thread of this program reads or writes the environment
        // through libc while this runs (the benches' threads only append).
        unsafe {
            std::env::set_var("WALRUS_QUIET", "1");
            std::env::set_var("WALRUS_DATA_DIR", dir);
        }
        let w = walrus_rust::Walrus::with_consistency_and_schedule(
            walrus_rust::ReadConsistency::AtLeastOnce {
                persist_every: 10_000,
            },
            schedule,
        )?;
        let sync_each = matches!(schedule, walrus_rust::FsyncSchedule::SyncEach);
        let w = WALRUS.get_or_init(|| w);
        Ok(Self {
            w,
            topic: "t".into(),
            sync_each,
        })
    }
}

/// Delete the walrus instance's scratch directory (its files stay open).
pub fn remove_walrus_dir() {
    drop(WALRUS_DIR.lock().unwrap_or_else(|e| e.into_inner()).take());
}

impl PeerLog for WalrusPeer {
    fn name(&self) -> &'static str {
        if self.sync_each {
            "walrus(SyncEach)"
        } else {
            "walrus"
        }
    }
    fn append_batch(&mut self, records: &[&[u8]], sync: bool) -> io::Result<()> {
        if self.sync_each {
            // every append_for_topic is O_SYNC pwrite + fsync: per-record durable
            for r in records {
                self.w.append_for_topic(&self.topic, r)?;
            }
        } else if sync {
            self.w.batch_append_for_topic(&self.topic, records)?;
        } else {
            for r in records {
                self.w.append_for_topic(&self.topic, r)?;
            }
        }
        Ok(())
    }
    fn read_all(&mut self) -> io::Result<(u64, u64)> {
        let (mut n, mut bytes, mut acc) = (0u64, 0u64, 0u64);
        loop {
            let es = self.w.batch_read_for_topic(&self.topic, 1 << 20, true)?;
            if es.is_empty() {
                break;
            }
            for e in &es {
                touch(&mut acc, &e.data);
                n += 1;
                bytes += e.data.len() as u64;
            }
        }
        black_box(acc);
        Ok((n, bytes))
    }
    fn read_one(&mut self, _n: u64) -> Option<io::Result<usize>> {
        None
    }
    fn supports_sync(&self) -> bool {
        true
    }
    fn supports_nosync(&self) -> bool {
        !self.sync_each
    }
}

// ---------------------------------------------------------------------------
// Raw baseline: append + fdatasync on a plain file (the disk's floor).
// ---------------------------------------------------------------------------

pub struct RawFile {
    f: File,
    lens: Vec<u32>,
}

impl RawFile {
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join("raw"))?;
        Ok(Self {
            f,
            lens: Vec::new(),
        })
    }
}

impl PeerLog for RawFile {
    fn name(&self) -> &'static str {
        "raw write+fdatasync"
    }
    fn append_batch(&mut self, records: &[&[u8]], sync: bool) -> io::Result<()> {
        use std::io::Write;
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len()).sum());
        for r in records {
            buf.extend_from_slice(r);
            self.lens.push(r.len() as u32);
        }
        (&self.f).write_all(&buf)?;
        if sync {
            self.f.sync_data()?;
        }
        Ok(())
    }
    fn read_all(&mut self) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::FileExt;
        let total: u64 = self.lens.iter().map(|&l| l as u64).sum();
        let mut buf = vec![0u8; total as usize];
        self.f.read_exact_at(&mut buf, 0)?;
        let mut acc = 0;
        let mut p = 0usize;
        for &l in &self.lens {
            touch(&mut acc, &buf[p..p + l as usize]);
            p += l as usize;
        }
        black_box(acc);
        Ok((self.lens.len() as u64, total))
    }
    fn read_one(&mut self, _n: u64) -> Option<io::Result<usize>> {
        None
    }
    fn supports_sync(&self) -> bool {
        true
    }
    fn supports_nosync(&self) -> bool {
        true
    }
}
