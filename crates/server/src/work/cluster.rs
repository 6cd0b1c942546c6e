//! The cluster engine: jobs and schedules in Redis, shared by every server configured with
//! the same Redis and prefix.
//!
//! - A job is a hash `P:job:ID` (`json`: the whole job; `attempt`: the number of the attempt
//!   that owns it). Every change of a job after its creation is a compare-and-set on
//!   `attempt` (the `UPDATE` script), so a server that was taken over can no longer write.
//! - The queue is the stream `P:stream` with the consumer group `workers`; each server is a
//!   consumer (a random name per process). An entry is acknowledged (and deleted) only in
//!   the transaction that stores its attempt's end. A server working on an entry claims it
//!   again every third of `[queue] visibility_timeout`; an entry idle for longer belongs to
//!   a server that died, and the next server to look takes it over (`XAUTOCLAIM`), records
//!   the cut-short attempt and runs the job again.
//! - Retries wait in the sorted set `P:delayed` until due, then go back into the stream.
//! - Callbacks due are in `P:callbacks`; a server takes a batch by pushing their time a
//!   minute ahead (a lease), so each is sent by one server at a time.
//! - Schedules are four hashes by name (`spec`, `next`, `paused`, `created`); a tick is run
//!   by the script that moves `next` on, only if it is still the tick the server saw and
//!   the key `P:tick:NAME:TICK` did not exist: exactly one server runs each tick.
//! - Not jobs: the console's list of functions is shared in the hash `P:functions` (a field
//!   `<server> <url>` per server and function; see `catalog::share`).
//!
//! Redis's own durability applies (`appendonly yes` with `appendfsync always` for nothing
//! accepted to be lost when Redis itself dies).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio::sync::Mutex;

use super::store::{Callback, Ended, Inserted, Job, Kind, ScheduleRow, Status, StoreError, end_attempt, interrupted};

/// Every Redis operation of the queue gets this long.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a server holds callbacks it took before another may take them.
const CALLBACK_LEASE_MS: u64 = 60_000;

/// Inserts job ARGV[2] (json ARGV[3], kind ARGV[4], created ARGV[5], schedule ARGV[8]):
/// the part shared by the insert and tick scripts. `p` is the prefix.
const INSERT_JOB: &str = r"
local function insert_job(p, id, json, kind, created, schedule)
  redis.call('HSET', p..':job:'..id, 'json', json, 'attempt', '0')
  redis.call('ZADD', p..':index:'..kind, created, id)
  if schedule ~= '' then redis.call('ZADD', p..':index:schedule:'..schedule, created, id) end
  redis.call('XADD', p..':stream', '*', 'id', id)
end
";

/// ARGV: prefix, id, json, kind, created_ms, idempotency key or '', max_queued, schedule or
/// '', seconds to keep the key. Returns {'new'|'existing'|'full', json or count}.
const INSERT: &str = r"
local p = ARGV[1]
if ARGV[6] ~= '' then
  local existing = redis.call('GET', p..':idem:'..ARGV[6])
  if existing then
    local json = redis.call('HGET', p..':job:'..existing, 'json')
    if json then return {'existing', json} end
  end
end
local queued = redis.call('XLEN', p..':stream') + redis.call('ZCARD', p..':delayed')
if queued >= tonumber(ARGV[7]) then return {'full', tostring(queued)} end
insert_job(p, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[8])
if ARGV[6] ~= '' then redis.call('SET', p..':idem:'..ARGV[6], ARGV[2], 'EX', ARGV[9]) end
return {'new', ''}
";

