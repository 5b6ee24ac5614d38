//! Recovery: torn tails at every byte, zeros, garbage, sealed-segment damage,
//! stray files and the truncating recovery mode.

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::*;
use oncelog::{Config, RecoveryMode, Store};

fn append_raw(path: &std::path::Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn batches_round_trip_through_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        for i in 0..300 {
            let at = log.append(&batch(&format!("b{i}"), 3, 1000 + i)).unwrap();
            assert_eq!(at.base_offset().unwrap(), i * 3);
            for j in 0..3 {
                expected.push((i * 3 + j, format!("b{i}-{j}").into_bytes()));
            }
        }
        assert!(log.stats().segments > 3, "small segments must roll");
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().bytes_truncated, 0);
    assert_eq!(read_all(&log), expected);
    let at = log.append(&batch("after", 2, 5000)).unwrap();
    assert_eq!(at.base_offset().unwrap(), 900);
}

/// Cut the last batch at every byte: exactly the batches before it survive,
/// and appends continue at the right offset.
#[test]
fn torn_tail_at_every_byte_of_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("base");
    {
        let store = Store::open(
            &root,
            Config::default().with_durability(oncelog::Durability::Os),
        )
        .unwrap();
        let log = store.log("t", 0).unwrap();
        for i in 0..3 {
            log.append(&batch(&format!("b{i}"), 2, 100)).unwrap();
        }
        store.close().unwrap();
    }
    let seg = segment_files(&root.join("t-0"))[0].clone();
    let good = std::fs::read(&seg).unwrap();
    let mut last = batch("torn", 4, 100);
    oncelog::format::set_base_offset(&mut last, 6).unwrap();
    for cut in 0..last.len() {
        let case = dir.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(case.join("t-0")).unwrap();
        let mut bytes = good.clone();
        bytes.extend_from_slice(&last[..cut]);
        std::fs::write(case.join("t-0").join(seg.file_name().unwrap()), &bytes).unwrap();
        let store = Store::open(
            &case,
            Config::default().with_durability(oncelog::Durability::Os),
        )
        .unwrap();
        let log = store.log("t", 0).unwrap();
        let r = log.recovery_report();
        assert_eq!(r.bytes_truncated, cut as u64, "cut at {cut}");
        // The first 7 bytes of base offset 6 are zeros, which count as unwritten space.
        assert_eq!(r.batches_dropped, u64::from(cut >= 8), "cut at {cut}");
        assert_eq!(log.next_offset(), 6, "cut at {cut}");
        assert_eq!(batch_offsets(&log), vec![(0, 1), (2, 3), (4, 5)]);
        let at = log.append(&batch("next", 1, 100)).unwrap();
        assert_eq!(at.base_offset().unwrap(), 6);
        drop(log);
        store.close().unwrap();
        std::fs::remove_dir_all(&case).unwrap();
    }
    // The whole batch is kept when nothing is cut.
    let case = dir.path().join("whole");
    std::fs::create_dir_all(case.join("t-0")).unwrap();
    let mut bytes = good.clone();
    bytes.extend_from_slice(&last);
    std::fs::write(case.join("t-0").join(seg.file_name().unwrap()), &bytes).unwrap();
    let store = Store::open(&case, Config::default()).unwrap();
    assert_eq!(store.log("t", 0).unwrap().next_offset(), 10);
}

#[test]
fn zero_filled_and_garbage_tails_are_cut() {
    for (name, tail, frames) in [
        ("zeros", vec![0u8; 10_000], 0u64),
        ("garbage", b"\x01\x02 not a batch at all \xff".repeat(50), 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), small_config()).unwrap();
            let log = store.log("t", 0).unwrap();
            for i in 0..20 {
                log.append(&batch(&format!("b{i}"), 2, 100)).unwrap();
            }
            store.close().unwrap();
        }
        let segs = segment_files(&dir.path().join("t-0"));
        append_raw(segs.last().unwrap(), &tail);
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        let r = log.recovery_report().clone();
        assert_eq!(r.bytes_truncated, tail.len() as u64, "{name}");
        assert_eq!(r.batches_dropped, frames, "{name}");
        assert!(r.truncated_file.is_some());
        assert_eq!(log.next_offset(), 40, "{name}");
        assert_eq!(read_all(&log).len(), 40);
        assert_eq!(
            log.append(&batch("x", 1, 1))
                .unwrap()
                .base_offset()
                .unwrap(),
            40
        );
    }
}

