//! The last 15 minutes of the server's vital signs, kept by the server itself (a ring of
//! 180 points, one every 5 s) for the console's charts: `GET /api/v1/admin/history`.
//! Each point covers the 5 s before it: function calls per second by outcome, their
//! latency (p50, p99), the request cache's hit ratio; and what was in use at its end:
//! jails against capacity, warm and pre-started jails, queues.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::App;
use crate::stats::Totals;

/// How often a point is taken, and how many are kept.
pub const EVERY: Duration = Duration::from_secs(5);
pub const POINTS: usize = 180;

/// The route whose calls the history follows.
const FUNCTION_ROUTE: &str = "POST /api/v1/function";

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// When it was taken (Unix time, ms).
    pub t: u64,
    /// Function calls per second, by outcome.
    pub ok_per_second: f64,
    pub client_errors_per_second: f64,
    pub server_errors_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Of the calls answered in the interval; `None` without any.
    pub cache_hit_ratio: Option<f64>,
    pub jails_running: usize,
    pub jail_capacity: usize,
    pub warm_jails: usize,
    pub prestarted_jails: usize,
    pub queued_requests: usize,
    pub queued_executions: usize,
    pub queued_builds: usize,
    pub async_queued: Option<u64>,
    pub async_running: Option<u64>,
}

#[derive(Debug, Default)]
pub struct History {
    points: Mutex<VecDeque<Point>>,
}

impl History {
    pub fn points(&self) -> Vec<Point> {
        self.points.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    fn push(&self, point: Point) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        if points.len() == POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// The endpoint's answer.
    pub fn view(&self) -> Value {
        json!({ "interval_seconds": EVERY.as_secs(), "points": self.points() })
    }
}

/// Takes a point every [`EVERY`] until the jails close.
pub async fn sample(app: Arc<App>) {
    let mut before: Totals = app.stats.totals(FUNCTION_ROUTE);
    let mut ticker = tokio::time::interval(EVERY);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if app.jails.is_closing() {
            return;
        }
        let now = app.stats.totals(FUNCTION_ROUTE);
        let interval = now.since(&before);
        before = now;
        let seconds = EVERY.as_secs_f64();
        let answered = interval.cache_hits + interval.cache_misses;
        let jails = app.jails.summary();
        let (executions, builds) = app.functions.queued();
        let depth =
            tokio::time::timeout(Duration::from_secs(1), app.work.store.depth()).await.ok().and_then(Result::ok);
        app.history.push(Point {
            t: crate::work::now_ms(),
            ok_per_second: interval.ok as f64 / seconds,
            client_errors_per_second: interval.client_errors as f64 / seconds,
            server_errors_per_second: interval.server_errors as f64 / seconds,
            p50_ms: interval.p50_ms,
            p99_ms: interval.p99_ms,
            cache_hit_ratio: (answered > 0).then(|| interval.cache_hits as f64 / answered as f64),
            jails_running: jails.running,
            jail_capacity: jails.capacity,
            warm_jails: jails.warm,
            prestarted_jails: jails.prestarted.ready + jails.prestarted.starting,
            queued_requests: app.guard.queued(),
            queued_executions: executions,
            queued_builds: builds,
            async_queued: depth.map(|d| d.0),
            async_running: depth.map(|d| d.1),
        });
    }
}
