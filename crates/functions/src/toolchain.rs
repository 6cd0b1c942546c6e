//! The build jail and the one place that starts git and the Go toolchain: every fetch,
//! checkout and build runs as a shell script in a fresh jail whose root is a clone of the
//! base with the host's /usr (git, Go) read-only, and under `/build` only what that one
//! step of that one repository needs:
//!
//! | inside | host (`<data_dir>/build/…`) | for |
//! |---|---|---|
//! | `/build/repo` | `repos/<repo>` | fetch (writable), checkout (read-only) |
//! | `/build/src` | `src/<repo>-<commit>` | checkout and build (writable: the generated main package) |
//! | `/build/out` | `out/<build>` | the build's binary (writable, fresh) |
//! | `/build/gen` | `tools/gen-<hash>` | the generator (read-only) |
//! | `/build/gocache`, `/build/gomodcache` | `gocache`, `gomodcache` | Go's caches, written only by `go` at content-addressed paths |
//!
//! No other repository's clone or sources exist at any path in a build jail, so nothing a
//! repository holds (symbolic links, `replace` directives, `#include` lines) can name them.
//! Each jail has a network namespace of its own: empty, or with only the egress proxy
//! ([`skyisland_net::egress`]) when it fetches over https or downloads modules. Its `/tmp`,
//! `HOME` and `TMPDIR` are its own tmpfs of `build_disk_limit`.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skyisland_config::Config;
use skyisland_jail::{Bind, FileSpec, Launch, Limits, Network, Program, SlotKind};
use skyisland_net::egress::{Egress, proxy_env};
use skyisland_runner::{Jails, Output, RunError, RunReport, RunRequest};

use crate::golang::{self, GoToolchain};

/// Where the build jail's data appears inside it.
pub const BUILD_MOUNT: &str = "/build";
const SUBDIRS: [&str; 6] = ["repos", "src", "out", "tools", "gocache", "gomodcache"];
/// git's configuration in every build jail (written into the jail's root, read-only).
const GITCONFIG_PATH: &str = "/etc/skyisland-gitconfig";

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("{0}")]
    Go(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// The host's Go toolchains and git, and how to run them in the build jail.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The Go toolchains, oldest first (never empty). The oldest builds the generator.
    pub gos: Vec<GoToolchain>,
    pub git: PathBuf,
    /// The build jail's data on the host.
    pub build_dir: PathBuf,
    build_uid: u32,
    extra_binds: Vec<Bind>,
    /// Local directories that clone URLs are rewritten to (file://), bound read-only.
    file_roots: Vec<PathBuf>,
    /// Local module proxy directories (file:// entries of `go.proxy`) and where they are
    /// bound (read-only) in build jails.
    proxy_roots: Vec<(PathBuf, PathBuf)>,
    /// Whether builds need the egress proxy: downloads allowed, or an http(s) module proxy.
    build_network: bool,
    /// Whether builds may add to the module cache (downloads, or a module proxy).
    modcache_writable: bool,
    /// The Go environment of builds that the configuration decides.
    go_env: Vec<String>,
    egress: Arc<Egress>,
    limits: Limits,
    disk: u64,
    pub timeout: Duration,
    output_limit: u64,
}

/// One directory of the build data, and how a build jail sees it.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Below the build data directory on the host.
    pub host: PathBuf,
    /// Below `/build` inside.
    pub inside: &'static str,
    pub writable: bool,
}

impl Mount {
    pub fn new(host: PathBuf, inside: &'static str, writable: bool) -> Mount {
        Mount { host, inside, writable }
    }

    /// The bind mount that puts it below `/build`.
    fn bind(&self) -> Bind {
        Bind { source: self.host.clone(), target: Path::new(BUILD_MOUNT).join(self.inside), writable: self.writable }
    }
}

