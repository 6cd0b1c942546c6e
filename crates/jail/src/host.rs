//! A host's jail machinery: the spawner, the slot pools, the cgroups and the clone backend,
//! and the life cycle of one jail on top of them — lease a slot, set its limits, clone
//! its root, spawn; and after the program has exited, check for limit kills, make sure
//! nothing of it survives, release the root and the slot.
//!
//! Synchronous: the server waits for jails on their pidfds with its own event loop.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CgroupError, Cgroups, Limits};
use crate::process::{self, ExitStatus};
use crate::rootfs::{AnyBackend, CloneBackend, RootfsError};
use crate::slots::{Lease, SlotDef, SlotPool};
use crate::spawner::{JailIo, SpawnError, Spawner};
use crate::spec::{Bind, FileSpec, JailSpec, Network, Program, Resource, Rlimit};

/// How long a slot's leftover processes get to disappear after SIGKILL.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// Function execution: one uid per slot.
    Exec,
    /// The build jail: one uid shared by all its processes, a cgroup per concurrent build.
    Build,
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotKind::Exec => "execution",
            SlotKind::Build => "build",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("all {0} jail slots on this host are in use")]
    Busy(SlotKind),
    #[error("the base root filesystem is not initialised (run `skyisland init`)")]
    NotInitialised,
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// What a host needs to know to run jails.
#[derive(Debug)]
pub struct HostConfig {
    /// Machine-wide runtime state: slot locks and scratch directories.
    pub run_dir: PathBuf,
    pub cgroups: Cgroups,
    pub backend: AnyBackend,
    /// One execution slot per uid.
    pub exec_uids: Vec<u32>,
    pub build_uid: u32,
    pub build_slots: u32,
    /// Keep the lock of a used slot until [`JailHost::release_idle_slots`] lets go of it (a
    /// server), rather than releasing it after its jail (a one-shot command).
    pub keep_slots: bool,
    /// Clone jails from this process instead of a helper (a one-shot command, which must
    /// stay single-threaded while it launches).
    pub inline_spawner: bool,
    /// The spawner helper, forked at [`JailHost::open`], executes this program (which
    /// must call [`crate::spawner::run_as_program`] on [`crate::spawner::SPAWNER_ARG`]):
    /// every jail is a clone of the helper, so the fewer pages the helper has, the less
    /// each clone copies and each jail's exec throws away. `None`: the helper stays a
    /// copy of this process.
    pub spawner_program: Option<PathBuf>,
    /// At [`JailHost::shutdown`], leave the slots ready for the next process instead of
    /// removing them: their cgroups (empty, limits set), empty scratch directories and
    /// empty network namespaces (bound on `<run_dir>/slots/<slot>.netns`), as a server
    /// keeps them between its jails. A one-shot command would otherwise make and remove
    /// three cgroups and a namespace per run; [`JailHost::remove_free_slots`] (a server's
    /// shutdown, `skyisland jail clean`) removes them.
    pub leave_slots_ready: bool,
}

/// What one jail should run, and within which limits.
#[derive(Clone, Debug)]
pub struct Launch {
    pub kind: SlotKind,
    pub name: String,
    pub limits: Limits,
    /// Writable space of the jail's root.
    pub disk: u64,
    pub program: Program,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub binds: Vec<Bind>,
    /// Small files written into the jail's root (its /etc/resolv.conf).
    pub files: Vec<FileSpec>,
    /// `None`: the slot's own empty namespace; `Given`: the one passed in [`JailIo::netns`].
    pub network: Network,
    pub proc_subset_pid: bool,
    pub max_open_files: u64,
}

struct Inner {
    spawner: Spawner,
    cgroups: Cgroups,
    backend: AnyBackend,
    exec: Arc<SlotPool>,
    build: Arc<SlotPool>,
    scratch_dir: PathBuf,
    /// `<run_dir>/slots`: the slots' locks, and (left ready) their network namespaces.
    slot_dir: PathBuf,
    inline: bool,
    leave_slots_ready: bool,
}

