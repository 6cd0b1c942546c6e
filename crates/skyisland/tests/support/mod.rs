//! Shared by the integration tests: a sandbox per test (its own data and run directories,
//! uid range and cgroup parent), the real `skyisland` binary as a server or a command,
//! git repositories made from fixtures, and a census of what a sandbox holds on the host,
//! for leak checks.
#![allow(dead_code)]

pub mod mixed;

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Execution slots per test server.
pub const MAX_JAILS: u32 = 8;

/// Whether root-only tests can run: they are skipped (with a note) outside CI when not
/// root, and fail in CI, where they must never be skipped.
pub fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root, and CI must not skip it");
    }
    eprintln!("skipping {test}: needs root");
    false
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skyisland"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Scratch space shared by the tests of one build (compiled helpers, a warm Go cache).
fn scratch() -> PathBuf {
    let dir = workspace().join("target/skyisland-test");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// One test's own corner of the host.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub uid_base: u32,
    pub cgroup_parent: String,
    /// More keys for the `[jails]` table.
    pub jails_config: String,
    /// More tables at the end of the configuration.
    pub extra_config: String,
    /// Top-level keys at the start of the configuration.
    pub top_config: String,
    /// More keys for the `[git]` table.
    pub git_config: String,
    /// Serve another sandbox's git repositories (two servers, one set of repositories).
    pub shared_git_root: Option<PathBuf>,
    /// Share another sandbox's run directory (and so its jail slots): several servers on
    /// one host. Set `uid_base` and `cgroup_parent` alike too.
    pub shared_run_dir: Option<PathBuf>,
}

static SANDBOXES: AtomicU32 = AtomicU32::new(0);

