//! API keys for the function endpoint: the configured ones (`auth.api_keys`) and the
//! ones made by `skyisland api-key new`, of which only a SHA-256 hash is kept, in
//! `<data_dir>/api-keys.json` (written atomically; the server notices changes within a
//! second). A key is checked against every known hash in constant time, whatever the
//! guess. Each key may carry its own rate; otherwise `[rate_limit]` applies per key.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use skyisland_config::Config;

const FILE: &str = "api-keys.json";
/// How often the server looks for a changed keys file.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// One stored key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredKey {
    /// Public: shown in lists and logs, used to revoke.
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_at: u64,
    /// This key's own rate (requests per second) and burst, instead of `[rate_limit]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<StoredKey>,
}

/// The keys file in `data_dir`.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

pub fn read_key_file(path: &Path) -> std::io::Result<KeyFile> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(e),
    }
}

/// Writes the keys file readable by root only, atomically.
pub fn write_key_file(path: &Path, file: &KeyFile) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    skyisland_config::atomic::write(path, &data, 0o600)
}

/// Holds the keys file's lock (`api-keys.lock` beside it) until dropped: whoever changes
/// the file (the CLI, a server's admin API) reads, changes and writes it under the lock,
/// so two changes at once cannot lose one.
pub fn lock_key_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.with_extension("lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(lock)
}

/// A new key: the secret (shown once) and what is stored.
pub fn new_key(name: &str, per_second: Option<f64>, burst: Option<u32>) -> (String, StoredKey) {
    let id = format!("{:08x}", rand::random::<u32>());
    let secret = format!("sky_{id}_{:032x}", rand::random::<u128>());
    let stored = StoredKey {
        id,
        name: name.to_owned(),
        sha256: hash(&secret),
        created_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        per_second,
        burst,
    };
    (secret, stored)
}

/// The public id of a key configured in `auth.api_keys` (from its digest).
fn configured_id(key: &str) -> String {
    format!("config-{}", &hash(key)[..8])
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A known key, as the server holds it.
#[derive(Debug)]
pub struct Known {
    pub id: String,
    digest: [u8; 32],
    /// Its bucket, when it is rate limited.
    pub limiter: Option<DefaultDirectRateLimiter>,
}

/// A token bucket's quota: `per_second` on average, `burst` at once.
pub fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    Some(Quota::with_period(Duration::from_secs_f64(1.0 / per_second))?.allow_burst(NonZeroU32::new(burst)?))
}

/// The server's view of the keys, reloaded when the file changes.
#[derive(Debug)]
pub struct ApiKeys {
    config: Arc<Config>,
    path: PathBuf,
    state: Mutex<State>,
    /// When each key (by id) was last used, since start-up (Unix time, ms).
    used: Mutex<HashMap<String, u64>>,
}

/// A key as the admin API lists it: never its secret nor its hash.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// "file" (made by the API or `skyisland api-key new`; can be revoked) or "config"
    /// (`auth.api_keys`; changed in the configuration only).
    pub source: &'static str,
    pub created_at: Option<u64>,
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    /// Since this server started (Unix time, ms).
    pub last_used_ms: Option<u64>,
}

#[derive(Debug)]
struct State {
    keys: Arc<Vec<Known>>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl ApiKeys {
    pub fn open(config: Arc<Config>) -> std::io::Result<ApiKeys> {
        let path = key_file(&config.data_dir);
        let keys = ApiKeys {
            state: Mutex::new(State { keys: Arc::default(), modified: None, checked: Instant::now() }),
            path,
            config,
            used: Mutex::default(),
        };
        keys.reload()?;
        Ok(keys)
    }

    fn reload(&self) -> std::io::Result<()> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let file = read_key_file(&self.path)?;
        let config = &self.config;
        let limiter = |per_second: Option<f64>, burst: Option<u32>| {
            let quota = match per_second {
                Some(rate) => quota(rate, burst.unwrap_or(rate.ceil() as u32)),
                None => {
                    let rate = config.rate_limit.per_second?;
                    quota(rate, config.rate_limit.burst_or_default(rate))
                }
            };
            Some(RateLimiter::direct(quota?))
        };
        let mut keys = Vec::new();
        for key in &config.auth.api_keys {
            let digest = Sha256::digest(key.as_bytes()).into();
            keys.push(Known { id: configured_id(key), digest, limiter: limiter(None, None) });
        }
        for key in &file.keys {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&key.sha256, &mut digest).is_err() {
                tracing::error!(id = %key.id, "ignoring an API key whose hash is not 64 hex digits");
                continue;
            }
            keys.push(Known { id: key.id.clone(), digest, limiter: limiter(key.per_second, key.burst) });
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.modified.is_some() || modified.is_some() {
            tracing::info!(keys = keys.len(), "loaded the API keys");
        }
        *state = State { keys: Arc::new(keys), modified, checked: Instant::now() };
        Ok(())
    }

