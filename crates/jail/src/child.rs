//! The jail's first process between `clone3` and `exec`: executes the plan's steps as
//! root in the new namespaces, then becomes the jailed program (PID 1 of its namespace,
//! so that when it exits the kernel kills whatever it left behind).
//!
//! Runs in a copy of the single-threaded spawner, so allocating is safe here; it never
//! returns: it either `exec`s or reports the failed step on the setup pipe and `_exit`s.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, mkdir};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Resource as RlimitResource, Rlimit as RustixRlimit, Signal};
use rustix::thread::{CapabilitySet, CapabilitySets, LinkNameSpaceType};

use crate::plan::Step;
use crate::seccomp::Policy;
use crate::spawner::{MAX_PROGRAM_MESSAGE, ProgramMessage, receive};
use crate::spec::{JailSpec, Program, Resource};
use crate::sys;

/// What the spawner lends to every child.
pub(crate) struct Context<'a> {
    /// pidfd of the process that owns the jails; readable once it has exited.
    pub host: BorrowedFd<'a>,
    pub policy: &'a Policy,
}

/// The descriptors that came with this jail's request.
pub(crate) struct Fds {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub setup: OwnedFd,
    pub exec: Option<OwnedFd>,
    pub go: Option<OwnedFd>,
    pub netns: Option<OwnedFd>,
}

/// Exit status of a child whose setup failed (the setup pipe says why).
pub const SETUP_FAILED: i32 = 127;

pub(crate) fn run(spec: &JailSpec, plan: &[Step], fds: Fds, ctx: &Context<'_>) -> ! {
    let Fds { stdin, stdout, stderr, setup, exec, go, netns } = fds;
    let mut setup = std::fs::File::from(setup);
    let err = match enter(spec, plan, (stdin, stdout, stderr), exec, go, netns, &mut setup, ctx) {
        Ok(never) => match never {},
        Err(message) => message,
    };
    // The host reads this as the reason the jail did not start; nothing else to do if
    // even that fails.
    let _ = setup.write_all(err.as_bytes());
    sys::exit_now(SETUP_FAILED)
}

#[allow(clippy::too_many_arguments)]
fn enter(
    spec: &JailSpec,
    plan: &[Step],
    (stdin, stdout, stderr): (Option<OwnedFd>, OwnedFd, OwnedFd),
    exec_fd: Option<OwnedFd>,
    go: Option<OwnedFd>,
    netns: Option<OwnedFd>,
    setup: &mut std::fs::File,
    ctx: &Context<'_>,
) -> Result<std::convert::Infallible, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let stdin = match stdin {
        Some(fd) => fd,
        None => rustix::fs::open("/dev/null", rustix::fs::OFlags::RDONLY, Mode::empty())
            .map_err(|e| io("open /dev/null", e.into()))?,
    };
    rustix::stdio::dup2_stdin(&stdin).map_err(|e| io("set up stdin", e.into()))?;
    rustix::stdio::dup2_stdout(&stdout).map_err(|e| io("set up stdout", e.into()))?;
    rustix::stdio::dup2_stderr(&stderr).map_err(|e| io("set up stderr", e.into()))?;
    // Everything else we hold (the spawner's socket and namespaces, the setup pipe, the
    // program) closes at exec.
    sys::cloexec_from(3).map_err(|e| io("mark descriptors close-on-exec", e))?;
    // Rust ignores SIGPIPE; ignored signals stay ignored across exec, and jailed programs
    // should start with the default.
    sys::default_signal(libc::SIGPIPE);

    for step in plan {
        run_step(step, netns.as_ref().map(|fd| fd.as_fd()), ctx).map_err(|e| format!("{step}: {e}"))?;
    }

    let (argv, env, err) = match &spec.program {
        Program::Fd => {
            let (argv, env) = (cstrings(&spec.argv)?, cstrings(&spec.env)?);
            let fd = exec_fd.as_ref().ok_or("no program descriptor was passed")?;
            let err = sys::exec(Some(fd.as_fd()), None, &argv, &env);
            (spec.argv.clone(), env, err)
        }
        Program::Path(path) => {
            let (argv, env) = (cstrings(&spec.argv)?, cstrings(&spec.env)?);
            let path = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            let err = sys::exec(None, Some(&path), &argv, &env);
            (spec.argv.clone(), env, err)
        }
        Program::Later => {
            // Set up and waiting: tell the host, then wait for the program.
            setup.write_all(READY).map_err(|e| io("report ready", e))?;
            let control = go.as_ref().ok_or("no control socket was passed")?;
            let mut buf = vec![0u8; MAX_PROGRAM_MESSAGE];
            let (message, mut fds) = match receive::<ProgramMessage>(control.as_fd(), &mut buf) {
                Ok(received) => received,
                // The host let go of the jail unused.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => sys::exit_now(0),
                Err(e) => return Err(io("receive the program", e)),
            };
            let program = fds.pop().ok_or("no program descriptor came with the program")?;
            let (argv, env) = (cstrings(&message.argv)?, cstrings(&message.env)?);
            let err = sys::exec(Some(program.as_fd()), None, &argv, &env);
            (message.argv, env, err)
        }
    };
    drop(env);
    let hint = if err.kind() == std::io::ErrorKind::NotFound {
        " (a dynamically linked program whose loader or libraries are not in the jail?)"
    } else {
        ""
    };
    Err(format!("exec {}: {err}{hint}", argv.first().map_or("", String::as_str)))
}