/// A build jail's argv: `sh -c SCRIPT skyisland ARGS...` (`$1`... in the script).
fn sh_argv(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "skyisland".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// Why a build jail needs (or does not need) the network.
#[derive(Debug, Clone, Copy)]
pub enum NetworkNeed<'a> {
    /// A fetch from `url`: nothing for a local (file://) mirror, the egress proxy otherwise.
    Clone { url: &'a str },
    /// A build: the egress proxy only when the operator allows module downloads.
    Build,
    /// Nothing (a checkout).
    None,
}

impl Toolchain {
    /// Finds the toolchains and prepares the build jail's data directory.
    pub fn discover(config: &Config) -> Result<Toolchain, ToolchainError> {
        let mut gos = golang::discover(&config.go.program, &config.go.toolchains).map_err(ToolchainError::Go)?;
        // Toolchains outside /usr are bound read-only at /build/toolchains/<version>: what
        // a build prints never shows where the operator keeps them.
        let mut extra_binds = Vec::new();
        for go in &mut gos {
            if go.goroot.starts_with("/usr") {
                continue;
            }
            let Ok(in_root) = go.go.strip_prefix(&go.goroot) else {
                return Err(ToolchainError::Go(format!(
                    "{} is not inside its GOROOT {}",
                    go.go.display(),
                    go.goroot.display()
                )));
            };
            go.goroot_inside = Path::new(BUILD_MOUNT).join("toolchains").join(&go.name);
            go.go_inside = go.goroot_inside.join(in_root);
            extra_binds.push(Bind { source: go.goroot.clone(), target: go.goroot_inside.clone(), writable: false });
        }
        // Local module proxies (file:// entries of go.proxy), likewise at /build/goproxy/<n>.
        let mut proxy_roots = Vec::new();
        let proxy = config.go.proxy.as_ref().map(|proxy| {
            let entries: Vec<String> = proxy
                .split_inclusive([',', '|'])
                .map(|entry| {
                    let (value, separator) = match entry.strip_suffix([',', '|']) {
                        Some(value) => (value, &entry[value.len()..]),
                        None => (entry, ""),
                    };
                    match value.strip_prefix("file://") {
                        Some(path) => {
                            let inside = format!("{BUILD_MOUNT}/goproxy/{}", proxy_roots.len());
                            proxy_roots.push((PathBuf::from(path.trim_end_matches('/')), PathBuf::from(&inside)));
                            format!("file://{inside}{separator}")
                        }
                        None => entry.to_owned(),
                    }
                })
                .collect();
            entries.concat()
        });
        let remote_proxy = config
            .go
            .proxy
            .iter()
            .flat_map(|p| p.split([',', '|']))
            .any(|e| e.starts_with("http://") || e.starts_with("https://"));
        let allow_downloads = config.allow_downloads();
        let file_roots: BTreeSet<PathBuf> = config
            .git
            .url_rewrite
            .values()
            .filter_map(|to| to.strip_prefix("file://"))
            .map(|path| PathBuf::from(path.trim_end_matches('/')))
            .filter(|path| path.is_absolute() && path != Path::new("/"))
            .collect();
        let build_dir = config.data_dir.join("build");
        prepare_build_dir(&build_dir, config.jails.uid_base)?;
        let j = &config.jails;
        Ok(Toolchain {
            go_env: go_env(config, proxy.as_deref()),
            gos,
            git: config.git.program.clone(),
            build_dir,
            build_uid: j.uid_base,
            extra_binds,
            file_roots: file_roots.into_iter().collect(),
            proxy_roots,
            build_network: allow_downloads || remote_proxy,
            modcache_writable: allow_downloads || config.go.proxy.is_some(),
            egress: Egress::new(config.git.allow_hosts.clone(), config.download_hosts()),
            limits: Limits {
                memory: j.build_memory_limit.bytes() + j.build_disk_limit.bytes(),
                pids: j.build_pids_limit,
                cpu: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            },
            disk: j.build_disk_limit.bytes(),
            timeout: j.build_timeout.get(),
            output_limit: 4 << 20,
        })
    }

    /// What to add to a build's output that failed for want of a module this server may
    /// not fetch (go says only that it cannot write the module cache).
    pub fn module_hint(&self, output: &str) -> Option<&'static str> {
        (!self.modcache_writable && output.contains("/build/gomodcache") && output.contains("read-only file system"))
            .then_some(
                "Sky Island: this server has no module proxy ([go] proxy) and does not download modules \
                 ([build] allow_downloads): a package whose dependencies are not vendored (go mod vendor) cannot be built here.",
            )
    }

    /// The oldest toolchain: it builds the generator, and repositories without a go.mod.
    pub fn oldest(&self) -> &GoToolchain {
        &self.gos[0]
    }

    /// The host path of `<build data>/<rel>`.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.build_dir.join(rel)
    }

    pub fn build_uid(&self) -> u32 {
        self.build_uid
    }

    /// Bytes a build may check out and write.
    pub fn disk_limit(&self) -> u64 {
        self.disk
    }

    /// The proxy's policy, which also decides which import path hosts are allowed.
    pub fn egress(&self) -> &Arc<Egress> {
        &self.egress
    }

    /// Makes a fresh directory below the build data for one build jail to write, owned by
    /// the build uid (and nothing of a previous one: it is removed first).
    pub fn fresh_dir(&self, rel: &str) -> std::io::Result<PathBuf> {
        let dir = self.host_path(rel);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir(&dir)?;
        own(&dir, self.build_uid)?;
        Ok(dir)
    }

    /// Runs `script` with `sh -c` in a fresh build jail that sees `mounts` below `/build`
    /// (besides Go's caches), with `args` as `$1`..., and `$GO` the oldest toolchain.
    pub async fn run(
        &self,
        jails: &Jails,
        label: String,
        script: &str,
        args: &[&str],
        mounts: &[Mount],
        network: NetworkNeed<'_>,
    ) -> Result<RunReport, RunError> {
        self.run_with(self.oldest(), jails, label, script, args, mounts, network).await
    }

    /// [`Toolchain::run`] with `$GO` the toolchain `go`.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_with(
        &self,
        go: &GoToolchain,
        jails: &Jails,
        label: String,
        script: &str,
        args: &[&str],
        mounts: &[Mount],
        network: NetworkNeed<'_>,
    ) -> Result<RunReport, RunError> {
        let argv = sh_argv(script, args);
        let mut binds = vec![Bind { source: "/usr".into(), target: "/usr".into(), writable: false }];
        binds.extend(self.extra_binds.iter().cloned());
        let caches = [
            Mount::new(self.host_path("gocache"), "gocache", true),
            Mount::new(self.host_path("gomodcache"), "gomodcache", self.modcache_writable),
        ];
        binds.extend(caches.iter().chain(mounts).map(Mount::bind));
        let egress = match network {
            NetworkNeed::Clone { url } if url.starts_with("file://") => {
                binds.extend(self.file_roots.iter().filter(|root| root.is_dir()).map(|root| Bind {
                    source: root.clone(),
                    target: root.clone(),
                    writable: false,
                }));
                false
            }
            NetworkNeed::Clone { .. } => true,
            NetworkNeed::Build => {
                binds.extend(self.proxy_roots.iter().filter(|(root, _)| root.is_dir()).map(|(root, inside)| Bind {
                    source: root.clone(),
                    target: inside.clone(),
                    writable: false,
                }));
                self.build_network
            }
            NetworkNeed::None => false,
        };
        let mut env = self.env(go);
        if egress {
            env.extend(proxy_env());
        }
        jails.run(self.request(label, argv, binds, env, egress)).await
    }

    /// Runs `script` with `sh -c` in a fresh build jail that sees only `mounts` below
    /// `/build` (not Go's caches: what runs here may be a package's own install code),
    /// `binds` read-only, `extra_env` besides the basics, and the egress proxy when `egress`.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_install(
        &self,
        jails: &Jails,
        label: String,
        script: &str,
        args: &[&str],
        mounts: &[Mount],
        binds: &[(PathBuf, PathBuf)],
        extra_env: Vec<String>,
        egress: bool,
    ) -> Result<RunReport, RunError> {
        let argv = sh_argv(script, args);
        let mut all = vec![Bind { source: "/usr".into(), target: "/usr".into(), writable: false }];
        all.extend(mounts.iter().map(Mount::bind));
        all.extend(binds.iter().filter(|(host, _)| host.exists()).map(|(host, inside)| Bind {
            source: host.clone(),
            target: inside.clone(),
            writable: false,
        }));
        let mut env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "HOME=/tmp".to_owned(),
            "TMPDIR=/tmp".to_owned(),
            "LANG=C.UTF-8".to_owned(),
        ];
        env.extend(extra_env);
        if egress {
            env.extend(proxy_env());
        }
        jails.run(self.request(label, argv, all, env, egress)).await
    }

    fn request(
        &self,
        label: String,
        argv: Vec<String>,
        binds: Vec<Bind>,
        env: Vec<String>,
        egress: bool,
    ) -> RunRequest {
        RunRequest {
            launch: Launch {
                kind: SlotKind::Build,
                name: String::new(),
                limits: self.limits,
                disk: self.disk,
                program: Program::Path("/bin/sh".into()),
                argv,
                env,
                cwd: "/tmp".into(),
                binds,
                files: vec![FileSpec { path: GITCONFIG_PATH.into(), contents: GITCONFIG.to_owned() }],
                network: Network::None,
                proc_subset_pid: false,
                max_open_files: 4096,
            },
            network: egress.then(|| self.egress.request(&label)),
            label,
            timeout: self.timeout,
            output_limit: self.output_limit,
            output: Output::Capture,
            exec: None,
            input: None,
            prestart: None,
            reports_end: false,
        }
    }

    fn env(&self, go: &GoToolchain) -> Vec<String> {
        let b = BUILD_MOUNT;
        let mut env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "HOME=/tmp".to_owned(),
            "TMPDIR=/tmp".to_owned(),
            "LANG=C".to_owned(),
            format!("GO={}", go.go_inside.display()),
            format!("GOROOT={}", go.goroot_inside.display()),
            format!("GIT={}", self.git.display()),
            format!("GOCACHE={b}/gocache"),
            format!("GOMODCACHE={b}/gomodcache"),
            "GOPATH=/tmp/gopath".to_owned(),
            "CGO_ENABLED=0".to_owned(),
            "GO111MODULE=on".to_owned(),
            // Only this toolchain, no workspace file of the repository's, no telemetry.
            "GOTOOLCHAIN=local".to_owned(),
            "GOWORK=off".to_owned(),
            "GOTELEMETRY=off".to_owned(),
            "GIT_CONFIG_NOSYSTEM=1".to_owned(),
            "GIT_TERMINAL_PROMPT=0".to_owned(),
            "GIT_ASKPASS=/bin/false".to_owned(),
            format!("GIT_CEILING_DIRECTORIES={b}"),
            format!("GIT_CONFIG_GLOBAL={GITCONFIG_PATH}"),
        ];
        env.extend(self.go_env.iter().cloned());
        env
    }
}

