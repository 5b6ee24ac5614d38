//! Durability on the simulated disk: power loss keeps every `Sync` append,
//! failed writes and fsyncs poison the log, a full disk is an error.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use oncelog::storage::SimStorage;
use oncelog::storage::sim::CrashMode;
use oncelog::{Config, Durability, Store};

fn open(sim: &SimStorage, cfg: Config) -> Store {
    Store::open_with_storage("/store", cfg, Arc::new(sim.clone())).unwrap()
}

/// Crash the disk under an open store, then reopen it and return partition
/// `t-0` of the new store.
fn crash_and_reopen(
    sim: &SimStorage,
    mode: CrashMode,
    old: (Store, oncelog::Log),
    cfg: Config,
) -> (Store, oncelog::Log) {
    sim.crash(mode);
    drop(old);
    let store = open(sim, cfg);
    let log = store.log("t", 0).unwrap();
    (store, log)
}

#[test]
fn power_loss_keeps_every_sync_append_and_drops_unsynced_ones() {
    for mode in [
        CrashMode::LoseUnsynced,
        CrashMode::RandomPages { seed: 7 },
        CrashMode::RandomPages { seed: 8 },
        CrashMode::KeepAll,
    ] {
        let sim = SimStorage::new();
        let cfg = small_config().with_durability(Durability::Sync);
        let store = open(&sim, cfg.clone());
        let log = store.log("t", 0).unwrap();
        let mut acked = Vec::new();
        for i in 0..40 {
            let at = log.append(&batch(&format!("s{i}"), 2, i)).unwrap();
            acked.push((at.base_offset().unwrap(), at.last_offset().unwrap()));
        }
        // Unsynced appends on top: may or may not survive, never partially.
        let mut all = acked.clone();
        for i in 0..10 {
            let at = log
                .append_with(&batch(&format!("u{i}"), 3, i), Durability::Os)
                .unwrap();
            all.push((at.base_offset().unwrap(), at.last_offset().unwrap()));
        }
        // A segment roll seals (and fsyncs) what came before it.
        let durable = log.durable_offset();
        sim.crash(mode);
        drop(log);
        drop(store);
        let store = open(&sim, cfg);
        let log = store.log("t", 0).unwrap();
        let got = batch_offsets(&log);
        assert!(
            got.len() >= acked.len(),
            "{mode:?}: lost acked batches: {got:?}"
        );
        assert_eq!(
            &got[..],
            &all[..got.len()],
            "{mode:?}: survivors are a prefix"
        );
        if mode == CrashMode::LoseUnsynced {
            let synced = all.iter().filter(|(_, last)| *last < durable).count();
            assert_eq!(got.len(), synced, "exactly the synced appends survive");
        }
        if mode == CrashMode::KeepAll {
            assert_eq!(got.len(), acked.len() + 10, "a process crash loses nothing");
        }
        let next = log.next_offset();
        assert_eq!(
            log.append(&batch("after", 1, 0))
                .unwrap()
                .base_offset()
                .unwrap(),
            next
        );
    }
}

#[test]
fn a_failed_fsync_poisons_the_log_until_reopened() {
    let sim = SimStorage::new();
    let store = open(&sim, Config::default());
    let log = store.log("t", 0).unwrap();
    log.append(&batch("a", 1, 0)).unwrap();
    sim.fail_sync_at(1);
    let e = log.append(&batch("b", 1, 0)).unwrap_err();
    assert_eq!(e.kind(), "io");
    // Never retried: every later write and flush is refused.
    for _ in 0..3 {
        assert_eq!(
            log.append(&batch("c", 1, 0)).unwrap_err().kind(),
            "poisoned"
        );
        assert_eq!(log.flush().unwrap_err().kind(), "poisoned");
    }
    let msg = log.append(&batch("c", 1, 0)).unwrap_err().to_string();
    assert!(msg.contains("t-0") && msg.contains("fsync"), "{msg}");
    // Reads still work; other logs are unaffected.
    assert_eq!(read_all(&log).len(), 2);
    store
        .log("other", 0)
        .unwrap()
        .append(&batch("x", 1, 0))
        .unwrap();
    drop(log);
    drop(store);
    let store = open(&sim, Config::default());
    let log = store.log("t", 0).unwrap();
    log.append(&batch("d", 1, 0)).unwrap();
}

