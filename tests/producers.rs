//! Idempotent producers through `Log::append`: the outcome table of
//! docs/semantics.md row by row, windows, sequence wrap, expiry, limits,
//! counters, producer ids and concurrency.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{DUP_UNKNOWN, Stored, appended, dup, stored};
use oncelog::format::BatchBuilder;
use oncelog::storage::SimStorage;
use oncelog::storage::sim::CrashMode;
use oncelog::{AppendOutcome, Config, Durability, Error, Log, ManualClock, Message, Store};

const HOUR_MS: i64 = 3_600_000;

fn open(sim: &SimStorage, cfg: Config) -> Store {
    Store::open_with_storage("/store", cfg, Arc::new(sim.clone())).unwrap()
}

/// A fresh store on a simulated disk and its log `t-0`.
fn fresh(cfg: Config) -> (SimStorage, Store, Log) {
    let sim = SimStorage::new();
    let store = open(&sim, cfg);
    let log = store.log("t", 0).unwrap();
    (sim, store, log)
}

/// A manual clock at `start_ms` and a config whose producers expire after
/// an hour of it.
fn expiring_in_an_hour(start_ms: i64) -> (Arc<ManualClock>, Config) {
    let clock = Arc::new(ManualClock::new(start_ms));
    let cfg = Config::default()
        .with_clock(clock.clone())
        .with_producer_expiration(Duration::from_secs(3600));
    (clock, cfg)
}

/// An idempotent batch of `n` records, values `"<id>:<epoch>:<seq>:<i>"`.
fn pbatch(id: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new().with_producer(id, epoch, seq);
    for i in 0..n {
        let v = format!("{id}:{epoch}:{seq}:{i}");
        b.push(1_000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build()
}

/// (producer_id, epoch, expected, received, received_last) of an
/// out-of-order error.
#[track_caller]
fn out_of_order(r: oncelog::Result<AppendOutcome>) -> (i64, i16, i32, i32, i32) {
    match r {
        Err(Error::OutOfOrderSequence {
            producer_id,
            epoch,
            expected,
            received,
            received_last,
            ..
        }) => (producer_id, epoch, expected, received, received_last),
        other => panic!("expected out_of_order_sequence, got {other:?}"),
    }
}

/// (producer_id, epoch, current_epoch, sequence) of an invalid-epoch error.
#[track_caller]
fn invalid_epoch(r: oncelog::Result<AppendOutcome>) -> (i64, i16, i16, i32) {
    match r {
        Err(Error::InvalidProducerEpoch {
            producer_id,
            epoch,
            current_epoch,
            sequence,
            ..
        }) => (producer_id, epoch, current_epoch, sequence),
        other => panic!("expected invalid_producer_epoch, got {other:?}"),
    }
}

/// The data batches of one producer, in log order.
fn of_producer(log: &Log, id: i64) -> Vec<Stored> {
    stored(log)
        .into_iter()
        .filter(|s| !s.control && s.producer_id == id)
        .collect()
}

/// Appends `sizes.len()` batches from `seq` on; returns (seq, n, base, last).
fn append_run(
    log: &Log,
    id: i64,
    epoch: i16,
    mut seq: i32,
    sizes: &[usize],
) -> Vec<(i32, usize, i64, i64)> {
    let mut out = Vec::new();
    for &n in sizes {
        let (b, l) = appended(log.append(&pbatch(id, epoch, seq, n)));
        assert_eq!(l - b, n as i64 - 1);
        out.push((seq, n, b, l));
        seq = seq.wrapping_add(n as i32);
    }
    out
}

#[test]
fn plain_batches_skip_producer_checks() {
    let (_sim, _store, log) = fresh(Config::default());
    let b = common::batch("plain", 3, 10);
    assert_eq!(appended(log.append(&b)), (0, 2));
    // The same bytes again are simply appended again: no producer, no dedup.
    assert_eq!(appended(log.append(&b)), (3, 5));
    // Interleaved with an idempotent producer, neither disturbs the other.
    assert_eq!(appended(log.append(&pbatch(7, 0, 0, 2))), (6, 7));
    assert_eq!(appended(log.append(&b)), (8, 10));
    assert_eq!(appended(log.append(&pbatch(7, 0, 2, 1))), (11, 11));
    assert_eq!(log.append(&pbatch(7, 0, 0, 2)).unwrap(), dup(6, 7));
    let s = log.producer_stats();
    assert_eq!((s.appended, s.duplicates, s.producers), (2, 1, 1));
    assert_eq!(log.producers().len(), 1, "plain batches track no producer");
    let all = stored(&log);
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|s| !s.control));
    assert_eq!(all.iter().filter(|s| s.producer_id == -1).count(), 3);
}

