//! The IPv4 pool. An address is leased for the life of one jail and comes back when the
//! lease is dropped, whatever ended the jail. Leases are machine-wide, like jail slots: an
//! exclusive `flock` on `<run_dir>/ip4/<address>.lock`, so several Sky Island processes
//! share one pool and a crashed process's addresses are free again (the kernel drops its
//! locks). What the operator marks unavailable is kept in the data directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

/// The operator's say about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Available,
    Unavailable,
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "available" => Ok(State::Available),
            "unavailable" => Ok(State::Unavailable),
            other => Err(format!("unknown state {other:?}: expected \"available\" or \"unavailable\"")),
        }
    }
}

/// One address as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    pub ip: Ipv4Addr,
    pub state: State,
    /// Who holds it now: a jail of this server, or "another process" (whose jail, or whose
    /// idle namespace for the address, holds it).
    pub in_use_by: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("all {0} addresses of the IPv4 pool are in use or unavailable")]
    Exhausted(usize),
    #[error("{0} is not an address of the pool")]
    NotInPool(Ipv4Addr),
    #[error("saving the pool's states: {0}")]
    Save(String),
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    unavailable: BTreeSet<Ipv4Addr>,
}

#[derive(Debug)]
struct Held {
    holder: String,
    lock: File,
}

#[derive(Debug, Default)]
struct Inner {
    unavailable: BTreeSet<Ipv4Addr>,
    held: HashMap<Ipv4Addr, Held>,
}

#[derive(Debug)]
pub struct Pool {
    addresses: Vec<Ipv4Addr>,
    lock_dir: PathBuf,
    states_file: PathBuf,
    inner: Mutex<Inner>,
}

/// An address leased to one jail; dropping it gives it back.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    pub ip: Ipv4Addr,
}

