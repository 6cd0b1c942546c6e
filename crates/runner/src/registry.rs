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
    /// A number unique among the running jails, counting up from 1 (as FreeBSD's jail
    /// ids do); assigned when the jail is listed.
    pub jid: u32,
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
    /// A pre-started jail: its program started, waiting for its call.
    Waiting,
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

/// Now, as Unix time in milliseconds (jails' `started_at_ms`).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl LimitsInfo {
    pub(crate) fn of(launch: &skyisland_jail::Launch, timeout: std::time::Duration, output_limit: u64) -> LimitsInfo {
        LimitsInfo {
            memory_bytes: launch.limits.memory,
            pids: launch.limits.pids,
            cpus: launch.limits.cpu,
            disk_bytes: launch.disk,
            timeout_ms: timeout.as_millis() as u64,
            output_bytes: output_limit,
        }
    }
}

struct Entry {
    info: JailInfo,
    kill: Arc<Notify>,
}

#[derive(Default, Clone)]
pub struct Registry {
    jails: Arc<Mutex<BTreeMap<String, Entry>>>,
    /// The last jid given out.
    last_jid: Arc<std::sync::atomic::AtomicU32>,
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

    /// Adds a jail with the next jid; it stays listed until the returned guard is dropped.
    /// Jids count up, as FreeBSD's do, so a jid an administrator read a moment ago never
    /// names a newer jail (until the count wraps, past jids still in use).
    pub(crate) fn insert(&self, mut info: JailInfo, kill: Arc<Notify>) -> Listed {
        let id = info.id.clone();
        let kind = info.kind;
        let mut jails = self.lock();
        info.jid = loop {
            let jid = self.last_jid.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_add(1);
            if jid != 0 && !jails.values().any(|e| e.info.jid == jid) {
                break jid;
            }
        };
        jails.insert(id.clone(), Entry { info, kill });
        drop(jails);
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

    /// The jail whose id is `key`, or whose jid is `key` (a number).
    pub fn find(&self, key: &str) -> Option<JailInfo> {
        let jails = self.lock();
        if let Some(entry) = jails.get(key) {
            return Some(entry.info.clone());
        }
        let jid: u32 = key.parse().ok()?;
        jails.values().find(|e| e.info.jid == jid).map(|e| e.info.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> JailInfo {
        JailInfo {
            id: id.into(),
            jid: 0,
            name: id.into(),
            hostname: id.into(),
            kind: "exec",
            label: String::new(),
            path: String::new(),
            pid: 1,
            uid: 1,
            slot: String::new(),
            state: JailState::Running,
            started_at_ms: 0,
            limits: LimitsInfo { memory_bytes: 0, pids: 0, cpus: 0.0, disk_bytes: 0, timeout_ms: 0, output_bytes: 0 },
            ip4: None,
        }
    }

    #[test]
    fn jids_count_up_and_find_jails_like_ids() {
        let registry = Registry::default();
        let a = registry.insert(info("a"), Arc::default());
        let b = registry.insert(info("b"), Arc::default());
        assert_eq!((registry.find("a").unwrap().jid, registry.find("b").unwrap().jid), (1, 2));
        assert_eq!(registry.find("2").unwrap().id, "b");
        drop(b);
        assert_eq!(registry.find("2"), None, "a gone jail's jid finds nothing");
        let _c = registry.insert(info("c"), Arc::default());
        assert_eq!(registry.find("c").unwrap().jid, 3, "jids are not reused at once");
        assert_eq!(registry.find("x"), None);
        // Past the wrap, jids still in use are skipped, and 0 is never given.
        registry.last_jid.store(u32::MAX - 1, std::sync::atomic::Ordering::Relaxed);
        let _d = registry.insert(info("d"), Arc::default());
        let _e = registry.insert(info("e"), Arc::default());
        let _f = registry.insert(info("f"), Arc::default());
        assert_eq!(registry.find("d").unwrap().jid, u32::MAX);
        assert_eq!(registry.find("e").unwrap().jid, 2, "1 is a's, 0 is never given");
        assert_eq!(registry.find("f").unwrap().jid, 4, "3 is c's");
        drop(a);
    }
}
