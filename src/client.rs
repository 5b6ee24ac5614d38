//! The embedding producer: sequences, in-flight bound, retries.
//!
//! A [`Producer`] owns one producer identity (id and epoch) of a store and
//! sends batches of messages to any of its partitions as idempotent Kafka v2
//! batches.
//!
//! Invariants:
//! - Per partition, sequences are assigned and batches written in one
//!   critical section, so batches reach the log in sequence order; the next
//!   sequence moves only once the log took (or already had) the batch, so a
//!   failed write leaves no gap and its retry reuses the sequence.
//! - At most `max_in_flight` batches per partition are written and not yet
//!   acknowledged (waiting for their durability); the waits overlap, which is
//!   what lets `Sync` sends share fsyncs.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::config::Durability;
use crate::error::{Error, Result};
use crate::format::batch::increment_sequence;
use crate::format::{BatchBuilder, BuiltBatch, FormatError, FormatErrorKind};
use crate::log::{AppendOutcome, Log};
use crate::store::{Store, StoreInner};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One record to send.
#[derive(Debug, Clone, Copy, Default)]
pub struct Message<'a> {
    /// The record key, if any.
    pub key: Option<&'a [u8]>,
    /// The record value (`None` is a null value, a tombstone).
    pub value: Option<&'a [u8]>,
    /// Record headers.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// CreateTime in ms since the Unix epoch; `None` takes the engine clock.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Message<'a> {
    /// A message with this value, no key, no headers.
    pub fn new(value: &'a [u8]) -> Self {
        Message {
            value: Some(value),
            ..Message::default()
        }
    }

    /// Set the key.
    #[must_use]
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Set the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Set the headers.
    #[must_use]
    pub fn with_headers(mut self, headers: &'a [(&'a [u8], Option<&'a [u8]>)]) -> Self {
        self.headers = headers;
        self
    }
}

#[derive(Debug)]
struct Slot {
    log: Log,
    /// The next sequence to assign; held while a batch is built and written.
    next_seq: Mutex<i32>,
    in_flight: Mutex<usize>,
    cv: Condvar,
}

/// Releases an in-flight place when dropped.
struct InFlight<'a>(&'a Slot);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        *lock(&self.0.in_flight) -= 1;
        self.0.cv.notify_one();
    }
}

/// An idempotent producer for services that embed oncelog.
///
/// Get one with [`Store::producer`] (a named, durable identity that resumes
/// where its previous session stopped and fences it) or
/// [`Store::idempotent_producer`] (a fresh anonymous id, Kafka's rules).
/// `Send + Sync`: threads may share it; sends to one partition are written in
/// the order they take their sequences.
#[derive(Debug)]
pub struct Producer {
    store: Arc<StoreInner>,
    producer_id: i64,
    epoch: i16,
    name: Option<String>,
    max_in_flight: usize,
    retries: u32,
    backoff: Duration,
    durability: Durability,
    slots: Mutex<HashMap<(String, u32), Arc<Slot>>>,
}

impl Store {
    /// Start a session of the producer called `name`: the same producer id
    /// as every earlier session of that name, and a new epoch (made durable
    /// before this returns) that fences the previous session everywhere: its
    /// appends fail with [`Error::ProducerFenced`]. The new session continues
    /// each partition's sequences after the last batch the log holds from
    /// this producer, and a re-send of a batch an earlier session wrote (with
    /// its sequences, see [`Producer::send_at`]) is answered as a duplicate.
    pub fn producer(&self, name: &str) -> Result<Producer> {
        self.check_open()?;
        let (id, epoch) = self.inner.ids.named(name)?;
        self.fence_barrier();
        Ok(Producer::new(self, id, epoch, Some(name.to_string())))
    }

    /// A producer with a fresh anonymous id at epoch 0 (Kafka's idempotent
    /// producer: its state lives as long as this value).
    pub fn idempotent_producer(&self) -> Result<Producer> {
        let (id, epoch) = self.init_producer()?;
        Ok(Producer::new(self, id, epoch, None))
    }