impl Pool {
    pub fn open(addresses: Vec<Ipv4Addr>, lock_dir: &Path, states_file: &Path) -> std::io::Result<Arc<Pool>> {
        fs::create_dir_all(lock_dir)?;
        if let Some(dir) = states_file.parent() {
            fs::create_dir_all(dir)?;
        }
        let saved: Saved = match fs::read(states_file) {
            Ok(data) => serde_json::from_slice(&data).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e),
        };
        let inner = Inner { unavailable: saved.unavailable, held: HashMap::new() };
        Ok(Arc::new(Pool {
            addresses,
            lock_dir: lock_dir.to_owned(),
            states_file: states_file.to_owned(),
            inner: Mutex::new(inner),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_file(&self, ip: Ipv4Addr) -> std::io::Result<File> {
        OpenOptions::new().create(true).truncate(false).write(true).open(self.lock_dir.join(format!("{ip}.lock")))
    }

    /// Leases the first free address to `holder`; refused at once when there is none.
    pub fn lease(self: &Arc<Self>, holder: &str) -> Result<Lease, PoolError> {
        let mut inner = self.lock();
        for &ip in &self.addresses {
            if inner.unavailable.contains(&ip) || inner.held.contains_key(&ip) {
                continue;
            }
            let Ok(lock) = self.lock_file(ip) else { continue };
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                inner.held.insert(ip, Held { holder: holder.to_owned(), lock });
                metrics::gauge!("skyisland_ip4_addresses_in_use").set(inner.held.len() as f64);
                return Ok(Lease { pool: Arc::clone(self), ip });
            }
        }
        metrics::counter!("skyisland_ip4_pool_exhausted_total").increment(1);
        Err(PoolError::Exhausted(self.addresses.len()))
    }

    /// Whether `ip` is free of any holder, in this process or another (taking its lock a
    /// moment to find out).
    pub fn is_free(&self, ip: Ipv4Addr) -> bool {
        if self.lock().held.contains_key(&ip) {
            return false;
        }
        let Ok(lock) = self.lock_file(ip) else { return false };
        let free = flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok();
        drop(lock);
        free
    }

    /// Every address, with its state and holder.
    pub fn list(&self) -> Vec<Address> {
        let inner = self.lock();
        self.addresses
            .iter()
            .map(|&ip| {
                let in_use_by = match inner.held.get(&ip) {
                    // Held by an idle namespace of this process, waiting for a jail.
                    Some(held) if held.holder.is_empty() => None,
                    Some(held) => Some(held.holder.clone()),
                    None => {
                        let busy = self
                            .lock_file(ip)
                            .is_ok_and(|lock| flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err());
                        busy.then(|| "another process".to_owned())
                    }
                };
                let state = if inner.unavailable.contains(&ip) { State::Unavailable } else { State::Available };
                Address { ip, state, in_use_by }
            })
            .collect()
    }

    /// Addresses leased by this process.
    pub fn in_use(&self) -> usize {
        self.lock().held.len()
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Sets the operator's state of `ip` and saves it. An address in use stays with its
    /// jail; marked unavailable, it is not leased again.
    pub fn set_state(&self, ip: Ipv4Addr, state: State) -> Result<(), PoolError> {
        if !self.addresses.contains(&ip) {
            return Err(PoolError::NotInPool(ip));
        }
        let mut inner = self.lock();
        let mut unavailable = inner.unavailable.clone();
        match state {
            State::Available => unavailable.remove(&ip),
            State::Unavailable => unavailable.insert(ip),
        };
        save(&self.states_file, &Saved { unavailable: unavailable.clone() })
            .map_err(|e| PoolError::Save(e.to_string()))?;
        inner.unavailable = unavailable;
        Ok(())
    }

    /// Counts of addresses by state, for statistics.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let inner = self.lock();
        let unavailable = self.addresses.iter().filter(|ip| inner.unavailable.contains(ip)).count();
        BTreeMap::from([("total", self.addresses.len()), ("in_use", inner.held.len()), ("unavailable", unavailable)])
    }
}

impl Lease {
    /// Names the lease's holder (the jail, once it has an id).
    pub fn set_holder(&self, holder: &str) {
        if let Some(held) = self.pool.lock().held.get_mut(&self.ip) {
            held.holder = holder.to_owned();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        if let Some(held) = inner.held.remove(&self.ip) {
            let _ = flock(&held.lock, FlockOperation::Unlock);
        }
        metrics::gauge!("skyisland_ip4_addresses_in_use").set(inner.held.len() as f64);
    }
}

/// Saves the states atomically: a crash leaves the old states or the new ones.
fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    skyisland_config::atomic::write(path, &serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(n: u8) -> Vec<Ipv4Addr> {
        (0..n).map(|i| Ipv4Addr::new(10, 0, 0, 10 + i)).collect()
    }

    #[test]
    fn leases_come_back_and_exhaustion_is_an_error_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(addresses(2), &dir.path().join("locks"), &dir.path().join("states.json")).unwrap();
        let a = pool.lease("jail a").unwrap();
        let b = pool.lease("jail b").unwrap();
        assert_ne!(a.ip, b.ip);
        assert_eq!(pool.lease("jail c").unwrap_err(), PoolError::Exhausted(2));
        assert_eq!(pool.list()[0].in_use_by.as_deref(), Some("jail a"));
        drop(a);
        assert_eq!(pool.lease("jail c").unwrap().ip, Ipv4Addr::new(10, 0, 0, 10));
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn another_process_holding_an_address_is_respected_and_shown() {
        let dir = tempfile::tempdir().unwrap();
        let (locks, states) = (dir.path().join("locks"), dir.path().join("states.json"));
        let ours = Pool::open(addresses(2), &locks, &states).unwrap();
        let theirs = Pool::open(addresses(2), &locks, &states).unwrap();
        let held = theirs.lease("theirs").unwrap();
        let lease = ours.lease("ours").unwrap();
        assert_ne!(lease.ip, held.ip);
        let shown = ours.list();
        assert_eq!(shown.iter().find(|a| a.ip == held.ip).unwrap().in_use_by.as_deref(), Some("another process"));
        assert!(!ours.is_free(held.ip));
    }

    #[test]
    fn states_are_saved_and_unavailable_addresses_are_not_leased() {
        let dir = tempfile::tempdir().unwrap();
        let (locks, states) = (dir.path().join("locks"), dir.path().join("states.json"));
        let pool = Pool::open(addresses(2), &locks, &states).unwrap();
        pool.set_state(Ipv4Addr::new(10, 0, 0, 10), State::Unavailable).unwrap();
        assert_eq!(
            pool.set_state(Ipv4Addr::new(10, 0, 0, 99), State::Available),
            Err(PoolError::NotInPool(Ipv4Addr::new(10, 0, 0, 99)))
        );
        drop(pool);
        let pool = Pool::open(addresses(2), &locks, &states).unwrap();
        assert_eq!(pool.list()[0].state, State::Unavailable);
        assert_eq!(pool.lease("x").unwrap().ip, Ipv4Addr::new(10, 0, 0, 11));
        assert!("busy".parse::<State>().is_err());
    }
}
