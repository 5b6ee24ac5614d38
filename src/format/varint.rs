//! Zig-zag varints as used inside Kafka v2 records (`ByteUtils.writeVarint`,
//! `writeVarlong`): the value is zig-zag mapped (`(v << 1) ^ (v >> 31)`), then
//! written as little-endian base-128 groups, 7 bits per byte, high bit set on
//! every byte but the last.
//!
//! Invariants:
//! - The encoders always write the shortest (canonical) form:
//!   1..=5 bytes for `i32`, 1..=10 bytes for `i64`; `varint_len` /
//!   `varlong_len` return exactly the number of bytes the encoders write.
//! - The decoders never panic and never read past the slice. They reject a
//!   32-bit varint longer than 5 bytes or a 64-bit one longer than 10
//!   ([`FormatErrorKind::BadVarint`]), and a last byte carrying bits that do
//!   not fit the type (overflow, also `BadVarint`). Non-canonical but in-range
//!   encodings (e.g. `0x80 0x00` for 0) are accepted, as Kafka does.
//! - A slice that ends inside a varint gives [`FormatErrorKind::Truncated`]
//!   with `position` = the slice length.
//! - Error positions are relative to the slice passed in.

use super::{FormatError, FormatErrorKind, FormatResult};

/// Longest encoding of a 32-bit varint.
pub const MAX_VARINT_LEN: usize = 5;
/// Longest encoding of a 64-bit varint.
pub const MAX_VARLONG_LEN: usize = 10;

/// Zig-zag maps a signed 32-bit value to unsigned.
#[inline]
#[must_use]
pub const fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)).cast_unsigned()
}

/// Zig-zag maps a signed 64-bit value to unsigned.
#[inline]
#[must_use]
pub const fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)).cast_unsigned()
}

/// Inverse of [`zigzag32`].
#[inline]
#[must_use]
pub const fn unzigzag32(u: u32) -> i32 {
    (u >> 1).cast_signed() ^ (0i32.wrapping_sub((u & 1).cast_signed()))
}

/// Inverse of [`zigzag64`].
#[inline]
#[must_use]
pub const fn unzigzag64(u: u64) -> i64 {
    (u >> 1).cast_signed() ^ (0i64.wrapping_sub((u & 1).cast_signed()))
}

#[inline]
fn put_unsigned(mut u: u64, out: &mut Vec<u8>) {
    while u >= 0x80 {
        // Truncation to the low 7 bits is the point of the encoding.
        out.push((u & 0x7f) as u8 | 0x80);
        u >>= 7;
    }
    out.push((u & 0x7f) as u8);
}

#[inline]
const fn unsigned_len(u: u64) -> usize {
    // bits = 64 - leading_zeros (at least 1); bytes = ceil(bits / 7).
    let bits = 64 - (u | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends the zig-zag varint encoding of `v` (1..=5 bytes) to `out`.
#[inline]
pub fn encode_varint(v: i32, out: &mut Vec<u8>) {
    put_unsigned(u64::from(zigzag32(v)), out);
}

/// Appends the zig-zag varlong encoding of `v` (1..=10 bytes) to `out`.
#[inline]
pub fn encode_varlong(v: i64, out: &mut Vec<u8>) {
    put_unsigned(zigzag64(v), out);
}

/// Number of bytes [`encode_varint`] writes for `v`.
#[inline]
#[must_use]
pub const fn varint_len(v: i32) -> usize {
    unsigned_len(zigzag32(v) as u64)
}

/// Number of bytes [`encode_varlong`] writes for `v`.
#[inline]
#[must_use]
pub const fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag64(v))
}

