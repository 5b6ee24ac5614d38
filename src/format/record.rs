//! Zero-copy decoding and encoding of the records inside an uncompressed
//! Kafka v2 batch (`DefaultRecord.java`):
//!
//! ```text
//! length         varint   bytes after this field (the record body)
//! attributes     int8     unused, written as 0
//! timestampDelta varlong  record timestamp - batch baseTimestamp
//! offsetDelta    varint   record offset - batch baseOffset
//! keyLength      varint   -1 = null key
//! key            bytes
//! valueLength    varint   -1 = null value
//! value          bytes
//! headersCount   varint   >= 0
//! headers        [headerKeyLength varint (>= 0), headerKey bytes,
//!                 headerValueLength varint (-1 = null), headerValue bytes]
//! ```
//!
//! Invariants:
//! - A [`Record`] borrows from the batch bytes; nothing is copied.
//! - A record is accepted only if every field, including every header, fits
//!   inside its declared `length` and the fields consume exactly `length`
//!   bytes (as Kafka's `DefaultRecord.readFrom` checks). Header keys are never
//!   null; lengths below -1 are rejected. Header keys are not checked to be
//!   UTF-8 (Kafka's Java client requires it; this crate treats them as bytes).
//! - Because headers are validated when the record is decoded,
//!   [`Record::headers`] on a record obtained from [`RecordIter`] never
//!   yields an error.
//! - [`RecordIter`] yields at most `recordsCount` items, and is fused: after
//!   the first error it yields `None`. Error positions are relative to the
//!   start of the batch.
//! - Nothing here panics on any input.

use super::varint::{
    decode_varint, decode_varlong, encode_varint, encode_varlong, varint_len, varlong_len,
};
use super::{FormatError, FormatErrorKind, FormatResult};

/// One record of an uncompressed batch, borrowed from the batch bytes.
///
/// The batch-level base offset and timestamp are not part of the record; use
/// [`BatchView::record_offset`](super::BatchView::record_offset) and
/// [`BatchView::record_timestamp`](super::BatchView::record_timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Record attributes byte (unused by Kafka, normally 0).
    pub attributes: i8,
    /// Timestamp relative to the batch's `baseTimestamp`.
    pub timestamp_delta: i64,
    /// Offset relative to the batch's `baseOffset`.
    pub offset_delta: i32,
    /// Key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` when null.
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: i32,
}

/// One record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header key (never null in the format).
    pub key: &'a [u8],
    /// Header value, `None` when null.
    pub value: Option<&'a [u8]>,
}

impl<'a> Record<'a> {
    /// Number of headers of this record.
    #[must_use]
    pub const fn header_count(&self) -> i32 {
        self.header_count
    }

    /// The encoded headers (everything after `headersCount`).
    #[must_use]
    pub const fn headers_raw(&self) -> &'a [u8] {
        self.headers_raw
    }

    /// Iterates over the headers in stored order.
    ///
    /// Headers were validated when the record was decoded, so for a record
    /// obtained from [`RecordIter`] this never yields an error; the `Result`
    /// items keep the door open for lazily decoded sources. Error positions
    /// would be relative to [`headers_raw`](Self::headers_raw).
    #[must_use]
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            cur: Cursor::new(self.headers_raw, 0, self.headers_raw.len()),
            remaining: self.header_count,
        }
    }
}

/// Iterator over the headers of a [`Record`]; fused after the first error.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    cur: Cursor<'a>,
    remaining: i32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = FormatResult<Header<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        match read_header(&mut self.cur) {
            Ok(h) => {
                self.remaining -= 1;
                Some(Ok(h))
            }
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(0);
        (0, Some(n))
    }
}

impl std::iter::FusedIterator for HeaderIter<'_> {}

