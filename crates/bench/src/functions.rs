//! Function calls through a real `skyisland serve`: the first call of a new package (clone
//! and build), a repeated call (binary cache, fresh jail), calls with new arguments, and a
//! hand-run `go build` of the same package as the reference; then throughput of cached
//! calls at concurrency 1 and 16. These calls opt out of the request cache (`"cache":
//! false`): each runs in a fresh jail. [`run_cache`] measures the request cache itself.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::stats::{self, summarize};

pub struct Args {
    pub runs: usize,
    pub dir: PathBuf,
}

const REPO: &str = "example.test/bench/geo";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../skyisland/tests/fixtures")
}

pub(crate) fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn git(args: &[&str], cwd: &Path) -> anyhow::Result<String> {
    sh(Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.test")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.test"))
}

/// A bare repository of fixture `name` at `<git>/example.test/bench/<name>.git`.
pub(crate) fn repository_named(dir: &Path, name: &str) -> anyhow::Result<()> {
    repository(dir, name)
}

fn repository(dir: &Path, name: &str) -> anyhow::Result<()> {
    let work = dir.join("work").join(name);
    let _ = fs::remove_dir_all(&work);
    copy_dir(&fixtures().join(name), &work)?;
    commit_new(dir, name)
}

/// A bare repository `name` of `files` (path, contents).
pub(crate) fn repository_from(dir: &Path, name: &str, files: &[(String, String)]) -> anyhow::Result<()> {
    let work = dir.join("work").join(name);
    let _ = fs::remove_dir_all(&work);
    for (path, text) in files {
        let path = work.join(path);
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        fs::write(path, text)?;
    }
    commit_new(dir, name)
}

/// Commits what changed below `path` of repository `name`'s work tree and pushes it.
pub(crate) fn commit_change(dir: &Path, name: &str, path: &str) -> anyhow::Result<()> {
    let work = dir.join("work").join(name);
    git(&["add", "-A", path], &work)?;
    git(&["commit", "-q", "-m", "change"], &work)?;
    let bare = dir.join("git/example.test/bench").join(format!("{name}.git"));
    git(&["push", "-q", bare.to_str().expect("utf-8"), "main"], &work)?;
    Ok(())
}

fn commit_new(dir: &Path, name: &str) -> anyhow::Result<()> {
    let work = dir.join("work").join(name);
    git(&["init", "-q", "-b", "main"], &work)?;
    git(&["add", "-A"], &work)?;
    git(&["commit", "-q", "-m", "bench"], &work)?;
    let bare = dir.join("git/example.test/bench").join(format!("{name}.git"));
    let _ = fs::remove_dir_all(&bare);
    fs::create_dir_all(bare.parent().expect("has a parent"))?;
    git(&["clone", "-q", "--bare", work.to_str().expect("utf-8"), bare.to_str().expect("utf-8")], dir)?;
    Ok(())
}

pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(dir: &Path, extra: &str) -> anyhow::Result<Server> {
    start_binary(
        dir,
        extra,
        &std::env::current_exe()?.with_file_name("skyisland"),
        40_100_000,
        "skyisland-bench-functions",
    )
}

/// A server of the `skyisland` binary at `exe`, with its own data, uids and cgroups.
fn start_binary(dir: &Path, extra: &str, exe: &Path, uid_base: u32, cgroup: &str) -> anyhow::Result<Server> {
    start_with(dir, &dir.join("git"), extra, exe, (uid_base, ""), cgroup)
}

/// A server of this build in `dir` serving the repositories under `git`.
pub(crate) fn start_serving(
    dir: &Path,
    extra: &str,
    git: &Path,
    uid_base: u32,
    cgroup: &str,
) -> anyhow::Result<Server> {
    start_with(dir, git, extra, &std::env::current_exe()?.with_file_name("skyisland"), (uid_base, ""), cgroup)
}

