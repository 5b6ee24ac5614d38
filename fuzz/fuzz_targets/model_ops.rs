//! A model-based target: the input is a sequence of operations on one log
//! of a store on the simulated disk, checked after every operation against a
//! compact reference model written from docs/semantics.md,
//! docs/durability.md and docs/recovery.md (with the lessons of
//! tests/producer_model.rs).
//!
//! The first byte picks the configuration (segment size, retention, interval
//! checkpoints); then each operation is one byte and a few parameter bytes:
//! the next batch of producer k (Sync or Os), a retry of producer k's i-th
//! last batch, a plain batch, a batch after a sequence gap, an epoch bump, a
//! batch of a stale epoch, a checkpoint, retention, flush, a crash
//! (`CrashMode::KeepAll`, `LoseUnsynced`, `RandomPages`, `TornTail`) and
//! reopen, a clean close and reopen, and appends with an injected fault (the
//! k-th write fails after a prefix, the n-th fsync fails, the disk is full).
//!
//! The model keeps every acknowledged data batch (producer, epoch, sequences,
//! offsets, bytes) in log order and `durable`, an offset below which every
//! batch is known durable (a `Sync` acknowledgement, a duplicate answered
//! under `Sync`, a flush, a clean close, a recovery, `Log::durable_offset()`
//! before a crash). Checked:
//! - every answer: the outcome table of docs/semantics.md (appended at fresh
//!   contiguous offsets, a duplicate in the window with its original offsets,
//!   an older retry without offsets, a gap out of order, a stale epoch
//!   refused), nothing written by a refusal or a duplicate;
//! - an injected fault that is hit yields an `io` error, after which the log
//!   refuses appends and flushes (`poisoned`) until reopened, or, if it hit
//!   a step the engine may fail without failing the append (retention's log
//!   start file after a roll), the append's answer is the model's;
//! - after every operation and reopen: the log reads back with valid CRCs and
//!   contiguous offsets, checkpoints decode, every acknowledged batch not
//!   deleted by retention is there at its offsets byte for byte, unless a
//!   power loss took it, which it may only if it was not durable and then
//!   only together with everything after it; nothing else is in the log
//!   except, after a reopen, the failed append (at the end); no producer
//!   sequence twice, sequences contiguous per epoch; the producer table
//!   (epoch, last sequence, window of the last 5 batches with offsets)
//!   equals the model's; a clean reopen replays nothing and cuts nothing.
//! - a full disk that refuses an append may leave the log unpoisoned (the
//!   engine's rule since 68f1687): then the log is as it was and appends go
//!   on without a reopen.
//!
//! Its first run found that the bytes of a refused full-disk write stayed
//! past the end of the log (a clean reopen cut them; a later, shorter batch
//! could leave a fragment to be read as a batch): fixed in f6ca24e.
//! `MODEL_TRACE=1` prints every operation.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oncelog::format::BatchBuilder;
use oncelog::format::BatchView;
use oncelog::format::checkpoint::decode_checkpoint;
use oncelog::storage::SimStorage;
use oncelog::storage::sim::CrashMode;
use oncelog::{AppendOutcome, Config, Durability, Log, ManualClock, Store};

const DIR: &str = "/m";
const TOPIC: &str = "t";
const NOW: i64 = 1_700_000_000_000;
const WINDOW: usize = 5;
const FAR: u64 = 1 << 40;
const MAX_OPS: usize = 96;

fn inc(seq: i32, by: i64) -> i32 {
    (i64::from(seq) + by).rem_euclid(1 << 31) as i32
}

#[derive(Clone, Debug)]
struct Acked {
    /// Producer index, `None` for a plain batch.
    who: Option<usize>,
    epoch: i16,
    seq: i32,
    n: usize,
    base: i64,
    last: i64,
    bytes: Vec<u8>,
}

impl Acked {
    fn last_seq(&self) -> i32 {
        inc(self.seq, self.n as i64 - 1)
    }
}

/// An append that failed with an injected fault: in the log after a
/// reopen, or not.
#[derive(Clone, Debug)]
struct Pending {
    who: Option<usize>,
    epoch: i16,
    seq: i32,
    n: usize,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Appended,
    Dup(i64, i64),
    DupUnknown,
    OutOfOrder,
    StaleEpoch,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Write { k: u64, prefix: usize },
    Sync { n: u64 },
    Space { left: u64 },
}

