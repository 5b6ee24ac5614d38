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
//! `producer-ids` (one per store), big-endian:
//!
//! | field          | size | meaning                                            |
//! |----------------|------|----------------------------------------------------|
//! | magic          | 4    | `b"OLPI"`                                          |
//! | version        | 1    | 1                                                  |
//! | reserved_until | 8    | i64: every id below it may have been handed out    |
//! | count          | 4    | u32: named producers that follow                   |
//! | per named producer: name length u16, name (UTF-8), producer id i64, epoch i16 |
//! | crc            | 4    | CRC-32C of every byte before it                    |
//!
//! Both files are written whole to a `.tmp` file, fsynced, renamed over the
//! old one, and the directory fsynced, so a reader sees the old or the new
//! value, never a mix.

use super::batch::crc32c;

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
    let crc = crc32c(&out[..12]);
    out[12..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decode a log start offset file; `None` if it is damaged.
pub fn decode_log_start(bytes: &[u8]) -> Option<i64> {
    let bytes: &[u8; LOG_START_LEN] = bytes.try_into().ok()?;
    let (body, crc) = bytes.split_at(12);
    if body[..4] != MAGIC || crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let offset = i64::from_be_bytes(body[4..12].try_into().ok()?);
    (offset >= 0).then_some(offset)
}

/// File name of the store's producer-id record.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";

const IDS_MAGIC: [u8; 4] = *b"OLPI";
const IDS_VERSION: u8 = 1;

/// A named producer as recorded in `producer-ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedProducerRecord {
    /// The name (1 to 255 bytes of UTF-8).
    pub name: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub epoch: i16,
}

/// Encode the `producer-ids` file.
pub fn encode_producer_ids(reserved_until: i64, named: &[NamedProducerRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + named.len() * 40);
    out.extend_from_slice(&IDS_MAGIC);
    out.push(IDS_VERSION);
    out.extend_from_slice(&reserved_until.to_be_bytes());
    out.extend_from_slice(&u32::try_from(named.len()).unwrap_or(u32::MAX).to_be_bytes());
    for n in named {
        let name = &n.name.as_bytes()[..n.name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&n.producer_id.to_be_bytes());
        out.extend_from_slice(&n.epoch.to_be_bytes());
    }
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decode the `producer-ids` file: `(reserved_until, named producers)`, or
/// `None` if it is damaged.
pub fn decode_producer_ids(bytes: &[u8]) -> Option<(i64, Vec<NamedProducerRecord>)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c(body).to_be_bytes() != crc || body.get(..4)? != IDS_MAGIC {
        return None;
    }
    if *body.get(4)? != IDS_VERSION {
        return None;
    }
    let mut pos: usize = 5;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(pos..pos.checked_add(n)?)?;
        pos += n;
        Some(s)
    };
    let reserved = i64::from_be_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut named: Vec<NamedProducerRecord> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let name = std::str::from_utf8(take(usize::from(len))?)
            .ok()?
            .to_string();
        let producer_id = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
        if producer_id < 0
            || producer_id >= reserved
            || epoch < 0
            || !(1..=255).contains(&name.len())
            || !ids.insert(producer_id)
            || !names.insert(name.clone())
        {
            return None;
        }
        named.push(NamedProducerRecord {
            name,
            producer_id,
            epoch,
        });
    }
    (pos == body.len() && reserved >= 0).then_some((reserved, named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_round_trip_and_damage() {
        let named = vec![
            NamedProducerRecord {
                name: "billing".into(),
                producer_id: 3,
                epoch: 7,
            },
            NamedProducerRecord {
                name: "é".into(),
                producer_id: 999,
                epoch: 0,
            },
        ];
        let b = encode_producer_ids(1000, &named);
        assert_eq!(decode_producer_ids(&b), Some((1000, named.clone())));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x04;
            assert_eq!(decode_producer_ids(&d), None, "flip at {i}");
            assert_eq!(decode_producer_ids(&b[..i]), None, "prefix {i}");
        }
        // An id at or past the reserved limit is impossible.
        assert_eq!(decode_producer_ids(&encode_producer_ids(999, &named)), None);
        assert_eq!(
            decode_producer_ids(&encode_producer_ids(0, &[])),
            Some((0, vec![]))
        );
        // Names of 1 to 255 bytes, each name and id once.
        let twice = vec![named[0].clone(), named[0].clone()];
        assert_eq!(
            decode_producer_ids(&encode_producer_ids(1000, &twice)),
            None
        );
        let mut same_id = named.clone();
        same_id[1].producer_id = 3;
        assert_eq!(
            decode_producer_ids(&encode_producer_ids(1000, &same_id)),
            None
        );
        let mut empty = named.clone();
        empty[0].name.clear();
        assert_eq!(
            decode_producer_ids(&encode_producer_ids(1000, &empty)),
            None
        );
    }

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
