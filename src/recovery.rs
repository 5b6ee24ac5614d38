//! Opening a partition directory: find its segments, repair what a crash left
//! behind, and hand the log its segments.
//!
//! The decision table (each startup state maps to one action):
//!
//! | state found                                   | action                                             |
//! |-----------------------------------------------|----------------------------------------------------|
//! | `*.tmp` / `*.deleted` file                    | remove (an interrupted metadata write or deletion) |
//! | `.index`/`.timeindex` without its `.log`      | remove (orphan of a deleted segment)               |
//! | segment wholly below the log start offset     | delete (retention was interrupted)                 |
//! | no segment                                    | create an empty one at the log start offset        |
//! | sealed segment, index files sound             | trust it by its length; no scan                    |
//! | sealed segment, index missing or in doubt     | scan it, rebuild and rewrite its indexes           |
//! | sealed segment, scan finds damage             | `Error::Corrupt` (or, with `TruncateAtCorruption`, cut there and delete every later segment) |
//! | active (last) segment                         | scan it, cut at the first invalid batch, fsync     |
//! | log start offset past the end of the log      | delete all segments; empty log at the log start   |
//!
//! Invariant on exit: every segment but the last is sealed, the segments'
//! offsets are contiguous, and the last one ends with a valid batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, RecoveryMode};
use crate::error::{Error, Result};
use crate::format::BatchView;
use crate::format::checkpoint::{checkpoint_capacity, decode_checkpoint_unique};
use crate::format::meta::{LOG_START_FILE, decode_log_start, encode_log_start};
use crate::producer::{BatchIdent, Entry, ProducerMap, ProducerTable};
use crate::segment::{Scan, Segment, count_dropped_frames, log_file_name, parse_file_name, scan};
use crate::storage::{OpenMode, Storage, StorageFile, read_all};

/// What recovery found and did when a log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Batches in the scanned (active) segment that were kept.
    pub batches_scanned: u64,
    /// Bytes cut from the log (torn writes, garbage, zero-filled space).
    pub bytes_truncated: u64,
    /// Batch frames among the cut bytes (a torn frame counts as one; zeros as none).
    pub batches_dropped: u64,
    /// The file that was cut, if any.
    pub truncated_file: Option<PathBuf>,
    /// Why it was cut, if it was.
    pub truncation_reason: Option<String>,
    /// Segments deleted: below the log start, or after corruption in
    /// [`RecoveryMode::TruncateAtCorruption`].
    pub segments_deleted: usize,
    /// Segment indexes that were missing or in doubt and were rebuilt.
    pub indexes_rebuilt: usize,
    /// Temporary and orphaned files removed.
    pub stray_files_removed: usize,
    /// First offset of the log.
    pub log_start_offset: i64,
    /// Offset the next append gets.
    pub next_offset: i64,
    /// Offset of the producer-state checkpoint that was loaded, if any.
    pub checkpoint_offset: Option<i64>,
    /// Batches after that checkpoint (or from the log start, without one)
    /// replayed into the producer table.
    pub batches_replayed: u64,
    /// Producers in the table after recovery.
    pub producers: usize,
    /// Wall time recovery took.
    pub duration: Duration,
}

/// The outcome of recovery: the segments in offset order and the log start.
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    /// Positions of the control batches in the last segment.
    pub active_controls: Vec<u64>,
    pub log_start: i64,
    pub report: RecoveryReport,
}

fn remove(storage: &dyn Storage, path: &Path) -> Result<()> {
    storage
        .remove_file(path)
        .map_err(|e| Error::io("remove file", path, e))
}

fn remove_segment_files(storage: &dyn Storage, dir: &Path, base: i64) -> Result<()> {
    let log = dir.join(log_file_name(base));
    for path in [
        log.clone(),
        log.with_extension("index"),
        log.with_extension("timeindex"),
    ] {
        match storage.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove segment", &path, e)),
        }
    }
    Ok(())
}

