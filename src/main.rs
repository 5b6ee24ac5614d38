//! The `oncelog` command line: scriptable, one JSON object per line on stdout.
//!
//! Errors are a line `{"error": "<snake_case kind>", "message": "..."}` on
//! stdout and a non-zero exit status (1 for errors, 2 for usage errors).
//! Log lines (tracing) go to stderr; set `ONCELOG_LOG=info` to see more.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use oncelog::format::BatchBuilder;
use oncelog::format::batch::increment_sequence;
use oncelog::{AppendOutcome, Clock, Config, Durability, Error, Log, Message, Store, SystemClock};

const USAGE: &str = "usage:
  oncelog produce DIR TOPIC PARTITION [--batch-records N] [--durability sync|os]
                  [--producer-id ID [--epoch E] | --producer NAME] [--sequence S]
  oncelog dump DIR TOPIC PARTITION [--from OFFSET]
  oncelog producers DIR TOPIC PARTITION
  oncelog verify DIR
  oncelog serve DIR [--listen HOST:PORT] [--advertise HOST:PORT] [--partitions N]
  oncelog demo";

/// A failure of one command: a kind for scripts and a message for people.
struct Failure {
    kind: String,
    message: String,
    usage: bool,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            kind: e.kind().to_string(),
            message: e.to_string(),
            usage: false,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure {
            kind: "io".into(),
            message: e.to_string(),
            usage: false,
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        kind: "usage".into(),
        message: format!("{}\n{USAGE}", message.into()),
        usage: true,
    }
}

// ---- JSON output -------------------------------------------------------

/// A JSON value, enough for our output lines.
enum J {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
    Null,
    Raw(String),
}

fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn obj(fields: &[(&str, J)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        escape(k, &mut out);
        out.push_str(": ");
        match v {
            J::S(s) => escape(s, &mut out),
            J::I(n) => out.push_str(&n.to_string()),
            J::U(n) => out.push_str(&n.to_string()),
            J::F(x) if x.is_finite() => out.push_str(&format!("{x:.3}")),
            J::F(_) => out.push_str("null"),
            J::B(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Null => out.push_str("null"),
            J::Raw(r) => out.push_str(r),
        }
    }
    out.push('}');
    out
}

fn emit(line: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- argument parsing --------------------------------------------------

struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

fn parse_args(args: &[String], known_flags: &[&str]) -> Result<Args, Failure> {
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| usage(format!("--{name} needs a value")))?;
                    (name.to_string(), v.clone())
                }
            };
            if !known_flags.contains(&name.as_str()) {
                return Err(usage(format!("unknown option --{name}")));
            }
            flags.push((name, value));
        } else {
            positional.push(a.clone());
        }
    }
    Ok(Args { positional, flags })
}

impl Args {
    fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn expect_positional(&self, names: &[&str]) -> Result<(), Failure> {
        if self.positional.len() != names.len() {
            return Err(usage(format!(
                "expected {} argument(s): {}",
                names.len(),
                names.join(" ")
            )));
        }
        Ok(())
    }
}

fn parse_num<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, Failure> {
    s.parse()
        .map_err(|_| usage(format!("{what} must be a number, got {s:?}")))
}

// ---- commands ----------------------------------------------------------

/// Who writes the batches of `oncelog produce`.
enum Sender {
    /// Plain batches, no producer id.
    Plain,
    /// Batches carrying an explicit producer id and epoch; `next` is the
    /// base sequence of the next batch.
    Explicit { id: i64, epoch: i16, next: i32 },
    /// A named producer; `next` is `Some` when the sequences were given
    /// (`--sequence`), else the producer picks them (`Producer::send`).
    Named {
        producer: oncelog::Producer,
        next: Option<i32>,
    },
}

/// One line of stdin, waiting to be sent.
struct Line {
    timestamp: i64,
    value: Vec<u8>,
}

/// `{"outcome": ..., "base_offset": ..., "last_offset": ...}`.
fn outcome_line(at: &AppendOutcome) -> String {
    let off = offset_or_null;
    obj(&[
        ("outcome", J::S(outcome_name(at).into())),
        ("base_offset", off(at.base_offset())),
        ("last_offset", off(at.last_offset())),
    ])
}

