//! The headline performance figures in under a minute:
//!
//! ```sh
//! cargo run --release --example perf_summary
//! ```
//!
//! One line per figure, `name measured_ratio target_ratio`, every ratio
//! measured in this run against a baseline measured in the same run
//! (interleaved, median of several rounds) and oriented so that higher is
//! better. Exits 0 whether or not a target is met. The criterion benches in
//! `benches/` measure the same workloads at more sizes and with more
//! samples; `docs/performance.md` explains each figure.
//!
//! `ONCELOG_BENCH_DIR` chooses the scratch directory (default `/var/tmp`;
//! it must be a real disk, not tmpfs, for the durable figures to mean
//! anything).

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use oncelog::Durability;
use oncelog::internals::ProducerTable;
use support::*;

/// Live heap bytes, for the bytes-per-producer figure.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ROUNDS: usize = 5;

struct Summary {
    lines: Vec<(String, f64, f64)>,
    notes: Vec<String>,
}

impl Summary {
    fn line(&mut self, name: &str, measured: f64, target: f64) {
        println!("{name} {measured:.3} {target:.3}");
        self.lines.push((name.to_string(), measured, target));
    }
    fn note(&mut self, note: String) {
        eprintln!("  {note}");
        self.notes.push(note);
    }
}

/// Median engine time and median baseline time over interleaved rounds.
fn interleaved(
    rounds: usize,
    mut baseline: impl FnMut() -> Duration,
    mut engine: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let mut b = Vec::with_capacity(rounds);
    let mut e = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        b.push(baseline());
        e.push(engine());
    }
    (median(b), median(e))
}

/// Medians of both sides of a paired measurement over `rounds` rounds.
fn paired_rounds(
    rounds: usize,
    mut run: impl FnMut() -> (Duration, Duration),
) -> (Duration, Duration) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (x, y) = run();
        a.push(x);
        b.push(y);
    }
    (median(a), median(b))
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn appends(s: &mut Summary) {
    for (shape, total) in [
        (Shape::new(1024, 256), 64u64 << 20),
        (Shape::new(1024, 16), 32 << 20),
        (Shape::new(100, 16), 16 << 20),
        (Shape::new(100, 1), 2 << 20),
    ] {
        let one = batches(shape, 1, None)[0].len() as u64;
        let count = (total / one).max(16) as usize;
        let plain = batches(shape, count, None);
        let bytes = total_bytes(&plain);
        let (eng, raw) = paired_rounds(ROUNDS, || paired_append(&plain, Durability::Os));
        s.note(format!(
            "append Os {}: engine {:.2} GB/s, raw pwrite {:.2} GB/s",
            shape.label(),
            gbps(bytes, eng),
            gbps(bytes, raw)
        ));
        s.line(
            &format!("append_os_{}_vs_pwrite", shape.label()),
            raw.as_secs_f64() / eng.as_secs_f64(),
            0.85,
        );
    }

    // An embedding service's batches, from our builder: no second CRC pass.
    for shape in [Shape::new(100, 16), Shape::new(1024, 256)] {
        let one = batches(shape, 1, None)[0].len() as u64;
        let count = ((16u64 << 20) / one).max(16) as usize;
        let built = built_batches(shape, count, None);
        let bytes: u64 = built.iter().map(|b| b.as_bytes().len() as u64).sum();
        let (eng, raw) = paired_rounds(ROUNDS, || paired_append_built(&built, Durability::Os));
        s.note(format!(
            "append_built Os {}: engine {:.2} GB/s, raw pwrite {:.2} GB/s",
            shape.label(),
            gbps(bytes, eng),
            gbps(bytes, raw)
        ));
        s.line(
            &format!("append_built_os_{}_vs_pwrite", shape.label()),
            raw.as_secs_f64() / eng.as_secs_f64(),
            0.85,
        );
    }

    // Idempotence overhead: the same bytes with and without a producer id.
    for shape in [Shape::new(100, 16), Shape::new(1024, 16)] {
        let count = ((8u64 << 20) / batches(shape, 1, None)[0].len() as u64) as usize;
        let plain = batches(shape, count, None);
        let idem = batches(shape, count, Some((1, 0)));
        let (p, i) = paired_rounds(ROUNDS, || paired_idempotence(&plain, &idem));
        s.note(format!(
            "append Os {}: idempotent {:.0} ns/batch, plain {:.0} ns/batch",
            shape.label(),
            i.as_nanos() as f64 / count as f64,
            p.as_nanos() as f64 / count as f64
        ));
        s.line(
            &format!("idempotent_vs_plain_{}", shape.label()),
            p.as_secs_f64() / i.as_secs_f64(),
            0.97,
        );
    }

    // Durable 1 MiB batches.
    let shape = Shape::new(1024, 1024);
    let big = batches(shape, 24, Some((1, 0)));
    let bytes = total_bytes(&big);
    let (eng, raw) = paired_rounds(3, || paired_append(&big, Durability::Sync));
    s.note(format!(
        "append Sync 1 MiB batches: engine {:.0} MB/s, raw pwrite+fdatasync {:.0} MB/s",
        gbps(bytes, eng) * 1e3,
        gbps(bytes, raw) * 1e3
    ));
    s.line(
        "append_sync_1mib_vs_pwrite_fdatasync",
        raw.as_secs_f64() / eng.as_secs_f64(),
        0.9,
    );
}

