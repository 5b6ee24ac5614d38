//! The Kafka v2 `RecordBatch` (magic 2, `DefaultRecordBatch.java`): a
//! zero-copy view for reading and a builder for writing.
//!
//! Invariants:
//! - Every integer of the header is big-endian; [`BatchHeader`] is a
//!   `#[repr(C)]`, alignment-1, exactly 61-byte struct of
//!   `zerocopy::byteorder::big_endian` fields, so it can be viewed in place
//!   over any byte slice without copying and without `unsafe`.
//! - A batch is `LOG_OVERHEAD (12) + batchLength` bytes long, with
//!   `49 <= batchLength <= i32::MAX - 12` (the header after the length field
//!   is 49 bytes; the total must fit in an `i32` as in Kafka).
//! - The CRC is CRC-32C (Castagnoli) over bytes `[21, end)`: it covers
//!   attributes through the last record, and **not** `baseOffset`,
//!   `batchLength`, `partitionLeaderEpoch` or `magic`. Hence
//!   [`set_base_offset`] never invalidates the CRC.
//! - A [`BatchView`] obtained from [`BatchView::parse`] covers exactly one
//!   whole batch with magic 2 and a matching CRC;
//!   [`BatchView::parse_header_only`] gives the same guarantees except the
//!   CRC. Nothing about the records is guaranteed until
//!   [`BatchView::validate_records`] returns `Ok`.
//! - [`BatchBuilder::build`] produces a batch that `parse` and
//!   `validate_records` accept (if it holds at least one record) and that is
//!   byte-identical to what Kafka's Java producer writes for the same inputs
//!   (uncompressed, `baseOffset` 0).
//! - Nothing here panics on any input bytes; arithmetic on stored values is
//!   checked, saturating, or wrapping exactly where Kafka's Java code wraps.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::record::{RecordIter, body_len, encode_record};
use super::varint::{decode_varint, decode_varlong, varint_len};
use super::{FormatError, FormatErrorKind, FormatResult, Record};

/// Size of the fixed batch header (`RECORD_BATCH_OVERHEAD`); records start here.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The only supported magic byte.
pub const MAGIC: i8 = 2;
/// `producerId` of a batch without producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch without producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch without producer.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` written by [`BatchBuilder`] by default (Kafka's
/// `RecordBatch.NO_PARTITION_LEADER_EPOCH`).
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// Timestamp meaning "none" (Kafka's `RecordBatch.NO_TIMESTAMP`).
pub const NO_TIMESTAMP: i64 = -1;

/// Smallest valid `batchLength` (header bytes after the length field).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// Largest valid `batchLength` (total batch size must fit in an `i32`).
pub const MAX_BATCH_LENGTH: i32 = i32::MAX - LOG_OVERHEAD as i32;

/// Byte offset where the CRC-covered region starts (the attributes field).
pub const CRC_START: usize = 21;

/// Byte offsets of the header fields.
pub mod offsets {
    /// `baseOffset` int64.
    pub const BASE_OFFSET: usize = 0;
    /// `batchLength` int32.
    pub const BATCH_LENGTH: usize = 8;
    /// `partitionLeaderEpoch` int32.
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    /// `magic` int8.
    pub const MAGIC: usize = 16;
    /// `crc` uint32.
    pub const CRC: usize = 17;
    /// `attributes` int16.
    pub const ATTRIBUTES: usize = 21;
    /// `lastOffsetDelta` int32.
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// `baseTimestamp` int64.
    pub const BASE_TIMESTAMP: usize = 27;
    /// `maxTimestamp` int64.
    pub const MAX_TIMESTAMP: usize = 35;
    /// `producerId` int64.
    pub const PRODUCER_ID: usize = 43;
    /// `producerEpoch` int16.
    pub const PRODUCER_EPOCH: usize = 51;
    /// `baseSequence` int32.
    pub const BASE_SEQUENCE: usize = 53;
    /// `recordsCount` int32.
    pub const RECORDS_COUNT: usize = 57;
    /// First record.
    pub const RECORDS: usize = 61;
}

/// Attributes bits 0-2: compression codec.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attributes bit 3: timestamp type (1 = `LogAppendTime`).
pub const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
/// Attributes bit 4: transactional.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attributes bit 5: control batch.
pub const ATTR_CONTROL: i16 = 1 << 5;
/// Attributes bit 6: `baseTimestamp` holds the delete horizon.
pub const ATTR_DELETE_HORIZON: i16 = 1 << 6;

/// CRC-32C (Castagnoli), the batch checksum. `crc-fast` folds with
/// carry-less multiplication (PCLMULQDQ / VPCLMULQDQ, chosen at run time),
/// about 1.4x the `crc32c` crate's CRC32-instruction loop from 2 KiB up on
/// the reference machine (docs/performance.md); the result is the same
/// function, cross-checked against `crc32c` in the tests.
#[inline]
#[must_use]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    // CRC-32/ISCSI is CRC-32C; the 64-bit result holds the 32-bit CRC.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Compression codec from attributes bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// 0: uncompressed.
    None,
    /// 1: gzip.
    Gzip,
    /// 2: snappy.
    Snappy,
    /// 3: lz4.
    Lz4,
    /// 4: zstd.
    Zstd,
    /// 5-7: not defined by Kafka.
    Unknown(u8),
}

impl Compression {
    /// Codec from the low three bits of `attributes`.
    #[must_use]
    pub const fn from_attributes(attributes: i16) -> Self {
        match (attributes & ATTR_COMPRESSION_MASK) as u8 {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            c => Self::Unknown(c),
        }
    }

    /// The codec number (0-7).
    #[must_use]
    pub const fn codec(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
            Self::Unknown(c) => c & 0x07,
        }
    }
}

/// Meaning of record timestamps (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// 0: set by the producer.
    CreateTime,
    /// 1: set by the log on append; every record's timestamp is the batch's
    /// `maxTimestamp`.
    LogAppendTime,
}

// Kafka v2 RecordBatch header, 61 bytes, all big-endian:
//
// | off | size | field                | notes                                   |
// |-----|------|----------------------|-----------------------------------------|
// |   0 |    8 | baseOffset           | int64, assigned by the log; not in CRC  |
// |   8 |    4 | batchLength          | int32, bytes after this field           |
// |  12 |    4 | partitionLeaderEpoch | int32, not in CRC                       |
// |  16 |    1 | magic                | int8, = 2; not in CRC                   |
// |  17 |    4 | crc                  | uint32, CRC-32C over [21, end)          |
// |  21 |    2 | attributes           | int16: 0-2 codec, 3 ts type, 4 txn,     |
// |     |      |                      |   5 control, 6 delete horizon           |
// |  23 |    4 | lastOffsetDelta      | int32, also the sequence delta          |
// |  27 |    8 | baseTimestamp        | int64, first record's timestamp         |
// |  35 |    8 | maxTimestamp         | int64                                   |
// |  43 |    8 | producerId           | int64, -1 = none                        |
// |  51 |    2 | producerEpoch        | int16, -1 = none                        |
// |  53 |    4 | baseSequence         | int32, -1 = none                        |
// |  57 |    4 | recordsCount         | int32                                   |
// |  61 |  ... | records              | one blob if compressed                  |
/// The fixed 61-byte header of a v2 batch, viewable in place over bytes.
///
/// Fields are big-endian wrappers; the methods of the same names return
/// native integers.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct BatchHeader {
    /// `baseOffset` @0.
    pub base_offset: I64,
    /// `batchLength` @8.
    pub batch_length: I32,
    /// `partitionLeaderEpoch` @12.
    pub partition_leader_epoch: I32,
    /// `magic` @16.
    pub magic: i8,
    /// `crc` @17.
    pub crc: U32,
    /// `attributes` @21.
    pub attributes: I16,
    /// `lastOffsetDelta` @23.
    pub last_offset_delta: I32,
    /// `baseTimestamp` @27.
    pub base_timestamp: I64,
    /// `maxTimestamp` @35.
    pub max_timestamp: I64,
    /// `producerId` @43.
    pub producer_id: I64,
    /// `producerEpoch` @51.
    pub producer_epoch: I16,
    /// `baseSequence` @53.
    pub base_sequence: I32,
    /// `recordsCount` @57.
    pub records_count: I32,
}