/// `jails`: the jail slots' first uid, and more keys of `[jails]` (lines).
fn start_with(
    dir: &Path,
    git: &Path,
    extra: &str,
    exe: &Path,
    (uid_base, jails): (u32, &str),
    cgroup: &str,
) -> anyhow::Result<Server> {
    let config = dir.join("skyisland.toml");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\n[admin]\ntoken = \"bench-token\"\n[jails]\nuid_base = {uid_base}\n{jails}[cgroup]\nparent = \"{cgroup}\"\n[git.url_rewrite]\n\"https://example.test/\" = \"file://{g}/example.test/\"\n{extra}",
            d = dir.display(),
            g = git.display()
        ),
    )?;
    let mut child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(&config)
        // SKYISLAND_BENCH_LOG (e.g. `info`) to see where a run's time goes in server.log.
        .env("RUST_LOG", std::env::var("SKYISLAND_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdout(Stdio::piped())
        .stderr(fs::File::create(dir.join("server.log"))?)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().strip_prefix("skyisland listening on ").context("the server did not start")?.to_owned();
    Ok(Server { child, url })
}

pub(crate) async fn call(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let response = http.post(format!("{url}/api/v1/function")).json(&body).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(body)
}

/// A main program calling the package, in a module of its own, for the hand-run `go build`
/// that a first call is compared with.
fn hand_module(dir: &Path) -> anyhow::Result<PathBuf> {
    let module = dir.join("hand");
    let _ = fs::remove_dir_all(&module);
    copy_dir(&fixtures().join("geo"), &module)?;
    fs::create_dir_all(module.join("cmd"))?;
    fs::write(
        module.join("cmd/main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\n\tgeo \"example.test/acme/geo\"\n)\n\nfunc main() { fmt.Print(geo.Encode(57.64911, 10.40744)) }\n",
    )?;
    Ok(module)
}

/// One hand-run `go build` of the module after the same change a new commit makes (so
/// that the package is compiled, as it is for a new version, while the standard library
/// comes from the cache).
fn hand_go_build(module: &Path, i: usize) -> anyhow::Result<Duration> {
    let file = module.join("geo.go");
    let source = fs::read_to_string(&file)?;
    fs::write(&file, format!("{source}\n// change {i}\n"))?;
    let started = Instant::now();
    sh(Command::new("go").args(["build", "-o", "/dev/null", "./cmd"]).current_dir(module).env("CGO_ENABLED", "0"))?;
    Ok(started.elapsed())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(&args.dir);
    fs::create_dir_all(&args.dir)?;
    repository(&args.dir, "geo")?;
    repository(&args.dir, "misc")?;
    // Every first call busts the repository: no limit on how often.
    let server = start(&args.dir, "[cache]\nbust_interval = \"0s\"\n")?;
    let (runtime, http) = client()?;
    let url = server.url.clone();
    let first_runs = 9;
    let module = hand_module(&args.dir)?;
    let report = runtime.block_on(async {
        // Timing starts once the server is ready: its generator built, the standard library
        // parts every build uses compiled, the package cloned; and the hand build's cache
        // warm alike.
        call(&http, &url, json!({"url": "example.test/bench/misc", "call": "Hello()"})).await?;
        call(&http, &url, json!({"url": REPO, "call": "Encode(1, 2)"})).await?;
        hand_go_build(&module, 0)?;
        // Each run, a new commit for the server and the same change for the hand build:
        // both compile the package; one after the other, in alternating order.
        let (mut first, mut hand) = (Vec::new(), Vec::new());
        for i in 1..=first_runs {
            for k in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                if k == 1 {
                    hand.push(hand_go_build(&module, i)?);
                    continue;
                }
                change_geo(&args.dir, i)?;
                let started = Instant::now();
                let body =
                    call(&http, &url, json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache_bust": true}))
                        .await?;
                first.push(started.elapsed());
                anyhow::ensure!(body["built"] == true, "the first call of a new commit builds: {body}");
            }
        }
        let mut repeat = Vec::new();
        for _ in 0..args.runs {
            let started = Instant::now();
            call(&http, &url, json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache": false})).await?;
            repeat.push(started.elapsed());
        }
        let mut fresh_args = Vec::new();
        for i in 0..args.runs {
            let started = Instant::now();
            let body = call(&http, &url, json!({"url": REPO, "call": format!("Encode({}.5, {i})", i % 90)})).await?;
            fresh_args.push(started.elapsed());
            assert_eq!(body["built"], false);
        }
        let prestart = prestarted(&http, &url, &args.dir).await?;
        let mut throughput = Vec::new();
        for concurrency in [1usize, 16] {
            let period = Duration::from_secs(5);
            let started = Instant::now();
            let workers = (0..concurrency).map(|_| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let mut done = 0u64;
                    while started.elapsed() < period {
                        let body = json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache": false});
                        call(&http, &url, body).await?;
                        done += 1;
                    }
                    anyhow::Ok(done)
                }
            });
            let total: u64 = futures::future::try_join_all(workers).await?.into_iter().sum();
            throughput.push((concurrency, total as f64 / started.elapsed().as_secs_f64()));
        }
        anyhow::Ok((first, hand, repeat, fresh_args, prestart, throughput))
    })?;
    let (mut first, mut hand, mut repeat, mut fresh_args, prestart, throughput) = report;
    let first = summarize(&mut first);
    let hand = summarize(&mut hand);
    let repeat = summarize(&mut repeat);
    let fresh_args = summarize(&mut fresh_args);
    println!(
        "\n## Function calls ({} sequential calls each; first call and hand build {first_runs} times, alternating)\n",
        args.runs
    );
    stats::header();
    stats::row("first call of a new commit (fetch + build + run)", &first);
    stats::row("hand-run go build of the same change", &hand);
    stats::row("repeated call (binary cache, fresh jail)", &repeat);
    stats::row("call with new arguments (no build)", &fresh_args);
    println!();
    stats::ratio("first call / hand-run go build", first.median, hand.median);
    for (concurrency, rate) in throughput {
        println!("cached calls per second at concurrency {concurrency}: {rate:.0}");
    }
    prestart.print();
    Ok(())
}

/// Samples of the pre-started jails' section: paced and back to back.
struct Prestarted {
    paced: [Vec<Duration>; 3],
    unpaused: [Vec<Duration>; 3],
    rate: u32,
}

const VARIANTS: [&str; 3] =
    ["server call, pre-started jail", "server call, pre-start off (warm jails)", "fork+exec of the same binary"];

impl Prestarted {
    fn print(mut self) {
        for (what, samples) in [
            (format!("paced: a call every {} ms, each variant in turn", 1000 / self.rate), &mut self.paced),
            ("without pauses, each variant in turn".to_owned(), &mut self.unpaused),
        ] {
            println!("\n## Cached Go call (`\"cache\": false`) with and without pre-start, {what}\n");
            stats::header();
            let s: Vec<_> = samples.iter_mut().map(|v| summarize(v)).collect();
            for (name, summary) in VARIANTS.iter().zip(&s) {
                stats::row(name, summary);
            }
            println!();
            stats::ratio("pre-started / fork+exec, median", s[0].median, s[2].median);
            stats::ratio("pre-started / pre-start off, median", s[0].median, s[1].median);
            stats::ratio("pre-started / pre-start off, p99", s[0].p99, s[1].p99);
        }
    }
}

/// The cached Go call through a server with pre-started jails (`url`), through a second
/// server of this build with them off, and the same program run by plain fork+exec
/// (the dispatcher binary the server built, its argv form of the call), interleaved in
/// rotating order: first paced (a call every `1 / rate`, so that the machine keeps up
/// with starting jails ahead — a sustained rate it can serve), then without pauses (each
/// call right after the last, still in turn: each server sees every third call; one
/// server called truly back to back is the "repeated call" row above).
async fn prestarted(http: &reqwest::Client, url: &str, dir: &Path) -> anyhow::Result<Prestarted> {
    let other_dir = dir.join("prestart-off");
    fs::create_dir_all(&other_dir)?;
    let exe = std::env::current_exe()?.with_file_name("skyisland");
    let other = start_with(
        &other_dir,
        &dir.join("git"),
        "",
        &exe,
        (40_300_000, "prestart_budget = 0\n"),
        "skyisland-bench-functions-b",
    )?;
    let body = json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache": false});
    let answer = call(http, url, body.clone()).await?;
    let expected = answer["data"].clone();
    let commit = answer["commit"].as_str().context("no commit in the answer")?.to_owned();
    call(http, &other.url, body.clone()).await?;
    let binary = dispatcher_of(&dir.join("data/binaries"), &commit)?;
    let argv = ["Encode", "float:+:57.64911", "float:+:10.40744"];
    let fork_exec = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let out = Command::new(&binary).args(argv).output()?;
        let took = started.elapsed();
        anyhow::ensure!(out.status.success() && *String::from_utf8_lossy(&out.stdout) == expected, "{out:?}");
        Ok(took)
    };
    let server_call = |url: String| {
        let body = body.clone();
        let expected = expected.clone();
        async move {
            let started = Instant::now();
            let answer = call(http, &url, body).await?;
            let took = started.elapsed();
            anyhow::ensure!(answer["data"] == expected, "{answer}");
            anyhow::Ok(took)
        }
    };
    let rate = 100;
    let (runs, pause) = (300, Duration::from_secs(1) / rate);
    let mut paced: [Vec<Duration>; 3] = Default::default();
    let mut unpaused: [Vec<Duration>; 3] = Default::default();
    // Warm-up: both servers have seen the function called (pre-starting begins).
    for _ in 0..20 {
        server_call(url.to_owned()).await?;
        server_call(other.url.clone()).await?;
        fork_exec()?;
    }
    for (samples, wait) in [(&mut paced, Some(pause)), (&mut unpaused, None)] {
        let mut next = tokio::time::Instant::now();
        for i in 0..runs {
            for k in (0..3).map(|k| (k + i) % 3) {
                if let Some(wait) = wait {
                    next += wait;
                    tokio::time::sleep_until(next).await;
                }
                let took = match k {
                    0 => server_call(url.to_owned()).await?,
                    1 => server_call(other.url.clone()).await?,
                    _ => fork_exec()?,
                };
                samples[k].push(took);
            }
        }
    }
    Ok(Prestarted { paced, unpaused, rate })
}

