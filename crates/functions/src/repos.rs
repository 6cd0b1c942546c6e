//! The repository cache: one bare git repository per repository path in the build jail's
//! data, holding the commits fetched so far (depth 1), and a small state file per
//! repository (kept outside the build jail's reach) saying which commit is "current"
//! (what a request without `version` runs) and what tags and branches resolved to.
//! Both stay until `cache_bust` drops them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use skyisland_runner::{End, Jails};
use tokio::sync::RwLock;

use crate::FunctionError;
use crate::toolchain::{BUILD_MOUNT, NetworkNeed, Toolchain};

/// Fetches one ref (or commit) of `url` into the bare repository `repo` (created if
/// missing) and prints the commit it resolved to.
const FETCH: &str = r#"set -eu
repo=$1 url=$2 ref=$3
if [ ! -d "$repo" ]; then
    rm -rf "$repo.new"
    "$GIT" init -q --bare "$repo.new"
    mv -T "$repo.new" "$repo"
fi
"$GIT" -C "$repo" fetch -q --depth=1 --no-tags "$url" "$ref"
sha=$("$GIT" -C "$repo" rev-parse --verify -q 'FETCH_HEAD^{commit}')
"$GIT" -C "$repo" update-ref "refs/skyisland/$sha" "$sha"
echo "$sha"
"#;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    current: Option<String>,
    refs: BTreeMap<String, String>,
    commits: BTreeSet<String>,
}

/// One repository's lock: resolving and busting take it exclusively, builds share it.
#[derive(Debug)]
pub struct Repo {
    /// host/owner/name
    pub path: String,
    /// Directory name of its clone, sources and state.
    pub key: String,
    pub(crate) state: RwLock<Option<State>>,
}

#[derive(Debug)]
pub struct Repos {
    toolchain: Toolchain,
    state_dir: PathBuf,
    repos: Mutex<HashMap<String, Arc<Repo>>>,
}