/// ARGV: prefix, consumer, now_ms, min idle ms. Moves due retries into the stream, then
/// reads a new entry, or takes over one idle for longer than the visibility timeout.
/// Returns {entry id, job id, '0' new | '1' taken over} or false.
const NEXT: &str = r"
local p = ARGV[1]
local s = p..':stream'
local due = redis.call('ZRANGEBYSCORE', p..':delayed', '-inf', ARGV[3], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', p..':delayed', id)
  redis.call('XADD', s, '*', 'id', id)
end
local read = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', 1, 'STREAMS', s, '>')
if read then
  local entry = read[1][2][1]
  if entry then return {entry[1], entry[2][2], '0'} end
end
local claimed = redis.call('XAUTOCLAIM', s, 'workers', ARGV[2], ARGV[4], '0-0', 'COUNT', 10)
for _, entry in ipairs(claimed[2]) do
  if entry and entry[2] then return {entry[1], entry[2][2], '1'} end
end
return false
";

/// ARGV: prefix, id, expected attempt, new attempt, json, entry to acknowledge or '',
/// retry at or '', callback at or '', seconds to keep or ''. 0 when the job is not the
/// expected attempt's any more.
const UPDATE: &str = r"
local p = ARGV[1]
local k = p..':job:'..ARGV[2]
if redis.call('HGET', k, 'attempt') ~= ARGV[3] then return 0 end
redis.call('HSET', k, 'json', ARGV[5], 'attempt', ARGV[4])
if ARGV[7] ~= '' then redis.call('ZADD', p..':delayed', ARGV[7], ARGV[2]) end
if ARGV[8] ~= '' then redis.call('ZADD', p..':callbacks', ARGV[8], ARGV[2]) end
if ARGV[9] ~= '' then redis.call('EXPIRE', k, ARGV[9]) end
if ARGV[6] ~= '' then
  redis.call('XACK', p..':stream', 'workers', ARGV[6])
  redis.call('XDEL', p..':stream', ARGV[6])
end
return 1
";

/// ARGV: prefix, now_ms, lease until, limit. The ids of callbacks due, leased.
const CALLBACKS: &str = r"
local ids = redis.call('ZRANGEBYSCORE', ARGV[1]..':callbacks', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do redis.call('ZADD', ARGV[1]..':callbacks', ARGV[3], id) end
return ids
";

/// ARGV: prefix, name, expected next, tick or '', next, then (with a tick) id, json,
/// created. 1 when this call ran (or skipped) the tick.
const TICK: &str = r"
local p = ARGV[1]
local name = ARGV[2]
if redis.call('HGET', p..':schedule:next', name) ~= ARGV[3] then return 0 end
if redis.call('HGET', p..':schedule:paused', name) == '1' then return 0 end
if ARGV[4] ~= '' then
  if not redis.call('SET', p..':tick:'..name..':'..ARGV[4], '1', 'NX', 'EX', 604800) then return 0 end
  insert_job(p, ARGV[6], ARGV[7], 'call', ARGV[8], name)
end
redis.call('HSET', p..':schedule:next', name, ARGV[5])
return 1
";

#[derive(Debug)]
pub struct RedisQueue {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    /// This server, as a consumer of the stream.
    consumer: String,
    visibility: Duration,
    max_attempts: u32,
    keep: Duration,
}

fn scripts(body: &str) -> redis::Script {
    redis::Script::new(&format!("{INSERT_JOB}\n{body}"))
}

impl RedisQueue {
    pub fn open(
        url: &str,
        prefix: &str,
        visibility: Duration,
        max_attempts: u32,
        keep: Duration,
    ) -> Result<RedisQueue, StoreError> {
        Ok(RedisQueue {
            client: redis::Client::open(url)?,
            connection: Mutex::new(None),
            prefix: format!("{prefix}:queue"),
            consumer: format!("server-{:016x}", rand::random::<u64>()),
            visibility,
            max_attempts,
            keep,
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// The shared connection, made (with the consumer group) when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = held.as_ref() {
            return Ok(connection.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(DEADLINE));
        let mut connection = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key("stream"))
            .arg("workers")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut connection)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
            _ => {}
        }
        *held = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `f` on the connection, within [`DEADLINE`]; a failed connection is dropped, to
    /// be made again by the next operation.
    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let connection = self.connection().await?;
        let result = match tokio::time::timeout(DEADLINE, f(connection)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("Redis did not answer within {DEADLINE:?}"),
            ))),
        };
        if let Err(e) = &result
            && (e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error())
        {
            *self.connection.lock().await = None;
        }
        Ok(result?)
    }

    pub async fn insert(&self, job: Job, max_queued: u64) -> Result<Inserted, StoreError> {
        let json = serde_json::to_string(&job)?;
        let kind = kind_name(job.kind);
        let keep = self.keep.as_secs().max(1);
        let (what, data): (String, String) = self
            .run(async |mut c| {
                scripts(INSERT)
                    .arg(&self.prefix)
                    .arg(&job.id)
                    .arg(&json)
                    .arg(kind)
                    .arg(job.created_ms)
                    .arg(job.idempotency_key.as_deref().unwrap_or(""))
                    .arg(max_queued)
                    .arg(job.schedule.as_deref().unwrap_or(""))
                    .arg(keep)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match what.as_str() {
            "existing" => Inserted::Existing(serde_json::from_str(&data)?),
            "full" => Inserted::Full(data.parse().unwrap_or(max_queued)),
            _ => Inserted::New(job),
        })
    }

    /// The job and the attempt that owns it.
    async fn load(&self, id: &str) -> Result<Option<(Job, String)>, StoreError> {
        let key = self.key(&format!("job:{id}"));
        let (json, attempt): (Option<String>, Option<String>) = self
            .run(async |mut c| redis::cmd("HMGET").arg(&key).arg("json").arg("attempt").query_async(&mut c).await)
            .await?;
        match (json, attempt) {
            (Some(json), Some(attempt)) => Ok(Some((serde_json::from_str(&json)?, attempt))),
            _ => Ok(None),
        }
    }

    pub async fn get(&self, id: String) -> Result<Option<Job>, StoreError> {
        Ok(self.load(&id).await?.map(|(job, _)| job))
    }

    pub async fn list(
        &self,
        kind: Kind,
        status: Option<Status>,
        schedule: Option<String>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let index = match &schedule {
            Some(name) => self.key(&format!("index:schedule:{name}")),
            None => self.key(&format!("index:{}", kind_name(kind))),
        };
        const BATCH: isize = 200;
        let mut found = Vec::new();
        let mut start = 0;
        // Newest first, a batch at a time, until enough match (or 10 000 were looked at).
        while found.len() < limit as usize && start < 10_000 {
            let ids: Vec<String> = self
                .run(async |mut c| {
                    redis::cmd("ZREVRANGE").arg(&index).arg(start).arg(start + BATCH - 1).query_async(&mut c).await
                })
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGET").arg(self.key(&format!("job:{id}"))).arg("json");
            }
            let jsons: Vec<Option<String>> = self.run(async |mut c| pipe.query_async(&mut c).await).await?;
            for json in jsons.into_iter().flatten() {
                let job: Job = serde_json::from_str(&json)?;
                if job.kind == kind && status.is_none_or(|s| s == job.status) && found.len() < limit as usize {
                    found.push(job);
                }
            }
            if ids.len() < BATCH as usize {
                break;
            }
            start += BATCH;
        }
        Ok(found)
    }

    /// Stores `job` if `expected` still owns it, as attempt `attempt`, acknowledging
    /// `ack`, queueing a retry at `retry`, a callback at `callback`, and keeping it `keep`.
    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        job: &Job,
        expected: &str,
        attempt: usize,
        ack: Option<&str>,
        retry: Option<u64>,
        callback: Option<u64>,
        keep: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(job)?;
        let optional = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let updated: i64 = self
            .run(async |mut c| {
                scripts(UPDATE)
                    .arg(&self.prefix)
                    .arg(&job.id)
                    .arg(expected)
                    .arg(attempt)
                    .arg(&json)
                    .arg(ack.unwrap_or(""))
                    .arg(optional(retry))
                    .arg(optional(callback))
                    .arg(optional(keep.map(|k| k.as_secs().max(1))))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(updated == 1)
    }

    /// Acknowledges an entry whose job needs nothing more.
    async fn drop_entry(&self, entry: &str) -> Result<(), StoreError> {
        let stream = self.key("stream");
        self.run(async |mut c| {
            redis::pipe()
                .cmd("XACK")
                .arg(&stream)
                .arg("workers")
                .arg(entry)
                .cmd("XDEL")
                .arg(&stream)
                .arg(entry)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub async fn depth(&self) -> Result<(u64, u64), StoreError> {
        let (stream, delayed) = (self.key("stream"), self.key("delayed"));
        let (entries, retries, pending): (u64, u64, redis::Value) = self
            .run(async |mut c| {
                redis::pipe()
                    .cmd("XLEN")
                    .arg(&stream)
                    .cmd("ZCARD")
                    .arg(&delayed)
                    .cmd("XPENDING")
                    .arg(&stream)
                    .arg("workers")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // XPENDING's summary starts with the number of entries claimed and not acknowledged.
        let running = match pending {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        Ok((entries.saturating_sub(running) + retries, running))
    }

    pub async fn claim(&self, now_ms: u64) -> Result<Option<Job>, StoreError> {
        loop {
            let next: Option<(String, String, String)> = self
                .run(async |mut c| {
                    scripts(NEXT)
                        .arg(&self.prefix)
                        .arg(&self.consumer)
                        .arg(now_ms)
                        .arg(self.visibility.as_millis() as u64)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let Some((entry, id, _taken_over)) = next else { return Ok(None) };
            let Some((mut job, owner)) = self.load(&id).await? else {
                // Expired or purged: nothing to run.
                self.drop_entry(&entry).await?;
                continue;
            };
            match job.status {
                Status::Succeeded | Status::Failed => {
                    self.drop_entry(&entry).await?;
                    continue;
                }
                Status::Running => {
                    // Its server died during the attempt (or stopped saying otherwise).
                    tracing::warn!(id = %job.id, attempt = %owner, "taking over a job whose server stopped");
                    if !interrupted(&mut job, self.max_attempts, now_ms) {
                        let callback = job.callback.as_ref().map(|c| c.next_ms);
                        let n = job.attempts.len();
                        self.update(&job, &owner, n, Some(&entry), None, callback, Some(self.keep)).await?;
                        continue;
                    }
                }
                Status::Queued => {}
            }
            job.status = Status::Running;
            job.started_ms.get_or_insert(now_ms);
            job.attempts.push(super::store::Attempt {
                number: job.attempts.len() as u32 + 1,
                started_ms: now_ms,
                finished_ms: None,
                status: None,
                error: None,
            });
            if !self.update(&job, &owner, job.attempts.len(), None, None, None, None).await? {
                continue;
            }
            job.lease = Some(entry);
            return Ok(Some(job));
        }
    }

    /// Claims the job's entry again: its idle time starts over.
    pub async fn keep_alive(&self, job: &Job) -> Result<(), StoreError> {
        let Some(entry) = &job.lease else { return Ok(()) };
        let stream = self.key("stream");
        self.run(async |mut c| {
            redis::cmd("XCLAIM")
                .arg(&stream)
                .arg("workers")
                .arg(&self.consumer)
                .arg(0)
                .arg(entry)
                .arg("JUSTID")
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub async fn finish(&self, claimed: &Job, ended: Ended, now_ms: u64) -> Result<Option<Job>, StoreError> {
        let mut job = claimed.clone();
        end_attempt(&mut job, ended, now_ms);
        let n = job.attempts.len();
        let (retry, callback, keep) = match job.status {
            Status::Queued => (Some(job.next_ms), None, None),
            _ => (None, job.callback.as_ref().map(|c| c.next_ms), Some(self.keep)),
        };
        let updated = self.update(&job, &n.to_string(), n, claimed.lease.as_deref(), retry, callback, keep).await?;
        Ok(updated.then_some(job))
    }

    pub async fn callbacks_due(&self, now_ms: u64, limit: u32) -> Result<Vec<Job>, StoreError> {
        let ids: Vec<String> = self
            .run(async |mut c| {
                redis::Script::new(CALLBACKS)
                    .arg(&self.prefix)
                    .arg(now_ms)
                    .arg(now_ms + CALLBACK_LEASE_MS)
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut jobs = Vec::new();
        for id in ids {
            match self.load(&id).await? {
                Some((job, _)) => jobs.push(job),
                None => {
                    let key = self.key("callbacks");
                    self.run(async |mut c| redis::cmd("ZREM").arg(&key).arg(&id).query_async::<()>(&mut c).await)
                        .await?;
                }
            }
        }
        Ok(jobs)
    }

    pub async fn callback_tried(&self, id: String, callback: Callback) -> Result<(), StoreError> {
        let Some((mut job, owner)) = self.load(&id).await? else { return Ok(()) };
        let next = (callback.state == "pending").then_some(callback.next_ms);
        job.callback = Some(callback);
        let n: usize = owner.parse().unwrap_or(job.attempts.len());
        self.update(&job, &owner, n, None, None, next, None).await?;
        if next.is_none() {
            let key = self.key("callbacks");
            self.run(async |mut c| redis::cmd("ZREM").arg(&key).arg(&id).query_async::<()>(&mut c).await).await?;
        }
        Ok(())
    }

    /// Finished jobs expire by themselves (kept `keep_results` from their end); this drops
    /// the index entries of those gone.
    pub async fn purge(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut indexes = vec![self.key("index:call"), self.key("index:build")];
        for row in self.schedules().await? {
            indexes.push(self.key(&format!("index:schedule:{}", row.name)));
        }
        let mut dropped = 0;
        for index in indexes {
            let ids: Vec<String> = self
                .run(async |mut c| {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&index)
                        .arg("-inf")
                        .arg(before_ms)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if ids.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("EXISTS").arg(self.key(&format!("job:{id}")));
            }
            let exists: Vec<bool> = self.run(async |mut c| pipe.query_async(&mut c).await).await?;
            let gone: Vec<&String> = ids.iter().zip(exists).filter(|(_, e)| !e).map(|(id, _)| id).collect();
            if !gone.is_empty() {
                dropped += gone.len();
                self.run(async |mut c| redis::cmd("ZREM").arg(&index).arg(&gone).query_async::<()>(&mut c).await)
                    .await?;
            }
        }
        Ok(dropped)
    }

    pub async fn put_schedule(&self, row: ScheduleRow) -> Result<bool, StoreError> {
        let spec = row.spec.to_string();
        let (spec_key, next, paused, created) = self.schedule_keys();
        let (existed,): (bool,) = self
            .run(async |mut c| {
                redis::pipe()
                    .atomic()
                    .cmd("HEXISTS")
                    .arg(&spec_key)
                    .arg(&row.name)
                    .cmd("HSET")
                    .arg(&spec_key)
                    .arg(&row.name)
                    .arg(&spec)
                    .ignore()
                    .cmd("HSET")
                    .arg(&next)
                    .arg(&row.name)
                    .arg(row.next_ms.to_string())
                    .ignore()
                    .cmd("HSET")
                    .arg(&paused)
                    .arg(&row.name)
                    .arg(if row.paused { "1" } else { "0" })
                    .ignore()
                    .cmd("HSET")
                    .arg(&created)
                    .arg(&row.name)
                    .arg(row.created_ms.to_string())
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(existed)
    }

    fn schedule_keys(&self) -> (String, String, String, String) {
        (
            self.key("schedule:spec"),
            self.key("schedule:next"),
            self.key("schedule:paused"),
            self.key("schedule:created"),
        )
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let (spec, next, paused, created) = self.schedule_keys();
        type Hash = std::collections::HashMap<String, String>;
        let (specs, nexts, pauses, createds): (Hash, Hash, Hash, Hash) = self
            .run(async |mut c| {
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(&spec)
                    .cmd("HGETALL")
                    .arg(&next)
                    .cmd("HGETALL")
                    .arg(&paused)
                    .cmd("HGETALL")
                    .arg(&created)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut rows: Vec<ScheduleRow> = specs
            .into_iter()
            .map(|(name, spec)| ScheduleRow {
                spec: serde_json::from_str(&spec).unwrap_or(Value::Null),
                paused: pauses.get(&name).is_some_and(|p| p == "1"),
                created_ms: createds.get(&name).and_then(|c| c.parse().ok()).unwrap_or(0),
                next_ms: nexts.get(&name).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX),
                name,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    /// Shares this server's summaries of functions (the console's list): the hash
    /// `P:functions`, one field `<server> <url>` per server and function, valued
    /// `<unix ms> <summary as JSON>`.
    pub async fn share_functions(&self, summaries: &[crate::catalog::Summary]) -> Result<(), StoreError> {
        let now = super::now_ms();
        let mut fields = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let json = serde_json::to_string(summary)?;
            fields.push((format!("{} {}", self.consumer, summary.url), format!("{now} {json}")));
        }
        let key = self.key("functions");
        self.run(async |mut c| redis::cmd("HSET").arg(&key).arg(&fields).query_async::<()>(&mut c).await).await
    }

    /// The other servers' summaries shared within `max_age` (older ones, of servers gone
    /// without a word, are removed).
    pub async fn cluster_functions(&self, max_age: Duration) -> Result<Vec<crate::catalog::Summary>, StoreError> {
        let key = self.key("functions");
        let all: std::collections::HashMap<String, String> =
            self.run(async |mut c| redis::cmd("HGETALL").arg(&key).query_async(&mut c).await).await?;
        let now = super::now_ms();
        let mine = format!("{} ", self.consumer);
        let mut stale = Vec::new();
        let mut others = Vec::new();
        for (field, value) in all {
            let Some((at, json)) = value.split_once(' ') else { continue };
            if at.parse::<u64>().map_or(true, |at| now.saturating_sub(at) > max_age.as_millis() as u64) {
                stale.push(field);
            } else if !field.starts_with(&mine)
                && let Ok(summary) = serde_json::from_str(json)
            {
                others.push(summary);
            }
        }
        if !stale.is_empty() {
            self.run(async |mut c| redis::cmd("HDEL").arg(&key).arg(&stale).query_async::<()>(&mut c).await).await?;
        }
        Ok(others)
    }

    /// Withdraws this server's summaries (it is stopping: its counts end with it).
    pub async fn withdraw_functions(&self) -> Result<(), StoreError> {
        let key = self.key("functions");
        let fields: Vec<String> =
            self.run(async |mut c| redis::cmd("HKEYS").arg(&key).query_async(&mut c).await).await?;
        let mine: Vec<String> = fields.into_iter().filter(|f| f.starts_with(&format!("{} ", self.consumer))).collect();
        if mine.is_empty() {
            return Ok(());
        }
        self.run(async |mut c| redis::cmd("HDEL").arg(&key).arg(&mine).query_async::<()>(&mut c).await).await
    }

    pub async fn delete_schedule(&self, name: String) -> Result<bool, StoreError> {
        let (spec, next, paused, created) = self.schedule_keys();
        let (deleted,): (u32,) = self
            .run(async |mut c| {
                redis::pipe()
                    .atomic()
                    .cmd("HDEL")
                    .arg(&spec)
                    .arg(&name)
                    .cmd("HDEL")
                    .arg(&next)
                    .arg(&name)
                    .ignore()
                    .cmd("HDEL")
                    .arg(&paused)
                    .arg(&name)
                    .ignore()
                    .cmd("HDEL")
                    .arg(&created)
                    .arg(&name)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(deleted > 0)
    }

    pub async fn run_tick(
        &self,
        name: String,
        expected_ms: u64,
        tick_ms: Option<u64>,
        job: Option<Job>,
        next_ms: u64,
    ) -> Result<bool, StoreError> {
        let job = job.map(|mut job| {
            job.tick_ms = tick_ms;
            job
        });
        let json = job.as_ref().map(serde_json::to_string).transpose()?;
        let script = scripts(TICK);
        let ran: i64 = self
            .run(async |mut c| {
                let mut invocation = script.prepare_invoke();
                invocation.arg(&self.prefix).arg(&name).arg(expected_ms.to_string());
                match (&job, &json, tick_ms) {
                    (Some(job), Some(json), Some(tick)) => {
                        invocation.arg(tick).arg(next_ms).arg(&job.id).arg(json).arg(job.created_ms);
                    }
                    _ => {
                        invocation.arg("").arg(next_ms);
                    }
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(ran == 1)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    kind.name()
}
