//! [`SimStorage`]: an in-memory disk for crash and fault tests.
//!
//! It models what a real disk keeps apart: the bytes a file was given
//! (`live`) and the bytes that survived the last `sync_data` (`durable`), and
//! likewise the directory entries before and after `sync_dir`. A
//! [`SimStorage::crash`] throws the unsynced state away (all of it, or a
//! random subset of 4 KiB pages) and invalidates every handle opened before
//! it, as a power loss does; the engine then reopens from what remains.
//! Faults: the N-th write or sync can fail with EIO (a write may first land a
//! prefix: a short write), and a byte budget makes writes fail with ENOSPC
//! (after writing what fits) and, once spent, file creation too.
//!
//! Invariants:
//! - A file's durable bytes change only in `sync_data`/`sync_all`, and a
//!   name's durable entry only in `sync_dir` of its parent.
//! - After a crash, every handle from before it fails every call with EIO.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{OpenMode, Storage, StorageFile};

const PAGE: usize = 4096;

/// What survives a [`SimStorage::crash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashMode {
    /// A process crash: the OS keeps every write (page cache survives).
    KeepAll,
    /// A power loss that keeps only synced data and synced names.
    LoseUnsynced,
    /// A power loss on a disk that wrote back some unsynced 4 KiB pages: each
    /// unsynced page of every file survives or not, drawn from `seed`, and a
    /// file's length is its synced or its written length, also drawn.
    RandomPages {
        /// Seed of the draw.
        seed: u64,
    },
    /// A power loss in the middle of writing back: each file's unsynced
    /// bytes survive in order up to a cut drawn from `seed`, and the rest of
    /// the 4 KiB page holding the cut is torn: whole 512-byte sectors of it
    /// kept their old bytes or hold garbage. The file's length is the synced
    /// length, or the end of the torn page (at most the written length).
    TornTail {
        /// Seed of the draw.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct FileBytes {
    live: Vec<u8>,
    durable: Vec<u8>,
}

type FileData = Arc<Mutex<FileBytes>>;

#[derive(Debug, Clone)]
enum Entry {
    File(FileData),
    Dir,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    live: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    locks: BTreeSet<PathBuf>,
    writes: u64,
    syncs: u64,
    fail_write_at: Option<(u64, usize)>,
    fail_sync_at: Option<u64>,
    space_left: Option<u64>,
    sync_delay: std::time::Duration,
}

/// An in-memory disk; see the module docs.
///
/// Clones share the same disk, but a clone belongs to the "boot" it was made
/// in: after a [`SimStorage::crash`], every operation through a clone made
/// before it fails with EIO, as the crashed process's would. The value made by
/// [`SimStorage::new`] is the test's own view and works across crashes.
#[derive(Debug, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
    /// The generation this clone belongs to (`None`: the test's own view).
    pinned: Option<u64>,
}