/// A `version` that names a commit.
fn is_commit(version: &str) -> bool {
    version.len() == 40 && version.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A `version` that can name a tag or branch (git's ref-name rules, simplified to a
/// safe subset).
fn check_ref(version: &str) -> Result<(), FunctionError> {
    let bad = |why: &str| Err(FunctionError::BadRequest(format!("invalid version {version:?}: {why}")));
    if version.is_empty() || version.len() > 200 {
        return bad("must be a commit sha, tag or branch of 1 to 200 characters");
    }
    if !version.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/+".contains(&b)) {
        return bad("only letters, digits and -._/+ are allowed");
    }
    if version.starts_with(['-', '/', '.'])
        || version.ends_with(['/', '.'])
        || version.contains("..")
        || version.contains("//")
    {
        return bad("not a valid tag or branch name");
    }
    if version.ends_with(".lock") || version.split('/').any(|part| part.starts_with('.')) {
        return bad("not a valid tag or branch name");
    }
    Ok(())
}

impl Repos {
    pub fn new(toolchain: Toolchain, state_dir: &Path) -> std::io::Result<Repos> {
        std::fs::create_dir_all(state_dir)?;
        // State files are written to a temporary name and renamed: one left is a write
        // that never completed.
        for entry in std::fs::read_dir(state_dir)?.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().contains(".tmp-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Repos { toolchain, state_dir: state_dir.to_owned(), repos: Mutex::new(HashMap::new()) })
    }

    pub fn repo(&self, path: &str) -> Arc<Repo> {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(repos.entry(path.to_owned()).or_insert_with(|| {
            Arc::new(Repo {
                path: path.to_owned(),
                key: crate::binaries::key(&["repo", path]),
                state: RwLock::new(None),
            })
        }))
    }

    /// The bare repository, as the build jail sees it.
    pub fn clone_dir(&self, repo: &Repo) -> String {
        format!("{BUILD_MOUNT}/repos/{}", repo.key)
    }

    /// Where the sources of `commit` are extracted, as the build jail sees it.
    pub fn source_dir(&self, repo: &Repo, commit: &str) -> String {
        format!("{BUILD_MOUNT}/src/{}-{commit}", repo.key)
    }

    fn state_file(&self, repo: &Repo) -> PathBuf {
        self.state_dir.join(format!("{}.json", repo.key))
    }

    fn load(&self, repo: &Repo) -> State {
        std::fs::read(self.state_file(repo))
            .ok()
            .and_then(|data| serde_json::from_slice(&data).ok())
            .unwrap_or_default()
    }

    fn save(&self, repo: &Repo, state: &State) -> Result<(), FunctionError> {
        let data = serde_json::to_vec(state).map_err(|e| FunctionError::Internal(e.to_string()))?;
        crate::write_atomically(&self.state_file(repo), &data)
            .map_err(|e| FunctionError::Internal(format!("saving repository state: {e}")))
    }

    /// The commit `version` names (or the current one), fetching it if needed. Holds the
    /// repository's lock while it works, so concurrent requests fetch once.
    pub async fn resolve(
        &self,
        jails: &Jails,
        repo: &Repo,
        url: &str,
        version: Option<&str>,
    ) -> Result<String, FunctionError> {
        if let Some(v) = version.filter(|v| !is_commit(v)) {
            check_ref(v)?;
        }
        let known = |state: &State| match version {
            None => state.current.clone(),
            Some(v) if is_commit(v) => state.commits.contains(v).then(|| v.to_owned()),
            Some(v) => state.refs.get(v).cloned(),
        };
        // Most requests name a version already resolved: a shared lock suffices.
        if let Some(commit) = repo.state.read().await.as_ref().and_then(known) {
            return Ok(commit);
        }
        let mut guard = repo.state.write().await;
        let state = guard.get_or_insert_with(|| self.load(repo));
        if let Some(commit) = known(state) {
            return Ok(commit);
        }
        let refspec = version.unwrap_or("HEAD");
        let commit = self.fetch(jails, repo, url, refspec, version.is_some()).await?;
        if version.is_some_and(is_commit) && Some(commit.as_str()) != version {
            return Err(FunctionError::VersionNotFound { repo: repo.path.clone(), version: refspec.to_owned() });
        }
        state.commits.insert(commit.clone());
        match version {
            None => state.current = Some(commit.clone()),
            Some(v) if !is_commit(v) => {
                state.refs.insert(v.to_owned(), commit.clone());
            }
            Some(_) => {}
        }
        self.save(repo, state)?;
        Ok(commit)
    }

    async fn fetch(
        &self,
        jails: &Jails,
        repo: &Repo,
        url: &str,
        refspec: &str,
        explicit: bool,
    ) -> Result<String, FunctionError> {
        let clone_dir = self.clone_dir(repo);
        let started = std::time::Instant::now();
        let result = self.fetch_in_jail(jails, repo, url, refspec, explicit, &clone_dir).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(FunctionError::RepoNotFound { .. }) => "not_found",
            Err(FunctionError::VersionNotFound { .. }) => "version_not_found",
            Err(_) => "failed",
        };
        metrics::counter!("skyisland_clones_total", "result" => outcome).increment(1);
        metrics::histogram!("skyisland_clone_duration_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn fetch_in_jail(
        &self,
        jails: &Jails,
        repo: &Repo,
        url: &str,
        refspec: &str,
        explicit: bool,
        clone_dir: &str,
    ) -> Result<String, FunctionError> {
        let report = self
            .toolchain
            .run(
                jails,
                format!("fetch {} {refspec}", repo.path),
                FETCH,
                &[clone_dir, url, refspec],
                NetworkNeed::Clone { url },
            )
            .await
            .map_err(|e| FunctionError::Internal(format!("running the build jail: {e}")))?;
        let stderr = crate::tail(&report.stderr, 2000);
        if report.end == End::TimedOut {
            return Err(FunctionError::CloneFailed {
                repo: repo.path.clone(),
                detail: format!("timed out after {:?}", self.toolchain.timeout),
            });
        }
        if !report.status.success() || report.end != End::Exited {
            let lower = stderr.to_lowercase();
            let missing_repo = [
                "does not appear to be a git repository",
                "repository not found",
                "not found",
                "could not read username",
                "terminal prompts disabled",
            ]
            .iter()
            .any(|needle| lower.contains(needle) && !lower.contains("couldn't find remote ref"));
            return Err(if lower.contains("couldn't find remote ref") || (explicit && lower.contains("not our ref")) {
                FunctionError::VersionNotFound { repo: repo.path.clone(), version: refspec.to_owned() }
            } else if missing_repo {
                FunctionError::RepoNotFound { repo: repo.path.clone(), detail: stderr }
            } else {
                FunctionError::CloneFailed { repo: repo.path.clone(), detail: stderr }
            });
        }
        let commit = String::from_utf8_lossy(&report.stdout).trim().to_owned();
        if !is_commit(&commit) {
            return Err(FunctionError::CloneFailed {
                repo: repo.path.clone(),
                detail: format!("unexpected fetch output {commit:?}"),
            });
        }
        Ok(commit)
    }

    /// Forgets the repository: its clone, its extracted sources and its state. Waits for
    /// builds using it to finish first.
    pub async fn bust(&self, repo: &Repo) -> Result<(), FunctionError> {
        let mut guard = repo.state.write().await;
        *guard = Some(State::default());
        let _ = std::fs::remove_file(self.state_file(repo));
        let io = |e: std::io::Error| FunctionError::Internal(format!("removing the cached clone: {e}"));
        remove_tree(&self.toolchain.host_path(&format!("repos/{}", repo.key))).map_err(io)?;
        let src = self.toolchain.host_path("src");
        let prefix = format!("{}-", repo.key);
        for entry in std::fs::read_dir(&src).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_tree(&entry.path()).map_err(io)?;
            }
        }
        Ok(())
    }
}

fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("0123456789ABCDEF0123456789abcdef01234567"));
        for good in ["v1.0.0", "main", "release/2024", "v2+build"] {
            assert!(check_ref(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a..b", "/x", "x/", "x.lock", "a b", "a;rm", "a/.hidden", "HEAD@{1}", "x~1", "x^"] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }
}
