//! Request statistics for `/api/v1/admin/api-stats`: counts and response times per route
//! and counts per status, since start-up.

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

#[derive(Debug, Default)]
struct Route {
    count: u64,
    client_errors: u64,
    server_errors: u64,
    total_us: u64,
    max_us: u64,
    buckets: [u64; BUCKETS_US.len() + 1],
}

impl Route {
    /// The upper bound of the bucket holding quantile `q` (an over-estimate by design).
    fn quantile_ms(&self, q: f64) -> f64 {
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
    statuses: BTreeMap<u16, u64>,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub uptime_seconds: u64,
    pub requests: u64,
    pub routes: BTreeMap<String, RouteSnapshot>,
    pub statuses: BTreeMap<u16, u64>,
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
        let entry = match inner.routes.get_mut(route) {
            Some(entry) => entry,
            None => inner.routes.entry(route.to_owned()).or_default(),
        };
        entry.count += 1;
        match status {
            400..=499 => entry.client_errors += 1,
            500..=599 => entry.server_errors += 1,
            _ => {}
        }
        entry.total_us += us;
        entry.max_us = entry.max_us.max(us);
        let bucket = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        entry.buckets[bucket] += 1;
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
        Snapshot {
            uptime_seconds: self.uptime().as_secs(),
            requests: inner.statuses.values().sum(),
            routes,
            statuses: inner.statuses.clone(),
        }
    }
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
    }
}
