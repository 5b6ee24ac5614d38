//! Pure, allocation-light encoding and decoding of the on-disk format.
//!
//! The on-disk format of oncelog is the Kafka v2 `RecordBatch` (magic 2),
//! byte for byte, plus Kafka's offset and time index entry layouts.
//!
//! Invariants of this module and its children:
//! - **Pure**: no I/O, no global state, no `unsafe`. Every function works on
//!   byte slices handed in by the caller.
//! - **Total on hostile input**: no function panics on any input bytes. All
//!   indexing goes through `get`, all arithmetic on values read from input is
//!   checked, saturating or explicitly wrapping (where Kafka's Java code wraps).
//! - **Big-endian on disk**: every multi-byte integer is read and written with
//!   explicit big-endian conversions (`to_be_bytes` / `from_be_bytes` or
//!   `zerocopy::byteorder::big_endian`), never native endianness.
//! - **Errors carry a position**: every [`FormatError`] records the byte
//!   position, relative to the slice passed to the function that returned it
//!   (for record decoding: relative to the start of the batch), where the
//!   problem was found.

pub mod batch;
pub mod checkpoint;
pub mod index;
pub mod meta;
pub mod record;
pub mod varint;

use std::fmt;

pub use batch::{
    BatchBuilder, BatchHeader, BatchView, BuiltBatch, Compression, HEADER_LEN, LOG_OVERHEAD, MAGIC,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, TimestampType, peek_batch_len, set_base_offset,
};
pub use index::{OFFSET_ENTRY_LEN, OffsetIndexEntry, TIME_ENTRY_LEN, TimeIndexEntry};
pub use record::{Header, HeaderIter, Record, RecordIter};

/// Result alias used throughout the format module.
pub type FormatResult<T> = Result<T, FormatError>;

/// A malformed, truncated or unsupported piece of on-disk data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FormatError {
    /// What is wrong.
    pub kind: FormatErrorKind,
    /// Byte position, within the input slice of the failing call (for record
    /// decoding: within the batch), where the problem was found.
    pub position: usize,
}

/// The kinds of [`FormatError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatErrorKind {
    /// The data ends before a field or structure does. From
    /// [`BatchView::parse`] this means the input slice is shorter than the
    /// batch (e.g. a torn write at the tail of a file). From record decoding
    /// it means a record or one of its fields runs past the end of its
    /// enclosing record or batch, which, the batch length being known, is
    /// corruption.
    Truncated {
        /// Bytes the structure needs (counted from the start of the structure
        /// being read).
        needed: usize,
        /// Bytes that were available for it.
        available: usize,
    },
    /// The `batchLength` field is below the minimum (49) or makes the batch
    /// larger than `i32::MAX` bytes.
    BadLength {
        /// The stored `batchLength`.
        batch_length: i32,
    },
    /// The magic byte is not 2.
    BadMagic {
        /// The stored magic byte.
        magic: i8,
    },
    /// The stored CRC-32C does not match the bytes it covers.
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over bytes `[21, end)`.
        computed: u32,
    },
    /// The batch is compressed (or uses an unknown codec); its records cannot
    /// be decoded by this crate.
    UnsupportedCompression {
        /// The codec bits (attributes & 0x7).
        codec: u8,
    },
    /// A varint is longer than allowed (5 bytes for 32-bit, 10 for 64-bit)
    /// or its value does not fit.
    BadVarint,
    /// A record is malformed.
    BadRecord {
        /// Which rule was broken.
        detail: &'static str,
    },
    /// The number of records differs from the header's `recordsCount`.
    RecordCountMismatch {
        /// `recordsCount` from the header.
        header: i32,
        /// Records actually found.
        found: i32,
    },
    /// The last record's offset delta differs from the header's
    /// `lastOffsetDelta` (or, for compressed batches, `lastOffsetDelta` is
    /// negative).
    OffsetDeltaMismatch {
        /// `lastOffsetDelta` from the header.
        header: i32,
        /// Offset delta of the last record (for compressed batches: the
        /// header value itself).
        found: i32,
    },
    /// Record offset deltas are not strictly increasing from >= 0.
    NonMonotonicOffsetDelta {
        /// Offset delta of the previous record (-1 before the first).
        previous: i32,
        /// Offset delta found.
        found: i32,
    },
    /// A batch holds no records where at least one is required.
    EmptyBatch,
    /// A value is too large to be encoded in the format (lengths and counts
    /// are `i32` on disk).
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The largest size allowed.
        max: usize,
    },
}