/// The jail machinery of this host. Cheap to clone.
#[derive(Clone)]
pub struct JailHost {
    inner: Arc<Inner>,
}

impl fmt::Debug for JailHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JailHost").field("backend", &self.inner.backend.name()).finish_non_exhaustive()
    }
}

fn io_at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HostError + 'a {
    move |source| HostError::Io { what, path: path.to_owned(), source }
}

impl JailHost {
    /// Starts the spawner and reaps whatever a crashed previous owner left in the slots
    /// that no live process holds. Call while the process is single-threaded, from the
    /// thread that outlives every jail (see [`Spawner::start`]).
    pub fn open(config: HostConfig) -> Result<JailHost, HostError> {
        if !config.backend.is_initialised() {
            return Err(HostError::NotInitialised);
        }
        let slot_dir = config.run_dir.join("slots");
        let scratch_dir = config.run_dir.join("jails");
        fs::create_dir_all(&scratch_dir).map_err(io_at("create", &scratch_dir))?;
        let exec_defs = config.exec_uids.iter().map(|&uid| SlotDef { name: format!("exec-{uid}"), uid }).collect();
        let build_defs = (0..config.build_slots)
            .map(|k| SlotDef { name: format!("build-{}-{k}", config.build_uid), uid: config.build_uid })
            .collect();
        let exec =
            SlotPool::open(&slot_dir, exec_defs, config.keep_slots).map_err(io_at("open slot locks in", &slot_dir))?;
        let build =
            SlotPool::open(&slot_dir, build_defs, config.keep_slots).map_err(io_at("open slot locks in", &slot_dir))?;
        let spawner =
            if config.inline_spawner { Spawner::inline()? } else { Spawner::start(config.spawner_program.as_deref())? };
        let host = JailHost {
            inner: Arc::new(Inner {
                spawner,
                cgroups: config.cgroups,
                backend: config.backend,
                exec,
                build,
                scratch_dir,
                slot_dir: slot_dir.clone(),
                inline: config.inline_spawner,
                leave_slots_ready: config.leave_slots_ready,
            }),
        };
        let mut first_error = None;
        host.for_each_unheld_slot(|inner, lease| {
            if let Err(e) = inner.reap(lease.def()) {
                first_error.get_or_insert(e);
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok(host),
        }
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.inner.cgroups
    }

    pub fn backend(&self) -> &AnyBackend {
        &self.inner.backend
    }

    /// Slots of `kind` this host may use.
    pub fn capacity(&self, kind: SlotKind) -> usize {
        self.inner.pool(kind).len()
    }

    /// Whether [`JailHost::launch`] clones in the calling thread (see
    /// [`HostConfig::inline_spawner`]), rather than asking the helper.
    pub fn launches_inline(&self) -> bool {
        self.inner.inline
    }

    /// Slots of `kind` not leased by this process (some may be held by another).
    pub fn free_slots(&self, kind: SlotKind) -> usize {
        self.inner.pool(kind).free_len()
    }

    /// Calls `f` with every slot no process holds that has anything on the host: a
    /// cgroup, a scratch directory, or backend state.
    fn for_each_unheld_slot(&self, mut f: impl FnMut(&Inner, &Lease)) {
        let inner = &self.inner;
        let mut present: HashSet<String> = inner.cgroups.list().into_iter().collect();
        present.extend(inner.backend.in_use());
        if let Ok(entries) = fs::read_dir(&inner.scratch_dir) {
            present.extend(entries.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()));
        }
        if let Ok(entries) = fs::read_dir(&inner.slot_dir) {
            present.extend(
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok()?.strip_suffix(NETNS_SUFFIX).map(str::to_owned)),
            );
        }
        for pool in [&inner.exec, &inner.build] {
            pool.for_each_unheld(|def| present.contains(&def.name), |lease| f(inner, lease));
        }
    }

