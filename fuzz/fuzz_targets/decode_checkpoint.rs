//! Feeds arbitrary bytes to the producer-checkpoint decoders and checks:
//! - nothing panics, on the bare value or wrapped in a checkpoint batch;
//! - what decodes re-encodes to a value that decodes to the same producers
//!   (decode, encode, decode is stable);
//! - the batch-level decoder accepts only what the value decoder accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oncelog::format::BatchView;
use oncelog::format::checkpoint::{
    CheckpointEncoder, WindowBatch, build_checkpoint_batch, decode_checkpoint,
    decode_checkpoint_value,
};

type Decoded = (i64, Vec<(i64, i16, i64, Vec<WindowBatch>)>);

fn decode(value: &[u8]) -> Option<Decoded> {
    let mut out = Vec::new();
    let at = decode_checkpoint_value(value, |p| {
        out.push((p.producer_id, p.epoch, p.last_append_ms, p.window.to_vec()));
    })
    .ok()?;
    Some((at, out))
}

fuzz_target!(|data: &[u8]| {
    let first = decode(data);
    if let Some((at, producers)) = &first {
        let mut enc = CheckpointEncoder::new(*at, producers.len());
        for (id, epoch, last, window) in producers {
            enc.push(*id, *epoch, *last, window.iter().copied());
        }
        let again = decode(&enc.finish()).expect("a re-encoded checkpoint decodes");
        assert_eq!(&again, first.as_ref().unwrap());
    }
    if let Ok(mut batch) = build_checkpoint_batch(data) {
        // Place it far enough that every window offset lies before it.
        oncelog::format::set_base_offset(&mut batch, i64::MAX - 1).unwrap();
        let view = BatchView::parse(&batch).expect("built batches parse");
        let whole = decode_checkpoint(&view, |_| {});
        if whole.is_ok() {
            assert!(first.is_some());
        }
    }
});
