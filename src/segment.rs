//! Segments: one `<base offset, 20 digits>.log` file of whole Kafka v2
//! batches, with its sparse offset index (`.index`) and time index
//! (`.timeindex`).
//!
//! Invariants:
//! - Bytes `[0, committed_len)` of the file are whole, CRC-valid batches with
//!   contiguous offsets starting at `base_offset`; readers never look past
//!   `committed_len`, which grows only after a batch is completely written.
//! - Only the log's writer (holding the log's append lock) appends, and only
//!   at `committed_len`; committed bytes are never rewritten.
//! - Index entries are derived data. An offset-index entry `(rel, pos)` says
//!   the batch at file position `pos` has base offset `base_offset + rel`;
//!   entries are strictly increasing in both fields. A time-index entry
//!   `(t, rel)` says every batch before offset `base_offset + rel` has a max
//!   timestamp `<= t`; entries are non-decreasing in `t`, strictly increasing
//!   in `rel`. A sealed segment's time index ends with a sentinel
//!   `(max timestamp of the segment, next_offset - base_offset)`.
//! - An index that breaks any of these, or that disagrees with the batch it
//!   points at, is rebuilt by scanning the segment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::index::{decode_offset_index, decode_time_index};
use crate::format::{
    BatchView, OFFSET_ENTRY_LEN, OffsetIndexEntry, TIME_ENTRY_LEN, TimeIndexEntry, peek_batch_len,
};
use crate::storage::{OpenMode, Storage, StorageFile};

/// File name of a segment's log file.
pub(crate) fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// Parse `<20 digits>.<ext>` into the base offset.
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// Where and why a scan stopped before the end of the data.
#[derive(Debug, Clone)]
pub(crate) struct ScanStop {
    /// Position of the first byte that is not part of a valid batch.
    pub position: u64,
    /// What was wrong there.
    pub reason: String,
}

/// The outcome of walking a segment's bytes batch by batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Offset after the last valid batch.
    pub next_offset: i64,
    /// Number of valid batches.
    pub batches: u64,
    /// Largest batch max timestamp (-1 if none).
    pub max_timestamp: i64,
    pub index: Indexes,
    /// Positions of the control batches (producer-state checkpoints).
    pub controls: Vec<u64>,
    /// `None` when the whole input was valid.
    pub stop: Option<ScanStop>,
}

/// In-memory sparse indexes, plus the writer's bookkeeping for adding entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Indexes {
    pub offsets: Vec<OffsetIndexEntry>,
    pub times: Vec<TimeIndexEntry>,
    bytes_since_entry: u64,
    /// Largest max timestamp of the batches indexed so far.
    max_timestamp: i64,
}

impl Indexes {
    fn new() -> Self {
        Indexes {
            max_timestamp: -1,
            ..Default::default()
        }
    }

    /// Account for a batch about to be appended at `position`.
    fn on_batch(&mut self, rel_offset: u32, position: u64, len: u64, max_ts: i64, interval: u64) {
        if position > 0 && self.bytes_since_entry >= interval {
            // Positions fit in u32: segments are at most 2 GiB (Config::validate)
            // and a batch starts inside the segment's limit.
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            self.offsets.push(OffsetIndexEntry {
                relative_offset: rel_offset,
                position,
            });
            if self
                .times
                .last()
                .is_none_or(|t| self.max_timestamp > t.timestamp)
            {
                self.times.push(TimeIndexEntry {
                    timestamp: self.max_timestamp,
                    relative_offset: rel_offset,
                });
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
        self.max_timestamp = self.max_timestamp.max(max_ts);
    }

    /// Position of the last indexed batch at or before `rel_offset`.
    fn floor(&self, rel_offset: u32) -> Option<OffsetIndexEntry> {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= rel_offset);
        i.checked_sub(1).map(|i| self.offsets[i])
    }
}

/// Below this many bytes a scan checks CRCs on the calling thread.
const PARALLEL_CRC_MIN: usize = 8 << 20;
/// At most this many threads check a scan's CRCs.
const MAX_CRC_THREADS: usize = 4;

/// Walk `data` (a segment's bytes) and stop at the first byte that is not a
/// valid batch continuing the offsets from `base_offset`. Pure: no I/O.
///
/// The result is the same as checking each batch in turn (structure, CRC,
/// offsets) and stopping at the first failure; the work is done in two
/// passes so that the CRCs, nearly all of the cost, use every core: a walk
/// over the headers finds the batches and checks their structure and
/// offsets, then the CRCs of the batches it accepted are checked in
/// parallel ranges, and the scan is cut before the first batch whose CRC
/// fails (redoing the walk up to there).
pub(crate) fn scan(data: &[u8], base_offset: i64, index_interval: u64) -> Scan {
    let threads = if data.len() >= PARALLEL_CRC_MIN {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_CRC_THREADS))
    } else {
        1
    };
    let (walked, splits) = walk(data, base_offset, index_interval, usize::MAX, threads);
    match first_bad_crc(data, &splits) {
        None => walked,
        Some((position, reason)) => {
            let (mut cut, _) = walk(data, base_offset, index_interval, position, 1);
            cut.stop = Some(ScanStop {
                position: position as u64,
                reason,
            });
            cut
        }
    }
}

