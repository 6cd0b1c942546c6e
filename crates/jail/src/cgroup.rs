//! Memory, pids and CPU limits for jail slots, on cgroup v1 (one hierarchy per
//! controller) or a pure cgroup v2 host, chosen at run time.
//!
//! Each jail slot owns one cgroup, created once and reused: creating and removing a
//! memory cgroup per jail leaks "dying" cgroups under churn. Every path is built from the
//! `root` given at construction, so tests can point it at a fixture directory.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::spec::CgroupJoin;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The limits a slot's cgroup enforces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub memory: u64,
    pub pids: u32,
    /// CPUs (CFS quota / period).
    pub cpu: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup {what} {path}: {source}")]
pub struct CgroupError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError { what, path: path.to_owned(), source }
}

/// A slot's cgroup set up for jails: its limits, and its files kept open so that the
/// checks after each jail need no path lookups.
#[derive(Debug)]
pub struct SlotCgroup {
    pub limits: Limits,
    /// `cgroup.procs` of the pids controller (v1) or of the cgroup (v2).
    procs: File,
    /// `memory.oom_control` (v1) or `memory.events` (v2).
    oom: File,
    /// The OOM-kill counter after the slot's last jail.
    oom_baseline: u64,
}

/// Reads a whole cgroup file from its start through an open descriptor.
fn pread_all(file: &File, what: &'static str, path: &Path) -> Result<String, CgroupError> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], len as u64).map_err(at(what, path))?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| at(what, path)(io::Error::other(e)))
}

/// Sky Island's part of the host's cgroup tree: `parent` below the v2 root, or below
/// each v1 controller's hierarchy.
#[derive(Clone, Debug)]
pub struct Cgroups {
    version: Version,
    root: PathBuf,
    parent: String,
}

