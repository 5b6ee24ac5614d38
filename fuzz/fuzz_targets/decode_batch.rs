//! Feeds arbitrary bytes to every decoding entry point of
//! `oncelog::format` and checks their invariants:
//! - nothing panics;
//! - `peek_batch_len`, `parse_header_only` and `parse` agree with each other;
//! - a parsed view covers at most the input, and re-parsing its bytes gives
//!   the same view;
//! - the record iterator yields at most `recordsCount` items and stops after
//!   an error; headers of decoded records always decode;
//! - `validate_records` succeeding on an uncompressed batch implies exactly
//!   `recordsCount` records, strictly increasing offset deltas ending at
//!   `lastOffsetDelta`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oncelog::format::{BatchView, Compression, FormatErrorKind, HEADER_LEN, peek_batch_len};

fuzz_target!(|data: &[u8]| {
    let peeked = peek_batch_len(data);
    let full = BatchView::parse(data);
    let header_only = BatchView::parse_header_only(data);

    match (&full, &header_only) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Ok(_), Err(e)) => panic!("parse ok but parse_header_only failed: {e}"),
        (Err(e), Ok(_)) => assert!(
            matches!(e.kind, FormatErrorKind::CrcMismatch { .. }),
            "only the CRC may separate parse from parse_header_only: {e}"
        ),
        (Err(a), Err(b)) => assert_eq!(a, b),
    }
    if let Err(e) = &full {
        // Display never panics and always names the position.
        assert!(e.to_string().contains(&e.position.to_string()));
    }

    let Ok(view) = header_only else { return };
    assert!(view.total_len() >= HEADER_LEN);
    assert!(view.total_len() <= data.len());
    assert_eq!(peeked, Some(view.total_len()));
    assert_eq!(view.as_bytes(), &data[..view.total_len()]);
    assert_eq!(BatchView::parse_header_only(view.as_bytes()), Ok(view));
    if full.is_ok() {
        assert_eq!(BatchView::parse(view.as_bytes()), Ok(view));
        assert!(view.crc_is_valid());
    }

    // Accessors are total.
    let _ = (
        view.last_offset(),
        view.next_offset(),
        view.last_sequence(),
        view.timestamp_type(),
        view.is_control(),
        view.is_transactional(),
    );

    let validated = view.validate_records();
    match view.records() {
        Err(e) => {
            let compressed = view.compression() != Compression::None;
            assert!(compressed || view.record_count() < 0, "{e}");
            assert!(validated.is_err() || compressed);
        }
        Ok(iter) => {
            let mut ok = 0i32;
            let mut errors = 0;
            let mut deltas = Vec::new();
            for item in iter {
                assert_eq!(errors, 0, "iterator is fused after an error");
                match item {
                    Ok(rec) => {
                        ok += 1;
                        deltas.push(rec.offset_delta);
                        let _ = (view.record_offset(&rec), view.record_timestamp(&rec));
                        let _ = view.record_sequence(&rec);
                        let n = rec.headers().inspect(|h| assert!(h.is_ok())).count();
                        assert_eq!(i32::try_from(n).ok(), Some(rec.header_count()));
                    }
                    Err(e) => {
                        assert!(e.position <= view.total_len());
                        errors += 1;
                    }
                }
            }
            assert!(ok <= view.record_count());
            if validated.is_ok() {
                assert_eq!(errors, 0);
                assert_eq!(ok, view.record_count());
                assert!(deltas.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(deltas.first().map(|d| *d >= 0), Some(true));
                assert_eq!(deltas.last().copied(), Some(view.last_offset_delta()));
            }
        }
    }
});