/// The header pass of [`scan`]: every check but the CRC, over the batches
/// that start before `limit`. Also returns batch boundaries that split the
/// walked bytes into about `parts` ranges of equal size.
fn walk(
    data: &[u8],
    base_offset: i64,
    index_interval: u64,
    limit: usize,
    parts: usize,
) -> (Scan, Vec<usize>) {
    let mut out = Scan {
        next_offset: base_offset,
        max_timestamp: -1,
        index: Indexes::new(),
        ..Default::default()
    };
    let mut pos = 0usize;
    let mut splits = vec![0];
    let step = (data.len() / parts.max(1)).max(1);
    while pos < data.len() && pos < limit {
        if pos >= splits.len() * step && splits.len() < parts {
            splits.push(pos);
        }
        let rest = &data[pos..];
        // A batch that fails a check here and also its CRC is reported by
        // its CRC, as a batch-by-batch scan (CRC first) reports it.
        let stop = |reason: String| ScanStop {
            position: pos as u64,
            reason: match BatchView::parse(rest) {
                Err(e) => e.shifted(pos).to_string(),
                Ok(_) => reason,
            },
        };
        let view = match BatchView::parse_header_only(rest) {
            Ok(v) => v,
            Err(e) => {
                let reason = if rest.iter().all(|&b| b == 0) {
                    format!("{} zero bytes (unwritten space)", rest.len())
                } else {
                    e.shifted(pos).to_string()
                };
                out.stop = Some(ScanStop {
                    position: pos as u64,
                    reason,
                });
                break;
            }
        };
        if view.base_offset() != out.next_offset {
            out.stop = Some(stop(format!(
                "batch has base offset {}, expected {}",
                view.base_offset(),
                out.next_offset
            )));
            break;
        }
        let rel = view.base_offset() - base_offset;
        let Ok(rel) = u32::try_from(rel) else {
            out.stop = Some(stop(format!(
                "offset {} too far from segment base",
                view.base_offset()
            )));
            break;
        };
        if view.last_offset_delta() < 0 {
            out.stop = Some(stop(format!(
                "negative lastOffsetDelta {}",
                view.last_offset_delta()
            )));
            break;
        }
        // The log rolls before a segment's offsets span more than i32::MAX
        // (a checkpoint may add one): further is not a batch it wrote.
        if view.last_offset() - base_offset > i64::from(i32::MAX) {
            out.stop = Some(stop(format!(
                "batch ends at offset {}, too far from segment base {base_offset}",
                view.last_offset()
            )));
            break;
        }
        let Some(next) = view.last_offset().checked_add(1) else {
            out.stop = Some(stop("batch offsets overflow i64".into()));
            break;
        };
        let len = view.total_len() as u64;
        if view.is_control() {
            out.controls.push(pos as u64);
        }
        out.index
            .on_batch(rel, pos as u64, len, view.max_timestamp(), index_interval);
        out.next_offset = next;
        out.max_timestamp = out.max_timestamp.max(view.max_timestamp());
        out.batches += 1;
        pos += view.total_len();
        out.valid_len = pos as u64;
    }
    splits.push(pos);
    (out, splits)
}