fn group_commits(s: &mut Summary) {
    async_pipeline_line(s);
    let shape = Shape::new(100, 1);
    let small = batches(shape, 1, None).remove(0);
    for partitions in [1usize, 16] {
        let mut base = Vec::new();
        let mut runs = Vec::new();
        for _ in 0..3 {
            base.push(fsync_rate(&small, 200).acks_per_sec());
            runs.push(group_commit(16, partitions, 60, shape));
        }
        base.sort_by(f64::total_cmp);
        runs.sort_by(|a, b| a.acks_per_sec().total_cmp(&b.acks_per_sec()));
        let run = &runs[runs.len() / 2];
        let one = base[base.len() / 2];
        s.note(format!(
            "16 threads, {partitions} partition(s), Sync: {:.0} acks/s, {:.1} per fdatasync (p50 {:?}, p99 {:?}); one writer's pwrite+fdatasync {:.0}/s",
            run.acks_per_sec(),
            run.acks as f64 / run.fsyncs.max(1) as f64,
            quantile(&run.latencies, 0.5),
            quantile(&run.latencies, 0.99),
            one
        ));
        s.line(
            &format!("group_commit_16_threads_{partitions}_partitions_vs_one_fdatasync"),
            run.acks_per_sec() / one,
            8.0,
        );
    }
}

/// One thread, 16 asynchronous durable appends in flight: what a pipelined
/// client (a Kafka connection, a tokio service) gets from group commit.
fn async_pipeline_line(s: &mut Summary) {
    let small = batches(Shape::new(100, 1), 1, None).remove(0);
    let mut base = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        base.push(fsync_rate(&small, 200).acks_per_sec());
        runs.push(async_pipeline(&small, 16, 2_000));
    }
    base.sort_by(f64::total_cmp);
    runs.sort_by(|a, b| a.acks_per_sec().total_cmp(&b.acks_per_sec()));
    let (run, one) = (&runs[1], base[1]);
    s.note(format!(
        "1 thread, 16 async Sync appends in flight: {:.0} acks/s, {:.1} per fdatasync; one writer's pwrite+fdatasync {one:.0}/s",
        run.acks_per_sec(),
        run.acks as f64 / run.fsyncs.max(1) as f64
    ));
    s.line(
        "group_commit_async_16_in_flight_vs_one_fdatasync",
        run.acks_per_sec() / one,
        8.0,
    );
}

