//! A seeded, randomized model-based test of idempotent producers.
//!
//! Every seed drives a store on the simulated disk (`SimStorage`): two
//! partitions, small segments, small checkpoint intervals, a manual clock,
//! sometimes byte retention, `Sync` durability mostly. Three or four
//! producers write: anonymous ones with hand-built batches through
//! `Log::append`, an anonymous `Producer` taken up again after each restart
//! with `Store::resume_producer`, and one or two named producers
//! (`Store::producer`). Random operations: send the next batch, retry any
//! earlier batch, force a checkpoint, enforce retention, move the clock (and,
//! in some seeds, jump past the producer expiration), fence a named session,
//! close or crash (process crash or power loss) and reopen, inject a failed
//! write or fsync.
//!
//! The reference model is written from `docs/semantics.md`,
//! `docs/durability.md` and `docs/recovery.md`, not from the engine: for each
//! producer and partition the batches acknowledged (with their offsets), which
//! of them are known to be durable, the window of the current "era" (an era
//! ends when the producer expires), and the outcome table of the docs. After
//! every operation and every reopen the log and the producer table are
//! compared with the model.
//!
//! `ONCELOG_MODEL_SEEDS=N` runs seeds `0..N`, `ONCELOG_MODEL_SEED=S` runs one
//! seed, `ONCELOG_MODEL_OPS=K` changes the number of operations per seed,
//! `ONCELOG_MODEL_TRACE=1` prints every operation of the seeds run.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Stored, stored};
use oncelog::format::BatchBuilder;
use oncelog::storage::sim::CrashMode;
use oncelog::storage::{SimStorage, Storage};
use oncelog::{
    AppendOutcome, Clock, Config, Durability, Error, Log, ManualClock, Message, Producer, Store,
};

const STORE: &str = "/store";
const TOPIC: &str = "t";
const PARTITIONS: usize = 2;
/// `Config::producer_window` (the default).
const WINDOW: usize = 5;
const EXPIRATION_MS: i64 = 3_600_000;
/// Seeds run by `cargo test`, split over two tests (the two halves run in
/// parallel).
const DEFAULT_SEEDS: u64 = 2000;
const DEFAULT_OPS: usize = 300;
/// "Never" for a disarmed fault.
const FAR: u64 = 1 << 40;

thread_local! {
    static TRACE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

// How often each outcome and event came up, over all seeds run.
thread_local! {
    static COUNTS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn count(what: &'static str) {
    COUNTS.with(|c| *c.borrow_mut().entry(what).or_default() += 1);
}

fn trace(line: String) {
    TRACE.with(|t| t.borrow_mut().push(line));
}

/// splitmix64: the whole run is a function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `seq + by` in sequence space (0 after `i32::MAX`).
fn inc(seq: i32, by: i64) -> i32 {
    (i64::from(seq) + by).rem_euclid(1 << 31) as i32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Anonymous id; batches built by hand and given to `Log::append`.
    Raw,
    /// Anonymous `Producer`, taken up again with `Store::resume_producer`.
    Resumed,
    /// `Store::producer(name)`.
    Named,
}

/// One batch of a producer in a partition, as the engine acknowledged it
/// (or as recovery showed it to be there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MBatch {
    seq: i32,
    n: usize,
    epoch: i16,
    base: i64,
    last: i64,
    at_ms: i64,
}

impl MBatch {
    fn last_seq(&self) -> i32 {
        inc(self.seq, self.n as i64 - 1)
    }
}

/// What the docs promise for a batch of `n` records at `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Appended,
    Dup(i64, i64),
    DupUnknown,
    OutOfOrder,
}

/// The model of one producer in one partition.
#[derive(Clone, Debug, Default)]
struct Pp {
    /// Every batch in the log (including those retention deleted), in log
    /// order.
    batches: Vec<MBatch>,
    /// Indexes into `batches` where an era starts: the first batch, and the
    /// first batch after each expiry.
    eras: Vec<usize>,
    /// The partition's table has an entry for the producer (the current era).
    known: bool,
    /// A lower bound of the entry's last append time (engine clock).
    lo_ms: i64,
}

impl Pp {
    /// The batches of the last era (the current one if `known`).
    fn era(&self) -> &[MBatch] {
        match self.eras.last() {
            Some(&s) => &self.batches[s..],
            None => &[],
        }
    }

    fn window(&self) -> &[MBatch] {
        let e = self.era();
        &e[e.len().saturating_sub(WINDOW)..]
    }