/// The Go environment the configuration decides: where modules come from (a vendor
/// directory needs none of it), whether sums are checked against a database, and what the
/// operator passes through (`go.env`).
fn go_env(config: &Config, proxy: Option<&str>) -> Vec<String> {
    let go = &config.go;
    let mut env = Vec::new();
    match (proxy, config.allow_downloads()) {
        (Some(proxy), _) => env.push(format!("GOPROXY={proxy}")),
        // Go's own default: proxy.golang.org, then the origin.
        (None, true) => {}
        (None, false) => env.push("GOPROXY=off".to_owned()),
    }
    // Without downloads there is no checksum database to ask: go.sum alone is checked.
    if !go.env.contains_key("GOSUMDB") && !config.allow_downloads() {
        env.push("GOSUMDB=off".to_owned());
    }
    let flags = go.env.get("GOFLAGS").map_or(String::new(), |f| format!(" {f}"));
    env.push(format!("GOFLAGS=-buildvcs=false{flags}"));
    env.extend(go.env.iter().filter(|(name, _)| *name != "GOFLAGS").map(|(name, value)| format!("{name}={value}")));
    env
}

/// git configuration of the build jail: no hooks, local clones allowed, repositories
/// owned by the build uid trusted, objects checked as they arrive, packs kept whole,
/// symbolic links checked out as plain files.
const GITCONFIG: &str = "[safe]\n\tdirectory = *\n[protocol \"file\"]\n\tallow = always\n[core]\n\thooksPath = /dev/null\n\tsymlinks = false\n[transfer]\n\tfsckObjects = true\n\tunpackLimit = 1\n[advice]\n\tdetachedHead = false\n[credential]\n\thelper =\n";

