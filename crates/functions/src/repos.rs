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
use crate::sources::{InUse, Sources};
use crate::toolchain::{Mount, NetworkNeed, Toolchain};

/// Fetches one ref (or commit) of `url` into the bare repository at `/build/repo`
/// (initialised if it is empty or half made: the server empties one without a HEAD first,
/// and `git init` again completes one that has a HEAD but lacks another part) and prints
/// the commit it resolved to and the repository's size in KiB. A pack that grew to the
/// file size limit (`$3` bytes, where the kernel stopped it) means a repository too large
/// (exit 11).
///
/// With a fourth argument (a hex prefix, which `$2` is too), a tag or branch of that name
/// wins, as in git; if the remote has none, the commits whose ids start with the prefix
/// are looked up in what was fetched so far, and only if there are none, the remote's
/// whole history (its branches and tags) is fetched and they are looked up again. It
/// prints `candidates`, one commit per line, and the size.
const FETCH: &str = r#"set -eu
repo=/build/repo url=$1 ref=$2 limit=$3 prefix=${4:-}
git() { "$GIT" --git-dir="$repo" "$@"; }
too_large() {
    if [ -n "$(find "$repo" -type f -size +$((limit - 1))c -print -quit)" ]; then
        echo "repository too large: its history takes more than the limit of $limit bytes" >&2
        exit 11
    fi
}
commits() {
    git rev-parse --disambiguate="$prefix" | git cat-file --batch-check='%(objecttype) %(objectname)' |
        while read -r type name; do if [ "$type" = commit ]; then echo "$name"; fi; done
}
# git init writes each file whole (a lock file renamed), but a server killed while it ran
# leaves some of them: running it again makes what is missing.
[ -f "$repo/HEAD" ] && [ -f "$repo/config" ] && [ -d "$repo/objects" ] && [ -d "$repo/refs" ] ||
    "$GIT" init -q --bare "$repo"
if [ -n "$prefix" ]; then
    if err=$(git fetch -q --depth=1 --no-tags "$url" "$ref" 2>&1); then
        prefix=
    else
        case $err in
        *"couldn't find remote ref"*) ;;
        *) printf '%s
' "$err" >&2; too_large; exit 1 ;;
        esac
    fi
fi
if [ -n "$prefix" ]; then
    found=$(commits)
    if [ -z "$found" ]; then
        deepen=; [ ! -f "$repo/shallow" ] || deepen=--unshallow
        git fetch -q $deepen --no-tags "$url" '+refs/heads/*:refs/skyisland-all/heads/*'             '+refs/tags/*:refs/skyisland-all/tags/*' || { too_large; exit 1; }
        found=$(commits)
    fi
    echo candidates
    for sha in $found; do git update-ref "refs/skyisland/$sha" "$sha"; echo "$sha"; done
    du -sk "$repo" | cut -f1
    exit 0
fi
if ! git fetch -q --depth=1 --no-tags "$url" "$ref"; then
    too_large
    exit 1
fi
sha=$(git rev-parse --verify -q 'FETCH_HEAD^{commit}')
git update-ref "refs/skyisland/$sha" "$sha"
echo "$sha"
du -sk "$repo" | cut -f1
"#;

/// How many candidates an ambiguous abbreviated commit's answer names.
const CANDIDATES_SHOWN: usize = 10;

/// FETCH's exit status for a repository over the size limit.
const TOO_LARGE: i32 = 11;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    current: Option<String>,
    refs: BTreeMap<String, String>,
    commits: BTreeSet<String>,
    /// The Go toolchain ("go1.22.5") chosen for a package ("<commit>/<subdir>").
    #[serde(default)]
    toolchains: BTreeMap<String, String>,
    /// The runtime detected for a package ("<commit>/<subdir>").
    #[serde(default)]
    runtimes: BTreeMap<String, crate::runtimes::Runtime>,
}

/// One repository's lock: resolving and busting take it exclusively, builds share it.
#[derive(Debug)]
pub struct Repo {
    /// host/owner/name
    pub path: String,
    /// Directory name of its clone, sources and state.
    pub key: String,
    pub(crate) state: RwLock<Option<State>>,
    /// When a `cache_bust` last dropped the clone and binaries.
    last_full_bust: Mutex<Option<std::time::Instant>>,
}

