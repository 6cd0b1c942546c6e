//! What a production service needs around the functions, through real servers: the
//! request cache and its Redis tier (a real redis-server, stopped and restarted), rate
//! limits, API keys, circuit breakers, request limits, metrics (Prometheus and StatsD) and
//! request ids in the logs.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Item, RedisServer, Repo, Sandbox, Server, bin, health_until, root_or_skip, run};

const FUNCTION_ROUTE: &str = r#"route="POST /api/v1/function""#;

/// A call's status, `X-Sky-Island-Cache` header and body.
async fn call(server: &Server, body: Value) -> (u16, String, Value) {
    let (status, headers, body) = server.call_with(&body.to_string(), &[]).await;
    let cache = headers.get("x-sky-island-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, body)
}

/// A call that must succeed: its data, `cache` field (checked against the header) and body.
async fn ok(server: &Server, body: Value) -> (String, String, Value) {
    let (status, header, answer) = call(server, body.clone()).await;
    assert_eq!(status, 200, "{body}: {answer}");
    assert_eq!(answer["cache"].as_str(), Some(header.as_str()), "the header and the field agree: {answer}");
    (answer["data"].as_str().unwrap().to_owned(), header, answer)
}

async fn entries(server: &Server) -> u64 {
    server.health().await["request_cache"]["entries"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cache_answers_identical_calls_without_a_jail() {
    if !root_or_skip("the_request_cache_answers_identical_calls_without_a_jail") {
        return;
    }
    let statsd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut sandbox = Sandbox::new();
    sandbox.top_config = format!("statsd_addr = \"{}\"", statsd.local_addr().unwrap());
    sandbox.extra_config = "[cache]\ndefault_expiration = \"3s\"\npurge_after = \"500ms\"\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let server = Server::start(&sandbox);
    let url = misc.import_path.as_str();
    // Each jail has a hostname of its own: equal answers mean no jail ran.
    let hostname = json!({"url": url, "call": "Hostname()"});

    let (status, headers, first) = server.call_with(&hostname.to_string(), &[]).await;
    assert_eq!((status, first["cache"].as_str()), (200, Some("miss")), "{first}");
    assert_eq!(headers["x-sky-island-cache"], "miss");
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let h1 = first["data"].as_str().unwrap().to_owned();

    let (data, cache, hit) = ok(&server, hostname.clone()).await;
    assert_eq!((data.as_str(), cache.as_str()), (h1.as_str(), "hit"), "{hit}");
    assert_eq!((hit["cache_tier"].as_str(), hit["built"].as_bool()), (Some("memory"), Some(false)));
    assert!(hit["cached_at_ms"].as_u64().is_some(), "{hit}");
    assert_eq!(hit["commit"], misc.head());

    // The key is the call as parsed, not as spelled; another call is another key.
    let (data, cache, _) = ok(&server, json!({"url": url, "call": " Hostname ( ) "})).await;
    assert_eq!((data.as_str(), cache.as_str()), (h1.as_str(), "hit"), "the same call, spelled otherwise");
    let (_, cache, _) = ok(&server, json!({"url": url, "call": "Uid()"})).await;
    assert_eq!(cache, "miss");

    // "cache": false is neither served from the cache nor stored in it.
    let (data, cache, _) = ok(&server, json!({"url": url, "call": "Hostname()", "cache": false})).await;
    assert_eq!(cache, "miss");
    assert_ne!(data, h1, "a fresh jail");
    assert_eq!(ok(&server, hostname.clone()).await.0, h1, "the uncached answer did not replace the cached one");

    // Failures are never cached.
    let before = entries(&server).await;
    for _ in 0..2 {
        let (status, _, body) = call(&server, json!({"url": url, "call": "Panic(\"boom\")"})).await;
        assert_eq!(status, 500, "{body}");
        assert!(body.get("cache").is_none(), "{body}");
    }
    assert_eq!(entries(&server).await, before);

    // Metrics moved as the requests were made.
    assert!(server.metric("skyisland_cache_hits_total", &[r#"tier="memory""#]).await >= 2.0);
    assert!(server.metric("skyisland_cache_misses_total", &[r#"tier="memory""#]).await >= 4.0);
    assert!(server.metric("skyisland_http_requests_total", &[FUNCTION_ROUTE, r#"status="200""#]).await >= 4.0);
    assert!(server.metric("skyisland_http_requests_total", &[FUNCTION_ROUTE, r#"status="500""#]).await >= 2.0);
    assert!(server.metric("skyisland_jails_created_total", &[r#"kind="exec""#]).await >= 4.0);
    assert!(server.metric("skyisland_builds_total", &[r#"result="ok""#]).await >= 1.0);
    assert!(server.metric("skyisland_clones_total", &[r#"result="ok""#]).await >= 1.0);
    assert!(server.metric("skyisland_function_duration_seconds_count", &[]).await >= 4.0);
    assert!(server.metric("skyisland_http_request_duration_seconds_count", &[FUNCTION_ROUTE]).await >= 6.0);

    // Expired results are not served, and are purged from memory.
    health_until(&server, "the expired result to be purged", Duration::from_secs(15), |h| {
        h["request_cache"]["entries"] == 0
    })
    .await;
    let (h2, cache, _) = ok(&server, hostname.clone()).await;
    assert_eq!(cache, "miss");
    assert_ne!(h2, h1);
    assert_eq!(ok(&server, hostname.clone()).await.0, h2);

    // cache_bust drops the repository's results too.
    let (h3, cache, _) = ok(&server, json!({"url": url, "call": "Hostname()", "cache_bust": true})).await;
    assert_eq!(cache, "miss");
    assert_ne!(h3, h2);
    assert_eq!(ok(&server, hostname.clone()).await.0, h3);

    // Every log line of a request carries its id, those of the build it started too.
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains(&request_id) && l.contains("dispatcher")),
        "no build line with request id {request_id}:\n{log}"
    );

    // StatsD got the same metrics.
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    while !seen.contains("skyisland_http_requests_total") && Instant::now() < deadline {
        if let Ok(n) = statsd.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("skyisland_http_requests_total:1|c"), "StatsD datagrams: {seen}");
    // A lone request on a quiet server is sent too, without waiting for a full datagram.
    statsd.set_nonblocking(true).unwrap();
    while statsd.recv(&mut buf).is_ok() {}
    std::thread::sleep(Duration::from_millis(1500));
    while statsd.recv(&mut buf).is_ok() {}
    statsd.set_nonblocking(false).unwrap();
    let _ = server.health().await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("/healthcheck") && Instant::now() < deadline {
        if let Ok(n) = statsd.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("/healthcheck"), "the health check's metrics never came: {seen}");
    let mut server = server;
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_can_turn_the_request_cache_off_by_default() {
    if !root_or_skip("the_operator_can_turn_the_request_cache_off_by_default") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = "[cache]\nrequest_cache = false\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let server = Server::start(&sandbox);
    let url = misc.import_path.as_str();
    let (a, cache_a, _) = ok(&server, json!({"url": url, "call": "Hostname()"})).await;
    let (b, cache_b, _) = ok(&server, json!({"url": url, "call": "Hostname()"})).await;
    assert_eq!((cache_a.as_str(), cache_b.as_str()), ("miss", "miss"));
    assert_ne!(a, b);
    let (c, _, _) = ok(&server, json!({"url": url, "call": "Hostname()", "cache": true})).await;
    let (d, cache_d, _) = ok(&server, json!({"url": url, "call": "Hostname()", "cache": true})).await;
    assert_eq!((d, cache_d.as_str()), (c, "hit"), "a request can ask for the cache");
    let mut server = server;
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_share_results_and_binaries_through_redis_and_outlive_it() {
    if !root_or_skip("servers_share_results_and_binaries_through_redis_and_outlive_it") {
        return;
    }
    let mut redis = RedisServer::start();
    let prefix = format!("t{:x}", rand::random::<u32>());
    let cache = format!("[cache]\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"\n", redis.url());
    let mut a_box = Sandbox::new();
    a_box.extra_config = cache.clone();
    let misc = Repo::from_fixture(&a_box, "acme", "misc", "misc");
    let py = Repo::from_items(
        &a_box,
        "acme",
        "pyshared",
        &[(
            "main.py",
            Item::File("import os\n\ndef hello():\n    return 'hello ' + str(len(os.listdir('/fn')))\n".into()),
        )],
    );
    let mut b_box = Sandbox::new();
    b_box.extra_config = cache;
    b_box.shared_git_root = Some(a_box.git_root());
    let a = Server::start(&a_box);
    let b = Server::start(&b_box);
    for server in [&a, &b] {
        health_until(server, "the server to connect to Redis", Duration::from_secs(20), |h| {
            h["redis"]["connected"] == true && h["status"] == "ok"
        })
        .await;
    }
    let url = misc.import_path.as_str();
    let hostname = json!({"url": url, "call": "Hostname()"});

    // A result computed on one server is a hit on the other.
    let (h1, cache, first) = ok(&a, hostname.clone()).await;
    assert_eq!((cache.as_str(), first["built"].as_bool()), ("miss", Some(true)));
    let (data, cache, hit) = ok(&b, hostname.clone()).await;
    assert_eq!((data.as_str(), cache.as_str(), hit["cache_tier"].as_str()), (h1.as_str(), "hit", Some("redis")));
    assert_eq!(ok(&b, hostname.clone()).await.2["cache_tier"], "memory");

    // A binary built on one server is fetched, not rebuilt, by the other.
    let (uid, _, answer) = ok(&b, json!({"url": url, "call": "Uid()", "cache": false})).await;
    assert!(uid.parse::<u32>().unwrap() > 0);
    assert_eq!(answer["built"], false, "{answer}");
    assert_eq!(b.metric("skyisland_builds_total", &[]).await, 0.0, "b compiled nothing");
    assert_eq!(b.metric("skyisland_cache_hits_total", &[r#"tier="redis_binary""#]).await, 1.0);
    assert!(b.log().contains("using a binary another server built"));

    // So is a package installed on one server (an interpreted function): once a has
    // offered it (in the background: wait until Redis holds one more), b unpacks it.
    let shared = || redis.cli(&["--scan", "--pattern", &format!("{prefix}:binary:*")]).lines().count();
    let before = shared();
    let (hello, _, first) = ok(&a, json!({"url": py.import_path, "call": "hello()", "cache": false})).await;
    assert_eq!((hello.as_str(), first["built"].as_bool()), ("hello 1", Some(true)), "{first}");
    support::eventually("a's install in Redis", Duration::from_secs(20), || shared() > before).await;
    let (hello, _, answer) = ok(&b, json!({"url": py.import_path, "call": "hello()", "cache": false})).await;
    assert_eq!((hello.as_str(), answer["built"].as_bool()), ("hello 1", Some(false)), "{answer}");
    assert_eq!(b.metric("skyisland_builds_total", &[]).await, 0.0, "b installed nothing");
    assert_eq!(b.metric("skyisland_cache_hits_total", &[r#"tier="redis_artifact""#]).await, 1.0);
    assert!(b.log().contains("using a package another server installed"));

    // cache_bust on one server drops the results everywhere.
    let (h2, _, _) = ok(&a, json!({"url": url, "call": "Hostname()", "cache_bust": true})).await;
    assert_ne!(h2, h1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (data, _, answer) = ok(&b, hostname.clone()).await;
        if data == h2 {
            assert_eq!(answer["cache"], "hit");
            break;
        }
        assert_eq!(data, h1, "only the old or the new result");
        assert!(Instant::now() < deadline, "b still serves the busted result");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis goes away (its data kept, as in a network partition): both keep serving, from
    // their own caches and jails, and say so.
    redis.cli(&["SAVE"]);
    redis.stop();
    for server in [&a, &b] {
        health_until(server, "the server to notice Redis is gone", Duration::from_secs(20), |h| {
            h["status"] == "degraded" && h["redis"]["connected"] == false
        })
        .await;
    }
    assert_eq!(ok(&a, hostname.clone()).await.0, h2, "the local tier still answers");
    let started = Instant::now();
    let (_, cache, _) = ok(&a, json!({"url": url, "call": "Sleep(1)"})).await;
    assert_eq!(cache, "miss");
    assert!(started.elapsed() < Duration::from_secs(1), "no waiting on a dead Redis: {:?}", started.elapsed());
    assert!(a.log().contains("Redis is unreachable"), "{}", a.log());
    // A bust meanwhile cannot reach Redis or b now; it is not lost.
    let (h3, _, _) = ok(&a, json!({"url": url, "call": "Hostname()", "cache_bust": true})).await;
    assert_ne!(h3, h2);

    // It comes back by itself.
    redis.restart();
    for server in [&a, &b] {
        health_until(server, "the server to reconnect to Redis", Duration::from_secs(30), |h| {
            h["status"] == "ok" && h["redis"]["connected"] == true
        })
        .await;
    }
    // The bust is carried out once Redis is back, and b does not keep what it missed:
    // neither its own copy of h2 nor the one Redis kept is served.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.log().contains("carried out a bust made while Redis was unreachable") {
        assert!(Instant::now() < deadline, "the bust was not carried out: {}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped = |l: &&str| l.contains("connected to Redis") && l.contains("dropped=") && !l.contains("dropped=0");
    assert!(b.log().lines().any(|l| dropped(&l)), "b kept its results over the outage: {}", b.log());
    let (h4, cache, _) = ok(&b, hostname.clone()).await;
    assert_eq!(cache, "miss");
    assert!(h4 != h2 && h4 != h1, "b served a busted result");
    let (hello, cache, _) = ok(&a, json!({"url": url, "call": "Hello()"})).await;
    assert_eq!((hello.as_str(), cache.as_str()), ("hello", "miss"));
    let (_, cache, answer) = ok(&b, json!({"url": url, "call": "Hello()"})).await;
    assert_eq!((cache.as_str(), answer["cache_tier"].as_str()), ("hit", Some("redis")));
    // Redis stalls (frozen: connections open, no answers): no request waits on it longer
    // than the promised 500 ms. A build is measured against one made just before.
    let started = Instant::now();
    assert_eq!(call(&a, json!({"url": url, "call": "Hello() + \"?\""})).await.0, 200);
    let build_before = started.elapsed();
    redis.pause();
    for (body, bound) in [
        (json!({"url": url, "call": "Hello()"}), Duration::from_millis(1500)),
        (json!({"url": url, "call": "Sleep(2)"}), Duration::from_millis(1500)),
        (json!({"url": url, "call": "Sleep(3)", "cache": false}), Duration::from_millis(1500)),
        (json!({"url": url, "call": "Hello() + \"!\""}), build_before + Duration::from_millis(1000)),
    ] {
        let started = Instant::now();
        let (status, _, answer) = call(&a, body.clone()).await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert!(took < bound, "{body}: {took:?} with Redis stalled (bound {bound:?})");
    }
    redis.resume();
    let (mut a, mut b) = (a, b);
    a.stop();
    b.stop();
    a_box.assert_clean();
    b_box.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_address_and_per_key_and_api_keys() {
    if !root_or_skip("rate_limits_per_address_and_per_key_and_api_keys") {
        return;
    }
    // Per client address: a bucket of 3, refilled at one token every 2 s.
    let mut sandbox = Sandbox::new();
    sandbox.top_config = "log_format = \"json\"".into();
    sandbox.extra_config = "[rate_limit]\nper_second = 0.5\nburst = 3\n".into();
    let server = Server::start(&sandbox);
    // Invalid bodies pass the guard and fail after it: cheap requests that count. The
    // first three always pass; then a 429 comes (a slow machine may refill a token first).
    let mut sent = 0;
    let (headers, body) = loop {
        let (status, headers, body) = server.call_with("{", &[]).await;
        sent += 1;
        if status == 429 {
            break (headers, body);
        }
        assert_eq!(status, 400, "{body}");
        assert!(sent < 20, "never limited");
    };
    assert!(sent > 3, "the burst of 3 passed");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(body["error"].as_str().unwrap().contains("client address"), "{body}");
    for _ in 0..10 {
        assert_eq!(server.get("/healthcheck").await.0, 200, "the health check is not limited");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(server.call_with("{", &[]).await.0, 400, "the bucket refills");
    assert!(server.metric("skyisland_rate_limited_total", &[r#"by="client address""#]).await >= 1.0);
    let log = server.log();
    let entries: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}")))
        .collect();
    let limited = entries.iter().find(|e| e["fields"]["message"] == "rate limited").expect("a line for the 429");
    assert!(limited["span"]["id"].as_str().is_some_and(|id| id.len() >= 32), "with its request id: {limited}");
    drop(server);

    // API keys: one configured, one made with the CLI (with a rate of its own).
    let mut sandbox = Sandbox::new();
    sandbox.extra_config =
        "[auth]\napi_keys_required = true\napi_keys = [\"configured-key-0123456789\"]\nkey_header = \"X-Key\"\n".into();
    let config = sandbox.config();
    let api_key = |args: &[&str]| run(Command::new(bin()).args(["api-key", "--config"]).arg(&config).args(args));
    let limited = api_key(&["new", "--name", "ci", "--per-second", "0.05", "--burst", "2"]).trim().to_owned();
    let server = Server::start(&sandbox);

    let (status, headers, body) = server.call_with("{", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(server.call_with("{", &[("X-Key", "not-a-key-at-all")]).await.0, 403);
    assert_eq!(server.call_with("{", &[("Authorization", "Bearer not-a-key")]).await.0, 403);
    assert_eq!(server.call_with("{", &[("Authorization", "Basic abc")]).await.0, 401);
    assert_eq!(server.call_with("{", &[("Authorization", "Bearer configured-key-0123456789")]).await.0, 400);
    assert_eq!(server.call_with("{", &[("X-Key", &limited)]).await.0, 400);
    assert_eq!(server.call_with("{", &[("X-Key", &limited)]).await.0, 400);
    let (status, _, body) = server.call_with("{", &[("X-Key", &limited)]).await;
    assert_eq!(status, 429, "the key's own bucket of 2: {body}");
    assert!(body["error"].as_str().unwrap().contains("API key"), "{body}");
    assert_eq!(server.call_with("{", &[("X-Key", "configured-key-0123456789")]).await.0, 400, "other keys go on");
    assert_eq!(server.get("/healthcheck").await.0, 200, "the health check stays open");

    // The keys file is root's alone: it holds the keys' digests.
    let keys_file = sandbox.data_dir().join("api-keys.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&keys_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", keys_file.display());
    assert!(!std::fs::read_to_string(&keys_file).unwrap().contains(&limited), "only a digest is kept");
    // A key made or revoked while the server runs counts within a second.
    let fresh = api_key(&["new", "--name", "later"]).trim().to_owned();
    let id = api_key(&["list"])
        .lines()
        .find(|l| l.ends_with("later\tdefault rate"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    wait_for_status(&server, &fresh, 400).await;
    api_key(&["revoke", &id]);
    wait_for_status(&server, &fresh, 403).await;
    assert!(server.metric("skyisland_auth_rejected_total", &[r#"reason="missing""#]).await >= 1.0);

    // The operator calls with the admin token instead of a key (the console's "Try it"); a
    // wrong token is refused like a wrong key.
    assert_eq!(server.call_with("{", &[("X-Sky-Island-Token", support::ADMIN_TOKEN)]).await.0, 400);
    assert_eq!(server.call_with("{", &[("X-Sky-Island-Token", "wrong")]).await.0, 403);
    // The keys through the admin API (the console's Keys page): listed without secrets or
    // digests, with when each was last used; made (the secret shown once) and revoked at once.
    let (status, keys) = server.admin(reqwest::Method::GET, "/api/v1/admin/keys").await;
    assert_eq!(status, 200, "{keys}");
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed[0]["source"], "config", "{keys}");
    assert!(listed[0]["last_used_ms"].as_u64().is_some(), "the configured key was used: {keys}");
    let ci = listed.iter().find(|k| k["name"] == "ci").expect("the CLI's key");
    assert_eq!(
        (ci["source"].as_str(), ci["per_second"].as_f64(), ci["burst"].as_u64()),
        (Some("file"), Some(0.05), Some(2))
    );
    assert!(!keys.to_string().contains("sha256") && !keys.to_string().contains(&limited), "{keys}");
    let make = |body: Value| {
        let request = server.http.post(format!("{}/api/v1/admin/keys", server.url));
        async move {
            let r = request.header("X-Sky-Island-Token", support::ADMIN_TOKEN).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    for (bad, why) in [
        (json!({"name": ""}), "name must be"),
        (json!({"name": "x", "per_second": 0}), "per_second must be"),
        (json!({"name": "x", "burst": 0}), "burst must be"),
        (json!({"name": "x", "admin": true}), "unknown field"),
    ] {
        let (status, body) = make(bad).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{why}: {body}");
    }
    let (status, made) = make(json!({"name": "from the API"})).await;
    assert_eq!(status, 201, "{made}");
    let secret = made["key"].as_str().unwrap().to_owned();
    assert_eq!(server.call_with("{", &[("X-Key", &secret)]).await.0, 400, "in use at once");
    let id = made["id"].as_str().unwrap();
    let config_id = listed[0]["id"].as_str().unwrap();
    assert_eq!(server.admin(reqwest::Method::DELETE, &format!("/api/v1/admin/keys/{config_id}")).await.0, 409);
    assert_eq!(server.admin(reqwest::Method::DELETE, "/api/v1/admin/keys/nope").await.0, 404);
    assert_eq!(server.admin(reqwest::Method::DELETE, &format!("/api/v1/admin/keys/{id}")).await.0, 200);
    assert_eq!(server.call_with("{", &[("X-Key", &secret)]).await.0, 403, "revoked at once");
    assert_eq!(server.admin(reqwest::Method::DELETE, &format!("/api/v1/admin/keys/{id}")).await.0, 404);
    let mut server = server;
    server.stop();
    sandbox.assert_clean();
}

/// Waits until a request with `key` gets `want` — within the second the server promises
/// (plus the request's own time).
async fn wait_for_status(server: &Server, key: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let status = server.call_with("{", &[("X-Key", key)]).await.0;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_and_request_limits() {
    if !root_or_skip("circuit_breakers_and_request_limits") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = "[circuit_breaker]\nfailures = 2\ncool_down = \"2s\"\n\
        [limits]\nmax_call = \"100B\"\nmax_in_flight = 1\nmax_queue = 1\n[cache]\nrequest_cache = false\n"
        .into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let server = Server::start(&sandbox);
    let missing = json!({"url": "example.test/acme/later", "call": "Hello()"});

    // Two clone failures in a row open the breaker: the third request fails at once.
    for _ in 0..2 {
        let (status, _, body) = call(&server, missing.clone()).await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, headers, body) = server.call_with(&missing.to_string(), &[]).await;
    assert_eq!(status, 503, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(body["error"].as_str().unwrap().contains("refused"), "{body}");
    // Other repositories are not affected.
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");

    // The repository appears; after the cool-down a trial goes through and closes it.
    Repo::from_fixture(&sandbox, "acme", "later", "misc");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(call(&server, missing.clone()).await.0, 200);
    assert_eq!(call(&server, missing.clone()).await.0, 200);
    assert!(server.metric("skyisland_circuit_opened_total", &[]).await >= 1.0);
    assert!(server.metric("skyisland_circuit_rejected_total", &[]).await >= 1.0);

    // A call longer than max_call.
    let long = format!("Echo(\"{}\")", "x".repeat(200));
    let (status, _, body) = call(&server, json!({"url": misc.import_path, "call": long})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("the limit is 100B"), "{body}");
    // A body larger than max_body.
    let huge = json!({"url": misc.import_path, "call": "x".repeat(100_000)}).to_string();
    assert_eq!(server.call_with(&huge, &[]).await.0, 413);

    // One request in flight, one waiting; a third is refused at once.
    let slow = json!({"url": misc.import_path, "call": "Sleep(3000)"}).to_string();
    let (r1, r2, r3) =
        tokio::join!(server.call_with(&slow, &[]), server.call_with(&slow, &[]), server.call_with(&slow, &[]));
    let mut statuses = [r1.0, r2.0, r3.0];
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503], "{r1:?} {r2:?} {r3:?}");
    let refused = [&r1, &r2, &r3].into_iter().find(|r| r.0 == 503).unwrap();
    assert_eq!(refused.1["retry-after"], "1");
    assert!(server.metric("skyisland_overloaded_total", &[]).await >= 1.0);
    let mut server = server;
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_busts_rebuild_at_most_once_per_interval_and_need_a_key_when_keys_do() {
    if !root_or_skip("cache_busts_rebuild_at_most_once_per_interval_and_need_a_key_when_keys_do") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config =
        "[cache]\nbust_interval = \"1h\"\n[auth]\napi_keys_required = true\napi_keys = [\"sky_test_key_0123456789\"]\n"
            .into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    let key = [("Authorization", "Bearer sky_test_key_0123456789")];
    let body = |bust: bool| json!({"url": misc.import_path, "call": "Hostname()", "cache_bust": bust}).to_string();
    let (status, _, first) = server.call_with(&body(false), &key).await;
    assert_eq!((status, &first["built"]), (200, &json!(true)), "{first}");
    // Without a key, no bust (nor any call).
    let (status, _, _) = server.call_with(&body(true), &[]).await;
    assert_eq!(status, 401);
    // The first bust rebuilds; the next within the interval drops the results only.
    let (_, _, busted) = server.call_with(&body(true), &key).await;
    assert_eq!((&busted["built"], &busted["cache"]), (&json!(true), &json!("miss")), "{busted}");
    for _ in 0..3 {
        let (status, _, again) = server.call_with(&body(true), &key).await;
        assert_eq!((status, &again["built"], &again["cache"]), (200, &json!(false), &json!("miss")), "{again}");
        assert_ne!(again["data"], busted["data"], "a fresh jail answered");
    }
    assert_eq!(server.metric("skyisland_cache_busts_total", &[r#"scope="full""#]).await, 1.0);
    assert_eq!(server.metric("skyisland_cache_busts_total", &[r#"scope="results""#]).await, 3.0);
    assert_eq!(server.metric("skyisland_builds_total", &[]).await, 2.0, "one build, one rebuild");
    server.stop();
    sandbox.assert_clean();
}