impl Sender {
    /// Send one batch and print its outcome.
    fn send(&mut self, log: &Log, durability: Durability, lines: &[Line]) -> Result<(), Failure> {
        let count =
            i32::try_from(lines.len()).map_err(|_| usage("--batch-records is too large"))?;
        let build = |mut b: BatchBuilder| {
            for l in lines {
                b.push(l.timestamp, None, Some(&l.value), &[]);
            }
            b.build()
        };
        let at = match self {
            Sender::Plain => log.append_with(&build(BatchBuilder::new()), durability)?,
            Sender::Explicit { id, epoch, next } => {
                let batch = build(BatchBuilder::new().with_producer(*id, *epoch, *next));
                let at = log.append_with(&batch, durability)?;
                *next = increment_sequence(*next, count);
                at
            }
            Sender::Named { producer, next } => {
                let messages: Vec<Message<'_>> = lines
                    .iter()
                    .map(|l| Message::new(&l.value).with_timestamp(l.timestamp))
                    .collect();
                match next {
                    Some(seq) => {
                        let at = producer.send_at(log.topic(), log.partition(), *seq, &messages)?;
                        *seq = increment_sequence(*seq, count);
                        at
                    }
                    None => producer.send(log.topic(), log.partition(), &messages)?,
                }
            }
        };
        emit(&outcome_line(&at))
    }
}

fn produce(args: &[String]) -> Result<(), Failure> {
    let a = parse_args(
        args,
        &[
            "batch-records",
            "durability",
            "producer-id",
            "epoch",
            "sequence",
            "producer",
        ],
    )?;
    a.expect_positional(&["DIR", "TOPIC", "PARTITION"])?;
    let partition: u32 = parse_num("PARTITION", &a.positional[2])?;
    let per_batch: usize = match a.flag("batch-records") {
        Some(v) => parse_num("--batch-records", v)?,
        None => 1,
    };
    if per_batch == 0 || i32::try_from(per_batch).is_err() {
        return Err(usage("--batch-records must be at least 1 and fit a batch"));
    }
    let durability = match a.flag("durability").unwrap_or("sync") {
        "sync" => Durability::Sync,
        "os" => Durability::Os,
        other => {
            return Err(usage(format!(
                "--durability must be sync or os, got {other:?}"
            )));
        }
    };
    let producer_id: Option<i64> = a
        .flag("producer-id")
        .map(|v| parse_num("--producer-id", v))
        .transpose()?;
    let epoch: Option<i16> = a
        .flag("epoch")
        .map(|v| parse_num("--epoch", v))
        .transpose()?;
    let sequence: Option<i32> = a
        .flag("sequence")
        .map(|v| parse_num("--sequence", v))
        .transpose()?;
    let name = a.flag("producer");
    if name.is_some() && producer_id.is_some() {
        return Err(usage(
            "--producer (a named producer) and --producer-id (an explicit id) exclude each other",
        ));
    }
    if producer_id.is_some_and(|id| id < 0) {
        return Err(usage("--producer-id must be 0 or more"));
    }
    if epoch.is_some() && producer_id.is_none() {
        return Err(usage(if name.is_some() {
            "--epoch goes with --producer-id; a named producer's epoch is the store's"
        } else {
            "--epoch needs --producer-id"
        }));
    }
    if sequence.is_some() && producer_id.is_none() && name.is_none() {
        return Err(usage("--sequence needs --producer-id or --producer"));
    }
    let store = Store::open(
        &a.positional[0],
        Config::default().with_durability(durability),
    )?;
    let log = store.log(&a.positional[1], partition)?;
    let mut sender = match (producer_id, name) {
        (Some(id), _) => Sender::Explicit {
            id,
            epoch: epoch.unwrap_or(0),
            next: sequence.unwrap_or(0),
        },
        (None, Some(name)) => match store.producer(name) {
            Ok(p) => Sender::Named {
                producer: p.with_durability(durability),
                next: sequence,
            },
            Err(e) => {
                drop(log);
                let _ = store.close();
                return Err(e.into());
            }
        },
        (None, None) => Sender::Plain,
    };
    let result = produce_lines(&log, durability, per_batch, &mut sender);
    // Close cleanly even after a refused batch: the producer table's
    // checkpoint is written, and the next open has nothing to replay.
    drop(sender);
    drop(log);
    let closed = store.close();
    result?;
    closed?;
    Ok(())
}