/// The dispatcher binary a server built for `commit` of the benchmark's package.
fn dispatcher_of(binaries: &Path, commit: &str) -> anyhow::Result<PathBuf> {
    for entry in fs::read_dir(binaries)? {
        let dir = entry?.path();
        let Ok(meta) = fs::read_to_string(dir.join("meta.json")) else { continue };
        let meta: Value = serde_json::from_str(&meta)?;
        if meta["repo"] == REPO && meta["commit"] == commit && meta["call"].is_null() {
            return Ok(dir.join("fn"));
        }
    }
    bail!("no dispatcher for {REPO} at {commit} under {}", binaries.display())
}

/// A network namespace for the benchmark's jail networks, removed when dropped.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The latency a jail's own network adds to a cached call: the same call with and
/// without `ip4`, sequentially. The jails' bridge lives in a namespace made for the run.
pub fn run_network(args: Args) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(&args.dir);
    fs::create_dir_all(&args.dir)?;
    repository(&args.dir, "geo")?;
    let netns = NetNs(format!("skyisland-bench-{}", std::process::id()));
    sh(Command::new("ip").args(["netns", "add", &netns.0]))?;
    let extra = format!(
        "[network.ip4]\nbridge = \"skybench0\"\ncidr = \"10.213.9.0/24\"\ngateway = \"10.213.9.1\"\nstart_addr = \"10.213.9.20\"\nrange = 50\ndns = [\"10.213.9.1\"]\nnetns = \"/run/netns/{}\"\n",
        netns.0
    );
    let server = start(&args.dir, &extra)?;
    let (runtime, http) = client()?;
    let url = server.url.clone();
    let (mut plain, mut networked) = runtime.block_on(async {
        call(&http, &url, json!({"url": REPO, "call": "Encode(1, 2)"})).await?;
        let mut samples = (Vec::new(), Vec::new());
        // Interleaved, so that both see the same machine.
        for _ in 0..args.runs {
            for ip4 in [false, true] {
                let started = Instant::now();
                call(
                    &http,
                    &url,
                    json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "ip4": ip4, "cache": false}),
                )
                .await?;
                if ip4 { samples.1.push(started.elapsed()) } else { samples.0.push(started.elapsed()) }
            }
        }
        anyhow::Ok(samples)
    })?;
    drop(server);
    let plain = summarize(&mut plain);
    let networked = summarize(&mut networked);
    println!("\n## A jail's own network ({} calls each, interleaved)\n", args.runs);
    stats::header();
    stats::row("cached call without ip4", &plain);
    stats::row("cached call with ip4 (own netns, veth, address)", &networked);
    println!();
    stats::ratio("with ip4 / without", networked.median, plain.median);
    println!(
        "the network adds {:.3} ms at the median",
        (networked.median.as_secs_f64() - plain.median.as_secs_f64()) * 1000.0
    );
    Ok(())
}

