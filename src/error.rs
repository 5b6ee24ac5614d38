//! Errors: one `#[non_exhaustive]` enum for the whole public API.
//!
//! Every variant says what happened and where: the path and byte position for
//! corruption, the log (`topic-partition`) for append and read errors, the
//! directory for locking. [`Error::kind`] gives a stable `snake_case` name that
//! the CLI prints and scripts can match on.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::format::FormatError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in oncelog.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    Io {
        /// What oncelog was doing (`"write segment"`, `"fsync segment"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The store directory is already open, in this process or another.
    Locked {
        /// The directory whose lock is held.
        dir: PathBuf,
    },
    /// A topic name breaks Kafka's naming rule.
    InvalidTopic {
        /// The rejected name (possibly shortened for display).
        topic: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A batch handed to `append` is not a valid Kafka v2 record batch.
    InvalidBatch {
        /// The log the batch was appended to (`topic-partition`).
        log: String,
        /// What is wrong, and at which byte of the batch.
        source: FormatError,
    },
    /// A batch is larger than `Config::max_batch_bytes`.
    BatchTooLarge {
        /// The log the batch was appended to.
        log: String,
        /// Size of the batch in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Stored data failed validation: a bad CRC, a broken length, offsets out of
    /// order. The data after `position` is kept on disk for inspection.
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position within that file where the damage starts.
        position: u64,
        /// What was found.
        detail: String,
    },
    /// A write or fsync failed earlier; this log refuses writes until it is
    /// reopened. The data written before the failure may or may not be durable,
    /// which is why oncelog never retries the fsync.
    Poisoned {
        /// The log (`topic-partition`).
        log: String,
        /// The failure that poisoned it.
        cause: String,
    },
    /// The requested offset is outside the log.
    OffsetOutOfRange {
        /// The log (`topic-partition`).
        log: String,
        /// The offset asked for.
        offset: i64,
        /// The first offset still stored (retention moves it forward).
        log_start_offset: i64,
        /// The offset the next append will get.
        next_offset: i64,
    },
    /// A configuration value is out of range.
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The store was closed; the handle can no longer be used.
    Closed {
        /// The log or store the handle belonged to.
        what: String,
    },
    /// The request is valid but oncelog does not support it (for example
    /// decoding the records of a compressed batch).
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// An idempotent batch's sequence is neither the next one expected from
    /// its producer nor a retry of a batch already written (a gap or a
    /// partial overlap). Nothing was written.
    OutOfOrderSequence {
        /// The log (`topic-partition`).
        log: String,
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The sequence the log expected next.
        expected: i32,
        /// The batch's first sequence.
        received: i32,
        /// The batch's last sequence.
        received_last: i32,
    },
    /// An idempotent batch carries an epoch older than its anonymous
    /// producer's current one in the partition, or an epoch a named producer
    /// was never given; or `Store::init_producer_with` was asked to bump
    /// from an epoch already bumped past. Nothing was written.
    InvalidProducerEpoch {
        /// The log (`topic-partition`).
        log: String,
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The producer's current epoch.
        current_epoch: i16,
        /// The batch's first sequence.
        sequence: i32,
    },
    /// A named producer's session was replaced by a newer one (a later
    /// `Store::producer` or `Store::init_producer_with` call for the same
    /// name); this session may no longer write or bump. Nothing was written.
    /// (Named epochs wrap from `i16::MAX` to 0: "older" means up to half the
    /// epoch space behind the current one.)
    ProducerFenced {
        /// The log (`topic-partition`), or the store directory.
        log: String,
        /// The producer's name.
        name: String,
        /// The producer.
        producer_id: i64,
        /// This session's epoch.
        epoch: i16,
        /// The current session's epoch.
        current_epoch: i16,
        /// The refused batch's first sequence (-1 when no batch was involved).
        sequence: i32,
    },
    /// A batch's producer fields are inconsistent (a producer id without a
    /// sequence or epoch). Kafka's INVALID_RECORD. Nothing was written.
    InvalidRecord {
        /// The log (`topic-partition`).
        log: String,
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's first sequence.
        sequence: i32,
        /// What is wrong.
        detail: &'static str,
    },
    /// The partition already tracks `Config::max_producers` live producers
    /// and this batch comes from a new one. Retryable: producers expire.
    TooManyProducers {
        /// The log (`topic-partition`).
        log: String,
        /// The new producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's first sequence.
        sequence: i32,
        /// The configured limit.
        max: usize,
    },
    /// A [`Producer`](crate::Producer) send whose batch may or may not be in
    /// the log: its write or its wait for durability failed (an I/O error,
    /// an fsync failure that poisoned the log). After reopening the store,
    /// re-send the same messages with `Producer::send_at` at `sequence`: a
    /// duplicate answer means the batch was kept, with its offsets.
    NotAcknowledged {
        /// The log (`topic-partition`).
        log: String,
        /// The producer.
        producer_id: i64,
        /// The session's epoch.
        epoch: i16,
        /// The batch's first sequence.
        sequence: i32,
        /// What failed.
        source: Box<Error>,
    },
    /// A producer id that this store never handed out, or a producer name
    /// that is not acceptable.
    InvalidProducer {
        /// The producer id or name.
        producer: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl Error {
    /// A stable `snake_case` name for the variant, as printed by the CLI.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Locked { .. } => "locked",
            Error::InvalidTopic { .. } => "invalid_topic",
            Error::InvalidBatch { .. } => "invalid_batch",
            Error::BatchTooLarge { .. } => "batch_too_large",
            Error::Corrupt { .. } => "corrupt",
            Error::Poisoned { .. } => "poisoned",
            Error::OffsetOutOfRange { .. } => "offset_out_of_range",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::Closed { .. } => "closed",
            Error::Unsupported { .. } => "unsupported",
            Error::OutOfOrderSequence { .. } => "out_of_order_sequence",
            Error::InvalidProducerEpoch { .. } => "invalid_producer_epoch",
            Error::ProducerFenced { .. } => "producer_fenced",
            Error::InvalidRecord { .. } => "invalid_record",
            Error::TooManyProducers { .. } => "too_many_producers",
            Error::InvalidProducer { .. } => "invalid_producer",
            Error::NotAcknowledged { .. } => "not_acknowledged",
        }
    }

    /// True if the same request may succeed when retried unchanged (with
    /// the same sequence): the failure was a passing condition, not a
    /// verdict on the data or a broken disk.
    ///
    /// Today that is [`Error::TooManyProducers`] (producers expire). I/O
    /// errors are not: a failed write or fsync poisons the log until the
    /// store is reopened; a full disk (see [`Error::is_disk_full`]) needs
    /// space freed first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::TooManyProducers { .. })
    }

    /// Whether the operation was refused for a full disk or an exhausted
    /// quota (`ENOSPC`, `EDQUOT`) while creating or writing a file, before
    /// anything was synced: directly or as the cause of an
    /// [`Error::NotAcknowledged`]. Such an append left the log as it was:
    /// once space is freed, appends go on without a reopen. (`ENOSPC` from
    /// an fsync is not this: it is a failed fsync, and poisons the log.)
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { .. } => self.is_full_disk_before_sync(),
            Error::NotAcknowledged { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }

    /// A full disk met while writing a batch's body into a segment, while
    /// creating a segment or writing an index file during a roll, or while
    /// writing a metadata file's temporary copy (never while syncing, and
    /// never the last write of a batch, its first bytes, which completes
    /// it): nothing the log had acknowledged or synced changed, and the
    /// failed step is redone by the next append, so the log need not be
    /// poisoned.
    pub(crate) fn is_full_disk_before_sync(&self) -> bool {
        match self {
            Error::Io {
                op:
                    "write segment" | "create segment" | "write index" | "create index" | "write file"
                    | "create file",
                source,
                ..
            } => matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A framing error of the batch at file position `start` (from
    /// `BatchView::parse` or `parse_header_only`): a batch cut short (its
    /// length field reaches past the data) is reported at its own start,
    /// where the damage is, not at the end of the data.
    pub(crate) fn corrupt_frame(path: impl Into<PathBuf>, start: u64, e: FormatError) -> Error {
        if let crate::format::FormatErrorKind::Truncated { needed, available } = e.kind {
            return Error::corrupt(
                path,
                start,
                format!(
                    "the batch at byte {start} is cut short: it needs {needed} bytes, \
                     only {available} remain"
                ),
            );
        }
        Error::corrupt_batch(path, start, e)
    }

    /// A format error found in bytes that start at file position `start`:
    /// the position (and the message) become positions in the file.
    pub(crate) fn corrupt_batch(path: impl Into<PathBuf>, start: u64, e: FormatError) -> Error {
        let shifted = e.shifted(usize::try_from(start).unwrap_or(usize::MAX));
        Error::corrupt(path, shifted.position as u64, shifted.to_string())
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        detail: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error during {op} on {}: {source}", path.display())
            }
            Error::Locked { dir } => write!(
                f,
                "store directory {} is already open (its lock is held by this or another process)",
                dir.display()
            ),
            Error::InvalidTopic { topic, reason } => {
                write!(f, "invalid topic name {topic:?}: {reason}")
            }
            Error::InvalidBatch { log, source } => {
                write!(f, "invalid record batch appended to {log}: {source}")
            }
            Error::BatchTooLarge { log, size, max } => write!(
                f,
                "batch of {size} bytes appended to {log} exceeds max_batch_bytes ({max})"
            ),
            Error::Corrupt {
                path,
                position,
                detail,
            } => write!(
                f,
                "corrupt data in {} at byte {position}: {detail}",
                path.display()
            ),
            Error::Poisoned { log, cause } => write!(
                f,
                "log {log} refuses writes after an earlier I/O failure ({cause}); reopen the store to recover"
            ),
            Error::OffsetOutOfRange {
                log,
                offset,
                log_start_offset,
                next_offset,
            } => write!(
                f,
                "offset {offset} is out of range for {log} (log start {log_start_offset}, next offset {next_offset})"
            ),
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid config value for {field}: {reason}")
            }
            Error::Closed { what } => write!(f, "{what} is closed"),
            Error::Unsupported { what } => write!(f, "unsupported: {what}"),
            Error::OutOfOrderSequence {
                log,
                producer_id,
                epoch,
                expected,
                received,
                received_last,
            } => write!(
                f,
                "out-of-order sequence on {log}: producer {producer_id} epoch {epoch} sent sequences {received}..={received_last}, expected {expected} next"
            ),
            Error::InvalidProducerEpoch {
                log,
                producer_id,
                epoch,
                current_epoch,
                sequence,
            } => write!(
                f,
                "invalid producer epoch on {log}: producer {producer_id} sent epoch {epoch} (sequence {sequence}), its current epoch is {current_epoch}"
            ),
            Error::ProducerFenced {
                log,
                name,
                producer_id,
                epoch,
                current_epoch,
                sequence,
            } => {
                write!(
                    f,
                    "producer {name:?} (id {producer_id}) epoch {epoch} is fenced on {log}: a newer session with epoch {current_epoch} took over"
                )?;
                if *sequence >= 0 {
                    write!(f, " (refused batch at sequence {sequence})")?;
                }
                Ok(())
            }
            Error::InvalidRecord {
                log,
                producer_id,
                epoch,
                sequence,
                detail,
            } => write!(
                f,
                "invalid record batch appended to {log}: producer {producer_id} epoch {epoch} sequence {sequence}: {detail}"
            ),
            Error::TooManyProducers {
                log,
                producer_id,
                epoch,
                sequence,
                max,
            } => write!(
                f,
                "{log} already tracks {max} live producers (max_producers); new producer {producer_id} (epoch {epoch}, sequence {sequence}) refused, retry after idle producers expire"
            ),
            Error::InvalidProducer { producer, reason } => {
                write!(f, "invalid producer {producer}: {reason}")
            }
            Error::NotAcknowledged {
                log,
                producer_id,
                epoch,
                sequence,
                source,
            } => {
                write!(
                    f,
                    "batch of producer {producer_id} epoch {epoch} at sequence {sequence} on {log} "
                )?;
                if source.is_full_disk_before_sync() {
                    write!(
                        f,
                        "was refused, the log is unchanged ({source}); free space and send it again at sequence {sequence}"
                    )
                } else {
                    write!(
                        f,
                        "is not acknowledged and may or may not be in the log ({source}); after reopening, re-send it at sequence {sequence} to find out"
                    )
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::InvalidBatch { source, .. } => Some(source),
            Error::NotAcknowledged { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
