//! Runs jails from async code. [`Jails::run`] launches one jail through the synchronous
//! jail crate, then waits on its pidfd and output pipes in the tokio event loop (no thread
//! per jail), enforcing the timeout and the output bound, honouring kill requests from the
//! admin API, and reporting how it ended. Dropping the future kills the jail and cleans up.

pub mod census;
pub mod machine;
mod prestart;
mod registry;
mod warm;

pub use prestart::PrestartCounts;

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use skyisland_config::Config;
use skyisland_jail::{ExitStatus, HostError, JailHost, JailIo, Launch, Program, SlotKind};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, pipe};
use tokio::sync::Notify;

pub use machine::MachineError;
pub use registry::{JailInfo, JailState, LimitsInfo, Registry};

/// How long a server keeps an idle slot's lock (and what it knows of the slot's cgroup)
/// before another process on the host may take it.
pub const SLOT_HOLD: Duration = Duration::from_secs(2);

/// How long a call waits for an execution slot when every slot of the host is busy (its
/// own server's gates keep it from waiting for its own slots long); a build waits up to its
/// build timeout. Then it is refused (503).
const EXEC_SLOT_PATIENCE: Duration = Duration::from_secs(5);

/// How long a jail may take to set itself up (milliseconds, normally) before it is given
/// up as a sign of a host too busy (503).
const SETUP_PATIENCE: Duration = Duration::from_secs(10);

/// How a jail ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The program exited (or was killed by a signal) on its own.
    Exited,
    /// It ran past its timeout and was killed.
    TimedOut,
    /// It wrote more than its output bound and was killed.
    OutputLimit,
    /// The kernel's OOM killer killed it at its memory limit.
    MemoryLimit,
    /// An administrator (or shutdown) killed it.
    Killed,
}

/// Where a jail's standard output and error go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Kept in [`RunReport`], up to the output bound.
    Capture,
    /// Copied through to this process's own stdout and stderr as it arrives
    /// (`skyisland jail run`); still counted against the bound.
    PassThrough,
}

/// One jail to run.
#[derive(Debug)]
pub struct RunRequest {
    /// What to run; `launch.name` is replaced by the jail's generated name.
    pub launch: Launch,
    /// Shown in the admin API.
    pub label: String,
    pub timeout: Duration,
    /// Bytes of stdout and stderr together before the jail is killed.
    pub output_limit: u64,
    pub output: Output,
    /// The program, for [`skyisland_jail::Program::Fd`].
    pub exec: Option<OwnedFd>,
    /// A network of its own: the jail joins the network namespace `network` prepares.
    pub network: Option<Box<dyn JailNetwork>>,
    /// Written to the program's stdin once it runs (then closed): the call, for programs
    /// that read it there. An execution jail without input reads end-of-file.
    pub input: Option<Vec<u8>>,
    /// Whether the program may be pre-started for the next calls like this one (it reads
    /// its call from stdin and does nothing before that a call could tell apart), and
    /// which version of which function it is.
    pub prestart: Option<Lineage>,
    /// Whether the program says when it is done: one byte, the status it exits with,
    /// written to its stdin (a socket) after its last output — Sky Island's dispatcher and
    /// runners do. The run is answered then, with what the program wrote before (in the
    /// pipes by then), and the jail killed: whatever it would still do (an interpreter's
    /// teardown, the kernel's unmapping of a runtime's memory) is off the call's path, and
    /// a program cannot say it is done and go on running.
    pub reports_end: bool,
}

/// Which function a pre-startable program is, and which version of it: the first cold
/// call of a version retires the pre-started jails of the function's other versions (a
/// new commit, a rebuild), which no call would take again before they idled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// The repository it comes from (a `cache_bust` retires by it).
    pub repo: String,
    /// Which function of the repository: what its versions share.
    pub function: String,
    pub version: String,
}

