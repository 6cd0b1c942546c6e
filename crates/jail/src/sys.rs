//! The few system calls that neither rustix nor seccompiler wrap: `clone3`, `execve(at)`,
//! `close_range`, `PR_CAPBSET_DROP` by number, `_exit`, and resetting a signal. Every
//! `unsafe` block of the jail crate outside `rootfs/btrfs.rs` lives here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `struct clone_args` of `linux/sched.h`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What `clone3` returned.
pub enum Cloned {
    /// We are the new process.
    Child,
    Parent {
        pid: i32,
        pidfd: OwnedFd,
    },
}

/// `clone3` without a new stack: like `fork`, the child continues on a copy of the
/// caller's stack. `CLONE_PIDFD` is always added; `cgroup` adds `CLONE_INTO_CGROUP`.
///
/// # Safety
/// The calling process must be single-threaded: the child is a copy of this process
/// in which only the calling thread exists, so a lock held by any other thread (the
/// allocator's, stdio's) would stay locked forever in the child.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Cloned> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &raw mut pidfd as u64,
        // With CLONE_PARENT the kernel requires 0 here and gives the child our own exit
        // signal (SIGCHLD) instead.
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 },
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; `pidfd` outlives the call.
    // No stack is given, so the child runs on a copy of ours in its own address space
    // (no CLONE_VM); the caller guarantees the process is single-threaded.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, size_of::<CloneArgs>()) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent {
            pid: pid as i32,
            // SAFETY: CLONE_PIDFD made the kernel store a new file descriptor that
            // nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// `NULL`-terminated pointer array over `strings`, for `execve`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// Executes `path`, or the file open as `fd` when `path` is `None`. Returns only on error.
pub fn exec(fd: Option<BorrowedFd<'_>>, path: Option<&CStr>, argv: &[CString], env: &[CString]) -> io::Error {
    let argv = pointers(argv);
    let env = pointers(env);
    match (fd, path) {
        (Some(fd), _) => {
            // SAFETY: the empty path, argv and env are NUL-terminated strings in NULL-
            // terminated arrays that live until the call returns (it only returns on error).
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    argv.as_ptr(),
                    env.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
        }
        (None, Some(path)) => {
            // SAFETY: as above, with a NUL-terminated path.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr()) };
        }
        (None, None) => return io::Error::new(io::ErrorKind::InvalidInput, "nothing to execute"),
    }
    io::Error::last_os_error()
}

/// Marks every descriptor from `first` up close-on-exec, so only stdio survives `exec`.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; it touches no memory.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Removes every capability the kernel knows of from the bounding set.
pub fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            // EINVAL: past the last capability this kernel has.
            return if err.raw_os_error() == Some(libc::EINVAL) && cap > 0 { Ok(()) } else { Err(err) };
        }
    }
    Ok(())
}

/// Ends the current process at once, without running exit handlers or destructors:
/// the right way out of a cloned child that must not touch the parent's state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Restores the default action of `signal` (Rust's runtime ignores SIGPIPE, and ignored
/// signals stay ignored across `exec`).
pub fn default_signal(signal: i32) {
    // SAFETY: installing SIG_DFL involves no handler code and no memory of ours.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Gives the calling process a new cgroup namespace rooted at its current cgroup.
pub fn unshare_cgroup_namespace() -> io::Result<()> {
    // SAFETY: CLONE_NEWCGROUP only changes which cgroup paths this process sees; it does
    // not unshare memory, files or anything other threads could be relying on.
    Ok(unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }?)
}

/// Moves the calling thread into a new, empty network namespace.
pub fn unshare_network_namespace() -> io::Result<()> {
    // SAFETY: CLONE_NEWNET changes only the network namespace of the calling thread;
    // the spawner calls it while single-threaded and moves straight back with setns.
    Ok(unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?)
}

/// `fork`: `None` in the child, the child's pid in the parent.
///
/// # Safety
/// The calling process must be single-threaded (see [`clone3`]).
pub unsafe fn fork() -> io::Result<Option<rustix::process::Pid>> {
    // SAFETY: the caller guarantees a single thread, so the child's copy of the address
    // space holds no lock that another thread would have released.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(rustix::process::Pid::from_raw(pid)),
    }
}

/// The number of threads of the calling process.
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads line in /proc/self/status"))
}

/// Closes every descriptor except `keep` and stderr, and points stdin and stdout at
/// /dev/null: what a forked helper should hold of its parent's descriptors.
pub fn keep_only(keep: OwnedFd) -> Result<OwnedFd, (OwnedFd, io::Error)> {
    let null = match rustix::fs::open("/dev/null", rustix::fs::OFlags::RDWR, rustix::fs::Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return Err((keep, e.into())),
    };
    if let Err(e) = rustix::stdio::dup2_stdin(&null).and_then(|()| rustix::stdio::dup2_stdout(&null)) {
        return Err((keep, e.into()));
    }
    drop(null);
    let raw = keep.as_raw_fd() as u32;
    for (first, last) in [(3, raw.saturating_sub(1)), (raw + 1, u32::MAX)] {
        if first > last {
            continue;
        }
        // SAFETY: closes descriptors nothing in this process uses any more (the helper
        // has just been forked and owns only `keep`); touches no memory.
        let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        if ret == -1 {
            return Err((keep, io::Error::last_os_error()));
        }
    }
    Ok(keep)
}

/// Installs a seccomp filter on the calling thread (`no_new_privs` must be set).
pub fn install_seccomp_filter(program: &[crate::seccomp::Instruction]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::other("seccomp program too long"))?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut().cast::<libc::sock_filter>() };
    // SAFETY: `Instruction` is `repr(C)` with the layout of `struct sock_filter`; the
    // kernel copies the program during the call, while `program` and `fprog` are alive.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &raw const fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