impl Cgroups {
    /// `version` `None` means: v2 if `root` is a cgroup2 mount, v1 otherwise.
    pub fn new(root: &Path, version: Option<Version>, parent: &str) -> Result<Cgroups, CgroupError> {
        let version = match version {
            Some(v) => v,
            None => {
                let fs = rustix::fs::statfs(root).map_err(|e| at("inspect", root)(e.into()))?;
                if fs.f_type as i64 == CGROUP2_SUPER_MAGIC { Version::V2 } else { Version::V1 }
            }
        };
        let cgroups = Cgroups { version, root: root.to_owned(), parent: parent.to_owned() };
        cgroups.check_controllers()?;
        Ok(cgroups)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Creates (if needed) and limits cgroup `name`, and opens what the checks after each
    /// jail read.
    pub fn open_slot(&self, name: &str, limits: &Limits) -> Result<SlotCgroup, CgroupError> {
        self.ensure(name)?;
        self.set_limits(name, limits)?;
        let procs_path = self.dir("pids", name).join("cgroup.procs");
        let oom_path = self.oom_file(name);
        let procs = File::open(&procs_path).map_err(at("open", &procs_path))?;
        let oom = File::open(&oom_path).map_err(at("open", &oom_path))?;
        let oom_baseline = counter(&pread_all(&oom, "read", &oom_path)?, "oom_kill");
        Ok(SlotCgroup { limits: *limits, procs, oom, oom_baseline })
    }

    /// Whether the slot's cgroup holds no process.
    pub fn slot_is_empty(&self, slot: &SlotCgroup) -> Result<bool, CgroupError> {
        Ok(pread_all(&slot.procs, "read", Path::new("cgroup.procs"))?.trim().is_empty())
    }

    /// Whether the OOM killer killed anything in the slot since the last call.
    pub fn slot_oom_killed(&self, slot: &mut SlotCgroup) -> Result<bool, CgroupError> {
        let now = counter(&pread_all(&slot.oom, "read", Path::new("memory OOM counter"))?, "oom_kill");
        let killed = now > slot.oom_baseline;
        slot.oom_baseline = now;
        Ok(killed)
    }

    fn oom_file(&self, name: &str) -> PathBuf {
        match self.version {
            Version::V1 => self.dir("memory", name).join("memory.oom_control"),
            Version::V2 => self.dir("memory", name).join("memory.events"),
        }
    }

    fn check_controllers(&self) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                for controller in V1_CONTROLLERS {
                    let dir = self.root.join(controller);
                    if !dir.join("cgroup.procs").exists() {
                        return Err(at("find controller", &dir)(io::Error::other("not a mounted cgroup v1 hierarchy")));
                    }
                }
            }
            Version::V2 => {
                let file = self.root.join("cgroup.controllers");
                let available = fs::read_to_string(&file).map_err(at("read", &file))?;
                let missing: Vec<&str> =
                    V1_CONTROLLERS.into_iter().filter(|c| !available.split_whitespace().any(|a| a == *c)).collect();
                if !missing.is_empty() {
                    return Err(at("check controllers", &file)(io::Error::other(format!(
                        "controllers {} are not available (bound to a cgroup v1 hierarchy?)",
                        missing.join(", ")
                    ))));
                }
            }
        }
        Ok(())
    }

    /// The directories of cgroup `name` (one per v1 controller, one on v2).
    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        match self.version {
            Version::V1 => V1_CONTROLLERS.iter().map(|c| self.root.join(c).join(&self.parent).join(name)).collect(),
            Version::V2 => vec![self.root.join(&self.parent).join(name)],
        }
    }

    fn dir(&self, controller: &str, name: &str) -> PathBuf {
        match self.version {
            Version::V1 => self.root.join(controller).join(&self.parent).join(name),
            Version::V2 => self.root.join(&self.parent).join(name),
        }
    }

    /// Creates cgroup `name` (and the parent) if missing; true when it was created.
    pub fn ensure(&self, name: &str) -> Result<bool, CgroupError> {
        let dirs = self.dirs(name);
        if dirs.iter().all(|d| d.is_dir()) {
            return Ok(false);
        }
        if self.version == Version::V2 {
            self.enable_controllers()?;
        }
        for dir in &dirs {
            match fs::create_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(at("create", dir)(e)),
            }
        }
        Ok(true)
    }

    /// v2: controllers must be enabled in every ancestor's `cgroup.subtree_control`.
    fn enable_controllers(&self) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        let enable = V1_CONTROLLERS.map(|c| format!("+{c}")).join(" ");
        for part in std::iter::once("").chain(self.parent.split('/')) {
            dir.push(part);
            fs::create_dir_all(&dir).map_err(at("create", &dir))?;
            let control = dir.join("cgroup.subtree_control");
            let current = match fs::read_to_string(&control) {
                Ok(text) => text,
                // Only a fixture lacks the file; the kernel makes it with the directory.
                Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(at("read", &control)(e)),
            };
            if V1_CONTROLLERS.iter().all(|c| current.split_whitespace().any(|e| e == *c)) {
                continue;
            }
            fs::write(&control, &enable).map_err(at("enable controllers in", &control))?;
        }
        Ok(())
    }

    pub fn set_limits(&self, name: &str, limits: &Limits) -> Result<(), CgroupError> {
        let quota = ((limits.cpu * CPU_PERIOD_US as f64).round() as u64).max(1000);
        let writes: Vec<(&str, &str, String)> = match self.version {
            Version::V1 => vec![
                ("memory", "memory.limit_in_bytes", limits.memory.to_string()),
                ("memory", "memory.swappiness", "0".into()),
                ("pids", "pids.max", limits.pids.to_string()),
                ("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                ("cpu", "cpu.cfs_quota_us", quota.to_string()),
            ],
            Version::V2 => vec![
                ("memory", "memory.max", limits.memory.to_string()),
                ("memory", "memory.swap.max", "0".into()),
                ("pids", "pids.max", limits.pids.to_string()),
                ("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}")),
            ],
        };
        for (controller, file, value) in writes {
            let path = self.dir(controller, name).join(file);
            match fs::write(&path, &value) {
                // memory.swap.max / memory.swappiness are absent without swap support.
                Err(e) if e.kind() == io::ErrorKind::NotFound && file.contains("swap") => {}
                other => other.map_err(at("set limit", &path))?,
            }
        }
        Ok(())
    }

    /// How the jail's first process enters cgroup `name`.
    pub fn join(&self, name: &str) -> CgroupJoin {
        match self.version {
            Version::V1 => CgroupJoin::Procs(self.dirs(name).into_iter().map(|d| d.join("cgroup.procs")).collect()),
            Version::V2 => CgroupJoin::Into(self.dir("", name)),
        }
    }

    /// The processes in cgroup `name` (in any v1 controller).
    pub fn procs(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in self.dirs(name) {
            let file = dir.join("cgroup.procs");
            match fs::read_to_string(&file) {
                Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at("read", &file)(e)),
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Kills every process in cgroup `name` and waits (up to `patience`) until it is empty.
    pub fn kill_all(&self, name: &str, patience: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + patience;
        loop {
            let pids = self.procs(name)?;
            if pids.is_empty() {
                return Ok(());
            }
            if self.version == Version::V2 {
                let file = self.dir("", name).join("cgroup.kill");
                fs::write(&file, "1").map_err(at("kill", &file))?;
            } else {
                for pid in pids {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            if Instant::now() > deadline {
                let dir = self.dir("pids", name);
                return Err(at("empty", &dir)(io::Error::other("processes survive SIGKILL")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// How many times the kernel's OOM killer has killed a process of cgroup `name`.
    pub fn oom_kills(&self, name: &str) -> Result<u64, CgroupError> {
        let file = self.oom_file(name);
        let text = fs::read_to_string(&file).map_err(at("read", &file))?;
        Ok(counter(&text, "oom_kill"))
    }

    /// CPU time used by cgroup `name`: since it was made where the hierarchy accounts it
    /// (v2 `cpu.stat`, v1 `cpuacct.usage` when cpuacct is mounted with cpu); otherwise what
    /// its live processes have used (from `/proc/<pid>/stat`, their reaped children
    /// included). Take a baseline and compare.
    pub fn cpu_usage(&self, name: &str) -> Result<Duration, CgroupError> {
        let file = match self.version {
            Version::V1 => self.dir("cpu", name).join("cpuacct.usage"),
            Version::V2 => self.dir("cpu", name).join("cpu.stat"),
        };
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.version == Version::V1 => {
                return Ok(self.procs(name)?.into_iter().filter_map(process_cpu).sum());
            }
            Err(e) => return Err(at("read", &file)(e)),
        };
        Ok(match self.version {
            Version::V1 => Duration::from_nanos(text.trim().parse().unwrap_or(0)),
            Version::V2 => Duration::from_micros(counter(&text, "usage_usec")),
        })
    }

    /// The memory cgroup `name` uses now (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`): its processes' and the page cache charged to it.
    pub fn memory_usage(&self, name: &str) -> Result<u64, CgroupError> {
        let file = match self.version {
            Version::V1 => self.dir("memory", name).join("memory.usage_in_bytes"),
            Version::V2 => self.dir("memory", name).join("memory.current"),
        };
        let text = fs::read_to_string(&file).map_err(at("read", &file))?;
        Ok(text.trim().parse().unwrap_or(0))
    }

    /// CPU time used by the processes in cgroup `name` now (their reaped children
    /// included): what the jail running in a slot has used, where [`Cgroups::cpu_usage`]
    /// counts every jail the slot ever ran.
    pub fn processes_cpu(&self, name: &str) -> Result<Duration, CgroupError> {
        Ok(self.procs(name)?.into_iter().filter_map(process_cpu).sum())
    }

    /// How many forks cgroup `name` refused because of its pids limit.
    pub fn pids_refused(&self, name: &str) -> Result<u64, CgroupError> {
        let file = self.dir("pids", name).join("pids.events");
        match fs::read_to_string(&file) {
            Ok(text) => Ok(counter(&text, "max")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(at("read", &file)(e)),
        }
    }

    /// Removes cgroup `name`; it must be empty.
    pub fn remove(&self, name: &str) -> Result<(), CgroupError> {
        for dir in self.dirs(name) {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at("remove", &dir)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the parent cgroup if nothing (ours or another instance's) is left in it.
    pub fn remove_parent_if_empty(&self) {
        for dir in self.dirs("") {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Whether the parent cgroup exists (in any controller).
    pub fn parent_exists(&self) -> bool {
        self.dirs("").iter().any(|dir| dir.is_dir())
    }

    /// The slot cgroups that exist below the parent.
    pub fn list(&self) -> Vec<String> {
        let dir = self.dir("memory", "");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
/// User and system time of a process and of its children it has reaped.
fn process_cpu(pid: i32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state is field 3, utime 14 … cstime 17.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11..15)?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second))
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(version: Version) -> (tempfile::TempDir, Cgroups) {
        let dir = tempfile::tempdir().unwrap();
        match version {
            Version::V1 => {
                for c in V1_CONTROLLERS {
                    fs::create_dir_all(dir.path().join(c)).unwrap();
                    fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
                }
            }
            Version::V2 => {
                fs::write(dir.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
                fs::write(dir.path().join("cgroup.subtree_control"), "").unwrap();
            }
        }
        let cgroups = Cgroups::new(dir.path(), Some(version), "sky/island").unwrap();
        (dir, cgroups)
    }

    #[test]
    fn v1_limits_go_to_each_controller() {
        let (dir, cg) = fixture(Version::V1);
        assert!(cg.ensure("exec-7").unwrap());
        assert!(!cg.ensure("exec-7").unwrap());
        cg.set_limits("exec-7", &Limits { memory: 64 << 20, pids: 32, cpu: 0.5 }).unwrap();
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("memory/sky/island/exec-7/memory.limit_in_bytes"), "67108864");
        assert_eq!(read("pids/sky/island/exec-7/pids.max"), "32");
        assert_eq!(read("cpu/sky/island/exec-7/cpu.cfs_quota_us"), "50000");
        let CgroupJoin::Procs(files) = cg.join("exec-7") else { panic!("v1 joins by procs") };
        assert_eq!(files.len(), 3);
        fs::write(
            dir.path().join("memory/sky/island/exec-7/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills("exec-7").unwrap(), 3);
        assert_eq!(cg.list(), vec!["exec-7".to_string()]);
    }

    #[test]
    fn v2_enables_controllers_down_the_tree_and_clones_into_the_cgroup() {
        let (dir, cg) = fixture(Version::V2);
        cg.ensure("exec-1").unwrap();
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(read("sky/cgroup.subtree_control"), "+memory +pids +cpu");
        cg.set_limits("exec-1", &Limits { memory: 1 << 30, pids: 10, cpu: 2.0 }).unwrap();
        assert_eq!(read("sky/island/exec-1/memory.max"), "1073741824");
        assert_eq!(read("sky/island/exec-1/cpu.max"), "200000 100000");
        assert_eq!(cg.join("exec-1"), CgroupJoin::Into(dir.path().join("sky/island/exec-1")));
        fs::write(dir.path().join("sky/island/exec-1/memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
            .unwrap();
        assert_eq!(cg.oom_kills("exec-1").unwrap(), 1);
    }

    #[test]
    fn v2_without_controllers_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let err = Cgroups::new(dir.path(), Some(Version::V2), "sky").unwrap_err().to_string();
        assert!(err.contains("controllers memory, pids, cpu are not available"), "{err}");
    }
}
