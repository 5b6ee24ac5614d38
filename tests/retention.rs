//! Retention by size and by age; the persisted log start offset.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use oncelog::{ManualClock, Store};

#[test]
fn retention_by_bytes_deletes_whole_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config().with_retention_bytes(Some(10_000));
    let store = Store::open(dir.path(), cfg.clone()).unwrap();
    let log = store.log("t", 0).unwrap();
    for i in 0..100 {
        log.append(&sized_batch(400, i as u8, i)).unwrap();
    }
    let _ = log.enforce_retention().unwrap();
    let stats = log.stats();
    assert!(
        stats.bytes >= 10_000,
        "keeps at least retention_bytes: {}",
        stats.bytes
    );
    assert!(
        stats.bytes < 10_000 + 4096 + 500,
        "deletes the rest: {}",
        stats.bytes
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    let first = segment_files(&dir.path().join("t-0"))[0].clone();
    assert!(first.ends_with(format!("{start:020}.log")));
    let all = read_all(&log);
    assert_eq!(all.first().unwrap().0, start);
    assert_eq!(all.len() as i64, 100 - start);
    assert_eq!(
        log.read(start - 1, 10).unwrap_err().kind(),
        "offset_out_of_range"
    );
    drop(log);
    store.close().unwrap();

    // The start offset survives a reopen even with retention switched off.
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.next_offset(), 100);
}

#[test]
fn retention_by_age_follows_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = small_config()
        .with_retention(Some(Duration::from_secs(60)))
        .with_clock(clock.clone());
    let store = Store::open(dir.path(), cfg).unwrap();
    let log = store.log("t", 0).unwrap();
    for i in 0..30 {
        log.append(&sized_batch(400, 1, 1_000_000 + i)).unwrap();
    }
    assert_eq!(
        log.enforce_retention().unwrap().segments_deleted,
        0,
        "nothing is old yet"
    );
    clock.advance(Duration::from_secs(30));
    for i in 0..30 {
        log.append(&sized_batch(400, 2, 1_030_000 + i)).unwrap();
    }
    let segs_before = log.stats().segments;
    clock.advance(Duration::from_secs(45)); // first half is 75 s old, second 45 s
    let r = log.enforce_retention().unwrap();
    assert!(r.segments_deleted > 0);
    assert_eq!(log.stats().segments, segs_before - r.segments_deleted);
    // Every surviving record except those sharing a segment with the boundary is young.
    let all = read_all(&log);
    assert!(all.iter().filter(|(_, v)| v[0] == 1).count() < 30);
    assert_eq!(all.iter().filter(|(_, v)| v[0] == 2).count(), 30);
    clock.advance(Duration::from_secs(3600));
    log.enforce_retention().unwrap();
    assert_eq!(
        log.stats().segments,
        1,
        "the active segment is never deleted"
    );
    assert_eq!(log.next_offset(), 60);
}

#[test]
fn an_interrupted_retention_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        for i in 0..40 {
            log.append(&sized_batch(400, 1, i)).unwrap();
        }
        store.close().unwrap();
    }
    // Simulate a crash after the start offset was persisted but before the
    // segments were deleted.
    let pdir = dir.path().join("t-0");
    let segs = segment_files(&pdir);
    let third: i64 = segs[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut f = [0u8; 16];
    f[..4].copy_from_slice(b"OLSO");
    f[4..12].copy_from_slice(&third.to_be_bytes());
    let crc = crc32c::crc32c(&f[..12]);
    f[12..].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(pdir.join("log-start-offset"), f).unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().segments_deleted, 2);
    assert_eq!(log.log_start_offset(), third);
    assert_eq!(segment_files(&pdir).len(), segs.len() - 2);
}
