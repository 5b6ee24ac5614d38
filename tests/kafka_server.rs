//! `oncelog serve` at the protocol level, driven by the `kafka-protocol`
//! crate's encoder: the produce/fetch round trip stores the bytes as sent,
//! retries are duplicates with their original offsets, checkpoints never
//! reach a fetch, bad frames close one connection and harm nothing, and
//! SIGTERM closes the store cleanly. (Real clients: tests/kafka_clients.rs.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use oncelog::format::{BatchBuilder, BatchView};

/// The server as a child process; SIGTERMed (or killed) on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oncelog"))
            .args([
                "serve",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--partitions",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oncelog serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("\"listening\": \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// SIGTERM and wait: the exit status of a clean close.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: a plain syscall sending a signal to our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request<Q: Encodable, R: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    cid: i32,
    req: &Q,
) -> R {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(cid)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, cid);
    R::decode(&mut body, version).unwrap()
}

fn produce_req(topic: &str, batch: &[u8]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::copy_from_slice(batch))),
                ]),
        ])
}

/// Produce one batch (acks=all, Produce v9) to partition 0 of `topic`:
/// the partition's error code and base offset.
fn produce(s: &mut TcpStream, cid: i32, topic: &str, batch: &[u8]) -> (i16, i64) {
    let r: ProduceResponse = request(s, ApiKey::Produce, 9, cid, &produce_req(topic, batch));
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_req(topic: &str, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// The values of every record fetched; panics on a control batch.
fn fetched_values(r: &FetchResponse) -> Vec<String> {
    let mut records = r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let mut values = Vec::new();
    while records.has_remaining() {
        let view = BatchView::parse(&records).unwrap();
        assert!(!view.is_control(), "a checkpoint batch reached a client");
        for rec in view.records().unwrap() {
            values.push(String::from_utf8(rec.unwrap().value.unwrap().to_vec()).unwrap());
        }
        let n = view.total_len();
        records.advance(n);
    }
    values
}

fn idempotent(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new().with_producer(pid, epoch, seq);
    for v in values {
        b.push(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    b.build()
}

#[test]
fn produce_dedupe_fetch_and_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut s = server.connect();

    let versions: ApiVersionsResponse = request(
        &mut s,
        ApiKey::ApiVersions,
        3,
        1,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(versions.error_code, 0);
    let keys: Vec<i16> = versions.api_keys.iter().map(|k| k.api_key).collect();
    assert_eq!(
        keys.len(),
        6,
        "only what is implemented is advertised: {keys:?}"
    );

    let meta: MetadataResponse = request(
        &mut s,
        ApiKey::Metadata,
        12,
        2,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("orders")))),
        ])),
    );
    assert_eq!(meta.topics.len(), 1);
    assert_eq!(
        meta.topics[0].partitions.len(),
        2,
        "created with --partitions 2"
    );
    assert_eq!(
        meta.brokers[0].port.to_string(),
        server.addr.rsplit(':').next().unwrap()
    );

    let init: InitProducerIdResponse = request(
        &mut s,
        ApiKey::InitProducerId,
        4,
        3,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert_eq!(init.producer_epoch, 0);
    // KIP-360 (v3+): the same producer asks for its next epoch; a stale
    // epoch is refused, and a transactional id is not served.
    let init_with = |s: &mut TcpStream, cid, epoch: i16, txn: Option<&'static str>| {
        let r: InitProducerIdResponse = request(
            s,
            ApiKey::InitProducerId,
            4,
            cid,
            &InitProducerIdRequest::default()
                .with_transactional_id(txn.map(|t| {
                    kafka_protocol::messages::TransactionalId(StrBytes::from_static_str(t))
                }))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
        );
        (r.error_code, r.producer_id.0, r.producer_epoch)
    };
    assert_eq!(init_with(&mut s, 30, 0, None), (0, pid, 1));
    assert_eq!(init_with(&mut s, 31, 0, None).0, 47);
    assert_eq!(init_with(&mut s, 32, 1, Some("tx")).0, 53);

    // Batches of the producer's earlier epoch 0 (a client bumps epochs
    // itself too, see below); the log knows no epoch for it yet.
    let first = idempotent(pid, 0, 0, &["a", "b"]);
    let second = idempotent(pid, 0, 2, &["c"]);
    let r1 = produce(&mut s, 4, "orders", &first);
    let r2 = produce(&mut s, 5, "orders", &second);
    assert_eq!(r1, (0, 0));
    assert_eq!(r2, (0, 2));
    // A retry of the first batch: NONE with its original base offset.
    let again = produce(&mut s, 6, "orders", &first);
    assert_eq!(again, (0, 0));
    // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch after a bump:
    // INVALID_PRODUCER_EPOCH; a client-side bump with sequence 0: appended.
    let gap = produce(&mut s, 7, "orders", &idempotent(pid, 0, 9, &["x"]));
    assert_eq!(gap.0, 45);
    let bumped = produce(&mut s, 8, "orders", &idempotent(pid, 1, 0, &["d"]));
    assert_eq!(bumped, (0, 3));
    let stale = produce(&mut s, 9, "orders", &idempotent(pid, 0, 3, &["y"]));
    assert_eq!(stale.0, 47);
    // A damaged batch: CORRUPT_MESSAGE, nothing stored.
    let mut bad = idempotent(pid, 1, 1, &["z"]);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let corrupt = produce(&mut s, 10, "orders", &bad);
    assert_eq!(corrupt.0, 2);

    // Two batches in one partition's records: INVALID_RECORD, and neither
    // is written (Produce v3+ carries exactly one).
    let two = [idempotent(pid, 1, 1, &["p"]), idempotent(pid, 1, 2, &["q"])].concat();
    let both = produce(&mut s, 12, "orders", &two);
    assert_eq!(both.0, 87);
    // A fetch of a topic nobody made does not make it.
    let unknown: FetchResponse = request(&mut s, ApiKey::Fetch, 12, 13, &fetch_req("nobody", 0));
    assert_eq!(unknown.responses[0].partitions[0].error_code, 3);
    assert!(!dir.path().join("nobody-0").exists());

    // Fetch returns the stored batches, as stored.
    let fetched: FetchResponse = request(&mut s, ApiKey::Fetch, 12, 11, &fetch_req("orders", 0));
    let p = &fetched.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 4));
    assert_eq!(fetched_values(&fetched), ["a", "b", "c", "d"]);
    drop(s);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // Closed cleanly: reopens with nothing cut, every batch once.
    let store = oncelog::Store::open(dir.path(), oncelog::Config::default()).unwrap();
    let log = store.log("orders", 0).unwrap();
    assert_eq!(log.recovery_report().bytes_truncated, 0);
    let mut records = 0;
    for b in &log.read(0, 1 << 20).unwrap() {
        records += b.unwrap().view().record_count();
    }
    assert_eq!(records, 4);
    // The producer's state survived the restart: a retry of its last batch
    // is still a duplicate with its offset.
    let retry = log.append(&idempotent(pid, 1, 0, &["d"])).unwrap();
    assert_eq!(retry.base_offset(), Some(3));
    assert!(retry.is_duplicate());
    drop(log);
    store.close().unwrap();

    // The close wrote a checkpoint batch into the log (offset 4); a fetch
    // across it, from a restarted server, never shows it to the client.
    let server = Server::start(dir.path());
    let mut s = server.connect();
    let next = produce(&mut s, 1, "orders", &idempotent(pid, 1, 1, &["e"]));
    assert_eq!(next, (0, 5), "offset 4 holds the checkpoint");
    let fetched: FetchResponse = request(&mut s, ApiKey::Fetch, 12, 2, &fetch_req("orders", 0));
    assert_eq!(fetched_values(&fetched), ["a", "b", "c", "d", "e"]);
    let from_checkpoint: FetchResponse =
        request(&mut s, ApiKey::Fetch, 12, 3, &fetch_req("orders", 4));
    assert_eq!(fetched_values(&from_checkpoint), ["e"]);
    drop(s);
    assert!(server.terminate().success());
}

