//! The store: a directory of topic-partition logs, locked for exclusive use.
//!
//! Invariants:
//! - While a `Store` is open, it holds an exclusive lock on its directory
//!   (`.lock`, via `File::try_lock`); a second open fails at once.
//! - Partition directories are named `<topic>-<partition>`; topic names
//!   follow Kafka's rule, so a name can never leave the store directory.
//! - Each partition directory is opened once, by one `Log`; handles share it.
//! - A background thread performs interval flushes and periodic retention;
//!   it holds only a weak reference and stops when the store is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::ProducerIds;
use crate::log::{DirLock, Log, LogEnv, ProducerStats, Waker};
use crate::recovery::RecoveryReport;
use crate::storage::{FsStorage, Storage};
use crate::syncer::Syncer;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// Check a topic name against Kafka's rule: 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<()> {
    let reason = if topic.is_empty() {
        Some("the name is empty")
    } else if topic.len() > MAX_TOPIC_LEN {
        Some("the name is longer than 249 characters")
    } else if topic == "." || topic == ".." {
        Some("'.' and '..' are not allowed")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            let mut shown: String = topic.chars().take(80).collect();
            if shown.len() < topic.len() {
                shown.push('…');
            }
            Err(Error::InvalidTopic {
                topic: shown,
                reason,
            })
        }
    }
}

/// Parse a partition directory name `<topic>-<partition>`.
pub(crate) fn parse_partition_dir(name: &str) -> Option<(String, u32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let partition: u32 = partition.parse().ok()?;
    // Reject non-canonical spellings ("t-01") so that one partition has one name.
    if partition.to_string() != name[topic.len() + 1..] {
        return None;
    }
    validate_topic(topic).ok()?;
    Some((topic.to_string(), partition))
}

pub(crate) struct StoreInner {
    dir: PathBuf,
    pub(crate) config: Arc<Config>,
    storage: Arc<dyn Storage>,
    logs: RwLock<BTreeMap<(String, u32), Log>>,
    /// Serializes creation of new partitions.
    create: Mutex<()>,
    waker: Arc<Waker>,
    closed: AtomicBool,
    /// Producer ids and named producers (with the fences the logs check).
    pub(crate) ids: ProducerIds,
    /// What new logs share with the store, including the directory lock,
    /// so that it is released only when the last log handle (and read
    /// result) is gone.
    env: LogEnv,
}

impl StoreInner {
    /// The log of `topic`/`partition`, created (durably) if it does not exist.
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                what: format!("store {}", self.dir.display()),
            });
        }
        Ok(())
    }

    fn existing(&self, key: &(String, u32)) -> Option<Log> {
        self.logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub(crate) fn log(&self, topic: &str, partition: u32) -> Result<Log> {
        validate_topic(topic)?;
        self.check_open()?;
        let key = (topic.to_string(), partition);
        if let Some(log) = self.existing(&key) {
            return Ok(log);
        }
        let inner = self;
        let _guard = inner.create.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under `create`, which shutdown also takes: a log
        // created now is in the map that shutdown closes.
        self.check_open()?;
        if let Some(log) = self.existing(&key) {
            return Ok(log);
        }
        let path = inner.dir.join(format!("{topic}-{partition}"));
        inner
            .storage
            .create_dir_all(&path)
            .map_err(|e| Error::io("create partition directory", &path, e))?;
        let log = Log::open(&inner.env, path, key.0.clone(), partition)?;
        // The partition directory's own entry must be durable too.
        inner
            .storage
            .sync_dir(&inner.dir)
            .map_err(|e| Error::io("fsync store directory", &inner.dir, e))?;
        inner
            .logs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, log.clone());
        Ok(log)
    }
}

impl std::fmt::Debug for StoreInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A directory of topic-partition logs.
///
/// `Send + Sync`; share it by reference or wrap it in an `Arc`. Dropping it
/// stops the background thread and releases the directory lock without
/// fsyncing; call [`Store::close`] for a clean shutdown.
#[derive(Debug)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
    background: Option<JoinHandle<()>>,
}