fn validation(s: &mut Summary) {
    const N: usize = 1_000_000;
    const OPS: usize = 1_000_000;
    let before = live_heap_bytes();
    let mut table = ProducerTable::new(5, 2 * N);
    // Each producer gets a full window of 5 batches.
    for round in 0..5 {
        for id in 0..N as i64 {
            table.append(id, 0, round, 1, id * 5 + i64::from(round), 0);
        }
    }
    let bytes = live_heap_bytes().saturating_sub(before);
    let mut rng = Rng::new(9);
    let ids: Vec<i64> = (0..OPS).map(|_| rng.below(N as u64) as i64).collect();
    let mut next = vec![5i32; N];
    let t = Instant::now();
    let mut appended = 0;
    for (n, &id) in ids.iter().enumerate() {
        let seq = &mut next[id as usize];
        appended += usize::from(table.append(id, 0, *seq, 1, (5 * N + n) as i64, 0));
        *seq += 1;
    }
    let took = t.elapsed();
    assert_eq!(appended, OPS, "every batch is new");
    let ns = took.as_nanos() as f64 / OPS as f64;
    drop(table);
    s.note(format!(
        "producer validation, {N} producers, random order: {ns:.0} ns/batch; {} bytes/producer (window 5 included); one dependent random DRAM access {:.0} ns",
        bytes / N,
        dram_latency_ns()
    ));
    s.line(
        "validation_1m_producers_100ns_over_measured",
        100.0 / ns,
        1.0,
    );
}

/// Appends without fsync, reads back (all, then points), and appends with
/// fsync through one engine; records per second per workload in `out`
/// (`None` where the engine cannot express the workload).
fn peer_round(
    open: support::peers::Open,
    round: usize,
    small: &[&[u8]],
    big: &[&[u8]],
    out: &mut [Option<f64>; 4],
) -> std::io::Result<()> {
    const NOSYNC_BATCHES: usize = 4_000; // x 16 x 100 B
    const SYNC_BATCHES: usize = 120; // x 16 x 1 KiB
    const POINT_READS: usize = 10_000;
    let records = (NOSYNC_BATCHES * small.len()) as u64;
    let rate = |n: u64, t: Instant| Some(n as f64 / t.elapsed().as_secs_f64());
    let dir = scratch_dir();
    let mut log = open(dir.path())?;
    if log.supports_nosync() {
        let t = Instant::now();
        for _ in 0..NOSYNC_BATCHES {
            log.append_batch(small, false)?;
        }
        out[0] = rate(records, t);
        let t = Instant::now();
        let (n, _) = log.read_all()?;
        if n != records {
            return Err(std::io::Error::other(format!(
                "{} read back {n} of {records} records",
                log.name()
            )));
        }
        out[2] = rate(n, t);
        let mut rng = Rng::new(round as u64);
        let t = Instant::now();
        let mut supported = true;
        for _ in 0..POINT_READS {
            match log.read_one(rng.below(records)) {
                Some(r) => {
                    r?;
                }
                None => {
                    supported = false;
                    break;
                }
            }
        }
        if supported {
            out[3] = rate(POINT_READS as u64, t);
        }
    }
    drop(log);
    let dir = scratch_dir();
    let mut log = open(dir.path())?;
    if log.supports_sync() {
        let t = Instant::now();
        for _ in 0..SYNC_BATCHES {
            log.append_batch(big, true)?;
        }
        out[1] = rate((SYNC_BATCHES * big.len()) as u64, t);
    }
    Ok(())
}

/// The physical floor under a lookup in a large table: one dependent
/// random access into 256 MiB (a pointer chase through a random cycle).
fn dram_latency_ns() -> f64 {
    const SLOTS: usize = 32 << 20; // 256 MiB of u64
    let mut next: Vec<u64> = (0..SLOTS as u64).collect();
    // Sattolo's shuffle: one cycle through every slot.
    let mut rng = Rng::new(5);
    for i in (1..SLOTS).rev() {
        let j = rng.below(i as u64) as usize;
        next.swap(i, j);
    }
    const STEPS: usize = 2_000_000;
    let mut at = 0u64;
    let t = Instant::now();
    for _ in 0..STEPS {
        at = next[at as usize];
    }
    std::hint::black_box(at);
    t.elapsed().as_nanos() as f64 / STEPS as f64
}

