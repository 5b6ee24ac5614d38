//! Workloads and baselines shared by the criterion benches and
//! `examples/perf_summary.rs` (which includes this file by path).
//!
//! Every function measures one thing once and returns its wall time (or a
//! latency list); the callers repeat, interleave engine and baseline, and
//! take medians. Scratch files go to `$ONCELOG_BENCH_DIR` if set, else
//! `/var/tmp` (a real disk; `/tmp` may be tmpfs, where fdatasync is free).
//!
//! Baselines use the same bytes as the engine: the raw loops write the very
//! batches the engine is given, read the very segment file it wrote.

#![allow(dead_code)] // each bench binary uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use oncelog::format::{BatchBuilder, BuiltBatch};
use oncelog::{Config, Durability, Log, Store};

/// A fresh scratch directory on a real disk.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("ONCELOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    tempfile::Builder::new()
        .prefix("oncelog-bench-")
        .tempdir_in(&base)
        .or_else(|_| tempfile::tempdir())
        .expect("scratch directory")
}

/// Incompressible bytes (xorshift64*), deterministic per seed.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small deterministic generator for random offsets and producer ids.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The shape of an append workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub record_bytes: usize,
    pub records_per_batch: usize,
}

impl Shape {
    pub const fn new(record_bytes: usize, records_per_batch: usize) -> Shape {
        Shape {
            record_bytes,
            records_per_batch,
        }
    }
    pub fn label(&self) -> String {
        let size = if self.record_bytes.is_multiple_of(1024) {
            format!("{}k", self.record_bytes / 1024)
        } else {
            format!("{}b", self.record_bytes)
        };
        format!("{size}x{}", self.records_per_batch)
    }
}

/// `count` encoded batches of `shape`; with `producer`, an idempotent
/// producer's consecutive batches starting at sequence 0.
pub fn batches(shape: Shape, count: usize, producer: Option<(i64, i16)>) -> Vec<Vec<u8>> {
    builders(shape, count, producer)
        .into_iter()
        .map(BatchBuilder::build)
        .collect()
}

/// [`batches`], finished as [`BuiltBatch`]es (for `Log::append_built`).
pub fn built_batches(shape: Shape, count: usize, producer: Option<(i64, i16)>) -> Vec<BuiltBatch> {
    builders(shape, count, producer)
        .into_iter()
        .map(BatchBuilder::finish)
        .collect()
}

fn builders(shape: Shape, count: usize, producer: Option<(i64, i16)>) -> Vec<BatchBuilder> {
    let values: Vec<Vec<u8>> = (0..shape.records_per_batch.min(64))
        .map(|i| payload(shape.record_bytes, i as u64 + 7))
        .collect();
    let mut seq = 0i32;
    (0..count)
        .map(|n| {
            let mut b =
                BatchBuilder::with_capacity(shape.records_per_batch * (shape.record_bytes + 16));
            if let Some((id, epoch)) = producer {
                b = b.with_producer(id, epoch, seq);
                seq += shape.records_per_batch as i32;
            }
            for r in 0..shape.records_per_batch {
                let ts = 1_700_000_000_000 + n as i64;
                b.push(ts, None, Some(&values[r % values.len()]), &[]);
            }
            b
        })
        .collect()
}

/// Total bytes of a batch list.
pub fn total_bytes(batches: &[Vec<u8>]) -> u64 {
    batches.iter().map(|b| b.len() as u64).sum()
}

/// Engine configuration for the benches: the defaults, with room for 1M
/// producers and large segments.
pub fn config(durability: Durability) -> Config {
    Config::default()
        .with_durability(durability)
        .with_max_producers(2_000_000)
        .with_segment_bytes((2 << 30) - 1)
        .with_max_batch_bytes(4 << 20)
}

/// Append `batches` to a fresh log (not timed: open, and close afterwards).
pub fn engine_append(batches: &[Vec<u8>], durability: Durability) -> Duration {
    let dir = scratch_dir();
    let store = Store::open(dir.path(), config(durability)).expect("open store");
    let log = store.log("bench", 0).expect("log");
    let t = Instant::now();
    for b in batches {
        black_box(log.append(b).expect("append"));
    }
    let took = t.elapsed();
    drop(log);
    store.close().expect("close");
    took
}

