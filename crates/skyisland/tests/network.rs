//! Networks for jails: the IPv4 pool, a veth per `ip4` jail, the admin endpoints. The
//! bridge and every jail's link live in a network namespace each test creates and
//! removes, and the only peer is a listener on the gateway inside it: no traffic leaves.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{Listener, NetNs, Repo, Sandbox, Server, root_or_skip};

const GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 213, 7, 1);

fn sandbox(netns: &NetNs, range: u32, jails: &str) -> Sandbox {
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = jails.to_owned();
    sandbox.extra_config = format!("{}keep_idle = \"300ms\"\n", support::ip4_config(netns, "skyt0", 7, range));
    sandbox
}

/// The links a jail left in the namespace (host ends are named `sk` and the address in hex).
fn jail_links(netns: &NetNs) -> Vec<String> {
    netns.links().into_iter().filter(|l| l.starts_with("sk") && l != "skyt0").collect()
}

async fn call(server: &Server, call: &str, ip4: bool, repo: &Repo) -> (u16, Value) {
    server.call(json!({"url": repo.import_path, "call": call, "ip4": ip4})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip4_jails_reach_what_the_operator_allows_and_nothing_of_the_host() {
    if !root_or_skip("ip4_jails_reach_what_the_operator_allows_and_nothing_of_the_host") {
        return;
    }
    let netns = NetNs::new();
    // Listeners in the bridge's namespace, up before the server: on the gateway address
    // (one allowed by the operator, the positive control; one not) and on every address.
    let allowed = Listener::start(&netns, GATEWAY);
    let on_gateway = Listener::start(&netns, GATEWAY);
    let everywhere = Listener::start(&netns, std::net::Ipv4Addr::UNSPECIFIED);
    let mut sandbox = sandbox(&netns, 4, "exec_timeout = \"10s\"");
    sandbox.extra_config.push_str(&format!("allow = [\"10.213.7.1:{}/tcp\"]\n", allowed.addr.port()));
    let repo = Repo::from_fixture(&sandbox, "acme", "netcheck", "netcheck");
    let mut server = Server::start(&sandbox);
    assert!(netns.links().contains(&"skyt0".to_owned()), "the server made its bridge: {:?}", netns.links());
    let (_, resources) = server.admin(Method::GET, "/api/v1/admin/resources").await;
    assert_eq!(resources["ip4"]["egress_rules"], true, "{resources}");

    let (status, body) = call(&server, &format!("Dial(\"{}\")", allowed.addr), true, &repo).await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_str().unwrap();
    assert!(data.starts_with("ok 10.213.7.2"), "{data}");
    let from = data.trim_start_matches("ok ");
    let seen = || allowed.peers.lock().unwrap().iter().any(|p| p.ip().to_string() == from);
    support::eventually("the listener to see the jail's address", Duration::from_secs(5), seen).await;

    // Everything else of the host is refused at once, whatever address it listens on.
    for port in [on_gateway.addr.port(), everywhere.addr.port()] {
        let (_, body) = call(&server, &format!("Dial(\"10.213.7.1:{port}\")"), true, &repo).await;
        assert!(body["data"].as_str().unwrap().ends_with("connect: no route to host"), "port {port}: {body}");
    }
    assert!(on_gateway.peers.lock().unwrap().is_empty() && everywhere.peers.lock().unwrap().is_empty());

    let (_, body) = call(&server, &format!("Dial(\"{}\")", allowed.addr), false, &repo).await;
    assert!(body["data"].as_str().unwrap().contains("network is unreachable"), "no network without ip4: {body}");
    let (_, body) = call(&server, "Addr(0)", false, &repo).await;
    assert_eq!(body["data"], "none");
    let (_, body) = call(&server, "Resolv()", true, &repo).await;
    assert_eq!(body["data"], "nameserver 10.213.7.1");

    // Jails on the bridge cannot reach each other.
    let http = server.http.clone();
    let endpoint = format!("{}/api/v1/function", server.url);
    let serving = tokio::spawn({
        let body = json!({"url": repo.import_path, "call": "Serve(7000, 4000)", "ip4": true});
        async move { http.post(endpoint).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    let mut found = None;
    for _ in 0..500 {
        let (_, jails) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        found = jails["jails"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|j| Some((j["ip4"].as_str()?.to_owned(), j["pid"].as_u64()?)));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (serving_ip, pid) = found.expect("the jail's details show its address and pid");
    // Until the jail listens on port 7000 (0x1B58, state 0A in its namespace's table).
    let listening = || {
        ["tcp", "tcp6"].iter().any(|table| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                .is_ok_and(|t| t.lines().any(|l| l.contains(":1B58 ") && l.split_whitespace().nth(3) == Some("0A")))
        })
    };
    support::eventually("the serving jail to listen", Duration::from_secs(10), listening).await;
    let (_, body) = call(&server, &format!("Dial(\"{serving_ip}:7000\")"), true, &repo).await;
    assert!(body["data"].as_str().unwrap().starts_with("error"), "jail to jail must fail: {body}");
    assert_eq!(serving.await.unwrap()["data"], "nobody came");

    server.stop();
    assert!(jail_links(&netns).is_empty(), "no link is left: {:?}", netns.links());
    assert!(!netns.links().contains(&"skyt0".to_owned()), "the bridge the server made is gone");
    let tables =
        support::run(std::process::Command::new("ip").args(["netns", "exec", &netns.name, "nft", "list", "tables"]));
    assert!(!tables.contains("skyisland"), "the rules are gone with the server: {tables}");
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_address_shows_nothing_of_the_previous_jail() {
    if !root_or_skip("a_reused_address_shows_nothing_of_the_previous_jail") {
        return;
    }
    let netns = NetNs::new();
    // A peer that accepts and never reads: a jail that writes more than fits and exits
    // leaves its connection behind, still trying to deliver.
    let sink = Listener::start_holding(&netns, GATEWAY);
    // One address: every ip4 jail uses the same one, one after the other.
    let mut sandbox = sandbox(&netns, 1, "exec_timeout = \"10s\"");
    sandbox.extra_config = format!(
        "{}keep_idle = \"60s\"\nallow = [\"10.213.7.1:{}/tcp\"]\n",
        support::ip4_config(&netns, "skyt0", 7, 1),
        sink.addr.port()
    );
    let repo = Repo::from_fixture(&sandbox, "acme", "hostile", "hostile");
    let mut server = Server::start(&sandbox);
    let run = |command: &str, arg: String| json!({"url": repo.import_path, "call": format!("Run({command:?}, {arg:?})"), "ip4": true, "cache": false});
    let (status, body) = server.call(run("socket-tables", String::new())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].as_str().unwrap().contains("tcp=0"), "{body}");
    let (status, body) = server.call(run("linger", sink.addr.to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].as_str().unwrap().starts_with("linger sent="), "{body}");
    assert_eq!(sink.peers.lock().unwrap().len(), 1, "the jail reached its peer");
    let (status, body) = server.call(run("socket-tables", String::new())).await;
    assert_eq!(status, 200, "{body}");
    let tables = body["data"].as_str().unwrap();
    assert!(
        tables.contains("tcp=0\n") && tables.contains("tcp6=0\n"),
        "the next jail of the address sees no socket: {tables}"
    );
    assert!(server.metric("skyisland_ip4_namespaces_replaced_total", &[]).await >= 1.0, "the namespace was replaced");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_is_whole_again_after_calls_timeouts_and_kills() {
    if !root_or_skip("the_pool_is_whole_again_after_calls_timeouts_and_kills") {
        return;
    }
    let netns = NetNs::new();
    let sandbox = sandbox(&netns, 3, "exec_timeout = \"2s\"");
    let repo = Repo::from_fixture(&sandbox, "acme", "netcheck", "netcheck");
    let mut server = Server::start(&sandbox);
    for _ in 0..8 {
        let (status, body) = call(&server, "Addr(0)", true, &repo).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"].as_str().unwrap().starts_with("10.213.7.2"), "{body}");
    }
    // Two at once get two addresses.
    let (a, b) = tokio::join!(call(&server, "Addr(700)", true, &repo), call(&server, "Addr(700)", true, &repo));
    assert_ne!(a.1["data"], b.1["data"], "{a:?} {b:?}");
    // A timed-out jail and a killed one give theirs back too.
    let (status, _) = call(&server, "Spin()", true, &repo).await;
    assert_eq!(status, 504);
    let http = server.http.clone();
    let endpoint = format!("{}/api/v1/function", server.url);
    let long = tokio::spawn({
        let body = json!({"url": repo.import_path, "call": "Addr(60000)", "ip4": true});
        async move { http.post(endpoint).json(&body).send().await.unwrap().status().as_u16() }
    });
    let mut id = None;
    for _ in 0..500 {
        let (_, jails) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        id = jails["jails"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["state"] == "running")
            .and_then(|j| j["id"].as_str())
            .map(str::to_owned);
        if id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = server.admin(Method::DELETE, &format!("/api/v1/admin/jail/{}", id.unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(long.await.unwrap(), 500);

    let (_, ips) = server.admin(Method::GET, "/api/v1/admin/ips").await;
    let ips = ips["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 3);
    assert!(ips.iter().all(|ip| ip["in_use_by"].is_null() && ip["state"] == "available"), "{ips:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !jail_links(&netns).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jail_links(&netns).is_empty(), "no link is left: {:?}", netns.links());
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_and_the_admin_endpoints_with_states_that_survive_a_restart() {
    if !root_or_skip("exhaustion_and_the_admin_endpoints_with_states_that_survive_a_restart") {
        return;
    }
    let netns = NetNs::new();
    let sandbox = sandbox(&netns, 2, "exec_timeout = \"10s\"");
    let repo = Repo::from_fixture(&sandbox, "acme", "netcheck", "netcheck");
    let mut server = Server::start(&sandbox);
    let (status, all) = server.admin(Method::GET, "/api/v1/admin/ips").await;
    assert_eq!((status, &all["count"], &all["gateway"]), (200, &json!(2), &json!("10.213.7.1")), "{all}");

    let put = |path: &'static str, body: Value| {
        let http = server.http.clone();
        let url = format!("{}{path}", server.url);
        async move {
            let r = http.put(url).header("X-Sky-Island-Token", support::ADMIN_TOKEN).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = put("/api/v1/admin/ips", json!({"ip": "10.213.7.20", "state": "unavailable"})).await;
    assert_eq!((status, &body["state"]), (200, &json!("unavailable")), "{body}");
    for (ip, state, expect, message) in [
        ("nope", "available", 400, "not an IPv4 address"),
        ("10.9.9.9", "available", 422, "not an address of the pool"),
        ("10.213.7.21", "maybe", 422, "unknown state"),
    ] {
        let (status, body) = put("/api/v1/admin/ips", json!({"ip": ip, "state": state})).await;
        assert_eq!(status, expect, "{body}");
        assert!(body["error"].as_str().unwrap().contains(message), "{body}");
    }
    // Read as Go read it: unknown fields ignored, names in any case, null is absent.
    let (status, body) = put("/api/v1/admin/ips", json!({"address": "10.213.7.21"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("missing field `ip`"), "{body}");
    let (status, body) = put("/api/v1/admin/ips", json!({"IP": "10.213.7.21", "State": "available", "x": 1})).await;
    assert_eq!((status, &body["state"]), (200, &json!("available")), "{body}");
    let (status, body) = put("/api/v1/admin/ips", json!({"ip": "10.213.7.21", "state": null})).await;
    assert_eq!(status, 400, "{body}");
    let (_, unavailable) = server.admin(Method::GET, "/api/v1/admin/ips?state=unavailable").await;
    assert_eq!(unavailable["ips"][0]["ip"], "10.213.7.20");
    assert_eq!(unavailable["count"], 1);
    let (_, available) = server.admin(Method::GET, "/api/v1/admin/ips?state=available").await;
    assert_eq!((&available["count"], &available["ips"][0]["ip"]), (&json!(1), &json!("10.213.7.21")));
    let (status, _) = server.admin(Method::GET, "/api/v1/admin/ips?state=broken").await;
    assert_eq!(status, 400);
    // The original's shapes at its paths: a map of address to 0 (free) or 1, lists by
    // state, numeric states, and 422 for a state it does not know.
    let (status, pool) = server.admin(Method::GET, "/api/v1/admin/network/ips").await;
    assert_eq!((status, pool), (200, json!({"10.213.7.20": 1, "10.213.7.21": 0})));
    let (_, available) = server.admin(Method::GET, "/api/v1/admin/network/ips?state=available").await;
    assert_eq!(available, json!({"available": ["10.213.7.21"]}));
    let (_, unavailable) = server.admin(Method::GET, "/api/v1/admin/network/ips?state=unavailable").await;
    assert_eq!(unavailable, json!({"unavailable": ["10.213.7.20"]}));
    let (status, body) = server.admin(Method::GET, "/api/v1/admin/network/ips?state=broken").await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = put("/api/v1/admin/network/ip", json!({"ip": "10.213.7.20", "state": 0})).await;
    assert_eq!((status, &body["state"]), (200, &json!("available")), "{body}");
    let (status, body) = put("/api/v1/admin/network/ip", json!({"ip": "10.213.7.20", "state": 1})).await;
    assert_eq!((status, &body["state"]), (200, &json!("unavailable")), "{body}");
    for state in [json!(2), json!(-1), json!(0.5), json!("2"), json!(true)] {
        let (status, body) = put("/api/v1/admin/network/ip", json!({"ip": "10.213.7.21", "state": state})).await;
        assert_eq!(status, 422, "{state}: {body}");
    }

    // One address left: a second jail at the same time is refused at once.
    let http = server.http.clone();
    let endpoint = format!("{}/api/v1/function", server.url);
    let holding = tokio::spawn({
        let body = json!({"url": repo.import_path, "call": "Addr(3000)", "ip4": true});
        async move {
            let response = http.post(endpoint).json(&body).send().await.map_err(|e| e.to_string())?;
            response.json::<Value>().await.map_err(|e| e.to_string())
        }
    });
    let mut held = false;
    // (The first call builds the package's dispatcher: seconds on a loaded machine.)
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (_, ips) = server.admin(Method::GET, "/api/v1/admin/ips?state=available").await;
        held = !ips["ips"][0]["in_use_by"].is_null();
        if held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !held {
        panic!("the address shows no holder: {:?}\n{}", holding.await, server.log());
    }
    let started = Instant::now();
    let response = server
        .http
        .post(format!("{}/api/v1/function", server.url))
        .json(&json!({"url": repo.import_path, "call": "Addr(0)", "ip4": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("addresses of the IPv4 pool are in use"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not queued");
    assert_eq!(holding.await.unwrap().unwrap()["data"], "10.213.7.21");

    // The original's PUT path, and the state across a restart.
    let (status, _) = put("/api/v1/admin/network/ip", json!({"ip": "10.213.7.21", "state": "unavailable"})).await;
    assert_eq!(status, 200);
    server.stop();
    let mut server = Server::start(&sandbox);
    let (_, unavailable) = server.admin(Method::GET, "/api/v1/admin/ips?state=unavailable").await;
    assert_eq!(unavailable["count"], 2, "{unavailable}");
    let (status, _) = call(&server, "Addr(0)", true, &repo).await;
    assert_eq!(status, 503, "no address is available");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cache_keeps_ip4_answers_apart_and_jails_may_talk_when_allowed() {
    if !root_or_skip("the_request_cache_keeps_ip4_answers_apart_and_jails_may_talk_when_allowed") {
        return;
    }
    let netns = NetNs::new();
    let mut sandbox = sandbox(&netns, 4, "exec_timeout = \"10s\"");
    sandbox.extra_config.push_str("jail_to_jail = true\nnat = true\n");
    let repo = Repo::from_fixture(&sandbox, "acme", "netcheck", "netcheck");
    let mut server = Server::start(&sandbox);
    // With and without ip4 are two keys: a cached "none" is never an ip4 call's answer.
    let addr = |ip4: bool| json!({"url": repo.import_path, "call": "Addr(0)", "ip4": ip4});
    let (_, without) = server.call(addr(false)).await;
    assert_eq!((&without["data"], &without["cache"]), (&json!("none"), &json!("miss")));
    let (_, with) = server.call(addr(true)).await;
    assert_eq!(with["cache"], "miss", "{with}");
    assert!(with["data"].as_str().unwrap().starts_with("10.213.7."), "{with}");
    let (_, again) = server.call(addr(true)).await;
    assert_eq!((&again["data"], &again["cache"]), (&with["data"], &json!("hit")));

    // jail_to_jail: one jail reaches another on the bridge.
    let http = server.http.clone();
    let endpoint = format!("{}/api/v1/function", server.url);
    let serving = tokio::spawn({
        let body = json!({"url": repo.import_path, "call": "Serve(7001, 8000)", "ip4": true, "cache": false});
        async move { http.post(endpoint).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    let mut found = None;
    for _ in 0..500 {
        let (_, jails) = server.admin(Method::GET, "/api/v1/admin/jails").await;
        found = jails["jails"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|j| Some((j["ip4"].as_str()?.to_owned(), j["pid"].as_u64()?)));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ip, pid) = found.expect("the serving jail runs");
    let listening = || {
        ["tcp", "tcp6"].iter().any(|table| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                .is_ok_and(|t| t.lines().any(|l| l.contains(":1B59 ") && l.split_whitespace().nth(3) == Some("0A")))
        })
    };
    support::eventually("the serving jail to listen", Duration::from_secs(10), listening).await;
    let (_, body) = server
        .call(json!({"url": repo.import_path, "call": format!("Dial(\"{ip}:7001\")"), "ip4": true, "cache": false}))
        .await;
    assert!(body["data"].as_str().unwrap().starts_with("ok 10.213.7."), "{body}");
    assert_eq!(serving.await.unwrap()["data"], "accepted");
    // nat: the masquerade rule is in place beside the egress rules.
    let tables =
        support::run(std::process::Command::new("ip").args(["netns", "exec", &netns.name, "nft", "list", "tables"]));
    assert!(tables.contains("table ip skyisland_skyt0_nat"), "{tables}");
    server.stop();
    sandbox.assert_clean();
}

#[test]
fn jail_run_with_a_network_of_its_own() {
    if !root_or_skip("jail_run_with_a_network_of_its_own") {
        return;
    }
    let netns = NetNs::new();
    let sandbox = sandbox(&netns, 2, "");
    let out = sandbox.jail_run(&["--net"], &[support::attack().to_str().unwrap(), "interfaces"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("eth0 up=true") && stdout.contains("lo up=true"), "{stdout}");
    let out = sandbox.jail_run(&["--net"], &["/bin/cat", "/etc/resolv.conf"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nameserver 10.213.7.1\n");
    assert!(jail_links(&netns).is_empty() || jail_links(&netns).len() <= 1, "{:?}", netns.links());
    // A pool inside a network the host already has an interface in is refused before the
    // bridge takes that network's route.
    let ip = |args: &[&str]| support::run(std::process::Command::new("ip").args(["-n", &netns.name]).args(args));
    ip(&["link", "add", "skyt-lan", "type", "veth", "peer", "name", "skyt-lan-p"]);
    ip(&["addr", "add", "10.213.7.5/16", "dev", "skyt-lan"]);
    let out = sandbox.jail_run(&["--net"], &["/bin/true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("network.ip4.cidr 10.213.7.0/24 overlaps 10.213.7.5/16 of interface skyt-lan"), "{stderr}");
    ip(&["link", "del", "skyt-lan"]);
    sandbox.assert_clean();
}