const _: () = assert!(size_of::<BatchHeader>() == HEADER_LEN);
const _: () = assert!(align_of::<BatchHeader>() == 1);

impl BatchHeader {
    /// Views the first 61 bytes of `buf` as a header (no validation).
    #[must_use]
    pub fn ref_from(buf: &[u8]) -> Option<&Self> {
        Self::ref_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// `baseOffset`.
    #[must_use]
    pub fn base_offset(&self) -> i64 {
        self.base_offset.get()
    }
    /// `batchLength`.
    #[must_use]
    pub fn batch_length(&self) -> i32 {
        self.batch_length.get()
    }
    /// `partitionLeaderEpoch`.
    #[must_use]
    pub fn partition_leader_epoch(&self) -> i32 {
        self.partition_leader_epoch.get()
    }
    /// `magic`.
    #[must_use]
    pub const fn magic(&self) -> i8 {
        self.magic
    }
    /// Stored `crc`.
    #[must_use]
    pub fn crc(&self) -> u32 {
        self.crc.get()
    }
    /// `attributes`.
    #[must_use]
    pub fn attributes(&self) -> i16 {
        self.attributes.get()
    }
    /// `lastOffsetDelta`.
    #[must_use]
    pub fn last_offset_delta(&self) -> i32 {
        self.last_offset_delta.get()
    }
    /// `baseTimestamp`.
    #[must_use]
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp.get()
    }
    /// `maxTimestamp`.
    #[must_use]
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.get()
    }
    /// `producerId`.
    #[must_use]
    pub fn producer_id(&self) -> i64 {
        self.producer_id.get()
    }
    /// `producerEpoch`.
    #[must_use]
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch.get()
    }
    /// `baseSequence`.
    #[must_use]
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence.get()
    }
    /// `recordsCount`.
    #[must_use]
    pub fn records_count(&self) -> i32 {
        self.records_count.get()
    }
}

/// Reads `batchLength` and returns the total batch size (`12 + batchLength`)
/// if at least 12 bytes are present and the length is sane
/// (`49 <= batchLength <= i32::MAX - 12`). Does not check magic or CRC, nor
/// whether `buf` holds the whole batch.
#[must_use]
pub fn peek_batch_len(buf: &[u8]) -> Option<usize> {
    let bytes: [u8; 4] = buf
        .get(offsets::BATCH_LENGTH..LOG_OVERHEAD)?
        .try_into()
        .ok()?;
    let batch_length = i32::from_be_bytes(bytes);
    if !(MIN_BATCH_LENGTH..=MAX_BATCH_LENGTH).contains(&batch_length) {
        return None;
    }
    usize::try_from(batch_length)
        .ok()?
        .checked_add(LOG_OVERHEAD)
}

/// Rewrites `baseOffset` (bytes 0..8, outside the CRC) in place.
///
/// # Errors
/// [`FormatErrorKind::Truncated`] if `batch` is shorter than 8 bytes.
pub fn set_base_offset(batch: &mut [u8], offset: i64) -> FormatResult<()> {
    let len = batch.len();
    let dst = batch
        .get_mut(offsets::BASE_OFFSET..offsets::BATCH_LENGTH)
        .ok_or_else(|| FormatError::truncated(len, 8, len))?;
    dst.copy_from_slice(&offset.to_be_bytes());
    Ok(())
}

/// Rewrites `partitionLeaderEpoch` (bytes 12..16, outside the CRC) in place.
///
/// # Errors
/// [`FormatErrorKind::Truncated`] if `batch` is shorter than 16 bytes.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> FormatResult<()> {
    let len = batch.len();
    let dst = batch
        .get_mut(offsets::PARTITION_LEADER_EPOCH..offsets::MAGIC)
        .ok_or_else(|| FormatError::truncated(len, offsets::MAGIC, len))?;
    dst.copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Kafka's `DefaultRecordBatch.incrementSequence`, with Java's `int`
/// wrapping semantics: sequences live in `[0, i32::MAX]` and wrap to 0.
#[must_use]
pub const fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX.wrapping_sub(increment) {
        increment
            .wrapping_sub(i32::MAX.wrapping_sub(sequence))
            .wrapping_sub(1)
    } else {
        sequence.wrapping_add(increment)
    }
}

/// Kafka's `DefaultRecordBatch.decrementSequence` (inverse of
/// [`increment_sequence`] for sequences in `[0, i32::MAX]`).
#[must_use]
pub const fn decrement_sequence(sequence: i32, decrement: i32) -> i32 {
    if sequence < decrement {
        i32::MAX
            .wrapping_sub(decrement.wrapping_sub(sequence))
            .wrapping_add(1)
    } else {
        sequence.wrapping_sub(decrement)
    }
}

/// A zero-copy view of one whole v2 batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    header: &'a BatchHeader,
}

impl std::fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchView")
            .field("total_len", &self.total_len())
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("record_count", &self.record_count())
            .field("attributes", &self.attributes())
            .field("producer_id", &self.producer_id())
            .field("producer_epoch", &self.producer_epoch())
            .field("base_sequence", &self.base_sequence())
            .finish_non_exhaustive()
    }
}

impl<'a> BatchView<'a> {
    /// Parses and CRC-checks the batch at the start of `buf` (which may hold
    /// more bytes after it). The view covers exactly the batch.
    ///
    /// Checks, in order (as Kafka's `FileLogInputStream`): at least 12
    /// bytes; `49 <= batchLength <= i32::MAX - 12`; the whole batch is in
    /// `buf`; magic is 2; the CRC-32C over `[21, end)` matches.
    ///
    /// # Errors
    /// [`FormatErrorKind::Truncated`], [`FormatErrorKind::BadLength`],
    /// [`FormatErrorKind::BadMagic`] or [`FormatErrorKind::CrcMismatch`].
    pub fn parse(buf: &'a [u8]) -> FormatResult<Self> {
        let view = Self::parse_header_only(buf)?;
        let computed = crc32c(view.bytes.get(CRC_START..).unwrap_or(&[]));
        let stored = view.crc();
        if computed != stored {
            return Err(FormatError::new(
                FormatErrorKind::CrcMismatch { stored, computed },
                offsets::CRC,
            ));
        }
        Ok(view)
    }

    /// Like [`parse`](Self::parse) but without the CRC check, for cheap scans
    /// over data whose CRC was already verified.
    ///
    /// # Errors
    /// [`FormatErrorKind::Truncated`], [`FormatErrorKind::BadLength`] or
    /// [`FormatErrorKind::BadMagic`].
    pub fn parse_header_only(buf: &'a [u8]) -> FormatResult<Self> {
        let len = buf.len();
        let Some(len_bytes) = buf.get(offsets::BATCH_LENGTH..LOG_OVERHEAD) else {
            return Err(FormatError::truncated(len, LOG_OVERHEAD, len));
        };
        let mut be = [0u8; 4];
        be.copy_from_slice(len_bytes);
        let batch_length = i32::from_be_bytes(be);
        let Some(total) = peek_batch_len(buf) else {
            return Err(FormatError::new(
                FormatErrorKind::BadLength { batch_length },
                offsets::BATCH_LENGTH,
            ));
        };
        let Some(bytes) = buf.get(..total) else {
            return Err(FormatError::truncated(len, total, len));
        };
        let Some(header) = BatchHeader::ref_from(bytes) else {
            // Unreachable: total >= HEADER_LEN.
            return Err(FormatError::truncated(len, HEADER_LEN, len));
        };
        if header.magic != MAGIC {
            return Err(FormatError::new(
                FormatErrorKind::BadMagic {
                    magic: header.magic,
                },
                offsets::MAGIC,
            ));
        }
        Ok(Self { bytes, header })
    }