/// The raw baseline: `pwrite` the same bytes, one call per batch, to a fresh
/// plain file (with `fdatasync` after each when `sync`).
pub fn raw_append(batches: &[Vec<u8>], sync: bool) -> Duration {
    let dir = scratch_dir();
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(dir.path().join("raw.log"))
        .expect("raw file");
    let t = Instant::now();
    let mut at = 0u64;
    for b in batches {
        file.write_all_at(b, at).expect("pwrite");
        at += b.len() as u64;
        if sync {
            file.sync_data().expect("fdatasync");
        }
    }
    let took = t.elapsed();
    drop(file);
    took
}

/// Engine and raw baseline in lockstep: batch `i` is appended to a fresh
/// log, then `pwrite` (and, for `Sync`, `fdatasync`) of the same bytes to a
/// plain file in the same directory; each side's calls are timed
/// separately. Pairing batch by batch exposes both sides to the same page
/// cache, writeback and neighbour noise, which a shared VM varies by 2x
/// between runs. Returns `(engine, raw)`.
pub fn paired_append(batches: &[Vec<u8>], durability: Durability) -> (Duration, Duration) {
    paired(batches, durability, |log, b| log.append(b))
}

/// [`paired_append`] of batches from our builder, through
/// `Log::append_built`.
pub fn paired_append_built(batches: &[BuiltBatch], durability: Durability) -> (Duration, Duration) {
    paired(batches, durability, |log, b| log.append_built(b))
}

fn paired<B: AsRef<[u8]>>(
    batches: &[B],
    durability: Durability,
    append: impl Fn(&Log, &B) -> oncelog::Result<oncelog::AppendOutcome>,
) -> (Duration, Duration) {
    let dir = scratch_dir();
    let store = Store::open(dir.path(), config(durability)).expect("open store");
    let log = store.log("bench", 0).expect("log");
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(dir.path().join("raw.log"))
        .expect("raw file");
    let sync = matches!(durability, Durability::Sync);
    let (mut engine, mut raw) = (Duration::ZERO, Duration::ZERO);
    let mut at = 0u64;
    for (i, b) in batches.iter().enumerate() {
        // Alternate which side goes first, so neither always follows the other.
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                black_box(append(&log, b).expect("append"));
                engine += t.elapsed();
            } else {
                file.write_all_at(b.as_ref(), at).expect("pwrite");
                if sync {
                    file.sync_data().expect("fdatasync");
                }
                raw += t.elapsed();
            }
        }
        at += b.as_ref().len() as u64;
    }
    drop(log);
    store.close().expect("close");
    (engine, raw)
}

/// Idempotent and plain appends in lockstep, to two partitions of one
/// store: batch `i` of `plain` to partition 0, then batch `i` of `idem` to
/// partition 1 (order alternating). Returns `(plain, idempotent)` time.
pub fn paired_idempotence(plain: &[Vec<u8>], idem: &[Vec<u8>]) -> (Duration, Duration) {
    let dir = scratch_dir();
    let store = Store::open(dir.path(), config(Durability::Os)).expect("open store");
    let logs = [
        store.log("bench", 0).expect("log"),
        store.log("bench", 1).expect("log"),
    ];
    let mut took = [Duration::ZERO; 2];
    for (i, (p, d)) in plain.iter().zip(idem).enumerate() {
        for side in [i % 2, 1 - i % 2] {
            let b = if side == 0 { p } else { d };
            let t = Instant::now();
            black_box(logs[side].append(b).expect("append"));
            took[side] += t.elapsed();
        }
    }
    drop(logs);
    store.close().expect("close");
    (took[0], took[1])
}

/// Median of a list of durations.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// The `q` quantile (0..=1) of latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Result of a concurrent durable-append run.
#[derive(Debug, Clone)]
pub struct GroupRun {
    pub acks: u64,
    /// fdatasync calls the engine made for them (0 for the raw baseline).
    pub fsyncs: u64,
    pub elapsed: Duration,
    /// Every append's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl GroupRun {
    pub fn acks_per_sec(&self) -> f64 {
        self.acks as f64 / self.elapsed.as_secs_f64()
    }
}

