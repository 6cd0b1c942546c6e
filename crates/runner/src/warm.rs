//! Warm jails: execution jails set up ahead of time — namespaces, root, cgroup, uid,
//! seccomp, everything but the program — waiting on a control socket for it. A request
//! that fits one (same limits and layout) hands it the program's descriptor and `argv`,
//! and it executes at once: the setup is off the request's path. Each warm jail serves
//! exactly one request, so every call still gets a fresh jail; a replacement is started
//! in the background as soon as one is taken.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use skyisland_jail::{Launch, Network, Program, SlotKind};

use crate::{Active, Jails, Started};

/// What makes jails interchangeable: everything about a launch but the program, its
/// arguments and its environment, which a warm jail receives at the last moment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Profile(String);

impl Profile {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The profile of `launch`, if it can be served by a warm jail: an execution jail
    /// whose program comes as a descriptor, without a network of its own (its network
    /// would need the request's address).
    pub(crate) fn of(launch: &Launch) -> Option<Profile> {
        let eligible =
            launch.kind == SlotKind::Exec && launch.program == Program::Fd && launch.network == Network::None;
        eligible.then(|| {
            Profile(format!(
                "{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}|{}",
                launch.kind,
                launch.limits,
                launch.disk,
                launch.cwd,
                launch.binds,
                launch.files,
                launch.proc_subset_pid,
                launch.max_open_files
            ))
        })
    }
}

/// How long a jail may take to set itself up before it is given up.
const WARMING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
struct Pools {
    ready: HashMap<Profile, Vec<Started>>,
    creating: HashMap<Profile, usize>,
}

#[derive(Debug)]
pub(crate) struct WarmPool {
    /// Warm jails to keep per profile; 0 turns warming off.
    target: usize,
    pools: Mutex<Pools>,
}

impl WarmPool {
    pub(crate) fn new(target: usize) -> WarmPool {
        WarmPool { target, pools: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn take(&self, profile: &Profile) -> Option<Started> {
        self.lock().ready.get_mut(profile)?.pop()
    }

    /// Warm jails waiting, all profiles together.
    pub(crate) fn len(&self) -> usize {
        self.lock().ready.values().map(Vec::len).sum()
    }

    /// Gives up a warm jail of any profile (its slot is wanted for something else).
    pub(crate) fn evict_one(&self) -> Option<Started> {
        self.lock().ready.values_mut().find_map(Vec::pop)
    }

    /// Every warm jail, for shutdown.
    pub(crate) fn drain(&self) -> Vec<Started> {
        self.lock().ready.drain().flat_map(|(_, jails)| jails).collect()
    }

    /// Starts warm jails in the background until `profile` has its target.
    pub(crate) fn replenish(&self, jails: &Jails, profile: Profile, template: &Launch) {
        // Requests waiting for a slot get the next ones, not a warm jail.
        if jails.closing.load(Ordering::Acquire) || jails.wanting.load(Ordering::Acquire) > 0 {
            return;
        }
        // Warm only with slots to spare: at least one stays free for a request.
        let spare = jails.host.free_slots(SlotKind::Exec).saturating_sub(1);
        let missing = {
            let mut pools = self.lock();
            let have =
                pools.ready.get(&profile).map_or(0, Vec::len) + pools.creating.get(&profile).copied().unwrap_or(0);
            let creating: usize = pools.creating.values().sum();
            let missing = self.target.saturating_sub(have).min(spare.saturating_sub(creating));
            *pools.creating.entry(profile.clone()).or_default() += missing;
            missing
        };
        for _ in 0..missing {
            let jails = jails.clone();
            let profile = profile.clone();
            let template = template.clone();
            let active = Active::count(&jails.active);
            tokio::spawn(async move {
                let _active = active;
                let started = match tokio::time::timeout(
                    WARMING_TIMEOUT,
                    jails.start(template, None, None, true, std::time::Duration::ZERO),
                )
                .await
                {
                    Ok(started) => started,
                    Err(_) => Err(crate::RunError::Setup(format!("warming took longer than {WARMING_TIMEOUT:?}"))),
                };
                let unwanted = {
                    let mut pools = jails.warm.lock();
                    if let Some(n) = pools.creating.get_mut(&profile) {
                        *n = n.saturating_sub(1);
                    }
                    match started {
                        Ok(started) if !jails.closing.load(Ordering::Acquire) => {
                            pools.ready.entry(profile).or_default().push(started);
                            None
                        }
                        Ok(started) => Some(started),
                        // No slot was free after all: the jails are busy with requests.
                        Err(crate::RunError::Host(skyisland_jail::HostError::Busy(_))) => None,
                        Err(e) => {
                            tracing::warn!(error = %e, "warming a jail failed");
                            None
                        }
                    }
                };
                discard(unwanted.into_iter().collect()).await;
            });
        }
    }
}

/// Lets go of warm jails: each sees its control socket close and exits; cleaning up
/// after them waits for that, so it runs on a blocking thread.
pub(crate) async fn discard(jails: Vec<Started>) {
    if jails.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || drop(jails)).await;
}
