//! Concurrent writers and readers: no partial batch is ever visible, offsets
//! stay contiguous, and durable appends share fsyncs (group commit).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use oncelog::{Config, Durability, Store};

#[test]
fn readers_never_see_a_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Config::default()
            .with_segment_bytes(64 * 1024)
            .with_index_interval_bytes(512)
            .with_durability(Durability::Os),
    )
    .unwrap();
    let log = store.log("t", 0).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for w in 0..3 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..400 {
                    // Sizes vary so batches straddle pages and segment ends.
                    log.append(&batch(&format!("w{w}i{i}"), 1 + (i % 7), i as i64))
                        .unwrap();
                }
            });
        }
        for _ in 0..2 {
            let log = log.clone();
            let done = Arc::clone(&done);
            s.spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads == 0 {
                    let end = log.next_offset();
                    let mut offset = 0;
                    while offset < end {
                        let batches = log.read(offset, 8192).unwrap();
                        assert!(
                            !batches.is_empty(),
                            "offset {offset} < end {end} must be readable"
                        );
                        for b in &batches {
                            let b = b.expect("every visible batch is whole and CRC-valid");
                            assert_eq!(b.base_offset(), offset, "offsets are contiguous");
                            let view = b.view();
                            view.validate_records().unwrap();
                            offset = b.last_offset() + 1;
                        }
                    }
                    reads += 1;
                }
            });
        }
        s.spawn(|| {
            while log.stats().appends < 1200 {
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
        });
    });
    assert_eq!(log.stats().appends, 1200);
    // Each writer's batches appear in its own order.
    let mut seen = vec![0usize; 3];
    for (_, v) in read_all(&log) {
        let s = String::from_utf8(v).unwrap();
        if s.ends_with("-0") {
            let w: usize = s[1..2].parse().unwrap();
            let i: usize = s[3..s.find('-').unwrap()].parse().unwrap();
            assert_eq!(i, seen[w]);
            seen[w] += 1;
        }
    }
    assert_eq!(seen, vec![400; 3]);
}

#[test]
fn durable_appends_from_many_threads_share_fsyncs() {
    // A simulated disk whose flushes take a millisecond, like a real one, so
    // that the outcome does not hinge on how fast this machine's disk is.
    let sim = oncelog::storage::SimStorage::new();
    sim.set_sync_delay(std::time::Duration::from_millis(1));
    let store = Store::open_with_storage("/s", Config::default(), Arc::new(sim.clone())).unwrap();
    let log = store.log("t", 0).unwrap();
    let threads = 16;
    let per_thread = 20;
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let at = log.append(&batch(&format!("t{t}-{i}"), 1, 0)).unwrap();
                    assert!(
                        log.durable_offset() > at.last_offset,
                        "Sync returns only once durable"
                    );
                }
            });
        }
    });
    let stats = log.stats();
    assert_eq!(stats.appends, (threads * per_thread) as u64);
    // One appender at a time would need one fsync each; sharing needs far fewer.
    assert!(
        stats.fsyncs < stats.appends / 4,
        "group commit: {} fsyncs for {} appends",
        stats.fsyncs,
        stats.appends
    );
    assert_eq!(log.durable_offset(), log.next_offset());
}

#[test]
fn partitions_append_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    std::thread::scope(|s| {
        for p in 0..8 {
            let log = store.log("t", p).unwrap();
            s.spawn(move || {
                for i in 0..100 {
                    assert_eq!(log.append(&batch("x", 2, i)).unwrap().base_offset, i * 2);
                }
            });
        }
    });
    for log in store.logs() {
        assert_eq!(log.next_offset(), 200);
    }
}
