//! The functions this server was asked to call since start-up, for the console's Functions
//! page (`GET /api/v1/admin/functions` and `/api/v1/admin/function?url=`): per package
//! url, its runtime and current commit, the commits that ran, counts, latency quantiles,
//! cache hits, the last call and build; and a function's recent invocations and builds.
//!
//! Bounded: at most [`MAX_FUNCTIONS`] packages (the least recently called goes first),
//! [`RECENT`] invocations and [`BUILDS`] builds each. A request refused before any
//! repository was found (a bad request, no such repository) makes no entry, so made-up
//! urls cannot fill it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skyisland_functions::{Answer, CacheUse, FunctionError, Request};

use crate::stats::Route;
use crate::work::now_ms;

// What the catalog holds is bounded whatever the callers send: at most about
// 500 × (50 × 1 KiB + 10 × 5 KiB) ≈ 50 MB, with every package called and every text at its
// longest.
pub const MAX_FUNCTIONS: usize = 500;
pub const RECENT: usize = 50;
pub const BUILDS: usize = 10;
/// The distinct commits kept per function.
const COMMITS: usize = 20;
/// The most of a build's output kept per build (its end, where compilers put the error).
const OUTPUT_LIMIT: usize = 4 << 10;
/// The most of a call or an error message kept per record.
const TEXT_LIMIT: usize = 400;

/// Where a call came from.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Sync,
    Async,
}

