//! Jail slots, the unit of concurrency on a host. A slot owns a uid, a cgroup and a
//! scratch directory, named after it. Ownership is machine-wide: an exclusive `flock` on
//! `<run_dir>/slots/<name>.lock`, so every Sky Island process on the host (servers and
//! `skyisland jail run` alike) shares the slots safely, and a crashed owner's slots are
//! recognisable by their free locks and reaped by the next process that opens them.
//!
//! A long-lived owner (the server) keeps the lock of a slot it has used for a short while
//! after its jail ends (until [`SlotPool::release_idle`] lets go of it), so that under load
//! what it knows of the slot's cgroup stays true between its jails without being checked
//! again, while an idle server holds no slot another server on the host could use; a
//! one-shot owner (`jail run`) lets go at once.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{FlockOperation, flock};

/// A slot's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotDef {
    /// Names the lock, the cgroup and the scratch directory.
    pub name: String,
    pub uid: u32,
}

#[derive(Debug)]
struct Slot {
    def: SlotDef,
    /// `<run_dir>/slots/<name>.lock`, opened the first time it is needed.
    lock_path: std::path::PathBuf,
    lock: std::sync::OnceLock<File>,
    /// This process holds the slot's lock.
    held: AtomicBool,
    /// The slot's cgroup as this process last set it up; valid while `held`.
    cgroup: Mutex<Option<crate::cgroup::SlotCgroup>>,
    /// Since when this process has held the slot's lock without using the slot.
    idle_since: Mutex<Option<std::time::Instant>>,
    /// The slot's own empty network namespace, made the first time this process needs it
    /// and kept: the slot's jails use it one at a time, each after the previous one's
    /// processes (and so its sockets) are gone.
    netns: std::sync::OnceLock<std::os::fd::OwnedFd>,
}

/// A set of slots of one kind (execution or build).
#[derive(Debug)]
pub struct SlotPool {
    slots: Vec<Slot>,
    /// Slots not leased by this process, most recently released last (reused first:
    /// its cgroup's and its binary's pages are warm).
    free: Mutex<Vec<usize>>,
    /// Keep the locks of released slots until [`SlotPool::release_all`].
    keep_locks: bool,
}

/// Exclusive use of one slot until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<SlotPool>,
    index: usize,
}

impl SlotPool {
    pub fn open(lock_dir: &Path, defs: Vec<SlotDef>, keep_locks: bool) -> io::Result<Arc<SlotPool>> {
        fs::create_dir_all(lock_dir)?;
        let mut slots = Vec::with_capacity(defs.len());
        for def in defs {
            let lock_path = lock_dir.join(format!("{}.lock", def.name));
            slots.push(Slot {
                def,
                lock_path,
                lock: std::sync::OnceLock::new(),
                held: AtomicBool::new(false),
                cgroup: Mutex::new(None),
                idle_since: Mutex::new(None),
                netns: std::sync::OnceLock::new(),
            });
        }
        let free = (0..slots.len()).rev().collect();
        Ok(Arc::new(SlotPool { slots, free: Mutex::new(free), keep_locks }))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots not leased by this process.
    pub fn free_len(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Leases a free slot, skipping those another process holds; `None` if all are taken.
    pub fn acquire(self: &Arc<Self>) -> Option<Lease> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in (0..free.len()).rev() {
            let index = free[attempt];
            if self.lock(index) {
                free.remove(attempt);
                *self.slots[index].idle_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Some(Lease { pool: Arc::clone(self), index });
            }
        }
        None
    }

    /// Takes slot `index`'s lock unless this process holds it already.
    fn lock(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        if slot.held.load(Ordering::Acquire) {
            return true;
        }
        let Some(file) = slot.lock_file() else { return false };
        let locked = flock(file, FlockOperation::NonBlockingLockExclusive).is_ok();
        slot.held.store(locked, Ordering::Release);
        locked
    }

    /// Lets go of the locks of the slots this process has held unused for `idle` or longer.
    pub fn release_idle(&self, idle: std::time::Duration) {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for &index in free.iter() {
            let slot = &self.slots[index];
            let since = *slot.idle_since.lock().unwrap_or_else(|p| p.into_inner());
            if since.is_some_and(|at| at.elapsed() >= idle) {
                slot.unlock();
            }
        }
    }

    /// Lets go of the locks of every slot this process holds and is not using.
    pub fn release_all(&self) {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for &index in free.iter() {
            self.slots[index].unlock();
        }
    }

    /// Leases, one after the other, every slot no other process holds for which `wanted` is true,
    /// and calls `f` with each: for reaping what a crashed owner left, and for cleaning up
    /// at shutdown.
    pub fn for_each_unheld(self: &Arc<Self>, wanted: impl Fn(&SlotDef) -> bool, mut f: impl FnMut(&Lease)) {
        let candidates: Vec<usize> = self.free.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let candidates = candidates.into_iter().filter(|&i| wanted(&self.slots[i].def));
        for index in candidates {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            let Some(position) = free.iter().position(|&i| i == index) else {
                continue;
            };
            if !self.lock(index) {
                continue;
            }
            free.remove(position);
            drop(free);
            let lease = Lease { pool: Arc::clone(self), index };
            f(&lease);
            drop(lease);
            // Reaped, not used: another process may have it at once.
            self.slots[index].unlock();
        }
    }
}

impl Lease {
    pub fn def(&self) -> &SlotDef {
        &self.pool.slots[self.index].def
    }

