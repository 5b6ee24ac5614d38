//! Bit flips in a sealed segment on a real disk: found by `verify` and by
//! reads, naming the file and the position.

mod common;

use std::path::Path;

use common::segment_files;
use oncelog::format::peek_batch_len;
use oncelog::{Config, Error, Message, Store};

fn value(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

/// Batch boundaries `(start, end)` of a segment file.
fn batch_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = peek_batch_len(&bytes[at..]).expect("a pristine segment parses");
        out.push((at, at + len));
        at += len;
    }
    out
}

/// Bit flips anywhere in a sealed segment (but the one field outside every
/// check, partitionLeaderEpoch) are found by `verify` and by reads, each
/// naming the segment file and a position inside the damaged batch.
#[test]
fn bit_flips_in_a_sealed_segment_are_found_by_verify_and_by_reads() {
    let pristine = tempfile::tempdir().unwrap();
    let config = Config::default().with_segment_bytes(16 << 10);
    {
        let store = Store::open(pristine.path(), config.clone()).unwrap();
        let producer = store.producer("p").unwrap();
        for i in 0..300 {
            let v = value(i, 90);
            producer
                .send("t", 0, &[Message::new(&v), Message::new(b"second")])
                .unwrap();
        }
        drop(producer);
        store.close().unwrap();
    }
    let segs = segment_files(&pristine.path().join("t-0"));
    assert!(segs.len() >= 3, "{segs:?}");
    let name = segs[1].file_name().unwrap().to_owned();
    let bytes = std::fs::read(&segs[1]).unwrap();
    let spans = batch_spans(&bytes);
    assert!(spans.len() > 10);

    let mut rng = 0x5eed_u64;
    let mut flips = 0;
    while flips < 120 {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pos = (rng >> 33) as usize % bytes.len();
        let bit = (rng >> 20) as u8 % 8;
        let &(start, end) = spans.iter().find(|(s, e)| (*s..*e).contains(&pos)).unwrap();
        if (12..16).contains(&(pos - start)) {
            continue; // partitionLeaderEpoch: outside the CRC, unused
        }
        flips += 1;
        let what = format!("bit {bit} of byte {pos} (batch {start}..{end})");
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let victim = dir.path().join("t-0").join(&name);
        let mut damaged = bytes.clone();
        damaged[pos] ^= 1 << bit;
        std::fs::write(&victim, &damaged).unwrap();

        let report = oncelog::verify(dir.path(), |_| {}).unwrap();
        let found = report
            .problems
            .iter()
            .find(|p| p.path == victim)
            .unwrap_or_else(|| panic!("{what}: verify found nothing: {:?}", report.problems));
        assert!(
            (start as u64..=end as u64).contains(&found.position),
            "{what}: verify points at {}: {found:?}",
            found.position
        );

        // Reads (checkpoints included) stop at the damaged batch with an
        // error naming the file and a position in the batch.
        let store = Store::open(dir.path(), config.clone()).unwrap();
        let log = store.log("t", 0).unwrap();
        let e = read_until_error(&log).unwrap_or_else(|| panic!("{what}: reads found nothing"));
        match &e {
            Error::Corrupt { path, position, .. } => {
                assert_eq!(path, &victim, "{what}: {e}");
                assert!(
                    (start as u64..=end as u64).contains(position),
                    "{what}: reads point at {position}: {e}"
                );
            }
            other => panic!("{what}: {other}"),
        }
        drop(log);
        store.close().unwrap();
    }
}

fn read_until_error(log: &oncelog::Log) -> Option<Error> {
    let mut offset = log.log_start_offset();
    while offset < log.next_offset() {
        let batches = match log.read(offset, 1 << 16) {
            Ok(b) => b.with_checkpoints(),
            Err(e) => return Some(e),
        };
        for b in &batches {
            match b {
                Ok(b) => offset = b.last_offset() + 1,
                Err(e) => return Some(e),
            }
        }
    }
    None
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
