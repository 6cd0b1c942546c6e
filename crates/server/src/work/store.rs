//! What asynchronous work is made of — jobs (invocations and builds), their attempts and
//! outcomes, schedules — and the [`Store`] that keeps them: the embedded SQLite engine of
//! one server ([`super::sqlite`]) or Redis Streams shared by a cluster ([`super::cluster`]).
//!
//! A job moves `queued → running → (queued again for a retry) → succeeded | failed`; each
//! `running` is an attempt, recorded before the work starts, so that a server that dies
//! mid-attempt leaves it to be found and counted ([`interrupted`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A function call (`"async": true`, or a schedule's tick).
    Call,
    /// A fetch and build ahead of calls (`POST /api/v1/builds`, a push webhook).
    Build,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Build => "build",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Queued, Status::Running, Status::Succeeded, Status::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// One attempt at a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The HTTP status the attempt ended with, as a synchronous call would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a job ended: the status and body a synchronous request would have been answered with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub status: u16,
    pub body: Value,
}

/// Delivery of a finished invocation to its `callback_url`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Callback {
    /// "pending", "delivered" or "failed".
    pub state: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip)]
    pub next_ms: u64,
}

/// A job as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub kind: Kind,
    /// The request, as accepted.
    pub request: Value,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    /// The schedule whose tick made it, and the tick.
    pub schedule: Option<String>,
    pub tick_ms: Option<u64>,
    pub status: Status,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Not run before this time (a retry's backoff).
    pub next_ms: u64,
    pub attempts: Vec<Attempt>,
    pub outcome: Option<Outcome>,
    pub callback: Option<Callback>,
    /// The queue entry a claimed job came from (Redis), for its acknowledgement.
    #[serde(skip)]
    pub lease: Option<String>,
}

impl Job {
    pub fn new(kind: Kind, request: Value, now_ms: u64) -> Job {
        Job {
            id: new_id(),
            kind,
            request,
            idempotency_key: None,
            callback_url: None,
            schedule: None,
            tick_ms: None,
            status: Status::Queued,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            next_ms: now_ms,
            attempts: Vec::new(),
            outcome: None,
            callback: None,
            lease: None,
        }
    }
}

/// 128 random bits, hex: an id nobody guesses (it is what a caller needs to read a result).
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A schedule as stored: its definition (as given) and when it next ticks.
#[derive(Clone, Debug)]
pub struct ScheduleRow {
    pub name: String,
    pub spec: Value,
    pub paused: bool,
    pub created_ms: u64,
    /// The next tick not yet run.
    pub next_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the invocation store failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the invocation queue (Redis) failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the invocation store failed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the invocation store failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What [`Store::insert`] did.
#[derive(Debug)]
pub enum Inserted {
    New(Job),
    /// A job with the same idempotency key was there: it, unchanged.
    Existing(Job),
    /// `max_queued` jobs are waiting already.
    Full(u64),
}

/// How an attempt ended, for [`Store::finish`].
#[derive(Debug)]
pub struct Ended {
    pub status: u16,
    pub error: Option<String>,
    /// Run it again at this time (a retry), or it is over with `outcome`.
    pub retry_at_ms: Option<u64>,
    pub outcome: Outcome,
}

/// Records how the running attempt ended: the job is queued again for `retry_at_ms`, or
/// finished (its callback then pending, when it has one).
pub fn end_attempt(job: &mut Job, ended: Ended, now_ms: u64) {
    if let Some(attempt) = job.attempts.last_mut() {
        attempt.finished_ms = Some(now_ms);
        attempt.status = Some(ended.status);
        attempt.error = ended.error;
    }
    match ended.retry_at_ms {
        Some(at) => {
            job.status = Status::Queued;
            job.next_ms = at;
        }
        None => {
            job.status = if ended.status < 300 { Status::Succeeded } else { Status::Failed };
            job.finished_ms = Some(now_ms);
            job.outcome = Some(ended.outcome);
            if job.callback_url.is_some() {
                job.callback =
                    Some(Callback { state: "pending".into(), attempts: 0, last_error: None, next_ms: now_ms });
            }
        }
    }
}

/// What the server that ran a job's last attempt said about it when it died under it.
pub const INTERRUPTED: &str = "the server stopped during this attempt";

/// A running job whose server died: its attempt is recorded as cut short (503), and the job
/// queued again (true) or, when that was its last attempt, failed (false).
pub fn interrupted(job: &mut Job, max_attempts: u32, now_ms: u64) -> bool {
    let again = (job.attempts.len() as u32) < max_attempts;
    let outcome = Outcome {
        status: 503,
        body: serde_json::json!({ "error": format!("{INTERRUPTED}, and that was its last attempt") }),
    };
    let retry_at_ms = again.then_some(now_ms);
    end_attempt(job, Ended { status: 503, error: Some(INTERRUPTED.into()), retry_at_ms, outcome }, now_ms);
    again
}

/// The engine: one server's SQLite database, or Redis shared by a cluster.
#[derive(Debug)]
pub enum Store {
    Sqlite(super::sqlite::Sqlite),
    Redis(Box<super::cluster::RedisQueue>),
}

/// Calls the same method of whichever engine.
macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(engine) => engine.$method($($arg),*).await,
            Store::Redis(engine) => engine.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// The Redis engine, when this server is one of a cluster.
    pub fn cluster(&self) -> Option<&super::cluster::RedisQueue> {
        match self {
            Store::Redis(queue) => Some(queue),
            Store::Sqlite(_) => None,
        }
    }