#[test]
fn missing_sequence_or_epoch_is_invalid_record() {
    let (_sim, _store, log) = fresh(Config::default());
    for (epoch, seq) in [(0i16, -1i32), (-1, 0), (-1, -1), (3, -1)] {
        let e = log.append(&pbatch(11, epoch, seq, 2)).unwrap_err();
        assert_eq!(e.kind(), "invalid_record", "epoch {epoch} seq {seq}: {e}");
        match e {
            Error::InvalidRecord {
                producer_id,
                epoch: got_epoch,
                sequence,
                ..
            } => {
                assert_eq!((producer_id, got_epoch, sequence), (11, epoch, seq));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(log.next_offset(), 0, "nothing written");
    assert!(log.producer(11).is_none(), "no state from a refused batch");
    // A known producer too.
    appended(log.append(&pbatch(11, 0, 0, 1)));
    assert_eq!(
        log.append(&pbatch(11, 0, -1, 1)).unwrap_err().kind(),
        "invalid_record"
    );
    assert_eq!(
        log.append(&pbatch(11, -1, 1, 1)).unwrap_err().kind(),
        "invalid_record"
    );
    assert_eq!(log.next_offset(), 1);
    assert_eq!(log.producer_stats().invalid_record, 6);
    // The producer continues where it was.
    assert_eq!(appended(log.append(&pbatch(11, 0, 1, 1))), (1, 1));
}

#[test]
fn unknown_producers_are_accepted_at_any_sequence() {
    let (_sim, _store, log) = fresh(Config::default());
    let cases: [(i64, i16, i32, usize); 5] = [
        (1, 0, 0, 1),
        (2, 0, 17, 3),
        (3, 5, 123_456, 2),
        (4, 0, i32::MAX, 1),
        (5, i16::MAX, 1 << 30, 4),
    ];
    let mut next = 0;
    for (id, epoch, seq, n) in cases {
        assert_eq!(
            appended(log.append(&pbatch(id, epoch, seq, n))),
            (next, next + n as i64 - 1),
            "producer {id} at {seq}"
        );
        let info = log.producer(id).unwrap();
        assert_eq!(info.epoch, epoch);
        assert_eq!(info.batches.len(), 1);
        assert_eq!(info.batches[0].first_sequence, seq);
        next += n as i64;
        // And it is known from now on: the next sequence follows.
        let follow = seq.wrapping_add(n as i32) & i32::MAX;
        assert_eq!(
            appended(log.append(&pbatch(id, epoch, follow, 1))),
            (next, next)
        );
        next += 1;
    }
    assert_eq!(log.producer(4).unwrap().last_sequence, Some(0));
    assert_eq!(log.producer_stats().producers, 5);
}

#[test]
fn require_sequence_zero_refuses_new_producers_not_at_zero() {
    let (_sim, _store, log) = fresh(Config::default().with_require_sequence_zero(true));
    assert_eq!(
        out_of_order(log.append(&pbatch(1, 0, 5, 2))),
        (1, 0, 0, 5, 6)
    );
    assert_eq!(
        out_of_order(log.append(&pbatch(1, 3, 1, 1))),
        (1, 3, 0, 1, 1)
    );
    assert_eq!(log.next_offset(), 0);
    assert!(log.producer(1).is_none());
    assert_eq!(appended(log.append(&pbatch(1, 0, 0, 2))), (0, 1));
    // Known now: the usual rules.
    assert_eq!(appended(log.append(&pbatch(1, 0, 2, 1))), (2, 2));
    assert_eq!(log.append(&pbatch(1, 0, 0, 2)).unwrap(), dup(0, 1));
    assert_eq!(
        out_of_order(log.append(&pbatch(1, 0, 9, 1))),
        (1, 0, 3, 9, 9)
    );
    assert_eq!(log.producer_stats().out_of_order, 3);
    // Without the option, the same first batch is accepted.
    let (_sim, _store, log) = fresh(Config::default());
    assert_eq!(appended(log.append(&pbatch(1, 0, 5, 2))), (0, 1));
}

#[test]
fn next_in_sequence_appends_contiguously() {
    let (_sim, _store, log) = fresh(Config::default());
    let sizes = [1, 3, 2, 5, 1];
    let mut seq = 0;
    let mut off = 0;
    for (i, n) in sizes.into_iter().enumerate() {
        if i == 2 {
            // A plain batch and another producer in between.
            assert_eq!(
                appended(log.append(&common::batch("x", 2, 0))),
                (off, off + 1)
            );
            off += 2;
            assert_eq!(appended(log.append(&pbatch(99, 0, 40, 1))), (off, off));
            off += 1;
        }
        assert_eq!(
            appended(log.append(&pbatch(1, 0, seq, n))),
            (off, off + n as i64 - 1)
        );
        seq += n as i32;
        off += n as i64;
    }
    let info = log.producer(1).unwrap();
    assert_eq!(info.epoch, 0);
    assert_eq!(info.last_sequence, Some(11));
    let firsts = common::window(&info);
    assert_eq!(
        firsts,
        vec![
            (0, 0, 0, 0),
            (1, 3, 1, 3),
            (4, 5, 7, 8),
            (6, 10, 9, 13),
            (11, 11, 14, 14)
        ]
    );
    let mine = of_producer(&log, 1);
    assert_eq!(
        mine.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![0, 1, 4, 6, 11]
    );
    assert_eq!(log.producer_stats().appended, 6);
}

#[test]
fn exact_duplicates_of_each_of_the_last_five_batches_return_original_offsets() {
    let (_sim, _store, log) = fresh(Config::default());
    let sizes = [2, 1, 3, 1, 2, 4, 1, 3];
    // Another producer interleaved so offsets are not simply sequences.
    let mut run = Vec::new();
    let mut seq = 0;
    for (i, n) in sizes.into_iter().enumerate() {
        let r = append_run(&log, 1, 2, seq, &[n]);
        run.extend(r);
        seq += n as i32;
        append_run(&log, 2, 0, i as i32, &[1]);
    }
    let end = log.next_offset();
    let appends = log.stats().appends;
    let batches = stored(&log);
    // Each of the last five, in any order, as often as retried.
    for round in 0..2 {
        let mut last5: Vec<_> = run[3..].to_vec();
        if round == 1 {
            last5.reverse();
        }
        for (seq, n, base, last) in last5 {
            assert_eq!(
                log.append(&pbatch(1, 2, seq, n)).unwrap(),
                dup(base, last),
                "retry of seq {seq}"
            );
        }
    }
    assert_eq!(log.next_offset(), end, "a duplicate writes nothing");
    assert_eq!(log.stats().appends, appends);
    assert_eq!(stored(&log), batches);
    let s = log.producer_stats();
    assert_eq!((s.duplicates, s.duplicates_offsets_unknown), (10, 0));
    // The next batch is still the next one, and the window slides.
    let (b, l) = appended(log.append(&pbatch(1, 2, seq, 2)));
    assert_eq!((b, l), (end, end + 1));
    assert_eq!(log.append(&pbatch(1, 2, seq, 2)).unwrap(), dup(b, l));
    let (s3, n3, _, _) = run[3];
    assert_eq!(log.append(&pbatch(1, 2, s3, n3)).unwrap(), DUP_UNKNOWN);
    let (s4, n4, b4, l4) = run[4];
    assert_eq!(log.append(&pbatch(1, 2, s4, n4)).unwrap(), dup(b4, l4));
}

#[test]
fn retries_wholly_before_the_window_are_duplicates_without_offsets() {
    let (_sim, _store, log) = fresh(Config::default());
    // Sequences: [0,1] [2,4] [5] [6,7] [8,10] [11] [12,13] [14,16]
    let run = append_run(&log, 5, 0, 0, &[2, 3, 1, 2, 3, 1, 2, 3]);
    let end = log.next_offset();
    // Window = the last five: sequences 6..=16.
    for &(seq, n, _, _) in &run[..3] {
        assert_eq!(log.append(&pbatch(5, 0, seq, n)).unwrap(), DUP_UNKNOWN);
    }
    // Not an exact old batch, but wholly before the window: also old.
    assert_eq!(log.append(&pbatch(5, 0, 1, 3)).unwrap(), DUP_UNKNOWN);
    assert_eq!(log.append(&pbatch(5, 0, 0, 6)).unwrap(), DUP_UNKNOWN);
    // Ending inside the window is a partial overlap, not an old retry.
    assert_eq!(
        out_of_order(log.append(&pbatch(5, 0, 4, 3))),
        (5, 0, 17, 4, 6)
    );
    assert_eq!(log.next_offset(), end);
    let s = log.producer_stats();
    assert_eq!((s.duplicates, s.duplicates_offsets_unknown), (5, 5));
    assert_eq!(of_producer(&log, 5).len(), 8);
}

#[test]
fn gaps_and_partial_overlaps_are_out_of_order() {
    let (_sim, _store, log) = fresh(Config::default());
    // Sequences [0,1] [2,3] [4,5] [6,7] [8,9] [10,11] [12,13]: window 4..=13.
    append_run(&log, 8, 1, 0, &[2; 7]);
    let end = log.next_offset();
    let cases: [(i32, usize); 9] = [
        (15, 1),        // a gap of one
        (14 + 1000, 2), // far ahead
        (14 + (1 << 29), 1),
        (13, 2), // overlaps the tail and the next
        (12, 1), // the first half of the last batch
        (9, 2),  // straddles two window batches
        (8, 4),  // two whole batches as one
        (3, 3),  // starts before the window, ends inside it
        (0, 14), // everything so far as one batch
    ];
    for (seq, n) in cases {
        let last = seq.wrapping_add(n as i32 - 1);
        assert_eq!(
            out_of_order(log.append(&pbatch(8, 1, seq, n))),
            (8, 1, 14, seq, last),
            "seq {seq} n {n}"
        );
    }
    assert_eq!(log.next_offset(), end, "nothing written");
    assert_eq!(log.producer_stats().out_of_order, cases.len() as u64);
    assert_eq!(log.producer(8).unwrap().last_sequence, Some(13));
    assert_eq!(appended(log.append(&pbatch(8, 1, 14, 1))), (end, end));
}

#[test]
fn a_lower_epoch_is_an_invalid_producer_epoch() {
    let (_sim, _store, log) = fresh(Config::default());
    let run = append_run(&log, 3, 4, 0, &[1, 2, 1]);
    let end = log.next_offset();
    // The next sequence, an exact retry and sequence 0, all at older epochs.
    for (epoch, seq, n) in [(3, 4, 1), (3, 1, 2), (0, 0, 1), (2, 0, 1)] {
        assert_eq!(
            invalid_epoch(log.append(&pbatch(3, epoch, seq, n))),
            (3, epoch, 4, seq)
        );
    }
    assert_eq!(log.next_offset(), end);
    assert_eq!(log.producer_stats().invalid_epoch, 4);
    assert_eq!(log.producer(3).unwrap().epoch, 4);
    // The current epoch still works.
    assert_eq!(
        log.append(&pbatch(3, 4, 1, 2)).unwrap(),
        dup(run[1].2, run[1].3)
    );
    assert_eq!(appended(log.append(&pbatch(3, 4, 4, 1))), (end, end));
}

#[test]
fn a_higher_epoch_starts_at_sequence_zero_and_retires_the_old_epoch() {
    let (_sim, _store, log) = fresh(Config::default());
    let old = append_run(&log, 4, 1, 0, &[2, 2, 2]);
    let end = log.next_offset();
    // A higher epoch must start at 0 (even at the old epoch's next sequence).
    for seq in [6, 1, 2] {
        assert_eq!(
            out_of_order(log.append(&pbatch(4, 2, seq, 2))),
            (4, 2, 0, seq, seq + 1)
        );
    }
    assert_eq!(log.next_offset(), end);
    // Sequence 0 at the new epoch is appended, although 0..=1 was written
    // in epoch 1: it is not a duplicate.
    assert_eq!(appended(log.append(&pbatch(4, 2, 0, 2))), (end, end + 1));
    let info = log.producer(4).unwrap();
    assert_eq!(info.epoch, 2);
    assert_eq!(info.batches.len(), 1, "the window was cleared");
    // The old epoch is refused now, retries included.
    for (seq, n, _, _) in &old {
        assert_eq!(
            invalid_epoch(log.append(&pbatch(4, 1, *seq, *n))),
            (4, 1, 2, *seq)
        );
    }
    assert_eq!(invalid_epoch(log.append(&pbatch(4, 1, 6, 1))), (4, 1, 2, 6));
    // The new epoch's own retry is a duplicate; it continues normally.
    assert_eq!(log.append(&pbatch(4, 2, 0, 2)).unwrap(), dup(end, end + 1));
    assert_eq!(
        appended(log.append(&pbatch(4, 2, 2, 1))),
        (end + 2, end + 2)
    );
    // Skipping epochs is fine too, still from 0.
    assert_eq!(
        out_of_order(log.append(&pbatch(4, 9, 3, 1))),
        (4, 9, 0, 3, 3)
    );
    assert_eq!(
        appended(log.append(&pbatch(4, 9, 0, 1))),
        (end + 3, end + 3)
    );
    let s = log.producer_stats();
    assert_eq!((s.out_of_order, s.invalid_epoch), (4, 4));
}

#[test]
fn the_producer_window_is_configurable() {
    for window in [1usize, 2, 10] {
        let (_sim, _store, log) = fresh(Config::default().with_producer_window(window));
        let count = window + 3;
        let sizes: Vec<usize> = (0..count).map(|i| 1 + i % 3).collect();
        let run = append_run(&log, 1, 0, 0, &sizes);
        let end = log.next_offset();
        assert_eq!(log.producer(1).unwrap().batches.len(), window);
        for (i, &(seq, n, b, l)) in run.iter().enumerate() {
            let got = log.append(&pbatch(1, 0, seq, n)).unwrap();
            if i >= count - window {
                assert_eq!(got, dup(b, l), "window {window}: batch {i}");
            } else {
                assert_eq!(got, DUP_UNKNOWN, "window {window}: batch {i}");
            }
        }
        assert_eq!(log.next_offset(), end);
        let s = log.producer_stats();
        assert_eq!(s.duplicates, count as u64);
        assert_eq!(s.duplicates_offsets_unknown, 3);
    }
    // Out of range is refused at open.
    for bad in [0usize, 65] {
        let e = Store::open_with_storage(
            "/store",
            Config::default().with_producer_window(bad),
            Arc::new(SimStorage::new()),
        )
        .unwrap_err();
        assert_eq!(e.kind(), "invalid_config");
    }
}

#[test]
fn sequences_wrap_from_i32_max_to_zero() {
    let (_sim, _store, log) = fresh(Config::default());
    // Ends exactly at i32::MAX.
    let (b0, l0) = appended(log.append(&pbatch(1, 0, i32::MAX - 2, 3)));
    assert_eq!(log.producer(1).unwrap().last_sequence, Some(i32::MAX));
    // i32::MAX + 1 is refused as a sequence: the next one is 0.
    assert_eq!(
        out_of_order(log.append(&pbatch(1, 0, 1, 1))),
        (1, 0, 0, 1, 1)
    );
    let (b1, l1) = appended(log.append(&pbatch(1, 0, 0, 2)));
    assert_eq!(b1, l0 + 1);
    assert_eq!(
        log.append(&pbatch(1, 0, i32::MAX - 2, 3)).unwrap(),
        dup(b0, l0)
    );
    assert_eq!(log.append(&pbatch(1, 0, 0, 2)).unwrap(), dup(b1, l1));
    // Part of the pre-wrap batch is a partial overlap.
    assert_eq!(
        out_of_order(log.append(&pbatch(1, 0, i32::MAX, 1))),
        (1, 0, 2, i32::MAX, i32::MAX)
    );
    appended(log.append(&pbatch(1, 0, 2, 1)));
    // Push the pre-wrap batch out of the window: an old retry across the wrap.
    append_run(&log, 1, 0, 3, &[1, 1, 1, 1]);
    assert_eq!(
        log.append(&pbatch(1, 0, i32::MAX - 2, 3)).unwrap(),
        DUP_UNKNOWN
    );
    assert_eq!(
        log.append(&pbatch(1, 0, i32::MAX - 9, 5)).unwrap(),
        DUP_UNKNOWN
    );
}

#[test]
fn a_batch_straddling_the_wrap() {
    let (_sim, _store, log) = fresh(Config::default());
    appended(log.append(&pbatch(2, 0, i32::MAX - 10, 8)));
    // i32::MAX-2, MAX-1, MAX, 0, 1.
    let (b, l) = appended(log.append(&pbatch(2, 0, i32::MAX - 2, 5)));
    assert_eq!(l - b, 4);
    let info = log.producer(2).unwrap();
    assert_eq!(info.last_sequence, Some(1));
    let w = info.batches.last().unwrap();
    assert_eq!((w.first_sequence, w.last_sequence), (i32::MAX - 2, 1));
    assert_eq!((w.base_offset, w.last_offset), (b, l));
    // Its duplicates, before and after more batches.
    assert_eq!(
        log.append(&pbatch(2, 0, i32::MAX - 2, 5)).unwrap(),
        dup(b, l)
    );
    // Pieces of it are partial overlaps (expected 2).
    for (seq, n) in [(0, 2), (i32::MAX, 2), (i32::MAX - 2, 3), (1, 3)] {
        assert_eq!(
            out_of_order(log.append(&pbatch(2, 0, seq, n))).2,
            2,
            "seq {seq} n {n}"
        );
    }
    let (b2, l2) = appended(log.append(&pbatch(2, 0, 2, 2)));
    assert_eq!(b2, l + 1);
    assert_eq!(
        log.append(&pbatch(2, 0, i32::MAX - 2, 5)).unwrap(),
        dup(b, l)
    );
    assert_eq!(log.append(&pbatch(2, 0, 2, 2)).unwrap(), dup(b2, l2));
    assert_eq!(
        out_of_order(log.append(&pbatch(2, 0, 5, 1))),
        (2, 0, 4, 5, 5)
    );
    // Three more: the straddling batch is still the oldest of the five.
    append_run(&log, 2, 0, 4, &[1, 1, 1]);
    assert_eq!(
        log.append(&pbatch(2, 0, i32::MAX - 2, 5)).unwrap(),
        dup(b, l)
    );
    // One more and it is older than the window.
    append_run(&log, 2, 0, 7, &[1]);
    assert_eq!(
        log.append(&pbatch(2, 0, i32::MAX - 2, 5)).unwrap(),
        DUP_UNKNOWN
    );
    assert_eq!(
        log.append(&pbatch(2, 0, i32::MAX - 10, 8)).unwrap(),
        DUP_UNKNOWN
    );
    // A new producer whose very first batch straddles.
    let (b3, l3) = appended(log.append(&pbatch(3, 1, i32::MAX - 2, 5)));
    assert_eq!(
        log.append(&pbatch(3, 1, i32::MAX - 2, 5)).unwrap(),
        dup(b3, l3)
    );
    assert_eq!(appended(log.append(&pbatch(3, 1, 2, 1))), (l3 + 1, l3 + 1));
    assert_eq!(
        of_producer(&log, 2)
            .iter()
            .map(|s| s.seq)
            .collect::<Vec<_>>(),
        vec![i32::MAX - 10, i32::MAX - 2, 2, 4, 5, 6, 7]
    );
}

#[test]
fn error_messages_name_the_log_the_producer_and_the_sequences() {
    let sim = SimStorage::new();
    let store = open(&sim, Config::default());
    let log = store.log("orders", 7).unwrap();
    let id = 424_242;
    appended(log.append(&pbatch(id, 9, 1000, 10))); // 1000..=1009
    let e = log.append(&pbatch(id, 9, 1337, 3)).unwrap_err();
    assert_eq!(e.kind(), "out_of_order_sequence");
    let msg = e.to_string();
    for part in ["orders-7", "424242", "1337", "1339", "1010", "epoch 9"] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    let e = log.append(&pbatch(id, 8, 1010, 1)).unwrap_err();
    assert_eq!(e.kind(), "invalid_producer_epoch");
    let msg = e.to_string();
    for part in ["orders-7", "424242", "epoch 8", "9", "1010"] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    let e = log.append(&pbatch(id, 9, -1, 1)).unwrap_err();
    assert_eq!(e.kind(), "invalid_record");
    let msg = e.to_string();
    for part in ["orders-7", "424242", "-1"] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    // A named producer's fenced session.
    let first = store.producer("billing-svc").unwrap();
    let _second = store.producer("billing-svc").unwrap();
    let e = first
        .send("orders", 7, &[Message::new(b"late")])
        .unwrap_err();
    assert_eq!(e.kind(), "producer_fenced");
    let msg = e.to_string();
    let id_s = first.id().to_string();
    for part in [
        "orders-7",
        "billing-svc",
        id_s.as_str(),
        "epoch 0",
        "epoch 1",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
}

#[test]
fn max_producers_refuses_new_producers_until_idle_ones_expire() {
    let (clock, cfg) = expiring_in_an_hour(50 * HOUR_MS);
    let cfg = cfg.with_max_producers(3);
    let sim = SimStorage::new();
    let store = open(&sim, cfg);
    let log = store.log("lim", 2).unwrap();
    for id in [1, 2, 3] {
        appended(log.append(&pbatch(id, 0, 0, 1)));
    }
    let end = log.next_offset();
    let e = log.append(&pbatch(4, 0, 0, 1)).unwrap_err();
    assert_eq!(e.kind(), "too_many_producers");
    assert!(e.is_retryable());
    match &e {
        Error::TooManyProducers {
            log,
            producer_id,
            max,
            ..
        } => assert_eq!((log.as_str(), *producer_id, *max), ("lim-2", 4, 3)),
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("lim-2") && msg.contains('4') && msg.contains('3'),
        "{msg}"
    );
    assert_eq!(log.next_offset(), end);
    // Known producers are not affected.
    appended(log.append(&pbatch(1, 0, 1, 1)));
    assert_eq!(log.append(&pbatch(2, 0, 0, 1)).unwrap(), dup(1, 1));
    // 30 minutes on, producer 1 appends again. At 59 minutes nobody is
    // idle long enough; at 61, 2 and 3 are (1 was idle for 31 minutes).
    clock.advance(Duration::from_secs(30 * 60));
    appended(log.append(&pbatch(1, 0, 2, 1)));
    clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        log.append(&pbatch(4, 0, 0, 1)).unwrap_err().kind(),
        "too_many_producers"
    );
    clock.advance(Duration::from_secs(2 * 60));
    let (b4, _) = appended(log.append(&pbatch(4, 0, 0, 1)));
    assert!(log.producer(2).is_none() && log.producer(3).is_none());
    assert!(log.producer(1).is_some() && log.producer(4).is_some());
    let s = log.producer_stats();
    assert_eq!(s.too_many_producers, 2);
    assert_eq!(s.expired, 2);
    assert_eq!(s.producers, 2);
    // Room for one more.
    appended(log.append(&pbatch(5, 0, 0, 1)));
    assert_eq!(
        log.append(&pbatch(6, 0, 0, 1)).unwrap_err().kind(),
        "too_many_producers"
    );
    assert_eq!(log.append(&pbatch(4, 0, 0, 1)).unwrap(), dup(b4, b4));
}

#[test]
fn idle_producers_expire_and_their_old_batches_append_again() {
    let (clock, cfg) = expiring_in_an_hour(10 * HOUR_MS);
    let (_sim, _store, log) = fresh(cfg);
    let run = append_run(&log, 1, 0, 0, &[1, 2, 1]);
    clock.advance(Duration::from_secs(30 * 60));
    append_run(&log, 2, 0, 0, &[1]);
    let info = log.producer(1).unwrap();
    assert_eq!(info.last_append_ms, 10 * HOUR_MS);
    clock.advance(Duration::from_millis(30 * 60_000 - 1));
    assert_eq!(log.expire_producers(), 0, "one ms short of the expiration");
    clock.advance(Duration::from_millis(1));
    assert_eq!(log.expire_producers(), 1);
    assert!(log.producer(1).is_none());
    assert!(log.producer(2).is_some());
    let s = log.producer_stats();
    assert_eq!((s.expired, s.producers), (1, 1));
    // Unknown again: its last batch, a retry, is appended a second time
    // (documented: expiry forgets the producer), after the checkpoint that
    // records the expiry (offset `end`).
    let end = log.next_offset() + 1;
    let (seq, n, b, _) = run[2];
    assert_eq!(appended(log.append(&pbatch(1, 0, seq, n))), (end, end));
    assert_ne!(b, end);
    // And now it is known from that batch on.
    assert_eq!(log.append(&pbatch(1, 0, seq, n)).unwrap(), dup(end, end));
    // What came before the re-append lies before its window now: an old
    // retry. Ahead of it, a gap.
    assert_eq!(log.append(&pbatch(1, 0, 0, 1)).unwrap(), DUP_UNKNOWN);
    assert_eq!(
        out_of_order(log.append(&pbatch(1, 0, seq + 2, 1))),
        (1, 0, seq + 1, seq + 2, seq + 2)
    );
    assert_eq!(
        of_producer(&log, 1)
            .iter()
            .map(|s| s.seq)
            .collect::<Vec<_>>(),
        vec![0, 1, 3, 3]
    );
}

#[test]
fn producer_expiry_is_checked_again_at_open() {
    let (clock, cfg) = expiring_in_an_hour(100 * HOUR_MS);
    let sim = SimStorage::new();
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    let a = append_run(&log, 1, 0, 0, &[1, 1, 2, 1, 1, 3]);
    clock.advance(Duration::from_secs(40 * 60));
    let b = append_run(&log, 2, 0, 0, &[2, 1, 1, 1, 1, 1]);
    drop(log);
    store.close().unwrap();
    // 70 minutes after A's last append, 30 after B's.
    clock.advance(Duration::from_secs(30 * 60));
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    assert_eq!(log.recovery_report().batches_replayed, 0);
    assert_eq!(log.recovery_report().producers, 1);
    assert!(log.producer(1).is_none(), "expired at open");
    assert_eq!(
        log.producer(2).unwrap().last_append_ms,
        100 * HOUR_MS + 40 * 60_000
    );
    let s = log.producer_stats();
    assert_eq!((s.expired, s.producers), (1, 1));
    for &(seq, n, base, last) in &b[1..] {
        assert_eq!(log.append(&pbatch(2, 0, seq, n)).unwrap(), dup(base, last));
    }
    // After the checkpoint that records the expiry at open.
    let end = log.next_offset() + 1;
    let (seq, n, _, _) = a[5];
    assert_eq!(appended(log.append(&pbatch(1, 0, seq, n))), (end, end + 2));
}

#[test]
fn replayed_batches_count_as_appended_at_open() {
    let (clock, cfg) = expiring_in_an_hour(100 * HOUR_MS);
    let sim = SimStorage::new();
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    let a = append_run(&log, 1, 0, 0, &[1, 2, 1, 1, 1, 3]);
    // A process crash, then a restart 5 hours later: no checkpoint was
    // written, every batch is replayed and counts as appended at the open.
    sim.crash(CrashMode::KeepAll);
    drop(log);
    drop(store);
    clock.advance(Duration::from_secs(5 * 3600));
    let store = open(&sim, cfg);
    let log = store.log("t", 0).unwrap();
    let r = log.recovery_report();
    assert_eq!(
        (r.checkpoint_offset, r.batches_replayed, r.producers),
        (None, 6, 1)
    );
    assert_eq!(log.producer(1).unwrap().last_append_ms, 105 * HOUR_MS);
    assert_eq!(log.producer_stats().expired, 0);
    for &(seq, n, b, l) in &a[1..] {
        assert_eq!(log.append(&pbatch(1, 0, seq, n)).unwrap(), dup(b, l));
    }
    // It expires an expiration after the open, not after its appends.
    clock.advance(Duration::from_secs(3599));
    assert_eq!(log.expire_producers(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(log.expire_producers(), 1);
}

/// Expiry forgets a producer (documented: its old batches are appended
/// again). A crash before the next checkpoint must not bring back the
/// forgotten entry and merge the batches written since into it: recovery
/// must rebuild the state the log answered with before the crash.
#[test]
fn an_expiry_before_a_crash_is_not_undone_by_recovery() {
    let (clock, cfg) = expiring_in_an_hour(100 * HOUR_MS);
    let sim = SimStorage::new();
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    append_run(&log, 1, 0, 0, &[1, 1, 2]);
    log.checkpoint().unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(log.expire_producers(), 1);
    // Unknown again: the retry of its last batch is written a second time,
    // after a checkpoint that records the expiry.
    let end = log.next_offset() + 1;
    assert_eq!(appended(log.append(&pbatch(1, 0, 2, 2))), (end, end + 1));
    assert_eq!(log.append(&pbatch(1, 0, 2, 2)).unwrap(), dup(end, end + 1));
    sim.crash(CrashMode::KeepAll);
    drop(log);
    drop(store);
    let store = open(&sim, cfg);
    let log = store.log("t", 0).unwrap();
    let info = log.producer(1).expect("appended 0 s before the crash");
    assert_eq!(
        info.batches
            .iter()
            .map(|b| (b.first_sequence, b.base_offset))
            .collect::<Vec<_>>(),
        vec![(2, end)],
        "the window before the crash held only the batch written after the expiry"
    );
    assert_eq!(log.append(&pbatch(1, 0, 2, 2)).unwrap(), dup(end, end + 1));
}

/// The same, where it costs a duplicate in the log: after expiry an
/// unknown producer is accepted at any epoch, and its retry after a crash
/// must still be recognized.
#[test]
fn a_batch_accepted_after_its_producer_expired_is_deduplicated_after_a_crash() {
    let (clock, cfg) = expiring_in_an_hour(100 * HOUR_MS);
    let sim = SimStorage::new();
    let store = open(&sim, cfg.clone());
    let log = store.log("t", 0).unwrap();
    append_run(&log, 1, 5, 0, &[1, 1, 1]);
    log.checkpoint().unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(log.expire_producers(), 1);
    // Unknown: accepted at any epoch and sequence (outcome table, row 3).
    let (b, l) = appended(log.append(&pbatch(1, 3, 0, 2)));
    assert_eq!(log.append(&pbatch(1, 3, 0, 2)).unwrap(), dup(b, l));
    // The process dies right after acknowledging; the client retries.
    sim.crash(CrashMode::KeepAll);
    drop(log);
    drop(store);
    let store = open(&sim, cfg);
    let log = store.log("t", 0).unwrap();
    let got = log.append(&pbatch(1, 3, 0, 2));
    let in_log = of_producer(&log, 1).iter().filter(|s| s.epoch == 3).count();
    assert_eq!(
        in_log, 1,
        "the epoch-3 batch is in the log once (retry gave {got:?})"
    );
    assert_eq!(got.unwrap(), dup(b, l));
}

#[test]
fn producer_stats_count_every_outcome() {
    let clock = Arc::new(ManualClock::new(HOUR_MS));
    let cfg = Config::default()
        .with_clock(clock.clone())
        .with_max_producers(3)
        .with_producer_expiration(Duration::from_secs(600));
    let sim = SimStorage::new();
    let store = open(&sim, cfg);
    let log = store.log("t", 0).unwrap();
    let other = store.log("t", 1).unwrap();
    append_run(&log, 1, 0, 0, &[1; 7]); // appended 7
    log.append(&pbatch(1, 0, 6, 1)).unwrap(); // duplicate
    log.append(&pbatch(1, 0, 0, 1)).unwrap(); // duplicate, offsets unknown
    log.append(&pbatch(1, 0, 1, 1)).unwrap(); // duplicate, offsets unknown
    log.append(&pbatch(1, 0, 9, 1)).unwrap_err(); // out of order
    log.append(&pbatch(1, 0, 5, 2)).unwrap_err(); // out of order
    log.append(&pbatch(1, 0, -1, 1)).unwrap_err(); // invalid record
    append_run(&log, 2, 3, 0, &[1]); // appended 8
    log.append(&pbatch(2, 2, 1, 1)).unwrap_err(); // invalid epoch
    // A named producer through the log, at a stale and a future epoch.
    let named = store.producer("n").unwrap();
    let nid = named.id();
    let _newer = store.producer("n").unwrap();
    assert_eq!(
        log.append(&pbatch(nid, 0, 0, 1)).unwrap_err().kind(),
        "producer_fenced"
    );
    assert_eq!(
        log.append(&pbatch(nid, 2, 0, 1)).unwrap_err().kind(),
        "invalid_producer_epoch"
    );
    appended(log.append(&pbatch(nid, 1, 0, 1))); // appended 9, third producer
    log.append(&pbatch(4, 0, 0, 1)).unwrap_err(); // too many producers
    clock.advance(Duration::from_secs(601));
    // appended 10, 3 expired (producer 4 is not one of them: no checkpoint
    // needed before it)
    appended(log.append(&pbatch(4, 0, 0, 1)));
    log.append(&pbatch(5, 0, 0, 1)).unwrap(); // appended 11
    log.checkpoint().unwrap(); // one checkpoint
    log.checkpoint().unwrap(); // unchanged: none
    append_run(&other, 1, 0, 0, &[2, 2]);
    other.append(&pbatch(1, 0, 0, 2)).unwrap();
    let s = log.producer_stats();
    assert_eq!(s.appended, 11);
    assert_eq!(s.duplicates, 3);
    assert_eq!(s.duplicates_offsets_unknown, 2);
    assert_eq!(s.out_of_order, 2);
    assert_eq!(s.invalid_record, 1);
    assert_eq!(s.invalid_epoch, 2);
    assert_eq!(s.fenced, 1);
    assert_eq!(s.too_many_producers, 1);
    assert_eq!(s.expired, 3);
    assert_eq!(s.checkpoints, 1);
    assert_eq!(s.producers, 2);
    assert!(s.table_bytes > 0);
    let o = other.producer_stats();
    assert_eq!((o.appended, o.duplicates, o.producers), (2, 1, 1));
    let total = store.producer_stats();
    assert_eq!(total.appended, 13);
    assert_eq!(total.duplicates, 4);
    assert_eq!(total.producers, 3);
    assert_eq!(total.fenced, 1);
    // The checkpoint is in the log, once.
    assert_eq!(stored(&log).iter().filter(|s| s.control).count(), 1);
}

#[test]
fn producer_ids_are_unique_across_reopens_and_crashes() {
    let sim = SimStorage::new();
    let cfg = Config::default();
    let mut seen = HashSet::new();
    fn take(store: &Store, seen: &mut HashSet<i64>, n: usize) {
        for _ in 0..n {
            let (id, epoch) = store.init_producer().unwrap();
            assert!(id >= 0);
            assert_eq!(epoch, 0);
            assert!(seen.insert(id), "id {id} handed out twice");
        }
    }
    let store = open(&sim, cfg.clone());
    take(&store, &mut seen, 5);
    store.close().unwrap();
    let store = open(&sim, cfg.clone());
    take(&store, &mut seen, 5);
    let p = store.idempotent_producer().unwrap();
    assert_eq!(p.epoch(), 0);
    assert!(seen.insert(p.id()));
    drop(p);
    // Power loss: only what was synced survives.
    sim.crash(CrashMode::LoseUnsynced);
    drop(store);
    let store = open(&sim, cfg.clone());
    take(&store, &mut seen, 1200); // crosses a block boundary
    sim.crash(CrashMode::LoseUnsynced);
    drop(store);
    let store = open(&sim, cfg.clone());
    take(&store, &mut seen, 3);
    sim.crash(CrashMode::RandomPages { seed: 3 });
    drop(store);
    let store = open(&sim, cfg);
    take(&store, &mut seen, 3);
    let named = store.producer("a-name").unwrap();
    assert!(seen.insert(named.id()), "a named producer gets a fresh id");
    assert_eq!(seen.len(), 1218);
}

#[test]
fn init_producer_with_bumps_the_epoch() {
    let sim = SimStorage::new();
    let store = open(&sim, Config::default());
    let (id, e0) = store.init_producer().unwrap();
    assert_eq!(e0, 0);
    assert_eq!(store.init_producer_with(id, 0).unwrap(), (id, 1));
    assert_eq!(store.init_producer_with(id, 1).unwrap(), (id, 2));
    // Exhausted epochs: a new id at epoch 0.
    let (id2, e2) = store.init_producer_with(id, i16::MAX - 1).unwrap();
    assert_ne!(id2, id);
    assert_eq!(e2, 0);
    // Ids never handed out, and negative epochs, are refused.
    for (bad_id, epoch) in [(999_999_999, 0), (-1, 0), (id, -1)] {
        let e = store.init_producer_with(bad_id, epoch).unwrap_err();
        assert_eq!(e.kind(), "invalid_producer", "{bad_id}/{epoch}: {e}");
    }
    // A bump from an epoch already bumped past is refused.
    let e = store.init_producer_with(id, 0).unwrap_err();
    assert_eq!(e.kind(), "invalid_producer_epoch", "{e}");
    // The bumped epoch works with the log's rules: sequence 0, window cleared.
    let log = store.log("t", 0).unwrap();
    let (id, _) = store.init_producer().unwrap();
    append_run(&log, id, 0, 0, &[1, 1]);
    let (id1, e1) = store.init_producer_with(id, 0).unwrap();
    assert_eq!((id1, e1), (id, 1));
    assert_eq!(appended(log.append(&pbatch(id, e1, 0, 1))), (2, 2));
    assert_eq!(invalid_epoch(log.append(&pbatch(id, 0, 2, 1))).2, 1);
    // A named producer: bumping its current epoch fences the session.
    let named = store.producer("svc").unwrap();
    let nid = named.id();
    assert_eq!(named.epoch(), 0);
    named.send("t", 1, &[Message::new(b"one")]).unwrap();
    assert_eq!(store.init_producer_with(nid, 0).unwrap(), (nid, 1));
    assert_eq!(
        named
            .send("t", 1, &[Message::new(b"two")])
            .unwrap_err()
            .kind(),
        "producer_fenced"
    );
    assert_eq!(
        store.init_producer_with(nid, 0).unwrap_err().kind(),
        "producer_fenced"
    );
    assert_eq!(store.named_producers(), vec![("svc".to_string(), nid, 1)]);
    assert_eq!(store.producer_name(nid).as_deref(), Some("svc"));
    assert_eq!(store.producer_name(id), None);
    // Durable: after a power loss the bump holds.
    sim.crash(CrashMode::LoseUnsynced);
    drop(log);
    drop(named);
    drop(store);
    let store = open(&sim, Config::default());
    assert_eq!(store.named_producers(), vec![("svc".to_string(), nid, 1)]);
    assert_eq!(store.init_producer_with(nid, 1).unwrap(), (nid, 2));
}

/// (seq, records, base offset, last offset) of an acknowledged batch.
type Acked = (i32, usize, i64, i64);

/// A tiny deterministic PRNG (xorshift).
fn rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn concurrent_producers_and_retries_on_one_partition() {
    const PRODUCERS: usize = 8;
    const BATCHES: usize = 200;
    const RETRIERS: usize = 3;
    const RETRIES: usize = 300;
    let (_sim, store, log) = fresh(Config::default().with_durability(Durability::Os));
    let ids: Vec<i64> = (0..PRODUCERS)
        .map(|_| store.init_producer().unwrap().0)
        .collect();
    // Per producer: (seq, n, base, last) of every acknowledged batch.
    let acked: Vec<Mutex<Vec<Acked>>> = (0..PRODUCERS).map(|_| Mutex::new(Vec::new())).collect();
    let known = AtomicUsize::new(0);
    let unknown = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (p, &id) in ids.iter().enumerate() {
            let log = &log;
            let acked = &acked;
            s.spawn(move || {
                let mut seq = 0i32;
                for i in 0..BATCHES {
                    let n = 1 + (i + p) % 3;
                    let (b, l) = appended(log.append(&pbatch(id, 0, seq, n)));
                    acked[p].lock().unwrap().push((seq, n, b, l));
                    seq += n as i32;
                }
            });
        }
        for r in 0..RETRIERS {
            let (log, acked, ids) = (&log, &acked, &ids);
            let (known, unknown) = (&known, &unknown);
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (r as u64 + 1);
                let mut done = 0;
                while done < RETRIES {
                    let p = rand(&mut rng) as usize % PRODUCERS;
                    let pick = {
                        let v = acked[p].lock().unwrap();
                        if v.is_empty() {
                            None
                        } else {
                            let recent = rand(&mut rng).is_multiple_of(2);
                            let i = if recent {
                                v.len() - 1 - (rand(&mut rng) as usize % v.len().min(3))
                            } else {
                                rand(&mut rng) as usize % v.len()
                            };
                            Some((i, v[i]))
                        }
                    };
                    let Some((i, (seq, n, b, l))) = pick else {
                        std::thread::yield_now();
                        continue;
                    };
                    let got = log.append(&pbatch(ids[p], 0, seq, n)).unwrap();
                    match got {
                        AppendOutcome::Duplicate {
                            base_offset: Some(_),
                            ..
                        } => {
                            assert_eq!(got, dup(b, l), "producer {p} batch {i}");
                            known.fetch_add(1, Ordering::Relaxed);
                        }
                        AppendOutcome::Duplicate { .. } => {
                            // Offsets unknown only once five later batches
                            // were written (at most one of them not yet
                            // acknowledged when we look).
                            let len = acked[p].lock().unwrap().len();
                            assert!(len >= i + 5, "producer {p} batch {i} of {len}: {got:?}");
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("retry of producer {p} batch {i} gave {other:?}"),
                    }
                    done += 1;
                }
            });
        }
    });
    let acked: Vec<Vec<_>> = acked.into_iter().map(|m| m.into_inner().unwrap()).collect();
    let retries = known.load(Ordering::Relaxed) + unknown.load(Ordering::Relaxed);
    assert_eq!(retries, RETRIERS * RETRIES);
    // The log: each producer's batches in sequence order at their acked
    // offsets, nothing twice, nothing else.
    let all = stored(&log);
    assert_eq!(all.len(), PRODUCERS * BATCHES);
    let mut pairs = HashSet::new();
    for s in &all {
        assert!(!s.control);
        assert!(
            pairs.insert((s.producer_id, s.seq)),
            "{s:?} twice in the log"
        );
    }
    for (p, &id) in ids.iter().enumerate() {
        let mine: Vec<(i32, i64, i64)> = all
            .iter()
            .filter(|s| s.producer_id == id)
            .map(|s| (s.seq, s.base, s.last))
            .collect();
        let expect: Vec<(i32, i64, i64)> = acked[p].iter().map(|&(q, _, b, l)| (q, b, l)).collect();
        assert_eq!(mine, expect, "producer {p}");
    }
    let s = log.producer_stats();
    assert_eq!(s.appended, (PRODUCERS * BATCHES) as u64);
    assert_eq!(s.duplicates, retries as u64);
    assert_eq!(
        s.duplicates_offsets_unknown,
        unknown.load(Ordering::Relaxed) as u64
    );
    // Settled: the last five of each are duplicates with offsets, older not.
    let end = log.next_offset();
    for (p, &id) in ids.iter().enumerate() {
        for (i, &(seq, n, b, l)) in acked[p].iter().enumerate().rev().take(7) {
            let got = log.append(&pbatch(id, 0, seq, n)).unwrap();
            if i >= BATCHES - 5 {
                assert_eq!(got, dup(b, l));
            } else {
                assert_eq!(got, DUP_UNKNOWN);
            }
        }
    }
    assert_eq!(log.next_offset(), end);
}

#[test]
fn concurrent_producer_clients_across_four_partitions() {
    const PARTITIONS: u32 = 4;
    const SENDS: usize = 40;
    let sim = SimStorage::new();
    let cfg = Config::default()
        .with_segment_bytes(2048)
        .with_durability(Durability::Sync);
    let store = open(&sim, cfg.clone());
    let producers = vec![
        store.idempotent_producer().unwrap(),
        store.idempotent_producer().unwrap(),
        store.producer("shared-named").unwrap(),
    ];
    // (producer, partition, first value, base, last) of every send.
    let sent = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (pi, producer) in producers.iter().enumerate() {
            for t in 0..2usize {
                let sent = &sent;
                s.spawn(move || {
                    for i in 0..SENDS {
                        let partition = ((t + i) % PARTITIONS as usize) as u32;
                        let n = 1 + (i + t + pi) % 3;
                        let values: Vec<String> =
                            (0..n).map(|j| format!("p{pi}-t{t}-i{i}-{j}")).collect();
                        let msgs: Vec<Message<'_>> =
                            values.iter().map(|v| Message::new(v.as_bytes())).collect();
                        let (b, l) = appended(producer.send("c", partition, &msgs));
                        assert_eq!(l - b, n as i64 - 1);
                        sent.lock()
                            .unwrap()
                            .push((pi, partition, values[0].clone(), b, l));
                    }
                });
            }
        }
    });
    let sent = sent.into_inner().unwrap();
    assert_eq!(sent.len(), 3 * 2 * SENDS);
    for partition in 0..PARTITIONS {
        let log = store.log("c", partition).unwrap();
        assert!(log.stats().segments > 1, "partition {partition} must roll");
        // Every data batch, with its first value.
        let mut firsts: HashMap<i64, (i64, i32, i64, String)> = HashMap::new();
        let mut offset = log.log_start_offset();
        let mut order = Vec::new();
        while offset < log.next_offset() {
            let batches = log.read(offset, 1 << 20).unwrap().with_checkpoints();
            for b in &batches {
                let b = b.unwrap();
                let v = b.view();
                offset = v.last_offset() + 1;
                if v.is_control() {
                    continue;
                }
                let rec = v.records().unwrap().next().unwrap().unwrap();
                let value = String::from_utf8(rec.value.unwrap().to_vec()).unwrap();
                firsts.insert(
                    v.base_offset(),
                    (v.producer_id(), v.base_sequence(), v.last_offset(), value),
                );
                order.push((v.producer_id(), v.base_sequence(), v.last_offset_delta()));
            }
        }
        let mine: Vec<_> = sent.iter().filter(|s| s.1 == partition).collect();
        assert_eq!(
            firsts.len(),
            mine.len(),
            "partition {partition}: one batch per send"
        );
        for (pi, _, value, b, l) in &mine {
            let (pid, _, last, v) = &firsts[b];
            assert_eq!(*pid, producers[*pi].id());
            assert_eq!((last, v), (l, value));
        }
        // Per producer: sequences contiguous from 0 in log order.
        for producer in &producers {
            let seqs: Vec<(i32, i32)> = order
                .iter()
                .filter(|o| o.0 == producer.id())
                .map(|o| (o.1, o.2))
                .collect();
            let mut next = 0;
            for &(seq, delta) in &seqs {
                assert_eq!(
                    seq,
                    next,
                    "partition {partition} producer {}",
                    producer.id()
                );
                next = seq + delta + 1;
            }
            assert_eq!(producer.next_sequence("c", partition).unwrap(), next);
            // Re-sends of the last five through the client: duplicates.
            let batches: Vec<(i32, i64, i64)> = firsts
                .iter()
                .filter(|(_, f)| f.0 == producer.id())
                .map(|(b, f)| (f.1, *b, f.2))
                .collect();
            let mut batches = batches;
            batches.sort();
            let end = log.next_offset();
            for &(seq, b, l) in batches.iter().rev().take(5) {
                let n = (l - b + 1) as usize;
                let msgs = vec![Message::new(b"resend"); n];
                assert_eq!(
                    producer.send_at("c", partition, seq, &msgs).unwrap(),
                    dup(b, l)
                );
            }
            assert_eq!(log.next_offset(), end);
        }
    }
    drop(producers);
    // Acknowledged under Sync: all of it survives a power loss.
    sim.crash(CrashMode::LoseUnsynced);
    drop(store);
    let store = open(&sim, cfg);
    let total: usize = (0..PARTITIONS)
        .map(|p| {
            let log = store.log("c", p).unwrap();
            stored(&log).iter().filter(|s| !s.control).count()
        })
        .sum();
    assert_eq!(total, sent.len());
}

