//! The spawner: a small single-threaded helper process that creates every jail.
//!
//! Forking a big multi-threaded server is slow (its page tables are copied) and unsafe
//! between fork and exec, so the server instead forks this helper once, at start-up
//! while it is still small and single-threaded, and sends it one request per jail over
//! a `SOCK_SEQPACKET` socket, with the jail's descriptors attached (`SCM_RIGHTS`). The
//! helper `clone3`s the jail with `CLONE_PARENT`, so the jail is the *server's* child:
//! the server gets its pidfd back and waits on it directly. The helper keeps the one
//! shared empty network namespace and the compiled seccomp policy.
//!
//! The forked helper may execute a small program of the host's ([`start`]'s `program`,
//! which hands over to [`run_as_program`]): a copy of a big server carries its relocated
//! data and heap, which every clone copies and every jail's exec throws away again.
//!
//! Invariant: the helper never starts a thread, which is what makes allocating in the
//! cloned child safe.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

use crate::child::{self, Context, Fds};
use crate::plan;
use crate::seccomp::Policy;
use crate::spec::{CgroupJoin, JailSpec, Program};
use crate::sys::{self, Cloned};

/// A jail request: its spec, with `argv` of up to `limits.max_call` (64 KiB at most) of
/// literals, quoted (up to 2.5 times longer) and JSON-escaped (up to twice).
const MAX_MESSAGE: usize = 1 << 20;
const MAX_FDS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the jail spawner must be started while the process is single-threaded")]
    Threads,
    #[error("cannot start the jail spawner: {0}")]
    Start(String),
    #[error("the jail spawner is gone: {0}")]
    Gone(io::Error),
    #[error("invalid jail: {0}")]
    Invalid(String),
    #[error("cannot create the jail: {0}")]
    Clone(String),
}

/// Descriptors the jailed program gets, and the ones that steer its start.
#[derive(Debug)]
pub struct JailIo {
    /// Standard input; `/dev/null` when `None`.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The program, for [`crate::spec::Program::Fd`].
    pub exec: Option<OwnedFd>,
    /// The jail's end of the host's control channel (a `SOCK_SEQPACKET` socket) on which
    /// a warm jail ([`crate::spec::Program::Later`]) receives its program.
    pub go: Option<OwnedFd>,
    /// The network namespace to join: the slot's own, or one prepared for this jail.
    pub netns: Option<OwnedFd>,
}

/// A jail that has been cloned; it is setting itself up or already running.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// Pollable: readable once the jail's first process has exited.
    pub pidfd: OwnedFd,
    /// Read end of the setup pipe: end-of-file once the program is executing, or the
    /// reason setup failed.
    pub setup: OwnedFd,
}

#[derive(Serialize, Deserialize)]
struct Request {
    spec: JailSpec,
    has_stdin: bool,
    has_exec: bool,
    has_go: bool,
    has_netns: bool,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Ready,
    Spawned { pid: i32 },
    Failed { error: String },
}

/// What a warm jail receives: the program comes attached as a descriptor.
#[derive(Serialize, Deserialize)]
pub(crate) struct ProgramMessage {
    pub argv: Vec<String>,
    pub env: Vec<String>,
}

/// The largest program message a warm jail accepts.
pub(crate) const MAX_PROGRAM_MESSAGE: usize = 1 << 20;

/// Hands a warm jail ([`crate::spec::Program::Later`]) its program, `argv` and `env`
/// through the host's end of its `go` socket. Non-blocking in practice: one small message.
pub fn send_program(control: BorrowedFd<'_>, exec: BorrowedFd<'_>, argv: &[String], env: &[String]) -> io::Result<()> {
    if argv.is_empty() || argv.iter().chain(env).any(|s| s.contains('\0')) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "argv must not be empty nor contain NUL bytes"));
    }
    let body =
        serde_json::to_vec(&ProgramMessage { argv: argv.to_vec(), env: env.to_vec() }).map_err(io::Error::other)?;
    if body.len() > MAX_PROGRAM_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "argv and env are too large"));
    }
    send(control, &body, &[exec])
}

/// The server's end of the spawner.
#[derive(Debug)]
pub struct Spawner {
    mode: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A helper process; jails are clones of it, children of this process.
    Helper { conn: Mutex<Option<Connection>>, pid: rustix::process::Pid },
    /// This process clones each jail itself: for a one-shot command that creates one
    /// jail while it is single-threaded, without a helper to start and stop.
    Inline(Cloner),
}

#[derive(Debug)]
struct Connection {
    socket: OwnedFd,
    /// Replies are small; this buffer is reused for all of them.
    buf: Vec<u8>,
}

const MAX_REPLY: usize = 64 * 1024;

