//! From the configuration to this host's jail machinery: which clone backend, which
//! cgroup version and tree, which uids.

use skyisland_config::{Backend, CgroupVersion, Config};
use skyisland_jail::rootfs::RootfsError;
use skyisland_jail::{
    AnyBackend, Btrfs, Cgroups, CloneBackend, HostConfig, Launch, Limits, Network, Overlay, Program, SlotKind,
};

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
/// lets go of its slot at once, clones its jail itself and leaves the slot ready for the
/// next run (`skyisland jail clean` removes it).
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
        spawner_program: if one_shot { None } else { spawner_program() },
        leave_slots_ready: one_shot,
    })
}

/// An execution jail as the configuration describes it: its limits (the memory cgroup
/// also carries the disk limit, because the jail's writable tmpfs is charged to it), an
/// environment of its own, `/tmp` as its working directory, no network, only its own
/// processes in `/proc`; the program comes as a descriptor with `argv`. The server, `jail
/// run` and the benchmarks all start from this, so their jails are the same.
pub fn exec_launch(config: &Config, argv: Vec<String>) -> Launch {
    let j = &config.jails;
    Launch {
        kind: SlotKind::Exec,
        name: String::new(),
        limits: Limits { memory: j.memory_limit.bytes() + j.disk_limit.bytes(), pids: j.pids_limit, cpu: j.cpu_limit },
        disk: j.disk_limit.bytes(),
        program: Program::Fd,
        argv,
        env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/tmp".into(), "TMPDIR=/tmp".into()],
        cwd: "/tmp".into(),
        binds: Vec::new(),
        files: Vec::new(),
        network: Network::None,
        proc_subset_pid: true,
        max_open_files: 1024,
    }
}

/// The small `skyisland` program, when this process is another program: beside it (a
/// build tree, where the benchmarks run too) or, for the whole program (`skyisland-full`,
/// the server), also in `../../bin/` (the package's `/usr/libexec/skyisland/`). A
/// spawner executes it: see [`HostConfig::spawner_program`]. The small program itself
/// (`jail run --net`) keeps a forked copy of itself, already small.
fn spawner_program() -> Option<std::path::PathBuf> {
    let this = std::env::current_exe().ok()?;
    let name = this.file_name()?;
    if name == "skyisland" {
        return None;
    }
    let dir = this.parent()?;
    let server = name == "skyisland-full";
    let mut candidates = vec![dir.join("skyisland")];
    if server {
        candidates.push(dir.join("../../bin/skyisland"));
    }
    let found = candidates.into_iter().find(|path| path.is_file());
    if found.is_none() && server {
        tracing::info!("no small skyisland program beside {}: the spawner stays a copy of the server", this.display());
    }
    found
}