/// Check the CRCs of the walked batches in `[splits[i], splits[i + 1])`, one
/// range per thread; the first failing batch's position and why.
fn first_bad_crc(data: &[u8], splits: &[usize]) -> Option<(usize, String)> {
    let check = |from: usize, to: usize| -> Option<(usize, String)> {
        let mut pos = from;
        while pos < to {
            let rest = &data[pos..to];
            match BatchView::parse(rest) {
                Ok(v) => pos += v.total_len(),
                Err(e) => return Some((pos, e.shifted(pos).to_string())),
            }
        }
        None
    };
    let ranges: Vec<(usize, usize)> = splits.windows(2).map(|w| (w[0], w[1])).collect();
    if ranges.len() <= 1 {
        return ranges.first().and_then(|&(from, to)| check(from, to));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|&(from, to)| {
                std::thread::Builder::new()
                    .name("oncelog-scan".into())
                    .spawn_scoped(s, move || check(from, to))
                    .map_err(|_| (from, to))
            })
            .collect();
        let mut found = check(ranges[0].0, ranges[0].1);
        for h in handles {
            // A thread that could not be started: check its range here.
            let r = match h {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err((from, to)) => check(from, to),
            };
            if found.is_none() {
                found = r;
            }
        }
        found
    })
}

/// Count the batch frames in `data` (bytes after a scan stopped) that look
/// like batches, for the recovery report. A torn or garbage remainder counts
/// as one; zero-filled space counts as none.
pub(crate) fn count_dropped_frames(data: &[u8]) -> u64 {
    let mut n = 0;
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        n += 1;
        match peek_batch_len(rest) {
            Some(len) if len <= rest.len() => pos += len,
            _ => break,
        }
    }
    n
}

/// One segment of a log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    committed_len: AtomicU64,
    next_offset: AtomicI64,
    max_timestamp: AtomicI64,
    /// Space reserved ahead of `committed_len` so far.
    reserved_to: AtomicU64,
    index: RwLock<Indexes>,
}

impl Segment {
    fn from_parts(
        base_offset: i64,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        committed_len: u64,
        next_offset: i64,
        max_timestamp: i64,
        index: Indexes,
    ) -> Segment {
        Segment {
            base_offset,
            path,
            file,
            committed_len: AtomicU64::new(committed_len),
            next_offset: AtomicI64::new(next_offset),
            max_timestamp: AtomicI64::new(max_timestamp),
            reserved_to: AtomicU64::new(committed_len),
            index: RwLock::new(index),
        }
    }

    /// Create a new, empty segment file. The caller syncs the directory.
    pub(crate) fn create(storage: &dyn Storage, dir: &Path, base_offset: i64) -> Result<Segment> {
        let path = dir.join(log_file_name(base_offset));
        let file = storage
            .open(&path, OpenMode::Truncate)
            .map_err(|e| Error::io("create segment", &path, e))?;
        Ok(Segment::from_parts(
            base_offset,
            path,
            file,
            0,
            base_offset,
            -1,
            Indexes::new(),
        ))
    }

    /// A segment whose contents were just scanned (the active segment at
    /// open, or a sealed one whose index was rebuilt).
    pub(crate) fn from_scan(
        base_offset: i64,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        scan: Scan,
    ) -> Segment {
        Segment::from_parts(
            base_offset,
            path,
            file,
            scan.valid_len,
            scan.next_offset,
            scan.max_timestamp,
            scan.index,
        )
    }

    /// Open a sealed segment from its index files, trusting its length.
    /// Returns `None` when the index files are missing or in doubt (the caller
    /// then scans and rebuilds).
    pub(crate) fn open_sealed_from_index(
        storage: &dyn Storage,
        base_offset: i64,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        next_offset: i64,
    ) -> Option<Segment> {
        let len = file.len().ok()?;
        let read = |ext: &str| -> Option<Vec<u8>> {
            let p = path.with_extension(ext);
            let f = storage.open(&p, OpenMode::Existing).ok()?;
            crate::storage::read_all(f.as_ref()).ok()
        };
        let offsets_raw = read("index")?;
        let times_raw = read("timeindex")?;
        if offsets_raw.len() % OFFSET_ENTRY_LEN != 0 || times_raw.len() % TIME_ENTRY_LEN != 0 {
            return None;
        }
        let offsets = decode_offset_index(&offsets_raw);
        let mut times = decode_time_index(&times_raw);
        let span = u32::try_from(next_offset.checked_sub(base_offset)?).ok()?;
        // Structure: strictly increasing, inside the file and the offset span.
        let offsets_ok = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && offsets
                .last()
                .is_none_or(|e| u64::from(e.position) < len && e.relative_offset < span);
        let times_ok = times.windows(2).all(|w| {
            w[0].timestamp <= w[1].timestamp && w[0].relative_offset < w[1].relative_offset
        });
        // The sentinel must close the segment exactly where the next begins.
        let sentinel = times.pop()?;
        if !offsets_ok || !times_ok || sentinel.relative_offset != span || len == 0 {
            return None;
        }
        let mut index = Indexes::new();
        index.offsets = offsets;
        index.times = times;
        index.max_timestamp = sentinel.timestamp;
        Some(Segment::from_parts(
            base_offset,
            path,
            file,
            len,
            next_offset,
            sentinel.timestamp,
            index,
        ))
    }

