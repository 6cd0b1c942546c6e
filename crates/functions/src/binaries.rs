//! The binary cache: built functions on disk under `<data_dir>/binaries/<key>/`, keyed by
//! what determines the binary (repository, commit, package directory, toolchain and
//! generator, and the call only for per-call builds).
//!
//! An entry is written under a temporary name and renamed into place complete, so a
//! crash never leaves a half-written binary under a real key; temporary leftovers are
//! removed at start-up. The cache is bounded in bytes and evicts the least recently used
//! entries that no request is using. N concurrent requests for a missing key build it
//! once (single flight); the build runs as its own task, so it completes (and is cached)
//! even if every request waiting for it goes away.
//!
//! Jails execute a binary from memory: a sealed, read-only `memfd` copy made the first
//! time it runs and kept for the most recently run binaries, up to `binary_memory` bytes.
//! A jail's `/proc/self/exe` then names no host path, no jail can change the binary the
//! next call runs (the seals forbid writing), and the descriptors held open are bounded
//! by that budget rather than by the number of binaries on disk.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// What the generator says about a package (see `go/gen/main.go`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub import_path: String,
    pub module_root: String,
    #[serde(default)]
    pub funcs: Vec<String>,
    #[serde(default)]
    pub generic: Vec<String>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub types: Vec<String>,
}

impl Index {
    pub fn exports(&self, name: &str) -> bool {
        [&self.funcs, &self.generic, &self.values, &self.types].iter().any(|list| list.iter().any(|n| n == name))
    }

    pub fn dispatchable(&self, name: &str) -> bool {
        self.funcs.iter().any(|n| n == name)
    }
}

/// Describes an entry; stored beside the binary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub repo: String,
    pub commit: String,
    pub subdir: String,
    /// The call for a per-call build; `None` for a dispatcher.
    pub call: Option<String>,
}

/// A cached binary. Holding the `Arc` pins it against eviction.
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub binary: PathBuf,
    pub index: Index,
    pub meta: Meta,
    size: u64,
    last_used: AtomicU64,
}

/// What a finished build hands to the cache.
#[derive(Debug)]
pub struct Built {
    /// The binary, anywhere on the same filesystem as the cache; it is moved.
    pub binary: PathBuf,
    pub index: Index,
    pub meta: Meta,
    /// Fetched from another server (through Redis) rather than compiled here.
    pub fetched: bool,
}

/// A build in progress: the entry, and whether it was fetched rather than compiled.
pub type Flight<E> = Shared<BoxFuture<'static, Result<(Arc<Entry>, bool), Arc<E>>>>;

#[derive(Debug)]
pub struct BinaryCache<E> {
    dir: PathBuf,
    limit: u64,
    clock: AtomicU64,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    flights: Mutex<HashMap<String, Flight<E>>>,
    /// Binaries in memory, most recently run last.
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    limit: u64,
    bytes: u64,
    fds: lru::LruCache<String, (OwnedFd, u64)>,
}

const BINARY: &str = "fn";
const INDEX: &str = "index.json";
const META: &str = "meta.json";
const TEMP_PREFIX: &str = ".tmp-";

