//! The original Sky Island's command line and configuration: `skyisland -c config.json`
//! serves with the original's JSON file (its keys mapped onto ours, the meaningless ones
//! named in one warning), `config convert` prints the same as TOML, and our own command
//! line takes `--config` anywhere, `SKYISLAND_CONFIG`, and makes completions and a man page.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::{Repo, Sandbox, Server, bin, root_or_skip, run};

/// The original's example configuration, with what a test server needs beside it (in our
/// keys, which a JSON file may carry too).
fn original_json(sandbox: &Sandbox) -> Value {
    json!({
        "release": "11.1-RELEASE",
        "http_port": 0,
        "admin_api_token": support::ADMIN_TOKEN,
        "admin_token_header": "X-Sky-Island-Token",
        "go_version": "1.9.2",
        "base_sys_pkg_dir": "/tmp/11.1-RELEASE",
        "filesystem": {"zfs_dataset": "zroot", "compression": false},
        "jails": {
            "base_jail_dir": sandbox.data_dir(),
            "cache_default_expiration": "8h",
            "cache_purge_after": "24h",
            "children_max": 0,
            "monitoring_addr": "127.0.0.1",
            "build_timeout": "120s",
            "exec_timeout": "5s",
            "max_jails": support::MAX_JAILS,
            "uid_base": sandbox.uid_base,
        },
        "run_dir": sandbox.run_dir(),
        "cgroup": {"parent": sandbox.cgroup_parent},
        "git": {"url_rewrite": {"https://example.test/": format!("file://{}/example.test/", sandbox.git_root().display())}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_json_configuration_serves_functions() {
    if !root_or_skip("the_originals_json_configuration_serves_functions") {
        return;
    }
    let sandbox = Sandbox::new();
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    let config = sandbox.path().join("config.json");
    std::fs::write(&config, serde_json::to_string_pretty(&original_json(&sandbox)).unwrap()).unwrap();

    // `-i` initialises and exits, as the original's did, and names what it ignored.
    let out = Command::new(bin()).arg("-c").arg(&config).arg("-i").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {stderr}");
    for key in ["release", "go_version", "base_sys_pkg_dir", "filesystem.zfs_dataset", "jails.children_max"] {
        assert!(warnings[0].contains(key), "{key}: {stderr}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("base root filesystem"), "{out:?}");

    // The original's invocation: no command, `-c config.json`.
    let mut server = Server::start_with(&sandbox, &["-c".as_ref(), config.as_os_str()]);
    let (status, body) = server.call(json!({"url": geo.import_path, "call": "Encode(57.64911, 10.40744)"})).await;
    assert_eq!((status, &body["data"]), (200, &json!("57.6491|10.4074")), "{body}");
    let (status, stats) = server.admin(reqwest::Method::GET, "/api/v1/admin/api-stats").await;
    assert_eq!((status, &stats["total_count"]), (200, &json!(1)), "the token and header from the JSON: {stats}");
    assert!(server.log().contains("ignoring the original's keys"), "{}", server.log());
    server.stop();

    // `config convert` prints the same configuration as TOML: it loads to what the JSON
    // loads to.
    let toml = run(Command::new(bin()).args(["config", "convert"]).arg(&config));
    assert!(toml.contains("listen = \"0.0.0.0:0\"") && toml.contains("[admin]"), "{toml}");
    assert!(toml.starts_with("# Converted from") && toml.contains("# ignoring the original's keys"), "{toml}");
    let converted = sandbox.path().join("converted.toml");
    std::fs::write(&converted, &toml).unwrap();
    let show = |file: &std::path::Path| run(Command::new(bin()).args(["config", "show", "--config"]).arg(file));
    assert_eq!(show(&converted), show(&config));
    // `config show` prints every key, and what it prints loads to itself.
    let shown = sandbox.path().join("shown.toml");
    std::fs::write(&shown, show(&config)).unwrap();
    assert_eq!(show(&shown), show(&config));
    let out = Command::new(bin()).args(["config", "convert"]).arg(&shown).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not JSON"), "{out:?}");
    sandbox.assert_clean();
}

#[test]
fn bad_json_configurations_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (text, message) in [
        (r#"{"http_port": 3280, "listen": "127.0.0.1:1"}"#, "http_port and listen say the same"),
        (r#"{"jails": {"exec_timeout": "soon"}}"#, "invalid duration \"soon\""),
        (r#"{"jails": {"colour": "red"}}"#, "unknown field `colour`"),
        (r#"{"admin_api_token": "short"}"#, "admin.token must be 8 to 4096"),
        (r#"{"http_port": 3280,"#, "EOF while parsing"),
    ] {
        let file = dir.path().join("config.json");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(bin()).args(["config", "show", "-c"]).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.starts_with("skyisland: ") && stderr.contains(message), "{text}: {stderr}");
        assert!(stderr.contains("config.json"), "the file is named: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn config_is_taken_anywhere_and_completions_and_the_manual_come_from_the_same_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("skyisland.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    let skyisland = || {
        let mut cmd = Command::new(bin());
        cmd.env_remove("SKYISLAND_CONFIG");
        cmd
    };
    // Before the command, after it, after its subcommand, and from the environment.
    run(skyisland().args(["--config"]).arg(&config).args(["api-key", "new", "--name", "before"]));
    run(skyisland().args(["api-key", "--config"]).arg(&config).args(["new", "--name", "middle"]));
    run(skyisland().args(["api-key", "new", "--name", "after", "--config"]).arg(&config));
    run(skyisland().env("SKYISLAND_CONFIG", &config).args(["api-key", "new", "--name", "env"]));
    let listed = run(skyisland().env("SKYISLAND_CONFIG", &config).args(["api-key", "list"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "{listed}");
    for (line, name) in lines.iter().zip(["before", "middle", "after", "env"]) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[2], name, "{line}");
        // "2026-12-02 15:04:05 UTC", not Unix seconds.
        let time = fields[1];
        assert!(time.len() == 23 && time.ends_with(" UTC") && time.as_bytes()[4] == b'-', "{line}");
    }
    let json = run(skyisland().args(["api-key", "list", "--json", "-c"]).arg(&config));
    let keys: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(keys.len(), 4);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(keys.iter().all(|k| k["created_at"].as_u64().is_some_and(|t| now.abs_diff(t) < 600)), "{json}");
    assert_eq!(keys[3]["name"], "env");
    // An explicit flag wins over the environment.
    let out = skyisland()
        .env("SKYISLAND_CONFIG", "/nonexistent.toml")
        .args(["api-key", "list", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = skyisland().env("SKYISLAND_CONFIG", "/nonexistent.toml").args(["api-key", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"), "{out:?}");
    // `-i` is the original's alone.
    let out = skyisland().args(["-i", "serve"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("without a command"), "{out:?}");

    for shell in ["bash", "zsh", "fish"] {
        let script = run(skyisland().args(["completions", shell]));
        for word in ["api-key", "completions", "config"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    let man = run(skyisland().arg("man"));
    assert!(man.contains(".TH skyisland 1") && man.contains("api\\-key"), "{man}");
}
