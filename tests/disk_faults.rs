//! A real disk that fills up.
//!
//! The test mounts a small tmpfs of its own (it needs the right to
//! mount, which root has; where the machine refuses, the test says so and
//! the simulated disk's full-disk faults in `tests/producer_model.rs` and
//! `tests/durability.rs` stand in).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::sized_batch;
use oncelog::{Config, Durability, Error, Message, Store};

/// A tmpfs of `size` bytes mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { mnt, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

fn value(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

/// Fill a small file system with `Sync` appends (a named producer on one
/// partition, plain batches on another) until the disk is full; check the
/// refusal, that everything acknowledged is readable, that appends resume
/// without a reopen once space is freed, and that a reopen finds every
/// acknowledged batch exactly once.
fn fill_and_free(fs: &Tmpfs, segment_bytes: u64, preallocate: u64, record: usize) {
    let dir = fs.mnt.join(format!("store-{segment_bytes}-{preallocate}"));
    // Space to give back later.
    let filler = fs.mnt.join(format!("filler-{segment_bytes}-{preallocate}"));
    std::fs::write(&filler, vec![7u8; 1 << 20]).unwrap();
    let config = Config::default()
        .with_segment_bytes(segment_bytes)
        .with_preallocate_bytes(preallocate)
        .with_durability(Durability::Sync);
    let what = format!("segment_bytes {segment_bytes}, preallocate {preallocate}, record {record}");
    let store = Store::open(&dir, config.clone()).unwrap();
    let producer = store.producer("filler").unwrap();
    let plain = store.log("plain", 0).unwrap();
    let mut acked: Vec<(usize, i64)> = Vec::new(); // (value index, offset)
    let mut plain_acked = 0usize;
    let mut refused = None;
    for i in 0..100_000 {
        let v = value(i, record);
        let r = if i % 4 == 3 {
            plain
                .append(&sized_batch(record, b'p', 0))
                .inspect(|_| plain_acked += 1)
        } else {
            producer
                .send("t", 0, &[Message::new(&v)])
                .inspect(|o| acked.push((i, o.base_offset().expect("appended"))))
        };
        if let Err(e) = r {
            refused = Some((i, e));
            break;
        }
    }
    let (failed_at, err) = refused.unwrap_or_else(|| panic!("{what}: the disk never filled"));
    assert!(err.is_disk_full(), "{what}: {err}");
    eprintln!("{what}: refused after {} acknowledged: {err}", acked.len());
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.display().to_string()) && msg.contains("No space left"),
        "{what}: the error names the file and the cause: {msg}"
    );
    if let Error::NotAcknowledged { sequence, .. } = &err {
        assert_eq!(*sequence as usize, acked.len(), "{what}: {err}");
    }
    assert!(
        acked.len() > 10,
        "{what}: only {} acknowledged",
        acked.len()
    );

    // Everything acknowledged is readable, while the disk is full.
    let log = store.log("t", 0).unwrap();
    let read = common::read_all(&log);
    assert_eq!(read.len(), acked.len(), "{what}");
    for ((i, offset), (at, v)) in acked.iter().zip(&read) {
        assert_eq!((*offset, &value(*i, record)), (*at, v), "{what}");
    }

    // Space freed: the refused send goes through with the same sequence,
    // and so do the next ones, without a reopen.
    std::fs::remove_file(&filler).unwrap();
    for i in failed_at..failed_at + 20 {
        let v = value(i, record);
        let o = producer
            .send("t", 0, &[Message::new(&v)])
            .unwrap_or_else(|e| panic!("{what}: after freeing space: {e}"));
        acked.push((i, o.base_offset().expect("appended, not a duplicate")));
        plain
            .append(&sized_batch(record, b'p', 0))
            .unwrap_or_else(|e| panic!("{what}: plain append after freeing space: {e}"));
        plain_acked += 1;
    }
    drop((producer, plain, log));
    store.close().unwrap();

    // A reopen finds every acknowledged batch once, in order, and the store
    // verifies clean.
    let store = Store::open(&dir, config).unwrap();
    let log = store.log("t", 0).unwrap();
    let got = common::read_all(&log);
    let want: Vec<(i64, Vec<u8>)> = acked.iter().map(|(i, o)| (*o, value(*i, record))).collect();
    assert_eq!(got, want, "{what}");
    assert_eq!(
        common::read_all(&store.log("plain", 0).unwrap()).len(),
        plain_acked,
        "{what}"
    );
    drop(log);
    store.close().unwrap();
    let report = oncelog::verify(&dir, |_| {}).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_disk_refuses_appends_and_they_resume_once_space_is_freed() {
    let fs = match Tmpfs::mount(6 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "NOT RUN: this machine refuses to mount a tmpfs ({why}); the simulated \
                 disk's full-disk faults (tests/producer_model.rs) cover the engine's side"
            );
            return;
        }
    };
    // The disk fills in the middle of a segment (data write), around rolls
    // (small segments: index files, new segment, its checkpoint), with and
    // without preallocated space.
    fill_and_free(&fs, 64 << 10, 0, 3000);
    fill_and_free(&fs, 64 << 10, 16 << 20, 700);
    fill_and_free(&fs, 1 << 20, 256 << 10, 20_000);
    fill_and_free(&fs, 8 << 10, 0, 100);
}