    /// True if the records of this uncompressed batch pass every check of
    /// [`validate_records`](Self::validate_records): the same rules, decoded
    /// in place without building records or errors (about 3x faster for
    /// small records). `false` says only that some check failed.
    fn records_are_valid(&self) -> bool {
        let Ok(count) = usize::try_from(self.record_count()) else {
            return false;
        };
        let buf = self.bytes;
        let base_ts = self.base_timestamp();
        let mut pos = HEADER_LEN;
        let mut previous: i32 = -1;
        let mut max_ts = i64::MIN;
        // A length of -1 is null; below that is invalid.
        let skip = |b: &[u8], p: &mut usize, nullable: bool| -> bool {
            let Ok((len, n)) = decode_varint(b.get(*p..).unwrap_or(&[])) else {
                return false;
            };
            *p += n;
            if len == -1 && nullable {
                return true;
            }
            let Ok(len) = usize::try_from(len) else {
                return false;
            };
            *p = p.saturating_add(len);
            *p <= b.len()
        };
        for _ in 0..count {
            let Ok((len, n)) = decode_varint(buf.get(pos..).unwrap_or(&[])) else {
                return false;
            };
            let Ok(len) = usize::try_from(len) else {
                return false;
            };
            let start = pos + n;
            let Some(body) = buf.get(start..start.saturating_add(len)) else {
                return false;
            };
            // attributes (1 byte), timestampDelta, offsetDelta
            let mut p = 1;
            let Ok((ts_delta, n)) = decode_varlong(body.get(p..).unwrap_or(&[])) else {
                return false;
            };
            p += n;
            let Ok((offset_delta, n)) = decode_varint(body.get(p..).unwrap_or(&[])) else {
                return false;
            };
            p += n;
            if offset_delta <= previous || !skip(body, &mut p, true) || !skip(body, &mut p, true) {
                return false;
            }
            previous = offset_delta;
            max_ts = max_ts.max(base_ts.wrapping_add(ts_delta));
            let Ok((headers, n)) = decode_varint(body.get(p..).unwrap_or(&[])) else {
                return false;
            };
            p += n;
            if headers < 0 {
                return false;
            }
            for _ in 0..headers {
                if !skip(body, &mut p, false) || !skip(body, &mut p, true) {
                    return false;
                }
            }
            if p != body.len() {
                return false;
            }
            pos = start + len;
        }
        let ts_ok = match self.timestamp_type() {
            TimestampType::CreateTime => max_ts == self.max_timestamp(),
            TimestampType::LogAppendTime => true,
        };
        count > 0 && pos == buf.len() && previous == self.last_offset_delta() && ts_ok
    }

    /// Recomputes the CRC and compares it with the stored one.
    #[must_use]
    pub fn crc_is_valid(&self) -> bool {
        crc32c(self.bytes.get(CRC_START..).unwrap_or(&[])) == self.crc()
    }

    /// The header.
    #[must_use]
    pub const fn header(&self) -> &'a BatchHeader {
        self.header
    }
    /// The batch's bytes, exactly `total_len()` of them.
    #[must_use]
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The record bytes (after the 61-byte header; compressed blob if
    /// compressed).
    #[must_use]
    pub fn records_bytes(&self) -> &'a [u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or(&[])
    }
    /// Total size in bytes (`12 + batchLength`).
    #[must_use]
    pub const fn total_len(&self) -> usize {
        self.bytes.len()
    }
    /// `baseOffset`.
    #[must_use]
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset()
    }
    /// `lastOffsetDelta`.
    #[must_use]
    pub fn last_offset_delta(&self) -> i32 {
        self.header.last_offset_delta()
    }
    /// `baseOffset + lastOffsetDelta` (saturating).
    #[must_use]
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    /// Offset after the batch, `last_offset() + 1` (saturating).
    #[must_use]
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
    /// `recordsCount`.
    #[must_use]
    pub fn record_count(&self) -> i32 {
        self.header.records_count()
    }
    /// `attributes`.
    #[must_use]
    pub fn attributes(&self) -> i16 {
        self.header.attributes()
    }
    /// Compression codec.
    #[must_use]
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes())
    }
    /// Timestamp type.
    #[must_use]
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    /// Attributes bit 4.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    /// Attributes bit 5.
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    /// Attributes bit 6.
    #[must_use]
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & ATTR_DELETE_HORIZON != 0
    }
    /// `baseTimestamp`.
    #[must_use]
    pub fn base_timestamp(&self) -> i64 {
        self.header.base_timestamp()
    }
    /// `maxTimestamp`.
    #[must_use]
    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp()
    }
    /// `producerId`.
    #[must_use]
    pub fn producer_id(&self) -> i64 {
        self.header.producer_id()
    }
    /// True if `producerId >= 0` (Kafka's `hasProducerId`).
    #[must_use]
    pub fn has_producer_id(&self) -> bool {
        self.producer_id() > NO_PRODUCER_ID
    }
    /// `producerEpoch`.
    #[must_use]
    pub fn producer_epoch(&self) -> i16 {
        self.header.producer_epoch()
    }
    /// `baseSequence`.
    #[must_use]
    pub fn base_sequence(&self) -> i32 {
        self.header.base_sequence()
    }
    /// Sequence of the last record: `baseSequence + lastOffsetDelta`,
    /// wrapping past `i32::MAX` to 0 as Kafka's
    /// `DefaultRecordBatch.lastSequence`; [`NO_SEQUENCE`] if the batch has
    /// none.
    #[must_use]
    pub fn last_sequence(&self) -> i32 {
        let base = self.base_sequence();
        if base == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(base, self.last_offset_delta())
    }
    /// `partitionLeaderEpoch`.
    #[must_use]
    pub fn partition_leader_epoch(&self) -> i32 {
        self.header.partition_leader_epoch()
    }
    /// Stored `crc`.
    #[must_use]
    pub fn crc(&self) -> u32 {
        self.header.crc()
    }

    /// Absolute timestamp of `record`: `maxTimestamp` for `LogAppendTime`
    /// batches (as Kafka), else `baseTimestamp + timestampDelta` (wrapping,
    /// as Java's `long` addition, which makes it the exact inverse of the
    /// builder's subtraction).
    #[must_use]
    pub fn record_timestamp(&self, record: &Record<'_>) -> i64 {
        match self.timestamp_type() {
            TimestampType::LogAppendTime => self.max_timestamp(),
            TimestampType::CreateTime => self.base_timestamp().wrapping_add(record.timestamp_delta),
        }
    }

    /// Absolute offset of `record`: `baseOffset + offsetDelta` (saturating).
    #[must_use]
    pub fn record_offset(&self, record: &Record<'_>) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(record.offset_delta))
    }

    /// Sequence number of `record` (`baseSequence + offsetDelta`, wrapping
    /// like [`last_sequence`](Self::last_sequence)), [`NO_SEQUENCE`] if none.
    #[must_use]
    pub fn record_sequence(&self, record: &Record<'_>) -> i32 {
        let base = self.base_sequence();
        if base == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(base, record.offset_delta)
    }

    /// Iterates over the records of an uncompressed batch.
    ///
    /// # Errors
    /// [`FormatErrorKind::UnsupportedCompression`] if the batch is compressed
    /// (oncelog stores compressed batches as they are but does not decode
    /// them); [`FormatErrorKind::BadRecord`] if `recordsCount` is negative.
    pub fn records(&self) -> FormatResult<RecordIter<'a>> {
        let compression = self.compression();
        if compression != Compression::None {
            return Err(FormatError::new(
                FormatErrorKind::UnsupportedCompression {
                    codec: compression.codec(),
                },
                offsets::ATTRIBUTES,
            ));
        }
        let count = self.record_count();
        if count < 0 {
            return Err(FormatError::bad_record(
                offsets::RECORDS_COUNT,
                "negative record count",
            ));
        }
        Ok(RecordIter::new(self.bytes, HEADER_LEN, count))
    }

    /// Checks the records against the header.
    ///
    /// Uncompressed: `recordsCount >= 1` (0 is [`FormatErrorKind::EmptyBatch`]);
    /// every record decodes and consumes exactly its length; exactly
    /// `recordsCount` records and no trailing bytes; offset deltas strictly
    /// increasing from >= 0, the last one equal to `lastOffsetDelta`; for
    /// `CreateTime` batches, `maxTimestamp` equal to the largest record
    /// timestamp.
    ///
    /// Compressed: only `recordsCount >= 1` and `lastOffsetDelta >= 0` (the
    /// records themselves cannot be decoded).
    ///
    /// Error positions are relative to the start of the batch.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate_records(&self) -> FormatResult<()> {
        let count = self.record_count();
        if count == 0 {
            return Err(FormatError::new(
                FormatErrorKind::EmptyBatch,
                offsets::RECORDS_COUNT,
            ));
        }
        if count < 0 {
            return Err(FormatError::bad_record(
                offsets::RECORDS_COUNT,
                "negative record count",
            ));
        }
        let header_last = self.last_offset_delta();
        if self.compression() != Compression::None {
            if header_last < 0 {
                return Err(FormatError::new(
                    FormatErrorKind::OffsetDeltaMismatch {
                        header: header_last,
                        found: header_last,
                    },
                    offsets::LAST_OFFSET_DELTA,
                ));
            }
            return Ok(());
        }
        // The common case, a valid batch, in one tight pass; anything it
        // does not accept is decoded again, record by record, to say what
        // is wrong.
        if self.records_are_valid() {
            return Ok(());
        }
        self.check_records_one_by_one()
    }

    /// The record checks of [`validate_records`](Self::validate_records),
    /// decoding each record, with the error of the first failure.
    fn check_records_one_by_one(&self) -> FormatResult<()> {
        let header_last = self.last_offset_delta();
        let mut iter = self.records()?;
        let mut previous: i32 = -1;
        let mut record_start = iter.position();
        let mut max_timestamp = i64::MIN;
        while let Some(rec) = iter.next() {
            let rec = rec?;
            max_timestamp = max_timestamp.max(self.record_timestamp(&rec));
            if rec.offset_delta <= previous {
                return Err(FormatError::new(
                    FormatErrorKind::NonMonotonicOffsetDelta {
                        previous,
                        found: rec.offset_delta,
                    },
                    record_start,
                ));
            }
            previous = rec.offset_delta;
            record_start = iter.position();
        }
        if iter.position() != self.total_len() {
            return Err(FormatError::bad_record(
                iter.position(),
                "trailing bytes after the last record",
            ));
        }
        if previous != header_last {
            return Err(FormatError::new(
                FormatErrorKind::OffsetDeltaMismatch {
                    header: header_last,
                    found: previous,
                },
                offsets::LAST_OFFSET_DELTA,
            ));
        }
        // Time indexes and retention by age trust maxTimestamp.
        if self.timestamp_type() == TimestampType::CreateTime
            && max_timestamp != self.max_timestamp()
        {
            return Err(FormatError::bad_record(
                offsets::MAX_TIMESTAMP,
                "maxTimestamp differs from the largest record timestamp",
            ));
        }
        Ok(())
    }
}