#[test]
fn a_failed_or_short_write_poisons_and_recovery_cuts_it() {
    let sim = SimStorage::new();
    let store = open(&sim, Config::default());
    let log = store.log("t", 0).unwrap();
    log.append(&batch("a", 1, 0)).unwrap();
    sim.fail_write_at(1, 20); // a short write: 20 bytes land, then EIO
    assert_eq!(log.append(&batch("b", 1, 0)).unwrap_err().kind(), "io");
    assert_eq!(
        log.append(&batch("c", 1, 0)).unwrap_err().kind(),
        "poisoned"
    );
    assert_eq!(log.next_offset(), 1, "the failed batch was never visible");
    drop(log);
    drop(store);
    sim.crash(CrashMode::KeepAll);
    let store = open(&sim, Config::default());
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().bytes_truncated, 20);
    assert_eq!(log.next_offset(), 1);
}

#[test]
fn a_full_disk_is_an_append_error_and_appends_resume_after() {
    let sim = SimStorage::new();
    let store = open(&sim, small_config());
    let log = store.log("t", 0).unwrap();
    log.append(&batch("a", 1, 0)).unwrap();
    sim.set_space_left(Some(10));
    let e = log.append(&sized_batch(500, 1, 0)).unwrap_err();
    assert_eq!(e.kind(), "io");
    assert!(e.to_string().contains("No space left"), "{e}");
    assert_eq!(read_all(&log).len(), 1, "the log stays readable");
    sim.set_space_left(None);
    drop(log);
    drop(store);
    let store = open(&sim, small_config());
    let log = store.log("t", 0).unwrap();
    assert_eq!(
        log.append(&batch("b", 1, 0))
            .unwrap()
            .base_offset()
            .unwrap(),
        1
    );
}

