//! Measure the producer table: memory per producer, checkpoint size, and
//! the time to write and to load a checkpoint, for N producers in one
//! partition (each with a full window of 5 batches).
//!
//! `cargo run --release --example producer_state -- [PRODUCERS]` (default
//! 100000). Prints one JSON line.

use std::time::Instant;

use oncelog::format::BatchBuilder;
use oncelog::{Config, Durability, Store};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let producers: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let window = 5;
    let dir = tempfile::tempdir()?;
    let config = Config::default()
        .with_durability(Durability::Os)
        .with_segment_bytes(256 << 20)
        .with_max_producers(producers as usize + 1)
        .with_checkpoint_interval_bytes(u64::MAX / 4);
    let store = Store::open(dir.path(), config.clone())?;
    let log = store.log("p", 0)?;
    // Batches are built once per sequence and patched per producer would be
    // faster; building them here keeps the example plain.
    let rss_before = rss_bytes();
    let started = Instant::now();
    for seq in 0..window {
        for id in 0..producers {
            let mut b = BatchBuilder::new().with_producer(id, 0, seq);
            b.push(0, None, Some(b"v"), &[]);
            log.append(&b.build())?;
        }
    }
    let fill_s = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let stats = log.producer_stats();
    log.flush()?;
    // The checkpoint alone: encode and write (under the append lock), then
    // its fsync.
    let started = Instant::now();
    log.checkpoint()?;
    let checkpoint_s = started.elapsed().as_secs_f64();
    log.flush()?;
    let checkpoint_sync_s = started.elapsed().as_secs_f64() - checkpoint_s;
    drop(log);
    store.close()?;

    let started = Instant::now();
    let store = Store::open(dir.path(), config)?;
    let open_s = started.elapsed().as_secs_f64();
    let log = store.log("p", 0)?;
    let report = log.recovery_report().clone();
    let checkpoint = log
        .read(report.checkpoint_offset.unwrap_or(0), 1)?
        .with_checkpoints()
        .iter()
        .next()
        .transpose()?
        .map_or(0, |b| b.bytes().len());
    println!(
        "{{\"producers\": {producers}, \"window\": {window}, \"appends\": {}, \"fill_s\": {fill_s:.2}, \
         \"rss_bytes_per_producer\": {:.0}, \"estimated_bytes_per_producer\": {}, \
         \"checkpoint_bytes\": {checkpoint}, \"checkpoint_bytes_per_producer\": {:.1}, \
         \"checkpoint_write_s\": {checkpoint_s:.3}, \"checkpoint_fsync_s\": {checkpoint_sync_s:.3}, \
         \"open_s\": {open_s:.3}, \"recovery_s\": {:.3}, \"log_bytes\": {}, \"segments\": {}, \
         \"batches_replayed\": {}, \"producers_loaded\": {}}}",
        producers * i64::from(window),
        (rss_after.saturating_sub(rss_before)) as f64 / producers as f64,
        stats.table_bytes / stats.producers.max(1),
        checkpoint as f64 / producers as f64,
        report.duration.as_secs_f64(),
        log.stats().bytes,
        report.segments,
        report.batches_replayed,
        report.producers,
    );
    store.close()?;
    Ok(())
}
