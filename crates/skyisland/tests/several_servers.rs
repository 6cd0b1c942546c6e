//! Several servers on one host, as operators run them: the default `run_dir` and
//! `uid_base` shared (so one set of jail slots), a data directory each. They build and call
//! at once without a 500, one restarts while the other builds, and a new one starts before
//! the old one stops (blue/green) without a pause in builds.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Repo, Sandbox, Server, root_or_skip};

/// Every fixture package and a call it answers.
const CALLS: [(&str, &str, &str); 4] = [
    ("geo", "Encode(1, 2)", "1.0000|2.0000"),
    ("misc", "Hello()", "hello"),
    ("nomod", "Shout(\"a\")", "A!"),
    ("nested", "Reverse(\"ab\")", "ba"),
];

async fn first_calls(server: &Server, owner: &str) -> Vec<(u16, Value)> {
    let calls = CALLS.iter().map(|(name, call, _)| {
        let body = json!({"url": url_of(owner, name), "call": call});
        let (http, url) = (server.http.clone(), format!("{}/api/v1/function", server.url));
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    futures::future::join_all(calls).await
}

fn repos(sandbox: &Sandbox, owner: &str) {
    for (name, _, _) in CALLS {
        Repo::from_fixture(sandbox, owner, name, name);
    }
}

/// The import path of fixture `name` (the nested one's package is in a directory).
fn url_of(owner: &str, name: &str) -> String {
    match name {
        "nested" => format!("example.test/{owner}/nested/strs"),
        _ => format!("example.test/{owner}/{name}"),
    }
}

fn check(answers: &[(u16, Value)]) {
    for ((status, body), (name, call, data)) in answers.iter().zip(CALLS) {
        assert_eq!(*status, 200, "{name} {call}: {body}");
        assert_eq!(body["data"], data, "{name} {call}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_host_share_the_slots_build_and_call_at_once_and_restart() {
    if !root_or_skip("servers_on_one_host_share_the_slots_build_and_call_at_once_and_restart") {
        return;
    }
    let a_box = Sandbox::new();
    let b_box = Sandbox::beside(&a_box);
    for owner in ["one", "two", "three", "four"] {
        repos(&a_box, owner);
    }
    let mut a = Server::start(&a_box);
    let mut b = Server::start(&b_box);
    // Both build at once: more builds than the host has build slots.
    let (on_a, on_b) = tokio::join!(first_calls(&a, "one"), first_calls(&b, "two"));
    check(&on_a);
    check(&on_b);
    // Idle, a server gives its slots back: the other can use all of them.
    let health = b.health().await;
    let capacity = health["jails"]["capacity"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy: Vec<_> = (0..capacity)
        .map(|_| {
            let body = json!({"url": "example.test/one/misc", "call": "Sleep(1500)", "cache": false});
            let (http, url) = (a.http.clone(), format!("{}/api/v1/function", a.url));
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for call in busy {
        assert_eq!(call.await.unwrap(), 200, "every slot of the host is usable by one server");
    }

    // One restarts while the other builds.
    let building = {
        let (http, url) = (a.http.clone(), a.url.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for (name, call, _) in CALLS {
                let body = json!({"url": url_of("three", name), "call": call});
                let response = http.post(format!("{url}/api/v1/function")).json(&body).send().await.unwrap();
                answers.push((response.status().as_u16(), response.json::<Value>().await.unwrap()));
            }
            answers
        })
    };
    b.crash();
    let mut b = Server::start(&b_box);
    check(&building.await.unwrap());
    check(&first_calls(&b, "one").await);

    // Blue/green: c starts beside a and b, then a stops; builds go on throughout.
    let c_box = Sandbox::beside(&a_box);
    let mut c = Server::start(&c_box);
    let (on_c, stopped) = tokio::join!(first_calls(&c, "four"), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.stop()
    });
    check(&on_c);
    assert!(stopped.success());
    check(&first_calls(&b, "four").await);
    b.stop();
    c.stop();
    for sandbox in [&a_box, &b_box, &c_box] {
        sandbox.assert_clean();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused_with_a_clear_message() {
    if !root_or_skip("a_second_server_on_the_same_data_directory_is_refused_with_a_clear_message") {
        return;
    }
    let sandbox = Sandbox::new();
    let mut first = Server::start(&sandbox);
    let out =
        std::process::Command::new(support::bin()).args(["serve", "--config"]).arg(sandbox.config()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is in use by another running server"), "{stderr}");
    first.stop();
    sandbox.assert_clean();
}
