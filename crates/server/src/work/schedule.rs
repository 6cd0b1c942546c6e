//! Schedules: a call made at each tick of a cron expression (in a time zone) or of a fixed
//! interval. Each tick is recorded with the invocation it made, in the transaction that
//! moves the schedule to its next tick, so a tick runs at most once; a tick missed while
//! the server was down runs once at start-up when the schedule says `catch_up`, and is
//! skipped otherwise.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::store::{Job, Kind, ScheduleRow};
use super::{StoredCall, now_ms, timestamp};
use crate::App;

/// A tick later than this is missed (the server was down or stalled), not late.
const MISSED_AFTER: Duration = Duration::from_secs(5);

/// A schedule as given to `POST /api/v1/schedules`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub url: String,
    pub call: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// The cron expression's time zone (IANA name); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Run a tick missed while the server was down once at start-up (else skip it).
    #[serde(default)]
    pub catch_up: bool,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub ip4: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

/// When a schedule ticks.
#[derive(Debug)]
pub enum Timing {
    Every(Duration),
    Cron(Box<croner::Cron>, chrono_tz::Tz),
}

impl Spec {
    /// Checks the spec; its timing.
    pub fn timing(&self) -> Result<Timing, String> {
        if self.name.is_empty()
            || self.name.len() > 100
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("invalid schedule name {:?}: 1 to 100 letters, digits, '-', '_' or '.'", self.name));
        }
        let timezone = match &self.timezone {
            None => chrono_tz::UTC,
            Some(name) => {
                chrono_tz::Tz::from_str(name).map_err(|_| format!("unknown timezone {name:?} (an IANA name)"))?
            }
        };
        match (&self.cron, &self.every) {
            (Some(_), Some(_)) | (None, None) => Err("a schedule has either cron or every".into()),
            (None, Some(every)) => {
                if self.timezone.is_some() {
                    return Err("timezone applies to cron, not to every".into());
                }
                let every = humantime::parse_duration(every)
                    .map_err(|e| format!("invalid every {every:?}: {e} (for example \"30s\" or \"5m\")"))?;
                if every < Duration::from_secs(1) || every > Duration::from_secs(366 * 24 * 3600) {
                    return Err("every must be from 1s to 366 days".into());
                }
                Ok(Timing::Every(every))
            }
            (Some(cron), None) => {
                let parsed = croner::Cron::from_str(cron).map_err(|e| format!("invalid cron {cron:?}: {e}"))?;
                let timing = Timing::Cron(Box::new(parsed), timezone);
                // A pattern that never matches (30 February) is refused now.
                timing.next_after(0, now_ms()).ok_or_else(|| format!("cron {cron:?} never ticks"))?;
                Ok(timing)
            }
        }
    }

    pub fn stored_call(&self) -> StoredCall {
        StoredCall {
            url: self.url.clone(),
            call: self.call.clone(),
            version: self.version.clone(),
            cache_bust: false,
            ip4: self.ip4,
            cache: self.cache,
            runtime: self.runtime.clone(),
        }
    }
}

