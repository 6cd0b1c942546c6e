//! Functions from git repositories: what `POST /api/v1/function` does.
//!
//! A request names a package by import path ([`import_path`]) and a call; the package's
//! runtime (Go, Python, JavaScript, Lua: [`runtimes`]) is named or detected. For Go, the call
//! is Go source ([`call`]); for the others, literals in the language's spelling. The
//! repository is fetched into the repo cache ([`repos`]) inside the build jail, the
//! package's dispatcher — one binary per (repository, commit, package) that calls any
//! exported function with literal arguments given at run time — is built once into the
//! binary cache ([`binaries`]), and the call runs in a fresh execution jail. Calls that
//! are more than a function of literals get a build of their own. Everything that can
//! fail does so with a typed [`FunctionError`]; the HTTP layer picks the status.

pub mod binaries;
pub mod breaker;
pub mod call;
mod gate;
pub mod golang;
pub mod import_path;
pub mod repos;
pub mod results;
pub mod runtimes;
pub mod shared;
pub mod sources;
pub mod toolchain;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use skyisland_config::Config;
use skyisland_jail::{ExitStatus, HostError};
use skyisland_runner::{End, Jails, Output, RunError, RunRequest};
use tokio::sync::OnceCell;

use crate::binaries::{BinaryCache, Built, Entry, Index, Meta};
use crate::breaker::Breakers;
use crate::call::Call;
use crate::golang::GoToolchain;
use crate::import_path::ImportPath;
use crate::repos::Repos;
use crate::results::{Results, Stored};
use crate::runtimes::install::InstallPolicy;
use crate::runtimes::layer::{Interpreter, Interpreters};
use crate::runtimes::{Runtime, ScriptCall};
use crate::shared::Shared;
use crate::toolchain::{Mount, NetworkNeed, Toolchain};
use skyisland_net::{Ip4Network, PoolError};

pub use gate::{Gate, Overloaded};

/// The exit status by which the dispatcher reports an argument the compiler would reject.
const DISPATCH_ARGUMENT_ERROR: i32 = 86;
/// The generator's exit statuses.
const GEN_REFUSED: i32 = 4;
const GEN_BUILD_FAILED: i32 = 5;
/// How much of a failing function's stderr the answer carries.
const STDERR_TAIL: usize = 4096;

/// Why a function call did not produce a result. The HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("{0}")]
    BadRequest(String),
    #[error("package {package} does not export {name}")]
    NotExported { package: String, name: String },
    /// An interpreted function's module or name does not exist (the runner's message).
    #[error("{0}")]
    NotFound(String),
    /// An interpreted function's package does not load: a syntax error.
    #[error("the package does not load: {0}")]
    LoadFailed(String),
    #[error("repository {repo} not found")]
    RepoNotFound { repo: String, detail: String },
    #[error("version {version:?} not found in repository {repo}")]
    VersionNotFound { repo: String, version: String },
    #[error("cloning {repo} failed: {detail}")]
    CloneFailed { repo: String, detail: String },
    #[error("{0}")]
    PackageRefused(String),
    /// The repository's clone or checkout would exceed the build disk limit.
    #[error("{0}")]
    TooLarge(String),
    /// No configured Go toolchain satisfies the module's `go` (or `toolchain`) line.
    #[error("{0}")]
    NoToolchain(String),
    #[error("build failed")]
    BuildFailed { output: String },
    #[error("the build took longer than {0:?}")]
    BuildTimedOut(Duration),
    #[error("{0}")]
    Argument(String),
    #[error("the function failed ({status})")]
    Failed { status: String, stderr: String },
    #[error("the function ran longer than {0:?}")]
    TimedOut(Duration),
    #[error("the function was killed: {limit}")]
    LimitExceeded { limit: String, stderr: String },
    #[error("the function's jail was killed by an administrator")]
    Killed,
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The IPv4 pool has no free address.
    #[error("{0}")]
    NoAddress(String),
    #[error("{0}")]
    Unavailable(String),
    /// The repository's circuit breaker is open.
    #[error(transparent)]
    CircuitOpen(#[from] breaker::Open),
    /// A `cache_bust` dropped the repository's clone while this request was using it.
    /// Requests resolve again (up to four times) before answering it, as 503.
    #[error("the repository's caches were busted while this request was using them; try again")]
    Busted,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for FunctionError {
    fn from(e: std::io::Error) -> Self {
        FunctionError::Internal(e.to_string())
    }
}

impl From<RunError> for FunctionError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Host(HostError::Busy(kind)) => Overloaded { what: format!("{kind} jails") }.into(),
            RunError::ShuttingDown => FunctionError::Unavailable("the server is shutting down".into()),
            RunError::Busy(why) => Overloaded { what: format!("jails ({why})") }.into(),
            RunError::Network(e) => FunctionError::Internal(format!("setting up the jail's network failed: {e}")),
            other => FunctionError::Internal(other.to_string()),
        }
    }
}

/// One function call.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub url: String,
    pub call: String,
    pub version: Option<String>,
    pub cache_bust: bool,
    /// Give the jail an address from the IPv4 pool.
    pub ip4: bool,
    /// Serve from and store in the request cache; `None`: as configured.
    pub cache: Option<bool>,
    /// The package's runtime; `None`: detected from its files.
    pub runtime: Option<Runtime>,
}

/// Whether the request cache answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// From this server's memory or from Redis (computed by this server or another).
    Hit {
        tier: &'static str,
    },
    Miss,
}

/// What [`Functions::build`] built.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub commit: String,
    pub runtime: Runtime,
    /// Whether this built it (false: it was built already).
    pub built: bool,
}

/// Its result.
#[derive(Clone, Debug)]
pub struct Answer {
    /// What the call printed.
    pub data: String,
    /// The commit that ran.
    pub commit: String,
    /// "dispatch" (the package's dispatcher), "build" (a build for this call), or the
    /// runtime of an interpreted function ("python", "node", "lua").
    pub path: &'static str,
    /// Whether this request started a build (requests that waited for another's build
    /// did not).
    pub built: bool,
    /// Time in the execution jail (zero for a cache hit).
    pub run_time: Duration,
    pub cache: CacheUse,
    /// When a cached result was computed (Unix time, ms).
    pub cached_at_ms: Option<u64>,
}

/// The function service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Functions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    jails: Jails,
    network: Option<Arc<Ip4Network>>,
    toolchain: Toolchain,
    repos: Arc<Repos>,
    binaries: Arc<BinaryCache<FunctionError>>,
    generator: OnceCell<Generator>,
    exec_gate: Gate,
    build_gate: Gate,
    results: Arc<Results>,
    shared: Option<Arc<Shared>>,
    breakers: Breakers,
    interpreters: Interpreters,
    /// Installed packages of interpreted functions (directories), per commit.
    artifacts: Arc<BinaryCache<FunctionError>>,
    install: InstallPolicy,
}

/// The generator program, built once per toolchain and generator source.
#[derive(Debug)]
struct Generator {
    /// On the host (bound read-only into each build jail at `/build/gen`).
    path: std::path::PathBuf,
    /// Part of every binary's key: a new generator means new binaries.
    hash: String,
}

