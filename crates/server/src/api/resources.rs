//! `GET /api/v1/admin/resources`: leak accounting. What this server holds right now, read
//! from the system where it can be: jails (running and warm), slots in use, jail root
//! clones and mounts under its directories, slot cgroups, IPv4 leases, idle address
//! namespaces and bridge links, open file descriptors (by kind), child processes and
//! threads. At rest, after any amount of work, the transient ones (jails, clones, mounts,
//! leases, namespaces, links, sockets, pipes, children) return to the same values; those
//! held by design are bounded: a lock and cgroup files per slot ever used, one descriptor
//! per cached binary.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use skyisland_jail::{CloneBackend, SlotKind};

use super::ApiError;
use crate::App;

pub async fn resources(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    let ip4 = match &app.network {
        Some(network) => Some(network.census().await.map_err(|e| internal(e.to_string()))?),
        None => None,
    };
    let counted = Arc::clone(&app);
    let system = tokio::task::spawn_blocking(move || system_counts(&counted))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(format!("reading /proc: {e}")))?;
    let host = app.jails.host();
    let summary = app.jails.summary();
    let in_use = |kind| host.capacity(kind) - host.free_slots(kind);
    Ok(Json(json!({
        "jails": { "running": summary.running, "warm": summary.warm },
        "slots_in_use": { "exec": in_use(SlotKind::Exec), "build": in_use(SlotKind::Build) },
        "root_clones": host.backend().in_use().len(),
        "cgroups": host.cgroups().list().len(),
                "mounts": system.mounts,
        "open_fds": system.open_fds,
        "fds": system.fds,
        "binary_cache_entries": app.functions.cache_status().binary_cache_entries,
        "binaries_in_memory": app.functions.cache_status().binaries_in_memory,
        "child_processes": system.children,
        "threads": system.threads,
        "ip4": ip4,
        "queued": {
            "requests": app.guard.queued(),
            "executions": app.functions.queued().0,
            "builds": app.functions.queued().1,
        },
    })))
}

struct SystemCounts {
    mounts: usize,
    open_fds: usize,
    fds: Value,
    children: usize,
    threads: usize,
}

fn system_counts(app: &App) -> std::io::Result<SystemCounts> {
    let config = &app.config;
    let mut roots = vec![config.data_dir.clone(), config.run_dir.clone()];
    roots.extend(config.storage.btrfs_dir.clone());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| roots.iter().any(|root| Path::new(point).starts_with(root)))
        .count();
    // Descriptors by what they are: those held by design (a lock per slot used, a
    // slot's cgroup files, a slot's network namespace, one per binary held in memory) and
    // the transient rest. The directory's own descriptor, open while it is read, is not
    // counted.
    let (mut slot_locks, mut cgroup_files, mut cached_binaries, mut namespaces) = (0, 0, 0, 0);
    let (mut sockets, mut pipes, mut other) = (0usize, 0usize, 0usize);
    let slots = config.run_dir.join("slots");
    let entries: Vec<_> = std::fs::read_dir("/proc/self/fd")?.filter_map(Result::ok).collect();
    for entry in &entries {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let text = target.to_string_lossy();
        if target.starts_with(&slots) {
            slot_locks += 1;
        } else if target.starts_with(&config.cgroup.root) {
            cgroup_files += 1;
        } else if text.starts_with("/memfd:skyisland-fn") {
            cached_binaries += 1;
        } else if text.starts_with("net:[") {
            namespaces += 1;
        } else if text.starts_with("socket:") {
            sockets += 1;
        } else if text.starts_with("pipe:") {
            pipes += 1;
        } else {
            other += 1;
        }
    }
    let open_fds = entries.len().saturating_sub(1);
    let fds = json!({
        "slot_locks": slot_locks,
        "cgroup_files": cgroup_files,
        "cached_binaries": cached_binaries,
        "network_namespaces": namespaces,
        "sockets": sockets,
        "pipes": pipes,
        "other": other.saturating_sub(1),
    });
    let me = std::process::id().to_string();
    let mut children = 0;
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // The fields after the command (which may hold spaces and parentheses): state, ppid.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1));
        children += usize::from(ppid == Some(me.as_str()));
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads =
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or_default();
    Ok(SystemCounts { mounts, open_fds, fds, children, threads })
}