    /// Starts a jail. Returns once it is cloned; `Running::setup` tells whether it got as
    /// far as executing the program.
    pub fn launch(&self, launch: &Launch, mut io: JailIo) -> Result<Running, HostError> {
        let inner = &self.inner;
        match (launch.network, &io.netns) {
            (Network::None, Some(_)) => {
                return Err(SpawnError::Invalid("a namespace was passed for a jail without a network".into()).into());
            }
            (Network::Given, None) => return Err(SpawnError::Invalid("no network namespace was passed".into()).into()),
            _ => {}
        }
        let lease = inner.pool(launch.kind).acquire().ok_or(HostError::Busy(launch.kind))?;
        if launch.network == Network::None {
            let netns = if inner.leave_slots_ready {
                lease.network_namespace(|| kept_network_namespace(&inner.netns_file(&lease.def().name)))
            } else {
                lease.network_namespace(crate::spawner::empty_network_namespace)
            }
            .map_err(io_at("create the network namespace of slot", Path::new(&lease.def().name)))?;
            io.netns = Some(netns);
        }
        let slot = lease.def().clone();
        {
            let mut cgroup = lease.cgroup().lock().unwrap_or_else(|p| p.into_inner());
            if cgroup.is_none() {
                // Newly taken (first use, or after another process had it): what a crashed
                // owner left in it may still be dying, still charged to its cgroup. Only an
                // empty slot is used.
                inner.reap(&slot)?;
            }
            if cgroup.as_ref().is_none_or(|c| c.limits != launch.limits) {
                *cgroup = None;
                *cgroup = Some(inner.cgroups.open_slot(&slot.name, &launch.limits)?);
            }
        }
        let scratch = inner.scratch_dir.join(&slot.name);
        let root = inner.backend.prepare(&slot.name, &scratch, launch.disk)?;
        let spec = JailSpec {
            name: launch.name.clone(),
            root,
            binds: launch.binds.clone(),
            files: launch.files.clone(),
            program: launch.program.clone(),
            argv: launch.argv.clone(),
            env: launch.env.clone(),
            cwd: launch.cwd.clone(),
            uid: slot.uid,
            gid: slot.uid,
            cgroup: inner.cgroups.join(&slot.name),
            rlimits: rlimits(launch),
            proc_subset_pid: launch.proc_subset_pid,
        };
        let root_path = crate::plan::new_root(&spec);
        match inner.spawner.spawn(&spec, io) {
            Ok(spawned) => Ok(Running {
                host: self.clone(),
                lease: Some(lease),
                name: launch.name.clone(),
                pid: spawned.pid,
                pidfd: spawned.pidfd,
                setup: Some(spawned.setup),
                uid: slot.uid,
                slot: slot.name,
                root: root_path,
                finished: false,
            }),
            Err(e) => {
                let _ = inner.backend.release(&slot.name);
                Err(e.into())
            }
        }
    }

    /// Lets go of the slots this process has not used for `idle`, so other Sky Island
    /// processes on the host can use them.
    pub fn release_idle_slots(&self, idle: Duration) {
        self.inner.exec.release_idle(idle);
        self.inner.build.release_idle(idle);
    }

    /// Lets go of every slot. Unless [`HostConfig::leave_slots_ready`], also removes the
    /// slots no process holds ([`JailHost::remove_free_slots`]).
    pub fn shutdown(&self) -> Result<(), HostError> {
        let result = if self.inner.leave_slots_ready {
            // Every jail of this process has ended, and each one's slot went back only
            // once its cgroup was empty: what stays holds no process.
            Ok(0)
        } else {
            self.remove_free_slots()
        };
        self.inner.exec.release_all();
        self.inner.build.release_all();
        result.map(drop)
    }

