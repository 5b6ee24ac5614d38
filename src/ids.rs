//! Producer ids and named producers: the store-level `producer-ids` record.
//!
//! Invariants:
//! - No id is handed out twice, across clean restarts and crashes: ids come
//!   from blocks of [`ID_BLOCK`]; the end of the current block
//!   (`reserved_until`) is durable before any id of the block is handed out,
//!   and an open starts at the recorded end (the unused rest of the last
//!   block is skipped). One fsync per block, none per producer.
//! - A named producer's epoch bump is durable before `Store::producer`
//!   returns, and is published to the logs' fences only after that (then
//!   the store waits once for every log's writer lock, so that no append of
//!   the older session is still in flight): a session that was told it owns
//!   an epoch keeps it across a crash, and no older session writes once a
//!   newer one was handed out. A named producer keeps its id for ever; its
//!   epoch wraps from `i16::MAX` to 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::format::meta::{
    NamedProducerRecord, PRODUCER_IDS_FILE, decode_producer_ids, encode_producer_ids,
};
use crate::producer::Fences;
use crate::recovery::write_file_atomically;
use crate::storage::{OpenMode, Storage, read_all};

/// Ids reserved per durable write.
pub(crate) const ID_BLOCK: i64 = 1000;

/// Longest producer name, in bytes.
pub const MAX_PRODUCER_NAME_LEN: usize = 255;

#[derive(Debug)]
struct State {
    next: i64,
    reserved_until: i64,
    named: BTreeMap<String, (i64, i16)>,
    /// The highest epoch each anonymous id was bumped to since the store
    /// opened (not persisted): a bump from an older epoch is refused.
    bumped: std::collections::HashMap<i64, i16>,
}

#[derive(Debug)]
pub(crate) struct ProducerIds {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    state: Mutex<State>,
    pub fences: Arc<Fences>,
}

