//! Rust client of Sky Island: function calls (with the optional fields) and the admin
//! API, over HTTP or HTTPS.
//!
//! ```no_run
//! # async fn example() -> Result<(), skyisland_client::Error> {
//! let client = skyisland_client::Client::new("http://127.0.0.1:3280")?;
//! let data = client.function("github.com/mmcloughlin/geohash", "Encode(57.64911, 10.40744)").await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error: its status, its message and its whole body (which
    /// may hold more, e.g. `output` for a build failure or `stderr` for a failing function).
    #[error("{status}: {message}")]
    Status { status: StatusCode, message: String, body: Value, retry_after: Option<Duration> },
    /// No answer (connection refused, timeout, …).
    #[error("no answer from the server: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unreadable answer: {0}")]
    Decode(String),
    #[error("invalid server URL {0:?}: expected e.g. http://127.0.0.1:3280")]
    BadUrl(String),
}

impl Error {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A function call with its optional fields.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Request {
    pub url: String,
    pub call: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache_bust: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ip4: bool,
    /// Whether the request cache may answer and store it (`None`: as the server is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// The package's runtime: "go", "python", "node" or "lua" (`None`: the server detects it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl Request {
    pub fn new(url: impl Into<String>, call: impl Into<String>) -> Request {
        Request { url: url.into(), call: call.into(), ..Request::default() }
    }
}

/// The server's answer to a function call.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Answer {
    pub timestamp: i64,
    pub data: String,
    pub commit: String,
    pub path: String,
    pub built: bool,
    pub cache: String,
    #[serde(default)]
    pub cache_tier: Option<String>,
    #[serde(default)]
    pub cached_at_ms: Option<u64>,
    pub duration_ms: f64,
}

/// A client of one server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    admin_token: Option<String>,
    admin_header: String,
    api_key: Option<String>,
}

impl Client {
    /// `server` is the base URL, e.g. `http://127.0.0.1:3280`. Requests time out after 60 s.
    pub fn new(server: &str) -> Result<Client, Error> {
        Client::with_timeout(server, Duration::from_secs(60))
    }

    pub fn with_timeout(server: &str, timeout: Duration) -> Result<Client, Error> {
        let base = server.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() <= "https://".len() {
            return Err(Error::BadUrl(server.to_owned()));
        }
        // The server closes connections idle for `limits.client_timeout` (10 s by default):
        // give them up first, rather than send a request on one as it closes.
        let http = reqwest::Client::builder().timeout(timeout).pool_idle_timeout(Duration::from_secs(4)).build()?;
        Ok(Client {
            base: base.to_owned(),
            http,
            admin_token: None,
            admin_header: "X-Sky-Island-Token".into(),
            api_key: None,
        })
    }

    /// Sends `token` with admin calls.
    pub fn admin_token(mut self, token: impl Into<String>) -> Client {
        self.admin_token = Some(token.into());
        self
    }

    /// The header the server expects the admin token in (default `X-Sky-Island-Token`).
    pub fn admin_header(mut self, header: impl Into<String>) -> Client {
        self.admin_header = header.into();
        self
    }

    /// Sends `key` as `Authorization: Bearer KEY` with function calls.
    pub fn api_key(mut self, key: impl Into<String>) -> Client {
        self.api_key = Some(key.into());
        self
    }

    /// Runs `call` of the package at import path `url`; returns what it printed.
    pub async fn function(&self, url: &str, call: &str) -> Result<String, Error> {
        Ok(self.call(&Request::new(url, call)).await?.data)
    }

