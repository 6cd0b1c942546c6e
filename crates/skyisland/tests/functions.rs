//! `POST /api/v1/function` through a real server, real jails and git repositories made
//! from the fixtures in `tests/fixtures`.

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::{Repo, Sandbox, Server, root_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_print_like_fmt_print_on_both_paths() {
    if !root_or_skip("results_print_like_fmt_print_on_both_paths") {
        return;
    }
    let sandbox = Sandbox::new();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let mut server = Server::start(&sandbox);
    let url = geo.import_path.as_str();

    // The first call clones and builds; the answer says which commit ran.
    let (status, body) = server.call(json!({"url": url, "call": "Encode(57.64911, 10.40744)"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], "57.6491|10.4074");
    assert_eq!(body["commit"], geo.head());
    assert_eq!((body["path"].as_str(), body["built"].as_bool()), (Some("dispatch"), Some(true)));
    assert!(body["timestamp"].as_u64().unwrap() > 1_700_000_000);

    // New arguments: no new build.
    let (_, body) = server.call(json!({"url": url, "call": "Encode(-1, 2.5e1)"})).await;
    assert_eq!((body["data"].as_str(), body["built"].as_bool()), (Some("-1.0000|25.0000"), Some(false)));

    let quoted = r#"Quote("a \"b\" \\ c\n")"#;
    for (call, data) in [
        ("Pair(21, \"hi\")", "42hi!"),
        ("Two(2, 3)", "5 6"),
        ("Truth()", "true"),
        ("Small(255)", "255"),
        ("Warm(1)", "2.5"),
        ("Sum()", "0"),
        ("Sum(1, 2, 0x10, 1_000)", "1019"),
        ("Join(\"-\", \"a\", `b`, \"c\")", "a-b-c"),
        (quoted, r#""a \"b\" \\ c\n""#),
        ("Rune('é')", "é"),
        ("Complex(2i)", "(0+4i)"),
        ("IsNil(nil)", "true"),
        ("Describe(1.5)", "float64=1.5"),
        ("Describe('x')", "int32=120"),
        ("Describe(\"s\")", "string=s"),
        ("Div(7, 2)", "3 <nil>"),
        ("Div(1, 0)", "0 division by zero"),
    ] {
        let (status, body) = server.call(json!({"url": url, "call": call})).await;
        assert_eq!(status, 200, "{call}: {body}");
        assert_eq!(body["data"], data, "{call}");
        assert_eq!(body["path"], "dispatch", "{call}");
    }
    // What only a build of its own can do.
    for (call, data) in [
        ("Max(3, 9)", "9"),
        ("NewPoint(3, 4).Norm()", "5"),
        ("Answer", "42"),
        ("Pi", "3.14159"),
        ("Encode(1, 2) + \"!\"", "1.0000|2.0000!"),
    ] {
        let (status, body) = server.call(json!({"url": url, "call": call})).await;
        assert_eq!(status, 200, "{call}: {body}");
        assert_eq!((body["data"].as_str(), body["path"].as_str()), (Some(data), Some("build")), "{call}");
    }
    // The same value through both paths prints the same.
    for (literal, expression) in
        [("Pair(21, \"hi\")", "Pair(20+1, \"hi\")"), ("Div(1, 0)", "Div(1, 0*1)"), ("Describe(1.5)", "Describe(3/2.0)")]
    {
        let (_, a) = server.call(json!({"url": url, "call": literal})).await;
        let (_, b) = server.call(json!({"url": url, "call": expression})).await;
        assert_eq!((a["path"].as_str(), b["path"].as_str()), (Some("dispatch"), Some("build")), "{a} {b}");
        assert_eq!(a["data"], b["data"], "{literal} vs {expression}");
    }
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_has_its_status() {
    if !root_or_skip("every_failure_has_its_status") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"2s\"\nmemory_limit = \"64MiB\"\ndisk_limit = \"1MiB\"\n".into();
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let broken = Repo::from_fixture(&sandbox, "acme", "broken", "broken");
    let cmd = Repo::from_fixture(&sandbox, "acme", "cmd", "cmd");
    // A repository whose objects are gone: the remote exists but cloning fails.
    let corrupt = Repo::from_fixture(&sandbox, "acme", "corrupt", "cmd");
    std::fs::remove_dir_all(corrupt.bare.join("objects")).unwrap();
    std::fs::create_dir(corrupt.bare.join("objects")).unwrap();
    let mut server = Server::start(&sandbox);
    let m = misc.import_path.as_str();

    let raw = |body: String| {
        let http = server.http.clone();
        let url = format!("{}/api/v1/function", server.url);
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // What Go's encoding/json refused stays refused...
    for (body, expect) in [
        ("{not json", "invalid request body"),
        ("[]", "expected a JSON object"),
        (r#"{"url": "example.test/acme/misc"}"#, "missing field `call`"),
        (r#"{"url": "example.test/acme/misc", "call": null}"#, "missing field `call`"),
        (r#"{"url": 5, "call": "F()"}"#, "field `url` must be a string, not a number"),
        (r#"{"url": "x.test/a/b", "call": "F()", "ip4": "yes"}"#, "field `ip4` must be a boolean, not a string"),
        (r#"{"url": "x.test/a/b", "call": "F()", "Version": 7}"#, "field `version` must be a string"),
    ] {
        let (status, json) = raw(body.to_owned()).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert!(json["error"].as_str().unwrap().contains(expect), "{body}: {json}");
    }
    // ...and what it accepted is accepted: the original client's request type, which sends
    // every field (`version: ""` when unset), names in any case, unknown fields, nulls.
    for body in [
        format!(r#"{{"url":"{m}","call":"Hello()","ip4":false,"cache_bust":false,"version":""}}"#),
        format!(r#"{{"URL":"{m}","Call":"Hello()","IP4":false,"Cache_Bust":false,"VERSION":""}}"#),
        format!(r#"{{"url":"{m}","call":"Hello()","colour":"red","nested":{{"a":[1]}},"ip4":null,"version":null}}"#),
        format!(r#"{{"url":"x.test/ignored","call":"Nope()","Url":"{m}","call":"Hello()"}}"#),
    ] {
        let (status, json) = raw(body.clone()).await;
        assert_eq!((status, &json["data"]), (200, &json!("hello")), "{body}: {json}");
    }

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"url": "https://example.test/acme/misc", "call": "Hello()"}), 400, "scheme"),
        (json!({"url": "example.test/acme/../misc", "call": "Hello()"}), 400, "'..'"),
        (json!({"url": m, "call": "Hello()); func init() { panic(1) }; var _ = (1"}), 400, "invalid call"),
        (json!({"url": m, "call": "Hello() // comment"}), 400, "comments"),
        (json!({"url": m, "call": "Hello()", "ip4": true}), 400, "ip4"),
        (json!({"url": m, "call": "Hello()", "version": "a..b"}), 400, "invalid version"),
        (json!({"url": m, "call": "hello()"}), 422, "does not export hello"),
        (json!({"url": m, "call": "Nope(1)"}), 422, "does not export Nope"),
        (json!({"url": m, "call": "Sleep(\"soon\")"}), 422, "cannot use \"soon\" as int"),
        (json!({"url": m, "call": "Sleep(1, 2)"}), 422, "wrong number of arguments"),
        (json!({"url": broken.import_path, "call": "Oops()"}), 422, "build failed"),
        (json!({"url": cmd.import_path, "call": "Run()"}), 422, "package main"),
        (json!({"url": "example.test/acme/nothere", "call": "F()"}), 404, "not found"),
        (json!({"url": m, "call": "Hello()", "version": "v9.9.9"}), 404, "version \"v9.9.9\" not found"),
        (json!({"url": corrupt.import_path, "call": "Run()"}), 502, "cloning"),
        (json!({"url": m, "call": "Panic(\"boom\")"}), 500, "exit status 2"),
        (json!({"url": m, "call": "Exit(3)"}), 500, "exit status 3"),
        (json!({"url": m, "call": "Spin()"}), 504, "longer than"),
        (json!({"url": m, "call": "Alloc()"}), 500, "memory limit"),
        (json!({"url": m, "call": "Flood()"}), 500, "output limit"),
    ];
    for (body, status, message) in cases {
        let (got, json) = server.call(body.clone()).await;
        assert_eq!(got, status, "{body}: {json}");
        assert!(json["error"].as_str().unwrap().contains(message), "{body}: {json}");
    }
    let (_, json) = server.call(json!({"url": broken.import_path, "call": "Oops()"})).await;
    assert!(json["output"].as_str().unwrap().contains("cannot use \"not an int\""), "{json}");
    let (_, json) = server.call(json!({"url": m, "call": "Panic(\"boom\")"})).await;
    assert!(json["stderr"].as_str().unwrap().contains("panic: boom"), "{json}");
    let (_, json) = server.call(json!({"url": m, "call": "Exit(3)"})).await;
    assert_eq!(json["stderr"], "leaving with 3\n");
    // A missing repository's answer names neither the mirror's path nor its URL.
    let (_, json) = server.call(json!({"url": "example.test/acme/nothere", "call": "F()"})).await;
    let shown = json.to_string();
    let mirror = sandbox.dir.path().to_string_lossy().into_owned();
    assert!(!shown.contains(&mirror) && !shown.contains("file://"), "{shown}");
    assert!(json["detail"].as_str().unwrap().contains("<local>"), "{shown}");
    // Still healthy, and still serving.
    assert_eq!(server.data(m, "Hello()").await, "hello");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_cache_bust() {
    if !root_or_skip("version_and_cache_bust") {
        return;
    }
    let sandbox = Sandbox::new();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    geo.tag("v1");
    let first = geo.head();
    let mut server = Server::start(&sandbox);
    let url = geo.import_path.as_str();
    assert_eq!(server.data(url, "Version()").await, "v1");

    let source = std::fs::read_to_string(geo.work.join("geo.go")).unwrap();
    let second = geo.change("geo.go", &source.replace("return \"v1\"", "return \"v2\""), "v2");
    // Without `version`, the repo cache's checkout keeps being used...
    let (_, body) = server.call(json!({"url": url, "call": "Version()"})).await;
    assert_eq!((body["data"].as_str(), body["commit"].as_str()), (Some("v1"), Some(first.as_str())));
    // ...while a version runs exactly that commit, tag or branch.
    for (version, data, commit) in [
        ("main", "v2", &second),
        ("v1", "v1", &first),
        (first.as_str(), "v1", &first),
        (second.as_str(), "v2", &second),
    ] {
        let (status, body) = server.call(json!({"url": url, "call": "Version()", "version": version})).await;
        assert_eq!(status, 200, "{version}: {body}");
        assert_eq!((body["data"].as_str(), body["commit"].as_str()), (Some(data), Some(commit.as_str())), "{version}");
    }
    // cache_bust clones again: the new head becomes current.
    let (_, body) = server.call(json!({"url": url, "call": "Version()", "cache_bust": true})).await;
    assert_eq!(
        (body["data"].as_str(), body["commit"].as_str(), body["built"].as_bool()),
        (Some("v2"), Some(second.as_str()), Some(true))
    );
    assert_eq!(server.data(url, "Version()").await, "v2");
    server.stop();
    sandbox.assert_clean();
}

/// A `cache_bust` drops the clone and sources under calls that resolved their commit a
/// moment before and have not yet checked it out or built it: they resolve again, and
/// every call gets its answer (not a 500 for a clone that vanished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busts_racing_calls_cost_no_answer() {
    if !root_or_skip("busts_racing_calls_cost_no_answer") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = "[cache]\nbust_interval = \"0s\"\n".into();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let mut server = Server::start(&sandbox);
    let url = geo.import_path.clone();
    assert_eq!(server.data(&url, "Sum(1, 2)").await, "3");
    let post = |http: reqwest::Client, base: String, body: Value| async move {
        let response = http.post(format!("{base}/api/v1/function")).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let busting = Arc::new(AtomicBool::new(true));
    let busters: Vec<_> = (0..2)
        .map(|b| {
            let (http, base, url) = (server.http.clone(), server.url.clone(), url.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..4 {
                    let call = format!("Sum({b}, {i})");
                    let body = json!({"url": url, "call": call, "cache_bust": true});
                    answers.push((call, post(http.clone(), base.clone(), body).await));
                }
                answers
            })
        })
        .collect();
    let callers: Vec<_> = (0..2)
        .map(|c| {
            let (http, base, url, busting) =
                (server.http.clone(), server.url.clone(), url.clone(), Arc::clone(&busting));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut i = 100;
                while busting.load(Ordering::SeqCst) {
                    i += 1;
                    let call = format!("Sum({c}, {i})");
                    let body = json!({"url": url, "call": call});
                    answers.push((call, post(http.clone(), base.clone(), body).await));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for buster in busters {
        answers.extend(buster.await.unwrap());
    }
    busting.store(false, Ordering::SeqCst);
    for caller in callers {
        answers.extend(caller.await.unwrap());
    }
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(call, (status, body))| {
            let sum: i64 = call
                .trim_start_matches("Sum(")
                .trim_end_matches(')')
                .split(", ")
                .map(|n| n.parse::<i64>().unwrap())
                .sum();
            *status != 200 || body["data"].as_str() != Some(sum.to_string().as_str())
        })
        .map(|(call, (status, body))| format!("{call} → {status} {body}"))
        .collect();
    assert!(wrong.is_empty(), "{} of {} calls went wrong:\n{}", wrong.len(), answers.len(), wrong.join("\n"));
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abbreviated_commits_resolve_as_git_resolves_them() {
    if !root_or_skip("abbreviated_commits_resolve_as_git_resolves_them") {
        return;
    }
    let sandbox = Sandbox::new();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let first = geo.head();
    let source = std::fs::read_to_string(geo.work.join("geo.go")).unwrap();
    let second = geo.change("geo.go", &source.replace("return \"v1\"", "return \"v2\""), "v2");
    // Two thousand more commits on another branch: some surely share their first four
    // hex digits with another (the chance that none does is about e^-30).
    let mut stream = String::new();
    for i in 0..2000 {
        stream.push_str(&format!(
            "commit refs/heads/noise\ncommitter t <t@example.test> {} +0000\ndata 0\n",
            1_700_000_000 + i
        ));
        if i == 0 {
            stream.push_str(&format!("from {second}\n"));
        }
        stream.push_str(&format!("M 644 inline noise.txt\ndata {}\n{i}\n\n", i.to_string().len() + 1));
    }
    let mut import =
        geo.bare_git().args(["fast-import", "--quiet"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(import.stdin.as_mut().unwrap(), stream.as_bytes()).unwrap();
    assert!(import.wait().unwrap().success());
    let commits = support::run(geo.bare_git().args(["rev-list", "--all"]));
    let commits: Vec<&str> = commits.lines().collect();
    assert_eq!(commits.len(), 2002);
    let mut by_prefix: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for commit in &commits {
        by_prefix.entry(&commit[..4]).or_default().push(commit);
    }
    let (ambiguous, sharing) = by_prefix.iter().find(|(_, c)| c.len() > 1).expect("two commits share a prefix");
    let unknown =
        (0..).map(|n| format!("{n:07x}")).find(|p| !commits.iter().any(|c| c.starts_with(p.as_str()))).unwrap();
    let short = |commit: &str| support::run(geo.bare_git().args(["rev-parse", "--short=7", commit])).trim().to_owned();
    geo.tag("cafe");

    let mut server = Server::start(&sandbox);
    let url = geo.import_path.as_str();
    // The first request fetches only the tip of main; the old commit's abbreviation makes
    // the server fetch the history.
    let call = |version: &str| json!({"url": url, "call": "Version()", "version": version});
    for (version, data, commit) in
        [(short(&first), "v1", &first), (short(&second), "v2", &second), ("cafe".to_owned(), "v2", &second)]
    {
        let (status, body) = server.call(call(&version)).await;
        assert_eq!(status, 200, "{version}: {body}");
        assert_eq!((body["data"].as_str(), body["commit"].as_str()), (Some(data), Some(commit.as_str())), "{version}");
    }
    let (status, body) = server.call(call(ambiguous)).await;
    assert_eq!(status, 400, "{ambiguous}: {body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("ambiguous"), "{body}");
    for commit in sharing {
        assert!(message.contains(commit), "{commit} is named: {body}");
    }
    let (status, body) = server.call(call(&unknown)).await;
    assert_eq!(status, 404, "{unknown}: {body}");
    assert!(body["error"].as_str().unwrap().contains("not found"), "{body}");
    // Resolved once, an abbreviation is remembered like a tag.
    let (status, body) = server.call(call(&short(&first))).await;
    assert_eq!((status, body["data"].as_str()), (200, Some("v1")), "{body}");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_build_once_and_the_cache_survives_a_restart() {
    if !root_or_skip("concurrent_first_requests_build_once_and_the_cache_survives_a_restart") {
        return;
    }
    let sandbox = Sandbox::new();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let mut server = Server::start(&sandbox);
    let url = geo.import_path.clone();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let http = server.http.clone();
            let endpoint = format!("{}/api/v1/function", server.url);
            let body = json!({"url": url, "call": format!("Two({i}, 10)")});
            tokio::spawn(
                async move { http.post(endpoint).json(&body).send().await.unwrap().json::<Value>().await.unwrap() },
            )
        })
        .collect();
    let mut leaders = 0;
    for (i, call) in calls.into_iter().enumerate() {
        let body = call.await.unwrap();
        assert_eq!(body["data"], format!("{} {}", i + 10, i * 10), "{body}");
        leaders += usize::from(body["built"] == true);
    }
    assert_eq!(leaders, 1, "one request built, the others waited for it");
    // The build's own line (the jail's end is logged under its label too, at debug).
    let builds = server.log().matches("skyisland_functions: build example.test/acme/geo dispatcher").count();
    assert_eq!(builds, 1, "{}", server.log());
    server.stop();

    // A new server on the same data: the binary cache is intact, nothing is built.
    let mut server = Server::start(&sandbox);
    let (_, body) = server.call(json!({"url": url, "call": "Two(1, 2)"})).await;
    assert_eq!((body["data"].as_str(), body["built"].as_bool()), (Some("3 2"), Some(false)), "{body}");
    assert!(!server.log().contains("dispatcher"), "{}", server.log());
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_without_go_mod_and_packages_in_subdirectories() {
    if !root_or_skip("repositories_without_go_mod_and_packages_in_subdirectories") {
        return;
    }
    let sandbox = Sandbox::new();
    let nomod = Repo::from_fixture(&sandbox, "acme", "strs", "nomod");
    let nested = Repo::from_fixture(&sandbox, "acme", "nested", "nested");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&nomod.import_path, "Shout(\"hi\")").await, "HI!");
    assert_eq!(server.data(&nomod.import_path, "Repeat(\"ab\", 3)").await, "ababab");
    assert_eq!(server.data(&format!("{}/strs", nested.import_path), "Reverse(\"abc\")").await, "cba");
    let (status, body) = server.call(json!({"url": format!("{}/nope", nested.import_path), "call": "F()"})).await;
    assert_eq!(status, 422, "{body}");
    server.stop();
    sandbox.assert_clean();
}
