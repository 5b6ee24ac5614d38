//! Producer validation: the cost of checking and recording one idempotent
//! batch in a partition's producer table, with 1k, 100k and 1M producers in
//! it, and the table's memory per producer.
//!
//! Group (IDs are read by `examples/perf_plots.rs`):
//!
//! * `producer_validation/uniform/<n>` – each batch comes from a producer
//!   picked uniformly at random among the `n`;
//! * `producer_validation/skewed/<n>` – 90 % of the batches come from 1 % of
//!   the producers (at least one), the rest uniformly from all of them.
//!
//! `<n>` is `1k`, `100k` or `1m`. One iteration is one batch (throughput in
//! elements: batches per second). Every producer's window (5 batches, the
//! default) is full before timing starts, so each append also evicts the
//! oldest batch of its window, as in steady state. Producer picks and their
//! sequence numbers are computed before each timed loop, which then streams
//! through them.
//!
//! Memory: a counting global allocator measures the live heap bytes the
//! table holds once every producer has a full window; the bytes per producer
//! (window included) are printed once per table size.

mod support;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use oncelog::internals::ProducerTable;
use support::{CountingAlloc, Rng, live_heap_bytes};

/// Live heap bytes, for the bytes-per-producer figure.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Batches kept per producer (the engine's default `producer_window`).
const WINDOW: usize = 5;
const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1m")];

/// A table of `n` producers, each with a full window, and the state needed
/// to append each producer's next batch.
struct Fixture {
    table: ProducerTable,
    n: usize,
    /// Next sequence number per producer.
    next_seq: Vec<i32>,
    next_offset: i64,
    rng: Rng,
    /// The picks of one timed loop: (producer id, base sequence).
    picks: Vec<(i64, i32)>,
}

impl Fixture {
    fn new(n: usize) -> (Fixture, usize) {
        let before = live_heap_bytes();
        let mut table = ProducerTable::new(WINDOW, 2 * n);
        let mut offset = 0i64;
        for round in 0..WINDOW as i32 {
            for id in 0..n as i64 {
                assert!(table.append(id, 0, round, 1, offset, 0), "a new batch");
                offset += 1;
            }
        }
        let bytes = live_heap_bytes().saturating_sub(before);
        assert_eq!(table.len(), n);
        let fixture = Fixture {
            table,
            n,
            next_seq: vec![WINDOW as i32; n],
            next_offset: offset,
            rng: Rng::new(n as u64),
            picks: Vec::new(),
        };
        (fixture, bytes)
    }

    /// Pick the producers of `iters` batches (uniformly, or 90 % from the
    /// hottest 1 %) and their sequence numbers.
    fn pick(&mut self, iters: u64, skewed: bool) {
        let hot = (self.n as u64 / 100).max(1);
        self.picks.clear();
        for _ in 0..iters {
            let id = if skewed && self.rng.below(10) < 9 {
                self.rng.below(hot)
            } else {
                self.rng.below(self.n as u64)
            } as usize;
            let seq = self.next_seq[id];
            self.next_seq[id] = seq.wrapping_add(1) & i32::MAX;
            self.picks.push((id as i64, seq));
        }
    }

    /// Append the picked batches; the timed part.
    fn run(&mut self) -> Duration {
        let t = Instant::now();
        let mut appended = 0u64;
        for &(id, seq) in &self.picks {
            appended += u64::from(self.table.append(id, 0, seq, 1, self.next_offset, 0));
            self.next_offset += 1;
        }
        let took = t.elapsed();
        assert_eq!(
            black_box(appended),
            self.picks.len() as u64,
            "every batch is new"
        );
        took
    }
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("producer_validation");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .nresamples(10_000)
        .throughput(Throughput::Elements(1));
    let mut memory = BTreeMap::new();
    for (n, label) in SIZES {
        // Built on first use (a filtered run skips the sizes it does not
        // need), shared by the uniform and skewed cases.
        let mut fixture: Option<Fixture> = None;
        for (function, skewed) in [("uniform", false), ("skewed", true)] {
            group.bench_function(BenchmarkId::new(function, label), |b| {
                let fx = fixture.get_or_insert_with(|| {
                    let t = Instant::now();
                    let (fx, bytes) = Fixture::new(n);
                    println!(
                        "producer table, {label} producers, window {WINDOW}: {} bytes/producer ({:.1} MiB; built in {:.2?})",
                        bytes / n,
                        bytes as f64 / f64::from(1 << 20),
                        t.elapsed()
                    );
                    memory.insert(n, bytes / n);
                    fx
                });
                b.iter_custom(|iters| {
                    fx.pick(iters, skewed);
                    fx.run()
                })
            });
        }
        drop(fixture);
    }
    group.finish();
    for (n, per) in memory {
        println!("memory per producer, window {WINDOW} included: {n} producers: {per} B");
    }
}

criterion_group!(benches, validation);
criterion_main!(benches);
