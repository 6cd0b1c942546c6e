//! The admin endpoints the console's pages need beyond the original's: the functions
//! called since start-up (`crate::catalog`) and the API keys.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::App;

/// `GET /api/v1/admin/functions`: every function called since start-up, the most recently
/// called first; with Redis, also those the other servers called (`cluster` says whether
/// they could be read).
pub async fn functions(State(app): State<Arc<App>>) -> Json<Value> {
    let mine = app.catalog.list();
    let Some(cluster) = app.work.store.cluster() else {
        return Json(json!({ "count": mine.len(), "functions": mine }));
    };
    let (functions, cluster) = match cluster.cluster_functions(crate::catalog::SHARED_FOR).await {
        Ok(others) => (crate::catalog::merge(mine, others), json!({ "available": true })),
        Err(e) => (mine, json!({ "available": false, "error": e.to_string() })),
    };
    Json(json!({ "count": functions.len(), "functions": functions, "cluster": cluster }))
}

#[derive(Debug, Deserialize)]
pub struct UrlQuery {
    url: Option<String>,
}

/// `GET /api/v1/admin/function?url=…`: one function, its recent invocations and builds.
pub async fn function(State(app): State<Arc<App>>, Query(query): Query<UrlQuery>) -> Result<Json<Value>, ApiError> {
    let url =
        query.url.filter(|u| !u.is_empty()).ok_or_else(|| ApiError::bad_request("the url parameter is missing"))?;
    let (function, invocations, builds) = app
        .catalog
        .get(&url)
        .ok_or_else(|| ApiError::not_found(format!("{url:?} was not called since this server started")))?;
    Ok(Json(json!({ "function": function, "invocations": invocations, "builds": builds })))
}

fn keys_failed(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "reading or writing the API keys file");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the API keys file could not be read or written; see the log")
}

/// `GET /api/v1/admin/keys`: the keys without their secrets.
pub async fn keys(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let keys = app.guard.keys.list().map_err(keys_failed)?;
    Ok(Json(json!({ "count": keys.len(), "keys": keys })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    per_second: Option<f64>,
    burst: Option<u32>,
}

/// `POST /api/v1/admin/keys` `{"name", "per_second"?, "burst"?}`: 201 with the new key's
/// secret, shown this once (only its hash is kept).
pub async fn make_key(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let new: NewKey =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid key request: {e}")))?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name must be 1 to 100 bytes, with no control characters"));
    }
    skyisland_config::validate_rate(["per_second", "burst"], new.per_second, new.burst)
        .map_err(|e| ApiError::bad_request(e.message))?;
    let (secret, id) = app.guard.keys.create(name, new.per_second, new.burst).map_err(keys_failed)?;
    tracing::info!(%id, name, "made an API key");
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name, "key": secret }))))
}

/// `DELETE /api/v1/admin/keys/{id}`: revoked at once.
pub async fn revoke_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id.starts_with("config-") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this key is configured in auth.api_keys; remove it from the configuration",
        ));
    }
    if !app.guard.keys.revoke(&id).map_err(keys_failed)? {
        return Err(ApiError::not_found(format!("no API key with id {id:?}")));
    }
    tracing::info!(%id, "revoked an API key");
    Ok(Json(json!({ "revoked": id })))
}
