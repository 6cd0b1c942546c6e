//! `skyisland doctor` and the same checks at `serve`'s start.

mod support;

use std::process::Command;

use support::{Sandbox, bin, root_or_skip};

fn doctor(sandbox: &Sandbox) -> (bool, String) {
    let out = Command::new(bin()).args(["doctor", "--config"]).arg(sandbox.config()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn doctor_reports_each_requirement_and_serve_refuses_without_one() {
    if !root_or_skip("doctor_reports_each_requirement_and_serve_refuses_without_one") {
        return;
    }
    let mut sandbox = Sandbox::new();
    // Nothing listens on this loopback port (bound, then closed): Redis is a warning.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    sandbox.extra_config = format!("[cache]\nredis_url = \"redis://127.0.0.1:{port}/\"\n");
    let (ok, text) = doctor(&sandbox);
    assert!(ok, "{text}");
    for line in
        ["ok      root:", "ok      kernel:", "ok      namespaces:", "ok      cgroups:", "ok      git: git version"]
    {
        assert!(text.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("ok      Go toolchains: go1.")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("warn    Redis: 127.0.0.1:") && l.contains("start Redis")), "{text}");
    assert!(text.ends_with("Sky Island can run here.\n"), "{text}");

    // cgroup v1 (this host): whether a hierarchy is mounted with favordynmods, and what
    // to do when none is. Mounting a controller-less hierarchy for a moment turns it on
    // host-wide; unmounting it (it has no cgroups) turns it off again.
    let favoured = |text: &str| text.lines().any(|l| l.starts_with("ok      cgroup migrations: favordynmods on "));
    let already = std::fs::read_to_string("/proc/self/mounts").unwrap().contains("favordynmods");
    if !already {
        assert!(
            text.lines().any(|l| l.starts_with("warn    cgroup migrations: ") && l.contains("favordynmods")),
            "{text}"
        );
        let point = sandbox.path().join("favordynmods");
        std::fs::create_dir_all(&point).unwrap();
        let name = format!("name=skyisland-test-{},favordynmods", std::process::id());
        support::run(Command::new("mount").args(["-t", "cgroup", "-o", &format!("none,{name}"), "cgroup"]).arg(&point));
        let (ok, text) = doctor(&sandbox);
        support::run(Command::new("umount").arg(&point));
        assert!(ok && favoured(&text), "{text}");
    } else {
        assert!(favoured(&text), "{text}");
    }

    // No Go anywhere: missing, exit 1, and serve will not start.
    sandbox.extra_config = "[go]\nprogram = \"/nonexistent/go\"\ntoolchains = []\n".into();
    let (ok, text) = doctor(&sandbox);
    assert!(!ok, "{text}");
    assert!(text.lines().any(|l| l.starts_with("MISSING Go toolchains:") && l.contains("install golang-go")), "{text}");
    assert!(text.contains("1 requirement(s) missing"), "{text}");
    let out = Command::new(bin()).args(["serve", "--config"]).arg(sandbox.config()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "it must not listen: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("see `skyisland doctor`") && stderr.contains("Go toolchains"), "{stderr}");
    sandbox.assert_clean();
}