    fn current(&self) -> Arc<Vec<Known>> {
        let (keys, stale) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let stale = state.checked.elapsed() >= RELOAD_EVERY && {
                state.checked = Instant::now();
                std::fs::metadata(&self.path).and_then(|m| m.modified()).ok() != state.modified
            };
            (Arc::clone(&state.keys), stale)
        };
        if stale {
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "reloading the API keys failed; keeping the ones loaded before");
            }
            return Arc::clone(&self.state.lock().unwrap_or_else(|p| p.into_inner()).keys);
        }
        keys
    }

    /// Whether there are any keys at all.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The known key `given` is, compared with every known key in constant time.
    pub fn find(&self, given: &str) -> Option<(Arc<Vec<Known>>, usize)> {
        let keys = self.current();
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for (i, key) in keys.iter().enumerate() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(keys[i].id.clone(), crate::work::now_ms());
        }
        found.map(|i| (keys, i))
    }

    /// Every key: the configured ones, then the file's.
    pub fn list(&self) -> std::io::Result<Vec<KeyView>> {
        let file = read_key_file(&self.path)?;
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let configured = self.config.auth.api_keys.iter().map(|key| {
            let id = configured_id(key);
            KeyView {
                last_used_ms: used.get(&id).copied(),
                id,
                name: "auth.api_keys".into(),
                source: "config",
                created_at: None,
                per_second: None,
                burst: None,
            }
        });
        let stored = file.keys.into_iter().map(|key| KeyView {
            last_used_ms: used.get(&key.id).copied(),
            id: key.id,
            name: key.name,
            source: "file",
            created_at: Some(key.created_at),
            per_second: key.per_second,
            burst: key.burst,
        });
        Ok(configured.chain(stored).collect())
    }

    /// Makes a key, stores its hash and answers its secret (shown this once) and its id;
    /// in use at once.
    pub fn create(&self, name: &str, per_second: Option<f64>, burst: Option<u32>) -> std::io::Result<(String, String)> {
        let _lock = lock_key_file(&self.path)?;
        let mut file = read_key_file(&self.path)?;
        let (secret, stored) = new_key(name, per_second, burst);
        let id = stored.id.clone();
        file.keys.push(stored);
        write_key_file(&self.path, &file)?;
        self.reload()?;
        Ok((secret, id))
    }

    /// Revokes a stored key at once; false when there is none with that id.
    pub fn revoke(&self, id: &str) -> std::io::Result<bool> {
        let _lock = lock_key_file(&self.path)?;
        let mut file = read_key_file(&self.path)?;
        let before = file.keys.len();
        file.keys.retain(|key| key.id != id);
        if file.keys.len() == before {
            return Ok(false);
        }
        write_key_file(&self.path, &file)?;
        self.reload()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_are_found_by_their_secret_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(Config {
            data_dir: dir.path().to_owned(),
            auth: skyisland_config::Auth { api_keys: vec!["configured-key-0123456789".into()], ..Default::default() },
            ..Config::default()
        });
        let keys = ApiKeys::open(Arc::clone(&config)).unwrap();
        assert!(keys.find("configured-key-0123456789").is_some());
        assert!(keys.find("configured-key-012345678").is_none());
        let (secret, stored) = new_key("ci", Some(2.0), None);
        assert!(!stored.sha256.contains(&secret) && !secret.is_empty());
        write_key_file(&key_file(dir.path()), &KeyFile { keys: vec![stored.clone()] }).unwrap();
        keys.reload().unwrap();
        let (found, i) = keys.find(&secret).expect("the new key");
        assert_eq!(found[i].id, stored.id);
        let limiter = found[i].limiter.as_ref().expect("its own rate");
        assert!(limiter.check().is_ok() && limiter.check().is_ok());
        assert!(limiter.check().is_err(), "burst defaults to the rate rounded up");
    }
}