/// What wrk reports: requests per second and latency percentiles.
struct Wrk {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Drives `POST /api/v1/function` with `body` for `seconds` at `connections` (wrk, two
/// threads, on loopback).
fn wrk(dir: &Path, url: &str, body: &Value, connections: usize, seconds: u64) -> anyhow::Result<Wrk> {
    let script = dir.join("post.lua");
    let body = body.to_string().replace('\\', "\\\\").replace('"', "\\\"");
    fs::write(
        &script,
        format!("wrk.method = \"POST\"\nwrk.body = \"{body}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"),
    )?;
    let out = sh(Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("{url}/api/v1/function")))
    .context("wrk (scripts/setup.sh installs it)")?;
    let field =
        |prefix: &str| out.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|rest| rest.trim().to_owned()));
    let duration = |text: String| -> anyhow::Result<Duration> {
        let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).context("a unit")?);
        let number: f64 = number.parse()?;
        Ok(Duration::from_secs_f64(match unit {
            "us" => number / 1e6,
            "ms" => number / 1e3,
            "s" => number,
            "m" => number * 60.0,
            other => bail!("unknown wrk unit {other:?}"),
        }))
    };
    let rate: f64 = field("Requests/sec:").context("wrk's Requests/sec")?.parse()?;
    let p50 = duration(field("50%").context("wrk's median")?)?;
    let p99 = duration(field("99%").context("wrk's 99th percentile")?)?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(Ok(0), |n| n.parse())?;
    let errors = field("Socket errors:");
    // A figure from answers that were errors (or from connections that failed) is no figure.
    if non_2xx > 0 || errors.is_some() {
        bail!("wrk saw {non_2xx} non-2xx answers, socket errors: {}\n{out}", errors.unwrap_or_default());
    }
    Ok(Wrk { rate, p50, p99 })
}

