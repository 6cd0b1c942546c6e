//! Load: a real server driven at high concurrency with a mix of cached calls, calls with
//! new arguments, builds, timeouts, panics, memory bombs and `ip4` calls, checking that
//! every answer is the right one for its request, that latencies stay bounded, and that
//! afterwards the server holds exactly what it held before (leak accounting through
//! `/api/v1/admin/resources`, then the host's census once it stopped).
//!
//! CI runs it for 45 s. The soak is the same test, longer, from a release build:
//!
//! ```sh
//! SKYISLAND_LOAD_SECONDS=1800 cargo test --release --test load -- --nocapture
//! ```

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{NetNs, Repo, Sandbox, Server, root_or_skip};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Cached,
    NewArguments,
    Sum,
    Build,
    Timeout,
    Panic,
    MemoryBomb,
    Ip4,
}

/// What a request must get back.
enum Expect {
    Data(String),
    DataPrefix(String),
    /// A status and a fragment of the error (or of its stderr).
    Error(u16, String),
}

struct Plan {
    kind: Kind,
    body: Value,
    expect: Expect,
}

fn plan(n: u64, geo: &str, misc: &str, net: &str) -> Plan {
    let pick = n % 100;
    let unique = n;
    let (kind, body, expect) = match pick {
        0..=29 => (
            Kind::Cached,
            json!({"url": geo, "call": "Encode(57.64911, 10.40744)"}),
            Expect::Data("57.6491|10.4074".into()),
        ),
        30..=54 => {
            let (lat, lng) = ((unique % 89) as f64 + 0.25, -((unique % 179) as i64));
            (
                Kind::NewArguments,
                json!({"url": geo, "call": format!("Encode({lat}, {lng})"), "cache": false}),
                Expect::Data(format!("{lat:.4}|{:.4}", lng as f64)),
            )
        }
        55..=69 => {
            let xs = [unique as i64, 7, -(unique as i64 % 1000), 1_000_000];
            let call = format!("Sum({}, {}, {}, {})", xs[0], xs[1], xs[2], xs[3]);
            (Kind::Sum, json!({"url": geo, "call": call}), Expect::Data(xs.iter().sum::<i64>().to_string()))
        }
        70..=71 => {
            // A generic function: a build of its own for each new call.
            let b = 1000 + unique;
            (Kind::Build, json!({"url": geo, "call": format!("Max(3, {b})")}), Expect::Data(b.to_string()))
        }
        72..=75 => (
            Kind::Timeout,
            json!({"url": misc, "call": "Sleep(4000)", "cache": false}),
            Expect::Error(504, "ran longer than".into()),
        ),
        76..=83 => (
            Kind::Panic,
            json!({"url": misc, "call": format!("Panic(\"boom-{unique}\")")}),
            Expect::Error(500, format!("boom-{unique}")),
        ),
        84..=86 => (
            Kind::MemoryBomb,
            json!({"url": misc, "call": "Alloc()", "cache": false}),
            Expect::Error(500, "memory limit".into()),
        ),
        _ => (
            Kind::Ip4,
            json!({"url": net, "call": "Addr(0)", "ip4": true, "cache": false}),
            Expect::DataPrefix("10.213.12.".into()),
        ),
    };
    Plan { kind, body, expect }
}

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<Kind, Vec<Duration>>,
    outcomes: BTreeMap<String, u64>,
    wrong: Vec<String>,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// The counters that must be back where they were once the server is at rest (the rest
/// is held by design, and bounded: checked below).
const AT_REST: [&str; 5] = ["child_processes", "mounts", "root_clones", "ip4", "slots_in_use"];
/// Sockets are compared by [`own_sockets`] instead.
const FDS_AT_REST: [&str; 2] = ["pipes", "other"];

/// What a process holds, for a leak report: its descriptors by kind (sockets by protocol,
/// addresses and state) and its threads.
fn holdings(pid: u32) -> String {
    let sockets = sockets(pid);
    let mut fds: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
        let target = std::fs::read_link(entry.path()).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
        let kind = match target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            Some(inode) => sockets.get(inode).cloned().unwrap_or_else(|| "socket of another namespace".into()),
            None if target.contains("/data/binaries/") => "a cached binary".into(),
            None => target.split(['[', ':']).next().unwrap_or_default().to_owned(),
        };
        *fds.entry(kind).or_default() += 1;
    }
    let mut threads: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_owned();
        *threads.entry(name).or_default() += 1;
    }
    format!("descriptors: {fds:?}\nthreads: {threads:?}")
}