/// Gives `path` to the build uid.
fn own(path: &Path, uid: u32) -> std::io::Result<()> {
    rustix::fs::chown(path, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(uid)))?;
    Ok(())
}

/// Creates the build jail's data directories, owned by the build uid.
fn prepare_build_dir(dir: &Path, uid: u32) -> Result<(), ToolchainError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| ToolchainError::Io { what, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    // Only root enters the build data on the host.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))?;
    for sub in SUBDIRS.iter().map(|s| dir.join(s)) {
        std::fs::create_dir_all(&sub).map_err(io("create", &sub))?;
        // Made by someone else, or for another uid range: give it all to the build uid.
        if std::fs::metadata(&sub).map_err(io("inspect", &sub))?.uid() != uid {
            chown_tree(&sub, uid).map_err(io("change the owner of", &sub))?;
        }
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &sub))?;
    }
    // What earlier versions kept here and no longer use.
    for old in ["home", "tmp", "gopath"] {
        let path = dir.join(old);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        }
    }
    // What a crash (or power cut) left half-done: build outputs not yet in the binary
    // cache, sources and clones being extracted or created under temporary names, the
    // generator being built. Never used; removed here.
    for (sub, leftover) in [
        ("out", (|_: &str| true) as fn(&str) -> bool),
        ("src", |name| name.contains(".new.")),
        ("repos", |name| name.ends_with(".new")),
        // (Inside the clones, below: git's lock files and incoming packs.)
        ("tools", |name| name.ends_with(".new")),
    ] {
        let parent = dir.join(sub);
        for entry in std::fs::read_dir(&parent).map_err(io("list", &parent))?.filter_map(Result::ok) {
            if leftover(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing what an interrupted build left");
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(io("remove", &path))?;
            }
        }
    }
    // A git killed in the middle of a fetch leaves its lock files (`shallow.lock`,
    // `*.lock` under refs) and temporary packs; with them every later fetch fails.
    let repos = dir.join("repos");
    for entry in std::fs::read_dir(&repos).map_err(io("list", &repos))?.filter_map(Result::ok) {
        remove_git_leftovers(&entry.path(), 0).map_err(io("clean", &entry.path()))?;
    }
    Ok(())
}