fn reads(s: &mut Summary) {
    let fx = ReadFixture::new(Shape::new(1024, 16), 256 << 20);
    let mut buf = aligned_buf(1 << 20);
    let copy_src = std::fs::read(&fx.segment).expect("segment");
    let mut copy_dst = aligned_buf(copy_src.len());
    // Warm everything once.
    pread_file(&fx.segment, &mut buf);
    fx.scan(true);
    let mut pread = Vec::new();
    let mut crc = Vec::new();
    let mut nocrc = Vec::new();
    let mut copy = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        pread_file(&fx.segment, &mut buf);
        pread.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(fx.scan(true).0, fx.batches);
        crc.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(fx.scan(false).0, fx.batches);
        nocrc.push(t.elapsed());
        let t = Instant::now();
        memcpy(&copy_src, &mut copy_dst);
        copy.push(t.elapsed());
    }
    let (pread, crc, nocrc, copy) = (median(pread), median(crc), median(nocrc), median(copy));
    s.note(format!(
        "sequential read of {} MiB: with CRC {:.1} GB/s, zero-copy without CRC {:.1} GB/s; aligned 1 MiB pread {:.1} GB/s, memcpy {:.1} GB/s",
        fx.bytes >> 20,
        gbps(fx.bytes, crc),
        gbps(fx.bytes, nocrc),
        gbps(fx.bytes, pread),
        gbps(fx.bytes, copy)
    ));
    s.line(
        "seq_read_crc_vs_aligned_pread",
        pread.as_secs_f64() / crc.as_secs_f64(),
        0.8,
    );
    s.line(
        "seq_read_zero_copy_vs_aligned_pread",
        pread.as_secs_f64() / nocrc.as_secs_f64(),
        0.8,
    );

    const LOOKUPS: usize = 100_000;
    let batch_len = (fx.bytes / fx.batches) as usize;
    let (base, eng) = interleaved(
        ROUNDS,
        || {
            let t = Instant::now();
            pread_random(&fx.segment, LOOKUPS, batch_len, &mut buf, 3);
            t.elapsed()
        },
        || {
            let t = Instant::now();
            fx.lookups(LOOKUPS, 3);
            t.elapsed()
        },
    );
    s.note(format!(
        "random offset lookups: {:.0} ns each; pread of a batch's size ({batch_len} B) at a random page {:.0} ns",
        eng.as_nanos() as f64 / LOOKUPS as f64,
        base.as_nanos() as f64 / LOOKUPS as f64
    ));
    s.line(
        "random_lookup_vs_aligned_pread",
        base.as_secs_f64() / eng.as_secs_f64(),
        0.8,
    );
}

fn recovery(s: &mut Summary) {
    let dir = scratch_dir();
    build_crashed_log(dir.path(), 512 << 20, 1000);
    let seg = active_segment(dir.path());
    let size = std::fs::metadata(&seg).expect("segment").len();
    let mut buf = aligned_buf(1 << 20);
    pread_file(&seg, &mut buf);
    let (read, open) = interleaved(
        ROUNDS,
        || {
            let t = Instant::now();
            pread_file(&seg, &mut buf);
            t.elapsed()
        },
        || timed_open(dir.path()).0,
    );
    s.note(format!(
        "crash recovery of a {} MiB active segment (1k producers): {:?} = {:.1} GB/s; aligned pread {:.1} GB/s",
        size >> 20,
        open,
        gbps(size, open),
        gbps(size, read)
    ));
    s.line(
        "crash_recovery_vs_aligned_pread",
        read.as_secs_f64() / open.as_secs_f64(),
        0.8,
    );
    drop(dir);

    let dir = scratch_dir();
    build_crashed_log(dir.path(), 0, 1_000_000);
    let mut opens: Vec<Duration> = Vec::new();
    let mut producers = 0;
    for _ in 0..3 {
        let (d, report) = timed_open(dir.path());
        producers = report.producers;
        opens.push(d);
    }
    let open = median(opens);
    s.note(format!(
        "open after a crash with {producers} producers in the checkpoint: {open:?}"
    ));
    s.line(
        "checkpoint_load_1m_producers_0.5s_over_measured",
        0.5 / open.as_secs_f64(),
        1.0,
    );
}