    /// Records a new job, unless one with its idempotency key exists (then that one), or
    /// `max_queued` are waiting.
    pub async fn insert(&self, job: Job, max_queued: u64) -> Result<Inserted, StoreError> {
        delegate!(self.insert(job, max_queued))
    }

    pub async fn get(&self, id: String) -> Result<Option<Job>, StoreError> {
        delegate!(self.get(id))
    }

    /// Jobs of `kind`, newest first, optionally of one status or one schedule.
    pub async fn list(
        &self,
        kind: Kind,
        status: Option<Status>,
        schedule: Option<String>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        delegate!(self.list(kind, status, schedule, limit))
    }

    /// The engine's name, for the health check.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Redis(_) => "redis",
        }
    }

    /// Jobs waiting (queued, or waiting for a retry) and running, across every server
    /// sharing the engine.
    pub async fn depth(&self) -> Result<(u64, u64), StoreError> {
        delegate!(self.depth())
    }

    /// Takes a job that is due, marks it running and records its new attempt.
    pub async fn claim(&self, now_ms: u64) -> Result<Option<Job>, StoreError> {
        delegate!(self.claim(now_ms))
    }

    /// Says that a claimed job is still being worked on (so no other server takes it over).
    pub async fn keep_alive(&self, job: &Job) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Redis(engine) => engine.keep_alive(job).await,
        }
    }

    /// Records how the claimed job's attempt ended. `None` when the job is gone or no
    /// longer this attempt's (another server took it over): nothing is recorded then.
    pub async fn finish(&self, job: &Job, ended: Ended, now_ms: u64) -> Result<Option<Job>, StoreError> {
        delegate!(self.finish(job, ended, now_ms))
    }

    /// At start-up: counts the attempts a previous process of this server left running
    /// (SQLite; with Redis, another server's dead attempts are taken over as they time out).
    pub async fn recover(&self, max_attempts: u32, now_ms: u64) -> Result<(u32, u32), StoreError> {
        match self {
            Store::Sqlite(engine) => engine.recover(max_attempts, now_ms).await,
            Store::Redis(_) => Ok((0, 0)),
        }
    }

    /// Finished jobs whose callback is due (each handed to one server for a while).
    pub async fn callbacks_due(&self, now_ms: u64, limit: u32) -> Result<Vec<Job>, StoreError> {
        delegate!(self.callbacks_due(now_ms, limit))
    }

    /// Records a callback attempt: delivered or failed for good, or due again at `next_ms`.
    pub async fn callback_tried(&self, id: String, callback: Callback) -> Result<(), StoreError> {
        delegate!(self.callback_tried(id, callback))
    }

    /// Drops finished jobs older than `before_ms` with no callback left to deliver.
    pub async fn purge(&self, before_ms: u64) -> Result<usize, StoreError> {
        delegate!(self.purge(before_ms))
    }

    /// Adds or replaces a schedule. Returns whether it replaced one.
    pub async fn put_schedule(&self, row: ScheduleRow) -> Result<bool, StoreError> {
        delegate!(self.put_schedule(row))
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        delegate!(self.schedules())
    }

    pub async fn delete_schedule(&self, name: String) -> Result<bool, StoreError> {
        delegate!(self.delete_schedule(name))
    }

    /// Runs a tick of schedule `name` at most once (across every server): moves the
    /// schedule from its next tick `expected_ms` to `next_ms` and records the tick
    /// `tick_ms` with its job (none when the tick is skipped), atomically. False when the
    /// tick had been run already or the schedule changed meanwhile.
    pub async fn run_tick(
        &self,
        name: String,
        expected_ms: u64,
        tick_ms: Option<u64>,
        job: Option<Job>,
        next_ms: u64,
    ) -> Result<bool, StoreError> {
        delegate!(self.run_tick(name, expected_ms, tick_ms, job, next_ms))
    }
}
