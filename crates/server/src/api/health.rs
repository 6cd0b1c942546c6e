//! `GET /healthcheck`: open to everyone; says the server is up and which build it is.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::App;

pub async fn healthcheck(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "git_sha": crate::GIT_SHA,
        "uptime_seconds": app.stats.uptime().as_secs(),
        "jails": app.jails.summary(),
        "queued": { "executions": app.functions.queued().0, "builds": app.functions.queued().1 },
        "binary_cache": { "bytes": app.functions.binary_cache_usage().0, "entries": app.functions.binary_cache_usage().1 },
        "go": app.functions.toolchain().go_version,
    }))
}
