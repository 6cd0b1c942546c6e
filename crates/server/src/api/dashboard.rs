//! `GET /` and `GET /console/{file}`: the console, a single page of plain JavaScript
//! modules and one style sheet, all embedded in the binary (no CDN, no build step). The
//! page holds no data: its scripts read `/healthcheck` for everyone and the admin API with
//! the admin token typed in once per tab (kept in the tab's session storage, sent in the
//! admin header like any admin call). The policy allows scripts, styles and fetches from
//! this server only, and nothing inline.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use super::ApiError;
use crate::App;

const PAGE: &str = include_str!("dashboard/index.html");

/// Every asset: its name under `/console/`, its content type and its text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("dashboard/style.css")),
    ("app.js", JS, include_str!("dashboard/app.js")),
    ("ui.js", JS, include_str!("dashboard/ui.js")),
    ("chart.js", JS, include_str!("dashboard/chart.js")),
    ("overview.js", JS, include_str!("dashboard/overview.js")),
    ("functions.js", JS, include_str!("dashboard/functions.js")),
    ("try.js", JS, include_str!("dashboard/try.js")),
    ("jails.js", JS, include_str!("dashboard/jails.js")),
    ("network.js", JS, include_str!("dashboard/network.js")),
    ("work.js", JS, include_str!("dashboard/work.js")),
    ("keys.js", JS, include_str!("dashboard/keys.js")),
    ("favicon.svg", "image/svg+xml", include_str!("dashboard/favicon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";

/// Scripts, styles, images and fetches from this server only; nothing inline, no framing
/// by other sites, no forms posting anywhere.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                          connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ]
}

pub async fn page(State(app): State<Arc<App>>) -> Response {
    // The configured header is letters, digits, '-' and '_' (checked by the config), so
    // it needs no escaping in an attribute.
    let page = PAGE.replace("{{ADMIN_HEADER}}", &app.config.admin.header);
    (headers(), Html(page)).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, text) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no console asset {file:?}")))?;
    let content_type = HeaderValue::from_static(content_type);
    Ok((headers(), [(header::CONTENT_TYPE, content_type)], *text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_console_is_under_200_kib_and_every_module_it_imports_is_served() {
        let total = PAGE.len() + ASSETS.iter().map(|(_, _, text)| text.len()).sum::<usize>();
        assert!(total < 200 << 10, "the console is {total} bytes");
        for (name, _, text) in ASSETS {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line.rsplit_once("\"./").map(|(_, rest)| rest.trim_end_matches("\";")).unwrap_or_default();
                assert!(ASSETS.iter().any(|(n, _, _)| *n == module), "{name} imports {module:?}, which is not served");
            }
            assert!(!text.contains("innerHTML") && !text.contains("eval("), "{name}: values go in as text only");
        }
        for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/dashboard")).unwrap() {
            let file = file.unwrap().file_name().into_string().unwrap();
            assert!(file == "index.html" || ASSETS.iter().any(|(n, _, _)| *n == file), "{file} is not served");
        }
    }
}