/// The server's sockets but its HTTP connections: those are the clients' to keep alive or
/// close (the server closes idle ones after `client_timeout`, which the fault tests
/// check), and the test's own client holds a varying number.
fn own_sockets(pid: u32) -> usize {
    let sockets = sockets(pid);
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|t| Some(t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .filter(|inode| {
            let described = sockets.get(inode).map_or("", String::as_str);
            !described.starts_with("socket tcp") || described.ends_with("state 0A")
        })
        .count()
}

/// The sockets of `pid`'s network namespace by inode, described.
fn sockets(pid: u32) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let table = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default();
    for name in ["tcp", "tcp6", "udp", "udp6"] {
        for line in table(name).lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [_, local, remote, state, _, _, _, _, _, inode, ..] = f[..] {
                found.insert(inode.to_owned(), format!("socket {name} {local}->{remote} state {state}"));
            }
        }
    }
    for line in table("unix").lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let Some(inode) = f.get(6) {
            found.insert((*inode).to_owned(), format!("socket unix type {} {}", f[4], f.get(7).unwrap_or(&"")));
        }
    }
    for line in table("netlink").lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let Some(inode) = f.last() {
            found.insert((*inode).to_owned(), format!("socket netlink protocol {}", f[1]));
        }
    }
    found
}

