//! The base root filesystem every jail is cloned from: what a static Go binary needs
//! (device nodes, /proc and /tmp mount points, /etc basics, CA certificates, time zones)
//! and mount points for what some jails get from the host (/usr, /build, /fn). Nothing of the
//! host is visible unless a jail binds it.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use rustix::fs::{FileType, Mode, mknodat};

/// Written to `/.skyisland-base`; a base with another version is laid down again.
pub const BASE_VERSION: &str = "skyisland-base 2\n";
pub(crate) const MARKER: &str = ".skyisland-base";

const DIRS: [(&str, u32); 18] = [
    ("dev", 0o755),
    ("dev/shm", 0o1777),
    ("proc", 0o555),
    ("tmp", 0o1777),
    ("etc", 0o755),
    ("etc/ssl", 0o755),
    ("etc/ssl/certs", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/lib", 0o755),
    ("usr/lib64", 0o755),
    ("usr/sbin", 0o755),
    ("usr/share", 0o755),
    ("home", 0o755),
    ("run", 0o755),
    ("var/tmp", 0o1777),
    ("build", 0o755),
    // An interpreted function's installed package.
    ("fn", 0o755),
];

const LINKS: [(&str, &str); 9] = [
    ("bin", "usr/bin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
    ("sbin", "usr/sbin"),
    ("dev/fd", "/proc/self/fd"),
    ("dev/stdin", "/proc/self/fd/0"),
    ("dev/stdout", "/proc/self/fd/1"),
    ("dev/stderr", "/proc/self/fd/2"),
    ("etc/localtime", "/usr/share/zoneinfo/UTC"),
];

/// Character devices (name, major, minor), all world read-write.
const DEVICES: [(&str, u32, u32); 5] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9)];

const FILES: [(&str, &str); 5] = [
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    ("etc/resolv.conf", ""),
    ("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
];

/// Lays the base down into the empty directory `root`, copying CA certificates and time
/// zones from the host's `host_root` (normally `/`) when it has them.
pub fn lay_down(root: &Path, host_root: &Path) -> io::Result<()> {
    for (dir, mode) in DIRS {
        let path = root.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    for (link, target) in LINKS {
        symlink(target, root.join(link))?;
    }
    let dev = fs::File::open(root.join("dev"))?;
    for (name, major, minor) in DEVICES {
        mknodat(&dev, name, FileType::CharacterDevice, Mode::from_raw_mode(0o666), rustix::fs::makedev(major, minor))?;
        // mknod applies the umask; the mode must be exact.
        fs::set_permissions(root.join("dev").join(name), fs::Permissions::from_mode(0o666))?;
    }
    for (file, text) in FILES {
        fs::write(root.join(file), text)?;
    }
    let certs = host_root.join("etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        fs::copy(&certs, root.join("etc/ssl/certs/ca-certificates.crt"))?;
    }
    let zoneinfo = host_root.join("usr/share/zoneinfo");
    if zoneinfo.is_dir() {
        copy_tree(&zoneinfo, &root.join("usr/share/zoneinfo"))?;
    }
    fs::write(root.join(MARKER), BASE_VERSION)
}

/// Whether `root` holds a complete base of the current version.
pub(crate) fn is_complete(root: &Path) -> bool {
    fs::read_to_string(root.join(MARKER)).is_ok_and(|v| v == BASE_VERSION)
}

/// Copies regular files, directories and symlinks (as symlinks).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Removes a partly laid-down base (left by an interrupted `init`).
pub(crate) fn remove_partial(root: &Path) -> io::Result<()> {
    match fs::remove_dir_all(root) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