/// What a cache key is made of; the key is a hash of all of it.
pub fn key(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

impl<E: From<std::io::Error> + Send + Sync + 'static> BinaryCache<E> {
    /// Opens the cache in `dir`, removing leftovers of interrupted writes and loading the
    /// complete entries, oldest first.
    pub fn open(dir: &Path, limit: u64, memory_limit: u64) -> std::io::Result<BinaryCache<E>> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let mut found = Vec::new();
        for item in fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            if name.starts_with(TEMP_PREFIX) {
                fs::remove_dir_all(&path)?;
                continue;
            }
            match load(&name, &path) {
                Some((entry, mtime)) => found.push((mtime, entry)),
                None => {
                    tracing::warn!(entry = %path.display(), "removing an unreadable binary cache entry");
                    fs::remove_dir_all(&path)?;
                }
            }
        }
        found.sort_by_key(|(mtime, _)| *mtime);
        let cache = BinaryCache {
            dir: dir.to_owned(),
            limit,
            clock: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            loaded: Mutex::new(Loaded { limit: memory_limit, bytes: 0, fds: lru::LruCache::unbounded() }),
        };
        {
            let mut entries = cache.entries.lock().expect("fresh");
            for (_, entry) in found {
                entry.last_used.store(cache.tick(), Ordering::Relaxed);
                entries.insert(entry.key.clone(), Arc::new(entry));
            }
        }
        cache.evict();
        Ok(cache)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A descriptor a jail executes `entry`'s binary from: its sealed in-memory copy, made
    /// now if it is not among the most recently run.
    pub fn program(&self, entry: &Entry) -> std::io::Result<OwnedFd> {
        if let Some((fd, _)) = self.lock_loaded().fds.get(&entry.key) {
            return fd.try_clone();
        }
        let memfd = sealed_copy(&entry.binary)?;
        let program = memfd.try_clone()?;
        let mut loaded = self.lock_loaded();
        if let Some((_, bytes)) = loaded.fds.put(entry.key.clone(), (memfd, entry.size)) {
            loaded.bytes -= bytes;
        }
        loaded.bytes += entry.size;
        // The one just loaded stays, whatever its size.
        while loaded.bytes > loaded.limit && loaded.fds.len() > 1 {
            let Some((_, (_, bytes))) = loaded.fds.pop_lru() else { break };
            loaded.bytes -= bytes;
        }
        Ok(program)
    }

    /// Bytes and binaries held in memory.
    pub fn memory_usage(&self) -> (u64, usize) {
        let loaded = self.lock_loaded();
        (loaded.bytes, loaded.fds.len())
    }

    fn unload(&self, key: &str) {
        let mut loaded = self.lock_loaded();
        if let Some((_, bytes)) = loaded.fds.pop(key) {
            loaded.bytes -= bytes;
        }
    }

    /// The entry for `key`, marked as just used.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let entry = self.lock().get(key).cloned()?;
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        Some(entry)
    }

    /// The entry for `key`, built by `build` if missing; concurrent callers share one build.
    /// True when this call compiled it (it led the build, and the build did not fetch it).
    pub async fn get_or_build<F>(
        self: &Arc<Self>,
        key: &str,
        build: impl FnOnce() -> F,
    ) -> Result<(Arc<Entry>, bool), Arc<E>>
    where
        F: Future<Output = Result<Built, E>> + Send + 'static,
    {
        if let Some(entry) = self.get(key) {
            return Ok((entry, false));
        }
        let (flight, leader) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(flight) = flights.get(key) {
                (flight.clone(), false)
            } else {
                // Checked again under the flights lock: a build may have just finished.
                if let Some(entry) = self.get(key) {
                    return Ok((entry, false));
                }
                let cache = Arc::clone(self);
                let owned_key = key.to_owned();
                let job = build();
                let task = tokio::spawn(
                    async move {
                        let result = match job.await {
                            Ok(built) => {
                                let fetched = built.fetched;
                                cache.write(&owned_key, built).map(|entry| (entry, fetched)).map_err(|e| {
                                    tracing::error!(key = %owned_key, error = %e, "storing a built binary failed");
                                    Arc::new(E::from(e))
                                })
                            }
                            Err(e) => Err(Arc::new(e)),
                        };
                        cache.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&owned_key);
                        result
                    }
                    // Its log lines carry the id of the request that started it.
                    .instrument(tracing::Span::current()),
                );
                let flight: Flight<E> =
                    async move { task.await.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic())) }
                        .boxed()
                        .shared();
                flights.insert(key.to_owned(), flight.clone());
                (flight, true)
            }
        };
        flight.await.map(|(entry, fetched)| (entry, leader && !fetched))
    }

    /// Moves a built binary into the cache under `key`.
    fn write(&self, key: &str, built: Built) -> std::io::Result<Arc<Entry>> {
        let temp = self.dir.join(format!("{TEMP_PREFIX}{key}-{:x}", rand::random::<u32>()));
        fs::create_dir(&temp)?;
        let result = (|| {
            let binary = temp.join(BINARY);
            fs::rename(&built.binary, &binary)?;
            rustix::fs::chown(&binary, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))?;
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o555))?;
            fs::File::open(&binary)?.sync_all()?;
            write_synced(&temp.join(INDEX), &serde_json::to_vec(&built.index)?)?;
            write_synced(&temp.join(META), &serde_json::to_vec(&built.meta)?)?;
            fs::File::open(&temp)?.sync_all()?;
            let final_dir = self.dir.join(key);
            fs::rename(&temp, &final_dir)?;
            fs::File::open(&self.dir)?.sync_all()?;
            load(key, &final_dir)
                .map(|(entry, _)| entry)
                .ok_or_else(|| std::io::Error::other("entry unreadable after writing"))
        })();
        let entry = match result {
            Ok(entry) => entry,
            Err(e) => {
                let _ = fs::remove_dir_all(&temp);
                let _ = fs::remove_file(&built.binary);
                return Err(e);
            }
        };
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        let entry = Arc::new(entry);
        self.lock().insert(key.to_owned(), Arc::clone(&entry));
        self.evict();
        Ok(entry)
    }

    /// Removes least recently used entries that nobody holds until the cache fits.
    fn evict(&self) {
        let victims: Vec<Arc<Entry>> = {
            let mut entries = self.lock();
            let mut total: u64 = entries.values().map(|e| e.size).sum();
            if total <= self.limit {
                return;
            }
            let mut order: Vec<(u64, String)> =
                entries.iter().map(|(k, e)| (e.last_used.load(Ordering::Relaxed), k.clone())).collect();
            order.sort();
            let mut victims = Vec::new();
            for (_, key) in order {
                if total <= self.limit {
                    break;
                }
                // Pinned: a request is about to run it.
                if entries.get(&key).is_some_and(|e| Arc::strong_count(e) > 1) {
                    continue;
                }
                if let Some(entry) = entries.remove(&key) {
                    total -= entry.size;
                    victims.push(entry);
                }
            }
            victims
        };
        for entry in victims {
            tracing::info!(key = %entry.key, repo = %entry.meta.repo, "evicting a binary from the cache");
            self.unload(&entry.key);
            remove_entry_dir(&self.dir.join(&entry.key));
        }
    }

    /// Drops every entry built from `repo` (`cache_bust`). Requests running one keep
    /// their open descriptor to it.
    pub fn remove_repo(&self, repo: &str) {
        let removed: Vec<String> = {
            let mut entries = self.lock();
            let keys: Vec<String> = entries.values().filter(|e| e.meta.repo == repo).map(|e| e.key.clone()).collect();
            keys.into_iter().filter(|k| entries.remove(k).is_some()).collect()
        };
        for key in removed {
            self.unload(&key);
            remove_entry_dir(&self.dir.join(key));
        }
    }

    /// Bytes held and entries, for statistics and tests.
    pub fn usage(&self) -> (u64, usize) {
        let entries = self.lock();
        (entries.values().map(|e| e.size).sum(), entries.len())
    }
}

