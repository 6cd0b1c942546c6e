//! Asynchronous work over HTTP: invocations (`GET /api/v1/invocations[/{id}]`), builds
//! (`POST|GET /api/v1/builds[/{id}]`), schedules (`/api/v1/schedules[/{name}]`) and the git
//! push webhook (`POST /api/v1/hooks/git`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::Mac;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::ApiError;
use super::function::{accept, to_api_error};
use crate::App;
use crate::work::schedule::{self, Spec};
use crate::work::store::ScheduleRow;
use crate::work::{Job, Kind, Status, StoreError, StoredBuild, now_ms, view};

fn store_failed(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "the async store failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the async store is unavailable; try again").retry_after(1)
}

/// A job id: 32 hex digits. Anything else is not one (and is not looked up).
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no such id {id:?}: ids are 32 hex digits")))
    }
}

async fn get_job(app: &App, id: String, kind: Kind) -> Result<Response, ApiError> {
    check_id(&id)?;
    match app.work.store.get(id.clone()).await.map_err(store_failed)? {
        Some(job) if job.kind == kind => Ok(Json(view(&job)).into_response()),
        _ => Err(ApiError::not_found(format!(
            "no {} {id}: it never was, or it finished longer ago than [async] keep_results",
            if kind == Kind::Call { "invocation" } else { "build" }
        ))),
    }
}

async fn list_jobs(app: &App, kind: Kind, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    for key in query.keys() {
        if !matches!(key.as_str(), "status" | "limit" | "schedule") {
            return Err(ApiError::bad_request(format!("unknown parameter {key:?}: status, schedule or limit")));
        }
    }
    let status = match query.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!("invalid status {text:?}: queued, running, succeeded or failed"))
        })?),
    };
    let limit = match query.get("limit") {
        None => 100,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("invalid limit {text:?}: 1 to 1000")))?,
    };
    let schedule = query.get("schedule").cloned();
    let jobs = app.work.store.list(kind, status, schedule, limit).await.map_err(store_failed)?;
    let items: Vec<Value> = jobs.iter().map(view).collect();
    Ok(Json(json!({ "count": items.len(), "items": items })).into_response())
}

pub async fn get_invocation(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    get_job(&app, id, Kind::Call).await
}

pub async fn list_invocations(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list_jobs(&app, Kind::Call, &query).await
}

pub async fn get_build(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    get_job(&app, id, Kind::Build).await
}

pub async fn list_builds(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list_jobs(&app, Kind::Build, &query).await
}

/// `POST /api/v1/builds {"url", "version"?, "runtime"?}`: 202 with the build's id.
pub async fn post_build(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let mut body = super::lenient::Body::parse(&body)?;
    let build = StoredBuild {
        url: body.required_string("url")?,
        version: body.string("version")?.filter(|v| !v.is_empty()),
        runtime: body.string("runtime")?.filter(|r| !r.is_empty()),
        make_current: false,
    };
    body.finish();
    queue_build(&app, build).await
}

async fn queue_build(app: &App, build: StoredBuild) -> Result<Response, ApiError> {
    if let Some(runtime) = &build.runtime
        && skyisland_functions::runtimes::Runtime::parse(runtime).is_none()
    {
        return Err(ApiError::bad_request(format!(
            "invalid runtime {runtime:?}: one of \"go\", \"python\", \"node\" or \"lua\" (or none, to detect it)"
        )));
    }
    // The url is checked now, with the call's rules, on a call that parses everywhere.
    let probe = skyisland_functions::Request {
        url: build.url.clone(),
        call: "F()".into(),
        version: None,
        cache_bust: false,
        ip4: false,
        cache: None,
        runtime: None,
    };
    app.functions.check(&probe).map_err(to_api_error)?;
    let value =
        serde_json::to_value(&build).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    accept(app, Job::new(Kind::Build, value, now_ms()), "builds").await
}

// Schedules.

fn parse_spec(bytes: &[u8]) -> Result<Spec, ApiError> {
    let spec: Spec =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid schedule: {e}")))?;
    spec.timing().map_err(ApiError::bad_request)?;
    Ok(spec)
}

async fn put_spec(app: &App, spec: Spec, created_ms: u64) -> Result<ScheduleRow, ApiError> {
    // The call is checked as an async call is.
    let call = spec.stored_call();
    app.functions.check(&call.to_request().map_err(to_api_error)?).map_err(to_api_error)?;
    let timing = spec.timing().map_err(ApiError::bad_request)?;
    let now = now_ms();
    let next_ms =
        timing.next_after(created_ms, now).ok_or_else(|| ApiError::bad_request("the schedule never ticks"))?;
    let row = ScheduleRow {
        name: spec.name.clone(),
        spec: serde_json::to_value(&spec)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        paused: spec.paused,
        created_ms,
        next_ms,
    };
    app.work.store.put_schedule(row.clone()).await.map_err(store_failed)?;
    Ok(row)
}

async fn find_schedule(app: &App, name: &str) -> Result<ScheduleRow, ApiError> {
    let rows = app.work.store.schedules().await.map_err(store_failed)?;
    rows.into_iter().find(|r| r.name == name).ok_or_else(|| ApiError::not_found(format!("no schedule {name:?}")))
}

