//! The Grafana dashboard and the Prometheus alert rules in packaging/ are what operators
//! watch a server with: both parse, and every metric they use is one a real server (with
//! Redis, after ordinary calls) exports at `GET /metrics`.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{RedisServer, Repo, Sandbox, Server, root_or_skip, workspace};

/// The metric names in a PromQL expression (ours all start with `skyisland_`).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("skyisland_") {
        let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        into.insert(name);
    }
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("packaging/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "skyisland");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned()))
        .collect()
}

fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("packaging/prometheus-alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("the alert rules are YAML");
    let mut rules = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("each rule is an alert").to_owned();
            let expr = rule["expr"].as_str().expect("each rule has an expr").to_owned();
            assert!(rule["for"].as_str().is_some() && rule["annotations"]["summary"].as_str().is_some(), "{name}");
            rules.push((name, expr));
        }
    }
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alert_rules_use_only_metrics_the_server_exports() {
    if !root_or_skip("the_dashboard_and_alert_rules_use_only_metrics_the_server_exports") {
        return;
    }
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs() {
        metric_names(&expr, &mut used);
    }
    let alerts = alert_exprs();
    let names: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["HighErrorRate", "SlowCalls", "QueueBacklog", "JailSlotsExhausted", "RedisDown", "DataDirFull"] {
        assert!(names.contains(format!("SkyIsland{wanted}").as_str()), "an alert for {wanted}: {names:?}");
    }
    for (_, expr) in &alerts {
        metric_names(expr, &mut used);
    }

    let redis = RedisServer::start();
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = format!("[cache]\nredis_url = \"{}\"\n", redis.url());
    let repo = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start(&sandbox);
    // Ordinary traffic: a build, fresh and cached calls, an error.
    for cache in [false, false, true, true] {
        let (status, body) = server.call(json!({"url": repo.import_path, "call": "Hello()", "cache": cache})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server.call(json!({"url": repo.import_path, "call": "Missing()"})).await;
    assert!(status >= 400);
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "used by the dashboard or alerts, not exported: {missing:?}\n{exported:?}");
    server.stop();
    sandbox.assert_clean();
}
