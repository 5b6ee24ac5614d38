//! Recovery over an arbitrary active segment.
//!
//! A store is built once, deterministically, on the simulated disk: plain and
//! idempotent batches of three anonymous producers (one of them crossing the
//! sequence wrap, one bumping its epoch), three sealed segments and an active
//! one that holds checkpoints and data, closed cleanly. Every execution
//! rebuilds that disk from the cached file images, replaces the active
//! segment's bytes by a variant drawn from the input, and opens the store:
//!
//! - mode 0: the input is the whole active segment;
//! - mode 1: a prefix of the real segment, then the input;
//! - mode 2: the input XORed over the real segment from an offset;
//! - mode 3: structural edits of the real segment's batches (header fields,
//!   dropped, duplicated and swapped batches, inserted data batches and
//!   checkpoints with arbitrary producer tables), offsets renumbered and
//!   CRCs fixed, so that the batches get past the CRC check.
//!
//! Checked in the default recovery mode, and in `TruncateAtCorruption` when
//! bit 6 of the first byte is set (with intact sealed segments it mostly
//! repeats the default mode, at twice the cost):
//! - nothing panics; the open succeeds (the sealed segments hold valid
//!   checkpoints, so docs/recovery.md leaves no reason to fail; a failure
//!   must at least name the path);
//! - every batch read back (with and without checkpoints) has a valid CRC and
//!   contiguous offsets from 0 to `next_offset`; time lookups succeed or give
//!   a clean `corrupt` error;
//! - the sealed segments' batches and files are unchanged;
//! - the active segment keeps exactly the longest prefix of whole, CRC-valid
//!   batches continuing the offsets (docs/recovery.md, "the scan"), byte for
//!   byte at the same file positions, and the file is cut there: recovery
//!   never invents and never cuts good data;
//! - the producer table (epoch, last sequence, window with offsets, last
//!   append time), the loaded checkpoint and the replay count equal a
//!   reference written from docs/recovery.md ("Producer state": newest valid
//!   checkpoint, segment by segment, then replay of the data batches after
//!   it, then expiry);
//! - afterwards (default mode) a checkpoint, a plain append, a retry of a
//!   window batch of each recovered producer (a duplicate with its recorded
//!   offsets), its next batch and a new producer's batch work and read back;
//!   a clean close and reopen gives the same log and table, cuts nothing and
//!   replays nothing;
//! - (`TruncateAtCorruption`) the same after a clean close right after the
//!   open.
//!
//! The three engine findings of its first runs (a checkpoint batch claiming
//! more than one offset made the log unopenable; offsets past the segment's
//! range put checkpoints out of reach) are fixed in f6ca24e, and the scan
//! rule here follows that commit.
//! `RS_TRACE=1` prints what the reference expects for each input.
#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oncelog::format::batch::{decrement_sequence, increment_sequence};
use oncelog::format::checkpoint::{
    CheckpointEncoder, WindowBatch, build_checkpoint_batch, decode_checkpoint,
};
use oncelog::format::{BatchBuilder, BatchView, HEADER_LEN};
use oncelog::storage::{OpenMode, SimStorage, Storage};
use oncelog::{AppendOutcome, Config, Durability, Log, ManualClock, RecoveryMode, Store};

const DIR: &str = "/s";
const TOPIC: &str = "t";
const NOW: i64 = 1_700_000_000_000;
/// `Config::producer_window` (default).
const WINDOW: usize = 5;
/// `Config::producer_expiration` (default, 7 days).
const EXPIRATION_MS: i64 = 7 * 24 * 3600 * 1000;

fn config(mode: RecoveryMode) -> Config {
    Config::default()
        .with_segment_bytes(1024)
        .with_index_interval_bytes(128)
        .with_preallocate_bytes(0)
        .with_durability(Durability::Os)
        .with_clock(Arc::new(ManualClock::new(NOW)))
        .with_retention_check_interval(Duration::from_secs(1 << 30))
        .with_recovery_mode(mode)
}

struct Base {
    dirs: Vec<PathBuf>,
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Sealed segments: base offset, path, bytes.
    sealed: Vec<(i64, PathBuf, Vec<u8>)>,
    /// Every batch of the sealed segments, in order.
    sealed_batches: Vec<Vec<u8>>,
    active_path: PathBuf,
    active_base: i64,
    active: Vec<u8>,
    ids: [i64; 3],
}

