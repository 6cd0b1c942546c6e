//! Several servers sharing asynchronous work through a real redis-server started by the
//! test: each invocation runs to one outcome though a server dies midway (the other takes
//! its cut-short work over after the visibility timeout), a schedule's tick runs on one
//! server only, and a server whose Redis is gone refuses new async work (503) rather
//! than accept what it cannot keep.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, RedisServer, Repo, Sandbox, Server, health_until, root_or_skip};

async fn request(server: &Server, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request =
        server.http.request(method, format!("{}{path}", server.url)).header("X-Sky-Island-Token", ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    request(server, reqwest::Method::GET, path, None).await
}

async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    request(server, reqwest::Method::POST, path, Some(body)).await
}

/// Two servers on one Redis (and one set of repositories), each with its own data
/// directory and jail slots.
fn two_servers(redis: &RedisServer, more: &str) -> (Sandbox, Sandbox) {
    let prefix = format!("t{:x}", rand::random::<u32>());
    let config = format!(
        "[cache]\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"\n[queue]\nvisibility_timeout = \"3s\"\n{more}",
        redis.url()
    );
    let mut a = Sandbox::new();
    a.extra_config = config.clone();
    let mut b = Sandbox::new();
    b.extra_config = config;
    b.shared_git_root = Some(a.git_root());
    (a, b)
}

