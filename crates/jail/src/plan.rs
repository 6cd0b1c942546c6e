//! The ordered list of operations that turns a freshly cloned process into a jail.
//!
//! The plan is plain data derived from a [`JailSpec`], so the order that security depends
//! on (mounts before `pivot_root`, privileges dropped before `no_new_privs` and seccomp,
//! seccomp last before `exec`) is checked by unit tests without root; `child.rs`
//! executes it for real.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::spec::{Bind, CgroupJoin, FileSpec, JailSpec, Rlimit, RootSpec};

/// One operation in the jail's first process, in its new namespaces, as root.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// cgroup v1: move this process into a controller's cgroup.
    JoinCgroup {
        procs: PathBuf,
    },
    /// A cgroup namespace rooted at the jail's own cgroup, so that /proc/self/cgroup
    /// shows "/" rather than the host's layout.
    NewCgroupNamespace,
    /// Stop mount events propagating back to the host.
    MakeMountsPrivate,
    MountTmpfs {
        target: PathBuf,
        size: u64,
    },
    MakeDir {
        path: PathBuf,
    },
    /// The overlay's options name its layers by neutral paths (the lower layer through a
    /// descriptor, upper and work relative to the scratch directory), so that the jail's
    /// mountinfo shows no host path.
    MountOverlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    /// Bind a directory onto itself so that it is a mount point `pivot_root` accepts.
    BindSelf {
        path: PathBuf,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        writable: bool,
    },
    /// Write a file into the new root (owned by root, read-only to the jail).
    WriteFile {
        path: PathBuf,
        contents: String,
    },
    MountProc {
        target: PathBuf,
        subset_pid: bool,
    },
    SetHostname {
        name: String,
    },
    /// Enter the network namespace passed with the jail (its slot's own, or one prepared
    /// for it): never the host's, never another running jail's.
    JoinNetwork,
    PivotRoot {
        new_root: PathBuf,
    },
    SetRlimits {
        limits: Vec<Rlimit>,
    },
    /// `setgroups`, `setresgid`, `setresuid`: from here on the process is unprivileged
    /// and the kernel clears its capabilities.
    SwitchUser {
        uid: u32,
        gid: u32,
    },
    /// Clear the inheritable and ambient sets too, so nothing comes back at `exec`.
    ClearCapabilities,
    /// Enter the working directory, as the jail's user (after the switch, so that it is a
    /// directory the jail itself may enter).
    ChangeDir {
        path: PathBuf,
    },
    /// Die with the host: SIGKILL when the process that owns the jail goes away. Set
    /// after `SwitchUser`, because a credential change clears it.
    DieWithHost,
    NoNewPrivs,
    Seccomp,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::JoinCgroup { procs } => write!(f, "join cgroup {}", procs.display()),
            Step::NewCgroupNamespace => f.write_str("create cgroup namespace"),
            Step::MakeMountsPrivate => f.write_str("make mounts private"),
            Step::MountTmpfs { target, size } => {
                write!(f, "mount tmpfs of {size} bytes on {}", target.display())
            }
            Step::MakeDir { path } => write!(f, "create directory {}", path.display()),
            Step::MountOverlay { target, .. } => write!(f, "mount overlay on {}", target.display()),
            Step::BindSelf { path } => write!(f, "bind {} onto itself", path.display()),
            Step::Bind { source, target, .. } => {
                write!(f, "bind {} on {}", source.display(), target.display())
            }
            Step::WriteFile { path, .. } => write!(f, "write {}", path.display()),
            Step::MountProc { target, .. } => write!(f, "mount proc on {}", target.display()),
            Step::SetHostname { name } => write!(f, "set hostname {name}"),
            Step::JoinNetwork => f.write_str("join the jail's network namespace"),
            Step::PivotRoot { new_root } => write!(f, "pivot_root into {}", new_root.display()),
            Step::SetRlimits { .. } => f.write_str("set rlimits"),
            Step::SwitchUser { uid, gid } => write!(f, "switch to uid {uid} gid {gid}"),
            Step::ClearCapabilities => f.write_str("clear capabilities"),
            Step::ChangeDir { path } => write!(f, "enter the working directory {}", path.display()),
            Step::DieWithHost => f.write_str("set the parent-death signal"),
            Step::NoNewPrivs => f.write_str("set no_new_privs"),
            Step::Seccomp => f.write_str("install the seccomp filter"),
        }
    }
}

/// Where the new root is assembled (a directory of the host, seen only by this jail's
/// private mount namespace).
pub fn new_root(spec: &JailSpec) -> PathBuf {
    match &spec.root {
        RootSpec::Overlay { scratch, .. } => scratch.join("root"),
        RootSpec::Dir { path } => path.clone(),
    }
}