/// Removes, below a bare repository, what a killed git leaves: `*.lock` files, and
/// `tmp_*` packs and `incoming-*` quarantine directories under `objects`.
fn remove_git_leftovers(dir: &Path, depth: usize) -> std::io::Result<()> {
    if depth > 8 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() && name.starts_with("incoming-") {
            tracing::info!(path = %path.display(), "removing what an interrupted fetch left");
            std::fs::remove_dir_all(&path)?;
        } else if kind.is_dir() {
            remove_git_leftovers(&path, depth + 1)?;
        } else if name.ends_with(".lock") || (name.starts_with("tmp_") && dir.ends_with("pack")) {
            tracing::info!(path = %path.display(), "removing what an interrupted fetch left");
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Gives `path` (recursively) to `uid`, for a data directory whose uid range moved.
fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(uid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// The total size of the files below `path` (not following links), for bounds on what
/// builds keep.
pub fn tree_size(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.blocks() * 512);
    }
    let mut total = meta.blocks() * 512;
    for entry in std::fs::read_dir(path)? {
        total += tree_size(&entry?.path())?;
    }
    Ok(total)
}

/// Resolves a program name on PATH (or takes a path as it is), following symlinks.
pub(crate) fn which(program: &Path) -> Option<PathBuf> {
    let found = if program.components().count() > 1 {
        Some(program.to_owned())
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    }?;
    let real = std::fs::canonicalize(found).ok()?;
    real.is_file().then_some(real)
}