/// Renames the entry out of the way first, so it disappears atomically even if removing
/// its files is interrupted.
fn remove_entry_dir(dir: &Path) {
    let doomed = dir.with_file_name(format!("{TEMP_PREFIX}gone-{:x}", rand::random::<u64>()));
    if fs::rename(dir, &doomed).is_ok() {
        let _ = fs::remove_dir_all(&doomed);
    }
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn load(key: &str, dir: &Path) -> Option<(Entry, std::time::SystemTime)> {
    let binary = dir.join(BINARY);
    // A binary, or an interpreted function's installed package (a directory).
    let meta_file = fs::symlink_metadata(&binary).ok().filter(|m| m.is_file() || m.is_dir())?;
    let size = if meta_file.is_dir() { crate::toolchain::tree_size(&binary).ok()? } else { meta_file.len() };
    let index = serde_json::from_slice(&fs::read(dir.join(INDEX)).ok()?).ok()?;
    let meta = serde_json::from_slice(&fs::read(dir.join(META)).ok()?).ok()?;
    let entry = Entry { key: key.to_owned(), binary, index, meta, size, last_used: AtomicU64::new(0) };
    Some((entry, meta_file.modified().ok()?))
}

/// A sealed in-memory copy of the binary at `path`: mode 0555, and no one (not even root,
/// not even through `/proc/<pid>/exe`) can write, grow or shrink it, or unseal it.
fn sealed_copy(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC says so explicitly where the kernel knows it (6.3+; vm.memfd_noexec).
    let memfd = match rustix::fs::memfd_create("skyisland-fn", flags | MemfdFlags::EXEC) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create("skyisland-fn", flags)?,
        other => other?,
    };
    let mut copy = fs::File::from(memfd);
    std::io::copy(&mut fs::File::open(path)?, &mut copy)?;
    rustix::fs::fchmod(&copy, rustix::fs::Mode::from_raw_mode(0o555))?;
    rustix::fs::fcntl_add_seals(&copy, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
    Ok(copy.into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct TestError(String);

    impl From<std::io::Error> for TestError {
        fn from(e: std::io::Error) -> Self {
            TestError(e.to_string())
        }
    }

    fn built(dir: &Path, name: &str, size: usize) -> Built {
        let binary = dir.join(name);
        fs::write(&binary, vec![b'x'; size]).unwrap();
        Built {
            binary,
            index: Index { name: "p".into(), funcs: vec!["F".into()], ..Index::default() },
            meta: Meta {
                repo: format!("example.test/o/{name}"),
                commit: "c".into(),
                subdir: String::new(),
                call: None,
            },
            fetched: false,
        }
    }

    #[tokio::test]
    async fn concurrent_misses_build_once_and_entries_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let cache: Arc<BinaryCache<TestError>> =
            Arc::new(BinaryCache::open(&dir.path().join("bin"), 1 << 20, 1 << 20).unwrap());
        let builds = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let cache = Arc::clone(&cache);
            let builds = Arc::clone(&builds);
            let scratch = dir.path().to_owned();
            waiters.push(tokio::spawn(async move {
                cache
                    .get_or_build("k1", move || async move {
                        builds.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(built(&scratch, "a", 10))
                    })
                    .await
                    .map(|(e, _)| e.key.clone())
            }));
        }
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap(), "k1");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        drop(cache);
        fs::create_dir(dir.path().join("bin/.tmp-k2-1")).unwrap();
        let reopened: BinaryCache<TestError> = BinaryCache::open(&dir.path().join("bin"), 1 << 20, 1 << 20).unwrap();
        assert!(reopened.get("k1").is_some_and(|e| e.index.dispatchable("F")));
        assert!(!dir.path().join("bin/.tmp-k2-1").exists(), "half-written entries are removed");
    }

    #[tokio::test]
    async fn failures_are_shared_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache: Arc<BinaryCache<TestError>> = Arc::new(BinaryCache::open(dir.path(), 1 << 20, 1 << 20).unwrap());
        let err = cache.get_or_build("k", || async { Err(TestError("compile error".into())) }).await.unwrap_err();
        assert_eq!(*err, TestError("compile error".into()));
        assert!(cache.get("k").is_none());
    }

    #[tokio::test]
    async fn least_recently_used_unpinned_entries_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache: Arc<BinaryCache<TestError>> =
            Arc::new(BinaryCache::open(&dir.path().join("bin"), 250, 250).unwrap());
        for name in ["a", "b"] {
            let scratch = dir.path().to_owned();
            cache.get_or_build(name, move || async move { Ok(built(&scratch, name, 100)) }).await.unwrap();
        }
        let pinned = cache.get("a").unwrap(); // a is now the most recent, and held
        let scratch = dir.path().to_owned();
        cache.get_or_build("c", move || async move { Ok(built(&scratch, "c", 100)) }).await.unwrap();
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!(cache.usage(), (200, 2));
        drop(pinned);
        cache.remove_repo("example.test/o/a");
        assert!(cache.get("a").is_none());
        assert!(!dir.path().join("bin/a").exists());
    }
}