/// Builds one uncompressed v2 batch, encoding records directly into the
/// output buffer (one growing `Vec`, CRC computed once in [`build`](Self::build)).
///
/// Defaults: no producer (`-1/-1/-1`), `CreateTime`, uncompressed,
/// attributes 0, `partitionLeaderEpoch` -1, `baseOffset` 0.
///
/// Like Kafka's `MemoryRecordsBuilder`: record *i* gets `offsetDelta = i`,
/// `timestampDelta = ts - first record's ts`; `baseTimestamp` is the first
/// record's timestamp and `maxTimestamp` the largest.
///
/// An empty builder builds a header-only batch with `recordsCount` 0,
/// `lastOffsetDelta` -1 and both timestamps -1 (`NO_TIMESTAMP`), which
/// `parse` accepts and `validate_records` rejects as
/// [`FormatErrorKind::EmptyBatch`].
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    partition_leader_epoch: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty builder with the defaults described on the type.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Like [`new`](Self::new), reserving room for `record_bytes` bytes of
    /// encoded records so that building needs a single allocation.
    #[must_use]
    pub fn with_capacity(record_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN.saturating_add(record_bytes));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_timestamp: NO_TIMESTAMP,
            max_timestamp: NO_TIMESTAMP,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            attributes: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        }
    }

    /// Sets `producerId`, `producerEpoch` and `baseSequence`.
    #[must_use]
    pub const fn with_producer(mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets or clears the control bit (attributes bit 5).
    #[must_use]
    pub const fn with_control(mut self, control: bool) -> Self {
        self.attributes = set_bit(self.attributes, ATTR_CONTROL, control);
        self
    }

    /// Sets or clears the transactional bit (attributes bit 4).
    #[must_use]
    pub const fn with_transactional(mut self, transactional: bool) -> Self {
        self.attributes = set_bit(self.attributes, ATTR_TRANSACTIONAL, transactional);
        self
    }

    /// Sets the timestamp type bit (attributes bit 3). Timestamps are still
    /// taken from [`push`](Self::push); for `LogAppendTime` Kafka readers use
    /// `maxTimestamp` for every record.
    #[must_use]
    pub const fn with_timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        let on = matches!(timestamp_type, TimestampType::LogAppendTime);
        self.attributes = set_bit(self.attributes, ATTR_TIMESTAMP_TYPE, on);
        self
    }

    /// Sets `partitionLeaderEpoch` (default -1).
    #[must_use]
    pub const fn with_partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Appends one record.
    ///
    /// # Panics
    /// If a key, value, header or the batch would exceed the format's `i32`
    /// limits (2 GiB); use [`try_push`](Self::try_push) to get an error
    /// instead.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> &mut Self {
        if let Err(e) = self.try_push(timestamp_ms, key, value, headers) {
            panic!("BatchBuilder::push: {e}");
        }
        self
    }

    /// Appends one record, or returns [`FormatErrorKind::TooLarge`] (leaving
    /// the builder unchanged) if it does not fit the format's `i32` limits.
    ///
    /// # Errors
    /// [`FormatErrorKind::TooLarge`] with `position` = where the record would
    /// have started.
    pub fn try_push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> FormatResult<&mut Self> {
        let at = self.buf.len();
        let offset_delta = self.count;
        if offset_delta == i32::MAX {
            return Err(FormatError::new(
                FormatErrorKind::TooLarge {
                    what: "record count",
                    len: i32::MAX as usize + 1,
                    max: i32::MAX as usize,
                },
                at,
            ));
        }
        let first = if self.count == 0 {
            timestamp_ms
        } else {
            self.first_timestamp
        };
        // Java `long` subtraction wraps; the reader's wrapping addition
        // inverts it exactly.
        let timestamp_delta = timestamp_ms.wrapping_sub(first);
        let body = body_len(timestamp_delta, offset_delta, key, value, headers)
            .map_err(|e| e.shifted(at))?;
        let record_len = varint_len(i32::try_from(body).unwrap_or(i32::MAX)) + body;
        let new_len = at.checked_add(record_len);
        if new_len.is_none_or(|n| n > MAX_BATCH_LENGTH as usize + LOG_OVERHEAD) {
            return Err(FormatError::new(
                FormatErrorKind::TooLarge {
                    what: "batch",
                    len: new_len.unwrap_or(usize::MAX),
                    max: MAX_BATCH_LENGTH as usize + LOG_OVERHEAD,
                },
                at,
            ));
        }
        self.buf.reserve(record_len);
        encode_record(
            &mut self.buf,
            body,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        );
        debug_assert_eq!(self.buf.len(), at + record_len);
        if self.count == 0 {
            self.first_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        }
        self.count += 1;
        Ok(self)
    }

    /// Records pushed so far.
    #[must_use]
    pub fn record_count(&self) -> usize {
        usize::try_from(self.count).unwrap_or(0)
    }

    /// True if no record was pushed.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Exact size of the batch [`build`](Self::build) will produce.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Finishes the batch as a [`BuiltBatch`], which
    /// [`Log::append_built`](crate::Log::append_built) appends without
    /// checking again what this builder guarantees (CRC, records).
    #[must_use]
    pub fn finish(self) -> BuiltBatch {
        BuiltBatch(self.build())
    }

    /// Finishes the batch: writes the header (baseOffset 0) and the CRC.
    #[must_use]
    pub fn build(self) -> Vec<u8> {
        let mut buf = self.buf;
        let batch_length =
            i32::try_from(buf.len().saturating_sub(LOG_OVERHEAD)).unwrap_or(i32::MAX);
        let (base_ts, max_ts) = if self.count == 0 {
            (NO_TIMESTAMP, NO_TIMESTAMP)
        } else {
            (self.first_timestamp, self.max_timestamp)
        };
        let header = BatchHeader {
            base_offset: I64::new(0),
            batch_length: I32::new(batch_length),
            partition_leader_epoch: I32::new(self.partition_leader_epoch),
            magic: MAGIC,
            crc: U32::new(0),
            attributes: I16::new(self.attributes),
            last_offset_delta: I32::new(self.count.wrapping_sub(1)),
            base_timestamp: I64::new(base_ts),
            max_timestamp: I64::new(max_ts),
            producer_id: I64::new(self.producer_id),
            producer_epoch: I16::new(self.producer_epoch),
            base_sequence: I32::new(self.base_sequence),
            records_count: I32::new(self.count),
        };
        if let Some(dst) = buf.get_mut(..HEADER_LEN) {
            dst.copy_from_slice(header.as_bytes());
        }
        let crc = crc32c(buf.get(CRC_START..).unwrap_or(&[]));
        if let Some(dst) = buf.get_mut(offsets::CRC..CRC_START) {
            dst.copy_from_slice(&crc.to_be_bytes());
        }
        buf
    }
}