/// Read stdin, send a batch per `per_batch` lines (and one for the rest).
fn produce_lines(
    log: &Log,
    durability: Durability,
    per_batch: usize,
    sender: &mut Sender,
) -> Result<(), Failure> {
    let clock = SystemClock;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut batch: Vec<Line> = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        batch.push(Line {
            timestamp: clock.now_ms(),
            value: line.clone(),
        });
        if batch.len() == per_batch {
            sender.send(log, durability, &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        sender.send(log, durability, &batch)?;
    }
    Ok(())
}

fn encode_field(data: Option<&[u8]>, utf8: bool) -> J {
    match data {
        None => J::Null,
        Some(d) if utf8 => J::S(String::from_utf8_lossy(d).into_owned()),
        Some(d) => J::S(base64(d)),
    }
}

/// Open the store at `dir` and its existing partition, or `not_found`.
fn open_existing(dir: &str, topic: &str, partition: u32) -> Result<(Store, Log), Failure> {
    let dir = Path::new(dir);
    if !dir.is_dir() {
        return Err(Failure {
            kind: "not_found".into(),
            message: format!("no store directory {}", dir.display()),
            usage: false,
        });
    }
    let store = Store::open(dir, Config::default())?;
    let Some(log) = store.existing_log(topic, partition)? else {
        return Err(Failure {
            kind: "not_found".into(),
            message: format!("no partition {}-{} in {}", topic, partition, dir.display()),
            usage: false,
        });
    };
    Ok((store, log))
}

fn dump(args: &[String]) -> Result<(), Failure> {
    let a = parse_args(args, &["from"])?;
    a.expect_positional(&["DIR", "TOPIC", "PARTITION"])?;
    let partition: u32 = parse_num("PARTITION", &a.positional[2])?;
    let (_store, log) = open_existing(&a.positional[0], &a.positional[1], partition)?;
    let mut offset = match a.flag("from") {
        Some(v) => parse_num::<i64>("--from", v)?,
        None => log.log_start_offset(),
    };
    let from = offset;
    let end = log.next_offset();
    while offset < end {
        // Iterate checkpoint (control) batches too, to step over them: a
        // read that holds only a checkpoint would otherwise never advance.
        let batches = log.read(offset, 1 << 20)?.with_checkpoints();
        if batches.is_empty() {
            break;
        }
        let before = offset;
        for batch in &batches {
            let batch = batch?;
            let view = batch.view();
            offset = view.last_offset() + 1;
            if view.is_control() {
                continue;
            }
            let records = view.records().map_err(|e| Failure {
                kind: "unsupported".into(),
                message: format!(
                    "batch at offset {} is {:?}-compressed; dump does not decompress: {e}",
                    view.base_offset(),
                    view.compression()
                ),
                usage: false,
            })?;
            for rec in records {
                let rec = rec.map_err(|e| Failure {
                    kind: "corrupt".into(),
                    message: format!("record in batch at offset {}: {e}", view.base_offset()),
                    usage: false,
                })?;
                let off = view.record_offset(&rec);
                if off < from {
                    continue;
                }
                let mut utf8 = [rec.key, rec.value]
                    .iter()
                    .flatten()
                    .all(|d| std::str::from_utf8(d).is_ok());
                let mut headers = Vec::new();
                for h in rec.headers() {
                    let h = h.map_err(|e| Failure {
                        kind: "corrupt".into(),
                        message: format!("header of record {off}: {e}"),
                        usage: false,
                    })?;
                    utf8 &= std::str::from_utf8(h.key).is_ok()
                        && h.value.is_none_or(|v| std::str::from_utf8(v).is_ok());
                    headers.push(h);
                }
                let mut fields = vec![
                    ("offset", J::I(off)),
                    ("timestamp", J::I(view.record_timestamp(&rec))),
                    ("key", encode_field(rec.key, utf8)),
                    ("value", encode_field(rec.value, utf8)),
                    (
                        "encoding",
                        J::S(if utf8 { "utf8" } else { "base64" }.into()),
                    ),
                ];
                if !headers.is_empty() {
                    let hs: Vec<String> = headers
                        .iter()
                        .map(|h| {
                            obj(&[
                                ("key", encode_field(Some(h.key), utf8)),
                                ("value", encode_field(h.value, utf8)),
                            ])
                        })
                        .collect();
                    fields.push(("headers", J::Raw(format!("[{}]", hs.join(", ")))));
                }
                fields.push(("producer_id", J::I(view.producer_id())));
                fields.push(("producer_epoch", J::I(i64::from(view.producer_epoch()))));
                fields.push(("sequence", J::I(i64::from(view.record_sequence(&rec)))));
                emit(&obj(&fields))?;
            }
        }
        if offset <= before {
            return Err(Failure {
                kind: "corrupt".into(),
                message: format!("reading at offset {before} made no progress"),
                usage: false,
            });
        }
    }
    Ok(())
}

fn producers(args: &[String]) -> Result<(), Failure> {
    let a = parse_args(args, &[])?;
    a.expect_positional(&["DIR", "TOPIC", "PARTITION"])?;
    let partition: u32 = parse_num("PARTITION", &a.positional[2])?;
    let (_store, log) = open_existing(&a.positional[0], &a.positional[1], partition)?;
    // Ordered by producer id.
    for p in log.producers() {
        let batches: Vec<String> = p
            .batches
            .iter()
            .map(|b| {
                obj(&[
                    ("first_sequence", J::I(i64::from(b.first_sequence))),
                    ("last_sequence", J::I(i64::from(b.last_sequence))),
                    ("base_offset", J::I(b.base_offset)),
                    ("last_offset", J::I(b.last_offset)),
                ])
            })
            .collect();
        emit(&obj(&[
            ("producer_id", J::I(p.producer_id)),
            ("producer_epoch", J::I(i64::from(p.epoch))),
            (
                "last_sequence",
                p.last_sequence.map_or(J::Null, |s| J::I(i64::from(s))),
            ),
            ("batches", J::Raw(format!("[{}]", batches.join(", ")))),
            ("last_append_ms", J::I(p.last_append_ms)),
            ("name", p.name.map_or(J::Null, J::S)),
        ]))?;
    }
    Ok(())
}

/// `oncelog serve`: the Kafka-protocol front end (src/kafka.rs). Prints one
/// JSON line once it listens; runs until SIGTERM or ctrl-c.
fn serve(args: &[String]) -> Result<(), Failure> {
    // A test-only switch without a value.
    let test_disable_dedup = args.iter().any(|a| a == "--test-disable-dedup");
    let rest: Vec<String> = args
        .iter()
        .filter(|a| *a != "--test-disable-dedup")
        .cloned()
        .collect();
    let a = parse_args(&rest, &["listen", "advertise", "partitions"])?;
    a.expect_positional(&["DIR"])?;
    let listen = a.flag("listen").unwrap_or("127.0.0.1:9092");
    let listen: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| usage(format!("--listen {listen:?}: {e}")))?;
    let advertise = match a.flag("advertise") {
        None => None,
        Some(hp) => {
            let (host, port) = hp
                .rsplit_once(':')
                .ok_or_else(|| usage(format!("--advertise {hp:?}: expected HOST:PORT")))?;
            let port: u16 = port
                .parse()
                .map_err(|e| usage(format!("--advertise {hp:?}: {e}")))?;
            Some((host.to_string(), port))
        }
    };
    let partitions: u32 = match a.flag("partitions") {
        None => 1,
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| usage(format!("--partitions {n:?}: expected a number from 1")))?,
    };
    let options = oncelog::kafka::ServeOptions {
        listen,
        advertise,
        partitions,
        test_disable_dedup,
    };
    let mut announced = Ok(());
    oncelog::kafka::serve(
        Path::new(&a.positional[0]),
        Config::default(),
        options,
        |bound, advertised| {
            announced = emit(&obj(&[
                ("listening", J::S(bound.to_string())),
                ("advertised", J::S(advertised.to_string())),
            ]));
        },
    )?;
    announced
}

