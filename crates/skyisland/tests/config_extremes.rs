//! Configurations at the edges of what validation accepts: a real server starts with each
//! and answers — a health check, a function call with a clear status — and stops cleanly.
//! (The property test in crates/config/tests/fuzz.rs covers every key with random values;
//! this one runs the accepted extremes for real.)

mod support;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::{Repo, Sandbox, Server, root_or_skip};

/// Keys (in their table) and values at the edges of what is accepted.
const EXTREMES: &[(&str, &str, &[&str])] = &[
    ("jails", "exec_timeout", &["\"1ms\"", "\"1day\""]),
    ("jails", "memory_limit", &["\"8MiB\"", "\"1TiB\""]),
    ("jails", "disk_limit", &["\"64KiB\"", "\"1TiB\""]),
    ("jails", "output_limit", &["\"1B\"", "\"1GiB\""]),
    ("jails", "cpu_limit", &["0.01", "1024.0"]),
    ("jails", "pids_limit", &["1", "4194304"]),
    ("jails", "warm_jails", &["0", "8"]),
    // (max_call may not exceed max_body: both at their smallest.)
    ("limits", "max_body", &["\"1KiB\"\nmax_call = \"16B\"", "\"1GiB\"\nmax_call = \"64KiB\""]),
    ("limits", "max_in_flight", &["1", "100000"]),
    ("limits", "max_queue", &["0", "1000000"]),
    ("limits", "client_timeout", &["\"1s\"", "\"1h\""]),
    ("limits", "drain", &["\"0s\"", "\"1h\""]),
    ("cache", "default_expiration", &["\"1ms\"", "\"366day\""]),
    ("cache", "purge_after", &["\"1ms\""]),
    ("cache", "max_memory", &["\"0B\"", "\"1TiB\""]),
    ("cache", "bust_interval", &["\"0s\""]),
    ("rate_limit", "per_second", &["0.001", "1000000.0"]),
    ("rate_limit", "burst", &["1", "1000000"]),
    ("go", "binary_memory", &["\"1MiB\""]),
    ("go", "source_cache_size", &["\"1MiB\""]),
    ("circuit_breaker", "failures", &["0", "1000000"]),
    ("circuit_breaker", "cool_down", &["\"1ms\"", "\"1day\""]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_and_answer_at_the_edges_of_what_is_accepted() {
    if !root_or_skip("servers_start_and_answer_at_the_edges_of_what_is_accepted") {
        return;
    }
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..6 {
        let mut picked: Vec<(&str, &str, &str)> = Vec::new();
        while picked.len() < 4 {
            let (table, key, values) = EXTREMES.choose(&mut rng).unwrap();
            if picked.iter().all(|(_, k, _)| k != key) {
                picked.push((table, key, values[rng.random_range(0..values.len())]));
            }
        }
        let mut sandbox = Sandbox::new();
        let mut tables: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (table, key, value) in &picked {
            tables.entry(table).or_default().push(format!("{key} = {value}"));
        }
        if let Some(jails) = tables.remove("jails") {
            sandbox.jails_config = jails.join("\n");
        }
        sandbox.extra_config =
            tables.iter().map(|(table, lines)| format!("[{table}]\n{}\n", lines.join("\n"))).collect::<String>();
        let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
        let mut server = Server::start(&sandbox);
        let health = server.health().await;
        assert!(health["status"] == "ok", "seed {seed} round {round} {picked:?}: {health}");
        let (status, body) = server.call(json!({"url": misc.import_path, "call": "Hello()"})).await;
        assert!(
            [200, 400, 413, 429, 500, 503, 504].contains(&status) && body.get("error").is_some() != (status == 200),
            "seed {seed} round {round} {picked:?}: {status} {body}"
        );
        assert_eq!(server.health().await["status"], "ok", "still up: seed {seed} {picked:?}");
        assert!(server.stop().success(), "seed {seed} {picked:?}: {}", server.log());
        sandbox.assert_clean();
    }
}
