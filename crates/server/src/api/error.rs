//! The one error type at the HTTP edge: a status and a JSON body `{"error": "..."}`,
//! optionally with more fields. Everything the API answers with an error goes through it.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Extra fields merged into the body (e.g. a build's compiler output).
    pub extra: Map<String, Value>,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
    /// More headers (e.g. WWW-Authenticate).
    pub headers: Vec<(&'static str, &'static str)>,
}

// Answers sent before the request's body was read close the connection, and say so:
// what is left of the body would otherwise be read as the next request, and a client
// reusing the connection would find it closed under its next request.

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), extra: Map::new(), retry_after: None, headers: Vec::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: &'static str) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// For an answer sent before the request's body was read (see above).
    pub fn closing(self) -> ApiError {
        self.with_header("connection", "close")
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// The JSON body the answer carries.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.message.clone()));
        body.extend(self.extra.clone());
        Value::Object(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        for (name, value) in self.headers {
            response.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// A malformed JSON body: 400 with serde's description of what is wrong (415 when the
/// body is not declared as JSON at all is not useful to the original's clients, which
/// send no content type, so the body is parsed regardless).
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let status = match rejection {
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, rejection.body_text())
    }
}
