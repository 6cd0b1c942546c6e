//! The Redis tier, shared by the servers behind one load balancer: their request-cache
//! results, and the binaries they built (with their indexes), so that a result computed
//! on one server is a hit on the others and a binary built on one is not rebuilt on the
//! others. `cache_bust` on any server drops the repository's shared results and binaries
//! and tells the other servers (pub/sub) to drop theirs.
//!
//! Redis is never needed: while it is unreachable every operation returns at once with
//! nothing (the server works from its local caches), the outage is logged once and shown
//! by the health endpoint, and a background task reconnects with backoff. A bust made
//! while Redis is unreachable is kept and carried out once it is back; and since busts
//! the other servers made meanwhile never reached this one, a reconnected server drops
//! its in-memory results (they were stale for at most the outage).
//!
//! Keys (under the configured prefix): `result:<key>` (JSON, expiring with the result),
//! `binary:<key>` (a hash: `info` JSON and `data` bytes), and per repository the sets
//! `repo-results:<repo>` and `repo-binaries:<repo>` naming them for `cache_bust`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use serde::Serialize;
use tokio::sync::Notify;

use crate::results::{Results, Stored};

/// Operations on a request's path give up after this: no request waits longer because of
/// Redis (a binary not fetched in time is built here instead).
const QUICK: Duration = Duration::from_millis(500);
/// Storing a binary, in the background, may take longer.
const SLOW: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts a message on the bust channel that says a repository's current commit moved
/// (the rest is the sending server and the repository, a line each); other messages are a
/// repository whose results to drop.
/// (A newline: no import path has one.)
const MOVED: &str = "\nmoved\n";

#[derive(Debug)]
pub struct Shared {
    client: Client,
    /// The URL without its password, for logs and health.
    shown_url: String,
    prefix: String,
    connection: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// Wakes the maintenance task when an operation finds Redis gone.
    lost: Notify,
    status: Mutex<Status>,
    /// Busts that did not reach Redis (repository → its key, and whether its binaries go
    /// too), to carry out when it is back.
    pending_busts: Mutex<BTreeMap<String, (String, bool)>>,
    /// This server, in its own messages (it ignores them when they come back).
    origin: String,
}

/// What the health endpoint says about Redis.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub url: String,
    pub connected: bool,
    /// Unix time (s) of the last change.
    pub since: u64,
    pub last_error: Option<String>,
}