#[test]
fn interval_durability_is_flushed_in_the_background() {
    let sim = SimStorage::new();
    let cfg = Config::default().with_durability(Durability::Interval(Duration::from_millis(20)));
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    for i in 0..5 {
        log.append(&batch("i", 1, i)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.durable_offset() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "background flush never came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_store, log) = crash_and_reopen(&sim, CrashMode::LoseUnsynced, (store, log), cfg);
    assert_eq!(log.next_offset(), 5);
}

#[test]
fn explicit_flush_makes_os_appends_durable() {
    let sim = SimStorage::new();
    let cfg = Config::default().with_durability(Durability::Os);
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    for i in 0..5 {
        log.append(&batch("o", 1, i)).unwrap();
    }
    assert_eq!(log.durable_offset(), 0);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 5);
    log.append(&batch("lost", 1, 9)).unwrap();
    let (_store, log) = crash_and_reopen(&sim, CrashMode::LoseUnsynced, (store, log), cfg);
    assert_eq!(log.next_offset(), 5);
    let _ = Path::new("/");
}

#[test]
fn a_failed_seal_fsync_poisons_before_any_later_sync_succeeds() {
    let sim = SimStorage::new();
    let cfg = small_config().with_durability(Durability::Os);
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    log.append(&sized_batch(3000, 1, 0)).unwrap();
    // The next append rolls. Its seal syncs the two index files (syncs 1
    // and 2), then the segment itself (3): fail that one.
    sim.fail_sync_at(3);
    let e = log.append(&sized_batch(3000, 2, 0)).unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert!(e.to_string().contains("fsync sealed segment"), "{e}");
    let durable = log.durable_offset();
    // The kernel reports a writeback error once; a later fsync that returns
    // 0 proves nothing, so nothing may be reported durable now.
    assert_eq!(log.flush().unwrap_err().kind(), "poisoned");
    assert_eq!(
        log.append_with(&sized_batch(10, 3, 0), Durability::Sync)
            .unwrap_err()
            .kind(),
        "poisoned"
    );
    assert_eq!(
        log.durable_offset(),
        durable,
        "nothing became durable after the failure"
    );
    let (writes, syncs) = sim.op_counts();
    assert!(log.flush().is_err());
    assert_eq!(
        sim.op_counts(),
        (writes, syncs),
        "no fsync is attempted once poisoned"
    );
}

#[test]
fn reopening_after_a_process_crash_makes_the_survivors_durable() {
    let sim = SimStorage::new();
    let cfg = Config::default().with_durability(Durability::Os);
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    for i in 0..5 {
        log.append(&batch("os", 1, i)).unwrap();
    }
    // kill -9: the page cache keeps the appends, nothing was fsynced.
    let (store, log) = crash_and_reopen(&sim, CrashMode::KeepAll, (store, log), cfg.clone());
    assert_eq!(log.next_offset(), 5);
    assert_eq!(log.durable_offset(), 5, "reopen fsyncs what it found");
    // So a power loss right after the reopen keeps them.
    let (_store, log) = crash_and_reopen(&sim, CrashMode::LoseUnsynced, (store, log), cfg);
    assert_eq!(log.next_offset(), 5);
}

#[test]
fn offsets_near_i64_max_are_errors_not_panics() {
    let sim = SimStorage::new();
    let dir = Path::new("/store/t-0");
    {
        let store = open(&sim, Config::default());
        store.log("t", 0).unwrap();
    }
    // A segment whose base offset leaves no room for its batch's offsets.
    let base = i64::MAX - 1;
    let mut b = batch("x", 3, 0);
    oncelog::format::set_base_offset(&mut b, base).unwrap();
    let seg = dir.join(format!("{base:020}.log"));
    {
        use oncelog::storage::{OpenMode, Storage};
        sim.remove_file(&dir.join(format!("{:020}.log", 0)))
            .unwrap();
        let f = sim.open(&seg, OpenMode::Create).unwrap();
        f.write_at(&b, 0).unwrap();
        f.sync_all().unwrap();
        sim.sync_dir(dir).unwrap();
    }
    let store = open(&sim, Config::default());
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().bytes_truncated, b.len() as u64);
    assert_eq!(log.next_offset(), base);
    let e = log.append(&batch("y", 3, 0)).unwrap_err();
    assert_eq!(e.kind(), "invalid_batch", "{e}");
    let one = log.append(&batch("y", 1, 0)).unwrap();
    assert_eq!(one.base_offset().unwrap(), base);
    drop(log);
    drop(store);
    let report =
        oncelog::verify_with_storage(Path::new("/store"), Arc::new(sim.clone()), |_| {}).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// Many threads append durably while segments roll; a power loss at the end
/// keeps every acknowledged batch at its offsets, for several crash shapes.
#[test]
fn concurrent_sync_appends_across_rolls_survive_power_loss() {
    for seed in 0..6u64 {
        let sim = SimStorage::new();
        let cfg = Config::default()
            .with_segment_bytes(2048)
            .with_index_interval_bytes(256);
        let store = open(&sim, cfg.clone());
        let log = store.log("t", 0).unwrap();
        let acked = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..6 {
                let log = log.clone();
                let acked = &acked;
                s.spawn(move || {
                    for i in 0..40 {
                        let durability = if (t + i) % 3 == 0 {
                            Durability::Os
                        } else {
                            Durability::Sync
                        };
                        let b = batch(&format!("t{t}i{i}"), 1 + i % 3, i as i64);
                        let at = log.append_with(&b, durability).unwrap();
                        if durability == Durability::Sync {
                            acked.lock().unwrap().push((
                                at.base_offset().unwrap(),
                                at.last_offset().unwrap(),
                                format!("t{t}i{i}-0"),
                            ));
                        }
                    }
                });
            }
        });
        assert!(log.stats().segments > 5, "the workload must roll");
        let mode = if seed % 2 == 0 {
            CrashMode::LoseUnsynced
        } else {
            CrashMode::RandomPages { seed }
        };
        let (_store, log) = crash_and_reopen(&sim, mode, (store, log), cfg);
        let survivors = read_all(&log);
        for (base, _last, first_value) in acked.into_inner().unwrap() {
            let (off, v) = survivors
                .iter()
                .find(|(o, _)| *o == base)
                .unwrap_or_else(|| panic!("seed {seed}: acked batch at {base} lost"));
            assert_eq!(*off, base);
            assert_eq!(
                String::from_utf8(v.clone()).unwrap(),
                first_value,
                "seed {seed}"
            );
        }
        // Offsets are contiguous from 0.
        for (i, (off, _)) in survivors.iter().enumerate() {
            assert_eq!(*off, i as i64);
        }
    }
}