struct Stored {
    base: i64,
    last: i64,
    producer_id: i64,
    epoch: i16,
    seq: i32,
    bytes: Vec<u8>,
}

struct World {
    sim: SimStorage,
    cfg: Config,
    store: Option<Store>,
    log: Option<Log>,
    ids: [i64; 3],
    first_seq: [i32; 3],
    acked: Vec<Acked>,
    durable: i64,
    pending: Option<Pending>,
    poisoned: bool,
    counter: u64,
    trace: bool,
    step: usize,
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

fn durability(bit: bool) -> Durability {
    if bit {
        Durability::Os
    } else {
        Durability::Sync
    }
}

impl World {
    fn new(flags: u8) -> World {
        let mut cfg = Config::default()
            .with_segment_bytes(if flags & 4 != 0 { 4096 } else { 1024 })
            .with_index_interval_bytes(256)
            .with_preallocate_bytes(0)
            .with_clock(Arc::new(ManualClock::new(NOW)))
            .with_retention_check_interval(Duration::from_secs(1 << 30));
        if flags & 1 != 0 {
            cfg = cfg.with_retention_bytes(Some(2500));
        }
        if flags & 2 != 0 {
            cfg = cfg.with_checkpoint_interval_bytes(300);
        }
        let sim = SimStorage::new();
        let mut w = World {
            sim,
            cfg,
            store: None,
            log: None,
            ids: [0; 3],
            first_seq: [0, 5, i32::MAX - 2],
            acked: Vec::new(),
            durable: 0,
            pending: None,
            poisoned: false,
            counter: 0,
            trace: std::env::var_os("MODEL_TRACE").is_some(),
            step: 0,
        };
        w.open();
        let store = w.store.as_ref().unwrap();
        for id in &mut w.ids {
            *id = store.init_producer().unwrap().0;
        }
        w
    }

    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn note(&self, s: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("step {}: {}", self.step, s());
        }
    }

    fn open(&mut self) {
        let store = Store::open_with_storage(DIR, self.cfg.clone(), Arc::new(self.sim.clone()))
            .unwrap_or_else(|e| panic!("step {}: the store does not open: {e}", self.step));
        self.log = Some(store.log(TOPIC, 0).unwrap());
        self.store = Some(store);
    }

    fn mine(&self, k: usize) -> Vec<&Acked> {
        self.acked.iter().filter(|a| a.who == Some(k)).collect()
    }

    /// The window of producer `k`: the last batches of its current epoch.
    fn window(&self, k: usize) -> Vec<&Acked> {
        let mine = self.mine(k);
        let Some(tail) = mine.last() else {
            return Vec::new();
        };
        let run = mine
            .iter()
            .rev()
            .take_while(|a| a.epoch == tail.epoch)
            .count();
        let run = &mine[mine.len() - run..];
        run[run.len().saturating_sub(WINDOW)..].to_vec()
    }

    /// The outcome table of docs/semantics.md (anonymous producers).
    fn expect(&self, k: usize, epoch: i16, seq: i32, n: usize) -> Expect {
        let mine = self.mine(k);
        let Some(tail) = mine.last() else {
            return Expect::Appended; // unknown producer: any sequence
        };
        if epoch < tail.epoch {
            return Expect::StaleEpoch;
        }
        if epoch > tail.epoch {
            return if seq == 0 {
                Expect::Appended
            } else {
                Expect::OutOfOrder
            };
        }
        let w = self.window(k);
        let last = inc(seq, n as i64 - 1);
        if let Some(b) = w.iter().find(|b| b.seq == seq && b.last_seq() == last) {
            return Expect::Dup(b.base, b.last);
        }
        if seq == inc(tail.last_seq(), 1) {
            return Expect::Appended;
        }
        let d = (i64::from(w[0].seq) - i64::from(last)).rem_euclid(1 << 31);
        if (1..=1 << 30).contains(&d) {
            Expect::DupUnknown
        } else {
            Expect::OutOfOrder
        }
    }

