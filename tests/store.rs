//! The store: locking, topic names, many partitions, handles and closing.

mod common;

use common::*;
use oncelog::{Config, Store};

#[test]
fn a_second_opener_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let err = Store::open(dir.path(), Config::default()).unwrap_err();
    assert_eq!(err.kind(), "locked");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    drop(store);
    Store::open(dir.path(), Config::default()).unwrap();
}

#[test]
fn bad_topic_names_are_rejected_without_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let long = "x".repeat(250);
    for bad in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/abs",
        "a b",
        "naïve",
        long.as_str(),
    ] {
        let err = store.log(bad, 0).unwrap_err();
        assert_eq!(err.kind(), "invalid_topic", "{bad:?}");
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(".lock")]);
    assert!(!dir.path().parent().unwrap().join("escape-0").exists());
    store.log(&"y".repeat(249), 0).unwrap();
    store.log("a.b_c-d", 7).unwrap();
    assert!(dir.path().join("a.b_c-d-7").is_dir());
}

#[test]
fn many_partitions_reopen_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for p in 0..20 {
            let log = store
                .log(if p % 2 == 0 { "even" } else { "odd-topic" }, p)
                .unwrap();
            for i in 0..=p {
                log.append(&batch(&format!("p{p}"), 1, i64::from(i)))
                    .unwrap();
            }
        }
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(store.logs().len(), 20);
    assert_eq!(store.recovery_reports().len(), 20);
    for p in 0..20u32 {
        let topic = if p % 2 == 0 { "even" } else { "odd-topic" };
        let log = store.existing_log(topic, p).unwrap().expect("reopened");
        assert_eq!(log.next_offset(), i64::from(p) + 1);
    }
    assert!(store.existing_log("even", 99).unwrap().is_none());
}

#[test]
fn closed_store_handles_refuse_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let log = store.log("t", 0).unwrap();
    log.append(&batch("a", 1, 0)).unwrap();
    store.close().unwrap();
    assert_eq!(log.append(&batch("a", 1, 0)).unwrap_err().kind(), "closed");
    // Reads of what was written still work on the old handle.
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn invalid_batches_are_rejected_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default().with_max_batch_bytes(4096)).unwrap();
    let log = store.log("t", 0).unwrap();
    let mut b = batch("a", 2, 0);
    let last = b.len() - 1;
    b[last] ^= 1;
    let e = log.append(&b).unwrap_err();
    assert_eq!(e.kind(), "invalid_batch");
    assert!(e.to_string().contains("t-0"), "{e}");
    assert_eq!(log.append(&b[..30]).unwrap_err().kind(), "invalid_batch");
    assert_eq!(log.append(b"").unwrap_err().kind(), "invalid_batch");
    let mut two = batch("a", 1, 0);
    two.extend(batch("b", 1, 0));
    assert_eq!(log.append(&two).unwrap_err().kind(), "invalid_batch");
    assert_eq!(
        log.append(&sized_batch(5000, 1, 0)).unwrap_err().kind(),
        "batch_too_large"
    );
    // Header fields that disagree with the records, with a valid CRC.
    let fix_crc = |b: &mut Vec<u8>| {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    };
    let mut lying_ts = batch("a", 3, 1000);
    lying_ts[35..43].copy_from_slice(&5000i64.to_be_bytes());
    fix_crc(&mut lying_ts);
    let e = log.append(&lying_ts).unwrap_err();
    assert!(e.to_string().contains("maxTimestamp"), "{e}");
    let mut bad_codec = batch("a", 1, 0);
    bad_codec[22] |= 0x07;
    fix_crc(&mut bad_codec);
    assert_eq!(log.append(&bad_codec).unwrap_err().kind(), "invalid_batch");
    assert_eq!(log.next_offset(), 0, "nothing was written");
    let bad = Config::default().with_segment_bytes(10);
    assert_eq!(
        Store::open(dir.path().join("x"), bad).unwrap_err().kind(),
        "invalid_config"
    );
}

/// A batch from our builder skips the CRC and record checks, and nothing
/// else: it lands byte for byte as `append` would store it, duplicates and
/// gaps are judged alike, and header rules still refuse what no user may
/// append.
#[test]
fn built_batches_append_like_any_batch_but_for_the_checks_the_builder_guarantees() {
    use oncelog::format::BatchBuilder;
    use oncelog::{AppendOutcome, Durability};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let (a, b) = (
        store.log("built", 0).unwrap(),
        store.log("bytes", 0).unwrap(),
    );
    let make = |seq: i32| {
        let mut b = BatchBuilder::new().with_producer(9, 0, seq);
        b.push(1_700_000_000_000, Some(b"k"), Some(b"v1"), &[])
            .push(1_700_000_000_007, None, Some(b"v2"), &[]);
        b
    };
    for seq in [0, 2] {
        let built = make(seq).finish();
        assert_eq!(built.as_bytes(), make(seq).build().as_slice());
        let x = a.append_built(&built).unwrap();
        let y = b.append(built.as_bytes()).unwrap();
        assert_eq!(x, y);
    }
    assert_eq!(read_all(&a), read_all(&b));
    assert_eq!(stored(&a), stored(&b));
    // A retry is a duplicate with its offsets; a gap is out of order.
    assert_eq!(
        a.append_built_with(&make(2).finish(), Durability::Os)
            .unwrap(),
        AppendOutcome::Duplicate {
            base_offset: Some(2),
            last_offset: Some(3)
        }
    );
    let gap = a.append_built(&make(9).finish()).unwrap_err();
    assert_eq!(gap.kind(), "out_of_order_sequence");
    // Header rules hold: control, transactional and empty batches.
    let mut ctl = BatchBuilder::new().with_control(true);
    ctl.push(0, None, Some(b"x"), &[]);
    assert_eq!(
        a.append_built(&ctl.finish()).unwrap_err().kind(),
        "invalid_batch"
    );
    let mut txn = BatchBuilder::new()
        .with_producer(10, 0, 0)
        .with_transactional(true);
    txn.push(0, None, Some(b"x"), &[]);
    assert_eq!(
        a.append_built(&txn.finish()).unwrap_err().kind(),
        "unsupported"
    );
    let empty = BatchBuilder::new().finish();
    assert_eq!(a.append_built(&empty).unwrap_err().kind(), "invalid_batch");
    // So does the size limit.
    drop((a, b));
    store.close().unwrap();
    let store = Store::open(dir.path(), Config::default().with_max_batch_bytes(100)).unwrap();
    let log = store.log("built", 0).unwrap();
    let mut big = BatchBuilder::new();
    big.push(0, None, Some(&[7u8; 200]), &[]);
    assert_eq!(
        log.append_built(&big.finish()).unwrap_err().kind(),
        "batch_too_large"
    );
    // Reopened, the log holds the four records appended above, once.
    assert_eq!(read_all(&log).len(), 4);
}
