//! The live jails of this process (the original's `jls`): what the admin API lists, and
//! the handle it kills them through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;

/// A jail's details as the admin API shows them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JailInfo {
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// "exec" or "build".
    pub kind: &'static str,
    /// What it runs, for people: the function call, or the build step.
    pub label: String,
    /// Where its root is assembled (inside its own mount namespace).
    pub path: String,
    pub pid: i32,
    pub uid: u32,
    pub slot: String,
    pub state: JailState,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    pub limits: LimitsInfo,
    /// The jail's IPv4 address, when it has one.
    pub ip4: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JailState {
    Starting,
    Running,
    Stopping,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LimitsInfo {
    pub memory_bytes: u64,
    pub pids: u32,
    pub cpus: f64,
    pub disk_bytes: u64,
    pub timeout_ms: u64,
    pub output_bytes: u64,
}

struct Entry {
    info: JailInfo,
    kill: Arc<Notify>,
}

#[derive(Default, Clone)]
pub struct Registry {
    jails: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("jails", &self.len()).finish()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.jails.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a jail; it stays listed until the returned guard is dropped.
    pub(crate) fn insert(&self, info: JailInfo, kill: Arc<Notify>) -> Listed {
        let id = info.id.clone();
        let kind = info.kind;
        self.lock().insert(id.clone(), Entry { info, kill });
        metrics::counter!("skyisland_jails_created_total", "kind" => kind).increment(1);
        metrics::gauge!("skyisland_jails_running", "kind" => kind).increment(1.0);
        Listed { registry: self.clone(), id, kind }
    }

    pub fn list(&self) -> Vec<JailInfo> {
        self.lock().values().map(|e| e.info.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<JailInfo> {
        self.lock().get(id).map(|e| e.info.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the jail's runner to kill it; false if there is no such jail.
    pub fn kill(&self, id: &str) -> bool {
        let mut jails = self.lock();
        match jails.get_mut(id) {
            Some(entry) => {
                entry.info.state = JailState::Stopping;
                entry.kill.notify_one();
                true
            }
            None => false,
        }
    }

    /// Kills every jail; returns how many there were.
    pub fn kill_all(&self) -> usize {
        let mut jails = self.lock();
        for entry in jails.values_mut() {
            entry.info.state = JailState::Stopping;
            entry.kill.notify_one();
        }
        jails.len()
    }

    pub(crate) fn update(&self, id: &str, f: impl FnOnce(&mut JailInfo)) {
        if let Some(entry) = self.lock().get_mut(id) {
            f(&mut entry.info);
        }
    }
}

/// Removes its jail from the registry when dropped.
pub(crate) struct Listed {
    registry: Registry,
    id: String,
    kind: &'static str,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        metrics::counter!("skyisland_jails_removed_total", "kind" => self.kind).increment(1);
        metrics::gauge!("skyisland_jails_running", "kind" => self.kind).decrement(1.0);
    }
}