impl Shared {
    /// Checks the URL; connects in the background ([`Shared::maintain`]).
    pub fn new(url: &str, prefix: &str) -> Result<Arc<Shared>, String> {
        let client = Client::open(url).map_err(|e| format!("cache.redis_url: {e}"))?;
        let shown_url = hide_password(url);
        Ok(Arc::new(Shared {
            client,
            status: Mutex::new(Status { url: shown_url.clone(), ..Status::default() }),
            shown_url,
            prefix: prefix.to_owned(),
            connection: RwLock::new(None),
            up: AtomicBool::new(false),
            lost: Notify::new(),
            pending_busts: Mutex::default(),
            origin: format!("{:016x}", rand::random::<u64>()),
        }))
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    fn bust_channel(&self) -> String {
        format!("{}:bust", self.prefix)
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.connection.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_status(&self, connected: bool, error: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.connected = connected;
        status.since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if error.is_some() {
            status.last_error = error;
        }
        metrics::gauge!("skyisland_redis_up").set(if connected { 1.0 } else { 0.0 });
    }

    /// An operation found Redis unreachable: stop using it until it answers again, and
    /// wake the maintenance task to reconnect.
    fn lose(&self, error: &str) {
        if self.mark_down(error) {
            self.lost.notify_one();
        }
    }

    /// Stops using Redis; true if it was in use.
    fn mark_down(&self, error: &str) -> bool {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up {
            tracing::warn!(redis = %self.shown_url, %error, "Redis is unreachable; serving from the local caches until it is back");
            self.set_status(false, Some(error.to_owned()));
        }
        was_up
    }

    /// Runs a command with a deadline; any failure marks Redis as lost.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        limit: Duration,
        f: impl AsyncFnOnce(MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        self.run_with(what, limit, true, f).await
    }

    /// [`Shared::run`]; a command that runs out of time marks Redis as lost only if
    /// `timeout_is_loss` (a large transfer may just be slow).
    async fn run_with<T: redis::FromRedisValue>(
        &self,
        what: &str,
        limit: Duration,
        timeout_is_loss: bool,
        f: impl AsyncFnOnce(MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let connection = self.connection()?;
        match tokio::time::timeout(limit, f(connection)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) if !is_connection_error(&e) => {
                tracing::warn!(redis = %self.shown_url, error = %e, "Redis {what} failed");
                None
            }
            Ok(Err(e)) => {
                self.lose(&e.to_string());
                None
            }
            Err(_) if timeout_is_loss => {
                self.lose(&format!("{what} took longer than {limit:?}"));
                None
            }
            Err(_) => {
                tracing::info!(redis = %self.shown_url, "Redis {what} took longer than {limit:?}; going without");
                None
            }
        }
    }

    /// Connects, keeps the connection checked, subscribes to busts (dropping the busted
    /// repositories' results from `results`), and reconnects with backoff. Runs until the
    /// process ends.
    pub async fn maintain(self: Arc<Self>, results: Arc<Results>, repos: Arc<crate::repos::Repos>) {
        let mut backoff = BACKOFF_MIN;
        let mut reported = false;
        loop {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(SLOW));
            let connected = async {
                let connection = self.client.get_multiplexed_async_connection_with_config(&config).await?;
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(self.bust_channel()).await?;
                redis::RedisResult::Ok((connection, pubsub))
            };
            let (mut connection, mut pubsub) = match tokio::time::timeout(Duration::from_secs(3), connected)
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting")))
                }) {
                Ok(both) => both,
                Err(e) => {
                    if !reported {
                        tracing::warn!(redis = %self.shown_url, error = %e, "cannot reach Redis; serving from the local caches and retrying");
                        self.set_status(false, Some(e.to_string()));
                        reported = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            *self.connection.write().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
            self.up.store(true, Ordering::Release);
            self.set_status(true, None);
            // Busts by other servers may have been missed while we were away.
            let dropped = results.clear();
            tracing::info!(redis = %self.shown_url, dropped, "connected to Redis; sharing results and binaries");
            backoff = BACKOFF_MIN;
            self.replay_busts().await;

            let mut ping = tokio::time::interval(PING_EVERY);
            let mut messages = pubsub.on_message();
            let reason = loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => {
                            if let Ok(text) = message.get_payload::<String>() {
                                match text.strip_prefix(MOVED).and_then(|t| t.split_once('\n')) {
                                    Some((origin, _)) if origin == self.origin => {}
                                    Some((_, repo)) => {
                                        repos.forget_current(repo).await;
                                        tracing::debug!(%repo, "another server moved a repository's current commit");
                                    }
                                    None => {
                                        let dropped = results.bust_repo(&text);
                                        tracing::debug!(repo = %text, dropped, "another server busted a repository");
                                    }
                                }
                            }
                        }
                        None => break "the subscription ended".to_owned(),
                    },
                    _ = ping.tick() => {
                        let pong = tokio::time::timeout(QUICK, redis::cmd("PING").query_async::<String>(&mut connection)).await;
                        match pong {
                            Ok(Ok(_)) => self.replay_busts().await,
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => break format!("PING took longer than {QUICK:?}"),
                        }
                    }
                                        // (A wake-up left from an earlier connection finds Redis up: ignored.)
                    () = self.lost.notified() => if !self.is_up() {
                        break "an operation failed".to_owned();
                    },
                }
            };
            drop(messages);
            *self.connection.write().unwrap_or_else(|p| p.into_inner()) = None;
            // Not `lose`: its wake-up would be left for the next connection to find.
            self.mark_down(&reason);
            reported = true;
            tokio::time::sleep(BACKOFF_MIN).await;
        }
    }

    pub async fn get_result(&self, key: &str) -> Option<Stored> {
        let key = self.key("result", key);
        let bytes: Option<Vec<u8>> =
            self.run("GET", QUICK, async |mut c| redis::cmd("GET").arg(&key).query_async(&mut c).await).await?;
        serde_json::from_slice(&bytes?).ok()
    }

    pub async fn put_result(&self, key: &str, stored: &Stored, repo_key: &str) {
        let Ok(json) = serde_json::to_vec(stored) else { return };
        let ttl_ms = stored.expires_at_ms.saturating_sub(crate::results::now_ms()).max(1);
        let key = self.key("result", key);
        let set = self.key("repo-results", repo_key);
        self.run::<()>("SET", QUICK, async |mut c| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(&set)
                .arg(&key)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&set)
                .arg(ttl_ms)
                .arg("GT")
                .ignore()
                .cmd("PEXPIRE")
                .arg(&set)
                .arg(ttl_ms)
                .arg("NX")
                .ignore()
                .query_async(&mut c)
                .await
        })
        .await;
    }

    /// A binary another server built: its info (JSON) and its bytes.
    pub async fn get_binary(&self, key: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let key = self.key("binary", key);
        let (info, data): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .run_with("HMGET", QUICK, false, async |mut c| {
                redis::cmd("HMGET").arg(&key).arg("info").arg("data").query_async(&mut c).await
            })
            .await?;
        Some((info?, data?))
    }

    pub async fn put_binary(&self, key: &str, info: &[u8], data: &[u8], repo_key: &str, ttl: Duration) {
        let key = self.key("binary", key);
        let set = self.key("repo-binaries", repo_key);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run::<()>("HSET", SLOW, async |mut c| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("info")
                .arg(info)
                .arg("data")
                .arg(data)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(&set)
                .arg(&key)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&set)
                .arg(ttl_ms)
                .ignore()
                .query_async(&mut c)
                .await
        })
        .await;
    }

    /// Drops the repository's shared results (and its binaries, with `binaries`) and tells
    /// the other servers; while Redis is unreachable, keeps the bust for when it is back.
    pub async fn bust_repo(&self, repo: &str, repo_key: &str, binaries: bool) {
        // (A failure with Redis up, such as a refused script, was logged and is not retried.)
        if self.bust_now(repo, repo_key, binaries).await.is_none() && !self.is_up() {
            tracing::info!(%repo, "Redis is unreachable; the bust reaches the other servers once it is back");
            let mut pending = self.pending();
            let entry = pending.entry(repo.to_owned()).or_insert_with(|| (repo_key.to_owned(), false));
            entry.1 |= binaries;
        }
    }

    /// Tells the other servers that `repo`'s current commit moved (a push): they forget
    /// theirs, so that their next call without a version fetches it. (Lost while Redis is
    /// unreachable: they go on with the commit they had, as after any missed push.)
    pub async fn announce_moved(&self, repo: &str) {
        let channel = self.bust_channel();
        let message = format!("{MOVED}{}\n{repo}", self.origin);
        self.run::<i64>("announcing a push", QUICK, async |mut c| {
            redis::cmd("PUBLISH").arg(&channel).arg(&message).query_async(&mut c).await
        })
        .await;
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, bool)>> {
        self.pending_busts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out the busts Redis missed.
    async fn replay_busts(&self) {
        loop {
            let Some((repo, (repo_key, binaries))) = self.pending().pop_first() else { return };
            if self.bust_now(&repo, &repo_key, binaries).await.is_some() {
                tracing::info!(%repo, "carried out a bust made while Redis was unreachable");
            } else if !self.is_up() {
                // Unreachable again: keep it for the next connection.
                self.pending().insert(repo, (repo_key, binaries));
                return;
            }
        }
    }

    async fn bust_now(&self, repo: &str, repo_key: &str, with_binaries: bool) -> Option<i64> {
        let results = self.key("repo-results", repo_key);
        // Without the binaries: the results' set twice (the script takes two sets).
        let binaries = if with_binaries { self.key("repo-binaries", repo_key) } else { results.clone() };
        let channel = self.bust_channel();
        // One script, so that nothing is added between reading the sets and deleting.
        let script = redis::Script::new(
            r"for _, set in ipairs(KEYS) do
                local members = redis.call('SMEMBERS', set)
                for i = 1, #members, 500 do
                    redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
                end
                redis.call('DEL', set)
              end
              return redis.call('PUBLISH', ARGV[1], ARGV[2])",
        );
        self.run::<i64>("cache bust", QUICK, async |mut c| {
            script.key(&results).key(&binaries).arg(&channel).arg(repo).invoke_async(&mut c).await
        })
        .await
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(hide_password("redis://:pw@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(hide_password("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(hide_password("redis://127.0.0.1"), "redis://127.0.0.1");
    }
}