#[test]
fn huge_intervals_mean_never_and_do_not_panic() {
    let sim = SimStorage::new();
    let cfg = Config::default()
        .with_durability(Durability::Interval(Duration::MAX))
        .with_retention_check_interval(Duration::MAX)
        .with_retention_bytes(Some(1 << 20));
    let store = open(&sim, cfg);
    let log = store.log("t", 0).unwrap();
    log.append(&batch("x", 1, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // let the background thread run
    assert_eq!(log.durable_offset(), 0, "never due");
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 1);
    drop(log);
    store.close().unwrap();
}

/// A full disk refuses an append after part of its batch landed. The log
/// goes on, so what landed must go: otherwise a later, shorter batch leaves
/// the rest of it behind, and a batch carried inside the refused one's value
/// could be read by recovery as a batch nobody appended (found by the
/// model_ops fuzz target).
#[test]
fn a_refused_full_disk_write_leaves_nothing_behind() {
    use oncelog::format::{BatchBuilder, set_base_offset};
    let plain = |value: &[u8]| {
        let mut b = BatchBuilder::new();
        b.push(1_700_000_000_000, None, Some(value), &[]);
        b.build()
    };
    let sim = SimStorage::new();
    let cfg = Config::default().with_preallocate_bytes(0);
    let store = Store::open_with_storage("/s", cfg.clone(), Arc::new(sim.clone())).unwrap();
    let log = store.log("t", 0).unwrap();
    log.append(&plain(b"first")).unwrap(); // offset 0
    let path = Path::new("/s/t-0/00000000000000000000.log");
    let end = sim.file_bytes(path).unwrap().len();
    // A batch to smuggle in at offset 2, carried in a value, and a plain
    // batch (offset 1) that ends exactly where the carried one starts.
    let mut forged = plain(b"FORGED: never appended");
    set_base_offset(&mut forged, 2).unwrap();
    let (carrier, at, b) = (0..200)
        .find_map(|pad| {
            let mut value = vec![b'p'; pad];
            value.extend_from_slice(&forged);
            value.extend_from_slice(&[b't'; 300]);
            let carrier = plain(&value);
            let at = carrier
                .windows(forged.len())
                .position(|w| w == &forged[..])?;
            (0..200)
                .map(|n| plain(&vec![b'b'; n]))
                .find(|b| b.len() == at)
                .map(|b| (carrier, at, b))
        })
        .expect("a fitting padding");
    sim.set_space_left(Some((at + forged.len() + 10) as u64));
    let e = log.append(&carrier).unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert_eq!(
        sim.file_bytes(path).unwrap().len(),
        end,
        "the refused bytes were cut"
    );
    sim.set_space_left(None);
    assert_eq!(log.append(&b).unwrap().base_offset(), Some(1));
    drop(log);
    sim.crash(CrashMode::KeepAll);
    drop(store);
    let store = Store::open_with_storage("/s", cfg, Arc::new(sim.clone())).unwrap();
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.next_offset(), 2);
    assert_eq!(log.recovery_report().bytes_truncated, 0);
}
