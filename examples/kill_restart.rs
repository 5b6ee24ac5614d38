//! Kill-restart harness: crash safety of durable, idempotent appends on the
//! real filesystem, shown by killing the writing process with SIGKILL over
//! and over and checking everything it was told after every kill.
//!
//! ```sh
//! cargo run --release --example kill_restart -- --cycles 200 --seed 7
//! ```
//!
//! The parent prepares a store: one topic with 4 partitions, 3 named
//! producers, and a few thousand anonymous producers with one batch in every
//! partition, so that each producer-state checkpoint is a large batch whose
//! encoding and write take a measurable time. Then it runs cycles. In each,
//! a child process (this binary with the hidden first argument `__child`)
//! opens the store with `Durability::Sync`, small segments, byte retention
//! and a small checkpoint interval; starts a new session of every named
//! producer (which fences the previous one); re-sends each
//! producer-partition's last few batches; and then sends batches of 1 to 8
//! deterministic records from one thread per producer and partition, while
//! another thread writes checkpoints and applies retention. It reports on
//! stdout, one line at a time, every send before it is made and every outcome
//! after it, and announces each segment roll, checkpoint and retention just
//! before it happens. The parent kills it with SIGKILL at a moment drawn from
//! the seed: a delay after the child is ready; a short delay after the n-th
//! announced roll, checkpoint or retention (scaled to how long these take, so
//! that the kill lands inside one); during the child's start-up, inside
//! recovery; or around a clean `Store::close` the child makes while its
//! threads send (after which the next open must cut and replay nothing).
//!
//! After every kill the parent checks the directory as the child left it.
//! `oncelog::verify` must find it sound (a torn tail is only a warning). A
//! copy of it must open (recovery never fails) and read back so that:
//!
//! - every acknowledged batch at or above the log start offset is there
//!   exactly once, at its acknowledged offsets, byte for byte as it was sent;
//!   below the log start offset, retention removed it;
//! - no (producer, partition, sequence) appears twice, and each producer's
//!   sequences in a partition follow each other without a gap;
//! - offsets are contiguous from the log start to the end of the log;
//! - a batch that was sent but not acknowledged is there at most once.
//!
//! The next child's own recovery of the directory must find exactly what the
//! parent's open of the copy found. Its re-sends are answered as
//! `docs/semantics.md` says: the exact bytes of an earlier session's batch
//! (its old epoch) are refused as fenced; the new session's re-send of a
//! batch in the log is a duplicate with the offsets it was acknowledged at
//! (unknown offsets once it is older than the producer window of 5); a batch
//! that never reached the log is appended now. At the end the store is opened
//! in place and checked, closed cleanly, and reopened: a clean open cuts
//! nothing and replays nothing.
//!
//! Each cycle prints a summary line on stderr. The last line on stdout is
//! `cycles=N acked=A lost=L duplicated=D reordered=R`; the exit status is
//! non-zero unless L, D and R are 0 and every other check passed (each
//! failure is printed with its cycle, producer, partition and sequence, and
//! the store directory is kept).
//!
//! Options: `--cycles N` (20), `--seed S` (from the clock; printed, with the
//! command that replays the run), `--dir D` (an empty or new directory;
//! default a temporary one), `--producers N` (3), `--partitions N` (4),
//! `--extra-producers N` (5000), `--segment-bytes N` (65536),
//! `--max-records N` (8). `--inject lose|duplicate|gap` is a self-test of
//! the checks: after one kill it damages the directory as a broken engine
//! could (cuts an acknowledged batch off, appends a byte copy of a batch,
//! appends a batch that skips a sequence), and the run must fail.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oncelog::format::batch::{ATTR_CONTROL, offsets};
use oncelog::format::{BatchBuilder, BatchView, LOG_OVERHEAD, peek_batch_len};
use oncelog::{
    AppendOutcome, Config, Durability, Log, Message, Producer, RecoveryReport, Severity, Store,
};

const TOPIC: &str = "orders";
/// `Config::producer_window` (the default): retries of a producer's last 5
/// batches in a partition are answered with their offsets.
const WINDOW: usize = 5;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
/// A child that was never killed gives up after this long.
const CHILD_MAX_RUN: Duration = Duration::from_secs(60);
/// How long the parent waits for the planned event before killing anyway.
const EVENT_WAIT: Duration = Duration::from_secs(3);
/// How long the parent waits for a child to become ready.
const READY_WAIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        return child_main(&args[1..]);
    }
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kill_restart: {e}");
            eprintln!(
                "usage: kill_restart [--cycles N] [--seed S] [--dir D] [--producers N] \
                 [--partitions N] [--extra-producers N] [--segment-bytes N] [--max-records N] \
                 [--inject lose|duplicate|gap]"
            );
            return ExitCode::from(2);
        }
    };
    parent_main(opts)
}

// ---------------------------------------------------------------------------
// Shared by both processes: randomness, records, the store's configuration.

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: small, seedable, good enough to draw kill moments.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ 0x6b69_6c6c_5f72_6573))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn producer_name(p: usize) -> String {
    format!("p{p}")
}

/// One record: the same bytes whenever producer `p` sends sequence `seq` to
/// `partition`, so any process can rebuild a batch from its header.
#[derive(Debug)]
struct Rec {
    key: Vec<u8>,
    value: Vec<u8>,
    timestamp: i64,
}

fn record(p: usize, partition: u32, seq: i32) -> Rec {
    let h = mix(((p as u64) << 40) ^ (u64::from(partition) << 32) ^ u64::from(seq as u32));
    // One record in 400 is large: its batch exceeds a segment, gets a segment
    // of its own, and is written in two pieces (body, then base offset).
    let len = (if h.is_multiple_of(400) {
        64 * 1024 + (h >> 16) % (192 * 1024)
    } else {
        16 + (h >> 16) % 241
    }) as usize;
    let mut value = Vec::with_capacity(len + 8);
    let mut x = h | 1;
    while value.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        value.extend_from_slice(&x.to_le_bytes());
    }
    value.truncate(len);
    Rec {
        key: format!("p{p}/{partition}/{seq}").into_bytes(),
        value,
        timestamp: BASE_TIMESTAMP + i64::from(seq),
    }
}

fn records(p: usize, partition: u32, seq: i32, count: i32) -> Vec<Rec> {
    (0..count).map(|i| record(p, partition, seq + i)).collect()
}

/// The batch as `Producer::send` builds it (offsets 0).
fn build_batch(producer_id: i64, epoch: i16, seq: i32, recs: &[Rec]) -> Vec<u8> {
    let mut b = BatchBuilder::new().with_producer(producer_id, epoch, seq);
    for r in recs {
        b.push(r.timestamp, Some(&r.key), Some(&r.value), &[]);
    }
    b.build()
}

fn messages(recs: &[Rec]) -> Vec<Message<'_>> {
    recs.iter()
        .map(|r| {
            Message::new(&r.value)
                .with_key(&r.key)
                .with_timestamp(r.timestamp)
        })
        .collect()
}

fn store_config(segment_bytes: u64, retention_bytes: Option<u64>) -> Config {
    Config::default()
        .with_durability(Durability::Sync)
        .with_segment_bytes(segment_bytes)
        .with_index_interval_bytes(1024)
        .with_preallocate_bytes(1 << 20)
        .with_retention_bytes(retention_bytes)
        .with_checkpoint_interval_bytes(segment_bytes / 4)
}

fn one_line(s: impl Display) -> String {
    s.to_string().replace(['\n', '\r'], " ")
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn outcome_text(r: &oncelog::Result<AppendOutcome>) -> String {
    match r {
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset,
        }) => format!("appended {base_offset} {last_offset}"),
        Ok(AppendOutcome::Duplicate {
            base_offset,
            last_offset,
        }) => format!("duplicate {} {}", opt(*base_offset), opt(*last_offset)),
        Err(e) => format!("error {} {}", e.kind(), one_line(e)),
    }
}

/// The recovery figures that depend only on the directory's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Figures {
    segments: usize,
    batches_scanned: u64,
    bytes_truncated: u64,
    batches_dropped: u64,
    segments_deleted: usize,
    indexes_rebuilt: usize,
    stray_files_removed: usize,
    log_start_offset: i64,
    next_offset: i64,
    checkpoint_offset: Option<i64>,
    batches_replayed: u64,
    producers: usize,
}

impl Figures {
    fn of(r: &RecoveryReport) -> Figures {
        Figures {
            segments: r.segments,
            batches_scanned: r.batches_scanned,
            bytes_truncated: r.bytes_truncated,
            batches_dropped: r.batches_dropped,
            segments_deleted: r.segments_deleted,
            indexes_rebuilt: r.indexes_rebuilt,
            stray_files_removed: r.stray_files_removed,
            log_start_offset: r.log_start_offset,
            next_offset: r.next_offset,
            checkpoint_offset: r.checkpoint_offset,
            batches_replayed: r.batches_replayed,
            producers: r.producers,
        }
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {}",
            self.segments,
            self.batches_scanned,
            self.bytes_truncated,
            self.batches_dropped,
            self.segments_deleted,
            self.indexes_rebuilt,
            self.stray_files_removed,
            self.log_start_offset,
            self.next_offset,
            opt(self.checkpoint_offset),
            self.batches_replayed,
            self.producers
        )
    }

    fn decode(t: &[&str]) -> Result<Figures, String> {
        if t.len() < 12 {
            return Err("too few recovery figures".into());
        }
        Ok(Figures {
            segments: num(t[0])?,
            batches_scanned: num(t[1])?,
            bytes_truncated: num(t[2])?,
            batches_dropped: num(t[3])?,
            segments_deleted: num(t[4])?,
            indexes_rebuilt: num(t[5])?,
            stray_files_removed: num(t[6])?,
            log_start_offset: num(t[7])?,
            next_offset: num(t[8])?,
            checkpoint_offset: opt_num(t[9])?,
            batches_replayed: num(t[10])?,
            producers: num(t[11])?,
        })
    }
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn opt_num(s: &str) -> Result<Option<i64>, String> {
    if s == "-" { Ok(None) } else { num(s).map(Some) }
}

