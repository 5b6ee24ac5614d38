//! Concurrent writers and readers: no partial batch is ever visible, offsets
//! stay contiguous, and durable appends share fsyncs (group commit).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use oncelog::storage::SimStorage;
use oncelog::storage::sim::CrashMode;
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
    let finished = AtomicUsize::new(0);
    /// Counts a writer as finished even if it panics, so nothing spins forever.
    struct Finished<'a>(&'a AtomicUsize);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }
    std::thread::scope(|s| {
        for w in 0..3 {
            let log = log.clone();
            let finished = &finished;
            s.spawn(move || {
                let _finished = Finished(finished);
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
            while finished.load(Ordering::Acquire) < 3 {
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

/// 16 threads append durably while the disk holds the first flush: they all
/// write, queue behind it, and the next flush covers every one of them. So
/// each round of 16 appends costs at most two fsyncs, whatever the timing.
#[test]
fn durable_appends_from_many_threads_share_fsyncs() {
    let sim = SimStorage::new();
    let cfg = Config::default();
    let store = Store::open_with_storage("/s", cfg.clone(), Arc::new(sim.clone())).unwrap();
    let log = store.log("t", 0).unwrap();
    let threads = 16u64;
    let rounds = 3u64;
    for round in 0..rounds {
        sim.pause_syncs();
        let before = log.stats();
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = log.clone();
                s.spawn(move || {
                    let at = log.append(&batch(&format!("r{round}t{t}"), 1, 0)).unwrap();
                    assert!(
                        log.durable_offset() > at.last_offset().unwrap(),
                        "Sync returns only once durable"
                    );
                });
            }
            // Every append is written (and waits for durability) before the
            // held flush is let go.
            let deadline = Instant::now() + Duration::from_secs(120);
            while log.stats().appends < before.appends + threads {
                assert!(Instant::now() < deadline, "appends did not all arrive");
                std::thread::yield_now();
            }
            assert!(
                log.durable_offset() <= before.appends as i64,
                "nothing durable while held"
            );
            sim.resume_syncs();
        });
        let fsyncs = log.stats().fsyncs - before.fsyncs;
        assert!(
            (1..=2).contains(&fsyncs),
            "round {round}: {fsyncs} fsyncs for {threads} appends"
        );
    }
    assert_eq!(log.durable_offset(), (threads * rounds) as i64);
    // And the disk agrees: a power loss keeps all of them.
    sim.crash(CrashMode::LoseUnsynced);
    drop(log);
    drop(store);
    let store = Store::open_with_storage("/s", cfg, Arc::new(sim.clone())).unwrap();
    assert_eq!(
        read_all(&store.log("t", 0).unwrap()).len() as u64,
        threads * rounds
    );
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
                    assert_eq!(
                        log.append(&batch("x", 2, i))
                            .unwrap()
                            .base_offset()
                            .unwrap(),
                        i * 2
                    );
                }
            });
        }
    });
    for log in store.logs() {
        assert_eq!(log.next_offset(), 200);
    }
}
