//! Load: a real server driven at high concurrency with a mix of cached calls, calls with
//! new arguments, builds, timeouts, panics, memory bombs and `ip4` calls, checking that
//! every answer is the right one for its request, that latencies stay bounded, and that
//! afterwards the server holds exactly what it held before (leak accounting through
//! `/api/v1/admin/resources`, then the host's census once it stopped).
//!
//! CI runs it for 45 s. The soak is the same test, longer, from a release build:
//!
//! ```sh
//! SKYISLAND_LOAD_SECONDS=1800 cargo test --release --test load -- --nocapture
//! ```

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::mixed::{AT_REST, FDS_AT_REST, Kind, Plan, Tally, env_or, holdings, own_sockets, plan, right, settle};
use support::{NetNs, Repo, Sandbox, Server, root_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_gets_the_right_answers_and_leaks_nothing() {
    if !root_or_skip("mixed_load_gets_the_right_answers_and_leaks_nothing") {
        return;
    }
    let seconds = env_or("SKYISLAND_LOAD_SECONDS", 45);
    let concurrency = env_or("SKYISLAND_LOAD_CONCURRENCY", 16);
    let netns = NetNs::new();
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"2s\"\nmemory_limit = \"64MiB\"".into();
    sandbox.extra_config = format!("{}keep_idle = \"500ms\"\n", support::ip4_config(&netns, "skyl0", 12, 6));
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let net = Repo::from_fixture(&sandbox, "acme", "netcheck", "netcheck");
    let mut server = Server::start(&sandbox);
    for (url, call) in [(&geo, "Encode(1, 2)"), (&misc, "Hello()"), (&net, "Addr(0)")] {
        server.data(&url.import_path, call).await;
    }
    let before = settle(&server, Some(2)).await;
    let held_before = holdings(server.pid());
    let sockets_before = own_sockets(server.pid());

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers = (0..concurrency).map(|_| {
        let (http, url) = (server.http.clone(), server.url.clone());
        let (counter, tally) = (Arc::clone(&counter), Arc::clone(&tally));
        let (g, m, n) = (geo.import_path.clone(), misc.import_path.clone(), net.import_path.clone());
        tokio::spawn(async move {
            while Instant::now() < until {
                let Plan { kind, body, expect } =
                    plan(counter.fetch_add(1, Ordering::Relaxed), &g, &m, &n, "10.213.12.");
                let sent = Instant::now();
                let response = http.post(format!("{url}/api/v1/function")).json(&body).send().await;
                let outcome = match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let answer: Value = response.json().await.unwrap_or(Value::Null);
                        if !right(&expect, status, &answer) {
                            tally.lock().unwrap().wrong.push(format!("{body} → {status} {answer}"));
                        }
                        format!("{kind:?} {status}")
                    }
                    Err(e) => {
                        tally.lock().unwrap().wrong.push(format!("{body} → no answer: {e}"));
                        format!("{kind:?} no answer")
                    }
                };
                let mut tally = tally.lock().unwrap();
                tally.latencies.entry(kind).or_default().push(sent.elapsed());
                *tally.outcomes.entry(outcome).or_default() += 1;
            }
        })
    });
    for worker in futures::future::join_all(workers).await {
        worker.unwrap();
    }
    let elapsed = started.elapsed();

    let mut tally = std::mem::take(&mut *tally.lock().unwrap());
    let total: u64 = tally.outcomes.values().sum();
    println!(
        "\n{total} requests in {elapsed:.1?} ({:.0}/s) at concurrency {concurrency}",
        total as f64 / elapsed.as_secs_f64()
    );
    support::mixed::report(&mut tally);
    assert!(
        tally.wrong.is_empty(),
        "{} wrong answers, e.g.:\n{}",
        tally.wrong.len(),
        tally.wrong[..tally.wrong.len().min(10)].join("\n")
    );
    assert!(tally.latencies.len() == 8, "every kind of request was made: {:?}", tally.outcomes);
    // p99 per kind (a debug build on 2 cores, 16 at once): a call that waits for a slot
    // it never gets, or for a jail that does not end, breaks these.
    for (kind, latencies) in &tally.latencies {
        let bound = match kind {
            Kind::Build => Duration::from_secs(30),
            // Its 2 s timeout, then cleaning up.
            Kind::Timeout => Duration::from_secs(6),
            _ => Duration::from_secs(5),
        };
        let p99 = support::mixed::percentile(latencies, 0.99);
        assert!(p99 < bound, "{kind:?}: p99 {p99:?} over {bound:?}");
    }

    // Back at rest, the server holds what it held before.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = settle(&server, Some(2)).await;
        if AT_REST.iter().all(|k| now[k] == before[k])
            && FDS_AT_REST.iter().all(|k| now["fds"][k] == before["fds"][k])
            && own_sockets(server.pid()) == sockets_before
        {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "leaked:\nbefore: {before}\n{held_before}\nafter: {now}\n{}",
            holdings(server.pid())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("resources before: {before}\nresources after:  {after}");
    println!("held before:\n{held_before}\nheld after:\n{}", holdings(server.pid()));
    let slots = (support::MAX_JAILS + 2) as u64;
    let count = |v: &Value| v.as_u64().unwrap();
    assert!(count(&after["cgroups"]) <= slots, "one cgroup per slot at most: {after}");
    assert!(count(&after["fds"]["slot_locks"]) <= slots, "a lock per slot at most: {after}");
    assert!(count(&after["fds"]["cgroup_files"]) <= 2 * slots, "two cgroup files per slot at most: {after}");
    assert_eq!(after["fds"]["cached_binaries"], after["binaries_in_memory"], "one per binary in memory: {after}");
    assert!(count(&after["binaries_in_memory"]) <= count(&after["binary_cache_entries"]), "{after}");
    assert!(count(&after["fds"]["network_namespaces"]) <= slots, "a namespace per slot at most: {after}");
    server.stop();
    sandbox.assert_clean();
    assert_eq!(netns.links().iter().filter(|l| l.starts_with("sk") && *l != "skyl0").count(), 0, "{:?}", netns.links());
}