    fn next_of(&self, k: usize) -> (i16, i32) {
        match self.mine(k).last() {
            Some(t) => (t.epoch, inc(t.last_seq(), 1)),
            None => (0, self.first_seq[k]),
        }
    }

    fn build(&mut self, who: Option<usize>, epoch: i16, seq: i32, n: usize, pad: u8) -> Vec<u8> {
        self.counter += 1;
        let mut b = match who {
            Some(k) => BatchBuilder::new().with_producer(self.ids[k], epoch, seq),
            None => BatchBuilder::new(),
        };
        let fill = "x".repeat(usize::from(pad));
        for i in 0..n {
            let v = format!("{}:{i}:{fill}", self.counter);
            b.push(NOW + i as i64, None, Some(v.as_bytes()), &[]);
        }
        b.build()
    }

    /// Append `bytes` (a fresh batch or a retry) and compare with the model.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        who: Option<usize>,
        epoch: i16,
        seq: i32,
        n: usize,
        bytes: Vec<u8>,
        d: Durability,
        fault: Option<Fault>,
    ) {
        let exp = match who {
            Some(k) => self.expect(k, epoch, seq, n),
            None => Expect::Appended,
        };
        let (w0, s0) = self.sim.op_counts();
        match fault {
            Some(Fault::Write { k, prefix }) => self.sim.fail_write_at(k, prefix),
            Some(Fault::Sync { n }) => self.sim.fail_sync_at(n),
            Some(Fault::Space { left }) => self.sim.set_space_left(Some(left)),
            None => {}
        }
        let before = self.log().next_offset();
        let r = self.log().append_with(&bytes, d);
        let (w1, s1) = self.sim.op_counts();
        let hit = match fault {
            Some(Fault::Write { k, .. }) => w1 >= w0 + k,
            Some(Fault::Sync { n }) => s1 >= s0 + n,
            Some(Fault::Space { .. }) => matches!(&r, Err(e) if e.kind() == "io"),
            None => false,
        };
        match fault {
            Some(Fault::Write { .. }) if !hit => self.sim.fail_write_at(FAR, 0),
            Some(Fault::Sync { .. }) if !hit => self.sim.fail_sync_at(FAR),
            Some(Fault::Space { .. }) => self.sim.set_space_left(None),
            _ => {}
        }
        self.note(|| {
            use oncelog::storage::Storage;
            let files: Vec<String> = self
                .sim
                .list_dir(std::path::Path::new("/m/t-0"))
                .unwrap_or_default()
                .into_iter()
                .map(|n| {
                    let len = self.sim.file_bytes(&std::path::Path::new("/m/t-0").join(&n)).map_or(0, |b| b.len());
                    format!("{n}:{len}")
                })
                .collect();
            format!(
                "send {who:?} epoch {epoch} seq {seq} n {n} {d:?} fault {fault:?} hit {hit} (writes {}, syncs {}) expect {exp:?} -> {r:?}; files {files:?}",
                w1 - w0,
                s1 - s0
            )
        });
        // A fault can hit a step that is not the append's own: retention
        // after a roll writes and fsyncs the log start file, and a failure
        // there is only logged. Then the append must succeed as if nothing
        // failed (checked below and by every later operation).
        if hit && r.is_ok() {
            self.note(|| "the fault hit outside the append's own writes".into());
        }
        if hit && r.is_err() {
            let full = match &r {
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        "io",
                        "step {}: the injected fault gave {e}",
                        self.step
                    );
                    is_enospc(e)
                }
                Ok(_) => unreachable!(),
            };
            if full {
                // A full disk may leave the log unpoisoned and as it was
                // (then appends go on once there is space): probe with a
                // flush, which a poisoned log refuses.
                let next = self.log().next_offset();
                match self.log().flush() {
                    Ok(()) => {
                        self.note(|| "full disk: the log is not poisoned".into());
                        // (A checkpoint written before the batch may remain.)
                        assert!(
                            next - before <= 1,
                            "step {}: a refused append moved the log",
                            self.step
                        );
                        self.durable = self.durable.max(next);
                        return;
                    }
                    Err(e) => assert_eq!(
                        e.kind(),
                        "poisoned",
                        "step {}: flush after a full disk: {e}",
                        self.step
                    ),
                }
            }
            if exp == Expect::Appended {
                self.pending = Some(Pending {
                    who,
                    epoch,
                    seq,
                    n,
                    bytes,
                });
            }
            self.poisoned = true;
            return;
        }
        let after = self.log().next_offset();
        let sync = d == Durability::Sync;
        let label = format!("step {}: {who:?} epoch {epoch} seq {seq} n {n}", self.step);
        match (exp, r) {
            (
                Expect::Appended,
                Ok(AppendOutcome::Appended {
                    base_offset,
                    last_offset,
                }),
            ) => {
                assert_eq!(last_offset - base_offset, n as i64 - 1, "{label}");
                assert!(
                    base_offset >= before,
                    "{label}: appended at {base_offset} below {before}"
                );
                assert_eq!(after, last_offset + 1, "{label}: next offset");
                if sync {
                    self.durable = self.durable.max(last_offset + 1);
                }
                self.acked.push(Acked {
                    who,
                    epoch,
                    seq,
                    n,
                    base: base_offset,
                    last: last_offset,
                    bytes,
                });
            }
            (Expect::Dup(b, l), Ok(got)) => {
                assert_eq!(
                    got,
                    AppendOutcome::Duplicate {
                        base_offset: Some(b),
                        last_offset: Some(l)
                    },
                    "{label}: a retry in the window is a duplicate with its offsets"
                );
                assert_eq!(after, before, "{label}: a duplicate writes nothing");
                if sync {
                    self.durable = self.durable.max(l + 1);
                }
            }
            (Expect::DupUnknown, Ok(got)) => {
                assert_eq!(
                    got,
                    AppendOutcome::Duplicate {
                        base_offset: None,
                        last_offset: None
                    },
                    "{label}: a retry older than the window"
                );
                assert_eq!(after, before, "{label}: a duplicate writes nothing");
                if sync {
                    self.durable = self.durable.max(after);
                }
            }
            (Expect::OutOfOrder, Err(e)) => {
                assert_eq!(e.kind(), "out_of_order_sequence", "{label}: {e}");
                assert_eq!(after, before, "{label}: a refusal writes nothing");
            }
            (Expect::StaleEpoch, Err(e)) => {
                assert_eq!(e.kind(), "invalid_producer_epoch", "{label}: {e}");
                assert_eq!(after, before, "{label}: a refusal writes nothing");
            }
            (exp, r) => panic!(
                "{label}: expected {exp:?}, got {r:?}; window {:?}",
                who.map(|k| self
                    .window(k)
                    .iter()
                    .map(|a| (a.seq, a.last_seq(), a.base, a.last))
                    .collect::<Vec<_>>())
            ),
        }
    }

    fn send_new(
        &mut self,
        who: Option<usize>,
        n: usize,
        d: Durability,
        pad: u8,
        fault: Option<Fault>,
    ) {
        let (epoch, seq) = match who {
            Some(k) => self.next_of(k),
            None => (-1, -1),
        };
        let bytes = self.build(who, epoch, seq, n, pad);
        self.send(who, epoch, seq, n, bytes, d, fault);
    }

    /// End the session (a clean close, or a crash in `mode`) and reopen.
    fn reopen(&mut self, mode: Option<CrashMode>) {
        self.note(|| {
            format!(
                "reopen after {mode:?} (pending {:?})",
                self.pending.as_ref().map(|p| (p.who, p.seq))
            )
        });
        match mode {
            None => {
                assert!(!self.poisoned);
                self.durable = self.log().next_offset();
                self.log = None;
                self.store
                    .take()
                    .unwrap()
                    .close()
                    .unwrap_or_else(|e| panic!("step {}: close: {e}", self.step));
            }
            Some(mode) => {
                self.durable = self.durable.max(self.log().durable_offset());
                self.log = None;
                self.sim.crash(mode);
                drop(self.store.take());
            }
        }
        self.open();
        let lossy = matches!(
            mode,
            Some(
                CrashMode::LoseUnsynced
                    | CrashMode::RandomPages { .. }
                    | CrashMode::TornTail { .. }
            )
        );
        self.verify(lossy, true);
        let r = self.log().recovery_report().clone();
        if mode.is_none() {
            assert_eq!(
                r.batches_replayed, 0,
                "step {}: a clean reopen replays nothing: {r:?}",
                self.step
            );
            assert_eq!(
                r.bytes_truncated, 0,
                "step {}: a clean reopen cuts nothing: {r:?}",
                self.step
            );
        }
        let pending = self.pending.take();
        self.poisoned = false;
        // Recovery fsyncs what it kept.
        self.durable = self.log().next_offset();
        // Settle the failed append the documented way: re-send it.
        if let Some(p) = pending
            && p.who.is_some()
        {
            self.note(|| "re-send the failed append".into());
            self.send(p.who, p.epoch, p.seq, p.n, p.bytes, Durability::Sync, None);
        }
    }

    fn read_all(&self, checkpoints: bool) -> Vec<Vec<u8>> {
        let log = self.log();
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        let end = log.next_offset();
        while offset < end {
            let mut batches = log
                .read(offset, 1 << 16)
                .unwrap_or_else(|e| panic!("step {}: read at {offset}: {e}", self.step));
            if checkpoints {
                batches = batches.with_checkpoints();
            }
            let next = batches
                .next_offset()
                .expect("a read below the end returns bytes");
            assert!(next > offset);
            for b in &batches {
                let b =
                    b.unwrap_or_else(|e| panic!("step {}: batch read at {offset}: {e}", self.step));
                out.push(b.bytes().to_vec());
            }
            offset = next;
        }
        out
    }

    /// Compare the log and its producer table with the model. `lossy`: right
    /// after a power loss; `reopen`: right after a reopen.
    fn verify(&mut self, lossy: bool, reopen: bool) {
        let label = format!("step {}", self.step);
        let start = self.log().log_start_offset();
        let next = self.log().next_offset();
        let all = self.read_all(true);
        let mut at = start;
        let mut data = Vec::new();
        for b in &all {
            let v = BatchView::parse(b).unwrap_or_else(|e| panic!("{label}: CRC: {e}"));
            assert_eq!(v.base_offset(), at, "{label}: offsets are contiguous");
            at = v.last_offset() + 1;
            if v.is_control() {
                decode_checkpoint(&v, |_| {})
                    .unwrap_or_else(|e| panic!("{label}: checkpoint at {}: {e}", v.base_offset()));
            } else {
                data.push(Stored {
                    base: v.base_offset(),
                    last: v.last_offset(),
                    producer_id: v.producer_id(),
                    epoch: v.producer_epoch(),
                    seq: v.base_sequence(),
                    bytes: b.clone(),
                });
            }
        }
        assert_eq!(at, next, "{label}: the last batch ends at next_offset");
        let plain = self.read_all(false);
        assert!(
            plain.len() == data.len() && plain.iter().zip(&data).all(|(a, b)| *a == b.bytes),
            "{label}: reads without checkpoints are the data batches"
        );

        // Every acknowledged batch, unless retention or a power loss took it.
        let mut j = 0;
        let mut lost_at = None;
        for (i, a) in self.acked.iter().enumerate() {
            if a.last < start {
                continue;
            }
            assert!(a.base >= start, "{label}: log start {start} inside {a:?}");
            match data.get(j) {
                Some(s) if s.base == a.base => {
                    assert!(
                        s.last == a.last && s.bytes[8..] == a.bytes[8..],
                        "{label}: acknowledged batch at {} replaced",
                        a.base
                    );
                    j += 1;
                }
                _ => {
                    assert!(
                        lossy,
                        "{label}: acknowledged batch {}..={} of {:?} is not in the log",
                        a.base, a.last, a.who
                    );
                    assert!(
                        a.last >= self.durable,
                        "{label}: durable batch {}..={} (durable below {}) is lost",
                        a.base,
                        a.last,
                        self.durable
                    );
                    lost_at = Some(i);
                    break;
                }
            }
        }
        let mut found = None;
        match &data[j..] {
            [] => {}
            [s] if reopen
                && lost_at.is_none()
                && self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.bytes[8..] == s.bytes[8..]) =>
            {
                found = Some((s.base, s.last));
            }
            rest => panic!(
                "{label}: {} batch(es) in the log never acknowledged, first at {} (pending {:?}, lost at {lost_at:?})",
                rest.len(),
                rest[0].base,
                self.pending.as_ref().map(|p| (p.who, p.seq))
            ),
        }
        if let Some(i) = lost_at {
            self.note(|| {
                format!(
                    "power loss took {} acknowledged batches",
                    self.acked.len() - i
                )
            });
            self.acked.truncate(i);
        }
        if let Some((base, last)) = found {
            let p = self.pending.clone().unwrap();
            assert_eq!(last - base, p.n as i64 - 1, "{label}");
            self.note(|| format!("the failed append is in the log at {base}"));
            self.acked.push(Acked {
                who: p.who,
                epoch: p.epoch,
                seq: p.seq,
                n: p.n,
                base,
                last,
                bytes: p.bytes,
            });
        }

        // Per producer in the log: each sequence once, contiguous per epoch.
        for (k, &id) in self.ids.iter().enumerate() {
            let mine: Vec<&Stored> = data.iter().filter(|s| s.producer_id == id).collect();
            let mut seen = HashSet::new();
            for s in &mine {
                assert!(
                    seen.insert((s.epoch, s.seq)),
                    "{label}: producer {k} epoch {} seq {} twice",
                    s.epoch,
                    s.seq
                );
            }
            for w in mine.windows(2) {
                let last_seq = inc(w[0].seq, w[0].last - w[0].base);
                if w[1].epoch == w[0].epoch {
                    assert_eq!(
                        w[1].seq,
                        inc(last_seq, 1),
                        "{label}: producer {k}: a gap or overlap at {}",
                        w[1].base
                    );
                } else {
                    assert!(
                        w[1].epoch > w[0].epoch && w[1].seq == 0,
                        "{label}: producer {k}: epoch change at {}",
                        w[1].base
                    );
                }
            }
        }

        // The producer table.
        for k in 0..self.ids.len() {
            let info = self.log().producer(self.ids[k]);
            let window = self.window(k);
            match window.last() {
                None => assert!(
                    info.is_none(),
                    "{label}: producer {k} unknown to the model is in the table: {info:?}"
                ),
                Some(tail) => {
                    let info = info
                        .unwrap_or_else(|| panic!("{label}: producer {k} missing from the table"));
                    assert_eq!(info.epoch, tail.epoch, "{label}: producer {k}'s epoch");
                    assert_eq!(
                        info.last_sequence,
                        Some(tail.last_seq()),
                        "{label}: producer {k}'s last sequence"
                    );
                    let got: Vec<_> = info
                        .batches
                        .iter()
                        .map(|b| {
                            (
                                b.first_sequence,
                                b.last_sequence,
                                b.base_offset,
                                b.last_offset,
                            )
                        })
                        .collect();
                    let want: Vec<_> = window
                        .iter()
                        .map(|a| (a.seq, a.last_seq(), a.base, a.last))
                        .collect();
                    assert_eq!(got, want, "{label}: producer {k}'s window");
                }
            }
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        self.step += 1;
        let op = inp.byte() % 20;
        let p1 = inp.byte();
        let p2 = inp.byte();
        if self.poisoned {
            // Sticky failure: refused until reopened.
            let before = self.log().next_offset();
            let b = self.build(None, -1, -1, 1, 0);
            let r = self.log().append(&b);
            assert!(
                matches!(&r, Err(e) if e.kind() == "poisoned"),
                "step {}: a poisoned log appended: {r:?}",
                self.step
            );
            let f = self.log().flush();
            assert!(
                matches!(&f, Err(e) if e.kind() == "poisoned"),
                "step {}: flush: {f:?}",
                self.step
            );
            assert_eq!(self.log().next_offset(), before);
            let mode = if op == 12 {
                crash_mode(p1, p2, inp)
            } else {
                CrashMode::KeepAll
            };
            return self.reopen(Some(mode));
        }
        let k = usize::from(p1 % 3);
        match op {
            0..=5 => self.send_new(
                Some(k),
                1 + usize::from(p1 >> 2) % 3,
                durability(p1 & 0x80 != 0),
                p2,
                None,
            ),
            6 | 7 => {
                let mine = self.mine(k);
                if mine.is_empty() {
                    return self.send_new(Some(k), 1, Durability::Sync, p2, None);
                }
                let i = usize::from(p1 >> 2) % 8;
                let a = mine[mine.len() - 1 - i.min(mine.len() - 1)].clone();
                self.note(|| format!("retry of {:?} seq {} at {}", a.who, a.seq, a.base));
                self.send(
                    a.who,
                    a.epoch,
                    a.seq,
                    a.n,
                    a.bytes,
                    durability(p1 & 0x80 != 0),
                    None,
                );
            }
            8 => self.send_new(
                None,
                1 + usize::from(p1 >> 2) % 3,
                durability(p1 & 0x80 != 0),
                p2,
                None,
            ),
            9 => {
                self.note(|| "checkpoint".into());
                self.log()
                    .checkpoint()
                    .unwrap_or_else(|e| panic!("step {}: checkpoint: {e}", self.step));
            }
            10 => {
                let r = self.log().enforce_retention();
                self.note(|| format!("retention -> {r:?}"));
                r.unwrap_or_else(|e| panic!("step {}: retention: {e}", self.step));
            }
            11 => {
                let next = self.log().next_offset();
                self.note(|| "flush".into());
                self.log()
                    .flush()
                    .unwrap_or_else(|e| panic!("step {}: flush: {e}", self.step));
                self.durable = self.durable.max(next);
            }
            12 => {
                let mode = crash_mode(p1, p2, inp);
                return self.reopen(Some(mode));
            }
            13 => return self.reopen(None),
            14..=16 => {
                let fault = match op {
                    14 => Fault::Write {
                        k: 1 + u64::from(p1 % 3),
                        prefix: usize::from(inp.byte()),
                    },
                    15 => Fault::Sync {
                        n: 1 + u64::from(p1 % 2),
                    },
                    _ => Fault::Space {
                        left: u64::from(p1) * 2,
                    },
                };
                let who = (p2 % 4 < 3).then_some(usize::from(p2 % 4));
                self.send_new(
                    who,
                    1 + usize::from(p2 >> 2) % 3,
                    durability(p2 & 0x80 != 0),
                    p1,
                    Some(fault),
                );
                if self.poisoned {
                    return; // checked after the reopen
                }
            }
            17 => {
                // An epoch bump: sequence 0 at the next epoch.
                let epoch = self.mine(k).last().map_or(0, |t| t.epoch) + 1;
                let bytes = self.build(Some(k), epoch, 0, 1, p2);
                self.send(
                    Some(k),
                    epoch,
                    0,
                    1,
                    bytes,
                    durability(p1 & 0x80 != 0),
                    None,
                );
            }
            18 => {
                let (epoch, seq) = self.next_of(k);
                let seq = inc(seq, 1 + i64::from(p1 >> 2) % 3);
                let bytes = self.build(Some(k), epoch, seq, 1, p2);
                self.send(Some(k), epoch, seq, 1, bytes, Durability::Sync, None);
            }
            _ => {
                let (epoch, seq) = self.next_of(k);
                if epoch > 0 {
                    let bytes = self.build(Some(k), epoch - 1, seq, 1, p2);
                    self.send(Some(k), epoch - 1, seq, 1, bytes, Durability::Sync, None);
                }
            }
        }
        self.verify(false, false);
    }
}

fn is_enospc(e: &oncelog::Error) -> bool {
    matches!(e, oncelog::Error::Io { source, .. } if source.raw_os_error() == Some(28))
}

fn crash_mode(p1: u8, p2: u8, inp: &mut Input<'_>) -> CrashMode {
    let seed = u64::from_be_bytes([p2, inp.byte(), inp.byte(), 0, 0, 0, 0, 1]);
    match p1 % 4 {
        0 => CrashMode::KeepAll,
        1 => CrashMode::LoseUnsynced,
        2 => CrashMode::RandomPages { seed },
        _ => CrashMode::TornTail { seed },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { data, pos: 0 };
    let mut w = World::new(inp.byte());
    w.verify(false, false);
    let mut ops = 0;
    while !inp.done() && ops < MAX_OPS {
        ops += 1;
        w.step(&mut inp);
    }
    // Finally: recover if poisoned, then a clean close and reopen.
    w.step += 1;
    if w.poisoned {
        w.reopen(Some(CrashMode::KeepAll));
    }
    w.reopen(None);
});
