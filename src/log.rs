//! The partition log: append = validate, write, commit; zero-copy reads;
//! group commit; retention.
//!
//! Invariants:
//! - Appends to one log are serialized by `writer`; the offsets a batch gets
//!   are `[next_offset, next_offset + lastOffsetDelta]`, contiguous with the
//!   previous batch.
//! - A batch becomes visible to readers only once it is completely written
//!   (the segment publishes its committed length last); readers take no lock
//!   the writer waits on, except the instant it takes to clone an `Arc`.
//! - `durable` (under `sync`) is an offset below which every batch is on
//!   stable storage. It is advanced only by a successful fsync that started
//!   after those batches were written. Sealed segments are fsynced when they
//!   are sealed, so only the active segment is fsynced by group commit.
//! - After any failed write or fsync, `poison` is set and every later append,
//!   flush and durable wait fails with [`Error::Poisoned`]; the fsync is never
//!   retried. One exception: a full disk (`ENOSPC`, `EDQUOT`) met while
//!   writing a batch's body or a checkpoint into the active segment, or
//!   while a roll writes index files or creates the next segment. No fsync
//!   failed and nothing acknowledged changed: a batch is written past the
//!   committed length, which moves only once it is whole (its first bytes,
//!   written last, are not such a step: they may complete it); a failed
//!   roll is redone by the next append (sealing is idempotent). Whatever
//!   prefix of a refused batch landed is cut from the file at once (a
//!   failed cut poisons), so no later batch can leave part of it behind to
//!   be read as a batch. A roll whose new segment got no checkpoint leaves
//!   an empty active segment: the next append, a retention pass (before it
//!   deletes the segment holding the last checkpoint) or a clean close
//!   writes it.
//! - Retention deletes only sealed segments, persists the new log start
//!   offset before deleting anything, and readers that still hold a deleted
//!   segment's bytes keep them valid.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::format::checkpoint::{CheckpointEncoder, build_checkpoint_batch};
use crate::format::{
    BatchView, BuiltBatch, Compression, FormatError, FormatErrorKind, TimestampType, peek_batch_len,
};
use crate::producer::{BatchIdent, Fences, Limits, ProducerTable, Rejection, Verdict};
use crate::recovery::{RecoveryReport, recover, recover_producers, write_log_start};
use crate::segment::Segment;
use crate::storage::Storage;
use crate::syncer::Syncer;

/// Batches up to this size are copied into a scratch buffer with their new
/// base offset and written with one `pwrite`; larger ones are written in two
/// pieces to avoid the copy.
const COPY_LIMIT: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an append did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was written at these offsets.
    Appended {
        /// Offset of the batch's first record.
        base_offset: i64,
        /// Offset of the batch's last record.
        last_offset: i64,
    },
    /// The batch (same producer and sequence range, in the same epoch for an
    /// anonymous producer, in any session for a named one) is already in the
    /// log; nothing was written. The offsets are those of the original
    /// write, or both `None` when the original is older than the producer's
    /// window and its offsets are no longer known.
    Duplicate {
        /// Offset of the original's first record, if known.
        base_offset: Option<i64>,
        /// Offset of the original's last record, if known.
        last_offset: Option<i64>,
    },
}

impl AppendOutcome {
    /// Offset of the batch's first record, if known.
    pub fn base_offset(&self) -> Option<i64> {
        match *self {
            AppendOutcome::Appended { base_offset, .. } => Some(base_offset),
            AppendOutcome::Duplicate { base_offset, .. } => base_offset,
        }
    }

    /// Offset of the batch's last record, if known.
    pub fn last_offset(&self) -> Option<i64> {
        match *self {
            AppendOutcome::Appended { last_offset, .. } => Some(last_offset),
            AppendOutcome::Duplicate { last_offset, .. } => last_offset,
        }
    }

    /// True if nothing was written because the batch was already in the log.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, AppendOutcome::Duplicate { .. })
    }
}

/// Producer counters of one log (or, summed, of a store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Idempotent batches appended.
    pub appended: u64,
    /// Retries answered as duplicates (offsets known or not).
    pub duplicates: u64,
    /// Of those, duplicates older than the window (offsets unknown).
    pub duplicates_offsets_unknown: u64,
    /// Batches refused with [`Error::OutOfOrderSequence`].
    pub out_of_order: u64,
    /// Batches refused with [`Error::InvalidProducerEpoch`].
    pub invalid_epoch: u64,
    /// Batches refused with [`Error::ProducerFenced`].
    pub fenced: u64,
    /// Batches refused with [`Error::InvalidRecord`].
    pub invalid_record: u64,
    /// Batches refused with [`Error::TooManyProducers`].
    pub too_many_producers: u64,
    /// Producers dropped after `producer_expiration` of idleness.
    pub expired: u64,
    /// Checkpoints of the producer table written into the log.
    pub checkpoints: u64,
    /// Producers tracked now.
    pub producers: u64,
    /// Approximate memory the producer table takes, in bytes.
    pub table_bytes: u64,
}

impl std::ops::Add for ProducerStats {
    type Output = ProducerStats;
    fn add(self, o: ProducerStats) -> ProducerStats {
        ProducerStats {
            appended: self.appended + o.appended,
            duplicates: self.duplicates + o.duplicates,
            duplicates_offsets_unknown: self.duplicates_offsets_unknown
                + o.duplicates_offsets_unknown,
            out_of_order: self.out_of_order + o.out_of_order,
            invalid_epoch: self.invalid_epoch + o.invalid_epoch,
            fenced: self.fenced + o.fenced,
            invalid_record: self.invalid_record + o.invalid_record,
            too_many_producers: self.too_many_producers + o.too_many_producers,
            expired: self.expired + o.expired,
            checkpoints: self.checkpoints + o.checkpoints,
            producers: self.producers + o.producers,
            table_bytes: self.table_bytes + o.table_bytes,
        }
    }
}

/// One batch of a producer's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerBatch {
    /// Sequence of the first record.
    pub first_sequence: i32,
    /// Sequence of the last record.
    pub last_sequence: i32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
}

/// What a log knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerInfo {
    /// The producer id.
    pub producer_id: i64,
    /// The name, for a named producer.
    pub name: Option<String>,
    /// The epoch of its last batch here.
    pub epoch: i16,
    /// Sequence of its last record here.
    pub last_sequence: Option<i32>,
    /// Its last append here, engine clock, ms since the Unix epoch (for
    /// batches replayed at open: the time of the open).
    pub last_append_ms: i64,
    /// Its last batches here (the duplicate-detection window), oldest first.
    pub batches: Vec<ProducerBatch>,
}

#[derive(Debug, Default)]
struct ProducerCounters {
    appended: AtomicU64,
    duplicates: AtomicU64,
    duplicates_offsets_unknown: AtomicU64,
    out_of_order: AtomicU64,
    invalid_epoch: AtomicU64,
    fenced: AtomicU64,
    invalid_record: AtomicU64,
    too_many_producers: AtomicU64,
    expired: AtomicU64,
    checkpoints: AtomicU64,
    producers: AtomicUsize,
}

/// The future of [`Log::append_async`]: resolves to the append's outcome
/// once the batch is durable as asked.
#[derive(Debug)]
#[must_use = "the append is written, but only the future says when it is durable"]
pub struct AppendFuture {
    log: Log,
    state: FutureState,
}

#[derive(Debug)]
enum FutureState {
    Waiting { outcome: AppendOutcome, end: i64 },
    Done(AppendOutcome),
    Failed(Error),
    Taken,
}