/// The same workloads through oncelog and each peer engine that can run
/// them (benches/support/peers.rs), interleaved over rounds; each ratio is
/// oncelog's median rate over the best peer's median rate.
fn peer_comparison(s: &mut Summary) {
    use support::peers::*;
    let engines = ENGINES;
    let small: Vec<Vec<u8>> = (0..16).map(|i| payload(100, i)).collect();
    let small: Vec<&[u8]> = small.iter().map(Vec::as_slice).collect();
    let big: Vec<Vec<u8>> = (0..16).map(|i| payload(1024, 100 + i)).collect();
    let big: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    // rates[workload][engine]: records per second, one per round.
    let workloads = [
        "append_nosync_100bx16",
        "append_sync_1kx16",
        "seq_read",
        "point_read",
    ];
    let mut rates = vec![vec![Vec::<f64>::new(); engines.len()]; workloads.len()];
    for round in 0..3 {
        for k in 0..engines.len() {
            let e = (k + round) % engines.len();
            let (name, open) = engines[e];
            let mut sample = [None; 4];
            match peer_round(open, round, &small, &big, &mut sample) {
                Ok(()) => {
                    for (w, r) in sample.iter().enumerate() {
                        rates[w][e].extend(*r);
                    }
                }
                // An engine that cannot run here (walrus needs io_uring)
                // is left out of the comparison, not fatal.
                Err(err) => s.note(format!("peers: {name} skipped in round {round}: {err}")),
            }
        }
    }
    remove_walrus_dir();
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    for (w, name) in workloads.iter().enumerate() {
        let ours = med(&rates[w][0]).unwrap_or(0.0);
        let best = (1..engines.len())
            .filter_map(|e| med(&rates[w][e]).map(|r| (r, engines[e].0)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((best, who)) = best else { continue };
        let others: Vec<String> = (1..engines.len())
            .filter_map(|e| med(&rates[w][e]).map(|r| format!("{} {:.0}k", engines[e].0, r / 1e3)))
            .collect();
        s.note(format!(
            "peers, {name}: oncelog {:.0}k records/s; {}",
            ours / 1e3,
            others.join(", ")
        ));
        s.line(
            &format!("peers_{name}_vs_best_peer_{who}"),
            ours / best,
            1.5,
        );
    }
}

fn main() {
    let start = Instant::now();
    let mut s = Summary {
        lines: Vec::new(),
        notes: Vec::new(),
    };
    eprintln!("oncelog perf summary (name measured_ratio target_ratio; higher is better)");
    // Optional arguments pick sections (for profiling one of them).
    let only: Vec<String> = std::env::args().skip(1).collect();
    type Section = (&'static str, fn(&mut Summary));
    let sections: [Section; 6] = [
        ("append", appends),
        ("group_commit", group_commits),
        ("validation", validation),
        ("read", reads),
        ("recovery", recovery),
        ("peers", peer_comparison),
    ];
    for (name, section) in sections {
        if only.is_empty() || only.iter().any(|o| o == name) {
            section(&mut s);
        }
    }
    let met = s.lines.iter().filter(|(_, m, t)| m >= t).count();
    eprintln!(
        "{met} of {} targets met; {:.1} s",
        s.lines.len(),
        start.elapsed().as_secs_f64()
    );
}