/// Request-cache hits against calls of a cached binary in a fresh jail, for the same
/// function: sequential medians, then wrk's throughput and latency.
/// The benchmark's async runtime and its HTTP client (idle connections given up before the
/// server closes them).
pub(crate) fn client() -> anyhow::Result<(tokio::runtime::Runtime, reqwest::Client)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_idle_timeout(Duration::from_secs(4))
        .build()?;
    Ok((runtime, http))
}

pub fn run_cache(args: Args) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(&args.dir);
    fs::create_dir_all(&args.dir)?;
    repository(&args.dir, "geo")?;
    let server = start(&args.dir, "")?;
    let (runtime, http) = client()?;
    let url = server.url.clone();
    let hit = json!({"url": REPO, "call": "Encode(57.64911, 10.40744)"});
    let jail = json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache": false});
    let (mut hits, mut jails) = runtime.block_on(async {
        let first = call(&http, &url, hit.clone()).await?;
        assert_eq!(first["cache"], "miss", "{first}");
        let (mut hits, mut jails) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let started = Instant::now();
            let body = call(&http, &url, hit.clone()).await?;
            hits.push(started.elapsed());
            assert_eq!(body["cache"], "hit", "{body}");
            let started = Instant::now();
            let body = call(&http, &url, jail.clone()).await?;
            jails.push(started.elapsed());
            assert_eq!(body["cache"], "miss", "{body}");
        }
        anyhow::Ok((hits, jails))
    })?;
    let (hits, jails) = (summarize(&mut hits), summarize(&mut jails));
    let loaded_hits = wrk(&args.dir, &url, &hit, 8, 10)?;
    let crowded_hits = wrk(&args.dir, &url, &hit, 32, 10)?;
    let loaded_jails = wrk(&args.dir, &url, &jail, 16, 10)?;
    println!("\n## The request cache ({} sequential calls each, then wrk for 10 s each)\n", args.runs);
    stats::header();
    stats::row("request-cache hit (no jail)", &hits);
    stats::row("cached binary, fresh jail (\"cache\": false)", &jails);
    println!();
    stats::ratio("fresh jail / cache hit, sequential median", jails.median, hits.median);
    for (what, w, c) in [
        ("request-cache hits", &loaded_hits, 8),
        ("request-cache hits", &crowded_hits, 32),
        ("fresh-jail calls", &loaded_jails, 16),
    ] {
        println!(
            "{what} under wrk (2 threads, {c} connections): {:.0}/s, median {:.3} ms, p99 {:.3} ms (all 2xx)",
            w.rate,
            w.p50.as_secs_f64() * 1e3,
            w.p99.as_secs_f64() * 1e3,
        );
    }
    println!(
        "hits per second / fresh-jail calls per second: {:.1}x (target: >= 20000 hits/s, median < 0.5 ms)",
        loaded_hits.rate / loaded_jails.rate
    );
    Ok(())
}

