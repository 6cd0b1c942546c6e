//! The admin endpoints for jails and statistics (token-protected by the router). The JSON
//! shapes are this module's ([`JailView`]), a superset of ours and the original's: each
//! jail also has the original's `jid`, `host`, `ip6`, `OSRelease`, `path` and `hostname`;
//! a jail is found by its id or its jid; one jail is also wrapped in `details`, and a kill
//! also says `deleted` with the jid, as the original answered.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::{Value, json};
use skyisland_runner::{JailInfo, JailState, LimitsInfo, Registry};

use super::ApiError;
use crate::App;

/// How long a kill request waits for the jail to be gone before answering.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A jail as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct JailView {
    pub id: String,
    pub jid: u32,
    pub name: String,
    pub hostname: String,
    /// The machine the jail runs on (the original's `host`).
    pub host: String,
    /// "exec" or "build".
    pub kind: &'static str,
    pub label: String,
    pub path: String,
    pub pid: i32,
    pub uid: u32,
    pub slot: String,
    pub state: JailState,
    pub started_at_ms: u64,
    pub limits: LimitsInfo,
    /// The jail's IPv4 address; `""` without one, as the original showed it.
    pub ip4: String,
    /// Jails have no IPv6 address.
    pub ip6: String,
    /// The kernel's release, as FreeBSD's `jls` showed the jail's.
    #[serde(rename = "OSRelease")]
    pub os_release: String,
    /// What its slot's cgroup holds now (`None` while it has no slot, or when the cgroup
    /// cannot be read).
    pub memory_bytes: Option<u64>,
    /// CPU time its processes have used.
    pub cpu_ms: Option<f64>,
}

impl From<JailInfo> for JailView {
    fn from(info: JailInfo) -> JailView {
        JailView {
            id: info.id,
            jid: info.jid,
            name: info.name,
            hostname: info.hostname,
            host: host_facts().0.clone(),
            kind: info.kind,
            label: info.label,
            path: info.path,
            pid: info.pid,
            uid: info.uid,
            slot: info.slot,
            state: info.state,
            started_at_ms: info.started_at_ms,
            limits: info.limits,
            ip4: info.ip4.unwrap_or_default(),
            ip6: String::new(),
            os_release: host_facts().1.clone(),
            memory_bytes: None,
            cpu_ms: None,
        }
    }
}

/// This machine's hostname and kernel release, read once.
fn host_facts() -> &'static (String, String) {
    static FACTS: OnceLock<(String, String)> = OnceLock::new();
    FACTS.get_or_init(|| {
        let uname = rustix::system::uname();
        (uname.nodename().to_string_lossy().into_owned(), uname.release().to_string_lossy().into_owned())
    })
}

pub async fn api_stats(State(app): State<Arc<App>>) -> Json<crate::stats::Snapshot> {
    Json(app.stats.snapshot())
}

/// A jail with what its slot's cgroup says it uses.
fn view_with_usage(app: &App, info: JailInfo) -> JailView {
    let mut view = JailView::from(info);
    if !view.slot.is_empty() {
        let cgroups = app.jails.host().cgroups();
        view.memory_bytes = cgroups.memory_usage(&view.slot).ok();
        view.cpu_ms = cgroups.processes_cpu(&view.slot).ok().map(|cpu| cpu.as_secs_f64() * 1000.0);
    }
    view
}

/// The running jails (`jails`, `count`: the original's), and apart, the pre-started ones
/// waiting for their call (`prestarted`: no jid, state `waiting`).
pub async fn list_jails(State(app): State<Arc<App>>) -> Json<Value> {
    let jails: Vec<JailView> =
        app.jails.registry().list().into_iter().map(|info| view_with_usage(&app, info)).collect();
    let prestarted: Vec<JailView> =
        app.jails.prestarted().into_iter().map(|info| view_with_usage(&app, info)).collect();
    Json(json!({ "count": jails.len(), "jails": jails, "prestarted": prestarted }))
}

/// A running jail by id or jid, or a pre-started one by id.
fn find_jail(app: &App, key: &str) -> Option<JailInfo> {
    app.jails.registry().find(key).or_else(|| app.jails.prestarted().into_iter().find(|j| j.id == key))
}

/// One jail, by id or jid: its fields, and the same inside `details` (the original's shape).
pub async fn get_jail(State(app): State<Arc<App>>, Path(key): Path<String>) -> Result<Json<Value>, ApiError> {
    let jail = find_jail(&app, &key).ok_or_else(|| no_jail(&key))?;
    let view = serde_json::to_value(view_with_usage(&app, jail))
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut answer = view.clone();
    if let Value::Object(fields) = &mut answer {
        fields.insert("details".into(), view);
    }
    Ok(Json(answer))
}

/// Kills one jail (by id or jid) and answers once it is gone (its processes dead, its
/// slot free).
pub async fn kill_jail(State(app): State<Arc<App>>, Path(key): Path<String>) -> Result<Json<Value>, ApiError> {
    let registry = app.jails.registry();
    let Some(jail) = registry.find(&key) else {
        // Not running: a pre-started jail (by id), or none.
        if app.jails.kill_prestarted(&key).await {
            return Ok(Json(json!({ "killed": [key], "deleted": 0, "gone": true })));
        }
        return Err(no_jail(&key));
    };
    if !registry.kill(&jail.id) {
        return Err(no_jail(&key));
    }
    let gone = wait_gone(registry, std::slice::from_ref(&jail.id)).await;
    Ok(Json(json!({ "killed": [jail.id], "deleted": jail.jid, "gone": gone })))
}

/// Kills every jail, the pre-started ones too, and answers once they are gone: `killed`
/// and `deleted` (their jids, as the original answered) are the running jails;
/// `prestarted_killed` the pre-started ones' ids.
pub async fn kill_jails(State(app): State<Arc<App>>) -> Json<Value> {
    let registry = app.jails.registry();
    let jails = registry.list();
    let ids: Vec<String> = jails.iter().map(|j| j.id.clone()).collect();
    let jids: Vec<u32> = jails.iter().map(|j| j.jid).collect();
    registry.kill_all();
    let prestarted = app.jails.kill_all_prestarted().await;
    let gone = wait_gone(registry, &ids).await;
    Json(json!({ "killed": ids, "deleted": jids, "gone": gone, "prestarted_killed": prestarted }))
}

fn no_jail(key: &str) -> ApiError {
    ApiError::not_found(format!("no running jail with id or jid {key:?}"))
}

/// Waits until none of `ids` is listed any more; false if some outlived [`KILL_WAIT`].
async fn wait_gone(registry: &Registry, ids: &[String]) -> bool {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        if ids.iter().all(|id| registry.get(id).is_none()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
