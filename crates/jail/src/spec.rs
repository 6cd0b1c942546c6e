//! What a jail is made of: the plain-data description the host sends to the spawner,
//! which turns it into a [`crate::plan::Step`] list executed by the jail's first process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the spawner needs to create one jail. Plain data: it crosses a socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JailSpec {
    /// The jail's name; also its hostname.
    pub name: String,
    pub root: RootSpec,
    /// Host directories or files mounted into the jail, after the root is in place.
    pub binds: Vec<Bind>,
    /// Small files written into the jail's own root (read-only to the jail), rather than
    /// bound from the host: their mounts would show host paths in the jail's mountinfo.
    pub files: Vec<FileSpec>,
    pub program: Program,
    /// `argv`, including `argv[0]`.
    pub argv: Vec<String>,
    /// `KEY=value` strings; nothing of the host's environment is inherited.
    pub env: Vec<String>,
    /// Working directory inside the jail.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub cgroup: CgroupJoin,
    pub rlimits: Vec<Rlimit>,
    /// Mount /proc with `subset=pid` (only processes, no /proc/sys, /proc/kcore, …).
    pub proc_subset_pid: bool,
}

/// How the jail's root filesystem is built inside its mount namespace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum RootSpec {
    /// A tmpfs of `size` bytes at `scratch` holds the upper and work directories of an
    /// overlay whose lower layer is the read-only `lower` (the base's "snapshot").
    Overlay { lower: PathBuf, scratch: PathBuf, size: u64 },
    /// A directory prepared on the host (a btrfs snapshot) becomes the root.
    Dir { path: PathBuf },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the jail; it must exist in the root (directory or file).
    pub target: PathBuf,
    pub writable: bool,
}

/// The program the jail's first process executes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Program {
    /// A path inside the jail.
    Path(PathBuf),
    /// The file passed as [`JailIo::exec`](crate::JailIo), executed with `execveat`, so the
    /// binary need not be copied or mounted into the jail.
    Fd,
    /// Chosen later: the jail sets itself up completely, marks itself ready, and waits on
    /// its `go` socket for the program (a descriptor), `argv` and `env` (a *warm* jail; see
    /// [`crate::send_program`]). `JailSpec::argv` and `env` are not used.
    Later,
}

/// A file written into the jail's root before it starts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct FileSpec {
    /// Absolute path inside the jail; its directory must exist in the root.
    pub path: PathBuf,
    pub contents: String,
}

/// Which network namespace a jail joins. Every jail has one of its own at any moment: no
/// two jails that could run at once share one, and none is the host's.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Network {
    /// The jail slot's own empty namespace (not even loopback up), made once per slot and
    /// used by that slot's jails one at a time.
    None,
    /// A namespace the caller prepared for this jail alone and passes with the launch (an
    /// address of the IPv4 pool, or the build jail's egress proxy).
    Given,
}

/// How the jail's first process enters its cgroup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CgroupJoin {
    /// cgroup v1: write "0" to each controller's `cgroup.procs`.
    Procs(Vec<PathBuf>),
    /// cgroup v2: `clone3(CLONE_INTO_CGROUP)` into this directory.
    Into(PathBuf),
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: Resource,
    pub limit: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Resource {
    Core,
    FileSize,
    NoFile,
    Nproc,
    MemLock,
    MsgQueue,
    Stack,
}

impl JailSpec {
    /// Rejects what would fail later in the child with a worse message.
    pub fn validate(&self) -> Result<(), String> {
        let hostname_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !hostname_ok {
            return Err(format!("jail name {:?} is not a valid hostname", self.name));
        }
        if self.argv.is_empty() {
            return Err("argv must hold at least the program name".into());
        }
        if let Some(s) = self.argv.iter().chain(&self.env).find(|s| s.contains('\0')) {
            return Err(format!("argument or environment entry {s:?} contains a NUL byte"));
        }
        if self.uid == 0 || self.gid == 0 {
            return Err("jails never run as root".into());
        }
        for bind in &self.binds {
            if !bind.target.is_absolute() || !bind.source.is_absolute() {
                return Err(format!("bind mount paths must be absolute: {bind:?}"));
            }
        }
        if !self.cwd.is_absolute() {
            return Err(format!("working directory {} must be absolute", self.cwd.display()));
        }
        for file in &self.files {
            let plain = file.path.components().skip(1).all(|c| matches!(c, std::path::Component::Normal(_)));
            if !file.path.is_absolute() || !plain || file.path.parent().is_none_or(|p| p == std::path::Path::new("/")) {
                return Err(format!(
                    "file path {} must be absolute, below a directory, without '..'",
                    file.path.display()
                ));
            }
        }
        Ok(())
    }
}