impl Repo {
    /// Whether a `cache_bust` now may drop the clone and the binaries (and so make the next
    /// call build): at most once per `interval` per repository, so that a loop of busts
    /// cannot keep a server rebuilding. Claims it if so.
    pub fn claim_full_bust(&self, interval: std::time::Duration) -> bool {
        let mut last = self.last_full_bust.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[derive(Debug)]
pub struct Repos {
    toolchain: Toolchain,
    state_dir: PathBuf,
    repos: Mutex<HashMap<String, Arc<Repo>>>,
    sources: Arc<Sources>,
}

/// A `version` that names a commit.
fn is_commit(version: &str) -> bool {
    version.len() == 40 && version.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A `version` that may be an abbreviated commit (4 to 39 hex digits, as git takes them;
/// it may also be a tag or branch, which wins).
fn is_abbreviated(version: &str) -> bool {
    (4..40).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// What a fetch found.
enum Fetched {
    /// The commit a ref (or full commit id) named.
    Commit(String),
    /// The commits an abbreviated id may name.
    Candidates(Vec<String>),
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
    pub fn new(toolchain: Toolchain, state_dir: &Path, source_limit: u64) -> std::io::Result<Repos> {
        std::fs::create_dir_all(state_dir)?;
        // State files are written to a temporary name and renamed: one left is a write
        // that never completed.
        for entry in std::fs::read_dir(state_dir)?.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().contains(".tmp-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        let sources = Sources::open(&toolchain.host_path("src"), source_limit)?;
        Ok(Repos { toolchain, state_dir: state_dir.to_owned(), repos: Mutex::new(HashMap::new()), sources })
    }

    pub fn repo(&self, path: &str) -> Arc<Repo> {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(repos.entry(path.to_owned()).or_insert_with(|| {
            Arc::new(Repo {
                path: path.to_owned(),
                key: crate::binaries::key(&["repo", path]),
                state: RwLock::new(None),
                last_full_bust: Mutex::new(None),
            })
        }))
    }

    /// The bare repository on the host.
    pub fn clone_dir(&self, repo: &Repo) -> PathBuf {
        self.toolchain.host_path(&format!("repos/{}", repo.key))
    }

    /// The checked-out sources of `commit`, extracted now if they are not kept. Call with
    /// the repository's lock held (shared).
    pub async fn sources(
        &self,
        jails: &Jails,
        generator: &Path,
        repo: &Repo,
        commit: &str,
    ) -> Result<InUse, FunctionError> {
        let name = format!("{}-{commit}", repo.key);
        self.sources.get(jails, &self.toolchain, generator, &name, &self.clone_dir(repo), commit).await
    }

    /// Bytes and entries of kept sources.
    pub fn source_usage(&self) -> (u64, usize) {
        self.sources.usage()
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
        let commit = match self.fetch(jails, repo, url, refspec, version.is_some()).await? {
            Fetched::Commit(commit) => commit,
            Fetched::Candidates(candidates) => match candidates.as_slice() {
                [] => {
                    return Err(FunctionError::VersionNotFound {
                        repo: repo.path.clone(),
                        version: refspec.to_owned(),
                    });
                }
                [commit] => commit.clone(),
                _ => {
                    let shown: Vec<&str> = candidates.iter().take(CANDIDATES_SHOWN).map(String::as_str).collect();
                    let more = candidates.len().saturating_sub(CANDIDATES_SHOWN);
                    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                    return Err(FunctionError::BadRequest(format!(
                        "version {refspec:?} is ambiguous in repository {}: it starts {} commits: {}{more}",
                        repo.path,
                        candidates.len(),
                        shown.join(", ")
                    )));
                }
            },
        };
        if version.is_some_and(is_commit) && Some(commit.as_str()) != version {
            return Err(FunctionError::VersionNotFound { repo: repo.path.clone(), version: refspec.to_owned() });
        }
        state.commits.insert(commit.clone());
        match version {
            None => state.current = Some(commit.clone()),
            // Tags, branches and abbreviated commits keep what they resolved to, as tags do,
            // until a `cache_bust`.
            Some(v) if !is_commit(v) => {
                state.refs.insert(v.to_owned(), commit.clone());
            }
            Some(_) => {}
        }
        self.save(repo, state)?;
        Ok(commit)
    }

    /// Makes `commit` (one [`Repos::resolve`] returned) the repository's current commit:
    /// what requests without a version run from now on.
    pub async fn make_current(&self, repo: &Repo, commit: &str) -> Result<(), FunctionError> {
        let mut guard = repo.state.write().await;
        let state = guard.get_or_insert_with(|| self.load(repo));
        state.commits.insert(commit.to_owned());
        state.current = Some(commit.to_owned());
        self.save(repo, state)
    }

    /// Forgets the current commit of repository `path` (another server made a newer one
    /// current): the next request without a version fetches it.
    pub async fn forget_current(&self, path: &str) {
        let repo = self.repo(path);
        let mut guard = repo.state.write().await;
        let state = guard.get_or_insert_with(|| self.load(&repo));
        if state.current.take().is_some()
            && let Err(e) = self.save(&repo, state)
        {
            tracing::warn!(repo = %path, error = %e, "saving a repository's state");
        }
    }

    async fn fetch(
        &self,
        jails: &Jails,
        repo: &Repo,
        url: &str,
        refspec: &str,
        explicit: bool,
    ) -> Result<Fetched, FunctionError> {
        let started = std::time::Instant::now();
        let result = self.fetch_in_jail(jails, repo, url, refspec, explicit).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(FunctionError::RepoNotFound { .. }) => "not_found",
            Err(FunctionError::VersionNotFound { .. }) => "version_not_found",
            Err(FunctionError::TooLarge(_)) => "too_large",
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
    ) -> Result<Fetched, FunctionError> {
        let clone_dir = self.clone_dir(repo);
        // A clone without a HEAD is one whose first fetch was interrupted while git made
        // it: start again from an empty directory.
        if !clone_dir.join("HEAD").is_file() {
            self.toolchain
                .fresh_dir(&format!("repos/{}", repo.key))
                .map_err(|e| FunctionError::Internal(format!("preparing the clone: {e}")))?;
        }
        let limit = self.toolchain.disk_limit().to_string();
        let mut args = vec![url, refspec, &limit];
        if explicit && is_abbreviated(refspec) {
            args.push(refspec);
        }
        let report = self
            .toolchain
            .run(
                jails,
                format!("fetch {} {refspec}", repo.path),
                FETCH,
                &args,
                &[Mount::new(clone_dir.clone(), "repo", true)],
                NetworkNeed::Clone { url },
            )
            .await?;
        let raw = crate::tail(&report.stderr, 2000);
        let stderr = redact_locations(&raw);
        if report.end == End::TimedOut {
            return Err(FunctionError::CloneFailed {
                repo: repo.path.clone(),
                detail: format!("timed out after {:?}", self.toolchain.timeout),
            });
        }
        if report.end == End::Exited && report.status == skyisland_jail::ExitStatus::Exited(TOO_LARGE) {
            // Nothing of it stays: the next request starts from nothing.
            let _ = remove_tree(&clone_dir);
            let reason =
                stderr.lines().find(|l| l.starts_with("repository too large")).unwrap_or("repository too large");
            return Err(FunctionError::TooLarge(format!("{reason} ({})", repo.path)));
        }
        if !report.status.success() || report.end != End::Exited {
            let lower = raw.to_lowercase();
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
        let stdout = String::from_utf8_lossy(&report.stdout);
        let mut lines: Vec<&str> = stdout.lines().map(str::trim).collect();
        let kib: u64 = lines.pop().and_then(|l| l.parse().ok()).unwrap_or(u64::MAX / 1024);
        if kib.saturating_mul(1024) > self.toolchain.disk_limit() {
            // Nothing of it stays: the next request starts from nothing.
            let _ = remove_tree(&clone_dir);
            return Err(FunctionError::TooLarge(format!(
                "repository too large: the clone of {} takes {} KiB; the limit is {} bytes",
                repo.path,
                kib,
                self.toolchain.disk_limit()
            )));
        }
        let unexpected = || FunctionError::CloneFailed {
            repo: repo.path.clone(),
            detail: format!("unexpected fetch output {stdout:?}"),
        };
        match lines.as_slice() {
            ["candidates", candidates @ ..] if candidates.iter().all(|c| is_commit(c)) => {
                Ok(Fetched::Candidates(candidates.iter().map(|c| (*c).to_owned()).collect()))
            }
            [commit] if is_commit(commit) => Ok(Fetched::Commit((*commit).to_owned())),
            _ => Err(unexpected()),
        }
    }

    /// The repository's lock, shared, for work on `commit`'s sources (checking out,
    /// building): a `cache_bust` waits for it. [`FunctionError::Busted`] when a bust has
    /// dropped the clone since the commit was resolved: the caller resolves again.
    pub(crate) async fn hold_commit<'a>(
        &self,
        repo: &'a Repo,
        commit: &str,
    ) -> Result<tokio::sync::RwLockReadGuard<'a, Option<State>>, FunctionError> {
        let guard = repo.state.read().await;
        if guard.as_ref().is_some_and(|state| state.commits.contains(commit)) {
            Ok(guard)
        } else {
            Err(FunctionError::Busted)
        }
    }

    /// The toolchain chosen before for the package in `subdir` at `commit`, if any.
    pub async fn chosen_toolchain(&self, repo: &Repo, commit: &str, subdir: &str) -> Option<String> {
        let key = format!("{commit}/{subdir}");
        repo.state.read().await.as_ref().and_then(|state| state.toolchains.get(&key).cloned())
    }

    /// Remembers the toolchain chosen for the package in `subdir` at `commit`.
    pub async fn remember_toolchain(
        &self,
        repo: &Repo,
        commit: &str,
        subdir: &str,
        name: &str,
    ) -> Result<(), FunctionError> {
        let mut guard = repo.state.write().await;
        let state = guard.get_or_insert_with(|| self.load(repo));
        state.toolchains.insert(format!("{commit}/{subdir}"), name.to_owned());
        self.save(repo, state)
    }

    /// The runtime detected before for the package in `subdir` at `commit`, if any.
    pub async fn detected_runtime(&self, repo: &Repo, commit: &str, subdir: &str) -> Option<crate::runtimes::Runtime> {
        let key = format!("{commit}/{subdir}");
        repo.state.read().await.as_ref().and_then(|state| state.runtimes.get(&key).copied())
    }

    /// Remembers the runtime detected for the package in `subdir` at `commit`.
    pub async fn remember_runtime(
        &self,
        repo: &Repo,
        commit: &str,
        subdir: &str,
        runtime: crate::runtimes::Runtime,
    ) -> Result<(), FunctionError> {
        let mut guard = repo.state.write().await;
        let state = guard.get_or_insert_with(|| self.load(repo));
        state.runtimes.insert(format!("{commit}/{subdir}"), runtime);
        self.save(repo, state)
    }

    /// Forgets the repository: its clone, its extracted sources and its state. Waits for
    /// builds using it to finish first.
    pub async fn bust(&self, repo: &Repo) -> Result<(), FunctionError> {
        let mut guard = repo.state.write().await;
        *guard = Some(State::default());
        let _ = std::fs::remove_file(self.state_file(repo));
        let io = |e: std::io::Error| FunctionError::Internal(format!("removing the cached clone: {e}"));
        remove_tree(&self.clone_dir(repo)).map_err(io)?;
        self.sources.remove_prefix(&format!("{}-", repo.key)).map_err(io)
    }
}

/// The text with local paths and URLs replaced by `<local>` and `<remote>`: what error
/// bodies may show of git's messages (the mirror an import path was rewritten to, the
/// build data) and of internal errors. An answer never shows where things are.
pub fn redact_locations(stderr: &str) -> String {
    stderr
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|word| {
                    let core = word
                        .trim_start_matches(['\'', '"', '(', '<'])
                        .trim_end_matches(['\'', '"', ':', ',', '.', ')', '>']);
                    if core.starts_with("file://") || (core.starts_with('/') && core.len() > 1) {
                        word.replacen(core, "<local>", 1)
                    } else if core.contains("://") {
                        // Where the import path was fetched from, after the operator's
                        // rewrites (a mirror, an internal host): not the caller's business.
                        word.replacen(core, "<remote>", 1)
                    } else {
                        word.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
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
    fn git_errors_name_no_local_path() {
        let shown = redact_locations(
            "fatal: '/srv/git/example.test/a/b.git' does not appear to be a git repository\nfatal: couldn't find remote ref v9",
        );
        assert_eq!(
            shown,
            "fatal: '<local>' does not appear to be a git repository\nfatal: couldn't find remote ref v9"
        );
        assert_eq!(
            redact_locations("fatal: unable to access file:///x/y.git/: no"),
            "fatal: unable to access <local>: no"
        );
        assert_eq!(
            redact_locations("fatal: repository 'http://127.0.0.1:8080/mirror/a.git/' not found"),
            "fatal: repository '<remote>' not found"
        );
        assert_eq!(
            redact_locations("remote: Repository not found. (https://user@mirror.internal/x)"),
            "remote: Repository not found. (<remote>)"
        );
    }

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