/// The generator's sources, embedded.
const GENERATOR: [(&str, &str); 5] = [
    ("go.mod", include_str!("../go/gen/go.mod")),
    ("main.go", include_str!("../go/gen/main.go")),
    ("templates/call_main.go.tmpl", include_str!("../go/gen/templates/call_main.go.tmpl")),
    ("templates/dispatch_main.go.tmpl", include_str!("../go/gen/templates/dispatch_main.go.tmpl")),
    ("templates/funcs.go.tmpl", include_str!("../go/gen/templates/funcs.go.tmpl")),
];

const BUILD_GENERATOR: &str = r#"set -eu
cd "/build/tools/$1"
"$GO" build -trimpath -mod=mod -o "/build/tools/$2.new" .
mv -f "/build/tools/$2.new" "/build/tools/$2"
"#;

/// Runs the generator on the checked-out sources, which writes the main program and
/// builds it into `/build/out/fn`.
const BUILD: &str = r#"set -u
exec /build/gen -root /build/src -repo "$1" -subdir "$2" -goversion "$3" -main "$4" -out /build/out/fn -call "$5"
"#;

/// What the health endpoint says about the caches.
#[derive(Debug, serde::Serialize)]
pub struct CacheStatus {
    pub request_cache_entries: usize,
    pub request_cache_bytes: usize,
    pub binary_cache_entries: usize,
    pub binary_cache_bytes: u64,
    /// Binaries held in memory, ready to execute, and their bytes.
    pub binaries_in_memory: usize,
    pub binary_memory_bytes: u64,
    /// Checked-out sources kept for builds.
    pub source_cache_entries: usize,
    pub source_cache_bytes: u64,
    /// Absent when no Redis is configured.
    pub redis: Option<shared::Status>,
    /// Repositories whose circuit breaker is open.
    pub open_circuits: usize,
}

impl Functions {
    /// Must be called within a Tokio runtime: it starts the cache maintenance tasks.
    pub fn new(
        config: Arc<Config>,
        jails: Jails,
        network: Option<Arc<Ip4Network>>,
    ) -> Result<Functions, FunctionError> {
        let toolchain = Toolchain::discover(&config).map_err(|e| FunctionError::Unavailable(e.to_string()))?;
        let repos = Arc::new(Repos::new(
            toolchain.clone(),
            &config.data_dir.join("repos"),
            config.go.source_cache_size.bytes(),
        )?);
        let binaries = Arc::new(BinaryCache::open(
            &config.data_dir.join("binaries"),
            config.go.binary_cache_size.bytes(),
            config.go.binary_memory.bytes(),
        )?);
        let exec_gate = Gate::new("execution jails", config.jails.max_jails as usize, config.limits.max_queue);
        let build_gate = Gate::new("builds", config.jails.max_builds as usize, config.limits.max_queue);
        let results = Arc::new(Results::new(config.cache.default_expiration.get(), config.cache.max_memory.bytes()));
        let shared = match &config.cache.redis_url {
            Some(url) => Some(Shared::new(url, &config.cache.redis_prefix).map_err(FunctionError::Unavailable)?),
            None => None,
        };
        if let Some(shared) = &shared {
            tokio::spawn(Arc::clone(shared).maintain(Arc::clone(&results), Arc::clone(&repos)));
        }
        tokio::spawn(purge_expired(Arc::downgrade(&results), config.cache.purge_after.get()));
        let breakers = Breakers::new(config.circuit_breaker.failures, config.circuit_breaker.cool_down.get());
        let interpreters = Interpreters::prepare(&config);
        let artifacts = Arc::new(BinaryCache::open(
            &config.data_dir.join("artifacts"),
            config.build.artifact_cache_size.bytes(),
            0,
        )?);
        let install = InstallPolicy::new(&config);
        let inner = Inner {
            config,
            jails,
            network,
            toolchain,
            repos,
            binaries,
            generator: OnceCell::new(),
            exec_gate,
            build_gate,
            results,
            shared,
            breakers,
            interpreters,
            artifacts,
            install,
        };
        Ok(Functions { inner: Arc::new(inner) })
    }

    /// Builds the generator now rather than at the first request.
    pub async fn warm_up(&self) -> Result<(), FunctionError> {
        self.inner.generator().await.map(drop)
    }

    pub fn toolchain(&self) -> &Toolchain {
        &self.inner.toolchain
    }

    /// The interpreted runtimes and their versions (or why each is missing).
    pub fn runtimes(&self) -> Vec<(Runtime, Result<String, String>)> {
        self.inner.interpreters.status()
    }

    /// Work waiting for an execution jail and for a build slot.
    pub fn queued(&self) -> (usize, usize) {
        (self.inner.exec_gate.queued(), self.inner.build_gate.queued())
    }

    /// Bytes and entries in the binary cache.
    pub fn binary_cache_usage(&self) -> (u64, usize) {
        self.inner.binaries.usage()
    }

    pub fn cache_status(&self) -> CacheStatus {
        let (request_cache_entries, request_cache_bytes) = self.inner.results.usage();
        let (binary_cache_bytes, binary_cache_entries) = self.inner.binaries.usage();
        let (binary_memory_bytes, binaries_in_memory) = self.inner.binaries.memory_usage();
        let (source_cache_bytes, source_cache_entries) = self.inner.repos.source_usage();
        CacheStatus {
            request_cache_entries,
            request_cache_bytes,
            binary_cache_entries,
            binary_cache_bytes,
            binaries_in_memory,
            binary_memory_bytes,
            source_cache_entries,
            source_cache_bytes,
            redis: self.inner.shared.as_ref().map(|s| s.status()),
            open_circuits: self.inner.breakers.open_count(),
        }
    }

    /// Checks what can be checked of a request before anything is fetched: its size, url,
    /// call and options. An asynchronous call is refused with this error at once.
    pub fn check(&self, request: &Request) -> Result<(), FunctionError> {
        self.inner.check(request).map(|_| ())
    }

    /// Fetches `version` of the package at `url` (the current commit when `None`) and
    /// builds it (Go) or installs its dependencies (the interpreted runtimes), as a first
    /// call would, so that calls find it built. With `make_current`, the commit becomes
    /// the repository's current one (what calls without a version run), and the
    /// repository's stored results are dropped.
    pub async fn build(
        &self,
        url: &str,
        version: Option<&str>,
        runtime: Option<Runtime>,
        make_current: bool,
    ) -> Result<Prepared, FunctionError> {
        let inner = &self.inner;
        let path = inner.check_url(url)?;
        let admission = inner.breakers.admit(&path.repo)?;
        let clone_url = path.clone_url(&inner.config.git.url_rewrite);
        let repo = inner.repos.repo(&path.repo);
        let mut ok = false;
        let built = inner.build(&path, &repo, &clone_url, version, runtime, &mut ok).await;
        breaker::count(admission, ok, built.as_ref().err());
        let built = built?;
        if make_current {
            inner.repos.make_current(&repo, &built.commit).await?;
            inner.results.bust_repo(&path.repo);
            if let Some(shared) = &inner.shared {
                // The other servers drop their results and forget their current commit:
                // their next call without a version fetches it.
                shared.bust_repo(&path.repo, &repo.key, false).await;
                shared.announce_moved(&path.repo).await;
            }
        }
        Ok(built)
    }

