//! A writer and a tailing reader sharing one log.
//!
//! `cargo run --release --example tail` appends batches from four threads
//! (durable appends share fsyncs) while a reader follows the log, printing
//! how far it got. The reader never blocks the writers and never sees a
//! partial batch.

use std::time::{Duration, Instant};

use oncelog::format::BatchBuilder;
use oncelog::{Config, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), Config::default())?;
    let log = store.log("events", 0)?;
    let started = Instant::now();
    let total_batches = 4 * 250;

    std::thread::scope(|s| -> Result<(), oncelog::Error> {
        for w in 0..4 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..250 {
                    let mut b = BatchBuilder::new();
                    for r in 0..10 {
                        let value = format!("writer {w} batch {i} record {r}");
                        b.push(0, None, Some(value.as_bytes()), &[]);
                    }
                    log.append(&b.build()).expect("append");
                }
            });
        }
        // Follow the log until every batch was seen.
        let mut offset = 0;
        let mut seen = 0;
        while seen < total_batches {
            let batches = log.read(offset, 64 * 1024)?;
            if batches.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            for batch in &batches {
                let batch = batch?;
                offset = batch.last_offset() + 1;
                seen += 1;
            }
        }
        Ok(())
    })?;
    let stats = log.stats();
    println!(
        "{} batches ({} records) in {:.2?}; {} fsyncs for {} durable appends",
        stats.appends,
        log.next_offset(),
        started.elapsed(),
        stats.fsyncs,
        stats.appends
    );
    store.close()?;
    Ok(())
}
