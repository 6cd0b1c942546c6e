//! The mixed load shared by the load test and the chaos soak: what requests to send (a
//! plan per request number), what each must get back, the tally of outcomes and latencies,
//! and what a server process holds, for leak reports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Server;

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
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
pub enum Expect {
    Data(String),
    DataPrefix(String),
    /// A status and a fragment of the error (or of its stderr).
    Error(u16, String),
}

pub struct Plan {
    pub kind: Kind,
    pub body: Value,
    pub expect: Expect,
}

pub fn plan(n: u64, geo: &str, misc: &str, net: &str, net_prefix: &str) -> Plan {
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
            Expect::DataPrefix(net_prefix.into()),
        ),
    };
    Plan { kind, body, expect }
}

#[derive(Default)]
pub struct Tally {
    pub latencies: BTreeMap<Kind, Vec<Duration>>,
    pub outcomes: BTreeMap<String, u64>,
    pub wrong: Vec<String>,
}

pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// The counters that must be back where they were once the server is at rest (the rest
/// is held by design, and bounded: checked below).
pub const AT_REST: [&str; 5] = ["child_processes", "mounts", "root_clones", "ip4", "slots_in_use"];
/// Sockets are compared by [`own_sockets`] instead.
pub const FDS_AT_REST: [&str; 2] = ["pipes", "other"];

/// What a process holds, for a leak report: its descriptors by kind (sockets by protocol,
/// addresses and state) and its threads.
pub fn holdings(pid: u32) -> String {
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
pub fn own_sockets(pid: u32) -> usize {
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
pub fn sockets(pid: u32) -> BTreeMap<String, String> {
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
pub async fn at_rest_probe(server: &Server) -> (Value, Value) {
    let probe = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let get = async |path: &str| -> Value {
        let request = probe.get(format!("{}{path}", server.url)).header("X-Sky-Island-Token", super::ADMIN_TOKEN);
        request.send().await.unwrap().json().await.unwrap()
    };
    (get("/healthcheck").await, get("/api/v1/admin/resources").await)
}

/// Waits until `server` is at rest and answers its resources: no jail running or
/// pre-started and no function remembered for pre-starting (the tests' servers forget a
/// function 2 s after its last call), `warm` warm jails ready when given (`[jails] warm_jails`; a server makes them once
/// it has run a call), every warm jail ready in any case (the spawner and the warm jails are
/// its only children, and each warm jail holds one execution slot), no build slot, no
/// address lease, no idle address namespace. A jail still being made ready is a child
/// without being warm yet; comparing resources taken then with resources at rest is what
/// made one test fail one run in many.
pub async fn settle(server: &Server, warm: Option<u64>) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (health, now) = at_rest_probe(server).await;
        let refilled = warm.is_none_or(|w| now["jails"]["warm"] == w);
        let warm = &now["jails"]["warm"];
        let ip4_idle = now["ip4"].is_null() || (now["ip4"]["leases"] == 0 && now["ip4"]["idle_namespaces"] == 0);
        // (A function remembered for pre-starting holds a descriptor of its program.)
        let rested = health["jails"]["running"] == 0
            && now["jails"]["prestarted"] == 0
            && health["jails"]["prestarted"]["functions"] == 0
            && refilled
            && now["child_processes"].as_u64() == warm.as_u64().map(|w| w + 1)
            && now["slots_in_use"]["exec"] == *warm
            && now["slots_in_use"]["build"] == 0
            && ip4_idle;
        if rested {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not come to rest: {health}\n{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `status` and `answer` are right for what `expect`s.
pub fn right(expect: &Expect, status: u16, answer: &Value) -> bool {
    let text = format!("{} {}", answer["error"], answer["stderr"]);
    match (expect, status) {
        (Expect::Data(want), 200) => answer["data"].as_str() == Some(want.as_str()),
        (Expect::DataPrefix(want), 200) => answer["data"].as_str().is_some_and(|d| d.starts_with(want.as_str())),
        // The pool has fewer addresses than there are workers.
        (Expect::DataPrefix(_), 503) => text.contains("address"),
        (Expect::Error(want, fragment), got) => *want == got && text.contains(fragment.as_str()),
        _ => false,
    }
}

/// Prints the latency table; returns the worst latency.
pub fn report(tally: &mut Tally) -> Duration {
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
    worst
}