/// What a warm jail writes on its setup pipe once it is ready for its program.
pub const READY: &[u8] = b"R";

fn cstrings(strings: &[String]) -> Result<Vec<CString>, String> {
    strings.iter().map(|s| CString::new(s.as_bytes()).map_err(|e| e.to_string())).collect()
}

fn run_step(step: &Step, netns: Option<BorrowedFd<'_>>, ctx: &Context<'_>) -> std::io::Result<()> {
    match step {
        Step::JoinCgroup { procs } => std::fs::write(procs, b"0"),
        Step::NewCgroupNamespace => sys::unshare_cgroup_namespace(),
        Step::MakeMountsPrivate => {
            Ok(rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)?)
        }
        Step::MountTmpfs { target, size } => {
            let data = CString::new(format!("size={size},mode=0755")).expect("no NUL");
            Ok(rustix::mount::mount("tmpfs", target, "tmpfs", MountFlags::NOSUID, data.as_c_str())?)
        }
        Step::MakeDir { path } => Ok(mkdir(path, Mode::from_raw_mode(0o755))?),
        Step::MountOverlay { lower, upper, work, target } => mount_overlay(lower, upper, work, target),
        Step::BindSelf { path } => Ok(rustix::mount::mount_bind(path, path)?),
        Step::Bind { source, target, writable } => bind(source, target, *writable),
        Step::WriteFile { path, contents } => write_file(path, contents),
        Step::MountProc { target, subset_pid } => {
            let data = if *subset_pid { c"subset=pid" } else { c"" };
            let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            Ok(rustix::mount::mount("proc", target, "proc", flags, data)?)
        }
        Step::SetHostname { name } => Ok(rustix::system::sethostname(name.as_bytes())?),
        Step::JoinNetwork => {
            let netns = netns.ok_or_else(|| std::io::Error::other("no network namespace was passed"))?;
            Ok(rustix::thread::move_into_link_name_space(netns, Some(LinkNameSpaceType::Network))?)
        }
        Step::PivotRoot { new_root } => {
            // pivot_root(".", ".") stacks the old root on top of the new one; detaching
            // it leaves only the new root, with no directory needed for the old.
            rustix::process::chdir(new_root)?;
            rustix::process::pivot_root(".", ".")?;
            rustix::mount::unmount(".", UnmountFlags::DETACH)?;
            Ok(rustix::process::chdir("/")?)
        }
        Step::SetRlimits { limits } => {
            for limit in limits {
                let value = Some(limit.limit);
                rustix::process::setrlimit(resource(limit.resource), RustixRlimit { current: value, maximum: value })?;
            }
            Ok(())
        }
        Step::SwitchUser { uid, gid } => {
            let (uid, gid) = (rustix::process::Uid::from_raw(*uid), rustix::process::Gid::from_raw(*gid));
            rustix::thread::set_thread_groups(&[gid])?;
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            Ok(rustix::thread::set_thread_res_uid(uid, uid, uid)?)
        }
        Step::ClearCapabilities => {
            let none = CapabilitySet::empty();
            rustix::thread::set_capabilities(
                None,
                CapabilitySets { effective: none, permitted: none, inheritable: none },
            )?;
            Ok(rustix::thread::clear_ambient_capability_set()?)
        }
        Step::ChangeDir { path } => Ok(rustix::process::chdir(path)?),
        Step::DieWithHost => {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The host may have died before the signal was armed.
            let mut fds = [rustix::event::PollFd::new(&ctx.host, rustix::event::PollFlags::IN)];
            let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
            if rustix::event::poll(&mut fds, Some(&zero))? > 0 {
                return Err(std::io::Error::other("the host process has exited"));
            }
            Ok(())
        }
        Step::NoNewPrivs => Ok(rustix::thread::set_no_new_privs(true)?),
        Step::Seccomp => ctx.policy.install(),
    }
}