impl Spawner {
    /// Forks the helper. Call it while the process is still single-threaded (before an
    /// async runtime starts), from the thread that lives as long as the jails: their
    /// parent-death signal is tied to it.
    ///
    /// With a `program`, the helper executes it as `PROGRAM SPAWNER_ARG <socket> <pid>`
    /// (see [`run_as_program`]) before it serves.
    pub fn start(program: Option<&std::path::Path>) -> Result<Spawner, SpawnError> {
        let start = |what: &str, e: io::Error| SpawnError::Start(format!("{what}: {e}"));
        if sys::thread_count().map_err(|e| start("count threads", e))? != 1 {
            return Err(SpawnError::Threads);
        }
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                .map_err(|e| start("socketpair", e.into()))?;
        let parent = rustix::process::getpid();
        // SAFETY: checked above that this process has a single thread.
        match unsafe { sys::fork() }.map_err(|e| start("fork", e))? {
            None => {
                drop(ours);
                if let Some(program) = program {
                    let error = execute_helper(program, &theirs, parent);
                    let error = format!("execute {}: {error}", program.display());
                    if let Ok(body) = serde_json::to_vec(&Reply::Failed { error }) {
                        let _ = send(theirs.as_fd(), &body, &[]);
                    }
                    sys::exit_now(1)
                }
                let code = match serve(theirs, parent) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("skyisland spawner: {e}");
                        1
                    }
                };
                sys::exit_now(code)
            }
            Some(pid) => {
                drop(theirs);
                let mut conn = Connection { socket: ours, buf: vec![0; MAX_REPLY] };
                let (reply, _) = receive(conn.socket.as_fd(), &mut conn.buf).map_err(|e| start("handshake", e))?;
                let spawner = Spawner { mode: Kind::Helper { conn: Mutex::new(Some(conn)), pid } };
                match reply {
                    Reply::Ready => Ok(spawner),
                    Reply::Failed { error } => Err(SpawnError::Start(error)),
                    Reply::Spawned { .. } => Err(SpawnError::Start("unexpected handshake".into())),
                }
            }
        }
    }

    /// Makes this process its own spawner (see [`Kind::Inline`]). It must stay
    /// single-threaded whenever it spawns, and it gives up its capability bounding set
    /// (it must not need to execute programs with file capabilities afterwards).
    pub fn inline() -> Result<Spawner, SpawnError> {
        let start = |what: &str, e: String| SpawnError::Start(format!("{what}: {e}"));
        let host = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty())
            .map_err(|e| start("pidfd_open", e.to_string()))?;
        let cloner = Cloner::new(host, false).map_err(|e| start("prepare", e))?;
        Ok(Spawner { mode: Kind::Inline(cloner) })
    }

    /// Creates a jail. Returns as soon as it is cloned; its setup runs concurrently.
    pub fn spawn(&self, spec: &JailSpec, io: JailIo) -> Result<Spawned, SpawnError> {
        spec.validate().map_err(SpawnError::Invalid)?;
        let (setup_read, setup_write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| SpawnError::Gone(e.into()))?;
        let conn = match &self.mode {
            Kind::Helper { conn, .. } => conn,
            Kind::Inline(cloner) => {
                if sys::thread_count().map_err(SpawnError::Gone)? != 1 {
                    return Err(SpawnError::Threads);
                }
                let JailIo { stdin, stdout, stderr, exec, go, netns } = io;
                let fds = Fds { stdin, stdout, stderr, setup: setup_write, exec, go, netns };
                let (pid, pidfd) = cloner.clone_jail(spec.clone(), fds).map_err(SpawnError::Clone)?;
                return Ok(Spawned { pid, pidfd, setup: setup_read });
            }
        };
        let request = Request {
            spec: spec.clone(),
            has_stdin: io.stdin.is_some(),
            has_exec: io.exec.is_some(),
            has_go: io.go.is_some(),
            has_netns: io.netns.is_some(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| SpawnError::Invalid(e.to_string()))?;
        if body.len() > MAX_MESSAGE {
            return Err(SpawnError::Invalid(format!("jail request of {} bytes is too large", body.len())));
        }
        let mut fds: Vec<BorrowedFd<'_>> = vec![io.stdout.as_fd(), io.stderr.as_fd(), setup_write.as_fd()];
        fds.extend([&io.stdin, &io.exec, &io.go, &io.netns].into_iter().flatten().map(|fd| fd.as_fd()));

        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        let conn = guard.as_mut().ok_or_else(|| SpawnError::Gone(io::ErrorKind::NotConnected.into()))?;
        send(conn.socket.as_fd(), &body, &fds).map_err(SpawnError::Gone)?;
        let (reply, mut fds) = receive(conn.socket.as_fd(), &mut conn.buf).map_err(SpawnError::Gone)?;
        drop(guard);
        match reply {
            Reply::Spawned { pid } if fds.len() == 1 => Ok(Spawned { pid, pidfd: fds.remove(0), setup: setup_read }),
            Reply::Failed { error } => Err(SpawnError::Clone(error)),
            _ => Err(SpawnError::Gone(io::Error::other("malformed reply"))),
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Kind::Helper { conn, pid } = &self.mode {
            // Closing our end is the helper's signal to exit.
            drop(conn.lock().unwrap_or_else(|p| p.into_inner()).take());
            let _ = rustix::process::waitpid(Some(*pid), rustix::process::WaitOptions::empty());
        }
    }
}

pub(crate) fn send(conn: BorrowedFd<'_>, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors"));
    }
    let sent = rustix::net::sendmsg(conn, &[IoSlice::new(body)], &mut control, SendFlags::NOSIGNAL)?;
    if sent != body.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// Receives one message into `buf` (reused across messages: no allocation per jail).
pub(crate) fn receive<T: for<'de> Deserialize<'de>>(
    conn: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(T, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(conn, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other("truncated message"));
    }
    let value = serde_json::from_slice(&buf[..msg.bytes]).map_err(io::Error::other)?;
    Ok((value, fds))
}

/// The helper process: its socket to the server, and what clones the jails.
struct Helper {
    conn: OwnedFd,
    cloner: Cloner,
}

/// What every jail is cloned with, kept for the spawner's whole life.
#[derive(Debug)]
struct Cloner {
    /// pidfd of the process that owns the jails: readable once it has exited.
    host: OwnedFd,
    policy: Policy,
    /// Make the jails the children of the cloner's parent (the helper's server).
    clone_parent: bool,
}

/// The argument that makes a program the spawner helper (see [`run_as_program`]).
pub const SPAWNER_ARG: &str = "__skyisland-jail-spawner";

/// In the forked helper: executes `program` with the socket kept open across the exec.
/// Returns only on failure.
fn execute_helper(program: &std::path::Path, conn: &OwnedFd, parent: rustix::process::Pid) -> io::Error {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    if let Err(e) = rustix::io::fcntl_setfd(conn, rustix::io::FdFlags::empty()) {
        return e.into();
    }
    std::process::Command::new(program)
        .arg0("skyisland-spawner")
        .arg(SPAWNER_ARG)
        .arg(conn.as_raw_fd().to_string())
        .arg(parent.as_raw_nonzero().to_string())
        .exec()
}

/// The helper, in the program [`Spawner::start`] executed: `args` are what followed
/// [`SPAWNER_ARG`] (the socket's descriptor and the server's pid). Call it first thing in
/// `main`, before any thread starts; it returns the process's exit status.
pub fn run_as_program(mut args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    let mut number = || args.next().and_then(|a| a.to_str().and_then(|a| a.parse::<i32>().ok()));
    let (Some(fd), Some(parent)) = (number(), number()) else {
        eprintln!("skyisland spawner: expected a socket descriptor and the server's pid");
        return 2;
    };
    let Some(parent) = rustix::process::Pid::from_raw(parent) else {
        eprintln!("skyisland spawner: bad server pid {parent}");
        return 2;
    };
    // SAFETY: F_GETFD only reads this process's descriptor table (EBADF if not open).
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        eprintln!("skyisland spawner: descriptor {fd} is not open");
        return 2;
    }
    // SAFETY: the descriptor is open (checked above), not a standard stream, and was
    // inherited across the exec for this call: nothing else in this process owns it.
    let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if rustix::fs::fstat(&conn).map_or(true, |stat| stat.st_mode & libc::S_IFMT != libc::S_IFSOCK) {
        eprintln!("skyisland spawner: descriptor {fd} is not a socket");
        return 2;
    }
    match serve(conn, parent) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skyisland spawner: {e}");
            1
        }
    }
}

