//! Append throughput against a raw `pwrite` loop of the same bytes.
//!
//! Groups (IDs are read by `examples/perf_plots.rs`):
//!
//! * `append_os/{engine/plain,engine/idempotent,raw_pwrite}/<shape>` –
//!   `Durability::Os`, against one `pwrite` per batch into a plain file.
//! * `append_sync/{engine/plain,engine/idempotent,raw_pwrite_fdatasync}/<shape>`
//!   – `Durability::Sync`, against `pwrite` + `fdatasync` per batch.
//!
//! `<shape>` is `Shape::label()`: record size and records per batch, e.g.
//! `100bx1`, `1kx256`. One iteration is one call of `support::engine_append`
//! / `support::raw_append` (a fresh store or file; open and close are not
//! timed), sized to take roughly 20-100 ms; the throughput is in bytes of
//! encoded batches. The idempotent batches carry a producer id, epoch and
//! sequence and have exactly the same length as the plain ones.
//!
//! Criterion runs the cases one after another (engine and baseline are not
//! interleaved), so on a shared machine compare them within one run only;
//! `examples/perf_summary.rs` interleaves them for the headline ratios.

mod support;

use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use oncelog::Durability;
use support::{Shape, batches, engine_append, raw_append, total_bytes};

const RECORD_BYTES: [usize; 2] = [100, 1024];
const RECORDS_PER_BATCH: [usize; 3] = [1, 16, 256];

/// Batches per call: about `target` bytes, within `[min, max]` batches.
fn batch_count(shape: Shape, target: u64, min: usize, max: usize) -> usize {
    let one = batches(shape, 1, None)[0].len() as u64;
    usize::try_from(target / one).unwrap_or(max).clamp(min, max)
}

fn append_group(c: &mut Criterion, durability: Durability) {
    let sync = durability == Durability::Sync;
    let (name, raw_name) = if sync {
        ("append_sync", "raw_pwrite_fdatasync")
    } else {
        ("append_os", "raw_pwrite")
    };
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(if sync { 1500 } else { 1000 }))
        .nresamples(10_000);
    for record_bytes in RECORD_BYTES {
        for per_batch in RECORDS_PER_BATCH {
            let shape = Shape::new(record_bytes, per_batch);
            // Os: ~32 MiB per call, at most 30k batches (the per-batch cost
            // dominates small batches). Sync: every batch waits for an
            // fdatasync (~0.3 ms and up), so 24-128 batches.
            let count = if sync {
                batch_count(shape, 8 << 20, 24, 128)
            } else {
                batch_count(shape, 32 << 20, 16, 30_000)
            };
            let plain = batches(shape, count, None);
            let idem = batches(shape, count, Some((1, 0)));
            let bytes = total_bytes(&plain);
            assert_eq!(bytes, total_bytes(&idem), "same bytes either way");
            let label = shape.label();
            group.throughput(Throughput::Bytes(bytes));
            group.bench_function(BenchmarkId::new(raw_name, &label), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| raw_append(&plain, sync)).sum())
            });
            group.bench_function(BenchmarkId::new("engine/plain", &label), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| engine_append(&plain, durability)).sum())
            });
            group.bench_function(BenchmarkId::new("engine/idempotent", &label), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| engine_append(&idem, durability)).sum())
            });
        }
    }
    group.finish();
}

fn append_os(c: &mut Criterion) {
    append_group(c, Durability::Os);
}

fn append_sync(c: &mut Criterion) {
    append_group(c, Durability::Sync);
}

criterion_group!(benches, append_os, append_sync);
criterion_main!(benches);