#[test]
fn bad_frames_close_their_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let frames: Vec<Vec<u8>> = vec![
        // oversized length
        (200u32 << 20).to_be_bytes().to_vec(),
        // too short to hold a header
        vec![0, 0, 0, 2, 0, 0],
        // an API that is not served (DeleteTopics, key 20)
        [
            &12u32.to_be_bytes()[..],
            &[0, 20, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        ]
        .concat(),
        // a Produce whose body is garbage
        [
            &16u32.to_be_bytes()[..],
            &[0, 0, 0, 9, 0, 0, 0, 1],
            &[0xff; 8],
        ]
        .concat(),
        // Metadata v1 claiming 2^31-1 topics: the codec reserves room for
        // them before reading one (an allocation of ~150 GB that would
        // abort a process on the system allocator)
        [
            &14u32.to_be_bytes()[..],
            &[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        ]
        .concat(),
        // truncated: a length promising more than is sent, then EOF
        [&100u32.to_be_bytes()[..], &[0, 18, 0, 3]].concat(),
    ];
    for f in &frames {
        let mut s = server.connect();
        s.write_all(f).unwrap();
        s.shutdown(std::net::Shutdown::Write).ok();
        let mut rest = Vec::new();
        // The server closes the connection without answering.
        let n = s.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "answered a bad frame {f:?}");
    }
    // The server still serves.
    let mut s = server.connect();
    let v: ApiVersionsResponse = request(
        &mut s,
        ApiKey::ApiVersions,
        3,
        7,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(v.error_code, 0);
    // An ApiVersions version we do not serve: error 35 in a v0 body.
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i16(ApiKey::ApiVersions as i16);
    buf.put_i16(9);
    buf.put_i32(42);
    buf.put_slice(&[0xde, 0xad]);
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    assert_eq!(body.get_i32(), 42);
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, 35);
    assert_eq!(resp.api_keys.len(), 6);
    assert!(server.terminate().success());
}

#[test]
fn list_offsets_by_time_and_the_log_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut s = server.connect();
    for (i, ts) in [100i64, 300, 200].into_iter().enumerate() {
        let mut b = BatchBuilder::new();
        b.push(ts, None, Some(b"v"), &[]);
        assert_eq!(
            produce(&mut s, i as i32, "times", &b.build()),
            (0, i as i64)
        );
    }
    let ask = |s: &mut TcpStream, ts: i64| {
        let req = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("times")))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(ts)]),
        ]);
        let r: ListOffsetsResponse = request(s, ApiKey::ListOffsets, 6, 9, &req);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.timestamp, p.offset)
    };
    // The first record at or after 150 is the one at 300 (offset 1).
    assert_eq!(ask(&mut s, 150), (0, 300, 1));
    assert_eq!(ask(&mut s, 100), (0, 100, 0));
    assert_eq!(ask(&mut s, 1000), (0, -1, -1));
    assert_eq!(ask(&mut s, -2), (0, -1, 0));
    assert_eq!(ask(&mut s, -1), (0, -1, 3));
    drop(s);
    assert!(server.terminate().success());
}
