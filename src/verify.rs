//! Offline verification of a store directory: every segment of every
//! partition is read and checked (CRC, structure, offset continuity) and its
//! index files are compared with what the segment says. Nothing is modified.
//!
//! The store's directory lock is taken for the duration, so verification
//! never races with a writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::checkpoint::decode_checkpoint;
use crate::format::index::{decode_offset_index, decode_time_index};
use crate::format::meta::{
    LOG_START_FILE, PRODUCER_IDS_FILE, decode_log_start, decode_producer_ids,
};
use crate::format::{BatchView, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN};
use crate::segment::{log_file_name, parse_file_name, scan};
use crate::storage::{FsStorage, OpenMode, Storage, read_all};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Severity {
    /// Expected after a crash and repaired by the next open (a torn tail of
    /// the active segment, a missing index file).
    Warning,
    /// Damage: bad CRC or structure in a sealed segment, an offset gap, an
    /// index that disagrees with its segment.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// A stable `snake_case` name of the finding.
    pub kind: &'static str,
    /// The file concerned.
    pub path: PathBuf,
    /// Byte position in that file.
    pub position: u64,
    /// What was found.
    pub detail: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Partitions checked.
    pub partitions: usize,
    /// Segments checked.
    pub segments: usize,
    /// Valid batches seen.
    pub batches: u64,
    /// Bytes of segment data read.
    pub bytes: u64,
    /// Findings, in the order found.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// `true` when no finding is an error.
    pub fn is_sound(&self) -> bool {
        self.problems.iter().all(|p| p.severity != Severity::Error)
    }
}

/// Progress of a running verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Segment bytes checked so far.
    pub bytes_done: u64,
    /// Segment bytes in the whole store.
    pub bytes_total: u64,
}

/// Verify the store in `dir` on the real filesystem; `progress` is called
/// after each segment.
pub fn verify(dir: impl AsRef<Path>, progress: impl FnMut(Progress)) -> Result<VerifyReport> {
    verify_with_storage(dir.as_ref(), Arc::new(FsStorage::new()), progress)
}

/// [`verify`] on any storage.
pub fn verify_with_storage(
    dir: &Path,
    storage: Arc<dyn Storage>,
    mut progress: impl FnMut(Progress),
) -> Result<VerifyReport> {
    if !storage.is_dir(dir) {
        return Err(Error::io(
            "open store directory",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let _lock = storage.lock_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            Error::io("lock store directory", dir, e)
        }
    })?;
    let mut report = VerifyReport::default();
    let list = |p: &Path| {
        storage
            .list_dir(p)
            .map_err(|e| Error::io("list directory", p, e))
    };

    let ids_path = dir.join(PRODUCER_IDS_FILE);
    if let Ok(f) = storage.open(&ids_path, OpenMode::Existing) {
        let raw = read_all(f.as_ref()).map_err(|e| Error::io("read", &ids_path, e))?;
        if decode_producer_ids(&raw).is_none() {
            report.problems.push(Problem {
                severity: Severity::Error,
                kind: "bad_producer_ids",
                path: ids_path.clone(),
                position: 0,
                detail: "the producer-ids record is damaged; the store will not open".into(),
            });
        }
    }

    // First pass: what is there, and how many bytes.
    let mut partitions = Vec::new();
    let mut total = 0u64;
    for name in list(dir)? {
        let pdir = dir.join(&name);
        if !storage.is_dir(&pdir) || crate::store::parse_partition_dir(&name).is_none() {
            continue;
        }
        let mut bases: Vec<i64> = list(&pdir)?
            .iter()
            .filter_map(|n| match parse_file_name(n) {
                Some((b, "log")) => Some(b),
                _ => None,
            })
            .collect();
        bases.sort_unstable();
        for &b in &bases {
            let p = pdir.join(log_file_name(b));
            let f = storage
                .open(&p, OpenMode::Existing)
                .map_err(|e| Error::io("open segment", &p, e))?;
            total += f.len().map_err(|e| Error::io("stat segment", &p, e))?;
        }
        partitions.push((pdir, bases));
    }

    let mut done = 0u64;
    for (pdir, bases) in partitions {
        report.partitions += 1;
        let start_path = pdir.join(LOG_START_FILE);
        let mut log_start = None;
        if let Ok(f) = storage.open(&start_path, OpenMode::Existing) {
            let raw = read_all(f.as_ref()).map_err(|e| Error::io("read", &start_path, e))?;
            log_start = decode_log_start(&raw);
            if log_start.is_none() {
                report.problems.push(Problem {
                    severity: Severity::Error,
                    kind: "bad_log_start_file",
                    path: start_path.clone(),
                    position: 0,
                    detail: "the log start offset file is damaged".into(),
                });
            }
        }
        let mut end_offset = None;
        for (i, &base) in bases.iter().enumerate() {
            let path = pdir.join(log_file_name(base));
            let is_last = i + 1 == bases.len();
            // Wholly below the log start: left by an interrupted retention,
            // deleted at the next open; not part of the log.
            if let (Some(start), Some(&next)) = (log_start, bases.get(i + 1))
                && next <= start
            {
                report.problems.push(Problem {
                    severity: Severity::Warning,
                    kind: "pending_deletion",
                    path: path.clone(),
                    position: 0,
                    detail: format!(
                        "segment lies below the log start offset {start}; the next open deletes it"
                    ),
                });
                continue;
            }
            let file = storage
                .open(&path, OpenMode::Existing)
                .map_err(|e| Error::io("open segment", &path, e))?;
            let len = file
                .len()
                .map_err(|e| Error::io("stat segment", &path, e))?;
            let data = file
                .read_bytes(0, usize::try_from(len).unwrap_or(usize::MAX))
                .map_err(|e| Error::io("read segment", &path, e))?;
            let s = scan(&data, base, 4096);
            if is_last {
                end_offset = Some(s.next_offset);
            }
            report.segments += 1;
            report.batches += s.batches;
            report.bytes += len;
            if let Some(stop) = &s.stop {
                let (severity, kind) = if is_last {
                    (Severity::Warning, "torn_tail")
                } else {
                    (Severity::Error, "corrupt_batch")
                };
                report.problems.push(Problem {
                    severity,
                    kind,
                    path: path.clone(),
                    position: stop.position,
                    detail: stop.reason.clone(),
                });
            }
            for &pos in &s.controls {
                let at = usize::try_from(pos).unwrap_or(usize::MAX);
                let checked = BatchView::parse(data.get(at..).unwrap_or_default())
                    .and_then(|v| decode_checkpoint(&v, |_| {}));
                if let Err(e) = checked {
                    report.problems.push(Problem {
                        severity: Severity::Warning,
                        kind: "bad_checkpoint",
                        path: path.clone(),
                        position: pos,
                        detail: format!("a control batch that is not a valid producer checkpoint ({e}); recovery uses an older one and replays more, or fails to open the log if there is none"),
                    });
                }
            }
            if let Some(&next) = bases.get(i + 1) {
                if s.stop.is_none() && s.next_offset != next {
                    report.problems.push(Problem {
                        severity: Severity::Error,
                        kind: "offset_gap",
                        path: path.clone(),
                        position: s.valid_len,
                        detail: format!(
                            "segment ends before offset {} but the next segment starts at {next}",
                            s.next_offset
                        ),
                    });
                }
                if s.stop.is_none() {
                    check_indexes(
                        storage.as_ref(),
                        &path,
                        base,
                        next,
                        &data,
                        s.max_timestamp,
                        &mut report,
                    );
                }
            }
            done += len;
            progress(Progress {
                bytes_done: done,
                bytes_total: total,
            });
        }
        if let (Some(start), Some(end)) = (log_start, end_offset)
            && start > end
        {
            report.problems.push(Problem {
                severity: Severity::Error,
                kind: "log_start_past_end",
                path: start_path.clone(),
                position: 0,
                detail: format!("the log start offset {start} lies past the end of the log ({end}); the next open would empty the log"),
            });
        }
    }
    Ok(report)
}

