//! The Kafka-protocol front end (`oncelog serve`): unmodified Kafka clients
//! produce to and fetch from a store over TCP.
//!
//! Six APIs, in the versions real clients use (../shared/reference/
//! kafka-clients.md §2): ApiVersions, Metadata, InitProducerId, Produce,
//! Fetch, ListOffsets. Nothing else is advertised, so clients send nothing
//! else; any other request closes its connection with a log line.
//!
//! Invariants:
//! - Produced batches are checked by the log (CRC, structure, Kafka's
//!   producer rules) and stored byte for byte; Fetch returns stored bytes,
//!   never re-encoded, and never a producer-state checkpoint batch.
//! - Responses on a connection go out in request order. Requests are read
//!   and their appends written in order on the connection's task; what
//!   waits (durability, a fetch's long poll) runs in a task of its own, so
//!   requests pipeline and no runtime thread waits for an append's fsync
//!   (`Log::append_async`). The rare syncs a request itself may do (a
//!   segment roll, a new partition's directory) run in `block_in_place`,
//!   so the runtime hands the worker's other tasks to another thread.
//! - Produce v3+ carries exactly one batch per partition; anything else is
//!   refused before anything is written. Fetch and ListOffsets never create
//!   topics (Metadata and Produce do).
//! - A frame that is malformed, truncated, oversized or of an API we do not
//!   serve closes that connection only; nothing of it reaches a log. (The
//!   codec reserves room for the array lengths a request claims before it
//!   reads them; the `oncelog` binary installs
//!   [`crate::storage::LazyLargeAlloc`] so that such a claim costs address
//!   space rather than aborting the process.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::format::{BatchBuilder, BatchView, FormatErrorKind, peek_batch_len};
use crate::{AppendOutcome, Config, Durability, Error, Log, Result, Store};

/// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
const MAX_FRAME: usize = 100 << 20;
/// Requests of one connection answered concurrently (pipelining depth).
const MAX_IN_FLIGHT: usize = 64;
/// Longest a Fetch with nothing to return waits for data.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(1);
/// Most bytes one Fetch response carries (Kafka's `fetch.max.bytes`).
const MAX_FETCH_BYTES: usize = 50 << 20;
/// The node id of this single-node "cluster".
const NODE: i32 = 0;

/// What `oncelog serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// `host:port` that Metadata tells clients to connect to (default: the
    /// listening address).
    pub advertise: Option<(String, u16)>,
    /// Partitions of a topic created on first use.
    pub partitions: u32,
    /// Test only: append a retried batch again instead of answering it as a
    /// duplicate, to show that a test of exactly-once can fail.
    pub test_disable_dedup: bool,
}

/// Kafka error codes used here.
mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
    pub const PRODUCER_FENCED: i16 = 90;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
}

/// The APIs served and their version ranges (a coherent set, as a Kafka 3.x
/// broker would advertise for them).
const APIS: [(ApiKey, i16, i16); 6] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
];

fn supported(key: ApiKey, version: i16) -> bool {
    APIS.iter()
        .any(|(k, lo, hi)| *k == key && (*lo..=*hi).contains(&version))
}