/// Flags `--name value` into a map; `known` lists the accepted names.
fn flags(args: &[String], known: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .filter(|n| known.contains(n))
            .ok_or_else(|| format!("unknown argument {a:?}"))?;
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        out.insert(name.to_string(), value.clone());
    }
    Ok(out)
}

fn flag<T: std::str::FromStr>(
    f: &HashMap<String, String>,
    name: &str,
    default: Option<T>,
) -> Result<T, String> {
    match f.get(name) {
        Some(v) => v.parse().map_err(|_| format!("--{name}: bad value {v:?}")),
        None => default.ok_or_else(|| format!("--{name} is required")),
    }
}

/// The `.log` files of a partition directory, oldest first, with lengths.
fn segment_files(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.len() != 24 || !name.ends_with(".log") {
            continue;
        }
        // Retention may delete it meanwhile.
        if let Ok(m) = e.metadata() {
            v.push((e.path(), m.len()));
        }
    }
    v.sort();
    Ok(v)
}

/// Whether byte retention deletes the oldest segment of a log whose segment
/// lengths are `sizes` (the last one active), as `Log::enforce_retention`
/// decides.
fn retention_deletes(sizes: &[u64], limit: u64) -> bool {
    sizes.len() > 1 && sizes.iter().sum::<u64>() - sizes[0] >= limit
}

// ---------------------------------------------------------------------------
// The child: open, re-send, send until killed.

#[derive(Debug)]
struct ChildArgs {
    dir: PathBuf,
    seed: u64,
    producers: usize,
    partitions: u32,
    segment_bytes: u64,
    retention_bytes: u64,
    max_records: u32,
    /// Close the store cleanly this long after becoming ready (0: never).
    close_after_ms: u64,
}

/// A re-send the parent asks for: the batch at `seq` with `count` records,
/// first as the exact bytes its earlier session wrote (`zombie_epoch`), then
/// from the new session.
#[derive(Debug, Clone, Copy)]
struct Resend {
    seq: i32,
    count: i32,
    zombie_epoch: i16,
}

/// One line on stdout, in a single write (a line is far below `PIPE_BUF`, so
/// a kill never leaves half of one).
fn emit(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let mut out = io::stdout().lock();
    if out
        .write_all(buf.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(3); // the parent is gone
    }
}

fn child_main(args: &[String]) -> ExitCode {
    match child_run(args) {
        Ok(()) => ExitCode::from(4),
        Err(e) => {
            emit(&format!("fatal {}", one_line(e)));
            ExitCode::from(2)
        }
    }
}

fn child_run(args: &[String]) -> Result<(), String> {
    let f = flags(
        args,
        &[
            "dir",
            "seed",
            "producers",
            "partitions",
            "segment-bytes",
            "retention-bytes",
            "max-records",
            "close-after-ms",
        ],
    )?;
    let a = ChildArgs {
        dir: flag(&f, "dir", None)?,
        seed: flag(&f, "seed", None)?,
        producers: flag(&f, "producers", None)?,
        partitions: flag(&f, "partitions", None)?,
        segment_bytes: flag(&f, "segment-bytes", None)?,
        retention_bytes: flag(&f, "retention-bytes", None)?,
        max_records: flag(&f, "max-records", None)?,
        close_after_ms: flag(&f, "close-after-ms", Some(0))?,
    };
    let mut plan: HashMap<(usize, u32), Vec<Resend>> = HashMap::new();
    loop {
        let mut line = String::new();
        if io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("stdin closed before the plan ended".into());
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["go"] => break,
            ["resend", p, q, seq, count, epoch] => {
                plan.entry((num(p)?, num(q)?)).or_default().push(Resend {
                    seq: num(seq)?,
                    count: num(count)?,
                    zombie_epoch: num(epoch)?,
                });
            }
            _ => return Err(format!("bad plan line {line:?}")),
        }
    }

    let started = Instant::now();
    let config = store_config(a.segment_bytes, Some(a.retention_bytes));
    let store = Store::open(&a.dir, config).map_err(|e| format!("open failed: {e}"))?;
    let mut reports = store.recovery_reports();
    reports.sort_by_key(|r| r.1);
    for (topic, q, r) in &reports {
        if topic == TOPIC {
            let reason = r.truncation_reason.as_deref().map(one_line);
            emit(&format!(
                "recovered {q} {} {}",
                Figures::of(r).encode(),
                reason.unwrap_or_default()
            ));
        }
    }
    let producers = (0..a.producers)
        .map(|p| store.producer(&producer_name(p)))
        .collect::<Result<Vec<Producer>, _>>()
        .map_err(|e| format!("producer session: {e}"))?;
    for (p, pr) in producers.iter().enumerate() {
        emit(&format!("session {p} {} {}", pr.id(), pr.epoch()));
    }
    let logs = (0..a.partitions)
        .map(|q| store.log(TOPIC, q))
        .collect::<Result<Vec<Log>, _>>()
        .map_err(|e| format!("log: {e}"))?;
    let watches: Vec<Mutex<SegWatch>> = logs.iter().map(|_| Mutex::default()).collect();
    emit(&format!("ready {}", started.elapsed().as_micros()));

    // The parent keeps stdin open: end of file means it is gone.
    std::thread::spawn(|| {
        let mut sink = String::new();
        loop {
            sink.clear();
            if matches!(io::stdin().read_line(&mut sink), Ok(0) | Err(_)) {
                std::process::exit(3);
            }
        }
    });
    let (a, plan, logs, watches) = (&a, &plan, &logs, &watches);
    let mut store = Some(store);
    std::thread::scope(|s| {
        for (p, producer) in producers.iter().enumerate() {
            for (q, log) in logs.iter().enumerate() {
                let w = Worker {
                    a,
                    p,
                    producer,
                    log,
                    watch: &watches[q],
                    resends: plan.get(&(p, log.partition())).map_or(&[], Vec::as_slice),
                };
                let rng = Rng::new(a.seed ^ ((p as u64) << 32) ^ q as u64);
                s.spawn(move || w.run(rng));
            }
        }
        s.spawn(move || maintenance(a, logs, Rng::new(!a.seed)));
        if a.close_after_ms > 0
            && let Some(store) = store.take()
        {
            // A clean close while the workers send: appends after it are
            // refused, the producer state is checkpointed, the logs flushed.
            std::thread::sleep(Duration::from_millis(a.close_after_ms));
            emit("event close 0 1");
            let started = Instant::now();
            let r = store.close();
            let micros = started.elapsed().as_micros();
            let result = match r {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error {} {}", e.kind(), one_line(e)),
            };
            emit(&format!("event-done close 0 1 {micros} {result}"));
        }
        // Wait to be killed; if that never comes, the parent failed. Exit
        // without closing the store.
        std::thread::sleep(CHILD_MAX_RUN);
        std::process::exit(4);
    });
    Ok(())
}

/// Tracks the checkpoint bytes in a partition's active segment (which
/// `segment_bytes` does not count) by walking its batch headers, so that a
/// worker can tell whether its next batch will roll the segment.
#[derive(Debug, Default)]
struct SegWatch {
    path: Option<PathBuf>,
    walked: u64,
    control: u64,
    checkpoint_len: u64,
    /// A worker announced a roll of this segment and has not finished its
    /// send: the other workers of the partition do not announce it again.
    claimed: bool,
}

impl SegWatch {
    /// Data bytes in the active segment, the last of `files`.
    fn data_bytes(&mut self, files: &[(PathBuf, u64)]) -> u64 {
        let Some((path, len)) = files.last() else {
            return 0;
        };
        if self.path.as_ref() != Some(path) {
            *self = SegWatch {
                path: Some(path.clone()),
                checkpoint_len: self.checkpoint_len,
                ..SegWatch::default()
            };
        }
        if let Ok(f) = File::open(path) {
            let mut h = [0u8; offsets::ATTRIBUTES + 2];
            while self.walked + h.len() as u64 <= *len
                && f.read_exact_at(&mut h, self.walked).is_ok()
            {
                let at = offsets::BATCH_LENGTH;
                let blen = i32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
                let Ok(total) = u64::try_from(blen).map(|b| b + LOG_OVERHEAD as u64) else {
                    break;
                };
                if total < h.len() as u64 || self.walked + total > *len {
                    break; // being written right now
                }
                let at = offsets::ATTRIBUTES;
                if i16::from_be_bytes([h[at], h[at + 1]]) & ATTR_CONTROL != 0 {
                    self.control += total;
                    self.checkpoint_len = total;
                }
                self.walked += total;
            }
        }
        len.saturating_sub(self.control)
    }
}

struct Worker<'a> {
    a: &'a ChildArgs,
    p: usize,
    producer: &'a Producer,
    log: &'a Log,
    watch: &'a Mutex<SegWatch>,
    resends: &'a [Resend],
}

