//! Pre-started jails: a warm jail one step further. For a function being called, jails are
//! launched, set up, and handed the function's program at once, which starts (Go's
//! runtime and package initialisation; an interpreter importing the package) and blocks
//! reading its call from stdin. A call hands one its input and is watched from then on
//! exactly like a jail started for it; the jail then exits and is never reused. A function
//! cannot tell, except by timing: what it printed while starting is still in its stdout
//! pipe, and its timeout counts from the hand-over.
//!
//! Sizing, per function (its [`Key`]): calls in the last [`WINDOW`] give an arrival rate,
//! cold calls a cost (launch to answer); it keeps `rate × cost × 2` jails, at least one
//! while it was called within `prestart_idle`, at most `prestart_per_function`. All
//! functions together stay within `prestart_budget` jails and `prestart_memory` (each
//! counted at its memory limit); a function that needs one takes it from the least
//! recently called function that has one, and never takes the last free slot. A function
//! whose pre-started jail exits before its call (an import error, a crash while starting)
//! is not pre-started again until a cold call of it succeeds; one whose waiting program
//! keeps using CPU past what its start costs (a cold call's run twice, plus a second) is
//! killed and not pre-started again while the server remembers it — a waiting jail has no
//! timeout, so it must not be a way to run code for longer than a call may. The first
//! cold call of a function's new version (its [`crate::Lineage`]: a new commit, a rebuild)
//! retires the jails of its other versions, and a `cache_bust` those of its repository.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skyisland_jail::{Launch, SlotKind};

use crate::warm::{Profile, discard};
use crate::{Active, Jails, Started};

/// Calls within this window make a function's arrival rate.
const WINDOW: Duration = Duration::from_secs(10);
/// How long a jail may take to be launched and handed its program.
const STARTING_TIMEOUT: Duration = Duration::from_secs(30);

/// What makes two calls the same function: the jail's profile, the program (the binary's
/// identity, which stays while a jail runs it), its argv and environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key(String);

impl Key {
    pub(crate) fn of(profile: &Profile, launch: &Launch, exec: &OwnedFd) -> Option<Key> {
        let stat = rustix::fs::fstat(exec).ok()?;
        Some(Key(format!("{}|{:?}|{:?}|{}:{}", profile.as_str(), launch.argv, launch.env, stat.st_dev, stat.st_ino)))
    }
}

/// What the pool was configured with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) budget: usize,
    pub(crate) memory: u64,
    pub(crate) per_function: usize,
    pub(crate) idle: Duration,
}

/// How to start one more jail of a function.
#[derive(Debug)]
struct Template {
    launch: Launch,
    exec: OwnedFd,
    /// What the admin API shows of its jails: the package (the label's first word: a
    /// pre-started jail has no call yet) and the limits a call gets.
    package: String,
    limits: crate::LimitsInfo,
    lineage: crate::Lineage,
}

/// What a cold call of a pre-startable function tells the pool.
pub(crate) struct Cold<'a> {
    /// The call's label (its first word is the package).
    pub(crate) label: &'a str,
    pub(crate) lineage: crate::Lineage,
    pub(crate) limits: crate::LimitsInfo,
    /// From launch to answer.
    pub(crate) cost: Duration,
    pub(crate) succeeded: bool,
}

/// A pre-started jail waiting for its call, and its slot's CPU time when it was handed
/// its program.
#[derive(Debug)]
struct Waiting {
    started: Started,
    cpu_base: Option<Duration>,
    /// When it was handed its program (Unix time, ms).
    since_ms: u64,
    template: Arc<Template>,
}

impl Waiting {
    fn new(started: Started, template: Arc<Template>) -> Waiting {
        let cpu_base = started.running.slot_cpu_usage();
        Waiting { started, cpu_base, since_ms: crate::registry::unix_ms(), template }
    }

