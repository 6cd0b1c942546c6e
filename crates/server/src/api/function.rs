//! `POST /api/v1/function`: the original's request and answer, with a precise status and
//! a JSON error body for every way a call can fail.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use skyisland_functions::{FunctionError, Request};

use super::ApiError;
use crate::App;

/// The request body. The original's clients send `url` and `call`, some of them with a
/// content type other than JSON, so the body is parsed whatever its declared type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionRequest {
    pub url: String,
    pub call: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub cache_bust: bool,
    #[serde(default)]
    pub ip4: bool,
}

/// The answer: `timestamp` and `data` as in the original, and what else is known.
#[derive(Debug, Serialize)]
pub struct FunctionAnswer {
    pub timestamp: u64,
    pub data: String,
    /// The commit that ran.
    pub commit: String,
    /// "dispatch" when the package's dispatcher ran it, "build" when it needed its own build.
    pub path: &'static str,
    /// Whether this request started a build.
    pub built: bool,
    pub duration_ms: f64,
}

pub async fn call(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FunctionAnswer>, ApiError> {
    let started = Instant::now();
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let request: FunctionRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let answer = app
        .functions
        .call(&Request {
            url: request.url,
            call: request.call,
            version: request.version,
            cache_bust: request.cache_bust,
            ip4: request.ip4,
        })
        .await
        .map_err(to_api_error)?;
    Ok(Json(FunctionAnswer {
        timestamp: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        data: answer.data,
        commit: answer.commit,
        path: answer.path,
        built: answer.built,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// The status of each way a function call fails.
pub fn to_api_error(e: FunctionError) -> ApiError {
    let message = e.to_string();
    match e {
        FunctionError::BadRequest(_) => ApiError::bad_request(message),
        FunctionError::NotExported { .. } | FunctionError::PackageRefused(_) | FunctionError::Argument(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        FunctionError::BuildFailed { output } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).with("output", output)
        }
        FunctionError::RepoNotFound { detail, .. } => ApiError::not_found(message).with("detail", detail),
        FunctionError::VersionNotFound { .. } => ApiError::not_found(message),
        FunctionError::CloneFailed { .. } => ApiError::new(StatusCode::BAD_GATEWAY, message),
        FunctionError::BuildTimedOut(_) | FunctionError::TimedOut(_) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, message)
        }
        FunctionError::Failed { stderr, .. } | FunctionError::LimitExceeded { stderr, .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).with("stderr", stderr)
        }
        FunctionError::Killed | FunctionError::Internal(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        FunctionError::Overloaded(_) | FunctionError::NoAddress(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(1)
        }
        FunctionError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(30),
    }
}
