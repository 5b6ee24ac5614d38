//! Asynchronous appends (`Log::append_async`): durable when the future
//! resolves, never blocking the polling thread on an fsync, failing (not
//! hanging) when the disk fails or the store is dropped.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use common::*;
use oncelog::storage::SimStorage;
use oncelog::storage::sim::CrashMode;
use oncelog::{AppendOutcome, Config, Durability, Store};

/// Wakes a parked thread and counts its wake-ups.
struct ThreadWaker {
    thread: Thread,
    wakes: AtomicUsize,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// A minimal executor: poll, park until woken, poll again; gives up after
/// `limit` (a future that is never woken would hang the test otherwise).
fn block_on<F: Future + Unpin>(mut f: F, limit: Duration) -> F::Output {
    let tw = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    });
    let waker = Waker::from(Arc::clone(&tw));
    let mut cx = Context::from_waker(&waker);
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = Pin::new(&mut f).poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < limit, "future not resolved in {limit:?}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    }));
    Pin::new(f).poll(&mut Context::from_waker(&waker))
}

fn sim_store(sim: &SimStorage) -> Store {
    Store::open_with_storage("/store", Config::default(), Arc::new(sim.clone())).unwrap()
}

#[test]
fn async_appends_resolve_durable_with_the_outcomes_of_append() {
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    // Many in flight at once, polled from one thread.
    let mut futures: Vec<_> = (0..50)
        .map(|i| log.append_async(&batch(&format!("b{i}"), 2, 1000 + i), Durability::Sync))
        .collect();
    let mut outcomes = Vec::new();
    for f in futures.drain(..) {
        outcomes.push(block_on(f, Duration::from_secs(10)).unwrap());
    }
    for (i, o) in outcomes.iter().enumerate() {
        let base = 2 * i as i64;
        assert_eq!(
            *o,
            AppendOutcome::Appended {
                base_offset: base,
                last_offset: base + 1
            }
        );
    }
    // Group commit shared the fsyncs; everything survives a power loss.
    assert!(log.stats().fsyncs < 50, "{:?}", log.stats());
    drop(log);
    drop(store);
    sim.crash(CrashMode::LoseUnsynced);
    let store = sim_store(&sim);
    assert_eq!(read_all(&store.log("t", 0).unwrap()).len(), 100);
}

#[test]
fn the_polling_thread_never_runs_the_fsync() {
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    log.append(&batch("first", 1, 1)).unwrap();
    sim.pause_syncs();
    let mut f = log.append_async(&batch("x", 1, 2), Durability::Sync);
    // Every sync is held until resumed: a poll that ran the fsync itself
    // would never return. It returns, pending.
    assert!(poll_once(&mut f).is_pending());
    assert!(poll_once(&mut f).is_pending());
    sim.resume_syncs();
    assert_eq!(
        block_on(f, Duration::from_secs(10)).unwrap(),
        AppendOutcome::Appended {
            base_offset: 1,
            last_offset: 1
        }
    );
    store.close().unwrap();
}

#[test]
fn a_retry_resolves_as_a_duplicate_once_the_original_is_durable() {
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    let mut b = oncelog::format::BatchBuilder::new().with_producer(4, 0, 0);
    b.push(5, None, Some(b"v"), &[]);
    let bytes = b.build();
    let first = block_on(
        log.append_async(&bytes, Durability::Sync),
        Duration::from_secs(10),
    );
    let retry = block_on(
        log.append_async(&bytes, Durability::Sync),
        Duration::from_secs(10),
    );
    assert_eq!(first.unwrap().base_offset(), Some(0));
    assert_eq!(retry.unwrap(), dup(0, 0));
    store.close().unwrap();
}

#[test]
fn a_failed_fsync_fails_the_waiting_futures_and_poisons_the_log() {
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    log.append(&batch("ok", 1, 1)).unwrap();
    sim.fail_sync_at(1);
    let f = log.append_async(&batch("lost", 1, 2), Durability::Sync);
    // The sync thread met the failure; the future reports the poisoned log
    // with the failed fsync as its cause.
    let err = block_on(f, Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.kind(), "poisoned", "{err}");
    assert!(err.to_string().contains("fsync"), "{err}");
    let later = block_on(
        log.append_async(&batch("after", 1, 3), Durability::Sync),
        Duration::from_secs(10),
    );
    assert_eq!(later.unwrap_err().kind(), "poisoned");
}

#[test]
fn other_durabilities_resolve_at_once_and_bad_batches_fail_in_the_future() {
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    sim.pause_syncs();
    for d in [
        Durability::Os,
        Durability::Interval(Duration::from_secs(60)),
    ] {
        let mut f = log.append_async(&batch("x", 1, 1), d);
        assert!(matches!(poll_once(&mut f), Poll::Ready(Ok(_))));
    }
    let mut bad = batch("y", 1, 1);
    bad[30] ^= 1;
    let mut f = log.append_async(&bad, Durability::Sync);
    match poll_once(&mut f) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), "invalid_batch"),
        other => panic!("{other:?}"),
    }
    sim.resume_syncs();
    store.close().unwrap();
}

#[test]
fn close_completes_waiting_futures_and_a_plain_drop_fails_them() {
    // Clean close: the future resolves Ok (close flushes).
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    sim.pause_syncs();
    let mut f = log.append_async(&batch("x", 1, 1), Durability::Sync);
    assert!(poll_once(&mut f).is_pending());
    let closer = {
        let sim = sim.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            sim.resume_syncs();
        })
    };
    drop(log);
    store.close().unwrap();
    closer.join().unwrap();
    assert!(block_on(f, Duration::from_secs(10)).is_ok());

    // Dropped without close while the fsync cannot complete: the future
    // fails instead of waiting for ever.
    let sim = SimStorage::new();
    let store = sim_store(&sim);
    let log = store.log("t", 0).unwrap();
    log.append(&batch("durable", 1, 1)).unwrap();
    sim.pause_syncs();
    let mut f = log.append_async(&batch("x", 1, 2), Durability::Sync);
    assert!(poll_once(&mut f).is_pending());
    let resumer = {
        let sim = sim.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            sim.resume_syncs();
        })
    };
    drop(log);
    drop(store);
    resumer.join().unwrap();
    // Either the sync thread's round finished before the drop returned
    // (durable: Ok) or the store was abandoned first (Err Closed); never a
    // hang, never another error.
    match block_on(f, Duration::from_secs(10)) {
        Ok(o) => assert_eq!(o.base_offset(), Some(1)),
        Err(e) => assert_eq!(e.kind(), "closed", "{e}"),
    }
}

#[test]
fn async_appends_from_many_threads_on_a_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let logs: Vec<_> = (0..4).map(|p| store.log("t", p).unwrap()).collect();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = logs[t % 4].clone();
            std::thread::spawn(move || {
                let futures: Vec<_> = (0..25)
                    .map(|i| log.append_async(&batch(&format!("{t}-{i}"), 1, i), Durability::Sync))
                    .collect();
                for f in futures {
                    block_on(f, Duration::from_secs(30)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for log in &logs {
        assert_eq!(read_all(log).len(), 50);
        assert_eq!(log.durable_offset(), log.next_offset());
    }
    drop(logs);
    store.close().unwrap();
}