    pub(crate) fn committed_len(&self) -> u64 {
        self.committed_len.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.path.with_extension("index")
    }

    pub(crate) fn time_index_path(&self) -> PathBuf {
        self.path.with_extension("timeindex")
    }

    /// Append one batch whose base offset is already set (writer only).
    /// `parts` are written back to back (the batch may arrive in two pieces so
    /// that its base offset need not be copied into a fresh buffer).
    pub(crate) fn append(
        &self,
        parts: &[&[u8]],
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        index_interval: u64,
        preallocate: u64,
    ) -> Result<()> {
        let pos = self.committed_len();
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let end = pos + len;
        if preallocate > 0 && end > self.reserved_to.load(Ordering::Relaxed) {
            let to = end.div_ceil(preallocate) * preallocate;
            // Reserving space is an optimization: if it fails (a nearly full
            // disk), write without it; the write itself reports a full disk.
            match self.file.preallocate(pos, to - pos) {
                Ok(()) => self.reserved_to.store(to, Ordering::Relaxed),
                Err(e) => {
                    tracing::debug!(segment = %self.path.display(), error = %e, "preallocation failed")
                }
            }
        }
        // Write the later parts first, the first part (holding the header
        // start) last: a crash in between leaves a batch whose header does not
        // match, which recovery cuts like any torn write. (Unless the missing
        // bytes are the ones already there: a base offset of 0 over zeros. The
        // batch is then whole, so a failure of that last write is not a
        // refusal that left the log unchanged: its op poisons the log, see
        // `Error::is_full_disk_before_sync`.)
        let mut at = end;
        for (i, part) in parts.iter().enumerate().rev() {
            at -= part.len() as u64;
            let op = if i == 0 && parts.len() > 1 {
                "write batch start"
            } else {
                "write segment"
            };
            if let Err(e) = self.file.write_at(part, at) {
                let err = Error::io(op, &self.path, e);
                if err.is_full_disk_before_sync() {
                    // Refused for space, and the log goes on: cut what landed
                    // (the file ended at `pos`), so that no later, shorter
                    // batch leaves part of it behind to be read as a batch.
                    // Cutting also drops the space reserved past `pos`.
                    self.file
                        .set_len(pos)
                        .map_err(|e| Error::io("cut a refused write", &self.path, e))?;
                    self.reserved_to.store(pos, Ordering::Relaxed);
                }
                return Err(err);
            }
        }
        let rel = u32::try_from(base_offset - self.base_offset).unwrap_or(u32::MAX);
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .on_batch(rel, pos, len, max_timestamp, index_interval);
        self.max_timestamp
            .fetch_max(max_timestamp, Ordering::AcqRel);
        self.next_offset.store(last_offset + 1, Ordering::Release);
        // Publishing the length last makes the batch visible to readers whole.
        self.committed_len.store(end, Ordering::Release);
        Ok(())
    }

    /// Seal: cut the file to its exact length, persist the indexes, fsync.
    pub(crate) fn seal(&self, storage: &dyn Storage) -> Result<()> {
        let len = self.committed_len();
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate sealed segment", &self.path, e))?;
        self.write_indexes(storage)?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync sealed segment", &self.path, e))?;
        Ok(())
    }

    /// Write (replace) the `.index` and `.timeindex` files and fsync them.
    pub(crate) fn write_indexes(&self, storage: &dyn Storage) -> Result<()> {
        let (offsets, times) = {
            let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
            let mut offsets = Vec::with_capacity(idx.offsets.len() * OFFSET_ENTRY_LEN);
            for e in &idx.offsets {
                offsets.extend_from_slice(&e.encode());
            }
            let mut times = Vec::with_capacity((idx.times.len() + 1) * TIME_ENTRY_LEN);
            for e in &idx.times {
                times.extend_from_slice(&e.encode());
            }
            let span = u32::try_from(self.next_offset() - self.base_offset).unwrap_or(u32::MAX);
            let sentinel = TimeIndexEntry {
                timestamp: self.max_timestamp().max(idx.max_timestamp),
                relative_offset: span,
            };
            times.extend_from_slice(&sentinel.encode());
            (offsets, times)
        };
        // Each file is written whole under a temporary name and renamed into
        // place, so a crash never leaves a partial index (the caller fsyncs
        // the directory).
        for (path, bytes) in [
            (self.index_path(), offsets),
            (self.time_index_path(), times),
        ] {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let f = storage
                .open(&tmp, OpenMode::Truncate)
                .map_err(|e| Error::io("create index", &tmp, e))?;
            f.write_at(&bytes, 0)
                .map_err(|e| Error::io("write index", &tmp, e))?;
            f.sync_all()
                .map_err(|e| Error::io("fsync index", &tmp, e))?;
            storage
                .rename(&tmp, &path)
                .map_err(|e| Error::io("rename index", &path, e))?;
        }
        Ok(())
    }