async fn connected(server: &Server) {
    health_until(server, "the server to connect to Redis", Duration::from_secs(20), |h| {
        h["redis"]["connected"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_each_invocation_once_and_one_finishes_what_a_dead_one_began() {
    if !root_or_skip("two_servers_run_each_invocation_once_and_one_finishes_what_a_dead_one_began") {
        return;
    }
    let mut redis = RedisServer::start();
    let (a_box, b_box) = two_servers(&redis, "[async]\nworkers = 2\nmax_attempts = 3\nretry_backoff = \"100ms\"\n");
    let misc = Repo::from_fixture(&a_box, "acme", "misc", "misc");
    let url = misc.import_path.as_str();
    let mut a = Server::start(&a_box);
    let b = Server::start(&b_box);
    connected(&a).await;
    connected(&b).await;
    // Built on both first, so that the work is calls, not builds.
    assert_eq!(a.data(url, "Sleep(1)").await, "slept");
    assert_eq!(b.data(url, "Sleep(1)").await, "slept");

    let mut ids = Vec::new();
    for i in 0..100 {
        let server = if i % 2 == 0 { &a } else { &b };
        let body = json!({"url": url, "call": format!("Sleep({})", 300 + i), "async": true, "cache": false});
        let (status, answer) = post(server, "/api/v1/function", &body).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    // Either server finds any invocation.
    assert_eq!(get(&b, &format!("/api/v1/invocations/{}", ids[0])).await.0, 200);
    // Midway, a dies with work in hand.
    support::eventually_async("a third of the invocations succeed", Duration::from_secs(120), || async {
        get(&b, "/api/v1/invocations?status=succeeded&limit=1000").await.1["count"].as_u64().unwrap() >= 30
    })
    .await;
    // ... with work in hand: a call of its own running in a jail.
    support::eventually_async("a runs an invocation", Duration::from_secs(30), || async {
        let (_, jails) = get(&a, "/api/v1/admin/jails").await;
        jails["jails"].as_array().is_some_and(|j| j.iter().any(|j| j["label"].as_str().unwrap_or("").contains("Sleep")))
    })
    .await;
    let a_ran = a.metric("skyisland_async_attempts_total", &["kind=\"call\""]).await;
    a.crash();
    let mut taken_over = 0;
    for id in &ids {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        let job = loop {
            let (status, job) = get(&b, &format!("/api/v1/invocations/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if job["status"] == "succeeded" || job["status"] == "failed" {
                break job;
            }
            assert!(std::time::Instant::now() < deadline, "{id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["data"], "slept", "{job}");
        let attempts: Vec<u64> =
            job["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap()).collect();
        match attempts.as_slice() {
            [200] => {}
            [503, 200] => taken_over += 1,
            other => panic!("unexpected attempts {other:?}: {job}"),
        }
    }
    assert!(
        (1..=2).contains(&taken_over),
        "a's one or two running attempts were cut short and taken over, not {taken_over}"
    );
    let b_ran = b.metric("skyisland_async_attempts_total", &["kind=\"call\""]).await;
    assert!(a_ran >= 1.0 && b_ran >= 1.0, "both servers worked: a {a_ran}, b {b_ran}");
    // (a's count was read before it died, so it may miss runs it finished after.)
    assert!(a_ran + b_ran <= 100.0, "no invocation finished twice: a {a_ran}, b {b_ran}");
    let (_, all) = get(&b, "/api/v1/invocations?limit=1000").await;
    assert_eq!(all["count"], 100, "nothing lost, nothing doubled");
    let health = b.health().await;
    assert_eq!(health["async"]["backend"], "redis", "{health}");
    assert_eq!(
        (health["async"]["queued"].as_u64(), health["async"]["running"].as_u64()),
        (Some(0), Some(0)),
        "{health}"
    );

    // Redis gone: new async work is refused, not accepted into nowhere.
    redis.stop();
    let body = json!({"url": url, "call": "Hello()", "async": true});
    let (status, answer) = post(&b, "/api/v1/function", &body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(b.health().await["async"]["available"], false);
    // Synchronous calls go on.
    assert_eq!(b.data(url, "Hello()").await, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_ticks_once_per_tick_across_two_servers() {
    if !root_or_skip("a_schedule_ticks_once_per_tick_across_two_servers") {
        return;
    }
    let redis = RedisServer::start();
    let (a_box, b_box) = two_servers(&redis, "");
    let misc = Repo::from_fixture(&a_box, "acme", "misc", "misc");
    let url = misc.import_path.as_str();
    let a = Server::start(&a_box);
    let b = Server::start(&b_box);
    connected(&a).await;
    connected(&b).await;
    assert_eq!(a.data(url, "Hello()").await, "hello");
    assert_eq!(b.data(url, "Hello()").await, "hello");
    let schedule = json!({"name": "each-second", "url": url, "call": "Hello()", "every": "1s", "cache": false});
    let (status, answer) = post(&a, "/api/v1/schedules", &schedule).await;
    assert_eq!(status, 201, "{answer}");
    // The other server knows it too.
    assert_eq!(get(&b, "/api/v1/schedules/each-second").await.0, 200);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, _) =
        request(&b, reqwest::Method::PUT, "/api/v1/schedules/each-second", Some(&json!({"paused": true}))).await;
    assert_eq!(status, 200);
    let (_, runs) = get(&a, "/api/v1/invocations?schedule=each-second&limit=1000").await;
    let items = runs["items"].as_array().unwrap();
    assert!((9..=11).contains(&items.len()), "10 s of a 1 s schedule ran {} times: {runs}", items.len());
    let ticks: BTreeSet<u64> = items.iter().map(|j| j["tick_ms"].as_u64().unwrap()).collect();
    assert_eq!(ticks.len(), items.len(), "no tick ran twice: {runs}");
    for job in items {
        let id = job["id"].as_str().unwrap();
        support::eventually_async("the run finishes", Duration::from_secs(60), || async {
            get(&a, &format!("/api/v1/invocations/{id}")).await.1["status"] == "succeeded"
        })
        .await;
    }
    // Both servers took part in running them.
    let a_ran = a.metric("skyisland_schedule_ticks_total", &[]).await;
    let b_ran = b.metric("skyisland_schedule_ticks_total", &[]).await;
    assert_eq!(a_ran + b_ran, items.len() as f64, "every tick made by one server: a {a_ran}, b {b_ran}");
    // The console's list of functions is the cluster's: both servers' calls, added up
    // (each shares what it called every 5 s).
    let calls = items.len() as u64 + 2;
    support::eventually_async("both servers' calls in one list", Duration::from_secs(20), || async {
        let (_, list) = get(&b, "/api/v1/admin/functions").await;
        list["cluster"]["available"] == true
            && list["functions"].as_array().is_some_and(|functions| {
                functions.iter().any(|f| f["url"] == url && f["servers"] == 2 && f["calls"].as_u64() == Some(calls))
            })
    })
    .await;
    // A server that stops takes its counts out of the list.
    let mut a = a;
    a.stop();
    let (_, list) = get(&b, "/api/v1/admin/functions").await;
    let function = list["functions"].as_array().unwrap().iter().find(|f| f["url"] == url).cloned().unwrap();
    assert_eq!(function["servers"], 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_moves_every_servers_current_commit() {
    if !root_or_skip("a_push_moves_every_servers_current_commit") {
        return;
    }
    let redis = RedisServer::start();
    let (a_box, b_box) = two_servers(&redis, "[hooks]\nsecret = \"pushes\"\n");
    let repo = Repo::from_items(
        &a_box,
        "acme",
        "moving",
        &[
            ("go.mod", support::Item::File("module example.test/acme/moving\n\ngo 1.19\n".into())),
            ("v.go", support::Item::File("package moving\n\nfunc Version() string { return \"one\" }\n".into())),
        ],
    );
    let url = repo.import_path.as_str();
    let a = Server::start(&a_box);
    let b = Server::start(&b_box);
    connected(&a).await;
    connected(&b).await;
    for server in [&a, &b] {
        assert_eq!(server.data(url, "Version()").await, "one");
    }
    let pushed = repo.change("v.go", "package moving\n\nfunc Version() string { return \"two\" }\n", "two");
    let event = json!({
        "ref": "refs/heads/main",
        "after": pushed,
        "repository": {"html_url": "https://example.test/acme/moving", "default_branch": "main"},
    });
    let body = serde_json::to_vec(&event).unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(b"pushes").unwrap();
    hmac::Mac::update(&mut mac, &body);
    let signature = format!("sha256={}", hex::encode(hmac::Mac::finalize(mac).into_bytes()));
    let response = a
        .http
        .post(format!("{}/api/v1/hooks/git", a.url))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let build: Value = response.json().await.unwrap();
    let id = build["id"].as_str().unwrap();
    support::eventually_async("the pushed commit is built", Duration::from_secs(180), || async {
        get(&b, &format!("/api/v1/builds/{id}")).await.1["status"] == "succeeded"
    })
    .await;
    // Whichever server built it, both now run the pushed commit for calls without a version.
    for server in [&a, &b] {
        let (status, answer) = server.call(json!({"url": url, "call": "Version()"})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (answer["data"].as_str(), answer["commit"].as_str()),
            (Some("two"), Some(pushed.as_str())),
            "{answer}"
        );
    }
}
