//! Every client — Go, Python, C (under valgrind), JavaScript, Rust and the `skyisland call`
//! command — against one real server with fixture repositories and an IPv4 pool (its
//! bridge in a network namespace made for the test). Each client's own test suite runs
//! as a subprocess with the server's address and fixtures in SKYISLAND_TEST_* variables,
//! covering a successful call, the optional fields, a build failure, a timeout, a call
//! with quotes and backslashes, and admin calls with and without the token.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use skyisland_client::{Client, Request};
use support::{ADMIN_TOKEN, NetNs, Repo, Sandbox, Server, bin, root_or_skip, workspace};

struct Fixtures {
    env: Vec<(String, String)>,
    geo: Repo,
    misc: Repo,
    broken: Repo,
    net: Repo,
}

fn fixtures(sandbox: &Sandbox, server: &Server) -> Fixtures {
    let geo = Repo::from_fixture(sandbox, "acme", "geo", "geo");
    geo.tag("v1");
    let misc = Repo::from_fixture(sandbox, "acme", "misc", "misc");
    let broken = Repo::from_fixture(sandbox, "acme", "broken", "broken");
    let net = Repo::from_fixture(sandbox, "acme", "netcheck", "netcheck");
    // A package in two languages: the calls name the runtime.
    let bilingual = Repo::from_fixture(sandbox, "acme", "bilingual", "bilingual");
    let env = [
        ("HOST", "http://127.0.0.1".to_owned()),
        ("PORT", server.addr.port().to_string()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("GEO", geo.import_path.clone()),
        ("GEO_TAG", "v1".to_owned()),
        ("GEO_COMMIT", geo.head()),
        ("MISC", misc.import_path.clone()),
        ("BROKEN", broken.import_path.clone()),
        ("NET", net.import_path.clone()),
        ("BILINGUAL", bilingual.import_path.clone()),
        ("IP4_PREFIX", "10.213.9.".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SKYISLAND_TEST_{k}"), v))
    .collect();
    Fixtures { env, geo, misc, broken, net }
}

const API_KEY: &str = "sky_clients_test_key_0123456789";

/// Runs one client's suite; returns its output, or the failure — also when it passed fewer
/// tests than `at_least` (counted by `passed`, from the suite's own report).
fn suite(
    name: &str,
    dir: &Path,
    command: &mut Command,
    env: &[(String, String)],
    at_least: usize,
    passed: fn(&str) -> usize,
) -> Result<String, String> {
    command.current_dir(dir).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = command.output().map_err(|e| format!("{name}: cannot run {command:?}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("{name} failed ({}):\n{text}", out.status));
    }
    let ran = passed(&text);
    if ran < at_least {
        return Err(format!("{name} passed only {ran} tests, not at least {at_least}:\n{text}"));
    }
    Ok(text)
}

fn go_passed(text: &str) -> usize {
    text.lines().filter(|l| l.trim_start().starts_with("--- PASS")).count()
}

fn python_passed(text: &str) -> usize {
    let ran = text.lines().find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok());
    if text.lines().any(|l| l == "OK") { ran.unwrap_or(0) } else { 0 }
}

fn node_passed(text: &str) -> usize {
    // "ℹ pass 8" (node's spec reporter) or "# pass 8" (TAP).
    text.lines()
        .find_map(|l| l.split_once("pass ").filter(|(head, _)| head.chars().count() <= 2)?.1.trim().parse().ok())
        .unwrap_or(0)
}

fn c_passed(text: &str) -> usize {
    text.lines().find_map(|l| l.strip_prefix("C client: all ")?.split(' ').next()?.parse().ok()).unwrap_or(0)
}

fn installed(_: &str) -> usize {
    1
}

fn clients_dir(name: &str) -> PathBuf {
    workspace().join("clients").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_against_a_real_server() {
    if !root_or_skip("every_client_against_a_real_server") {
        return;
    }
    let netns = NetNs::new();
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"2s\"".into();
    // Every suite builds the broken package: no circuit breaker in the way.
    sandbox.extra_config = format!("[circuit_breaker]\nfailures = 0\n{}", support::ip4_config(&netns, "skyc0", 9, 4));
    let mut server = Server::start(&sandbox);
    let fx = fixtures(&sandbox, &server);
    // A second server, beside it, that requires API keys: each client sends one.
    let mut keyed_box = Sandbox::new();
    keyed_box.shared_git_root = Some(sandbox.git_root());
    keyed_box.extra_config = format!("[auth]\napi_keys_required = true\napi_keys = [\"{API_KEY}\"]\n");
    let mut keyed = Server::start(&keyed_box);
    let mut env = fx.env.clone();
    env.push(("SKYISLAND_TEST_KEYED_PORT".into(), keyed.addr.port().to_string()));
    env.push(("SKYISLAND_TEST_API_KEY".into(), API_KEY.into()));
    let scratch = sandbox.path().join("clients");
    std::fs::create_dir_all(&scratch).unwrap();

    // Each suite in turn (they share the server; each is a subprocess of its own).
    let mut failures = Vec::new();
    let mut run =
        |name: &str, dir: PathBuf, command: &mut Command, at_least: usize, passed: fn(&str) -> usize| match suite(
            name, &dir, command, &env, at_least, passed,
        ) {
            Ok(output) => eprintln!("--- {name}: ok\n{output}"),
            Err(failure) => failures.push(failure),
        };
    run(
        "go",
        clients_dir("go"),
        Command::new("go")
            .args(["test", "-v", "-count=1", "./..."])
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local"),
        8,
        go_passed,
    );
    // Installable with pip from its folder; tested as installed. (From a copy: pip leaves
    // build files beside the sources.)
    let site = scratch.join("python");
    let source = scratch.join("python-source");
    support::run(Command::new("cp").arg("-r").arg(clients_dir("python")).arg(&source));
    run(
        "python (pip install)",
        source,
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target"])
            .arg(&site)
            .arg("."),
        1,
        installed,
    );
    run(
        "python",
        clients_dir("python").join("tests"),
        Command::new("python3").args(["-m", "unittest", "-v", "test_client"]).env("PYTHONPATH", &site),
        9,
        python_passed,
    );
    run("c", clients_dir("c"), Command::new("make").args(["-s", "clean", "test"]), 8, c_passed);
    run("javascript", clients_dir("js"), Command::new("node").args(["--test", "test/"]), 9, node_passed);

    // Rust: the client crate, then `skyisland call`.
    let client = Client::new(&server.url).unwrap();
    assert_eq!(client.function(&fx.geo.import_path, "Encode(57.64911, 10.40744)").await.unwrap(), "57.6491|10.4074");
    let tagged =
        client.call(&Request { version: Some("v1".into()), ..Request::new(&fx.geo.import_path, "Encode(1, 2)") }).await;
    let tagged = tagged.unwrap();
    assert_eq!((tagged.data.as_str(), tagged.commit), ("1.0000|2.0000", fx.geo.head()));
    let fresh = Request { cache: Some(false), cache_bust: true, ..Request::new(&fx.misc.import_path, "Hello()") };
    assert_eq!(client.call(&fresh).await.unwrap().cache, "miss");
    let net = Request { ip4: true, ..Request::new(&fx.net.import_path, "Addr(0)") };
    assert!(client.call(&net).await.unwrap().data.starts_with("10.213.9."));
    let broken = client.function(&fx.broken.import_path, "Oops()").await.unwrap_err();
    assert_eq!(broken.status().map(|s| s.as_u16()), Some(422), "{broken}");
    let slow = client.function(&fx.misc.import_path, "Sleep(10000)").await.unwrap_err();
    assert_eq!(slow.status().map(|s| s.as_u16()), Some(504), "{slow}");
    let quoted = client.function(&fx.geo.import_path, r#"Quote("a \"b\" \\ c")"#).await.unwrap();
    assert_eq!(quoted, r#""a \"b\" \\ c""#);
    assert_eq!(client.jails().await.unwrap_err().status().map(|s| s.as_u16()), Some(403));
    // Async calls, with the wait helper.
    let id =
        client.call_async(&Request::new(&fx.misc.import_path, "Hello()"), None, Some("rust-client")).await.unwrap();
    let again = client.call_async(&Request::new(&fx.misc.import_path, "Hello()"), None, Some("rust-client")).await;
    assert_eq!(again.unwrap(), id);
    let done = client.wait_invocation(&id, std::time::Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        (done["status"].as_str(), done["result"]["data"].as_str()),
        (Some("succeeded"), Some("hello")),
        "{done}"
    );
    let bad = client.call_async(&Request::new(&fx.misc.import_path, "Hello("), None, None).await.unwrap_err();
    assert_eq!(bad.status().map(|s| s.as_u16()), Some(400));
    let admin = client.clone().admin_token(ADMIN_TOKEN);
    assert!(admin.api_stats().await.unwrap()["uptime_seconds"].is_u64());
    assert!(admin.ips(Some("available")).await.unwrap()["count"].as_u64().unwrap() >= 1);

    let cli =
        |args: &[&str]| Command::new(bin()).arg("call").args(["--server", &server.url]).args(args).output().unwrap();
    let out = cli(&[&fx.geo.import_path, r#"Quote("a \"b\" \\ c")"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"a \\\"b\\\" \\\\ c\"\n");
    let out = cli(&["--version", "v1", "--no-cache", "--json", &fx.geo.import_path, "Encode(1, 2)"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((answer["data"].as_str(), answer["cache"].as_str()), (Some("1.0000|2.0000"), Some("miss")));
    let out = cli(&["--ip4", "--cache-bust", &fx.net.import_path, "Addr(0)"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("10.213.9."), "{out:?}");
    let out = cli(&[&fx.broken.import_path, "Oops()"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("skyisland: 422 Unprocessable Entity: build failed\n"), "{stderr}");
    assert!(stderr.contains("cannot use"), "the compiler's message: {stderr}");
    let out = cli(&[&fx.misc.import_path, "Sleep(10000)"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("504"), "{out:?}");

    // The Rust client and the command, with a key.
    let keyed_client = Client::new(&keyed.url).unwrap();
    let refused = keyed_client.function(&fx.misc.import_path, "Hello()").await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(keyed_client.api_key(API_KEY).function(&fx.misc.import_path, "Hello()").await.unwrap(), "hello");
    let out = Command::new(bin())
        .args(["call", "--server", &keyed.url, "--api-key", API_KEY, &fx.misc.import_path, "Hello()"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{out:?}");

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    server.stop();
    keyed.stop();
    sandbox.assert_clean();
    keyed_box.assert_clean();
}