    /// Removes the cgroups and scratch directories of every slot no process holds, after
    /// reaping what is left in them, and the parent cgroup if nothing else is in it.
    /// Slots in use (by this process or another) keep theirs. Returns how many slots had
    /// anything to remove.
    pub fn remove_free_slots(&self) -> Result<usize, HostError> {
        let mut first_error = None;
        let mut removed = 0;
        self.for_each_unheld_slot(|inner, lease| {
            let name = &lease.def().name;
            let result = (|| {
                inner.reap(lease.def())?;
                inner.cgroups.remove(name)?;
                let scratch = inner.scratch_dir.join(name);
                match fs::remove_dir(&scratch) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_at("remove", &scratch)(e)),
                    _ => {}
                }
                let netns = inner.netns_file(name);
                remove_kept_network_namespace(&netns).map_err(io_at("remove", &netns))
            })();
            match result {
                Ok(()) => removed += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        });
        self.inner.cgroups.remove_parent_if_empty();
        first_error.map_or(Ok(removed), Err)
    }
}

/// No core dumps, bounded descriptors; build jails, which write to persistent storage
/// rather than their size-limited root, also get a bound on any one file's size.
/// (Execution jails hit ENOSPC on their root instead of SIGXFSZ.)
fn rlimits(launch: &Launch) -> Vec<Rlimit> {
    let mut limits = vec![
        Rlimit { resource: Resource::Core, limit: 0 },
        Rlimit { resource: Resource::NoFile, limit: launch.max_open_files },
    ];
    if launch.kind == SlotKind::Build {
        limits.push(Rlimit { resource: Resource::FileSize, limit: launch.disk });
    }
    limits
}

/// `<slot>.netns` in the slot directory: a slot's network namespace left ready.
const NETNS_SUFFIX: &str = ".netns";

/// The slot's empty network namespace as a one-shot process leaves it for the next: bound
/// on `file` (as `ip netns` keeps one), so the next run opens it instead of paying ~0.6 ms
/// for a new one. Made (and bound) when `file` is not a bound namespace yet. The slot's
/// lock makes its use exclusive, and a jail can change nothing in it (no capability in
/// it, loopback down); what a jail opens in it dies with the jail's processes.
fn kept_network_namespace(file: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    // nsfs's magic number (linux/magic.h), which rustix does not name.
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    if let Ok(fd) = rustix::fs::open(file, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty()) {
        // A namespace, and not this process's own (the host's): the jail's
        // setns(CLONE_NEWNET) then refuses any other kind of namespace.
        let own = rustix::fs::stat("/proc/thread-self/ns/net")?;
        if rustix::fs::fstatfs(&fd).is_ok_and(|st| st.f_type == NSFS_MAGIC)
            && rustix::fs::fstat(&fd).is_ok_and(|st| (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino))
        {
            return Ok(fd);
        }
    }
    let netns = crate::spawner::empty_network_namespace()?;
    let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&netns));
    // Whatever else is there (a stale file, a link, another binding) goes; the new file
    // is made exclusively, so the binding lands on it and nowhere a link points.
    let bound = remove_kept_network_namespace(file)
        .and_then(|()| fs::OpenOptions::new().write(true).create_new(true).open(file))
        .and_then(|_| Ok(rustix::mount::mount_bind(source.as_str(), file)?));
    if let Err(e) = bound {
        // Only the next run's saving is lost: this run has its namespace.
        tracing::debug!(file = %file.display(), error = %e, "cannot keep the slot's network namespace");
    }
    Ok(netns)
}

