//! Asynchronous work: invocations (`"async": true`), builds ahead of calls, and schedules,
//! kept in the embedded [`store`] and run by this server's workers.
//!
//! Invariants:
//! - A job is recorded (a committed transaction) before it is answered 202.
//! - A worker takes a job only while an execution slot is free and no synchronous call is
//!   waiting for one, and at most `[async] workers` run at once: synchronous calls keep
//!   priority.
//! - Each attempt is recorded as started before it runs and as ended before the next
//!   begins; an invocation's outcome is written once, when it leaves `running` for the
//!   last time. Delivery is at least once: an attempt cut short by the server's death is
//!   counted and run again (up to `max_attempts`), so a caller sees one outcome per
//!   invocation, and its `attempts` say how many runs it took.
//! - A callback goes only to a URL under one of `[async] callback_allow`, without
//!   following redirects.

pub mod cluster;
pub mod schedule;
pub mod sqlite;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use skyisland_config::{CallbackPrefix, Config};
use skyisland_functions::runtimes::Runtime;
use skyisland_functions::{FunctionError, Request};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use store::{Inserted, Job, Kind, Outcome, Status, Store, StoreError};

use crate::App;
use crate::api::function::{self, to_api_error};

/// The file of the store, in the data directory.
pub const DATABASE: &str = "async.sqlite3";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A call as an invocation keeps it: the request's fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredCall {
    pub url: String,
    pub call: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub cache_bust: bool,
    #[serde(default)]
    pub ip4: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl StoredCall {
    pub fn to_request(&self) -> Result<Request, FunctionError> {
        let runtime = match self.runtime.as_deref().filter(|r| !r.is_empty()) {
            None => None,
            Some(name) => Some(
                Runtime::parse(name).ok_or_else(|| FunctionError::BadRequest(format!("invalid runtime {name:?}")))?,
            ),
        };
        Ok(Request {
            url: self.url.clone(),
            call: self.call.clone(),
            version: self.version.clone(),
            cache_bust: self.cache_bust,
            ip4: self.ip4,
            cache: self.cache,
            runtime,
        })
    }
}

/// A build as a build job keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredBuild {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Set by a push webhook: make the built commit the repository's current one.
    #[serde(default)]
    pub make_current: bool,
}

/// The store and what the workers share.
#[derive(Debug)]
pub struct Work {
    pub store: Store,
    /// Wakes a worker when a job is queued.
    queued: Notify,
    /// Wakes the callback sender when an invocation with a callback finishes.
    finished: Notify,
    prefixes: Vec<CallbackPrefix>,
    client: reqwest::Client,
    /// Synchronous function calls being answered now (see [`SyncCall`]).
    sync_calls: std::sync::atomic::AtomicUsize,
}

/// Counts a synchronous call for as long as it runs: workers hold back meanwhile.
#[derive(Debug)]
pub struct SyncCall<'a>(&'a Work);