/// Writes the base workload.
struct Gen {
    ids: [i64; 3],
    seqs: [i32; 3],
    epochs: [i16; 3],
    step: usize,
}

impl Gen {
    /// Producer `who` (3: a plain batch) sends its next batch.
    fn send(&mut self, log: &Log, who: usize) {
        self.step += 1;
        let n = 1 + self.step % 3;
        let mut b = if who < 3 {
            BatchBuilder::new().with_producer(self.ids[who], self.epochs[who], self.seqs[who])
        } else {
            BatchBuilder::new()
        };
        for i in 0..n {
            let v = format!("v{}-{i}", self.step);
            b.push(NOW + self.step as i64, None, Some(v.as_bytes()), &[]);
        }
        let out = log.append(&b.build()).expect("base workload append");
        assert!(matches!(out, AppendOutcome::Appended { .. }), "{out:?}");
        if who < 3 {
            self.seqs[who] = increment_sequence(self.seqs[who], n as i32);
        }
    }
}

fn walk(
    sim: &SimStorage,
    dir: &Path,
    dirs: &mut Vec<PathBuf>,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) {
    dirs.push(dir.to_path_buf());
    for name in sim.list_dir(dir).unwrap() {
        let p = dir.join(name);
        if sim.is_dir(&p) {
            walk(sim, &p, dirs, files);
        } else {
            let bytes = sim.file_bytes(&p).unwrap();
            files.push((p, bytes));
        }
    }
}

/// (position, length) of each batch of `data`, which must be whole batches.
fn split(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < data.len() {
        let v = BatchView::parse_header_only(&data[p..]).expect("whole batches");
        out.push((p, v.total_len()));
        p += v.total_len();
    }
    out
}

fn build_base() -> Base {
    let sim = SimStorage::new();
    let store = Store::open_with_storage(
        DIR,
        config(RecoveryMode::TolerateTailCorruption),
        Arc::new(sim.clone()),
    )
    .unwrap();
    let log = store.log(TOPIC, 0).unwrap();
    let mut ids = [0i64; 3];
    for id in &mut ids {
        *id = store.init_producer().unwrap().0;
    }
    let mut g = Gen {
        ids,
        seqs: [0, 0, i32::MAX - 2],
        epochs: [0; 3],
        step: 0,
    };
    for _ in 0..3 {
        g.send(&log, 3); // the first segment begins with data
    }
    let mut i = 0;
    while log.stats().segments < 4 {
        g.send(&log, i % 4);
        i += 1;
        if i == 9 {
            log.checkpoint().unwrap();
        }
        if i == 13 {
            g.epochs[1] = 1;
            g.seqs[1] = 0;
        }
        assert!(i < 200, "the base workload does not roll");
    }
    // The new active segment: its first checkpoint and one batch so far.
    g.send(&log, 0);
    g.send(&log, 1);
    log.checkpoint().unwrap();
    g.send(&log, 3);
    g.send(&log, 2);
    g.send(&log, 0);
    assert_eq!(
        log.stats().segments,
        4,
        "the base workload rolled once more"
    );
    drop(log);
    store.close().unwrap();

    let mut dirs = Vec::new();
    let mut files = Vec::new();
    walk(&sim, Path::new(DIR), &mut dirs, &mut files);
    let mut segs: Vec<(i64, PathBuf, Vec<u8>)> = files
        .iter()
        .filter_map(|(p, b)| {
            let name = p.file_name()?.to_str()?;
            let stem = name.strip_suffix(".log")?;
            Some((stem.parse::<i64>().ok()?, p.clone(), b.clone()))
        })
        .collect();
    segs.sort_by_key(|s| s.0);
    assert_eq!(segs.len(), 4);
    let (active_base, active_path, active) = segs.pop().unwrap();
    let mut sealed_batches = Vec::new();
    for (_, _, bytes) in &segs {
        for (p, l) in split(bytes) {
            sealed_batches.push(bytes[p..p + l].to_vec());
        }
    }
    let base = Base {
        dirs,
        files,
        sealed: segs,
        sealed_batches,
        active_path,
        active_base,
        active,
        ids,
    };
    // The harness checks itself on the untouched image.
    let active = base.active.clone();
    check(&base, &active, RecoveryMode::TolerateTailCorruption, true);
    check(&base, &active, RecoveryMode::TruncateAtCorruption, false);
    base
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(build_base)
}

