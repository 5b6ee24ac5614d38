//! Producer-state checkpoints: a control batch of our own type, stored in the
//! log between record batches (docs/format.md, "Checkpoint batches").
//!
//! The batch is an ordinary Kafka v2 batch (CRC-32C, magic 2) with the
//! control attribute set, no producer (`-1/-1/-1`), timestamps `-1`, and one
//! record. The record's key follows Kafka's control-record key layout,
//! `{version: i16 = 0, type: i16 = CHECKPOINT_TYPE}`; its value is the
//! producer table:
//!
//! | field                 | encoding                                          |
//! |-----------------------|---------------------------------------------------|
//! | version               | u8 = 1                                            |
//! | written_at_ms         | i64 (engine clock)                                |
//! | count                 | u32, number of producers                          |
//! | per producer (×count, each id once, any order):                            |
//! | producer_id           | i64                                               |
//! | epoch                 | i16                                               |
//! | idle_ms               | varlong: `written_at_ms - last_append_ms`         |
//! | n                     | u8, batches in the window (≤ 64)                  |
//! | per batch (×n, oldest first):                                             |
//! | last_seq              | i32                                               |
//! | delta                 | varint: `lastOffsetDelta` of the batch            |
//! | last_offset           | varlong: absolute for the first batch, then the   |
//! |                       | difference from the previous batch's last offset  |
//!
//! Fixed-width integers are big-endian; varints are Kafka's zig-zag varints.

use super::batch::{BatchBuilder, BatchView, NO_TIMESTAMP};
use super::varint::{decode_varint, decode_varlong, encode_varint, encode_varlong};
use super::{FormatError, FormatErrorKind, FormatResult};

/// Control-record type of a checkpoint (Kafka uses 0..=6 for its own
/// markers; `0x6F6C` is "ol").
pub const CHECKPOINT_TYPE: i16 = 0x6F6C;

/// Version of the checkpoint value layout.
pub const CHECKPOINT_VERSION: u8 = 1;

/// Largest window a checkpoint can hold per producer.
pub const MAX_WINDOW: usize = 64;

const KEY: [u8; 4] = {
    let t = CHECKPOINT_TYPE.to_be_bytes();
    [0, 0, t[0], t[1]]
};

/// One batch of a producer's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowBatch {
    /// Sequence of the batch's last record.
    pub last_seq: i32,
    /// `lastOffsetDelta` of the batch (records − 1; also its sequence span).
    pub delta: i32,
    /// Offset of the batch's last record.
    pub last_offset: i64,
}

impl WindowBatch {
    /// Sequence of the batch's first record.
    pub fn first_seq(&self) -> i32 {
        super::batch::decrement_sequence(self.last_seq, self.delta)
    }

    /// Offset of the batch's first record.
    pub fn first_offset(&self) -> i64 {
        self.last_offset - i64::from(self.delta)
    }
}

/// A producer as recorded in a checkpoint, with its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointProducer<'a> {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// Its last append, engine clock, ms since the Unix epoch.
    pub last_append_ms: i64,
    /// Its last batches, oldest first.
    pub window: &'a [WindowBatch],
}

/// Encodes a checkpoint value one producer at a time.
#[derive(Debug)]
pub struct CheckpointEncoder {
    out: Vec<u8>,
    written_at_ms: i64,
    count: u32,
}

