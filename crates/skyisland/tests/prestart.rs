//! Pre-started jails through a real server: calls after a function's first find its
//! program already started (Go's package initialised, a Python module imported) in a fresh
//! jail, and cannot tell except by timing — what was printed while starting comes first as
//! in a cold call, state never carries from one call to the next, each call has its own
//! jail. A function that never started successfully is never pre-started; one whose
//! pre-started jails die while waiting gets cold calls, answered right, and is pre-started
//! again after one succeeds. Idle functions keep none.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Item, Repo, Sandbox, Server, root_or_skip};

fn file(text: &str) -> Item {
    Item::File(text.to_owned())
}

/// A call's `data`, never from the request cache.
async fn data(server: &Server, url: &str, call: &str) -> String {
    let (status, body) = server.call(json!({"url": url, "call": call, "cache": false})).await;
    assert_eq!(status, 200, "{url} {call}: {body}");
    body["data"].as_str().unwrap().to_owned()
}

async fn hits(server: &Server) -> f64 {
    server.metric("skyisland_prestart_calls_total", &["outcome=\"hit\""]).await
}

/// Calls `call` until the server answers one from a pre-started jail (the first call of
/// a function is cold; the jails for the next are started after it), checking each answer.
async fn until_hit(server: &Server, url: &str, call: &str, want: &str) {
    let before = hits(server).await;
    for _ in 0..20 {
        assert_eq!(data(server, url, call).await, want, "{call}");
        if hits(server).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no call of {url} {call} found a pre-started jail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestarted_calls_answer_as_cold_ones_and_share_nothing() {
    if !root_or_skip("prestarted_calls_answer_as_cold_ones_and_share_nothing") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "prestart_idle = \"5s\"".into();
    let go = Repo::from_items(
        &sandbox,
        "acme",
        "goinit",
        &[
            ("go.mod", file("module example.test/acme/goinit\n\ngo 1.19\n")),
            (
                "init.go",
                file(
                    "package goinit\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nvar count int\n\n\
                     func init() { fmt.Print(\"init \"); count++ }\n\n\
                     // Bump counts calls in this process: always 1 in a fresh jail.\n\
                     func Bump(by int) int { count += by; return count }\n\n\
                     // Pid is the function's pid in its jail.\n\
                     func Pid() int { return os.Getpid() }\n",
                ),
            ),
        ],
    );
    let py = Repo::from_items(
        &sandbox,
        "acme",
        "pyinit",
        &[(
            "main.py",
            file(
                "import time\nprint('imported')\nstarted = time.monotonic()\ncount = 0\n\
                 time.sleep(1.5)\n\n\
                 def bump(by):\n    global count\n    count += by\n    return count\n",
            ),
        )],
    );
    let mut server = Server::start(&sandbox);

    // Go: init's output first and its state fresh, cold or pre-started.
    assert_eq!(data(&server, &go.import_path, "Bump(1)").await, "init 2");
    until_hit(&server, &go.import_path, "Bump(1)", "init 2").await;
    for by in [5, -1] {
        assert_eq!(data(&server, &go.import_path, &format!("Bump({by})")).await, format!("init {}", 1 + by));
    }
    // Each call its own jail, its program PID 1 in it.
    assert_eq!(data(&server, &go.import_path, "Pid()").await, "init 1");

    // Python: the module's 1.5 s import is done before a pre-started call arrives.
    let started = Instant::now();
    assert_eq!(data(&server, &py.import_path, "bump(1)").await, "imported\n1");
    assert!(started.elapsed() >= Duration::from_millis(1500), "a cold call pays for the import");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = hits(&server).await;
    let started = Instant::now();
    assert_eq!(data(&server, &py.import_path, "bump(2)").await, "imported\n2");
    let took = started.elapsed();
    assert_eq!(hits(&server).await, before + 1.0, "this call found its module imported");
    assert!(took < Duration::from_millis(1500), "a pre-started call does not wait for the import ({took:?})");

    // The admin API lists the jails waiting for a call apart from the running ones, and
    // kills one, or all of them with the running ones.
    let waiting = || async {
        let (status, body) = server.admin(reqwest::Method::GET, "/api/v1/admin/jails").await;
        assert_eq!(status, 200, "{body}");
        body["prestarted"].as_array().unwrap().clone()
    };
    support::eventually_async("a jail waiting for bump", Duration::from_secs(10), || async {
        waiting().await.iter().any(|j| j["label"].as_str().unwrap_or("").starts_with(&py.import_path))
    })
    .await;
    let listed = waiting().await;
    let jail = listed.iter().find(|j| j["label"].as_str().unwrap().starts_with(&py.import_path)).unwrap();
    assert_eq!(
        (&jail["kind"], &jail["state"], &jail["jid"]),
        (&json!("prestarted"), &json!("waiting"), &json!(0)),
        "{jail}"
    );
    assert!(jail["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{jail}");
    let id = jail["id"].as_str().unwrap().to_owned();
    assert_eq!(server.admin(reqwest::Method::GET, &format!("/api/v1/admin/jail/{id}")).await.0, 200);
    let (status, body) = server.admin(reqwest::Method::DELETE, &format!("/api/v1/admin/jail/{id}")).await;
    assert_eq!((status, &body["killed"]), (200, &json!([id])), "{body}");
    assert!(!waiting().await.iter().any(|j| j["id"] == id), "killed");
    assert_eq!(server.admin(reqwest::Method::DELETE, &format!("/api/v1/admin/jail/{id}")).await.0, 404);
    support::eventually_async("pre-started jails again", Duration::from_secs(10), || async {
        assert_eq!(data(&server, &go.import_path, "Bump(1)").await, "init 2");
        !waiting().await.is_empty()
    })
    .await;
    let before: Vec<Value> = waiting().await.iter().map(|j| j["id"].clone()).collect();
    let (status, body) = server.admin(reqwest::Method::DELETE, "/api/v1/admin/jails").await;
    assert_eq!(status, 200, "{body}");
    let killed = body["prestarted_killed"].as_array().unwrap();
    assert!(before.iter().all(|id| killed.contains(id)), "DELETE /jails kills the waiting ones too: {body}");
    let after = waiting().await;
    assert!(!after.iter().any(|j| before.contains(&j["id"])), "{after:?}");

    // Idle functions keep no pre-started jail (prestart_idle is 5 s here).
    support::eventually_async("pre-started jails to go", Duration::from_secs(15), || async {
        server.health().await["jails"]["prestarted"]["ready"] == 0
    })
    .await;
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_that_do_not_start_are_not_prestarted() {
    if !root_or_skip("functions_that_do_not_start_are_not_prestarted") {
        return;
    }
    let sandbox = Sandbox::new();
    // A module that never imports; one that imports, then dies 300 ms later unless its call
    // came first (as a cold call's does).
    let repo = Repo::from_items(
        &sandbox,
        "acme",
        "pyfail",
        &[
            ("broken/main.py", file("raise RuntimeError('no start')\n")),
            (
                "dying/main.py",
                file(
                    "import os, threading\n\
                     timer = threading.Timer(0.3, os._exit, [3])\n\
                     timer.daemon = True\n\
                     timer.start()\n\n\
                     def hello():\n    return 'hello'\n",
                ),
            ),
        ],
    );
    let mut server = Server::start(&sandbox);
    let broken = format!("{}/broken", repo.import_path);
    for _ in 0..3 {
        let (status, body) = server.call(json!({"url": broken, "call": "f()"})).await;
        assert_eq!(status, 500, "{body}");
        assert!(body["stderr"].as_str().unwrap().contains("RuntimeError: no start"), "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let health = server.health().await;
    assert_eq!(health["jails"]["prestarted"]["ready"], 0, "a function that never started keeps none: {health}");
    assert_eq!(hits(&server).await, 0.0);

    // Pre-started jails of `dying` die while waiting: each call still answers right.
    let dying = format!("{}/dying", repo.import_path);
    for _ in 0..4 {
        assert_eq!(data(&server, &dying, "hello()").await, "hello");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let failures = server.metric("skyisland_prestart_failures_total", &[]).await;
    assert!(failures >= 1.0, "the pre-started jails that died were counted ({failures})");
    assert_eq!(hits(&server).await, 0.0, "no call was handed to a dead jail");
    server.stop();
    sandbox.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_keeps_working_while_it_waits_is_stopped_and_not_prestarted_again() {
    if !root_or_skip("a_program_that_keeps_working_while_it_waits_is_stopped_and_not_prestarted_again") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "prestart_idle = \"60s\"".into();
    // A cold call ends when Hello returns; a pre-started jail would spin until its call,
    // with no timeout of its own.
    let repo = Repo::from_items(
        &sandbox,
        "acme",
        "spinner",
        &[
            ("go.mod", file("module example.test/acme/spinner\n\ngo 1.19\n")),
            (
                "spin.go",
                file(
                    "package spinner\n\nvar spins int\n\n\
                     func init() { go func() { for { spins++ } }() }\n\n\
                     func Hello() string { return \"hello\" }\n",
                ),
            ),
        ],
    );
    let mut server = Server::start(&sandbox);
    assert_eq!(data(&server, &repo.import_path, "Hello()").await, "hello");
    support::eventually_async("the spinning pre-started jail to be stopped", Duration::from_secs(30), || async {
        server.metric("skyisland_prestart_failures_total", &[]).await >= 1.0
    })
    .await;
    // Calls still answer, cold, and nothing is pre-started for it any more.
    for _ in 0..3 {
        assert_eq!(data(&server, &repo.import_path, "Hello()").await, "hello");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let health = server.health().await;
    let prestarted = &health["jails"]["prestarted"];
    assert_eq!((&prestarted["ready"], &prestarted["starting"]), (&json!(0), &json!(0)), "{health}");
    assert!(server.log().contains("kept using CPU while it waited"), "{}", server.log());
    server.stop();
    sandbox.assert_clean();
}

/// The dispatcher and the runners say when they are done (a byte on stdin), and the call
/// is answered then: with everything printed before — more than a pipe holds, what a
/// Python thread or exit handler or a Node timer printed after the function returned —
/// and nothing after. A program that says it is done and goes on is ended at once: saying
/// so early does not let a jail outlive its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_answered_when_its_program_says_it_is_done() {
    if !root_or_skip("a_call_is_answered_when_its_program_says_it_is_done") {
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"30s\"".into();
    let go = Repo::from_items(
        &sandbox,
        "acme",
        "saysdone",
        &[
            ("go.mod", file("module example.test/acme/saysdone\n\ngo 1.19\n")),
            (
                "done.go",
                file(
                    "package saysdone\n\nimport (\n\t\"fmt\"\n\t\"strings\"\n\t\"syscall\"\n\t\"time\"\n)\n\n\
                     // Big returns more than a pipe holds.\n\
                     func Big(n int) string { return strings.Repeat(\"y\", n) }\n\n\
                     // Early says it is done, then goes on.\n\
                     func Early() string {\n\tfmt.Print(\"before\")\n\tsyscall.Write(0, []byte{0})\n\t\
                     time.Sleep(time.Minute)\n\tfmt.Print(\"after\")\n\treturn \"never\"\n}\n",
                ),
            ),
        ],
    );
    let py = Repo::from_items(
        &sandbox,
        "acme",
        "pylate",
        &[(
            "main.py",
            file(
                "import atexit, threading, time\n\
                 atexit.register(lambda: print(' bye', end=''))\n\n\
                 def late():\n    def run():\n        time.sleep(0.3)\n        print(' thread', end='', flush=True)\n\
                 \x20   threading.Thread(target=run).start()\n    return 'value'\n",
            ),
        )],
    );
    let js = Repo::from_items(
        &sandbox,
        "acme",
        "jslate",
        &[(
            "index.js",
            file(
                "exports.late = () => {\n  setTimeout(() => process.stdout.write(' later'), 300);\n  \
                 process.on('exit', () => process.stdout.write(' exit'));\n  return 'value';\n};\n",
            ),
        )],
    );
    let mut server = Server::start(&sandbox);
    // Twice each: a cold call, then (most likely) a pre-started one.
    for _ in 0..2 {
        let big = data(&server, &go.import_path, "Big(300000)").await;
        assert!(big.len() == 300_000 && big.bytes().all(|b| b == b'y'), "{} bytes", big.len());
        assert_eq!(data(&server, &py.import_path, "late()").await, "value thread bye");
        assert_eq!(data(&server, &js.import_path, "late()").await, "value later exit");
    }
    server.stop();
    sandbox.assert_clean();

    // Without warm or pre-started jails, any process of a slot's uid is the jail of the
    // call just answered.
    sandbox.jails_config = "exec_timeout = \"30s\"\nwarm_jails = 0\nprestart_budget = 0".into();
    let mut server = Server::start(&sandbox);
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(data(&server, &go.import_path, "Early()").await, "before");
        assert!(started.elapsed() < Duration::from_secs(10), "answered when it said so");
        let (status, body) = server.admin(reqwest::Method::GET, "/api/v1/admin/jails").await;
        assert_eq!((status, &body["jails"]), (200, &json!([])), "an answered call lists no jail: {body}");
        support::eventually("the jail that said it was done to be gone", Duration::from_secs(5), || {
            sandbox.census().processes.is_empty()
        })
        .await;
    }
    server.stop();
    sandbox.assert_clean();
}

/// The pre-started jails of a function's old version go when its new version is first
/// called (a new commit), and a `cache_bust` takes its repository's at once; without
/// that they would wait for calls that never come until `prestart_idle` (a minute here)
/// passed, holding slots and memory. And none outlives a kill -9 of its server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_or_a_cache_bust_retires_the_old_versions_prestarted_jails() {
    if !root_or_skip("a_new_version_or_a_cache_bust_retires_the_old_versions_prestarted_jails") {
        return;
    }
    let mut sandbox = Sandbox::new();
    // No warm jails: every spare slot is the pre-started jails', so that none of them is
    // taken from one function for another (warm jails, two per jail profile, a Python
    // install being part of its profile, would hold most of the eight slots here).
    sandbox.jails_config = "prestart_idle = \"60s\"\nwarm_jails = 0".into();
    let go = |version: &str| {
        format!("package versions\n\n// Version is the commit's.\nfunc Version() string {{ return \"{version}\" }}\n")
    };
    let repo = Repo::from_items(
        &sandbox,
        "acme",
        "versions",
        &[
            ("go.mod", file("module example.test/acme/versions\n\ngo 1.19\n")),
            ("version.go", file(&go("v1"))),
            ("py/main.py", file("def version():\n    return 'v1'\n")),
        ],
    );
    let py = format!("{}/py", repo.import_path);
    let mut server = Server::start(&sandbox);

    assert_eq!(data(&server, &repo.import_path, "Version()").await, "v1");
    assert_eq!(data(&server, &py, "version()").await, "v1");
    let go_v1 = prestarted(&server, &repo.import_path).await;
    let py_v1 = prestarted(&server, &py).await;

    // A new commit, called by its hash: the old version's jails go, the new one's come.
    repo.change("version.go", &go("v2"), "v2");
    let v2 = repo.change("py/main.py", "def version():\n    return 'v2'\n", "v2");
    for (url, call) in [(&repo.import_path, "Version()"), (&py, "version()")] {
        let (status, body) = server.call(json!({"url": url, "call": call, "version": v2, "cache": false})).await;
        assert_eq!((status, body["data"].as_str()), (200, Some("v2")), "{body}");
    }
    gone(&server, &repo.import_path, &go_v1).await;
    gone(&server, &py, &py_v1).await;
    let go_v2 = prestarted(&server, &repo.import_path).await;
    let py_v2 = prestarted(&server, &py).await;

    // A cache_bust fetches the repository again and rebuilds (the current commit is v2 by
    // now); the jails of what was built before go with it.
    let (status, body) = server.call(json!({"url": repo.import_path, "call": "Version()", "cache_bust": true})).await;
    assert_eq!((status, body["data"].as_str()), (200, Some("v2")), "{body}");
    gone(&server, &repo.import_path, &go_v2).await;
    gone(&server, &py, &py_v2).await;
    let retired = server.metric("skyisland_prestart_evictions_total", &["reason=\"retired\""]).await;
    assert!(retired >= 4.0, "retired jails are counted as evictions ({retired})");

    // kill -9 of the server: its pre-started jails die with it (their parent-death
    // signal), and the next server finds nothing of them.
    prestarted(&server, &repo.import_path).await;
    server.crash();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sandbox.census().processes.is_empty() {
        assert!(Instant::now() < deadline, "pre-started jails outlived their server: {:?}", sandbox.census());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = Server::start(&sandbox);
    assert_eq!(data(&server, &py, "version()").await, "v2");
    server.stop();
    sandbox.assert_clean();
}

/// The ids of the pre-started jails waiting with `package`'s program.
async fn waiting(server: &Server, package: &str) -> Vec<String> {
    let (status, body) = server.admin(reqwest::Method::GET, "/api/v1/admin/jails").await;
    assert_eq!(status, 200, "{body}");
    let of = |j: &&Value| j["label"].as_str().unwrap().starts_with(&format!("{package} "));
    body["prestarted"].as_array().unwrap().iter().filter(of).map(|j| j["id"].as_str().unwrap().to_owned()).collect()
}

/// Waits until `package` has pre-started jails; their ids.
async fn prestarted(server: &Server, package: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ids = waiting(server, package).await;
        if !ids.is_empty() {
            return ids;
        }
        if Instant::now() > deadline {
            let (_, jails) = server.admin(reqwest::Method::GET, "/api/v1/admin/jails").await;
            let mut reasons = String::new();
            for reason in ["idle", "budget", "slots", "retired"] {
                let label = format!("reason=\"{reason}\"");
                let n = server.metric("skyisland_prestart_evictions_total", &[&label]).await;
                reasons.push_str(&format!("{reason}={n} "));
            }
            panic!("no pre-started jail of {package}: {jails}\n{}\n{reasons}", server.health().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until none of the jails `ids` of `package` waits any more.
async fn gone(server: &Server, package: &str, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = waiting(server, package).await;
        if !now.iter().any(|id| ids.contains(id)) {
            return;
        }
        assert!(Instant::now() < deadline, "the jails {ids:?} of {package} still wait: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
