//! The default backend: the base directory is the read-only "snapshot" and the lower
//! layer of an overlay whose upper and work directories live in a per-jail tmpfs of the
//! jail's disk limit. The jail's first process mounts both inside its own mount
//! namespace, so they vanish with it: nothing to undo on the host, even after a crash.

use std::fs;
use std::path::{Path, PathBuf};

use super::{CloneBackend, RootfsError, at, base};
use crate::spec::RootSpec;

#[derive(Debug)]
pub struct Overlay {
    base: PathBuf,
    host_root: PathBuf,
}

impl Overlay {
    /// `base` is where the base root filesystem lives (`<data_dir>/base`).
    pub fn new(base: &Path) -> Result<Overlay, RootfsError> {
        // overlayfs takes its layers as a comma- and colon-separated option string.
        if base.to_str().is_none_or(|s| s.contains([',', ':', '\\'])) {
            return Err(at("use", base)(std::io::Error::other(
                "overlayfs paths must be UTF-8 without ',', ':' or '\\'",
            )));
        }
        Ok(Overlay { base: base.to_owned(), host_root: "/".into() })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }
}

impl CloneBackend for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn init(&self) -> Result<bool, RootfsError> {
        if base::is_complete(&self.base) {
            return Ok(false);
        }
        let parent = self.base.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(at("create", parent))?;
        // Lay down under a temporary name and rename into place: a crash never leaves
        // a half-written base under the real name.
        let staging = parent.join(format!(".base.new-{}", std::process::id()));
        base::remove_partial(&staging).map_err(at("remove", &staging))?;
        base::lay_down(&staging, &self.host_root).map_err(at("lay down base in", &staging))?;
        base::remove_partial(&self.base).map_err(at("remove stale base", &self.base))?;
        fs::rename(&staging, &self.base).map_err(at("rename into place", &self.base))?;
        fs::File::open(parent).and_then(|d| d.sync_all()).map_err(at("sync", parent))?;
        Ok(true)
    }

    fn is_initialised(&self) -> bool {
        base::is_complete(&self.base)
    }

    fn prepare(&self, _slot: &str, scratch: &Path, disk_limit: u64) -> Result<RootSpec, RootfsError> {
        if !scratch.is_dir() {
            fs::create_dir_all(scratch).map_err(at("create", scratch))?;
        }
        Ok(RootSpec::Overlay { lower: self.base.clone(), scratch: scratch.to_owned(), size: disk_limit })
    }

    fn release(&self, _slot: &str) -> Result<(), RootfsError> {
        Ok(())
    }

    fn release_blocks(&self) -> bool {
        false
    }

    fn in_use(&self) -> Vec<String> {
        Vec::new()
    }
}