impl Drop for SyncCall<'_> {
    fn drop(&mut self) {
        self.0.sync_calls.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Work {
    pub fn open(config: &Config) -> Result<Work, StoreError> {
        let a = &config.asynchronous;
        let store = match config.queue.redis_url(&config.cache) {
            Some(url) => Store::Redis(Box::new(cluster::RedisQueue::open(
                url,
                &config.cache.redis_prefix,
                config.queue.visibility_timeout.get(),
                a.max_attempts,
                a.keep_results.get(),
            )?)),
            None => Store::Sqlite(sqlite::Sqlite::open(&config.data_dir.join(DATABASE))?),
        };
        let prefixes =
            config.asynchronous.callback_allow.iter().filter_map(|p| CallbackPrefix::parse(p).ok()).collect();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("skyisland/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Ok(Work {
            store,
            queued: Notify::new(),
            finished: Notify::new(),
            prefixes,
            client,
            sync_calls: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Checks a `callback_url` against `[async] callback_allow`.
    pub fn check_callback(&self, text: &str) -> Result<String, String> {
        let url = url::Url::parse(text).map_err(|e| format!("invalid callback_url {text:?}: {e}"))?;
        skyisland_config::check_callback_url(&url).map_err(|e| format!("invalid callback_url {text:?}: {e}"))?;
        if self.prefixes.is_empty() {
            return Err("callback_url is not accepted: this server allows no callbacks ([async] callback_allow)".into());
        }
        if !self.prefixes.iter().any(|p| p.allows(&url)) {
            return Err(format!(
                "callback_url {text:?} is not under any URL this server allows callbacks to ([async] callback_allow)"
            ));
        }
        Ok(url.to_string())
    }

    /// Records a job and wakes a worker.
    pub async fn submit(&self, job: Job, max_queued: u32) -> Result<Inserted, StoreError> {
        let inserted = self.store.insert(job, u64::from(max_queued)).await?;
        if matches!(inserted, Inserted::New(_)) {
            self.queued.notify_one();
        }
        Ok(inserted)
    }

    pub fn wake(&self) {
        self.queued.notify_one();
    }

    /// Marks a synchronous call as running until the returned value is dropped.
    pub fn sync_call(&self) -> SyncCall<'_> {
        self.sync_calls.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        SyncCall(self)
    }
}

/// Recovers what a previous process left running, then starts the workers, the callback
/// sender, the scheduler and the purge of old results. They run until the jails close.
pub async fn start(app: Arc<App>) -> Vec<JoinHandle<()>> {
    let a = &app.config.asynchronous;
    match app.work.store.recover(a.max_attempts, now_ms()).await {
        Ok((0, 0)) => {}
        Ok((queued, failed)) => {
            tracing::warn!(
                queued,
                failed,
                "invocations were running when the server last stopped; counted those attempts"
            )
        }
        Err(e) => tracing::error!(error = %e, "recovering the invocations left running"),
    }
    let mut tasks = Vec::new();
    for worker in 0..a.workers {
        tasks.push(tokio::spawn(work(Arc::clone(&app), worker)));
    }
    tasks.push(tokio::spawn(send_callbacks(Arc::clone(&app))));
    tasks.push(tokio::spawn(schedule::tick(Arc::clone(&app))));
    tasks.push(tokio::spawn(purge(Arc::clone(&app))));
    tasks
}

/// Logs a store that keeps failing once (and its recovery), not at every turn of a loop.
#[derive(Debug, Default)]
pub struct Outage {
    failing: bool,
}

impl Outage {
    pub fn failed(&mut self, what: &str, e: &StoreError) {
        if !self.failing {
            tracing::error!(error = %e, "{what} failed; retrying until it works again");
        }
        self.failing = true;
    }

    pub fn worked(&mut self, what: &str) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("{what} works again");
        }
    }
}

/// How long a worker holds back for synchronous calls before it takes a job anyway (so
/// that steady synchronous traffic slows async work down but does not starve it).
const YIELD_AT_MOST: Duration = Duration::from_millis(250);

/// Whether an async job may take a slot now: one is free, no synchronous call waits for
/// one, and (for at most [`YIELD_AT_MOST`] since `holding_back`) none is running — on a
/// small machine the CPU, not the slots, is what a synchronous call would lose.
fn spare_capacity(app: &App, holding_back: &mut Option<std::time::Instant>) -> bool {
    let summary = app.jails.summary();
    let (exec_waiting, _) = app.functions.queued();
    if exec_waiting > 0 || summary.running >= summary.capacity {
        return false;
    }
    if app.work.sync_calls.load(std::sync::atomic::Ordering::Acquire) == 0 {
        *holding_back = None;
        return true;
    }
    let since = *holding_back.get_or_insert_with(std::time::Instant::now);
    if since.elapsed() >= YIELD_AT_MOST {
        *holding_back = None;
        return true;
    }
    false
}