    /// Runs a function call.
    pub async fn call(&self, request: &Request) -> Result<Answer, FunctionError> {
        let inner = &self.inner;
        let (path, calls) = inner.check(request)?;
        let admission = inner.breakers.admit(&path.repo)?;
        let url = path.clone_url(&inner.config.git.url_rewrite);
        let repo = inner.repos.repo(&path.repo);
        if request.cache_bust {
            let full = repo.claim_full_bust(inner.config.cache.bust_interval.get());
            if full {
                inner.repos.bust(&repo).await?;
                inner.binaries.remove_repo(&path.repo);
                inner.jails.retire_prestarted(|l| l.repo == path.repo).await;
                inner.artifacts.remove_repo(&path.repo);
            }
            inner.results.bust_repo(&path.repo);
            if let Some(shared) = &inner.shared {
                shared.bust_repo(&path.repo, &repo.key, full).await;
            }
            metrics::counter!("skyisland_cache_busts_total", "scope" => if full { "full" } else { "results" })
                .increment(1);
        }
        // A `cache_bust` by another request between resolving and building drops what
        // this one resolved: resolve again.
        let mut attempts = 0;
        let mut dispatcher_ok = false;
        let located = loop {
            attempts += 1;
            match inner.locate(request, &path, &calls, &repo, &url, &mut dispatcher_ok).await {
                Err(FunctionError::Busted) if attempts < 5 => {
                    tracing::debug!(repo = %path.repo, attempts, "busted while resolving; resolving again");
                }
                other => break other,
            }
        };
        breaker::count(admission, dispatcher_ok, located.as_ref().err());
        let Located { commit, result_key, entry, argv, input, how, built, interpreter } = match located? {
            Found::Cached(answer) => return Ok(answer),
            Found::Ready(located) => located,
        };
        let network = match &inner.network {
            Some(network) if request.ip4 => Some(network.request(&request.call).map_err(|e| match e {
                PoolError::Exhausted(_) => FunctionError::NoAddress(e.to_string()),
                other => FunctionError::Internal(other.to_string()),
            })?),
            _ => None,
        };
        let (data, run_time) =
            inner.execute(&entry, argv, input, &request.call, network, interpreter.as_deref()).await?;
        if let Some(key) = &result_key {
            let now = results::now_ms();
            let stored = Stored {
                data: data.clone(),
                commit: commit.clone(),
                path: how.to_owned(),
                repo: path.repo.clone(),
                stored_at_ms: now,
                expires_at_ms: now.saturating_add(inner.results.ttl().as_millis() as u64),
            };
            if let Some(shared) = &inner.shared {
                // Awaited (500 ms at most): the other servers find the result from the
                // moment this answer is out.
                shared.put_result(key, &stored, &repo.key).await;
            }
            inner.results.put(key, stored);
        }
        Ok(Answer { data, commit, path: how, built, run_time, cache: CacheUse::Miss, cached_at_ms: None })
    }
}

impl Inner {
    async fn build(
        &self,
        path: &ImportPath,
        repo: &Arc<repos::Repo>,
        url: &str,
        version: Option<&str>,
        runtime: Option<Runtime>,
        ok: &mut bool,
    ) -> Result<Prepared, FunctionError> {
        let commit = self.repos.resolve(&self.jails, repo, url, version).await?;
        let generator = self.generator().await?;
        let runtime = match runtime {
            Some(runtime) => runtime,
            None => self.runtime_of(repo, path, &commit, generator).await?,
        };
        let built = if runtime == Runtime::Go {
            let go = self.toolchain_for(repo, path, &commit, generator).await?;
            self.binary(repo, path, &commit, generator, &go, None).await?.1
        } else {
            let interpreter =
                Arc::clone(self.interpreters.get(runtime).map_err(|e| FunctionError::NoToolchain(e.to_string()))?);
            self.install_package(path, runtime, repo, &commit, generator, &interpreter).await?.1
        };
        *ok = true;
        Ok(Prepared { commit, runtime, built })
    }

    /// A package's import path, refused before anything is fetched when it is not one or
    /// names a local host that is not allowed.
    fn check_url(&self, url: &str) -> Result<ImportPath, FunctionError> {
        let path = ImportPath::parse(url).map_err(|e| FunctionError::BadRequest(e.to_string()))?;
        if path.host_is_local() && !self.toolchain.egress().lists(path.host()) {
            return Err(FunctionError::BadRequest(format!(
                "invalid url {url:?}: the host {} is an address or localhost; only hosts listed in [git] allow_hosts may be",
                path.host()
            )));
        }
        Ok(path)
    }

    fn check(&self, request: &Request) -> Result<(ImportPath, Calls), FunctionError> {
        let max_call = self.config.limits.max_call;
        if request.call.len() as u64 > max_call.bytes() {
            return Err(FunctionError::BadRequest(format!(
                "the call is {} bytes long; the limit is {max_call}",
                request.call.len()
            )));
        }
        let path = self.check_url(&request.url)?;
        if request.ip4 && self.network.is_none() {
            return Err(FunctionError::BadRequest(
                "ip4 was requested, but this server has no IPv4 pool configured ([network.ip4])".into(),
            ));
        }
        let calls = Calls::parse(&request.call, request.runtime)?;
        if request.runtime == Some(Runtime::Go)
            && let Ok(call) = &calls.go
            && !call.is_exported()
        {
            return Err(FunctionError::NotExported { package: path.full.clone(), name: call.name.clone() });
        }
        Ok((path, calls))
    }
}

/// Drops expired results every `every`, for as long as the cache exists.
async fn purge_expired(results: Weak<Results>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(results) = results.upgrade() else { return };
        let purged = results.purge_expired();
        if purged > 0 {
            tracing::debug!(purged, "dropped expired results from the request cache");
        }
    }
}

/// What a call runs, once resolved and built.
struct Located {
    commit: String,
    result_key: Option<String>,
    /// A Go binary, or an interpreted function's installed package (a directory).
    entry: Arc<Entry>,
    argv: Vec<String>,
    /// The call, for programs that read it from stdin (the dispatcher, the runners): these
    /// may be pre-started, as argv then names the function's code but not the call.
    input: Option<Vec<u8>>,
    how: &'static str,
    built: bool,
    /// The interpreter that runs an interpreted function.
    interpreter: Option<Arc<Interpreter>>,
}

/// The request's call, parsed as each runtime it may be for: a call no runtime accepts is
/// refused before anything is fetched.
struct Calls {
    go: Result<Call, String>,
    script: Vec<(Runtime, Result<ScriptCall, String>)>,
}

impl Calls {
    fn parse(text: &str, runtime: Option<Runtime>) -> Result<Calls, FunctionError> {
        let wanted = |r: Runtime| runtime.is_none_or(|want| want == r);
        let go = if wanted(Runtime::Go) {
            call::parse(text).map_err(|e| e.to_string())
        } else {
            Err("not a Go function".into())
        };
        let script: Vec<_> = Runtime::ALL
            .into_iter()
            .filter(|r| wanted(*r))
            .filter_map(|r| Some((r, r.dialect()?)))
            .map(|(r, dialect)| (r, runtimes::literal::parse(text, dialect).map_err(|e| e.to_string())))
            .collect();
        if go.is_ok() || script.iter().any(|(_, c)| c.is_ok()) {
            return Ok(Calls { go, script });
        }
        Err(FunctionError::BadRequest(match runtime {
            Some(Runtime::Go) => go.err().unwrap_or_default(),
            Some(_) => script.into_iter().find_map(|(_, c)| c.err()).unwrap_or_default(),
            None => {
                let mut why = vec![format!("as Go: {}", go.err().unwrap_or_default())];
                why.extend(script.into_iter().filter_map(|(r, c)| Some(format!("as {r}: {}", c.err()?))));
                format!("the call is not acceptable in any runtime ({})", why.join("; "))
            }
        }))
    }