impl Sandbox {
    pub fn new() -> Sandbox {
        let n = SANDBOXES.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::Builder::new().prefix("skyisland-test-").tempdir().unwrap();
        Sandbox {
            dir,
            // Distinct per test: the census can tell this test's processes apart.
            uid_base: 3_000_000 + ((pid % 4096) * 64 + n) * 32,
            cgroup_parent: format!("skyisland-test-{pid}-{n}"),
            jails_config: String::new(),
            extra_config: String::new(),
            top_config: String::new(),
            git_config: String::new(),
            shared_git_root: None,
            shared_run_dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.shared_run_dir.clone().unwrap_or_else(|| self.path().join("run"))
    }

    /// Makes this sandbox another server on `other`'s host: the same run directory, uids,
    /// cgroups and repositories.
    pub fn beside(other: &Sandbox) -> Sandbox {
        let mut sandbox = Sandbox::new();
        sandbox.uid_base = other.uid_base;
        sandbox.cgroup_parent = other.cgroup_parent.clone();
        sandbox.shared_run_dir = Some(other.run_dir());
        sandbox.shared_git_root = Some(other.git_root());
        sandbox
    }

    pub fn git_root(&self) -> PathBuf {
        self.shared_git_root.clone().unwrap_or_else(|| self.path().join("git"))
    }

    /// Writes the configuration for this sandbox (plus `extra_config`) and returns its path.
    pub fn config(&self) -> PathBuf {
        let path = self.path().join("skyisland.toml");
        let text = format!(
            r#"listen = "127.0.0.1:0"
{top}
data_dir = "{data}"
run_dir = "{run}"
[admin]
token = "{ADMIN_TOKEN}"
[jails]
max_jails = {MAX_JAILS}
uid_base = {uid}
build_timeout = "120s"
{prestart_idle}
{jails}
[cgroup]
parent = "{cgroup}"
[git]
{git_keys}
[git.url_rewrite]
"https://example.test/" = "file://{git}/example.test/"
{extra}
"#,
            data = self.data_dir().display(),
            run = self.run_dir().display(),
            uid = self.uid_base,
            cgroup = self.cgroup_parent,
            git = self.git_root().display(),
            jails = self.jails_config,
            // Pre-started jails go soon after the last call, so that a test finds its
            // server at rest (see mixed::settle) within seconds; unless it sets its own.
            prestart_idle = if self.jails_config.contains("prestart_idle") { "" } else { "prestart_idle = \"2s\"" },
            extra = self.extra_config,
            top = self.top_config,
            git_keys = self.git_config,
        );
        fs::write(&path, text).unwrap();
        path
    }

    /// `skyisland jail run` with this sandbox's configuration.
    pub fn jail_run(&self, flags: &[&str], program: &[&str]) -> Output {
        self.jail_command("run").args(flags).arg("--").args(program).output().unwrap()
    }

    /// `skyisland jail clean` with this sandbox's configuration.
    pub fn jail_clean(&self) -> Output {
        self.jail_command("clean").output().unwrap()
    }

    /// `skyisland jail SUBCOMMAND --config <this sandbox's>`, to be completed.
    pub fn jail_command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["jail", subcommand, "--config"]).arg(self.config());
        cmd
    }

    /// Fails unless, after `jail run`s have finished, nothing runs and nothing is mounted,
    /// and what stays is only slots left ready for the next run (cgroups without a
    /// process, empty scratch directories); then `skyisland jail clean` must leave the
    /// sandbox holding nothing.
    pub fn assert_clean_after_jail_run(&self) {
        let census = self.census();
        // A slot's network namespace, bound on `<run_dir>/slots/<slot>.netns`, may stay.
        let slots = self.run_dir().join("slots");
        let kept = |m: &String| Path::new(m).parent() == Some(&slots) && m.ends_with(".netns");
        assert!(
            census.mounts.iter().all(kept) && census.processes.is_empty(),
            "jail run left things behind: {census:?}"
        );
        if let Some(cgroups) = self.cgroups() {
            for slot in cgroups.list() {
                assert_eq!(cgroups.procs(&slot).unwrap(), Vec::<i32>::new(), "slot {slot} kept with processes");
            }
        }
        for name in &census.scratch {
            let dir = self.run_dir().join("jails").join(name);
            assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "{} kept with contents", dir.display());
        }
        let out = self.jail_clean();
        assert!(out.status.success(), "jail clean: {}", String::from_utf8_lossy(&out.stderr));
        self.assert_clean();
    }

    /// What this sandbox holds on the host right now.
    pub fn census(&self) -> Census {
        let root = self.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
            .filter(|mount_point| mount_point.starts_with(&root))
            .collect();
        // The server's own code reads the hierarchy, v1 or v2, as it detects it.
        let mut cgroups = BTreeSet::new();
        if let Some(found) = self.cgroups() {
            cgroups.extend(found.list());
            if found.parent_exists() {
                cgroups.insert(format!("the parent {}", self.cgroup_parent));
            }
        }
        let uids = self.uid_base..=self.uid_base + MAX_JAILS + 1;
        let mut processes = BTreeSet::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok());
            if uid.is_some_and(|u| uids.contains(&u)) {
                processes.insert(pid);
            }
        }
        let scratch = fs::read_dir(self.run_dir().join("jails"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        Census { mounts, cgroups, processes, scratch }
    }

    /// The sandbox's slot cgroups, through the server's own `Cgroups` (v1 or v2 as the
    /// host has them).
    pub fn cgroups(&self) -> Option<skyisland_jail::Cgroups> {
        skyisland_jail::Cgroups::new(Path::new("/sys/fs/cgroup"), None, &self.cgroup_parent).ok()
    }

    /// Fails unless the sandbox holds nothing on the host (after its server stopped or
    /// its `jail run` finished).
    pub fn assert_clean(&self) {
        let census = self.census();
        assert_eq!(census, Census::default(), "the sandbox left things behind");
    }
}

impl Drop for Sandbox {
    /// A failed test may have killed its server mid-flight: take its jails' cgroups (the
    /// only thing outside the sandbox's directory) with it.
    fn drop(&mut self) {
        // And the slots' network namespaces `jail run` left bound in the run directory.
        for entry in fs::read_dir(self.run_dir().join("slots")).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".netns") {
                let _ = Command::new("umount").arg("-l").arg(entry.path()).stderr(Stdio::null()).status();
            }
        }
        if let Some(cgroups) = self.cgroups() {
            for slot in cgroups.list() {
                let _ = cgroups.kill_all(&slot, Duration::from_secs(1));
                let _ = cgroups.remove(&slot);
            }
            cgroups.remove_parent_if_empty();
        }
    }
}