/// The helper's main loop: one jail per request until the server closes the socket.
fn serve(conn: OwnedFd, parent: rustix::process::Pid) -> io::Result<()> {
    let helper = match prepare(conn, parent) {
        Ok(helper) => helper,
        Err((conn, error)) => {
            let body = serde_json::to_vec(&Reply::Failed { error: error.clone() }).map_err(io::Error::other)?;
            let _ = send(conn.as_fd(), &body, &[]);
            return Err(io::Error::other(error));
        }
    };
    send(helper.conn.as_fd(), &serde_json::to_vec(&Reply::Ready).map_err(io::Error::other)?, &[])?;
    let mut buf = vec![0; MAX_MESSAGE];
    loop {
        let (request, fds) = match receive::<Request>(helper.conn.as_fd(), &mut buf) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let (reply, pidfd) = match helper.spawn(request, fds) {
            Ok((pid, pidfd)) => (Reply::Spawned { pid }, Some(pidfd)),
            Err(error) => (Reply::Failed { error }, None),
        };
        let body = serde_json::to_vec(&reply).map_err(io::Error::other)?;
        let fds: Vec<BorrowedFd<'_>> = pidfd.iter().map(|fd| fd.as_fd()).collect();
        send(helper.conn.as_fd(), &body, &fds)?;
    }
}

