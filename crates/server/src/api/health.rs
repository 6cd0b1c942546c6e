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
    let work = &app.work.store;
    let asynchronous = match tokio::time::timeout(std::time::Duration::from_secs(1), work.depth()).await {
        Ok(Ok((queued, running))) => json!({
            "backend": work.backend(), "workers": app.config.asynchronous.workers,
            "queued": queued, "running": running, "available": true,
        }),
        Ok(Err(e)) => json!({ "backend": work.backend(), "available": false, "error": e.to_string() }),
        Err(_) => json!({ "backend": work.backend(), "available": false, "error": "no answer within 1 s" }),
    };
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
        // Asynchronous work: where it is kept, and how much waits and runs.
        "async": asynchronous,
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
    point_in_time_gauges(&app);
    if let Ok(Ok((queued, running))) =
        tokio::time::timeout(std::time::Duration::from_secs(1), app.work.store.depth()).await
    {
        metrics::gauge!("skyisland_async_jobs", "state" => "queued").set(queued as f64);
        metrics::gauge!("skyisland_async_jobs", "state" => "running").set(running as f64);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response())
}

/// Gauges of what the server holds right now, set at each scrape (the dashboards' and
/// alert rules' queue depths, slots and disk; see packaging/): queued requests,
/// executions and builds; jail capacity and what runs, warm and pre-started; the data
/// directory's filesystem.
fn point_in_time_gauges(app: &App) {
    let (executions, builds) = app.functions.queued();
    for (what, n) in [("requests", app.guard.queued()), ("executions", executions), ("builds", builds)] {
        metrics::gauge!("skyisland_queued", "what" => what).set(n as f64);
    }
    let jails = app.jails.summary();
    metrics::gauge!("skyisland_jail_capacity", "kind" => "exec").set(jails.capacity as f64);
    metrics::gauge!("skyisland_jail_capacity", "kind" => "build").set(jails.build_capacity as f64);
    metrics::gauge!("skyisland_warm_jails").set(jails.warm as f64);
    // Present from the start (the registry moves them as jails come and go).
    for kind in ["exec", "build"] {
        metrics::gauge!("skyisland_jails_running", "kind" => kind).increment(0.0);
    }
    for state in ["ready", "starting"] {
        metrics::gauge!("skyisland_prestarted_jails", "state" => state).increment(0.0);
    }
    // Counters of rare events start at zero rather than appear with the first one.
    for outcome in ["hit", "miss"] {
        metrics::counter!("skyisland_prestart_calls_total", "outcome" => outcome).increment(0);
    }
    for reason in ["idle", "budget", "slots", "retired"] {
        metrics::counter!("skyisland_prestart_evictions_total", "reason" => reason).increment(0);
    }
    metrics::counter!("skyisland_prestart_failures_total").increment(0);
    if let Ok(fs) = rustix::fs::statvfs(&app.config.data_dir) {
        let block = fs.f_frsize.max(1) as f64;
        metrics::gauge!("skyisland_data_dir_free_bytes").set(fs.f_bavail as f64 * block);
        metrics::gauge!("skyisland_data_dir_size_bytes").set(fs.f_blocks as f64 * block);
    }
}