fn verify(args: &[String]) -> Result<(), Failure> {
    let a = parse_args(args, &[])?;
    a.expect_positional(&["DIR"])?;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let report = oncelog::verify(&a.positional[0], |p| {
        if p.bytes_total >= 64 << 20 && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "verify: {} of {} MiB ({:.0}%)",
                p.bytes_done >> 20,
                p.bytes_total >> 20,
                100.0 * p.bytes_done as f64 / p.bytes_total.max(1) as f64
            );
        }
    })?;
    for p in &report.problems {
        emit(&obj(&[
            ("problem", J::S(p.kind.into())),
            (
                "severity",
                J::S(match p.severity {
                    oncelog::Severity::Error => "error".into(),
                    _ => "warning".into(),
                }),
            ),
            ("path", J::S(p.path.display().to_string())),
            ("position", J::U(p.position)),
            ("detail", J::S(p.detail.clone())),
        ]))?;
    }
    emit(&obj(&[
        ("sound", J::B(report.is_sound())),
        ("partitions", J::U(report.partitions as u64)),
        ("segments", J::U(report.segments as u64)),
        ("batches", J::U(report.batches)),
        ("bytes", J::U(report.bytes)),
        ("problems", J::U(report.problems.len() as u64)),
        ("seconds", J::F(started.elapsed().as_secs_f64())),
    ]))?;
    if report.is_sound() {
        Ok(())
    } else {
        let errors = report
            .problems
            .iter()
            .filter(|p| p.severity == oncelog::Severity::Error)
            .count();
        Err(Failure {
            kind: "corrupt".into(),
            message: format!(
                "{errors} problem(s) found; the first: {}",
                report
                    .problems
                    .iter()
                    .find(|p| p.severity == oncelog::Severity::Error)
                    .map(|p| format!(
                        "{} at byte {} of {}: {}",
                        p.kind,
                        p.position,
                        p.path.display(),
                        p.detail
                    ))
                    .unwrap_or_default()
            ),
            usage: false,
        })
    }
}

