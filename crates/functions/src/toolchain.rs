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

/// Where the build jail's data appears inside it.
pub const BUILD_MOUNT: &str = "/build";
const SUBDIRS: [&str; 6] = ["repos", "src", "out", "tools", "gocache", "gomodcache"];
/// git's configuration in every build jail (written into the jail's root, read-only).
const GITCONFIG_PATH: &str = "/etc/skyisland-gitconfig";

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("the Go toolchain {0:?} was not found: install golang-go or set go.program")]
    NoGo(PathBuf),
    #[error("`{program} {args}` failed: {message}")]
    Probe { program: String, args: String, message: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// The host's Go and git, and how to run them in the build jail.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `go` as the build jail sees it.
    pub go: PathBuf,
    /// e.g. "go1.19.8".
    pub go_version: String,
    /// e.g. "1.19", for go.mod files written for repositories without one.
    pub go_language: String,
    pub git: PathBuf,
    /// The build jail's data on the host.
    pub build_dir: PathBuf,
    build_uid: u32,
    extra_binds: Vec<Bind>,
    /// Local directories that clone URLs are rewritten to (file://), bound read-only.
    file_roots: Vec<PathBuf>,
    allow_downloads: bool,
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
    /// Finds the toolchain and prepares the build jail's data directory.
    pub fn discover(config: &Config) -> Result<Toolchain, ToolchainError> {
        let go = which(&config.go.program).ok_or_else(|| ToolchainError::NoGo(config.go.program.clone()))?;
        let probe = |args: &[&str]| -> Result<String, ToolchainError> {
            let out = std::process::Command::new(&go)
                .args(args)
                .env("GOTOOLCHAIN", "local")
                .env("GOTELEMETRY", "off")
                .output()
                .map_err(|e| ToolchainError::Probe {
                    program: go.display().to_string(),
                    args: args.join(" "),
                    message: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(ToolchainError::Probe {
                    program: go.display().to_string(),
                    args: args.join(" "),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let go_version = probe(&["env", "GOVERSION"])?;
        let goroot = PathBuf::from(probe(&["env", "GOROOT"])?);
        // "go1.19.8" → "1.19"
        let go_language = go_version.trim_start_matches("go").split('.').take(2).collect::<Vec<_>>().join(".");
        // Anything outside /usr must be bound into the jail at the same path.
        let mut extra_binds = Vec::new();
        for dir in [&goroot] {
            if !dir.starts_with("/usr") {
                extra_binds.push(Bind { source: dir.clone(), target: dir.clone(), writable: false });
            }
        }
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
            go,
            go_version,
            go_language,
            git: config.git.program.clone(),
            build_dir,
            build_uid: j.uid_base,
            extra_binds,
            file_roots: file_roots.into_iter().collect(),
            allow_downloads: config.go.allow_module_downloads,
            egress: Egress::new(config.git.allow_hosts.clone()),
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
    /// (besides Go's caches), with `args` as `$1`...
    pub async fn run(
        &self,
        jails: &Jails,
        label: String,
        script: &str,
        args: &[&str],
        mounts: &[Mount],
        network: NetworkNeed<'_>,
    ) -> Result<RunReport, RunError> {
        let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "skyisland".to_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let mut binds = vec![Bind { source: "/usr".into(), target: "/usr".into(), writable: false }];
        binds.extend(self.extra_binds.iter().cloned());
        let caches = [
            Mount::new(self.host_path("gocache"), "gocache", true),
            Mount::new(self.host_path("gomodcache"), "gomodcache", self.allow_downloads),
        ];
        binds.extend(caches.iter().chain(mounts).map(|m| Bind {
            source: m.host.clone(),
            target: Path::new(BUILD_MOUNT).join(m.inside),
            writable: m.writable,
        }));
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
            NetworkNeed::Build => self.allow_downloads,
            NetworkNeed::None => false,
        };
        let mut env = self.env();
        if egress {
            env.extend(proxy_env());
        }
        let request = RunRequest {
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
        };
        jails.run(request).await
    }

    fn env(&self) -> Vec<String> {
        let b = BUILD_MOUNT;
        let mut env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "HOME=/tmp".to_owned(),
            "TMPDIR=/tmp".to_owned(),
            "LANG=C".to_owned(),
            format!("GO={}", self.go.display()),
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
            "GOFLAGS=-buildvcs=false".to_owned(),
            "GIT_CONFIG_NOSYSTEM=1".to_owned(),
            "GIT_TERMINAL_PROMPT=0".to_owned(),
            "GIT_ASKPASS=/bin/false".to_owned(),
            format!("GIT_CEILING_DIRECTORIES={b}"),
            format!("GIT_CONFIG_GLOBAL={GITCONFIG_PATH}"),
        ];
        if !self.allow_downloads {
            env.extend(["GOPROXY=off".to_owned(), "GOSUMDB=off".to_owned()]);
        }
        env
    }
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
fn which(program: &Path) -> Option<PathBuf> {
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