/// A fresh disk holding the base image with `active` as the active segment.
fn materialize(base: &Base, active: &[u8]) -> SimStorage {
    let sim = SimStorage::new();
    for d in &base.dirs {
        sim.create_dir_all(d).unwrap();
    }
    for (p, bytes) in &base.files {
        let f = sim.open(p, OpenMode::Create).unwrap();
        let b: &[u8] = if *p == base.active_path {
            active
        } else {
            bytes
        };
        if !b.is_empty() {
            f.write_at(b, 0).unwrap();
        }
        f.sync_data().unwrap();
    }
    for d in &base.dirs {
        sim.sync_dir(d).unwrap();
    }
    sim
}

/// The scan of docs/recovery.md: (position, length) of each batch of the
/// longest prefix of whole, CRC-valid batches continuing the offsets from
/// `base`, and the offset after it.
fn ref_scan(data: &[u8], base: i64) -> (Vec<(usize, usize)>, i64) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut next = base;
    while pos < data.len() {
        let Ok(v) = BatchView::parse(&data[pos..]) else {
            break;
        };
        // The log rolls before a segment's offsets span more than i32::MAX
        // (f6ca24e): a batch reaching further is not one it wrote.
        if v.base_offset() != next
            || v.last_offset_delta() < 0
            || u32::try_from(v.base_offset() - base).is_err()
            || v.last_offset() - base > i64::from(i32::MAX)
        {
            break;
        }
        let Some(n) = v.last_offset().checked_add(1) else {
            break;
        };
        out.push((pos, v.total_len()));
        next = n;
        pos += v.total_len();
    }
    (out, next)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct REntry {
    epoch: i16,
    last_ms: i64,
    window: VecDeque<WindowBatch>,
}

#[derive(Debug)]
struct RefRecovery {
    checkpoint: Option<i64>,
    replayed: u64,
    table: BTreeMap<i64, REntry>,
    /// The search ran out of segments after an invalid checkpoint: the
    /// default mode must fail the open.
    ran_out_invalid: bool,
}

/// A valid checkpoint (CRC, decodes, no producer twice, window offsets
/// before it) at the start of `data`: its offset and producers.
fn decode_at(data: &[u8]) -> Option<(i64, BTreeMap<i64, REntry>)> {
    let view = BatchView::parse(data).ok()?;
    let mut entries = BTreeMap::new();
    decode_checkpoint(&view, |p| {
        let mut window: VecDeque<WindowBatch> = p.window.iter().copied().collect();
        while window.len() > WINDOW {
            window.pop_front();
        }
        entries.insert(
            p.producer_id,
            REntry {
                epoch: p.epoch,
                last_ms: p.last_append_ms,
                window,
            },
        );
    })
    .ok()?;
    Some((view.base_offset(), entries))
}

/// docs/recovery.md, "Producer state", over the segments' kept bytes.
fn ref_producers(segs: &[&[u8]]) -> RefRecovery {
    let mut out = RefRecovery {
        checkpoint: None,
        replayed: 0,
        table: BTreeMap::new(),
        ran_out_invalid: false,
    };
    let mut invalid = false;
    let start: (usize, usize) = 'search: {
        for i in (0..segs.len()).rev() {
            let data = segs[i];
            if data.is_empty() {
                continue; // an empty segment sends the search further back
            }
            let batches = split(data);
            for &(p, l) in batches.iter().rev() {
                if !BatchView::parse_header_only(&data[p..])
                    .unwrap()
                    .is_control()
                {
                    continue;
                }
                match decode_at(&data[p..]) {
                    Some((at, table)) => {
                        out.checkpoint = Some(at);
                        out.table = table;
                        break 'search (i, p + l);
                    }
                    None => invalid = true,
                }
            }
            if !BatchView::parse_header_only(data).unwrap().is_control() {
                break 'search (i, 0); // began with an empty table
            }
        }
        out.ran_out_invalid = invalid;
        (0, 0)
    };
    for (i, data) in segs.iter().enumerate().skip(start.0) {
        let from = if i == start.0 { start.1 } else { 0 };
        for (p, _) in split(&data[from..]) {
            let v = BatchView::parse_header_only(&data[from + p..]).unwrap();
            if v.is_control() || v.producer_id() < 0 {
                continue;
            }
            out.replayed += 1;
            let (id, epoch, seq, delta) = (
                v.producer_id(),
                v.producer_epoch(),
                v.base_sequence(),
                v.last_offset_delta(),
            );
            if seq < 0 || epoch < 0 {
                continue;
            }
            if out.table.get(&id).is_some_and(|e| epoch < e.epoch) {
                continue; // an older epoch is ignored (anonymous producers)
            }
            let e = out.table.entry(id).or_insert_with(|| REntry {
                epoch,
                last_ms: NOW,
                window: VecDeque::new(),
            });
            if e.epoch != epoch {
                e.window.clear();
                e.epoch = epoch;
            }
            if e.window.len() >= WINDOW {
                e.window.pop_front();
            }
            e.window.push_back(WindowBatch {
                last_seq: increment_sequence(seq, delta),
                delta,
                last_offset: v.base_offset() + i64::from(delta),
            });
            e.last_ms = e.last_ms.max(NOW);
        }
    }
    out.table
        .retain(|_, e| NOW.saturating_sub(e.last_ms) < EXPIRATION_MS);
    out
}