/// Topic, partition and producer name of the demo's idempotent steps.
const DEMO_TOPIC: &str = "payments";
const DEMO_PRODUCER: &str = "billing";

/// The values of the demo's payment batch `i` (the same bytes on a retry).
fn demo_payments(i: usize) -> Vec<String> {
    (0..3).map(|j| format!("payment {i}.{j}")).collect()
}

fn messages(values: &[String]) -> Vec<Message<'_>> {
    values
        .iter()
        .map(|v| Message::new(v.as_bytes()).with_key(b"account-7"))
        .collect()
}

fn outcome_name(o: &AppendOutcome) -> &'static str {
    if o.is_duplicate() {
        "duplicate"
    } else {
        "appended"
    }
}

fn offset_or_null(o: Option<i64>) -> J {
    o.map_or(J::Null, J::I)
}

/// The integer field `name` of one of our own JSON lines.
fn json_int(line: &str, name: &str) -> Option<i64> {
    let start = line.find(&format!("\"{name}\": "))? + name.len() + 4;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c != '-' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A retry's step line; fails the demo unless it was answered as a
/// duplicate at the original offsets.
fn report_retry(step: &str, original: (i64, i64), retry: &AppendOutcome) -> Result<(), Failure> {
    let same = retry.is_duplicate()
        && retry.base_offset() == Some(original.0)
        && retry.last_offset() == Some(original.1);
    emit(&obj(&[
        ("step", J::S(step.into())),
        ("duplicate", J::B(retry.is_duplicate())),
        ("original_base_offset", J::I(original.0)),
        ("base_offset", offset_or_null(retry.base_offset())),
        ("original_last_offset", J::I(original.1)),
        ("last_offset", offset_or_null(retry.last_offset())),
        ("same_offsets", J::B(same)),
    ]))?;
    if same {
        Ok(())
    } else {
        Err(Failure {
            kind: "demo_failed".into(),
            message: format!(
                "{step}: the retry of the batch at offsets {}..={} came back as {retry:?}",
                original.0, original.1
            ),
            usage: false,
        })
    }
}

/// The demo's idempotent-producer steps, on the (closed) store at `dir`:
/// a lost acknowledgement retried in the same process, then a process
/// killed with SIGKILL after a durable send and the send retried after
/// recovery.
fn demo_producers(dir: &Path, config: &Config) -> Result<(), Failure> {
    // 8. A named producer sends a batch; its acknowledgement is lost.
    let store = Store::open(dir, config.clone())?;
    let producer = store
        .producer(DEMO_PRODUCER)?
        .with_durability(Durability::Sync);
    let values = demo_payments(1);
    let sequence = producer.next_sequence(DEMO_TOPIC, 0)?;
    let sent = producer.send(DEMO_TOPIC, 0, &messages(&values))?;
    let (Some(base), Some(last)) = (sent.base_offset(), sent.last_offset()) else {
        return Err(usage("the first send came back without offsets"));
    };
    emit(&obj(&[
        ("step", J::S("producer_send".into())),
        ("producer", J::S(DEMO_PRODUCER.into())),
        ("producer_id", J::I(producer.id())),
        ("epoch", J::I(i64::from(producer.epoch()))),
        ("sequence", J::I(i64::from(sequence))),
        ("outcome", J::S(outcome_name(&sent).into())),
        ("base_offset", J::I(base)),
        ("last_offset", J::I(last)),
    ]))?;
    emit(&obj(&[
        ("step", J::S("ack_lost".into())),
        ("sequence", J::I(i64::from(sequence))),
        (
            "detail",
            J::S("the acknowledgement never reached the client; it re-sends the batch with the same sequence".into()),
        ),
    ]))?;

    // 9. The retry: a duplicate, answered with the original offsets.
    let retry = producer.send_at(DEMO_TOPIC, 0, sequence, &messages(&values))?;
    report_retry("retry", (base, last), &retry)?;
    drop(producer);
    store.close()?;

    // 10. A process sends durably and is killed (SIGKILL) before it can
    //     close: no checkpoint at close, the batch is past the last one.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("__demo-child")
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| io::BufReader::new(out).read_line(&mut line))
        .transpose();
    let sent = match read {
        Ok(_) => ["sequence", "base_offset", "last_offset"].map(|f| json_int(&line, f)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    let [Some(child_sequence), Some(child_base), Some(child_last)] = sent else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Failure {
            kind: "demo_failed".into(),
            message: format!("the child process did not report its send: {line:?}"),
            usage: false,
        });
    };
    emit(line.trim_end())?;
    let pid = child.id();
    child.kill()?; // SIGKILL on Unix
    let status = child.wait()?;
    #[cfg(unix)]
    let signal = {
        use std::os::unix::process::ExitStatusExt as _;
        status.signal().map_or(J::Null, |s| J::I(i64::from(s)))
    };
    #[cfg(not(unix))]
    let signal = J::Null;
    emit(&obj(&[
        ("step", J::S("kill".into())),
        ("pid", J::U(u64::from(pid))),
        ("signal", signal),
        ("status", J::S(status.to_string())),
    ]))?;

    // 11. Reopen: the producer table comes from the last checkpoint plus
    //     the batches after it.
    let store = Store::open(dir, config.clone())?;
    let log = store.log(DEMO_TOPIC, 0)?;
    let r = log.recovery_report().clone();
    emit(&obj(&[
        ("step", J::S("recover_producers".into())),
        ("checkpoint_offset", offset_or_null(r.checkpoint_offset)),
        ("batches_replayed", J::U(r.batches_replayed)),
        ("producers", J::U(r.producers as u64)),
        ("next_offset", J::I(r.next_offset)),
    ]))?;

    // 12. A new session of the same producer re-sends the killed process's
    //     batch with its sequence: a duplicate at the child's offsets.
    let producer = store.producer(DEMO_PRODUCER)?;
    let child_sequence = i32::try_from(child_sequence)
        .map_err(|_| usage("the child reported a sequence out of range"))?;
    let retry = producer.send_at(DEMO_TOPIC, 0, child_sequence, &messages(&demo_payments(2)));
    drop(producer);
    drop(log);
    let closed = store.close();
    report_retry("retry_after_kill", (child_base, child_last), &retry?)?;
    closed?;
    Ok(())
}

