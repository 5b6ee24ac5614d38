//! Reads of a 256 MiB log (1 KiB records, 16 per batch, one segment, warm
//! page cache) against copying or `pread`ing the same bytes.
//!
//! Groups (IDs are read by `examples/perf_plots.rs`):
//!
//! * `read_seq/{scan/crc,scan/no_crc,pread_aligned,memcpy}/256MiB` – one
//!   iteration reads everything once: the engine's zero-copy scan
//!   (`ReadFixture::scan`) with and without CRC checks; the baselines are
//!   1 MiB `pread`s of the segment file into a page-aligned buffer
//!   (`support::pread_file`) and a `memcpy` of the file's bytes between two
//!   in-memory buffers (`support::memcpy`). Throughput in bytes: the log's
//!   batches for the scans, the file's length for the baselines.
//! * `read_random/{engine_lookup,pread_random}/<batch bytes>` – one
//!   iteration is one lookup: the batch holding a random offset
//!   (`ReadFixture::lookups`), against a `pread` of one batch's size at a
//!   random page (`support::pread_random`).

mod support;

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use memmap2::MmapMut;
use support::{ReadFixture, Shape, aligned_buf, memcpy, pread_file, pread_random};

const LOG_BYTES: u64 = 256 << 20;

/// The log, plus the buffers the baselines need.
struct Fixture {
    fx: ReadFixture,
    /// 1 MiB, page aligned.
    buf: MmapMut,
    file_len: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let t = Instant::now();
        let fx = ReadFixture::new(Shape::new(1024, 16), LOG_BYTES);
        let file_len = std::fs::metadata(&fx.segment).expect("segment").len();
        let mut buf = aligned_buf(1 << 20);
        // Warm the page cache and the engine's maps once.
        pread_file(&fx.segment, &mut buf);
        assert_eq!(fx.scan(true).0, fx.batches);
        println!(
            "read fixture: {} batches, {} bytes of batches, segment file {} bytes (built in {:.2?})",
            fx.batches,
            fx.bytes,
            file_len,
            t.elapsed()
        );
        Fixture { fx, buf, file_len }
    }
}

fn reads(c: &mut Criterion) {
    let mut f = Fixture::new();
    let label = format!("{}MiB", LOG_BYTES >> 20);

    let mut group = c.benchmark_group("read_seq");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .nresamples(10_000);
    // The scans cover the log's batches, the baselines the segment file.
    group.throughput(Throughput::Bytes(f.fx.bytes));
    for (function, crc) in [("scan/crc", true), ("scan/no_crc", false)] {
        group.bench_function(BenchmarkId::new(function, &label), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    assert_eq!(f.fx.scan(crc).0, f.fx.batches);
                }
                t.elapsed()
            })
        });
    }
    group.throughput(Throughput::Bytes(f.file_len));
    group.bench_function(BenchmarkId::new("pread_aligned", &label), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                assert_eq!(pread_file(&f.fx.segment, &mut f.buf), f.file_len);
            }
            t.elapsed()
        })
    });
    group.bench_function(BenchmarkId::new("memcpy", &label), |b| {
        let src = std::fs::read(&f.fx.segment).expect("segment");
        let mut dst = aligned_buf(src.len());
        memcpy(&src, &mut dst);
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                memcpy(&src, &mut dst);
            }
            t.elapsed()
        })
    });
    group.finish();

    let batch_len = (f.fx.bytes / f.fx.batches) as usize;
    let mut group = c.benchmark_group("read_random");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .nresamples(10_000)
        .throughput(Throughput::Elements(1));
    let mut seed = 1u64;
    group.bench_function(BenchmarkId::new("engine_lookup", batch_len), |b| {
        b.iter_custom(|iters| {
            seed += 1;
            let n = usize::try_from(iters).expect("iterations");
            let t = Instant::now();
            let sum = f.fx.lookups(n, seed);
            let took = t.elapsed();
            assert!(sum >= iters);
            took
        })
    });
    group.bench_function(BenchmarkId::new("pread_random", batch_len), |b| {
        b.iter_custom(|iters| {
            seed += 1;
            let n = usize::try_from(iters).expect("iterations");
            let t = Instant::now();
            let sum = pread_random(&f.fx.segment, n, batch_len, &mut f.buf, seed);
            let took = t.elapsed();
            assert_eq!(sum, iters * batch_len as u64);
            took
        })
    });
    group.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