#[test]
fn producer_client_sequences_follow_the_log() {
    let (_sim, store, log) = fresh(Config::default());
    let p = store.idempotent_producer().unwrap();
    assert_eq!((p.epoch(), p.name()), (0, None));
    assert_ne!(p.id(), store.idempotent_producer().unwrap().id());
    assert_eq!(p.next_sequence("t", 0).unwrap(), 0);
    let m = [Message::new(b"a"), Message::new(b"b").with_key(b"k")];
    assert_eq!(appended(p.send("t", 0, &m)), (0, 1));
    assert_eq!(appended(p.send("t", 0, &m[..1])), (2, 2));
    assert_eq!(p.next_sequence("t", 0).unwrap(), 3);
    // A re-send is a duplicate and does not move the next sequence.
    assert_eq!(p.send_at("t", 0, 0, &m).unwrap(), dup(0, 1));
    assert_eq!(p.next_sequence("t", 0).unwrap(), 3);
    // A gap is refused and moves nothing.
    let (id, _, expected, received, _) = out_of_order(p.send_at("t", 0, 7, &m));
    assert_eq!((id, expected, received), (p.id(), 3, 7));
    assert_eq!(p.next_sequence("t", 0).unwrap(), 3);
    // An explicit next sequence appends and moves it.
    assert_eq!(appended(p.send_at("t", 0, 3, &m)), (3, 4));
    assert_eq!(p.next_sequence("t", 0).unwrap(), 5);
    assert_eq!(appended(p.send("t", 0, &m[..1])), (5, 5));
    // The batches carry the producer, epoch and sequences.
    assert_eq!(
        of_producer(&log, p.id())
            .iter()
            .map(|s| (s.seq, s.base, s.epoch))
            .collect::<Vec<_>>(),
        vec![(0, 0, 0), (2, 2, 0), (3, 3, 0), (5, 5, 0)]
    );
    // Partitions are independent.
    assert_eq!(p.next_sequence("t", 1).unwrap(), 0);
    assert_eq!(appended(p.send("t", 1, &m)), (0, 1));
    // An empty send is refused.
    assert_eq!(p.send("t", 0, &[]).unwrap_err().kind(), "invalid_batch");
    assert_eq!(p.next_sequence("t", 0).unwrap(), 6);
}