/// Bounded reader over `buf[pos..end]`; positions are indices into `buf`.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, end: usize) -> Self {
        let end = end.min(buf.len());
        Self {
            buf,
            pos: pos.min(end),
            end,
        }
    }

    pub(crate) const fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or(&[])
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    #[inline]
    fn i8(&mut self) -> FormatResult<i8> {
        let b = *self
            .rest()
            .first()
            .ok_or_else(|| FormatError::truncated(self.pos, 1, 0))?;
        self.pos += 1;
        Ok(i8::from_be_bytes([b]))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> FormatResult<i32> {
        let (v, n) = decode_varint(self.rest()).map_err(|e| e.shifted(self.pos))?;
        self.pos += n;
        Ok(v)
    }

    #[inline]
    fn varlong(&mut self) -> FormatResult<i64> {
        let (v, n) = decode_varlong(self.rest()).map_err(|e| e.shifted(self.pos))?;
        self.pos += n;
        Ok(v)
    }

    /// Takes `len` bytes.
    #[inline]
    fn bytes(&mut self, len: usize) -> FormatResult<&'a [u8]> {
        let avail = self.remaining();
        if len > avail {
            return Err(FormatError::truncated(self.pos, len, avail));
        }
        let out = self.rest().get(..len).unwrap_or(&[]);
        self.pos += len;
        Ok(out)
    }

    /// Reads a varint length followed by that many bytes; -1 is null.
    #[inline]
    fn nullable_bytes(&mut self, what: &'static str) -> FormatResult<Option<&'a [u8]>> {
        let at = self.pos;
        let len = self.varint()?;
        match len {
            -1 => Ok(None),
            l if l < -1 => Err(FormatError::bad_record(at, what)),
            l => self.bytes(l.unsigned_abs() as usize).map(Some),
        }
    }
}

fn read_header<'a>(cur: &mut Cursor<'a>) -> FormatResult<Header<'a>> {
    let at = cur.pos();
    let key_len = cur.varint()?;
    if key_len < 0 {
        return Err(FormatError::bad_record(at, "negative header key length"));
    }
    let key = cur.bytes(key_len.unsigned_abs() as usize)?;
    let value = cur.nullable_bytes("header value length below -1")?;
    Ok(Header { key, value })
}

/// Decodes one record starting at `pos` in `batch`, reading no further than
/// `end`. Returns the record and the position just after it.
pub(crate) fn decode_record(
    batch: &[u8],
    pos: usize,
    end: usize,
) -> FormatResult<(Record<'_>, usize)> {
    let mut outer = Cursor::new(batch, pos, end);
    let len_at = outer.pos();
    let len = outer.varint()?;
    if len < 0 {
        return Err(FormatError::bad_record(len_at, "negative record length"));
    }
    let body_len = len.unsigned_abs() as usize;
    let body_start = outer.pos();
    // Ensure the whole body is present before decoding it.
    outer.bytes(body_len)?;
    let body_end = outer.pos();
    let mut cur = Cursor::new(batch, body_start, body_end);

    let attributes = cur.i8()?;
    let timestamp_delta = cur.varlong()?;
    let offset_delta = cur.varint()?;
    let key = cur.nullable_bytes("key length below -1")?;
    let value = cur.nullable_bytes("value length below -1")?;
    let count_at = cur.pos();
    let header_count = cur.varint()?;
    if header_count < 0 {
        return Err(FormatError::bad_record(count_at, "negative header count"));
    }
    let headers_pos = cur.pos();
    for _ in 0..header_count {
        read_header(&mut cur)?;
    }
    let headers_raw = batch.get(headers_pos..cur.pos()).unwrap_or(&[]);
    if cur.pos() != body_end {
        return Err(FormatError::bad_record(
            cur.pos(),
            "record fields end before the record length",
        ));
    }
    Ok((
        Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers_raw,
            header_count,
        },
        body_end,
    ))
}

/// Iterator over the records of an uncompressed batch, created by
/// [`BatchView::records`](super::BatchView::records).
///
/// Yields exactly `recordsCount` records, or fewer followed by one error
/// ([`FormatErrorKind::RecordCountMismatch`] if the batch ends at a record
/// boundary, otherwise the decoding error). Fused: `None` after an error.
/// Does not check for bytes after the last record; see
/// [`BatchView::validate_records`](super::BatchView::validate_records).
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    batch: &'a [u8],
    pos: usize,
    header_count: i32,
    yielded: i32,
    done: bool,
}