/// Holds file syncs in flight while closed (see [`SimStorage::pause_syncs`]).
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut closed = lock(&self.closed);
        while *closed {
            closed = self.cv.wait(closed).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Clone for SimStorage {
    fn clone(&self) -> Self {
        let generation = lock(&self.state).generation;
        SimStorage {
            state: Arc::clone(&self.state),
            gate: Arc::clone(&self.gate),
            pinned: Some(generation),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn eio(msg: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {msg}"))
}

/// A small deterministic PRNG (splitmix64), so crashes replay from a seed.
fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What [`CrashMode::TornTail`] leaves of one file.
fn torn_tail(f: &FileBytes, rng: &mut u64) -> Vec<u8> {
    // The first byte that differs: written back before it, for certain.
    let same = f
        .durable
        .iter()
        .zip(&f.live)
        .take_while(|(a, b)| a == b)
        .count();
    if same == f.live.len() && f.live.len() <= f.durable.len() {
        return f.durable.clone(); // nothing unsynced (or only a shrink)
    }
    let span = (f.live.len() - same) as u64;
    let cut = same + (next_rand(rng) % (span + 1)) as usize;
    let page_end = (cut.div_ceil(PAGE) * PAGE).min(f.live.len());
    let len = if next_rand(rng).is_multiple_of(4) {
        f.durable.len()
    } else {
        page_end.max(f.durable.len())
    };
    let mut out = f.durable.clone();
    out.resize(len, 0);
    let upto = cut.min(len);
    out[same.min(upto)..upto].copy_from_slice(&f.live[same.min(upto)..upto]);
    // The torn rest of the cut's page, sector by sector: old bytes (zeros
    // past the synced length) or garbage.
    let mut at = upto;
    while at < page_end.min(len) {
        let end = ((at / 512 + 1) * 512).min(page_end.min(len));
        if next_rand(rng).is_multiple_of(2) {
            for b in &mut out[at..end] {
                *b = next_rand(rng) as u8;
            }
        }
        at = end;
    }
    out
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lose power (or kill the process, with [`CrashMode::KeepAll`]): drop
    /// what `mode` says, release all locks, and make every open handle fail.
    pub fn crash(&self, mode: CrashMode) {
        let mut st = lock(&self.state);
        st.generation += 1;
        st.locks.clear();
        let mut rng = match mode {
            CrashMode::RandomPages { seed } | CrashMode::TornTail { seed } => seed,
            _ => 0,
        };
        if mode == CrashMode::KeepAll {
            // Fresh handles will see the live state; nothing is lost.
            return;
        }
        let durable = st.durable.clone();
        for entry in durable.values() {
            if let Entry::File(data) = entry {
                let mut f = lock(data);
                let kept = match mode {
                    CrashMode::RandomPages { .. } => {
                        let len = if next_rand(&mut rng).is_multiple_of(2) {
                            f.live.len()
                        } else {
                            f.durable.len()
                        };
                        let mut out = f.durable.clone();
                        out.resize(len, 0);
                        for page_start in (0..len).step_by(PAGE) {
                            let end = (page_start + PAGE).min(len);
                            if next_rand(&mut rng).is_multiple_of(2) && end <= f.live.len() {
                                out[page_start..end].copy_from_slice(&f.live[page_start..end]);
                            }
                        }
                        out
                    }
                    CrashMode::TornTail { .. } => torn_tail(&f, &mut rng),
                    _ => f.durable.clone(),
                };
                f.durable = kept.clone();
                f.live = kept;
            }
        }
        st.live = durable;
    }

    /// Make the `n`-th write from now (1-based) fail with EIO after writing
    /// its first `prefix` bytes (0 for none: a clean failure).
    pub fn fail_write_at(&self, n: u64, prefix: usize) {
        let mut st = lock(&self.state);
        let at = st.writes + n;
        st.fail_write_at = Some((at, prefix));
    }

    /// Make the `n`-th sync (file or directory) from now fail with EIO.
    pub fn fail_sync_at(&self, n: u64) {
        let mut st = lock(&self.state);
        let at = st.syncs + n;
        st.fail_sync_at = Some(at);
    }

    /// Allow only `bytes` more bytes of file growth; writes past that fail
    /// with ENOSPC. `None` removes the limit.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        lock(&self.state).space_left = bytes;
    }

    /// Make every file sync take at least `delay`, as a real disk's cache
    /// flush does (so that concurrent appenders overlap).
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        lock(&self.state).sync_delay = delay;
    }

    /// Hold every file sync that starts from now on, after it has noted
    /// what it will make durable, until [`SimStorage::resume_syncs`]: a
    /// flush that takes as long as the test wants.
    pub fn pause_syncs(&self) {
        *lock(&self.gate.closed) = true;
    }

    /// Let held and future syncs complete.
    pub fn resume_syncs(&self) {
        *lock(&self.gate.closed) = false;
        self.gate.cv.notify_all();
    }

    /// Writes and syncs performed so far.
    pub fn op_counts(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.writes, st.syncs)
    }

    /// The written (`live`) bytes of a file, for inspection.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        match lock(&self.state).live.get(path) {
            Some(Entry::File(d)) => Some(lock(d).live.clone()),
            _ => None,
        }
    }

    /// Replace a file's bytes, written and durable alike (to plant damage).
    pub fn set_file_bytes(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        match lock(&self.state).live.get(path) {
            Some(Entry::File(d)) => {
                let mut f = lock(d);
                f.live = bytes.to_vec();
                f.durable = bytes.to_vec();
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    /// The state, if this clone's boot is still the current one.
    fn live_state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if self.pinned.is_some_and(|g| g != st.generation) {
            return Err(eio("storage handle from before a crash"));
        }
        Ok(st)
    }

    fn check_parent(st: &State, path: &Path) -> io::Result<()> {
        match path.parent() {
            None => Ok(()),
            Some(p) if p.as_os_str().is_empty() => Ok(()),
            Some(p) => match st.live.get(p) {
                Some(Entry::Dir) => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no directory {}", p.display()),
                )),
            },
        }
    }
}

#[derive(Debug)]
struct SimFile {
    data: FileData,
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
    generation: u64,
}

