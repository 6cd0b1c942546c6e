//! The build jail and the one place that starts git and the Go toolchain: every clone,
//! extraction and build runs as a shell script in a fresh jail whose root is a clone of
//! the base with the host's /usr (git, Go) read-only, the build jail's persistent data
//! (`<data_dir>/build`) at `/build`, no network unless a remote or the operator needs it,
//! and the build limits. "Long-lived" is the build jail's data: repositories, sources,
//! the Go build cache.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use skyisland_config::Config;
use skyisland_jail::{Bind, Launch, Limits, Network, Program, SlotKind};
use skyisland_runner::{Jails, Output, RunError, RunReport, RunRequest};

/// Where the build jail's data appears inside it.
pub const BUILD_MOUNT: &str = "/build";
const SUBDIRS: [&str; 9] = ["repos", "src", "out", "tools", "gocache", "gomodcache", "gopath", "home", "tmp"];

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
    limits: Limits,
    disk: u64,
    pub timeout: Duration,
    output_limit: u64,
}

impl Toolchain {
    /// Finds the toolchain and prepares the build jail's data directory.
    pub fn discover(config: &Config) -> Result<Toolchain, ToolchainError> {
        let go = which(&config.go.program).ok_or_else(|| ToolchainError::NoGo(config.go.program.clone()))?;
        let probe = |args: &[&str]| -> Result<String, ToolchainError> {
            let out = std::process::Command::new(&go).args(args).env("GOTOOLCHAIN", "local").output().map_err(|e| {
                ToolchainError::Probe {
                    program: go.display().to_string(),
                    args: args.join(" "),
                    message: e.to_string(),
                }
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

    /// The host path of `/build/<rel>`.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.build_dir.join(rel)
    }

    pub fn build_uid(&self) -> u32 {
        self.build_uid
    }

    /// Runs `script` with `sh -c` in a fresh build jail, with `args` as `$1`...
    pub async fn run(
        &self,
        jails: &Jails,
        label: String,
        script: &str,
        args: &[&str],
        network: NetworkNeed<'_>,
    ) -> Result<RunReport, RunError> {
        let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "skyisland".to_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let mut binds = vec![
            Bind { source: "/usr".into(), target: "/usr".into(), writable: false },
            Bind { source: self.build_dir.clone(), target: BUILD_MOUNT.into(), writable: true },
        ];
        binds.extend(self.extra_binds.iter().cloned());
        let network = match network {
            NetworkNeed::Clone { url } if url.starts_with("file://") => {
                binds.extend(self.file_roots.iter().filter(|root| root.is_dir()).map(|root| Bind {
                    source: root.clone(),
                    target: root.clone(),
                    writable: false,
                }));
                Network::None
            }
            NetworkNeed::Clone { .. } => Network::Host,
            NetworkNeed::Build if self.allow_downloads => Network::Host,
            NetworkNeed::Build => Network::None,
        };
        let request = RunRequest {
            launch: Launch {
                kind: SlotKind::Build,
                name: String::new(),
                limits: self.limits,
                disk: self.disk,
                program: Program::Path("/bin/sh".into()),
                argv,
                env: self.env(),
                cwd: format!("{BUILD_MOUNT}/tmp").into(),
                binds,
                network,
                proc_subset_pid: false,
                max_open_files: 4096,
            },
            label,
            timeout: self.timeout,
            output_limit: self.output_limit,
            output: Output::Capture,
            exec: None,
            network: None,
        };
        jails.run(request).await
    }

    fn env(&self) -> Vec<String> {
        let b = BUILD_MOUNT;
        let mut env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            format!("HOME={b}/home"),
            "TMPDIR=/tmp".to_owned(),
            "LANG=C".to_owned(),
            format!("GO={}", self.go.display()),
            format!("GIT={}", self.git.display()),
            format!("GOCACHE={b}/gocache"),
            format!("GOMODCACHE={b}/gomodcache"),
            format!("GOPATH={b}/gopath"),
            "CGO_ENABLED=0".to_owned(),
            "GO111MODULE=on".to_owned(),
            "GOTOOLCHAIN=local".to_owned(),
            "GOFLAGS=-buildvcs=false".to_owned(),
            "GIT_CONFIG_NOSYSTEM=1".to_owned(),
            "GIT_TERMINAL_PROMPT=0".to_owned(),
            "GIT_ASKPASS=/bin/false".to_owned(),
            format!("GIT_CONFIG_GLOBAL={b}/home/gitconfig"),
        ];
        if !self.allow_downloads {
            env.extend(["GOPROXY=off".to_owned(), "GOSUMDB=off".to_owned()]);
        }
        env
    }
}

/// Why a build jail needs (or does not need) the network.
#[derive(Debug, Clone, Copy)]
pub enum NetworkNeed<'a> {
    Clone { url: &'a str },
    Build,
}

/// git configuration of the build jail: no hooks, local clones allowed, repositories
/// owned by the build uid trusted.
const GITCONFIG: &str = "[safe]\n\tdirectory = *\n[protocol \"file\"]\n\tallow = always\n[core]\n\thooksPath = /dev/null\n[advice]\n\tdetachedHead = false\n[credential]\n\thelper =\n";

/// Creates the build jail's data directories, owned by the build uid.
fn prepare_build_dir(dir: &Path, uid: u32) -> Result<(), ToolchainError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| ToolchainError::Io { what, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let owner_changed = std::fs::metadata(dir).map_err(io("inspect", dir))?.uid() != uid;
    for sub in std::iter::once(dir.to_owned()).chain(SUBDIRS.iter().map(|s| dir.join(s))) {
        std::fs::create_dir_all(&sub).map_err(io("create", &sub))?;
        if owner_changed {
            chown_tree(&sub, uid).map_err(io("change the owner of", &sub))?;
        }
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &sub))?;
    }
    let gitconfig = dir.join("home/gitconfig");
    std::fs::write(&gitconfig, GITCONFIG).map_err(io("write", &gitconfig))?;
    // What a crash (or power cut) left half-done: build outputs not yet in the binary
    // cache, sources and clones being extracted or created under temporary names, the
    // generator being built, the builds' temporary files. Never used; removed here.
    for (sub, leftover) in [
        ("out", (|_: &str| true) as fn(&str) -> bool),
        ("tmp", |_| true),
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
    // Sources of the generator, written by this process, must stay ours.
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
