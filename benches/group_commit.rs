//! Group commit: `Durability::Sync` appends from 1, 4 and 16 threads, on one
//! partition and on 16 partitions, against one writer's fdatasync rate.
//!
//! Groups (IDs are read by `examples/perf_plots.rs`):
//!
//! * `group_commit/engine/1_partition/<threads>` and
//!   `group_commit/engine/16_partitions/<threads>` – one iteration is one
//!   call of `support::group_commit` (each thread appends its own producer's
//!   small idempotent batches, 100 B x 1 record); the throughput is in
//!   acknowledgements (elements), so criterion's `elem/s` is acks per second.
//! * `group_commit/fdatasync_one_writer/1` – the baseline: one writer's
//!   `pwrite` + `fdatasync` of the same batch, in a loop (`support::fsync_rate`).
//!
//! Criterion cannot show percentiles, so every append latency of every run
//! (warm-up runs included) is kept; p50 / p99 per case are printed and
//! written to `<criterion home>/oncelog-latency.json` (`target/criterion/`
//! unless `CRITERION_HOME` or `CARGO_TARGET_DIR` say otherwise), merged with
//! the cases already there from earlier runs.
//!
//! When other processes keep every core busy, the wake-up after each
//! fdatasync can wait for a scheduler tick (4 ms at HZ=250); compare engine
//! and baseline within one run only.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use support::{GroupRun, Shape, batches, criterion_home, fsync_rate, group_commit, quantile};

const THREADS: [usize; 3] = [1, 4, 16];
const PARTITIONS: [usize; 2] = [1, 16];
const SHAPE: Shape = Shape::new(100, 1);
/// Appends per call of the one-writer baseline.
const BASELINE_COUNT: usize = 128;

/// Appends per thread and call: ~128-512 acknowledgements per call.
fn per_thread(threads: usize) -> usize {
    match threads {
        1 => 128,
        2..=4 => 64,
        _ => 32,
    }
}

/// Latencies and totals of every run of one case.
#[derive(Default)]
struct Collected {
    latencies: Vec<Duration>,
    acks: u64,
    elapsed: Duration,
    runs: u64,
}

impl Collected {
    fn add(&mut self, run: GroupRun) -> Duration {
        self.acks += run.acks;
        self.elapsed += run.elapsed;
        self.runs += 1;
        self.latencies.extend(run.latencies);
        run.elapsed
    }

    /// Print p50 / p99 and return the case's JSON object (None if it did
    /// not run, e.g. filtered out).
    fn report(mut self, id: &str) -> Option<String> {
        if self.latencies.is_empty() {
            return None;
        }
        self.latencies.sort();
        let p50 = quantile(&self.latencies, 0.5);
        let p99 = quantile(&self.latencies, 0.99);
        let acks_per_sec = self.acks as f64 / self.elapsed.as_secs_f64();
        println!(
            "{id}: p50 {:.0} us, p99 {:.0} us, {acks_per_sec:.0} acks/s ({} appends in {} runs)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            self.latencies.len(),
            self.runs
        );
        Some(format!(
            "{{\"p50_us\": {:.1}, \"p99_us\": {:.1}, \"acks_per_sec\": {acks_per_sec:.1}, \"appends\": {}, \"runs\": {}}}",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            self.latencies.len(),
            self.runs
        ))
    }
}

/// True in criterion's benchmark mode (`cargo bench`), false in its test
/// (`cargo test --benches`, `-- --test`), list and profile modes, whose runs
/// must not replace the measured latencies.
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench")
        && !has("--test")
        && !has("--list")
        && !args.iter().any(|a| a.starts_with("--profile-time"))
}

/// Merge `cases` into the latency file: a JSON object with one
/// `"<benchmark id>": {...}` member per line, so that the cases of an
/// earlier (perhaps filtered) run can be kept without a JSON parser.
fn write_latencies(cases: &BTreeMap<String, String>) {
    if cases.is_empty() || !benchmarking() {
        return;
    }
    let home = criterion_home();
    let path = home.join("oncelog-latency.json");
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(old) = std::fs::read_to_string(&path) {
        for line in old.lines() {
            let line = line.trim().trim_end_matches(',');
            if let Some(rest) = line.strip_prefix('"')
                && let Some((key, value)) = rest.split_once("\": ")
            {
                all.insert(key.to_string(), value.to_string());
            }
        }
    }
    all.extend(cases.iter().map(|(k, v)| (k.clone(), v.clone())));
    let members: Vec<String> = all.iter().map(|(k, v)| format!("  \"{k}\": {v}")).collect();
    let text = format!("{{\n{}\n}}\n", members.join(",\n"));
    if let Err(e) = std::fs::create_dir_all(&home).and_then(|()| std::fs::write(&path, text)) {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        println!("latencies written to {}", path.display());
    }
}

fn group_commits(c: &mut Criterion) {
    let mut cases = BTreeMap::new();
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1500))
        .nresamples(10_000);

    let batch = batches(SHAPE, 1, None).remove(0);
    let mut base = Collected::default();
    group.throughput(Throughput::Elements(BASELINE_COUNT as u64));
    group.bench_function(BenchmarkId::new("fdatasync_one_writer", 1), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| base.add(fsync_rate(&batch, BASELINE_COUNT)))
                .sum()
        })
    });
    if let Some(json) = base.report("group_commit/fdatasync_one_writer/1") {
        cases.insert("group_commit/fdatasync_one_writer/1".to_string(), json);
    }

    for partitions in PARTITIONS {
        let function = if partitions == 1 {
            "engine/1_partition".to_string()
        } else {
            format!("engine/{partitions}_partitions")
        };
        for threads in THREADS {
            let n = per_thread(threads);
            let mut got = Collected::default();
            group.throughput(Throughput::Elements((threads * n) as u64));
            group.bench_function(BenchmarkId::new(&function, threads), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| got.add(group_commit(threads, partitions, n, SHAPE)))
                        .sum()
                })
            });
            let id = format!("group_commit/{function}/{threads}");
            if let Some(json) = got.report(&id) {
                cases.insert(id, json);
            }
        }
    }
    group.finish();
    write_latencies(&cases);
}

criterion_group!(benches, group_commits);
criterion_main!(benches);
