//! The routes. Handlers parse and validate, call the core, and map its typed errors to
//! statuses through [`ApiError`]; nothing below this module knows HTTP.

mod admin;
mod console;
mod dashboard;
pub mod error;
pub mod function;
mod guard;
mod health;
mod ips;
pub mod lenient;
mod resources;
mod work;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use subtle::ConstantTimeEq;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use guard::Guard;

use crate::App;

/// The git push webhook, and the largest body it takes (whatever `limits.max_body` says).
const HOOK_PATH: &str = "/api/v1/hooks/git";
const HOOK_MAX_BODY: u64 = 25 << 20;

pub fn router(app: Arc<App>) -> Router {
    let idle = app.config.limits.client_timeout.get().as_secs().saturating_sub(1).max(1);
    let keep_alive = HeaderValue::from_str(&format!("timeout={idle}")).expect("digits are a valid header value");
    let admin = Router::new()
        .route("/api/v1/admin/api-stats", get(admin::api_stats))
        .route("/api/v1/admin/resources", get(resources::resources))
        .route("/api/v1/admin/history", get(history))
        .route("/api/v1/admin/functions", get(console::functions))
        .route("/api/v1/admin/function", get(console::function))
        .route("/api/v1/admin/keys", get(console::keys).post(console::make_key))
        .route("/api/v1/admin/keys/{id}", axum::routing::delete(console::revoke_key))
        .route("/api/v1/admin/jails", get(admin::list_jails).delete(admin::kill_jails))
        .route("/api/v1/admin/jail/{id}", get(admin::get_jail).delete(admin::kill_jail))
        .route("/api/v1/admin/ips", get(ips::list).put(ips::set))
        // The original's paths for the same.
        .route("/api/v1/admin/network/ips", get(ips::original_list))
        .route("/api/v1/admin/network/ip", put(ips::set))
        .route("/api/v1/invocations", get(work::list_invocations))
        .route("/api/v1/builds", get(work::list_builds))
        .route("/api/v1/schedules", get(work::list_schedules).post(work::post_schedule))
        .route(
            "/api/v1/schedules/{name}",
            get(work::get_schedule).put(work::put_schedule).delete(work::delete_schedule),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), require_admin));
    let function = Router::new()
        .route("/api/v1/function", post(function::call))
        .route("/api/v1/invocations/{id}", get(work::get_invocation))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), guard::guard_function));
    let builds = Router::new()
        .route("/api/v1/builds", post(work::post_build))
        .route("/api/v1/builds/{id}", get(work::get_build))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), guard::require_key_or_admin));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/console/{file}", get(dashboard::asset))
        .route("/healthcheck", get(health::healthcheck))
        .route("/metrics", get(health::metrics))
        .route(
            HOOK_PATH,
            // A push event lists its commits: GitHub sends up to 25 MB.
            post(work::git_push).layer(DefaultBodyLimit::max(HOOK_MAX_BODY as usize)),
        )
        .merge(function)
        .merge(builds)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.config.limits.max_body.bytes() as usize))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), refuse_large_bodies))
        .layer(RequestBodyTimeoutLayer::new(app.config.limits.client_timeout.get()))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), record_stats))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                // Failed calls are answers, not server failures: no ERROR line per 5xx.
                .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
                .layer(PropagateRequestIdLayer::x_request_id())
                // Clients that honour it give idle connections up before the server
                // closes them (after `client_timeout`).
                .layer(SetResponseHeaderLayer::if_not_present(HeaderName::from_static("keep-alive"), keep_alive)),
        )
        .with_state(app)
}

/// Every log line of a request carries its id (the client's `X-Request-Id`, or a new one,
/// echoed in the answer).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).filter(|id| id.len() <= 200);
    let id = id.unwrap_or("-");
    tracing::info_span!("request", id, method = %request.method(), path = request.uri().path())
}

/// `GET /api/v1/admin/history`: the last 15 minutes, a point every 5 s.
async fn history(State(app): State<Arc<App>>) -> axum::Json<serde_json::Value> {
    axum::Json(app.history.view())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Admin endpoints need the admin token in the configured header; without it, or with a
/// wrong one, the answer is the original's 403 `{"error": "Forbidden"}` (with a `detail`
/// saying which). Not 401: that status promises a `WWW-Authenticate` challenge for an HTTP
/// authentication scheme, and a token in a custom header is none. The comparison takes the
/// same time whatever the guess.
async fn require_admin(State(app): State<Arc<App>>, request: Request, next: Next) -> Result<Response, ApiError> {
    let header = &app.config.admin.header;
    let forbidden = |detail: String| ApiError::new(StatusCode::FORBIDDEN, "Forbidden").with("detail", detail).closing();
    match is_admin(&app, request.headers()) {
        None => Err(forbidden(format!("admin endpoints need the admin token in the {header} header"))),
        Some(false) => Err(forbidden(format!("wrong admin token in the {header} header"))),
        Some(true) => Ok(next.run(request).await),
    }
}

/// Whether the request carries the admin token (`None`: it carries none).
pub fn is_admin(app: &App, headers: &HeaderMap) -> Option<bool> {
    let given = headers.get(app.config.admin.header.as_str())?;
    // Digests of equal length compared in constant time: neither the token's bytes nor its
    // length show in the time a wrong guess takes.
    let digest = |bytes: &[u8]| -> [u8; 32] { <sha2::Sha256 as sha2::Digest>::digest(bytes).into() };
    Some(bool::from(digest(given.as_bytes()).ct_eq(&digest(app.admin_token.as_bytes()))))
}

/// A body declared larger than `limits.max_body` is refused (413) before any of it is read,
/// so a client that asked `Expect: 100-continue` never gets `100 Continue` for it; the
/// connection then closes (lingering: see `serve`) so the client can read the answer.
async fn refuse_large_bodies(State(app): State<Arc<App>>, request: Request, next: Next) -> Result<Response, ApiError> {
    let limit = match request.uri().path() {
        HOOK_PATH => skyisland_config::Size(HOOK_MAX_BODY),
        _ => app.config.limits.max_body,
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared.filter(|&length| length > limit.bytes()) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {length} bytes long; the limit is {limit} (limits.max_body)"),
        )
        .closing());
    }
    Ok(next.run(request).await)
}

async fn record_stats(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_owned(),
    };
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.stats.record(&route, status, elapsed);
    metrics::counter!("skyisland_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("skyisland_http_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
    response
}