#[test]
fn the_background_thread_expires_idle_producers() {
    let (clock, cfg) = expiring_in_an_hour(10 * HOUR_MS);
    let cfg = cfg.with_retention_check_interval(Duration::from_millis(10));
    let (_sim, _store, log) = fresh(cfg);
    append_run(&log, 1, 0, 0, &[1, 1]);
    append_run(&log, 2, 0, 0, &[1]);
    clock.advance(Duration::from_secs(3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.producer_stats().producers > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the background thread never expired the producers"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(log.producer(1).is_none() && log.producer(2).is_none());
    assert_eq!(log.producer_stats().expired, 2);
    // Offset 3 is the checkpoint that records the expiry.
    assert_eq!(appended(log.append(&pbatch(1, 0, 1, 1))), (4, 4));
}

#[test]
fn a_failed_id_reservation_hands_out_nothing_and_can_be_retried() {
    let sim = SimStorage::new();
    let store = open(&sim, Config::default());
    // The first id of a block needs a durable write: make it fail.
    sim.fail_write_at(1, 5);
    assert_eq!(store.init_producer().unwrap_err().kind(), "io");
    let (a, _) = store.init_producer().unwrap();
    let s1 = store.producer("svc").unwrap();
    appended(s1.send("t", 0, &[Message::new(b"1")]));
    // A session start whose epoch bump cannot be made durable fails and
    // fences nobody.
    sim.fail_write_at(1, 5);
    assert_eq!(store.producer("svc").unwrap_err().kind(), "io");
    assert_eq!(appended(s1.send("t", 0, &[Message::new(b"2")])), (1, 1));
    assert_eq!(
        store.named_producers(),
        vec![("svc".to_string(), s1.id(), 0)]
    );
    let s2 = store.producer("svc").unwrap();
    assert_eq!((s2.id(), s2.epoch()), (s1.id(), 1));
    assert_eq!(
        s1.send("t", 0, &[Message::new(b"3")]).unwrap_err().kind(),
        "producer_fenced"
    );
    let ids = [a, s1.id()];
    sim.crash(CrashMode::LoseUnsynced);
    drop((s1, s2));
    drop(store);
    let store = open(&sim, Config::default());
    assert_eq!(
        store.named_producers(),
        vec![("svc".to_string(), ids[1], 1)]
    );
    for _ in 0..3 {
        let (id, _) = store.init_producer().unwrap();
        assert!(!ids.contains(&id), "id {id} handed out again");
    }
}

/// oncelog has no transactions: a transactional batch is refused, clearly,
/// instead of being stored as an open transaction nobody will close.
#[test]
fn transactional_batches_are_refused() {
    let (_sim, _store, log) = fresh(Config::default());
    let mut b = BatchBuilder::new()
        .with_producer(1, 0, 0)
        .with_transactional(true);
    b.push(0, None, Some(b"x"), &[]);
    let e = log.append(&b.build()).unwrap_err();
    assert_eq!(e.kind(), "unsupported", "{e}");
    assert!(
        e.to_string().contains("transactional") && e.to_string().contains("t-0"),
        "{e}"
    );
    assert_eq!(log.next_offset(), 0);
    assert!(log.producer(1).is_none());
}
