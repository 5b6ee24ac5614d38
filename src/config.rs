//! Configuration: [`Config`], [`Durability`], [`RecoveryMode`] and the
//! injectable [`Clock`].
//!
//! Every field documents its default. [`Config::validate`] runs at
//! `Store::open`, so a bad value is an error before anything touches the disk.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// When an append counts as done.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// The append returns once its bytes are on stable storage (`fdatasync`).
    /// Concurrent appenders to one log share fsyncs (group commit). Survives a
    /// process crash and a power loss.
    #[default]
    Sync,
    /// The append returns once its bytes are in the OS page cache; a
    /// background thread fsyncs each log whose oldest unsynced append is older
    /// than the interval. Survives a process crash; a power loss may lose up to
    /// about the interval's worth of appends (never a partial batch, never a
    /// batch in the middle of the log).
    Interval(Duration),
    /// The append returns once its bytes are in the OS page cache; oncelog
    /// fsyncs only at segment rolls, at `flush()` and at close. Survives a
    /// process crash, not a power loss.
    Os,
}

/// What recovery may do to damaged data when a log is opened.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Cut the active (last) segment at its first invalid batch: a torn write,
    /// garbage or zero-filled space left by a crash. Damage inside a sealed
    /// segment is an [`Error::Corrupt`] naming the file and byte position, and
    /// nothing is cut.
    #[default]
    TolerateTailCorruption,
    /// Scan every segment and cut the log at the first invalid batch anywhere,
    /// deleting every later segment. Loses good data after the damage: use it
    /// only to salvage a log that cannot otherwise be opened.
    TruncateAtCorruption,
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Retention by age (and producer expiry) reads time only through this trait,
/// so tests can drive it with [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock {
            now: AtomicI64::new(now_ms),
        }
    }

    /// Set the time.
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, Ordering::SeqCst);
    }

    /// Move the time forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Store-wide settings. Build with [`Config::default`] and the `with_*`
/// setters.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest amount of data in a segment file; the log rolls to a new
    /// segment when the next batch does not fit. A batch larger than this
    /// gets a segment of its own. Producer-state checkpoints come on top.
    /// Default 1 GiB; at most 2 GiB (index positions are 32-bit, and a
    /// segment also rolls before any position would pass 4 GiB).
    pub segment_bytes: u64,
    /// Bytes of log between two entries of the sparse offset and time indexes.
    /// Default 4096.
    pub index_interval_bytes: u32,
    /// Default durability of appends. Default [`Durability::Sync`].
    pub durability: Durability,
    /// Space reserved ahead of the data of the active segment, in steps of
    /// this size (`fallocate` with `KEEP_SIZE`, so the file length always
    /// equals the data). Bounds the space taken ahead per partition. Default
    /// 16 MiB; 0 disables preallocation.
    pub preallocate_bytes: u64,
    /// Largest batch `append` accepts. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Delete the oldest sealed segments while the log is larger than this.
    /// Default `None` (keep everything).
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest batch timestamp is older than this.
    /// Default `None` (keep everything).
    pub retention: Option<Duration>,
    /// How often the background thread applies retention and producer
    /// expiry. Default 5 minutes. Retention also runs after every segment
    /// roll and on `Log::enforce_retention`; expiry also at checkpoints, when
    /// a full table meets a new producer, and on `Log::expire_producers`.
    pub retention_check_interval: Duration,
    /// What recovery may cut. Default [`RecoveryMode::TolerateTailCorruption`].
    pub recovery_mode: RecoveryMode,
    /// Validate every record of an uncompressed batch on append (count, offset
    /// deltas, lengths), not only the CRC. Default `true`.
    pub validate_records: bool,
    /// The clock used for retention by age and producer expiry. Default
    /// [`SystemClock`].
    pub clock: Arc<dyn Clock>,
    /// Batches per producer and partition remembered for duplicate
    /// detection (Kafka: 5, matching `max.in.flight.requests.per.connection`).
    /// Default 5; 1 to 64.
    pub producer_window: usize,
    /// Producers idle (no append, on the engine's clock) this long are
    /// forgotten. Default 7 days.
    pub producer_expiration: Duration,
    /// Live producers a partition tracks at most; a batch from a new producer
    /// beyond that fails with the retryable [`Error::TooManyProducers`].
    /// Default 100,000.
    pub max_producers: usize,
    /// Refuse a producer the partition does not know unless its batch starts
    /// at sequence 0 (Kafka before 2.5). Default `false`: any sequence is
    /// accepted, as Kafka does since 2.5.
    pub require_sequence_zero: bool,
    /// Data bytes between two producer-state checkpoints in a log (besides
    /// the one at the start of every segment, the one at clean close and the
    /// one before a batch of a producer that expired since the last). The
    /// actual distance is at least twice the last checkpoint's size, so that
    /// these interval checkpoints take at most a third of the log. A
    /// checkpoint's bytes do not count towards `segment_bytes`. Default
    /// 64 MiB.
    pub checkpoint_interval_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_bytes: 1 << 30,
            index_interval_bytes: 4096,
            durability: Durability::Sync,
            preallocate_bytes: 16 << 20,
            max_batch_bytes: 16 << 20,
            retention_bytes: None,
            retention: None,
            retention_check_interval: Duration::from_secs(300),
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            validate_records: true,
            clock: Arc::new(SystemClock),
            producer_window: 5,
            producer_expiration: Duration::from_secs(7 * 24 * 3600),
            max_producers: 100_000,
            require_sequence_zero: false,
            checkpoint_interval_bytes: 64 << 20,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$field = value;
            self
        }
    };
}