/// Persist the log start offset: tmp file, fsync, rename, directory fsync.
pub(crate) fn write_log_start(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<()> {
    write_file_atomically(storage, dir, LOG_START_FILE, &encode_log_start(offset))
}

/// Replace `dir/name` with `bytes` so that a crash leaves the old or the new
/// contents: write a `.tmp` file, fsync it, rename it over, fsync the directory.
pub(crate) fn write_file_atomically(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let f = storage
        .open(&tmp, OpenMode::Truncate)
        .map_err(|e| Error::io("create file", &tmp, e))?;
    f.write_at(bytes, 0)
        .map_err(|e| Error::io("write file", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync file", &tmp, e))?;
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename file", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// What loading the producer table found.
#[derive(Debug, Default)]
pub(crate) struct ProducersLoaded {
    pub checkpoint_offset: Option<i64>,
    pub checkpoint_next: Option<i64>,
    pub checkpoint_len: u64,
    pub batches_replayed: u64,
    pub bytes_replayed: u64,
    pub expired: usize,
}

/// A decoded checkpoint batch.
struct Found {
    offset: i64,
    /// The offset after the checkpoint batch (the engine writes one offset;
    /// a batch found in the log may claim more).
    next: i64,
    len: u64,
    entries: ProducerMap,
    /// The oldest `last_append_ms` among them (`i64::MAX` if none).
    oldest_append_ms: i64,
}

/// Load a decoded checkpoint; returns its length.
fn table_from(table: &mut ProducerTable, out: &mut ProducersLoaded, found: Found) -> u64 {
    table.load(found.entries, found.oldest_append_ms);
    out.checkpoint_offset = Some(found.offset);
    out.checkpoint_next = Some(found.next);
    out.checkpoint_len = found.len;
    found.len
}

/// Decode the checkpoint batch at the start of `data`; `Err` says why it is
/// not a valid one.
/// Producers are decoded straight into a table's map, windows trimmed to
/// `window` batches (a million producers load in a fraction of a second:
/// no intermediate list, no allocation per producer).
///
/// `crc_checked`: the batch lies in bytes whose CRCs a scan just checked.
fn decode_checkpoint_at(
    data: &[u8],
    window: usize,
    max_producers: usize,
    crc_checked: bool,
) -> std::result::Result<Found, crate::format::FormatError> {
    let view = if crc_checked {
        BatchView::parse_header_only(data)?
    } else {
        BatchView::parse(data)?
    };
    let mut entries = ProducerMap::default();
    // Room for what the checkpoint claims, within what the table may hold;
    // if even that cannot be had, the map grows as entries arrive (a
    // damaged count must not abort the process on a failed allocation).
    let _ = entries.try_reserve(checkpoint_capacity(&view)?.min(max_producers));
    let mut oldest_append_ms = i64::MAX;
    decode_checkpoint_unique(&view, |p| {
        oldest_append_ms = oldest_append_ms.min(p.last_append_ms);
        let skip = p.window.len().saturating_sub(window);
        let entry = Entry {
            epoch: p.epoch,
            last_append_ms: p.last_append_ms,
            window: p.window[skip..].iter().copied().collect(),
        };
        entries.insert(p.producer_id, entry).is_none()
    })?;
    Ok(Found {
        offset: view.base_offset(),
        next: view.next_offset(),
        len: view.total_len() as u64,
        entries,
        oldest_append_ms,
    })
}

/// Positions of the control batches in a sealed segment's bytes, found by
/// following the batch lengths.
fn control_positions(data: &[u8], path: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut p = 0usize;
    while p < data.len() {
        let view = BatchView::parse_header_only(&data[p..])
            .map_err(|e| Error::corrupt_frame(path, p as u64, e))?;
        if view.is_control() {
            out.push(p as u64);
        }
        p += view.total_len();
    }
    Ok(out)
}

/// Rebuild a log's producer table: load the newest valid checkpoint, then
/// replay the data batches after it without validating them (the log is the
/// truth). Replayed batches count as appended `now_ms`.
///
/// Where replay starts rests on the log's invariant that a segment whose
/// first batch is not a checkpoint began with an empty producer table (the
/// log writes a checkpoint first into every segment once it has producer
/// state). Segments newest first: the newest valid checkpoint in the segment
/// starts replay after it; without one, a data batch first in the segment
/// starts replay at it with an empty table, and an empty segment or an
/// invalid first checkpoint sends the search to the segment before. Running
/// out of segments after an invalid checkpoint is an error: starting from an
/// empty table would forget producers and let their retries in twice. With
/// `salvage` (`RecoveryMode::TruncateAtCorruption`) it does exactly that,
/// with a warning, so that a damaged log can still be opened.
pub(crate) fn recover_producers(
    segments: &[Arc<Segment>],
    active_controls: &[u64],
    table: &mut ProducerTable,
    is_named: &dyn Fn(i64) -> bool,
    now_ms: i64,
    salvage: bool,
) -> Result<ProducersLoaded> {
    let mut out = ProducersLoaded::default();
    let last = segments.len() - 1;
    let mut invalid: Option<Error> = None;
    let note_invalid = |invalid: &mut Option<Error>,
                        seg: &Segment,
                        pos: u64,
                        e: crate::format::FormatError| {
        tracing::warn!(segment = %seg.path.display(), position = pos, error = %e, "ignoring an invalid checkpoint; recovering from an older one");
        invalid.get_or_insert(Error::corrupt(
            &seg.path,
            pos,
            format!("invalid producer checkpoint and no older one to recover from: {e}"),
        ));
    };
    let start: (usize, u64) = 'search: {
        for (i, seg) in segments.iter().enumerate().rev() {
            if seg.committed_len() == 0 {
                continue;
            }
            let data = seg.bytes_from(0)?;
            // The active segment's scan listed its checkpoints; a sealed one
            // (reached only when no newer checkpoint is valid) is walked.
            let controls = if i == last {
                active_controls.to_vec()
            } else {
                control_positions(&data, &seg.path)?
            };
            for &pos in controls.iter().rev() {
                let at = usize::try_from(pos).unwrap_or(usize::MAX);
                let checked = i == last; // the scan checked the active segment's CRCs
                let (window, max) = (table.window_limit(), table.max_producers());
                let bytes = data.get(at..).unwrap_or_default();
                match decode_checkpoint_at(bytes, window, max, checked) {
                    Ok(found) => break 'search (i, pos + table_from(table, &mut out, found)),
                    Err(e) => note_invalid(&mut invalid, seg, pos, e),
                }
            }
            let first =
                BatchView::parse(&data).map_err(|e| Error::corrupt_frame(&seg.path, 0, e))?;
            if !first.is_control() {
                // Began with an empty table: replay the whole segment.
                break 'search (i, 0);
            }
        }
        if let Some(e) = invalid {
            if !salvage {
                return Err(e);
            }
            tracing::warn!(error = %e, "salvaging: rebuilding producer state from the first segment with an empty table; retries of batches before it may be appended again");
        }
        (0, 0)
    };
    for (i, seg) in segments.iter().enumerate().skip(start.0) {
        let from = if i == start.0 { start.1 } else { 0 };
        let data = seg.bytes_from(from)?;
        let mut p = 0usize;
        // baseOffset lies outside the CRC: continuity checks it.
        let mut expect = if from == 0 {
            Some(seg.base_offset)
        } else {
            out.checkpoint_next
        };
        while p < data.len() {
            let at = from + p as u64;
            // The active segment was just scanned (CRC and continuity); sealed
            // ones are trusted by length, so check what is replayed from them.
            let view = if i == last {
                BatchView::parse_header_only(&data[p..])
            } else {
                BatchView::parse(&data[p..])
            }
            .map_err(|e| Error::corrupt_frame(&seg.path, at, e))?;
            let next = view
                .base_offset()
                .checked_add(i64::from(view.last_offset_delta()))
                .and_then(|l| l.checked_add(1))
                .filter(|_| view.last_offset_delta() >= 0);
            if expect.is_some_and(|e| e != view.base_offset()) || next.is_none() {
                return Err(Error::corrupt(
                    &seg.path,
                    at,
                    format!(
                        "batch has base offset {} and lastOffsetDelta {}, expected base offset {}",
                        view.base_offset(),
                        view.last_offset_delta(),
                        expect.unwrap_or_default()
                    ),
                ));
            }
            expect = next;
            p += view.total_len();
            out.bytes_replayed += view.total_len() as u64;
            if view.is_control() || !view.has_producer_id() {
                continue;
            }
            let b = BatchIdent {
                producer_id: view.producer_id(),
                epoch: view.producer_epoch(),
                base_seq: view.base_sequence(),
                delta: view.last_offset_delta(),
            };
            table.replay(&b, view.base_offset(), is_named(b.producer_id), now_ms);
            out.batches_replayed += 1;
        }
        if expect.is_some_and(|e| i + 1 < segments.len() && e != segments[i + 1].base_offset) {
            return Err(Error::corrupt(
                &seg.path,
                seg.committed_len(),
                format!(
                    "segment ends before offset {} but the next segment starts at {}",
                    expect.unwrap_or_default(),
                    segments[i + 1].base_offset
                ),
            ));
        }
    }
    out.expired = table.expire_due(now_ms);
    Ok(out)
}

fn scan_file(
    file: &dyn StorageFile,
    path: &Path,
    base: i64,
    interval: u64,
) -> Result<(Scan, bytes::Bytes)> {
    let len = file.len().map_err(|e| Error::io("stat segment", path, e))?;
    let len = usize::try_from(len).map_err(|_| Error::corrupt(path, 0, "segment too large"))?;
    let data = file
        .read_bytes(0, len)
        .map_err(|e| Error::io("read segment", path, e))?;
    Ok((scan(&data, base, interval), data))
}

/// Open (or create) the log in `dir`, repairing it as the table above says.
pub(crate) fn recover(storage: &dyn Storage, dir: &Path, config: &Config) -> Result<Recovered> {
    let started = Instant::now();
    let interval = u64::from(config.index_interval_bytes);
    let mut report = RecoveryReport::default();
    let names = storage
        .list_dir(dir)
        .map_err(|e| Error::io("list partition directory", dir, e))?;

    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    for name in &names {
        if name.ends_with(".tmp") || name.ends_with(".deleted") {
            remove(storage, &dir.join(name))?;
            report.stray_files_removed += 1;
            continue;
        }
        match parse_file_name(name) {
            Some((base, "log")) => bases.push(base),
            Some((base, "index" | "timeindex")) => index_files.push((base, name.clone())),
            _ if name == LOG_START_FILE => {}
            _ => tracing::debug!(file = %dir.join(name).display(), "ignoring unknown file"),
        }
    }
    bases.sort_unstable();
    for (base, name) in &index_files {
        if bases.binary_search(base).is_err() {
            remove(storage, &dir.join(name))?;
            report.stray_files_removed += 1;
        }
    }

    let start_path = dir.join(LOG_START_FILE);
    let mut log_start = match storage.open(&start_path, OpenMode::Existing) {
        Ok(f) => {
            let raw = read_all(f.as_ref())
                .map_err(|e| Error::io("read log start file", &start_path, e))?;
            match decode_log_start(&raw) {
                Some(v) => v,
                None => {
                    // The log start only ever moves forward, so falling back to
                    // the first segment can expose old records but lose none.
                    tracing::warn!(file = %start_path.display(), "damaged log start file; using the first segment's base offset");
                    bases.first().copied().unwrap_or(0)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bases.first().copied().unwrap_or(0),
        Err(e) => return Err(Error::io("open log start file", &start_path, e)),
    };

    // Segments wholly below the log start (retention interrupted mid-way).
    while bases.len() >= 2 && bases[1] <= log_start {
        remove_segment_files(storage, dir, bases[0])?;
        bases.remove(0);
        report.segments_deleted += 1;
    }

    if bases.is_empty() {
        let seg = Segment::create(storage, dir, log_start)?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        drop(seg);
        bases.push(log_start);
    }

    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let mut active_controls = Vec::new();
    let mut i = 0;
    while i < bases.len() {
        let base = bases[i];
        let path = dir.join(log_file_name(base));
        let mut file = storage
            .open(&path, OpenMode::Existing)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let is_last = i + 1 == bases.len();
        let mut rescanned = None;
        if !is_last {
            let next = bases[i + 1];
            if config.recovery_mode == RecoveryMode::TolerateTailCorruption
                && let Some(seg) = Segment::open_sealed_from_index(
                    storage,
                    base,
                    path.clone(),
                    Arc::clone(&file),
                    next,
                )
            {
                segments.push(Arc::new(seg));
                i += 1;
                continue;
            }
            let (scanned, data) = scan_file(file.as_ref(), &path, base, interval)?;
            let damage = match (&scanned.stop, scanned.next_offset == next) {
                (Some(stop), _) => Some((stop.position, stop.reason.clone())),
                (None, true) => None,
                (None, false) => Some((
                    scanned.valid_len,
                    format!(
                        "segment ends before offset {} but the next segment starts at {next}",
                        scanned.next_offset
                    ),
                )),
            };
            match damage {
                None => {
                    let seg = Segment::from_scan(base, path, file, scanned);
                    seg.write_indexes(storage)?;
                    report.indexes_rebuilt += 1;
                    segments.push(Arc::new(seg));
                    i += 1;
                    continue;
                }
                Some((position, reason))
                    if config.recovery_mode == RecoveryMode::TolerateTailCorruption =>
                {
                    return Err(Error::corrupt(path, position, reason));
                }
                Some((position, reason)) => {
                    tracing::warn!(segment = %path.display(), position, %reason, "cutting the log at corruption; deleting every later segment");
                    // Delete the later segments durably before cutting this
                    // one, so that a crash in between leaves a log whose last
                    // segment is the damaged one (which the default mode cuts
                    // at open), never a shortened segment followed by others.
                    for &later in &bases[i + 1..] {
                        let p = dir.join(log_file_name(later));
                        if let Ok(f) = storage.open(&p, OpenMode::Existing) {
                            report.bytes_truncated += f.len().unwrap_or(0);
                        }
                        remove_segment_files(storage, dir, later)?;
                        report.segments_deleted += 1;
                    }
                    storage
                        .sync_dir(dir)
                        .map_err(|e| Error::io("fsync directory", dir, e))?;
                    bases.truncate(i + 1);
                    // Fall through with this scan: the segment is now the
                    // active one.
                    rescanned = Some((scanned, data));
                }
            }
        }
        // The active segment: scan (unless just done), cut at the first
        // invalid batch.
        let (mut scanned, data) = match rescanned {
            Some(done) => done,
            None => scan_file(file.as_ref(), &path, base, interval)?,
        };
        if let Some(stop) = &scanned.stop {
            let cut_from = usize::try_from(stop.position).unwrap_or(data.len());
            report.bytes_truncated += data.len() as u64 - stop.position;
            report.batches_dropped += count_dropped_frames(&data[cut_from.min(data.len())..]);
            report.truncated_file = Some(path.clone());
            report.truncation_reason = Some(stop.reason.clone());
            tracing::warn!(
                segment = %path.display(),
                position = stop.position,
                bytes = data.len() as u64 - stop.position,
                reason = %stop.reason,
                "cutting the torn tail of the active segment"
            );
            // The scan borrowed the file's bytes through a map; with them
            // dropped, a fresh handle (nothing lent) may cut the file.
            drop(data);
            drop(file);
            file = storage
                .open(&path, OpenMode::Existing)
                .map_err(|e| Error::io("open segment", &path, e))?;
            file.set_len(scanned.valid_len)
                .map_err(|e| Error::io("truncate segment", &path, e))?;
        }
        // Index files of the active segment are stale by definition (left by a
        // crash between sealing and creating the next segment).
        for p in [
            path.with_extension("index"),
            path.with_extension("timeindex"),
        ] {
            let _ = storage.remove_file(&p);
        }
        // What was read may have been only in the page cache (the process
        // died before an fsync), and a cut must reach the disk: make both
        // durable before calling the segment so.
        file.sync_all()
            .map_err(|e| Error::io("fsync segment", &path, e))?;
        report.batches_scanned = scanned.batches;
        active_controls = std::mem::take(&mut scanned.controls);
        segments.push(Arc::new(Segment::from_scan(base, path, file, scanned)));
        break;
    }

    let next_offset = segments.last().map_or(log_start, |s| s.next_offset());
    if log_start > next_offset {
        tracing::warn!(dir = %dir.display(), log_start, next_offset, "log start is past the end of the log; emptying it");
        for seg in segments.drain(..) {
            remove_segment_files(storage, dir, seg.base_offset)?;
            report.segments_deleted += 1;
        }
        let seg = Segment::create(storage, dir, log_start)?;
        segments.push(Arc::new(seg));
        active_controls.clear();
    }
    log_start = log_start.max(segments[0].base_offset);
    // Always: a crash may have come between creating a file (a segment, a
    // rebuilt index) and fsyncing the directory.
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;

    report.segments = segments.len();
    report.log_start_offset = log_start;
    report.next_offset = segments.last().map_or(log_start, |s| s.next_offset());
    report.duration = started.elapsed();
    Ok(Recovered {
        segments,
        active_controls,
        log_start,
        report,
    })
}