/// This build against another `skyisland` binary (an earlier commit's, say), both serving
/// at once and called alternately, one call each in turn, so that the machine's noise falls
/// on both alike: the first call of a package (clone and build, the source changed each time
/// so that it is compiled) and repeated cached calls in fresh jails.
pub fn run_compare(args: Args, other: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(&args.dir);
    let dirs = [args.dir.join("this"), args.dir.join("other")];
    for dir in &dirs {
        fs::create_dir_all(dir)?;
        repository(dir, "geo")?;
        repository(dir, "misc")?;
    }
    let this = std::env::current_exe()?.with_file_name("skyisland");
    // Every bust rebuilds (each first call is of a new commit).
    let busts = "[cache]\nbust_interval = \"0s\"\n";
    let servers = [
        start_binary(&dirs[0], busts, &this, 40_100_000, "skyisland-bench-this")?,
        start_binary(&dirs[1], busts, other, 40_200_000, "skyisland-bench-other")?,
    ];
    let (runtime, http) = client()?;
    let first_runs = 9;
    let samples = runtime.block_on(async {
        for server in &servers {
            call(&http, &server.url, json!({"url": "example.test/bench/misc", "call": "Hello()"})).await?;
        }
        let mut first = [Vec::new(), Vec::new()];
        for i in 0..first_runs {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let server = &servers[k];
                // A new commit each time: what a first call of a new version costs.
                change_geo(&dirs[k], i)?;
                let started = Instant::now();
                let body = call(
                    &http,
                    &server.url,
                    json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache_bust": true}),
                )
                .await?;
                first[k].push(started.elapsed());
                anyhow::ensure!(body["built"] == true, "{body}");
            }
        }
        let mut cached = [Vec::new(), Vec::new()];
        for i in 0..args.runs {
            // A B, then B A: neither is always the one that runs right after the other.
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let server = &servers[k];
                let started = Instant::now();
                call(&http, &server.url, json!({"url": REPO, "call": "Encode(57.64911, 10.40744)", "cache": false}))
                    .await?;
                cached[k].push(started.elapsed());
            }
        }
        anyhow::Ok((first, cached))
    })?;
    let (mut first, mut cached) = samples;
    println!("\n## This build against {} ({} calls each, alternating)\n", other.display(), args.runs);
    stats::header();
    let [first_this, first_other] = &mut first;
    let [cached_this, cached_other] = &mut cached;
    let (f0, f1, c0, c1) =
        (summarize(first_this), summarize(first_other), summarize(cached_this), summarize(cached_other));
    stats::row("first call of a new commit: this build", &f0);
    stats::row("first call of a new commit: the other", &f1);
    stats::row("cached call, fresh jail: this build", &c0);
    stats::row("cached call, fresh jail: the other", &c1);
    println!();
    stats::ratio("first call: this / the other", f0.median, f1.median);
    stats::ratio("cached call: this / the other", c0.median, c1.median);
    Ok(())
}

/// Commits a change to the geo repository's source (a new comment); returns the commit.
fn change_geo(dir: &Path, i: usize) -> anyhow::Result<String> {
    let work = dir.join("work/geo");
    let file = work.join("geo.go");
    let source = fs::read_to_string(&file)?;
    fs::write(&file, format!("{source}\n// change {i}\n"))?;
    commit_change(dir, "geo", ".")?;
    Ok(git(&["rev-parse", "HEAD"], &work)?.trim().to_owned())
}
