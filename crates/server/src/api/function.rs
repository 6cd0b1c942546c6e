//! `POST /api/v1/function`: the original's request and answer, with a precise status and
//! a JSON error body for every way a call can fail.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use skyisland_functions::runtimes::Runtime;
use skyisland_functions::{CacheUse, FunctionError, Request};

use super::ApiError;
use super::guard::Caller;
use crate::App;
use crate::catalog::Source;
use crate::work::{self, Inserted, Job, Kind, StoredCall};

/// The request body: `url` and `call`, and optionally `version`, `cache_bust`, `ip4` and
/// `cache`, read as the original read it (see [`super::lenient`]): its clients send every
/// field (`"version": ""` when unset), some in other cases, some with a content type other
/// than JSON, so the body is parsed whatever its declared type.
#[derive(Debug)]
pub struct FunctionRequest {
    pub url: String,
    pub call: String,
    pub version: Option<String>,
    pub cache_bust: bool,
    pub ip4: bool,
    /// Serve from and store in the request cache (`None`: the server's default).
    pub cache: Option<bool>,
    /// "go", "python", "node" or "lua"; absent or "": detected from the package's files.
    pub runtime: Option<Runtime>,
    /// Answer 202 at once and run the call in the background.
    pub asynchronous: bool,
    /// For an async call: where to POST the finished invocation.
    pub callback_url: Option<String>,
    /// For an async call: the same key names the same invocation.
    pub idempotency_key: Option<String>,
}

impl FunctionRequest {
    pub fn parse(bytes: &[u8]) -> Result<FunctionRequest, ApiError> {
        let mut body = super::lenient::Body::parse(bytes)?;
        let request = FunctionRequest {
            url: body.required_string("url")?,
            call: body.required_string("call")?,
            // The original's own request type sends "" for no version.
            version: body.string("version")?.filter(|v| !v.is_empty()),
            cache_bust: body.bool("cache_bust")?.unwrap_or(false),
            ip4: body.bool("ip4")?.unwrap_or(false),
            cache: body.bool("cache")?,
            runtime: match body.string("runtime")?.filter(|r| !r.is_empty()) {
                None => None,
                Some(name) => Some(Runtime::parse(&name).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid runtime {name:?}: one of \"go\", \"python\", \"node\" or \"lua\" (or none, to detect it)"
                    ))
                })?),
            },
            asynchronous: body.bool("async")?.unwrap_or(false),
            callback_url: body.string("callback_url")?.filter(|u| !u.is_empty()),
            idempotency_key: body.string("idempotency_key")?.filter(|k| !k.is_empty()),
        };
        body.finish();
        if !request.asynchronous && (request.callback_url.is_some() || request.idempotency_key.is_some()) {
            return Err(ApiError::bad_request(
                "callback_url and idempotency_key are for async calls (\"async\": true)",
            ));
        }
        if let Some(key) = &request.idempotency_key
            && (key.len() > 200 || key.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request("idempotency_key must be at most 200 bytes, with no control characters"));
        }
        Ok(request)
    }
}

/// The answer: `timestamp` and `data` as in the original, and what else is known.
#[derive(Debug, Serialize)]
pub struct FunctionAnswer {
    pub timestamp: u64,
    pub data: String,
    /// The commit that ran.
    pub commit: String,
    /// "dispatch" when the package's dispatcher ran it, "build" when it needed its own build;
    /// for an interpreted function its runtime ("python", "node", "lua").
    pub path: &'static str,
    /// Whether this request started a build.
    pub built: bool,
    /// "hit" when the request cache answered (no jail ran), "miss" otherwise.
    pub cache: &'static str,
    /// For a hit: where it came from ("memory" or "redis") and when it was computed
    /// (Unix time, ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_at_ms: Option<u64>,
    pub duration_ms: f64,
}

/// The header saying whether the request cache answered.
pub const CACHE_HEADER: &str = "x-sky-island-cache";

pub async fn call(
    State(app): State<Arc<App>>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    // Too large or too slow: the rest of the body is not read.
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let request = FunctionRequest::parse(&body)?;
    if request.asynchronous {
        let caller = caller.and_then(|Extension(Caller(id))| id);
        return submit(&app, request, caller).await;
    }
    let _sync = app.work.sync_call();
    let call = Request {
        url: request.url,
        call: request.call,
        version: request.version,
        cache_bust: request.cache_bust,
        ip4: request.ip4,
        cache: request.cache,
        runtime: request.runtime,
    };
    let answer = run(&app, &call, Source::Sync).await.map_err(to_api_error)?;
    let answer = answer_body(answer, started);
    let cache = answer.cache;
    app.stats.record_cache(cache == "hit");
    Ok(([(CACHE_HEADER, cache)], Json(answer)).into_response())
}

/// Runs a call and records how it ended in the console's catalog.
pub async fn run(app: &App, call: &Request, source: Source) -> Result<skyisland_functions::Answer, FunctionError> {
    let started = Instant::now();
    let result = app.functions.call(call).await;
    app.catalog.record(call, source, started.elapsed(), &result);
    result
}