/// Derives the setup steps for `spec`, in the order they must run.
pub fn plan(spec: &JailSpec) -> Vec<Step> {
    let mut steps = Vec::with_capacity(24);
    if let CgroupJoin::Procs(files) = &spec.cgroup {
        // First, so that everything the jail allocates (its tmpfs pages included) is
        // charged to its cgroup.
        steps.extend(files.iter().map(|procs| Step::JoinCgroup { procs: procs.clone() }));
    }
    steps.push(Step::NewCgroupNamespace);
    steps.push(Step::MakeMountsPrivate);
    let root = new_root(spec);
    match &spec.root {
        RootSpec::Overlay { lower, scratch, size } => {
            steps.push(Step::MountTmpfs { target: scratch.clone(), size: *size });
            for dir in ["upper", "work", "root"] {
                steps.push(Step::MakeDir { path: scratch.join(dir) });
            }
            steps.push(Step::MountOverlay {
                lower: lower.clone(),
                upper: scratch.join("upper"),
                work: scratch.join("work"),
                target: root.clone(),
            });
        }
        RootSpec::Dir { path } => steps.push(Step::BindSelf { path: path.clone() }),
    }
    steps.extend(spec.binds.iter().map(|Bind { source, target, writable }| Step::Bind {
        source: source.clone(),
        target: inside(&root, target),
        writable: *writable,
    }));
    steps.extend(
        spec.files.iter().map(|FileSpec { path, contents }| Step::WriteFile {
            path: inside(&root, path),
            contents: contents.clone(),
        }),
    );
    steps.push(Step::MountProc { target: root.join("proc"), subset_pid: spec.proc_subset_pid });
    steps.push(Step::SetHostname { name: spec.name.clone() });
    steps.push(Step::JoinNetwork);
    steps.push(Step::PivotRoot { new_root: root });
    steps.push(Step::SetRlimits { limits: spec.rlimits.clone() });
    steps.push(Step::SwitchUser { uid: spec.uid, gid: spec.gid });
    steps.push(Step::ClearCapabilities);
    steps.push(Step::ChangeDir { path: spec.cwd.clone() });
    steps.push(Step::DieWithHost);
    steps.push(Step::NoNewPrivs);
    steps.push(Step::Seccomp);
    steps
}

/// `target` (absolute, inside the jail) as a path under the new root on the host side.
fn inside(root: &Path, target: &Path) -> PathBuf {
    root.join(target.strip_prefix("/").unwrap_or(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Program, Resource};

    fn spec(root: RootSpec) -> JailSpec {
        JailSpec {
            name: "sky-test".into(),
            root,
            binds: vec![Bind { source: "/usr".into(), target: "/usr".into(), writable: false }],
            files: vec![FileSpec { path: "/etc/resolv.conf".into(), contents: "nameserver 10.0.0.1\n".into() }],
            program: Program::Fd,
            argv: vec!["fn".into()],
            env: vec![],
            cwd: "/tmp".into(),
            uid: 1000001,
            gid: 1000001,
            cgroup: CgroupJoin::Procs(vec!["/cg/memory/x/cgroup.procs".into()]),
            rlimits: vec![Rlimit { resource: Resource::Core, limit: 0 }],
            proc_subset_pid: true,
        }
    }

    fn position(steps: &[Step], pred: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(pred).expect("step present")
    }

    #[test]
    fn overlay_root_is_assembled_inside_the_scratch_tmpfs() {
        let s = spec(RootSpec::Overlay { lower: "/base".into(), scratch: "/run/j/1".into(), size: 1 << 20 });
        let steps = plan(&s);
        assert_eq!(steps[0], Step::JoinCgroup { procs: "/cg/memory/x/cgroup.procs".into() });
        assert_eq!(steps[1], Step::NewCgroupNamespace);
        assert_eq!(steps[2], Step::MakeMountsPrivate);
        assert_eq!(steps[3], Step::MountTmpfs { target: "/run/j/1".into(), size: 1 << 20 });
        assert!(steps.contains(&Step::MountOverlay {
            lower: "/base".into(),
            upper: "/run/j/1/upper".into(),
            work: "/run/j/1/work".into(),
            target: "/run/j/1/root".into(),
        }));
        assert!(steps.contains(&Step::Bind {
            source: "/usr".into(),
            target: "/run/j/1/root/usr".into(),
            writable: false
        }));
        assert!(steps.contains(&Step::WriteFile {
            path: "/run/j/1/root/etc/resolv.conf".into(),
            contents: "nameserver 10.0.0.1\n".into()
        }));
        assert!(steps.contains(&Step::JoinNetwork));
        assert!(steps.contains(&Step::ChangeDir { path: "/tmp".into() }));
    }

    #[test]
    fn security_order_holds() {
        for root in [
            RootSpec::Dir { path: "/btrfs/jails/1".into() },
            RootSpec::Overlay { lower: "/base".into(), scratch: "/run/j/1".into(), size: 1 << 20 },
        ] {
            let steps = plan(&spec(root));
            let pivot = position(&steps, |s| matches!(s, Step::PivotRoot { .. }));
            let last_mount = steps
                .iter()
                .rposition(|s| {
                    matches!(
                        s,
                        Step::Bind { .. }
                            | Step::MountProc { .. }
                            | Step::BindSelf { .. }
                            | Step::MountOverlay { .. }
                            | Step::WriteFile { .. }
                    )
                })
                .unwrap();
            let cgroup = position(&steps, |s| matches!(s, Step::JoinCgroup { .. }));
            let first_mount = position(&steps, |s| matches!(s, Step::MountTmpfs { .. } | Step::BindSelf { .. }));
            let join = position(&steps, |s| *s == Step::JoinNetwork);
            let user = position(&steps, |s| matches!(s, Step::SwitchUser { .. }));
            let caps = position(&steps, |s| *s == Step::ClearCapabilities);
            let cwd = position(&steps, |s| matches!(s, Step::ChangeDir { .. }));
            let death = position(&steps, |s| *s == Step::DieWithHost);
            let nnp = position(&steps, |s| *s == Step::NoNewPrivs);
            assert!(cgroup < first_mount, "the jail's tmpfs is charged to its cgroup");
            assert!(last_mount < pivot, "every mount and file happens before pivot_root");
            assert!(join < user, "setns needs CAP_SYS_ADMIN");
            assert!(pivot < user, "root until the new root is in place");
            assert!(user < caps && caps < cwd, "the working directory is entered as the jail's user");
            assert!(user < death, "a uid change clears the parent-death signal");
            assert!(user < nnp);
            assert_eq!(steps.last(), Some(&Step::Seccomp), "seccomp is the last step before exec");
            assert_eq!(steps.iter().filter(|s| **s == Step::JoinNetwork).count(), 1, "always a namespace of its own");
        }
    }
}