async fn work(app: Arc<App>, worker: u32) {
    let mut outage = Outage::default();
    let mut holding_back = None;
    loop {
        if app.jails.is_closing() {
            return;
        }
        if !spare_capacity(&app, &mut holding_back) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let claimed = app.work.store.claim(now_ms()).await;
        if claimed.is_ok() {
            outage.worked("claiming async jobs");
        }
        match claimed {
            Ok(Some(job)) => {
                tracing::debug!(worker, id = %job.id, attempt = job.attempts.len(), "running an async job");
                run(&app, job).await;
            }
            Ok(None) => {
                // Woken by a new job, or in time for a retry that falls due.
                let _ = tokio::time::timeout(Duration::from_millis(250), app.work.queued.notified()).await;
            }
            Err(e) => {
                outage.failed("claiming async jobs", &e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Whether a failed attempt is worth another: a failure of the platform (a timeout, an
/// overloaded or stopping server, a fetch that failed), not of the function itself (its
/// panic, exit or limits) or of the request.
fn retryable(e: &FunctionError) -> bool {
    matches!(
        e,
        FunctionError::TimedOut(_)
            | FunctionError::BuildTimedOut(_)
            | FunctionError::CloneFailed { .. }
            | FunctionError::Killed
            | FunctionError::Internal(_)
            | FunctionError::Overloaded(_)
            | FunctionError::NoAddress(_)
            | FunctionError::Busted
            | FunctionError::Unavailable(_)
            | FunctionError::CircuitOpen(_)
    )
}

/// The wait before attempt `attempts + 1`.
fn backoff(config: &Config, attempts: usize) -> Duration {
    let base = config.asynchronous.retry_backoff.get();
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(Duration::from_secs(60)).max(base)
}

async fn run(app: &Arc<App>, job: Job) {
    let started = std::time::Instant::now();
    let work = async {
        match job.kind {
            Kind::Call => run_call(app, &job).await,
            Kind::Build => run_build(app, &job).await,
        }
    };
    // With Redis: said again every third of the visibility timeout, so that no other
    // server takes the job over while it runs.
    let every = app.config.queue.visibility_timeout.get() / 3;
    let keep_alive = async {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = app.work.store.keep_alive(&job).await {
                tracing::warn!(id = %job.id, error = %e, "could not say a job is still running");
            }
        }
    };
    let result = tokio::select! {
        result = work => result,
        never = keep_alive => never,
    };
    let attempts = job.attempts.len();
    let (outcome, error, retry) = match result {
        Ok(body) => (Outcome { status: 200, body }, None, false),
        Err(e) => {
            let retry = retryable(&e);
            let error = to_api_error(e);
            let message = error.message.clone();
            (Outcome { status: error.status.as_u16(), body: error.body() }, Some(message), retry)
        }
    };
    let max = app.config.asynchronous.max_attempts as usize;
    let retry_at = (retry && attempts < max).then(|| now_ms() + backoff(&app.config, attempts).as_millis() as u64);
    let kind = match job.kind {
        Kind::Call => "call",
        Kind::Build => "build",
    };
    let status = outcome.status;
    let ended = store::Ended { status, error, retry_at_ms: retry_at, outcome };
    match app.work.store.finish(&job, ended, now_ms()).await {
        Ok(Some(done)) => {
            let label = if retry_at.is_some() { "retry" } else { done.status.name() };
            metrics::counter!("skyisland_async_attempts_total", "kind" => kind, "outcome" => label).increment(1);
            metrics::histogram!("skyisland_async_attempt_seconds", "kind" => kind)
                .record(started.elapsed().as_secs_f64());
            if done.callback.is_some() {
                app.work.finished.notify_one();
            }
            if retry_at.is_some() {
                tracing::info!(id = %job.id, attempt = attempts, status, "async attempt failed; retrying");
            }
        }
        Ok(None) => {
            tracing::warn!(id = %job.id, "an async job was taken over or vanished while it ran; its end is not recorded")
        }
        // Left `running`: the next start-up counts it and runs it again.
        Err(e) => tracing::error!(id = %job.id, error = %e, "recording how an async job ended"),
    }
}

async fn run_call(app: &Arc<App>, job: &Job) -> Result<Value, FunctionError> {
    let stored: StoredCall = serde_json::from_value(job.request.clone())
        .map_err(|e| FunctionError::Internal(format!("an invocation's stored request is unreadable: {e}")))?;
    let started = std::time::Instant::now();
    let answer = function::run(app, &stored.to_request()?, crate::catalog::Source::Async).await?;
    let answer = function::answer_body(answer, started);
    Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
}

async fn run_build(app: &Arc<App>, job: &Job) -> Result<Value, FunctionError> {
    let stored: StoredBuild = serde_json::from_value(job.request.clone())
        .map_err(|e| FunctionError::Internal(format!("a build's stored request is unreadable: {e}")))?;
    let runtime = match stored.runtime.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(name) => {
            Some(Runtime::parse(name).ok_or_else(|| FunctionError::BadRequest(format!("invalid runtime {name:?}")))?)
        }
    };
    let started = std::time::Instant::now();
    let built = app.functions.build(&stored.url, stored.version.as_deref(), runtime, stored.make_current).await;
    let result = built.as_ref().map(|built| built.commit.as_str());
    app.catalog.record_build(&stored.url, started.elapsed(), result);
    let built = built?;
    Ok(json!({
        "commit": built.commit,
        "runtime": built.runtime.name(),
        "built": built.built,
        "current": stored.make_current,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// Delivers finished invocations to their `callback_url`, retrying with backoff.
async fn send_callbacks(app: Arc<App>) {
    let work = &app.work;
    let mut outage = Outage::default();
    loop {
        if app.jails.is_closing() {
            return;
        }
        let due = match work.store.callbacks_due(now_ms(), 16).await {
            Ok(due) => {
                outage.worked("finding callbacks to send");
                due
            }
            Err(e) => {
                outage.failed("finding callbacks to send", &e);
                Vec::new()
            }
        };
        let idle = due.is_empty();
        let sends = due.into_iter().map(|job| {
            let app = &app;
            async move {
                let Some(url) = job.callback_url.clone() else { return };
                let mut callback = job.callback.clone().unwrap_or(store::Callback {
                    state: "pending".into(),
                    attempts: 0,
                    last_error: None,
                    next_ms: 0,
                });
                callback.attempts += 1;
                let body = view(&job);
                let sent =
                    app.work.client.post(&url).header("x-sky-island-invocation", &job.id).json(&body).send().await;
                let failure = match sent {
                    Ok(response) if response.status().is_success() => None,
                    Ok(response) => Some(format!("the callback answered {}", response.status())),
                    Err(e) => Some(format!("the callback could not be sent: {e}")),
                };
                match failure {
                    None => {
                        callback.state = "delivered".into();
                        callback.last_error = None;
                    }
                    Some(why) => {
                        tracing::info!(id = %job.id, attempt = callback.attempts, error = %why, "callback failed");
                        callback.last_error = Some(why);
                        if callback.attempts >= app.config.asynchronous.callback_attempts {
                            callback.state = "failed".into();
                        } else {
                            let wait = Duration::from_secs(1 << (callback.attempts - 1).min(10));
                            callback.next_ms = now_ms() + wait.as_millis() as u64;
                        }
                    }
                }
                metrics::counter!("skyisland_async_callbacks_total", "outcome" => callback.state.clone()).increment(1);
                if let Err(e) = app.work.store.callback_tried(job.id.clone(), callback).await {
                    tracing::error!(id = %job.id, error = %e, "recording a callback");
                }
            }
        });
        futures::future::join_all(sends).await;
        if idle {
            let _ = tokio::time::timeout(Duration::from_millis(500), work.finished.notified()).await;
        }
    }
}

async fn purge(app: Arc<App>) {
    let keep = app.config.asynchronous.keep_results.get();
    loop {
        match app.work.store.purge(now_ms().saturating_sub(keep.as_millis() as u64)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "dropped old async results"),
            Err(e) => tracing::error!(error = %e, "dropping old async results"),
        }
        tokio::time::sleep(Duration::from_secs(60).min(keep)).await;
        if app.jails.is_closing() {
            return;
        }
    }
}

/// RFC 3339, UTC, milliseconds.
pub fn timestamp(ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A job as the API shows it (and a callback carries it).
pub fn view(job: &Job) -> Value {
    let mut view = json!({
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "request": job.request,
        "created_at": timestamp(job.created_ms),
        "attempts": job.attempts.iter().map(|a| {
            let mut attempt = json!({ "number": a.number, "started_at": timestamp(a.started_ms) });
            if let Some(f) = a.finished_ms {
                attempt["finished_at"] = json!(timestamp(f));
                attempt["duration_ms"] = json!(f.saturating_sub(a.started_ms));
            }
            if let Some(s) = a.status {
                attempt["status"] = json!(s);
            }
            if let Some(e) = &a.error {
                attempt["error"] = json!(e);
            }
            attempt
        }).collect::<Vec<_>>(),
    });
    if let Some(ms) = job.started_ms {
        view["started_at"] = json!(timestamp(ms));
    }
    if let Some(ms) = job.finished_ms {
        view["finished_at"] = json!(timestamp(ms));
    }
    if job.status == Status::Queued && job.next_ms > job.created_ms {
        view["next_attempt_at"] = json!(timestamp(job.next_ms));
    }
    if let Some(outcome) = &job.outcome {
        view["http_status"] = json!(outcome.status);
        let key = if outcome.status < 300 { "result" } else { "error" };
        view[key] = outcome.body.clone();
    }
    if let Some(key) = &job.idempotency_key {
        // As the caller gave it (stored scoped to its API key).
        view["idempotency_key"] = json!(key.split_once('/').map_or(key.as_str(), |(_, given)| given));
    }
    if let Some(url) = &job.callback_url {
        view["callback_url"] = json!(url);
    }
    if let Some(callback) = &job.callback {
        view["callback"] = json!(callback);
    }
    if let Some(schedule) = &job.schedule {
        view["schedule"] = json!(schedule);
    }
    if let Some(tick) = job.tick_ms {
        view["tick_at"] = json!(timestamp(tick));
        view["tick_ms"] = json!(tick);
    }
    view
}