impl<'a> RecordIter<'a> {
    /// Iterates over `count` records found in `batch[start..]` (positions in
    /// errors are indices into `batch`).
    pub(crate) fn new(batch: &'a [u8], start: usize, count: i32) -> Self {
        Self {
            batch,
            pos: start.min(batch.len()),
            header_count: count,
            yielded: 0,
            done: count <= 0,
        }
    }

    /// Position (relative to the batch start) where the next record begins.
    #[must_use]
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Number of records yielded so far.
    #[must_use]
    pub const fn yielded(&self) -> i32 {
        self.yielded
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = FormatResult<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.pos >= self.batch.len() {
            self.done = true;
            return Some(Err(FormatError::new(
                FormatErrorKind::RecordCountMismatch {
                    header: self.header_count,
                    found: self.yielded,
                },
                self.pos,
            )));
        }
        match decode_record(self.batch, self.pos, self.batch.len()) {
            Ok((rec, next)) => {
                self.pos = next;
                self.yielded += 1;
                if self.yielded >= self.header_count {
                    self.done = true;
                }
                Some(Ok(rec))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        let left = self.header_count.saturating_sub(self.yielded);
        (0, Some(usize::try_from(left).unwrap_or(0)))
    }
}

impl std::iter::FusedIterator for RecordIter<'_> {}

/// Encoded size of a record body (everything after the `length` varint).
pub(crate) fn body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> FormatResult<usize> {
    let add = |n: usize, m: usize| n.checked_add(m).ok_or_else(too_large_record);
    let mut n: usize = 1 + varlong_len(timestamp_delta) + varint_len(offset_delta);
    n = add(n, nullable_len(key, "record key")?)?;
    n = add(n, nullable_len(value, "record value")?)?;
    n = add(n, varint_len(i32_len(headers.len(), "header count")?))?;
    for (k, v) in headers {
        n = add(n, nullable_len(Some(k), "header key")?)?;
        n = add(n, nullable_len(*v, "header value")?)?;
    }
    if n > i32::MAX as usize {
        return Err(FormatError::new(
            FormatErrorKind::TooLarge {
                what: "record",
                len: n,
                max: i32::MAX as usize,
            },
            0,
        ));
    }
    Ok(n)
}

const fn too_large_record() -> FormatError {
    FormatError::new(
        FormatErrorKind::TooLarge {
            what: "record",
            len: usize::MAX,
            max: i32::MAX as usize,
        },
        0,
    )
}

fn i32_len(len: usize, what: &'static str) -> FormatResult<i32> {
    i32::try_from(len).map_err(|_| {
        FormatError::new(
            FormatErrorKind::TooLarge {
                what,
                len,
                max: i32::MAX as usize,
            },
            0,
        )
    })
}

fn nullable_len(b: Option<&[u8]>, what: &'static str) -> FormatResult<usize> {
    match b {
        None => Ok(1),
        Some(b) => {
            let l = i32_len(b.len(), what)?;
            Ok(varint_len(l) + b.len())
        }
    }
}

fn put_nullable(b: Option<&[u8]>, out: &mut Vec<u8>) {
    match b {
        None => encode_varint(-1, out),
        Some(b) => {
            // Length was checked by `body_len`.
            encode_varint(i32::try_from(b.len()).unwrap_or(i32::MAX), out);
            out.extend_from_slice(b);
        }
    }
}

/// Appends one encoded record (length prefix included). `body` must be the
/// value returned by [`body_len`] for the same arguments.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    body: usize,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) {
    encode_varint(i32::try_from(body).unwrap_or(i32::MAX), out);
    out.push(0); // attributes
    encode_varlong(timestamp_delta, out);
    encode_varint(offset_delta, out);
    put_nullable(key, out);
    put_nullable(value, out);
    encode_varint(i32::try_from(headers.len()).unwrap_or(i32::MAX), out);
    for (k, v) in headers {
        put_nullable(Some(k), out);
        put_nullable(*v, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        ts: i64,
        od: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Vec<u8> {
        let body = body_len(ts, od, key, value, headers).unwrap();
        let mut out = Vec::new();
        encode_record(&mut out, body, ts, od, key, value, headers);
        assert_eq!(out.len(), varint_len(body as i32) + body);
        out
    }

    #[test]
    fn kafka_reference_bytes() {
        // The record from kafka-protocol's doc example: key "hello",
        // value "world", timestampDelta 1000, offsetDelta 1, no headers.
        let bytes = encode(1000, 1, Some(b"hello"), Some(b"world"), &[]);
        assert_eq!(
            bytes,
            [
                0x22, 0x00, 0xd0, 0x0f, 0x02, 0x0a, b'h', b'e', b'l', b'l', b'o', 0x0a, b'w', b'o',
                b'r', b'l', b'd', 0x00
            ]
        );
    }

    #[test]
    fn round_trip_with_nulls_and_headers() {
        let headers: &[(&[u8], Option<&[u8]>)] =
            &[(b"a", Some(&b"1"[..])), (b"", None), (b"c", Some(&b""[..]))];
        let bytes = encode(-5, 3, None, Some(b""), headers);
        let (rec, end) = decode_record(&bytes, 0, bytes.len()).unwrap();
        assert_eq!(end, bytes.len());
        assert_eq!(rec.timestamp_delta, -5);
        assert_eq!(rec.offset_delta, 3);
        assert_eq!(rec.key, None);
        assert_eq!(rec.value, Some(&b""[..]));
        assert_eq!(rec.header_count(), 3);
        let hs: Vec<_> = rec.headers().map(Result::unwrap).collect();
        assert_eq!(
            hs,
            vec![
                Header {
                    key: b"a",
                    value: Some(&b"1"[..])
                },
                Header {
                    key: b"",
                    value: None
                },
                Header {
                    key: b"c",
                    value: Some(&b""[..])
                },
            ]
        );
    }

    #[test]
    fn record_length_must_match_fields() {
        let mut bytes = encode(0, 0, Some(b"k"), None, &[]);
        // Grow the declared length by one and append a junk byte.
        bytes[0] += 2; // zig-zag: +1
        bytes.push(0);
        let e = decode_record(&bytes, 0, bytes.len()).unwrap_err();
        assert_eq!(
            e.kind,
            FormatErrorKind::BadRecord {
                detail: "record fields end before the record length"
            }
        );
        // Shrink it: the header count varint is now outside the body.
        let mut bytes = encode(0, 0, Some(b"k"), None, &[]);
        bytes[0] -= 2;
        let e = decode_record(&bytes, 0, bytes.len()).unwrap_err();
        assert!(e.is_truncated(), "{e}");
    }

    #[test]
    fn bad_lengths_rejected() {
        // key length -2
        let bytes = [0x0a, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00];
        let e = decode_record(&bytes, 0, bytes.len()).unwrap_err();
        assert_eq!(e, FormatError::bad_record(4, "key length below -1"));
        // negative record length
        let e = decode_record(&[0x01], 0, 1).unwrap_err();
        assert_eq!(e, FormatError::bad_record(0, "negative record length"));
        // null header key
        let bytes = [0x10, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x01, 0x01];
        let e = decode_record(&bytes, 0, bytes.len()).unwrap_err();
        assert_eq!(e, FormatError::bad_record(7, "negative header key length"));
        // negative header count
        let bytes = [0x0c, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01];
        let e = decode_record(&bytes, 0, bytes.len()).unwrap_err();
        assert_eq!(e, FormatError::bad_record(6, "negative header count"));
    }

    #[test]
    fn iterator_counts_and_fuses() {
        let mut batch = vec![0u8; 3]; // pretend prefix
        batch.extend(encode(0, 0, None, None, &[]));
        batch.extend(encode(1, 1, None, None, &[]));
        let recs: Vec<_> = RecordIter::new(&batch, 3, 2).collect();
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(Result::is_ok));
        let mut it = RecordIter::new(&batch, 3, 3);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        let e = it.next().unwrap().unwrap_err();
        assert_eq!(
            e.kind,
            FormatErrorKind::RecordCountMismatch {
                header: 3,
                found: 2
            }
        );
        assert_eq!(e.position, batch.len());
        assert!(it.next().is_none());
        assert_eq!(RecordIter::new(&batch, 3, 0).count(), 0);
        assert_eq!(RecordIter::new(&batch, 3, -4).count(), 0);
    }
}