impl AppendFuture {
    /// The log the batch was appended to.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl Future for AppendFuture {
    type Output = Result<AppendOutcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let FutureState::Waiting { end, .. } = this.state {
            match this.log.poll_durable(end, cx.waker()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => this.state = FutureState::Failed(e),
                Poll::Ready(Ok(())) => {}
            }
        }
        match std::mem::replace(&mut this.state, FutureState::Taken) {
            FutureState::Waiting { outcome, .. } | FutureState::Done(outcome) => {
                Poll::Ready(Ok(outcome))
            }
            FutureState::Failed(e) => Poll::Ready(Err(e)),
            FutureState::Taken => Poll::Ready(Err(Error::Closed {
                what: "an append future polled after it completed".into(),
            })),
        }
    }
}

/// Counts a thread in a section (an append, a durability wait) for as long
/// as it lives.
pub(crate) struct CountGuard<'a>(&'a AtomicUsize);

impl<'a> CountGuard<'a> {
    fn enter(count: &'a AtomicUsize) -> CountGuard<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        CountGuard(count)
    }
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counters of one log, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// Batches appended since the log was opened.
    pub appends: u64,
    /// `fdatasync` calls issued by group commit and flushes (rolls excluded).
    pub fsyncs: u64,
    /// Segments in the log.
    pub segments: usize,
    /// Bytes in the log's segments.
    pub bytes: u64,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

/// Wakes the store's background thread when a log needs an interval flush.
#[derive(Debug, Default)]
pub(crate) struct Waker {
    pub state: Mutex<WakerState>,
    pub cv: Condvar,
}

#[derive(Debug, Default)]
pub(crate) struct WakerState {
    pub stop: bool,
    pub woken: bool,
}

impl Waker {
    pub(crate) fn wake(&self) {
        lock(&self.state).woken = true;
        self.cv.notify_all();
    }
}

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    scratch: Vec<u8>,
    producers: ProducerTable,
    checkpoint: CheckpointState,
}

/// When the next producer-state checkpoint is due.
#[derive(Debug, Default)]
struct CheckpointState {
    /// The log has (or had) producer state: every new segment starts with a
    /// checkpoint.
    enabled: bool,
    /// The table changed since the last checkpoint.
    dirty: bool,
    /// Data bytes appended since the last checkpoint.
    bytes_since: u64,
    /// Size of the last checkpoint batch.
    last_len: u64,
    /// Bytes of checkpoints in the active segment (`segment_bytes` limits the
    /// data; checkpoints come on top).
    in_segment: u64,
}

#[derive(Debug)]
struct SyncState {
    durable: i64,
    syncing: bool,
    /// Earliest time by which an interval append wants its bytes synced.
    deadline: Option<Instant>,
    /// Tasks waiting for an asynchronous append to become durable; woken
    /// (all of them) after each round of the store's sync threads.
    wakers: Vec<std::task::Waker>,
    /// A sync thread has been asked for a round and has not started it.
    queued: bool,
}

#[derive(Debug)]
pub(crate) struct LogInner {
    topic: String,
    partition: u32,
    name: String,
    dir: PathBuf,
    config: Arc<Config>,
    storage: Arc<dyn Storage>,
    writer: Mutex<Writer>,
    /// The active segment, for the group-commit leader (which must not take
    /// `writer`: a roll holds `writer` while it waits for the leader).
    active: Mutex<Arc<Segment>>,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    next_offset: AtomicI64,
    log_start: AtomicI64,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    poison: OnceLock<String>,
    closed: AtomicBool,
    appends: AtomicU64,
    fsyncs: AtomicU64,
    /// Threads appending (writing or waiting for durability): see
    /// `enter_append`.
    appenders: AtomicUsize,
    /// Threads inside `wait_durable` (a leader and its followers).
    durable_waiters: AtomicUsize,
    recovery: RecoveryReport,
    fences: Arc<Fences>,
    counters: ProducerCounters,
    waker: Arc<Waker>,
    syncer: Arc<Syncer>,
    /// The store was dropped without `close`: asynchronous appends still
    /// waiting for durability fail instead of waiting for ever.
    abandoned: AtomicBool,
    /// The store's directory lock: held while any handle or read result of
    /// this log lives, so that no other opener can change its files under
    /// bytes lent from them.
    dir_lock: DirLock,
}

/// A shared hold on a store's directory lock.
pub(crate) type DirLock = Arc<dyn std::any::Any + Send + Sync>;

/// What every log of a store shares with the store.
#[derive(Debug, Clone)]
pub(crate) struct LogEnv {
    pub storage: Arc<dyn Storage>,
    pub config: Arc<Config>,
    pub waker: Arc<Waker>,
    pub syncer: Arc<Syncer>,
    pub dir_lock: DirLock,
    pub fences: Arc<Fences>,
}

/// One topic-partition: an append-only sequence of Kafka v2 record batches.
///
/// Cheap to clone (`Arc` inside), `Send + Sync`: share it between threads.
/// Appends are serialized per log; reads never wait for appends.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

