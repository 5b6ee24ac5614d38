//! The store's sync threads: they run the group-commit fsync on behalf of
//! asynchronous appends ([`crate::Log::append_async`]), whose callers must
//! not block (a tokio worker, say) and so cannot lead an fsync themselves.
//!
//! Invariants:
//! - A log is in the queue at most once per request round: the log marks
//!   itself queued under its sync lock and the thread clears the mark
//!   before it notes the end of the log to sync up to, so an append after
//!   that point queues the log again and no waiter is left without a round.
//! - Threads start on first use, up to `MAX_THREADS` (different logs sync
//!   in parallel; one log's rounds never overlap, group commit sees to it),
//!   and are joined when the store shuts down; requests after that are
//!   dropped (the store's close flushes, and a dropped store fails its
//!   waiters as abandoned).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::log::Log;

/// Threads at most: fsyncs of different partitions overlap on the device.
const MAX_THREADS: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct Syncer {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Log>,
    idle: usize,
    threads: Vec<JoinHandle<()>>,
    stop: bool,
}

impl Syncer {
    /// Have a sync thread make `log` durable up to its current end and
    /// wake its waiters.
    pub(crate) fn request(self: &Arc<Self>, log: Log) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.stop {
            return;
        }
        st.queue.push_back(log);
        if st.idle == 0 && st.threads.len() < MAX_THREADS {
            let me = Arc::clone(self);
            match std::thread::Builder::new()
                .name("oncelog-sync".into())
                .spawn(move || me.run())
            {
                Ok(h) => st.threads.push(h),
                // The threads already running will get to it.
                Err(e) if !st.threads.is_empty() => {
                    tracing::warn!(error = %e, "could not start another sync thread");
                }
                Err(e) => {
                    // No thread at all: sync here rather than leave the
                    // waiters hanging (the caller only polled; it may block
                    // for this one fsync).
                    tracing::error!(error = %e, "could not start a sync thread; syncing inline");
                    let log = st.queue.pop_back();
                    drop(st);
                    if let Some(log) = log {
                        log.sync_for_waiters();
                    }
                    return;
                }
            }
        }
        drop(st);
        self.cv.notify_one();
    }

    fn run(self: Arc<Self>) {
        loop {
            let log = {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if let Some(log) = st.queue.pop_front() {
                        break log;
                    }
                    if st.stop {
                        return;
                    }
                    st.idle += 1;
                    st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
                    st.idle -= 1;
                }
            };
            log.sync_for_waiters();
        }
    }

    /// Finish the queued rounds, stop the threads and wait for them.
    pub(crate) fn stop(&self) {
        let threads = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.stop = true;
            std::mem::take(&mut st.threads)
        };
        self.cv.notify_all();
        for t in threads {
            // (A waker run on a sync thread could drop the last store.)
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