impl Config {
    setter!(
        /// Set [`Config::segment_bytes`].
        with_segment_bytes, segment_bytes: u64
    );
    setter!(
        /// Set [`Config::index_interval_bytes`].
        with_index_interval_bytes, index_interval_bytes: u32
    );
    setter!(
        /// Set [`Config::durability`].
        with_durability, durability: Durability
    );
    setter!(
        /// Set [`Config::preallocate_bytes`].
        with_preallocate_bytes, preallocate_bytes: u64
    );
    setter!(
        /// Set [`Config::max_batch_bytes`].
        with_max_batch_bytes, max_batch_bytes: usize
    );
    setter!(
        /// Set [`Config::retention_bytes`].
        with_retention_bytes, retention_bytes: Option<u64>
    );
    setter!(
        /// Set [`Config::retention`].
        with_retention, retention: Option<Duration>
    );
    setter!(
        /// Set [`Config::retention_check_interval`].
        with_retention_check_interval, retention_check_interval: Duration
    );
    setter!(
        /// Set [`Config::recovery_mode`].
        with_recovery_mode, recovery_mode: RecoveryMode
    );
    setter!(
        /// Set [`Config::validate_records`].
        with_validate_records, validate_records: bool
    );
    setter!(
        /// Set [`Config::clock`].
        with_clock, clock: Arc<dyn Clock>
    );
    setter!(
        /// Set [`Config::producer_window`].
        with_producer_window, producer_window: usize
    );
    setter!(
        /// Set [`Config::producer_expiration`].
        with_producer_expiration, producer_expiration: Duration
    );
    setter!(
        /// Set [`Config::max_producers`].
        with_max_producers, max_producers: usize
    );
    setter!(
        /// Set [`Config::require_sequence_zero`].
        with_require_sequence_zero, require_sequence_zero: bool
    );
    setter!(
        /// Set [`Config::checkpoint_interval_bytes`].
        with_checkpoint_interval_bytes, checkpoint_interval_bytes: u64
    );

