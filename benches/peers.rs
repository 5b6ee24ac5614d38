//! oncelog side by side with the peer log engines on the same workloads
//! (benches/support/peers.rs has the adapters and what each engine really
//! does; ../shared/reference/peers.md §3-§4 the survey):
//!
//! * `peers_append_nosync` – 16 records of 100 B per batch, no fsync
//!   (okaywal has no such mode);
//! * `peers_append_sync` – 16 records of 1 KiB per batch, durable when the
//!   call returns (commitlog through an fdatasync of its files by the
//!   adapter, walrus by its batch append, which always fsyncs);
//! * `peers_seq_read` – every record of 64k, from the start;
//! * `peers_point_read` – one record by its offset (commitlog, raft-engine
//!   and oncelog can).
//!
//! Every engine runs in its own scratch directory; walrus keeps one
//! instance per process (its state is process-wide) with a topic per case.
//! Throughput is in records.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use support::peers::*;
use support::{Rng, payload, scratch_dir};

fn records(size: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..16).map(|i| payload(size, seed + i)).collect()
}

fn appends(c: &mut Criterion, group: &str, size: usize, sync: bool) {
    let recs = records(size, 1);
    let recs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(if sync { 3 } else { 2 }))
        .throughput(Throughput::Elements(16));
    for (name, open) in ENGINES {
        let dir = scratch_dir();
        let mut log = open(dir.path()).expect("open peer");
        if !(if sync {
            log.supports_sync()
        } else {
            log.supports_nosync()
        }) {
            continue;
        }
        g.bench_function(BenchmarkId::new(name, format!("{size}bx16")), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    log.append_batch(&recs, sync).expect("append");
                }
                t.elapsed()
            });
        });
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    const BATCHES: usize = 4_096;
    let recs = records(100, 7);
    let recs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
    let mut seq = c.benchmark_group("peers_seq_read");
    seq.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements((BATCHES * 16) as u64));
    let mut filled = Vec::new();
    for (name, open) in ENGINES {
        let dir = scratch_dir();
        let mut log = open(dir.path()).expect("open peer");
        // walrus reads consume its topic: it gets one read, below.
        if !log.supports_nosync() || name == "walrus" {
            continue;
        }
        for _ in 0..BATCHES {
            log.append_batch(&recs, false).expect("append");
        }
        seq.bench_function(BenchmarkId::new(name, "100bx64k"), |b| {
            b.iter(|| black_box(log.read_all().expect("read")));
        });
        filled.push((name, dir, log));
    }
    seq.finish();

    let mut point = c.benchmark_group("peers_point_read");
    point
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for (name, _dir, log) in &mut filled {
        if log.read_one(0).is_none() {
            continue;
        }
        let mut rng = Rng::new(3);
        point.bench_function(BenchmarkId::new(*name, "100bx64k"), |b| {
            b.iter(|| {
                let n = rng.below((BATCHES * 16) as u64);
                black_box(log.read_one(n).expect("supported").expect("read"))
            });
        });
    }
    point.finish();
    remove_walrus_dir();
}

fn peers(c: &mut Criterion) {
    appends(c, "peers_append_nosync", 100, false);
    appends(c, "peers_append_sync", 1024, true);
    reads(c);
}

criterion_group!(benches, peers);
criterion_main!(benches);
