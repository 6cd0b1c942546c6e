//! Asynchronous invocations through real servers: how many a server accepts per second
//! (each recorded before its 202), with the embedded store and with two servers on one
//! Redis; the time from the 202 to `succeeded` for a built Go function at low load, beside
//! the same call made synchronously; and the synchronous call's latency with and without
//! async work running in the background.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::functions::{Args, Server, call, client, repository_named, start_serving};
use crate::stats::{self, summarize};

const REPO: &str = "example.test/bench/geo";
const CALL: &str = "Encode(57.64911, 10.40744)";
/// Room for everything the acceptance runs submit.
const QUEUE: &str = "[async]\nmax_queued = 1000000\n";

/// A redis-server on a Unix socket in `dir`, killed when dropped.
struct Redis(Child, String);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(dir: &Path) -> anyhow::Result<Redis> {
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .context("redis-server (scripts/setup.sh installs it)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Redis(child, format!("unix://{}", socket.display())))
}

async fn submit(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<String> {
    let response = http.post(format!("{url}/api/v1/function")).json(body).send().await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if status.as_u16() != 202 {
        bail!("{status}: {answer}");
    }
    Ok(answer["id"].as_str().context("no id")?.to_owned())
}

/// Polls (every millisecond) until the invocation has succeeded.
async fn until_succeeded(http: &reqwest::Client, url: &str, id: &str) -> anyhow::Result<()> {
    loop {
        let job: Value = http.get(format!("{url}/api/v1/invocations/{id}")).send().await?.json().await?;
        match job["status"].as_str() {
            Some("succeeded") => return Ok(()),
            Some("failed") => bail!("invocation failed: {job}"),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Submissions per second at concurrency 16 for `period`, spread over `urls`.
async fn accepted_per_second(http: &reqwest::Client, urls: &[String], period: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let submitters = (0..16).map(|i| {
        let (http, url) = (http.clone(), urls[i % urls.len()].clone());
        async move {
            let mut done = 0u64;
            while started.elapsed() < period {
                submit(&http, &url, &json!({"url": REPO, "call": CALL, "async": true, "cache": true})).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }
    });
    let total: u64 = futures::future::try_join_all(submitters).await?.into_iter().sum();
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Waits until nothing is queued or running.
async fn drained(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for status in ["queued", "running"] {
        loop {
            let list: Value = http
                .get(format!("{url}/api/v1/invocations?status={status}&limit=1"))
                .header("X-Sky-Island-Token", "bench-token")
                .send()
                .await?
                .json()
                .await?;
            if list["count"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(&args.dir);
    fs::create_dir_all(&args.dir)?;
    repository_named(&args.dir, "geo")?;
    let (runtime, http) = client()?;
    let one_dir = args.dir.join("one");
    fs::create_dir_all(&one_dir)?;
    let git = args.dir.join("git");
    let one = start_serving(&one_dir, QUEUE, &git, 40_300_000, "skyisland-bench-async-a")?;
    let url = one.url.clone();
    let period = Duration::from_secs(5);
    let report = runtime.block_on(async {
        call(&http, &url, json!({"url": REPO, "call": CALL})).await?;
        // Sequential, low load: the same call synchronously, then async until succeeded.
        let (mut sync, mut to_success) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let started = Instant::now();
            call(&http, &url, json!({"url": REPO, "call": CALL, "cache": false})).await?;
            sync.push(started.elapsed());
            let id = submit(&http, &url, &json!({"url": REPO, "call": CALL, "async": true, "cache": false})).await?;
            let accepted = Instant::now();
            until_succeeded(&http, &url, &id).await?;
            to_success.push(accepted.elapsed());
        }
        // Synchronous calls while other work runs: 100 calls a second made in the
        // background, as async invocations (the workers' jails, the store's writes, the
        // submissions) and, for reference, as the same calls made synchronously.
        let mut busy = Vec::new();
        for asynchronous in [true, false] {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let background = {
                let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let body = json!({"url": REPO, "call": CALL, "async": asynchronous, "cache": false});
                        let sent = http.post(format!("{url}/api/v1/function")).json(&body).send();
                        tokio::spawn(sent);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut samples = Vec::new();
            for _ in 0..args.runs {
                let started = Instant::now();
                call(&http, &url, json!({"url": REPO, "call": CALL, "cache": false})).await?;
                samples.push(started.elapsed());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            background.await?;
            busy.push(samples);
        }
        drained(&http, &url).await?;
        let accepted_one = accepted_per_second(&http, std::slice::from_ref(&url), period).await?;
        drained(&http, &url).await?;
        anyhow::Ok((sync, to_success, busy, accepted_one))
    })?;
    drop(one);
    let (mut sync, mut to_success, busy, accepted_one) = report;
    let [mut busy_async, mut busy_sync]: [Vec<Duration>; 2] = busy.try_into().expect("two runs");

    // Two servers on one Redis.
    let redis = redis(&args.dir)?;
    let shared = format!("{QUEUE}[cache]\nredis_url = \"{}\"\nredis_prefix = \"bench\"\n", redis.1);
    let mut servers: Vec<Server> = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let dir = args.dir.join(format!("redis-{name}"));
        fs::create_dir_all(&dir)?;
        let cgroup = format!("skyisland-bench-async-r{name}");
        servers.push(start_serving(&dir, &shared, &git, 40_400_000 + i as u32 * 100_000, &cgroup)?);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let (mut to_success_redis, accepted_two) = runtime.block_on(async {
        for url in &urls {
            call(&http, url, json!({"url": REPO, "call": CALL})).await?;
        }
        let mut samples = Vec::new();
        for i in 0..args.runs {
            let url = &urls[i % 2];
            let id = submit(&http, url, &json!({"url": REPO, "call": CALL, "async": true, "cache": false})).await?;
            let accepted = Instant::now();
            until_succeeded(&http, url, &id).await?;
            samples.push(accepted.elapsed());
        }
        let accepted = accepted_per_second(&http, &urls, period).await?;
        drained(&http, &urls[0]).await?;
        anyhow::Ok((samples, accepted))
    })?;
    drop(servers);
    drop(redis);

    let sync = summarize(&mut sync);
    let to_success = summarize(&mut to_success);
    let busy = summarize(&mut busy_async);
    let busy_sync = summarize(&mut busy_sync);
    let to_success_redis = summarize(&mut to_success_redis);
    println!("\n## Asynchronous calls ({} sequential calls each; a built Go function, \"cache\": false)\n", args.runs);
    stats::header();
    stats::row("synchronous call, idle server", &sync);
    stats::row("async: 202 to succeeded, one server (SQLite)", &to_success);
    stats::row("async: 202 to succeeded, two servers (Redis)", &to_success_redis);
    stats::row("synchronous call, 100 async calls/s running", &busy);
    stats::row("synchronous call, 100 sync calls/s running", &busy_sync);
    println!();
    stats::ratio("synchronous call, async work running / idle", busy.median, sync.median);
    stats::ratio("synchronous call, async work running / the same work synchronous", busy.median, busy_sync.median);
    stats::ratio("p99, async work running / the same work synchronous", busy.p99, busy_sync.p99);
    println!("async calls accepted per second (concurrency 16), one server, SQLite: {accepted_one:.0}");
    println!("async calls accepted per second (concurrency 16), two servers, Redis: {accepted_two:.0}");
    Ok(())
}