/// What a sandbox holds on the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub mounts: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub processes: BTreeSet<u32>,
    pub scratch: BTreeSet<String>,
}

/// A running `skyisland serve`.
pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub url: String,
    pub http: reqwest::Client,
    pub stderr: PathBuf,
}

impl Server {
    /// Starts the server on 127.0.0.1:0 and waits until it listens.
    pub fn start(sandbox: &Sandbox) -> Server {
        let config = sandbox.config();
        Server::start_with(sandbox, &["serve".as_ref(), "--config".as_ref(), config.as_os_str()])
    }

    /// Starts `skyisland ARGS` and waits until it listens (on any address: it is reached
    /// on loopback).
    pub fn start_with(sandbox: &Sandbox, args: &[&std::ffi::OsStr]) -> Server {
        let mut command = Command::new(bin());
        command.args(args);
        Server::start_command(sandbox, command)
    }

    /// Starts `command` (a `skyisland serve` however it is wrapped) and waits until it listens.
    pub fn start_command(sandbox: &Sandbox, mut command: Command) -> Server {
        warm_go_cache(sandbox);
        let stderr = sandbox.path().join(format!("server-{}.log", rand_suffix()));
        let mut child = command
            .env("RUST_LOG", "info,skyisland=debug")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("skyisland listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {}", fs::read_to_string(&stderr).unwrap_or_default());
            }
        };
        let url = url.replace("http://0.0.0.0:", "http://127.0.0.1:");
        let addr = url.trim_start_matches("http://").parse().unwrap();
        // Idle connections are given up before the server's keep-alive timeout closes them.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(180))
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .unwrap();
        Server { child: Some(child), addr, url, http, stderr }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// POST /api/v1/function; returns the status and the JSON body.
    pub async fn call(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.http.post(format!("{}/api/v1/function", self.url)).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        (status, json)
    }

    /// POST /api/v1/function with more headers; returns the status, the headers and the body.
    pub async fn call_with(
        &self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = self.http.post(format!("{}/api/v1/function", self.url)).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        (status, headers, json)
    }

    /// GET a path without credentials; returns the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The health check's answer.
    pub async fn health(&self) -> serde_json::Value {
        let (status, text) = self.get("/healthcheck").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The sum of a Prometheus metric's samples whose labels include all of `labels`
    /// (`name{a="b"}` style fragments, e.g. `tier="memory"`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        metric_sum(&text, name, labels)
    }

    /// A function call expected to succeed: returns `data`.
    pub async fn data(&self, url: &str, call: &str) -> String {
        let (status, body) = self.call(serde_json::json!({ "url": url, "call": call })).await;
        assert_eq!(status, 200, "{url} {call}: {body}");
        body["data"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-Sky-Island-Token", ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let child = self.child.as_ref().expect("running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the server to exit (within a minute).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit within a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (a crash) and reaps it.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Runs a command, failing the test if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.test")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.test");
    cmd
}

/// What a repository made by a test holds at a path.
pub enum Item {
    File(String),
    Bytes(Vec<u8>),
    /// A symbolic link to this target.
    Link(String),
}

/// A git repository served to the sandbox's server as `example.test/<owner>/<name>`.
pub struct Repo {
    pub work: PathBuf,
    pub bare: PathBuf,
    pub import_path: String,
}

