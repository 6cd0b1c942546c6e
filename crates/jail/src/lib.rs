//! Jails on Linux: a program in fresh mount, PID, UTS, IPC, cgroup and network
//! namespaces, `pivot_root`ed into a copy-on-write clone of a base root filesystem,
//! as an unprivileged uid of its own, without capabilities, under `no_new_privs`, a
//! seccomp filter, rlimits and cgroup limits.
//!
//! The crate is synchronous and never links an async runtime: jails are created by a
//! small single-threaded [`spawner`] process and waited for through pidfds, which an
//! async caller can poll with its own event loop.
//!
//! Map: [`spec`] (what a jail is) → [`plan`] (the ordered setup steps) → `child` (runs
//! them in the new process) ← [`spawner`] (clones it); [`host`] ties the [`slots`],
//! [`cgroup`]s and [`rootfs`] backends together for one jail's life cycle.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("Sky Island runs on x86_64 only: its seccomp policy and system call table are x86_64's");

mod child;
mod sys;

pub mod cgroup;
pub mod host;
pub mod plan;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod slots;
pub mod spawner;
pub mod spec;

pub use cgroup::{Cgroups, Limits, Version as CgroupVersion};
pub use child::{READY, SETUP_FAILED};
pub use host::{HostConfig, HostError, JailHost, Launch, Outcome, Running, SlotKind};
pub use process::ExitStatus;
pub use rootfs::{AnyBackend, Btrfs, CloneBackend, Overlay};
pub use spawner::{JailIo, SpawnError, Spawned, Spawner, empty_network_namespace, send_program};
pub use spec::{Bind, FileSpec, Network, Program};