/// Kafka's error code for an append that failed.
fn produce_error(e: &Error) -> i16 {
    match e {
        Error::InvalidBatch { source, .. } => match source.kind {
            FormatErrorKind::CrcMismatch { .. } => code::CORRUPT_MESSAGE,
            _ => code::INVALID_RECORD,
        },
        Error::BatchTooLarge { .. } => code::MESSAGE_TOO_LARGE,
        Error::InvalidTopic { .. } => code::INVALID_TOPIC_EXCEPTION,
        Error::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        Error::InvalidProducerEpoch { .. } => code::INVALID_PRODUCER_EPOCH,
        Error::ProducerFenced { .. } => code::PRODUCER_FENCED,
        Error::InvalidRecord { .. } | Error::Unsupported { .. } => code::INVALID_RECORD,
        Error::Io { .. } | Error::Poisoned { .. } | Error::Closed { .. } => {
            code::KAFKA_STORAGE_ERROR
        }
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// Run the server until SIGTERM or ctrl-c, then close the store cleanly.
/// `ready` is called once with the bound address.
///
/// # Errors
/// Opening the store, binding the address, or closing the store.
pub fn serve(
    dir: &Path,
    config: Config,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr, &str),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("oncelog-serve")
        .build()
        .map_err(|e| Error::io("start the server runtime", dir, e))?;
    // (The address stands where a path would in these errors.)
    let at = options.listen.to_string();
    let store = Arc::new(Store::open(dir, config)?);
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::io("listen", at.as_str(), e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::io("read the listening address", at.as_str(), e))?;
        let (host, port) = options
            .advertise
            .clone()
            .unwrap_or_else(|| (bound.ip().to_string(), bound.port()));
        ready(bound, &format!("{host}:{port}"));
        let server = Arc::new(Server {
            store: Arc::clone(&store),
            host: StrBytes::from_string(host),
            port: i32::from(port),
            options,
        });
        let mut stop = Box::pin(shutdown_signal());
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let server = Arc::clone(&server);
                        tokio::spawn(async move {
                            if let Err(e) = server.connection(socket).await {
                                tracing::warn!(%peer, error = %e, "connection closed");
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
            }
        }
        tracing::info!("shutting down");
        Ok::<(), Error>(())
    });
    // Connections still open end with the runtime; then the store closes.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let store = Arc::try_unwrap(store).map_err(|_| Error::Closed {
        what: "store still in use at shutdown".into(),
    });
    match (result, store) {
        (Err(e), _) => Err(e),
        (Ok(()), Ok(store)) => store.close(),
        (Ok(()), Err(e)) => Err(e),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[derive(Debug)]
struct Server {
    store: Arc<Store>,
    host: StrBytes,
    port: i32,
    options: ServeOptions,
}

/// A response being prepared: ready now, or by a task.
type Pending = tokio::task::JoinHandle<Option<Bytes>>;

impl Server {
    async fn connection(self: Arc<Self>, socket: TcpStream) -> std::io::Result<()> {
        socket.set_nodelay(true)?;
        let (mut rd, mut wr) = socket.into_split();
        let (tx, mut rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
        // Responses in request order.
        let writer = tokio::spawn(async move {
            while let Some(pending) = rx.recv().await {
                match pending.await {
                    Ok(Some(frame)) => wr.write_all(&frame).await?,
                    Ok(None) => {}
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
            wr.shutdown().await
        });
        let result = async {
            loop {
                let mut len = [0u8; 4];
                match rd.read_exact(&mut len).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                let len = u32::from_be_bytes(len) as usize;
                if !(8..=MAX_FRAME).contains(&len) {
                    return Err(std::io::Error::other(format!(
                        "request frame of {len} bytes (accepted: 8 to {MAX_FRAME})"
                    )));
                }
                let mut body = vec![0u8; len];
                rd.read_exact(&mut body).await?;
                // Produce and Metadata may sync (a segment roll, a new
                // partition's directory): the runtime moves this worker's
                // other tasks elsewhere meanwhile, so none waits behind it.
                let body = Bytes::from(body);
                let may_sync = matches!(body.get(..2), Some([0, 0] | [0, 3]));
                let pending = if may_sync {
                    tokio::task::block_in_place(|| self.request(body))?
                } else {
                    self.request(body)?
                };
                if tx.send(pending).await.is_err() {
                    return Ok(()); // the writer failed; its error is reported below
                }
            }
        }
        .await;
        drop(tx);
        let written = writer.await.map_err(std::io::Error::other)?;
        result.and(written)
    }

    /// Decode one request, do what must happen in order (appends are
    /// written here), and return the task that finishes its response.
    fn request(self: &Arc<Self>, mut body: Bytes) -> std::io::Result<Pending> {
        let key = body.slice(0..2).get_i16();
        let version = body.slice(2..4).get_i16();
        let correlation_id = body.slice(4..8).get_i32();
        let bad = |what: String| std::io::Error::other(what);
        let api = ApiKey::try_from(key).map_err(|()| bad(format!("unknown api key {key}")))?;
        if api == ApiKey::ApiVersions && !supported(api, version) {
            // KIP-511: answer in v0 with the versions we serve; the client
            // retries with one of them. The rest of the header may not parse.
            return Ok(ready(frame(
                correlation_id,
                0,
                0,
                &api_versions(code::UNSUPPORTED_VERSION),
            )));
        }
        if !supported(api, version) {
            return Err(bad(format!("{api:?} v{version} is not served")));
        }
        let header = RequestHeader::decode(&mut body, api.request_header_version(version))
            .map_err(|e| bad(format!("{api:?} v{version} header: {e}")))?;
        let respond_version = api.response_header_version(version);
        let cid = header.correlation_id;
        let pending = match api {
            ApiKey::ApiVersions => {
                ApiVersionsRequest::decode(&mut body, version)
                    .map_err(|e| undecodable(api, version, e))?;
                ready(frame(
                    cid,
                    respond_version,
                    version,
                    &api_versions(code::NONE),
                ))
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut body, version)
                    .map_err(|e| undecodable(api, version, e))?;
                ready(frame(cid, respond_version, version, &self.metadata(&req)))
            }
            ApiKey::InitProducerId => {
                let req = InitProducerIdRequest::decode(&mut body, version)
                    .map_err(|e| undecodable(api, version, e))?;
                ready(frame(
                    cid,
                    respond_version,
                    version,
                    &self.init_producer_id(&req),
                ))
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut body, version)
                    .map_err(|e| undecodable(api, version, e))?;
                ready(frame(
                    cid,
                    respond_version,
                    version,
                    &self.list_offsets(&req, version),
                ))
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut body, version)
                    .map_err(|e| undecodable(api, version, e))?;
                self.produce(req, cid, respond_version, version)
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut body, version)
                    .map_err(|e| undecodable(api, version, e))?;
                let server = Arc::clone(self);
                tokio::spawn(async move {
                    let resp = server.fetch(&req, version).await;
                    frame(cid, respond_version, version, &resp)
                })
            }
            _ => return Err(bad(format!("{api:?} is not served"))),
        };
        Ok(pending)
    }

    /// An existing partition (Fetch and ListOffsets do not create topics).
    fn existing(&self, topic: &str, partition: i32) -> std::result::Result<Log, i16> {
        let p = u32::try_from(partition).map_err(|_| code::UNKNOWN_TOPIC_OR_PARTITION)?;
        match self.store.existing_log(topic, p) {
            Ok(Some(log)) => Ok(log),
            Ok(None) | Err(Error::InvalidTopic { .. }) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
            Err(e) => Err(produce_error(&e)),
        }
    }

    /// A partition to produce to, created on first use within the
    /// configured number of partitions.
    fn log(&self, topic: &str, partition: i32) -> std::result::Result<Log, i16> {
        let Ok(p) = u32::try_from(partition) else {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        };
        // Partitions past the configured number exist only if made before
        // (by a store opened with more).
        if p >= self.options.partitions {
            return match self.store.existing_log(topic, p) {
                Ok(Some(log)) => Ok(log),
                Ok(None) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Err(e) => Err(produce_error(&e)),
            };
        }
        self.store.log(topic, p).map_err(|e| match e {
            Error::InvalidTopic { .. } => code::INVALID_TOPIC_EXCEPTION,
            ref other => produce_error(other),
        })
    }

    /// Partitions of a topic: those that exist, or the configured number
    /// for a topic created on first use.
    fn partitions_of(&self, topic: &str) -> u32 {
        let existing = self
            .store
            .logs()
            .iter()
            .filter(|l| l.topic() == topic)
            .map(|l| l.partition() + 1)
            .max()
            .unwrap_or(0);
        existing.max(self.options.partitions)
    }

    fn metadata(&self, req: &MetadataRequest) -> MetadataResponse {
        let names: Vec<String> = match &req.topics {
            Some(topics) => topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
            None => {
                let mut all: Vec<String> = self
                    .store
                    .logs()
                    .iter()
                    .map(|l| l.topic().to_string())
                    .collect();
                all.sort();
                all.dedup();
                all
            }
        };
        let topics = names
            .into_iter()
            .map(|name| {
                let created = crate::validate_topic(&name).and_then(|()| {
                    (0..self.partitions_of(&name))
                        .try_for_each(|p| self.store.log(&name, p).map(|_| ()))
                });
                let (error_code, partitions) = match created {
                    Ok(()) => (
                        code::NONE,
                        (0..self.partitions_of(&name) as i32)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(NODE))
                                    .with_leader_epoch(0)
                                    .with_replica_nodes(vec![BrokerId(NODE)])
                                    .with_isr_nodes(vec![BrokerId(NODE)])
                            })
                            .collect(),
                    ),
                    Err(Error::InvalidTopic { .. }) => (code::INVALID_TOPIC_EXCEPTION, vec![]),
                    Err(e) => (produce_error(&e), vec![]),
                };
                MetadataResponseTopic::default()
                    .with_error_code(error_code)
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_partitions(partitions)
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(NODE))
                    .with_host(self.host.clone())
                    .with_port(self.port),
            ])
            .with_cluster_id(Some(StrBytes::from_static_str("oncelog")))
            .with_controller_id(BrokerId(NODE))
            .with_topics(topics)
    }

    fn init_producer_id(&self, req: &InitProducerIdRequest) -> InitProducerIdResponse {
        let resp = InitProducerIdResponse::default();
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            return resp.with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        }
        let result = if req.producer_id.0 < 0 {
            self.store.init_producer()
        } else {
            // KIP-360: a producer asks for its next epoch.
            self.store
                .init_producer_with(req.producer_id.0, req.producer_epoch)
        };
        match result {
            Ok((id, epoch)) => resp
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(e) => {
                tracing::info!(error = %e, "InitProducerId refused");
                resp.with_error_code(match e {
                    Error::InvalidProducerEpoch { .. } | Error::InvalidProducer { .. } => {
                        code::INVALID_PRODUCER_EPOCH
                    }
                    ref other => produce_error(other),
                })
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
            }
        }
    }

    fn list_offsets(&self, req: &ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let resp = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index);
                        let log = match self.existing(&t.name.0, p.partition_index) {
                            Ok(log) => log,
                            Err(code) => return resp.with_error_code(code),
                        };
                        // (-3, the offset of the largest timestamp, came with
                        // v7, which is not advertised.)
                        let found = match p.timestamp {
                            -2 => Ok((-1, log.log_start_offset())),
                            -1 => Ok((-1, log.next_offset())),
                            ts if ts < 0 => Ok((-1, -1)),
                            ts => offset_at_time(&log, ts),
                        };
                        let resp = match found {
                            Ok((ts, o)) => resp.with_timestamp(ts).with_offset(o),
                            Err(e) => resp.with_error_code(produce_error(&e)),
                        };
                        if version >= 4 {
                            resp.with_leader_epoch(0)
                        } else {
                            resp
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    /// Appends are written now, in request order; the response waits in
    /// its own task for them to be durable (acks=all) or not (acks 0/1).
    fn produce(
        self: &Arc<Self>,
        req: ProduceRequest,
        cid: i32,
        header_version: i16,
        version: i16,
    ) -> Pending {
        let durability = if req.acks == -1 {
            Durability::Sync
        } else {
            Durability::Os
        };
        let transactional = req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty());
        let mut waits = Vec::new();
        for topic in &req.topic_data {
            let mut parts = Vec::new();
            for p in &topic.partition_data {
                let result = if transactional {
                    Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                } else {
                    self.log(&topic.name.0, p.index)
                        .and_then(|log| self.append_one(&log, p.records.as_ref(), durability))
                };
                parts.push((p.index, result));
            }
            waits.push((topic.name.clone(), parts));
        }
        let acks = req.acks;
        tokio::spawn(async move {
            let mut responses = Vec::new();
            for (name, parts) in waits {
                let mut partition_responses = Vec::new();
                for (index, result) in parts {
                    let resp = PartitionProduceResponse::default().with_index(index);
                    let resp = match result {
                        Err(code) => resp.with_error_code(code).with_base_offset(-1),
                        Ok(future) => produce_outcome(resp, future.await),
                    };
                    partition_responses.push(resp);
                }
                responses.push(
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(partition_responses),
                );
            }
            if acks == 0 {
                return None; // acks=0 expects no response at all
            }
            let resp = ProduceResponse::default().with_responses(responses);
            frame(cid, header_version, version, &resp)
        })
    }

    /// Append a partition's records: exactly one batch, as Kafka requires
    /// from Produce v3 on; anything else is refused before anything is
    /// written.
    fn append_one(
        &self,
        log: &Log,
        records: Option<&Bytes>,
        durability: Durability,
    ) -> std::result::Result<crate::AppendFuture, i16> {
        let batch = records.ok_or(code::CORRUPT_MESSAGE)?;
        match peek_batch_len(batch) {
            Some(len) if len == batch.len() => {}
            Some(len) if len < batch.len() => return Err(code::INVALID_RECORD),
            _ => return Err(code::CORRUPT_MESSAGE),
        }
        Ok(if self.options.test_disable_dedup {
            self.append_without_dedup(log, batch, durability)
        } else {
            log.append_async(batch, durability)
        })
    }

    /// Test only: a retry that the log would answer as a duplicate is
    /// appended again as a batch without a producer id.
    fn append_without_dedup(
        &self,
        log: &Log,
        batch: &[u8],
        durability: Durability,
    ) -> crate::AppendFuture {
        let retried = BatchView::parse(batch).ok().and_then(|v| {
            let info = log.producer(v.producer_id())?;
            let seen = info
                .batches
                .iter()
                .any(|b| b.last_sequence == v.last_sequence());
            seen.then(|| {
                let mut b = BatchBuilder::new();
                for r in v.records().ok()?.flatten() {
                    b.push(v.record_timestamp(&r), r.key, r.value, &[]);
                }
                Some(b.build())
            })?
        });
        match retried {
            Some(copy) => log.append_async(&copy, durability),
            None => log.append_async(batch, durability),
        }
    }

    async fn fetch(&self, req: &FetchRequest, version: i16) -> FetchResponse {
        let wait =
            Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_FETCH_WAIT);
        let deadline = Instant::now() + wait;
        loop {
            let (resp, bytes) = self.fetch_once(req, version);
            let min = usize::try_from(req.min_bytes).unwrap_or(0).max(1);
            if bytes >= min || Instant::now() >= deadline {
                return resp;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn fetch_once(&self, req: &FetchRequest, version: i16) -> (FetchResponse, usize) {
        let mut total = 0usize;
        let mut budget = usize::try_from(req.max_bytes)
            .unwrap_or(0)
            .clamp(1, MAX_FETCH_BYTES);
        let responses = req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut data = PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1);
                        if version >= 4 {
                            data = data.with_aborted_transactions(Some(vec![]));
                        }
                        if version >= 11 {
                            data = data.with_preferred_read_replica(BrokerId(-1));
                        }
                        let log = match self.existing(&t.topic.0, p.partition) {
                            Ok(log) => log,
                            Err(code) => return data.with_error_code(code),
                        };
                        let hw = log.next_offset();
                        let mut data = data.with_high_watermark(hw).with_last_stable_offset(hw);
                        if version >= 5 {
                            data = data.with_log_start_offset(log.log_start_offset());
                        }
                        // Kafka's rule: only the first partition with data may
                        // go over the request's budget (one whole batch).
                        if budget == 0 {
                            return data.with_records(Some(Bytes::new()));
                        }
                        let max = usize::try_from(p.partition_max_bytes)
                            .unwrap_or(0)
                            .min(budget)
                            .max(1);
                        match stored_batches(&log, p.fetch_offset, max) {
                            Ok(bytes) => {
                                total += bytes.len();
                                budget = if total > 0 && bytes.len() >= budget {
                                    0
                                } else {
                                    budget - bytes.len()
                                };
                                data.with_records(Some(bytes))
                            }
                            Err(e) => data.with_error_code(match e {
                                Error::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
                                ref other => produce_error(other),
                            }),
                        }
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(partitions)
            })
            .collect();
        (FetchResponse::default().with_responses(responses), total)
    }
}

