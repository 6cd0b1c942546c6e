//! Writing a state file so that a crash leaves the old one or the new one, never a part:
//! a new temporary file (mode `mode`), fsync, rename, fsync of the directory. The server's
//! state files (repository states, the pool's address states, the API keys) are all
//! written through this. It lives here because every crate that keeps state depends on
//! this one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `data`, atomically and durably; a temporary file left by a crash
/// is named `<path>.tmp-<random>` (with the extension replaced), for the caller to remove
/// at start-up.
pub fn write(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp-{:x}", rand_suffix()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A suffix unique enough for a temporary name: the time's nanoseconds and the process.
fn rand_suffix() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_whole_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        super::write(&path, b"one", 0o600).unwrap();
        super::write(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