impl CheckpointEncoder {
    /// Start a checkpoint written at `written_at_ms`, with room for about
    /// `producers` producers.
    pub fn new(written_at_ms: i64, producers: usize) -> Self {
        let mut out = Vec::with_capacity(13 + producers.saturating_mul(48));
        out.push(CHECKPOINT_VERSION);
        out.extend_from_slice(&written_at_ms.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        CheckpointEncoder {
            out,
            written_at_ms,
            count: 0,
        }
    }

    /// Add one producer; its window is given oldest first (at most the last
    /// 64 batches are kept). Producers past `u32::MAX` are dropped.
    pub fn push(
        &mut self,
        producer_id: i64,
        epoch: i16,
        last_append_ms: i64,
        window: impl ExactSizeIterator<Item = WindowBatch>,
    ) {
        let Some(count) = self.count.checked_add(1) else {
            return;
        };
        self.count = count;
        let out = &mut self.out;
        out.extend_from_slice(&producer_id.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        encode_varlong(self.written_at_ms.saturating_sub(last_append_ms), out);
        let skip = window.len().saturating_sub(MAX_WINDOW);
        out.push((window.len() - skip) as u8);
        let mut prev = 0i64;
        for w in window.skip(skip) {
            out.extend_from_slice(&w.last_seq.to_be_bytes());
            encode_varint(w.delta, out);
            encode_varlong(w.last_offset.wrapping_sub(prev), out);
            prev = w.last_offset;
        }
    }

    /// The encoded value.
    pub fn finish(mut self) -> Vec<u8> {
        self.out[9..13].copy_from_slice(&self.count.to_be_bytes());
        self.out
    }
}

/// Encode the checkpoint value for `producers` as written at `written_at_ms`.
pub fn encode_checkpoint_value<'a>(
    written_at_ms: i64,
    producers: impl ExactSizeIterator<Item = CheckpointProducer<'a>>,
) -> Vec<u8> {
    let mut enc = CheckpointEncoder::new(written_at_ms, producers.len());
    for p in producers {
        enc.push(
            p.producer_id,
            p.epoch,
            p.last_append_ms,
            p.window.iter().copied(),
        );
    }
    enc.finish()
}

/// Build the whole checkpoint batch (base offset 0; the log assigns it), or
/// [`FormatErrorKind::TooLarge`] if it would not fit a batch (2 GiB).
pub fn build_checkpoint_batch(value: &[u8]) -> FormatResult<Vec<u8>> {
    let mut b = BatchBuilder::with_capacity(value.len() + 16).with_control(true);
    b.try_push(NO_TIMESTAMP, Some(&KEY), Some(value), &[])?;
    Ok(b.build())
}

/// Decode the checkpoint batch `view` (CRC already checked by the caller's
/// parse), calling `each` per producer, and check it against its own
/// position in the log: every window offset lies before the checkpoint's
/// offset and no producer appears twice. Returns `written_at_ms`.
pub fn decode_checkpoint(
    view: &BatchView<'_>,
    mut each: impl FnMut(CheckpointProducer<'_>),
) -> FormatResult<i64> {
    let mut ids = std::collections::HashSet::new();
    decode_checkpoint_unique(view, |p| {
        let new = ids.insert(p.producer_id);
        if new {
            each(p);
        }
        new
    })
}

/// Like [`decode_checkpoint`], for a caller that detects repeated producer
/// ids itself (as it stores them): `each` returns `false` for an id it has
/// seen before, which makes the checkpoint invalid.
pub fn decode_checkpoint_unique(
    view: &BatchView<'_>,
    mut each: impl FnMut(CheckpointProducer<'_>) -> bool,
) -> FormatResult<i64> {
    let value = checkpoint_value(view)?;
    let at = view.base_offset();
    let mut bad = None;
    let written = decode_checkpoint_value(value, |p| {
        if bad.is_some() {
            return;
        }
        if p.window.last().is_some_and(|w| w.last_offset >= at) {
            bad = Some("a window offset at or after the checkpoint itself");
        } else if !each(p) {
            bad = Some("a producer listed twice");
        }
    })?;
    match bad {
        Some(detail) => Err(FormatError::new(FormatErrorKind::BadRecord { detail }, 0)),
        None => Ok(written),
    }
}

/// The number of producers a checkpoint batch claims to hold, bounded by
/// what its bytes can hold (12 bytes per producer at least), so that a
/// caller may reserve room for them.
pub fn checkpoint_capacity(view: &BatchView<'_>) -> FormatResult<usize> {
    let value = checkpoint_value(view)?;
    let count = value
        .get(9..13)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Ok((count as usize).min(value.len() / 12))
}

/// True if `view` is a checkpoint batch (by its header and record key; the
/// CRC is the caller's business).
pub fn is_checkpoint(view: &BatchView<'_>) -> bool {
    view.is_control() && checkpoint_value(view).is_ok()
}

/// The checkpoint value inside a checkpoint batch.
pub fn checkpoint_value<'a>(view: &BatchView<'a>) -> FormatResult<&'a [u8]> {
    let bad = |detail| FormatError::new(FormatErrorKind::BadRecord { detail }, 0);
    if !view.is_control() || view.record_count() != 1 {
        return Err(bad("not a checkpoint batch"));
    }
    let rec = view
        .records()?
        .next()
        .ok_or_else(|| bad("checkpoint batch without a record"))??;
    if rec.key != Some(&KEY[..]) {
        return Err(bad("control record of another type"));
    }
    rec.value.ok_or_else(|| bad("checkpoint without a value"))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> FormatResult<&'a [u8]> {
        let s = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| {
                FormatError::new(
                    FormatErrorKind::Truncated {
                        needed: n,
                        available: self.buf.len().saturating_sub(self.pos),
                    },
                    self.pos,
                )
            })?;
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> FormatResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn varint(&mut self) -> FormatResult<i32> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let (v, n) = decode_varint(rest).map_err(|e| e.shifted(self.pos))?;
        self.pos += n;
        Ok(v)
    }

    fn varlong(&mut self) -> FormatResult<i64> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let (v, n) = decode_varlong(rest).map_err(|e| e.shifted(self.pos))?;
        self.pos += n;
        Ok(v)
    }
}

