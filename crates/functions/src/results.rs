//! The request cache: the results of successful calls, by (repository, commit, package,
//! call, network), so that an identical request is answered without a jail. Bounded by
//! memory (least recently used results go first); a result is never served past its
//! expiry, and expired ones are dropped from memory every `purge_after`. Failures are
//! never stored.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde::{Deserialize, Serialize};

/// One stored result; the same shape in memory and in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub data: String,
    pub commit: String,
    /// "dispatch" or "build", as when it was computed.
    pub path: String,
    /// The repository (host/owner/name), so that `cache_bust` can drop its results.
    pub repo: String,
    /// Unix time (ms) it was computed.
    pub stored_at_ms: u64,
    /// Unix time (ms) after which it is not served.
    pub expires_at_ms: u64,
}

impl Stored {
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Roughly what it takes in memory.
    fn weight(&self, key: &str) -> usize {
        const OVERHEAD: usize = 160;
        key.len() + self.data.len() + self.commit.len() + self.path.len() + self.repo.len() + OVERHEAD
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The in-memory tier.
#[derive(Debug)]
pub struct Results {
    ttl: Duration,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    entries: LruCache<String, Stored>,
    bytes: usize,
}

impl Results {
    pub fn new(ttl: Duration, max_bytes: u64) -> Results {
        Results {
            ttl,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            inner: Mutex::new(Inner { entries: LruCache::unbounded(), bytes: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a new result is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A result that has not expired.
    pub fn get(&self, key: &str) -> Option<Stored> {
        let mut inner = self.lock();
        let now = now_ms();
        match inner.entries.get(key) {
            Some(stored) if !stored.expired(now) => Some(stored.clone()),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores a result, making room by dropping the least recently used ones. A result
    /// larger than an eighth of the cache is not kept.
    pub fn put(&self, key: &str, stored: Stored) {
        let weight = stored.weight(key);
        if weight > self.max_bytes / 8 || stored.expired(now_ms()) {
            return;
        }
        let mut inner = self.lock();
        inner.remove(key);
        inner.bytes += weight;
        inner.entries.put(key.to_owned(), stored);
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((k, old)) => inner.bytes -= old.weight(&k),
                None => break,
            }
        }
    }

    /// Drops every result of `repo`; returns how many there were.
    pub fn bust_repo(&self, repo: &str) -> usize {
        let mut inner = self.lock();
        let keys: Vec<String> = inner.entries.iter().filter(|(_, s)| s.repo == repo).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            inner.remove(key);
        }
        keys.len()
    }

    /// Drops every result; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.entries.len();
        inner.entries.clear();
        inner.bytes = 0;
        n
    }

    /// Drops the expired results; returns how many there were.
    pub fn purge_expired(&self) -> usize {
        let now = now_ms();
        let mut inner = self.lock();
        let keys: Vec<String> = inner.entries.iter().filter(|(_, s)| s.expired(now)).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            inner.remove(key);
        }
        keys.len()
    }

    /// Results held and the memory they take.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.weight(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(repo: &str, data: &str, ttl_ms: u64) -> Stored {
        let now = now_ms();
        Stored {
            data: data.into(),
            commit: "c".repeat(40),
            path: "dispatch".into(),
            repo: repo.into(),
            stored_at_ms: now,
            expires_at_ms: now + ttl_ms,
        }
    }

    #[test]
    fn hits_expiry_and_busts() {
        let results = Results::new(Duration::from_secs(60), 1 << 20);
        results.put("a", stored("r1", "1", 60_000));
        results.put("b", stored("r2", "2", 60_000));
        results.put("gone", stored("r1", "3", 0));
        assert_eq!(results.get("a").unwrap().data, "1");
        assert!(results.get("gone").is_none(), "an expired result is never served");
        assert_eq!(results.bust_repo("r1"), 1);
        assert!(results.get("a").is_none());
        assert_eq!(results.get("b").unwrap().data, "2");
        assert_eq!(results.usage().0, 1);
    }

    #[test]
    fn purge_drops_expired_results() {
        let results = Results::new(Duration::from_secs(60), 1 << 20);
        results.put("soon", stored("r", "x", 30));
        results.put("later", stored("r", "y", 60_000));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(results.purge_expired(), 1);
        assert_eq!(results.usage().0, 1);
    }

    #[test]
    fn memory_is_bounded_least_recently_used_first() {
        let results = Results::new(Duration::from_secs(60), 4096);
        for i in 0..100 {
            results.put(&format!("k{i}"), stored("r", &"x".repeat(100), 60_000));
            assert!(results.usage().1 <= 4096);
        }
        assert!(results.get("k99").is_some());
        assert!(results.get("k0").is_none());
        results.put("huge", stored("r", &"x".repeat(1000), 60_000));
        assert!(results.get("huge").is_none(), "larger than an eighth of the cache");
    }
}