/// `POST /api/v1/schedules`: 201, or 409 when the name is taken (PUT replaces).
pub async fn post_schedule(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let spec = parse_spec(&body)?;
    if find_schedule(&app, &spec.name).await.is_ok() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a schedule named {:?} exists: PUT /api/v1/schedules/{} replaces it", spec.name, spec.name),
        ));
    }
    let row = put_spec(&app, spec, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(schedule::view(&row, &[]))).into_response())
}

pub async fn list_schedules(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let rows = app.work.store.schedules().await.map_err(store_failed)?;
    let items: Vec<Value> = rows.iter().map(|r| schedule::view(r, &[])).collect();
    Ok(Json(json!({ "count": items.len(), "items": items })).into_response())
}

pub async fn get_schedule(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let row = find_schedule(&app, &name).await?;
    let runs = app.work.store.list(Kind::Call, None, Some(name), 10).await.map_err(store_failed)?;
    Ok(Json(schedule::view(&row, &runs)).into_response())
}

/// `PUT /api/v1/schedules/{name}`: a whole schedule replaces it (or makes it), and
/// `{"paused": true|false}` alone pauses or resumes it.
pub async fn put_schedule(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid schedule: {e}")))?;
    let pause_only = value.as_object().is_some_and(|o| o.len() == 1 && o.get("paused").is_some_and(Value::is_boolean));
    let (spec, created_ms) = if pause_only {
        let row = find_schedule(&app, &name).await?;
        let mut spec: Spec = serde_json::from_value(row.spec)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        spec.paused = value["paused"].as_bool().unwrap_or(false);
        (spec, row.created_ms)
    } else {
        let spec = parse_spec(&body)?;
        if spec.name != name {
            return Err(ApiError::bad_request(format!("the body names schedule {:?}, the path {name:?}", spec.name)));
        }
        let created = find_schedule(&app, &name).await.map_or_else(|_| now_ms(), |r| r.created_ms);
        (spec, created)
    };
    let row = put_spec(&app, spec, created_ms).await?;
    Ok(Json(schedule::view(&row, &[])).into_response())
}

pub async fn delete_schedule(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if app.work.store.delete_schedule(name.clone()).await.map_err(store_failed)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no schedule {name:?}")))
    }
}

// The git push webhook.

/// `POST /api/v1/hooks/git`: a GitHub or Gitea push event, signed with the repository's
/// secret (`[hooks] secrets`) or the global one (`[hooks] secret`). The pushed commit is
/// fetched and built as a build job (202 with the build's id); a push to the default
/// branch then becomes the repository's current commit (its stored results dropped, and
/// the other servers of a cluster told to fetch it).
pub async fn git_push(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let signature = match (header("x-hub-signature-256"), header("x-gitea-signature")) {
        (Some(github), _) => github.strip_prefix("sha256=").unwrap_or(""),
        (None, Some(gitea)) => gitea,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the push event is not signed: X-Hub-Signature-256 or X-Gitea-Signature is required",
            ));
        }
    };
    let event = header("x-github-event").or(header("x-gitea-event")).unwrap_or("push");
    let payload: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid push event: {e}")))?;
    let url = repository_path(&payload)
        .ok_or_else(|| ApiError::bad_request("the push event names no repository (repository.html_url)"))?;
    let hooks = &app.config.hooks;
    let secret = hooks.secrets.get(&url).or(hooks.secret.as_ref()).ok_or_else(|| {
        ApiError::new(StatusCode::FORBIDDEN, format!("no webhook secret is configured for {url} ([hooks])"))
    })?;
    // Checked before anything of the event is acted on; in constant time.
    let given = hex::decode(signature).unwrap_or_default();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(&body);
    let expected = mac.finalize().into_bytes();
    if given.len() != expected.len() || !bool::from(given.as_slice().ct_eq(expected.as_slice())) {
        metrics::counter!("skyisland_hooks_total", "outcome" => "bad_signature").increment(1);
        return Err(ApiError::new(StatusCode::FORBIDDEN, "the push event's signature does not match"));
    }
    if event == "ping" {
        return Ok(Json(json!({ "ok": true })).into_response());
    }
    if event != "push" {
        return Err(ApiError::bad_request(format!("only push events are handled, not {event:?}")));
    }
    let after = payload["after"].as_str().unwrap_or_default();
    if after.len() != 40 || !after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("the push event has no commit (after)"));
    }
    if after.bytes().all(|b| b == b'0') {
        // A deleted branch: nothing to build.
        return Ok(Json(json!({ "ok": true, "ignored": "a branch was deleted" })).into_response());
    }
    // A push to the default branch moves what calls without a version run; a push to
    // another branch is built (for calls that name it) and moves nothing. An event that
    // does not say which branch is the default is taken as a push to it.
    let default = payload["repository"]["default_branch"].as_str();
    let pushed = payload["ref"].as_str().unwrap_or_default();
    let make_current = default.is_none_or(|branch| pushed == format!("refs/heads/{branch}"));
    metrics::counter!("skyisland_hooks_total", "outcome" => "accepted").increment(1);
    let build = StoredBuild { url, version: Some(after.to_ascii_lowercase()), runtime: None, make_current };
    queue_build(&app, build).await
}

/// The import path of the pushed repository: its `html_url` without the scheme.
fn repository_path(payload: &Value) -> Option<String> {
    let repository = payload.get("repository")?;
    let url = repository.get("html_url").and_then(Value::as_str)?;
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/').trim_end_matches(".git");
    Some(format!("{host}{port}{path}"))
}