/// A batch made by [`BatchBuilder::finish`]: its records are well formed
/// and its CRC was computed over these very bytes, which cannot change
/// afterwards (the type gives no mutable access). An embedding service that
/// builds its batches appends them with
/// [`Log::append_built`](crate::Log::append_built), which skips the CRC and
/// record checks that bytes from elsewhere (the network, a file) need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltBatch(Vec<u8>);

impl BuiltBatch {
    /// The encoded batch.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded batch, as an owned buffer.
    #[must_use]
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for BuiltBatch {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

const fn set_bit(attributes: i16, bit: i16, on: bool) -> i16 {
    if on {
        attributes | bit
    } else {
        attributes & !bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{body_len, encode_record};
    use proptest::prelude::*;

    type Hdrs<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

    fn fix_crc(b: &mut [u8]) {
        let crc = crc32c(&b[CRC_START..]);
        b[offsets::CRC..CRC_START].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The check value of CRC-32C (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // Every length up to a few KiB and every alignment, against an
        // independent implementation (the SIMD paths switch at sizes).
        let data: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..4200).step_by(7).chain([8191, 8192]) {
            for start in [0, 1, 3, 8] {
                let s = &data[start.min(data.len() - len)..][..len];
                assert_eq!(crc32c(s), crc32c::crc32c(s), "len {len} start {start}");
            }
        }
    }

    fn be_i64(b: &[u8], at: usize) -> i64 {
        i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn be_i32(b: &[u8], at: usize) -> i32 {
        i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn be_i16(b: &[u8], at: usize) -> i16 {
        i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
    }

    /// A batch with hand-chosen offset deltas (header fields from the last
    /// record / given values), CRC fixed.
    fn raw_batch(deltas: &[i32], count: i32, last_delta: i32) -> Vec<u8> {
        let mut b = BatchBuilder::new().build();
        for &od in deltas {
            let body = body_len(0, od, Some(b"k"), None, &[]).unwrap();
            encode_record(&mut b, body, 0, od, Some(b"k"), None, &[]);
        }
        let len = i32::try_from(b.len() - LOG_OVERHEAD).unwrap();
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[offsets::RECORDS_COUNT..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
        b[offsets::LAST_OFFSET_DELTA..offsets::BASE_TIMESTAMP]
            .copy_from_slice(&last_delta.to_be_bytes());
        fix_crc(&mut b);
        b
    }

    fn sample() -> Vec<u8> {
        let mut bb = BatchBuilder::new().with_producer(7, 3, 100);
        bb.push(1_000, Some(b"k0"), Some(b"v0"), &[(b"h", Some(b"x"))])
            .push(1_005, None, Some(b"v1"), &[])
            .push(999, Some(b"k2"), None, &[(b"n", None), (b"e", Some(b""))]);
        bb.build()
    }

    #[test]
    fn header_fields_at_kafka_offsets() {
        let mut bb = BatchBuilder::new()
            .with_producer(0x0102_0304_0506_0708, 0x0a0b, 0x1122_3344)
            .with_transactional(true)
            .with_control(true)
            .with_partition_leader_epoch(0x5566_7788);
        bb.push(1_700_000_000_000, Some(b"a"), Some(b"b"), &[])
            .push(1_700_000_000_050, Some(b"c"), Some(b"d"), &[]);
        let expected_len = bb.encoded_len();
        let mut b = bb.build();
        assert_eq!(b.len(), expected_len);
        set_base_offset(&mut b, 0x1020_3040_5060_7080).unwrap();

        assert_eq!(be_i64(&b, 0), 0x1020_3040_5060_7080);
        assert_eq!(be_i32(&b, 8), i32::try_from(b.len() - 12).unwrap());
        assert_eq!(be_i32(&b, 12), 0x5566_7788);
        assert_eq!(b[16], 2);
        assert_eq!(
            u32::from_be_bytes(b[17..21].try_into().unwrap()),
            crc32c::crc32c(&b[21..])
        );
        assert_eq!(be_i16(&b, 21), 0b11_0000);
        assert_eq!(be_i32(&b, 23), 1);
        assert_eq!(be_i64(&b, 27), 1_700_000_000_000);
        assert_eq!(be_i64(&b, 35), 1_700_000_000_050);
        assert_eq!(be_i64(&b, 43), 0x0102_0304_0506_0708);
        assert_eq!(be_i16(&b, 51), 0x0a0b);
        assert_eq!(be_i32(&b, 53), 0x1122_3344);
        assert_eq!(be_i32(&b, 57), 2);

        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.base_offset(), 0x1020_3040_5060_7080);
        assert_eq!(v.header().batch_length(), be_i32(&b, 8));
        assert_eq!(v.partition_leader_epoch(), 0x5566_7788);
        assert_eq!(v.header().magic(), MAGIC);
        assert_eq!(v.crc(), crc32c::crc32c(&b[21..]));
        assert_eq!(v.attributes(), 0b11_0000);
        assert!(v.is_transactional() && v.is_control() && !v.has_delete_horizon());
        assert_eq!(v.compression(), Compression::None);
        assert_eq!(v.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(v.last_offset_delta(), 1);
        assert_eq!(v.last_offset(), 0x1020_3040_5060_7081);
        assert_eq!(v.next_offset(), 0x1020_3040_5060_7082);
        assert_eq!(v.base_timestamp(), 1_700_000_000_000);
        assert_eq!(v.max_timestamp(), 1_700_000_000_050);
        assert_eq!(v.producer_id(), 0x0102_0304_0506_0708);
        assert!(v.has_producer_id());
        assert_eq!(v.producer_epoch(), 0x0a0b);
        assert_eq!(v.base_sequence(), 0x1122_3344);
        assert_eq!(v.last_sequence(), 0x1122_3345);
        assert_eq!(v.record_count(), 2);
        assert_eq!(v.total_len(), b.len());
        assert_eq!(v.as_bytes(), &b[..]);
        assert_eq!(v.records_bytes(), &b[61..]);
        v.validate_records().unwrap();
    }

    #[test]
    fn header_struct_layout() {
        let mut raw = [0u8; HEADER_LEN];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        let h = BatchHeader::ref_from(&raw).unwrap();
        assert_eq!(h.base_offset(), be_i64(&raw, 0));
        assert_eq!(h.batch_length(), be_i32(&raw, 8));
        assert_eq!(h.partition_leader_epoch(), be_i32(&raw, 12));
        assert_eq!(h.magic(), 16);
        assert_eq!(h.crc(), u32::from_be_bytes(raw[17..21].try_into().unwrap()));
        assert_eq!(h.attributes(), be_i16(&raw, 21));
        assert_eq!(h.last_offset_delta(), be_i32(&raw, 23));
        assert_eq!(h.base_timestamp(), be_i64(&raw, 27));
        assert_eq!(h.max_timestamp(), be_i64(&raw, 35));
        assert_eq!(h.producer_id(), be_i64(&raw, 43));
        assert_eq!(h.producer_epoch(), be_i16(&raw, 51));
        assert_eq!(h.base_sequence(), be_i32(&raw, 53));
        assert_eq!(h.records_count(), be_i32(&raw, 57));
        assert_eq!(h.as_bytes(), &raw[..]);
        assert!(BatchHeader::ref_from(&raw[..60]).is_none());
    }

    #[test]
    fn round_trip_records() {
        let b = sample();
        let v = BatchView::parse(&b).unwrap();
        v.validate_records().unwrap();
        assert_eq!(v.base_timestamp(), 1_000);
        assert_eq!(v.max_timestamp(), 1_005);
        assert_eq!(v.last_sequence(), 102);
        let recs: Vec<_> = v.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].key, Some(&b"k0"[..]));
        assert_eq!(recs[0].value, Some(&b"v0"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[2].value, None);
        let ts: Vec<_> = recs.iter().map(|r| v.record_timestamp(r)).collect();
        assert_eq!(ts, [1_000, 1_005, 999]);
        assert_eq!(recs[2].timestamp_delta, -1);
        let offs: Vec<_> = recs.iter().map(|r| v.record_offset(r)).collect();
        assert_eq!(offs, [0, 1, 2]);
        let seqs: Vec<_> = recs.iter().map(|r| v.record_sequence(r)).collect();
        assert_eq!(seqs, [100, 101, 102]);
        let h0: Vec<_> = recs[0].headers().map(Result::unwrap).collect();
        assert_eq!(h0.len(), 1);
        assert_eq!((h0[0].key, h0[0].value), (&b"h"[..], Some(&b"x"[..])));
        let h2: Vec<_> = recs[2].headers().map(Result::unwrap).collect();
        assert_eq!(h2.len(), 2);
        assert_eq!((h2[0].key, h2[0].value), (&b"n"[..], None));
        assert_eq!((h2[1].key, h2[1].value), (&b"e"[..], Some(&b""[..])));
        assert_eq!(recs[1].headers().count(), 0);
    }

    #[test]
    fn records_compare_by_content() {
        let hs: &[(&[u8], Option<&[u8]>)] = &[(b"h", None)];
        let mut a = BatchBuilder::new();
        a.push(0, Some(b"a"), None, &[])
            .push(1, Some(b"b"), None, hs);
        let mut b = BatchBuilder::new().with_producer(1, 1, 1);
        b.push(0, Some(b"a much longer key"), None, &[])
            .push(1, Some(b"b"), None, hs);
        let (a, b) = (a.build(), b.build());
        let ra: Vec<_> = BatchView::parse(&a).unwrap().records().unwrap().collect();
        let rb: Vec<_> = BatchView::parse(&b).unwrap().records().unwrap().collect();
        assert_ne!(ra[0], rb[0]);
        assert_eq!(ra[1], rb[1]);
    }

    #[test]
    fn parse_stops_at_batch_end() {
        let a = sample();
        let mut two = a.clone();
        two.extend_from_slice(&a);
        two.extend_from_slice(b"junk");
        let v = BatchView::parse(&two).unwrap();
        assert_eq!(v.as_bytes(), &a[..]);
        let w = BatchView::parse(&two[v.total_len()..]).unwrap();
        assert_eq!(w.as_bytes(), &a[..]);
        assert_eq!(peek_batch_len(&two), Some(a.len()));
        assert!(
            BatchView::parse(&two[2 * a.len()..])
                .unwrap_err()
                .is_truncated()
        );
    }

    #[test]
    fn crc_coverage() {
        let b = sample();
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            let e = BatchView::parse(&c).unwrap_err();
            assert!(
                matches!(e.kind, FormatErrorKind::CrcMismatch { .. }) && e.position == 17,
                "byte {i}: {e}"
            );
            // Header-only parse does not look at the CRC.
            assert!(BatchView::parse_header_only(&c).is_ok());
        }
        for i in offsets::CRC..CRC_START {
            let mut c = b.clone();
            c[i] ^= 0x80;
            let e = BatchView::parse(&c).unwrap_err();
            assert!(matches!(e.kind, FormatErrorKind::CrcMismatch { .. }), "{e}");
        }
        // baseOffset and partitionLeaderEpoch are outside the CRC.
        for i in (0..8).chain(12..16) {
            let mut c = b.clone();
            c[i] ^= 0xff;
            BatchView::parse(&c).unwrap();
        }
        let mut c = b.clone();
        set_base_offset(&mut c, 123_456_789).unwrap();
        set_partition_leader_epoch(&mut c, 42).unwrap();
        let v = BatchView::parse(&c).unwrap();
        assert_eq!(
            (v.base_offset(), v.partition_leader_epoch()),
            (123_456_789, 42)
        );
        assert_eq!(v.last_offset(), 123_456_791);
        assert_eq!(
            set_base_offset(&mut [0u8; 7], 1),
            Err(FormatError::truncated(7, 8, 7))
        );
        // Magic.
        let mut c = b.clone();
        c[16] = 1;
        assert_eq!(
            BatchView::parse(&c).unwrap_err(),
            FormatError::new(FormatErrorKind::BadMagic { magic: 1 }, 16)
        );
    }

    #[test]
    fn truncation_at_every_length() {
        let b = sample();
        for n in 0..b.len() {
            let e = BatchView::parse(&b[..n]).unwrap_err();
            let needed = if n < 12 { 12 } else { b.len() };
            assert_eq!(e, FormatError::truncated(n, needed, n), "len {n}");
            assert!(
                BatchView::parse_header_only(&b[..n])
                    .unwrap_err()
                    .is_truncated()
            );
            assert_eq!(peek_batch_len(&b[..n]), (n >= 12).then_some(b.len()));
        }
    }

    #[test]
    fn bad_lengths() {
        let mut b = sample();
        for bad in [i32::MIN, -1, 0, 48, i32::MAX - 11, i32::MAX] {
            b[8..12].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                BatchView::parse(&b).unwrap_err(),
                FormatError::new(FormatErrorKind::BadLength { batch_length: bad }, 8)
            );
            assert_eq!(peek_batch_len(&b), None);
        }
        b[8..12].copy_from_slice(&(i32::MAX - 12).to_be_bytes());
        assert_eq!(peek_batch_len(&b), Some(i32::MAX as usize));
        assert!(BatchView::parse(&b).unwrap_err().is_truncated());
        b[8..12].copy_from_slice(&49i32.to_be_bytes());
        assert_eq!(peek_batch_len(&b), Some(61));
    }

    #[test]
    fn sequence_arithmetic_matches_kafka() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 4), 2);
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(decrement_sequence(0, 1), i32::MAX);
        assert_eq!(decrement_sequence(2, 4), i32::MAX - 1);
        // Hostile values wrap like Java ints and never panic.
        let _ = increment_sequence(i32::MIN, i32::MIN);
        let _ = increment_sequence(i32::MAX, i32::MAX);
        let _ = decrement_sequence(i32::MIN, i32::MAX);

        let mut bb = BatchBuilder::new().with_producer(1, 0, i32::MAX);
        bb.push(0, None, Some(b"a"), &[])
            .push(0, None, Some(b"b"), &[]);
        let b = bb.build();
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.last_offset_delta(), 1);
        assert_eq!(v.last_sequence(), 0);
        let seqs: Vec<_> = v
            .records()
            .unwrap()
            .map(|r| v.record_sequence(&r.unwrap()))
            .collect();
        assert_eq!(seqs, [i32::MAX, 0]);