    /// A producer for an anonymous identity this store handed out earlier
    /// (`init_producer`, `idempotent_producer`), at the same epoch: its
    /// sequences continue after the last batch each partition holds from
    /// it. Use it to re-send, after a restart, a batch whose send failed
    /// with [`Error::NotAcknowledged`] (at the sequence the error names).
    pub fn resume_producer(&self, producer_id: i64, epoch: i16) -> Result<Producer> {
        self.check_open()?;
        self.inner.ids.resume_anonymous(producer_id, epoch)?;
        Ok(Producer::new(self, producer_id, epoch, None))
    }
}

impl Producer {
    fn new(store: &Store, producer_id: i64, epoch: i16, name: Option<String>) -> Producer {
        let config = store.config();
        Producer {
            store: Arc::clone(&store.inner),
            producer_id,
            epoch,
            name,
            max_in_flight: config.producer_window.min(5),
            retries: 5,
            backoff: Duration::from_millis(10),
            durability: config.durability,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Keep at most `n` batches per partition written but not yet
    /// acknowledged (default 5, and never more than the store's
    /// `producer_window`, beyond which a retry could not be recognized).
    #[must_use]
    pub fn with_max_in_flight(mut self, n: usize) -> Producer {
        self.max_in_flight = n.clamp(1, self.store.config.producer_window);
        self
    }

    /// Retry a send that failed with a retryable error ([`Error::is_retryable`])
    /// up to `n` times, with the same sequence, backing off from 10 ms
    /// (doubling, at most 1 s). Default 5.
    #[must_use]
    pub fn with_retries(mut self, n: u32) -> Producer {
        self.retries = n;
        self
    }

    /// When a send counts as done (default: the store's durability).
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Producer {
        self.durability = durability;
        self
    }

    /// The producer id.
    pub fn id(&self) -> i64 {
        self.producer_id
    }

    /// This session's epoch.
    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// The name, for a named producer.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn slot(&self, topic: &str, partition: u32) -> Result<Arc<Slot>> {
        let key = (topic.to_string(), partition);
        if let Some(s) = lock(&self.slots).get(&key) {
            return Ok(Arc::clone(s));
        }
        let log = self.store.log(topic, partition)?;
        // Resume after the last batch the log holds from this producer (a
        // named producer's earlier session; nothing for a fresh id).
        let next = log
            .producer(self.producer_id)
            .and_then(|p| p.last_sequence)
            .map_or(0, |s| increment_sequence(s, 1));
        let slot = Arc::new(Slot {
            log,
            next_seq: Mutex::new(next),
            in_flight: Mutex::new(0),
            cv: Condvar::new(),
        });
        Ok(Arc::clone(lock(&self.slots).entry(key).or_insert(slot)))
    }

    /// The sequence the next [`send`](Self::send) to this partition uses.
    pub fn next_sequence(&self, topic: &str, partition: u32) -> Result<i32> {
        let slot = self.slot(topic, partition)?;
        Ok(*lock(&slot.next_seq))
    }

    /// Send `messages` as one batch with the partition's next sequence
    /// (creating the partition if it does not exist). Returns where the batch
    /// is: [`AppendOutcome::Appended`], or [`AppendOutcome::Duplicate`] if
    /// the log already had it (a retry).
    ///
    /// Retried with the same sequence: [`Error::TooManyProducers`] (see
    /// [`with_retries`](Self::with_retries)). Refusals (sequence, epoch,
    /// fencing, invalid batches) are returned as they are; nothing was
    /// written. An I/O error of the write, or any failure while waiting for
    /// durability, is returned as [`Error::NotAcknowledged`] with the
    /// sequence: the batch may be in the log; re-send it at that sequence
    /// after reopening (`Store::producer` for a named producer,
    /// `Store::resume_producer` for an anonymous one). Except for a full
    /// disk met while writing ([`Error::is_disk_full`]): the log is
    /// unchanged and the next send reuses the sequence, so once space is
    /// freed, sending again needs no reopen.
    pub fn send(
        &self,
        topic: &str,
        partition: u32,
        messages: &[Message<'_>],
    ) -> Result<AppendOutcome> {
        self.send_inner(topic, partition, None, messages)
    }

    /// Send `messages` as one batch starting at `sequence`: re-send a batch
    /// whose acknowledgement was lost (it is answered as a duplicate, with
    /// its original offsets while it is among the producer's last
    /// `producer_window` batches of this partition), or continue at a
    /// sequence the service tracks itself. An appended batch moves the next
    /// sequence after it.
    pub fn send_at(
        &self,
        topic: &str,
        partition: u32,
        sequence: i32,
        messages: &[Message<'_>],
    ) -> Result<AppendOutcome> {
        self.send_inner(topic, partition, Some(sequence), messages)
    }

    fn build(&self, seq: i32, messages: &[Message<'_>], log: &Log) -> Result<BuiltBatch> {
        let invalid = |kind, position| Error::InvalidBatch {
            log: format!("{}-{}", log.topic(), log.partition()),
            source: FormatError::new(kind, position),
        };
        if messages.is_empty() {
            return Err(invalid(FormatErrorKind::EmptyBatch, 57));
        }
        let now = self.store.config.clock.now_ms();
        let bytes: usize = messages
            .iter()
            .map(|m| m.key.map_or(0, <[u8]>::len) + m.value.map_or(0, <[u8]>::len) + 24)
            .sum();
        let mut b =
            BatchBuilder::with_capacity(bytes).with_producer(self.producer_id, self.epoch, seq);
        for m in messages {
            b.try_push(m.timestamp_ms.unwrap_or(now), m.key, m.value, m.headers)
                .map_err(|e| Error::InvalidBatch {
                    log: format!("{}-{}", log.topic(), log.partition()),
                    source: e,
                })?;
        }
        Ok(b.finish())
    }

    fn send_inner(
        &self,
        topic: &str,
        partition: u32,
        sequence: Option<i32>,
        messages: &[Message<'_>],
    ) -> Result<AppendOutcome> {
        let slot = self.slot(topic, partition)?;
        {
            let mut n = lock(&slot.in_flight);
            while *n >= self.max_in_flight {
                n = slot.cv.wait(n).unwrap_or_else(PoisonError::into_inner);
            }
            *n += 1;
        }
        let _in_flight = InFlight(&slot);
        let _appender = slot.log.enter_append();
        let unacked = |seq: i32, source: Error| Error::NotAcknowledged {
            log: format!("{topic}-{partition}"),
            producer_id: self.producer_id,
            epoch: self.epoch,
            sequence: seq,
            source: Box::new(source),
        };
        let (outcome, end, seq) = {
            let mut next = lock(&slot.next_seq);
            let seq = sequence.unwrap_or(*next);
            let batch = self.build(seq, messages, &slot.log)?;
            let after = increment_sequence(seq, messages.len() as i32);
            let mut attempt = 0u32;
            loop {
                match slot.log.write_built(&batch) {
                    Ok((outcome, end)) => {
                        if sequence.is_none() || !outcome.is_duplicate() {
                            *next = after;
                        }
                        break (outcome, end, seq);
                    }
                    Err(e) if e.is_retryable() && attempt < self.retries => {
                        let wait = self.backoff.saturating_mul(1 << attempt.min(7));
                        tracing::debug!(error = %e, attempt, "retrying send with the same sequence");
                        std::thread::sleep(wait.min(Duration::from_secs(1)));
                        attempt += 1;
                    }
                    // A failed write may have left the batch (or part of it)
                    // in the log: the caller needs its sequence to find out.
                    Err(e @ Error::Io { .. }) => return Err(unacked(seq, e)),
                    Err(e) => return Err(e),
                }
            }
        };
        slot.log
            .complete(end, self.durability)
            .map_err(|e| unacked(seq, e))?;
        Ok(outcome)
    }
}