#[derive(Clone, Debug, Serialize)]
pub struct Invocation {
    pub at_ms: u64,
    pub call: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub source: Source,
    pub status: u16,
    pub duration_ms: f64,
    /// Time in the execution jail; `None` when no jail ran (a cache hit, a failure
    /// before the run).
    pub jail_ms: Option<f64>,
    /// "hit" or "miss"; `None` when the call failed.
    pub cache: Option<&'static str>,
    pub commit: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Build {
    pub at_ms: u64,
    pub commit: Option<String>,
    pub ok: bool,
    /// The whole request that built (fetch, build, run).
    pub duration_ms: f64,
    pub error: Option<String>,
    /// The build's output, when it failed.
    pub output: Option<String>,
}

impl Build {
    /// A build that made `commit`, or failed with `e`.
    fn of(at_ms: u64, duration_ms: f64, result: Result<&str, &FunctionError>) -> Build {
        match result {
            Ok(commit) => {
                Build { at_ms, commit: Some(commit.to_owned()), ok: true, duration_ms, error: None, output: None }
            }
            Err(e) => Build {
                at_ms,
                commit: None,
                ok: false,
                duration_ms,
                error: Some(clipped(&shown(e))),
                output: match e {
                    FunctionError::BuildFailed { output } => Some(output_tail(output)),
                    _ => None,
                },
            },
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    runtime: Option<&'static str>,
    commit: Option<String>,
    commits: VecDeque<String>,
    latency: Route,
    cache_hits: u64,
    last_call_ms: u64,
    last_build_ms: Option<f64>,
    recent: VecDeque<Invocation>,
    builds: VecDeque<Build>,
}

/// One function, as the list shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub url: String,
    pub runtime: Option<String>,
    pub commit: Option<String>,
    /// The distinct commits that ran, oldest first (the last [`COMMITS`]).
    pub commits: Vec<String>,
    pub calls: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub cache_hits: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub last_call_ms: u64,
    /// How long the last request that built took.
    pub last_build_ms: Option<f64>,
    /// How many servers' counts these are (with Redis, [`merge`]).
    #[serde(default = "one")]
    pub servers: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default)]
pub struct Catalog {
    entries: Mutex<HashMap<String, Entry>>,
}

/// An error as its caller saw it: an internal one without the operator's paths or hosts
/// (the log has all of it).
fn shown(e: &FunctionError) -> String {
    match e {
        FunctionError::Internal(_) => skyisland_functions::repos::redact_locations(&e.to_string()),
        _ => e.to_string(),
    }
}

/// The first [`TEXT_LIMIT`] bytes of `text` (on a character boundary), marked when cut.
fn clipped(text: &str) -> String {
    if text.len() <= TEXT_LIMIT {
        return text.to_owned();
    }
    let mut end = TEXT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The last [`OUTPUT_LIMIT`] bytes of a build's output, marked when cut.
fn output_tail(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_LIMIT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, bound: usize) {
    if ring.len() == bound {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl Catalog {
    /// Records how a call of `request` ended, `elapsed` after it came.
    pub fn record(&self, request: &Request, source: Source, elapsed: Duration, result: &Result<Answer, FunctionError>) {
        if let Err(FunctionError::BadRequest(_) | FunctionError::RepoNotFound { .. }) = result {
            return;
        }
        let now = now_ms();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let status = match result {
            Ok(_) => 200,
            Err(e) => crate::api::function::status_of(e).as_u16(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = Self::entry(&mut entries, &request.url);
        entry.latency.record(status, elapsed);
        entry.last_call_ms = now;
        if let Some(runtime) = request.runtime {
            entry.runtime = Some(runtime.name());
        }
        let mut invocation = Invocation {
            at_ms: now,
            call: clipped(&request.call),
            version: request.version.clone(),
            source,
            status,
            duration_ms,
            jail_ms: None,
            cache: None,
            commit: None,
            error: None,
        };
        match result {
            Ok(answer) => {
                entry.runtime = Some(match answer.path {
                    "dispatch" | "build" => "go",
                    runtime => runtime,
                });
                if !entry.commits.contains(&answer.commit) {
                    push_bounded(&mut entry.commits, answer.commit.clone(), COMMITS);
                }
                entry.commit = Some(answer.commit.clone());
                invocation.commit = Some(answer.commit.clone());
                match answer.cache {
                    CacheUse::Hit { .. } => {
                        entry.cache_hits += 1;
                        invocation.cache = Some("hit");
                    }
                    CacheUse::Miss => {
                        invocation.cache = Some("miss");
                        invocation.jail_ms = Some(answer.run_time.as_secs_f64() * 1000.0);
                    }
                }
                if answer.built {
                    entry.add_build(Build::of(now, duration_ms, Ok(&answer.commit)));
                }
            }
            Err(e) => {
                if let FunctionError::BuildFailed { .. } | FunctionError::BuildTimedOut(_) = e {
                    entry.add_build(Build::of(now, duration_ms, Err(e)));
                }
                invocation.error = Some(clipped(&shown(e)));
            }
        }
        push_bounded(&mut entry.recent, invocation, RECENT);
    }

    /// Records a build asked for by itself (`POST /api/v1/builds`, a push): `Ok` with the
    /// commit built, or how it failed. A refusal before a repository was found records
    /// nothing.
    pub fn record_build(&self, url: &str, elapsed: Duration, result: Result<&str, &FunctionError>) {
        if let Err(FunctionError::BadRequest(_) | FunctionError::RepoNotFound { .. }) = result {
            return;
        }
        let build = Build::of(now_ms(), elapsed.as_secs_f64() * 1000.0, result);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::entry(&mut entries, url).add_build(build);
    }

    /// The entry for `url`, made (dropping the least recently called when full) if new.
    fn entry<'a>(entries: &'a mut HashMap<String, Entry>, url: &str) -> &'a mut Entry {
        if !entries.contains_key(url) && entries.len() >= MAX_FUNCTIONS {
            let oldest = entries.iter().min_by_key(|(_, e)| e.last_call_ms).map(|(url, _)| url.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.entry(url.to_owned()).or_default()
    }

    /// Every function, the most recently called first.
    pub fn list(&self) -> Vec<Summary> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Summary> = entries.iter().map(|(url, entry)| summary(url, entry)).collect();
        list.sort_by(|a, b| b.last_call_ms.cmp(&a.last_call_ms).then_with(|| a.url.cmp(&b.url)));
        list
    }

    /// One function: its summary, its recent invocations and its builds (newest first).
    pub fn get(&self, url: &str) -> Option<(Summary, Vec<Invocation>, Vec<Build>)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(url)?;
        Some((
            summary(url, entry),
            entry.recent.iter().rev().cloned().collect(),
            entry.builds.iter().rev().cloned().collect(),
        ))
    }
}

impl Entry {
    fn add_build(&mut self, build: Build) {
        if build.ok {
            self.last_build_ms = Some(build.duration_ms);
        }
        push_bounded(&mut self.builds, build, BUILDS);
    }
}

fn summary(url: &str, entry: &Entry) -> Summary {
    Summary {
        url: url.to_owned(),
        runtime: entry.runtime.map(str::to_owned),
        commit: entry.commit.clone(),
        commits: entry.commits.iter().cloned().collect(),
        calls: entry.latency.count,
        client_errors: entry.latency.client_errors,
        server_errors: entry.latency.server_errors,
        cache_hits: entry.cache_hits,
        p50_ms: entry.latency.quantile_ms(0.5),
        p99_ms: entry.latency.quantile_ms(0.99),
        last_call_ms: entry.last_call_ms,
        last_build_ms: entry.last_build_ms,
        servers: 1,
    }
}

/// This server's functions and other servers' (shared through Redis) as one list: counts
/// added up, the quantiles the highest of the servers', the runtime, commit and build
/// time of the server that called last.
pub fn merge(mine: Vec<Summary>, others: Vec<Summary>) -> Vec<Summary> {
    let mut by_url: HashMap<String, Summary> = HashMap::new();
    for summary in mine.into_iter().chain(others) {
        let Some(seen) = by_url.get_mut(&summary.url) else {
            by_url.insert(summary.url.clone(), summary);
            continue;
        };
        for commit in &summary.commits {
            if !seen.commits.contains(commit) {
                seen.commits.push(commit.clone());
            }
        }
        seen.calls += summary.calls;
        seen.client_errors += summary.client_errors;
        seen.server_errors += summary.server_errors;
        seen.cache_hits += summary.cache_hits;
        seen.p50_ms = seen.p50_ms.max(summary.p50_ms);
        seen.p99_ms = seen.p99_ms.max(summary.p99_ms);
        seen.servers += summary.servers;
        if summary.last_call_ms > seen.last_call_ms {
            seen.last_call_ms = summary.last_call_ms;
            seen.runtime = summary.runtime.or(seen.runtime.take());
            seen.commit = summary.commit.or(seen.commit.take());
            seen.last_build_ms = summary.last_build_ms.or(seen.last_build_ms);
        }
    }
    let mut list: Vec<Summary> = by_url.into_values().collect();
    list.sort_by(|a, b| b.last_call_ms.cmp(&a.last_call_ms).then_with(|| a.url.cmp(&b.url)));
    list
}

/// Every [`EVERY`], shares the summaries of the functions called since the last time with
/// the other servers, when the async engine is Redis (`work::cluster`); every [`RENEW`],
/// all of them, so that the others can tell a live server's from a dead one's (older than
/// [`SHARED_FOR`]). [`withdraw`] takes them back at shutdown.
pub async fn share(app: std::sync::Arc<crate::App>) {
    let Some(cluster) = app.work.store.cluster() else { return };
    let mut shared_until = 0;
    let mut renewed = std::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::time::sleep(EVERY).await;
        if app.jails.is_closing() {
            return;
        }
        let renew = renewed.elapsed() >= RENEW;
        let changed: Vec<Summary> =
            app.catalog.list().into_iter().filter(|s| renew || s.last_call_ms > shared_until).collect();
        let Some(newest) = changed.iter().map(|s| s.last_call_ms).max() else { continue };
        match cluster.share_functions(&changed).await {
            Ok(()) => {
                shared_until = newest;
                failing = false;
                if renew {
                    renewed = std::time::Instant::now();
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "sharing the functions called with the other servers");
            }
            Err(_) => {}
        }
    }
}

/// Takes this server's summaries out of the cluster's list (it is stopping: its counts end
/// with it); waits at most 2 s for Redis.
pub async fn withdraw(app: &crate::App) {
    let Some(cluster) = app.work.store.cluster() else { return };
    match tokio::time::timeout(Duration::from_secs(2), cluster.withdraw_functions()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "withdrawing this server's functions from the cluster's list"),
        Err(_) => tracing::warn!("withdrawing this server's functions from the cluster's list: no answer within 2 s"),
    }
}

/// How often [`share`] runs, and renews everything it shares.
pub const EVERY: Duration = Duration::from_secs(5);
pub const RENEW: Duration = Duration::from_secs(60);
/// How long a server's shared summaries count without being renewed.
pub const SHARED_FOR: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> Request {
        Request {
            url: url.into(),
            call: "F()".into(),
            version: None,
            cache_bust: false,
            ip4: false,
            cache: None,
            runtime: None,
        }
    }

    #[test]
    fn bounded_and_refusals_make_no_entry() {
        let catalog = Catalog::default();
        let refused = Err(FunctionError::BadRequest("no".into()));
        catalog.record(&request("example.com/a/b"), Source::Sync, Duration::from_millis(1), &refused);
        assert!(catalog.list().is_empty());
        for i in 0..MAX_FUNCTIONS + 5 {
            let failed = Err(FunctionError::TimedOut(Duration::from_secs(1)));
            catalog.record(&request(&format!("example.com/a/{i}")), Source::Async, Duration::from_millis(1), &failed);
        }
        assert_eq!(catalog.list().len(), MAX_FUNCTIONS);
        let url = format!("example.com/a/{}", MAX_FUNCTIONS + 4);
        for _ in 0..RECENT + 3 {
            let failed = Err(FunctionError::BuildFailed { output: "x".repeat(OUTPUT_LIMIT * 2) });
            catalog.record(&request(&url), Source::Sync, Duration::from_millis(2), &failed);
        }
        let (summary, recent, builds) = catalog.get(&url).unwrap();
        assert_eq!(
            (summary.calls, summary.client_errors, recent.len(), builds.len()),
            (RECENT as u64 + 4, RECENT as u64 + 3, RECENT, BUILDS)
        );
        assert_eq!(recent[0].status, 422);
        assert!(builds[0].output.as_ref().unwrap().len() <= OUTPUT_LIMIT + 3 && !builds[0].ok);
        assert!(recent[0].error.as_ref().unwrap().len() <= TEXT_LIMIT + 3);
    }

    #[test]
    fn the_clusters_summaries_add_up() {
        let summary = |calls: u64, p99_ms: f64, last_call_ms: u64, commit: &str| Summary {
            url: "example.com/a/b".into(),
            runtime: Some("go".into()),
            commit: Some(commit.into()),
            commits: vec![commit.into()],
            calls,
            client_errors: 1,
            server_errors: 0,
            cache_hits: 2,
            p50_ms: 1.0,
            p99_ms,
            last_call_ms,
            last_build_ms: None,
            servers: 1,
        };
        let mut other = summary(5, 9.0, 20, "new");
        other.url = "example.com/a/c".into();
        let merged = merge(vec![summary(3, 5.0, 10, "old")], vec![summary(4, 7.0, 30, "new"), other]);
        assert_eq!(merged.len(), 2);
        let b = merged.iter().find(|s| s.url == "example.com/a/b").unwrap();
        assert_eq!((b.calls, b.client_errors, b.cache_hits, b.servers), (7, 2, 4, 2));
        assert_eq!((b.p99_ms, b.last_call_ms, b.commit.as_deref()), (7.0, 30, Some("new")));
        assert_eq!(b.commits, ["old", "new"]);
        assert_eq!(merged[0].url, "example.com/a/b", "the most recently called first");
    }
}
