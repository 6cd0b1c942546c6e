//! `GET /healthcheck` and `GET /metrics`: open to everyone. The health check says the
//! server is up, which build it is, and how its caches and Redis are doing.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use serde_json::{Value, json};

use crate::App;

pub async fn healthcheck(State(app): State<Arc<App>>) -> Json<Value> {
    let caches = app.functions.cache_status();
    // Without Redis the server works from its local caches: degraded, not down.
    let status = match &caches.redis {
        Some(redis) if !redis.connected => "degraded",
        _ => "ok",
    };
    Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "git_sha": crate::GIT_SHA,
        "uptime_seconds": app.stats.uptime().as_secs(),
        "jails": app.jails.summary(),
        "queued": {
            "requests": app.guard.queued(),
            "executions": app.functions.queued().0,
            "builds": app.functions.queued().1,
        },
        "binary_cache": {
            "bytes": caches.binary_cache_bytes,
            "entries": caches.binary_cache_entries,
            "in_memory": caches.binaries_in_memory,
            "memory_bytes": caches.binary_memory_bytes,
        },
        "source_cache": { "bytes": caches.source_cache_bytes, "entries": caches.source_cache_entries },
        "request_cache": { "bytes": caches.request_cache_bytes, "entries": caches.request_cache_entries },
        "redis": caches.redis,
        "open_circuits": caches.open_circuits,
        // The oldest toolchain (it builds repositories without a go.mod), and all of them.
        "go": app.functions.toolchain().oldest().name,
        "toolchains": app.functions.toolchain().gos.iter().map(|go| json!({
            "version": go.name,
            "go": go.go,
        })).collect::<Vec<_>>(),
        // The interpreted runtimes: each one's version, or why this server has not got it.
        "runtimes": app.functions.runtimes().into_iter().map(|(runtime, found)| match found {
            Ok(version) => json!({ "runtime": runtime, "version": version, "available": true }),
            Err(why) => json!({ "runtime": runtime, "available": false, "error": why }),
        }).collect::<Vec<_>>(),
        "open_files_limit": rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let Some(handle) = &app.metrics else {
        return Err(ApiError::not_found("metrics are not enabled on this server"));
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response())
}
