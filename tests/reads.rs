//! Reads: index lookups at every offset and at segment boundaries, max_bytes,
//! offsets out of range, timestamp lookups, zero-copy bytes.

mod common;

use common::*;
use oncelog::{Config, Store};

/// 400 batches of 1..=4 records, small segments and a dense index.
fn filled(dir: &std::path::Path) -> (Store, oncelog::Log, Vec<(i64, i64)>) {
    let store = Store::open(dir, small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    let mut spans = Vec::new();
    for i in 0..400i64 {
        let n = (i % 4 + 1) as usize;
        let at = log
            .append(&batch(&format!("b{i}"), n, 10_000 + i * 10))
            .unwrap();
        spans.push((at.base_offset().unwrap(), at.last_offset().unwrap()));
    }
    (store, log, spans)
}

/// [`filled`], closed again: the batch spans and the first segment's file.
fn filled_and_closed(dir: &std::path::Path) -> (Vec<(i64, i64)>, std::path::PathBuf) {
    let (store, log, spans) = filled(dir);
    drop(log);
    store.close().unwrap();
    (spans, segment_files(&dir.join("t-0"))[0].clone())
}

#[test]
fn every_offset_finds_its_batch_across_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log, spans) = filled(dir.path());
    assert!(log.stats().segments >= 5);
    let check = |log: &oncelog::Log| {
        for &(base, last) in &spans {
            for offset in base..=last {
                let batches = log.read(offset, 1).unwrap();
                let first = batches.iter().next().unwrap().unwrap();
                assert_eq!(
                    (first.base_offset(), first.last_offset()),
                    (base, last),
                    "offset {offset}"
                );
                assert_eq!(
                    batches.iter().count(),
                    1,
                    "max_bytes=1 still returns one batch"
                );
            }
        }
    };
    check(&log);
    // The same after reopening from the persisted indexes.
    drop(log);
    store.close().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt, 0);
    check(&log);
}

#[test]
fn reads_respect_max_bytes_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log, _) = filled(dir.path());
    let one = log.read(0, 1).unwrap();
    let first_len = one.bytes().len();
    let more = log.read(0, first_len * 3).unwrap();
    assert!(more.bytes().len() <= first_len * 3);
    assert!(more.iter().count() >= 2);
    let end = log.next_offset();
    assert!(log.read(end, 100).unwrap().is_empty());
    let e = log.read(end + 1, 100).unwrap_err();
    assert_eq!(e.kind(), "offset_out_of_range");
    assert!(e.to_string().contains("t-0"));
    assert_eq!(log.read(-1, 100).unwrap_err().kind(), "offset_out_of_range");
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log, spans) = filled(dir.path());
    let check = |log: &oncelog::Log| {
        for (i, &(base, last)) in spans.iter().enumerate() {
            let ts = 10_000 + i as i64 * 10;
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                Some(base),
                "batch {i}"
            );
            if last > base {
                assert_eq!(log.offset_for_timestamp(ts + 1).unwrap(), Some(base + 1));
            }
        }
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
        assert_eq!(log.offset_for_timestamp(1 << 40).unwrap(), None);
    };
    check(&log);
    drop(log);
    store.close().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    check(&store.log("t", 0).unwrap());
}

#[test]
fn a_damaged_index_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (spans, seg) = filled_and_closed(dir.path());
    let seg = &seg;
    let idx = seg.with_extension("index");
    let good = std::fs::read(&idx).unwrap();
    assert!(good.len() >= 16, "the first segment has index entries");

    // 1. Out of order: caught by the structure check at open.
    let mut raw = good.clone();
    let first_pos: [u8; 4] = raw[4..8].try_into().unwrap();
    raw[12..16].copy_from_slice(&first_pos);
    std::fs::write(&idx, &raw).unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        assert_eq!(log.recovery_report().indexes_rebuilt, 1);
        for &(base, _) in &spans {
            assert_eq!(
                log.read(base, 1)
                    .unwrap()
                    .iter()
                    .next()
                    .unwrap()
                    .unwrap()
                    .base_offset(),
                base
            );
        }
        store.close().unwrap();
    }

    // 2. Plausible but wrong (a position nudged by one byte): caught by the
    //    pair check when a lookup lands on it.
    let mut raw = std::fs::read(&idx).unwrap();
    assert_eq!(raw, good, "the rebuilt index equals the original");
    let pos = u32::from_be_bytes(raw[12..16].try_into().unwrap()) + 1;
    raw[12..16].copy_from_slice(&pos.to_be_bytes());
    std::fs::write(&idx, &raw).unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt, 0);
    for &(base, last) in &spans {
        let b = log.read(last, 1).unwrap().iter().next().unwrap().unwrap();
        assert_eq!(b.base_offset(), base);
    }
}