impl Timing {
    /// The first tick strictly after `after_ms`; `origin_ms` anchors intervals.
    pub fn next_after(&self, origin_ms: u64, after_ms: u64) -> Option<u64> {
        match self {
            Timing::Every(every) => {
                let every = every.as_millis() as u64;
                let origin = origin_ms.min(after_ms);
                Some(origin + ((after_ms - origin) / every + 1) * every)
            }
            Timing::Cron(cron, timezone) => {
                let after = Utc.timestamp_millis_opt(after_ms as i64).single()?.with_timezone(timezone);
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

/// A schedule as the API shows it.
pub fn view(row: &ScheduleRow, runs: &[Job]) -> Value {
    let mut view = row.spec.clone();
    view["paused"] = json!(row.paused);
    view["created_at"] = json!(timestamp(row.created_ms));
    if !row.paused {
        view["next_run_at"] = json!(timestamp(row.next_ms));
    }
    view["last_runs"] = runs.iter().map(super::view).collect();
    view
}

/// Runs the ticks that are due, four times a second, until the jails close.
pub async fn tick(app: Arc<App>) {
    let mut outage = super::Outage::default();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if app.jails.is_closing() {
            return;
        }
        let rows = match app.work.store.schedules().await {
            Ok(rows) => {
                outage.worked("reading the schedules");
                rows
            }
            Err(e) => {
                outage.failed("reading the schedules", &e);
                continue;
            }
        };
        let now = now_ms();
        for row in rows.into_iter().filter(|r| !r.paused && r.next_ms <= now) {
            if let Err(e) = run_due(&app, &row, now).await {
                tracing::error!(schedule = %row.name, error = %e, "running a schedule's tick");
            }
        }
    }
}

async fn run_due(app: &Arc<App>, row: &ScheduleRow, now: u64) -> Result<(), String> {
    let spec: Spec = serde_json::from_value(row.spec.clone()).map_err(|e| e.to_string())?;
    let timing = spec.timing()?;
    let next = timing.next_after(row.created_ms, now).ok_or("the schedule never ticks again")?;
    let missed = now.saturating_sub(row.next_ms) > MISSED_AFTER.as_millis() as u64;
    // The tick to run: the one due, or (missed) the latest of those missed, once.
    let tick = if missed {
        if !spec.catch_up {
            tracing::info!(schedule = %row.name, since = %timestamp(row.next_ms), "skipping missed ticks");
            app.work
                .store
                .run_tick(row.name.clone(), row.next_ms, None, None, next)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let mut latest = row.next_ms;
        while let Some(t) = timing.next_after(row.created_ms, latest).filter(|&t| t <= now) {
            latest = t;
        }
        latest
    } else {
        row.next_ms
    };
    let mut job = Job::new(Kind::Call, serde_json::to_value(spec.stored_call()).map_err(|e| e.to_string())?, now);
    job.schedule = Some(row.name.clone());
    let ran = app
        .work
        .store
        .run_tick(row.name.clone(), row.next_ms, Some(tick), Some(job), next)
        .await
        .map_err(|e| e.to_string())?;
    if ran {
        metrics::counter!("skyisland_schedule_ticks_total").increment(1);
        app.work.wake();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: Option<&str>, every: Option<&str>) -> Spec {
        Spec {
            name: "s".into(),
            url: "example.com/x".into(),
            call: "F()".into(),
            version: None,
            runtime: None,
            cron: cron.map(Into::into),
            every: every.map(Into::into),
            timezone: None,
            catch_up: false,
            paused: false,
            ip4: false,
            cache: None,
        }
    }

    #[test]
    fn intervals_tick_from_their_origin() {
        let timing = spec(None, Some("30s")).timing().unwrap();
        assert_eq!(timing.next_after(1_000, 1_000), Some(31_000));
        assert_eq!(timing.next_after(1_000, 30_999), Some(31_000));
        assert_eq!(timing.next_after(1_000, 31_000), Some(61_000));
    }

    #[test]
    fn cron_ticks_in_its_time_zone() {
        let mut s = spec(Some("0 9 * * *"), None);
        s.timezone = Some("Europe/Copenhagen".into());
        let timing = s.timing().unwrap();
        // 2025-12-05T00:00:00Z: 09:00 in Copenhagen (UTC+1 in winter) is 08:00Z.
        let next = timing.next_after(0, 1_764_892_800_000).unwrap();
        assert_eq!(timestamp(next), "2025-12-05T08:00:00.000Z");
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(spec(None, None).timing().is_err());
        assert!(spec(Some("* * * * *"), Some("1s")).timing().is_err());
        assert!(spec(Some("not cron"), None).timing().is_err());
        assert!(spec(Some("0 0 30 2 *"), None).timing().is_err());
        assert!(spec(None, Some("10ms")).timing().is_err());
        let mut s = spec(None, Some("1s"));
        s.name = "../x".into();
        assert!(s.timing().is_err());
    }
}