/// Gives a jail a network of its own (the pool's address, a link to the bridge).
pub trait JailNetwork: Send + std::fmt::Debug {
    /// Files to write into the jail's root (its /etc/resolv.conf).
    fn files(&self) -> Vec<skyisland_jail::FileSpec>;
    /// A network namespace for this jail alone while it runs (a link to the bridge, its
    /// address, a default route), and the address.
    fn prepare(&mut self) -> BoxFuture<'_, Result<(OwnedFd, String), String>>;
    /// Takes back what `prepare` gave (also after a failed or a never-called `prepare`),
    /// once the jail has ended.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a jail did.
#[derive(Debug)]
pub struct RunReport {
    pub id: String,
    pub end: End,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Host(#[from] HostError),
    /// The jail's network could not be set up.
    #[error("setting up the jail's network failed: {0}")]
    Network(String),
    /// The jail was created but could not execute its program.
    #[error("jail setup failed: {0}")]
    Setup(String),
    #[error("{0}: {1}")]
    Io(&'static str, io::Error),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The host was too busy to start the jail in time.
    #[error("{0}")]
    Busy(String),
}

/// This host's jails, for async callers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Jails {
    host: JailHost,
    registry: Registry,
    /// Runs in progress, listed or not yet (a jail is listed only once it is launched).
    active: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
    warm: Arc<warm::WarmPool>,
    prestart: Arc<prestart::PrestartPool>,
    /// Requests waiting for a slot to come free; while any waits, no jail is warmed.
    wanting: Arc<AtomicUsize>,
    /// Jails answered for (they said they were done) and being ended: their slots come
    /// back within a millisecond or so.
    ending: Arc<AtomicUsize>,
}

/// Counts a run as active (or a request as wanting a slot) until dropped, also when its
/// future is cancelled.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn count(counter: &Arc<AtomicUsize>) -> Active {
        counter.fetch_add(1, Ordering::AcqRel);
        Active(Arc::clone(counter))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Jails {
    /// Opens the jail machinery (starting the spawner and reaping orphans). Call before
    /// the async runtime starts its threads, from the thread that lives as long as the
    /// jails (the spawner is forked from it; the jails' parent-death signal is tied to it).
    pub fn open(config: &Config) -> Result<Jails, OpenError> {
        Self::open_with(config, false)
    }

    /// For a command that runs one jail and exits: the jail is cloned by this process
    /// itself (no helper to start), which must stay single-threaded until it is launched.
    pub fn open_one_shot(config: &Config) -> Result<Jails, OpenError> {
        Self::open_with(config, true)
    }

    fn open_with(config: &Config, one_shot: bool) -> Result<Jails, OpenError> {
        let host = JailHost::open(machine::host_config(config, one_shot)?)?;
        Ok(Jails {
            host,
            registry: Registry::default(),
            active: Arc::default(),
            closing: Arc::default(),
            warm: Arc::new(warm::WarmPool::new(config.jails.warm_jails)),
            prestart: Arc::new(prestart::PrestartPool::new(prestart::Limits {
                budget: config.jails.prestart_budget as usize,
                memory: config.jails.prestart_memory.bytes(),
                per_function: config.jails.prestart_per_function as usize,
                idle: config.jails.prestart_idle.get(),
            })),
            wanting: Arc::default(),
            ending: Arc::default(),
        })
    }

    pub fn host(&self) -> &JailHost {
        &self.host
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether `shutdown` has begun (jails killed from now on were killed by it).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// What the health check reports of the jail machinery.
    pub fn summary(&self) -> Summary {
        use skyisland_jail::CloneBackend;
        Summary {
            running: self.registry.len(),
            capacity: self.host.capacity(SlotKind::Exec),
            build_capacity: self.host.capacity(SlotKind::Build),
            warm: self.warm.len(),
            prestarted: self.prestart.counts(),
            backend: self.host.backend().name(),
            cgroup: match self.host.cgroups().version() {
                skyisland_jail::CgroupVersion::V1 => "v1",
                skyisland_jail::CgroupVersion::V2 => "v2",
            },
        }
    }

    /// Lets go, every half second, of the slots that have been idle for [`SLOT_HOLD`], so
    /// that several servers on one host share them, and of pre-started jails no longer
    /// wanted. Runs until the process ends.
    pub async fn share_slots(self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            self.prestart.tend().await;
            self.host.release_idle_slots(SLOT_HOLD);
        }
    }

    /// The pre-started jails waiting for their call (not in [`Jails::registry`]: they run
    /// nothing yet), listed like running jails, with the state `waiting`.
    pub fn prestarted(&self) -> Vec<JailInfo> {
        self.prestart.list()
    }

    /// Kills the pre-started jail `id`; false when no such jail waits.
    pub async fn kill_prestarted(&self, id: &str) -> bool {
        match self.prestart.remove(id) {
            Some(started) => {
                warm::discard(vec![started]).await;
                true
            }
            None => false,
        }
    }

    /// Kills the pre-started jails of the functions `retire` picks, and forgets those
    /// functions (their jails being started are let go when ready); how many were killed.
    pub async fn retire_prestarted(&self, retire: impl Fn(&Lineage) -> bool) -> usize {
        let retired = self.prestart.retire(retire);
        let n = retired.len();
        warm::discard(retired).await;
        n
    }

    /// Kills every pre-started jail (they are started again as calls come); their ids.
    pub async fn kill_all_prestarted(&self) -> Vec<String> {
        let drained = self.prestart.drain();
        let ids = drained.iter().map(|started| started.id.clone()).collect();
        warm::discard(drained).await;
        ids
    }

    /// Refuses new jails, kills every running one and waits (up to `patience`) until all
    /// runs are over, then removes the slots' cgroups and directories (a one-shot
    /// command's leaves them ready for its next run: [`skyisland_jail::HostConfig::leave_slots_ready`]).
    pub async fn shutdown(&self, patience: Duration) -> Result<(), HostError> {
        self.closing.store(true, Ordering::Release);
        let deadline = Instant::now() + patience;
        loop {
            // Kill again each round: a run may have been launching when we started, and
            // a jail may have been warming.
            warm::discard(self.warm.drain()).await;
            warm::discard(self.prestart.drain()).await;
            self.registry.kill_all();
            if self.active.load(Ordering::Acquire) == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let host = self.host.clone();
        if host.launches_inline() {
            // A one-shot command: nothing else runs, and a blocking-pool thread would cost
            // more than the few file operations.
            return host.shutdown();
        }
        tokio::task::spawn_blocking(move || host.shutdown())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Runs one jail to its end: a warm one when one fits the request (its setup already
    /// done), a new one otherwise.
    pub async fn run(&self, request: RunRequest) -> Result<RunReport, RunError> {
        // The label is copied for the log only when the log will show it: this is every call's path.
        let label = tracing::enabled!(tracing::Level::DEBUG).then(|| request.label.clone());
        let started = Instant::now();
        let result = self.run_jail(request).await;
        if let Some(label) = label {
            tracing::debug!(%label, ms = started.elapsed().as_secs_f64() * 1e3, ok = result.is_ok(), "jail ended");
        }
        result
    }

    async fn run_jail(&self, request: RunRequest) -> Result<RunReport, RunError> {
        let _active = Active::count(&self.active);
        if self.closing.load(Ordering::Acquire) {
            return Err(RunError::ShuttingDown);
        }
        let RunRequest {
            mut launch,
            label,
            timeout,
            output_limit,
            output,
            exec,
            network,
            input,
            prestart,
            reports_end,
        } = request;
        let mut netns = None;
        let network = match network {
            Some(mut network) => {
                launch.network = skyisland_jail::Network::Given;
                launch.files.extend(network.files());
                match network.prepare().await {
                    Ok((ns, address)) => {
                        netns = Some(ns);
                        Some((network, address))
                    }
                    Err(e) => {
                        network.release().await;
                        return Err(RunError::Network(e));
                    }
                }
            }
            None => None,
        };
        let profile = warm::Profile::of(&launch);
        let key = match (&profile, &exec) {
            (Some(profile), Some(exec)) if prestart.is_some() && self.prestart.enabled() => {
                prestart::Key::of(profile, &launch, exec)
            }
            _ => None,
        };
        if let Some(key) = &key
            && let Some(mut started) = self.prestart.take(key).await
        {
            // Its program has started; from here on it is watched like any jail.
            let done = feed(started.stdin.take(), input, reports_end)?;
            self.prestart.replenish(self, key);
            return self.supervise(started, done, &launch, label, timeout, output_limit, output).await;
        }
        let template = match &key {
            Some(_) => {
                exec.as_ref().map(OwnedFd::try_clone).transpose().map_err(|e| RunError::Io("dup the program", e))?
            }
            None => None,
        };
        let cold = Instant::now();
        let warm = profile.as_ref().and_then(|p| self.warm.take(p));
        let mut started = match (warm, exec) {
            (Some(warm), Some(exec)) => {
                let control = warm.control.as_ref().expect("warm jails have a control socket");
                skyisland_jail::send_program(control.as_fd(), exec.as_fd(), &launch.argv, &launch.env)
                    .map_err(|e| RunError::Io("hand the program to a warm jail", e))?;
                warm
            }
            (_, exec) => {
                let patience = match launch.kind {
                    SlotKind::Build => timeout,
                    SlotKind::Exec => EXEC_SLOT_PATIENCE,
                };
                let mut started = match self.start(launch.clone(), exec, netns, false, patience).await {
                    Ok(started) => started,
                    Err(e) => {
                        if let Some((network, _)) = network {
                            network.release().await;
                        }
                        return Err(e);
                    }
                };
                started.network = network;
                started
            }
        };
        let done = feed(started.stdin.take(), input, reports_end)?;
        if let Some(profile) = &profile {
            self.warm.replenish(self, profile.clone(), &launch);
        }
        let prestart_label = label.clone();
        let limits = LimitsInfo::of(&launch, timeout, output_limit);
        let report = self.supervise(started, done, &launch, label, timeout, output_limit, output).await;
        // Under load there were no slots to spare for warming; now this one is free.
        if let Some(profile) = profile {
            self.warm.replenish(self, profile, &launch);
        }
        if let (Some(key), Some(template), Some(lineage)) = (&key, template, prestart) {
            let succeeded = report.as_ref().is_ok_and(|r| r.end == End::Exited && r.status.success());
            let cold = prestart::Cold { label: &prestart_label, lineage, limits, cost: cold.elapsed(), succeeded };
            self.prestart.cold_call(key, &launch, template, cold);
            self.prestart.replenish(self, key);
        }
        report
    }

    /// Launches a jail; a warm one (`warm`) waits, set up, for its program.
    async fn start(
        &self,
        mut launch: Launch,
        exec: Option<OwnedFd>,
        netns: Option<OwnedFd>,
        warm: bool,
        patience: Duration,
    ) -> Result<Started, RunError> {
        let id = new_id();
        launch.name = format!("sky-{id}");
        if warm {
            launch.program = Program::Later;
        }
        // A request's slot comes free within this: requests never outnumber this server's
        // slots (the callers' gates), warm jails yield theirs, none is warmed while one
        // waits, and other servers on the host let go of theirs once done.
        let yield_deadline = Instant::now() + patience;
        let mut _wanting = None;
        let (mut running, out_read, err_read, control, stdin) = loop {
            let (out_read, out_write) = pipe_pair()?;
            let (err_read, err_write) = pipe_pair()?;
            let (control, go) = if warm {
                let (ours, theirs) = socket_pair(rustix::net::SocketType::SEQPACKET)?;
                (Some(ours), Some(theirs))
            } else {
                (None, None)
            };
            let exec =
                exec.as_ref().map(OwnedFd::try_clone).transpose().map_err(|e| RunError::Io("dup the program", e))?;
            let netns = netns.as_ref().map(OwnedFd::try_clone).transpose().map_err(|e| RunError::Io("dup netns", e))?;
            // Execution jails read their input (or end-of-file) from a socket of ours, on
            // which Sky Island's own programs say when they are done (`reports_end`).
            let (stdin, stdin_write) = match launch.kind {
                SlotKind::Exec => {
                    let (ours, theirs) = socket_pair(rustix::net::SocketType::STREAM)?;
                    (Some(theirs), Some(ours))
                }
                SlotKind::Build => (None, None),
            };
            let io = JailIo { stdin, stdout: out_write, stderr: err_write, exec, go, netns };
            let launched = if self.host.launches_inline() {
                // In this thread, which must be the process's only one.
                self.host.launch(&launch, io)
            } else {
                // The round trip to the spawner blocks: not on an async worker.
                let host = self.host.clone();
                let attempt = launch.clone();
                match tokio::task::spawn_blocking(move || host.launch(&attempt, io)).await {
                    Ok(launched) => launched,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            };
            match launched {
                Ok(running) => break (running, out_read, err_read, control, stdin_write),
                // Every slot is taken: a warm jail waiting for work gives its slot to a
                // request (warming never makes a request fail). Otherwise a slot is on its
                // way back: a jail being warmed (it gives its slot up once ready), one being
                // discarded, or a run cleaning up.
                Err(HostError::Busy(kind)) if !warm && Instant::now() < yield_deadline => {
                    _wanting.get_or_insert_with(|| Active::count(&self.wanting));
                    // A jail being ended gives its slot back soon: wait for that rather
                    // than throw away the work of one set up or started ahead.
                    let ending = self.ending.load(Ordering::Acquire) > 0;
                    let victim = match kind {
                        SlotKind::Exec if !ending => self.warm.evict_one().or_else(|| self.prestart.evict_one()),
                        _ => None,
                    };
                    match victim {
                        Some(victim) => warm::discard(vec![victim]).await,
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        let setup = running.setup.take().expect("launch returns the setup pipe");
        let mut setup = pipe::Receiver::from_owned_fd(setup).map_err(|e| RunError::Io("setup pipe", e))?;
        if warm {
            // A warm jail says it is ready with one byte, or why it is not.
            let mut first = [0u8; 1];
            let n = setup.read(&mut first).await.map_err(|e| RunError::Io("setup pipe", e))?;
            if n == 0 || first != *skyisland_jail::READY {
                let mut reason = first[..n].to_vec();
                let _ = setup.read_to_end(&mut reason).await;
                return Err(RunError::Setup(String::from_utf8_lossy(&reason).into_owned()));
            }
        }
        Ok(Started { id, running, stdout: out_read, stderr: err_read, stdin, setup, control, network: None })
    }

    /// Watches a started jail to its end, then releases its network. A jail that said it
    /// was done is answered for at once and ended in the background.
    #[allow(clippy::too_many_arguments)]
    async fn supervise(
        &self,
        mut started: Started,
        done: Option<OwnedReadHalf>,
        launch: &Launch,
        label: String,
        timeout: Duration,
        output_limit: u64,
        output: Output,
    ) -> Result<RunReport, RunError> {
        let network = started.network.take();
        let ip4 = network.as_ref().map(|(_, address)| address.clone());
        match self.watch(started, done, ip4, launch, label, timeout, output_limit, output).await {
            Ok(Watched::Answered(report, rest)) => {
                match network {
                    // Its address is free again by the time the answer is out: the caller's
                    // next call may need it (a pool of one address, say). The jail is
                    // killed already; this is its reaping, a millisecond or so.
                    Some((network, _)) => {
                        rest.await;
                        network.release().await;
                    }
                    None => drop(tokio::spawn(rest)),
                }
                Ok(report)
            }
            result => {
                // (Were this future dropped instead, the jail's network namespace would die
                // with it, and the kernel remove its link with it.)
                if let Some((network, _)) = network {
                    network.release().await;
                }
                result.map(|watched| match watched {
                    Watched::Ended(report) | Watched::Answered(report, _) => report,
                })
            }
        }
    }

    /// Watches a started jail to its end: setup, output, timeout, kill requests; or until
    /// it says it is done (`done`, see [`RunRequest::reports_end`]).
    #[allow(clippy::too_many_arguments)]
    async fn watch(
        &self,
        started: Started,
        done: Option<OwnedReadHalf>,
        ip4: Option<String>,
        launch: &Launch,
        label: String,
        timeout: Duration,
        output_limit: u64,
        output: Output,
    ) -> Result<Watched, RunError> {
        let Started { id, running, stdout, stderr, stdin: _, mut setup, control, network: _ } = started;
        let since = Instant::now();
        let kill = Arc::new(Notify::new());
        let listed = self.registry.insert(
            JailInfo {
                id: id.clone(),
                jid: 0,
                name: running.name.clone(),
                hostname: running.name.clone(),
                kind: match launch.kind {
                    SlotKind::Exec => "exec",
                    SlotKind::Build => "build",
                },
                label,
                path: running.root.display().to_string(),
                pid: running.pid,
                uid: running.uid,
                slot: running.slot.clone(),
                state: JailState::Starting,
                started_at_ms: registry::unix_ms(),
                limits: LimitsInfo::of(launch, timeout, output_limit),
                ip4,
            },
            Arc::clone(&kill),
        );
        let pidfd = running.pidfd.try_clone().map_err(|e| RunError::Io("dup pidfd", e))?;
        // SAFETY: the AsyncFd owns this OwnedFd (a duplicate of the jail's pidfd) and
        // nothing else closes or replaces it while it is registered.
        let exited = unsafe { AsyncFd::register(pidfd) }.map_err(|e| RunError::Io("watch pidfd", e.into()))?;
        // End-of-file on the setup pipe means the program is executing. Setting up has a
        // bound of its own: the timeout counts from the program's start.
        let mut reason = Vec::new();
        let set_up = tokio::time::timeout(SETUP_PATIENCE, setup.read_to_end(&mut reason)).await;
        drop(control);
        let failure = match set_up {
            Ok(Ok(_)) if reason.is_empty() => None,
            Ok(Ok(_)) => Some(RunError::Setup(String::from_utf8_lossy(&reason).into_owned())),
            Ok(Err(e)) => Some(RunError::Io("setup pipe", e)),
            Err(_) => Some(RunError::Busy(format!("setting up a jail took longer than {SETUP_PATIENCE:?}"))),
        };
        if let Some(failure) = failure {
            running.kill().map_err(|e| RunError::Io("kill", e))?;
            let _ = exited.readable().await;
            let status =
                skyisland_jail::process::wait(exited.get_ref().as_fd()).map_err(|e| RunError::Io("wait", e))?;
            finish(running, status).await?;
            return Err(failure);
        }
        self.registry.update(&id, |info| info.state = JailState::Running);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);

        let mut stdout = pipe::Receiver::from_owned_fd(stdout).map_err(|e| RunError::Io("stdout pipe", e))?;
        let mut stderr = pipe::Receiver::from_owned_fd(stderr).map_err(|e| RunError::Io("stderr pipe", e))?;
        let mut sink = Sink::new(output, output_limit);
        let (mut out_open, mut err_open) = (true, true);
        let mut status = None;
        let mut end = End::Exited;
        let (mut out_buf, mut err_buf) = (Vec::with_capacity(16 * 1024), Vec::with_capacity(16 * 1024));
        let mut done = done;
        let mut said = [0u8; 1];
        let mut reported = None;
        while (status.is_none() || out_open || err_open) && !(reported.is_some() && end == End::Exited) {
            tokio::select! {
                ready = exited.readable(), if status.is_none() => {
                    let mut guard = ready.map_err(|e| RunError::Io("wait", e))?;
                    match skyisland_jail::process::try_wait(exited.get_ref().as_fd()) {
                        Ok(Some(s)) => status = Some(s),
                        Ok(None) => guard.clear_ready(),
                        Err(e) => return Err(RunError::Io("wait", e)),
                    }
                }
                // Read into spare capacity (no zeroing); empty the buffer for the next read.
                read = stdout.read_buf(&mut out_buf), if out_open => {
                    out_open = take_output(read, Stream::Out, &mut out_buf, &mut sink, &mut end, &running).await?;
                }
                read = stderr.read_buf(&mut err_buf), if err_open => {
                    err_open = take_output(read, Stream::Err, &mut err_buf, &mut sink, &mut end, &running).await?;
                }
                read = async { done.as_mut().expect("polled only while open").read(&mut said).await },
                    if done.is_some() && end == End::Exited && status.is_none() => {
                    match read {
                        // Everything it wrote before saying so is in the pipes by now.
                        Ok(1..) => {
                            for (open, receiver, stream, buf) in [
                                (&mut out_open, &stdout, Stream::Out, &mut out_buf),
                                (&mut err_open, &stderr, Stream::Err, &mut err_buf),
                            ] {
                                while *open && end == End::Exited {
                                    let read = read_now(receiver, buf);
                                    if matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                                        break;
                                    }
                                    *open = take_output(read, stream, buf, &mut sink, &mut end, &running).await?;
                                }
                            }
                            reported = Some(ExitStatus::Exited(i32::from(said[0])));
                        }
                        _ => done = None,
                    }
                }
                () = &mut deadline, if end == End::Exited && status.is_none() => {
                    end = End::TimedOut;
                    running.kill().map_err(|e| RunError::Io("kill", e))?;
                }
                () = kill.notified(), if end == End::Exited && status.is_none() => {
                    end = End::Killed;
                    running.kill().map_err(|e| RunError::Io("kill", e))?;
                }
            }
        }
        let duration = since.elapsed();
        if let (None, Some(reported)) = (status, reported) {
            // It said it is done: what it would still do is not part of the call. It is
            // killed now, so no longer listed as running (the admin API shows no jail for
            // an answered call), and reaped and cleaned up after in the background,
            // counted as active until then.
            running.kill().map_err(|e| RunError::Io("kill", e))?;
            drop(listed);
            let active = (Active::count(&self.active), Active::count(&self.ending));
            let rest = async move {
                let _ = exited.readable().await;
                match skyisland_jail::process::wait(exited.get_ref().as_fd()) {
                    Ok(status) => {
                        if let Err(e) = finish(running, status).await {
                            tracing::warn!(error = %e, "cleaning up after a jail that said it was done");
                        }
                    }
                    // Dropped unfinished, it is cleaned up all the same.
                    Err(e) => tracing::warn!(error = %e, "waiting for a jail that said it was done"),
                }
                drop(active);
            };
            let report = RunReport { id, end, status: reported, stdout: sink.stdout, stderr: sink.stderr, duration };
            return Ok(Watched::Answered(report, Box::pin(rest)));
        }
        let status = status.expect("loop ends after the jail exited");
        let outcome = finish(running, status).await?;
        if outcome.oom_killed && end == End::Exited && status == ExitStatus::Signaled(9) {
            end = End::MemoryLimit;
        }
        drop(listed);
        Ok(Watched::Ended(RunReport { id, end, status, stdout: sink.stdout, stderr: sink.stderr, duration }))
    }
}

/// How watching a jail ended: with the jail, or when it said it was done — then with what
/// is left to do once it has exited (reap it, clean up, take it off the list).
enum Watched {
    Ended(RunReport),
    Answered(RunReport, BoxFuture<'static, ()>),
}

/// Reads what is in a jail's output pipe now, without waiting (`WouldBlock` when empty).
/// Not through tokio's readiness, which may not yet know of data that is there.
fn read_now(receiver: &pipe::Receiver, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(16 * 1024);
    Ok(rustix::io::read(receiver, rustix::buffer::spare_capacity(buf))?)
}

/// Hands what a read of one of a jail's output streams brought to the sink, and kills the
/// jail once its output bound is exceeded. Returns whether the stream is still open.
async fn take_output(
    read: io::Result<usize>,
    stream: Stream,
    buf: &mut Vec<u8>,
    sink: &mut Sink,
    end: &mut End,
    running: &skyisland_jail::Running,
) -> Result<bool, RunError> {
    match read {
        Ok(0) | Err(_) => Ok(false),
        Ok(_) => {
            let fits = sink.take(stream, buf).await;
            buf.clear();
            if !fits && *end == End::Exited {
                *end = End::OutputLimit;
                running.kill().map_err(|e| RunError::Io("kill", e))?;
            }
            Ok(true)
        }
    }
}

/// A launched jail and the host's ends of its pipes.
#[derive(Debug)]
struct Started {
    id: String,
    running: skyisland_jail::Running,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// The host's end of an execution jail's stdin, until its input is fed.
    stdin: Option<OwnedFd>,
    setup: pipe::Receiver,
    /// The host's end of a warm jail's control socket.
    control: Option<OwnedFd>,
    /// The jail's own network, released after it ends, and its address.
    network: Option<(Box<dyn JailNetwork>, String)>,
}

/// The jail machinery at a glance.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub running: usize,
    pub capacity: usize,
    pub build_capacity: usize,
    /// Execution jails set up and waiting for a call.
    pub warm: usize,
    /// Execution jails with a function's program started, waiting for its call.
    pub prestarted: PrestartCounts,
    pub backend: &'static str,
    pub cgroup: &'static str,
}

/// Why [`Jails::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Cleans up after a jail: inline when that is a few reads of cgroup files (overlay), on
/// a blocking thread when the backend deletes a snapshot (btrfs).
async fn finish(running: skyisland_jail::Running, status: ExitStatus) -> Result<skyisland_jail::Outcome, HostError> {
    if !running.release_blocks() {
        return running.finish(status);
    }
    tokio::task::spawn_blocking(move || running.finish(status))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Writes `input` to a jail's stdin (a socket) and shuts its writing down (at once when
/// there is no input): the program reads end-of-file after its input. What fits in the
/// socket's buffer — a call's input, always in practice — is written here, on the call's
/// path, without a task to schedule; the rest in the background. A jail that ends before
/// reading it all ends the write. With `reports_end`, the socket's reading half, on which
/// the program says when it is done.
fn feed(stdin: Option<OwnedFd>, input: Option<Vec<u8>>, reports_end: bool) -> Result<Option<OwnedReadHalf>, RunError> {
    let Some(stdin) = stdin else { return Ok(None) };
    let socket = std::os::unix::net::UnixStream::from(stdin);
    socket.set_nonblocking(true).map_err(|e| RunError::Io("stdin socket", e))?;
    let written = match &input {
        Some(input) => match rustix::net::send(&socket, input, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) => 0,
            // The jail is gone: nothing more to write.
            Err(_) => input.len(),
        },
        None => 0,
    };
    let socket = tokio::net::UnixStream::from_std(socket).map_err(|e| RunError::Io("stdin socket", e))?;
    // Dropping the writing half shuts the socket down for writing.
    let (reading, mut writing) = socket.into_split();
    if let Some(input) = input
        && written < input.len()
    {
        tokio::spawn(async move {
            let _ = writing.write_all(&input[written..]).await;
        });
    }
    Ok(reports_end.then_some(reading))
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), RunError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| RunError::Io("pipe", e.into()))
}

/// A connected pair of unix sockets of `kind`, closed on exec.
fn socket_pair(kind: rustix::net::SocketType) -> Result<(OwnedFd, OwnedFd), RunError> {
    rustix::net::socketpair(rustix::net::AddressFamily::UNIX, kind, rustix::net::SocketFlags::CLOEXEC, None)
        .map_err(|e| RunError::Io("socketpair", e.into()))
}

/// A short random id, unique among the jails of a host for all practical purposes.
fn new_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Collects or passes through a jail's output, up to a bound on both streams together.
struct Sink {
    mode: Output,
    left: u64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Sink {
    fn new(mode: Output, limit: u64) -> Sink {
        Sink { mode, left: limit, stdout: Vec::new(), stderr: Vec::new() }
    }

    /// Keeps what fits; false once the bound is exceeded.
    async fn take(&mut self, stream: Stream, data: &[u8]) -> bool {
        let fits = data.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.left -= fits as u64;
        let kept = &data[..fits];
        match (self.mode, stream) {
            (Output::Capture, Stream::Out) => self.stdout.extend_from_slice(kept),
            (Output::Capture, Stream::Err) => self.stderr.extend_from_slice(kept),
            // The jail's output goes on even if our own stdout is gone (a closed pipe).
            (Output::PassThrough, Stream::Out) => {
                let mut out = tokio::io::stdout();
                let _ = out.write_all(kept).await;
                let _ = out.flush().await;
            }
            (Output::PassThrough, Stream::Err) => {
                let mut err = tokio::io::stderr();
                let _ = err.write_all(kept).await;
                let _ = err.flush().await;
            }
        }
        fits == data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_output_bound_counts_both_streams_together_and_keeps_what_fits() {
        let mut sink = Sink::new(Output::Capture, 10);
        assert!(sink.take(Stream::Out, b"hello").await);
        assert!(sink.take(Stream::Err, b"four").await);
        assert!(!sink.take(Stream::Out, b"xyz").await, "11 bytes are past 10");
        assert_eq!((sink.stdout.as_slice(), sink.stderr.as_slice()), (&b"hellox"[..], &b"four"[..]));
        assert!(!sink.take(Stream::Err, b"more").await);
        assert_eq!(sink.stderr, b"four");
    }

    #[test]
    fn jails_are_warmed_only_for_what_a_warm_jail_can_serve() {
        let config = Config::default();
        let launch = machine::exec_launch(&config, vec!["fn".into()]);
        assert!(warm::Profile::of(&launch).is_some(), "an execution jail without a network");
        let mut with_network = launch.clone();
        with_network.network = skyisland_jail::Network::Given;
        assert!(warm::Profile::of(&with_network).is_none(), "its namespace depends on its address");
        let mut build = launch.clone();
        build.kind = SlotKind::Build;
        assert!(warm::Profile::of(&build).is_none());
        let mut other_limits = launch.clone();
        other_limits.limits.memory += 1;
        assert_ne!(warm::Profile::of(&other_limits), warm::Profile::of(&launch), "limits are part of a profile");
        let mut other_program = launch.clone();
        other_program.argv = vec!["other".into()];
        assert_eq!(warm::Profile::of(&other_program), warm::Profile::of(&launch), "the program comes later");
    }
}
