//! `GET /api/v1/admin/resources`: leak accounting — the jail machinery's census
//! ([`skyisland_runner::census`]), the network's (IPv4 leases, idle address namespaces,
//! bridge links, egress rules), the caches' and the queues'.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiError;
use crate::App;

pub async fn resources(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    let ip4 = match &app.network {
        Some(network) => Some(network.census().await.map_err(|e| internal(e.to_string()))?),
        None => None,
    };
    let counted = Arc::clone(&app);
    let census = tokio::task::spawn_blocking(move || counted.jails.census(&counted.config))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(format!("reading /proc: {e}")))?;
    let mut answer = serde_json::to_value(&census).map_err(|e| internal(e.to_string()))?;
    let caches = app.functions.cache_status();
    let more = json!({
        "binary_cache_entries": caches.binary_cache_entries,
        "binaries_in_memory": caches.binaries_in_memory,
        "ip4": ip4,
        "queued": {
            "requests": app.guard.queued(),
            "executions": app.functions.queued().0,
            "builds": app.functions.queued().1,
        },
    });
    if let (Value::Object(answer), Value::Object(more)) = (&mut answer, more) {
        answer.extend(more);
    }
    Ok(Json(answer))
}
