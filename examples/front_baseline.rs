//! The embedded side of the front-end comparison in docs/performance.md:
//! the workload `benches/kafka_front.py` sends through `oncelog serve`
//! (COUNT values of 100 bytes, one idempotent producer, batches of
//! RECORDS_PER_BATCH, durable before acknowledged), through the embedded
//! API instead, then read back record by record.
//!
//! ```sh
//! cargo run --release --example front_baseline -- 8333 200000
//! ```

#[path = "../benches/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::time::Instant;

use oncelog::{Durability, Store};
use support::{Shape, built_batches, config, scratch_dir, wait};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let per_batch = args.first().copied().unwrap_or(8333).max(1);
    let count = args.get(1).copied().unwrap_or(200_000);
    let batches = built_batches(
        Shape::new(100, per_batch),
        count.div_ceil(per_batch),
        Some((1, 0)),
    );
    let dir = scratch_dir();
    let store = Store::open(dir.path(), config(Durability::Sync)).expect("open");
    let log = store.log("bench", 0).expect("log");
    let t = Instant::now();
    let mut in_flight = VecDeque::new();
    for b in &batches {
        if in_flight.len() == 5 {
            let f: oncelog::AppendFuture = in_flight.pop_front().expect("in flight");
            wait(f).expect("append");
        }
        in_flight.push_back(log.append_async(b.as_bytes(), Durability::Sync));
    }
    for f in in_flight {
        wait(f).expect("append");
    }
    let produce = t.elapsed();
    let records = batches.len() * per_batch;
    let t = Instant::now();
    let (mut offset, mut read) = (0, 0usize);
    while offset < log.next_offset() {
        let chunk = log.read(offset, 10 << 20).expect("read");
        for b in &chunk {
            let b = b.expect("batch");
            for r in b.view().records().expect("records") {
                std::hint::black_box(r.expect("record").value);
                read += 1;
            }
        }
        offset = chunk.next_offset().expect("progress");
    }
    let fetch = t.elapsed();
    println!(
        "{{\"records\": {records}, \"records_per_batch\": {per_batch}, \"produce_records_per_s\": {:.0}, \"fetch_records_per_s\": {:.0}, \"read\": {read}}}",
        records as f64 / produce.as_secs_f64(),
        read as f64 / fetch.as_secs_f64()
    );
    drop(log);
    store.close().expect("close");
}
