//! Copy-on-write root filesystems: the ZFS snapshot and clone of the original, behind one
//! trait with two backends. `init` lays down the base root filesystem and its read-only
//! snapshot once; `prepare` gives each jail its own writable clone of that snapshot.

mod base;
mod btrfs;
mod overlay;

use std::path::{Path, PathBuf};

pub use base::{BASE_VERSION, lay_down};
pub use btrfs::Btrfs;
pub use overlay::Overlay;

use crate::spec::RootSpec;

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct RootfsError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub(crate) fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError { what, path: path.to_owned(), source }
}

/// A way to give each jail a private, writable clone of one read-only base.
pub trait CloneBackend: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    /// Creates the base root filesystem and its snapshot unless they exist. Idempotent;
    /// returns whether anything was created.
    fn init(&self) -> Result<bool, RootfsError>;
    fn is_initialised(&self) -> bool;
    /// Host-side work before a jail in slot `slot` starts; the result tells the jail's
    /// first process how to mount its root. `scratch` is the slot's own empty directory.
    fn prepare(&self, slot: &str, scratch: &Path, disk_limit: u64) -> Result<RootSpec, RootfsError>;
    /// Undoes `prepare` once the jail's processes are gone. Also reaps what a crashed
    /// owner of the slot left behind, so it must accept a slot with nothing to undo.
    fn release(&self, slot: &str) -> Result<(), RootfsError>;
    /// The slots that have host-side state of this backend right now.
    fn in_use(&self) -> Vec<String>;
    /// Whether `release` does real I/O (an async caller should not run it inline).
    fn release_blocks(&self) -> bool;
}

/// The configured backend.
#[derive(Debug)]
pub enum AnyBackend {
    Overlay(Overlay),
    Btrfs(Btrfs),
}

impl AnyBackend {
    fn inner(&self) -> &dyn CloneBackend {
        match self {
            AnyBackend::Overlay(b) => b,
            AnyBackend::Btrfs(b) => b,
        }
    }
}

impl CloneBackend for AnyBackend {
    fn name(&self) -> &'static str {
        self.inner().name()
    }
    fn init(&self) -> Result<bool, RootfsError> {
        self.inner().init()
    }
    fn is_initialised(&self) -> bool {
        self.inner().is_initialised()
    }
    fn prepare(&self, slot: &str, scratch: &Path, disk_limit: u64) -> Result<RootSpec, RootfsError> {
        self.inner().prepare(slot, scratch, disk_limit)
    }
    fn release(&self, slot: &str) -> Result<(), RootfsError> {
        self.inner().release(slot)
    }
    fn in_use(&self) -> Vec<String> {
        self.inner().in_use()
    }
    fn release_blocks(&self) -> bool {
        self.inner().release_blocks()
    }
}
