//! The red team's attacks through a real server: hostile functions in cold, warm and
//! `ip4` execution jails; repositories that try to read, change or break another's build;
//! checkout and clone bombs; clones aimed at the host's loopback; two jails trying to talk.
//! Each ends by checking the victim still builds and answers correctly.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Item, NetNs, Repo, SOCKET_ANSWERS, SYSCALL_REFUSALS, Sandbox, Server, assert_answers, root_or_skip};

const SECRET: &str = "sk-victim-7f3a9c2e51";

fn victim_items() -> Vec<(&'static str, Item)> {
    vec![
        ("go.mod", Item::File("module example.test/acme/secret\n\ngo 1.19\n".into())),
        (
            "secret.go",
            Item::File(format!(
                "package secret\n\nconst apiKey = {SECRET:?}\n\n// Hello greets.\nfunc Hello() string {{ return \"hello from the victim\" }}\n\n// Check says whether the key is set.\nfunc Check() bool {{ return len(apiKey) > 0 }}\n"
            )),
        ),
    ]
}

async fn hostile(server: &Server, url: &str, command: &str, arg: &str, ip4: bool) -> String {
    let call = format!("Run({command:?}, {arg:?})");
    let (status, body) = server.call(json!({"url": url, "call": call, "ip4": ip4, "cache": false})).await;
    assert_eq!(status, 200, "{call}: {body}");
    body["data"].as_str().unwrap().to_owned()
}

