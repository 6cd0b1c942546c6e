//! Asynchronous invocations, builds, schedules and push webhooks through a real server,
//! real jails and git repositories made by the test: an accepted invocation ends once, with
//! every attempt recorded, also when the server is killed under it; callbacks reach a
//! listener on loopback that the operator allowed, and nothing else; a build made through
//! the API is what the next call runs; a push webhook with a good signature makes the
//! pushed commit current, one with a bad signature changes nothing; a schedule runs once
//! per tick, a missed tick once at start-up when it asks to.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::Mac;
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Repo, Sandbox, Server, root_or_skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP listener that records the bodies POSTed to it and answers `status`.
struct Listener {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Listener {
    async fn start(status: u16) -> Listener {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = socket.accept().await else { return };
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).to_string();
                        let Some(end) = text.find("\r\n\r\n") else { continue };
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if data.len() < end + 4 + length {
                            continue;
                        }
                        let body: Value =
                            serde_json::from_slice(&data[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                        kept.lock().unwrap().push(body);
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        let _ = stream.write_all(answer.as_bytes()).await;
                        return;
                    }
                });
            }
        });
        Listener { port, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn post(server: &Server, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = server.http.post(format!("{}{path}", server.url)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = server
        .http
        .get(format!("{}{path}", server.url))
        .header("X-Sky-Island-Token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Submits an async call; its id.
async fn submit(server: &Server, body: Value) -> String {
    let (status, answer) = post(server, "/api/v1/function", &body, &[]).await;
    assert_eq!(status, 202, "{body}: {answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["status_url"], format!("/api/v1/invocations/{id}"));
    id
}

/// Waits until the job at `path` has finished; it.
async fn finished(server: &Server, path: &str, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, job) = get(server, path).await;
        assert_eq!(status, 200, "{path}: {job}");
        if job["status"] == "succeeded" || job["status"] == "failed" {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "{path} did not finish within {within:?}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn statuses(job: &Value) -> Vec<u64> {
    job["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap_or(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_end_once_with_their_attempts_and_call_back_only_where_allowed() {
    if !root_or_skip("async_calls_end_once_with_their_attempts_and_call_back_only_where_allowed") {
        return;
    }
    let listener = Listener::start(200).await;
    let failing = Listener::start(500).await;
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"2s\"".into();
    sandbox.extra_config = format!(
        "[async]\nmax_attempts = 2\nretry_backoff = \"200ms\"\ncallback_attempts = 2\n\
         callback_allow = [\"http://127.0.0.1:{}/hooks\", \"http://127.0.0.1:{}/\"]\n",
        listener.port, failing.port
    );
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let server = Server::start(&sandbox);
    let url = misc.import_path.as_str();

    // Success, with a callback to the allowed listener.
    let callback = format!("http://127.0.0.1:{}/hooks/done", listener.port);
    let ok = submit(&server, json!({"url": url, "call": "Hello()", "async": true, "callback_url": callback})).await;
    let job = finished(&server, &format!("/api/v1/invocations/{ok}"), Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["data"], "hello", "{job}");
    assert_eq!(job["http_status"], 200);
    assert_eq!(statuses(&job), [200]);
    assert_eq!(job["request"]["call"], "Hello()");
    support::eventually("the callback arrives", Duration::from_secs(20), || !listener.bodies().is_empty()).await;
    let delivered = listener.bodies();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["id"], ok.as_str());
    assert_eq!(delivered[0]["result"]["data"], "hello");
    support::eventually_async("the callback is recorded as delivered", Duration::from_secs(10), || async {
        get(&server, &format!("/api/v1/invocations/{ok}")).await.1["callback"]["state"] == "delivered"
    })
    .await;

    // A callback that keeps failing is tried callback_attempts times, then given up.
    let given_up = submit(
        &server,
        json!({"url": url, "call": "Hello()", "async": true, "callback_url": format!("http://127.0.0.1:{}/x", failing.port)}),
    )
    .await;
    support::eventually_async("the failing callback is given up", Duration::from_secs(30), || async {
        get(&server, &format!("/api/v1/invocations/{given_up}")).await.1["callback"]["state"] == "failed"
    })
    .await;
    // Each body carries the invocation as it was when sent (its callback's attempts so far):
    // should this ever fail, they say whether an attempt was repeated or the count reset.
    let sent = failing.bodies();
    let record = get(&server, &format!("/api/v1/invocations/{given_up}")).await.1;
    assert_eq!(sent.len(), 2, "sent {sent:#?}\nrecorded {record:#}");

    // The function's own failure is not retried.
    let panic = submit(&server, json!({"url": url, "call": "Panic(\"boom\")", "async": true})).await;
    let job = finished(&server, &format!("/api/v1/invocations/{panic}"), Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(statuses(&job), [500], "{job}");
    assert!(job["error"]["stderr"].as_str().unwrap().contains("boom"), "{job}");

    // A timeout is, up to max_attempts, each attempt recorded.
    let slow = submit(&server, json!({"url": url, "call": "Sleep(20000)", "async": true})).await;
    let job = finished(&server, &format!("/api/v1/invocations/{slow}"), Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(statuses(&job), [504, 504], "{job}");
    assert_eq!(job["http_status"], 504);

    // The same idempotency key names the same invocation; with another request, a conflict.
    let body = json!({"url": url, "call": "Sleep(1)", "async": true, "idempotency_key": "order-17"});
    let first = submit(&server, body.clone()).await;
    assert_eq!(submit(&server, body).await, first);
    let (status, answer) = post(
        &server,
        "/api/v1/function",
        &json!({"url": url, "call": "Sleep(2)", "async": true, "idempotency_key": "order-17"}),
        &[],
    )
    .await;
    assert_eq!((status, answer["id"].as_str()), (409, Some(first.as_str())), "{answer}");
    let job = finished(&server, &format!("/api/v1/invocations/{first}"), Duration::from_secs(60)).await;
    assert_eq!(job["result"]["data"], "slept");

    // Refused at once, nothing recorded: callbacks outside the allowed prefixes (also by
    // tricks with user names, longer ports and neighbouring paths), a call no runtime
    // accepts, options meant for async calls on a synchronous one.
    let refused = [
        json!({"url": url, "call": "Hello()", "async": true, "callback_url": "http://127.0.0.1:1/hooks"}),
        json!({"url": url, "call": "Hello()", "async": true, "callback_url": format!("http://127.0.0.1:{}@localhost/hooks", listener.port)}),
        json!({"url": url, "call": "Hello()", "async": true, "callback_url": format!("http://127.0.0.1:{}/hooksx", listener.port)}),
        json!({"url": url, "call": "Hello()", "async": true, "callback_url": format!("http://localhost:{}/hooks", listener.port)}),
        json!({"url": url, "call": "Hello()", "async": true, "callback_url": "file:///etc/passwd"}),
        json!({"url": url, "call": "Hello(", "async": true}),
        json!({"url": "not a url", "call": "Hello()", "async": true}),
        json!({"url": url, "call": "Hello()", "callback_url": callback}),
    ];
    for body in refused {
        let (status, answer) = post(&server, "/api/v1/function", &body, &[]).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(listener.bodies().len(), 1, "no refused callback was sent");

    // The same through the command line.
    let cli = |args: &[&str]| {
        let output =
            std::process::Command::new(support::bin()).args(args).args(["--server", &server.url]).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, id, stderr) = cli(&["call", "--async", url, "Hello()"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(id.len(), 32, "{id}");
    let (code, shown, stderr) = cli(&["invocation", "get", &id, "--wait", "60s"]);
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["result"]["data"], "hello", "{shown}");
    let (_, id, _) = cli(&["call", "--async", url, "Panic(\"cli\")"]);
    let (code, shown, _) = cli(&["invocation", "get", &id, "--wait"]);
    assert_eq!(code, Some(1), "a failed invocation exits 1: {shown}");
    let (code, _, stderr) = cli(&["call", "--async", url, "Hello(", "--idempotency-key", "k"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("400"), "{stderr}");

    // Look-ups: an unknown id is 404, a malformed one too; the list is the operator's.
    assert_eq!(get(&server, &format!("/api/v1/invocations/{}", "0".repeat(32))).await.0, 404);
    assert_eq!(get(&server, "/api/v1/invocations/../admin").await.0, 404);
    let (status, list) = get(&server, "/api/v1/invocations?status=failed").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&panic.as_str()) && ids.contains(&slow.as_str()) && !ids.contains(&ok.as_str()), "{list}");
    assert_eq!(server.get("/api/v1/invocations").await.0, 403);
    assert_eq!(get(&server, "/api/v1/invocations?status=done").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_accepted_before_a_kill_9_all_end_once_after_the_restart() {
    if !root_or_skip("invocations_accepted_before_a_kill_9_all_end_once_after_the_restart") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = "[async]\nworkers = 2\nmax_attempts = 3\nretry_backoff = \"100ms\"\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    let url = misc.import_path.as_str();
    // Built first, so that the invocations are running (not building) when the server dies.
    assert_eq!(server.data(url, "Sleep(1)").await, "slept");
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            submit(&server, json!({"url": url, "call": format!("Sleep({})", 1500 + i), "async": true, "cache": false}))
                .await,
        );
    }
    support::eventually_async("two invocations run", Duration::from_secs(30), || async {
        let (_, list) = get(&server, "/api/v1/invocations?status=running").await;
        list["count"] == 2
    })
    .await;
    server.crash();
    let server = Server::start(&sandbox);
    let mut interrupted = 0;
    for id in &ids {
        let job = finished(&server, &format!("/api/v1/invocations/{id}"), Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["data"], "slept", "{job}");
        let attempts = statuses(&job);
        match attempts.as_slice() {
            [200] => {}
            [503, 200] => {
                interrupted += 1;
                assert_eq!(job["attempts"][0]["error"], "the server stopped during this attempt", "{job}");
            }
            other => panic!("unexpected attempts {other:?}: {job}"),
        }
    }
    assert_eq!(interrupted, 2, "the two running when the server died were counted and run again");
    let (_, list) = get(&server, "/api/v1/invocations?limit=1000").await;
    assert_eq!(list["count"], 20, "nothing lost, nothing doubled: {list}");
    let health = server.health().await;
    assert_eq!(health["async"]["backend"], "sqlite", "{health}");
    assert_eq!((health["async"]["queued"].as_u64(), health["async"]["running"].as_u64()), (Some(0), Some(0)));
}

const KEY_ONE: &str = "sky_async_test_key_one_0123456789";
const KEY_TWO: &str = "sky_async_test_key_two_0123456789";

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_ahead_of_calls_and_push_webhooks() {
    if !root_or_skip("builds_ahead_of_calls_and_push_webhooks") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = format!(
        "[auth]\napi_keys = [\"{KEY_ONE}\", \"{KEY_TWO}\"]\n[hooks]\nsecret = \"global\"\n\
         [hooks.secrets]\n\"example.test/acme/pushed\" = \"s3cret\"\n"
    );
    let repo = Repo::from_items(
        &sandbox,
        "acme",
        "pushed",
        &[
            ("go.mod", support::Item::File("module example.test/acme/pushed\n\ngo 1.19\n".into())),
            ("v.go", support::Item::File("package pushed\n\nfunc Version() string { return \"one\" }\n".into())),
        ],
    );
    let broken = Repo::from_fixture(&sandbox, "acme", "broken", "broken");
    let server = Server::start(&sandbox);
    let url = repo.import_path.as_str();
    let admin = [("X-Sky-Island-Token", ADMIN_TOKEN)];

    // A build through the API; the call after it builds nothing.
    let (status, answer) = post(&server, "/api/v1/builds", &json!({"url": url}), &[]).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post(&server, "/api/v1/builds", &json!({"url": url}), &admin).await;
    assert_eq!(status, 202, "{answer}");
    let build = answer["id"].as_str().unwrap().to_owned();
    let job = finished(&server, &format!("/api/v1/builds/{build}"), Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["commit"], repo.head().as_str());
    assert_eq!(job["result"]["runtime"], "go");
    assert_eq!(job["result"]["built"], true);
    let (status, answer) = server.call(json!({"url": url, "call": "Version()"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["data"].as_str(), answer["built"].as_bool()), (Some("one"), Some(false)), "{answer}");
    // The command line builds and waits, and says which commit it built.
    let output = std::process::Command::new(support::bin())
        .args(["build", url, "--server", &server.url, "--admin-token", ADMIN_TOKEN])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("{} go", repo.head()));
    // An API key may start builds too; an unknown one may not.
    let bearer = format!("Bearer {KEY_ONE}");
    let (status, answer) = post(&server, "/api/v1/builds", &json!({"url": url}), &[("Authorization", &bearer)]).await;
    assert_eq!(status, 202, "{answer}");
    let (status, _) =
        post(&server, "/api/v1/builds", &json!({"url": url}), &[("Authorization", "Bearer sky_nope")]).await;
    assert_eq!(status, 403);

    // Idempotency keys are each caller's own: the same key from another API key (or from
    // none) names another invocation, and never shows the first caller's.
    let body = json!({"url": url, "call": "Version()", "async": true, "idempotency_key": "shared-key"});
    let mut ids = Vec::new();
    for auth in [Some(KEY_ONE), Some(KEY_TWO), None, Some(KEY_ONE)] {
        let header = auth.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
        let (status, answer) = post(&server, "/api/v1/function", &body, &headers).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[3], "the same caller, the same invocation");
    assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2], "{ids:?}");
    let job = finished(&server, &format!("/api/v1/invocations/{}", ids[1]), Duration::from_secs(60)).await;
    assert_eq!(job["idempotency_key"], "shared-key", "shown as given: {job}");

    // A build that fails says why.
    let (status, answer) = post(&server, "/api/v1/builds", &json!({"url": broken.import_path}), &admin).await;
    assert_eq!(status, 202, "{answer}");
    let failed = answer["id"].as_str().unwrap().to_owned();
    let job = finished(&server, &format!("/api/v1/builds/{failed}"), Duration::from_secs(180)).await;
    assert_eq!((job["status"].as_str(), job["http_status"].as_u64()), (Some("failed"), Some(422)), "{job}");
    assert!(job["error"]["output"].as_str().is_some_and(|o| !o.is_empty()), "{job}");
    // The console's function page shows the failed build with the compiler's output.
    let (status, detail) = get(&server, &format!("/api/v1/admin/function?url={}", broken.import_path)).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["builds"][0]["ok"], false, "{detail}");
    assert_eq!(detail["builds"][0]["output"], job["error"]["output"], "{detail}");

    // A push: the new commit is built and made current.
    let pushed = repo.change("v.go", "package pushed\n\nfunc Version() string { return \"two\" }\n", "two");
    let event = json!({
        "ref": "refs/heads/main",
        "after": pushed,
        "repository": {"full_name": "acme/pushed", "html_url": "https://example.test/acme/pushed"},
        // Real push events list their commits: larger than limits.max_body (64 KiB).
        "commits": [{"id": pushed, "message": "x".repeat(200_000)}],
    });
    let body = serde_json::to_vec(&event).unwrap();
    let hook = |sig: String, name: &'static str| {
        let request = server
            .http
            .post(format!("{}/api/v1/hooks/git", server.url))
            .header("X-GitHub-Event", "push")
            .header(name, sig)
            .body(body.clone());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Signed with the global secret, where the repository has its own: refused.
    let (status, answer) = hook(format!("sha256={}", signature("global", &body)), "X-Hub-Signature-256").await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = hook("sha256=00".into(), "X-Hub-Signature-256").await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(server.data(url, "Version()").await, "one", "a refused push changes nothing");
    // Gitea's header: the signature alone, hex.
    let (status, answer) = hook(signature("s3cret", &body), "X-Gitea-Signature").await;
    assert_eq!(status, 202, "{answer}");
    let build = answer["id"].as_str().unwrap().to_owned();
    let job = finished(&server, &format!("/api/v1/builds/{build}"), Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["commit"], pushed.as_str());
    let (status, answer) = server.call(json!({"url": url, "call": "Version()"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["data"].as_str(), answer["built"].as_bool()), (Some("two"), Some(false)), "{answer}");
    assert_eq!(answer["commit"], pushed.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_once_per_tick_and_catch_up_once() {
    if !root_or_skip("schedules_run_once_per_tick_and_catch_up_once") {
        return;
    }
    let sandbox = Sandbox::new();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    let url = misc.import_path.as_str();
    assert_eq!(server.data(url, "Hello()").await, "hello");
    let admin = [("X-Sky-Island-Token", ADMIN_TOKEN)];
    let every = json!({"name": "tick", "url": url, "call": "Hello()", "every": "1s", "cache": false});
    assert_eq!(post(&server, "/api/v1/schedules", &every, &[]).await.0, 403);
    let (status, answer) = post(&server, "/api/v1/schedules", &every, &admin).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(post(&server, "/api/v1/schedules", &every, &admin).await.0, 409);
    for (bad, why) in [
        (json!({"name": "b", "url": url, "call": "Hello()", "cron": "61 * * * *"}), "cron"),
        (json!({"name": "b", "url": url, "call": "Hello()"}), "cron or every"),
        (json!({"name": "b", "url": url, "call": "Hello()", "cron": "* * * * *", "timezone": "Mars/Base"}), "timezone"),
        (json!({"name": "b/c", "url": url, "call": "Hello()", "every": "1m"}), "name"),
        (json!({"name": "b", "url": url, "call": "Hello(", "every": "1m"}), "call"),
    ] {
        let (status, answer) = post(&server, "/api/v1/schedules", &bad, &admin).await;
        assert_eq!(status, 400, "{why}: {answer}");
    }
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let (status, paused) = server_put(&server, "/api/v1/schedules/tick", &json!({"paused": true})).await;
    assert_eq!(status, 200, "{paused}");
    let runs = |list: &Value| list["count"].as_u64().unwrap();
    let (_, list) = get(&server, "/api/v1/invocations?schedule=tick&limit=1000").await;
    let ran = runs(&list);
    assert!((4..=6).contains(&ran), "5.5 s of a 1 s schedule ran {ran} times: {list}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, list) = get(&server, "/api/v1/invocations?schedule=tick&limit=1000").await;
    assert_eq!(runs(&list), ran, "a paused schedule does not run");
    for job in list["items"].as_array().unwrap() {
        let job =
            finished(&server, &format!("/api/v1/invocations/{}", job["id"].as_str().unwrap()), Duration::from_secs(60))
                .await;
        assert_eq!(job["result"]["data"], "hello", "{job}");
    }
    let (status, shown) = get(&server, "/api/v1/schedules/tick").await;
    assert_eq!(status, 200);
    assert_eq!(shown["paused"], true);
    assert!(!shown["last_runs"].as_array().unwrap().is_empty(), "{shown}");
    let deleted = server
        .http
        .delete(format!("{}/api/v1/schedules/tick", server.url))
        .header("X-Sky-Island-Token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(get(&server, "/api/v1/schedules/tick").await.0, 404);

    // Ticks missed while the server was down: once at start-up with catch_up, else none.
    for (name, catch_up) in [("caught", true), ("skipped", false)] {
        let body = json!({"name": name, "url": url, "call": "Hello()", "every": "2s", "catch_up": catch_up});
        assert_eq!(post(&server, "/api/v1/schedules", &body, &admin).await.0, 201);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.crash();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restarted_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let server = Server::start(&sandbox);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Runs for ticks from before the restart: the catch-up; later ones are regular ticks.
    let missed = |list: &Value| {
        list["items"].as_array().unwrap().iter().filter(|j| j["tick_ms"].as_u64().unwrap() < restarted_ms).count()
    };
    let (_, caught) = get(&server, "/api/v1/invocations?schedule=caught").await;
    let (_, skipped) = get(&server, "/api/v1/invocations?schedule=skipped").await;
    assert_eq!(missed(&caught), 1, "one catch-up run: {caught}");
    assert_eq!(missed(&skipped), 0, "missed ticks skipped: {skipped}");
}

async fn server_put(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = server
        .http
        .put(format!("{}{path}", server.url))
        .header("X-Sky-Island-Token", ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}