    /// Runs a call with the optional fields; returns the whole answer.
    pub async fn call(&self, request: &Request) -> Result<Answer, Error> {
        let mut builder = self.http.post(format!("{}/api/v1/function", self.base)).json(request);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let value = send(builder).await?;
        serde_json::from_value(value).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The running jails.
    pub async fn jails(&self) -> Result<Vec<Value>, Error> {
        let answer = self.admin(Method::GET, "/api/v1/admin/jails", None).await?;
        match answer.get("jails") {
            Some(Value::Array(jails)) => Ok(jails.clone()),
            _ => Err(Error::Decode(format!("no jails in {answer}"))),
        }
    }

    pub async fn jail(&self, id: &str) -> Result<Value, Error> {
        self.admin(Method::GET, &format!("/api/v1/admin/jail/{}", encode(id)), None).await
    }

    /// Kills a jail; returns once it is gone.
    pub async fn kill_jail(&self, id: &str) -> Result<Value, Error> {
        self.admin(Method::DELETE, &format!("/api/v1/admin/jail/{}", encode(id)), None).await
    }

    pub async fn kill_jails(&self) -> Result<Value, Error> {
        self.admin(Method::DELETE, "/api/v1/admin/jails", None).await
    }

    /// The IPv4 pool, optionally only the addresses in `state` ("available", "unavailable").
    pub async fn ips(&self, state: Option<&str>) -> Result<Value, Error> {
        let path = match state {
            Some(state) => format!("/api/v1/admin/ips?state={}", encode(state)),
            None => "/api/v1/admin/ips".to_owned(),
        };
        self.admin(Method::GET, &path, None).await
    }

    pub async fn set_ip(&self, ip: &str, state: &str) -> Result<Value, Error> {
        let body = serde_json::json!({ "ip": ip, "state": state });
        self.admin(Method::PUT, "/api/v1/admin/ips", Some(body)).await
    }

    /// Submits `request` to run in the background; returns the invocation's id at once
    /// (202). `callback_url` must be under one of the server's `[async] callback_allow`;
    /// the same `idempotency_key` names the same invocation.
    pub async fn call_async(
        &self,
        request: &Request,
        callback_url: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<String, Error> {
        let mut body = serde_json::to_value(request).map_err(|e| Error::Decode(e.to_string()))?;
        body["async"] = Value::Bool(true);
        if let Some(url) = callback_url {
            body["callback_url"] = url.into();
        }
        if let Some(key) = idempotency_key {
            body["idempotency_key"] = key.into();
        }
        let mut builder = self.http.post(format!("{}/api/v1/function", self.base)).json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let answer = send(builder).await?;
        accepted_id(&answer)
    }

    /// An invocation: `status` (queued, running, succeeded, failed), its attempts and, once
    /// finished, `result` (the answer a synchronous call gets) or `error` and `http_status`.
    pub async fn invocation(&self, id: &str) -> Result<Value, Error> {
        let mut builder = self.http.get(format!("{}/api/v1/invocations/{}", self.base, encode(id)));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        send(builder).await
    }

    /// Waits (polling) until the invocation has finished, at most `timeout`; returns it.
    pub async fn wait_invocation(&self, id: &str, timeout: Duration) -> Result<Value, Error> {
        wait_finished(timeout, || self.invocation(id)).await
    }

    /// Invocations, newest first (admin), optionally of one status.
    pub async fn invocations(&self, status: Option<&str>) -> Result<Value, Error> {
        let path = match status {
            Some(status) => format!("/api/v1/invocations?status={}", encode(status)),
            None => "/api/v1/invocations".to_owned(),
        };
        self.admin(Method::GET, &path, None).await
    }

    /// Starts fetching and building a package ahead of calls (admin token or API key);
    /// returns the build's id.
    pub async fn build(&self, url: &str, version: Option<&str>, runtime: Option<&str>) -> Result<String, Error> {
        let mut body = serde_json::json!({ "url": url });
        if let Some(version) = version {
            body["version"] = version.into();
        }
        if let Some(runtime) = runtime {
            body["runtime"] = runtime.into();
        }
        let answer = self.keyed(Method::POST, "/api/v1/builds", Some(body)).await?;
        accepted_id(&answer)
    }

    /// A build: its `status`, and once finished its `result` (commit, runtime) or `error`
    /// (with the compiler's `output`).
    pub async fn build_status(&self, id: &str) -> Result<Value, Error> {
        self.keyed(Method::GET, &format!("/api/v1/builds/{}", encode(id)), None).await
    }

    /// Waits (polling) until the build has finished, at most `timeout`; returns it.
    pub async fn wait_build(&self, id: &str, timeout: Duration) -> Result<Value, Error> {
        wait_finished(timeout, || self.build_status(id)).await
    }

    /// Adds a schedule (admin): `{"name", "url", "call", "cron" | "every", ...}`.
    pub async fn add_schedule(&self, schedule: &Value) -> Result<Value, Error> {
        self.admin(Method::POST, "/api/v1/schedules", Some(schedule.clone())).await
    }

    pub async fn schedules(&self) -> Result<Value, Error> {
        self.admin(Method::GET, "/api/v1/schedules", None).await
    }

    /// A schedule with its last runs.
    pub async fn schedule(&self, name: &str) -> Result<Value, Error> {
        self.admin(Method::GET, &format!("/api/v1/schedules/{}", encode(name)), None).await
    }

    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<Value, Error> {
        let body = serde_json::json!({ "paused": paused });
        self.admin(Method::PUT, &format!("/api/v1/schedules/{}", encode(name)), Some(body)).await
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        let mut builder = self.http.delete(format!("{}/api/v1/schedules/{}", self.base, encode(name)));
        if let Some(token) = &self.admin_token {
            builder = builder.header(self.admin_header.as_str(), token);
        }
        let response = builder.send().await?;
        if response.status().is_success() {
            return Ok(());
        }
        send_answered(response).await.map(|_| ())
    }

    /// A request with the admin token when there is one, else the API key.
    async fn keyed(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        if self.admin_token.is_some() {
            return self.admin(method, path, body).await;
        }
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        send(builder).await
    }

    pub async fn api_stats(&self) -> Result<Value, Error> {
        self.admin(Method::GET, "/api/v1/admin/api-stats", None).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.admin_token {
            builder = builder.header(self.admin_header.as_str(), token);
        }
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        send(builder).await
    }
}

fn accepted_id(answer: &Value) -> Result<String, Error> {
    answer
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Decode(format!("no id in {answer}")))
}

/// Polls `get` until the job it reads has finished (or `timeout` passes: an error).
async fn wait_finished<F: Future<Output = Result<Value, Error>>>(
    timeout: Duration,
    mut get: impl FnMut() -> F,
) -> Result<Value, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let job = get().await?;
        if matches!(job.get("status").and_then(Value::as_str), Some("succeeded" | "failed")) {
            return Ok(job);
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Err(Error::Decode(format!("not finished within {timeout:?}: {job}")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

async fn send(builder: reqwest::RequestBuilder) -> Result<Value, Error> {
    send_answered(builder.send().await?).await
}

async fn send_answered(response: reqwest::Response) -> Result<Value, Error> {
    let status = response.status();
    let retry_after =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).map(Duration::from_secs);
    let text = response.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body.get("error").and_then(Value::as_str).map_or_else(|| text.trim().to_owned(), str::to_owned);
        return Err(Error::Status { status, message, body, retry_after });
    }
    if body.is_null() {
        return Err(Error::Decode(format!("not JSON: {:.200}", text)));
    }
    Ok(body)
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_only_the_fields_given() {
        let plain = serde_json::to_value(Request::new("example.test/a/b", "F(\"q\\\\\")")).unwrap();
        assert_eq!(plain, serde_json::json!({"url": "example.test/a/b", "call": "F(\"q\\\\\")"}));
        let full = Request {
            version: Some("v1".into()),
            cache_bust: true,
            ip4: true,
            cache: Some(false),
            runtime: Some("python".into()),
            ..Request::new("u", "c")
        };
        let full = serde_json::to_value(full).unwrap();
        assert_eq!(full["version"], "v1");
        assert_eq!(full["runtime"], "python");
        assert_eq!(
            (full["cache_bust"].as_bool(), full["ip4"].as_bool(), full["cache"].as_bool()),
            (Some(true), Some(true), Some(false))
        );
    }

    #[test]
    fn server_urls_and_path_segments() {
        assert!(Client::new("127.0.0.1:3280").is_err());
        assert!(Client::new("http://127.0.0.1:3280/").is_ok());
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