/// `threads` threads append `per_thread` small idempotent batches each with
/// `Durability::Sync`, thread `i` to partition `i % partitions`, each with
/// its own producer id. The store is opened (and closed) outside the timing.
pub fn group_commit(
    threads: usize,
    partitions: usize,
    per_thread: usize,
    shape: Shape,
) -> GroupRun {
    let dir = scratch_dir();
    let store = Store::open(dir.path(), config(Durability::Sync)).expect("open");
    let logs: Vec<Log> = (0..partitions)
        .map(|p| store.log("bench", p as u32).expect("log"))
        .collect();
    // Warm the partitions: first segment created, first checkpoint written.
    let work: Vec<(Log, Vec<Vec<u8>>)> = (0..threads)
        .map(|i| {
            let (id, epoch) = store.init_producer().expect("producer id");
            let mut bs = batches(shape, per_thread + 1, Some((id, epoch)));
            let log = logs[i % partitions].clone();
            log.append(&bs.remove(0)).expect("warm-up append");
            (log, bs)
        })
        .collect();
    let fsyncs_before: u64 = logs.iter().map(|l| l.stats().fsyncs).sum();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = work
        .into_iter()
        .map(|(log, bs)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(bs.len());
                barrier.wait();
                for b in &bs {
                    let t = Instant::now();
                    black_box(log.append(b).expect("append"));
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let mut latencies = Vec::with_capacity(threads * per_thread);
    for h in handles {
        latencies.extend(h.join().expect("appender"));
    }
    let elapsed = t.elapsed();
    latencies.sort();
    let fsyncs = logs.iter().map(|l| l.stats().fsyncs).sum::<u64>() - fsyncs_before;
    drop(logs);
    store.close().expect("close");
    GroupRun {
        acks: (threads * per_thread) as u64,
        fsyncs,
        elapsed,
        latencies,
    }
}

/// The fdatasync baseline: one writer appending `batch` and fdatasync'ing,
/// `count` times, to a fresh plain file.
pub fn fsync_rate(batch: &[u8], count: usize) -> GroupRun {
    let dir = scratch_dir();
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(dir.path().join("raw.log"))
        .expect("raw file");
    let mut at = 0;
    let mut latencies = Vec::with_capacity(count);
    let t = Instant::now();
    for _ in 0..count {
        let s = Instant::now();
        file.write_all_at(batch, at).expect("pwrite");
        file.sync_data().expect("fdatasync");
        latencies.push(s.elapsed());
        at += batch.len() as u64;
    }
    let elapsed = t.elapsed();
    latencies.sort();
    GroupRun {
        acks: count as u64,
        fsyncs: count as u64,
        elapsed,
        latencies,
    }
}

/// A log filled with `bytes` of `shape` batches (plain, `Durability::Os`,
/// flushed), kept open for reads.
pub struct ReadFixture {
    pub _dir: tempfile::TempDir,
    pub store: Option<Store>,
    pub log: Log,
    pub bytes: u64,
    pub batches: u64,
    /// The active segment file (everything is in one segment).
    pub segment: PathBuf,
}

impl ReadFixture {
    pub fn new(shape: Shape, bytes: u64) -> ReadFixture {
        let dir = scratch_dir();
        let store = Store::open(dir.path(), config(Durability::Os)).expect("open");
        let log = store.log("bench", 0).expect("log");
        let bs = batches(shape, 64, None);
        let mut written = 0u64;
        let mut n = 0u64;
        while written < bytes {
            let b = &bs[(n % 64) as usize];
            log.append(b).expect("append");
            written += b.len() as u64;
            n += 1;
        }
        log.flush().expect("flush");
        let segment = std::fs::read_dir(log.dir())
            .expect("partition dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .expect("segment file");
        ReadFixture {
            _dir: dir,
            store: Some(store),
            log,
            bytes: written,
            batches: n,
            segment,
        }
    }

    /// Scan the whole log with zero-copy reads of up to 1 MiB, touching each
    /// batch's header (and, with `crc`, every byte, by checking its CRC).
    pub fn scan(&self, crc: bool) -> (u64, u64) {
        let mut offset = 0;
        let mut seen = 0u64;
        let mut bytes = 0u64;
        loop {
            let mut chunk = self.log.read(offset, 1 << 20).expect("read");
            if !crc {
                chunk = chunk.without_crc_check();
            }
            if chunk.is_empty() {
                break;
            }
            for b in &chunk {
                let b = b.expect("batch");
                bytes += b.bytes().len() as u64;
                seen += 1;
                offset = b.last_offset() + 1;
            }
        }
        (seen, bytes)
    }

    /// `n` lookups of random offsets, each returning the batch holding it.
    pub fn lookups(&self, n: usize, seed: u64) -> u64 {
        let end = self.log.next_offset() as u64;
        let mut rng = Rng::new(seed);
        let mut sum = 0u64;
        for _ in 0..n {
            let off = rng.below(end) as i64;
            let chunk = self.log.read(off, 1).expect("read").without_crc_check();
            let b = chunk.iter().next().expect("a batch").expect("valid");
            sum += b.bytes().len() as u64;
        }
        sum
    }
}

impl Drop for ReadFixture {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let _ = store.close();
        }
    }
}

/// A page-aligned, pre-faulted buffer (a large `Vec` sits at page+16, which
/// makes kernel copies several times slower on the reference machine).
pub fn aligned_buf(len: usize) -> MmapMut {
    let mut buf = MmapMut::map_anon(len).expect("anonymous map");
    buf.fill(1);
    buf
}

/// Baseline: read `path` sequentially with 1 MiB `pread`s into an aligned
/// buffer (warm page cache).
pub fn pread_file(path: &Path, buf: &mut [u8]) -> u64 {
    let file = File::open(path).expect("open");
    let len = file.metadata().expect("metadata").len();
    let mut at = 0;
    while at < len {
        let n = file.read_at(buf, at).expect("pread");
        if n == 0 {
            break;
        }
        black_box(&buf[..n]);
        at += n as u64;
    }
    at
}

/// Baseline: `n` random `pread`s of `size` bytes at 4 KiB-aligned positions.
pub fn pread_random(path: &Path, n: usize, size: usize, buf: &mut [u8], seed: u64) -> u64 {
    let file = File::open(path).expect("open");
    let len = file.metadata().expect("metadata").len();
    let pages = (len.saturating_sub(size as u64) / 4096).max(1);
    let mut rng = Rng::new(seed);
    let mut sum = 0u64;
    for _ in 0..n {
        let at = rng.below(pages) * 4096;
        sum += file.read_at(&mut buf[..size], at).expect("pread") as u64;
    }
    sum
}

/// Baseline: copy `src` into `dst` in 1 MiB chunks.
pub fn memcpy(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks(1 << 20).zip(dst.chunks_mut(1 << 20)) {
        d[..s.len()].copy_from_slice(s);
    }
    black_box(&dst[..]);
}

/// Build, in `dir`, a log whose active segment holds about `active_bytes`
/// of plain batches after a checkpoint of `producers` producers, then drop
/// the store without closing it: what a crash leaves (the page cache keeps
/// the data, so the open that follows is a warm recovery).
///
/// The producers' own batches (five each, a full window) go to an earlier
/// segment, sealed
/// by a roll, so that an open reads their state from the checkpoint at the
/// start of the active segment instead of scanning them: the open then
/// costs the checkpoint load plus the scan and replay of the plain batches.
pub fn build_crashed_log(dir: &Path, active_bytes: u64, producers: usize) {
    let bulk = batches(Shape::new(1024, 256), 16, None);
    if producers > 0 {
        let store = Store::open(dir, config(Durability::Os)).expect("open");
        let log = store.log("bench", 0).expect("log");
        let value = payload(32, 1);
        // Five batches each: every window is full.
        for seq in 0..5 {
            for id in 0..producers as i64 {
                let mut b = BatchBuilder::with_capacity(64).with_producer(id, 0, seq);
                b.push(1_700_000_000_000, None, Some(&value), &[]);
                log.append_built(&b.finish()).expect("producer append");
            }
        }
        drop(log);
        store.close().expect("close");
        // A segment size the next batch does not fit: it rolls, and the new
        // segment starts with a checkpoint of every producer.
        let cfg = config(Durability::Os).with_segment_bytes(1024);
        let store = Store::open(dir, cfg).expect("reopen");
        store
            .log("bench", 0)
            .expect("log")
            .append(&bulk[0])
            .expect("roll");
        store.close().expect("close");
    }
    let store = Store::open(dir, config(Durability::Os)).expect("open");
    let log = store.log("bench", 0).expect("log");
    let mut n = 0;
    let mut written = 0u64;
    while written < active_bytes {
        let b = &bulk[n % bulk.len()];
        log.append(b).expect("bulk append");
        written += b.len() as u64;
        n += 1;
    }
    log.flush().expect("flush");
    drop(log);
    drop(store); // no close: no final checkpoint, as after a crash
}

/// Open the store in `dir` (recovering its one log) and drop it again
/// without closing, so that the next open finds the same state. Returns the
/// open's wall time and the log's recovery report.
pub fn timed_open(dir: &Path) -> (Duration, oncelog::RecoveryReport) {
    let t = Instant::now();
    let store = Store::open(dir, config(Durability::Os)).expect("open");
    let took = t.elapsed();
    let report = store
        .recovery_reports()
        .into_iter()
        .next()
        .map(|(_, _, r)| r)
        .expect("one log");
    drop(store);
    (took, report)
}

/// The active segment file of the one log in `dir`.
pub fn active_segment(dir: &Path) -> PathBuf {
    let part = dir.join("bench-0");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&part)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

pub mod peers;

/// Criterion's output directory, found as criterion finds it (less its
/// `cargo metadata` fallback): where the benches leave extra results and
/// `examples/perf_plots.rs` reads them.
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion")
    }
}