impl Worker<'_> {
    /// `Some(retention follows)` if appending `len` bytes now rolls the
    /// segment (the log's rule: data bytes, checkpoints excluded).
    fn predict_roll(&self, len: u64) -> Option<bool> {
        let files = segment_files(self.log.dir()).ok()?;
        let mut w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let active_len = files.last()?.1;
        let data = w.data_bytes(&files);
        if active_len == 0 || data + len <= self.a.segment_bytes || w.claimed {
            return None;
        }
        w.claimed = true;
        // After the roll: the sealed segments and the new one, which starts
        // with a checkpoint.
        let mut sizes: Vec<u64> = files.iter().map(|f| f.1).collect();
        sizes.push(w.checkpoint_len);
        Some(retention_deletes(&sizes, self.a.retention_bytes))
    }

    fn active_segment(&self) -> Option<PathBuf> {
        segment_files(self.log.dir())
            .ok()
            .and_then(|f| f.last().map(|f| f.0.clone()))
    }

    fn run(&self, mut rng: Rng) {
        let (p, q) = (self.p, self.log.partition());
        let (id, epoch) = (self.producer.id(), self.producer.epoch());
        for r in self.resends {
            let recs = records(p, q, r.seq, r.count);
            // The earlier session's exact bytes: a zombie, to be fenced.
            let zombie = build_batch(id, r.zombie_epoch, r.seq, &recs);
            let z = r.zombie_epoch;
            emit(&format!("send {p} {q} {z} {} {} zombie", r.seq, r.count));
            let out = self.log.append(&zombie);
            let o = outcome_text(&out);
            emit(&format!(
                "done {p} {q} {z} {} {} zombie {o}",
                r.seq, r.count
            ));
            // The new session's re-send.
            emit(&format!(
                "send {p} {q} {epoch} {} {} resend",
                r.seq, r.count
            ));
            let out = self.producer.send_at(TOPIC, q, r.seq, &messages(&recs));
            let o = outcome_text(&out);
            emit(&format!(
                "done {p} {q} {epoch} {} {} resend {o}",
                r.seq, r.count
            ));
            if out.is_err() {
                return;
            }
        }
        loop {
            let seq = match self.producer.next_sequence(TOPIC, q) {
                Ok(s) => s,
                Err(e) => {
                    emit(&format!("fatal next_sequence p{p} {q}: {}", one_line(e)));
                    return;
                }
            };
            let count = rng.range(1, u64::from(self.a.max_records)) as i32;
            let recs = records(p, q, seq, count);
            let len = build_batch(id, epoch, seq, &recs).len() as u64;
            let roll = self.predict_roll(len);
            let before = roll.and_then(|_| self.active_segment());
            if let Some(retention) = roll {
                emit(&format!("event roll {q} {}", u8::from(retention)));
            }
            emit(&format!("send {p} {q} {epoch} {seq} {count} new"));
            let started = Instant::now();
            let out = self.producer.send(TOPIC, q, &messages(&recs));
            let micros = started.elapsed().as_micros();
            emit(&format!(
                "done {p} {q} {epoch} {seq} {count} new {}",
                outcome_text(&out)
            ));
            if let Some(retention) = roll {
                let rolled = before.is_some() && self.active_segment() != before;
                {
                    let mut w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
                    if w.path == before {
                        w.claimed = false;
                    }
                }
                let flag = u8::from(retention);
                emit(&format!(
                    "event-done roll {q} {flag} {micros} rolled={}",
                    u8::from(rolled)
                ));
            }
            if out.is_err() {
                return;
            }
            if rng.percent(10) {
                std::thread::sleep(Duration::from_micros(rng.range(0, 2000)));
            }
        }
    }
}

