//! Producer state of one partition: a pure state machine, no I/O.
//!
//! For every producer id seen on the partition the table keeps its epoch,
//! the window of its last `window` batches (sequence range and offsets) and
//! the time of its last append on the engine's clock. [`ProducerTable::check`]
//! decides what an incoming idempotent batch is (docs/semantics.md has the
//! table); [`ProducerTable::commit`] records a batch once it is written.
//!
//! Invariants:
//! - State changes only through `commit` (after the bytes are written),
//!   `replay` (recovery), `load` (a checkpoint) and expiry, which `check`
//!   also runs when a new producer finds the table full.
//! - Named producers: their epoch is checked by the caller against the
//!   store's fence (equality), so the table neither compares their epochs
//!   nor resets their sequences or windows when the epoch changes.
//! - A window holds at most `window` batches, in sequence order, each one
//!   continuing the previous one (`first_seq == prev.last_seq + 1`, wrapping
//!   from `i32::MAX` to 0) unless an epoch bump of an anonymous producer
//!   cleared it in between.
//! - Sequences live in `[0, i32::MAX]`; offsets are never reused, so two
//!   window entries never share an offset.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::format::batch::increment_sequence;
use crate::format::checkpoint::WindowBatch;

/// Number of distinct sequence values (`0..=i32::MAX`).
const SEQ_SPACE: i64 = 1 << 31;
/// A batch up to this far behind the next expected sequence counts as an old
/// retry; further than this it counts as a jump ahead (serial-number
/// arithmetic, as in RFC 1982).
const HALF_SPACE: i64 = 1 << 30;

/// One batch in a producer's window (the checkpoint format's type).
pub(crate) type BatchMeta = WindowBatch;

/// What the table keeps per producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub epoch: i16,
    /// Last append (or replay) on the engine's clock, in ms since the epoch.
    pub last_append_ms: i64,
    pub window: Window,
}

/// Batches a window keeps inline, without an allocation: Kafka's (and the
/// default) window of 5. A producer's whole state then lives in its slot of
/// the table, one memory access away (docs/performance.md: at a million
/// producers every dependent cache miss costs ~170 ns).
pub(crate) const INLINE_WINDOW: usize = 5;

/// A producer's last batches, oldest first. Up to [`INLINE_WINDOW`] are kept
/// inline; a longer window (the limit is configurable up to 64) moves to
/// the heap when it grows past that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// Batches in `inline` (when there is no `spill`).
    len: u8,
    inline: [BatchMeta; INLINE_WINDOW],
    /// Every batch, once there were more than `INLINE_WINDOW`; `None` or
    /// empty means the inline part is in use. (Boxed: one pointer in every
    /// entry rather than a `Vec`'s three words, for a rare case.)
    #[allow(clippy::box_collection)]
    spill: Option<Box<Vec<BatchMeta>>>,
}