impl Repo {
    /// Creates the repository from `tests/fixtures/<fixture>` and commits it.
    pub fn from_fixture(sandbox: &Sandbox, owner: &str, name: &str, fixture: &str) -> Repo {
        Repo::from_dir(
            sandbox,
            owner,
            name,
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture),
        )
    }

    /// Creates the repository from a copy of directory `dir` and commits it.
    pub fn from_dir(sandbox: &Sandbox, owner: &str, name: &str, dir: &Path) -> Repo {
        let work = sandbox.path().join("work").join(owner).join(name);
        copy_dir(dir, &work);
        run(git(&work).args(["init", "-q", "-b", "main"]));
        let bare = sandbox.git_root().join("example.test").join(owner).join(format!("{name}.git"));
        fs::create_dir_all(bare.parent().unwrap()).unwrap();
        let repo = Repo { work, bare, import_path: format!("example.test/{owner}/{name}") };
        repo.commit("initial");
        run(git(repo.bare.parent().unwrap()).args(["clone", "-q", "--bare"]).arg(&repo.work).arg(&repo.bare));
        repo
    }

    /// A repository of the given files and symbolic links (`Item::Link`), committed.
    pub fn from_items(sandbox: &Sandbox, owner: &str, name: &str, items: &[(&str, Item)]) -> Repo {
        let work = sandbox.path().join("work").join(owner).join(name);
        fs::create_dir_all(&work).unwrap();
        for (path, item) in items {
            let path = work.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            match item {
                Item::File(text) => fs::write(&path, text).unwrap(),
                Item::Bytes(bytes) => fs::write(&path, bytes).unwrap(),
                Item::Link(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            }
        }
        run(git(&work).args(["init", "-q", "-b", "main"]));
        let bare = sandbox.git_root().join("example.test").join(owner).join(format!("{name}.git"));
        fs::create_dir_all(bare.parent().unwrap()).unwrap();
        let repo = Repo { work, bare, import_path: format!("example.test/{owner}/{name}") };
        repo.commit("initial");
        run(git(repo.bare.parent().unwrap()).args(["clone", "-q", "--bare"]).arg(&repo.work).arg(&repo.bare));
        repo
    }

    /// Writes a file (relative to the repository) and commits and pushes it; returns the commit.
    pub fn change(&self, file: &str, contents: &str, message: &str) -> String {
        let path = self.work.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
        self.commit(message)
    }

    fn commit(&self, message: &str) -> String {
        run(git(&self.work).args(["add", "-A"]));
        run(git(&self.work).args(["commit", "-q", "-m", message]));
        if self.bare.exists() {
            run(git(&self.work).arg("push").arg("-q").arg(&self.bare).arg("main"));
        }
        self.head()
    }

    pub fn head(&self) -> String {
        run(git(&self.work).args(["rev-parse", "HEAD"])).trim().to_owned()
    }

    /// git, run in the served (bare) repository.
    pub fn bare_git(&self) -> Command {
        let mut cmd = git(&self.bare);
        cmd.arg("--git-dir=.");
        cmd
    }

    pub fn tag(&self, tag: &str) {
        run(git(&self.work).args(["tag", tag]));
        run(git(&self.work).arg("push").arg("-q").arg(&self.bare).arg(tag));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The attack program (tests/attack), built once.
pub fn attack() -> PathBuf {
    static ATTACK: OnceLock<PathBuf> = OnceLock::new();
    ATTACK
        .get_or_init(|| {
            // Built under a name of this process's, then renamed: test binaries running at
            // once never see each other's half-written file.
            let out = scratch().join("attack");
            let temp = scratch().join(format!("attack.{}", std::process::id()));
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attack");
            run(Command::new("go")
                .args(["build", "-trimpath", "-o"])
                .arg(&temp)
                .arg(".")
                .current_dir(src)
                .env("CGO_ENABLED", "0")
                .env("GOTOOLCHAIN", "local")
                .env("GOPROXY", "off")
                .env("GOFLAGS", "-buildvcs=false -mod=mod"));
            fs::rename(&temp, &out).unwrap();
            out
        })
        .clone()
}

/// Gives the sandbox's build jail a Go build cache that already holds what every build
/// compiles (the standard library parts the generator and dispatchers use), so that each
/// test does not compile them again. Files are hard links into one template (Go never
/// modifies a cache file in place); directories are the sandbox's own.
fn warm_go_cache(sandbox: &Sandbox) {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        // Debian's Go and the ones scripts/setup.sh installs.
        let mut toolchains = vec![PathBuf::from("go")];
        if let Ok(dirs) = fs::read_dir("/opt/skyisland/toolchains") {
            let mut found: Vec<PathBuf> =
                dirs.flatten().map(|d| d.path().join("go/bin/go")).filter(|go| go.is_file()).collect();
            found.sort();
            toolchains.extend(found);
        }
        let names: Vec<String> = toolchains.iter().map(|go| go.display().to_string()).collect();
        let template = scratch().join(format!("gocache-template-{}", stable_name(&names)));
        if template.join("READY").exists() {
            return template;
        }
        let _ = fs::remove_dir_all(&template);
        let warm = scratch().join("gocache-warm");
        let _ = fs::remove_dir_all(&warm);
        copy_dir(&workspace().join("crates/functions/go/gen"), &warm.join("gen"));
        fs::create_dir_all(warm.join("dispatch")).unwrap();
        fs::write(warm.join("dispatch/go.mod"), "module warm\n\ngo 1.19\n").unwrap();
        fs::write(
            warm.join("dispatch/main.go"),
            "package main\n\nimport (\n\t_ \"fmt\"\n\t_ \"go/constant\"\n\t_ \"go/token\"\n\t_ \"os\"\n\t_ \"reflect\"\n\t_ \"strings\"\n\t_ \"errors\"\n\t_ \"time\"\n)\n\nfunc main() {}\n",
        )
        .unwrap();
        for go in &toolchains {
            for dir in ["gen", "dispatch"] {
                run(Command::new(go)
                    .args(["build", "-trimpath", "-mod=mod", "-ldflags=-s -w", "-o", "/dev/null", "."])
                    .current_dir(warm.join(dir))
                    .env("GOCACHE", &template)
                    .env("CGO_ENABLED", "0")
                    .env("GO111MODULE", "on")
                    .env("GOTOOLCHAIN", "local")
                    .env("GOFLAGS", "-buildvcs=false")
                    .env("GOPROXY", "off"));
            }
        }
        fs::write(template.join("READY"), "").unwrap();
        template
    });
    let target = sandbox.data_dir().join("build/gocache");
    if !target.exists() {
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        run(Command::new("cp").arg("-al").arg(template).arg(&target));
    }
}