/// The first record at or after time `ts`: its timestamp and offset, or
/// `(-1, -1)` if every record is older (Kafka's answer).
fn offset_at_time(log: &Log, ts: i64) -> Result<(i64, i64)> {
    let Some(offset) = log.offset_for_timestamp(ts)? else {
        return Ok((-1, -1));
    };
    for b in &log.read(offset, 1)? {
        let b = b?;
        let view = b.view();
        // A compressed batch's records cannot be read here: answer with
        // the batch (its largest timestamp, its first offset at or after).
        let Ok(records) = view.records() else {
            return Ok((view.max_timestamp(), offset.max(view.base_offset())));
        };
        for r in records.flatten() {
            if view.record_offset(&r) >= offset && view.record_timestamp(&r) >= ts {
                return Ok((view.record_timestamp(&r), view.record_offset(&r)));
            }
        }
    }
    Ok((-1, offset))
}

/// The stored batches from `offset`, as stored, without checkpoint batches:
/// one slice of the segment when there is no checkpoint among them (the
/// usual case), else the data batches copied together.
fn stored_batches(log: &Log, offset: i64, max: usize) -> Result<Bytes> {
    let read = log.read(offset, max)?;
    let mut parts: Vec<Bytes> = Vec::new();
    for b in read.iter() {
        parts.push(b?.bytes().clone());
    }
    let whole = read.bytes();
    let contiguous: usize = parts.iter().map(Bytes::len).sum();
    if contiguous == whole.len() {
        return Ok(whole.clone());
    }
    let mut out = BytesMut::with_capacity(contiguous);
    for p in parts {
        out.extend_from_slice(&p);
    }
    Ok(out.freeze())
}