#[test]
fn corruption_inside_a_sealed_segment_is_reported_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        for i in 0..300 {
            log.append(&batch(&format!("b{i}"), 2, 100)).unwrap();
        }
        store.close().unwrap();
    }
    let pdir = dir.path().join("t-0");
    let segs = segment_files(&pdir);
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let pos = bytes.len() / 2;
    bytes[pos] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let sizes: Vec<u64> = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();

    // Reads of the damaged batch name the file and position.
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        let mut offset = 0;
        let mut found = None;
        'outer: while offset < log.next_offset() {
            for b in &log.read(offset, 1 << 16).unwrap() {
                match b {
                    Ok(b) => offset = b.last_offset() + 1,
                    Err(e) => {
                        found = Some(e);
                        break 'outer;
                    }
                }
            }
        }
        let e = found.expect("the flipped bit is found by reads");
        assert_eq!(e.kind(), "corrupt");
        let msg = e.to_string();
        assert!(msg.contains(&victim.display().to_string()), "{msg}");
    }

    // Forcing a rebuild of its index makes open fail, naming file and byte.
    std::fs::remove_file(victim.with_extension("index")).unwrap();
    let err = Store::open(dir.path(), small_config()).unwrap_err();
    assert_eq!(err.kind(), "corrupt");
    match &err {
        oncelog::Error::Corrupt { path, position, .. } => {
            assert_eq!(path, victim);
            assert!(*position <= pos as u64);
        }
        other => panic!("{other}"),
    }
    // Nothing was cut.
    let after: Vec<u64> = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(sizes, after);

    // The truncating mode salvages the prefix, on request only.
    let cfg = small_config().with_recovery_mode(RecoveryMode::TruncateAtCorruption);
    let store = Store::open(dir.path(), cfg).unwrap();
    let log = store.log("t", 0).unwrap();
    let r = log.recovery_report();
    assert!(r.bytes_truncated > 0);
    assert!(r.segments_deleted >= 1);
    assert_eq!(r.segments, 2);
    let n = log.next_offset();
    assert!(n > 0 && n < 600);
    assert_eq!(read_all(&log).len() as i64, n);
    assert_eq!(
        log.append(&batch("x", 1, 1))
            .unwrap()
            .base_offset()
            .unwrap(),
        n
    );
}

#[test]
fn stray_and_orphan_files_are_removed_and_missing_indexes_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let log = store.log("t", 0).unwrap();
        for i in 0..200 {
            log.append(&batch(&format!("b{i}"), 2, 100 + i)).unwrap();
        }
        store.close().unwrap();
    }
    let pdir = dir.path().join("t-0");
    let segs = segment_files(&pdir);
    std::fs::write(pdir.join("log-start-offset.tmp"), b"half").unwrap();
    std::fs::write(pdir.join("00000000000099999999.index"), b"orphan").unwrap();
    std::fs::remove_file(segs[0].with_extension("index")).unwrap();
    std::fs::write(segs[1].with_extension("timeindex"), b"garbage!!!!!").unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let log = store.log("t", 0).unwrap();
    let r = log.recovery_report();
    assert_eq!(r.stray_files_removed, 2);
    assert_eq!(r.indexes_rebuilt, 2);
    assert!(!pdir.join("log-start-offset.tmp").exists());
    assert!(
        segs[0].with_extension("index").exists(),
        "rebuilt index is persisted"
    );
    assert_eq!(read_all(&log).len(), 400);
    drop(log);
    store.close().unwrap();
    let report = oncelog::verify(dir.path(), |_| {}).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// Set a batch's base offset and lastOffsetDelta and fix its CRC: a batch