    /// The outcome table of docs/semantics.md (same epoch, or a named
    /// producer's new session; no wrap-around surprises: a real retry is
    /// never 2^30 sequences away).
    fn expect(&self, seq: i32, n: usize) -> Expect {
        if !self.known {
            return Expect::Appended; // unknown producer: any sequence
        }
        let w = self.window();
        let last = inc(seq, n as i64 - 1);
        if let Some(b) = w.iter().find(|b| b.seq == seq && b.last_seq() == last) {
            return Expect::Dup(b.base, b.last);
        }
        let tail = w.last().expect("a known producer has a window");
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

    fn push(&mut self, b: MBatch, now: i64) {
        if !self.known {
            self.eras.push(self.batches.len());
            self.known = true;
        }
        self.batches.push(b);
        self.lo_ms = now;
    }

    /// Forget the batches from `len` on (lost with a power loss).
    fn truncate(&mut self, len: usize) {
        if len >= self.batches.len() {
            return;
        }
        self.batches.truncate(len);
        let eras = self.eras.len();
        self.eras.retain(|&s| s < len);
        if self.eras.len() < eras {
            // The era that was lost began when the producer was unknown.
            self.known = false;
        } else if let Some(tail) = self.batches.last() {
            self.lo_ms = tail.at_ms;
        }
    }
}

#[derive(Debug)]
struct Prod {
    kind: Kind,
    name: Option<String>,
    id: i64,
    /// Current epoch (a named producer's session epoch).
    epoch: i16,
    /// First sequence of a `Raw` producer (some start just before the wrap).
    first_seq: i32,
    pps: [Pp; PARTITIONS],
    /// The session's next sequence per partition, once the session used it
    /// (`Producer` resumes after the table's last sequence at first use).
    slots: [Option<i32>; PARTITIONS],
    /// Durability of the current session's sends.
    session_durability: Durability,
}

/// A batch whose append failed (not acknowledged): in the log or not.
#[derive(Clone, Copy, Debug)]
struct Pending {
    pi: usize,
    part: usize,
    seq: i32,
    n: usize,
    epoch: i16,
}

#[derive(Clone, Copy, Debug)]
enum End {
    Close,
    Crash(CrashMode),
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The `k`-th write from now fails after `prefix` bytes.
    Write { k: u64, prefix: usize },
    /// The next fsync fails.
    Sync,
    /// The disk has only `left` bytes free (until the append returns).
    NoSpace { left: u64 },
}

struct World {
    rng: Rng,
    sim: SimStorage,
    cfg: Config,
    clock: Arc<ManualClock>,
    durability: Durability,
    expiry: bool,
    store: Option<Store>,
    logs: Vec<Log>,
    sessions: Vec<Option<Producer>>,
    prods: Vec<Prod>,
    /// Per partition: every offset below is durable (acknowledged under
    /// `Sync`, closed, or recovered).
    durable: [i64; PARTITIONS],
    pending: Option<Pending>,
    poisoned: bool,
    step: usize,
}

fn pad(rng: &mut Rng) -> usize {
    rng.range(0, 120) as usize
}

fn values(id: i64, seq: i32, n: usize, pad: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{id}:{seq}:{i}:{}", "v".repeat(pad)).into_bytes())
        .collect()
}

fn raw_batch(id: i64, epoch: i16, seq: i32, n: usize, ts: i64, pad: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new().with_producer(id, epoch, seq);
    for (i, v) in values(id, seq, n, pad).iter().enumerate() {
        b.push(ts + i as i64, None, Some(v), &[]);
    }
    b.build()
}

fn describe(r: &oncelog::Result<AppendOutcome>) -> String {
    match r {
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("Err({}: {e})", e.kind()),
    }
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed ^ 0x6F6E_6365_6C6F_6721);
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let durability = if rng.chance(75) {
            Durability::Sync
        } else {
            Durability::Os
        };
        let segment_bytes = rng.range(1024, 4096);
        let checkpoint_interval = rng.range(256, 4096);
        let retention = if rng.chance(35) {
            Some(rng.range(2000, 8000))
        } else {
            None
        };
        let age = if rng.chance(30) {
            Some(Duration::from_secs(rng.range(300, 1800)))
        } else {
            None
        };
        let expiry = rng.chance(40);
        let cfg = Config::default()
            .with_segment_bytes(segment_bytes)
            .with_index_interval_bytes(256)
            .with_checkpoint_interval_bytes(checkpoint_interval)
            .with_clock(clock.clone())
            .with_producer_expiration(Duration::from_millis(EXPIRATION_MS as u64))
            .with_retention_bytes(retention)
            .with_retention(age)
            .with_retention_check_interval(Duration::from_secs(1 << 30))
            .with_durability(durability);
        let total = rng.range(3, 4) as usize;
        let named = rng.range(1, 2) as usize;
        let mut kinds = vec![Kind::Raw];
        if total - named >= 2 {
            kinds.push(if rng.chance(60) {
                Kind::Resumed
            } else {
                Kind::Raw
            });
        }
        kinds.extend(std::iter::repeat_n(Kind::Named, named));
        trace(format!(
            "seed {seed}: {durability:?}, segment_bytes {segment_bytes}, checkpoint_interval_bytes \
             {checkpoint_interval}, retention_bytes {retention:?}, retention by age {age:?}, expiry jumps {expiry}, producers {kinds:?}"
        ));
        let sim = SimStorage::new();
        let mut w = World {
            rng,
            sim,
            cfg,
            clock,
            durability,
            expiry,
            store: None,
            logs: Vec::new(),
            sessions: Vec::new(),
            prods: Vec::new(),
            durable: [0; PARTITIONS],
            pending: None,
            poisoned: false,
            step: 0,
        };
        w.open();
        let store = w.store.take().unwrap();
        for (i, &kind) in kinds.iter().enumerate() {
            let mut name = None;
            let (id, epoch, session) = match kind {
                Kind::Raw => {
                    let (id, epoch) = store.init_producer().unwrap();
                    (id, epoch, None)
                }
                Kind::Resumed => {
                    let p = store.idempotent_producer().unwrap();
                    (p.id(), p.epoch(), Some(p))
                }
                Kind::Named => {
                    let n = format!("n{i}");
                    let p = store.producer(&n).unwrap();
                    name = Some(n);
                    (p.id(), p.epoch(), Some(p))
                }
            };
            let first_seq = if kind == Kind::Raw && w.rng.chance(50) {
                i32::MAX - w.rng.below(40) as i32
            } else {
                0
            };
            let session_durability = w.session_durability();
            trace(format!(
                "producer {i}: {kind:?} {name:?} id {id} epoch {epoch} first seq {first_seq}, sends {session_durability:?}"
            ));
            w.sessions
                .push(session.map(|p| p.with_durability(session_durability)));
            w.prods.push(Prod {
                kind,
                name,
                id,
                epoch,
                first_seq,
                pps: Default::default(),
                slots: [None; PARTITIONS],
                session_durability,
            });
        }
        w.store = Some(store);
        w
    }

    fn session_durability(&mut self) -> Durability {
        if self.rng.chance(15) {
            match self.durability {
                Durability::Sync => Durability::Os,
                _ => Durability::Sync,
            }
        } else {
            self.durability
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn label(&self) -> String {
        format!("step {}", self.step)
    }

    fn open(&mut self) {
        let store = Store::open_with_storage(STORE, self.cfg.clone(), Arc::new(self.sim.clone()))
            .unwrap_or_else(|e| panic!("{}: the store does not open: {e}", self.label()));
        self.logs = (0..PARTITIONS)
            .map(|p| store.log(TOPIC, p as u32).unwrap())
            .collect();
        self.store = Some(store);
    }

    /// New sessions for the `Producer`-based producers after a reopen.
    fn restart_sessions(&mut self) {
        let store = self.store.take().unwrap();
        for pi in 0..self.prods.len() {
            let d = self.session_durability();
            let p = &mut self.prods[pi];
            let session = match p.kind {
                Kind::Raw => None,
                Kind::Resumed => Some(
                    store
                        .resume_producer(p.id, p.epoch)
                        .unwrap_or_else(|e| panic!("resume_producer({}, {}): {e}", p.id, p.epoch)),
                ),
                Kind::Named => {
                    let s = store.producer(p.name.as_deref().unwrap()).unwrap();
                    assert_eq!(s.id(), p.id, "a named producer keeps its id");
                    assert_eq!(s.epoch(), p.epoch + 1, "a new session bumps the epoch");
                    p.epoch = s.epoch();
                    Some(s)
                }
            };
            p.slots = [None; PARTITIONS];
            p.session_durability = d;
            self.sessions[pi] = session.map(|s| s.with_durability(d));
        }
        let named = store.named_producers();
        for p in self.prods.iter().filter(|p| p.kind == Kind::Named) {
            let want = (p.name.clone().unwrap(), p.id, p.epoch);
            assert!(
                named.contains(&want),
                "named_producers {named:?} lacks {want:?}"
            );
        }
        self.store = Some(store);
    }

    /// The sequence the session of a `Producer`-based producer sends next in
    /// `part`, checked against `Producer::next_sequence`.
    fn slot(&mut self, pi: usize, part: usize) -> i32 {
        let p = &self.prods[pi];
        let want = p.slots[part].unwrap_or_else(|| {
            let pp = &p.pps[part];
            if pp.known {
                inc(pp.era().last().unwrap().last_seq(), 1)
            } else {
                0
            }
        });
        let got = self.sessions[pi]
            .as_ref()
            .unwrap()
            .next_sequence(TOPIC, part as u32)
            .unwrap();
        assert_eq!(
            got,
            want,
            "{}: next_sequence of producer {pi} in partition {part}",
            self.label()
        );
        self.prods[pi].slots[part] = Some(want);
        want
    }

    /// The next sequence of a `Raw` producer.
    fn raw_next(&self, pi: usize, part: usize) -> i32 {
        let p = &self.prods[pi];
        p.pps[part]
            .batches
            .last()
            .map_or(p.first_seq, |b| inc(b.last_seq(), 1))
    }

    fn raw_durability(&mut self) -> Option<Durability> {
        match self.rng.below(10) {
            0 => Some(Durability::Os),
            1 => Some(Durability::Sync),
            _ => None,
        }
    }

    /// Append `n` records at `seq` for producer `pi`; `resend` is a retry
    /// (`send_at`) rather than the session's next send. Returns the result
    /// and the durability it was acknowledged under.
    fn perform(
        &mut self,
        pi: usize,
        part: usize,
        seq: i32,
        n: usize,
        resend: bool,
    ) -> (oncelog::Result<AppendOutcome>, Durability) {
        let pad = pad(&mut self.rng);
        let p = &self.prods[pi];
        match p.kind {
            Kind::Raw => {
                let batch = raw_batch(p.id, p.epoch, seq, n, self.now(), pad);
                let d = self.raw_durability();
                let log = &self.logs[part];
                match d {
                    Some(d) => (log.append_with(&batch, d), d),
                    None => (log.append(&batch), self.durability),
                }
            }
            Kind::Resumed | Kind::Named => {
                let vals = values(p.id, seq, n, pad);
                let msgs: Vec<Message<'_>> = vals.iter().map(|v| Message::new(v)).collect();
                let s = self.sessions[pi].as_ref().unwrap();
                let r = if resend {
                    s.send_at(TOPIC, part as u32, seq, &msgs)
                } else {
                    s.send(TOPIC, part as u32, &msgs)
                };
                (r, p.session_durability)
            }
        }
    }

    fn pick_producer(&mut self) -> (usize, usize) {
        let pi = self.rng.below(self.prods.len() as u64) as usize;
        let part = self.rng.below(PARTITIONS as u64) as usize;
        (pi, part)
    }

    /// Send the next batch of a producer, with an injected fault or not.
    fn op_send(&mut self, pi: usize, part: usize, fault: Option<Fault>) {
        let n = self.rng.range(1, 4) as usize;
        let seq = match self.prods[pi].kind {
            Kind::Raw => self.raw_next(pi, part),
            _ => self.slot(pi, part),
        };
        let exp = self.prods[pi].pps[part].expect(seq, n);
        let (w0, s0) = self.sim.op_counts();
        let target = match fault {
            Some(Fault::Write { k, prefix }) => {
                self.sim.fail_write_at(k, prefix);
                Some((true, w0 + k))
            }
            Some(Fault::Sync) => {
                self.sim.fail_sync_at(1);
                Some((false, s0 + 1))
            }
            Some(Fault::NoSpace { left }) => {
                self.sim.set_space_left(Some(left));
                None
            }
            None => None,
        };
        let before = self.logs[part].next_offset();
        let (r, d) = self.perform(pi, part, seq, n, false);
        let hit = match fault {
            Some(Fault::NoSpace { .. }) => {
                self.sim.set_space_left(None);
                // Hit if a write needed more than was left: the append
                // must then fail.
                r.is_err()
            }
            _ => target.is_some_and(|(write, at)| {
                let (w, s) = self.sim.op_counts();
                if write { w >= at } else { s >= at }
            }),
        };
        if let Some((write, _)) = target
            && !hit
        {
            // Not reached by this append (no fsync under Os, one write
            // only): disarm it.
            if write {
                self.sim.fail_write_at(FAR, 0);
            } else {
                self.sim.fail_sync_at(FAR);
            }
        }
        trace(format!(
            "{}: send p{pi} part {part} seq {seq} n {n} {d:?} fault {fault:?} (hit {hit}) expect {exp:?} -> {}",
            self.label(),
            describe(&r)
        ));
        if hit && matches!(fault, Some(Fault::NoSpace { .. })) {
            return self.after_full_disk(pi, part, seq, n, exp, before, r);
        }
        if hit {
            let e = match r {
                Err(e) => e,
                Ok(o) => panic!(
                    "{}: the injected {fault:?} was hit but the append returned {o:?}",
                    self.label()
                ),
            };
            match (self.prods[pi].kind, &e) {
                (Kind::Raw, e) => assert_eq!(e.kind(), "io", "{}: {e}", self.label()),
                (
                    _,
                    Error::NotAcknowledged {
                        sequence,
                        producer_id,
                        ..
                    },
                ) => assert_eq!(
                    (*sequence, *producer_id),
                    (seq, self.prods[pi].id),
                    "{}: {e}",
                    self.label()
                ),
                (_, e) => panic!("{}: expected not_acknowledged, got {e}", self.label()),
            }
            self.pending = Some(Pending {
                pi,
                part,
                seq,
                n,
                epoch: self.prods[pi].epoch,
            });
            self.poisoned = true;
            count(match fault {
                Some(Fault::Write { .. }) => "injected write failure hit",
                Some(Fault::Sync) => "injected fsync failure hit",
                _ => "injected full disk hit",
            });
            return;
        }
        self.settle(pi, part, seq, n, exp, None, before, r, d, false);
    }

    /// An append refused for a full disk, which has been freed again: the
    /// log must be as it was (but for a checkpoint written before the
    /// batch), and the same batch (same sequence) appends without a reopen,
    /// now or after whatever the next operations are (the refused batch is
    /// simply not in the history).
    #[allow(clippy::too_many_arguments)]
    fn after_full_disk(
        &mut self,
        pi: usize,
        part: usize,
        seq: i32,
        n: usize,
        exp: Expect,
        before: i64,
        r: oncelog::Result<AppendOutcome>,
    ) {
        let label = self.label();
        let e = r.expect_err("a hit");
        assert!(
            e.is_disk_full(),
            "{label}: expected a full-disk error, got {e}"
        );
        // A checkpoint written before the batch may have gone in; no data.
        let data = stored(&self.logs[part])
            .into_iter()
            .filter(|b| b.base >= before && !b.control)
            .count();
        assert_eq!(data, 0, "{label}: a refused append left data in the log");
        if self.rng.chance(40) {
            count("full disk: append refused, other operations follow");
            return;
        }
        let before = self.logs[part].next_offset();
        let (r, d) = self.perform(pi, part, seq, n, true);
        trace(format!(
            "{label}: space freed; re-send p{pi} part {part} seq {seq} n {n} -> {}",
            describe(&r)
        ));
        assert!(
            r.is_ok(),
            "{label}: after a full disk was freed: {}",
            describe(&r)
        );
        count("full disk: append refused, then re-sent without a reopen");
        self.settle(pi, part, seq, n, exp, None, before, r, d, true);
    }

    /// Re-send one of the producer's earlier batches (any of them).
    fn op_retry(&mut self, pi: usize, part: usize) {
        let len = self.prods[pi].pps[part].batches.len();
        if len == 0 {
            return self.op_send(pi, part, None);
        }
        let idx = if self.rng.chance(60) {
            len - 1 - self.rng.below(len.min(WINDOW + 2) as u64) as usize
        } else {
            self.rng.below(len as u64) as usize
        };
        let orig = self.prods[pi].pps[part].batches[idx];
        if self.prods[pi].kind != Kind::Raw {
            self.slot(pi, part);
        }
        let exp = self.prods[pi].pps[part].expect(orig.seq, orig.n);
        let before = self.logs[part].next_offset();
        let (r, d) = self.perform(pi, part, orig.seq, orig.n, true);
        trace(format!(
            "{}: retry p{pi} part {part} #{idx} {orig:?} {d:?} expect {exp:?} -> {}",
            self.label(),
            describe(&r)
        ));
        self.settle(
            pi,
            part,
            orig.seq,
            orig.n,
            exp,
            Some(orig),
            before,
            r,
            d,
            true,
        );
    }

    /// Compare an append's result with the model and update the model.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        pi: usize,
        part: usize,
        seq: i32,
        n: usize,
        exp: Expect,
        orig: Option<MBatch>,
        before: i64,
        r: oncelog::Result<AppendOutcome>,
        d: Durability,
        resend: bool,
    ) {
        let label = format!(
            "{}: producer {pi} ({:?}) partition {part} seq {seq} n {n}",
            self.label(),
            self.prods[pi].kind
        );
        let after = self.logs[part].next_offset();
        let sync = d == Durability::Sync;
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
                count(if resend {
                    "retry appended"
                } else {
                    "send appended"
                });
                let now = self.now();
                let epoch = self.prods[pi].epoch;
                self.prods[pi].pps[part].push(
                    MBatch {
                        seq,
                        n,
                        epoch,
                        base: base_offset,
                        last: last_offset,
                        at_ms: now,
                    },
                    now,
                );
                if sync {
                    self.durable[part] = self.durable[part].max(last_offset + 1);
                }
                if self.prods[pi].kind != Kind::Raw {
                    self.prods[pi].slots[part] = Some(inc(seq, n as i64));
                }
            }
            (Expect::Dup(b, l), Ok(got)) => {
                assert_eq!(
                    got,
                    common::dup(b, l),
                    "{label}: a retry within the window is a duplicate with the acknowledged offsets"
                );
                count("retry duplicate with offsets");
                assert_eq!(after, before, "{label}: a duplicate writes nothing");
                if sync {
                    self.durable[part] = self.durable[part].max(l + 1);
                }
                if !resend && self.prods[pi].kind != Kind::Raw {
                    self.prods[pi].slots[part] = Some(inc(seq, n as i64));
                }
            }
            (Expect::DupUnknown, Ok(got)) => {
                assert_eq!(
                    got,
                    common::DUP_UNKNOWN,
                    "{label}: a retry older than the window is a duplicate without offsets"
                );
                count("retry duplicate without offsets");
                assert_eq!(after, before, "{label}: a duplicate writes nothing");
                if sync && let Some(o) = orig {
                    self.durable[part] = self.durable[part].max(o.last + 1);
                }
                if !resend && self.prods[pi].kind != Kind::Raw {
                    self.prods[pi].slots[part] = Some(inc(seq, n as i64));
                }
            }
            (Expect::OutOfOrder, Err(e)) => {
                assert_eq!(e.kind(), "out_of_order_sequence", "{label}: {e}");
                count("retry out of order");
                assert_eq!(after, before, "{label}: a refusal writes nothing");
            }
            (exp, r) => panic!(
                "{label}: expected {exp:?}, got {} (retry of {orig:?}; window {:?})",
                describe(&r),
                self.prods[pi].pps[part].window()
            ),
        }
    }

    fn op_checkpoint(&mut self, part: usize) {
        count("checkpoint");
        let r = self.logs[part].checkpoint();
        trace(format!("{}: checkpoint part {part} -> {r:?}", self.label()));
        r.unwrap_or_else(|e| panic!("{}: checkpoint: {e}", self.label()));
    }

    fn op_retention(&mut self, part: usize) {
        let r = self.logs[part].enforce_retention();
        if r.as_ref().is_ok_and(|r| r.log_start_offset > 0) {
            count("retention with a log start > 0");
        }
        trace(format!(
            "{}: retention part {part} -> {:?}",
            self.label(),
            r.as_ref().map(|r| r.log_start_offset)
        ));
        r.unwrap_or_else(|e| panic!("{}: enforce_retention: {e}", self.label()));
    }

    /// Move the clock by up to two minutes, never so far that a producer the
    /// table knows could expire.
    fn op_tick(&mut self) {
        let now = self.now();
        let oldest = self
            .prods
            .iter()
            .flat_map(|p| p.pps.iter())
            .filter(|pp| pp.known)
            .map(|pp| pp.lo_ms)
            .min()
            .unwrap_or(now);
        let room = (oldest + EXPIRATION_MS - 60_000 - now).max(0);
        let by = (self.rng.range(1, 120_000) as i64).min(room);
        trace(format!("{}: clock +{by} ms", self.label()));
        if by > 0 {
            self.clock.advance(Duration::from_millis(by as u64));
        }
    }

    /// Jump past the expiration: every producer expires.
    fn op_expire(&mut self) {
        let by = EXPIRATION_MS + self.rng.range(60_000, 600_000) as i64;
        self.clock.advance(Duration::from_millis(by as u64));
        count("expiry");
        let dropped: Vec<usize> = self.logs.iter().map(Log::expire_producers).collect();
        trace(format!(
            "{}: clock +{by} ms, expire_producers -> {dropped:?}",
            self.label()
        ));
        for (part, &d) in dropped.iter().enumerate() {
            let known = self.prods.iter().filter(|p| p.pps[part].known).count();
            assert!(
                d >= known,
                "{}: partition {part}: {d} expired, {known} producers were idle past the expiration",
                self.label()
            );
        }
        for p in &mut self.prods {
            for pp in &mut p.pps {
                pp.known = false;
            }
        }
    }

    /// A new session of a named producer fences the old one everywhere.
    fn op_fence(&mut self) {
        let named: Vec<usize> = (0..self.prods.len())
            .filter(|&i| self.prods[i].kind == Kind::Named)
            .collect();
        let pi = named[self.rng.below(named.len() as u64) as usize];
        let part = self.rng.below(PARTITIONS as u64) as usize;
        let store = self.store.as_ref().unwrap();
        let new = store
            .producer(self.prods[pi].name.as_deref().unwrap())
            .unwrap();
        let old = self.sessions[pi].take().unwrap();
        let p = &self.prods[pi];
        assert_eq!(
            (new.id(), new.epoch()),
            (p.id, p.epoch + 1),
            "{}",
            self.label()
        );
        let before = self.logs[part].next_offset();
        count("fence");
        let r = old.send(TOPIC, part as u32, &[Message::new(b"zombie")]);
        trace(format!(
            "{}: new session of p{pi} (epoch {}); old session sends to part {part} -> {}",
            self.label(),
            new.epoch(),
            describe(&r)
        ));
        match r {
            Err(e) => assert_eq!(e.kind(), "producer_fenced", "{}: {e}", self.label()),
            Ok(o) => panic!("{}: a fenced session appended: {o:?}", self.label()),
        }
        assert_eq!(self.logs[part].next_offset(), before, "{}", self.label());
        let d = self.session_durability();
        let p = &mut self.prods[pi];
        p.epoch = new.epoch();
        p.slots = [None; PARTITIONS];
        p.session_durability = d;
        self.sessions[pi] = Some(new.with_durability(d));
    }

    fn op_reopen(&mut self) {
        let end = match self.rng.below(20) {
            0..=2 if !self.poisoned => End::Close,
            0..=7 => End::Crash(CrashMode::KeepAll),
            8..=11 => End::Crash(CrashMode::LoseUnsynced),
            12..=15 => End::Crash(CrashMode::RandomPages {
                seed: self.rng.next(),
            }),
            _ => End::Crash(CrashMode::TornTail {
                seed: self.rng.next(),
            }),
        };
        count(match end {
            End::Close => "close and reopen",
            End::Crash(CrashMode::KeepAll) => "process crash and reopen",
            End::Crash(CrashMode::LoseUnsynced) => "power loss (unsynced lost) and reopen",
            End::Crash(CrashMode::RandomPages { .. }) => "power loss (random pages) and reopen",
            End::Crash(_) => "power loss (torn tail) and reopen",
        });
        trace(format!(
            "{}: {end:?} and reopen (pending {:?})",
            self.label(),
            self.pending
        ));

        for s in &mut self.sessions {
            *s = None;
        }
        match end {
            End::Close => {
                for (part, log) in self.logs.iter().enumerate() {
                    self.durable[part] = log.next_offset();
                }
                self.logs.clear();
                self.store
                    .take()
                    .unwrap()
                    .close()
                    .unwrap_or_else(|e| panic!("{}: close: {e}", self.label()));
            }
            End::Crash(mode) => {
                self.sim.crash(mode);
                self.logs.clear();
                drop(self.store.take());
            }
        }
        self.open();
        let lossy = matches!(
            end,
            End::Crash(
                CrashMode::LoseUnsynced
                    | CrashMode::RandomPages { .. }
                    | CrashMode::TornTail { .. }
            )
        );
        let pending = self.pending;
        self.verify(Some(lossy));
        self.pending = None;
        self.poisoned = false;
        // Recovery cuts the active segment and fsyncs it: what is there now
        // is durable.
        for (part, log) in self.logs.iter().enumerate() {
            self.durable[part] = log.next_offset();
        }
        self.restart_sessions();
        // The documented way to settle a failed send: re-send it at its
        // sequence; a duplicate with its offsets if recovery kept it,
        // appended if not (or out of order, if the power loss also took
        // acknowledged `Os` batches before it).
        if let Some(q) = pending
            && self.rng.chance(70)
        {
            if self.prods[q.pi].kind != Kind::Raw {
                self.slot(q.pi, q.part);
            }
            let exp = self.prods[q.pi].pps[q.part].expect(q.seq, q.n);
            let before = self.logs[q.part].next_offset();
            let (r, d) = self.perform(q.pi, q.part, q.seq, q.n, true);
            trace(format!(
                "{}: re-send the failed append {q:?} {d:?} expect {exp:?} -> {}",
                self.label(),
                describe(&r)
            ));
            count("failed append re-sent after the reopen");
            self.settle(q.pi, q.part, q.seq, q.n, exp, None, before, r, d, true);
        }
    }

    /// Compare the logs and the producer tables with the model. `reopen`:
    /// right after a reopen (`Some(true)` after a power loss, which may lose
    /// what was not durable, as a suffix).
    fn verify(&mut self, reopen: Option<bool>) {
        let label = self.label();
        let lossy = reopen == Some(true);
        let now = self.now();
        for part in 0..PARTITIONS {
            let log = self.logs[part].clone();
            let start = log.log_start_offset();
            let next = log.next_offset();
            let all = stored(&log);
            if reopen.is_some() {
                let r = log.recovery_report();
                let summary: Vec<String> = all
                    .iter()
                    .map(|s| {
                        if s.control {
                            format!("ck@{}", s.base)
                        } else {
                            format!("p{}s{}@{}-{}", s.producer_id, s.seq, s.base, s.last)
                        }
                    })
                    .collect();
                let mut segments: Vec<String> = self
                    .sim
                    .list_dir(std::path::Path::new(&format!("{STORE}/{TOPIC}-{part}")))
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|n| n.strip_suffix(".log").and_then(|b| b.parse::<i64>().ok()))
                    .map(|b| b.to_string())
                    .collect();
                segments.sort_by_key(|b| b.parse::<i64>().unwrap());
                trace(format!(
                    "  part {part}: segments {}, start {start} next {next}, checkpoint loaded {:?}, replayed {}, producers {}; log: {}",
                    segments.join(","),
                    r.checkpoint_offset,
                    r.batches_replayed,
                    r.producers,
                    summary.join(" ")
                ));
            }
            // The log is contiguous from its start to its end.
            let mut at = start;
            for s in &all {
                assert_eq!(
                    s.base, at,
                    "{label}: part {part}: gap or overlap before {s:?}"
                );
                assert!(s.last >= s.base, "{label}: {s:?}");
                at = s.last + 1;
            }
            assert_eq!(
                at, next,
                "{label}: part {part}: the last batch ends at next_offset"
            );
            let data: BTreeMap<i64, Stored> = all
                .iter()
                .filter(|s| !s.control)
                .map(|s| (s.base, *s))
                .collect();
            for s in data.values() {
                assert!(s.producer_id >= 0, "{label}: a batch nobody wrote: {s:?}");
            }
            // Every acknowledged batch not deleted by retention is there, at
            // its offsets, unless a power loss took it (not durable, and
            // everything after it too).
            let mut matched = HashSet::new();
            let mut lost: Vec<(usize, usize)> = Vec::new();
            for (pi, p) in self.prods.iter().enumerate() {
                let mut first_lost = None;
                for (idx, b) in p.pps[part].batches.iter().enumerate() {
                    if b.last < start {
                        continue;
                    }
                    assert!(
                        b.base >= start,
                        "{label}: part {part}: log start {start} inside {b:?}"
                    );
                    match data.get(&b.base) {
                        Some(s) => {
                            assert_eq!(
                                (s.producer_id, s.epoch, s.seq, s.last),
                                (p.id, b.epoch, b.seq, b.last),
                                "{label}: part {part}: producer {pi}'s batch {b:?} replaced by {s:?}"
                            );
                            assert!(
                                first_lost.is_none(),
                                "{label}: part {part}: producer {pi}'s {b:?} survived an earlier lost one"
                            );
                            matched.insert(b.base);
                        }
                        None => {
                            assert!(
                                lossy,
                                "{label}: part {part}: producer {pi}'s acknowledged {b:?} is not in the log \
                                 (start {start}, next {next})"
                            );
                            assert!(
                                b.last >= self.durable[part],
                                "{label}: part {part}: producer {pi}'s {b:?} was durable (below {}) and is lost",
                                self.durable[part]
                            );
                            assert!(
                                next <= b.base,
                                "{label}: part {part}: producer {pi}'s {b:?} is lost but the log goes on to {next}"
                            );
                            first_lost.get_or_insert(idx);
                        }
                    }
                }
                if let Some(idx) = first_lost {
                    lost.push((pi, idx));
                }
            }
            // Nothing else is there, except the batch whose append failed.
            let mut found_pending = None;
            for s in data.values() {
                if matched.contains(&s.base) {
                    continue;
                }
                let pending = self.pending.filter(|q| {
                    reopen.is_some()
                        && q.part == part
                        && self.prods[q.pi].id == s.producer_id
                        && q.epoch == s.epoch
                        && q.seq == s.seq
                        && q.n as i64 == s.last - s.base + 1
                });
                match pending {
                    Some(q) if found_pending.is_none() => found_pending = Some((q, *s)),
                    _ => panic!(
                        "{label}: part {part}: {s:?} is in the log but was never acknowledged \
                         (pending {:?})",
                        self.pending
                    ),
                }
            }
            for (pi, idx) in lost {
                trace(format!(
                    "  part {part}: power loss took producer {pi}'s batches from #{idx}: {:?}",
                    &self.prods[pi].pps[part].batches[idx..]
                ));
                self.prods[pi].pps[part].truncate(idx);
                count("producer-partitions that lost batches to a power loss");
            }
            if let Some((q, s)) = found_pending {
                trace(format!(
                    "  part {part}: the failed append is in the log: {s:?}"
                ));
                count("failed append found in the log");
                self.prods[q.pi].pps[part].push(
                    MBatch {
                        seq: q.seq,
                        n: q.n,
                        epoch: q.epoch,
                        base: s.base,
                        last: s.last,
                        at_ms: now,
                    },
                    now,
                );
            }
            // Sequences per producer: each once, contiguous, in order (for
            // producers that never expired; the model check above covers
            // the others exactly).
            for (pi, p) in self.prods.iter().enumerate() {
                if p.pps[part].eras.len() > 1 {
                    continue;
                }
                let mine: Vec<&Stored> = data.values().filter(|s| s.producer_id == p.id).collect();
                let mut seen = HashSet::new();
                for s in &mine {
                    assert!(
                        seen.insert(s.seq),
                        "{label}: part {part}: producer {pi} sequence {} twice",
                        s.seq
                    );
                }
                for w in mine.windows(2) {
                    let last_seq = inc(w[0].seq, w[0].last - w[0].base);
                    assert_eq!(
                        w[1].seq,
                        inc(last_seq, 1),
                        "{label}: part {part}: producer {pi}: {:?} does not follow {:?}",
                        w[1],
                        w[0]
                    );
                }
            }
            // The producer table agrees with the model.
            for (pi, p) in self.prods.iter_mut().enumerate() {
                let info = log.producer(p.id);
                let pp = &mut p.pps[part];
                let want: Vec<(i32, i32, i64, i64)> = pp
                    .window()
                    .iter()
                    .map(|b| (b.seq, b.last_seq(), b.base, b.last))
                    .collect();
                let got = info.as_ref().map(common::window);
                let empty = info
                    .as_ref()
                    .is_none_or(|i| i.batches.is_empty() && i.last_sequence.is_none());
                if pp.known {
                    let info = info.as_ref().unwrap_or_else(|| {
                        panic!("{label}: part {part}: producer {pi} missing from the table; window {want:?}")
                    });
                    let tail = pp.era().last().unwrap();
                    assert_eq!(
                        got.as_ref(),
                        Some(&want),
                        "{label}: part {part}: producer {pi}'s window"
                    );
                    assert_eq!(
                        info.last_sequence,
                        Some(tail.last_seq()),
                        "{label}: part {part}: producer {pi}'s last sequence"
                    );
                    assert_eq!(
                        info.epoch, tail.epoch,
                        "{label}: part {part}: producer {pi}'s epoch (of its last batch)"
                    );
                    assert_eq!(
                        info.name, p.name,
                        "{label}: part {part}: producer {pi}'s name"
                    );
                } else if reopen.is_some() && !pp.eras.is_empty() && !empty {
                    // Expired, but its batches after the last checkpoint were
                    // replayed at the open time: back with its whole window.
                    assert_eq!(
                        got.as_ref(),
                        Some(&want),
                        "{label}: part {part}: expired producer {pi} is back with another window"
                    );
                    trace(format!(
                        "  part {part}: producer {pi} back after the reopen"
                    ));
                    pp.known = true;
                    pp.lo_ms = now;
                    count("expired producer back after a reopen");
                } else {
                    assert!(
                        empty,
                        "{label}: part {part}: producer {pi} (expired or unknown) is in the table: {info:?}"
                    );
                }
            }
        }
        if reopen.is_some()
            && let Some(q) = self.pending
            && self.prods[q.pi].pps[q.part].batches.last().map(|b| b.seq) != Some(q.seq)
        {
            trace(format!("  the failed append is not in the log: {q:?}"));
        }
    }

    fn step(&mut self) {
        self.step += 1;
        if self.poisoned {
            self.op_reopen();
            return self.verify(None);
        }
        let r = self.rng.below(100);
        match r {
            0..44 => {
                let (pi, part) = self.pick_producer();
                self.op_send(pi, part, None);
            }
            44..70 => {
                let (pi, part) = self.pick_producer();
                self.op_retry(pi, part);
            }
            70..74 => {
                let part = self.rng.below(PARTITIONS as u64) as usize;
                self.op_checkpoint(part);
            }
            74..78 => {
                let part = self.rng.below(PARTITIONS as u64) as usize;
                self.op_retention(part);
            }
            78..87 => {
                if r == 86 && self.expiry {
                    self.op_expire();
                } else {
                    self.op_tick();
                }
            }
            87..92 => self.op_reopen(),
            92..97 => {
                let (pi, part) = self.pick_producer();
                let fault = if self.rng.chance(40) {
                    Fault::Sync
                } else if self.rng.chance(30) {
                    Fault::NoSpace {
                        left: self.rng.range(0, 300),
                    }
                } else {
                    let prefix = if self.rng.chance(40) {
                        0
                    } else {
                        self.rng.range(1, 150) as usize
                    };
                    Fault::Write {
                        k: self.rng.range(1, 2),
                        prefix,
                    }
                };
                self.op_send(pi, part, Some(fault));
                if self.poisoned {
                    return; // checked after the reopen
                }
            }
            97..99 => self.op_fence(),
            _ => {
                let (pi, part) = self.pick_producer();
                self.op_retry(pi, part);
            }
        }
        self.verify(None);
    }
}