    /// Check every field; `Store::open` calls this.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return bad(
                "segment_bytes",
                format!("{} is outside 1024..=2147483647", self.segment_bytes),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", "must be positive".into());
        }
        if self.max_batch_bytes < crate::format::HEADER_LEN
            || self.max_batch_bytes > i32::MAX as usize
        {
            return bad(
                "max_batch_bytes",
                format!("{} is outside 61..=2147483647", self.max_batch_bytes),
            );
        }
        if self.preallocate_bytes > 1 << 30 {
            return bad(
                "preallocate_bytes",
                format!("{} is above 1 GiB", self.preallocate_bytes),
            );
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return bad(
                "durability",
                "Interval(0) is not an interval; use Sync".into(),
            );
        }
        if self.retention_check_interval.is_zero() {
            return bad("retention_check_interval", "must be positive".into());
        }
        if !(1..=crate::format::checkpoint::MAX_WINDOW).contains(&self.producer_window) {
            return bad(
                "producer_window",
                format!("{} is outside 1..=64", self.producer_window),
            );
        }
        // A checkpoint holds the whole table in one batch (< 2 GiB): at
        // most 21 bytes per producer plus 19 per window batch.
        let worst = 21 + 19 * self.producer_window as u64;
        let fits = (i32::MAX as u64 - 1024) / worst;
        if self.max_producers == 0 || self.max_producers as u64 > fits {
            return bad(
                "max_producers",
                format!(
                    "{} is outside 1..={fits} (a checkpoint of the whole table must fit a 2 GiB batch with a window of {})",
                    self.max_producers, self.producer_window
                ),
            );
        }
        if self.producer_expiration.is_zero() {
            return bad("producer_expiration", "must be positive".into());
        }
        if self.checkpoint_interval_bytes == 0 {
            return bad("checkpoint_interval_bytes", "must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let field = |c: Config| match c.validate().unwrap_err() {
            Error::InvalidConfig { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(
            field(Config::default().with_segment_bytes(100)),
            "segment_bytes"
        );
        assert_eq!(
            field(Config::default().with_segment_bytes(1 << 31)),
            "segment_bytes"
        );
        assert_eq!(
            field(Config::default().with_index_interval_bytes(0)),
            "index_interval_bytes"
        );
        assert_eq!(
            field(Config::default().with_max_batch_bytes(10)),
            "max_batch_bytes"
        );
        assert_eq!(
            field(Config::default().with_preallocate_bytes(2 << 30)),
            "preallocate_bytes"
        );
        assert_eq!(
            field(Config::default().with_durability(Durability::Interval(Duration::ZERO))),
            "durability"
        );
        assert_eq!(
            field(Config::default().with_retention_check_interval(Duration::ZERO)),
            "retention_check_interval"
        );
        assert_eq!(
            field(Config::default().with_producer_window(0)),
            "producer_window"
        );
        assert_eq!(
            field(Config::default().with_producer_window(65)),
            "producer_window"
        );
        assert_eq!(
            field(Config::default().with_max_producers(0)),
            "max_producers"
        );
        // The whole table must fit one checkpoint batch.
        Config::default()
            .with_max_producers(18_000_000)
            .validate()
            .unwrap();
        assert_eq!(
            field(
                Config::default()
                    .with_producer_window(64)
                    .with_max_producers(2_000_000)
            ),
            "max_producers"
        );
        assert_eq!(
            field(Config::default().with_producer_expiration(Duration::ZERO)),
            "producer_expiration"
        );
        assert_eq!(
            field(Config::default().with_checkpoint_interval_bytes(0)),
            "checkpoint_interval_bytes"
        );
        // Huge but representable values are fine: they mean "practically never".
        Config::default()
            .with_durability(Durability::Interval(Duration::MAX))
            .with_retention_check_interval(Duration::MAX)
            .validate()
            .unwrap();
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ms(), 5);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 2005);
        c.set(1);
        assert_eq!(c.now_ms(), 1);
        assert!(SystemClock.now_ms() > 1_600_000_000_000);
    }
}
