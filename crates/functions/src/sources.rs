//! Checked-out sources: one directory per (repository, commit) below the build data's
//! `src/`, extracted once from the repository's clone and kept for the builds of that
//! commit (a dispatcher, per-call programs), bounded in bytes and evicted least recently
//! used first — never while a build uses it.
//!
//! A checkout is attacker input. It is made in a build jail that sees only the clone
//! (read-only) and a fresh directory, after the tree's size has been added up from git's
//! own listing: a tree that would exceed `build_disk_limit` (a few megabytes of history
//! can check out to gigabytes) is refused before anything is written. Symbolic links are
//! checked out as plain files holding their target's text (`core.symlinks=false`), and the
//! result is checked to hold none, so no path in it leads anywhere else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use skyisland_runner::{End, Jails};

use crate::FunctionError;
use crate::toolchain::{Mount, NetworkNeed, Toolchain};

/// Adds up the tree of `$1` (the generator counts `git ls-tree`'s listing: entries and
/// bytes of blobs, a 4 KiB block per entry) and refuses it beyond `$2` bytes (exit 11);
/// else checks it out into `/build/src` without symbolic links and prints "entries bytes".
const CHECKOUT: &str = r#"set -u
commit=$1 limit=$2
"$GIT" --git-dir=/build/repo ls-tree -r -l --full-tree "$commit" > /tmp/tree || exit 10
/build/gen -count-tree "$limit" < /tmp/tree > /tmp/size
status=$?
[ "$status" -eq 0 ] || exit "$status"
GIT_INDEX_FILE=/tmp/index "$GIT" -c core.symlinks=false --git-dir=/build/repo --work-tree=/build/src checkout -q -f "$commit" -- . || exit 10
if [ -n "$(find /build/src -type l -print -quit)" ]; then
    echo "the checkout holds a symbolic link" >&2
    exit 10
fi
cat /tmp/size
"#;
const TOO_LARGE: i32 = 11;

#[derive(Debug)]
struct Source {
    bytes: u64,
    last_used: u64,
    users: usize,
}

/// The kept sources. Cheap to share.
#[derive(Debug)]
pub struct Sources {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
    /// One extraction at a time per source.
    extracting: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Default)]
struct State {
    clock: u64,
    sources: HashMap<String, Source>,
}

/// A source in use by a build: it is not evicted until dropped.
#[derive(Debug)]
pub struct InUse {
    sources: Arc<Sources>,
    name: String,
    pub path: PathBuf,
}

impl Drop for InUse {
    fn drop(&mut self) {
        {
            let mut state = self.sources.lock();
            if let Some(source) = state.sources.get_mut(&self.name) {
                source.users -= 1;
            }
        }
        self.sources.evict();
    }
}

fn size_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.size"))
}