impl Log {
    pub(crate) fn open(env: &LogEnv, dir: PathBuf, topic: String, partition: u32) -> Result<Log> {
        let LogEnv {
            storage,
            config,
            waker,
            syncer,
            dir_lock,
            fences,
        } = env.clone();
        let recovered = recover(storage.as_ref(), &dir, &config)?;
        let mut report = recovered.report;
        let name = format!("{topic}-{partition}");
        let mut producers = ProducerTable::new(Limits {
            window: config.producer_window,
            max_producers: config.max_producers,
            expiration_ms: i64::try_from(config.producer_expiration.as_millis())
                .unwrap_or(i64::MAX),
            require_sequence_zero: config.require_sequence_zero,
        });
        let started = Instant::now();
        let loaded = recover_producers(
            &recovered.segments,
            &recovered.active_controls,
            &mut producers,
            &|id| fences.epoch(id).is_some(),
            config.clock.now_ms(),
            config.recovery_mode == crate::config::RecoveryMode::TruncateAtCorruption,
        )?;
        report.checkpoint_offset = loaded.checkpoint_offset;
        report.batches_replayed = loaded.batches_replayed;
        report.producers = producers.len();
        report.duration += started.elapsed();
        let counters = ProducerCounters::default();
        counters
            .expired
            .store(loaded.expired as u64, Ordering::Relaxed);
        counters.producers.store(producers.len(), Ordering::Relaxed);
        // Checkpoint bytes in the active segment, which `segment_bytes` does
        // not count.
        let mut in_segment = 0u64;
        if let Some(active) = recovered.segments.last()
            && !recovered.active_controls.is_empty()
        {
            let data = active.bytes_from(0)?;
            for &pos in &recovered.active_controls {
                let at = usize::try_from(pos).unwrap_or(usize::MAX);
                in_segment += data.get(at..).and_then(peek_batch_len).unwrap_or(0) as u64;
            }
        }
        let checkpoint = CheckpointState {
            enabled: loaded.checkpoint_offset.is_some() || !producers.is_empty(),
            // Replayed batches (or expiries) are not in any checkpoint yet.
            dirty: loaded.batches_replayed > 0 || loaded.expired > 0,
            bytes_since: loaded.bytes_replayed,
            last_len: loaded.checkpoint_len,
            in_segment,
        };
        if report.bytes_truncated > 0 || report.indexes_rebuilt > 0 || report.segments_deleted > 0 {
            tracing::info!(log = %name, ?report, "recovered log");
        } else {
            tracing::debug!(log = %name, ?report, "opened log");
        }
        let active = Arc::clone(
            recovered
                .segments
                .last()
                .expect("recovery leaves a segment"),
        );
        let next = active.next_offset();
        let inner = LogInner {
            topic,
            partition,
            name,
            dir,
            config,
            storage,
            writer: Mutex::new(Writer {
                active: Arc::clone(&active),
                scratch: Vec::new(),
                producers,
                checkpoint,
            }),
            active: Mutex::new(active),
            segments: RwLock::new(Arc::new(recovered.segments)),
            next_offset: AtomicI64::new(next),
            log_start: AtomicI64::new(recovered.log_start),
            sync: Mutex::new(SyncState {
                // Recovery fsynced the active segment and the directory after
                // reading them (through the page cache), so what it kept is
                // durable, unless an earlier fsync failure in this boot made
                // the kernel drop dirty pages it still serves (docs/durability.md).
                durable: next,
                syncing: false,
                deadline: None,
                wakers: Vec::new(),
                queued: false,
            }),
            sync_cv: Condvar::new(),
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
            appends: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            appenders: AtomicUsize::new(0),
            durable_waiters: AtomicUsize::new(0),
            recovery: report,
            fences,
            counters,
            waker,
            syncer,
            abandoned: AtomicBool::new(false),
            dir_lock,
        };
        Ok(Log {
            inner: Arc::new(inner),
        })
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The partition number.
    pub fn partition(&self) -> u32 {
        self.inner.partition
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The offset the next appended record gets (the log end offset).
    pub fn next_offset(&self) -> i64 {
        self.inner.next_offset.load(Ordering::Acquire)
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start.load(Ordering::Acquire)
    }

    /// Every record below this offset is on stable storage.
    pub fn durable_offset(&self) -> i64 {
        lock(&self.inner.sync).durable
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Counters for monitoring and tests.
    pub fn stats(&self) -> LogStats {
        let segs = self.segments();
        LogStats {
            appends: self.inner.appends.load(Ordering::Relaxed),
            fsyncs: self.inner.fsyncs.load(Ordering::Relaxed),
            segments: segs.len(),
            bytes: segs.iter().map(|s| s.committed_len()).sum(),
        }
    }

    /// Append one Kafka v2 record batch with the store's default durability.
    /// The engine assigns its offsets (rewriting `baseOffset`, which lies
    /// outside the CRC); everything else is stored byte for byte.
    ///
    /// A batch with a producer id (an idempotent batch) is first checked
    /// against the producer's state in this partition, atomically with the
    /// write: a retry of a batch already in the log is answered as
    /// [`AppendOutcome::Duplicate`] without writing anything; sequence and
    /// epoch violations are errors (docs/semantics.md). A duplicate's answer
    /// obeys the durability too: under `Sync` it returns once the original
    /// is durable.
    pub fn append(&self, batch: &[u8]) -> Result<AppendOutcome> {
        self.append_with(batch, self.inner.config.durability)
    }

    /// Append with an explicit durability for this one batch.
    pub fn append_with(&self, batch: &[u8], durability: Durability) -> Result<AppendOutcome> {
        let _appender = self.enter_append();
        let (outcome, end) = self.write(batch)?;
        self.after_write(end, durability)?;
        Ok(outcome)
    }

    /// Append a batch made by [`BatchBuilder::finish`], with the store's
    /// durability. The same as [`append`](Self::append) but for the checks
    /// the builder already guarantees: the CRC is not recomputed and the
    /// records are not decoded again (for small records that is most of an
    /// append's CPU time). Everything else is checked as for any batch.
    ///
    /// [`BatchBuilder::finish`]: crate::format::BatchBuilder::finish
    pub fn append_built(&self, batch: &BuiltBatch) -> Result<AppendOutcome> {
        self.append_built_with(batch, self.inner.config.durability)
    }

    /// [`append_built`](Self::append_built) with an explicit durability.
    pub fn append_built_with(
        &self,
        batch: &BuiltBatch,
        durability: Durability,
    ) -> Result<AppendOutcome> {
        let _appender = self.enter_append();
        let (outcome, end) = self.write_built(batch)?;
        self.after_write(end, durability)?;
        Ok(outcome)
    }

    /// Append without blocking on durability: the batch is checked and
    /// written now (as [`append`](Self::append) does, a `pwrite` into the
    /// page cache), and the returned future resolves once the batch is as
    /// durable as `durability` asks, with the same outcome `append_with`
    /// returns. Under `Sync` the fsync runs on one of the store's sync
    /// threads and joins the group commit, so an async task (a tokio
    /// worker, say) never blocks on it; other durabilities resolve at once.
    ///
    /// The future owns a handle to the log (it is `'static`, `Send` and
    /// `Unpin`). An error of the check or the write comes out of the future
    /// too. If the store is dropped without [`Store::close`] while the
    /// batch is not yet durable, the future fails with `Error::Closed`:
    /// the batch may or may not survive (a retry of an idempotent batch
    /// sorts it out). After `close` every future resolves.
    ///
    /// [`Store::close`]: crate::Store::close
    pub fn append_async(&self, batch: &[u8], durability: Durability) -> AppendFuture {
        let state = match self.write(batch) {
            Err(e) => FutureState::Failed(e),
            Ok((outcome, end)) => match durability {
                Durability::Sync => FutureState::Waiting { outcome, end },
                other => match self.after_write(end, other) {
                    Ok(()) => FutureState::Done(outcome),
                    Err(e) => FutureState::Failed(e),
                },
            },
        };
        AppendFuture {
            log: self.clone(),
            state,
        }
    }

    /// Ready when everything below `end` is durable (or can no longer
    /// become so); otherwise registers `waker` and asks a sync thread for a
    /// round.
    fn poll_durable(&self, end: i64, waker: &std::task::Waker) -> Poll<Result<()>> {
        let inner = &*self.inner;
        let mut st = lock(&inner.sync);
        if st.durable >= end {
            return Poll::Ready(Ok(()));
        }
        if let Err(e) = self.check_poison() {
            return Poll::Ready(Err(e));
        }
        if inner.abandoned.load(Ordering::Acquire) {
            return Poll::Ready(Err(Error::Closed {
                what: format!(
                    "log {} (its store was dropped without close before the append was durable)",
                    inner.name
                ),
            }));
        }
        if !st.wakers.iter().any(|w| w.will_wake(waker)) {
            st.wakers.push(waker.clone());
        }
        let request = !st.queued;
        st.queued = true;
        drop(st);
        if request {
            inner.syncer.request(self.clone());
        }
        Poll::Pending
    }

    /// A sync thread's round: make everything written so far durable (as a
    /// group-commit leader or follower), then wake every waiting task.
    pub(crate) fn sync_for_waiters(&self) {
        let inner = &*self.inner;
        // Cleared before the end is noted: an append after this point asks
        // for a round of its own.
        lock(&inner.sync).queued = false;
        let target = inner.next_offset.load(Ordering::Acquire);
        if let Err(e) = self.wait_durable(target) {
            tracing::debug!(log = %inner.name, error = %e, "sync for asynchronous appends failed");
        }
        let wakers = std::mem::take(&mut lock(&inner.sync).wakers);
        // Woken outside the lock: a waker may poll at once.
        for w in wakers {
            w.wake();
        }
    }

    /// The store was dropped without `close`: fail the asynchronous appends
    /// still waiting for durability.
    pub(crate) fn abandon(&self) {
        self.inner.abandoned.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut lock(&self.inner.sync).wakers);
        for w in wakers {
            w.wake();
        }
    }

    /// Count the caller as an appender of this log until the guard drops
    /// (group commit lets appenders that are about to write join an fsync);
    /// for callers of [`write`](Self::write) and [`complete`](Self::complete).
    pub(crate) fn enter_append(&self) -> CountGuard<'_> {
        CountGuard::enter(&self.inner.appenders)
    }

    /// Validate and write a batch without waiting for durability. Returns
    /// the outcome and the offset below which everything must be durable
    /// before the outcome may be reported as durable.
    pub(crate) fn write(&self, batch: &[u8]) -> Result<(AppendOutcome, i64)> {
        let view = self.check_batch(batch, false)?;
        self.write_batch(batch, &view)
    }

    /// [`write`](Self::write) for a batch our builder made.
    pub(crate) fn write_built(&self, batch: &BuiltBatch) -> Result<(AppendOutcome, i64)> {
        let bytes = batch.as_bytes();
        let view = self.check_batch(bytes, true)?;
        self.write_batch(bytes, &view)
    }

    /// Wait for `end` as `durability` requires (after [`Log::write`]).
    pub(crate) fn complete(&self, end: i64, durability: Durability) -> Result<()> {
        self.after_write(end, durability)
    }

    /// Wait until no append holds the writer lock (after a fence moved, so
    /// that no append checked against the old fence is still in flight).
    pub(crate) fn barrier(&self) {
        drop(lock(&self.inner.writer));
    }

    fn invalid(&self, kind: FormatErrorKind, position: usize) -> Error {
        Error::InvalidBatch {
            log: self.inner.name.clone(),
            source: FormatError { kind, position },
        }
    }

    /// The checks of an append; `built`: the batch comes from our builder,
    /// whose CRC and records need no second look.
    fn check_batch<'a>(&self, batch: &'a [u8], built: bool) -> Result<BatchView<'a>> {
        self.check_open()?;
        let max = self.inner.config.max_batch_bytes;
        if batch.len() > max {
            return Err(Error::BatchTooLarge {
                log: self.inner.name.clone(),
                size: batch.len(),
                max,
            });
        }
        let parsed = if built {
            BatchView::parse_header_only(batch)
        } else {
            BatchView::parse(batch)
        };
        let view = parsed.map_err(|source| Error::InvalidBatch {
            log: self.inner.name.clone(),
            source,
        })?;
        if view.total_len() != batch.len() {
            return Err(self.invalid(
                FormatErrorKind::BadRecord {
                    detail: "bytes after the end of the batch",
                },
                view.total_len(),
            ));
        }
        if view.is_control() {
            return Err(self.invalid(
                FormatErrorKind::BadRecord {
                    detail: "control batches are written by the engine only",
                },
                21,
            ));
        }
        if view.last_offset_delta() < 0 || view.record_count() < 1 {
            return Err(self.invalid(FormatErrorKind::EmptyBatch, 57));
        }
        if view.is_transactional() {
            // Without a transaction coordinator and markers, a transactional
            // batch would stay "open" for ever in Kafka's read_committed view.
            return Err(Error::Unsupported {
                what: format!(
                    "transactional batch appended to {} (producer {}): oncelog has no transactions; use an idempotent producer",
                    self.inner.name,
                    view.producer_id()
                ),
            });
        }
        if let Compression::Unknown(codec) = view.compression() {
            return Err(self.invalid(FormatErrorKind::UnsupportedCompression { codec }, 21));
        }
        if self.inner.config.validate_records && !built {
            view.validate_records()
                .map_err(|source| Error::InvalidBatch {
                    log: self.inner.name.clone(),
                    source,
                })?;
        }
        Ok(view)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                what: format!("log {}", self.inner.name),
            });
        }
        if let Some(cause) = self.inner.poison.get() {
            return Err(Error::Poisoned {
                log: self.inner.name.clone(),
                cause: cause.clone(),
            });
        }
        Ok(())
    }

    fn poison(&self, err: &Error) {
        let _ = self.inner.poison.set(err.to_string());
        tracing::error!(log = %self.inner.name, error = %err, "log poisoned: refusing writes until reopened");
        lock(&self.inner.sync).deadline = None;
        self.inner.sync_cv.notify_all();
    }

    /// Run `f`; if it fails, poison the log (but for a full disk met while
    /// writing into the active segment: see the module invariants).
    fn or_poison<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        f().inspect_err(|e| {
            if e.is_full_disk_before_sync() {
                tracing::warn!(log = %self.inner.name, error = %e, "disk full: append refused, log unchanged");
            } else {
                self.poison(e);
            }
        })
    }

    fn write_batch(&self, batch: &[u8], view: &BatchView<'_>) -> Result<(AppendOutcome, i64)> {
        let inner = &*self.inner;
        let mut w = lock(&inner.writer);
        self.check_open()?;
        let ident = view.has_producer_id().then(|| BatchIdent {
            producer_id: view.producer_id(),
            epoch: view.producer_epoch(),
            base_seq: view.base_sequence(),
            delta: view.last_offset_delta(),
        });
        let mut named = false;
        let now = if ident.is_some() {
            inner.config.clock.now_ms()
        } else {
            0
        };
        if let Some(b) = &ident {
            if let Some(current) = inner.fences.epoch(b.producer_id) {
                named = true;
                if b.epoch != current {
                    let name = inner.fences.get(b.producer_id).map(|(n, _)| n);
                    return Err(self.fence_error(b, name.as_deref().unwrap_or(""), current));
                }
            }
            let (verdict, expired) = w.producers.check(b, named, now);
            if expired > 0 {
                self.on_expired(&mut w, expired);
            }
            match verdict {
                Ok(Verdict::Append) => {}
                Ok(Verdict::Duplicate {
                    base_offset,
                    last_offset,
                }) => {
                    bump(&inner.counters.duplicates, 1);
                    let outcome = AppendOutcome::Duplicate {
                        base_offset: Some(base_offset),
                        last_offset: Some(last_offset),
                    };
                    return Ok((outcome, last_offset + 1));
                }
                Ok(Verdict::DuplicateUnknownOffsets) => {
                    bump(&inner.counters.duplicates, 1);
                    bump(&inner.counters.duplicates_offsets_unknown, 1);
                    let outcome = AppendOutcome::Duplicate {
                        base_offset: None,
                        last_offset: None,
                    };
                    // The original lies somewhere before: wait for all of it.
                    return Ok((outcome, inner.next_offset.load(Ordering::Acquire)));
                }
                Err(r) => return Err(self.rejection(b, r)),
            }
        }
        let len = batch.len() as u64;
        let delta = i64::from(view.last_offset_delta());
        // The last offset this append may take: a checkpoint (if the log
        // keeps producer state), then the batch.
        let checkpoint_slot =
            i64::from(ident.is_some() || w.checkpoint.enabled || !w.producers.is_empty());
        let end = inner
            .next_offset
            .load(Ordering::Acquire)
            .checked_add(delta + checkpoint_slot)
            .filter(|l| *l < i64::MAX)
            .ok_or_else(|| {
                self.invalid(
                    FormatErrorKind::BadRecord {
                        detail: "the log's offsets would pass i64::MAX",
                    },
                    23,
                )
            })?;
        let active = &w.active;
        let committed = active.committed_len();
        // Due by the interval, for a producer that expired since the last
        // one, or as the first batch of a segment (recovery may leave an
        // empty one) in a log with producer state.
        let checkpoint_first = self.checkpoint_due(&w)
            || ident.is_some_and(|b| w.producers.expired_recently(b.producer_id))
            || (committed == 0 && (w.checkpoint.enabled || !w.producers.is_empty()));
        let pending = if checkpoint_first {
            w.checkpoint.last_len
        } else {
            0
        };
        // `segment_bytes` bounds the data; file positions must fit the
        // 32-bit index entries.
        let full = committed > 0
            && (committed.saturating_sub(w.checkpoint.in_segment) + len
                > inner.config.segment_bytes
                || committed + pending + len > u64::from(u32::MAX)
                || end - active.base_offset > i64::from(i32::MAX));
        if full {
            self.or_poison(|| self.roll(&mut w))?;
        } else if checkpoint_first {
            self.or_poison(|| self.write_checkpoint(&mut w))?;
        }
        let base = inner.next_offset.load(Ordering::Acquire);
        let last = base + delta;
        let interval = u64::from(inner.config.index_interval_bytes);
        let prealloc = inner.config.preallocate_bytes;
        let max_ts = view.max_timestamp();
        let offset_bytes = base.to_be_bytes();
        let Writer {
            active,
            scratch,
            producers,
            checkpoint,
        } = &mut *w;
        self.or_poison(|| {
            if batch.len() <= COPY_LIMIT {
                scratch.clear();
                scratch.extend_from_slice(batch);
                scratch[..8].copy_from_slice(&offset_bytes);
                active.append(&[scratch], base, last, max_ts, interval, prealloc)
            } else {
                active.append(
                    &[&offset_bytes, &batch[8..]],
                    base,
                    last,
                    max_ts,
                    interval,
                    prealloc,
                )
            }
        })?;
        inner.next_offset.store(last + 1, Ordering::Release);
        inner.appends.fetch_add(1, Ordering::Relaxed);
        checkpoint.bytes_since += len;
        if let Some(b) = &ident {
            // The state changes only now that the bytes are in the log.
            producers.commit(b, base, named, now);
            checkpoint.dirty = true;
            checkpoint.enabled = true;
            bump(&inner.counters.appended, 1);
            inner
                .counters
                .producers
                .store(producers.len(), Ordering::Relaxed);
        }
        let outcome = AppendOutcome::Appended {
            base_offset: base,
            last_offset: last,
        };
        Ok((outcome, last + 1))
    }

    fn on_expired(&self, w: &mut Writer, n: usize) {
        bump(&self.inner.counters.expired, n as u64);
        w.checkpoint.dirty = true;
        self.count_producers(w);
    }

    fn count_producers(&self, w: &Writer) {
        self.inner
            .counters
            .producers
            .store(w.producers.len(), Ordering::Relaxed);
    }

    fn fence_error(&self, b: &BatchIdent, name: &str, current: i16) -> Error {
        let inner = &*self.inner;
        // Named epochs wrap from i16::MAX to 0: "older" is up to half the
        // epoch space behind the current one.
        let behind = (i32::from(current) - i32::from(b.epoch)).rem_euclid(1 << 15);
        if (1..=1 << 14).contains(&behind) {
            bump(&inner.counters.fenced, 1);
            Error::ProducerFenced {
                log: inner.name.clone(),
                name: name.to_string(),
                producer_id: b.producer_id,
                epoch: b.epoch,
                current_epoch: current,
                sequence: b.base_seq,
            }
        } else {
            self.invalid_epoch_error(b, current)
        }
    }

    fn invalid_epoch_error(&self, b: &BatchIdent, current: i16) -> Error {
        bump(&self.inner.counters.invalid_epoch, 1);
        Error::InvalidProducerEpoch {
            log: self.inner.name.clone(),
            producer_id: b.producer_id,
            epoch: b.epoch,
            current_epoch: current,
            sequence: b.base_seq,
        }
    }

    fn rejection(&self, b: &BatchIdent, r: Rejection) -> Error {
        let inner = &*self.inner;
        let log = inner.name.clone();
        match r {
            Rejection::InvalidRecord { detail } => {
                bump(&inner.counters.invalid_record, 1);
                Error::InvalidRecord {
                    log,
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    sequence: b.base_seq,
                    detail,
                }
            }
            Rejection::OutOfOrder { expected } => {
                bump(&inner.counters.out_of_order, 1);
                Error::OutOfOrderSequence {
                    log,
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    expected,
                    received: b.base_seq,
                    received_last: b.last_seq(),
                }
            }
            Rejection::StaleEpoch { current } => self.invalid_epoch_error(b, current),
            Rejection::TooManyProducers { max } => {
                bump(&inner.counters.too_many_producers, 1);
                Error::TooManyProducers {
                    log,
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    sequence: b.base_seq,
                    max,
                }
            }
        }
    }

    fn checkpoint_due(&self, w: &Writer) -> bool {
        let c = &w.checkpoint;
        c.dirty
            && c.bytes_since
                >= self
                    .inner
                    .config
                    .checkpoint_interval_bytes
                    .max(2 * c.last_len)
    }

    /// Write the producer table into the log as a checkpoint batch (writer
    /// lock held). The checkpoint describes every batch before it.
    fn write_checkpoint(&self, w: &mut Writer) -> Result<()> {
        let inner = &*self.inner;
        let now = inner.config.clock.now_ms();
        let expired = w.producers.expire(now);
        if expired > 0 {
            self.on_expired(w, expired);
        }
        let mut enc = CheckpointEncoder::new(now, w.producers.len());
        for (id, e) in w.producers.iter() {
            enc.push(id, e.epoch, e.last_append_ms, e.window.iter().copied());
        }
        let mut batch = build_checkpoint_batch(&enc.finish()).map_err(|e| Error::Unsupported {
            what: format!(
                "a producer checkpoint of {} producers for {}: {e}",
                w.producers.len(),
                inner.name
            ),
        })?;
        let base = inner.next_offset.load(Ordering::Acquire);
        batch[..8].copy_from_slice(&base.to_be_bytes());
        let interval = u64::from(inner.config.index_interval_bytes);
        w.active.append(
            &[&batch],
            base,
            base,
            crate::format::batch::NO_TIMESTAMP,
            interval,
            inner.config.preallocate_bytes,
        )?;
        inner.next_offset.store(base + 1, Ordering::Release);
        let c = &mut w.checkpoint;
        c.bytes_since = 0;
        c.last_len = batch.len() as u64;
        c.dirty = false;
        c.enabled = true;
        c.in_segment += batch.len() as u64;
        w.producers.checkpointed();
        bump(&inner.counters.checkpoints, 1);
        tracing::debug!(log = %inner.name, offset = base, bytes = batch.len(), producers = w.producers.len(), "wrote producer checkpoint");
        Ok(())
    }

    /// Write a producer-state checkpoint now if the table changed since the
    /// last one (so that the next open replays nothing).
    pub fn checkpoint(&self) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.check_open()?;
        self.checkpoint_locked(&mut w)
    }

    fn checkpoint_locked(&self, w: &mut Writer) -> Result<()> {
        // An empty active segment of a log with state (a roll whose
        // checkpoint write failed, or a crash right after a roll) gets its
        // first checkpoint even if the table did not change.
        let empty =
            w.active.committed_len() == 0 && (w.checkpoint.enabled || !w.producers.is_empty());
        if !w.checkpoint.dirty && !empty {
            return Ok(());
        }
        let next = self.inner.next_offset.load(Ordering::Acquire);
        if w.active.committed_len() > 0
            && (w.active.committed_len() + w.checkpoint.last_len > u64::from(u32::MAX)
                || next - w.active.base_offset >= i64::from(i32::MAX))
        {
            // Positions and offsets must fit the index (as for appends): the
            // roll writes the checkpoint at the start of the next segment.
            return self.or_poison(|| self.roll(w));
        }
        self.or_poison(|| self.write_checkpoint(w))
    }

    /// At clean close (the log is already marked closed): checkpoint if the
    /// table changed, unless the log is poisoned.
    pub(crate) fn checkpoint_at_close(&self) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.check_poison()?;
        self.checkpoint_locked(&mut w)
    }

    /// Drop producers idle longer than `producer_expiration`; returns how many.
    pub fn expire_producers(&self) -> usize {
        let mut w = lock(&self.inner.writer);
        let n = w.producers.expire(self.inner.config.clock.now_ms());
        if n > 0 {
            self.on_expired(&mut w, n);
            tracing::info!(log = %self.inner.name, expired = n, "expired idle producers");
        }
        n
    }

    /// What this log knows about every producer, ordered by id.
    pub fn producers(&self) -> Vec<ProducerInfo> {
        let w = lock(&self.inner.writer);
        w.producers
            .sorted()
            .into_iter()
            .map(|(id, e)| self.producer_info(id, e))
            .collect()
    }

    /// What this log knows about one producer.
    pub fn producer(&self, producer_id: i64) -> Option<ProducerInfo> {
        let w = lock(&self.inner.writer);
        w.producers
            .get(producer_id)
            .map(|e| self.producer_info(producer_id, e))
    }

    fn producer_info(&self, id: i64, e: &crate::producer::Entry) -> ProducerInfo {
        ProducerInfo {
            producer_id: id,
            name: self.inner.fences.get(id).map(|(n, _)| n.to_string()),
            epoch: e.epoch,
            last_sequence: e.window.back().map(|m| m.last_seq),
            last_append_ms: e.last_append_ms,
            batches: e
                .window
                .iter()
                .map(|m| ProducerBatch {
                    first_sequence: m.first_seq(),
                    last_sequence: m.last_seq,
                    base_offset: m.first_offset(),
                    last_offset: m.last_offset,
                })
                .collect(),
        }
    }

    /// Producer counters of this log.
    pub fn producer_stats(&self) -> ProducerStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let producers = c.producers.load(Ordering::Relaxed) as u64;
        let per = crate::producer::bytes_per_producer(self.inner.config.producer_window) as u64;
        ProducerStats {
            appended: get(&c.appended),
            duplicates: get(&c.duplicates),
            duplicates_offsets_unknown: get(&c.duplicates_offsets_unknown),
            out_of_order: get(&c.out_of_order),
            invalid_epoch: get(&c.invalid_epoch),
            fenced: get(&c.fenced),
            invalid_record: get(&c.invalid_record),
            too_many_producers: get(&c.too_many_producers),
            expired: get(&c.expired),
            checkpoints: get(&c.checkpoints),
            producers,
            table_bytes: producers * per,
        }
    }

    fn after_write(&self, end: i64, durability: Durability) -> Result<()> {
        match durability {
            Durability::Sync => self.wait_durable(end),
            Durability::Interval(d) => {
                let now = Instant::now();
                // An interval too long to represent never comes due.
                let Some(due) = now.checked_add(d) else {
                    return Ok(());
                };
                let mut st = lock(&self.inner.sync);
                // Replace a deadline that passed (its flush is running or ran
                // without covering this append) so that this one is not lost.
                if st.durable < end && st.deadline.is_none_or(|t| due < t || t <= now) {
                    st.deadline = Some(due);
                    drop(st);
                    self.inner.waker.wake();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Seal the active segment and start a new one (writer lock held).
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let inner = &*self.inner;
        let old = Arc::clone(&w.active);
        // The seal's fsync takes part in the group-commit protocol, so that it
        // never runs concurrently with a leader's fsync of the same file: the
        // kernel reports a writeback error to one fsync caller only.
        self.exclusive_sync(|| old.seal(inner.storage.as_ref()))?;
        let new = Arc::new(Segment::create(
            inner.storage.as_ref(),
            &inner.dir,
            old.next_offset(),
        )?);
        inner
            .storage
            .sync_dir(&inner.dir)
            .map_err(|e| Error::io("fsync directory", &inner.dir, e))?;
        {
            let mut segs = inner
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut v = Vec::with_capacity(segs.len() + 1);
            v.extend(segs.iter().cloned());
            v.push(Arc::clone(&new));
            *segs = Arc::new(v);
        }
        {
            // Every segment before the new one is sealed and fsynced.
            let mut st = lock(&inner.sync);
            if inner.poison.get().is_none() {
                st.durable = st.durable.max(new.base_offset);
            }
        }
        tracing::debug!(log = %inner.name, base_offset = new.base_offset, "rolled to a new segment");
        *lock(&inner.active) = Arc::clone(&new);
        w.active = new;
        w.checkpoint.in_segment = 0;
        if w.checkpoint.enabled || !w.producers.is_empty() {
            // The first batch of every segment: recovery starts from here.
            self.write_checkpoint(w)?;
        }
        if inner.config.retention_bytes.is_some() || inner.config.retention.is_some() {
            // Cheap when nothing is due; the writer lock is already held.
            if let Err(e) = self.retention_locked(w) {
                tracing::warn!(log = %inner.name, error = %e, "retention after roll failed");
            }
        }
        Ok(())
    }

    /// Run `f` (an fsync) while no group-commit fsync is in flight, and keep
    /// any from starting until it is done.
    /// A failure poisons the log before the next fsync may start.
    fn exclusive_sync<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let inner = &*self.inner;
        let mut st = lock(&inner.sync);
        while st.syncing {
            st = inner
                .sync_cv
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // A failed fsync may have consumed the error of bytes that a new
        // fsync would now report as synced: once poisoned, never sync again.
        self.check_poison()?;
        st.syncing = true;
        drop(st);
        let out = f();
        let mut st = lock(&inner.sync);
        if let Err(e) = &out
            && !e.is_full_disk_before_sync()
        {
            let _ = inner.poison.set(e.to_string());
            st.deadline = None;
        }
        st.syncing = false;
        drop(st);
        inner.sync_cv.notify_all();
        out
    }

    fn check_poison(&self) -> Result<()> {
        match self.inner.poison.get() {
            Some(cause) => Err(Error::Poisoned {
                log: self.inner.name.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Wait until every offset below `end` is durable, fsyncing as the group
    /// leader if nobody else is.
    fn wait_durable(&self, end: i64) -> Result<()> {
        let inner = &*self.inner;
        let _waiter = CountGuard::enter(&inner.durable_waiters);
        let mut st = lock(&inner.sync);
        loop {
            if st.durable >= end {
                return Ok(());
            }
            self.check_poison()?;
            if st.syncing {
                st = inner
                    .sync_cv
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.syncing = true;
            drop(st);
            self.gather_appenders();
            // Everything below `target` is written, in the segment read next
            // or in an earlier one, which a roll sealed (and fsynced) before it
            // published its successor as the active segment.
            let target = inner.next_offset.load(Ordering::Acquire);
            let active = Arc::clone(&lock(&inner.active));
            let result = active
                .file
                .sync_data()
                .map_err(|e| Error::io("fsync segment", &active.path, e));
            inner.fsyncs.fetch_add(1, Ordering::Relaxed);
            st = lock(&inner.sync);
            // Poison before releasing `syncing`: the kernel reports a writeback
            // error to one fsync only, so no fsync may follow a failed one and
            // be believed. (A poison set meanwhile by another failure also
            // forbids reporting success.)
            let result = result.and_then(|()| self.check_poison());
            if let Err(e) = &result {
                let _ = inner.poison.set(e.to_string());
                st.deadline = None;
            }
            st.syncing = false;
            match result {
                Ok(()) => {
                    st.durable = st.durable.max(target);
                    if st.durable >= inner.next_offset.load(Ordering::Acquire) {
                        st.deadline = None;
                    }
                    inner.sync_cv.notify_all();
                }
                Err(e) => {
                    drop(st);
                    inner.sync_cv.notify_all();
                    tracing::error!(log = %inner.name, error = %e, "fsync failed: refusing writes until reopened");
                    return Err(e);
                }
            }
        }
    }

    /// A group-commit leader about to fsync: if other threads are inside an
    /// append on this log but not yet waiting for durability (writing their
    /// batch, or just woken by the previous fsync on their way out and back
    /// in), yield the CPU to them so that this fsync covers their next
    /// batches too instead of leaving them for the next round. Bounded by
    /// `GATHER_YIELDS`; one appender alone never yields.
    fn gather_appenders(&self) {
        const GATHER_YIELDS: usize = 32;
        let inner = &*self.inner;
        for _ in 0..GATHER_YIELDS {
            let appenders = inner.appenders.load(Ordering::Acquire);
            if appenders <= 1 || inner.durable_waiters.load(Ordering::Acquire) >= appenders {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Make every appended batch durable.
    pub fn flush(&self) -> Result<()> {
        self.check_poison()?;
        self.wait_durable(self.next_offset())
    }

    /// When the background thread should flush this log, if ever.
    pub(crate) fn flush_deadline(&self) -> Option<Instant> {
        lock(&self.inner.sync).deadline
    }

    pub(crate) fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(
            &self
                .inner
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn mark_closed(&self) {
        let _w = lock(&self.inner.writer);
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Read whole batches starting with the one that holds `offset`, up to
    /// about `max_bytes` (at least one batch, however large, and at least one
    /// data batch if the segment holds one after the checkpoints at
    /// `offset`). Iteration skips checkpoint batches: continue the next read
    /// at [`Batches::next_offset`], which counts them. Reading at
    /// [`Log::next_offset`] returns no batches; outside
    /// `[log_start_offset, next_offset]` is [`Error::OffsetOutOfRange`].
    /// The bytes are a zero-copy view of the segment and stay valid while
    /// held, even if retention deletes the segment.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Batches> {
        let inner = &*self.inner;
        let out_of_range = || Error::OffsetOutOfRange {
            log: inner.name.clone(),
            offset,
            log_start_offset: self.log_start_offset(),
            next_offset: self.next_offset(),
        };
        let next = self.next_offset();
        if offset < self.log_start_offset() || offset > next {
            return Err(out_of_range());
        }
        if offset == next {
            return Ok(Batches::empty());
        }
        let segs = self.segments();
        let first = segs.partition_point(|s| s.base_offset <= offset);
        let Some(first) = first.checked_sub(1) else {
            return Err(out_of_range()); // retention removed it meanwhile
        };
        let interval = u64::from(inner.config.index_interval_bytes);
        for seg in &segs[first..] {
            if offset >= seg.next_offset() {
                continue;
            }
            let (position, data) = seg.locate(offset.max(seg.base_offset), interval)?;
            if data.is_empty() {
                // The segment claims offsets up to its next offset but holds
                // no batch for this one: never skip silently to later data.
                return Err(Error::corrupt(
                    &seg.path,
                    position,
                    format!(
                        "no batch holds offset {offset}, below the segment's end {}",
                        seg.next_offset()
                    ),
                ));
            }
            let mut end = 0usize;
            let mut last_start = 0usize;
            // At least one batch, and at least one data batch if the segment
            // has one: a read never returns only checkpoints while data
            // follows in the segment.
            let mut has_data = false;
            while end < data.len() {
                let Some(len) = peek_batch_len(&data[end..]) else {
                    return Err(Error::corrupt(
                        &seg.path,
                        position + end as u64,
                        "unreadable batch length",
                    ));
                };
                if end > 0 && has_data && end + len > max_bytes {
                    break;
                }
                has_data |=
                    BatchView::parse_header_only(&data[end..]).is_ok_and(|v| !v.is_control());
                last_start = end;
                end = end.saturating_add(len).min(data.len());
            }
            let next = BatchView::parse_header_only(&data[last_start..end])
                .ok()
                .and_then(|v| v.last_offset().checked_add(1));
            // `locate` checked that the first batch starts where the log
            // says it should; the iterator checks the rest.
            let first_base = BatchView::parse_header_only(&data)
                .map(|v| v.base_offset())
                .ok();
            // Every byte handed out keeps the directory lock: no other opener
            // can cut the file while they live.
            let data = Bytes::from_owner(Locked {
                bytes: data.slice(..end),
                _lock: Arc::clone(&inner.dir_lock),
            });
            return Ok(Batches {
                data,
                path: Some(Arc::new(seg.path.clone())),
                position,
                verify_crc: true,
                checkpoints: false,
                first_base,
                next,
            });
        }
        Ok(Batches::empty())
    }

    /// The offset of the first record whose timestamp is `>= timestamp`, or
    /// `None` if no record is that recent. For a compressed batch (whose
    /// records are not decoded) the batch's base offset is returned.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<i64>> {
        let start = self.log_start_offset();
        for seg in self.segments().iter() {
            if seg.max_timestamp() < timestamp || seg.next_offset() <= start {
                continue;
            }
            let from = seg.time_lookup_start(timestamp);
            let data = seg.bytes_from(from)?;
            let mut pos = 0usize;
            while pos < data.len() {
                let at = from + pos as u64;
                let view = BatchView::parse(&data[pos..])
                    .map_err(|e| Error::corrupt_frame(&seg.path, at, e))?;
                pos += view.total_len();
                if view.is_control()
                    || view.max_timestamp() < timestamp
                    || view.last_offset() < start
                {
                    continue;
                }
                if view.timestamp_type() == TimestampType::LogAppendTime {
                    return Ok(Some(view.base_offset().max(start)));
                }
                match view.records() {
                    Ok(records) => {
                        for rec in records {
                            let rec = rec.map_err(|e| Error::corrupt_batch(&seg.path, at, e))?;
                            let off = view.record_offset(&rec);
                            if view.record_timestamp(&rec) >= timestamp && off >= start {
                                return Ok(Some(off));
                            }
                        }
                    }
                    Err(e) if view.compression() != Compression::None => {
                        tracing::debug!(error = %e, "timestamp lookup inside a compressed batch");
                        return Ok(Some(view.base_offset().max(start)));
                    }
                    Err(e) => return Err(Error::corrupt_batch(&seg.path, at, e)),
                }
            }
        }
        Ok(None)
    }

    /// Apply retention now: delete the oldest sealed segments beyond
    /// `retention_bytes` or older than `retention`.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let mut w = lock(&self.inner.writer);
        self.check_open()?;
        self.retention_locked(&mut w)
    }

    fn retention_locked(&self, w: &mut Writer) -> Result<RetentionReport> {
        let inner = &*self.inner;
        let cfg = &inner.config;
        let segs = self.segments();
        let now = cfg.clock.now_ms();
        let mut total: u64 = segs.iter().map(|s| s.committed_len()).sum();
        let mut delete = 0usize;
        // Segments without timestamps (a checkpoint alone, or records
        // without timestamps) go by age together with the next segment that
        // has them.
        let mut undated_len = 0u64;
        for (i, seg) in segs[..segs.len() - 1].iter().enumerate() {
            let len = seg.committed_len();
            let by_size = cfg.retention_bytes.is_some_and(|max| total - len >= max);
            if !by_size && cfg.retention.is_some() && seg.max_timestamp() < 0 {
                undated_len += len;
                continue;
            }
            let by_age = cfg.retention.is_some_and(|r| {
                let r = i64::try_from(r.as_millis()).unwrap_or(i64::MAX);
                seg.max_timestamp() >= 0 && now.saturating_sub(seg.max_timestamp()) > r
            });
            if !(by_size || by_age) {
                break;
            }
            total -= len + undated_len;
            delete = i + 1;
            undated_len = 0;
        }
        let mut report = RetentionReport {
            log_start_offset: self.log_start_offset(),
            ..Default::default()
        };
        if delete == 0 {
            return Ok(report);
        }
        let new_start = segs[delete].base_offset.max(self.log_start_offset());
        // The producer state of the deleted segments lives on in the
        // checkpoint that starts the first remaining one: it must be there,
        // and durable, before they go. Sealed segments start with one (once
        // the log has state) and are durable. The active one may be empty
        // (a roll whose checkpoint write failed, or a crash right after a
        // roll): write its checkpoint now.
        let first_kept = &segs[delete];
        if delete == segs.len() - 1 {
            if first_kept.committed_len() == 0 && (w.checkpoint.enabled || !w.producers.is_empty())
            {
                self.or_poison(|| self.write_checkpoint(w))?;
            }
            if first_kept.committed_len() > 0 {
                self.wait_durable(first_kept.base_offset + 1)?;
            }
        }
        // Persist the new start first: a crash after this point finishes the
        // deletion at the next open; before it, nothing changed.
        write_log_start(inner.storage.as_ref(), &inner.dir, new_start)?;
        inner.log_start.store(new_start, Ordering::Release);
        {
            let mut list = inner
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            *list = Arc::new(segs[delete..].to_vec());
        }
        for seg in &segs[..delete] {
            for path in [seg.path.clone(), seg.index_path(), seg.time_index_path()] {
                match inner.storage.remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("delete segment", &path, e)),
                }
            }
            report.segments_deleted += 1;
            report.bytes_deleted += seg.committed_len();
        }
        inner
            .storage
            .sync_dir(&inner.dir)
            .map_err(|e| Error::io("fsync directory", &inner.dir, e))?;
        report.log_start_offset = new_start;
        tracing::info!(log = %inner.name, ?report, "retention deleted segments");
        Ok(report)
    }
}

/// A run of whole batches returned by [`Log::read`]: a zero-copy view of the
/// segment's bytes, exactly as stored (the Kafka Fetch wire format).
#[derive(Debug, Clone)]
pub struct Batches {
    data: Bytes,
    path: Option<Arc<PathBuf>>,
    position: u64,
    verify_crc: bool,
    checkpoints: bool,
    first_base: Option<i64>,
    next: Option<i64>,
}

/// Bytes that hold the store's directory lock while they live.
struct Locked {
    bytes: Bytes,
    _lock: DirLock,
}

impl AsRef<[u8]> for Locked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Batches {
    fn empty() -> Batches {
        Batches {
            data: Bytes::new(),
            path: None,
            position: 0,
            verify_crc: true,
            checkpoints: false,
            first_base: None,
            next: None,
        }
    }

    /// The raw bytes of the batches.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// `true` when no batch was returned.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Skip CRC checks when iterating (the bytes were checked on append; use
    /// this only when speed matters more than catching bit rot).
    #[must_use]
    pub fn without_crc_check(mut self) -> Batches {
        self.verify_crc = false;
        self
    }

    /// The offset after the last batch in these bytes, checkpoints included:
    /// where the next read continues. (Iteration skips checkpoints, so the
    /// last batch it yields may end before this; a read can even yield no
    /// batch at all when it returned only a checkpoint.) `None` when empty.
    pub fn next_offset(&self) -> Option<i64> {
        self.next
    }

    /// Also yield the producer-state checkpoint batches (control batches the
    /// engine writes into the log), which iteration skips by default.
    #[must_use]
    pub fn with_checkpoints(mut self) -> Batches {
        self.checkpoints = true;
        self
    }

    /// The segment file the bytes come from, and the position of the first.
    pub fn source(&self) -> Option<(&Path, u64)> {
        self.path.as_deref().map(|p| (p.as_path(), self.position))
    }

    /// Iterate over the batches, checking each one's CRC (unless disabled).
    /// A damaged batch yields [`Error::Corrupt`] naming the file and byte
    /// position, and ends the iteration.
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            batches: self,
            pos: 0,
            done: false,
            expect: self.first_base,
        }
    }
}

impl<'a> IntoIterator for &'a Batches {
    type Item = Result<Batch>;
    type IntoIter = BatchIter<'a>;
    fn into_iter(self) -> BatchIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Batches`].
#[derive(Debug)]
pub struct BatchIter<'a> {
    batches: &'a Batches,
    pos: usize,
    done: bool,
    /// The offset the next batch must start at.
    expect: Option<i64>,
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        loop {
            let data = &self.batches.data;
            if self.done || self.pos >= data.len() {
                return None;
            }
            let rest = &data[self.pos..];
            let parsed = if self.batches.verify_crc {
                BatchView::parse(rest)
            } else {
                BatchView::parse_header_only(rest)
            };
            let at = self.batches.position + self.pos as u64;
            let path = || self.batches.path.as_deref().cloned().unwrap_or_default();
            match parsed {
                // baseOffset lies outside the CRC: continuity is what checks it.
                Ok(view) if self.expect.is_some_and(|e| e != view.base_offset()) => {
                    self.done = true;
                    return Some(Err(Error::corrupt(
                        path(),
                        at,
                        format!(
                            "batch has base offset {}, expected {}",
                            view.base_offset(),
                            self.expect.unwrap_or_default()
                        ),
                    )));
                }
                Ok(view) => {
                    self.expect = view.last_offset().checked_add(1);
                    let len = view.total_len();
                    let start = self.pos;
                    self.pos += len;
                    // Users never append control batches: every one in the
                    // log is a checkpoint.
                    if view.is_control() && !self.batches.checkpoints {
                        continue;
                    }
                    return Some(Ok(Batch {
                        bytes: data.slice(start..start + len),
                    }));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::corrupt_frame(path(), at, e)));
                }
            }
        }
    }
}

/// One stored batch: its bytes, zero-copy.
#[derive(Debug, Clone)]
pub struct Batch {
    bytes: Bytes,
}

impl Batch {
    /// The batch's bytes, exactly as stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// A parsed view of the header and records.
    pub fn view(&self) -> BatchView<'_> {
        // The iterator validated these bytes when it made this batch.
        BatchView::parse_header_only(&self.bytes).expect("validated when read")
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.view().base_offset()
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.view().last_offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Log>();
        is::<crate::Store>();
        is::<Batches>();
        is::<Batch>();
    }
}
