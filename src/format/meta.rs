//! Small store-level metadata files.
//!
//! `log-start-offset` (one per partition directory), 16 bytes, big-endian:
//!
//! | off | size | field                                   |
//! |-----|------|-----------------------------------------|
//! | 0   | 4    | magic `b"OLSO"`                         |
//! | 4   | 8    | log start offset, i64                   |
//! | 12  | 4    | CRC-32C of bytes `[0, 12)`              |
//!
//! Written whole to a `.tmp` file, fsynced, renamed over the old one, and the
//! directory fsynced, so a reader sees the old or the new value, never a mix.

/// File name of the log start offset file.
pub const LOG_START_FILE: &str = "log-start-offset";

const MAGIC: [u8; 4] = *b"OLSO";

/// Length of the encoded file.
pub const LOG_START_LEN: usize = 16;

/// Encode a log start offset file.
pub fn encode_log_start(offset: i64) -> [u8; LOG_START_LEN] {
    let mut out = [0u8; LOG_START_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..12].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c::crc32c(&out[..12]);
    out[12..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decode a log start offset file; `None` if it is damaged.
pub fn decode_log_start(bytes: &[u8]) -> Option<i64> {
    let bytes: &[u8; LOG_START_LEN] = bytes.try_into().ok()?;
    let (body, crc) = bytes.split_at(12);
    if body[..4] != MAGIC || crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let offset = i64::from_be_bytes(body[4..12].try_into().ok()?);
    (offset >= 0).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let b = encode_log_start(1234);
        assert_eq!(decode_log_start(&b), Some(1234));
        for i in 0..LOG_START_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert_eq!(decode_log_start(&d), None, "flip at {i}");
        }
        assert_eq!(decode_log_start(&b[..15]), None);
        assert_eq!(decode_log_start(&encode_log_start(-1)), None);
    }
}
