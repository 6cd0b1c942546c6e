//! The btrfs backend, the closest Linux analogue of the original's ZFS datasets:
//! `<dir>/base` is a subvolume holding the base, `<dir>/base@snap` its read-only
//! snapshot, and each jail gets `<dir>/jails/<slot>`, a writable snapshot of that with a
//! quota group limiting what it may write. Snapshots are made and destroyed with the
//! btrfs ioctls directly (no `btrfs` process on the request path).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{CloneBackend, RootfsError, at, base};
use crate::spec::RootSpec;

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
const IOCTL_MAGIC: u64 = 0x94;
const VOL_ARGS_SIZE: u64 = 4096;
const SUBVOL_NAME_MAX: usize = 4039;
const SUBVOL_RDONLY: u64 = 1 << 1;
const QUOTA_CTL_ENABLE: u64 = 1;
const QGROUP_LIMIT_MAX_EXCL: u64 = 1 << 1;

const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (IOCTL_MAGIC << 8) | nr
}
const WRITE: u64 = 1;
const READ: u64 = 2;
const IOC_SUBVOL_CREATE: u64 = ioc(WRITE, 14, VOL_ARGS_SIZE);
const IOC_SNAP_DESTROY: u64 = ioc(WRITE, 15, VOL_ARGS_SIZE);
const IOC_SNAP_CREATE_V2: u64 = ioc(WRITE, 23, VOL_ARGS_SIZE);
const IOC_QUOTA_CTL: u64 = ioc(READ | WRITE, 40, 16);
const IOC_QGROUP_LIMIT: u64 = ioc(READ, 43, 48);

/// `struct btrfs_ioctl_vol_args`: a descriptor and a name.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2`, with the union members we use.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// Copies `name` into a NUL-padded ioctl name field.
fn name_field<const N: usize>(name: &str) -> io::Result<[u8; N]> {
    let mut field = [0u8; N];
    if name.is_empty() || name.len() >= N || name.contains(['/', '\0']) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad subvolume name {name:?}")));
    }
    field[..name.len()].copy_from_slice(name.as_bytes());
    Ok(field)
}

