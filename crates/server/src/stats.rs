//! Request statistics for `/api/v1/admin/api-stats`: counts and response times per route
//! and counts per status, since start-up; and the fields of the Go `thoas/stats`
//! middleware the original server answered with (`pid`, `uptime` as Go prints a duration,
//! `status_code_count` for the current second and `total_status_code_count` since
//! start-up, response times…), so that its dashboards keep working.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Upper bounds (µs) of the latency buckets; the last bucket is open-ended.
const BUCKETS_US: [u64; 20] = [
    100,
    200,
    500,
    1_000,
    2_000,
    3_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
];

/// Counts and a latency histogram: a route's, or a function's (`catalog`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Route {
    pub(crate) count: u64,
    pub(crate) client_errors: u64,
    pub(crate) server_errors: u64,
    total_us: u64,
    max_us: u64,
    buckets: [u64; BUCKETS_US.len() + 1],
}

impl Route {
    pub(crate) fn record(&mut self, status: u16, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.count += 1;
        match status {
            400..=499 => self.client_errors += 1,
            500..=599 => self.server_errors += 1,
            _ => {}
        }
        self.total_us += us;
        self.max_us = self.max_us.max(us);
        let bucket = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        self.buckets[bucket] += 1;
    }

    /// The upper bound of the bucket holding quantile `q` (an over-estimate by design).
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = BUCKETS_US.get(i).copied().unwrap_or(self.max_us);
                return bound.min(self.max_us) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    routes: BTreeMap<String, Route>,
    /// Function calls answered from the request cache, and not.
    cache_hits: u64,
    cache_misses: u64,
    statuses: BTreeMap<u16, u64>,
    total_us: u64,
    /// The current second (Unix time) and its counts per status.
    second: u64,
    this_second: BTreeMap<u16, u64>,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub uptime_seconds: u64,
    pub requests: u64,
    pub routes: BTreeMap<String, RouteSnapshot>,
    pub statuses: BTreeMap<u16, u64>,
    /// The original's (`thoas/stats`) fields.
    #[serde(flatten)]
    pub original: Original,
}

/// What the Go `thoas/stats` middleware answered.
#[derive(Debug, Serialize)]
pub struct Original {
    pub pid: u32,
    /// Go's `time.Duration` text, e.g. "1h2m3.5s".
    pub uptime: String,
    pub uptime_sec: f64,
    /// Go's `time.Time` text.
    pub time: String,
    pub unixtime: i64,
    /// Per status ("200"), in the current second.
    pub status_code_count: BTreeMap<String, u64>,
    /// Per status, since start-up.
    pub total_status_code_count: BTreeMap<String, u64>,
    pub count: u64,
    pub total_count: u64,
    pub total_response_time: String,
    pub total_response_time_sec: f64,
    pub average_response_time: String,
    pub average_response_time_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct RouteSnapshot {
    pub count: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { started: Instant::now(), inner: Mutex::default() }
    }
}

impl Stats {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.statuses.entry(status).or_default() += 1;
        inner.total_us = inner.total_us.saturating_add(us);
        let second = unix_seconds();
        if inner.second != second {
            inner.second = second;
            inner.this_second.clear();
        }
        *inner.this_second.entry(status).or_default() += 1;
        let entry = match inner.routes.get_mut(route) {
            Some(entry) => entry,
            None => inner.routes.entry(route.to_owned()).or_default(),
        };
        entry.record(status, elapsed);
    }

    /// Counts a function call's answer as a request-cache hit or miss.
    pub fn record_cache(&self, hit: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if hit {
            inner.cache_hits += 1;
        } else {
            inner.cache_misses += 1;
        }
    }

    /// The counts since start-up of one route, and the cache's, for [`Totals::since`].
    pub fn totals(&self, route: &str) -> Totals {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Totals {
            route: inner.routes.get(route).cloned().unwrap_or_default(),
            cache_hits: inner.cache_hits,
            cache_misses: inner.cache_misses,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let routes = inner
            .routes
            .iter()
            .map(|(name, r)| {
                let snapshot = RouteSnapshot {
                    count: r.count,
                    client_errors: r.client_errors,
                    server_errors: r.server_errors,
                    mean_ms: if r.count == 0 { 0.0 } else { r.total_us as f64 / r.count as f64 / 1000.0 },
                    p50_ms: r.quantile_ms(0.5),
                    p99_ms: r.quantile_ms(0.99),
                    max_ms: r.max_us as f64 / 1000.0,
                };
                (name.clone(), snapshot)
            })
            .collect();
        let uptime = self.uptime();
        let total_count: u64 = inner.statuses.values().sum();
        let this_second = if inner.second == unix_seconds() { inner.this_second.clone() } else { BTreeMap::new() };
        let by_text = |counts: &BTreeMap<u16, u64>| counts.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        let total = Duration::from_micros(inner.total_us);
        let average = if total_count == 0 { Duration::ZERO } else { total / total_count as u32 };
        let now = std::time::SystemTime::now();
        let original = Original {
            pid: std::process::id(),
            uptime: go_duration(uptime),
            uptime_sec: uptime.as_secs_f64(),
            time: go_time(now),
            unixtime: unix_seconds() as i64,
            count: this_second.values().sum(),
            status_code_count: by_text(&this_second),
            total_status_code_count: by_text(&inner.statuses),
            total_count,
            total_response_time: go_duration(total),
            total_response_time_sec: total.as_secs_f64(),
            average_response_time: go_duration(average),
            average_response_time_sec: average.as_secs_f64(),
        };
        Snapshot {
            uptime_seconds: uptime.as_secs(),
            requests: total_count,
            routes,
            statuses: inner.statuses.clone(),
            original,
        }
    }
}