/// Decode a checkpoint value, calling `each` once per producer. Returns
/// `written_at_ms`. Total: any input gives a value or an error, never a panic.
pub fn decode_checkpoint_value(
    value: &[u8],
    mut each: impl FnMut(CheckpointProducer<'_>),
) -> FormatResult<i64> {
    let mut r = Reader { buf: value, pos: 0 };
    let bad = |detail, at| FormatError::new(FormatErrorKind::BadRecord { detail }, at);
    let [version] = r.array::<1>()?;
    if version != CHECKPOINT_VERSION {
        return Err(bad("unknown checkpoint version", 0));
    }
    let written_at = i64::from_be_bytes(r.array()?);
    let count = u32::from_be_bytes(r.array()?);
    let mut window = Vec::with_capacity(MAX_WINDOW);
    for _ in 0..count {
        let at = r.pos;
        let producer_id = i64::from_be_bytes(r.array()?);
        let epoch = i16::from_be_bytes(r.array()?);
        let idle = r.varlong()?;
        // (A negative idle time is a clock that went back: kept as is.)
        if producer_id < 0 || epoch < 0 {
            return Err(bad("negative producer id or epoch", at));
        }
        let [n] = r.array::<1>()?;
        if usize::from(n) > MAX_WINDOW {
            return Err(bad("window longer than 64 batches", r.pos - 1));
        }
        window.clear();
        let mut prev = 0i64;
        for _ in 0..n {
            let at = r.pos;
            let last_seq = i32::from_be_bytes(r.array()?);
            let delta = r.varint()?;
            let last_offset = prev.wrapping_add(r.varlong()?);
            if last_seq < 0 || delta < 0 || last_offset < i64::from(delta) {
                return Err(bad("impossible sequence or offset in a window", at));
            }
            if !window.is_empty() && last_offset <= prev {
                return Err(bad("window offsets out of order", at));
            }
            prev = last_offset;
            window.push(WindowBatch {
                last_seq,
                delta,
                last_offset,
            });
        }
        each(CheckpointProducer {
            producer_id,
            epoch,
            last_append_ms: written_at.saturating_sub(idle),
            window: &window,
        });
    }
    if r.pos != value.len() {
        return Err(bad("bytes after the last producer", r.pos));
    }
    Ok(written_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Item = (i64, i16, i64, Vec<WindowBatch>);

    fn sample() -> Vec<Item> {
        vec![
            (0, 0, 1_000, vec![]),
            (
                5,
                3,
                900,
                vec![
                    WindowBatch {
                        last_seq: 9,
                        delta: 9,
                        last_offset: 1 << 40,
                    },
                    WindowBatch {
                        last_seq: i32::MAX,
                        delta: 0,
                        last_offset: (1 << 40) + 7,
                    },
                ],
            ),
            (i64::MAX, i16::MAX, i64::MIN, vec![]),
        ]
    }

    fn encode(items: &[Item]) -> Vec<u8> {
        encode_checkpoint_value(
            1_000,
            items.iter().map(|(id, e, t, w)| CheckpointProducer {
                producer_id: *id,
                epoch: *e,
                last_append_ms: *t,
                window: w,
            }),
        )
    }

    fn decode(v: &[u8]) -> FormatResult<(i64, Vec<Item>)> {
        let mut out = Vec::new();
        let at = decode_checkpoint_value(v, |p| {
            out.push((p.producer_id, p.epoch, p.last_append_ms, p.window.to_vec()));
        })?;
        Ok((at, out))
    }

    #[test]
    fn round_trip_through_a_batch() {
        let items = sample();
        let value = encode(&items);
        let mut batch = build_checkpoint_batch(&value).unwrap();
        super::super::batch::set_base_offset(&mut batch, 1 << 41).unwrap();
        let view = BatchView::parse(&batch).unwrap();
        assert!(view.is_control() && is_checkpoint(&view));
        assert_eq!(view.producer_id(), -1);
        assert_eq!(view.max_timestamp(), NO_TIMESTAMP);
        let (at, back) = decode(checkpoint_value(&view).unwrap()).unwrap();
        assert_eq!(at, 1_000);
        // The last entry's idle time saturates: written_at - i64::MIN.
        assert_eq!(&back[..2], &items[..2]);
        assert_eq!(back[2].2, 1_000 - i64::MAX);
        assert_eq!(decode_checkpoint(&view, |_| {}), Ok(1_000));
        // Placed before its own window offsets, or listing a producer twice,
        // the same value is invalid.
        let mut early = batch.clone();
        super::super::batch::set_base_offset(&mut early, 1 << 40).unwrap();
        let early = BatchView::parse(&early).unwrap();
        assert!(decode_checkpoint(&early, |_| {}).is_err());
        let mut twice = sample();
        twice.push(twice[1].clone());
        let mut batch = build_checkpoint_batch(&encode(&twice)).unwrap();
        super::super::batch::set_base_offset(&mut batch, 1 << 41).unwrap();
        assert!(decode_checkpoint(&BatchView::parse(&batch).unwrap(), |_| {}).is_err());
    }

    #[test]
    fn other_control_records_and_data_are_not_checkpoints() {
        let mut b = BatchBuilder::new().with_control(true);
        b.push(0, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
        let batch = b.build();
        assert!(!is_checkpoint(&BatchView::parse(&batch).unwrap()));
        let mut b = BatchBuilder::new();
        b.push(0, Some(&KEY), Some(b"x"), &[]);
        let batch = b.build();
        assert!(!is_checkpoint(&BatchView::parse(&batch).unwrap()));
    }

    #[test]
    fn damaged_values_are_errors() {
        let value = encode(&sample());
        for len in 0..value.len() {
            assert!(decode(&value[..len]).is_err(), "prefix {len}");
        }
        let mut longer = value.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut v = value.clone();
        v[0] = 2;
        assert!(decode(&v).is_err());
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trip(items in proptest::collection::vec(
            (0..i64::MAX, 0..i16::MAX, 0..2_000i64,
             proptest::collection::vec((0..i32::MAX, 0..1000i32, 1..1_000_000i64), 0..6)),
            0..20)) {
            let items: Vec<_> = items.into_iter().map(|(id, e, t, w)| {
                let mut off = 1_000i64;
                let w: Vec<WindowBatch> = w.into_iter().map(|(s, d, gap)| {
                    off += gap + i64::from(d);
                    WindowBatch { last_seq: s, delta: d, last_offset: off }
                }).collect();
                (id, e, t, w)
            }).collect();
            let (at, back) = decode(&encode(&items)).unwrap();
            prop_assert_eq!(at, 1_000);
            prop_assert_eq!(back, items);
        }
    }
}
