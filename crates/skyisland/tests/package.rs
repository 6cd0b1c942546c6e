//! The Debian package: `scripts/package.sh --dev` builds it with cargo-deb (from the debug
//! build, same contents as the release one); this test unpacks it into a scratch root and
//! checks what an operator gets — the binary, the configuration as a conffile without a
//! known admin token, the systemd unit (`systemd-analyze verify` against the scratch
//! root), the maintainer scripts that enable it, the manual page, the completions and the
//! docs — then runs the packaged binary as the unit runs it: its `ExecStart` arguments,
//! only the unit's capability bounding set, no_new_privs, `NOTIFY_SOCKET` (Type=notify:
//! READY=1 must arrive), and the packaged configuration with only the host-specific keys
//! (directories, address, uids, cgroup, the test's git) replaced. It builds a function,
//! answers a call, stops on SIGTERM and leaves nothing behind.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{Repo, Sandbox, Server, root_or_skip, run, workspace};

fn deb() -> PathBuf {
    run(Command::new(workspace().join("scripts/package.sh")).arg("--dev"));
    let dir = workspace().join("target/debian");
    let mut debs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    debs.pop().unwrap_or_else(|| panic!("no .deb in {}", dir.display()))
}

/// The values of `key=` lines of the unit (all of them, in order).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_owned).collect()
}

/// `base` with every key of `over` put in (tables merged, other values replaced).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_a_service_that_runs() {
    if !root_or_skip("the_debian_package_installs_a_service_that_runs") {
        return;
    }
    let deb = deb();
    let sandbox = Sandbox::new();
    let root = sandbox.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = sandbox.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));

    // What is in it.
    let binary = root.join("usr/bin/skyisland");
    assert!(std::fs::metadata(&binary).unwrap().permissions().mode() & 0o111 != 0);
    // The small program `skyisland` hands every command but `jail run` and `jail clean` to
    // the whole one, which it finds at ../libexec/skyisland/ from itself: the service's
    // run below goes through both.
    let full = root.join("usr/libexec/skyisland/skyisland-full");
    assert!(std::fs::metadata(&full).unwrap().permissions().mode() & 0o111 != 0);
    for file in [
        "etc/skyisland/skyisland.toml",
        "usr/lib/systemd/system/skyisland.service",
        "usr/share/man/man1/skyisland.1.gz",
        "usr/share/bash-completion/completions/skyisland",
        "usr/share/zsh/vendor-completions/_skyisland",
        "usr/share/fish/vendor_completions.d/skyisland.fish",
        "usr/share/doc/skyisland/operators.md",
        "usr/share/doc/skyisland/functions.md",
        "usr/share/doc/skyisland/copyright",
        "usr/share/doc/skyisland/examples/grafana-dashboard.json",
        "usr/share/doc/skyisland/examples/prometheus-alerts.yml",
    ] {
        assert!(root.join(file).is_file(), "{file} is packaged");
    }
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/skyisland/skyisland.toml");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable skyisland.service"), "{postinst}");
    let packaged = std::fs::read_to_string(root.join("etc/skyisland/skyisland.toml")).unwrap();
    assert!(!packaged.contains("change-me"), "no known admin token is packaged");
    let mut config: toml::Table = toml::from_str(&packaged).unwrap();
    assert!(config["admin"].get("token").is_none(), "the admin token is left unset");
    assert_eq!(config["data_dir"].as_str(), Some("/var/lib/skyisland"));
    assert_eq!(config["run_dir"].as_str(), Some("/run/skyisland"));

    // The unit, as systemd reads it against the scratch root.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(format!("--root={}", root.display()))
        .arg("skyisland.service")
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/skyisland.service")).unwrap();
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(unit_values(&unit, "Restart"), ["on-failure"]);
    // StateDirectory and RuntimeDirectory are the packaged data_dir and run_dir.
    assert_eq!(unit_values(&unit, "StateDirectory"), ["skyisland"]);
    assert_eq!(unit_values(&unit, "RuntimeDirectory"), ["skyisland"]);
    let exec = unit_values(&unit, "ExecStart").pop().unwrap();
    let mut exec = exec.split_whitespace();
    assert_eq!(exec.next(), Some("/usr/bin/skyisland"));
    let mut args: Vec<String> = exec.map(str::to_owned).collect();
    assert_eq!(args, ["serve", "--config", "/etc/skyisland/skyisland.toml"]);
    let caps = unit_values(&unit, "CapabilityBoundingSet").pop().unwrap();
    let bounding: Vec<String> =
        caps.split_whitespace().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())).collect();
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);

    // The packaged configuration, with only what places it on this host replaced.
    let here: toml::Table = toml::from_str(&std::fs::read_to_string(sandbox.config()).unwrap()).unwrap();
    merge(&mut config, here);
    let config_path = sandbox.path().join("packaged.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    args[2] = config_path.display().to_string();

    // Run as the unit runs it.
    let notify_path = sandbox.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .arg("--no-new-privs")
        .arg(&binary)
        .args(&args)
        .env("NOTIFY_SOCKET", &notify_path);
    let repo = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let mut server = Server::start_command(&sandbox, command);
    let mut message = [0u8; 256];
    let n = notify.recv(&mut message).expect("READY=1 from the server");
    assert!(String::from_utf8_lossy(&message[..n]).contains("READY=1"), "{:?}", &message[..n]);
    assert_eq!(server.data(&repo.import_path, "Hello()").await, "hello");
    // The server (the whole program) found the small one at ../../bin/ for its spawner.
    let spawner = support::children(server.pid())
        .into_iter()
        .find(|(_, args)| args.get(1).is_some_and(|a| a == "__skyisland-jail-spawner"));
    assert_eq!(
        spawner.map(|(exe, _)| exe),
        Some(binary.canonicalize().unwrap()),
        "the spawner executes usr/bin/skyisland"
    );
    let health = server.health().await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(server.stop().success(), "{}", server.log());
    sandbox.assert_clean();
}