/// A short stable name for a list of strings.
fn stable_name(parts: &[String]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Waits until the future `f` makes is true, or fails after `timeout`.
pub async fn eventually_async<F: Future<Output = bool>>(what: &str, timeout: Duration, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `f` is true, or fails after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A network namespace made by a test (`ip netns add`), removed when dropped: the jails'
/// networks of the network tests live in it, so their traffic never leaves it.
pub struct NetNs {
    pub name: String,
    pub path: PathBuf,
}

impl NetNs {
    pub fn new() -> NetNs {
        let name = format!("skyisland-t{}-{}", std::process::id(), SANDBOXES.fetch_add(1, Ordering::SeqCst));
        run(Command::new("ip").args(["netns", "add", &name]));
        NetNs { path: PathBuf::from("/run/netns").join(&name), name }
    }

    /// The names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        let out = run(Command::new("ip").args(["-n", &self.name, "-o", "link", "show"]));
        out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n).to_owned()).collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A TCP listener inside a test's network namespace, recording who connects.
pub struct Listener {
    pub addr: SocketAddr,
    pub peers: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Listens on `ip` (port chosen by the kernel) inside `netns`; accepted connections are
    /// closed at once.
    pub fn start(netns: &NetNs, ip: std::net::Ipv4Addr) -> Listener {
        Self::start_with(netns, ip, false)
    }

    /// Like [`Listener::start`], but keeps accepted connections open and never reads them.
    pub fn start_holding(netns: &NetNs, ip: std::net::Ipv4Addr) -> Listener {
        Self::start_with(netns, ip, true)
    }

    fn start_with(netns: &NetNs, ip: std::net::Ipv4Addr, hold: bool) -> Listener {
        let ns = fs::File::open(&netns.path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (thread_peers, thread_stop) = (peers.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // This thread alone enters the namespace: its sockets are made there.
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let mut held = Vec::new();
            while !thread_stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        thread_peers.lock().unwrap().push(peer);
                        if hold {
                            held.push(stream);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Listener { addr: rx.recv().unwrap(), peers, stop, thread: Some(thread) }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// See [`Server::metric`].
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A redis-server of a test's own on a unix socket in its own directory (no port to race
/// for with other tests), with no persistence.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new().prefix("skyisland-redis-").tempdir().unwrap();
        let mut redis = RedisServer { child: None, dir };
        redis.restart();
        redis
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts it (again, on the same socket) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocketperm", "700", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.socket().display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.socket()) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// Stops it (SIGKILL: an outage, not a goodbye).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as with a stalled
    /// server or a network that drops packets.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Runs a command through redis-cli; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        run(Command::new("redis-cli").arg("-s").arg(self.socket()).args(args))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the server's health check satisfies `f`, or fails after `timeout`.
pub async fn health_until(server: &Server, what: &str, timeout: Duration, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let health = server.health().await;
        if f(&health) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; health: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `[network.ip4]` table for `10.213.<net>.0/24` with its bridge in `netns` (more keys
/// may follow it).
pub fn ip4_config(netns: &NetNs, bridge: &str, net: u8, range: u32) -> String {
    format!(
        "[network.ip4]\nbridge = \"{bridge}\"\ncidr = \"10.213.{net}.0/24\"\ngateway = \"10.213.{net}.1\"\nstart_addr = \"10.213.{net}.20\"\nrange = {range}\ndns = [\"10.213.{net}.1\"]\nnetns = \"{}\"\n",
        netns.path.display()
    )
}

/// What a jail answers to each attempt of the hostile program's `syscalls` command: the
/// errno its seccomp filter gives. The first group is refused by seccomp alone (an
/// unprivileged process outside a jail may make each of these calls); the rest would also
/// fail for lack of capabilities.
pub const SYSCALL_REFUSALS: &[(&str, &str)] = &[
    ("unshare_user", "operation not permitted"),
    ("clone_newuser", "operation not permitted"),
    ("io_uring_setup", "operation not permitted"),
    ("keyctl", "operation not permitted"),
    ("bpf", "operation not permitted"),
    ("perf_event_open", "operation not permitted"),
    ("userfaultfd", "operation not permitted"),
    ("kcmp", "operation not permitted"),
    ("modify_ldt", "operation not permitted"),
    ("mbind", "operation not permitted"),
    ("set_mempolicy", "operation not permitted"),
    ("migrate_pages", "operation not permitted"),
    ("memfd_secret", "operation not permitted"),
    ("personality_exec", "operation not permitted"),
    ("name_to_handle_at", "operation not permitted"),
    ("process_vm_readv", "operation not permitted"),
    // Not listed at all: the default.
    ("sysfs", "function not implemented"),
    ("clone3", "function not implemented"),
    ("unshare_net", "operation not permitted"),
    ("clone_newpid", "operation not permitted"),
    ("kexec_load", "operation not permitted"),
    ("init_module", "operation not permitted"),
    ("reboot", "operation not permitted"),
    ("setns", "operation not permitted"),
];

/// The answers to the hostile program's `sockets` command in a jail.
pub const SOCKET_ANSWERS: &[(&str, &str)] = &[
    ("unix", "ok"),
    ("inet", "ok"),
    ("inet6", "ok"),
    ("netlink_route", "ok"),
    ("netlink_audit", "operation not permitted"),
    ("netlink_uevent", "operation not permitted"),
    ("vsock", "operation not permitted"),
    ("packet", "operation not permitted"),
    ("alg", "operation not permitted"),
    ("socketpair_vsock", "operation not permitted"),
];

/// Fails unless `output` (of `syscalls` or `sockets`) has exactly `expected` for each line.
pub fn assert_answers(what: &str, output: &str, expected: &[(&str, &str)]) {
    for (name, answer) in expected {
        let line = format!("{name}: {answer}");
        assert!(output.lines().any(|l| l == line), "{what}: expected {line:?} in:\n{output}");
    }
}

/// The server's children: each one's executable and command line.
pub fn children(pid: u32) -> Vec<(PathBuf, Vec<String>)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let Ok(status) = fs::read_to_string(dir.join("status")) else { continue };
        if status.lines().any(|line| line.strip_prefix("PPid:").is_some_and(|p| p.trim() == pid.to_string())) {
            let (Ok(exe), Ok(cmdline)) = (fs::read_link(dir.join("exe")), fs::read(dir.join("cmdline"))) else {
                continue;
            };
            let args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
            found.push((exe, args.map(|a| String::from_utf8_lossy(a).into_owned()).collect()));
        }
    }
    found
}
