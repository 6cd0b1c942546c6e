//! What this process holds on the host right now, read from the system: mounts under its
//! directories, open descriptors by kind, child processes and threads, and the jail
//! machinery's own counts. The admin API's leak accounting shows it; at rest, after any
//! amount of work, the transient parts return to the same values and those held by design
//! stay bounded (a lock, cgroup files and a network namespace per slot ever used, one
//! descriptor per binary held in memory).

use std::path::Path;

use serde::Serialize;
use skyisland_config::Config;
use skyisland_jail::{CloneBackend, SlotKind};

use crate::Jails;

/// See the module's documentation.
#[derive(Clone, Debug, Serialize)]
pub struct Census {
    pub jails: JailCounts,
    pub slots_in_use: SlotCounts,
    pub root_clones: usize,
    pub cgroups: usize,
    pub mounts: usize,
    pub open_fds: usize,
    pub fds: Descriptors,
    pub child_processes: usize,
    pub threads: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct JailCounts {
    pub running: usize,
    pub warm: usize,
    /// Pre-started: launched with their program waiting for its call, or being launched.
    pub prestarted: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct SlotCounts {
    pub exec: usize,
    pub build: usize,
}

/// Open descriptors by what they are.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Descriptors {
    pub slot_locks: usize,
    pub cgroup_files: usize,
    /// Binaries held in memory (sealed memfds).
    pub cached_binaries: usize,
    pub network_namespaces: usize,
    pub sockets: usize,
    pub pipes: usize,
    pub other: usize,
}

impl Jails {
    /// Counts what this process holds (blocking: it reads /proc).
    pub fn census(&self, config: &Config) -> std::io::Result<Census> {
        let host = self.host();
        let summary = self.summary();
        let in_use = |kind| host.capacity(kind) - host.free_slots(kind);
        let mut roots = vec![config.data_dir.clone(), config.run_dir.clone()];
        roots.extend(config.storage.btrfs_dir.clone());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mounts = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| roots.iter().any(|root| Path::new(point).starts_with(root)))
            .count();
        let mut fds = Descriptors::default();
        let slots = config.run_dir.join("slots");
        let entries: Vec<_> = std::fs::read_dir("/proc/self/fd")?.filter_map(Result::ok).collect();
        for entry in &entries {
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            let text = target.to_string_lossy();
            let counter = if target.starts_with(&slots) {
                &mut fds.slot_locks
            } else if target.starts_with(&config.cgroup.root) {
                &mut fds.cgroup_files
            } else if text.starts_with("/memfd:skyisland-fn") {
                &mut fds.cached_binaries
            } else if text.starts_with("net:[") {
                &mut fds.network_namespaces
            } else if text.starts_with("socket:") {
                &mut fds.sockets
            } else if text.starts_with("pipe:") {
                &mut fds.pipes
            } else {
                &mut fds.other
            };
            *counter += 1;
        }
        // The directory's own descriptor, open while it is read, is not counted.
        fds.other = fds.other.saturating_sub(1);
        let me = std::process::id().to_string();
        let mut child_processes = 0;
        for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // The fields after the command (which may hold spaces and parentheses): state, ppid.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1));
            child_processes += usize::from(ppid == Some(me.as_str()));
        }
        let status = std::fs::read_to_string("/proc/self/status")?;
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_default();
        Ok(Census {
            jails: JailCounts {
                running: summary.running,
                warm: summary.warm,
                prestarted: summary.prestarted.ready + summary.prestarted.starting,
            },
            slots_in_use: SlotCounts { exec: in_use(SlotKind::Exec), build: in_use(SlotKind::Build) },
            root_clones: host.backend().in_use().len(),
            cgroups: host.cgroups().list().len(),
            mounts,
            open_fds: entries.len().saturating_sub(1),
            fds,
            child_processes,
            threads,
        })
    }
}