    /// The committed bytes from `position` on, zero-copy.
    pub(crate) fn bytes_from(&self, position: u64) -> Result<Bytes> {
        let end = self.committed_len();
        let len = usize::try_from(end.saturating_sub(position)).unwrap_or(usize::MAX);
        self.file
            .read_bytes(position, len)
            .map_err(|e| Error::io("read segment", &self.path, e))
    }

    /// Find the batch holding `offset` (which must lie in this segment's
    /// range) and return its position and the bytes from there on. The walk
    /// from the index entry checks offset continuity batch by batch, which
    /// covers `baseOffset` (outside the CRC); the batch returned starts at or
    /// before `offset` and ends at or after it.
    pub(crate) fn locate(&self, offset: i64, index_interval: u64) -> Result<(u64, Bytes)> {
        let rel = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        let hint = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .floor(rel);
        let (start, expected) = hint.map_or((0, self.base_offset), |e| {
            (
                u64::from(e.position),
                self.base_offset + i64::from(e.relative_offset),
            )
        });
        let data = self.bytes_from(start)?;
        if hint.is_some() {
            // Pair check: the entry must point at the batch it names.
            let ok = BatchView::parse_header_only(&data).is_ok_and(|v| v.base_offset() == expected);
            if !ok {
                tracing::warn!(
                    segment = %self.path.display(),
                    position = start,
                    "offset index disagrees with the segment; rebuilding it"
                );
                self.rebuild_index(index_interval)?;
                return self.locate_by_scan(offset, 0, self.base_offset, self.bytes_from(0)?);
            }
        }
        self.locate_by_scan(offset, start, expected, data)
    }

    fn locate_by_scan(
        &self,
        offset: i64,
        start: u64,
        mut expected: i64,
        data: Bytes,
    ) -> Result<(u64, Bytes)> {
        let mut pos = 0usize;
        while pos < data.len() {
            let at = start + pos as u64;
            let view = BatchView::parse_header_only(&data[pos..])
                .map_err(|e| Error::corrupt_frame(&self.path, at, e))?;
            if view.base_offset() != expected || view.last_offset() < view.base_offset() {
                return Err(Error::corrupt(
                    &self.path,
                    at,
                    format!(
                        "batch has offsets {}..={}, expected it to start at {expected}",
                        view.base_offset(),
                        view.last_offset()
                    ),
                ));
            }
            if view.last_offset() >= offset {
                return Ok((at, data.slice(pos..)));
            }
            expected = view.last_offset().saturating_add(1);
            pos += view.total_len();
        }
        Ok((start + data.len() as u64, Bytes::new()))
    }

    /// Rebuild the in-memory indexes by scanning the committed bytes.
    pub(crate) fn rebuild_index(&self, index_interval: u64) -> Result<()> {
        let data = self.bytes_from(0)?;
        let scan = scan(&data, self.base_offset, index_interval);
        if let Some(stop) = scan.stop {
            return Err(Error::corrupt(&self.path, stop.position, stop.reason));
        }
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = scan.index;
        Ok(())
    }