#[test]
fn read_bytes_stay_valid_after_the_segment_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config().with_retention_bytes(Some(1));
    let store = Store::open(dir.path(), cfg).unwrap();
    let log = store.log("t", 0).unwrap();
    log.append(&sized_batch(1000, 0xAB, 1)).unwrap();
    let held = log.read(0, 1 << 20).unwrap();
    let copy = held.bytes().to_vec();
    // Roll several times; retention deletes the first segment.
    for i in 0..20 {
        log.append(&sized_batch(1000, i as u8, 1)).unwrap();
    }
    log.enforce_retention().unwrap();
    assert!(log.log_start_offset() > 0);
    assert!(
        !segment_files(&dir.path().join("t-0"))
            .iter()
            .any(|p| p.ends_with("00000000000000000000.log"))
    );
    assert_eq!(held.bytes().to_vec(), copy);
    let b = held.iter().next().unwrap().unwrap();
    assert_eq!(
        b.view()
            .records()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .value
            .unwrap(),
        &[0xAB; 1000][..]
    );
    assert_eq!(log.read(0, 10).unwrap_err().kind(), "offset_out_of_range");
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default().with_segment_bytes(4096)).unwrap();
    let log = store.log("t", 0).unwrap();
    log.append(&sized_batch(100, 1, 1)).unwrap();
    log.append(&sized_batch(10_000, 2, 2)).unwrap();
    log.append(&sized_batch(100, 3, 3)).unwrap();
    assert_eq!(log.stats().segments, 3);
    let all = read_all(&log);
    assert_eq!(
        all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(all[1].1.len(), 10_000);
}

#[test]
fn a_sealed_segment_cut_short_on_disk_is_an_error_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (_, seg) = filled_and_closed(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    // Drop the last batch exactly at a batch boundary.
    let mut pos = 0;
    let mut starts = Vec::new();
    while pos < bytes.len() {
        starts.push(pos);
        pos += oncelog::format::peek_batch_len(&bytes[pos..]).unwrap();
    }
    let cut = *starts.last().unwrap();
    std::fs::write(&seg, &bytes[..cut]).unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    let lost = oncelog::format::BatchView::parse(&bytes[cut..])
        .unwrap()
        .base_offset();
    let e = log.read(lost, 100).unwrap_err();
    assert_eq!(e.kind(), "corrupt", "{e}");
    assert!(e.to_string().contains(&seg.display().to_string()));
    drop(log);
    store.close().unwrap();
    let report = oncelog::verify(dir.path(), |_| {}).unwrap();
    assert!(!report.is_sound());
    assert!(
        report.problems.iter().any(|p| p.kind == "offset_gap"),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_damaged_base_offset_outside_the_crc_is_caught_by_continuity() {
    let dir = tempfile::tempdir().unwrap();
    let (spans, seg) = filled_and_closed(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    // The fourth batch's baseOffset (not covered by the CRC).
    let mut pos = 0;
    for _ in 0..3 {
        pos += oncelog::format::peek_batch_len(&bytes[pos..]).unwrap();
    }
    bytes[pos + 7] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    let batches = log.read(spans[0].0, 1 << 20).unwrap();
    let results: Vec<_> = batches.iter().collect();
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(Result::is_ok));
    let e = results[3].as_ref().unwrap_err();
    assert_eq!(e.kind(), "corrupt");
    // Looking the damaged batch up directly fails too, and never hands out a
    // neighbour in its place.
    for offset in spans[3].0..=spans[3].1 {
        assert_eq!(
            log.read(offset, 1).unwrap_err().kind(),
            "corrupt",
            "offset {offset}"
        );
    }
    match e {
        oncelog::Error::Corrupt { path, position, .. } => {
            assert_eq!(path, &seg);
            assert_eq!(*position, pos as u64);
        }
        other => panic!("{other}"),
    }
}