    /// The call for `runtime`, or why it is not one.
    fn go(&self) -> Result<&Call, FunctionError> {
        self.go.as_ref().map_err(|e| FunctionError::BadRequest(format!("{e} (the package is Go)")))
    }

    fn script(&self, runtime: Runtime) -> Result<&ScriptCall, FunctionError> {
        match self.script.iter().find(|(r, _)| *r == runtime) {
            Some((_, Ok(call))) => Ok(call),
            Some((_, Err(e))) => Err(FunctionError::BadRequest(format!("{e} (the package is {runtime})"))),
            None => Err(FunctionError::BadRequest(format!("the call is not for a {runtime} function"))),
        }
    }
}

enum Found {
    /// The result is in a cache: the answer.
    Cached(Answer),
    Ready(Located),
}

impl Inner {
    /// Resolves the version, chooses the toolchain, and finds the stored result or the
    /// binary to run (building it if needed). Sets `dispatcher_ok` once the package's
    /// dispatcher is there.
    async fn locate(
        &self,
        request: &Request,
        path: &ImportPath,
        calls: &Calls,
        repo: &Arc<repos::Repo>,
        url: &str,
        dispatcher_ok: &mut bool,
    ) -> Result<Found, FunctionError> {
        let commit = self.repos.resolve(&self.jails, repo, url, request.version.as_deref()).await?;
        let generator = self.generator().await?;
        let runtime = match request.runtime {
            Some(runtime) => runtime,
            None => self.runtime_of(repo, path, &commit, generator).await?,
        };
        if runtime != Runtime::Go {
            let call = calls.script(runtime)?;
            return self.locate_script(request, path, call, runtime, repo, commit, generator, dispatcher_ok).await;
        }
        let call = calls.go()?;
        if !call.is_exported() {
            return Err(FunctionError::NotExported { package: path.full.clone(), name: call.name.clone() });
        }
        let go = self.toolchain_for(repo, path, &commit, generator).await?;
        let result_key = request.cache.unwrap_or(self.config.cache.request_cache).then(|| {
            binaries::key(&[
                "result",
                &path.repo,
                &commit,
                &path.subdir,
                &go.name,
                if request.ip4 { "ip4" } else { "-" },
                &call.normalized,
            ])
        });
        if let Some(key) = &result_key
            && let Some((stored, tier)) = self.cached_result(key).await
        {
            return Ok(Found::Cached(Answer {
                data: stored.data,
                commit: stored.commit,
                path: if stored.path == "build" { "build" } else { "dispatch" },
                built: false,
                run_time: Duration::ZERO,
                cache: CacheUse::Hit { tier },
                cached_at_ms: Some(stored.stored_at_ms),
            }));
        }
        let (dispatcher, mut built) = self.binary(repo, path, &commit, generator, &go, None).await?;
        *dispatcher_ok = true;
        let index = &dispatcher.index;
        if !index.exports(&call.name) {
            return Err(FunctionError::NotExported { package: index.import_path.clone(), name: call.name.clone() });
        }
        let (entry, input, how) = match &call.literal_args {
            Some(args) if index.dispatchable(&call.name) => {
                (dispatcher, Some(call::dispatch_input(&call.name, args)), "dispatch")
            }
            _ => {
                let (entry, fresh) = self.binary(repo, path, &commit, generator, &go, Some(call)).await?;
                built |= fresh;
                (entry, None, "build")
            }
        };
        let argv = vec!["fn".to_owned()];
        Ok(Found::Ready(Located { commit, result_key, entry, argv, input, how, built, interpreter: None }))
    }

    /// The runtime of the package, detected from its files once per commit and directory.
    async fn runtime_of(
        &self,
        repo: &Arc<repos::Repo>,
        path: &ImportPath,
        commit: &str,
        generator: &Generator,
    ) -> Result<Runtime, FunctionError> {
        if let Some(runtime) = self.repos.detected_runtime(repo, commit, &path.subdir).await {
            return Ok(runtime);
        }
        let detected = {
            let _permit = self.build_gate.enter().await?;
            let _reading = self.repos.hold_commit(repo, commit).await?;
            let sources = self.repos.sources(&self.jails, &generator.path, repo, commit).await?;
            runtimes::detect(&sources.path.join(&path.subdir))
        };
        let runtime = detected.map_err(|e| match e {
            runtimes::Undetected::Several(m) => FunctionError::BadRequest(format!("{}: {m}", path.full)),
            runtimes::Undetected::Nothing(m) => FunctionError::PackageRefused(format!("{}: {m}", path.full)),
        })?;
        self.repos.remember_runtime(repo, commit, &path.subdir, runtime).await?;
        Ok(runtime)
    }

    /// An interpreted function: its stored result, or its installed package (installed now
    /// if needed) and the runner's arguments.
    #[allow(clippy::too_many_arguments)]
    async fn locate_script(
        &self,
        request: &Request,
        path: &ImportPath,
        call: &ScriptCall,
        runtime: Runtime,
        repo: &Arc<repos::Repo>,
        commit: String,
        generator: &Generator,
        installed_ok: &mut bool,
    ) -> Result<Found, FunctionError> {
        let interpreter =
            Arc::clone(self.interpreters.get(runtime).map_err(|e| FunctionError::NoToolchain(e.to_string()))?);
        let spec = call.to_json();
        let result_key = request.cache.unwrap_or(self.config.cache.request_cache).then(|| {
            binaries::key(&[
                "result",
                &path.repo,
                &commit,
                &path.subdir,
                &interpreter.id(),
                if request.ip4 { "ip4" } else { "-" },
                &spec,
            ])
        });
        if let Some(key) = &result_key
            && let Some((stored, tier)) = self.cached_result(key).await
        {
            return Ok(Found::Cached(Answer {
                data: stored.data,
                commit: stored.commit,
                path: runtime.name(),
                built: false,
                run_time: Duration::ZERO,
                cache: CacheUse::Hit { tier },
                cached_at_ms: Some(stored.stored_at_ms),
            }));
        }
        let (entry, built) = self.install_package(path, runtime, repo, &commit, generator, &interpreter).await?;
        *installed_ok = true;
        let package = Path::new(runtimes::install::FN_MOUNT).join("tree").join(&path.subdir);
        let mut argv = vec![interpreter.program_inside.display().to_string()];
        match runtime {
            // Isolated (no environment, no user site), no site module, no bytecode written;
            // UTF-8 from the jail's C.UTF-8 locale.
            Runtime::Python => argv.extend(["-I", "-S", "-B"].map(String::from)),
            Runtime::Node => argv.push("--no-warnings".into()),
            _ => {}
        }
        argv.push(interpreter.runner_inside.display().to_string());
        argv.push(package.display().to_string());
        if runtime == Runtime::Python {
            argv.push(format!("{}/deps", runtimes::install::FN_MOUNT));
        }
        argv.push(call.module_json());
        Ok(Found::Ready(Located {
            commit,
            result_key,
            entry,
            argv,
            input: Some(spec.into_bytes()),
            how: runtime.name(),
            built,
            interpreter: Some(interpreter),
        }))
    }