impl FormatError {
    /// Creates an error of `kind` found at byte `position`.
    #[must_use]
    pub const fn new(kind: FormatErrorKind, position: usize) -> Self {
        Self { kind, position }
    }

    /// Shorthand for a [`FormatErrorKind::Truncated`] error.
    #[must_use]
    pub const fn truncated(position: usize, needed: usize, available: usize) -> Self {
        Self::new(FormatErrorKind::Truncated { needed, available }, position)
    }

    /// Shorthand for a [`FormatErrorKind::BadRecord`] error.
    #[must_use]
    pub const fn bad_record(position: usize, detail: &'static str) -> Self {
        Self::new(FormatErrorKind::BadRecord { detail }, position)
    }

    /// The same error with its position moved `by` bytes later (saturating),
    /// for errors from a sub-slice reported relative to an outer slice.
    #[must_use]
    pub const fn shifted(mut self, by: usize) -> Self {
        self.position = self.position.saturating_add(by);
        self
    }

    /// True if this is a [`FormatErrorKind::Truncated`] error.
    #[must_use]
    pub const fn is_truncated(&self) -> bool {
        matches!(self.kind, FormatErrorKind::Truncated { .. })
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.position;
        match &self.kind {
            FormatErrorKind::Truncated { needed, available } => write!(
                f,
                "data truncated at byte {at}: needed {needed} bytes but only {available} are available"
            ),
            FormatErrorKind::BadLength { batch_length } => write!(
                f,
                "invalid batch length {batch_length} at byte {at} (must be between 49 and {})",
                i32::MAX - 12
            ),
            FormatErrorKind::BadMagic { magic } => {
                write!(
                    f,
                    "unsupported magic byte {magic} at byte {at} (expected 2)"
                )
            }
            FormatErrorKind::CrcMismatch { stored, computed } => write!(
                f,
                "CRC-32C mismatch at byte {at}: stored {stored:#010x}, computed {computed:#010x}"
            ),
            FormatErrorKind::UnsupportedCompression { codec } => write!(
                f,
                "batch at byte {at} uses compression codec {codec}, which cannot be decoded"
            ),
            FormatErrorKind::BadVarint => write!(
                f,
                "invalid varint at byte {at} (too long or value out of range)"
            ),
            FormatErrorKind::BadRecord { detail } => {
                write!(f, "malformed record at byte {at}: {detail}")
            }
            FormatErrorKind::RecordCountMismatch { header, found } => write!(
                f,
                "record count mismatch at byte {at}: header says {header} records, found {found}"
            ),
            FormatErrorKind::OffsetDeltaMismatch { header, found } => write!(
                f,
                "offset delta mismatch at byte {at}: header lastOffsetDelta is {header}, last record has {found}"
            ),
            FormatErrorKind::NonMonotonicOffsetDelta { previous, found } => write!(
                f,
                "offset delta {found} at byte {at} is not greater than the previous one ({previous})"
            ),
            FormatErrorKind::EmptyBatch => write!(f, "batch at byte {at} holds no records"),
            FormatErrorKind::TooLarge { what, len, max } => write!(
                f,
                "{what} too large at byte {at}: {len} exceeds the maximum of {max}"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_mentions_position_and_details() {
        let e = FormatError::truncated(7, 12, 7);
        let s = e.to_string();
        assert!(
            s.contains("byte 7") && s.contains("12") && s.contains('7'),
            "{s}"
        );
        let e = FormatError::new(
            FormatErrorKind::CrcMismatch {
                stored: 1,
                computed: 2,
            },
            17,
        );
        assert!(e.to_string().contains("byte 17"));
        assert!(e.to_string().contains("0x00000001"));
        let e = FormatError::bad_record(70, "negative key length").shifted(5);
        assert_eq!(e.position, 75);
        assert_eq!(
            e.to_string(),
            "malformed record at byte 75: negative key length"
        );
        assert!(!e.is_truncated());
        let e = FormatError::new(FormatErrorKind::BadVarint, usize::MAX).shifted(3);
        assert_eq!(e.position, usize::MAX);
    }

    #[test]
    fn error_is_std_error() {
        fn takes(_: &dyn std::error::Error) {}
        takes(&FormatError::new(FormatErrorKind::EmptyBatch, 57));
    }
}
