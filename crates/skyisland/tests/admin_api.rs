//! The health check and the admin endpoints against a real server on 127.0.0.1:0.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Repo, Sandbox, Server, root_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_admin_authentication() {
    if !root_or_skip("health_and_admin_authentication") {
        return;
    }
    let sandbox = Sandbox::new();
    let mut server = Server::start(&sandbox);
    let health: Value =
        server.http.get(format!("{}/healthcheck", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let sha = health["git_sha"].as_str().unwrap();
    assert!(sha == "unknown" || sha.len() >= 40, "{sha}");
    assert_eq!(health["jails"]["capacity"], support::MAX_JAILS);
    // Debian's Go and the current one scripts/setup.sh installs, oldest first.
    let toolchains: Vec<&str> =
        health["toolchains"].as_array().unwrap().iter().map(|t| t["version"].as_str().unwrap()).collect();
    assert!(toolchains.len() >= 2 && toolchains[0].starts_with("go1.19"), "{health}");
    assert!(toolchains.contains(&"go1.27.3"), "{health}");
    assert_eq!(health["go"], toolchains[0]);

    for path in ["/api/v1/admin/jails", "/api/v1/admin/api-stats", "/api/v1/admin/jail/x"] {
        let r = server.http.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}: the original's status for a missing token");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "Forbidden", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("X-Sky-Island-Token"), "{body}");
        let r = server
            .http
            .get(format!("{}{path}", server.url))
            .header("X-Sky-Island-Token", "wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "Forbidden", "{body}");
        assert!(body["detail"].as_str().unwrap().starts_with("wrong admin token"), "{body}");
    }
    // Right after start-up the build jail may be building the generator: it is listed.
    let mut listed = Vec::new();
    for _ in 0..3000 {
        let (status, body) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        assert_eq!(status, 200);
        listed = body["jails"].as_array().unwrap().clone();
        if listed.is_empty() {
            break;
        }
        assert!(listed.iter().all(|j| j["kind"] == "build"), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed.is_empty(), "the build jail finished: {listed:?}");
    let (status, body) = server.admin(Method::GET, "/api/v1/admin/jail/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("no running jail"), "{body}");
    let (status, _) = server.admin(Method::DELETE, "/api/v1/admin/jail/nope").await;
    assert_eq!(status, 404);

    // Unknown routes and methods answer JSON too.
    let r = server.http.get(format!("{}/nowhere", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("no such endpoint"));
    let r = server.http.put(format!("{}/healthcheck", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().is_some());

    let (status, stats) = server.admin(Method::GET, "/api/v1/admin/api-stats").await;
    assert_eq!(status, 200);
    assert!(stats["uptime_seconds"].as_u64().is_some());
    assert_eq!(stats["routes"]["GET /healthcheck"]["count"], 1);
    assert!(stats["routes"]["GET /api/v1/admin/jails"]["client_errors"].as_u64() >= Some(2), "{stats}");
    assert_eq!(stats["routes"]["GET /api/v1/admin/api-stats"]["client_errors"], 2, "{stats}");
    assert!(stats["statuses"]["404"].as_u64().unwrap() >= 3, "{stats}");
    // The original's (thoas/stats) fields, beside ours.
    assert_eq!(stats["pid"], server.pid(), "{stats}");
    let uptime = stats["uptime"].as_str().unwrap();
    assert!(uptime.ends_with('s') && uptime.chars().next().unwrap().is_ascii_digit(), "{stats}");
    assert!(stats["uptime_sec"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(stats["time"].as_str().unwrap().ends_with(" +0000 UTC"), "{stats}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((stats["unixtime"].as_i64().unwrap() - now).abs() <= 2, "{stats}");
    assert_eq!(stats["total_count"], stats["requests"], "{stats}");
    assert_eq!(stats["total_status_code_count"]["404"], stats["statuses"]["404"], "{stats}");
    assert!(stats["status_code_count"].is_object() && stats["count"].is_u64(), "{stats}");
    for key in ["total_response_time", "average_response_time"] {
        assert!(stats[key].as_str().unwrap().ends_with('s'), "{key}: {stats}");
        assert!(stats[format!("{key}_sec")].as_f64().unwrap() > 0.0, "{key}: {stats}");
    }

    // The console: a page and its modules, no data in any; the admin data comes from the
    // token-protected endpoints above, in the configured header (tests/console.rs drives
    // it in a real browser).
    let r = server.http.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in
        ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]
    {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-"), "{policy}");
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<body data-admin-header="X-Sky-Island-Token">"#), "{page}");
    assert!(page.contains(r#"<script type="module" src="/console/app.js"></script>"#), "{page}");
    assert!(!page.contains("<script>") && !page.contains("style="), "nothing inline: {page}");
    let r = server.http.get(format!("{}/console/app.js", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert_eq!(r.headers()["content-security-policy"].to_str().unwrap(), policy);
    let r = server.http.get(format!("{}/console/style.css", server.url)).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    let (status, body) = server.get("/console/../../etc/passwd").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/console/nothing.js").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no console asset"), "{body}");

    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jails_are_listed_described_and_killed_at_once() {
    if !root_or_skip("running_jails_are_listed_described_and_killed_at_once") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"60s\"\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    let url = misc.import_path.clone();
    assert_eq!(server.data(&url, "Hello()").await, "hello");

    let sleeper = |ms: u32| {
        let http = server.http.clone();
        let endpoint = format!("{}/api/v1/function", server.url);
        let body = json!({"url": url, "call": format!("Sleep({ms})")});
        tokio::spawn(async move {
            let r = http.post(endpoint).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let long = sleeper(50_000);
    let mut listed = Value::Null;
    for _ in 0..500 {
        let (_, body) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        if body["count"] == 1 && body["jails"][0]["state"] == "running" {
            listed = body["jails"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = listed["id"].as_str().unwrap_or_else(|| panic!("the jail was never listed")).to_owned();
    // What its slot's cgroup says it uses.
    assert!(listed["memory_bytes"].as_u64().is_some_and(|m| m > 100_000), "{listed}");
    assert!(listed["cpu_ms"].as_f64().is_some_and(|c| c >= 0.0), "{listed}");
    let (status, jail) = server.admin(Method::GET, &format!("/api/v1/admin/jail/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(jail["name"], format!("sky-{id}"));
    assert_eq!(jail["hostname"], jail["name"]);
    assert_eq!(jail["kind"], "exec");
    assert!(jail["pid"].as_i64().unwrap() > 1);
    assert!(jail["path"].as_str().unwrap().ends_with("/root"), "{jail}");
    assert!(jail["started_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(jail["limits"]["pids"], 64);
    assert_eq!(jail["limits"]["timeout_ms"], 60_000);
    assert!(jail["label"].as_str().unwrap().contains("Sleep(50000)"), "{jail}");
    let uid = jail["uid"].as_u64().unwrap() as u32;
    assert!((sandbox.uid_base + 1..=sandbox.uid_base + support::MAX_JAILS).contains(&uid));
    // The original's fields, and its `details` wrapper; found by jid as well.
    let jid = jail["jid"].as_u64().unwrap();
    assert!(jid >= 1, "{jail}");
    assert_eq!((&jail["ip4"], &jail["ip6"]), (&json!(""), &json!("")), "{jail}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(jail["OSRelease"], release.trim(), "{jail}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(jail["host"], hostname.trim(), "{jail}");
    for field in ["id", "jid", "name", "hostname", "path", "host", "OSRelease", "ip4", "ip6"] {
        assert_eq!(jail["details"][field], jail[field], "{field}: {jail}");
    }
    let (status, by_jid) = server.admin(Method::GET, &format!("/api/v1/admin/jail/{jid}")).await;
    assert_eq!((status, &by_jid["id"]), (200, &json!(id)), "{by_jid}");

    // The functions called since start-up, and this one's invocations (the console's pages).
    let (status, functions) = server.admin(Method::GET, "/api/v1/admin/functions").await;
    assert_eq!(status, 200, "{functions}");
    let function = &functions["functions"][0];
    assert_eq!(
        (&function["url"], &function["runtime"], &function["calls"]),
        (&json!(url), &json!("go"), &json!(1)),
        "{functions}"
    );
    assert_eq!(function["commit"], json!(misc.head()), "{functions}");
    assert!(function["last_build_ms"].as_f64().is_some(), "the first call built: {functions}");
    let path = format!("/api/v1/admin/function?url={url}");
    let (status, detail) = server.admin(Method::GET, &path).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["invocations"][0]["call"], "Hello()", "{detail}");
    assert_eq!(
        (&detail["invocations"][0]["status"], &detail["invocations"][0]["cache"]),
        (&json!(200), &json!("miss")),
        "{detail}"
    );
    assert_eq!(detail["builds"][0]["ok"], true, "{detail}");
    assert_eq!(server.admin(Method::GET, "/api/v1/admin/function").await.0, 400);
    assert_eq!(server.admin(Method::GET, "/api/v1/admin/function?url=example.test/nobody").await.0, 404);

    let started = std::time::Instant::now();
    let (status, body) = server.admin(Method::DELETE, &format!("/api/v1/admin/jail/{jid}")).await;
    assert_eq!((status, &body["gone"], &body["deleted"]), (200, &json!(true), &json!(jid)), "{body}");
    assert_eq!(body["killed"], json!([id]), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "killed at once");
    let (status, answer) = long.await.unwrap();
    assert_eq!(status, 500, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("killed by an administrator"), "{answer}");
    let pid = jail["pid"].as_u64().unwrap() as u32;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the jail's first process is gone");
    assert!(
        !sandbox.census().processes.iter().any(|p| std::fs::read_to_string(format!("/proc/{p}/status"))
            .is_ok_and(|s| s.contains(&format!("Uid:\t{uid}\t")))),
        "nothing of its uid survives"
    );

    // Kill them all.
    let sleepers: Vec<_> = (0..3).map(|_| sleeper(50_000)).collect();
    for _ in 0..3000 {
        let (_, body) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        if body["jails"].as_array().unwrap().iter().filter(|j| j["state"] == "running").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = server.admin(Method::DELETE, "/api/v1/admin/jails").await;
    assert_eq!(status, 200);
    assert_eq!((body["killed"].as_array().unwrap().len(), &body["gone"]), (3, &json!(true)), "{body}");
    let mut jids: Vec<u64> = body["deleted"].as_array().unwrap().iter().map(|j| j.as_u64().unwrap()).collect();
    jids.sort_unstable();
    jids.dedup();
    assert_eq!(jids.len(), 3, "jids are unique among running jails: {body}");
    for s in sleepers {
        assert_eq!(s.await.unwrap().0, 500);
    }
    let (_, body) = server.admin(Method::GET, "/api/v1/admin/jails").await;
    assert_eq!(body["count"], 0);
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_the_last_minutes_for_the_console() {
    if !root_or_skip("the_server_keeps_the_last_minutes_for_the_console") {
        return;
    }
    let sandbox = Sandbox::new();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let server = Server::start(&sandbox);
    let url = misc.import_path.as_str();
    assert_eq!(server.get("/api/v1/admin/history").await.0, 403);
    // Calls in one 5 s interval: ten answered by jails or the cache, two refused, one
    // failing.
    assert_eq!(server.data(url, "Hello()").await, "hello");
    for _ in 0..9 {
        assert_eq!(server.data(url, "Hello()").await, "hello");
    }
    for _ in 0..2 {
        assert_eq!(server.call(json!({"url": url, "call": "Hello("})).await.0, 400);
    }
    assert_eq!(server.call(json!({"url": url, "call": "Panic(\"x\")", "cache": false})).await.0, 500);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let points = loop {
        let (status, history) = server.admin(Method::GET, "/api/v1/admin/history").await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(history["interval_seconds"], 5);
        let points = history["points"].as_array().unwrap().clone();
        // The calls may straddle two points: wait until both have been taken.
        let calls: f64 = points
            .iter()
            .map(|p| {
                ["ok_per_second", "client_errors_per_second", "server_errors_per_second"]
                    .iter()
                    .map(|k| p[*k].as_f64().unwrap())
                    .sum::<f64>()
                    * 5.0
            })
            .sum();
        if calls.round() as u64 >= 13 {
            break points;
        }
        assert!(std::time::Instant::now() < deadline, "the calls never showed: {history}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sum = |key: &str| points.iter().map(|p| p[key].as_f64().unwrap() * 5.0).sum::<f64>().round() as u64;
    assert_eq!((sum("ok_per_second"), sum("client_errors_per_second"), sum("server_errors_per_second")), (10, 2, 1));
    let with_calls: Vec<&Value> = points.iter().filter(|p| p["p50_ms"].is_number()).collect();
    assert!(!with_calls.is_empty());
    // Nine of the ten successful calls (and the failed one, which is not stored) after the
    // first: the cache answered nine of eleven.
    let ratios: Vec<f64> = with_calls.iter().filter_map(|p| p["cache_hit_ratio"].as_f64()).collect();
    assert!(ratios.iter().any(|r| *r > 0.0), "{points:?}");
    for point in &points {
        assert_eq!(point["jail_capacity"], support::MAX_JAILS, "{point}");
        assert!(point["t"].as_u64().unwrap() > 1_700_000_000_000);
    }
}