/// Compare a sealed segment's index files with the segment.
fn check_indexes(
    storage: &dyn Storage,
    path: &Path,
    base: i64,
    next: i64,
    data: &[u8],
    max_ts: i64,
    report: &mut VerifyReport,
) {
    let mut problem = |severity, kind, path: PathBuf, position: u64, detail: String| {
        report.problems.push(Problem {
            severity,
            kind,
            path,
            position,
            detail,
        });
    };
    let load = |ext: &str| -> Option<Vec<u8>> {
        let f = storage
            .open(&path.with_extension(ext), OpenMode::Existing)
            .ok()?;
        read_all(f.as_ref()).ok()
    };
    let (Some(raw_offsets), Some(raw_times)) = (load("index"), load("timeindex")) else {
        problem(
            Severity::Warning,
            "missing_index",
            path.to_path_buf(),
            0,
            "index files are missing; they are rebuilt on open".into(),
        );
        return;
    };
    let ipath = path.with_extension("index");
    let tpath = path.with_extension("timeindex");
    if raw_offsets.len() % OFFSET_ENTRY_LEN != 0 {
        problem(
            Severity::Error,
            "bad_index",
            ipath.clone(),
            0,
            "length is not a multiple of 8".into(),
        );
    }
    if raw_times.len() % TIME_ENTRY_LEN != 0 {
        problem(
            Severity::Error,
            "bad_index",
            tpath.clone(),
            0,
            "length is not a multiple of 12".into(),
        );
    }
    let mut prev: Option<(u32, u32)> = None;
    for (i, e) in decode_offset_index(&raw_offsets).iter().enumerate() {
        let at = (i * OFFSET_ENTRY_LEN) as u64;
        let points_ok = data
            .get(e.position as usize..)
            .and_then(|b| BatchView::parse_header_only(b).ok())
            .is_some_and(|v| v.base_offset() == base + i64::from(e.relative_offset));
        let ordered = prev.is_none_or(|(r, p)| r < e.relative_offset && p < e.position);
        if !points_ok || !ordered {
            problem(
                Severity::Error,
                "index_mismatch",
                ipath.clone(),
                at,
                format!(
                    "entry (offset {}, position {}) does not point at that batch",
                    base + i64::from(e.relative_offset),
                    e.position
                ),
            );
            break;
        }
        prev = Some((e.relative_offset, e.position));
    }
    let times = decode_time_index(&raw_times);
    let span = u32::try_from(next - base).unwrap_or(u32::MAX);
    match times.last() {
        Some(s) if s.relative_offset == span && s.timestamp == max_ts => {}
        _ => problem(
            Severity::Error,
            "index_mismatch",
            tpath.clone(),
            raw_times.len().saturating_sub(TIME_ENTRY_LEN) as u64,
            format!("the last time index entry should be (timestamp {max_ts}, offset {next})"),
        ),
    }
    if !times
        .windows(2)
        .all(|w| w[0].timestamp <= w[1].timestamp && w[0].relative_offset < w[1].relative_offset)
    {
        problem(
            Severity::Error,
            "index_mismatch",
            tpath,
            0,
            "time index entries are out of order".into(),
        );
    }
}
