//! # oncelog
//!
//! An embedded, persistent storage engine for partitioned, append-only logs
//! whose on-disk format is Kafka's wire format: every batch is a Kafka v2
//! `RecordBatch` (CRC-32C), stored byte for byte in segment files that are
//! memory-mapped for zero-copy reads.
//!
//! ```
//! use oncelog::{AppendOutcome, Config, Message, Store, format::BatchBuilder};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Config::default())?;
//! let log = store.log("orders", 0)?;
//!
//! let mut batch = BatchBuilder::new();
//! batch.push(1_700_000_000_000, Some(b"key"), Some(b"hello"), &[]);
//! batch.push(1_700_000_000_001, None, Some(b"world"), &[]);
//! let at = log.append(&batch.build())?; // durable when it returns (Durability::Sync)
//! assert_eq!(at, AppendOutcome::Appended { base_offset: 0, last_offset: 1 });
//!
//! // An idempotent producer: a retry of a batch already written is answered
//! // as a duplicate with its original offsets, even after a restart.
//! let producer = store.producer("billing")?;
//! let first = producer.send("orders", 0, &[Message::new(b"invoice 1")])?;
//! let retry = producer.send_at("orders", 0, 0, &[Message::new(b"invoice 1")])?;
//! assert!(retry.is_duplicate() && retry.base_offset() == first.base_offset());
//!
//! for batch in &log.read(0, 1 << 20)? {
//!     let batch = batch?;
//!     for record in batch.view().records()? {
//!         println!("{:?}", record?.value);
//!     }
//! }
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Guarantees, design and file formats: `docs/design.md`, `docs/format.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod config;
mod error;
pub mod format;
mod ids;
pub mod kafka;
mod log;
mod producer;
mod recovery;
mod segment;
pub mod storage;
mod store;
mod syncer;
mod verify;

pub use crate::client::{Message, Producer};
pub use crate::config::{Clock, Config, Durability, ManualClock, RecoveryMode, SystemClock};
pub use crate::error::{Error, Result};
pub use crate::ids::MAX_PRODUCER_NAME_LEN;
pub use crate::log::{
    AppendFuture, AppendOutcome, Batch, BatchIter, Batches, Log, LogStats, ProducerBatch,
    ProducerInfo, ProducerStats, RetentionReport,
};
pub use crate::recovery::RecoveryReport;
pub use crate::store::{MAX_TOPIC_LEN, Store, validate_topic};
pub use crate::verify::{Problem, Progress, Severity, VerifyReport, verify, verify_with_storage};

/// Engine internals exposed for the benchmarks (`benches/`,
/// `examples/perf_summary.rs`). Not part of the public API: no stability
/// promise, may change in any release.
#[doc(hidden)]
pub mod internals {
    use crate::producer::{BatchIdent, Limits, ProducerTable as Table, Verdict};

    /// One partition's producer table (the pure state machine that decides
    /// append / duplicate / out of order / fenced), without a log around it.
    #[derive(Debug)]
    pub struct ProducerTable(Table);

    impl ProducerTable {
        /// A table keeping `window` batches per producer, at most
        /// `max_producers` producers.
        #[must_use]
        pub fn new(window: usize, max_producers: usize) -> ProducerTable {
            ProducerTable(Table::new(Limits {
                window,
                max_producers,
                expiration_ms: i64::MAX / 4,
                require_sequence_zero: false,
            }))
        }

        /// Validate a batch of `records` records as an append does and, if
        /// it is new, record it at `base_offset`. Returns whether it was
        /// appended (`false`: a duplicate or a rejection).
        pub fn append(
            &mut self,
            producer_id: i64,
            epoch: i16,
            base_seq: i32,
            records: i32,
            base_offset: i64,
            now_ms: i64,
        ) -> bool {
            let b = BatchIdent {
                producer_id,
                epoch,
                base_seq,
                delta: records - 1,
            };
            let (verdict, _) = self.0.check(&b, false, now_ms);
            if verdict == Ok(Verdict::Append) {
                self.0.commit(&b, base_offset, false, now_ms);
                true
            } else {
                false
            }
        }

        /// Producers in the table.
        #[must_use]
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// True if the table is empty.
        #[must_use]
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