/// The answer to a call that ran, `started` when its request came.
pub fn answer_body(answer: skyisland_functions::Answer, started: Instant) -> FunctionAnswer {
    let (cache, cache_tier) = match answer.cache {
        CacheUse::Hit { tier } => ("hit", Some(tier)),
        CacheUse::Miss => ("miss", None),
    };
    FunctionAnswer {
        timestamp: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        data: answer.data,
        commit: answer.commit,
        path: answer.path,
        built: answer.built,
        cache,
        cache_tier,
        cached_at_ms: answer.cached_at_ms,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// An async call: checked as far as it can be before anything is fetched, recorded, and
/// answered 202 with its id (or the invocation its idempotency key names).
async fn submit(app: &App, request: FunctionRequest, caller: Option<String>) -> Result<Response, ApiError> {
    let stored = StoredCall {
        url: request.url,
        call: request.call,
        version: request.version,
        cache_bust: request.cache_bust,
        ip4: request.ip4,
        cache: request.cache,
        runtime: request.runtime.map(|r| r.name().to_owned()),
    };
    app.functions.check(&stored.to_request().map_err(to_api_error)?).map_err(to_api_error)?;
    let callback_url = match &request.callback_url {
        Some(url) => Some(app.work.check_callback(url).map_err(ApiError::bad_request)?),
        None => None,
    };
    let value =
        serde_json::to_value(&stored).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut job = Job::new(Kind::Call, value, work::now_ms());
    job.callback_url = callback_url;
    // Scoped to the caller's API key: one caller's key never names another's invocation.
    job.idempotency_key = request.idempotency_key.map(|key| scoped_key(caller.as_deref(), &key));
    accept(app, job, "invocations").await
}

/// An idempotency key as stored: `<API key id>/<key>`, or `-/<key>` without an API key.
pub fn scoped_key(caller: Option<&str>, key: &str) -> String {
    format!("{}/{key}", caller.unwrap_or("-"))
}

/// Records a job and answers 202 with where to find it.
pub async fn accept(app: &App, job: Job, collection: &str) -> Result<Response, ApiError> {
    let request = job.request.clone();
    let callback = job.callback_url.clone();
    let inserted = app.work.submit(job, app.config.asynchronous.max_queued).await.map_err(|e| {
        tracing::error!(error = %e, "recording an async job");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the job could not be recorded; try again").retry_after(1)
    })?;
    let (job, status) = match inserted {
        Inserted::New(job) => (job, StatusCode::ACCEPTED),
        Inserted::Existing(job) if job.request == request && job.callback_url == callback => {
            (job, StatusCode::ACCEPTED)
        }
        Inserted::Existing(job) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "this idempotency_key names an invocation with a different request",
            )
            .with("id", job.id));
        }
        Inserted::Full(queued) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{queued} jobs are queued already, the most this server keeps ([async] max_queued)"),
            )
            .retry_after(5));
        }
    };
    let status_url = format!("/api/v1/{collection}/{}", job.id);
    let body = json!({ "id": job.id, "status": job.status, "status_url": status_url });
    Ok((status, [(axum::http::header::LOCATION, status_url)], Json(body)).into_response())
}

/// The answer to a failed call: its status ([`status_of`]) and what else
/// the caller needs to know.
pub fn to_api_error(e: FunctionError) -> ApiError {
    let status = status_of(&e);
    let message = e.to_string();
    match e {
        FunctionError::BuildFailed { output } => ApiError::new(status, message).with("output", output),
        FunctionError::RepoNotFound { detail, .. } => ApiError::new(status, message).with("detail", detail),
        FunctionError::Failed { stderr, .. } | FunctionError::LimitExceeded { stderr, .. } => {
            ApiError::new(status, message).with("stderr", stderr)
        }
        FunctionError::Internal(_) => {
            // The log has all of it; the answer none of the operator's paths or hosts.
            tracing::error!(error = %message, "internal error");
            ApiError::new(status, skyisland_functions::repos::redact_locations(&message))
        }
        FunctionError::Overloaded(_) | FunctionError::NoAddress(_) | FunctionError::Busted => {
            ApiError::new(status, message).retry_after(1)
        }
        FunctionError::Unavailable(_) => ApiError::new(status, message).retry_after(30),
        FunctionError::CircuitOpen(open) => {
            ApiError::new(status, message).retry_after(open.retry_after.as_secs_f64().ceil().max(1.0) as u64)
        }
        _ => ApiError::new(status, message),
    }
}

/// The status a failed call is answered with.
pub fn status_of(e: &FunctionError) -> StatusCode {
    match e {
        FunctionError::BadRequest(_) => StatusCode::BAD_REQUEST,
        FunctionError::NotExported { .. }
        | FunctionError::NotFound(_)
        | FunctionError::LoadFailed(_)
        | FunctionError::PackageRefused(_)
        | FunctionError::Argument(_)
        | FunctionError::TooLarge(_)
        | FunctionError::NoToolchain(_)
        | FunctionError::BuildFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        FunctionError::RepoNotFound { .. } | FunctionError::VersionNotFound { .. } => StatusCode::NOT_FOUND,
        FunctionError::CloneFailed { .. } => StatusCode::BAD_GATEWAY,
        FunctionError::BuildTimedOut(_) | FunctionError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        FunctionError::Failed { .. }
        | FunctionError::LimitExceeded { .. }
        | FunctionError::Killed
        | FunctionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        FunctionError::Overloaded(_)
        | FunctionError::NoAddress(_)
        | FunctionError::Busted
        | FunctionError::Unavailable(_)
        | FunctionError::CircuitOpen(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