impl Window {
    pub(crate) fn as_slice(&self) -> &[BatchMeta] {
        match &self.spill {
            Some(v) if !v.is_empty() => v,
            _ => &self.inline[..usize::from(self.len)],
        }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, BatchMeta> {
        self.as_slice().iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn front(&self) -> Option<&BatchMeta> {
        self.as_slice().first()
    }

    pub(crate) fn back(&self) -> Option<&BatchMeta> {
        self.as_slice().last()
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
        if let Some(v) = &mut self.spill {
            v.clear();
        }
    }

    pub(crate) fn push_back(&mut self, m: BatchMeta) {
        if let Some(v) = self.spill.as_mut().filter(|v| !v.is_empty()) {
            v.push(m);
        } else if usize::from(self.len) < INLINE_WINDOW {
            self.inline[usize::from(self.len)] = m;
            self.len += 1;
        } else {
            let v = self.spill.get_or_insert_with(Box::default);
            v.extend_from_slice(&self.inline);
            v.push(m);
            self.len = 0;
        }
    }

    pub(crate) fn pop_front(&mut self) {
        if let Some(v) = self.spill.as_mut().filter(|v| !v.is_empty()) {
            v.remove(0);
        } else if self.len > 0 {
            self.inline.copy_within(1..usize::from(self.len), 0);
            self.len -= 1;
        }
    }
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Window {}

impl std::ops::Index<usize> for Window {
    type Output = BatchMeta;
    fn index(&self, i: usize) -> &BatchMeta {
        &self.as_slice()[i]
    }
}

impl FromIterator<BatchMeta> for Window {
    fn from_iter<I: IntoIterator<Item = BatchMeta>>(iter: I) -> Window {
        let mut w = Window::default();
        for m in iter {
            w.push_back(m);
        }
        w
    }
}

/// Hashes producer ids for the table: a folded 64x64->128-bit multiply
/// with a per-process random key (the construction of `foldhash`). About a
/// tenth of SipHash's cost for one `i64`, and without the key an outsider
/// cannot choose ids that collide.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHash {
    key: u64,
}

impl Default for IdHash {
    fn default() -> IdHash {
        IdHash {
            key: RandomState::new().hash_one(0x006f_6e63_656c_6f67_u64) | 1,
        }
    }
}

const IDHASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.key,
            state: 0,
        }
    }
}

/// The hasher of [`IdHash`].
#[derive(Debug)]
pub(crate) struct IdHasher {
    key: u64,
    state: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.state = fold_mul(self.state ^ n ^ self.key, IDHASH_MUL);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // A second round so that the high bits (hashbrown's tag) and the
        // low bits (its bucket index) both depend on every input bit.
        fold_mul(self.state, self.key)
    }
}

/// The producer fields of an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchIdent {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_seq: i32,
    /// `lastOffsetDelta` of the batch.
    pub delta: i32,
}

impl BatchIdent {
    pub(crate) fn last_seq(&self) -> i32 {
        increment_sequence(self.base_seq, self.delta)
    }
}

/// What to do with a batch that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it.
    Append,
    /// Already in the log at these offsets: write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Older than the window: written long ago, offsets no longer known.
    DuplicateUnknownOffsets,
}

/// Why a batch was refused (the log turns this into an [`crate::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// A producer id without a sequence, or with a negative epoch.
    InvalidRecord { detail: &'static str },
    /// The sequence is neither the next one nor a retry.
    OutOfOrder { expected: i32 },
    /// The batch's epoch is older than the producer's.
    StaleEpoch { current: i16 },
    /// A new producer, and the table is full of live ones.
    TooManyProducers { max: usize },
}

/// Rules the table applies; fixed when the log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub window: usize,
    pub max_producers: usize,
    pub expiration_ms: i64,
    pub require_sequence_zero: bool,
}

/// Producer id -> state.
pub(crate) type ProducerMap = HashMap<i64, Entry, IdHash>;

/// The producer table of one partition.
#[derive(Debug, Clone)]
pub(crate) struct ProducerTable {
    entries: ProducerMap,
    limits: Limits,
    /// No producer can expire before this time (ms): a full table refuses
    /// new producers without scanning until then.
    earliest_expiry_ms: i64,
    /// Producers expired since the last checkpoint. A batch from one of them
    /// must follow a checkpoint: recovery (the last checkpoint plus replay)
    /// would otherwise find the expired entry and merge the batch into it.
    expired_since_checkpoint: HashSet<i64, IdHash>,
}

/// How far `to` lies after `from` in sequence space, in `[0, 2^31)`.
fn seq_distance(from: i32, to: i32) -> i64 {
    (i64::from(to) - i64::from(from)).rem_euclid(SEQ_SPACE)
}

