//! The store speaks Kafka's format both ways: batches encoded by the
//! independent `kafka-protocol` crate are appended as they are, and what the
//! store returns decodes with it, carrying the offsets the store assigned.

mod common;

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use oncelog::{Config, Store};

fn kafka_batch(
    values: &[&str],
    producer: Option<(i64, i16, i32)>,
    compression: Compression,
) -> Vec<u8> {
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if seq < 0 { -1 } else { seq + i as i32 },
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: IndexMap::from_iter([(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]),
        })
        .collect();
    let mut out = Vec::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    out
}

#[test]
fn kafka_encoded_batches_are_stored_byte_for_byte_and_decode_back() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![
        kafka_batch(&["a", "b", "c"], None, Compression::None),
        kafka_batch(&["d"], Some((42, 3, 0)), Compression::None),
        kafka_batch(&["e", "f"], Some((42, 3, 1)), Compression::Gzip),
        kafka_batch(&["g", "h", "i", "j"], None, Compression::None),
    ];
    // kafka-protocol starts a new batch whenever `offset - sequence` changes,
    // so records without a producer id come out one batch each: split them.
    let mut batches_in = Vec::new();
    for bytes in &inputs {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = oncelog::format::peek_batch_len(rest).unwrap();
            batches_in.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
    }
    let counts: Vec<i64> = batches_in
        .iter()
        .map(|b| i64::from(oncelog::format::BatchView::parse(b).unwrap().record_count()))
        .collect();
    assert!(
        counts.contains(&2),
        "the producer's gzip batch holds both records"
    );
    {
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let log = store.log("kafka", 0).unwrap();
        let mut next = 0;
        for b in &batches_in {
            let at = log.append(b).unwrap();
            assert_eq!(at.base_offset().unwrap(), next);
            next = at.last_offset().unwrap() + 1;
        }
        assert_eq!(next, 10);
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let log = store.log("kafka", 0).unwrap();
    let batches = log.read(0, 1 << 20).unwrap();
    // Byte for byte: only baseOffset (outside the CRC) differs.
    let mut pos = 0;
    let mut base = 0i64;
    for (b, n) in batches_in.iter().zip(counts) {
        let stored = &batches.bytes()[pos..pos + b.len()];
        assert_eq!(&stored[8..], &b[8..]);
        assert_eq!(i64::from_be_bytes(stored[..8].try_into().unwrap()), base);
        pos += b.len();
        base += n;
    }
    // After them, the producer-state checkpoint written at close (offset
    // 10), which iteration skips unless asked for.
    let rest = oncelog::format::BatchView::parse(&batches.bytes()[pos..]).unwrap();
    assert!(rest.is_control() && rest.base_offset() == 10);
    assert_eq!(pos + rest.total_len(), batches.bytes().len());
    assert_eq!(batches.iter().count(), batches_in.len());
    assert_eq!(
        batches.clone().with_checkpoints().iter().count(),
        batches_in.len() + 1
    );
    // And kafka-protocol reads the stored bytes, with the store's offsets.
    let mut buf = batches.bytes().slice(..pos);
    let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
    let records: Vec<&Record> = sets.iter().flat_map(|s| s.records.iter()).collect();
    let values: Vec<&[u8]> = records
        .iter()
        .map(|r| r.value.as_deref().unwrap())
        .collect();
    assert_eq!(
        values,
        vec![b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j"]
    );
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    assert!(sets.iter().any(|s| s.compression == Compression::Gzip));
    assert_eq!(
        (
            records[3].producer_id,
            records[3].producer_epoch,
            records[3].sequence
        ),
        (42, 3, 0)
    );
    // Our own view agrees, and says plainly that it does not decompress.
    let gz = batches
        .iter()
        .map(Result::unwrap)
        .find(|b| b.view().compression() == oncelog::format::Compression::Gzip)
        .unwrap();
    assert_eq!(
        gz.view().records().unwrap_err().kind,
        oncelog::format::FormatErrorKind::UnsupportedCompression { codec: 1 }
    );
    assert_eq!(
        log.offset_for_timestamp(1_700_000_000_001).unwrap(),
        Some(1)
    );
}

#[test]
fn store_built_batches_decode_with_kafka_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let log = store.log("ours", 0).unwrap();
    for i in 0..5 {
        log.append(&common::batch(&format!("b{i}"), 3, 1000 * i))
            .unwrap();
    }
    let mut buf = log.read(0, 1 << 20).unwrap().bytes().clone();
    let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
    assert_eq!(sets.len(), 5);
    for (i, set) in sets.iter().enumerate() {
        for (j, r) in set.records.iter().enumerate() {
            assert_eq!(r.offset, (i * 3 + j) as i64);
            assert_eq!(r.value.as_deref().unwrap(), format!("b{i}-{j}").as_bytes());
            assert_eq!(r.timestamp, 1000 * i as i64 + j as i64);
        }
    }
}
