//! The IPv4 pool's admin endpoints: list the addresses (with who holds each), filter by
//! state, and mark an address available or unavailable. Our paths (`/api/v1/admin/ips`)
//! answer our shapes; the original's paths (`/api/v1/admin/network/ips` and `…/ip`)
//! answer the original's: `{"<ip>": 0|1}` (0 free, 1 in use or unavailable), filtered
//! `{"available": […]}`, and a numeric `state` in the PUT body (strings accepted too).

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
use super::lenient::Body;
use crate::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    state: Option<String>,
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

/// The original's pool: every address with 0 (free now) or 1 (leased or unavailable), or
/// filtered, the free (`available`) or the other (`unavailable`) addresses.
pub async fn original_list(
    AppState(app): AppState<Arc<App>>,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let network = network(&app)?;
    let numbered: Vec<(String, u8)> = network
        .pool()
        .list()
        .into_iter()
        .map(|a| {
            let free = a.state == State::Available && a.in_use_by.is_none();
            (a.ip.to_string(), u8::from(!free))
        })
        .collect();
    let wanted = match filter.state.as_deref() {
        None => return Ok(Json(Value::Object(numbered.into_iter().map(|(ip, n)| (ip, json!(n))).collect()))),
        Some("available") => 0,
        Some("unavailable") => 1,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unrecognized IP state {other:?}: expected \"available\" or \"unavailable\""),
            ));
        }
    };
    let name = if wanted == 0 { "available" } else { "unavailable" };
    let ips: Vec<String> = numbered.into_iter().filter(|(_, n)| *n == wanted).map(|(ip, _)| ip).collect();
    Ok(Json(json!({ name: ips })))
}

/// Sets one address's state: `{"ip": "…", "state": "available" | "unavailable"}`, or the
/// original's numbers (0 available, 1 unavailable). Either path takes either form; a state
/// that is neither is 422, as the original answered.
pub async fn set(
    AppState(app): AppState<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).closing())?;
    let mut body = Body::parse(&body)?;
    let ip = body.required_string("ip")?;
    let state = body.value("state");
    body.finish();
    let network = network(&app)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| ApiError::bad_request(format!("{ip:?} is not an IPv4 address")))?;
    let unprocessable = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    let state = match state {
        None => return Err(ApiError::bad_request("invalid request body: missing field `state`")),
        Some(Value::String(name)) => name.parse::<State>().map_err(unprocessable)?,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => State::Available,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => State::Unavailable,
        Some(other) => {
            return Err(unprocessable(format!(
                "invalid state {other}: expected 0 (available), 1 (unavailable) or their names"
            )));
        }
    };
    network.pool().set_state(ip, state).map_err(|e| match e {
        PoolError::NotInPool(_) => unprocessable(e.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    })?;
    let address = network.pool().list().into_iter().find(|a| a.ip == ip).expect("in the pool");
    Ok(Json(json!(address)))
}