/// `oncelog __demo-child DIR` (not in the usage: the demo's victim): send
/// one batch durably as the demo's named producer, print where it went,
/// then wait for stdin to close (or for the demo to kill this process)
/// without ever closing the store.
fn demo_child(args: &[String]) -> Result<(), Failure> {
    let a = parse_args(args, &[])?;
    a.expect_positional(&["DIR"])?;
    let store = Store::open(
        &a.positional[0],
        Config::default().with_segment_bytes(16 * 1024),
    )?;
    let producer = store
        .producer(DEMO_PRODUCER)?
        .with_durability(Durability::Sync);
    let sequence = producer.next_sequence(DEMO_TOPIC, 0)?;
    let sent = producer.send(DEMO_TOPIC, 0, &messages(&demo_payments(2)))?;
    emit(&obj(&[
        ("step", J::S("child_send".into())),
        ("pid", J::U(u64::from(std::process::id()))),
        ("producer_id", J::I(producer.id())),
        ("epoch", J::I(i64::from(producer.epoch()))),
        ("sequence", J::I(i64::from(sequence))),
        ("outcome", J::S(outcome_name(&sent).into())),
        ("base_offset", offset_or_null(sent.base_offset())),
        ("last_offset", offset_or_null(sent.last_offset())),
    ]))?;
    let mut rest = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut rest);
    // The parent went away without killing us: still no clean close.
    std::process::exit(3);
}