    /// An interpreted function's package with its dependencies installed (now, if they
    /// were not), and whether this installed it.
    async fn install_package(
        &self,
        path: &ImportPath,
        runtime: Runtime,
        repo: &Arc<repos::Repo>,
        commit: &str,
        generator: &Generator,
        interpreter: &Interpreter,
    ) -> Result<(Arc<Entry>, bool), FunctionError> {
        let key = binaries::key(&[
            "artifact",
            &path.repo,
            commit,
            &path.subdir,
            &interpreter.id(),
            &self.install.fingerprint(runtime),
        ]);
        // An earlier commit's dependencies may serve this one (runtimes::reuse): looked
        // up under this repository, package directory, interpreter and options only.
        let deps_key = binaries::key(&[
            "dependencies",
            &path.repo,
            &path.subdir,
            &interpreter.id(),
            &self.install.fingerprint(runtime),
        ]);
        let job = InstallJob {
            deps_key,
            jails: self.jails.clone(),
            toolchain: self.toolchain.clone(),
            repo: Arc::clone(repo),
            repos: Arc::clone(&self.repos),
            generator: generator.path.clone(),
            path: path.clone(),
            commit: commit.to_owned(),
            key: key.clone(),
            runtime,
            gate: self.build_gate.clone(),
            policy: self.install.clone(),
            shared: self.shared.clone(),
        };
        let (entry, built) = match self.artifacts.get_or_build(&key, move || job.run()).await {
            Ok(found) => found,
            Err(shared) => return Err(shared_error(&shared)),
        };
        if !built {
            metrics::counter!("skyisland_cache_hits_total", "tier" => "artifact").increment(1);
        } else if let Some(shared) = &self.shared {
            publish_package(shared, &entry, &repo.key, self.config.cache.binary_expiration.get());
        }
        Ok((entry, built))
    }

    /// A stored result from memory, or from Redis (then kept in memory too).
    async fn cached_result(&self, key: &str) -> Option<(Stored, &'static str)> {
        if let Some(stored) = self.results.get(key) {
            metrics::counter!("skyisland_cache_hits_total", "tier" => "memory").increment(1);
            return Some((stored, "memory"));
        }
        metrics::counter!("skyisland_cache_misses_total", "tier" => "memory").increment(1);
        let shared = self.shared.as_ref()?;
        match shared.get_result(key).await.filter(|s| !s.expired(results::now_ms())) {
            Some(stored) => {
                metrics::counter!("skyisland_cache_hits_total", "tier" => "redis").increment(1);
                self.results.put(key, stored.clone());
                Some((stored, "redis"))
            }
            None => {
                metrics::counter!("skyisland_cache_misses_total", "tier" => "redis").increment(1);
                None
            }
        }
    }

    async fn generator(&self) -> Result<&Generator, FunctionError> {
        self.generator
            .get_or_try_init(|| async {
                let mut parts: Vec<&str> = vec![self.toolchain.oldest().name.as_str()];
                for (name, text) in GENERATOR {
                    parts.extend([name, text]);
                }
                let hash = binaries::key(&parts);
                let binary = format!("gen-{hash}");
                let path = self.toolchain.host_path(&format!("tools/{binary}"));
                if path.is_file() {
                    return Ok(Generator { path, hash });
                }
                // Written by this process, as root: the build jail only reads them.
                let src = format!("gen-src-{hash}");
                for (name, text) in GENERATOR {
                    let file = self.toolchain.host_path(&format!("tools/{src}/{name}"));
                    std::fs::create_dir_all(file.parent().expect("has a parent"))?;
                    std::fs::write(&file, text)?;
                }
                let tools = self.toolchain.host_path("tools");
                let _permit = self.build_gate.enter().await?;
                let report = self
                    .toolchain
                    .run(
                        &self.jails,
                        "build the generator".into(),
                        BUILD_GENERATOR,
                        &[&src, &binary],
                        &[Mount::new(tools, "tools", true)],
                        NetworkNeed::None,
                    )
                    .await?;
                if !report.status.success() || report.end != End::Exited {
                    return Err(FunctionError::Unavailable(format!(
                        "building Sky Island's Go generator failed: {}",
                        tail(&report.stderr, 2000)
                    )));
                }
                Ok(Generator { path, hash })
            })
            .await
    }

    /// The Go toolchain that builds the package: the one chosen before for this commit and
    /// directory, or the oldest its go.mod allows (read from its checked-out sources).
    async fn toolchain_for(
        &self,
        repo: &Arc<repos::Repo>,
        path: &ImportPath,
        commit: &str,
        generator: &Generator,
    ) -> Result<GoToolchain, FunctionError> {
        let find = |name: &str| self.toolchain.gos.iter().find(|go| go.name == name).cloned();
        // Remembered, and still configured.
        if let Some(go) = self.repos.chosen_toolchain(repo, commit, &path.subdir).await.as_deref().and_then(find) {
            return Ok(go);
        }
        let gomod = {
            let _permit = self.build_gate.enter().await?;
            let _reading = self.repos.hold_commit(repo, commit).await?;
            let sources = self.repos.sources(&self.jails, &generator.path, repo, commit).await?;
            golang::read_gomod(&sources.path, &path.subdir)
                .map_err(|e| FunctionError::PackageRefused(format!("cannot read the package's go.mod: {e}")))?
        };
        let go = golang::choose(&self.toolchain.gos, gomod.as_ref()).map_err(FunctionError::NoToolchain)?.clone();
        self.repos.remember_toolchain(repo, commit, &path.subdir, &go.name).await?;
        Ok(go)
    }

    /// The dispatcher (`call` `None`) or the per-call binary of a package version, from
    /// the cache or built now; true when this request started the build.
    async fn binary(
        &self,
        repo: &Arc<repos::Repo>,
        path: &ImportPath,
        commit: &str,
        generator: &Generator,
        go: &GoToolchain,
        call: Option<&Call>,
    ) -> Result<(Arc<Entry>, bool), FunctionError> {
        let call_text = call.map(|c| c.normalized.clone());
        let key = binaries::key(&[
            "binary",
            &path.repo,
            commit,
            &path.subdir,
            &go.name,
            &generator.hash,
            call_text.as_deref().unwrap_or("dispatch"),
        ]);
        let job = BuildJob {
            jails: self.jails.clone(),
            toolchain: self.toolchain.clone(),
            go: go.clone(),
            repo: Arc::clone(repo),
            repos: Arc::clone(&self.repos),
            generator: generator.path.clone(),
            path: path.clone(),
            commit: commit.to_owned(),
            key: key.clone(),
            call: call_text,
            gate: self.build_gate.clone(),
            shared: self.shared.clone(),
            binary_expiration: self.config.cache.binary_expiration.get(),
        };
        match self.binaries.get_or_build(&key, move || job.run()).await {
            Ok((entry, built)) => {
                if !built {
                    metrics::counter!("skyisland_cache_hits_total", "tier" => "binary").increment(1);
                }
                Ok((entry, built))
            }
            Err(shared) => Err(shared_error(&shared)),
        }
    }