impl SimFile {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.generation != self.generation {
            return Err(eio("handle opened before a crash"));
        }
        Ok(st)
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state()?;
        st.syncs += 1;
        if st.fail_sync_at == Some(st.syncs) {
            st.fail_sync_at = None;
            return Err(eio("fsync failed"));
        }
        let delay = st.sync_delay;
        drop(st);
        // What is written before the flush starts is what it makes durable.
        let snapshot = lock(&self.data).live.clone();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.gate.pass();
        // A crash during the flush wins: the flush never completed.
        let _st = self.state()?;
        lock(&self.data).durable = snapshot;
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        drop(self.state()?);
        Ok(lock(&self.data).live.len() as u64)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state()?;
        st.writes += 1;
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let end = offset
            .checked_add(buf.len())
            .ok_or_else(|| eio("offset overflow"))?;
        let mut f = lock(&self.data);
        let growth = end.saturating_sub(f.live.len()) as u64;
        let mut n = buf.len();
        let mut result = Ok(());
        if let Some((at, prefix)) = st.fail_write_at
            && at == st.writes
        {
            st.fail_write_at = None;
            n = prefix.min(buf.len());
            result = Err(eio("write failed"));
        }
        if let Some(left) = st.space_left {
            if growth > left {
                // As a real file system does: what fits is written (a short
                // write), then the retried rest fails with ENOSPC.
                let fits = (f.live.len() + left as usize).saturating_sub(offset);
                n = n.min(fits);
                st.space_left = Some(0);
                result = Err(io::Error::from_raw_os_error(libc::ENOSPC));
            } else {
                st.space_left = Some(left - growth);
            }
        }
        if n > 0 {
            let end = offset + n;
            if f.live.len() < end {
                f.live.resize(end, 0);
            }
            f.live[offset..end].copy_from_slice(&buf[..n]);
        }
        result
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        drop(self.state()?);
        let f = lock(&self.data);
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let src = offset
            .checked_add(buf.len())
            .and_then(|end| f.live.get(offset..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn read_bytes(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        drop(self.state()?);
        let len = usize::try_from(len).map_err(io::Error::other)?;
        lock(&self.data).live.resize(len, 0);
        Ok(())
    }

    fn preallocate(&self, _offset: u64, _len: u64) -> io::Result<()> {
        drop(self.state()?);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if st.generation == self.generation {
            st.locks.remove(&self.dir);
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live_state()?;
        for anc in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if anc.as_os_str().is_empty() {
                continue;
            }
            match st.live.get(anc) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", anc.display()),
                    ));
                }
                None => {
                    st.live.insert(anc.to_path_buf(), Entry::Dir);
                    // Roots of the simulated tree are durable at once, like a
                    // mount point; deeper directories need a sync of their parent.
                    if anc
                        .parent()
                        .is_none_or(|p| p.as_os_str().is_empty() || p == Path::new("/"))
                    {
                        st.durable.insert(anc.to_path_buf(), Entry::Dir);
                    }
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.live_state()?;
        if !matches!(st.live.get(path), Some(Entry::Dir)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(st
            .live
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.live_state()
            .is_ok_and(|st| matches!(st.live.get(path), Some(Entry::Dir)))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.live_state()?;
        Self::check_parent(&st, path)?;
        let data = match (st.live.get(path), mode) {
            (Some(Entry::Dir), _) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            (Some(Entry::File(d)), OpenMode::Truncate) => {
                lock(d).live.clear();
                Arc::clone(d)
            }
            (Some(Entry::File(d)), _) => Arc::clone(d),
            (None, OpenMode::Existing) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
            }
            // A new name needs room too (a directory entry, an inode).
            (None, _) if st.space_left == Some(0) => {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            (None, _) => {
                let d: FileData = Arc::default();
                st.live
                    .insert(path.to_path_buf(), Entry::File(Arc::clone(&d)));
                d
            }
        };
        Ok(Arc::new(SimFile {
            data,
            state: Arc::clone(&self.state),
            gate: Arc::clone(&self.gate),
            generation: st.generation,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live_state()?;
        match st.live.get(path) {
            Some(Entry::File(_)) => {
                st.live.remove(path);
                Ok(())
            }
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.live_state()?;
        Self::check_parent(&st, to)?;
        match st.live.remove(from) {
            Some(e @ Entry::File(_)) => {
                st.live.insert(to.to_path_buf(), e);
                Ok(())
            }
            Some(e) => {
                st.live.insert(from.to_path_buf(), e);
                Err(io::Error::other("renaming directories is not simulated"))
            }
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live_state()?;
        st.syncs += 1;
        if st.fail_sync_at == Some(st.syncs) {
            st.fail_sync_at = None;
            return Err(eio("directory fsync failed"));
        }
        if !matches!(st.live.get(path), Some(Entry::Dir)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let children: Vec<(PathBuf, Entry)> = st
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        st.durable.retain(|p, _| p.parent() != Some(path));
        for (p, e) in children {
            st.durable.insert(p, e);
        }
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut st = self.live_state()?;
        if !st.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "directory lock is held",
            ));
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
            generation: st.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_and_names_are_lost_on_power_loss() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let a = sim.open(&dir.join("a"), OpenMode::Create).unwrap();
        a.write_at(b"synced", 0).unwrap();
        a.sync_data().unwrap();
        sim.sync_dir(dir).unwrap();
        a.write_at(b" and not", 6).unwrap();
        let b = sim.open(&dir.join("b"), OpenMode::Create).unwrap();
        b.write_at(b"x", 0).unwrap();
        b.sync_data().unwrap(); // data synced, name not
        sim.crash(CrashMode::LoseUnsynced);
        assert!(a.len().is_err(), "old handles die with the crash");
        assert_eq!(sim.list_dir(dir).unwrap(), vec!["a".to_string()]);
        let a = sim.open(&dir.join("a"), OpenMode::Existing).unwrap();
        assert_eq!(&a.read_bytes(0, 6).unwrap()[..], b"synced");
        assert_eq!(a.len().unwrap(), 6);
    }

    #[test]
    fn process_crash_keeps_everything() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/d")).unwrap();
        let a = sim.open(Path::new("/d/a"), OpenMode::Create).unwrap();
        a.write_at(b"abc", 0).unwrap();
        sim.crash(CrashMode::KeepAll);
        let a = sim.open(Path::new("/d/a"), OpenMode::Existing).unwrap();
        assert_eq!(&a.read_bytes(0, 3).unwrap()[..], b"abc");
    }

    #[test]
    fn faults_fire_once_at_the_chosen_operation() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/d")).unwrap();
        let a = sim.open(Path::new("/d/a"), OpenMode::Create).unwrap();
        sim.fail_write_at(2, 2);
        a.write_at(b"1111", 0).unwrap();
        assert!(a.write_at(b"2222", 4).is_err());
        assert_eq!(sim.file_bytes(Path::new("/d/a")).unwrap(), b"111122");
        a.write_at(b"3", 6).unwrap();
        sim.fail_sync_at(1);
        assert!(a.sync_data().is_err());
        a.sync_data().unwrap();
        sim.set_space_left(Some(2));
        assert_eq!(
            a.write_at(b"xyz", 7).unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        // What fitted was written: a short write.
        assert_eq!(sim.file_bytes(Path::new("/d/a")).unwrap(), b"1111223xy");
        a.write_at(b"XY", 7).unwrap(); // overwrites need no space
        assert!(a.write_at(b"z", 9).is_err());
        sim.set_space_left(None);
        a.write_at(b"z", 9).unwrap();
        assert_eq!(sim.file_bytes(Path::new("/d/a")).unwrap(), b"1111223XYz");
    }

    #[test]
    fn torn_tail_keeps_a_prefix_of_the_unsynced_bytes_and_tears_one_page() {
        let live: Vec<u8> = (0..5 * PAGE).map(|i| (i % 251) as u8 + 1).collect();
        for seed in 0..200 {
            let sim = SimStorage::new();
            sim.create_dir_all(Path::new("/d")).unwrap();
            let a = sim.open(Path::new("/d/a"), OpenMode::Create).unwrap();
            a.write_at(&live[..1000], 0).unwrap();
            a.sync_data().unwrap();
            sim.sync_dir(Path::new("/d")).unwrap();
            a.write_at(&live[1000..], 1000).unwrap();
            sim.crash(CrashMode::TornTail { seed });
            let got = sim.file_bytes(Path::new("/d/a")).unwrap();
            assert!(got.len() >= 1000 && got.len() <= live.len(), "seed {seed}");
            assert_eq!(got[..1000], live[..1000], "seed {seed}: synced bytes kept");
            // A prefix of the rest matches; past it, at most one page differs.
            let same = got.iter().zip(&live).take_while(|(a, b)| a == b).count();
            let torn_end = same.div_ceil(PAGE) * PAGE;
            assert!(
                got.len() <= torn_end.max(1000),
                "seed {seed}: {} > {torn_end}",
                got.len()
            );
        }
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/d")).unwrap();
        let g = sim.lock_dir(Path::new("/d")).unwrap();
        assert!(sim.lock_dir(Path::new("/d")).is_err());
        drop(g);
        sim.lock_dir(Path::new("/d")).unwrap();
    }
}