fn demo(args: &[String]) -> Result<(), Failure> {
    let a = parse_args(args, &[])?;
    a.expect_positional(&[])?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    let config = Config::default().with_segment_bytes(16 * 1024);
    let clock = SystemClock;
    let make_batch = |i: usize, n: usize| {
        let mut b = BatchBuilder::new();
        for j in 0..n {
            let value = format!("order {i}.{j}");
            b.push(
                clock.now_ms(),
                Some(format!("k{}", i % 7).as_bytes()),
                Some(value.as_bytes()),
                &[],
            );
        }
        b.build()
    };
    emit(&obj(&[
        ("step", J::S("open".into())),
        ("dir", J::S(dir.display().to_string())),
    ]))?;

    // 1. Appends, durable on return, rolling small segments.
    let store = Store::open(&dir, config.clone())?;
    let log = store.log("orders", 0)?;
    let started = Instant::now();
    for i in 0..200 {
        log.append(&make_batch(i, 5))?;
    }
    let stats = log.stats();
    emit(&obj(&[
        ("step", J::S("append".into())),
        ("batches", J::U(200)),
        ("records", J::U(1000)),
        ("next_offset", J::I(log.next_offset())),
        ("segments", J::U(stats.segments as u64)),
        ("fsyncs", J::U(stats.fsyncs)),
        ("seconds", J::F(started.elapsed().as_secs_f64())),
    ]))?;

    // 2. Group commit: 4 threads appending durably share fsyncs.
    let before = log.stats().fsyncs;
    let started = Instant::now();
    std::thread::scope(|s| -> Result<(), Failure> {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                let make_batch = &make_batch;
                s.spawn(move || -> Result<(), Error> {
                    for i in 0..100 {
                        log.append(&make_batch(1000 + t * 100 + i, 1))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| usage("a demo thread panicked"))??;
        }
        Ok(())
    })?;
    emit(&obj(&[
        ("step", J::S("group_commit".into())),
        ("threads", J::U(4)),
        ("appends", J::U(400)),
        ("fsyncs", J::U(log.stats().fsyncs - before)),
        ("seconds", J::F(started.elapsed().as_secs_f64())),
    ]))?;
    let end_before_crash = log.next_offset();
    let segments = log.stats().segments;
    drop(log);
    drop(store);

    // 3. A crash in the middle of a write: the last segment ends with half a
    //    batch and some garbage, as a torn write leaves it.
    let partition_dir = dir.join("orders-0");
    let mut names: Vec<_> = std::fs::read_dir(&partition_dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    let last = partition_dir.join(names.last().ok_or_else(|| usage("no segment"))?);
    let mut torn = make_batch(9999, 20);
    oncelog::format::set_base_offset(&mut torn, end_before_crash)
        .map_err(|e| usage(e.to_string()))?;
    torn.truncate(torn.len() / 2);
    torn.extend_from_slice(b"\xde\xad\xbe\xef garbage");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&last)?;
        f.write_all(&torn)?;
    }
    emit(&obj(&[
        ("step", J::S("crash".into())),
        ("segment", J::S(last.display().to_string())),
        ("torn_bytes", J::U(torn.len() as u64)),
        ("segments", J::U(segments as u64)),
    ]))?;

    // 4. Reopen: recovery cuts the torn tail and reports it.
    let store = Store::open(&dir, config.clone())?;
    let log = store.log("orders", 0)?;
    let r = log.recovery_report().clone();
    emit(&obj(&[
        ("step", J::S("recover".into())),
        ("bytes_truncated", J::U(r.bytes_truncated)),
        ("batches_dropped", J::U(r.batches_dropped)),
        (
            "reason",
            J::S(r.truncation_reason.clone().unwrap_or_default()),
        ),
        ("next_offset", J::I(r.next_offset)),
        ("segments", J::U(r.segments as u64)),
        ("micros", J::U(r.duration.as_micros() as u64)),
    ]))?;

    // 5. Read everything back: contiguous offsets, nothing lost or invented.
    let mut offset = log.log_start_offset();
    let mut records = 0u64;
    let mut batches = 0u64;
    while offset < log.next_offset() {
        let chunk = log.read(offset, 256 * 1024)?;
        for batch in &chunk {
            let batch = batch?;
            let view = batch.view();
            if view.base_offset() != offset {
                return Err(Failure {
                    kind: "corrupt".into(),
                    message: format!("expected offset {offset}, found {}", view.base_offset()),
                    usage: false,
                });
            }
            records += view.records().map_err(|e| usage(e.to_string()))?.count() as u64;
            batches += 1;
            offset = view.last_offset() + 1;
        }
    }
    emit(&obj(&[
        ("step", J::S("read".into())),
        ("batches", J::U(batches)),
        ("records", J::U(records)),
        ("first_offset", J::I(log.log_start_offset())),
        ("last_offset", J::I(offset - 1)),
        (
            "intact",
            J::B(offset == end_before_crash && records == 1400),
        ),
    ]))?;

    // 6. Appends go on at the right offset.
    let at = log.append(&make_batch(5000, 3))?;
    emit(&obj(&[
        ("step", J::S("append_after_recovery".into())),
        ("base_offset", J::I(at.base_offset().unwrap_or(-1))),
        ("last_offset", J::I(at.last_offset().unwrap_or(-1))),
    ]))?;
    let store_dir = store.dir().to_path_buf();
    drop(log);
    store.close()?;

    // 7. The offline checker agrees that the log is sound.
    let report = oncelog::verify(&store_dir, |_| {})?;
    emit(&obj(&[
        ("step", J::S("verify".into())),
        ("sound", J::B(report.is_sound())),
        ("segments", J::U(report.segments as u64)),
        ("batches", J::U(report.batches)),
    ]))?;

    // 8-12. Idempotent producers: a lost acknowledgement, then a kill -9.
    demo_producers(&dir, &config)
}

/// Huge allocations cost address space until touched: a Kafka request
/// claiming an absurd array length cannot abort the server (see the type).
#[global_allocator]
static ALLOC: oncelog::storage::LazyLargeAlloc = oncelog::storage::LazyLargeAlloc;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ONCELOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("produce") => produce(&args[1..]),
        Some("dump") => dump(&args[1..]),
        Some("producers") => producers(&args[1..]),
        Some("verify") => verify(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("serve") => serve(&args[1..]),
        Some("__demo-child") => demo_child(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(usage(format!("unknown command {other:?}"))),
        None => Err(usage("no command given")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = emit(&obj(&[
                ("error", J::S(f.kind)),
                ("message", J::S(f.message)),
            ]));
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}
