//! The admin endpoints for jails and statistics (token-protected by the router).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use skyisland_runner::{JailInfo, Registry};

use super::ApiError;
use crate::App;

/// How long a kill request waits for the jail to be gone before answering.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub async fn api_stats(State(app): State<Arc<App>>) -> Json<crate::stats::Snapshot> {
    Json(app.stats.snapshot())
}

pub async fn list_jails(State(app): State<Arc<App>>) -> Json<Value> {
    let jails = app.jails.registry().list();
    Json(json!({ "count": jails.len(), "jails": jails }))
}

pub async fn get_jail(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<JailInfo>, ApiError> {
    app.jails.registry().get(&id).map(Json).ok_or_else(|| no_jail(&id))
}

/// Kills one jail and answers once it is gone (its processes dead, its slot free).
pub async fn kill_jail(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let registry = app.jails.registry();
    if !registry.kill(&id) {
        return Err(no_jail(&id));
    }
    let gone = wait_gone(registry, std::slice::from_ref(&id)).await;
    Ok(Json(json!({ "killed": [id], "gone": gone })))
}

/// Kills every jail and answers once they are gone.
pub async fn kill_jails(State(app): State<Arc<App>>) -> Json<Value> {
    let registry = app.jails.registry();
    let ids: Vec<String> = registry.list().into_iter().map(|j| j.id).collect();
    registry.kill_all();
    let gone = wait_gone(registry, &ids).await;
    Json(json!({ "killed": ids, "gone": gone }))
}

fn no_jail(id: &str) -> ApiError {
    ApiError::not_found(format!("no running jail with id {id:?}"))
}

/// Waits until none of `ids` is listed any more; false if some outlived [`KILL_WAIT`].
async fn wait_gone(registry: &Registry, ids: &[String]) -> bool {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        if ids.iter().all(|id| registry.get(id).is_none()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