    /// The slot's cgroup as this process last set it up.
    pub(crate) fn cgroup(&self) -> &Mutex<Option<crate::cgroup::SlotCgroup>> {
        &self.pool.slots[self.index].cgroup
    }

    /// A duplicate of the slot's own network namespace, made by `make` the first time.
    pub(crate) fn network_namespace(
        &self,
        make: impl FnOnce() -> io::Result<std::os::fd::OwnedFd>,
    ) -> io::Result<std::os::fd::OwnedFd> {
        let slot = &self.pool.slots[self.index];
        if let Some(ns) = slot.netns.get() {
            return ns.try_clone();
        }
        let made = make()?;
        slot.netns.get_or_init(|| made).try_clone()
    }
}

impl Slot {
    fn lock_file(&self) -> Option<&File> {
        if let Some(file) = self.lock.get() {
            return Some(file);
        }
        match OpenOptions::new().create(true).truncate(false).write(true).open(&self.lock_path) {
            Ok(file) => Some(self.lock.get_or_init(|| file)),
            Err(e) => {
                tracing::error!(lock = %self.lock_path.display(), error = %e, "cannot open a slot lock");
                None
            }
        }
    }

    fn unlock(&self) {
        // Another process may change the slot once we let go: forget what we knew.
        *self.cgroup.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if self.held.swap(false, Ordering::AcqRel) {
            // Unlocking a lock we hold cannot fail in a way we could act on.
            if let Some(file) = self.lock.get() {
                let _ = flock(file, FlockOperation::Unlock);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let slot = &self.pool.slots[self.index];
        if self.pool.keep_locks {
            *slot.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        } else {
            slot.unlock();
        }
        self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(n: u32) -> Vec<SlotDef> {
        (0..n).map(|i| SlotDef { name: format!("exec-{}", 100 + i), uid: 100 + i }).collect()
    }

    #[test]
    fn leases_are_exclusive_across_pools_like_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = SlotPool::open(dir.path(), defs(2), false).unwrap();
        let b = SlotPool::open(dir.path(), defs(2), false).unwrap();
        let a1 = a.acquire().unwrap();
        let b1 = b.acquire().unwrap();
        assert_ne!(a1.def(), b1.def(), "separate open files conflict like separate processes");
        assert!(a.acquire().is_none());
        assert!(b.acquire().is_none());
        drop(a1);
        let b2 = b.acquire().expect("released by a");
        assert_ne!(b2.def(), b1.def());
    }

    #[test]
    fn the_most_recently_released_slot_is_reused_first() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SlotPool::open(dir.path(), defs(3), false).unwrap();
        let first = pool.acquire().unwrap();
        let name = first.def().name.clone();
        assert_eq!(name, "exec-100");
        drop(first);
        assert_eq!(pool.acquire().unwrap().def().name, name);
    }

    #[test]
    fn a_long_lived_owner_keeps_an_idle_slot_only_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let server = SlotPool::open(dir.path(), defs(1), true).unwrap();
        let cli = SlotPool::open(dir.path(), defs(1), false).unwrap();
        drop(server.acquire().unwrap());
        assert!(cli.acquire().is_none(), "the server still holds its idle slot");
        server.release_idle(std::time::Duration::from_secs(60));
        assert!(cli.acquire().is_none(), "for a while");
        let held = server.acquire().expect("it can use it again without locking");
        std::thread::sleep(std::time::Duration::from_millis(20));
        server.release_idle(std::time::Duration::from_millis(10));
        assert!(cli.acquire().is_none(), "not while it is in use");
        drop(held);
        std::thread::sleep(std::time::Duration::from_millis(20));
        server.release_idle(std::time::Duration::from_millis(10));
        assert!(cli.acquire().is_some(), "idle long enough, it goes back to the host");
    }

    #[test]
    fn reaping_an_unheld_slot_does_not_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let server = SlotPool::open(dir.path(), defs(1), true).unwrap();
        let other = SlotPool::open(dir.path(), defs(1), false).unwrap();
        let mut reaped = 0;
        server.for_each_unheld(|_| true, |_| reaped += 1);
        assert_eq!(reaped, 1);
        assert!(other.acquire().is_some(), "free for another process right after");
    }

    #[test]
    fn for_each_unheld_skips_leased_slots() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SlotPool::open(dir.path(), defs(3), false).unwrap();
        let other = SlotPool::open(dir.path(), defs(3), false).unwrap();
        let held = other.acquire().unwrap();
        let mut seen = Vec::new();
        pool.for_each_unheld(|def| def.uid != 101, |lease| seen.push(lease.def().name.clone()));
        assert_eq!(seen.len(), 1, "one held elsewhere, one not wanted: {seen:?}");
        assert!(!seen.contains(&held.def().name));
        assert!(pool.acquire().is_some());
    }
}
