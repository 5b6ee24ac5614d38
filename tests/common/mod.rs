//! Helpers shared by the integration tests.
#![allow(dead_code)]

use oncelog::format::BatchBuilder;
use oncelog::{AppendOutcome, Config, Log, ProducerInfo};

/// A batch of `n` records whose values are `"<tag>-<i>"`, timestamps from `ts`.
pub fn batch(tag: &str, n: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let v = format!("{tag}-{i}");
        b.push(ts + i as i64, Some(tag.as_bytes()), Some(v.as_bytes()), &[]);
    }
    b.build()
}

/// A batch of one record whose value is `size` bytes of `fill`.
pub fn sized_batch(size: usize, fill: u8, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push(ts, None, Some(&vec![fill; size]), &[]);
    b.build()
}

/// Small segments so that tests roll often.
pub fn small_config() -> Config {
    Config::default()
        .with_segment_bytes(4096)
        .with_index_interval_bytes(256)
        .with_durability(oncelog::Durability::Os)
}

/// Every record of the log as (offset, value).
pub fn read_all(log: &Log) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.next_offset() {
        let batches = log.read(offset, 1 << 16).expect("read");
        assert!(
            !batches.is_empty(),
            "read at {offset} below the end returned nothing"
        );
        for batch in &batches {
            let batch = batch.expect("valid batch");
            let view = batch.view();
            for rec in view.records().expect("uncompressed") {
                let rec = rec.expect("valid record");
                let off = view.record_offset(&rec);
                if off >= offset {
                    out.push((off, rec.value.unwrap_or_default().to_vec()));
                }
            }
        }
        // Past the skipped checkpoints too.
        offset = batches.next_offset().expect("non-empty read");
    }
    out
}

/// Every batch's (base, last) offsets.
pub fn batch_offsets(log: &Log) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.next_offset() {
        let batches = log.read(offset, 1 << 16).expect("read");
        assert!(
            !batches.is_empty(),
            "read at {offset} below the end returned nothing"
        );
        for batch in &batches {
            let batch = batch.expect("valid batch");
            out.push((batch.base_offset(), batch.last_offset()));
        }
        offset = batches.next_offset().expect("non-empty read");
    }
    out
}

/// The segment files (`*.log`) of a partition directory, sorted.
pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// A duplicate answer with these original offsets.
pub fn dup(base: i64, last: i64) -> AppendOutcome {
    AppendOutcome::Duplicate {
        base_offset: Some(base),
        last_offset: Some(last),
    }
}

/// A duplicate older than the window: offsets unknown.
pub const DUP_UNKNOWN: AppendOutcome = AppendOutcome::Duplicate {
    base_offset: None,
    last_offset: None,
};

/// The offsets of an `Appended` outcome (panics on anything else).
#[track_caller]
pub fn appended(r: oncelog::Result<AppendOutcome>) -> (i64, i64) {
    match r {
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset,
        }) => (base_offset, last_offset),
        other => panic!("expected Appended, got {other:?}"),
    }
}

/// One stored batch, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub base: i64,
    pub last: i64,
    pub producer_id: i64,
    pub epoch: i16,
    pub seq: i32,
    pub control: bool,
}

/// Every batch of the log, checkpoints included.
pub fn stored(log: &Log) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.next_offset() {
        let batches = log.read(offset, 1 << 20).unwrap().with_checkpoints();
        assert!(!batches.is_empty(), "read at {offset} returned nothing");
        for b in &batches {
            let b = b.unwrap();
            let v = b.view();
            out.push(Stored {
                base: v.base_offset(),
                last: v.last_offset(),
                producer_id: v.producer_id(),
                epoch: v.producer_epoch(),
                seq: v.base_sequence(),
                control: v.is_control(),
            });
            offset = v.last_offset() + 1;
        }
    }
    out
}

/// A producer's window as (first sequence, last sequence, base offset, last
/// offset), oldest first.
pub fn window(info: &ProducerInfo) -> Vec<(i32, i32, i64, i64)> {
    info.batches
        .iter()
        .map(|b| {
            (
                b.first_sequence,
                b.last_sequence,
                b.base_offset,
                b.last_offset,
            )
        })
        .collect()
}