/// Counts since start-up (see [`Stats::totals`]).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    route: Route,
    cache_hits: u64,
    cache_misses: u64,
}

/// What happened between two [`Totals`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Interval {
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// Of the requests in the interval (bucket upper bounds); `None` without any.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl Totals {
    /// What happened since `earlier`.
    pub fn since(&self, earlier: &Totals) -> Interval {
        let (now, then) = (&self.route, &earlier.route);
        let mut delta = Route {
            count: now.count.saturating_sub(then.count),
            client_errors: now.client_errors.saturating_sub(then.client_errors),
            server_errors: now.server_errors.saturating_sub(then.server_errors),
            total_us: 0,
            max_us: now.max_us,
            buckets: [0; BUCKETS_US.len() + 1],
        };
        for (i, bucket) in delta.buckets.iter_mut().enumerate() {
            *bucket = now.buckets[i].saturating_sub(then.buckets[i]);
        }
        let some = delta.count > 0;
        Interval {
            ok: delta.count.saturating_sub(delta.client_errors).saturating_sub(delta.server_errors),
            client_errors: delta.client_errors,
            server_errors: delta.server_errors,
            p50_ms: some.then(|| delta.quantile_ms(0.5)),
            p99_ms: some.then(|| delta.quantile_ms(0.99)),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
            cache_misses: self.cache_misses.saturating_sub(earlier.cache_misses),
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A duration as Go's `time.Duration.String` prints it: "1h2m3.5s", "1.5ms", "0s".
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    // Below a second: the largest unit with a whole part, up to nine decimals trimmed.
    let fraction = |value: u128, unit: u128| {
        let whole = value / unit;
        let rest = value % unit;
        let digits = unit.ilog10() as usize;
        let decimals = format!("{rest:0digits$}");
        let decimals = decimals.trim_end_matches('0');
        if decimals.is_empty() { whole.to_string() } else { format!("{whole}.{decimals}") }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes) = (seconds / 3600, (seconds % 3600) / 60);
    let secs = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// A time as Go's `time.Time.String` prints a UTC time: "2026-12-02 15:04:05.123456789 +0000 UTC".
fn go_time(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let date = t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"));
    // Go trims the fraction's trailing zeros (and the dot, for whole seconds).
    let nanos = format!("{:09}", t.nanosecond());
    let nanos = nanos.trim_end_matches('0');
    let fraction = if nanos.is_empty() { String::new() } else { format!(".{nanos}") };
    format!("{}{fraction} +0000 UTC", date.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles() {
        let stats = Stats::default();
        for ms in [1, 1, 1, 2, 40] {
            stats.record("GET /x", 200, Duration::from_millis(ms));
        }
        stats.record("GET /x", 404, Duration::from_micros(50));
        stats.record("POST /y", 500, Duration::from_millis(3));
        let s = stats.snapshot();
        assert_eq!(s.requests, 7);
        let x = &s.routes["GET /x"];
        assert_eq!((x.count, x.client_errors, x.server_errors), (6, 1, 0));
        assert_eq!(x.p50_ms, 1.0);
        assert_eq!(x.max_ms, 40.0);
        assert_eq!(x.p99_ms, 40.0);
        assert_eq!(s.statuses[&500], 1);
        assert_eq!(s.original.total_count, 7);
        assert_eq!(s.original.total_status_code_count["200"], 5);
        assert_eq!(s.original.pid, std::process::id());
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(3500), "3.5s"),
            (Duration::from_secs(62), "1m2s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(90_000), "25h0m0s"),
        ] {
            assert_eq!(go_duration(d), text);
        }
        assert_eq!(
            go_time(std::time::UNIX_EPOCH + Duration::from_secs(1_796_000_000)),
            "2026-11-30 00:53:20 +0000 UTC"
        );
    }
}