    /// Start position of the first batch whose max timestamp is `>= ts`, or
    /// `None` if there is none in this segment.
    pub(crate) fn time_lookup_start(&self, ts: i64) -> u64 {
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let i = idx.times.partition_point(|e| e.timestamp < ts);
        match i.checked_sub(1).map(|i| idx.times[i]) {
            None => 0,
            Some(e) => idx
                .floor(e.relative_offset)
                .map_or(0, |o| u64::from(o.position)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchBuilder, set_base_offset};

    fn batch(base: i64, n: usize, ts: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(ts + i as i64, None, Some(&[7u8; 100]), &[]);
        }
        let mut bytes = b.build();
        set_base_offset(&mut bytes, base).unwrap();
        bytes
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.log"),
            Some((42, "log"))
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((42, "index"))
        );
        assert_eq!(parse_file_name("0000000000000000042.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("x"), None);
    }

    #[test]
    fn scan_stops_at_garbage_zeros_and_offset_gaps() {
        let mut data = batch(10, 3, 1000);
        let first = data.len() as u64;
        data.extend(batch(13, 2, 2000));
        let two = data.len() as u64;
        let s = scan(&data, 10, 4096);
        assert!(s.stop.is_none());
        assert_eq!(
            (s.valid_len, s.next_offset, s.batches, s.max_timestamp),
            (two, 15, 2, 2001)
        );

        let mut zeros = data.clone();
        zeros.extend([0u8; 100]);
        let s = scan(&zeros, 10, 4096);
        assert_eq!(s.valid_len, two);
        assert!(s.stop.unwrap().reason.contains("zero"));
        assert_eq!(count_dropped_frames(&zeros[two as usize..]), 0);

        let mut gap = batch(10, 3, 1000);
        gap.extend(batch(14, 2, 2000));
        let s = scan(&gap, 10, 4096);
        assert_eq!(s.valid_len, first);
        assert!(s.stop.unwrap().reason.contains("expected 13"));

        let s = scan(&data, 11, 4096);
        assert_eq!(s.valid_len, 0, "first batch must start at the segment base");

        // A batch with a wrong base offset and a bad CRC is reported by its
        // CRC, as a batch-by-batch scan would.
        let mut both = batch(10, 3, 1000);
        let mut second = batch(14, 2, 2000);
        second[30] ^= 1;
        both.extend(second);
        let s = scan(&both, 10, 4096);
        assert_eq!(s.valid_len, first);
        assert!(s.stop.unwrap().reason.contains("CRC-32C mismatch"));
    }

    /// Large enough for the CRCs to be checked in parallel ranges: a bad
    /// CRC anywhere cuts exactly there, with everything before it kept.
    #[test]
    fn a_parallel_scan_cuts_at_the_first_bad_crc() {
        let mut data = Vec::new();
        let mut starts = Vec::new();
        let mut base = 0;
        while data.len() < (PARALLEL_CRC_MIN + (1 << 20)) {
            starts.push(data.len());
            data.extend(batch(base, 64, 1000 + base));
            base += 64;
        }
        let whole = scan(&data, 0, 4096);
        assert!(whole.stop.is_none());
        assert_eq!(
            (whole.batches, whole.next_offset),
            (starts.len() as u64, base)
        );
        for k in [1, starts.len() / 3, starts.len() / 2 + 1, starts.len() - 1] {
            let mut bad = data.clone();
            bad[starts[k] + 100] ^= 0x40;
            let s = scan(&bad, 0, 4096);
            assert_eq!(s.valid_len, starts[k] as u64, "bad batch {k}");
            assert_eq!((s.batches, s.next_offset), (k as u64, 64 * k as i64));
            assert!(s.stop.unwrap().reason.contains("CRC-32C mismatch"));
            let kept = scan(&data[..starts[k]], 0, 4096);
            assert_eq!(s.index.offsets, kept.index.offsets);
            assert_eq!(s.max_timestamp, kept.max_timestamp);
        }
    }

    /// A batch whose last offset is i64::MAX is not kept: nothing can follow
    /// it, and it leaves no index entry or control position behind.
    #[test]
    fn a_batch_ending_at_the_last_offset_is_not_kept() {
        let base = i64::MAX - 2;
        let mut b = BatchBuilder::new().with_control(true);
        for i in 0..3 {
            b.push(1000 + i, None, Some(b"x"), &[]);
        }
        let mut bytes = b.build();
        set_base_offset(&mut bytes, base).unwrap();
        let s = scan(&bytes, base, 1);
        assert_eq!(s.valid_len, 0);
        assert!(s.controls.is_empty() && s.index.offsets.is_empty());
        assert!(s.stop.unwrap().reason.contains("overflow"));
    }

    #[test]
    fn index_entries_follow_the_interval() {
        let mut data = Vec::new();
        let mut next = 0;
        for i in 0..50 {
            data.extend(batch(next, 4, 1000 * i));
            next += 4;
        }
        let s = scan(&data, 0, 1024);
        let idx = &s.index;
        assert!(idx.offsets.len() > 5);
        for e in &idx.offsets {
            let v = BatchView::parse(&data[e.position as usize..]).unwrap();
            assert_eq!(v.base_offset(), i64::from(e.relative_offset));
        }
        assert!(
            idx.times
                .windows(2)
                .all(|w| w[0].timestamp <= w[1].timestamp)
        );
    }
}