    /// Runs a built function in a fresh execution jail and interprets how it ended.
    async fn execute(
        &self,
        entry: &Entry,
        argv: Vec<String>,
        input: Option<Vec<u8>>,
        label: &str,
        network: Option<Box<dyn skyisland_runner::JailNetwork>>,
        interpreter: Option<&Interpreter>,
    ) -> Result<(String, Duration), FunctionError> {
        let j = &self.config.jails;
        let mut launch = skyisland_runner::machine::exec_launch(&self.config, argv);
        let program = match interpreter {
            None => self.binaries.program(entry),
            Some(interpreter) => {
                // The runtime's jail type: its layer as /usr, the package at /fn.
                launch.binds = vec![
                    skyisland_jail::Bind {
                        source: interpreter.layer.join("usr"),
                        target: "/usr".into(),
                        writable: false,
                    },
                    skyisland_jail::Bind {
                        source: runtimes::install::generation_of(&entry.binary)?,
                        target: runtimes::install::FN_MOUNT.into(),
                        writable: false,
                    },
                ];
                launch.env.push("LANG=C.UTF-8".into());
                interpreter.program()
            }
        }
        .map_err(|e| FunctionError::Internal(format!("loading the program: {e}")))?;
        let _permit = self.exec_gate.enter().await?;
        let request = RunRequest {
            launch,
            label: format!("{} {label}", entry.index.import_path),
            timeout: j.exec_timeout.get(),
            output_limit: j.output_limit.bytes(),
            output: Output::Capture,
            exec: Some(program),
            network,
            // The dispatcher and the runners read their call from stdin, and say there when
            // they are done.
            prestart: input.is_some().then(|| lineage(entry, interpreter.map_or(Runtime::Go, |i| i.runtime))),
            reports_end: input.is_some(),
            input,
        };
        let started = Instant::now();
        let report = self.jails.run(request).await?;
        let run_time = started.elapsed();
        metrics::histogram!("skyisland_function_duration_seconds").record(run_time.as_secs_f64());
        let stderr = tail(&report.stderr, STDERR_TAIL);
        match (report.end, report.status) {
            (End::Exited, ExitStatus::Exited(0)) => {
                Ok((String::from_utf8_lossy(&report.stdout).into_owned(), run_time))
            }
            (End::Exited, ExitStatus::Exited(DISPATCH_ARGUMENT_ERROR))
                if interpreter.is_none() && stderr.starts_with("skyisland-dispatch: ") =>
            {
                Err(FunctionError::Argument(stderr.trim_start_matches("skyisland-dispatch: ").trim().to_owned()))
            }
            (End::Exited, ExitStatus::Exited(code @ (runtimes::RUNNER_NOT_FOUND | runtimes::RUNNER_LOAD_FAILED)))
                if interpreter.is_some() && runner_message(&stderr).is_some() =>
            {
                let message = runner_message(&stderr).unwrap_or_default();
                Err(if code == runtimes::RUNNER_NOT_FOUND {
                    FunctionError::NotFound(message)
                } else {
                    FunctionError::LoadFailed(message)
                })
            }
            (End::Exited, status) => Err(FunctionError::Failed { status: describe(status), stderr }),
            (End::TimedOut, _) => Err(FunctionError::TimedOut(j.exec_timeout.get())),
            (End::MemoryLimit, _) => Err(FunctionError::LimitExceeded {
                limit: format!("memory limit of {} exceeded", j.memory_limit),
                stderr,
            }),
            (End::OutputLimit, _) => Err(FunctionError::LimitExceeded {
                limit: format!("output limit of {} exceeded", j.output_limit),
                stderr,
            }),
            (End::Killed, _) if self.jails.is_closing() => {
                Err(FunctionError::Unavailable("the server shut down before the function finished".into()))
            }
            (End::Killed, _) => Err(FunctionError::Killed),
        }
    }
}

/// Which function a program run for `entry` is, and which version: its binary's (or its
/// install's) cache key, which changes with the commit, the toolchain and the generator.
fn lineage(entry: &Entry, runtime: Runtime) -> skyisland_runner::Lineage {
    let Meta { repo, subdir, .. } = &entry.meta;
    skyisland_runner::Lineage {
        repo: repo.clone(),
        function: format!("{subdir} {}", runtime.name()),
        version: entry.key.clone(),
    }
}

/// Everything one build needs, owned, so it can run as its own task.
struct BuildJob {
    jails: Jails,
    toolchain: Toolchain,
    /// The toolchain that builds it.
    go: GoToolchain,
    repo: Arc<repos::Repo>,
    repos: Arc<Repos>,
    generator: std::path::PathBuf,
    path: ImportPath,
    commit: String,
    key: String,
    call: Option<String>,
    gate: Gate,
    shared: Option<Arc<Shared>>,
    binary_expiration: Duration,
}

/// A binary's description as it travels through Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedInfo {
    index: Index,
    meta: Meta,
}

