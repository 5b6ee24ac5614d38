//! How should the active segment write its tail?
//!
//! Self-contained comparison (no use of the `oncelog` crate) of five ways to
//! append records to the end of a segment file, plus one reference row:
//!
//! * `pwrite_append` – `write_all_at` at the end; the file grows with the data.
//! * `pwrite_fallocate` – the same, but the file is first extended in 16 MiB
//!   steps with `fallocate(fd, 0, ..)`; the size jumps ahead of the data and the
//!   space ahead is *unwritten* extents.
//! * `pwrite_fallocate_keep_size` – `fallocate(FALLOC_FL_KEEP_SIZE)` in 16 MiB
//!   steps; blocks are reserved but the size still grows with the data.
//! * `pwrite_zerofill` – 16 MiB steps of real zeros written (and, in the durable
//!   groups, fdatasync'ed) inline, then overwritten with the data.
//! * `mmap_write` – file extended with `fallocate` in 16 MiB steps, one
//!   `memmap2::MmapMut` over the planned size, records copied into the map;
//!   durable variant uses `flush_range` (msync of the written range).
//! * `ref_overwrite` – reference floor: `write_all_at` into a region that was
//!   already written and fsynced before timing started.
//!
//! Why: on ext4 (and most filesystems) fdatasync after an append or after a
//! write into fallocated-but-unwritten space must also persist metadata (size
//! or extent conversion), which costs ~1.5-2x as much as an
//! overwrite of already-written blocks; fallocate alone does not avoid that,
//! zero-filling does but writes everything twice. Buffered streaming, by
//! contrast, is bounded by page-cache allocation and copying, where mmap pays
//! page faults. The groups measure both regimes:
//!
//! * `tail_write/buffered_64k`, `tail_write/buffered_1m` – 64 MiB per iteration
//!   into a fresh segment, no sync (throughput).
//! * `tail_write/durable_4k` – 4 KiB append + fdatasync (msync for mmap) per
//!   iteration on a long-lived segment (appends/s; the 16 MiB preallocation
//!   steps are amortised as they would be in the engine).
//! * `tail_write/durable_1m` – 1 MiB append + fdatasync per iteration.
//!
//! Scratch files go to `$ONCELOG_BENCH_DIR` if set, else `/var/tmp` (a real
//! disk on most systems; `/tmp` may be tmpfs, where fdatasync is free), and
//! are deleted afterwards. Sample sizes are small so the whole bench runs in
//! under two minutes; the numbers are noisy on shared machines, compare
//! candidates within one run only. When other processes keep every core busy,
//! the wake-up after each fdatasync can wait for a scheduler tick (4 ms at
//! HZ=250) and all durable candidates collapse to ~250/s; run the durable
//! groups on an idle machine or under `chrt -f 10` to see the I/O cost.
//!
//! Full disk: pwrite into unallocated space and fallocate return ENOSPC, while
//! writes into fallocated or zero-filled space still succeed. A store through a
//! mapping into a hole (or past EOF) raises SIGBUS instead of returning an
//! error, which is one more reason to prefer pwrite for the tail.

// fallocate(2) and mapping a file are unsafe FFI; both are confined to the two
// small helpers below.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use memmap2::{MmapMut, MmapOptions};

/// Preallocation step (fallocate / zero-fill granularity).
const STEP: u64 = 16 << 20;
/// Bytes written per iteration in the buffered groups.
const BUFFERED_TOTAL: u64 = 64 << 20;
/// A long-lived durable segment is replaced by a fresh one at this size.
const DURABLE_CAP: u64 = 256 << 20;
/// Pre-written region reused (wrapping) by the durable overwrite reference.
const REF_REGION: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PwriteAppend,
    PwriteFallocate,
    PwriteFallocateKeepSize,
    PwriteZerofill,
    MmapWrite,
    RefOverwrite,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::PwriteAppend,
        Kind::PwriteFallocate,
        Kind::PwriteFallocateKeepSize,
        Kind::PwriteZerofill,
        Kind::MmapWrite,
        Kind::RefOverwrite,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::PwriteAppend => "pwrite_append",
            Kind::PwriteFallocate => "pwrite_fallocate",
            Kind::PwriteFallocateKeepSize => "pwrite_fallocate_keep_size",
            Kind::PwriteZerofill => "pwrite_zerofill",
            Kind::MmapWrite => "mmap_write",
            Kind::RefOverwrite => "ref_overwrite",
        }
    }
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a plain syscall on a file descriptor owned by `file`.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn map_file(file: &File, len: u64) -> io::Result<MmapMut> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // SAFETY: the file is private to this benchmark and nobody truncates it while
    // mapped; the code only touches the map below the fallocated end (never past
    // EOF, which would raise SIGBUS).
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

/// Page-aligned, pre-faulted buffer (a `Vec` of this size would sit at page+16,
/// which makes kernel copies several times slower on the reference machine).
fn aligned_buf(len: usize, byte: u8) -> MmapMut {
    let mut buf = MmapMut::map_anon(len).expect("anonymous map");
    buf.fill(byte);
    buf
}

/// The tail of one segment file written with one strategy.
#[derive(Debug)]
struct Tail {
    kind: Kind,
    path: PathBuf,
    file: File,
    /// Logical end of the data (the file size may be larger after fallocate).
    len: u64,
    /// End of the preallocated (fallocated / zero-filled / pre-written) space.
    alloc_end: u64,
    /// Planned segment size: mapped size for mmap, wrap point for the reference.
    cap: u64,
    map: Option<MmapMut>,
    durable: bool,
}