/// Runs one btrfs ioctl on `dir` with `args`.
fn ioctl<T>(dir: &File, request: u64, args: &mut T) -> io::Result<()> {
    // SAFETY: each caller passes the argument struct the kernel defines for `request`
    // (same layout, `repr(C)`, size encoded in the request number), exclusively borrowed
    // for the duration of the call.
    let ret = unsafe { libc::ioctl(dir.as_raw_fd(), request as libc::Ioctl, std::ptr::from_mut(args)) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[derive(Debug)]
pub struct Btrfs {
    dir: PathBuf,
    host_root: PathBuf,
}

impl Btrfs {
    /// `dir` must be a directory on a btrfs filesystem.
    pub fn new(dir: &Path) -> Result<Btrfs, RootfsError> {
        fs::create_dir_all(dir).map_err(at("create", dir))?;
        let stat = rustix::fs::statfs(dir).map_err(|e| at("inspect", dir)(e.into()))?;
        if stat.f_type as i64 != BTRFS_SUPER_MAGIC {
            return Err(at("use", dir)(io::Error::other("not on a btrfs filesystem")));
        }
        Ok(Btrfs { dir: dir.to_owned(), host_root: "/".into() })
    }

    fn base(&self) -> PathBuf {
        self.dir.join("base")
    }

    fn snapshot(&self) -> PathBuf {
        self.dir.join("base@snap")
    }

    fn jails(&self) -> PathBuf {
        self.dir.join("jails")
    }

    /// The writable snapshot of slot `slot`.
    pub fn jail_root(&self, slot: &str) -> PathBuf {
        self.jails().join(slot)
    }

    fn open_dir(path: &Path) -> Result<File, RootfsError> {
        File::open(path).map_err(at("open", path))
    }

    fn create_subvolume(&self, path: &Path) -> Result<(), RootfsError> {
        let (parent, name) = split(path)?;
        let mut args = VolArgs { fd: 0, name: name_field(&name).map_err(at("create subvolume", path))? };
        ioctl(&Self::open_dir(&parent)?, IOC_SUBVOL_CREATE, &mut args).map_err(at("create subvolume", path))
    }

    fn snapshot_of(&self, source: &Path, dest: &Path, read_only: bool) -> Result<(), RootfsError> {
        let (parent, name) = split(dest)?;
        let source_dir = Self::open_dir(source)?;
        let mut args = VolArgsV2 {
            fd: i64::from(source_dir.as_raw_fd()),
            transid: 0,
            flags: if read_only { SUBVOL_RDONLY } else { 0 },
            unused: [0; 4],
            name: name_field(&name).map_err(at("snapshot into", dest))?,
        };
        ioctl(&Self::open_dir(&parent)?, IOC_SNAP_CREATE_V2, &mut args).map_err(at("snapshot into", dest))
    }

    fn delete_subvolume(&self, path: &Path) -> Result<(), RootfsError> {
        let (parent, name) = split(path)?;
        let mut args = VolArgs { fd: 0, name: name_field(&name).map_err(at("delete subvolume", path))? };
        ioctl(&Self::open_dir(&parent)?, IOC_SNAP_DESTROY, &mut args).map_err(at("delete subvolume", path))
    }

    fn limit(&self, path: &Path, bytes: u64) -> Result<(), RootfsError> {
        let mut args = QgroupLimitArgs {
            qgroupid: 0, // the subvolume the descriptor is in
            flags: QGROUP_LIMIT_MAX_EXCL,
            max_rfer: 0,
            max_excl: bytes,
            rsv_rfer: 0,
            rsv_excl: 0,
        };
        ioctl(&Self::open_dir(path)?, IOC_QGROUP_LIMIT, &mut args).map_err(at("limit", path))
    }
}

fn split(path: &Path) -> Result<(PathBuf, String), RootfsError> {
    let parent = path.parent().map(Path::to_owned);
    let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    match (parent, name) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(at("use", path)(io::Error::other("not a path below a directory"))),
    }
}

impl CloneBackend for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn init(&self) -> Result<bool, RootfsError> {
        if self.is_initialised() {
            return Ok(false);
        }
        let base = self.base();
        if base.exists() {
            // An interrupted init: start the base over.
            self.delete_subvolume(&base)?;
        }
        self.create_subvolume(&base)?;
        base::lay_down(&base, &self.host_root).map_err(at("lay down base in", &base))?;
        // Quotas make per-jail disk limits possible; enabling them twice is harmless.
        let mut quota = QuotaCtlArgs { cmd: QUOTA_CTL_ENABLE, status: 0 };
        ioctl(&Self::open_dir(&self.dir)?, IOC_QUOTA_CTL, &mut quota).map_err(at("enable quotas on", &self.dir))?;
        fs::create_dir_all(self.jails()).map_err(at("create", &self.jails()))?;
        // The read-only snapshot appears atomically, complete: it is the "done" mark.
        self.snapshot_of(&base, &self.snapshot(), true)?;
        Ok(true)
    }

    fn is_initialised(&self) -> bool {
        base::is_complete(&self.snapshot())
    }

    fn prepare(&self, slot: &str, _scratch: &Path, disk_limit: u64) -> Result<RootSpec, RootfsError> {
        let root = self.jail_root(slot);
        if root.exists() {
            self.delete_subvolume(&root)?;
        }
        self.snapshot_of(&self.snapshot(), &root, false)?;
        if let Err(e) = self.limit(&root, disk_limit) {
            let _ = self.delete_subvolume(&root);
            return Err(e);
        }
        Ok(RootSpec::Dir { path: root })
    }

    fn release(&self, slot: &str) -> Result<(), RootfsError> {
        let root = self.jail_root(slot);
        if root.exists() { self.delete_subvolume(&root) } else { Ok(()) }
    }

    fn release_blocks(&self) -> bool {
        true
    }

    fn in_use(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.jails()) else {
            return Vec::new();
        };
        entries.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // Values from linux/btrfs.h as computed by the C preprocessor.
        assert_eq!(IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(IOC_SNAP_DESTROY, 0x5000_940f);
        assert_eq!(IOC_SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(IOC_QUOTA_CTL, 0xc010_9428);
        assert_eq!(IOC_QGROUP_LIMIT, 0x8030_942b);
        assert_eq!(size_of::<VolArgs>(), 4096);
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(size_of::<QgroupLimitArgs>(), 48);
    }

    #[test]
    fn names_are_checked() {
        assert!(name_field::<16>("jail-1").is_ok());
        assert!(name_field::<16>("a/b").is_err());
        assert!(name_field::<16>("").is_err());
        assert!(name_field::<4>("toolong").is_err());
    }
}