impl ProducerIds {
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path) -> Result<ProducerIds> {
        let path = dir.join(PRODUCER_IDS_FILE);
        let (reserved_until, named) = match storage.open(&path, OpenMode::Existing) {
            Ok(f) => {
                let raw =
                    read_all(f.as_ref()).map_err(|e| Error::io("read producer ids", &path, e))?;
                decode_producer_ids(&raw).ok_or_else(|| {
                    // Guessing could hand out an id twice: refuse.
                    Error::corrupt(&path, 0, "damaged producer-ids record (bad CRC or layout)")
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, Vec::new()),
            Err(e) => return Err(Error::io("open producer ids", &path, e)),
        };
        let fences = Arc::new(Fences::default());
        let mut map = BTreeMap::new();
        for n in named {
            fences.set(n.producer_id, Arc::from(n.name.as_str()), n.epoch);
            map.insert(n.name, (n.producer_id, n.epoch));
        }
        Ok(ProducerIds {
            storage,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                next: reserved_until,
                reserved_until,
                named: map,
                bumped: std::collections::HashMap::new(),
            }),
            fences,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn persist(&self, reserved_until: i64, named: &BTreeMap<String, (i64, i16)>) -> Result<()> {
        let records: Vec<NamedProducerRecord> = named
            .iter()
            .map(|(name, &(producer_id, epoch))| NamedProducerRecord {
                name: name.clone(),
                producer_id,
                epoch,
            })
            .collect();
        write_file_atomically(
            self.storage.as_ref(),
            &self.dir,
            PRODUCER_IDS_FILE,
            &encode_producer_ids(reserved_until, &records),
        )
    }

    fn allocate_locked(&self, st: &mut State) -> Result<i64> {
        if st.next >= st.reserved_until {
            let until = st
                .next
                .checked_add(ID_BLOCK)
                .ok_or_else(|| Error::InvalidProducer {
                    producer: st.next.to_string(),
                    reason: "producer ids are exhausted".into(),
                })?;
            self.persist(until, &st.named)?;
            st.reserved_until = until;
        }
        let id = st.next;
        st.next += 1;
        Ok(id)
    }

    /// A new anonymous producer id, epoch 0.
    pub(crate) fn allocate(&self) -> Result<(i64, i16)> {
        let mut st = self.lock();
        Ok((self.allocate_locked(&mut st)?, 0))
    }

    /// Bump the epoch of an existing producer (Kafka's InitProducerId with
    /// the current id and epoch, KIP-360). A new id when the epoch is
    /// exhausted.
    pub(crate) fn bump(&self, producer_id: i64, epoch: i16) -> Result<(i64, i16)> {
        let mut st = self.lock();
        if producer_id < 0 || producer_id >= st.reserved_until || epoch < 0 {
            return Err(Error::InvalidProducer {
                producer: producer_id.to_string(),
                reason: format!(
                    "id {producer_id} epoch {epoch} was never handed out by this store"
                ),
            });
        }
        if let Some((name, current)) = self.fences.get(producer_id) {
            if epoch != current {
                return Err(Error::ProducerFenced {
                    log: self.dir.display().to_string(),
                    name: name.to_string(),
                    producer_id,
                    epoch,
                    current_epoch: current,
                    sequence: -1,
                });
            }
            let name = name.to_string();
            return self.bump_named_locked(&mut st, &name);
        }
        self.check_anonymous_epoch(&st, producer_id, epoch)?;
        if epoch >= i16::MAX - 1 {
            return Ok((self.allocate_locked(&mut st)?, 0));
        }
        st.bumped.insert(producer_id, epoch + 1);
        Ok((producer_id, epoch + 1))
    }

    fn check_anonymous_epoch(&self, st: &State, producer_id: i64, epoch: i16) -> Result<()> {
        match st.bumped.get(&producer_id) {
            Some(&current) if epoch < current => Err(Error::InvalidProducerEpoch {
                log: self.dir.display().to_string(),
                producer_id,
                epoch,
                current_epoch: current,
                sequence: -1,
            }),
            _ => Ok(()),
        }
    }

    /// Check that `(producer_id, epoch)` is an anonymous identity this store
    /// handed out (and not one whose epoch was bumped past `epoch`).
    pub(crate) fn resume_anonymous(&self, producer_id: i64, epoch: i16) -> Result<()> {
        let st = self.lock();
        if producer_id < 0 || producer_id >= st.reserved_until || epoch < 0 {
            return Err(Error::InvalidProducer {
                producer: producer_id.to_string(),
                reason: format!(
                    "id {producer_id} epoch {epoch} was never handed out by this store"
                ),
            });
        }
        if let Some(name) = self.name_of(producer_id) {
            return Err(Error::InvalidProducer {
                producer: producer_id.to_string(),
                reason: format!("it is the named producer {name:?}: use Store::producer"),
            });
        }
        self.check_anonymous_epoch(&st, producer_id, epoch)
    }

    /// Start a new session of the named producer: same id, epoch bumped
    /// (durably) so that the previous session is fenced.
    pub(crate) fn named(&self, name: &str) -> Result<(i64, i16)> {
        if name.is_empty() || name.len() > MAX_PRODUCER_NAME_LEN {
            return Err(Error::InvalidProducer {
                producer: format!("{name:?}"),
                reason: format!("a name has 1 to {MAX_PRODUCER_NAME_LEN} bytes"),
            });
        }
        let mut st = self.lock();
        self.bump_named_locked(&mut st, name)
    }

    fn bump_named_locked(&self, st: &mut State, name: &str) -> Result<(i64, i16)> {
        // The epoch wraps from i16::MAX to 0: the fence is an equality, so
        // only a session exactly 32768 sessions old could pass it again.
        let (id, epoch) = match st.named.get(name) {
            Some(&(id, epoch)) => (id, if epoch == i16::MAX { 0 } else { epoch + 1 }),
            None => (self.allocate_locked(st)?, 0),
        };
        let mut named = st.named.clone();
        named.insert(name.to_string(), (id, epoch));
        self.persist(st.reserved_until, &named)?;
        st.named = named;
        self.fences.set(id, Arc::from(name), epoch);
        Ok((id, epoch))
    }

    /// The name of a named producer id.
    pub(crate) fn name_of(&self, producer_id: i64) -> Option<String> {
        self.fences.get(producer_id).map(|(n, _)| n.to_string())
    }

    /// Named producers: name, id, current epoch.
    pub(crate) fn list_named(&self) -> Vec<(String, i64, i16)> {
        self.lock()
            .named
            .iter()
            .map(|(n, &(id, e))| (n.clone(), id, e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{CrashMode, SimStorage};

    fn sim() -> (Arc<SimStorage>, PathBuf) {
        let s = Arc::new(SimStorage::new());
        let dir = PathBuf::from("/store");
        s.create_dir_all(&dir).unwrap();
        (s, dir)
    }

    #[test]
    fn ids_are_never_reused_across_crashes_and_cost_one_sync_per_block() {
        let (s, dir) = sim();
        let ids = ProducerIds::open(s.clone(), &dir).unwrap();
        let before = s.op_counts().1;
        let first: Vec<i64> = (0..1500).map(|_| ids.allocate().unwrap().0).collect();
        // Two blocks: two file fsyncs and two directory fsyncs.
        assert!(s.op_counts().1 - before <= 4, "{:?}", s.op_counts());
        drop(ids);
        s.crash(CrashMode::LoseUnsynced);
        let ids = ProducerIds::open(s.clone(), &dir).unwrap();
        let next = ids.allocate().unwrap().0;
        assert!(next > *first.iter().max().unwrap(), "{next}");
        assert_eq!(next, 2000);
    }

    #[test]
    fn named_producers_keep_their_id_and_bump_their_epoch() {
        let (s, dir) = sim();
        let ids = ProducerIds::open(s.clone(), &dir).unwrap();
        let anon = ids.allocate().unwrap();
        let a = ids.named("billing").unwrap();
        let b = ids.named("billing").unwrap();
        assert_eq!((a.0, a.1 + 1), b);
        assert_ne!(a.0, anon.0);
        assert_eq!(ids.name_of(a.0).as_deref(), Some("billing"));
        s.crash(CrashMode::LoseUnsynced);
        let ids = ProducerIds::open(s, &dir).unwrap();
        assert_eq!(ids.named("billing").unwrap(), (a.0, 2));
        // Bumping with a stale epoch is fenced; with the current one works.
        assert_eq!(ids.bump(a.0, 1).unwrap_err().kind(), "producer_fenced");
        assert_eq!(ids.bump(a.0, 2).unwrap(), (a.0, 3));
        assert!(ids.named("").is_err());
        assert!(ids.named(&"x".repeat(256)).is_err());
    }

    #[test]
    fn a_named_epoch_wraps_on_the_same_id() {
        let (s, dir) = sim();
        let rec = NamedProducerRecord {
            name: "old".into(),
            producer_id: 7,
            epoch: i16::MAX,
        };
        s.open(&dir.join(PRODUCER_IDS_FILE), OpenMode::Create)
            .unwrap()
            .write_at(&encode_producer_ids(1000, &[rec]), 0)
            .unwrap();
        let ids = ProducerIds::open(s, &dir).unwrap();
        assert_eq!(ids.named("old").unwrap(), (7, 0));
        assert_eq!(ids.named("old").unwrap(), (7, 1));
    }

    #[test]
    fn anonymous_bumps() {
        let (s, dir) = sim();
        let ids = ProducerIds::open(s, &dir).unwrap();
        let (id, e) = ids.allocate().unwrap();
        assert_eq!(ids.bump(id, e).unwrap(), (id, 1));
        assert_eq!(ids.bump(id, 7).unwrap(), (id, 8));
        let (new, e) = ids.bump(id, i16::MAX - 1).unwrap();
        assert!(new != id && e == 0);
        assert_eq!(ids.bump(5000, 0).unwrap_err().kind(), "invalid_producer");
        // A second bump from the same (now stale) epoch is refused.
        let (id2, _) = ids.allocate().unwrap();
        assert_eq!(ids.bump(id2, 3).unwrap(), (id2, 4));
        assert_eq!(
            ids.bump(id2, 3).unwrap_err().kind(),
            "invalid_producer_epoch"
        );
        assert!(ids.resume_anonymous(id2, 3).is_err());
        ids.resume_anonymous(id2, 4).unwrap();
        assert_eq!(ids.bump(id2, 4).unwrap(), (id2, 5));
        assert_eq!(ids.bump(id, -1).unwrap_err().kind(), "invalid_producer");
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_reset() {
        let (s, dir) = sim();
        let ids = ProducerIds::open(s.clone(), &dir).unwrap();
        ids.allocate().unwrap();
        let path = dir.join(PRODUCER_IDS_FILE);
        let mut bytes = s.file_bytes(&path).unwrap();
        bytes[6] ^= 1;
        s.set_file_bytes(&path, &bytes).unwrap();
        assert_eq!(ProducerIds::open(s, &dir).unwrap_err().kind(), "corrupt");
    }
}