fn prepare(conn: OwnedFd, parent: rustix::process::Pid) -> Result<Helper, (OwnedFd, String)> {
    let fail = |conn, e: String| Err((conn, e));
    // Keep only the socket and stderr of what the fork inherited: no listening sockets,
    // no pipes whose readers would wait for us.
    let conn = match sys::keep_only(conn) {
        Ok(conn) => conn,
        Err((conn, e)) => return fail(conn, format!("close inherited descriptors: {e}")),
    };
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        return fail(conn, format!("parent-death signal: {e}"));
    }
    if rustix::process::getppid() != Some(parent) {
        return fail(conn, "the server exited before the spawner started".into());
    }
    let host = match rustix::process::pidfd_open(parent, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => return fail(conn, format!("pidfd_open of the server: {e}")),
    };
    match Cloner::new(host, true) {
        Ok(cloner) => Ok(Helper { conn, cloner }),
        Err(e) => fail(conn, e),
    }
}

impl Cloner {
    fn new(host: OwnedFd, clone_parent: bool) -> Result<Cloner, String> {
        // The cloner never executes anything, so its capability bounding set is of no use
        // to it; emptying it once here empties it for every jail, which inherits it.
        sys::drop_bounding_set().map_err(|e| format!("drop the capability bounding set: {e}"))?;
        let policy = Policy::compile()?;
        Ok(Cloner { host, policy, clone_parent })
    }
}

/// A new network namespace with nothing in it (not even loopback up). The calling
/// thread enters it for a moment and comes back. (Each jail slot gets one, made once and
/// reused by the slot's jails one at a time: creating one per jail would cost ~0.6 ms.)
pub fn empty_network_namespace() -> io::Result<OwnedFd> {
    let open = || rustix::fs::open("/proc/thread-self/ns/net", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty());
    let host = open()?;
    sys::unshare_network_namespace()?;
    let empty = open();
    if rustix::thread::move_into_link_name_space(host.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .is_err()
    {
        // This thread would make every later socket in the wrong namespace.
        std::process::abort();
    }
    Ok(empty?)
}

impl Helper {
    /// Unpacks a request and its descriptors, and clones the jail.
    fn spawn(&self, request: Request, mut fds: Vec<OwnedFd>) -> Result<(i32, OwnedFd), String> {
        let expected = 3
            + usize::from(request.has_stdin)
            + usize::from(request.has_exec)
            + usize::from(request.has_go)
            + usize::from(request.has_netns);
        if fds.len() != expected {
            return Err(format!("expected {expected} descriptors, got {}", fds.len()));
        }
        let mut optional = |present: bool| {
            if present { Some(fds.pop().expect("counted")) } else { None }
        };
        // Attached in the order stdout, stderr, setup, [stdin], [exec], [go], [netns].
        let netns = optional(request.has_netns);
        let go = optional(request.has_go);
        let exec = optional(request.has_exec);
        let stdin = optional(request.has_stdin);
        let setup = fds.pop().expect("counted");
        let stderr = fds.pop().expect("counted");
        let stdout = fds.pop().expect("counted");
        self.cloner.clone_jail(request.spec, Fds { stdin, stdout, stderr, setup, exec, go, netns })
    }
}

impl Cloner {
    /// Clones one jail, which sets itself up and executes its program.
    fn clone_jail(&self, spec: JailSpec, fds: Fds) -> Result<(i32, OwnedFd), String> {
        spec.validate()?;
        if spec.program == Program::Later && fds.go.is_none() {
            return Err("a warm jail needs a go socket".into());
        }
        if fds.netns.is_none() {
            return Err("no network namespace was passed to join".into());
        }
        let steps = plan::plan(&spec);
        let mut flags = (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) as u64;
        if self.clone_parent {
            flags |= libc::CLONE_PARENT as u64;
        }
        let cgroup = match &spec.cgroup {
            CgroupJoin::Into(dir) => Some(
                rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| format!("open cgroup {}: {e}", dir.display()))?,
            ),
            CgroupJoin::Procs(_) => None,
        };
        // SAFETY: the helper is single-threaded (module invariant); inline spawning checks
        // that the process is before it gets here.
        match unsafe { sys::clone3(flags, cgroup.as_ref().map(|fd| fd.as_fd())) } {
            Ok(Cloned::Child) => {
                let ctx = Context { host: self.host.as_fd(), policy: &self.policy };
                child::run(&spec, &steps, fds, &ctx)
            }
            Ok(Cloned::Parent { pid, pidfd }) => Ok((pid, pidfd)),
            Err(e) => Err(format!("clone3: {e}")),
        }
    }
}
