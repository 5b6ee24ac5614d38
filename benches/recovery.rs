//! Open time after a crash and after a clean close, against the size of the
//! active segment and against the number of producers.
//!
//! Groups (IDs are read by `examples/perf_plots.rs`):
//!
//! * `recovery_size/{crash_open,clean_open,pread_segment}/<n>MiB` – a log
//!   whose active segment holds a checkpoint of 1k producers and then about
//!   64, 256 or 1024 MiB of plain 256 KiB batches (the producers' own
//!   batches lie in an earlier, sealed segment). The baseline reads the
//!   active segment with 1 MiB `pread`s into an aligned buffer
//!   (`support::pread_file`); throughput in bytes of that segment.
//! * `recovery_producers/{crash_open,clean_open}/<n>` – 1k, 100k or 1M
//!   producers with full windows (five batches each, in a sealed segment);
//!   the active segment starts with their checkpoint and holds one more
//!   batch, so an open is mostly the checkpoint load; throughput in
//!   producers (elements).
//!
//! `crash_open`: the log is built and the store dropped without `close()`
//! (`support::build_crashed_log`), then opened and dropped again, each open
//! timed (`support::timed_open`), so that every open finds the state a crash
//! left. `clean_open`: the same log, once opened and closed cleanly
//! (`close()` writes a final checkpoint), then timed the same way. The page
//! cache holds the files throughout (warm recovery). Each fixture is built
//! once, outside the measurement; the first open's and the last open's
//! recovery reports are printed, to show what the timed opens did.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use oncelog::{Durability, RecoveryReport, Store};
use support::{active_segment, aligned_buf, build_crashed_log, config, pread_file, timed_open};

const SIZES_MIB: [u64; 3] = [64, 256, 1024];
/// Producers in the segment-size fixtures.
const SIZE_PRODUCERS: usize = 1_000;
const PRODUCERS: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1m")];

/// A crashed (then, on request, cleanly closed) log, built on first use so
/// that a filtered run builds only the fixtures it needs.
struct Fixture {
    active_bytes: u64,
    producers: usize,
    dir: Option<tempfile::TempDir>,
    clean: bool,
    want_clean: bool,
}

impl Fixture {
    fn new(active_bytes: u64, producers: usize) -> Fixture {
        Fixture {
            active_bytes,
            producers,
            dir: None,
            clean: false,
            want_clean: false,
        }
    }

    /// The store directory, built (and cleanly closed, if asked) first.
    fn dir(&mut self) -> PathBuf {
        if self.dir.is_none() {
            let t = Instant::now();
            let dir = support::scratch_dir();
            build_crashed_log(dir.path(), self.active_bytes, self.producers);
            println!(
                "built a crashed log: active segment {} MiB, {} producers, in {:.2?}",
                std::fs::metadata(active_segment(dir.path()))
                    .expect("segment")
                    .len()
                    >> 20,
                self.producers,
                t.elapsed()
            );
            self.dir = Some(dir);
        }
        let dir = self.dir.as_ref().expect("built").path().to_path_buf();
        if self.want_clean && !self.clean {
            let store = Store::open(&dir, config(Durability::Os)).expect("open");
            store.close().expect("close");
            self.clean = true;
        }
        dir
    }

    /// From now on every open is a clean one: the next use opens the store
    /// and closes it cleanly once.
    fn close_cleanly(&mut self) {
        self.want_clean = true;
    }
}

fn describe(r: &RecoveryReport) -> String {
    format!(
        "recovery {:.1?}, {} batches scanned, {} replayed, {} producers, checkpoint at {:?}, {} indexes rebuilt, {} bytes truncated",
        r.duration,
        r.batches_scanned,
        r.batches_replayed,
        r.producers,
        r.checkpoint_offset,
        r.indexes_rebuilt,
        r.bytes_truncated
    )
}

/// Bench `timed_open` of the fixture's directory as `function/label`,
/// printing the first and last opens' reports and the median open time.
fn bench_open(
    group: &mut BenchmarkGroup<'_, WallTime>,
    function: &str,
    label: &str,
    f: &mut Fixture,
) {
    let mut opens: Vec<Duration> = Vec::new();
    let mut first: Option<RecoveryReport> = None;
    let mut last: Option<RecoveryReport> = None;
    group.bench_function(BenchmarkId::new(function, label), |b| {
        let dir = f.dir();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (took, report) = timed_open(&dir);
                total += took;
                opens.push(took);
                if first.is_none() {
                    first = Some(report);
                } else {
                    last = Some(report);
                }
            }
            total
        })
    });
    if let Some(first) = first {
        let n = opens.len();
        println!(
            "{function}/{label}: median open {:.1?} over {n} opens",
            support::median(opens)
        );
        println!("  first open: {}", describe(&first));
        if let Some(last) = last {
            println!("  last open:  {}", describe(&last));
        }
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(2))
        .nresamples(10_000);
}

fn by_segment_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery_size");
    configure(&mut group);
    let mut buf = aligned_buf(1 << 20);
    for mib in SIZES_MIB {
        let label = format!("{mib}MiB");
        let mut f = Fixture::new(mib << 20, SIZE_PRODUCERS);
        // The nominal size (the segment also holds the producers' batches
        // and checkpoint, ~0.1 MiB, and may overshoot by one batch).
        group.throughput(Throughput::Bytes(mib << 20));
        bench_open(&mut group, "crash_open", &label, &mut f);
        group.bench_function(BenchmarkId::new("pread_segment", &label), |b| {
            let segment = active_segment(&f.dir());
            let len = std::fs::metadata(&segment).expect("segment").len();
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    assert_eq!(pread_file(&segment, &mut buf), len);
                }
                t.elapsed()
            })
        });
        f.close_cleanly();
        bench_open(&mut group, "clean_open", &label, &mut f);
    }
    group.finish();
}

fn by_producers(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery_producers");
    configure(&mut group);
    for (n, label) in PRODUCERS {
        let mut f = Fixture::new(0, n);
        group.throughput(Throughput::Elements(n as u64));
        bench_open(&mut group, "crash_open", label, &mut f);
        f.close_cleanly();
        bench_open(&mut group, "clean_open", label, &mut f);
    }
    group.finish();
}

criterion_group!(benches, by_segment_size, by_producers);
criterion_main!(benches);