/// Explicit checkpoints and retention passes on random partitions, each
/// announced before it starts and reported when it ends.
fn maintenance(a: &ChildArgs, logs: &[Log], mut rng: Rng) {
    loop {
        std::thread::sleep(Duration::from_millis(rng.range(5, 40)));
        let log = &logs[rng.below(logs.len() as u64) as usize];
        let q = log.partition();
        if rng.percent(50) {
            emit(&format!("event checkpoint {q} 1"));
            let started = Instant::now();
            let r = log.checkpoint();
            let micros = started.elapsed().as_micros();
            let result = match r {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error {} {}", e.kind(), one_line(e)),
            };
            emit(&format!("event-done checkpoint {q} 1 {micros} {result}"));
        } else {
            let deletes = segment_files(log.dir()).is_ok_and(|f| {
                let sizes: Vec<u64> = f.iter().map(|f| f.1).collect();
                retention_deletes(&sizes, a.retention_bytes)
            });
            let flag = u8::from(deletes);
            emit(&format!("event retention {q} {flag}"));
            let started = Instant::now();
            let r = log.enforce_retention();
            let micros = started.elapsed().as_micros();
            let result = match r {
                Ok(r) => format!("deleted={}", r.segments_deleted),
                Err(e) => format!("error {} {}", e.kind(), one_line(e)),
            };
            emit(&format!(
                "event-done retention {q} {flag} {micros} {result}"
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// The parent: options, the model of what the log must hold, the cycles.

#[derive(Debug, Clone)]
struct Options {
    cycles: u32,
    seed: u64,
    dir: Option<PathBuf>,
    producers: usize,
    partitions: u32,
    extra_producers: usize,
    segment_bytes: u64,
    max_records: u32,
    inject: Option<Inject>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let f = flags(
            args,
            &[
                "cycles",
                "seed",
                "dir",
                "producers",
                "partitions",
                "extra-producers",
                "segment-bytes",
                "max-records",
                "inject",
            ],
        )?;
        let inject = match f.get("inject").map(String::as_str) {
            None => None,
            Some("lose") => Some(Inject::Lose),
            Some("duplicate") => Some(Inject::Duplicate),
            Some("gap") => Some(Inject::Gap),
            Some(other) => {
                return Err(format!("--inject: {other:?} is not lose, duplicate or gap"));
            }
        };
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = mix(clock ^ u64::from(std::process::id())) % 1_000_000_000;
        let o = Options {
            cycles: flag(&f, "cycles", Some(20))?,
            seed: flag(&f, "seed", Some(seed))?,
            dir: f.get("dir").map(PathBuf::from),
            producers: flag(&f, "producers", Some(3))?,
            partitions: flag(&f, "partitions", Some(4))?,
            extra_producers: flag(&f, "extra-producers", Some(5000))?,
            segment_bytes: flag(&f, "segment-bytes", Some(64 * 1024))?,
            max_records: flag(&f, "max-records", Some(8))?,
            inject,
        };
        if o.producers == 0 || o.producers > 64 || o.partitions == 0 || o.partitions > 64 {
            return Err("--producers and --partitions must be 1..=64".into());
        }
        if o.max_records == 0 || o.max_records > 1000 {
            return Err("--max-records must be 1..=1000".into());
        }
        if o.segment_bytes < 4096 {
            return Err("--segment-bytes must be at least 4096".into());
        }
        Ok(o)
    }

    fn replay_command(&self) -> String {
        let mut c = format!(
            "cargo run --release --example kill_restart -- --cycles {} --seed {}",
            self.cycles, self.seed
        );
        let defaults = [
            ("producers", self.producers as u64, 3),
            ("partitions", u64::from(self.partitions), 4),
            ("extra-producers", self.extra_producers as u64, 5000),
            ("segment-bytes", self.segment_bytes, 64 * 1024),
            ("max-records", u64::from(self.max_records), 8),
        ];
        for (name, value, default) in defaults {
            if value != default {
                c.push_str(&format!(" --{name} {value}"));
            }
        }
        if let Some(how) = self.inject {
            c.push_str(&format!(" --inject {}", format!("{how:?}").to_lowercase()));
        }
        c
    }
}

/// A batch of a named producer that is in the log (or was, before
/// retention): acknowledged, or found there after a kill.
#[derive(Debug, Clone, Copy)]
struct Stored {
    seq: i32,
    count: i32,
    base: i64,
    last: i64,
    epoch: i16,
    acked: bool,
}

/// A batch sent and not answered (yet); `epochs` are the sessions that sent
/// it: if it reached the log, it carries one of them.
#[derive(Debug, Clone)]
struct Pending {
    seq: i32,
    count: i32,
    epochs: Vec<i16>,
}

/// The answer a planned re-send must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// In the producer's window: a duplicate at these offsets.
    Duplicate(i64, i64),
    /// Older than the window: a duplicate with unknown offsets.
    DuplicateUnknown,
    /// Not found in the log (whose start was this): appended now, or (if
    /// retention removed it) a duplicate below the start.
    Absent(i64),
}

#[derive(Debug, Clone, Copy)]
struct Planned {
    seq: i32,
    count: i32,
    zombie_epoch: i16,
    expect: Expect,
}

#[derive(Debug, Default)]
struct Pair {
    stored: Vec<Stored>,
    pending: Option<Pending>,
    planned: Vec<Planned>,
}

impl Pair {
    fn next_seq(&self) -> i32 {
        self.stored.last().map_or(0, |s| s.seq + s.count)
    }

    fn find(&self, seq: i32) -> Option<usize> {
        let i = self.stored.partition_point(|s| s.seq < seq);
        (self.stored.get(i)?.seq == seq).then_some(i)
    }

    /// The pending batch is settled: it is in the log as `s`.
    fn settle(&mut self, s: Stored) {
        self.pending = None;
        self.stored.push(s);
    }
}

/// A batch of a named producer read back from the log.
#[derive(Debug, Clone, Copy)]
struct Scanned {
    seq: i32,
    count: i32,
    base: i64,
    last: i64,
    epoch: i16,
}

/// Damage the `--inject` option does on purpose, to show that the checks
/// catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inject {
    Lose,
    Duplicate,
    Gap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KillKind {
    Timer,
    Startup,
    Roll,
    Checkpoint,
    Retention,
    Close,
}

impl KillKind {
    const ALL: [KillKind; 6] = [
        KillKind::Timer,
        KillKind::Startup,
        KillKind::Roll,
        KillKind::Checkpoint,
        KillKind::Retention,
        KillKind::Close,
    ];

    fn name(self) -> &'static str {
        match self {
            KillKind::Timer => "timer",
            KillKind::Startup => "startup",
            KillKind::Roll => "roll",
            KillKind::Checkpoint => "checkpoint",
            KillKind::Retention => "retention",
            KillKind::Close => "close",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct KillPlan {
    kind: KillKind,
    /// Timer: the delay after `ready`; close: the child closes its store
    /// this long after it is ready.
    delay: Duration,
    /// Event kinds: which occurrence.
    nth: u32,
    /// Event and start-up kinds: where in the operation's usual duration.
    frac: f64,
}

/// The state of one child's run, as its lines arrive.
#[derive(Debug)]
struct CycleRun {
    cycle: u32,
    plan: KillPlan,
    spawned: Instant,
    ready: Option<Instant>,
    kill_at: Option<Instant>,
    killed: bool,
    /// The child reported its store open (its recovery was over).
    opened: bool,
    /// The child started closing the store; it finished cleanly.
    closing: bool,
    closed: bool,
    events: u32,
    /// The event the kill was aimed at, and whether it reported completion.
    trigger: Option<(String, u32, bool)>,
    sent: u64,
    acked: u64,
    resends: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finding {
    Lost,
    Duplicated,
    Reordered,
    Other,
}

#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    records_acked: u64,
    kills: HashMap<&'static str, u64>,
    event_kills: u64,
    event_kills_inside: u64,
    startup_before_ready: u64,
    startup_before_open: u64,
    closes_completed: u64,
    refused_closing: u64,
    torn_opens: u64,
    bytes_truncated: u64,
    empty_active: u64,
    retention_finished: u64,
    stray_removed: u64,
    indexes_rebuilt: u64,
    replayed: u64,
    opens: u64,
    verify_warnings: HashMap<&'static str, u64>,
    rolls_announced: u64,
    rolls_confirmed: u64,
    checkpoints_explicit: u64,
    retention_deleting: u64,
    found_unacked: u64,
    reappended: u64,
    dup_known: u64,
    dup_unknown: u64,
    zombies_fenced: u64,
    max_segments: usize,
}

struct Harness {
    opts: Options,
    dir: PathBuf,
    scratch: tempfile::TempDir,
    rng: Rng,
    ids: Vec<i64>,
    epochs: Vec<i16>,
    /// Index `p * partitions + q`.
    pairs: Vec<Pair>,
    retention_base: u64,
    retention: u64,
    /// What the next open of the directory must find, per partition.
    expected: Option<Vec<Figures>>,
    log_starts: Vec<i64>,
    lost: HashSet<(u32, i64, i32)>,
    duplicated: HashSet<(u32, i64, i32)>,
    reordered: HashSet<(u32, i64, i32)>,
    other: u64,
    stats: Stats,
    /// Durations of announced operations, micros, by kind.
    durations: HashMap<String, Vec<u64>>,
    startups: Vec<u64>,
    fatal: bool,
    injected: bool,
}

fn parent_main(opts: Options) -> ExitCode {
    let started = Instant::now();
    let mut tmp = None;
    let dir = match &opts.dir {
        Some(d) => {
            if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) {
                eprintln!("kill_restart: {} is not empty", d.display());
                return ExitCode::from(2);
            }
            d.clone()
        }
        None => match tempfile::tempdir() {
            Ok(t) => {
                let d = t.path().join("store");
                tmp = Some(t);
                d
            }
            Err(e) => {
                eprintln!("kill_restart: temporary directory: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let scratch = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kill_restart: temporary directory: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "kill_restart: seed={} cycles={} producers={} partitions={} dir={}",
        opts.seed,
        opts.cycles,
        opts.producers,
        opts.partitions,
        dir.display()
    );
    println!("replay: {}", opts.replay_command());
    let pairs = (0..opts.producers * opts.partitions as usize)
        .map(|_| Pair::default())
        .collect();
    let mut h = Harness {
        rng: Rng::new(opts.seed),
        dir,
        scratch,
        ids: Vec::new(),
        epochs: Vec::new(),
        pairs,
        retention_base: 0,
        retention: 0,
        expected: None,
        log_starts: vec![0; opts.partitions as usize],
        lost: HashSet::new(),
        duplicated: HashSet::new(),
        reordered: HashSet::new(),
        other: 0,
        stats: Stats::default(),
        durations: HashMap::new(),
        startups: Vec::new(),
        fatal: false,
        injected: false,
        opts,
    };
    if let Err(e) = h.setup() {
        h.violation(0, None, format!("setup failed: {e}"));
        h.fatal = true;
    }
    let mut cycles = 0;
    for cycle in 1..=h.opts.cycles {
        if h.fatal {
            break;
        }
        h.run_cycle(cycle);
        cycles = cycle;
    }
    if !h.fatal {
        h.finish(cycles);
    }
    h.summary(cycles, started.elapsed());
    let failed = !h.lost.is_empty()
        || !h.duplicated.is_empty()
        || !h.reordered.is_empty()
        || h.other > 0
        || h.fatal;
    if failed {
        if let Some(t) = tmp {
            let _ = t.keep();
        }
        eprintln!(
            "kill_restart: FAILED; store kept at {}; replay: {}",
            h.dir.display(),
            h.opts.replay_command()
        );
    }
    println!(
        "cycles={cycles} acked={} lost={} duplicated={} reordered={}",
        h.stats.acked,
        h.lost.len(),
        h.duplicated.len(),
        h.reordered.len()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

impl Harness {
    fn partitions(&self) -> u32 {
        self.opts.partitions
    }

    fn pair(&mut self, p: usize, q: u32) -> &mut Pair {
        let i = p * self.opts.partitions as usize + q as usize;
        &mut self.pairs[i]
    }

    fn name_of(&self, producer_id: i64) -> String {
        self.ids
            .iter()
            .position(|&id| id == producer_id)
            .map_or_else(|| format!("anonymous {producer_id}"), producer_name)
    }

    /// Print a failed check; findings of the three counted kinds are counted
    /// once per (partition, producer, sequence).
    fn finding(&mut self, cycle: u32, kind: Finding, key: (u32, i64, i32), msg: impl Display) {
        let (q, id, seq) = key;
        let new = match kind {
            Finding::Lost => self.lost.insert(key),
            Finding::Duplicated => self.duplicated.insert(key),
            Finding::Reordered => self.reordered.insert(key),
            Finding::Other => {
                self.other += 1;
                true
            }
        };
        if new {
            let what = match kind {
                Finding::Lost => "LOST",
                Finding::Duplicated => "DUPLICATED",
                Finding::Reordered => "REORDERED",
                Finding::Other => "VIOLATION",
            };
            println!(
                "{what} cycle={cycle} producer={} partition={q} sequence={seq}: {msg}",
                self.name_of(id)
            );
        }
    }

    /// A failed check not tied to one batch.
    fn violation(&mut self, cycle: u32, q: Option<u32>, msg: impl Display) {
        self.other += 1;
        match q {
            Some(q) => println!("VIOLATION cycle={cycle} partition={q}: {msg}"),
            None => println!("VIOLATION cycle={cycle}: {msg}"),
        }
    }

    fn at(&mut self, cycle: u32, p: usize, q: u32, seq: i32, msg: impl Display) {
        let id = self.ids[p];
        self.finding(cycle, Finding::Other, (q, id, seq), msg);
    }

    /// Create the partitions, the named producers and the anonymous ones
    /// that make every checkpoint large; measure a checkpoint.
    fn setup(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let config = store_config(self.opts.segment_bytes, None);
        let store = Store::open(&self.dir, config).map_err(|e| e.to_string())?;
        for p in 0..self.opts.producers {
            let pr = store
                .producer(&producer_name(p))
                .map_err(|e| e.to_string())?;
            self.ids.push(pr.id());
            self.epochs.push(pr.epoch());
        }
        let logs = (0..self.partitions())
            .map(|q| store.log(TOPIC, q))
            .collect::<Result<Vec<Log>, _>>()
            .map_err(|e| e.to_string())?;
        for _ in 0..self.opts.extra_producers {
            let (id, epoch) = store.init_producer().map_err(|e| e.to_string())?;
            let mut b = BatchBuilder::new().with_producer(id, epoch, 0);
            b.push(BASE_TIMESTAMP, None, Some(b"registration"), &[]);
            let batch = b.build();
            for log in &logs {
                log.append_with(&batch, Durability::Os)
                    .map_err(|e| e.to_string())?;
            }
        }
        store.flush().map_err(|e| e.to_string())?;
        logs[0].checkpoint().map_err(|e| e.to_string())?;
        let at = logs[0].next_offset() - 1;
        let checkpoint_len = logs[0]
            .read(at, 1)
            .map_err(|e| e.to_string())?
            .with_checkpoints()
            .iter()
            .next()
            .transpose()
            .map_err(|e| e.to_string())?
            .map_or(0, |b| b.bytes().len() as u64);
        drop(logs);
        store.close().map_err(|e| e.to_string())?;
        // About four segments, each a checkpoint and a segment of data.
        self.retention_base = 4 * (self.opts.segment_bytes + checkpoint_len);
        println!(
            "setup: {} anonymous producers in each partition, checkpoint {} bytes, \
             retention {}..{} bytes per partition, {:.1}s",
            self.opts.extra_producers,
            checkpoint_len,
            self.retention_base,
            2 * self.retention_base,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Choose the re-sends of the next session, with the answers they must
    /// get, from what the last check found in the log.
    fn plan_resends(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..self.pairs.len() {
            let (p, q) = (
                i / self.partitions() as usize,
                (i % self.partitions() as usize) as u32,
            );
            let deep = self.rng.percent(20);
            let k = if deep {
                self.rng.range(WINDOW as u64 + 1, WINDOW as u64 + 3)
            } else {
                self.rng.range(1, 3)
            } as usize;
            let start = self.log_starts[q as usize];
            let pair = &mut self.pairs[i];
            pair.planned.clear();
            let n = pair.stored.len();
            for (j, s) in pair.stored.iter().enumerate().skip(n.saturating_sub(k)) {
                let expect = if n - j <= WINDOW {
                    Expect::Duplicate(s.base, s.last)
                } else {
                    Expect::DuplicateUnknown
                };
                pair.planned.push(Planned {
                    seq: s.seq,
                    count: s.count,
                    zombie_epoch: s.epoch,
                    expect,
                });
            }
            if let Some(pd) = &pair.pending {
                pair.planned.push(Planned {
                    seq: pd.seq,
                    count: pd.count,
                    zombie_epoch: *pd.epochs.last().unwrap_or(&0),
                    expect: Expect::Absent(start),
                });
            }
            for r in &pair.planned {
                lines.push(format!(
                    "resend {p} {q} {} {} {}",
                    r.seq, r.count, r.zombie_epoch
                ));
            }
        }
        lines
    }

    fn draw_kill(&mut self) -> KillPlan {
        let r = self.rng.below(100);
        let kind = match r {
            0..=29 => KillKind::Timer,
            30..=39 => KillKind::Startup,
            40..=59 => KillKind::Roll,
            60..=74 => KillKind::Checkpoint,
            75..=89 => KillKind::Retention,
            _ => KillKind::Close,
        };
        KillPlan {
            kind,
            delay: Duration::from_millis(self.rng.range(5, 300)),
            // A child closes its store once.
            nth: if kind == KillKind::Close {
                1
            } else {
                self.rng.range(1, 3) as u32
            },
            frac: self.rng.unit(),
        }
    }

    /// The usual duration of an announced operation (median of the last
    /// ones seen), within 0.3..20 ms; before any was seen, 2 ms (10 ms for a
    /// close, which flushes every partition).
    fn window(&self, key: &str) -> Duration {
        let unseen = if key.starts_with("close") {
            10_000
        } else {
            2000
        };
        let micros = self.durations.get(key).map_or(unseen, |d| median(d));
        Duration::from_micros(micros.clamp(300, 20_000))
    }

    fn run_cycle(&mut self, cycle: u32) {
        self.retention = self.rng.range(self.retention_base, 2 * self.retention_base);
        let plan_lines = self.plan_resends();
        let plan = self.draw_kill();
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                self.violation(cycle, None, format!("current_exe: {e}"));
                self.fatal = true;
                return;
            }
        };
        let child_seed = self.rng.next_u64();
        let close_after = match plan.kind {
            KillKind::Close => plan.delay.as_millis(),
            _ => 0,
        };
        let spawned = Command::new(exe)
            .arg("__child")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--seed", &child_seed.to_string()])
            .args(["--producers", &self.opts.producers.to_string()])
            .args(["--partitions", &self.opts.partitions.to_string()])
            .args(["--segment-bytes", &self.opts.segment_bytes.to_string()])
            .args(["--retention-bytes", &self.retention.to_string()])
            .args(["--max-records", &self.opts.max_records.to_string()])
            .args(["--close-after-ms", &close_after.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.violation(cycle, None, format!("spawn the child: {e}"));
                self.fatal = true;
                return;
            }
        };
        let mut run = CycleRun {
            cycle,
            plan,
            spawned: Instant::now(),
            ready: None,
            kill_at: None,
            killed: false,
            opened: false,
            closing: false,
            closed: false,
            events: 0,
            trigger: None,
            sent: 0,
            acked: 0,
            resends: 0,
        };
        if plan.kind == KillKind::Startup {
            let usual = self
                .startups
                .last()
                .map_or(50_000, |_| median(&self.startups));
            let window = Duration::from_micros(usual).mul_f64(1.2);
            run.kill_at = Some(run.spawned + window.mul_f64(plan.frac));
        }
        let mut stdin = child.stdin.take();
        let mut text = plan_lines.join("\n");
        text.push_str(if text.is_empty() { "go\n" } else { "\ngo\n" });
        if let Some(s) = stdin.as_mut()
            && let Err(e) = s.write_all(text.as_bytes())
        {
            self.violation(cycle, None, format!("write the plan to the child: {e}"));
        }
        let (tx, rx) = mpsc::channel::<(Instant, String)>();
        let reader = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                let mut r = BufReader::new(out);
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        // A line without its newline would be a torn write.
                        Ok(_) => {
                            if tx.send((Instant::now(), line)).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        });

        let mut exited = false;
        loop {
            let due = run.kill_at.unwrap_or_else(|| match run.ready {
                None => run.spawned + READY_WAIT,
                Some(r) => r + EVENT_WAIT,
            });
            // Checked before every line, so that a steady stream of lines
            // cannot delay the kill.
            let now = Instant::now();
            if now >= due {
                if run.kill_at.is_none() && run.ready.is_none() {
                    self.violation(cycle, None, "the child did not become ready");
                }
                break;
            }
            match rx.recv_timeout(due - now) {
                Ok((at, line)) => self.on_line(&mut run, at, &line),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    exited = true;
                    break;
                }
            }
        }
        run.killed = true;
        let killed_at = Instant::now();
        let _ = child.kill(); // SIGKILL
        let status = child.wait();
        drop(stdin);
        // Everything the child wrote before it died.
        while let Ok((at, line)) = rx.recv() {
            self.on_line(&mut run, at, &line);
        }
        if let Some(r) = reader {
            let _ = r.join();
        }
        match status {
            Ok(s) if s.signal() == Some(9) && !exited => {}
            Ok(s) => {
                self.violation(
                    cycle,
                    None,
                    format!("the child ended by itself ({s}) instead of being killed"),
                );
                self.fatal = true;
            }
            Err(e) => {
                self.violation(cycle, None, format!("wait for the child: {e}"));
                self.fatal = true;
            }
        }
        let kind = if run.kill_at.is_none() && run.ready.is_some() {
            "fallback"
        } else {
            plan.kind.name()
        };
        *self.stats.kills.entry(kind).or_default() += 1;
        if plan.kind == KillKind::Startup && run.ready.is_none() {
            self.stats.startup_before_ready += 1;
            self.stats.startup_before_open += u64::from(!run.opened);
        }
        let inside = match &run.trigger {
            Some((_, _, done)) => {
                self.stats.event_kills += 1;
                if !done {
                    self.stats.event_kills_inside += 1;
                }
                if *done { "after it ended" } else { "inside" }
            }
            None => "",
        };
        let ran = run.ready.map_or(0.0, |r| {
            killed_at.saturating_duration_since(r).as_secs_f64() * 1000.0
        });
        let figures = self.check_crash_state(cycle, &self.dir.clone());
        if run.closed {
            // Killed after a clean close: the next open has nothing to do.
            self.stats.closes_completed += 1;
            for (q, f) in figures.iter().flatten().enumerate() {
                if f.bytes_truncated > 0 || f.batches_replayed > 0 {
                    let msg = format!("the open after a clean close cut or replayed: {f:?}");
                    self.violation(cycle, Some(q as u32), msg);
                }
            }
        }
        let torn: Vec<String> = figures
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, f)| f.bytes_truncated > 0)
            .map(|(q, f)| format!("{q}:{}B", f.bytes_truncated))
            .collect();
        let target = match plan.kind {
            KillKind::Timer => format!("+{}ms", plan.delay.as_millis()),
            KillKind::Close if run.closed => "after it ended".to_string(),
            KillKind::Close if run.closing => "inside".to_string(),
            KillKind::Startup => format!("{:.2} of start-up", plan.frac),
            _ => format!("#{} {inside}", plan.nth),
        };
        eprintln!(
            "cycle {cycle}/{}: kill={kind} {target}, ran {ran:.0} ms after ready; sent={} acked={} resends={}; \
             next open: torn=[{}] log_start={:?}",
            self.opts.cycles,
            run.sent,
            run.acked,
            run.resends,
            torn.join(" "),
            self.log_starts
        );
        self.expected = figures;
    }

    fn on_line(&mut self, run: &mut CycleRun, at: Instant, line: &str) {
        let cycle = run.cycle;
        let Some(line) = line.strip_suffix('\n') else {
            self.violation(cycle, None, format!("a torn protocol line {line:?}"));
            return;
        };
        let t: Vec<&str> = line.split(' ').collect();
        let r = match t[0] {
            "recovered" => {
                run.opened = true;
                self.on_recovered(cycle, &t)
            }
            "session" => self.on_session(cycle, &t),
            "ready" => {
                run.ready = Some(at);
                if let Some(m) = t.get(1).and_then(|m| m.parse().ok()) {
                    self.startups.push(m);
                }
                if run.plan.kind == KillKind::Timer && !run.killed {
                    run.kill_at = Some(at + run.plan.delay);
                }
                Ok(())
            }
            "send" => self.on_send(run, &t),
            "done" => self.on_done(run, &t),
            "event" => self.on_event(run, at, &t),
            "event-done" => self.on_event_done(run, &t),
            "fatal" => Err(format!("the child failed: {}", t[1..].join(" "))),
            _ => Err(format!("unknown line {line:?}")),
        };
        if let Err(e) = r {
            self.violation(cycle, None, format!("{e} (line {line:?})"));
        }
    }

    fn on_recovered(&mut self, cycle: u32, t: &[&str]) -> Result<(), String> {
        let q: u32 = num(t.get(1).ok_or("short line")?)?;
        let found = Figures::decode(&t[2..])?;
        if let Some(expected) = self.expected.as_ref().and_then(|e| e.get(q as usize))
            && *expected != found
        {
            let msg = format!(
                "the child's recovery found {found:?}, the parent's open of the same \
                 directory found {expected:?}"
            );
            self.violation(cycle, Some(q), msg);
        }
        Ok(())
    }

    fn on_session(&mut self, cycle: u32, t: &[&str]) -> Result<(), String> {
        let [_, p, id, epoch] = t else {
            return Err("bad session line".into());
        };
        let (p, id, epoch): (usize, i64, i16) = (num(p)?, num(id)?, num(epoch)?);
        if self.ids.get(p) != Some(&id) {
            self.violation(cycle, None, format!("producer p{p} came back with id {id}"));
        }
        // One bump per session; a child killed during its start-up may
        // have bumped already.
        let ahead = (i32::from(epoch) - i32::from(self.epochs[p])).rem_euclid(1 << 15);
        if !(1..=64).contains(&ahead) {
            let was = self.epochs[p];
            self.violation(
                cycle,
                None,
                format!("producer p{p}'s new session has epoch {epoch} after {was}"),
            );
        }
        self.epochs[p] = epoch;
        Ok(())
    }

    fn on_send(&mut self, run: &mut CycleRun, t: &[&str]) -> Result<(), String> {
        let [_, p, q, epoch, seq, count, mode] = t else {
            return Err("bad send line".into());
        };
        let (p, q, epoch, seq, count): (usize, u32, i16, i32, i32) =
            (num(p)?, num(q)?, num(epoch)?, num(seq)?, num(count)?);
        let cycle = run.cycle;
        match *mode {
            "new" => {
                run.sent += 1;
                let pair = self.pair(p, q);
                let (next, pending) = (pair.next_seq(), pair.pending.clone());
                if let Some(pd) = pending {
                    self.at(
                        cycle,
                        p,
                        q,
                        seq,
                        format!("sent while sequence {} is unresolved", pd.seq),
                    );
                }
                if seq != next {
                    self.at(
                        cycle,
                        p,
                        q,
                        seq,
                        format!("the session sent sequence {seq}, the next one is {next}"),
                    );
                }
                self.pair(p, q).pending = Some(Pending {
                    seq,
                    count,
                    epochs: vec![epoch],
                });
            }
            "resend" => {
                run.resends += 1;
                if let Some(pd) = self.pair(p, q).pending.as_mut()
                    && pd.seq == seq
                {
                    pd.epochs.push(epoch);
                }
            }
            "zombie" => {}
            _ => return Err("bad send mode".into()),
        }
        Ok(())
    }

    fn on_done(&mut self, run: &mut CycleRun, t: &[&str]) -> Result<(), String> {
        if t.len() < 8 {
            return Err("bad done line".into());
        }
        let (p, q, epoch, seq, count): (usize, u32, i16, i32, i32) =
            (num(t[1])?, num(t[2])?, num(t[3])?, num(t[4])?, num(t[5])?);
        if p >= self.opts.producers || q >= self.partitions() {
            return Err("producer or partition out of range".into());
        }
        let cycle = run.cycle;
        if run.closing && t[7] == "error" && t.get(8) == Some(&"closed") {
            // Refused because the store is closing: nothing was written (a
            // new send stays pending).
            self.stats.refused_closing += 1;
            return Ok(());
        }
        let outcome = match t[7] {
            "appended" if t.len() == 10 => Ok(AppendOutcome::Appended {
                base_offset: num(t[8])?,
                last_offset: num(t[9])?,
            }),
            "duplicate" if t.len() == 10 => Ok(AppendOutcome::Duplicate {
                base_offset: opt_num(t[8])?,
                last_offset: opt_num(t[9])?,
            }),
            "error" => Err((t.get(8).copied().unwrap_or(""), t[8..].join(" "))),
            _ => return Err("bad outcome".into()),
        };
        match t[6] {
            "new" => match outcome {
                Ok(AppendOutcome::Appended {
                    base_offset,
                    last_offset,
                }) => {
                    run.acked += 1;
                    self.acknowledge(cycle, p, q, (seq, count, epoch), (base_offset, last_offset));
                }
                other => self.at(cycle, p, q, seq, format!("a new send came back {other:?}")),
            },
            "zombie" => match outcome {
                Err(("producer_fenced", _)) => self.stats.zombies_fenced += 1,
                other => self.at(
                    cycle,
                    p,
                    q,
                    seq,
                    format!(
                        "the exact bytes of a fenced session's batch (epoch {epoch}) came \
                         back {other:?}, not producer_fenced"
                    ),
                ),
            },
            "resend" => self.on_resend_done(cycle, p, q, (seq, count, epoch), outcome),
            _ => return Err("bad mode".into()),
        }
        Ok(())
    }

    /// Record an `Appended` answer: the batch is in the log at these offsets.
    fn acknowledge(
        &mut self,
        cycle: u32,
        p: usize,
        q: u32,
        (seq, count, epoch): (i32, i32, i16),
        (base, last): (i64, i64),
    ) {
        let pair = self.pair(p, q);
        let matches = pair
            .pending
            .as_ref()
            .is_some_and(|pd| pd.seq == seq && pd.count == count);
        let prev_last = pair.stored.last().map_or(-1, |s| s.last);
        let next = pair.next_seq();
        if !matches || seq != next {
            self.at(
                cycle,
                p,
                q,
                seq,
                format!("appended, but the batch expected next was sequence {next}"),
            );
        }
        if last - base + 1 != i64::from(count) || base <= prev_last {
            self.at(
                cycle,
                p,
                q,
                seq,
                format!("appended at {base}..={last} with {count} records after {prev_last}"),
            );
        }
        self.pair(p, q).settle(Stored {
            seq,
            count,
            base,
            last,
            epoch,
            acked: true,
        });
        self.stats.acked += 1;
        self.stats.records_acked += count as u64;
    }

    fn on_resend_done(
        &mut self,
        cycle: u32,
        p: usize,
        q: u32,
        (seq, count, epoch): (i32, i32, i16),
        outcome: Result<AppendOutcome, (&str, String)>,
    ) {
        let Some(planned) = self
            .pair(p, q)
            .planned
            .iter()
            .find(|r| r.seq == seq)
            .copied()
        else {
            self.at(cycle, p, q, seq, "a re-send that was not planned");
            return;
        };
        if planned.count != count {
            self.at(cycle, p, q, seq, "a re-send with another record count");
        }
        match (planned.expect, outcome) {
            (
                Expect::Duplicate(b, l),
                Ok(AppendOutcome::Duplicate {
                    base_offset: Some(base),
                    last_offset: Some(last),
                }),
            ) if (b, l) == (base, last) => {
                self.stats.dup_known += 1;
                if let Some(i) = self.pair(p, q).find(seq) {
                    self.pair(p, q).stored[i].acked = true;
                }
            }
            (
                Expect::DuplicateUnknown,
                Ok(AppendOutcome::Duplicate {
                    base_offset: None,
                    last_offset: None,
                }),
            ) => self.stats.dup_unknown += 1,
            (
                Expect::Absent(_),
                Ok(AppendOutcome::Appended {
                    base_offset,
                    last_offset,
                }),
            ) => {
                self.stats.reappended += 1;
                self.acknowledge(cycle, p, q, (seq, count, epoch), (base_offset, last_offset));
            }
            (
                Expect::Absent(start),
                Ok(AppendOutcome::Duplicate {
                    base_offset: Some(base),
                    last_offset: Some(last),
                }),
            ) if last < start => {
                // It reached the log and retention removed it before the check.
                let pair = self.pair(p, q);
                let epoch = pair.pending.as_ref().map_or(epoch, |pd| pd.epochs[0]);
                pair.settle(Stored {
                    seq,
                    count,
                    base,
                    last,
                    epoch,
                    acked: true,
                });
                self.stats.acked += 1;
            }
            (expect, outcome) => {
                let key = (q, self.ids[p], seq);
                let kind = if matches!(expect, Expect::Absent(_)) && outcome.is_ok() {
                    // Answered as being in the log, where the check did not find it.
                    Finding::Lost
                } else {
                    Finding::Other
                };
                self.finding(
                    cycle,
                    kind,
                    key,
                    format!("re-send answered {outcome:?}, expected {expect:?}"),
                );
            }
        }
    }

    fn on_event(&mut self, run: &mut CycleRun, at: Instant, t: &[&str]) -> Result<(), String> {
        let [_, kind, q, flag] = t else {
            return Err("bad event line".into());
        };
        let (q, flag): (u32, u8) = (num(q)?, num(flag)?);
        match *kind {
            "roll" => self.stats.rolls_announced += 1,
            "checkpoint" => self.stats.checkpoints_explicit += 1,
            "retention" => self.stats.retention_deleting += u64::from(flag),
            "close" => run.closing = true,
            _ => return Err("bad event".into()),
        }
        let aimed = match run.plan.kind {
            KillKind::Close => *kind == "close",
            KillKind::Roll => *kind == "roll",
            KillKind::Checkpoint => *kind == "checkpoint",
            KillKind::Retention => flag == 1 && (*kind == "retention" || *kind == "roll"),
            KillKind::Timer | KillKind::Startup => false,
        };
        if aimed && !run.killed && run.kill_at.is_none() {
            run.events += 1;
            if run.events == run.plan.nth {
                // Mostly inside the operation, sometimes just after it (a
                // close more often: what follows a completed one is checked).
                let window = self.window(&format!("{kind}/{flag}"));
                let stretch = if *kind == "close" { 2.0 } else { 1.2 };
                run.kill_at = Some(at + window.mul_f64(run.plan.frac * stretch));
                run.trigger = Some((kind.to_string(), q, false));
            }
        }
        Ok(())
    }

    fn on_event_done(&mut self, run: &mut CycleRun, t: &[&str]) -> Result<(), String> {
        if t.len() < 6 {
            return Err("bad event-done line".into());
        }
        let (kind, q, flag, micros): (&str, u32, u8, u64) =
            (t[1], num(t[2])?, num(t[3])?, num(t[4])?);
        if t[5] != "error" {
            let d = self.durations.entry(format!("{kind}/{flag}")).or_default();
            d.push(micros);
            if d.len() > 64 {
                d.remove(0);
            }
        }
        if let Some((k, tq, done)) = run.trigger.as_mut()
            && k == kind
            && *tq == q
        {
            *done = true;
        }
        match t[5] {
            "rolled=1" => self.stats.rolls_confirmed += 1,
            "ok" if kind == "close" => run.closed = true,
            // Refused because the store is closing: as documented.
            "error" if run.closing && t.get(6) == Some(&"closed") => {}
            "error" => {
                let msg = format!("{kind} failed: {}", t[6..].join(" "));
                self.violation(run.cycle, Some(q), msg);
            }
            _ => {}
        }
        Ok(())
    }

    /// The checks after a kill: verify the directory in place, then open a
    /// copy and read everything back. Returns what that open's recovery
    /// found, which the next open of the directory must find too.
    fn check_crash_state(&mut self, cycle: u32, dir: &Path) -> Option<Vec<Figures>> {
        if let Some(how) = self.opts.inject
            && !self.injected
        {
            match self.inject(dir, how) {
                Ok(done) => self.injected = done,
                Err(e) => self.violation(cycle, None, format!("inject: {e}")),
            }
            if self.injected {
                println!(
                    "cycle {cycle}: injected {how:?} into partition 0 (a self-test of the checks)"
                );
            }
        }
        match oncelog::verify(dir, |_| {}) {
            Ok(report) => {
                for problem in &report.problems {
                    if problem.severity == Severity::Error {
                        let msg = format!(
                            "verify: {} at {}:{}: {}",
                            problem.kind,
                            problem.path.display(),
                            problem.position,
                            problem.detail
                        );
                        self.violation(cycle, None, msg);
                    } else {
                        *self.stats.verify_warnings.entry(problem.kind).or_default() += 1;
                    }
                }
            }
            Err(e) => self.violation(cycle, None, format!("verify failed: {e}")),
        }
        let copy = self.scratch.path().join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        if let Err(e) = copy_dir(dir, &copy) {
            self.violation(cycle, None, format!("copy the store: {e}"));
            self.fatal = true;
            return None;
        }
        let figures = self.open_and_check(cycle, &copy, true);
        let _ = std::fs::remove_dir_all(&copy);
        figures
    }

    /// Damage partition 0 as a broken engine could (a self-test of the
    /// checks, `--inject`): cut the log at its newest acknowledged batch, or
    /// append to the active segment a byte copy of a producer's last batch,
    /// or a batch that skips a sequence. `false` if there was nothing to
    /// work on yet.
    fn inject(&self, dir: &Path, how: Inject) -> io::Result<bool> {
        let files = segment_files(&dir.join(format!("{TOPIC}-0")))?;
        let newest_acked = (0..self.opts.producers)
            .flat_map(|p| &self.pairs[p * self.partitions() as usize].stored)
            .filter(|s| s.acked && s.base >= self.log_starts[0])
            .map(|s| s.base)
            .max();
        let target = match how {
            Inject::Lose => {
                let Some(b) = newest_acked else {
                    return Ok(false);
                };
                // The segment holding it: the last one whose base is not above it.
                files.iter().rposition(|(path, _)| {
                    let stem = path.file_stem().and_then(|s| s.to_str());
                    stem.and_then(|s| s.parse::<i64>().ok())
                        .is_some_and(|base| base <= b)
                })
            }
            Inject::Duplicate | Inject::Gap => files.len().checked_sub(1),
        };
        let Some(target) = target else {
            return Ok(false);
        };
        let path = &files[target].0;
        let data = std::fs::read(path)?;
        // Every whole batch: (position, length, base offset, last offset,
        // named producer with epoch, sequence and count).
        let mut batches = Vec::new();
        let mut pos = 0;
        while let Some(len) = peek_batch_len(&data[pos..]).filter(|l| pos + l <= data.len()) {
            let Ok(v) = BatchView::parse_header_only(&data[pos..pos + len]) else {
                break;
            };
            let named = self.ids.iter().position(|&i| i == v.producer_id());
            let ident = named.map(|p| (p, v.producer_epoch(), v.base_sequence(), v.record_count()));
            batches.push((pos, len, v.base_offset(), v.last_offset(), ident));
            pos += len;
        }
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        if how == Inject::Lose {
            let Some(&(at, ..)) = batches.iter().find(|b| Some(b.2) == newest_acked) else {
                return Ok(false);
            };
            file.set_len(at as u64)?;
            file.sync_all()?;
            for (later, _) in &files[target + 1..] {
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(later.with_extension(ext));
                }
            }
            return Ok(true);
        }
        let Some(&(at, len, _, _, Some((p, epoch, seq, count)))) =
            batches.iter().rev().find(|b| b.4.is_some())
        else {
            return Ok(false);
        };
        let next = batches.last().map_or(0, |b| b.3 + 1);
        let mut batch = if how == Inject::Duplicate {
            data[at..at + len].to_vec()
        } else {
            let skip = seq + count + 1;
            build_batch(self.ids[p], epoch, skip, &records(p, 0, skip, 1))
        };
        batch[..8].copy_from_slice(&next.to_be_bytes());
        file.set_len(pos as u64)?;
        file.write_all_at(&batch, pos as u64)?;
        file.sync_all()?;
        Ok(true)
    }

    /// Open the store in `dir`, read every partition back and check it
    /// against the model; close it. `None` if the open failed.
    fn open_and_check(&mut self, cycle: u32, dir: &Path, crash: bool) -> Option<Vec<Figures>> {
        let config = store_config(self.opts.segment_bytes, Some(self.retention));
        let store = match Store::open(dir, config) {
            Ok(s) => s,
            Err(e) => {
                self.violation(cycle, None, format!("recovery failed: {e}"));
                self.fatal = true;
                return None;
            }
        };
        let mut figures = Vec::new();
        for q in 0..self.partitions() {
            let log = match store.existing_log(TOPIC, q) {
                Ok(Some(l)) => l,
                other => {
                    self.violation(cycle, Some(q), format!("the partition is gone: {other:?}"));
                    self.fatal = true;
                    return None;
                }
            };
            let r = log.recovery_report();
            let f = Figures::of(r);
            if crash {
                let s = &mut self.stats;
                s.opens += 1;
                s.torn_opens += u64::from(f.bytes_truncated > 0);
                s.bytes_truncated += f.bytes_truncated;
                s.empty_active += u64::from(f.batches_scanned == 0 && f.segments > 1);
                s.retention_finished += u64::from(f.segments_deleted > 0);
                s.stray_removed += f.stray_files_removed as u64;
                s.indexes_rebuilt += f.indexes_rebuilt as u64;
                s.replayed += f.batches_replayed;
                s.max_segments = s.max_segments.max(f.segments);
            }
            figures.push(f);
            let start = log.log_start_offset();
            let before = self.log_starts[q as usize];
            if start < before {
                let msg = format!("the log start offset went back from {before} to {start}");
                self.violation(cycle, Some(q), msg);
            }
            self.log_starts[q as usize] = start;
            let scanned = self.read_partition(cycle, &log);
            for (p, list) in scanned.iter().enumerate() {
                self.reconcile(cycle, p, q, list, start);
            }
        }
        if let Err(e) = store.close() {
            self.violation(cycle, None, format!("close failed: {e}"));
        }
        Some(figures)
    }

    /// Every batch of the partition, checked for offset continuity and
    /// content; the named producers' batches, per producer, in log order.
    fn read_partition(&mut self, cycle: u32, log: &Log) -> Vec<Vec<Scanned>> {
        let q = log.partition();
        let mut per: Vec<Vec<Scanned>> = vec![Vec::new(); self.opts.producers];
        let mut anonymous: HashSet<(i64, i32)> = HashSet::new();
        let (start, end) = (log.log_start_offset(), log.next_offset());
        let (mut offset, mut expect) = (start, start);
        while offset < end {
            let batches = match log.read(offset, 1 << 20) {
                Ok(b) => b.with_checkpoints(),
                Err(e) => {
                    self.violation(cycle, Some(q), format!("read at {offset}: {e}"));
                    return per;
                }
            };
            for b in batches.iter() {
                let b = match b {
                    Ok(b) => b,
                    Err(e) => {
                        self.violation(cycle, Some(q), format!("read at {offset}: {e}"));
                        return per;
                    }
                };
                let v = b.view();
                if v.base_offset() != expect {
                    let msg = format!("a batch at {} where {expect} was next", v.base_offset());
                    self.violation(cycle, Some(q), msg);
                }
                expect = v.last_offset() + 1;
                if v.is_control() {
                    continue;
                }
                let (id, seq, count) = (v.producer_id(), v.base_sequence(), v.record_count());
                let Some(p) = self.ids.iter().position(|&i| i == id) else {
                    if id >= 0 && !anonymous.insert((id, seq)) {
                        let msg = format!("a second copy at {}", v.base_offset());
                        self.finding(cycle, Finding::Duplicated, (q, id, seq), msg);
                    }
                    continue;
                };
                if !(1..=1000).contains(&count) {
                    self.at(cycle, p, q, seq, format!("a batch of {count} records"));
                    continue;
                }
                // The bytes the producer sent, after the base offset the log assigns.
                let sent = build_batch(id, v.producer_epoch(), seq, &records(p, q, seq, count));
                if b.bytes().get(8..) != sent.get(8..) {
                    let msg = format!("the batch at {} is not what was sent", v.base_offset());
                    self.at(cycle, p, q, seq, msg);
                }
                per[p].push(Scanned {
                    seq,
                    count,
                    base: v.base_offset(),
                    last: v.last_offset(),
                    epoch: v.producer_epoch(),
                });
            }
            match batches.next_offset() {
                Some(n) if n > offset => offset = n,
                _ => {
                    let msg = format!("a read at {offset} below the end {end} made no progress");
                    self.violation(cycle, Some(q), msg);
                    return per;
                }
            }
        }
        if expect != end {
            let msg = format!("the batches end at {expect}, the log at {end}");
            self.violation(cycle, Some(q), msg);
        }
        per
    }

    /// Compare one producer-partition's batches in the log with the model.
    fn reconcile(&mut self, cycle: u32, p: usize, q: u32, scanned: &[Scanned], start: i64) {
        let id = self.ids[p];
        // Order: each batch continues the one before, none appears twice.
        let mut seen = HashSet::new();
        let mut prev: Option<&Scanned> = None;
        for b in scanned {
            if !seen.insert(b.seq) {
                let msg = format!("sequence {} again at {}..={}", b.seq, b.base, b.last);
                self.finding(cycle, Finding::Duplicated, (q, id, b.seq), msg);
            } else if let Some(pr) = prev
                && b.seq != pr.seq + pr.count
            {
                let msg = format!(
                    "at {}..={} after sequences {}..={} (at {}..={})",
                    b.base,
                    b.last,
                    pr.seq,
                    pr.seq + pr.count - 1,
                    pr.base,
                    pr.last
                );
                self.finding(cycle, Finding::Reordered, (q, id, b.seq), msg);
            }
            prev = Some(b);
        }
        // Each batch is a stored one at its offsets, or the pending one.
        for b in scanned {
            let pair = self.pair(p, q);
            if let Some(i) = pair.find(b.seq) {
                let s = pair.stored[i];
                if (s.count, s.base, s.last) != (b.count, b.base, b.last) {
                    let msg = format!(
                        "a copy at {}..={} of the batch at {}..={}",
                        b.base, b.last, s.base, s.last
                    );
                    self.finding(cycle, Finding::Duplicated, (q, id, b.seq), msg);
                } else if s.epoch != b.epoch {
                    let msg = format!("epoch {} in the log, {} when sent", b.epoch, s.epoch);
                    self.at(cycle, p, q, b.seq, msg);
                }
                continue;
            }
            let next = pair.next_seq();
            match pair.pending.clone() {
                Some(pd)
                    if pd.seq == b.seq
                        && pd.seq == next
                        && pd.count == b.count
                        && pd.epochs.contains(&b.epoch) =>
                {
                    // Sent, never acknowledged, and it reached the log.
                    pair.settle(Stored {
                        seq: b.seq,
                        count: b.count,
                        base: b.base,
                        last: b.last,
                        epoch: b.epoch,
                        acked: false,
                    });
                    self.stats.found_unacked += 1;
                }
                _ => {
                    let msg = format!("a batch at {}..={} that was never sent", b.base, b.last);
                    self.at(cycle, p, q, b.seq, msg);
                }
            }
        }
        // Every stored batch at or above the log start is there.
        let present: HashSet<(i32, i64)> = scanned.iter().map(|b| (b.seq, b.base)).collect();
        let missing: Vec<Stored> = self
            .pair(p, q)
            .stored
            .iter()
            .filter(|s| s.base >= start && !present.contains(&(s.seq, s.base)))
            .copied()
            .collect();
        for s in missing {
            let what = if s.acked {
                "acknowledged"
            } else {
                "found earlier"
            };
            let msg = format!(
                "the {what} batch at {}..={} is gone (log start {start})",
                s.base, s.last
            );
            self.finding(cycle, Finding::Lost, (q, id, s.seq), msg);
        }
    }

    /// After the last cycle: open the directory in place (its recovery must
    /// match the copy's), check, close cleanly; reopen: nothing to cut or
    /// replay.
    fn finish(&mut self, cycles: u32) {
        let dir = self.dir.clone();
        let expected = self.expected.take();
        let Some(found) = self.open_and_check(cycles, &dir, false) else {
            return;
        };
        if let Some(expected) = expected {
            for (q, (e, f)) in expected.iter().zip(&found).enumerate() {
                if e != f {
                    let msg =
                        format!("recovery in place found {f:?}, on a copy of the same state {e:?}");
                    self.violation(cycles, Some(q as u32), msg);
                }
            }
        }
        let Some(clean) = self.open_and_check(cycles, &dir, false) else {
            return;
        };
        for (q, f) in clean.iter().enumerate() {
            if f.bytes_truncated > 0 || f.batches_replayed > 0 {
                let msg = format!("the open after a clean close cut or replayed: {f:?}");
                self.violation(cycles, Some(q as u32), msg);
            }
        }
    }

    fn summary(&self, cycles: u32, elapsed: Duration) {
        let s = &self.stats;
        let kills: Vec<String> = KillKind::ALL
            .iter()
            .map(|k| k.name())
            .chain(["fallback"])
            .map(|k| format!("{k}={}", s.kills.get(k).copied().unwrap_or(0)))
            .collect();
        println!(
            "kills: {} (aimed at an operation: {}, of which {} before it reported completion; \
             start-up kills before the child was ready: {}, before its store was open: {}; \
             kills after a completed clean close: {}, appends refused while closing: {})",
            kills.join(" "),
            s.event_kills,
            s.event_kills_inside,
            s.startup_before_ready,
            s.startup_before_open,
            s.closes_completed,
            s.refused_closing
        );
        let mut warnings: Vec<String> = s
            .verify_warnings
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        warnings.sort();
        println!(
            "recovery: {} partition opens after a kill: torn tail cut in {} ({} bytes), \
             empty active segment after a roll in {}, interrupted retention finished in {}, \
             {} stray files removed, {} indexes rebuilt, {} batches replayed; verify warnings: [{}]",
            s.opens,
            s.torn_opens,
            s.bytes_truncated,
            s.empty_active,
            s.retention_finished,
            s.stray_removed,
            s.indexes_rebuilt,
            s.replayed,
            warnings.join(" ")
        );
        println!(
            "operations: rolls announced {} (confirmed {}), explicit checkpoints {}, \
             retention passes expected to delete {}, at most {} segments in a partition",
            s.rolls_announced,
            s.rolls_confirmed,
            s.checkpoints_explicit,
            s.retention_deleting,
            s.max_segments
        );
        let mut durations: Vec<String> = self
            .durations
            .iter()
            .map(|(k, d)| format!("{k} {:.2}ms", median(d) as f64 / 1000.0))
            .collect();
        durations.sort();
        println!(
            "median durations: start-up {:.2}ms, {}",
            median(&self.startups) as f64 / 1000.0,
            durations.join(", ")
        );
        println!(
            "re-sends: duplicates with their offsets {}, older than the window (offsets \
             unknown) {}, fenced zombie copies {}; unacknowledged batches found in the log {}, \
             appended by the next session {}",
            s.dup_known, s.dup_unknown, s.zombies_fenced, s.found_unacked, s.reappended
        );
        println!(
            "cycles {cycles}, batches acknowledged {} ({} records), other violations {}, \
             runtime {:.1}s",
            s.acked,
            s.records_acked,
            self.other,
            elapsed.as_secs_f64()
        );
    }
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else if e.file_name() != ".lock" {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}