type Table = Vec<(i64, i16, Option<i32>, i64, Vec<(i32, i32, i64, i64)>)>;

fn ref_table(t: &BTreeMap<i64, REntry>) -> Table {
    t.iter()
        .map(|(&id, e)| {
            (
                id,
                e.epoch,
                e.window.back().map(|w| w.last_seq),
                e.last_ms,
                e.window
                    .iter()
                    .map(|w| {
                        (
                            decrement_sequence(w.last_seq, w.delta),
                            w.last_seq,
                            w.last_offset.wrapping_sub(i64::from(w.delta)),
                            w.last_offset,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn engine_table(log: &Log) -> Table {
    log.producers()
        .into_iter()
        .map(|p| {
            assert_eq!(p.name, None, "no named producers here");
            (
                p.producer_id,
                p.epoch,
                p.last_sequence,
                p.last_append_ms,
                p.batches
                    .iter()
                    .map(|b| {
                        (
                            b.first_sequence,
                            b.last_sequence,
                            b.base_offset,
                            b.last_offset,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Every batch from the log start to the end, checking CRCs and continuity.
fn read_all(log: &Log, checkpoints: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.next_offset();
    while offset < end {
        let mut batches = log
            .read(offset, 1 << 16)
            .unwrap_or_else(|e| panic!("read at {offset}: {e}"));
        if checkpoints {
            batches = batches.with_checkpoints();
        }
        let next = batches
            .next_offset()
            .expect("a read below the end returns bytes");
        assert!(next > offset, "read at {offset} does not advance");
        for b in &batches {
            let b = b.unwrap_or_else(|e| panic!("batch read at {offset}: {e}"));
            let v = BatchView::parse(b.bytes()).expect("a batch read back has a valid CRC");
            let _ = v;
            out.push(b.bytes().to_vec());
        }
        offset = next;
    }
    out
}

/// The checks after a successful open; returns nothing, panics on a violation.
fn check_opened(
    base: &Base,
    sim: &SimStorage,
    log: &Log,
    fuzzed: &[u8],
    kept: &[(usize, usize)],
    next_want: i64,
    want: &RefRecovery,
) {
    let valid_len = kept.last().map_or(0, |&(p, l)| p + l);
    assert_eq!(log.log_start_offset(), 0, "log start");
    assert_eq!(
        log.next_offset(),
        next_want,
        "next offset: recovery kept another prefix than the longest valid one ({} of {} bytes valid)",
        valid_len,
        fuzzed.len()
    );
    let all = read_all(log, true);
    let mut at = 0i64;
    for b in &all {
        let v = BatchView::parse(b).unwrap();
        assert_eq!(v.base_offset(), at, "offsets are contiguous");
        at = v.last_offset() + 1;
    }
    assert_eq!(at, next_want, "the last batch ends at next_offset");
    let n = base.sealed_batches.len();
    assert!(all.len() >= n, "sealed batches missing");
    assert!(
        all[..n] == base.sealed_batches[..],
        "a sealed segment's batches changed"
    );
    let active: Vec<&[u8]> = kept.iter().map(|&(p, l)| &fuzzed[p..p + l]).collect();
    assert_eq!(
        all.len() - n,
        active.len(),
        "batches kept in the active segment"
    );
    for (i, (got, want)) in all[n..].iter().zip(&active).enumerate() {
        assert!(
            got[..] == want[..],
            "active batch {i} differs from the file's bytes at its position"
        );
    }
    let data: Vec<&Vec<u8>> = all
        .iter()
        .filter(|b| !BatchView::parse(b).unwrap().is_control())
        .collect();
    let plain = read_all(log, false);
    assert!(
        plain.iter().eq(data.iter().copied()),
        "reads without checkpoints are the data batches"
    );
    for (_, path, bytes) in &base.sealed {
        assert!(
            sim.file_bytes(path).as_ref() == Some(bytes),
            "sealed file {} changed",
            path.display()
        );
    }
    assert!(
        sim.file_bytes(&base.active_path).as_deref() == Some(&fuzzed[..valid_len]),
        "the active segment is not cut at the end of its valid prefix"
    );
    let r = log.recovery_report();
    assert_eq!(
        r.bytes_truncated,
        (fuzzed.len() - valid_len) as u64,
        "{r:?}"
    );
    assert_eq!(
        r.checkpoint_offset, want.checkpoint,
        "checkpoint loaded: {r:?}"
    );
    assert_eq!(r.batches_replayed, want.replayed, "batches replayed: {r:?}");
    assert_eq!(r.next_offset, next_want);
    assert_eq!(engine_table(log), ref_table(&want.table), "producer table");
    // Time lookups decode records, which recovery does not check: a batch
    // with a valid CRC but undecodable records is a clean `corrupt` error.
    for t in [i64::MIN, -1, 0, NOW, NOW + 1000, i64::MAX] {
        if let Err(e) = log.offset_for_timestamp(t) {
            assert!(
                e.kind() == "corrupt" && e.to_string().contains(DIR),
                "offset_for_timestamp({t}): {e}"
            );
        }
    }
}

fn batch(id: Option<(i64, i16, i32)>, n: usize, tag: &str) -> Vec<u8> {
    let mut b = match id {
        Some((id, epoch, seq)) => BatchBuilder::new().with_producer(id, epoch, seq),
        None => BatchBuilder::new(),
    };
    for i in 0..n {
        let v = format!("{tag}-{i}");
        b.push(NOW, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build()
}

/// Append and check the batch reads back at the offsets it got.
fn append_new(log: &Log, b: &[u8], what: &str) {
    let before = log.next_offset();
    let n = i64::from(BatchView::parse(b).unwrap().last_offset_delta()) + 1;
    match log.append(b) {
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset,
        }) => {
            assert!(
                base_offset == before || base_offset == before + 1,
                "{what}: appended at {base_offset}, next offset was {before}"
            );
            assert_eq!(last_offset - base_offset, n - 1, "{what}");
            assert_eq!(log.next_offset(), last_offset + 1, "{what}");
            let got = log.read(base_offset, 1).unwrap();
            let first = got.iter().next().expect("the batch reads back").unwrap();
            assert_eq!(first.base_offset(), base_offset, "{what}");
            assert!(
                first.bytes()[8..] == b[8..],
                "{what}: other bytes read back"
            );
        }
        other => panic!("{what}: expected Appended, got {other:?}"),
    }
}

/// After recovery: a checkpoint, then appends: plain, a retry and the next
/// batch of each recovered producer, a new producer.
fn append_after(store: &Store, log: &Log) {
    log.checkpoint().expect("a checkpoint right after recovery");
    append_new(log, &batch(None, 2, "after"), "plain append after recovery");
    let table = log.producers();
    for p in table.iter().take(4) {
        if p.epoch < 0 || p.batches.is_empty() {
            continue;
        }
        let w = &p.batches;
        // A retry of a window batch: the duplicate of its recorded offsets.
        if let Some(b) = w.iter().find(|b| {
            let delta = b.last_offset - b.base_offset;
            (0..8).contains(&delta)
                && b.first_sequence >= 0
                && increment_sequence(b.first_sequence, delta as i32) == b.last_sequence
                && w.iter()
                    .filter(|o| {
                        (o.first_sequence, o.last_sequence) == (b.first_sequence, b.last_sequence)
                    })
                    .count()
                    == 1
        }) {
            let n = (b.last_offset - b.base_offset + 1) as usize;
            let before = log.next_offset();
            let r = log.append(&batch(
                Some((p.producer_id, p.epoch, b.first_sequence)),
                n,
                "retry",
            ));
            assert_eq!(
                r.as_ref().ok(),
                Some(&AppendOutcome::Duplicate {
                    base_offset: Some(b.base_offset),
                    last_offset: Some(b.last_offset)
                }),
                "retry of producer {}'s window batch {b:?}: {r:?}",
                p.producer_id
            );
            assert_eq!(log.next_offset(), before, "a duplicate writes nothing");
        }
        // Its next batch.
        let tail = w.last().unwrap();
        let next = increment_sequence(tail.last_sequence, 1);
        if tail.last_sequence >= 0
            && !w
                .iter()
                .any(|b| b.first_sequence == next && b.last_sequence == next)
        {
            append_new(
                log,
                &batch(Some((p.producer_id, p.epoch, next)), 1, "next"),
                &format!("next batch of producer {} after recovery", p.producer_id),
            );
        }
    }
    let (id, epoch) = store.init_producer().unwrap();
    if log.producer(id).is_none() {
        append_new(
            log,
            &batch(Some((id, epoch, 7)), 3, "new"),
            "a new producer after recovery",
        );
    }
}

fn open(sim: &SimStorage, mode: RecoveryMode) -> oncelog::Result<(Store, Log)> {
    let store = Store::open_with_storage(DIR, config(mode), Arc::new(sim.clone()))?;
    let log = store
        .existing_log(TOPIC, 0)
        .unwrap()
        .expect("the partition is still there");
    Ok((store, log))
}

/// Open the store with `fuzzed` as its active segment in `mode` and check.
fn check(base: &Base, fuzzed: &[u8], mode: RecoveryMode, after: bool) {
    let (kept, next_want) = ref_scan(fuzzed, base.active_base);
    let valid_len = kept.last().map_or(0, |&(p, l)| p + l);
    let mut segs: Vec<&[u8]> = base.sealed.iter().map(|s| &s.2[..]).collect();
    segs.push(&fuzzed[..valid_len]);
    let want = ref_producers(&segs);

    if std::env::var_os("RS_TRACE").is_some() {
        for &(p, l) in &kept {
            let v = BatchView::parse(&fuzzed[p..]).unwrap();
            eprintln!(
                "  kept @{p} len {l}: offsets {}..={} control {} producer {} epoch {} seq {} records {}",
                v.base_offset(),
                v.last_offset(),
                v.is_control(),
                v.producer_id(),
                v.producer_epoch(),
                v.base_sequence(),
                v.record_count()
            );
        }
        eprintln!(
            "  {mode:?}: checkpoint {:?}, replayed {}, ran out after invalid {}",
            want.checkpoint, want.replayed, want.ran_out_invalid
        );
    }
    let sim = materialize(base, fuzzed);
    let (store, log) = match open(&sim, mode) {
        Ok(x) => x,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(DIR), "an open error that names no path: {msg}");
            if want.ran_out_invalid && mode == RecoveryMode::TolerateTailCorruption {
                return;
            }
            panic!("open in {mode:?} failed: {msg} (kind {})", e.kind());
        }
    };
    assert!(
        !(want.ran_out_invalid && mode == RecoveryMode::TolerateTailCorruption),
        "opened from an empty table although the only checkpoints are invalid"
    );
    if std::env::var_os("RS_TRACE").is_some() {
        eprintln!(
            "{mode:?}: {} bytes, {} batches kept ({} bytes), next {next_want}, checkpoint {:?}, replayed {}, table {:?}",
            fuzzed.len(),
            kept.len(),
            valid_len,
            want.checkpoint,
            want.replayed,
            ref_table(&want.table)
        );
    }
    check_opened(base, &sim, &log, fuzzed, &kept, next_want, &want);

    if after {
        append_after(&store, &log);
    }
    // A clean close and a reopen: the same log and table, nothing replayed.
    let before = read_all(&log, true);
    let table = engine_table(&log);
    drop(log);
    store.close().unwrap();
    let (store, log) = open(&sim, RecoveryMode::TolerateTailCorruption)
        .unwrap_or_else(|e| panic!("reopen after a clean close: {e}"));
    let again = read_all(&log, true);
    assert!(
        again.len() >= before.len() && again[..before.len()] == before[..],
        "a clean reopen changed the log"
    );
    assert!(
        again.len() <= before.len() + 1,
        "a clean close wrote more than a checkpoint"
    );
    if let Some(extra) = again.get(before.len()) {
        assert!(
            BatchView::parse(extra).unwrap().is_control(),
            "a clean close wrote data"
        );
    }
    let r = log.recovery_report();
    assert_eq!(r.bytes_truncated, 0, "a clean reopen cut bytes: {r:?}");
    assert_eq!(
        r.batches_replayed, 0,
        "a clean reopen replayed batches: {r:?}"
    );
    assert_eq!(
        engine_table(&log),
        table,
        "the table changed across a clean close"
    );
    drop(log);
    drop(store);
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn raw(&mut self, n: usize) -> i64 {
        let mut v: i64 = 0;
        for _ in 0..n {
            v = (v << 8) | i64::from(self.byte());
        }
        // Sign-extend from n bytes.
        let shift = 64 - 8 * n as u32;
        if shift < 64 { (v << shift) >> shift } else { v }
    }
    fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.pos..).unwrap_or_default();
        self.pos = self.data.len();
        r
    }
}

/// (position, width) of the editable header fields.
const FIELDS: [(usize, usize); 12] = [
    (0, 8),  // baseOffset
    (8, 4),  // batchLength
    (12, 4), // partitionLeaderEpoch
    (16, 1), // magic
    (21, 2), // attributes
    (23, 4), // lastOffsetDelta
    (27, 8), // baseTimestamp
    (35, 8), // maxTimestamp
    (43, 8), // producerId
    (51, 2), // producerEpoch
    (53, 4), // baseSequence
    (57, 4), // recordsCount
];

fn get_field(b: &[u8], (at, w): (usize, usize)) -> i64 {
    let mut v: i64 = 0;
    for &x in &b[at..at + w] {
        v = (v << 8) | i64::from(x);
    }
    let shift = 64 - 8 * w as u32;
    if shift < 64 { (v << shift) >> shift } else { v }
}

fn set_field(b: &mut [u8], (at, w): (usize, usize), v: i64) {
    let bytes = v.to_be_bytes();
    b[at..at + w].copy_from_slice(&bytes[8 - w..]);
}

fn fix_crc(b: &mut [u8]) {
    if b.len() >= 21 {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn pick_id(inp: &mut Input<'_>, ids: &[i64; 3]) -> Option<i64> {
    let s = inp.byte();
    match s % 6 {
        0..=2 => Some(ids[usize::from(s % 6)]),
        3 => None,
        4 => Some(i64::from(s / 6)),
        _ => Some(inp.raw(8)),
    }
}

fn gen_checkpoint(inp: &mut Input<'_>, ids: &[i64; 3], active_base: i64) -> Vec<u8> {
    let written = NOW + i64::from(inp.byte() as i8) * 12 * 3_600_000;
    let count = usize::from(inp.byte() % 4);
    let mut enc = CheckpointEncoder::new(written, count);
    for _ in 0..count {
        let id = pick_id(inp, ids).unwrap_or(-1);
        let e = inp.byte();
        let epoch = if e & 0x80 != 0 {
            inp.raw(2) as i16
        } else {
            i16::from(e % 3)
        };
        let last_ms = match inp.byte() {
            b @ 0..200 => NOW - i64::from(b) * 3_600_000,
            b @ 200..250 => NOW + i64::from(b),
            _ => inp.raw(8),
        };
        let n = usize::from(inp.byte() % 7);
        let mut window = Vec::with_capacity(n);
        let mut off = active_base - 40 + i64::from(inp.byte() % 64);
        for _ in 0..n {
            let k = inp.byte();
            let last_seq = if k & 1 != 0 {
                inp.raw(4) as i32
            } else {
                i32::from(k >> 1)
            };
            let delta = if k & 0x80 != 0 {
                inp.raw(4) as i32
            } else {
                i32::from((k >> 4) & 3)
            };
            off = if k & 0x40 != 0 {
                inp.raw(8)
            } else {
                off + 1 + i64::from(delta.max(0))
            };
            window.push(WindowBatch {
                last_seq,
                delta,
                last_offset: off,
            });
        }
        enc.push(id, epoch, last_ms, window.into_iter());
    }
    build_checkpoint_batch(&enc.finish()).expect("a small checkpoint builds")
}

fn gen_data(inp: &mut Input<'_>, ids: &[i64; 3]) -> Vec<u8> {
    let id = pick_id(inp, ids);
    let e = inp.byte();
    let epoch = if e & 0x80 != 0 {
        inp.raw(2) as i16
    } else {
        i16::from(e % 3)
    };
    let s = inp.byte();
    let seq = match s % 4 {
        0 => i32::from(s >> 2),
        1 => i32::MAX - i32::from(s >> 2),
        2 => inp.raw(4) as i32,
        _ => 50 + i32::from(s >> 2),
    };
    let n = 1 + usize::from(inp.byte() % 4);
    batch(id.map(|id| (id, epoch, seq)), n, "fz")
}

/// Mode 3: structural edits of the base active segment's batches.
fn structured(base: &Base, flags: u8, inp: &mut Input<'_>) -> Vec<u8> {
    let mut batches: Vec<Vec<u8>> = split(&base.active)
        .into_iter()
        .map(|(p, l)| base.active[p..p + l].to_vec())
        .collect();
    let mut tail: &[u8] = &[];
    let mut ops = 0;
    while !inp.done() && ops < 32 {
        ops += 1;
        let op = inp.byte();
        let len = batches.len();
        let i = if len == 0 {
            0
        } else {
            usize::from(inp.byte()) % len
        };
        match op % 9 {
            0 if len > 0 => {
                let f = FIELDS[usize::from(inp.byte()) % FIELDS.len()];
                let how = inp.byte();
                let b = &mut batches[i];
                if b.len() >= f.0 + f.1 {
                    let v = if how & 1 != 0 {
                        inp.raw(f.1)
                    } else {
                        get_field(b, f).wrapping_add(i64::from(how as i8 >> 1))
                    };
                    set_field(b, f, v);
                }
            }
            1 if len > 0 => {
                batches.remove(i);
            }
            2 if len > 0 => {
                let j = usize::from(inp.byte()) % (len + 1);
                let b = batches[i].clone();
                batches.insert(j, b);
            }
            3 if len > 0 => {
                let j = usize::from(inp.byte()) % len;
                batches.swap(i, j);
            }
            4 => {
                let j = usize::from(inp.byte()) % (len + 1);
                let c = gen_checkpoint(inp, &base.ids, base.active_base);
                batches.insert(j.min(batches.len()), c);
            }
            5 => {
                let j = usize::from(inp.byte()) % (len + 1);
                let d = gen_data(inp, &base.ids);
                batches.insert(j.min(batches.len()), d);
            }
            6 if len > 0 => {
                let keep = usize::from(inp.byte()) * batches[i].len() / 256;
                batches[i].truncate(keep);
            }
            7 if len > 0 => {
                let at = (inp.raw(2) as u16 as usize) % batches[i].len().max(1);
                let v = inp.byte();
                if let Some(x) = batches[i].get_mut(at) {
                    *x = v;
                }
            }
            8 => {
                tail = inp.rest();
            }
            _ => {}
        }
    }
    if flags & 0x10 == 0 {
        // Renumber: contiguous offsets from the segment's base.
        let mut next = base.active_base;
        for b in &mut batches {
            if b.len() < HEADER_LEN {
                break;
            }
            set_field(b, FIELDS[0], next);
            let delta = get_field(b, FIELDS[5]);
            next = next.wrapping_add(delta.max(0) + 1);
        }
    }
    if flags & 0x20 == 0 {
        for b in &mut batches {
            fix_crc(b);
        }
    }
    let mut out = batches.concat();
    out.extend_from_slice(tail);
    out
}

fn fuzzed_segment(base: &Base, data: &[u8]) -> Vec<u8> {
    let Some((&first, rest)) = data.split_first() else {
        return base.active.clone();
    };
    let mut inp = Input { data: rest, pos: 0 };
    let len = base.active.len();
    match first % 4 {
        0 => rest.to_vec(),
        1 => {
            let k = (inp.raw(2) as u16 as usize) % (len + 1);
            let mut out = base.active[..k].to_vec();
            out.extend_from_slice(inp.rest());
            out
        }
        2 => {
            let off = (inp.raw(2) as u16 as usize) % (len + 1);
            let mut out = base.active.clone();
            for (i, &x) in inp.rest().iter().enumerate() {
                match out.get_mut(off + i) {
                    Some(b) => *b ^= x,
                    None => out.push(x),
                }
            }
            out
        }
        _ => structured(base, first, &mut inp),
    }
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let fuzzed = fuzzed_segment(base, data);
    check(base, &fuzzed, RecoveryMode::TolerateTailCorruption, true);
    // The salvaging mode only when the input asks for it (bit 6 of the first
    // byte): with intact sealed segments it mostly repeats the default mode.
    if data.first().is_some_and(|b| b & 0x40 != 0) {
        check(base, &fuzzed, RecoveryMode::TruncateAtCorruption, false);
    }
});