impl Tail {
    fn create(dir: &Path, kind: Kind, cap: u64, durable: bool, zeros: &[u8]) -> io::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{seq}.seg", kind.name()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut alloc_end = 0;
        if kind == Kind::RefOverwrite {
            // Untimed set-up: the whole region is written and made durable first.
            let fill = aligned_buf(zeros.len(), 0x5A);
            let mut off = 0;
            while off < cap {
                file.write_all_at(&fill, off)?;
                off += fill.len() as u64;
            }
            file.sync_all()?;
            alloc_end = cap;
        }
        let map = match kind {
            Kind::MmapWrite => Some(map_file(&file, cap.div_ceil(STEP) * STEP)?),
            _ => None,
        };
        Ok(Tail {
            kind,
            path,
            file,
            len: 0,
            alloc_end,
            cap,
            map,
            durable,
        })
    }

    /// Make sure `[.., upto)` is preallocated, in `STEP` increments.
    fn prealloc(&mut self, upto: u64, zeros: &[u8]) -> io::Result<()> {
        while self.alloc_end < upto {
            let off = self.alloc_end;
            match self.kind {
                Kind::PwriteAppend | Kind::RefOverwrite => return Ok(()),
                Kind::PwriteFallocate | Kind::MmapWrite => fallocate(&self.file, 0, off, STEP)?,
                Kind::PwriteFallocateKeepSize => {
                    fallocate(&self.file, libc::FALLOC_FL_KEEP_SIZE, off, STEP)?;
                }
                Kind::PwriteZerofill => {
                    let mut done = 0;
                    while done < STEP {
                        self.file.write_all_at(zeros, off + done)?;
                        done += zeros.len() as u64;
                    }
                    if self.durable {
                        // Persist the zeros (block allocation + size) so later
                        // fdatasyncs only have to write data.
                        self.file.sync_data()?;
                    }
                }
            }
            self.alloc_end += STEP;
        }
        Ok(())
    }

    fn append(&mut self, rec: &[u8], zeros: &[u8]) -> io::Result<()> {
        let n = rec.len() as u64;
        if self.len + n > self.cap {
            if self.kind == Kind::RefOverwrite {
                self.len = 0;
            } else {
                // Roll over to a fresh segment; the old one is unmapped and deleted.
                let dir = self.path.parent().expect("segment has a parent dir");
                *self = Tail::create(dir, self.kind, self.cap, self.durable, zeros)?;
            }
        }
        self.prealloc(self.len + n, zeros)?;
        let start = usize::try_from(self.len).map_err(io::Error::other)?;
        if let Some(map) = self.map.as_mut() {
            map[start..start + rec.len()].copy_from_slice(rec);
            if self.durable {
                map.flush_range(start, rec.len())?;
            }
        } else {
            self.file.write_all_at(rec, self.len)?;
            if self.durable {
                self.file.sync_data()?;
            }
        }
        self.len += n;
        Ok(())
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.map = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("ONCELOG_BENCH_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .or_else(|| Some(PathBuf::from("/var/tmp")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("oncelog-tail-write-")
        .tempdir_in(base)
        .expect("scratch dir")
}

fn buffered(c: &mut Criterion, dir: &Path, label: &str, record: usize) {
    let src = aligned_buf(record, 0xA5);
    let zeros = aligned_buf(1 << 20, 0);
    let mut group = c.benchmark_group(format!("tail_write/{label}"));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(BUFFERED_TOTAL));
    let appends = BUFFERED_TOTAL / record as u64;
    for kind in Kind::ALL {
        group.bench_function(kind.name(), |b| {
            // Only the reference reuses its (pre-written) file; every other
            // iteration starts a fresh segment, created and deleted untimed.
            let mut reused = (kind == Kind::RefOverwrite)
                .then(|| Tail::create(dir, kind, BUFFERED_TOTAL, false, &zeros).expect("create"));
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let mut fresh;
                    let tail = match reused.as_mut() {
                        Some(t) => t,
                        None => {
                            fresh = Tail::create(dir, kind, BUFFERED_TOTAL, false, &zeros)
                                .expect("create");
                            &mut fresh
                        }
                    };
                    let t = Instant::now();
                    for _ in 0..appends {
                        tail.append(&src, &zeros).expect("append");
                    }
                    elapsed += t.elapsed();
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn durable(c: &mut Criterion, dir: &Path, label: &str, record: usize) {
    let src = aligned_buf(record, 0xA5);
    let zeros = aligned_buf(1 << 20, 0);
    let mut group = c.benchmark_group(format!("tail_write/{label}"));
    group.throughput(if record >= 1 << 20 {
        Throughput::Bytes(record as u64)
    } else {
        Throughput::Elements(1)
    });
    for kind in Kind::ALL {
        group.bench_function(kind.name(), |b| {
            let cap = if kind == Kind::RefOverwrite {
                REF_REGION
            } else {
                DURABLE_CAP
            };
            // One long-lived segment per candidate, as in the engine.
            let mut tail = Tail::create(dir, kind, cap, true, &zeros).expect("create");
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    tail.append(&src, &zeros).expect("append");
                }
                t.elapsed()
            });
        });
    }
    group.finish();
}

fn tail_write(c: &mut Criterion) {
    let dir = scratch_dir();
    buffered(c, dir.path(), "buffered_64k", 64 << 10);
    buffered(c, dir.path(), "buffered_1m", 1 << 20);
    durable(c, dir.path(), "durable_4k", 4 << 10);
    durable(c, dir.path(), "durable_1m", 1 << 20);
    dir.close().expect("remove scratch dir");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .nresamples(10_000);
    targets = tail_write
}
criterion_main!(benches);