impl BuildJob {
    async fn run(self) -> Result<Built, FunctionError> {
        metrics::counter!("skyisland_cache_misses_total", "tier" => "binary").increment(1);
        if let Some(built) = self.fetch_shared().await {
            return Ok(built);
        }
        let started = Instant::now();
        let result = self.build().await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(FunctionError::BuildFailed { .. }) => "failed",
            Err(FunctionError::BuildTimedOut(_)) => "timed_out",
            Err(FunctionError::PackageRefused(_)) => "refused",
            Err(FunctionError::TooLarge(_)) => "too_large",
            Err(FunctionError::Overloaded(_)) => "overloaded",
            Err(_) => "error",
        };
        metrics::counter!("skyisland_builds_total", "result" => outcome).increment(1);
        metrics::histogram!("skyisland_build_duration_seconds").record(started.elapsed().as_secs_f64());
        if let (Ok(built), Some(shared)) = (&result, &self.shared) {
            self.publish(shared, built);
        }
        result
    }

    /// The binary another server built, when Redis has it.
    async fn fetch_shared(&self) -> Option<Built> {
        let (SharedInfo { index, meta }, data) = fetch_shared(self.shared.as_ref()?, &self.key, "binary").await?;
        let out = self.toolchain.host_path(&format!("out/{}-{:x}", self.key, rand::random::<u32>()));
        // A new file (never through something the build jail left at that name).
        let written =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&out).and_then(|mut f| f.write_all(&data));
        if let Err(e) = written {
            tracing::warn!(key = %self.key, error = %e, "writing a shared binary failed; building it");
            let _ = std::fs::remove_file(&out);
            return None;
        }
        metrics::counter!("skyisland_cache_hits_total", "tier" => "redis_binary").increment(1);
        tracing::info!(key = %self.key, bytes = data.len(), "using a binary another server built");
        Some(Built { binary: out, index, meta, fetched: true })
    }

    /// Offers a new binary to the other servers, in the background: no request waits
    /// for the upload.
    fn publish(&self, shared: &Arc<Shared>, built: &Built) {
        let info = SharedInfo { index: built.index.clone(), meta: built.meta.clone() };
        let (Ok(info), Ok(data)) = (serde_json::to_vec(&info), std::fs::read(&built.binary)) else { return };
        let (shared, key, repo_key, ttl) =
            (Arc::clone(shared), self.key.clone(), self.repo.key.clone(), self.binary_expiration);
        tokio::spawn(async move { shared.put_binary(&key, &info, &data, &repo_key, ttl).await });
    }

    async fn build(&self) -> Result<Built, FunctionError> {
        let _permit = self.gate.enter().await?;
        // Keep `cache_bust` from removing the sources while they are being built.
        let _reading = self.repos.hold_commit(&self.repo, &self.commit).await?;
        let sources = self.repos.sources(&self.jails, &self.generator, &self.repo, &self.commit).await?;
        let out_rel = format!("out/{}-{:x}", self.key, rand::random::<u32>());
        let out = self
            .toolchain
            .fresh_dir(&out_rel)
            .map_err(|e| FunctionError::Internal(format!("preparing the build's output: {e}")))?;
        let main_dir = format!("skyisland_main_{}", &self.key[..12]);
        let label = match &self.call {
            Some(call) => format!("build {} {call}", self.path.full),
            None => format!("build {} dispatcher", self.path.full),
        };
        tracing::info!(key = %self.key, commit = %self.commit, "{label}");
        let language = self.go.language();
        let report = self
            .toolchain
            .run_with(
                &self.go,
                &self.jails,
                label,
                BUILD,
                &[&self.path.repo, &self.path.subdir, &language, &main_dir, self.call.as_deref().unwrap_or("")],
                &[
                    Mount::new(sources.path.clone(), "src", true),
                    Mount::new(out.clone(), "out", true),
                    Mount::new(self.generator.clone(), "gen", false),
                ],
                NetworkNeed::Build,
            )
            .await;
        let result = match report {
            Err(e) => Err(e.into()),
            Ok(report) => {
                let output = tail(&report.stderr, 64 * 1024);
                match (report.end, report.status) {
                    (End::Exited, ExitStatus::Exited(0)) => {
                        match serde_json::from_slice::<Index>(&report.stdout) {
                            Ok(index) => {
                                // Out of the build's directory, which goes below.
                                let binary = self.toolchain.host_path(&format!("{out_rel}.fn"));
                                std::fs::rename(out.join("fn"), &binary)
                                    .map(|()| Built {
                                        binary,
                                        index,
                                        meta: Meta {
                                            repo: self.path.repo.clone(),
                                            commit: self.commit.clone(),
                                            subdir: self.path.subdir.clone(),
                                            call: self.call.clone(),
                                        },
                                        fetched: false,
                                    })
                                    .map_err(|e| FunctionError::Internal(format!("collecting the built binary: {e}")))
                            }
                            Err(e) => Err(FunctionError::Internal(format!("reading the generator's index: {e}"))),
                        }
                    }
                    (End::TimedOut, _) => Err(FunctionError::BuildTimedOut(self.toolchain.timeout)),
                    (End::Exited, ExitStatus::Exited(GEN_REFUSED)) => {
                        Err(FunctionError::PackageRefused(output.trim().to_owned()))
                    }
                    (End::Exited, ExitStatus::Exited(GEN_BUILD_FAILED)) => {
                        let output = match self.toolchain.module_hint(&output) {
                            Some(hint) => format!("{output}{hint}\n"),
                            None => output,
                        };
                        Err(FunctionError::BuildFailed { output })
                    }
                    (end, status) => {
                        Err(FunctionError::Internal(format!("the build jail ended with {end:?} {status:?}: {output}")))
                    }
                }
            }
        };
        let _ = std::fs::remove_dir_all(&out);
        result
    }
}

/// Everything one install needs, owned, so it can run as its own task.
struct InstallJob {
    jails: Jails,
    toolchain: Toolchain,
    repo: Arc<repos::Repo>,
    repos: Arc<Repos>,
    generator: std::path::PathBuf,
    path: ImportPath,
    commit: String,
    key: String,
    /// Where reusable dependencies of this package are kept, before their fingerprint.
    deps_key: String,
    runtime: Runtime,
    gate: Gate,
    policy: InstallPolicy,
    /// Installed packages travel through Redis as tar archives, as binaries do (see
    /// [`publish_package`]).
    shared: Option<Arc<Shared>>,
}

