//! The IPv4 pool's admin endpoints: list the addresses (with who holds each), filter by
//! state, and mark an address available or unavailable.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State as AppState};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use skyisland_net::{Ip4Network, PoolError, State};

use super::ApiError;
use crate::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetState {
    ip: String,
    state: String,
}

fn network(app: &App) -> Result<&Arc<Ip4Network>, ApiError> {
    app.network
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this server has no IPv4 pool ([network.ip4] is not configured)"))
}

pub async fn list(
    AppState(app): AppState<Arc<App>>,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let network = network(&app)?;
    let wanted = match filter.state.as_deref() {
        None => None,
        Some(state) => Some(state.parse::<State>().map_err(ApiError::bad_request)?),
    };
    let addresses: Vec<_> =
        network.pool().list().into_iter().filter(|a| wanted.is_none_or(|state| a.state == state)).collect();
    let config = network.config();
    Ok(Json(json!({
        "bridge": config.bridge,
        "cidr": config.cidr.to_string(),
        "gateway": config.gateway,
        "count": addresses.len(),
        "ips": addresses,
    })))
}

pub async fn set(
    AppState(app): AppState<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let request: SetState =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let network = network(&app)?;
    let ip: Ipv4Addr =
        request.ip.parse().map_err(|_| ApiError::bad_request(format!("{:?} is not an IPv4 address", request.ip)))?;
    let state: State = request.state.parse().map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    network.pool().set_state(ip, state).map_err(|e| match e {
        PoolError::NotInPool(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    })?;
    let address = network.pool().list().into_iter().find(|a| a.ip == ip).expect("in the pool");
    Ok(Json(json!(address)))
}
