//! From the configuration to this host's jail machinery: which clone backend, which
//! cgroup version and tree, which uids.

use skyisland_config::{Backend, CgroupVersion, Config};
use skyisland_jail::rootfs::RootfsError;
use skyisland_jail::{AnyBackend, Btrfs, Cgroups, CloneBackend, HostConfig, Overlay};

/// Why the jail machinery cannot be set up on this host.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("skyisland {0} must run as root (it creates namespaces, mounts and cgroups)")]
    NotRoot(&'static str),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Cgroup(#[from] skyisland_jail::cgroup::CgroupError),
}

/// Fails unless the process runs as root.
pub fn require_root(command: &'static str) -> Result<(), MachineError> {
    if rustix::process::geteuid().is_root() { Ok(()) } else { Err(MachineError::NotRoot(command)) }
}

/// The configured clone backend.
pub fn backend(config: &Config) -> Result<AnyBackend, MachineError> {
    Ok(match config.storage.backend {
        Backend::Overlay => AnyBackend::Overlay(Overlay::new(&config.data_dir.join("base"))?),
        Backend::Btrfs => {
            let dir = config.storage.btrfs_dir.as_deref().expect("validated: btrfs needs btrfs_dir");
            AnyBackend::Btrfs(Btrfs::new(dir)?)
        }
    })
}

/// Lays down the base root filesystem and its snapshot unless present; true if it did.
pub fn init(config: &Config) -> Result<bool, MachineError> {
    Ok(backend(config)?.init()?)
}

pub fn cgroups(config: &Config) -> Result<Cgroups, MachineError> {
    let version = match config.cgroup.version {
        CgroupVersion::Auto => None,
        CgroupVersion::V1 => Some(skyisland_jail::CgroupVersion::V1),
        CgroupVersion::V2 => Some(skyisland_jail::CgroupVersion::V2),
    };
    Ok(Cgroups::new(&config.cgroup.root, version, &config.cgroup.parent)?)
}

/// Execution slot `n` runs as `uid_base + 1 + n`; the build jail as `uid_base`. A server
/// holds the slots it uses and spawns through a helper; a one-shot command (`one_shot`)
/// lets go of its slot at once and clones its jail itself.
pub fn host_config(config: &Config, one_shot: bool) -> Result<HostConfig, MachineError> {
    let jails = &config.jails;
    Ok(HostConfig {
        run_dir: config.run_dir.clone(),
        cgroups: cgroups(config)?,
        backend: backend(config)?,
        exec_uids: (0..jails.max_jails).map(|n| jails.uid_base + 1 + n).collect(),
        build_uid: jails.uid_base,
        build_slots: jails.max_builds,
        keep_slots: !one_shot,
        inline_spawner: one_shot,
    })
}