        let mut bb = BatchBuilder::new();
        bb.push(0, None, None, &[]);
        let b = bb.build();
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.last_sequence(), NO_SEQUENCE);
        assert!(!v.has_producer_id());
    }

    #[test]
    fn compressed_batch_is_opaque() {
        for codec in 1..=7i16 {
            let mut b = sample();
            let attrs = be_i16(&b, 21) | codec;
            b[21..23].copy_from_slice(&attrs.to_be_bytes());
            fix_crc(&mut b);
            let v = BatchView::parse(&b).unwrap();
            let expected = match codec {
                1 => Compression::Gzip,
                2 => Compression::Snappy,
                3 => Compression::Lz4,
                4 => Compression::Zstd,
                c => Compression::Unknown(u8::try_from(c).unwrap()),
            };
            assert_eq!(v.compression(), expected);
            assert_eq!(i16::from(expected.codec()), codec);
            assert_eq!(
                v.records().unwrap_err(),
                FormatError::new(
                    FormatErrorKind::UnsupportedCompression {
                        codec: u8::try_from(codec).unwrap()
                    },
                    21
                )
            );
            v.validate_records().unwrap();
            // Compressed checks: count >= 1 and lastOffsetDelta >= 0.
            let mut c = b.clone();
            c[23..27].copy_from_slice(&(-1i32).to_be_bytes());
            fix_crc(&mut c);
            let e = BatchView::parse(&c)
                .unwrap()
                .validate_records()
                .unwrap_err();
            assert!(matches!(
                e.kind,
                FormatErrorKind::OffsetDeltaMismatch { .. }
            ));
            let mut c = b.clone();
            c[57..61].copy_from_slice(&0i32.to_be_bytes());
            fix_crc(&mut c);
            let e = BatchView::parse(&c)
                .unwrap()
                .validate_records()
                .unwrap_err();
            assert_eq!(e.kind, FormatErrorKind::EmptyBatch);
        }
    }

    #[test]
    fn empty_builder() {
        let bb = BatchBuilder::new();
        assert!(bb.is_empty());
        assert_eq!(bb.record_count(), 0);
        assert_eq!(bb.encoded_len(), HEADER_LEN);
        let b = bb.build();
        assert_eq!(b.len(), HEADER_LEN);
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.record_count(), 0);
        assert_eq!(v.last_offset_delta(), -1);
        assert_eq!(v.last_offset(), -1);
        assert_eq!(v.base_timestamp(), NO_TIMESTAMP);
        assert_eq!(v.max_timestamp(), NO_TIMESTAMP);
        assert_eq!(v.partition_leader_epoch(), -1);
        assert_eq!(v.producer_id(), NO_PRODUCER_ID);
        assert_eq!(v.producer_epoch(), NO_PRODUCER_EPOCH);
        assert_eq!(v.base_sequence(), NO_SEQUENCE);
        assert_eq!(v.records().unwrap().count(), 0);
        assert_eq!(
            v.validate_records().unwrap_err(),
            FormatError::new(FormatErrorKind::EmptyBatch, 57)
        );
    }

    #[test]
    fn builder_attributes_toggle() {
        let b = BatchBuilder::default()
            .with_control(true)
            .with_control(false)
            .with_transactional(true)
            .with_timestamp_type(TimestampType::LogAppendTime);
        let mut b2 = b.clone();
        b2.push(10, None, None, &[]).push(20, None, None, &[]);
        let bytes = b2.build();
        let v = BatchView::parse(&bytes).unwrap();
        assert!(!v.is_control() && v.is_transactional());
        assert_eq!(v.timestamp_type(), TimestampType::LogAppendTime);
        // LogAppendTime: every record reports maxTimestamp.
        for r in v.records().unwrap() {
            assert_eq!(v.record_timestamp(&r.unwrap()), 20);
        }
        let b3 = b.with_timestamp_type(TimestampType::CreateTime).build();
        assert_eq!(
            BatchView::parse(&b3).unwrap().timestamp_type(),
            TimestampType::CreateTime
        );
    }

    #[test]
    fn builder_extreme_timestamps_round_trip() {
        let mut bb = BatchBuilder::new();
        bb.push(i64::MAX, None, None, &[])
            .push(i64::MIN, None, None, &[])
            .push(0, None, None, &[]);
        let b = bb.build();
        let v = BatchView::parse(&b).unwrap();
        v.validate_records().unwrap();
        let ts: Vec<_> = v
            .records()
            .unwrap()
            .map(|r| v.record_timestamp(&r.unwrap()))
            .collect();
        assert_eq!(ts, [i64::MAX, i64::MIN, 0]);
        assert_eq!(v.max_timestamp(), i64::MAX);
    }

    #[test]
    fn validate_records_checks_max_timestamp() {
        let mut b = sample();
        BatchView::parse(&b).unwrap().validate_records().unwrap();
        b[offsets::MAX_TIMESTAMP..offsets::PRODUCER_ID].copy_from_slice(&2_000i64.to_be_bytes());
        fix_crc(&mut b);
        let e = BatchView::parse(&b)
            .unwrap()
            .validate_records()
            .unwrap_err();
        assert_eq!(e.position, offsets::MAX_TIMESTAMP);
        // LogAppendTime batches carry the broker's time in maxTimestamp.
        let attrs = (ATTR_TIMESTAMP_TYPE).to_be_bytes();
        b[offsets::ATTRIBUTES..offsets::LAST_OFFSET_DELTA].copy_from_slice(&attrs);
        fix_crc(&mut b);
        BatchView::parse(&b).unwrap().validate_records().unwrap();
    }

    #[test]
    fn validate_records_errors() {
        // Good: gaps are allowed (compaction), deltas strictly increasing.
        let b = raw_batch(&[0, 2, 5], 3, 5);
        BatchView::parse(&b).unwrap().validate_records().unwrap();

        let b = raw_batch(&[0, 1, 1], 3, 1);
        let e = BatchView::parse(&b)
            .unwrap()
            .validate_records()
            .unwrap_err();
        assert_eq!(
            e.kind,
            FormatErrorKind::NonMonotonicOffsetDelta {
                previous: 1,
                found: 1
            }
        );
        // Position: start of the third record (each record is 8 bytes).
        assert_eq!(e.position, 61 + 2 * 8);

        let b = raw_batch(&[-1], 1, -1);
        let e = BatchView::parse(&b)
            .unwrap()
            .validate_records()
            .unwrap_err();
        assert_eq!(e.position, 61);
        assert!(matches!(
            e.kind,
            FormatErrorKind::NonMonotonicOffsetDelta { .. }
        ));

        let b = raw_batch(&[0, 1], 2, 2);
        let e = BatchView::parse(&b)
            .unwrap()
            .validate_records()
            .unwrap_err();
        assert_eq!(
            e,
            FormatError::new(
                FormatErrorKind::OffsetDeltaMismatch {
                    header: 2,
                    found: 1
                },
                23
            )
        );

        let b = raw_batch(&[0, 1], 3, 1);
        let e = BatchView::parse(&b)
            .unwrap()
            .validate_records()
            .unwrap_err();
        assert_eq!(
            e,
            FormatError::new(
                FormatErrorKind::RecordCountMismatch {
                    header: 3,
                    found: 2
                },
                b.len()
            )
        );

        let b = raw_batch(&[0, 1], 1, 0);
        let e = BatchView::parse(&b)
            .unwrap()
            .validate_records()
            .unwrap_err();
        assert_eq!(
            e,
            FormatError::bad_record(61 + 8, "trailing bytes after the last record")
        );

        let b = raw_batch(&[0], -1, 0);
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(
            v.validate_records().unwrap_err(),
            FormatError::bad_record(57, "negative record count")
        );
        assert!(v.records().is_err());

        // A record cut short by the batch end.
        let mut b = raw_batch(&[0, 1], 2, 1);
        b.pop();
        let len = i32::try_from(b.len() - 12).unwrap();
        b[8..12].copy_from_slice(&len.to_be_bytes());
        fix_crc(&mut b);
        let v = BatchView::parse(&b).unwrap();
        let e = v.validate_records().unwrap_err();
        assert!(e.is_truncated(), "{e}");
        let items: Vec<_> = v.records().unwrap().collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok() && items[1].is_err());
    }

    #[test]
    fn try_push_limits() {
        let mut bb = BatchBuilder::new();
        bb.count = i32::MAX;
        let e = bb.try_push(0, None, None, &[]).unwrap_err();
        assert!(matches!(e.kind, FormatErrorKind::TooLarge { .. }));
        assert!(e.to_string().contains("record count"));
    }

    #[test]
    fn debug_output_is_compact() {
        let b = sample();
        let s = format!("{:?}", BatchView::parse(&b).unwrap());
        assert!(s.contains("record_count: 3"), "{s}");
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
    }

    type ArbRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn arb_record() -> impl Strategy<Value = ArbRecord> {
        (
            any::<i64>(),
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..10), arb_bytes()),
                0..4,
            ),
        )
    }

    /// Everything a parser may be asked to do with a byte slice.
    fn exercise(bytes: &[u8]) {
        let _ = peek_batch_len(bytes);
        for view in [BatchView::parse(bytes), BatchView::parse_header_only(bytes)]
            .into_iter()
            .flatten()
        {
            assert!(view.total_len() <= bytes.len());
            let _ = (view.last_offset(), view.last_sequence(), view.compression());
            let checked = view.validate_records();
            if view.compression() == Compression::None && view.record_count() > 0 {
                // The one-pass check accepts exactly what the record-by-record
                // one accepts.
                assert_eq!(
                    view.records_are_valid(),
                    view.check_records_one_by_one().is_ok(),
                    "{bytes:?}"
                );
                assert_eq!(checked.is_ok(), view.records_are_valid());
            }
            if let Ok(iter) = view.records() {
                for rec in iter.take(10_000) {
                    let Ok(rec) = rec else { break };
                    let _ = (view.record_timestamp(&rec), view.record_offset(&rec));
                    let _ = view.record_sequence(&rec);
                    for h in rec.headers() {
                        assert!(h.is_ok(), "headers of a decoded record are valid");
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            exercise(&bytes);
        }

        /// Random record bytes behind a plausible header with a valid CRC, so
        /// that record decoding is reached.
        #[test]
        fn arbitrary_records_region_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            count in prop_oneof![Just(1i32), Just(2), Just(3), any::<i32>()],
        ) {
            let mut b = BatchBuilder::new().build();
            b.extend_from_slice(&body);
            let len = i32::try_from(b.len() - 12).unwrap();
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            fix_crc(&mut b);
            prop_assert!(BatchView::parse(&b).is_ok());
            exercise(&b);
        }

        /// Single-byte mutations of a valid batch, CRC re-fixed.
        #[test]
        fn mutated_valid_batch_never_panics(idx in 0usize..1000, val in any::<u8>()) {
            let mut b = sample();
            let i = idx % b.len();
            b[i] = val;
            if b.len() > CRC_START {
                fix_crc(&mut b);
            }
            exercise(&b);
        }

        /// Two mutations of the records of a valid batch (lengths, deltas,
        /// headers) with the length and CRC fixed up: the one-pass record
        /// check must agree with the record-by-record one.
        #[test]
        fn mutated_records_are_judged_alike(
            edits in proptest::collection::vec((61usize..200, any::<u8>()), 1..3),
            cut in 0usize..8,
            ts in prop_oneof![Just(false), Just(true)],
        ) {
            let mut b = sample();
            for (at, val) in edits {
                let i = HEADER_LEN + (at - HEADER_LEN) % (b.len() - HEADER_LEN);
                b[i] = val;
            }
            b.truncate(b.len() - cut.min(b.len() - HEADER_LEN));
            let len = i32::try_from(b.len() - 12).unwrap();
            b[8..12].copy_from_slice(&len.to_be_bytes());
            if ts {
                b[offsets::ATTRIBUTES + 1] |= ATTR_TIMESTAMP_TYPE as u8;
            }
            fix_crc(&mut b);
            exercise(&b);
        }

        #[test]
        fn build_parse_round_trip(
            recs in proptest::collection::vec(arb_record(), 0..12),
            pid in any::<i64>(), epoch in any::<i16>(), seq in any::<i32>(),
            ple in any::<i32>(), txn in any::<bool>(), ctl in any::<bool>(),
        ) {
            let mut bb = BatchBuilder::new()
                .with_producer(pid, epoch, seq)
                .with_partition_leader_epoch(ple)
                .with_transactional(txn)
                .with_control(ctl);
            for (ts, k, v, hs) in &recs {
                let hs: Hdrs<'_> = hs.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                bb.push(*ts, k.as_deref(), v.as_deref(), &hs);
            }
            prop_assert_eq!(bb.record_count(), recs.len());
            let expected_len = bb.encoded_len();
            let b = bb.build();
            prop_assert_eq!(b.len(), expected_len);
            let v = BatchView::parse(&b).unwrap();
            prop_assert_eq!(v.total_len(), b.len());
            prop_assert_eq!(v.record_count(), i32::try_from(recs.len()).unwrap());
            prop_assert_eq!(v.producer_id(), pid);
            prop_assert_eq!(v.producer_epoch(), epoch);
            prop_assert_eq!(v.base_sequence(), seq);
            prop_assert_eq!(v.partition_leader_epoch(), ple);
            prop_assert_eq!(v.is_transactional(), txn);
            prop_assert_eq!(v.is_control(), ctl);
            if recs.is_empty() {
                prop_assert_eq!(v.validate_records().unwrap_err().kind, FormatErrorKind::EmptyBatch);
            } else {
                v.validate_records().unwrap();
                prop_assert_eq!(v.base_timestamp(), recs[0].0);
                prop_assert_eq!(v.max_timestamp(), recs.iter().map(|r| r.0).max().unwrap());
            }
            let decoded: Vec<_> = v.records().unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(decoded.len(), recs.len());
            for (i, (rec, (ts, k, val, hs))) in decoded.iter().zip(&recs).enumerate() {
                prop_assert_eq!(v.record_offset(rec), i64::try_from(i).unwrap());
                prop_assert_eq!(v.record_timestamp(rec), *ts);
                prop_assert_eq!(rec.key, k.as_deref());
                prop_assert_eq!(rec.value, val.as_deref());
                let got: Vec<_> = rec.headers().map(Result::unwrap).collect();
                prop_assert_eq!(got.len(), hs.len());
                for (g, (hk, hv)) in got.iter().zip(hs) {
                    prop_assert_eq!(g.key, &hk[..]);
                    prop_assert_eq!(g.value, hv.as_deref());
                }
            }
        }
    }
}