/// Mounts the overlay that becomes the jail's root. Its options are what the jail reads in
/// its mountinfo, so they name no host path: the lower layer is given as a descriptor
/// (`/proc/self/fd/N`, resolved by the kernel at mount time), upper and work relative to
/// their directory, the working directory of this process for the moment.
fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> std::io::Result<()> {
    let scratch = upper.parent().ok_or_else(|| std::io::Error::other("the upper layer has no parent"))?;
    let (Some(upper), Some(work), Some(target)) = (
        upper.file_name().filter(|_| upper.parent() == Some(scratch)),
        work.file_name().filter(|_| work.parent() == Some(scratch)),
        target.file_name().filter(|_| target.parent() == Some(scratch)),
    ) else {
        return Err(std::io::Error::other("the overlay's upper, work and target must share a directory"));
    };
    let lower = rustix::fs::open(
        lower,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::process::chdir(scratch)?;
    let data = format!(
        "lowerdir=/proc/self/fd/{},upperdir={},workdir={}",
        std::os::fd::AsRawFd::as_raw_fd(&lower),
        upper.to_string_lossy(),
        work.to_string_lossy()
    );
    let data = CString::new(data).map_err(std::io::Error::other)?;
    rustix::mount::mount("overlay", target, "overlay", MountFlags::NOSUID, data.as_c_str())?;
    Ok(())
}

/// Writes a file into the new root: root-owned, mode 0444, never through a link.
fn write_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use rustix::fs::OFlags;
    let file = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
    )?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o444))?;
    std::fs::File::from(file).write_all(contents.as_bytes())
}

/// Bind-mounts `source` on `target`, then makes it read-only unless `writable`; never
/// setuid or device files through a bind.
fn bind(source: &Path, target: &Path, writable: bool) -> std::io::Result<()> {
    // The mount point may not exist in the base (e.g. a directory local clones come
    // from); it is created in this jail's own writable root.
    if std::fs::symlink_metadata(target).is_err() {
        if source.is_dir() {
            std::fs::create_dir_all(target)?;
        } else {
            std::fs::create_dir_all(target.parent().unwrap_or(Path::new("/")))?;
            std::fs::File::create(target)?;
        }
    }
    rustix::mount::mount_bind(source, target)?;
    let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
    if !writable {
        flags |= MountFlags::RDONLY;
    }
    Ok(rustix::mount::mount_remount(target, flags, c"")?)
}

fn resource(r: Resource) -> RlimitResource {
    match r {
        Resource::Core => RlimitResource::Core,
        Resource::FileSize => RlimitResource::Fsize,
        Resource::NoFile => RlimitResource::Nofile,
        Resource::Nproc => RlimitResource::Nproc,
        Resource::MemLock => RlimitResource::Memlock,
        Resource::MsgQueue => RlimitResource::Msgqueue,
        Resource::Stack => RlimitResource::Stack,
    }
}