impl InstallJob {
    async fn run(self) -> Result<Built, FunctionError> {
        metrics::counter!("skyisland_cache_misses_total", "tier" => "artifact").increment(1);
        if let Some(built) = self.fetch_shared().await {
            return Ok(built);
        }
        let started = Instant::now();
        let result = self.install().await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(FunctionError::BuildFailed { .. }) => "failed",
            Err(FunctionError::BuildTimedOut(_)) => "timed_out",
            Err(_) => "error",
        };
        metrics::counter!("skyisland_builds_total", "result" => outcome).increment(1);
        metrics::histogram!("skyisland_build_duration_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    /// The package another server installed, when Redis has it: unpacked into a new
    /// directory (the archive's paths stay inside it, its links are kept as links), given
    /// to root and made a generation of its own, as an install of ours would be.
    async fn fetch_shared(&self) -> Option<Built> {
        let (SharedInfo { index, meta }, data) = fetch_shared(self.shared.as_ref()?, &self.key, "package").await?;
        let out_rel = format!("out/{}-{:x}", self.key, rand::random::<u32>());
        let unpacked = self.toolchain.fresh_dir(&out_rel).and_then(|out| {
            let mut archive = tar::Archive::new(&data[..]);
            archive.set_preserve_permissions(true);
            archive.set_preserve_ownerships(false);
            archive.set_unpack_xattrs(false);
            archive.set_overwrite(false);
            archive.unpack(&out)?;
            runtimes::install::seal(&out)?;
            runtimes::install::generation(&out, &self.toolchain.host_path(&format!("{out_rel}.pkg")))
        });
        match unpacked {
            Ok(package) => {
                metrics::counter!("skyisland_cache_hits_total", "tier" => "redis_artifact").increment(1);
                tracing::info!(key = %self.key, bytes = data.len(), "using a package another server installed");
                Some(Built { binary: package, index, meta, fetched: true })
            }
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "unpacking a shared package failed; installing it");
                let _ = std::fs::remove_dir_all(self.toolchain.host_path(&out_rel));
                let _ = std::fs::remove_dir_all(self.toolchain.host_path(&format!("{out_rel}.pkg")));
                None
            }
        }
    }

    /// Keeps what this install put in place of its dependencies for the next commits
    /// (`runtimes::reuse`); a failure only costs them an install.
    fn keep_dependencies(&self, out: &Path, cache: &Path, name: &str) {
        let installed = match self.runtime {
            Runtime::Python => out.join("deps"),
            _ => out.join("tree").join(&self.path.subdir).join("node_modules"),
        };
        if !installed.is_dir() {
            return;
        }
        if let Err(e) = runtimes::reuse::keep(&installed, cache, name) {
            tracing::warn!(key = %self.key, error = %e, "keeping the installed dependencies for later commits");
        }
    }

    async fn install(&self) -> Result<Built, FunctionError> {
        let _permit = self.gate.enter().await?;
        let _reading = self.repos.hold_commit(&self.repo, &self.commit).await?;
        let sources = self.repos.sources(&self.jails, &self.generator, &self.repo, &self.commit).await?;
        let out_rel = format!("out/{}-{:x}", self.key, rand::random::<u32>());
        let out = self
            .toolchain
            .fresh_dir(&out_rel)
            .map_err(|e| FunctionError::Internal(format!("preparing the install's output: {e}")))?;
        let label = format!("install {} ({})", self.path.full, self.runtime);
        let dir = if self.path.subdir.is_empty() { "." } else { &self.path.subdir };
        let reusable = runtimes::reuse::fingerprint(&sources.path, dir, self.runtime, self.policy.node_scripts)
            .map(|fingerprint| binaries::key(&[&self.deps_key, &fingerprint]));
        // Read here rather than by starting node in the jail (~40 ms).
        let node_deps = match runtimes::reuse::node_dependencies(&sources.path, dir) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "ask",
        };
        let deps_cache = self.toolchain.host_path("dependencies");
        let earlier = reusable.as_ref().map(|name| deps_cache.join(name)).filter(|entry| entry.is_dir());
        tracing::info!(key = %self.key, commit = %self.commit, reused = earlier.is_some(), "{label}");
        let mut mounts = vec![Mount::new(sources.path.clone(), "src", false), Mount::new(out.clone(), "out", true)];
        if let Some(entry) = &earlier {
            runtimes::reuse::touch(entry);
            mounts.push(Mount::new(entry.clone(), "deps-cache", false));
            metrics::counter!("skyisland_cache_hits_total", "tier" => "dependencies").increment(1);
        }
        let report = self
            .toolchain
            .run_install(
                &self.jails,
                label,
                runtimes::install::INSTALL,
                &[dir, self.runtime.name(), node_deps],
                &mounts,
                &self.policy.binds,
                self.policy.env(),
                self.policy.network(self.runtime),
            )
            .await;
        let result = match report {
            Err(e) => Err(e.into()),
            Ok(report) => match (report.end, report.status) {
                (End::Exited, ExitStatus::Exited(0)) => runtimes::install::seal(&out)
                    .inspect(|()| {
                        if let (Some(name), None) = (&reusable, &earlier) {
                            self.keep_dependencies(&out, &deps_cache, name);
                        }
                    })
                    .and_then(|()| {
                        runtimes::install::generation(&out, &self.toolchain.host_path(&format!("{out_rel}.pkg")))
                    })
                    .map(|package| Built {
                        binary: package,
                        index: Index {
                            name: self.runtime.name().to_owned(),
                            import_path: self.path.full.clone(),
                            ..Index::default()
                        },
                        meta: Meta {
                            repo: self.path.repo.clone(),
                            commit: self.commit.clone(),
                            subdir: self.path.subdir.clone(),
                            call: None,
                        },
                        fetched: false,
                    })
                    .map_err(|e| FunctionError::Internal(format!("sealing the installed package: {e}"))),
                (End::TimedOut, _) => Err(FunctionError::BuildTimedOut(self.toolchain.timeout)),
                (End::Exited, _) => {
                    let mut output = repos::redact_locations(&tail(&report.stderr, 64 * 1024));
                    if let Some(hint) = self.policy.offline_hint(self.runtime) {
                        output = format!("{}\n{hint}", output.trim_end());
                    }
                    Err(FunctionError::BuildFailed { output })
                }
                (end, status) => Err(FunctionError::Internal(format!(
                    "the install jail ended with {end:?} {status:?}: {}",
                    tail(&report.stderr, 2000)
                ))),
            },
        };
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&out);
        }
        result
    }
}

/// What another server built (a binary) or installed (a package) under `key`, when Redis
/// has it: its description and its bytes.
async fn fetch_shared(shared: &Shared, key: &str, what: &str) -> Option<(SharedInfo, Vec<u8>)> {
    let (info, data) = shared.get_binary(key).await?;
    match serde_json::from_slice::<SharedInfo>(&info) {
        Ok(info) => Some((info, data)),
        Err(_) => {
            tracing::warn!(%key, "ignoring a shared {what} with an unreadable description");
            None
        }
    }
}

/// Offers a package this server installed to the other servers, in the background, as a
/// tar archive of its generation (read where the artifact cache keeps it).
fn publish_package(shared: &Arc<Shared>, entry: &Entry, repo_key: &str, ttl: Duration) {
    let info = SharedInfo { index: entry.index.clone(), meta: entry.meta.clone() };
    let Ok(info) = serde_json::to_vec(&info) else { return };
    let (shared, key, repo_key, package) =
        (Arc::clone(shared), entry.key.clone(), repo_key.to_owned(), entry.binary.clone());
    tokio::spawn(async move {
        // Archiving reads the whole tree: not on an async worker.
        let archived = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let generation = runtimes::install::generation_of(&package)?;
            let mut archive = tar::Builder::new(Vec::new());
            archive.follow_symlinks(false);
            archive.append_dir_all(".", &generation)?;
            archive.into_inner()
        })
        .await;
        match archived {
            Ok(Ok(data)) => shared.put_binary(&key, &info, &data, &repo_key, ttl).await,
            Ok(Err(e)) => tracing::warn!(key = %key, error = %e, "archiving an installed package for Redis failed"),
            Err(e) => tracing::warn!(key = %key, error = %e, "archiving an installed package for Redis failed"),
        }
    });
}

/// A build's error, for each of the requests that shared it.
fn shared_error(e: &FunctionError) -> FunctionError {
    match e {
        FunctionError::BadRequest(m) => FunctionError::BadRequest(m.clone()),
        FunctionError::PackageRefused(m) => FunctionError::PackageRefused(m.clone()),
        FunctionError::TooLarge(m) => FunctionError::TooLarge(m.clone()),
        FunctionError::NoToolchain(m) => FunctionError::NoToolchain(m.clone()),
        FunctionError::BuildFailed { output } => FunctionError::BuildFailed { output: output.clone() },
        FunctionError::BuildTimedOut(d) => FunctionError::BuildTimedOut(*d),
        FunctionError::Overloaded(o) => FunctionError::Overloaded(o.clone()),
        FunctionError::Unavailable(m) => FunctionError::Unavailable(m.clone()),
        FunctionError::Internal(m) => FunctionError::Internal(m.clone()),
        FunctionError::Busted => FunctionError::Busted,
        FunctionError::NotFound(m) => FunctionError::NotFound(m.clone()),
        FunctionError::LoadFailed(m) => FunctionError::LoadFailed(m.clone()),
        other => FunctionError::Internal(other.to_string()),
    }
}

/// The runner's own message: the last line of stderr, when it is one of the runner's.
fn runner_message(stderr: &str) -> Option<String> {
    let last = stderr.trim_end().lines().last()?;
    last.strip_prefix(runtimes::RUNNER_PREFIX).map(str::to_owned)
}

fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exit status {code}"),
        ExitStatus::Signaled(signal) => format!("killed by signal {signal}"),
    }
}

/// The last `max` bytes of `bytes` as text (where errors usually are).
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]);
    if start > 0 { format!("…{text}") } else { text.into_owned() }
}

/// Writes `data` to `path` so that a crash leaves the old file or the new one, never a
/// part (see [`skyisland_config::atomic`]).
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    skyisland_config::atomic::write(path, data, 0o644)
}