/// The server's resources and health, each on a connection of its own that is closed
/// after the answer: pooled keep-alive connections, used in turn, would stay open and
/// count as the server's sockets.
async fn at_rest_probe(server: &Server) -> (Value, Value) {
    let probe = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let get = async |path: &str| -> Value {
        let request = probe.get(format!("{}{path}", server.url)).header("X-Sky-Island-Token", support::ADMIN_TOKEN);
        request.send().await.unwrap().json().await.unwrap()
    };
    (get("/healthcheck").await, get("/api/v1/admin/resources").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_gets_the_right_answers_and_leaks_nothing() {
    if !root_or_skip("mixed_load_gets_the_right_answers_and_leaks_nothing") {
        return;
    }
    let seconds = env_or("SKYISLAND_LOAD_SECONDS", 45);
    let concurrency = env_or("SKYISLAND_LOAD_CONCURRENCY", 16);
    let netns = NetNs::new();
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"2s\"\nmemory_limit = \"64MiB\"".into();
    sandbox.extra_config = format!("{}keep_idle = \"500ms\"\n", support::ip4_config(&netns, "skyl0", 12, 6));
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let net = Repo::from_fixture(&sandbox, "acme", "netcheck", "netcheck");
    let mut server = Server::start(&sandbox);
    for (url, call) in [(&geo, "Encode(1, 2)"), (&misc, "Hello()"), (&net, "Addr(0)")] {
        server.data(&url.import_path, call).await;
    }
    // At rest: the warm jails are back and the address namespaces have gone idle and down.
    let settle = async |server: &Server| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (health, now) = at_rest_probe(server).await;
            let rested = health["jails"]["running"] == 0
                && health["jails"]["warm"] == 2
                && now["ip4"]["leases"] == 0
                && now["ip4"]["idle_namespaces"] == 0;
            if rested {
                return now;
            }
            assert!(Instant::now() < deadline, "the server did not come to rest: {health}\n{now}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let before = settle(&server).await;
    let held_before = holdings(server.pid());
    let sockets_before = own_sockets(server.pid());

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers = (0..concurrency).map(|_| {
        let (http, url) = (server.http.clone(), server.url.clone());
        let (counter, tally) = (Arc::clone(&counter), Arc::clone(&tally));
        let (g, m, n) = (geo.import_path.clone(), misc.import_path.clone(), net.import_path.clone());
        tokio::spawn(async move {
            while Instant::now() < until {
                let Plan { kind, body, expect } = plan(counter.fetch_add(1, Ordering::Relaxed), &g, &m, &n);
                let sent = Instant::now();
                let response = http.post(format!("{url}/api/v1/function")).json(&body).send().await;
                let outcome = match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let answer: Value = response.json().await.unwrap_or(Value::Null);
                        let text = format!("{} {}", answer["error"], answer["stderr"]);
                        let right = match (&expect, status) {
                            (Expect::Data(want), 200) => answer["data"].as_str() == Some(want.as_str()),
                            (Expect::DataPrefix(want), 200) => {
                                answer["data"].as_str().is_some_and(|d| d.starts_with(want.as_str()))
                            }
                            // The pool has fewer addresses than there are workers.
                            (Expect::DataPrefix(_), 503) => text.contains("address"),
                            (Expect::Error(want, fragment), got) => *want == got && text.contains(fragment.as_str()),
                            _ => false,
                        };
                        if !right {
                            tally.lock().unwrap().wrong.push(format!("{body} → {status} {answer}"));
                        }
                        format!("{kind:?} {status}")
                    }
                    Err(e) => {
                        tally.lock().unwrap().wrong.push(format!("{body} → no answer: {e}"));
                        format!("{kind:?} no answer")
                    }
                };
                let mut tally = tally.lock().unwrap();
                tally.latencies.entry(kind).or_default().push(sent.elapsed());
                *tally.outcomes.entry(outcome).or_default() += 1;
            }
        })
    });
    for worker in futures::future::join_all(workers).await {
        worker.unwrap();
    }
    let elapsed = started.elapsed();

    let mut tally = std::mem::take(&mut *tally.lock().unwrap());
    let total: u64 = tally.outcomes.values().sum();
    println!(
        "\n{total} requests in {elapsed:.1?} ({:.0}/s) at concurrency {concurrency}",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("| kind | n | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|");
    let mut worst = Duration::ZERO;
    for (kind, latencies) in tally.latencies.iter_mut() {
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let max = *latencies.last().unwrap();
        worst = worst.max(max);
        println!(
            "| {kind:?} | {} | {:.1} | {:.1} | {:.1} |",
            latencies.len(),
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.99)),
            ms(max)
        );
    }
    println!("outcomes: {:?}", tally.outcomes);
    assert!(
        tally.wrong.is_empty(),
        "{} wrong answers, e.g.:\n{}",
        tally.wrong.len(),
        tally.wrong[..tally.wrong.len().min(10)].join("\n")
    );
    assert!(tally.latencies.len() == 8, "every kind of request was made: {:?}", tally.outcomes);
    assert!(worst < Duration::from_secs(60), "a request took {worst:?}");

    // Back at rest, the server holds what it held before.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = settle(&server).await;
        if AT_REST.iter().all(|k| now[k] == before[k])
            && FDS_AT_REST.iter().all(|k| now["fds"][k] == before["fds"][k])
            && own_sockets(server.pid()) == sockets_before
        {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "leaked:\nbefore: {before}\n{held_before}\nafter: {now}\n{}",
            holdings(server.pid())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("resources before: {before}\nresources after:  {after}");
    println!("held before:\n{held_before}\nheld after:\n{}", holdings(server.pid()));
    let slots = (support::MAX_JAILS + 2) as u64;
    let count = |v: &Value| v.as_u64().unwrap();
    assert!(count(&after["cgroups"]) <= slots, "one cgroup per slot at most: {after}");
    assert!(count(&after["fds"]["slot_locks"]) <= slots, "a lock per slot at most: {after}");
    assert!(count(&after["fds"]["cgroup_files"]) <= 2 * slots, "two cgroup files per slot at most: {after}");
    assert_eq!(after["fds"]["cached_binaries"], after["binaries_in_memory"], "one per binary in memory: {after}");
    assert!(count(&after["binaries_in_memory"]) <= count(&after["binary_cache_entries"]), "{after}");
    assert!(count(&after["fds"]["network_namespaces"]) <= slots, "a namespace per slot at most: {after}");
    server.stop();
    sandbox.assert_clean();
    assert_eq!(netns.links().iter().filter(|l| l.starts_with("sk") && *l != "skyl0").count(), 0, "{:?}", netns.links());
}