impl Store {
    /// Open (creating if needed) the store in `dir` on the real filesystem,
    /// recovering every partition found there.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        Store::open_with_storage(dir, config, Arc::new(FsStorage::new()))
    }

    /// Open the store on any [`Storage`] (for example the simulated disk).
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        config: Config,
        storage: Arc<dyn Storage>,
    ) -> Result<Store> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create store directory", &dir, e))?;
        let lock = storage.lock_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.clone() }
            } else {
                Error::io("lock store directory", &dir, e)
            }
        })?;
        let lock: DirLock = Arc::new(lock);
        // The store directory's own entry must be durable before anything
        // inside it is acknowledged.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage
                .sync_dir(parent)
                .map_err(|e| Error::io("fsync directory", parent, e))?;
        }
        // And its entries: a partition directory created just before a crash
        // may not be durable yet.
        storage
            .sync_dir(&dir)
            .map_err(|e| Error::io("fsync store directory", &dir, e))?;
        let config = Arc::new(config);
        let waker = Arc::new(Waker::default());
        let ids = ProducerIds::open(Arc::clone(&storage), &dir)?;
        let env = LogEnv {
            storage: Arc::clone(&storage),
            config: Arc::clone(&config),
            waker: Arc::clone(&waker),
            syncer: Arc::new(Syncer::default()),
            dir_lock: Arc::clone(&lock),
            fences: Arc::clone(&ids.fences),
        };
        let mut logs = BTreeMap::new();
        let names = storage
            .list_dir(&dir)
            .map_err(|e| Error::io("list store directory", &dir, e))?;
        for name in names {
            let path = dir.join(&name);
            if !storage.is_dir(&path) {
                continue;
            }
            let Some((topic, partition)) = parse_partition_dir(&name) else {
                tracing::warn!(dir = %path.display(), "ignoring a directory that is not <topic>-<partition>");
                continue;
            };
            let log = Log::open(&env, path, topic.clone(), partition)?;
            logs.insert((topic, partition), log);
        }
        let inner = Arc::new(StoreInner {
            dir,
            config,
            storage,
            logs: RwLock::new(logs),
            create: Mutex::new(()),
            waker,
            closed: AtomicBool::new(false),
            ids,
            env,
        });
        let weak = Arc::downgrade(&inner);
        let background = std::thread::Builder::new()
            .name("oncelog-background".into())
            .spawn(move || background_loop(weak))
            .map_err(|e| Error::io("spawn background thread", "", e))?;
        Ok(Store {
            inner,
            background: Some(background),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The store's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The log of `topic`/`partition`, created (durably) if it does not exist.
    pub fn log(&self, topic: &str, partition: u32) -> Result<Log> {
        self.inner.log(topic, partition)
    }

    /// The log of `topic`/`partition` if it exists.
    pub fn existing_log(&self, topic: &str, partition: u32) -> Result<Option<Log>> {
        validate_topic(topic)?;
        self.check_open()?;
        Ok(self.inner.existing(&(topic.to_string(), partition)))
    }

    /// Every log in the store, ordered by topic and partition.
    pub fn logs(&self) -> Vec<Log> {
        self.read_logs().values().cloned().collect()
    }

    /// What recovery did for each log opened with the store.
    pub fn recovery_reports(&self) -> Vec<(String, u32, RecoveryReport)> {
        self.read_logs()
            .iter()
            .map(|((t, p), log)| (t.clone(), *p, log.recovery_report().clone()))
            .collect()
    }

    /// Make every appended batch of every log durable. Every log is flushed
    /// even if one fails; the first error is returned.
    pub fn flush(&self) -> Result<()> {
        let mut first = Ok(());
        for log in self.logs() {
            if let Err(e) = log.flush() {
                tracing::error!(log = %format!("{}-{}", log.topic(), log.partition()), error = %e, "flush failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Close the store cleanly: refuse new appends, let those in flight
    /// finish, checkpoint every log's producer state (so that the next open
    /// replays nothing), flush every log, stop the background thread.
    /// Handles refuse further writes; the directory lock is released once
    /// the last handle and read result are dropped.
    pub fn close(mut self) -> Result<()> {
        self.shutdown();
        let mut first = Ok(());
        for log in self.logs() {
            if let Err(e) = log.checkpoint_at_close() {
                tracing::error!(log = %format!("{}-{}", log.topic(), log.partition()), error = %e, "checkpoint at close failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        let flushed = self.flush();
        first.and(flushed)
    }

    /// A new idempotent producer: a fresh id (never handed out before by
    /// this store, across restarts and crashes) and epoch 0. Ids are
    /// reserved in blocks; only the first id of a block costs a durable write.
    pub fn init_producer(&self) -> Result<(i64, i16)> {
        self.check_open()?;
        self.inner.ids.allocate()
    }

    /// Bump the epoch of a producer this store handed out, as Kafka's
    /// InitProducerId does with the current id and epoch (KIP-360). Returns
    /// a new id at epoch 0 when the epoch is exhausted. For a named producer
    /// the epoch given must be its current one (else [`Error::ProducerFenced`]).
    pub fn init_producer_with(&self, producer_id: i64, epoch: i16) -> Result<(i64, i16)> {
        self.check_open()?;
        let bumped = self.inner.ids.bump(producer_id, epoch)?;
        self.fence_barrier();
        Ok(bumped)
    }

    /// After a named producer's fence moved: wait for every append in flight
    /// (each checked the fence under its log's writer lock), so that none of
    /// the older session lands after the caller learns of the new epoch.
    pub(crate) fn fence_barrier(&self) {
        for log in self.logs() {
            log.barrier();
        }
    }

    /// The name of a named producer id.
    pub fn producer_name(&self, producer_id: i64) -> Option<String> {
        self.inner.ids.name_of(producer_id)
    }

    /// Every named producer: name, producer id and current epoch.
    pub fn named_producers(&self) -> Vec<(String, i64, i16)> {
        self.inner.ids.list_named()
    }

    /// Producer counters summed over every log.
    pub fn producer_stats(&self) -> ProducerStats {
        self.logs()
            .iter()
            .map(Log::producer_stats)
            .fold(ProducerStats::default(), |a, b| a + b)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        self.inner.check_open()
    }

    fn read_logs(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, u32), Log>> {
        self.inner
            .logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shutdown(&mut self) {
        {
            let _guard = self
                .inner
                .create
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.inner.closed.store(true, Ordering::Release);
        }
        for log in self.logs() {
            // Waits for an append in flight, so none lands after this.
            log.mark_closed();
        }
        // Finishes the rounds asked for so far.
        self.inner.env.syncer.stop();
        {
            let mut st = self
                .inner
                .waker
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            st.stop = true;
        }
        self.inner.waker.cv.notify_all();
        if let Some(handle) = self.background.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
        // After `close` everything is durable and these find it so; after a
        // plain drop, asynchronous appends still waiting fail.
        for log in self.logs() {
            log.abandon();
        }
    }
}

/// Interval flushes, periodic retention and producer expiry.
fn background_loop(store: Weak<StoreInner>) {
    // The first retention pass comes one interval after open (every roll
    // applies retention too).
    let mut next_retention = store.upgrade().map_or_else(Instant::now, |s| {
        Instant::now()
            .checked_add(s.config.retention_check_interval)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    });
    loop {
        let Some(inner) = store.upgrade() else { return };
        let check_every = inner.config.retention_check_interval;
        let wants_retention =
            inner.config.retention.is_some() || inner.config.retention_bytes.is_some();
        let logs: Vec<Log> = inner
            .logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        // A check interval too long to represent means "wait for a wake-up".
        let far = now
            .checked_add(check_every)
            .unwrap_or(now + Duration::from_secs(3600));
        let mut wake_at = far;
        for log in &logs {
            if let Some(due) = log.flush_deadline() {
                if due <= now {
                    if let Err(e) = log.flush() {
                        tracing::error!(log = %format!("{}-{}", log.topic(), log.partition()), error = %e, "interval flush failed");
                    }
                    // Appends during the flush set a later deadline (and wake
                    // us); fold it in.
                    if let Some(next) = log.flush_deadline().filter(|t| *t > now) {
                        wake_at = wake_at.min(next);
                    }
                } else {
                    wake_at = wake_at.min(due);
                }
            }
        }
        if now >= next_retention {
            for log in &logs {
                if wants_retention && let Err(e) = log.enforce_retention() {
                    tracing::warn!(log = %format!("{}-{}", log.topic(), log.partition()), error = %e, "retention failed");
                }
                log.expire_producers();
            }
            next_retention = far;
        }
        wake_at = wake_at.min(next_retention);
        let waker = Arc::clone(&inner.waker);
        drop(logs);
        drop(inner);
        let mut st = waker.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !st.stop && !st.woken {
            let now = Instant::now();
            if now >= wake_at {
                break;
            }
            let timeout = (wake_at - now).min(Duration::from_secs(1));
            st = waker
                .cv
                .wait_timeout(st, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if store.strong_count() == 0 {
                return;
            }
        }
        if st.stop {
            return;
        }
        st.woken = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for ok in [
            "a",
            "orders",
            "a.b_c-d",
            "A9",
            &"x".repeat(249),
            "..a",
            "a..b",
        ] {
            validate_topic(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "é",
            "a\0",
            &"x".repeat(250),
            "a:b",
        ] {
            let e = validate_topic(bad).unwrap_err();
            assert_eq!(e.kind(), "invalid_topic", "{bad:?}");
        }
    }

    #[test]
    fn partition_dirs_parse_strictly() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(parse_partition_dir("a-b-12"), Some(("a-b".into(), 12)));
        assert_eq!(parse_partition_dir("orders-03"), None);
        assert_eq!(parse_partition_dir("orders-"), None);
        assert_eq!(parse_partition_dir("-3"), None);
        assert_eq!(parse_partition_dir("orders"), None);
        assert_eq!(parse_partition_dir("orders-99999999999"), None);
    }
}