/// A global allocator that counts live heap bytes (for memory-per-producer
/// figures): a binary installs it with
/// `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Heap bytes allocated and not yet freed (with [`CountingAlloc`] installed).
pub fn live_heap_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

// SAFETY: forwards every call to the system allocator unchanged and only
// counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Wakes the thread that waits in [`wait`].
struct ParkWaker(std::thread::Thread);

impl std::task::Wake for ParkWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drive one future to completion on this thread (poll, park until woken).
pub fn wait<F: std::future::Future + Unpin>(mut f: F) -> F::Output {
    let waker = std::task::Waker::from(Arc::new(ParkWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = std::pin::Pin::new(&mut f).poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One thread keeps `depth` asynchronous `Sync` appends of `batch` in
/// flight (`Log::append_async`), `count` in all, to a fresh log; the store
/// is opened and closed outside the timing.
pub fn async_pipeline(batch: &[u8], depth: usize, count: usize) -> GroupRun {
    let dir = scratch_dir();
    let store = Store::open(dir.path(), config(Durability::Sync)).expect("open");
    let log = store.log("bench", 0).expect("log");
    log.append(batch).expect("warm-up append");
    let fsyncs_before = log.stats().fsyncs;
    let mut in_flight = std::collections::VecDeque::with_capacity(depth);
    let t = Instant::now();
    for _ in 0..count {
        if in_flight.len() == depth {
            let f: oncelog::AppendFuture = in_flight.pop_front().expect("in flight");
            black_box(wait(f).expect("append"));
        }
        in_flight.push_back(log.append_async(batch, Durability::Sync));
    }
    for f in in_flight {
        black_box(wait(f).expect("append"));
    }
    let elapsed = t.elapsed();
    let fsyncs = log.stats().fsyncs - fsyncs_before;
    drop(log);
    store.close().expect("close");
    GroupRun {
        acks: count as u64,
        fsyncs,
        elapsed,
        latencies: Vec::new(),
    }
}
