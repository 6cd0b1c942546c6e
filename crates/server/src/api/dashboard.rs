//! `GET /`: the dashboard, as the original had one — a static page whose script shows the
//! system status from `/healthcheck` to everyone, and the API statistics and running jails
//! from the admin API to whoever types in the admin token (kept in the browser tab, sent in
//! the admin header like any admin call; the page itself holds no data).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use crate::App;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");

/// Scripts only from this server, no inline code, no framing by other sites.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn headers() -> [(HeaderName, HeaderValue); 3] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

pub async fn page(State(app): State<Arc<App>>) -> Response {
    // The configured header is letters, digits, '-' and '_' (checked by the config), so
    // it needs no escaping in an attribute.
    let page = PAGE.replace("{{ADMIN_HEADER}}", &app.config.admin.header);
    (headers(), Html(page)).into_response()
}

pub async fn script() -> Response {
    let script = HeaderValue::from_static("text/javascript; charset=utf-8");
    (headers(), [(header::CONTENT_TYPE, script)], SCRIPT).into_response()
}