/// the engine never writes, but a valid one.
fn recrafted(mut v: Vec<u8>, base: i64, delta: i32) -> Vec<u8> {
    v[0..8].copy_from_slice(&base.to_be_bytes());
    v[23..27].copy_from_slice(&delta.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    v
}

fn producer_batch(id: i64, epoch: i16, seq: i32, value: &[u8]) -> Vec<u8> {
    let mut b = oncelog::format::BatchBuilder::new().with_producer(id, epoch, seq);
    b.push(1_700_000_000_000, None, Some(value), &[]);
    b.build()
}

/// A valid checkpoint batch that claims several offsets (found by the
/// recover_segment fuzz target): replay starts after all of them, and the
/// log opens in either mode with its producer state.
#[test]
fn a_checkpoint_spanning_several_offsets_does_not_block_the_open() {
    use oncelog::storage::SimStorage;
    use std::sync::Arc;
    let sim = SimStorage::new();
    let cfg = Config::default().with_preallocate_bytes(0);
    let store = Store::open_with_storage("/s", cfg.clone(), Arc::new(sim.clone())).unwrap();
    let log = store.log("t", 0).unwrap();
    let (id, epoch) = store.init_producer().unwrap();
    log.append(&producer_batch(id, epoch, 0, b"a")).unwrap(); // offset 0
    log.checkpoint().unwrap(); // offset 1
    log.append(&producer_batch(id, epoch, 1, b"b")).unwrap(); // offset 2
    drop(log);
    drop(store); // a crash: the tail is replayed
    let path = std::path::Path::new("/s/t-0/00000000000000000000.log");
    let mut seg = sim.file_bytes(path).unwrap();
    let first = 12 + u32::from_be_bytes(seg[8..12].try_into().unwrap()) as usize;
    let ck_len = 12 + u32::from_be_bytes(seg[first + 8..first + 12].try_into().unwrap()) as usize;
    let ck = recrafted(seg[first..first + ck_len].to_vec(), 1, 4); // offsets 1..=5
    seg[first..first + ck_len].copy_from_slice(&ck);
    let next = first + ck_len;
    seg[next..next + 8].copy_from_slice(&6i64.to_be_bytes());
    sim.set_file_bytes(path, &seg).unwrap();
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::TruncateAtCorruption,
    ] {
        let store = Store::open_with_storage(
            "/s",
            cfg.clone().with_recovery_mode(mode),
            Arc::new(sim.clone()),
        )
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let log = store.log("t", 0).unwrap();
        assert_eq!(log.next_offset(), 7, "{mode:?}");
        assert_eq!(log.recovery_report().batches_replayed, 1, "{mode:?}");
        let o = log.append(&producer_batch(id, epoch, 1, b"b")).unwrap();
        assert_eq!(
            (o.base_offset(), o.is_duplicate()),
            (Some(6), true),
            "{mode:?}"
        );
        drop(log);
        drop(store);
    }
}

/// A valid batch whose base offset is in the segment's range but whose last
/// offset lies beyond what the log ever writes into one segment (found by
/// the recover_segment fuzz target) is cut as the end of the log; checkpoints
/// written afterwards (explicit, at close) stay where the next open accepts
/// them, and the log opens again.
#[test]
fn a_batch_spanning_past_the_segments_offset_range_is_cut() {
    use oncelog::storage::SimStorage;
    use std::sync::Arc;
    let sim = SimStorage::new();
    let cfg = Config::default().with_preallocate_bytes(0);
    let open = || Store::open_with_storage("/s", cfg.clone(), Arc::new(sim.clone()));
    let store = open().unwrap();
    let log = store.log("t", 0).unwrap();
    let (id, epoch) = store.init_producer().unwrap();
    log.append(&producer_batch(id, epoch, 0, b"a")).unwrap(); // offset 0
    drop(log);
    store.close().unwrap(); // a checkpoint at 1
    let path = std::path::Path::new("/s/t-0/00000000000000000000.log");
    let mut seg = sim.file_bytes(path).unwrap();
    let kept = seg.len();
    let far = 2 + i64::from(i32::MAX) + 1;
    seg.extend(recrafted(batch("x", 1, 0), 2, i32::MAX)); // offsets 2..=2^31+1
    seg.extend(recrafted(producer_batch(id, epoch, 1, b"y"), far, i32::MAX));
    sim.set_file_bytes(path, &seg).unwrap();

    let store = open().unwrap();
    let log = store.log("t", 0).unwrap();
    let r = log.recovery_report();
    assert_eq!(r.next_offset, 2, "both crafted batches are cut: {r:?}");
    assert_eq!(sim.file_bytes(path).unwrap().len(), kept);
    log.checkpoint().unwrap();
    log.append(&batch("after", 1, 0)).unwrap();
    drop(log);
    store.close().unwrap();
    let store = open().unwrap();
    let r = &store.recovery_reports()[0].2;
    assert_eq!((r.bytes_truncated, r.batches_replayed), (0, 0), "{r:?}");
}
