//! Kafka's sparse index entry formats (`OffsetIndex.java`, `TimeIndex.java`),
//! big-endian:
//!
//! ```text
//! offset index entry (8 bytes):  relativeOffset u32 | position u32
//! time index entry  (12 bytes):  timestamp i64      | relativeOffset u32
//! ```
//!
//! `relativeOffset` is the entry's offset minus the segment's base offset;
//! `position` is the byte position of the batch in the segment's log file.
//!
//! Invariants:
//! - `encode` then `decode` is the identity; `decode` reads only the first
//!   `*_ENTRY_LEN` bytes and returns `None` (never panics) on shorter input.
//! - The whole-file decoders decode every complete entry and ignore a
//!   trailing partial entry. They do not interpret zero-filled
//!   (pre-allocated) entries: that is the caller's business.

/// Size of one offset index entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one time index entry.
pub const TIME_ENTRY_LEN: usize = 12;

/// One entry of an offset index (`.index`) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct OffsetIndexEntry {
    /// Offset relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the log file.
    pub position: u32,
}

impl OffsetIndexEntry {
    /// The 8 on-disk bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; OFFSET_ENTRY_LEN] {
        let mut out = [0u8; OFFSET_ENTRY_LEN];
        let (a, b) = out.split_at_mut(4);
        a.copy_from_slice(&self.relative_offset.to_be_bytes());
        b.copy_from_slice(&self.position.to_be_bytes());
        out
    }

    /// Decodes the first 8 bytes of `bytes`; `None` if fewer.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            relative_offset: u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?),
            position: u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?),
        })
    }
}

/// One entry of a time index (`.timeindex`) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TimeIndexEntry {
    /// Largest timestamp seen up to this entry.
    pub timestamp: i64,
    /// Offset relative to the segment's base offset.
    pub relative_offset: u32,
}

impl TimeIndexEntry {
    /// The 12 on-disk bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; TIME_ENTRY_LEN] {
        let mut out = [0u8; TIME_ENTRY_LEN];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.timestamp.to_be_bytes());
        b.copy_from_slice(&self.relative_offset.to_be_bytes());
        out
    }

    /// Decodes the first 12 bytes of `bytes`; `None` if fewer.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            timestamp: i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?),
            relative_offset: u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?),
        })
    }
}

/// Decodes every complete entry of an offset index file.
#[must_use]
pub fn decode_offset_index(bytes: &[u8]) -> Vec<OffsetIndexEntry> {
    bytes
        .chunks_exact(OFFSET_ENTRY_LEN)
        .filter_map(OffsetIndexEntry::decode)
        .collect()
}

/// Decodes every complete entry of a time index file.
#[must_use]
pub fn decode_time_index(bytes: &[u8]) -> Vec<TimeIndexEntry> {
    bytes
        .chunks_exact(TIME_ENTRY_LEN)
        .filter_map(TimeIndexEntry::decode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_entry_layout() {
        let e = OffsetIndexEntry {
            relative_offset: 0x0102_0304,
            position: 0xa0b0_c0d0,
        };
        assert_eq!(e.encode(), [1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0]);
        assert_eq!(OffsetIndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(OffsetIndexEntry::decode(&[0; 7]), None);
        assert_eq!(OffsetIndexEntry::decode(&[]), None);
    }

    #[test]
    fn time_entry_layout() {
        let e = TimeIndexEntry {
            timestamp: -2,
            relative_offset: 7,
        };
        assert_eq!(
            e.encode(),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 7]
        );
        assert_eq!(TimeIndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(TimeIndexEntry::decode(&[0; 11]), None);
    }

    #[test]
    fn whole_files_ignore_partial_tail() {
        let a = OffsetIndexEntry {
            relative_offset: 1,
            position: 100,
        };
        let b = OffsetIndexEntry {
            relative_offset: 5,
            position: 900,
        };
        let mut file = Vec::new();
        file.extend_from_slice(&a.encode());
        file.extend_from_slice(&b.encode());
        file.extend_from_slice(&[9, 9, 9]);
        assert_eq!(decode_offset_index(&file), vec![a, b]);
        assert!(decode_offset_index(&file[..7]).is_empty());

        let t = TimeIndexEntry {
            timestamp: 1_700_000_000_000,
            relative_offset: 3,
        };
        let mut file = t.encode().to_vec();
        file.extend_from_slice(&t.encode()[..11]);
        assert_eq!(decode_time_index(&file), vec![t]);
    }

    proptest! {
        #[test]
        fn entries_round_trip(r in any::<u32>(), p in any::<u32>(), ts in any::<i64>()) {
            let o = OffsetIndexEntry { relative_offset: r, position: p };
            prop_assert_eq!(OffsetIndexEntry::decode(&o.encode()), Some(o));
            let t = TimeIndexEntry { timestamp: ts, relative_offset: r };
            prop_assert_eq!(TimeIndexEntry::decode(&t.encode()), Some(t));
        }

        #[test]
        fn decode_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(decode_offset_index(&bytes).len(), bytes.len() / 8);
            prop_assert_eq!(decode_time_index(&bytes).len(), bytes.len() / 12);
        }
    }
}
