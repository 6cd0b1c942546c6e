//! Sky Island on its worst day: SIGTERM with calls running, SIGKILL in the middle of
//! builds and executions followed by a restart (with what a power cut leaves in the data
//! directory), and hostile requests of every kind. Each test ends by checking that the
//! server holds, and the host keeps, nothing more than before.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{NetNs, Repo, Sandbox, Server, root_or_skip};

async fn wait_for_jails(server: &Server, kind: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, jails) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        let running = jails["jails"].as_array().unwrap().iter().filter(|j| j["kind"] == kind).count();
        if running >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{count} {kind} jails never ran at once: {jails}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_calls_finish_then_kills_the_rest() {
    if !root_or_skip("sigterm_lets_running_calls_finish_then_kills_the_rest") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"30s\"".into();
    sandbox.extra_config = "[limits]\ndrain = \"3s\"\n[cache]\nrequest_cache = false\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");

    let short = server.call(json!({"url": misc.import_path, "call": "Sleep(1500)"}));
    let long = server.call(json!({"url": misc.import_path, "call": "Sleep(20000)"}));
    let terminate = async {
        wait_for_jails(&server, "exec", 2).await;
        let started = Instant::now();
        server.terminate();
        // New connections are refused at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(server.addr).is_ok() {
            assert!(Instant::now() < deadline, "still accepting after SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started
    };
    let ((short_status, short_body), (long_status, long_body), terminated) = tokio::join!(short, long, terminate);
    assert_eq!((short_status, short_body["data"].as_str()), (200, Some("slept")), "{short_body}");
    assert_eq!(long_status, 503, "{long_body}");
    assert!(long_body["error"].as_str().unwrap().contains("shut down before the function finished"), "{long_body}");
    let elapsed = terminated.elapsed();
    assert!(elapsed >= Duration::from_secs(3), "the long call was killed after the drain period, not {elapsed:?}");
    let status = server.wait();
    assert!(status.success(), "{status:?}\n{}", server.log());
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_restarted_server_reaps_everything_and_serves_at_once() {
    if !root_or_skip("after_a_crash_a_restarted_server_reaps_everything_and_serves_at_once") {
        return;
    }
    let netns = NetNs::new();
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"60s\"".into();
    sandbox.extra_config = format!("[cache]\nrequest_cache = false\n{}", support::ip4_config(&netns, "skyk0", 11, 4));
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");

    // Executions (one with an address) and a build in flight, then SIGKILL.
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let body = json!({"url": misc.import_path, "call": "Sleep(50000)", "ip4": i == 0});
            let (http, url) = (server.http.clone(), server.url.clone());
            tokio::spawn(async move { http.post(format!("{url}/api/v1/function")).json(&body).send().await })
        })
        .collect();
    let build = {
        let (http, url) = (server.http.clone(), server.url.clone());
        let body = json!({"url": geo.import_path, "call": "Encode(1, 2)"});
        tokio::spawn(async move { http.post(format!("{url}/api/v1/function")).json(&body).send().await })
    };
    wait_for_jails(&server, "exec", 4).await;
    wait_for_jails(&server, "build", 1).await;
    let (_, ips) = server.admin(Method::GET, "/api/v1/admin/ips").await;
    assert!(ips["ips"].as_array().unwrap().iter().any(|ip| !ip["in_use_by"].is_null()), "{ips}");
    server.crash();
    for call in calls {
        assert!(call.await.unwrap().is_err(), "no answer from a killed server");
    }
    assert!(build.await.unwrap().is_err());
    // The jails die with their server (their parent-death signal).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sandbox.census().processes.is_empty() {
        assert!(Instant::now() < deadline, "jails outlived their server: {:?}", sandbox.census());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What a power cut in the middle of writes leaves: temporary names, never renamed.
    let data = sandbox.data_dir();
    // And what a git killed in a fetch leaves: its lock files.
    let mut locks = Vec::new();
    for clone in std::fs::read_dir(data.join("build/repos")).unwrap().flatten() {
        // And a git init killed after it wrote HEAD: no config or objects yet (then git
        // says "not a git repository").
        let _ = std::fs::remove_file(clone.path().join("config"));
        let _ = std::fs::remove_dir_all(clone.path().join("objects"));
        // As the build jail's git would: owned by the build uid.
        let owner = std::os::unix::fs::MetadataExt::uid(&clone.metadata().unwrap());
        for lock in ["shallow.lock", "refs/skyisland/x.lock"] {
            let path = clone.path().join(lock);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
            for made in [path.as_path(), path.parent().unwrap()] {
                std::os::unix::fs::chown(made, Some(owner), Some(owner)).unwrap();
            }
            locks.push(path);
        }
    }
    assert!(!locks.is_empty());
    let leftovers = [
        data.join("binaries/.tmp-0123abcd-1"),
        data.join("build/out/0123abcd-half-written"),
        data.join("build/src/0123abcd-deadbeef.new.4242"),
        data.join("build/repos/0123abcd.new"),
        data.join("repos/0123abcd.tmp-77"),
    ];
    for path in &leftovers {
        if path.extension().is_some_and(|e| e == "tmp-77") || path.to_string_lossy().contains("half-written") {
            std::fs::write(path, b"half").unwrap();
        } else {
            std::fs::create_dir_all(path).unwrap();
            std::fs::write(path.join("part"), b"half").unwrap();
        }
    }

    let mut server = Server::start(&sandbox);
    // It serves at once: the old dispatcher from its cache, the interrupted build again.
    let (status, body) = server.call(json!({"url": misc.import_path, "call": "Hello()"})).await;
    assert_eq!((status, body["built"].as_bool()), (200, Some(false)), "{body}");
    let (status, body) = server.call(json!({"url": geo.import_path, "call": "Encode(1, 2)"})).await;
    assert_eq!((status, body["data"].as_str()), (200, Some("1.0000|2.0000")), "{body}");
    let (status, body) = server.call(json!({"url": misc.import_path, "call": "Hello()", "ip4": true})).await;
    assert_eq!(status, 200, "every address is free again: {body}");
    for path in leftovers.iter().chain(&locks) {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    // A fetch into the clones whose git init was cut short works.
    let commit = misc.change("later.go", "package misc\n\nfunc Later() string { return \"later\" }\n", "later");
    let (status, body) = server.call(json!({"url": misc.import_path, "call": "Later()", "version": commit})).await;
    assert_eq!((status, body["data"].as_str()), (200, Some("later")), "{body}");
    // Fetching again works.
    let (status, body) = server.call(json!({"url": misc.import_path, "call": "Hello()", "cache_bust": true})).await;
    assert_eq!(status, 200, "{body}");
    let resources = server.admin(Method::GET, "/api/v1/admin/resources").await.1;
    assert_eq!(resources["jails"]["running"], 0, "{resources}");
    assert_eq!(resources["ip4"]["leases"], 0, "{resources}");
    server.stop();
    sandbox.assert_clean();
    let deadline = Instant::now() + Duration::from_secs(10);
    while netns.links().iter().any(|l| l.starts_with("sk") && l != "skyk0") {
        assert!(Instant::now() < deadline, "jail links left: {:?}", netns.links());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends raw bytes as a request; returns the status line's code (0 if the server closed
/// the connection without one).
fn raw(server: &Server, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_errors_and_the_server_stays_healthy() {
    if !root_or_skip("hostile_requests_get_clear_errors_and_the_server_stays_healthy") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = "[limits]\nclient_timeout = \"1s\"\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");
    let before = support::mixed::settle(&server, Some(2)).await;
    let m = misc.import_path.as_str();

    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let huge = json!({"url": m, "call": format!("Hello(\"{}\")", "x".repeat(200_000))}).to_string();
    let long_url = format!("example.test/acme/{}", "a".repeat(10_000));
    let mut invalid_utf8 = br#"{"url": "example.test/acme/misc", "call": "Hello(\""#.to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\")\"}");
    let table: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not JSON", b"Hello()".to_vec(), 400),
        ("deep JSON", deep.into_bytes(), 400),
        ("a huge body", huge.into_bytes(), 413),
        ("invalid UTF-8", invalid_utf8, 400),
        ("a number for the url", br#"{"url": 1, "call": "Hello()"}"#.to_vec(), 400),
        // (Unknown fields are ignored, as Go's encoding/json ignored them: see functions.rs.)
        ("a string for ip4", json!({"url": m, "call": "Hello()", "ip4": "yes"}).to_string().into_bytes(), 400),
        ("an array for the call", json!({"url": m, "call": ["Hello()"]}).to_string().into_bytes(), 400),
        ("no call", json!({"url": m}).to_string().into_bytes(), 400),
    ];
    let mut bodies: Vec<(String, Vec<u8>, u16)> =
        table.into_iter().map(|(what, body, status)| (what.to_owned(), body, status)).collect();
    for url in [
        "https://example.test/acme/misc",
        "git://example.test/acme/misc",
        "file:///etc/passwd",
        "user:secret@example.test/acme/misc",
        "example.test/acme/../misc",
        "example.test/acme/misc/../../etc",
        "example.test/acme/misc\u{0}",
        "ex\u{0430}mple.test/acme/misc",
        "example.test/acme/misc?x=1",
        "example.test/acme/misc#x",
        "-oProxyCommand=sh/acme/misc",
        "example.test/acme/mi sc",
        "",
        long_url.as_str(),
    ] {
        bodies.push((format!("url {url:.60?}"), json!({"url": url, "call": "Hello()"}).to_string().into_bytes(), 400));
    }
    for call in [
        "Hello()}; func init() { panic(1) }; func x() {",
        ")}; func init() { os.Exit(1) }",
        "Hello(); os.Exit(1)",
        "Hello() // comment",
        "Hello() /* c */",
        "func() int { return 1 }()",
        "Hello(",
        "",
        "`",
        "Hello()\nHello()",
        "Hello(\u{0})",
        "Hello\u{0}()",
        "\"a\" + \"b\"",
    ] {
        bodies.push((format!("call {call:?}"), json!({"url": m, "call": call}).to_string().into_bytes(), 400));
    }
    for version in ["../../etc", "--upload-pack=touch /tmp/x", "v1 v2", "HEAD@{1}"] {
        let body = json!({"url": m, "call": "Hello()", "version": version}).to_string().into_bytes();
        bodies.push((format!("version {version:?}"), body, 400));
    }
    for (what, body, want) in bodies {
        let response = server.http.post(format!("{}/api/v1/function", server.url)).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, want, "{what}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {text}");
    }
    assert_eq!(server.get("/api/v1/function").await.0, 405);
    assert_eq!(server.get("/../../etc/passwd").await.0, 404);
    let header = format!("POST /api/v1/function HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    let status = raw(&server, header.as_bytes());
    assert!([400, 431].contains(&status), "huge headers: {status}");

    // Slow clients are cut off: headers dripping in, and a body that never completes.
    let slow_headers = std::thread::spawn({
        let addr = server.addr;
        move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            let started = Instant::now();
            let _ = stream.write_all(b"POST /api/v1/function HTTP/1.1\r\nHost: x\r\n");
            while started.elapsed() < Duration::from_secs(20) {
                if stream.write_all(b"X-Slow: 1\r\n").is_err() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            started.elapsed()
        }
    });
    let slow_body = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ =
                stream.write_all(b"POST /api/v1/function HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"url\"");
            let mut answer = Vec::new();
            let started = Instant::now();
            let _ = stream.read_to_end(&mut answer);
            (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        })
    };
    let cut = tokio::task::spawn_blocking(move || slow_headers.join().unwrap()).await.unwrap();
    assert!(cut < Duration::from_secs(10), "a slowloris kept its connection for {cut:?}");
    let (waited, answer) = tokio::task::spawn_blocking(move || slow_body.join().unwrap()).await.unwrap();
    assert!(waited < Duration::from_secs(10), "a slow body held its connection for {waited:?}: {answer}");

    // Thousands of connections at once, then gone: the server answers throughout.
    // As many as this process may open (its soft limit raised to the hard one), up to 3000.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit { current: Some(hard), maximum: limit.maximum },
    )
    .unwrap();
    let crowd_size = hard.saturating_sub(256).min(3000);
    assert!(crowd_size >= 500, "the descriptor limit ({hard}) leaves room for a crowd");
    let mut crowd = Vec::new();
    for _ in 0..crowd_size {
        crowd.push(TcpStream::connect(server.addr).unwrap());
    }
    let started = Instant::now();
    assert_eq!(server.data(m, "Hello()").await, "hello");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(crowd);

    // Nothing was lost: the server holds what it held before.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = support::mixed::settle(&server, Some(2)).await;
        // Descriptors may be fewer than before (a client connection open then), never more.
        let same = ["child_processes", "mounts", "root_clones"].iter().all(|k| now[k] == before[k])
            && now["open_fds"].as_u64() <= before["open_fds"].as_u64();
        if same {
            break;
        }
        assert!(Instant::now() < deadline, "before: {before}\nnow: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_literals_reach_the_function_exactly() {
    if !root_or_skip("random_literals_reach_the_function_exactly") {
        return;
    }
    use rand::Rng;
    let sandbox = Sandbox::new();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let mut server = Server::start(&sandbox);
    let url = geo.import_path.as_str();
    let mut rng = rand::rng();
    for _ in 0..40 {
        // Strings of any characters (quotes, backslashes, controls, NUL, astral planes).
        let text: String = (0..rng.random_range(0..12))
            .map(|_| match rng.random_range(0..4) {
                0 => ['"', '\\', '\n', '\0', '`', '\''][rng.random_range(0..6)],
                1 => rng.random_range(' '..='~'),
                _ => rng.random::<char>(),
            })
            .collect();
        let (status, body) = server
            .call(json!({"url": url, "call": format!("Join(\"\", {})", skyisland_functions::call::quote(&text))}))
            .await;
        assert_eq!((status, body["data"].as_str()), (200, Some(text.as_str())), "{text:?}: {body}");

        let (a, b) = (rng.random::<i64>(), rng.random::<i64>());
        let (status, body) = server.call(json!({"url": url, "call": format!("Sum({a}, {b})")})).await;
        let sum = a.wrapping_add(b).to_string();
        assert_eq!((status, body["data"].as_str()), (200, Some(sum.as_str())), "Sum({a}, {b}): {body}");

        // Constants that do not fit their parameter are refused as the compiler would.
        let x = rng.random_range(-300i32..600);
        let (status, body) = server.call(json!({"url": url, "call": format!("Small({x})")})).await;
        if (0..=255).contains(&x) {
            assert_eq!((status, body["data"].as_str()), (200, Some(x.to_string().as_str())), "{body}");
        } else {
            assert_eq!(status, 422, "Small({x}): {body}");
            assert!(body["error"].as_str().unwrap().contains("overflows"), "{body}");
        }
    }
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_every_time_with_or_without_expect() {
    if !root_or_skip("an_oversized_body_gets_413_every_time_with_or_without_expect") {
        return;
    }
    let sandbox = Sandbox::new();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");
    // Busy: calls in flight all the while.
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let http = server.http.clone();
            let url = format!("{}/api/v1/function", server.url);
            let body = json!({"url": misc.import_path, "call": "Sleep(3000)", "cache": false});
            tokio::spawn(async move { http.post(url).json(&body).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let addr = server.addr;
    let size = 8 << 20;
    let results = tokio::task::spawn_blocking(move || {
        let mut answers = Vec::new();
        for attempt in 0..40 {
            let expect = attempt % 2 == 0;
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!(
                "POST /api/v1/function HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n{}\r\n",
                if expect { "Expect: 100-continue\r\n" } else { "" }
            );
            stream.write_all(head.as_bytes()).unwrap();
            // Without Expect, the client sends its body at once, as curl does after a
            // second without an answer: the server must not reset the connection under it.
            let writer = (!expect).then(|| {
                let mut stream = stream.try_clone().unwrap();
                std::thread::spawn(move || {
                    let chunk = vec![b' '; 64 << 10];
                    let mut sent = 0;
                    while sent < size && stream.write_all(&chunk).is_ok() {
                        sent += chunk.len();
                    }
                })
            });
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&answer).contains("}") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
            drop(stream);
            if let Some(writer) = writer {
                writer.join().unwrap();
            }
            answers.push((expect, String::from_utf8_lossy(&answer).into_owned()));
        }
        answers
    })
    .await
    .unwrap();
    for (expect, answer) in &results {
        assert!(answer.starts_with("HTTP/1.1 413 "), "expect {expect}: {answer:?}");
        assert!(answer.contains("limits.max_body"), "{answer}");
    }
    for call in busy {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_takes_its_jail_with_it_and_sigint_stops_cleanly() {
    if !root_or_skip("a_client_that_goes_away_takes_its_jail_with_it_and_sigint_stops_cleanly") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"60s\"".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&misc.import_path, "Hello()").await, "hello");
    let impatient = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let body = json!({"url": misc.import_path, "call": "Sleep(50000)", "cache": false});
    let gone = impatient.post(format!("{}/api/v1/function", server.url)).json(&body).send().await;
    assert!(gone.is_err(), "the client gave up: {gone:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, jails) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        if jails["jails"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] != "exec" || !j["label"].as_str().unwrap_or("").contains("Sleep"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the jail outlived its caller: {jails}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGINT, as from a terminal: the same clean stop as SIGTERM.
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert!(server.wait().success());
    assert!(server.log().contains("SIGINT: shutting down"), "{}", server.log());
    sandbox.assert_clean();
}

/// A server's spawner (the helper every jail is cloned from) executes the small
/// `skyisland` program, so that clones copy few pages; a whole program found without it
/// keeps a forked copy of itself as the spawner and serves the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawner_is_the_small_program_unless_it_is_missing() {
    if !root_or_skip("the_spawner_is_the_small_program_unless_it_is_missing") {
        return;
    }
    let sandbox = Sandbox::new();
    let repo = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let small = support::bin().canonicalize().unwrap();

    let mut server = Server::start(&sandbox);
    let spawners: Vec<_> = support::children(server.pid())
        .into_iter()
        .filter(|(_, args)| args.get(1).is_some_and(|a| a == "__skyisland-jail-spawner"))
        .collect();
    assert_eq!(spawners.len(), 1, "one spawner: {:?}", support::children(server.pid()));
    assert_eq!(spawners[0].0, small, "the spawner executes the small program");
    assert_eq!(server.data(&repo.import_path, "Hello()").await, "hello");
    assert!(server.stop().success());

    let lone = sandbox.path().join("lone/skyisland-full");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_skyisland-full"), &lone).unwrap();
    let mut command = std::process::Command::new(&lone);
    command.arg("serve").arg("--config").arg(sandbox.config());
    let mut server = Server::start_command(&sandbox, command);
    let kids = support::children(server.pid());
    assert!(kids.iter().all(|(_, args)| args.get(1).is_none_or(|a| a != "__skyisland-jail-spawner")), "{kids:?}");
    assert!(kids.iter().any(|(exe, _)| *exe == lone), "the spawner is a copy of the server: {kids:?}");
    assert_eq!(server.data(&repo.import_path, "Hello()").await, "hello");
    assert!(server.log().contains("the spawner stays a copy of the server"), "{}", server.log());
    assert!(server.stop().success());
    sandbox.assert_clean();
}