    /// CPU time its program has used since it was handed over.
    fn cpu_used(&self) -> Duration {
        match (self.cpu_base, self.started.running.slot_cpu_usage()) {
            (Some(base), Some(now)) => now.saturating_sub(base),
            _ => Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Function {
    ready: Vec<Waiting>,
    starting: usize,
    calls: VecDeque<Instant>,
    last_call: Instant,
    /// What a cold call took from launch to answer (a moving average).
    cost: Duration,
    /// Not to be pre-started: none of its cold calls has succeeded yet, or a pre-started jail
    /// of it exited before its call. Cleared by a successful cold call.
    failed: bool,
    template: Option<Arc<Template>>,
    /// A pre-started jail of it kept using CPU while it waited (a program that keeps
    /// working after its initialisation, e.g. a goroutine started by `init`): not
    /// pre-started again while the server remembers the function (a cold call's own
    /// timeout bounds what it may use; a waiting jail has none).
    busy: bool,
}

impl Function {
    fn new(now: Instant) -> Function {
        Function {
            ready: Vec::new(),
            starting: 0,
            calls: VecDeque::new(),
            last_call: now,
            cost: Duration::ZERO,
            // Not known to start until a cold call of it succeeds.
            failed: true,
            template: None,
            busy: false,
        }
    }

    /// Jails this function should have now.
    fn wanted(&self, limits: &Limits, now: Instant) -> usize {
        if self.failed || self.busy || self.template.is_none() || now.duration_since(self.last_call) > limits.idle {
            return 0;
        }
        let rate = self.calls.len() as f64 / WINDOW.as_secs_f64();
        let ahead = (rate * self.cost.as_secs_f64() * 2.0).ceil() as usize;
        ahead.clamp(1, limits.per_function)
    }

    fn held(&self) -> usize {
        self.ready.len() + self.starting
    }
}

#[derive(Debug, Default)]
struct State {
    functions: HashMap<Key, Function>,
}

impl State {
    fn held(&self) -> usize {
        self.functions.values().map(Function::held).sum()
    }

    /// Forgets the functions whose lineage `retire` picks (a jail of theirs still being
    /// started is let go when it is ready); their waiting jails.
    fn retire(&mut self, retire: impl Fn(&crate::Lineage) -> bool) -> Vec<Started> {
        let mut retired = Vec::new();
        self.functions.retain(|_, f| {
            let keep = !f.template.as_ref().is_some_and(|t| retire(&t.lineage));
            if !keep {
                retired.extend(f.ready.drain(..).map(|w| w.started));
            }
            keep
        });
        retired
    }

    /// A ready jail of the least recently called function other than `except`, called
    /// before `before` (all functions when `before` is `None`).
    fn evict_lru(&mut self, except: Option<&Key>, before: Option<Instant>) -> Option<Started> {
        let (_, function) = self
            .functions
            .iter_mut()
            .filter(|(key, f)| Some(*key) != except && !f.ready.is_empty() && before.is_none_or(|b| f.last_call < b))
            .min_by_key(|(_, f)| f.last_call)?;
        function.ready.pop().map(|w| w.started)
    }
}

/// Counts of the pool, for the health check (the metrics have them too).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PrestartCounts {
    /// Started, waiting for their call.
    pub ready: usize,
    /// Being launched.
    pub starting: usize,
    /// Functions called lately (within `prestart_idle`) or holding jails.
    pub functions: usize,
    /// Calls since start-up that found a pre-started jail, and that found none.
    pub hits: u64,
    pub misses: u64,
    /// Jails let go unused (idle, for another function, or for a call's slot).
    pub evictions: u64,
    /// Jails that exited before their call, or could not be started.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Totals {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    failures: AtomicU64,
}

impl Totals {
    fn add(&self, which: &AtomicU64, n: usize, metric: metrics::Counter) {
        which.fetch_add(n as u64, Ordering::Relaxed);
        metric.increment(n as u64);
    }
}

#[derive(Debug)]
pub(crate) struct PrestartPool {
    limits: Limits,
    state: Mutex<State>,
    totals: Totals,
}

impl PrestartPool {
    pub(crate) fn new(limits: Limits) -> PrestartPool {
        PrestartPool { limits, state: Mutex::default(), totals: Totals::default() }
    }

    fn failed(&self, n: usize) {
        self.totals.add(&self.totals.failures, n, metrics::counter!("skyisland_prestart_failures_total"));
    }

    fn evicted(&self, n: usize, reason: &'static str) {
        let metric = metrics::counter!("skyisland_prestart_evictions_total", "reason" => reason);
        self.totals.add(&self.totals.evictions, n, metric);
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limits.budget > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pre-started jail of `key` whose program is still waiting, if there is one; the
    /// call is counted either way. Jails whose program has already exited are let go, and
    /// their function is not pre-started again until a cold call of it succeeds.
    pub(crate) async fn take(&self, key: &Key) -> Option<Started> {
        let now = Instant::now();
        let mut dead = Vec::new();
        let found = {
            let mut state = self.lock();
            let function = state.functions.entry(key.clone()).or_insert_with(|| Function::new(now));
            function.last_call = now;
            function.calls.push_back(now);
            while function.calls.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                function.calls.pop_front();
            }
            let mut found = None;
            while let Some(waiting) = function.ready.pop() {
                if exited(&waiting) {
                    function.failed = true;
                    dead.push(waiting.started);
                } else {
                    found = Some(waiting.started);
                    break;
                }
            }
            found
        };
        if !dead.is_empty() {
            self.failed(dead.len());
            tracing::info!(jails = dead.len(), "a pre-started jail exited before its call; not pre-starting it again");
            discard(dead).await;
        }
        let (total, outcome) = if found.is_some() { (&self.totals.hits, "hit") } else { (&self.totals.misses, "miss") };
        self.totals.add(total, 1, metrics::counter!("skyisland_prestart_calls_total", "outcome" => outcome));
        found
    }

    /// After a cold call of `key`: how to start its jails, what the call cost, and whether
    /// it succeeded (which lets a function whose pre-start failed be pre-started again).
    /// The first of a version retires the jails of the function's other versions.
    pub(crate) fn cold_call(&self, key: &Key, launch: &Launch, exec: OwnedFd, cold: Cold<'_>) {
        let Cold { label, lineage, limits, cost, succeeded } = cold;
        let mut state = self.lock();
        let now = Instant::now();
        let function = state.functions.entry(key.clone()).or_insert_with(|| Function::new(now));
        // Idle from the end of its last call.
        function.last_call = now;
        function.cost = if function.cost.is_zero() { cost } else { (function.cost * 3 + cost) / 4 };
        if succeeded {
            function.failed = false;
        }
        if function.template.is_some() {
            return;
        }
        let package = label.split_once(' ').map_or(label, |(package, _)| package).to_owned();
        let current = lineage.clone();
        function.template = Some(Arc::new(Template { launch: launch.clone(), exec, package, limits, lineage }));
        let retired =
            state.retire(|l| l.repo == current.repo && l.function == current.function && l.version != current.version);
        drop(state);
        if !retired.is_empty() {
            self.evicted(retired.len(), "retired");
            tokio::spawn(discard(retired));
        }
    }

    /// Forgets the functions whose lineage `retire` picks; their waiting jails, to be killed.
    pub(crate) fn retire(&self, retire: impl Fn(&crate::Lineage) -> bool) -> Vec<Started> {
        let retired = self.lock().retire(retire);
        if !retired.is_empty() {
            self.evicted(retired.len(), "retired");
        }
        retired
    }

    /// Starts jails in the background until `key` has what it wants, within the budget.
    pub(crate) fn replenish(&self, jails: &Jails, key: &Key) {
        if jails.closing.load(Ordering::Acquire) || jails.wanting.load(Ordering::Acquire) > 0 {
            return;
        }
        let now = Instant::now();
        // Per jail to start: the jail whose slot it takes, if any (ended first).
        let mut victims: Vec<Option<Started>> = Vec::new();
        let mut evicted = 0;
        let template = {
            let mut state = self.lock();
            let Some(function) = state.functions.get(key) else { return };
            let Some(template) = function.template.clone() else { return };
            let want = function.wanted(&self.limits, now);
            let mut missing = want.saturating_sub(function.held());
            let last_call = function.last_call;
            let per_jail = template.launch.limits.memory.max(1);
            let by_memory = usize::try_from(self.limits.memory / per_jail).unwrap_or(usize::MAX);
            let budget = self.limits.budget.min(by_memory);
            // Never the last free slot: that one is a cold call's.
            let mut spare = jails.host.free_slots(SlotKind::Exec).saturating_sub(1);
            let mut held = state.held();
            while missing > 0 {
                if held < budget && spare > 0 {
                    held += 1;
                    spare -= 1;
                    victims.push(None);
                } else if let Some(victim) = state.evict_lru(Some(key), Some(last_call)) {
                    // Its slot and its share of the budget pass to this function.
                    evicted += 1;
                    victims.push(Some(victim));
                } else {
                    break;
                }
                missing -= 1;
            }
            if let Some(function) = state.functions.get_mut(key) {
                function.starting += victims.len();
            }
            template
        };
        if evicted > 0 {
            self.evicted(evicted, "budget");
        }
        for victim in victims {
            let jails = jails.clone();
            let key = key.clone();
            let template = Arc::clone(&template);
            let active = Active::count(&jails.active);
            tokio::spawn(async move {
                let _active = active;
                // Its slot first, or the launch would find none free.
                discard(victim.into_iter().collect()).await;
                let started = tokio::time::timeout(STARTING_TIMEOUT, start(&jails, &template)).await;
                let unwanted = {
                    let mut state = jails.prestart.lock();
                    let function = state.functions.get_mut(&key);
                    let closing = jails.closing.load(Ordering::Acquire);
                    match (started, function) {
                        (Ok(Ok(started)), Some(function)) if !closing => {
                            function.starting = function.starting.saturating_sub(1);
                            function.ready.push(Waiting::new(started, Arc::clone(&template)));
                            None
                        }
                        (started, function) => {
                            if let Some(function) = function {
                                function.starting = function.starting.saturating_sub(1);
                            }
                            match started {
                                Ok(Ok(started)) => Some(started),
                                // No slot was free after all: the jails are busy with calls.
                                Ok(Err(crate::RunError::Host(skyisland_jail::HostError::Busy(_)))) => None,
                                Ok(Err(e)) => {
                                    tracing::warn!(error = %e, "pre-starting a jail failed");
                                    jails.prestart.failed(1);
                                    None
                                }
                                Err(_) => {
                                    tracing::warn!("pre-starting a jail took longer than {STARTING_TIMEOUT:?}");
                                    jails.prestart.failed(1);
                                    None
                                }
                            }
                        }
                    }
                };
                discard(unwanted.into_iter().collect()).await;
            });
        }
    }

    /// Lets go of what is no longer wanted: jails whose program exited while waiting
    /// (their function is not pre-started again until a cold call of it succeeds), and
    /// the jails of functions beyond what they want (none once idle for `prestart_idle`).
    pub(crate) async fn tend(&self) {
        let now = Instant::now();
        let (dead, idle) = {
            let mut state = self.lock();
            let (mut dead, mut idle) = (Vec::new(), Vec::new());
            for function in state.functions.values_mut() {
                while function.calls.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                    function.calls.pop_front();
                }
                let (gone, alive): (Vec<_>, Vec<_>) = function.ready.drain(..).partition(exited);
                function.ready = alive;
                if !gone.is_empty() {
                    function.failed = true;
                    dead.extend(gone.into_iter().map(|w| w.started));
                }
                // What its start may cost (a cold call's whole run, twice, and a second),
                // and no more: a waiting program should be blocked reading its call.
                let allowance = function.cost * 2 + Duration::from_secs(1);
                let (spinning, quiet): (Vec<_>, Vec<_>) =
                    function.ready.drain(..).partition(|w| w.cpu_used() > allowance);
                function.ready = quiet;
                if !spinning.is_empty() {
                    tracing::warn!(
                        jails = spinning.len(),
                        ?allowance,
                        "a pre-started jail kept using CPU while it waited; not pre-starting its function again"
                    );
                    function.busy = true;
                    dead.extend(spinning.into_iter().map(|w| w.started));
                }
                let wanted = function.wanted(&self.limits, now);
                while function.held() > wanted && !function.ready.is_empty() {
                    idle.extend(function.ready.pop().map(|w| w.started));
                }
            }
            // Forget functions idle long enough to want nothing and hold nothing.
            let idle_for = self.limits.idle;
            state.functions.retain(|_, f| f.held() > 0 || now.duration_since(f.last_call) <= idle_for);
            (dead, idle)
        };
        if !dead.is_empty() {
            self.failed(dead.len());
        }
        if !idle.is_empty() {
            self.evicted(idle.len(), "idle");
        }
        let counts = self.counts();
        metrics::gauge!("skyisland_prestarted_jails", "state" => "ready").set(counts.ready as f64);
        metrics::gauge!("skyisland_prestarted_jails", "state" => "starting").set(counts.starting as f64);
        discard(dead.into_iter().chain(idle).collect()).await;
    }

    /// Gives up a pre-started jail (its slot is wanted for a call): the least recently
    /// called function's.
    pub(crate) fn evict_one(&self) -> Option<Started> {
        let victim = self.lock().evict_lru(None, None);
        if victim.is_some() {
            self.evicted(1, "slots");
        }
        victim
    }

    /// The jails waiting for their call, as the admin API lists jails.
    pub(crate) fn list(&self) -> Vec<crate::JailInfo> {
        let state = self.lock();
        let waiting = state.functions.values().flat_map(|f| f.ready.iter());
        waiting
            .map(|w| {
                let running = &w.started.running;
                crate::JailInfo {
                    id: w.started.id.clone(),
                    jid: 0,
                    name: running.name.clone(),
                    hostname: running.name.clone(),
                    kind: "prestarted",
                    label: format!("{} (waiting for a call)", w.template.package),
                    path: running.root.display().to_string(),
                    pid: running.pid,
                    uid: running.uid,
                    slot: running.slot.clone(),
                    state: crate::JailState::Waiting,
                    started_at_ms: w.since_ms,
                    limits: w.template.limits.clone(),
                    ip4: None,
                }
            })
            .collect()
    }

    /// Takes the waiting jail `id` out of the pool (to be killed).
    pub(crate) fn remove(&self, id: &str) -> Option<Started> {
        let mut state = self.lock();
        for function in state.functions.values_mut() {
            if let Some(at) = function.ready.iter().position(|w| w.started.id == id) {
                return Some(function.ready.remove(at).started);
            }
        }
        None
    }

    /// Every pre-started jail, for shutdown.
    pub(crate) fn drain(&self) -> Vec<Started> {
        self.lock().functions.values_mut().flat_map(|f| f.ready.drain(..)).map(|w| w.started).collect()
    }

    pub(crate) fn counts(&self) -> PrestartCounts {
        let state = self.lock();
        PrestartCounts {
            ready: state.functions.values().map(|f| f.ready.len()).sum(),
            starting: state.functions.values().map(|f| f.starting).sum(),
            functions: state.functions.len(),
            hits: self.totals.hits.load(Ordering::Relaxed),
            misses: self.totals.misses.load(Ordering::Relaxed),
            evictions: self.totals.evictions.load(Ordering::Relaxed),
            failures: self.totals.failures.load(Ordering::Relaxed),
        }
    }
}

/// Whether a waiting jail's program has already ended (its status is left for the
/// cleanup).
fn exited(waiting: &Waiting) -> bool {
    skyisland_jail::process::has_exited(waiting.started.running.pidfd.as_fd()).unwrap_or(true)
}

/// Launches a jail (a warm one, waiting for its program) and hands it the program.
async fn start(jails: &Jails, template: &Template) -> Result<Started, crate::RunError> {
    let mut started = jails.start(template.launch.clone(), None, None, true, Duration::ZERO).await?;
    let control = started.control.take().expect("warm jails have a control socket");
    let launch = &template.launch;
    skyisland_jail::send_program(control.as_fd(), template.exec.as_fd(), &launch.argv, &launch.env)
        .map_err(|e| crate::RunError::Io("hand the program to a pre-started jail", e))?;
    Ok(started)
}
