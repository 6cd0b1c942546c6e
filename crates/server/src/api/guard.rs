//! What stands before the function endpoint, in order, so that a refused request costs
//! almost nothing: the API key (401 without one when keys are required, 403 with an
//! unknown one), the rate limits per client address and per key (429 with Retry-After),
//! and the cap on requests in flight with its bounded queue (503 beyond it).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use skyisland_config::Config;
use skyisland_functions::Gate;

use super::ApiError;
use crate::App;
use crate::auth::{self, ApiKeys};

#[derive(Debug)]
pub struct Guard {
    pub keys: ApiKeys,
    by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    in_flight: Gate,
}

impl Guard {
    pub fn new(config: Arc<Config>) -> std::io::Result<Arc<Guard>> {
        let by_address = config
            .rate_limit
            .per_second
            .and_then(|rate| auth::quota(rate, config.rate_limit.burst_or_default(rate)).map(RateLimiter::keyed));
        let in_flight = Gate::new("requests", config.limits.max_in_flight, config.limits.max_queue);
        let guard = Arc::new(Guard { keys: ApiKeys::open(config)?, by_address, in_flight });
        if guard.by_address.is_some() {
            tokio::spawn(forget_quiet_addresses(Arc::downgrade(&guard)));
        }
        Ok(guard)
    }

    /// Requests waiting for a place.
    pub fn queued(&self) -> usize {
        self.in_flight.queued()
    }
}

/// Buckets of addresses that have been quiet long enough to be full again are dropped,
/// so the limiter's memory follows the active clients.
async fn forget_quiet_addresses(guard: Weak<Guard>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(guard) = guard.upgrade() else { return };
        if let Some(limiter) = &guard.by_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// IPv6 clients are limited per /64, the block one host usually has.
fn client_bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

fn too_many(by: &'static str, wait: Duration) -> ApiError {
    metrics::counter!("skyisland_rate_limited_total", "by" => by).increment(1);
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    tracing::debug!(by, retry_after = seconds, "rate limited");
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("rate limit of this {by} exceeded; retry in {seconds}s"))
        .retry_after(seconds)
        .closing()
}

/// The key a request carries: `Authorization: Bearer KEY` or the configured header.
fn given_key<'a>(request: &'a Request, header: &str) -> Result<Option<&'a str>, ApiError> {
    let bad = || ApiError::bad_request("the API key header is not valid text").closing();
    if let Some(value) = request.headers().get(header) {
        return value.to_str().map(|v| Some(v.trim())).map_err(|_| bad());
    }
    match request.headers().get(axum::http::header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().map_err(|_| bad())?;
            match value.split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(key.trim())),
                _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "the Authorization header must be \"Bearer KEY\"")
                    .closing()),
            }
        }
        None => Ok(None),
    }
}

/// Who made a request, for what is scoped to a caller (idempotency keys): the API key's
/// id, or `None` for a request without one.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<String>);

pub async fn guard_function(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let guard = &app.guard;
    let auth = &app.config.auth;
    // The operator (the console's "Try it") calls with the admin token instead of a key:
    // no key, no per-key or per-address rate; the cap on requests in flight still holds.
    match super::is_admin(&app, request.headers()) {
        Some(true) => {
            request.extensions_mut().insert(Caller(Some("admin".into())));
            return in_flight(guard, request, next).await;
        }
        Some(false) => return Err(wrong_admin_token(&app)),
        None => {}
    }
    let key = match given_key(&request, &auth.key_header)? {
        Some(given) => match guard.keys.find(given) {
            Some(found) => Some(found),
            None => {
                metrics::counter!("skyisland_auth_rejected_total", "reason" => "unknown").increment(1);
                return Err(ApiError::new(StatusCode::FORBIDDEN, "unknown API key").closing());
            }
        },
        None if auth.api_keys_required => {
            metrics::counter!("skyisland_auth_rejected_total", "reason" => "missing").increment(1);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("an API key is required: send Authorization: Bearer KEY or the {} header", auth.key_header),
            )
            .with_header("www-authenticate", "Bearer")
            .closing());
        }
        None => None,
    };
    if let Some(limiter) = &guard.by_address
        && let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(not_until) = limiter.check_key(&client_bucket(addr.ip()))
    {
        return Err(too_many("client address", not_until.wait_time_from(DefaultClock::default().now())));
    }
    if let Some((keys, i)) = &key
        && let Some(limiter) = &keys[*i].limiter
        && let Err(not_until) = limiter.check()
    {
        return Err(too_many("API key", not_until.wait_time_from(DefaultClock::default().now())));
    }
    let caller = key.as_ref().map(|(keys, i)| keys[*i].id.clone());
    request.extensions_mut().insert(Caller(caller));
    in_flight(guard, request, next).await
}

/// Runs the request within the cap on requests in flight (503 when the queue is full).
async fn in_flight(guard: &Guard, request: Request, next: Next) -> Result<Response, ApiError> {
    let _permit = guard.in_flight.enter().await.map_err(|e| {
        metrics::counter!("skyisland_overloaded_total").increment(1);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(1).closing()
    })?;
    Ok(next.run(request).await)
}

/// Endpoints for the operator or a holder of an API key (builds): the admin token, or a
/// known key (whether or not keys are required for calls).
pub async fn require_key_or_admin(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match super::is_admin(&app, request.headers()) {
        Some(true) => return Ok(next.run(request).await),
        Some(false) => return Err(wrong_admin_token(&app)),
        None => {}
    }
    match given_key(&request, &app.config.auth.key_header)? {
        Some(given) if app.guard.keys.find(given).is_some() => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "unknown API key").closing()),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "builds need the admin token ({}) or an API key (Authorization: Bearer KEY or {})",
                app.config.admin.header, app.config.auth.key_header
            ),
        )
        .with_header("www-authenticate", "Bearer")
        .closing()),
    }
}

fn wrong_admin_token(app: &App) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "Forbidden")
        .with("detail", format!("wrong admin token in the {} header", app.config.admin.header))
        .closing()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_bucket(a), client_bucket(b));
        assert_ne!(client_bucket(a), client_bucket(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_bucket(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