fn run(seed: u64, ops: usize) {
    let mut w = World::new(seed);
    w.verify(None);
    for _ in 0..ops {
        w.step();
    }
    // Finally a clean close and reopen (after recovery, if poisoned).
    if w.poisoned {
        w.step += 1;
        w.op_reopen();
    }
    w.step += 1;
    trace(format!("{}: close and reopen", w.label()));
    for s in &mut w.sessions {
        *s = None;
    }
    w.logs.clear();
    w.store.take().unwrap().close().unwrap();
    w.open();
    w.verify(Some(false));
    for log in &w.logs {
        assert_eq!(
            log.recovery_report().batches_replayed,
            0,
            "a clean reopen replays nothing"
        );
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

#[test]
fn producers_follow_the_model_first_half() {
    run_half(0);
}

#[test]
fn producers_follow_the_model_second_half() {
    run_half(1);
}

/// Seeds `0..N` (`ONCELOG_MODEL_SEEDS`, default [`DEFAULT_SEEDS`]): `half` 0
/// runs the first half, 1 the second; a single `ONCELOG_MODEL_SEED` runs in
/// half 0.
fn run_half(half: u64) {
    let seeds: Vec<u64> = match env_num("ONCELOG_MODEL_SEED") {
        Some(s) if half == 0 => vec![s],
        Some(_) => return,
        None => {
            let n = env_num("ONCELOG_MODEL_SEEDS").unwrap_or(DEFAULT_SEEDS);
            let mid = n / 2;
            if half == 0 { 0..mid } else { mid..n }.collect()
        }
    };
    let ops = env_num("ONCELOG_MODEL_OPS").map_or(DEFAULT_OPS, |n| n as usize);
    let show = std::env::var_os("ONCELOG_MODEL_TRACE").is_some();
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0;
    for &seed in &seeds {
        ran += 1;
        TRACE.with(|t| t.borrow_mut().clear());
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| run(seed, ops)));
        let lines = TRACE.with(|t| std::mem::take(&mut *t.borrow_mut()));
        if show {
            for l in &lines {
                eprintln!("{l}");
            }
        }
        if r.is_err() {
            if !show {
                eprintln!("--- seed {seed}: the configuration and the last operations:");
                eprintln!("{}", lines[0]);
                for l in lines.iter().skip(1).skip(lines.len().saturating_sub(41)) {
                    eprintln!("{l}");
                }
            }
            let ops_env = if ops == DEFAULT_OPS {
                String::new()
            } else {
                format!("ONCELOG_MODEL_OPS={ops} ")
            };
            eprintln!(
                "--- seed {seed} failed; replay with: {ops_env}ONCELOG_MODEL_SEED={seed} \
                 cargo test --release --test producer_model (ONCELOG_MODEL_TRACE=1 prints every operation)"
            );
            failed.push(seed);
            if failed.len() >= 5 {
                break;
            }
        }
    }
    COUNTS.with(|c| {
        let mut out = String::new();
        for (what, n) in c.borrow().iter() {
            out += &format!("  {n:>8}  {what}\n");
        }
        eprint!("{out}");
    });
    eprintln!(
        "producer_model (half {half}): {ran} of {} seeds x {ops} operations in {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "seeds {failed:?} failed; replay one with ONCELOG_MODEL_SEED=<seed> cargo test --release --test producer_model"
    );
}