/// Every attempt of the hostile function, checked in one kind of jail.
async fn contained(server: &Server, sandbox: &Sandbox, url: &str, ip4: bool) {
    let what = if ip4 { "an ip4 jail" } else { "a jail" };
    let whoami = hostile(server, url, "whoami", "", ip4).await;
    let uids = sandbox.uid_base + 1..=sandbox.uid_base + support::MAX_JAILS;
    let uid: u32 = whoami.split("uid=").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!(uids.contains(&uid), "{what} runs as an execution uid: {whoami}");
    assert!(whoami.contains(&format!("gid={uid} pid=1")), "{whoami}");
    for line in ["CapEff: 0000000000000000", "CapBnd: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2"] {
        assert!(whoami.contains(line), "{line} in {what}: {whoami}");
    }
    assert_answers(what, &hostile(server, url, "syscalls", "", ip4).await, SYSCALL_REFUSALS);
    assert_answers(what, &hostile(server, url, "sockets", "", ip4).await, SOCKET_ANSWERS);
    assert_eq!(hostile(server, url, "ptrace-child", "", ip4).await.trim(), "ptrace child: operation not permitted");
    for file in ["/etc/shadow", "/proc/1/root/etc/shadow", "/dev/vda", "/sys/kernel/notes", "/proc/kcore"] {
        let out = hostile(server, url, "read", file, ip4).await;
        assert_eq!(out.trim(), format!("read {file}: no such file or directory"), "{what}");
    }
    // No host path in what the jail can read about itself.
    let host_paths = [sandbox.path().to_string_lossy().into_owned(), "/var/lib".into(), "/run/skyisland".into()];
    let mountinfo = hostile(server, url, "cat", "/proc/self/mountinfo", ip4).await;
    let exe = hostile(server, url, "exe", "", ip4).await;
    for seen in [&mountinfo, &exe] {
        for path in &host_paths {
            assert!(!seen.contains(path.as_str()), "{what} learns the host path {path}: {seen}");
        }
    }
    assert!(mountinfo.contains("lowerdir=/proc/self/fd/"), "{mountinfo}");
    assert_eq!(exe.trim(), "exe /memfd:skyisland-fn (deleted) ok");
    // The binary it runs is the next call's too: it cannot be changed.
    let write = hostile(server, url, "write-exe", "", ip4).await;
    assert!(
        write.trim() == "write-exe: permission denied" || write.trim() == "write-exe: operation not permitted",
        "{write}"
    );
    assert_eq!(hostile(server, url, "cwd", "", ip4).await.trim(), "cwd /tmp ok");
    let dev = hostile(server, url, "ls", "/dev", ip4).await;
    assert_eq!(
        dev.lines().collect::<Vec<_>>(),
        ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_functions_are_contained_in_cold_warm_prestarted_and_ip4_jails() {
    if !root_or_skip("hostile_functions_are_contained_in_cold_warm_prestarted_and_ip4_jails") {
        return;
    }
    let netns = NetNs::new();
    let first = Sandbox::new();
    let repo = Repo::from_fixture(&first, "acme", "hostile", "hostile");
    // Cold jails only; then warm and pre-started ones (each call after the first of a
    // function finds its program already started in a fresh jail).
    for (warm, prestart) in [(0, 0), (2, 8)] {
        let mut sandbox = Sandbox::new();
        sandbox.shared_git_root = Some(first.git_root());
        sandbox.jails_config = format!("warm_jails = {warm}\nprestart_budget = {prestart}\nprestart_idle = \"60s\"");
        sandbox.extra_config = support::ip4_config(&netns, "skya0", 9, 4);
        let mut server = Server::start(&sandbox);
        contained(&server, &sandbox, &repo.import_path, false).await;
        let hits = server.metric("skyisland_prestart_calls_total", &["outcome=\"hit\""]).await;
        if warm > 0 {
            let health = server.health().await;
            assert!(health["jails"]["warm"].as_u64().unwrap() > 0, "warm jails served these: {health}");
            assert!(hits >= 5.0, "pre-started jails served most of these calls ({hits})");
            contained(&server, &sandbox, &repo.import_path, true).await;
        } else {
            assert_eq!(hits, 0.0, "pre-starting is off");
        }
        server.stop();
        sandbox.assert_clean();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jails_at_once_share_no_network_namespace() {
    if !root_or_skip("two_jails_at_once_share_no_network_namespace") {
        return;
    }
    let sandbox = Sandbox::new();
    let repo = Repo::from_fixture(&sandbox, "acme", "hostile", "hostile");
    let mut server = Server::start(&sandbox);
    let url = repo.import_path.clone();
    let listening = {
        let http = server.http.clone();
        let endpoint = format!("{}/api/v1/function", server.url);
        let body = json!({"url": url, "call": "Run(\"abstract-listen\", \"sky-meet,4000\")", "cache": false});
        tokio::spawn(
            async move { http.post(endpoint).json(&body).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };
    // Wait until the listener's jail runs, then try to reach it from another jail.
    support::eventually_async("the listening jail to run", Duration::from_secs(20), || async {
        let (_, jails) = server.admin(reqwest::Method::GET, "/api/v1/admin/jails").await;
        jails["jails"].as_array().unwrap().iter().any(|j| j["state"] == "running")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dial = hostile(&server, &url, "abstract-dial", "sky-meet", false).await;
    assert_eq!(dial.trim(), "dial @sky-meet: connection refused", "another jail's abstract socket is out of reach");
    let tables = hostile(&server, &url, "socket-tables", "", false).await;
    assert!(tables.contains("unix=0"), "no other jail's sockets are listed: {tables}");
    assert_eq!(listening.await.unwrap()["data"], "nobody came\n");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_cannot_read_change_or_break_another_repositorys_build() {
    if !root_or_skip("a_repository_cannot_read_change_or_break_another_repositorys_build") {
        return;
    }
    let sandbox = Sandbox::new();
    let victim = Repo::from_items(&sandbox, "acme", "secret", &victim_items());
    let mut server = Server::start(&sandbox);
    let (status, body) = server.call(json!({"url": victim.import_path, "call": "Hello()"})).await;
    assert_eq!((status, body["data"].as_str()), (200, Some("hello from the victim")), "{body}");
    let commit = body["commit"].as_str().unwrap().to_owned();
    // Where the victim's checkout was (and would be, in a shared build area).
    let key = skyisland_functions::binaries::key(&["repo", "example.test/acme/secret"]);
    let victim_src = format!("/build/src/{key}-{commit}");
    let thief = "package secret\n\n// Steal returns the victim's unexported key, if its file was compiled in.\nfunc Steal() string { return apiKey }\n";

    let attackers: Vec<(&str, Vec<(&str, Item)>)> = vec![
        // A source file that is a link to the victim's file.
        (
            "linkfile",
            vec![
                ("go.mod", Item::File("module example.test/evil/linkfile\n\ngo 1.19\n".into())),
                ("thief.go", Item::File(thief.into())),
                ("stolen.go", Item::Link(format!("{victim_src}/secret.go"))),
            ],
        ),
        // No go.mod, and the generator's temporary go.mod names linked to shared files.
        (
            "gomodlink",
            vec![
                ("thief.go", Item::File(thief.into())),
                (".go.mod.1", Item::Link("/build/src/go.work".into())),
                (".skyisland-go.mod.1", Item::Link(format!("{victim_src}/secret.go"))),
                ("go.work", Item::Link("/build/src/go.work".into())),
            ],
        ),
        // A package directory that is a link to the whole build area.
        (
            "linkdir",
            vec![
                ("go.mod", Item::File("module example.test/evil/linkdir\n\ngo 1.19\n".into())),
                ("x.go", Item::File("package linkdir\n\nfunc X() int { return 1 }\n".into())),
                ("b", Item::Link("/build".into())),
            ],
        ),
        // A replace directive aimed at the victim's tree, a sibling of the attacker's in
        // a shared build area.
        (
            "replace",
            vec![
                (
                    "go.mod",
                    Item::File(format!(
                        "module example.test/evil/replace\n\ngo 1.19\n\nrequire example.test/acme/secret v0.0.0\n\nreplace example.test/acme/secret => ../{key}-{commit}\n"
                    )),
                ),
                (
                    "thief.go",
                    Item::File(
                        "package replace\n\nimport \"example.test/acme/secret\"\n\nfunc Steal() bool { return secret.Check() }\n"
                            .into(),
                    ),
                ),
            ],
        ),
        // The assembler reading the victim's file by absolute path.
        (
            "include",
            vec![
                ("go.mod", Item::File("module example.test/evil/include\n\ngo 1.19\n".into())),
                ("thief.go", Item::File("package include\n\nfunc Steal() int\n".into())),
                ("thief_amd64.s", Item::File(format!("#include \"{victim_src}/secret.go\"\n\nTEXT ·Steal(SB),4,$0\n\tRET\n"))),
            ],
        ),
    ];
    for (name, items) in &attackers {
        let repo = Repo::from_items(&sandbox, "evil", name, items);
        for call in ["Steal()", "X()"] {
            let (status, body) = server.call(json!({"url": repo.import_path, "call": call})).await;
            let text = body.to_string();
            assert!(!text.contains(SECRET), "{name} {call} read the victim's key: {text}");
            assert!(status == 422 || (status == 200 && call == "X()"), "{name} {call}: {status} {text}");
            if *name == "replace" && call == "Steal()" {
                assert!(text.contains("outside the repository"), "{text}");
            }
            if *name == "include" && call == "Steal()" {
                assert!(text.contains("assembly may include only files of its own package"), "{text}");
            }
        }
    }
    // The victim is untouched, also when built again from scratch, and new repositories
    // still build (nothing shared was broken).
    for bust in [false, true] {
        let (status, body) =
            server.call(json!({"url": victim.import_path, "call": "Hello()", "cache_bust": bust})).await;
        assert_eq!((status, body["data"].as_str()), (200, Some("hello from the victim")), "{body}");
    }
    let geo = Repo::from_fixture(&sandbox, "acme", "geo", "geo");
    assert_eq!(server.data(&geo.import_path, "Encode(1, 2)").await, "1.0000|2.0000");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_clone_bombs_are_refused_and_leave_nothing_behind() {
    if !root_or_skip("checkout_and_clone_bombs_are_refused_and_leave_nothing_behind") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "build_disk_limit = \"24MiB\"".into();
    let victim = Repo::from_items(&sandbox, "acme", "secret", &victim_items());
    // 64 MiB of zeros packs into a few hundred KiB; a checkout would write all of it.
    let bomb = Repo::from_items(
        &sandbox,
        "evil",
        "bomb",
        &[
            ("go.mod", Item::File("module example.test/evil/bomb\n\ngo 1.19\n".into())),
            ("bomb.go", Item::File("package bomb\n\nfunc X() int { return 1 }\n".into())),
            ("zeros.bin", Item::Bytes(vec![0; 64 << 20])),
        ],
    );
    // 32 MiB of noise does not pack smaller: the clone itself is too large.
    let mut noise = vec![0u8; 32 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in noise.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let heavy = Repo::from_items(
        &sandbox,
        "evil",
        "heavy",
        &[
            ("go.mod", Item::File("module example.test/evil/heavy\n\ngo 1.19\n".into())),
            ("heavy.go", Item::File("package heavy\n\nfunc X() int { return 1 }\n".into())),
            ("noise.bin", Item::Bytes(noise)),
        ],
    );
    let mut server = Server::start(&sandbox);
    let (status, body) = server.call(json!({"url": bomb.import_path, "call": "X()"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("repository too large"), "{body}");
    let (status, body) = server.call(json!({"url": heavy.import_path, "call": "X()"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("repository too large"), "{body}");
    // Nothing of either stays: no sources, no half-made checkout, no clone of the heavy one.
    let build = sandbox.data_dir().join("build");
    let src: Vec<String> = std::fs::read_dir(build.join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(src.is_empty(), "no checkout is left: {src:?}");
    let heavy_key = skyisland_functions::binaries::key(&["repo", "example.test/evil/heavy"]);
    assert!(!build.join("repos").join(heavy_key).exists(), "the clone that was too large is gone");
    let health = server.health().await;
    assert_eq!(health["source_cache"]["entries"], 0, "{health}");
    // Others build as before.
    let (status, body) = server.call(json!({"url": victim.import_path, "call": "Hello()"})).await;
    assert_eq!((status, body["data"].as_str()), (200, Some("hello from the victim")), "{body}");
    let health = server.health().await;
    assert_eq!(health["source_cache"]["entries"], 1, "{health}");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_reach_only_public_hosts_unless_the_operator_lists_them() {
    if !root_or_skip("clones_reach_only_public_hosts_unless_the_operator_lists_them") {
        return;
    }
    // Listeners on the host's loopback, up before anything is tried: one that must never
    // see a connection, and the positive control, which the operator lists. Each accepts
    // and closes at once, counting who came.
    let listen = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        (port, seen)
    };
    let ((refused_port, refused_seen), (listed_port, listed_seen)) = (listen(), listen());
    let mut sandbox = Sandbox::new();
    sandbox.extra_config = format!(
        "\"https://evil.test/\" = \"https://localhost:{refused_port}/\"\n\"https://literal.test/\" = \"https://127.0.0.1:{refused_port}/\"\n\"https://good.test/\" = \"https://localhost:{listed_port}/\"\n"
    );
    sandbox.git_config = format!("allow_hosts = [\"localhost:{listed_port}\"]");
    let mut server = Server::start(&sandbox);

    // Import paths naming an address or this machine are refused before anything is sent.
    for url in ["127.0.0.1/a/b", "127.1/a/b", "0x7f.0.0.1/a/b", "10.0.0.1/a/b", "foo.localhost/a/b", "localhost/a/b"] {
        let (status, body) = server.call(json!({"url": url, "call": "X()"})).await;
        assert_eq!(status, 400, "{url}: {body}");
    }
    for url in ["evil.test/a/b", "literal.test/a/b"] {
        let (status, body) = server.call(json!({"url": url, "call": "X()"})).await;
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.to_string().contains("403"), "the egress proxy refused it: {body}");
    }
    // The listed host is reached (git then fails: it is not a git server).
    let (status, body) = server.call(json!({"url": "good.test/a/b", "call": "X()"})).await;
    assert_eq!(status, 502, "{body}");
    assert!(listed_seen.load(std::sync::atomic::Ordering::SeqCst) > 0, "the listed host was reached: {body}");
    assert_eq!(refused_seen.load(std::sync::atomic::Ordering::SeqCst), 0, "the loopback listener saw a connection");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_a_jail_of_its_own_warm_or_cold() {
    if !root_or_skip("every_call_gets_a_jail_of_its_own_warm_or_cold") {
        return;
    }
    let sandbox = Sandbox::new();
    let repo = Repo::from_fixture(&sandbox, "acme", "hostile", "hostile");
    let mut server = Server::start(&sandbox);
    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let mark = hostile(&server, &repo.import_path, "mark", "", false).await;
        assert!(mark.starts_with("fresh sky-"), "a jail served a second call: {mark}");
        hosts.insert(mark);
    }
    assert_eq!(hosts.len(), 12, "twelve calls, twelve jails");
    assert!(server.metric("skyisland_jails_created_total", &[r#"kind="exec""#]).await >= 12.0);
    server.stop();
    sandbox.assert_clean();
}