/// The partition's answer once its appends are done.
fn produce_outcome(
    resp: PartitionProduceResponse,
    outcome: Result<AppendOutcome>,
) -> PartitionProduceResponse {
    match outcome {
        Ok(AppendOutcome::Appended { base_offset, .. })
        | Ok(AppendOutcome::Duplicate {
            base_offset: Some(base_offset),
            ..
        }) => resp.with_base_offset(base_offset),
        Ok(AppendOutcome::Duplicate {
            base_offset: None, ..
        }) => resp
            .with_error_code(code::DUPLICATE_SEQUENCE_NUMBER)
            .with_base_offset(-1),
        Err(e) => {
            tracing::info!(error = %e, "produce refused");
            resp.with_error_code(produce_error(&e))
                .with_base_offset(-1)
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
        }
    }
}

fn undecodable(api: ApiKey, version: i16, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{api:?} v{version}: {e}"))
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            APIS.iter()
                .map(|(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*lo)
                        .with_max_version(*hi)
                })
                .collect(),
        )
}

fn ready(frame: Option<Bytes>) -> Pending {
    tokio::spawn(async move { frame })
}

/// A size-prefixed response frame, or `None` (logged) if it cannot be
/// encoded, which closes nothing but leaves the client to time out.
fn frame<T: Encodable>(cid: i32, header_version: i16, version: i16, body: &T) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(cid);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
    {
        tracing::error!(error = %e, version, "could not encode a response");
        return None;
    }
    let len = u32::try_from(buf.len() - 4).unwrap_or(u32::MAX);
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;

    fn server(dir: &Path) -> Server {
        let store = Store::open(dir, Config::default()).unwrap();
        let log = store.log("t", 0).unwrap();
        let mut b = BatchBuilder::new().with_producer(1, 0, 0);
        b.push(1_700_000_000_000, None, Some(b"v"), &[]);
        log.append(&b.build()).unwrap();
        log.checkpoint().unwrap();
        Server {
            store: Arc::new(store),
            host: StrBytes::from_static_str("127.0.0.1"),
            port: 9092,
            options: ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                advertise: None,
                partitions: 2,
                test_disable_dedup: false,
            },
        }
    }

    /// Every response we build encodes in every version we advertise (the
    /// codec refuses a field set where the version lacks it, and a response
    /// that does not encode is never sent).
    #[test]
    fn every_response_encodes_in_every_advertised_version() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path());
        let name = || TopicName(StrBytes::from_static_str("t"));
        for (key, lo, hi) in APIS {
            for v in lo..=hi {
                let hv = key.response_header_version(v);
                let ok = match key {
                    ApiKey::ApiVersions => frame(1, hv, v, &api_versions(code::NONE)),
                    ApiKey::Metadata => {
                        let req = MetadataRequest::default().with_topics(Some(vec![
                            MetadataRequestTopic::default().with_name(Some(name())),
                        ]));
                        frame(1, hv, v, &s.metadata(&req))
                    }
                    ApiKey::InitProducerId => {
                        let fresh = InitProducerIdRequest::default()
                            .with_transactional_id(None)
                            .with_producer_id(ProducerId(-1));
                        let stale = InitProducerIdRequest::default()
                            .with_transactional_id(None)
                            .with_producer_id(ProducerId(12345))
                            .with_producer_epoch(7);
                        frame(1, hv, v, &s.init_producer_id(&fresh)).and(frame(
                            1,
                            hv,
                            v,
                            &s.init_producer_id(&stale),
                        ))
                    }
                    ApiKey::ListOffsets => {
                        let req = ListOffsetsRequest::default().with_topics(vec![
                            ListOffsetsTopic::default()
                                .with_name(name())
                                .with_partitions(
                                    [-1, -2, 1_700_000_000_000]
                                        .map(|ts| {
                                            ListOffsetsPartition::default().with_timestamp(ts)
                                        })
                                        .to_vec(),
                                ),
                        ]);
                        frame(1, hv, v, &s.list_offsets(&req, v))
                    }
                    ApiKey::Fetch => {
                        let req =
                            FetchRequest::default()
                                .with_max_bytes(1 << 20)
                                .with_topics(vec![
                                    FetchTopic::default()
                                        .with_topic(name())
                                        .with_partitions(vec![
                                            FetchPartition::default()
                                                .with_partition_max_bytes(1 << 20),
                                            FetchPartition::default().with_partition(7),
                                        ]),
                                ]);
                        frame(1, hv, v, &s.fetch_once(&req, v).0)
                    }
                    ApiKey::Produce => {
                        let failed = PartitionProduceResponse::default()
                            .with_error_code(code::INVALID_RECORD)
                            .with_base_offset(-1)
                            .with_error_message(Some(StrBytes::from_static_str("bad")));
                        let resp = ProduceResponse::default().with_responses(vec![
                            TopicProduceResponse::default()
                                .with_name(name())
                                .with_partition_responses(vec![
                                    failed,
                                    PartitionProduceResponse::default().with_base_offset(3),
                                ]),
                        ]);
                        frame(1, hv, v, &resp)
                    }
                    _ => unreachable!(),
                };
                assert!(ok.is_some(), "{key:?} v{v} does not encode");
            }
        }
    }
}