impl Sources {
    /// Opens the kept sources in `dir` (the build data's `src/`): those whose size is
    /// recorded; anything else there is an interrupted extraction and is removed.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Arc<Sources>> {
        let mut state = State::default();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(source) = name.strip_suffix(".size") {
                if !dir.join(source).is_dir() {
                    std::fs::remove_file(entry.path())?;
                }
                continue;
            }
            let recorded = std::fs::read_to_string(size_file(dir, &name)).ok().and_then(|s| s.trim().parse().ok());
            let mtime = entry.metadata().and_then(|m| m.modified()).ok();
            match (recorded, entry.file_type().is_ok_and(|t| t.is_dir())) {
                (Some(bytes), true) => found.push((mtime, name, bytes)),
                _ => {
                    tracing::info!(source = %name, "removing sources whose extraction did not complete");
                    remove(dir, &name)?;
                }
            }
        }
        found.sort();
        for (_, name, bytes) in found {
            state.clock += 1;
            state.sources.insert(name, Source { bytes, last_used: state.clock, users: 0 });
        }
        let sources = Arc::new(Sources {
            dir: dir.to_owned(),
            limit,
            state: Mutex::new(state),
            extracting: tokio::sync::Mutex::default(),
        });
        sources.evict();
        Ok(sources)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes and entries kept, for the health check.
    pub fn usage(&self) -> (u64, usize) {
        let state = self.lock();
        (state.sources.values().map(|s| s.bytes).sum(), state.sources.len())
    }

    /// Marks `name` as used by one more build, if it is there.
    fn take(self: &Arc<Self>, name: &str) -> Option<InUse> {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let source = state.sources.get_mut(name)?;
        source.users += 1;
        source.last_used = clock;
        Some(InUse { sources: Arc::clone(self), name: name.to_owned(), path: self.dir.join(name) })
    }

    /// The sources of `commit` of the repository whose clone is `repo` (host path), checked
    /// out now if they are not kept. The caller holds the repository's lock (shared), so
    /// its clone does not change meanwhile.
    pub async fn get(
        self: &Arc<Self>,
        jails: &Jails,
        toolchain: &Toolchain,
        generator: &Path,
        name: &str,
        repo: &Path,
        commit: &str,
    ) -> Result<InUse, FunctionError> {
        if let Some(found) = self.take(name) {
            return Ok(found);
        }
        let gate = Arc::clone(self.extracting.lock().await.entry(name.to_owned()).or_default());
        let _one = gate.lock().await;
        let result = match self.take(name) {
            Some(found) => Ok(found),
            None => self.extract(jails, toolchain, generator, name, repo, commit).await,
        };
        self.extracting.lock().await.remove(name);
        result
    }

    async fn extract(
        self: &Arc<Self>,
        jails: &Jails,
        toolchain: &Toolchain,
        generator: &Path,
        name: &str,
        repo: &Path,
        commit: &str,
    ) -> Result<InUse, FunctionError> {
        let internal = |what: &str, e: std::io::Error| FunctionError::Internal(format!("{what}: {e}"));
        let temp = format!("src/{name}.new.{:x}", rand::random::<u32>());
        let work = toolchain.fresh_dir(&temp).map_err(|e| internal("preparing a checkout", e))?;
        let limit = toolchain.disk_limit().to_string();
        let report = toolchain
            .run(
                jails,
                format!("check out {commit}"),
                CHECKOUT,
                &[commit, &limit],
                &[
                    Mount::new(repo.to_owned(), "repo", false),
                    Mount::new(work.clone(), "src", true),
                    Mount::new(generator.to_owned(), "gen", false),
                ],
                NetworkNeed::None,
            )
            .await;
        let failed = |e: FunctionError| {
            let _ = std::fs::remove_dir_all(&work);
            Err(e)
        };
        let report = match report {
            Ok(report) => report,
            Err(e) => return failed(e.into()),
        };
        let stderr = crate::tail(&report.stderr, 2000);
        match (report.end, report.status) {
            (End::Exited, status) if status.success() => {}
            (End::Exited, skyisland_jail::ExitStatus::Exited(TOO_LARGE)) => {
                return failed(FunctionError::TooLarge(stderr.trim().to_owned()));
            }
            (End::TimedOut, _) => return failed(FunctionError::BuildTimedOut(toolchain.timeout)),
            (end, status) => {
                return failed(FunctionError::Internal(format!(
                    "checking out {commit} ended with {end:?} {status:?}: {stderr}"
                )));
            }
        }
        let stdout = String::from_utf8_lossy(&report.stdout);
        let bytes: u64 = stdout.split_whitespace().nth(1).and_then(|b| b.parse().ok()).unwrap_or(0);
        let entries: u64 = stdout.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let bytes = bytes + entries * 4096;
        let target = self.dir.join(name);
        let placed = std::fs::rename(&work, &target)
            .and_then(|()| crate::write_atomically(&size_file(&self.dir, name), bytes.to_string().as_bytes()));
        if let Err(e) = placed {
            let _ = remove(&self.dir, name);
            return failed(internal("keeping a checkout", e));
        }
        {
            let mut state = self.lock();
            state.clock += 1;
            let last_used = state.clock;
            state.sources.insert(name.to_owned(), Source { bytes, last_used, users: 0 });
        }
        let found = self.take(name).expect("just inserted");
        self.evict();
        Ok(found)
    }

    /// Removes the least recently used sources no build uses until the rest fit.
    fn evict(&self) {
        let victims: Vec<String> = {
            let mut state = self.lock();
            let mut total: u64 = state.sources.values().map(|s| s.bytes).sum();
            if total <= self.limit {
                return;
            }
            let mut order: Vec<(u64, String)> =
                state.sources.iter().filter(|(_, s)| s.users == 0).map(|(n, s)| (s.last_used, n.clone())).collect();
            order.sort();
            let mut victims = Vec::new();
            for (_, name) in order {
                if total <= self.limit {
                    break;
                }
                if let Some(source) = state.sources.remove(&name) {
                    total -= source.bytes;
                    victims.push(name);
                }
            }
            victims
        };
        for name in victims {
            tracing::info!(source = %name, "evicting checked-out sources");
            if let Err(e) = remove(&self.dir, &name) {
                tracing::warn!(source = %name, error = %e, "removing evicted sources");
            }
        }
    }

    /// Forgets every source whose name starts with `prefix` (`cache_bust`); the caller
    /// holds the repository's lock exclusively, so no build uses them.
    pub fn remove_prefix(&self, prefix: &str) -> std::io::Result<()> {
        let names: Vec<String> = {
            let mut state = self.lock();
            let names: Vec<String> = state.sources.keys().filter(|n| n.starts_with(prefix)).cloned().collect();
            for name in &names {
                state.sources.remove(name);
            }
            names
        };
        for name in names {
            remove(&self.dir, &name)?;
        }
        Ok(())
    }
}

/// Removes a source directory and its recorded size; renamed away first, so that it
/// disappears at once even if removing its files is interrupted.
fn remove(dir: &Path, name: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    let doomed = dir.join(format!("{name}.new.gone-{:x}", rand::random::<u64>()));
    let _ = std::fs::remove_file(size_file(dir, name));
    match std::fs::rename(&path, &doomed) {
        Ok(()) => std::fs::remove_dir_all(&doomed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