/// Reads an unsigned base-128 value of at most `max_len` bytes whose value
/// must fit in `bits` bits.
#[inline]
fn get_unsigned(buf: &[u8], max_len: usize, bits: u32) -> FormatResult<(u64, usize)> {
    let mut value: u64 = 0;
    for i in 0..max_len {
        let Some(&b) = buf.get(i) else {
            return Err(FormatError::truncated(buf.len(), i + 1, buf.len()));
        };
        let shift = 7 * i as u32; // i < 10, so shift <= 63
        let group = u64::from(b & 0x7f);
        if i + 1 == max_len {
            // Last allowed byte: continuation bit forbidden, and the group
            // must not carry bits beyond `bits`.
            let room = bits - shift; // bits >= shift for the last byte
            if b & 0x80 != 0 || (room < 7 && group >> room != 0) {
                return Err(FormatError::new(FormatErrorKind::BadVarint, i));
            }
        }
        value |= group << shift;
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    // Unreachable in practice: the last iteration either returns or errors.
    Err(FormatError::new(
        FormatErrorKind::BadVarint,
        max_len.saturating_sub(1),
    ))
}

/// Decodes a zig-zag varint from the start of `buf`; returns the value and
/// the number of bytes consumed.
///
/// # Errors
/// [`FormatErrorKind::Truncated`] if `buf` ends inside the varint,
/// [`FormatErrorKind::BadVarint`] if it is longer than 5 bytes or overflows
/// 32 bits.
#[inline]
pub fn decode_varint(buf: &[u8]) -> FormatResult<(i32, usize)> {
    // Fast paths: one and two bytes (lengths below 8 KiB).
    match buf {
        [b, ..] if *b < 0x80 => return Ok((unzigzag32(u32::from(*b)), 1)),
        [b0, b1, ..] if *b1 < 0x80 => {
            let u = u32::from(b0 & 0x7f) | (u32::from(*b1) << 7);
            return Ok((unzigzag32(u), 2));
        }
        _ => {}
    }
    let (u, n) = get_unsigned(buf, MAX_VARINT_LEN, 32)?;
    let u = u32::try_from(u).map_err(|_| FormatError::new(FormatErrorKind::BadVarint, 0))?;
    Ok((unzigzag32(u), n))
}

/// Decodes a zig-zag varlong from the start of `buf`; returns the value and
/// the number of bytes consumed.
///
/// # Errors
/// [`FormatErrorKind::Truncated`] if `buf` ends inside the varlong,
/// [`FormatErrorKind::BadVarint`] if it is longer than 10 bytes or overflows
/// 64 bits.
#[inline]
pub fn decode_varlong(buf: &[u8]) -> FormatResult<(i64, usize)> {
    match buf {
        [b, ..] if *b < 0x80 => return Ok((unzigzag64(u64::from(*b)), 1)),
        [b0, b1, ..] if *b1 < 0x80 => {
            let u = u64::from(b0 & 0x7f) | (u64::from(*b1) << 7);
            return Ok((unzigzag64(u), 2));
        }
        _ => {}
    }
    let (u, n) = get_unsigned(buf, MAX_VARLONG_LEN, 64)?;
    Ok((unzigzag64(u), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc32(v: i32) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(v, &mut out);
        out
    }

    fn enc64(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varlong(v, &mut out);
        out
    }

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest / protobuf zig-zag docs.
        assert_eq!(enc32(0), [0x00]);
        assert_eq!(enc32(-1), [0x01]);
        assert_eq!(enc32(1), [0x02]);
        assert_eq!(enc32(-2), [0x03]);
        assert_eq!(enc32(63), [0x7e]);
        assert_eq!(enc32(-64), [0x7f]);
        assert_eq!(enc32(64), [0x80, 0x01]);
        assert_eq!(enc32(300), [0xd8, 0x04]);
        assert_eq!(enc32(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc32(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            enc64(i64::MAX),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            enc64(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn edge_values_round_trip() {
        for v in [0, -1, 1, 63, -64, 64, -65, 8191, -8192, i32::MIN, i32::MAX] {
            let b = enc32(v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(decode_varint(&b), Ok((v, b.len())), "{v}");
        }
        for v in [
            0,
            -1,
            1,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
            1 << 62,
            -(1 << 62),
        ] {
            let b = enc64(v);
            assert_eq!(b.len(), varlong_len(v), "{v}");
            assert_eq!(decode_varlong(&b), Ok((v, b.len())), "{v}");
        }
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(i32::MIN), 5);
        assert_eq!(varlong_len(i64::MIN), 10);
    }

    #[test]
    fn overlong_and_overflow_rejected() {
        // 6-byte 32-bit varint.
        let e = decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).unwrap_err();
        assert_eq!(e.kind, FormatErrorKind::BadVarint);
        assert_eq!(e.position, 4);
        // 5th byte with bits beyond 32.
        let e = decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]).unwrap_err();
        assert_eq!(e.kind, FormatErrorKind::BadVarint);
        // 11-byte varlong.
        let mut long = vec![0x80; 10];
        long.push(0);
        assert_eq!(
            decode_varlong(&long).unwrap_err().kind,
            FormatErrorKind::BadVarint
        );
        // 10th byte carrying more than 1 bit.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            decode_varlong(&over).unwrap_err().kind,
            FormatErrorKind::BadVarint
        );
        // Non-canonical but in range is accepted (as Kafka does).
        assert_eq!(decode_varint(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x00]), Ok((0, 5)));
    }

    #[test]
    fn truncated_inputs() {
        let e = decode_varint(&[]).unwrap_err();
        assert_eq!(e, FormatError::truncated(0, 1, 0));
        let e = decode_varint(&[0x80, 0x80]).unwrap_err();
        assert_eq!(e, FormatError::truncated(2, 3, 2));
        let e = decode_varlong(&[0xff; 9]).unwrap_err();
        assert!(e.is_truncated());
        assert_eq!(e.position, 9);
    }

    #[test]
    fn trailing_bytes_are_not_consumed() {
        assert_eq!(decode_varint(&[0x02, 0xff, 0xff]), Ok((1, 1)));
        assert_eq!(decode_varlong(&[0xd8, 0x04, 0x99]), Ok((300, 2)));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>()) {
            let b = enc32(v);
            prop_assert_eq!(b.len(), varint_len(v));
            prop_assert_eq!(decode_varint(&b), Ok((v, b.len())));
            // A varint is also a valid varlong of the same value.
            prop_assert_eq!(decode_varlong(&b), Ok((i64::from(v), b.len())));
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let b = enc64(v);
            prop_assert_eq!(b.len(), varlong_len(v));
            prop_assert_eq!(decode_varlong(&b), Ok((v, b.len())));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok((_, n)) = decode_varint(&bytes) {
                prop_assert!((1..=5).contains(&n) && n <= bytes.len());
            }
            if let Ok((_, n)) = decode_varlong(&bytes) {
                prop_assert!((1..=10).contains(&n) && n <= bytes.len());
            }
        }
    }
}