/// Unbinds and removes a slot's kept network namespace, if there is one.
fn remove_kept_network_namespace(file: &Path) -> std::io::Result<()> {
    // Until it is no mount point (EINVAL): the binding may have gone with a mount
    // namespace or a reboot, or have been made twice.
    for _ in 0..8 {
        // Never through a link: what it points to is not ours to unmount.
        match rustix::mount::unmount(file, rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW)
        {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Inner {
    fn netns_file(&self, slot: &str) -> PathBuf {
        self.slot_dir.join(format!("{slot}{NETNS_SUFFIX}"))
    }

    fn pool(&self, kind: SlotKind) -> &Arc<SlotPool> {
        match kind {
            SlotKind::Exec => &self.exec,
            SlotKind::Build => &self.build,
        }
    }

    /// Kills whatever runs in the slot's cgroup and undoes the slot's root.
    fn reap(&self, slot: &SlotDef) -> Result<(), HostError> {
        self.cgroups.kill_all(&slot.name, KILL_PATIENCE)?;
        self.backend.release(&slot.name)?;
        Ok(())
    }
}

/// How a jail ended, beyond its exit status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The kernel's OOM killer killed a process of the jail (its memory limit).
    pub oom_killed: bool,
}

/// A jail that has been cloned. Call [`Running::finish`] once its first process has been
/// reaped; dropping it unfinished kills it, waits for it and cleans up (blocking).
pub struct Running {
    host: JailHost,
    lease: Option<Lease>,
    pub name: String,
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The setup pipe (see [`crate::Spawned::setup`]); take it to learn whether the
    /// program started.
    pub setup: Option<OwnedFd>,
    pub uid: u32,
    pub slot: String,
    /// Where the jail's root is assembled (visible inside the jail's mount namespace).
    pub root: PathBuf,
    finished: bool,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running").field("name", &self.name).field("pid", &self.pid).field("slot", &self.slot).finish()
    }
}

impl Running {
    /// CPU time the jail's slot cgroup has used since it was made (across the slot's
    /// jails: take a baseline), if the host accounts it.
    pub fn slot_cpu_usage(&self) -> Option<Duration> {
        self.host.inner.cgroups.cpu_usage(&self.slot).ok()
    }

    /// Kills the whole jail (its first process is PID 1 of its namespace).
    pub fn kill(&self) -> std::io::Result<()> {
        process::kill(self.pidfd.as_fd())
    }

    /// Whether [`Running::finish`] does blocking I/O beyond reading cgroup files.
    pub fn release_blocks(&self) -> bool {
        self.host.inner.backend.release_blocks()
    }

    /// Cleans up after the first process has been reaped, which ended with `status`:
    /// kills stragglers (there should be none: PID 1's end empties its namespace), releases
    /// the root and the slot, and reports limit kills.
    pub fn finish(mut self, status: ExitStatus) -> Result<Outcome, HostError> {
        self.finished = true;
        self.cleanup(Some(status))
    }

    fn cleanup(&mut self, status: Option<ExitStatus>) -> Result<Outcome, HostError> {
        let inner = &self.host.inner;
        let lease = self.lease.as_ref().expect("cleaned up once");
        let result = (|| {
            let mut cgroup = lease.cgroup().lock().unwrap_or_else(|p| p.into_inner());
            let cgroup = cgroup.as_mut().expect("set up at launch");
            if !inner.cgroups.slot_is_empty(cgroup)? {
                inner.cgroups.kill_all(&self.slot, KILL_PATIENCE)?;
            }
            inner.backend.release(&self.slot)?;
            // The OOM killer kills with SIGKILL; anything else was not a memory kill.
            let oom_killed = match status {
                Some(ExitStatus::Signaled(9)) | None => inner.cgroups.slot_oom_killed(cgroup)?,
                Some(_) => false,
            };
            Ok(Outcome { oom_killed })
        })();
        // The slot goes back only when its cgroup is known to be empty.
        if result.is_ok() {
            self.lease.take();
        } else {
            // Keep the lock until this process exits: the next owner reaps the slot.
            std::mem::forget(self.lease.take());
        }
        result
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = self.kill();
        let _ = process::wait(self.pidfd.as_fd());
        if let Err(e) = self.cleanup(None) {
            tracing::error!(jail = %self.name, error = %e, "cleaning up an abandoned jail failed");
        }
    }
}