impl ProducerTable {
    pub(crate) fn new(limits: Limits) -> ProducerTable {
        ProducerTable {
            entries: HashMap::default(),
            limits,
            earliest_expiry_ms: i64::MIN,
            expired_since_checkpoint: HashSet::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get(&self, producer_id: i64) -> Option<&Entry> {
        self.entries.get(&producer_id)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (i64, &Entry)> {
        self.entries.iter().map(|(k, e)| (*k, e))
    }

    /// Every entry, ordered by producer id.
    pub(crate) fn sorted(&self) -> Vec<(i64, &Entry)> {
        let mut v: Vec<(i64, &Entry)> = self.entries.iter().map(|(k, e)| (*k, e)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Decide what `b` is. `named` says the producer keeps its sequences
    /// across epochs (a named producer's new session). May drop expired
    /// producers (returned count) to make room for a new one.
    pub(crate) fn check(
        &mut self,
        b: &BatchIdent,
        named: bool,
        now_ms: i64,
    ) -> (Result<Verdict, Rejection>, usize) {
        if b.base_seq < 0 {
            return (
                Err(Rejection::InvalidRecord {
                    detail: "a batch with a producer id must carry a base sequence",
                }),
                0,
            );
        }
        if b.epoch < 0 {
            return (
                Err(Rejection::InvalidRecord {
                    detail: "a batch with a producer id must carry a producer epoch",
                }),
                0,
            );
        }
        let Some(entry) = self.entries.get(&b.producer_id) else {
            if self.limits.require_sequence_zero && b.base_seq != 0 {
                return (Err(Rejection::OutOfOrder { expected: 0 }), 0);
            }
            let full = self.entries.len() >= self.limits.max_producers;
            // Scan for expired producers only when one can have expired.
            let expired = if full && now_ms >= self.earliest_expiry_ms {
                self.expire(now_ms)
            } else {
                0
            };
            if self.entries.len() >= self.limits.max_producers {
                return (
                    Err(Rejection::TooManyProducers {
                        max: self.limits.max_producers,
                    }),
                    expired,
                );
            }
            return (Ok(Verdict::Append), expired);
        };
        (Self::check_entry(entry, b, named), 0)
    }

    fn check_entry(entry: &Entry, b: &BatchIdent, named: bool) -> Result<Verdict, Rejection> {
        // A named producer's epoch was checked against the store's current
        // one (the fence) before; here its sequences simply continue.
        if !named && b.epoch < entry.epoch {
            return Err(Rejection::StaleEpoch {
                current: entry.epoch,
            });
        }
        if !named && b.epoch > entry.epoch {
            // Kafka: a new epoch starts its sequences at 0.
            return if b.base_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(Rejection::OutOfOrder { expected: 0 })
            };
        }
        let last = b.last_seq();
        if let Some(m) = entry
            .window
            .iter()
            .find(|m| m.last_seq == last && m.first_seq() == b.base_seq)
        {
            return Ok(Verdict::Duplicate {
                base_offset: m.first_offset(),
                last_offset: m.last_offset,
            });
        }
        let (Some(front), Some(tail)) = (entry.window.front(), entry.window.back()) else {
            return if b.base_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(Rejection::OutOfOrder { expected: 0 })
            };
        };
        let expected = increment_sequence(tail.last_seq, 1);
        if b.base_seq == expected {
            return Ok(Verdict::Append);
        }
        // An old retry: the batch ends before the window starts and lies
        // behind the next expected sequence.
        let behind = seq_distance(b.base_seq, expected);
        let ends_before = seq_distance(last, front.first_seq());
        if (1..=HALF_SPACE).contains(&behind) && (1..=HALF_SPACE).contains(&ends_before) {
            return Ok(Verdict::DuplicateUnknownOffsets);
        }
        Err(Rejection::OutOfOrder { expected })
    }

    /// Record a written batch at `[base_offset, base_offset + delta]`.
    pub(crate) fn commit(&mut self, b: &BatchIdent, base_offset: i64, named: bool, now_ms: i64) {
        let window = self.limits.window;
        let entry = self.entries.entry(b.producer_id).or_insert_with(|| Entry {
            epoch: b.epoch,
            last_append_ms: now_ms,
            window: Window::default(),
        });
        if b.epoch != entry.epoch {
            if !named {
                entry.window.clear();
            }
            entry.epoch = b.epoch;
        }
        if entry.window.len() >= window {
            entry.window.pop_front();
        }
        entry.window.push_back(BatchMeta {
            last_seq: b.last_seq(),
            delta: b.delta,
            last_offset: base_offset + i64::from(b.delta),
        });
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        // (A clock that went back could otherwise make it too late.)
        self.earliest_expiry_ms = self
            .earliest_expiry_ms
            .min(now_ms.saturating_add(self.limits.expiration_ms));
    }

    /// Apply a batch found in the log during recovery: no checks, the log is
    /// the truth (a lower epoch, impossible in a log we wrote, is kept as is).
    pub(crate) fn replay(&mut self, b: &BatchIdent, base_offset: i64, named: bool, now_ms: i64) {
        if b.base_seq < 0 || b.epoch < 0 {
            return;
        }
        if !named
            && self
                .entries
                .get(&b.producer_id)
                .is_some_and(|e| b.epoch < e.epoch)
        {
            tracing::warn!(
                producer_id = b.producer_id,
                epoch = b.epoch,
                "replayed batch has an older epoch than its producer"
            );
            return;
        }
        self.commit(b, base_offset, named, now_ms);
    }

    /// Drop producers idle for `expiration_ms` or longer; returns how many.
    pub(crate) fn expire(&mut self, now_ms: i64) -> usize {
        let exp = self.limits.expiration_ms;
        let before = self.entries.len();
        let mut oldest = i64::MAX;
        let gone = &mut self.expired_since_checkpoint;
        self.entries.retain(|id, e| {
            let keep = now_ms.saturating_sub(e.last_append_ms) < exp;
            if keep {
                oldest = oldest.min(e.last_append_ms);
            } else {
                gone.insert(*id);
            }
            keep
        });
        // Appends only move times forward, so this stays a lower bound.
        self.earliest_expiry_ms = oldest.saturating_add(exp);
        before - self.entries.len()
    }

    /// True if `producer_id` expired since the last checkpoint (see
    /// `expired_since_checkpoint`).
    pub(crate) fn expired_recently(&self, producer_id: i64) -> bool {
        self.expired_since_checkpoint.contains(&producer_id)
    }

    /// A checkpoint of the current table was written.
    pub(crate) fn checkpointed(&mut self) {
        self.expired_since_checkpoint.clear();
    }

    /// Replace the whole table (a checkpoint was loaded). The caller has
    /// trimmed every window to [`window_limit`](Self::window_limit) and
    /// passes the oldest `last_append_ms` among the entries.
    pub(crate) fn load(&mut self, entries: ProducerMap, oldest_append_ms: i64) {
        debug_assert!(
            entries
                .values()
                .all(|e| e.window.len() <= self.limits.window)
        );
        debug_assert!(
            entries
                .values()
                .all(|e| e.last_append_ms >= oldest_append_ms)
        );
        self.entries = entries;
        self.earliest_expiry_ms = oldest_append_ms.saturating_add(self.limits.expiration_ms);
    }

    /// Like [`expire`](Self::expire), but without a pass over the table
    /// when no producer can have expired yet.
    pub(crate) fn expire_due(&mut self, now_ms: i64) -> usize {
        if now_ms < self.earliest_expiry_ms {
            return 0;
        }
        self.expire(now_ms)
    }

    /// Most batches a window keeps.
    pub(crate) fn window_limit(&self) -> usize {
        self.limits.window
    }

    /// Most producers the table holds.
    pub(crate) fn max_producers(&self) -> usize {
        self.limits.max_producers
    }
}

/// Approximate bytes a producer takes in a table with this window (for
/// monitoring): its map slot (key, entry, control byte, at hashbrown's 7/8
/// load) plus the window's heap buffer and the allocator's header.
pub(crate) fn bytes_per_producer(window: usize) -> usize {
    let slot = (size_of::<i64>() + size_of::<Entry>() + 1) * 8 / 7;
    if window <= INLINE_WINDOW {
        slot
    } else {
        slot + window * size_of::<BatchMeta>() + size_of::<Vec<BatchMeta>>() + 32
    }
}

/// The current epoch of every named producer, shared by the store (which
/// bumps them) and its logs (which fence older sessions with them).
#[derive(Debug, Default)]
pub(crate) struct Fences {
    any: AtomicBool,
    map: RwLock<HashMap<i64, (Arc<str>, i16)>>,
}

impl Fences {
    /// The name and current epoch of a named producer.
    pub(crate) fn get(&self, producer_id: i64) -> Option<(Arc<str>, i16)> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&producer_id)
            .cloned()
    }

    /// The current epoch of a named producer (the append path's check).
    pub(crate) fn epoch(&self, producer_id: i64) -> Option<i16> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&producer_id)
            .map(|(_, e)| *e)
    }

    pub(crate) fn set(&self, producer_id: i64, name: Arc<str>, epoch: i16) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(producer_id, (name, epoch));
        self.any.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: i64 = 7;

    fn limits() -> Limits {
        Limits {
            window: 5,
            max_producers: 1000,
            expiration_ms: 1000,
            require_sequence_zero: false,
        }
    }

    fn b(epoch: i16, base_seq: i32, records: i32) -> BatchIdent {
        BatchIdent {
            producer_id: ID,
            epoch,
            base_seq,
            delta: records - 1,
        }
    }

    /// A table that appended `n` batches of `records` from `start`, at
    /// offsets 100, 100 + records, ...
    fn table_with(epoch: i16, start: i32, n: usize, records: i32) -> (ProducerTable, i64) {
        let mut t = ProducerTable::new(limits());
        let mut seq = start;
        let mut off = 100;
        for _ in 0..n {
            let bi = b(epoch, seq, records);
            assert_eq!(t.check(&bi, false, 0).0, Ok(Verdict::Append));
            t.commit(&bi, off, false, 0);
            seq = increment_sequence(seq, records);
            off += i64::from(records);
        }
        (t, off)
    }

    fn check(t: &mut ProducerTable, bi: BatchIdent) -> Result<Verdict, Rejection> {
        t.check(&bi, false, 0).0
    }

    #[test]
    fn unknown_producer_accepts_any_sequence() {
        let mut t = ProducerTable::new(limits());
        assert_eq!(check(&mut t, b(0, 0, 1)), Ok(Verdict::Append));
        assert_eq!(check(&mut t, b(3, 12345, 4)), Ok(Verdict::Append));
        let mut strict = ProducerTable::new(Limits {
            require_sequence_zero: true,
            ..limits()
        });
        assert_eq!(
            check(&mut strict, b(0, 5, 1)),
            Err(Rejection::OutOfOrder { expected: 0 })
        );
        assert_eq!(check(&mut strict, b(0, 0, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn missing_sequence_or_epoch_is_invalid() {
        let mut t = ProducerTable::new(limits());
        assert!(matches!(
            check(&mut t, b(0, -1, 1)),
            Err(Rejection::InvalidRecord { .. })
        ));
        assert!(matches!(
            check(&mut t, b(-1, 0, 1)),
            Err(Rejection::InvalidRecord { .. })
        ));
    }

    #[test]
    fn next_in_sequence_appends() {
        let (mut t, _) = table_with(0, 0, 3, 10);
        assert_eq!(check(&mut t, b(0, 30, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn every_batch_of_the_window_is_a_duplicate_with_its_offsets() {
        let (mut t, _) = table_with(0, 0, 7, 10);
        // Batches 2..7 (sequences 20..70) are in the window of 5.
        for i in 2..7 {
            assert_eq!(
                check(&mut t, b(0, i * 10, 10)),
                Ok(Verdict::Duplicate {
                    base_offset: 100 + i64::from(i) * 10,
                    last_offset: 109 + i64::from(i) * 10
                })
            );
        }
    }

    #[test]
    fn old_retry_before_the_window_is_a_duplicate_without_offsets() {
        let (mut t, _) = table_with(0, 0, 7, 10);
        assert_eq!(
            check(&mut t, b(0, 0, 10)),
            Ok(Verdict::DuplicateUnknownOffsets)
        );
        assert_eq!(
            check(&mut t, b(0, 10, 10)),
            Ok(Verdict::DuplicateUnknownOffsets)
        );
        // Ends inside the window: a partial overlap.
        assert_eq!(
            check(&mut t, b(0, 15, 10)),
            Err(Rejection::OutOfOrder { expected: 70 })
        );
    }

    #[test]
    fn gaps_and_partial_overlaps_are_out_of_order() {
        let (mut t, _) = table_with(0, 0, 3, 10);
        assert_eq!(
            check(&mut t, b(0, 31, 1)),
            Err(Rejection::OutOfOrder { expected: 30 })
        );
        assert_eq!(
            check(&mut t, b(0, 25, 10)),
            Err(Rejection::OutOfOrder { expected: 30 })
        );
        assert_eq!(
            check(&mut t, b(0, 20, 5)),
            Err(Rejection::OutOfOrder { expected: 30 })
        );
        assert_eq!(
            check(&mut t, b(0, 0, 30)),
            Err(Rejection::OutOfOrder { expected: 30 })
        );
    }

    #[test]
    fn epochs() {
        let (mut t, _) = table_with(3, 0, 2, 10);
        assert_eq!(
            check(&mut t, b(2, 20, 1)),
            Err(Rejection::StaleEpoch { current: 3 })
        );
        assert_eq!(
            check(&mut t, b(4, 20, 1)),
            Err(Rejection::OutOfOrder { expected: 0 })
        );
        assert_eq!(check(&mut t, b(4, 0, 1)), Ok(Verdict::Append));
        // The same range in the old epoch is not a duplicate in the new one.
        t.commit(&b(4, 0, 10), 500, false, 0);
        assert_eq!(t.get(ID).unwrap().window.len(), 1);
        assert_eq!(
            check(&mut t, b(4, 0, 10)),
            Ok(Verdict::Duplicate {
                base_offset: 500,
                last_offset: 509
            })
        );
    }

    #[test]
    fn named_producers_keep_sequences_across_epochs() {
        let (mut t, _) = table_with(0, 0, 3, 10);
        let next = b(1, 30, 1);
        assert_eq!(t.check(&next, true, 0).0, Ok(Verdict::Append));
        assert_eq!(
            t.check(&b(1, 10, 10), true, 0).0,
            Ok(Verdict::Duplicate {
                base_offset: 110,
                last_offset: 119
            })
        );
        t.commit(&next, 130, true, 0);
        let e = t.get(ID).unwrap();
        assert_eq!((e.epoch, e.window.len()), (1, 4));
        // Epochs of named producers are the fence's business: any epoch
        // continues the sequences (the wrap from i16::MAX to 0 included).
        assert_eq!(t.check(&b(0, 31, 1), true, 0).0, Ok(Verdict::Append));
    }

    #[test]
    fn sequences_wrap_and_batches_straddle_the_wrap() {
        let (mut t, _) = table_with(0, i32::MAX - 9, 1, 10);
        assert_eq!(t.get(ID).unwrap().window[0].last_seq, i32::MAX);
        assert_eq!(check(&mut t, b(0, 0, 1)), Ok(Verdict::Append));
        let (mut t, off) = table_with(0, i32::MAX - 4, 3, 10);
        // Second batch: MAX-4+10 wraps to 5; it straddled.
        let w = &t.get(ID).unwrap().window;
        assert_eq!(w[0].last_seq, 4);
        assert_eq!(w[1].first_seq(), 5);
        assert_eq!(
            check(&mut t, b(0, i32::MAX - 4, 10)),
            Ok(Verdict::Duplicate {
                base_offset: 100,
                last_offset: 109
            })
        );
        assert_eq!(check(&mut t, b(0, 25, 1)), Ok(Verdict::Append));
        assert_eq!(off, 130);
        // An old retry from before the wrap.
        let (mut t, _) = table_with(0, i32::MAX - 29, 8, 10);
        assert_eq!(
            check(&mut t, b(0, i32::MAX - 29, 10)),
            Ok(Verdict::DuplicateUnknownOffsets)
        );
    }

    #[test]
    fn expiry_and_bounds() {
        let mut t = ProducerTable::new(Limits {
            max_producers: 2,
            ..limits()
        });
        for id in [1, 2] {
            let bi = BatchIdent {
                producer_id: id,
                ..b(0, 0, 1)
            };
            t.commit(&bi, id * 10, false, id * 100);
        }
        let third = BatchIdent {
            producer_id: 3,
            ..b(0, 0, 1)
        };
        assert_eq!(
            t.check(&third, false, 500),
            (Err(Rejection::TooManyProducers { max: 2 }), 0)
        );
        // Producer 1 (last append at 100) expires at 1100.
        assert_eq!(t.check(&third, false, 1100), (Ok(Verdict::Append), 1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(1200), 1);
        assert!(t.is_empty());
    }

    proptest::proptest! {
        /// Producers that send new batches in order and retry any batch
        /// they sent: every new batch is appended, every retry of one of the
        /// last `window` batches is a duplicate with its original offsets,
        /// every older retry a duplicate without offsets; nothing is ever
        /// appended twice or refused. Sequences start near the wrap.
        #[test]
        fn retries_are_never_appended_twice(
            window in 1usize..8,
            starts in proptest::collection::vec(i32::MAX - 40..=i32::MAX, 3),
            ops in proptest::collection::vec((0usize..3, 0u8..2, 1i32..5, 0usize..64), 1..200),
        ) {
            let mut t = ProducerTable::new(Limits { window, ..limits() });
            // Per producer: next sequence, and the batches it sent:
            // (base sequence, records, base offset).
            let mut next: Vec<i32> = starts.clone();
            let mut sent: Vec<Vec<(i32, i32, i64)>> = vec![Vec::new(); 3];
            let mut offset = 0i64;
            for (p, kind, n, pick) in ops {
                let id = p as i64;
                if kind == 0 || sent[p].is_empty() {
                    let bi = BatchIdent { producer_id: id, epoch: 0, base_seq: next[p], delta: n - 1 };
                    proptest::prop_assert_eq!(t.check(&bi, false, 0).0, Ok(Verdict::Append));
                    t.commit(&bi, offset, false, 0);
                    sent[p].push((next[p], n, offset));
                    next[p] = increment_sequence(next[p], n);
                    offset += i64::from(n);
                } else {
                    let k = pick % sent[p].len();
                    let (seq, n, base) = sent[p][k];
                    let bi = BatchIdent { producer_id: id, epoch: 0, base_seq: seq, delta: n - 1 };
                    let want = if k + window >= sent[p].len() {
                        Verdict::Duplicate { base_offset: base, last_offset: base + i64::from(n) - 1 }
                    } else {
                        Verdict::DuplicateUnknownOffsets
                    };
                    proptest::prop_assert_eq!(t.check(&bi, false, 0).0, Ok(want));
                }
            }
        }
    }

    #[test]
    fn replay_rebuilds_what_commit_built() {
        let (t, _) = table_with(0, 0, 7, 3);
        let mut r = ProducerTable::new(limits());
        let mut off = 100;
        for i in 0..7 {
            r.replay(&b(0, i * 3, 3), off, false, 0);
            off += 3;
        }
        assert_eq!(r.get(ID), t.get(ID));
        // A stale epoch in the log is ignored, not applied.
        r.replay(&b(-1, 0, 1), 999, false, 0);
        assert_eq!(r.get(ID), t.get(ID));
    }
}
