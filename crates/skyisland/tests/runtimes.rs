//! Python, JavaScript and Lua functions through a real server: the literal grammar of
//! each language, printing and return values, async functions, errors and their statuses,
//! limits, dependencies installed in the build jail (a local pip find-links directory, an
//! index on loopback named by the operator and reached through the egress proxy, and an
//! npm tarball, offline), versions, busts and the request cache, and the walls of each
//! runtime's jail: it sees its interpreter and the package, read-only, and nothing else
//! of the host; an install's own code cannot write what other builds use.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{Repo, Sandbox, Server, root_or_skip, run};

async fn call(server: &Server, url: &str, call: &str) -> (u16, Value) {
    server.call(json!({"url": url, "call": call})).await
}

async fn data(server: &Server, url: &str, text: &str) -> String {
    let (status, body) = call(server, url, text).await;
    assert_eq!(status, 200, "{text}: {body}");
    body["data"].as_str().unwrap().to_owned()
}

async fn status(server: &Server, url: &str, text: &str, want: u16) -> Value {
    let (status, body) = call(server, url, text).await;
    assert_eq!(status, want, "{text}: {body}");
    body
}

/// Limits small enough for the limit tests to end fast.
fn sandbox() -> Sandbox {
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"3s\"\nmemory_limit = \"128MiB\"\noutput_limit = \"1MiB\"\n".into();
    // Every cache_bust fetches the new commit (the tests make several in a row).
    sandbox.extra_config = "[cache]\nbust_interval = \"0s\"\n".into();
    sandbox
}

/// What each runtime's functions answer: the spellings differ, the behaviour is the same.
struct Expect {
    runtime: &'static str,
    echo: (&'static str, &'static str),
    kinds: (&'static str, &'static str),
    hello: &'static str,
    later: Option<(&'static str, &'static str)>,
    traceback: &'static str,
    syntax: &'static str,
    escapes: [&'static str; 3],
    /// What a refused open is reported as.
    refused: [&'static str; 2],
}

async fn common(server: &Server, url: &str, e: &Expect) {
    // Literals in and JSON out; printing before the return value.
    assert_eq!(data(server, url, e.echo.0).await, e.echo.1);
    assert_eq!(data(server, url, e.kinds.0).await, e.kinds.1);
    assert_eq!(data(server, url, "hello('sky')").await, e.hello);
    assert_eq!(data(server, url, "nothing()").await, "only printed\n");
    if let Some((text, answer)) = e.later {
        assert_eq!(data(server, url, text).await, answer);
    }
    // An exception: 500 with the language's own traceback.
    let body = status(server, url, "boom()", 500).await;
    let stderr = body["stderr"].as_str().unwrap();
    assert!(stderr.contains("nope") && stderr.contains(e.traceback), "{body}");
    // A missing name or module, a syntax error: 422 with what is wrong.
    let body = status(server, url, "missing()", 422).await;
    assert!(body["error"].as_str().unwrap().contains("missing"), "{body}");
    let body = status(server, url, "nomodule.f()", 422).await;
    assert!(body["error"].as_str().unwrap().contains("nomodule"), "{body}");
    let body = status(server, url, e.syntax, 422).await;
    assert!(body["error"].as_str().unwrap().contains("does not load"), "{body}");
    // Anything beyond literals is refused before anything runs.
    for text in e.escapes {
        let body = status(server, url, text, 400).await;
        assert!(body["error"].as_str().unwrap().contains("invalid call"), "{text}: {body}");
    }
    // Limits, as for Go.
    let body = status(server, url, "spin()", 504).await;
    assert!(body["error"].as_str().unwrap().contains("longer than"), "{body}");
    let body = status(server, url, "bomb()", 500).await;
    assert!(body["error"].as_str().unwrap().contains("memory limit"), "{body}");
    let body = status(server, url, "flood()", 500).await;
    assert!(body["error"].as_str().unwrap().contains("output limit"), "{body}");
    // The walls: nothing of the host but the runtime's layer, all of it read-only; the
    // package read-only; /tmp the jail's own.
    let [missing, read_only] = e.refused;
    assert_eq!(data(server, url, "read('/etc/shadow')").await, missing);
    assert_eq!(data(server, url, "read('/usr/bin/git')").await, missing);
    assert_eq!(data(server, url, "read('/usr/bin/gcc')").await, missing);
    assert_eq!(data(server, url, "read('/usr/lib/python3/dist-packages/pip/__init__.py')").await, missing);
    assert_eq!(data(server, url, "read('/root/.bashrc')").await, missing);
    for target in ["/fn/tree/new", "/usr/lib/skyisland/new", "/usr/bin/new"] {
        assert_eq!(data(server, url, &format!("write('{target}')")).await, read_only, "{target}");
    }
    assert_eq!(data(server, url, "write('/tmp/mine')").await, "wrote");
    // The request cache answers a repeated call; the health check names the runtime.
    let (_, first) = call(server, url, e.echo.0).await;
    assert_eq!(first["cache"], "hit", "{first}");
    assert_eq!(first["path"], e.runtime, "{first}");
    let health = server.health().await;
    let listed = health["runtimes"].as_array().unwrap().iter().find(|r| r["runtime"] == e.runtime).cloned();
    assert_eq!(listed.as_ref().and_then(|r| r["available"].as_bool()), Some(true), "{health}");
}

/// Versions and busts, as for Go: the current commit until a `cache_bust`, an older one by
/// `version`.
async fn versions(server: &Server, repo: &Repo, file: &str, two: &str) {
    let url = repo.import_path.as_str();
    let first = repo.head();
    assert_eq!(data(server, url, "version()").await, "one");
    let source = std::fs::read_to_string(repo.work.join(file)).unwrap();
    repo.change(file, &source.replace(r#""one""#, two), "two");
    let (code, body) = server.call(json!({"url": url, "call": "version()", "cache_bust": true})).await;
    assert_eq!((code, body["data"].as_str()), (200, Some("two")), "{body}");
    let (code, body) = server.call(json!({"url": url, "call": "version()", "version": first})).await;
    if code != 200 {
        eprintln!(
            "DEBUG {}",
            run(Command::new("sh").arg("-c").arg(format!(
                "find {}/artifacts {}/build/src | head -50",
                repo.work.parent().unwrap().parent().unwrap().parent().unwrap().join("data").display(),
                repo.work.parent().unwrap().parent().unwrap().parent().unwrap().join("data").display()
            )))
        );
    }
    assert_eq!((code, body["data"].as_str()), (200, Some("one")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_functions() {
    if !root_or_skip("python_functions") {
        return;
    }
    let mut sandbox = sandbox();
    // A local package index (pip --find-links): a wheel made here.
    let links = sandbox.path().join("wheels");
    std::fs::create_dir_all(&links).unwrap();
    make_wheel(&links);
    sandbox.extra_config.push_str(&format!("[python]\nfind_links = [\"{}\"]\n", links.display()));
    let repo = Repo::from_fixture(&sandbox, "acme", "py", "rt-python");
    let url = repo.import_path.as_str();
    let server = Server::start(&sandbox);
    common(
        &server,
        url,
        &Expect {
            runtime: "python",
            echo: (
                r#"echo(1, -2.5, 'a\n', "\u00e9", True, None, [1, (2, 3)], {'k': 'v', 'a': {}})"#,
                r#"[1,-2.5,"a\n","é",true,null,[1,[2,3]],{"k":"v","a":{}}]"#,
            ),
            kinds: (
                "kinds(1, 1.0, 'a', True, None, [], {})",
                r#"["int","float","str","bool","NoneType","list","dict"]"#,
            ),
            hello: "hello sky\ndone",
            later: Some(("later(21)", r#"{"twice":42}"#)),
            traceback: "Traceback (most recent call last)",
            syntax: "broken.bad.f()",
            escapes: ["echo(__import__('os'))", "echo(1 + 1)", "echo(f'{1}')"],
            refused: ["FileNotFoundError", "OSError"],
        },
    )
    .await;
    // The system libraries binary wheels load without shipping them are in the layer.
    for library in ["libstdc++.so.6", "libgcc_s.so.1", "libz.so.1"] {
        assert_eq!(data(&server, url, &format!("native('{library}')")).await, format!("loaded {library}"));
    }
    // A dependency from the operator's index, installed once per commit.
    let deps = format!("{url}/deps");
    assert_eq!(data(&server, &deps, "shout('hi')").await, "HI!");
    let changes = [
        ("deps/main.py", Edit::Append("\n# a change of code only\n")),
        ("deps/requirements.txt", Edit::Append("# pinned, and why\n\n")),
        ("deps/requirements.txt", Edit::Append("skyfoo>=0.9\n")),
    ];
    reused_dependencies(&server, &repo, &deps, changes, "shout('hi')", "HI!").await;
    versions(&server, &repo, "main.py", r#""two""#).await;
}

/// A new commit that changes code but not the dependencies reuses the earlier commit's
/// install of them (`runtimes::reuse`), as does one that changes the dependencies'
/// manifest in what installs nothing (a comment, the package's own version); one that
/// changes the dependencies installs again. `changes`: what each of the three commits
/// appends to a file (code, then the manifest twice), or puts in place of a text in it.
async fn reused_dependencies(
    server: &Server,
    repo: &Repo,
    url: &str,
    changes: [(&str, Edit<'_>); 3],
    call: &str,
    want: &str,
) {
    let reused = async || server.metric("skyisland_cache_hits_total", &[r#"tier="dependencies""#]).await;
    assert_eq!(reused().await, 0.0, "nothing to reuse before a second commit");
    for (i, (file, edit)) in changes.into_iter().enumerate() {
        let before = std::fs::read_to_string(repo.work.join(file)).unwrap();
        let after = match edit {
            Edit::Append(more) => format!("{before}{more}"),
            Edit::Replace(old, new) => {
                assert!(before.contains(old), "{file} holds {old:?}");
                before.replace(old, new)
            }
        };
        repo.change(file, &after, "a change");
        let (status, body) = server.call(json!({"url": url, "call": call, "cache_bust": true})).await;
        assert_eq!((status, body["data"].as_str()), (200, Some(want)), "{body}");
        // The code's change and the manifest's first reuse the dependencies; the
        // manifest's second installs them again.
        let expected = if i < 2 { i + 1 } else { 2 };
        assert_eq!(reused().await, expected as f64, "after changing {file} ({i}): {body}");
    }
}

/// How [`reused_dependencies`] changes a file.
enum Edit<'a> {
    Append(&'a str),
    Replace(&'a str, &'a str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_functions() {
    if !root_or_skip("javascript_functions") {
        return;
    }
    let sandbox = sandbox();
    let repo = Repo::from_fixture(&sandbox, "acme", "js", "rt-node");
    let url = repo.import_path.as_str();
    let server = Server::start(&sandbox);
    common(
        &server,
        url,
        &Expect {
            runtime: "node",
            echo: (
                r#"echo(1, -2.5, 'a\n', "\u00e9", true, null, [1, [2, 3]], {k: 'v', "a": {}})"#,
                r#"[1,-2.5,"a\n","é",true,null,[1,[2,3]],{"k":"v","a":{}}]"#,
            ),
            kinds: (
                "kinds(1, 1.5, 'a', true, null, [], {}, undefined)",
                r#"["number","number","string","boolean","null","array","object","undefined"]"#,
            ),
            hello: "hello sky\ndone",
            later: Some(("later(21)", r#"{"twice":42}"#)),
            traceback: "at exports.boom",
            syntax: "broken.f()",
            escapes: ["echo(process.exit())", "echo(`${1}`)", "echo(1) // c"],
            refused: ["ENOENT", "EROFS"],
        },
    )
    .await;
    assert_eq!(data(&server, url, "esm.later(1)").await, "esm 1");
    // A dependency (an npm tarball in the repository), installed without its install
    // script.
    let deps = format!("{url}/deps");
    assert_eq!(data(&server, &deps, "pad('a', 3)").await, "**a");
    let listing = data(&server, &deps, "ls()").await;
    assert!(listing.contains("node_modules") && !listing.contains("postinstall-ran"), "{listing}");
    let changes = [
        ("deps/index.js", Edit::Append("\n// a change of code only\n")),
        ("deps/package.json", Edit::Replace(r#""version": "1.0.0""#, r#""version": "1.0.1", "description": "d""#)),
        ("deps/package.json", Edit::Replace(r#""main""#, r#""engines": {"node": ">=18"}, "main""#)),
    ];
    reused_dependencies(&server, &repo, &deps, changes, "pad('a', 3)", "**a").await;
    versions(&server, &repo, "index.js", r#""two""#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_functions() {
    if !root_or_skip("lua_functions") {
        return;
    }
    let sandbox = sandbox();
    let repo = Repo::from_fixture(&sandbox, "acme", "lua", "rt-lua");
    let url = repo.import_path.as_str();
    let server = Server::start(&sandbox);
    common(
        &server,
        url,
        &Expect {
            runtime: "lua",
            echo: (
                r#"echo(1, -2.5, 'a\n', "\u{e9}", true, {1, {2, 3}}, {k = 'v'})"#,
                r#"[1,-2.5,"a\n","é",true,[1,[2,3]],{"k":"v"}]"#,
            ),
            kinds: ("kinds(1, 1.0, 'a', true, nil, {})", r#"["integer","float","string","boolean","nil","table"]"#),
            hello: "hello\tsky\ndone",
            later: None,
            traceback: "stack traceback",
            syntax: "broken.f()",
            escapes: ["echo(os.exit())", "echo(1 .. 2)", "echo(1) -- c"],
            refused: ["error", "error"],
        },
    )
    .await;
    versions(&server, &repo, "main.lua", r#""two""#).await;
}

/// The runtime is detected from the package's files, or named; a package of several
/// kinds needs it named; a call in another language's spelling is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_are_detected_or_named() {
    if !root_or_skip("runtimes_are_detected_or_named") {
        return;
    }
    let sandbox = sandbox();
    let repo = Repo::from_items(
        &sandbox,
        "acme",
        "mixed",
        &[
            ("both/main.py", support::Item::File("def which():\n    return 'python'\n".into())),
            ("both/index.js", support::Item::File("exports.which = () => 'node';\n".into())),
            ("none/README", support::Item::File("nothing to run\n".into())),
            ("pydeps/main.py", support::Item::File("import skyfoo\n".into())),
            ("pydeps/requirements.txt", support::Item::File("skyfoo==1.0\n".into())),
            ("jsdeps/index.js", support::Item::File("require('skyfoo');\n".into())),
            ("jsdeps/package.json", support::Item::File(r#"{"dependencies": {"skyfoo": "1.0.0"}}"#.into())),
        ],
    );
    let both = format!("{}/both", repo.import_path);
    let server = Server::start(&sandbox);
    let body = status(&server, &both, "which()", 400).await;
    assert!(body["error"].as_str().unwrap().contains("say which with \"runtime\""), "{body}");
    for runtime in ["python", "node"] {
        let (code, body) = server.call(json!({"url": both, "call": "which()", "runtime": runtime})).await;
        assert_eq!((code, body["data"].as_str()), (200, Some(runtime)), "{body}");
    }
    let (code, body) = server.call(json!({"url": both, "call": "which()", "runtime": "ruby"})).await;
    assert_eq!(code, 400, "{body}");
    // Python's spelling for a JavaScript function.
    let (code, body) = server.call(json!({"url": both, "call": "which(True)", "runtime": "node"})).await;
    assert_eq!(code, 400, "{body}");
    let body = status(&server, &format!("{}/none", repo.import_path), "which()", 422).await;
    assert!(body["error"].as_str().unwrap().contains("no Go, Python"), "{body}");

    // Dependencies with nowhere configured to install them from: the installer's own
    // complaint, and what the operator can set.
    for (dir, installer) in [("pydeps", "No matching distribution"), ("jsdeps", "ENOTCACHED")] {
        let body = status(&server, &format!("{}/{dir}", repo.import_path), "f()", 422).await;
        let output = body["output"].as_str().unwrap();
        assert!(output.contains(installer), "{body}");
        assert!(output.trim_end().ends_with(if dir == "pydeps" { "find_links" } else { "[node] registry" }), "{body}");
        assert!(output.contains("[build] allow_downloads = true"), "{body}");
    }
}

/// An install runs the repository's own code (a setup.py here): it writes only its own
/// output, and sees nothing of the other builds' data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_code_cannot_write_what_other_builds_use() {
    if !root_or_skip("install_code_cannot_write_what_other_builds_use") {
        return;
    }
    let sandbox = sandbox();
    let repo = Repo::from_fixture(&sandbox, "acme", "evil", "rt-python");
    let server = Server::start(&sandbox);
    let report = data(&server, &format!("{}/evil", repo.import_path), "report()").await;
    for line in report.lines().filter(|l| l.starts_with("wrote") || l.starts_with("refused")) {
        assert!(line.starts_with("refused"), "{report}");
    }
    assert!(report.contains("build holds out src\n"), "{report}");
    let build = sandbox.data_dir().join("build");
    for dir in ["gocache", "gomodcache", "tools", "repos", "src"] {
        assert!(!build.join(dir).join("pwned").exists(), "{dir}");
    }
    assert!(!Path::new("/usr/pwned").exists());
}

/// A package index on loopback (Python's `http.server` over a directory: pip reads its
/// listings as a simple index), killed when dropped.
struct Index {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Index {
    fn serve(root: &Path, log: std::path::PathBuf) -> Index {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory"])
            .arg(root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line.split(" port ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap().parse().unwrap();
        Index { child, port, log }
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An index the operator names in `[python] index_url` is reached through the egress
/// proxy by its name, although it resolves to loopback (as sites resolve the public
/// indexes to a mirror of their own), without listing it in `[git] allow_hosts`; a
/// repository's own `--index-url` to another port of the same name is refused, and that
/// index hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_index_is_reached_by_name_and_nothing_else() {
    if !root_or_skip("the_operators_index_is_reached_by_name_and_nothing_else") {
        return;
    }
    let mut sandbox = sandbox();
    let root = sandbox.path().join("index");
    let project = root.join("simple/skyfoo");
    std::fs::create_dir_all(&project).unwrap();
    make_wheel(&project);
    let index = Index::serve(&root, sandbox.path().join("index.log"));
    let other = Index::serve(&root, sandbox.path().join("other.log"));
    sandbox.extra_config.push_str(&format!("[python]\nindex_url = \"http://localhost:{}/simple/\"\n", index.port));
    let repo = Repo::from_fixture(&sandbox, "acme", "pyindex", "rt-python");
    let server = Server::start(&sandbox);
    let deps = format!("{}/deps", repo.import_path);
    assert_eq!(data(&server, &deps, "shout('hi')").await, "HI!");
    assert!(index.requests().contains("GET /simple/skyfoo/"), "{}", index.requests());

    repo.change(
        "deps/requirements.txt",
        &format!("--index-url http://localhost:{}/simple/\nskyfoo==1.0\n", other.port),
        "another index",
    );
    let (status, body) = server.call(json!({"url": deps, "call": "shout('hi')", "cache_bust": true})).await;
    assert_eq!(status, 422, "{body}");
    // The proxy answers pip's plain-HTTP request 403, which pip reports as no such package.
    assert!(body["output"].as_str().unwrap().contains("No matching distribution"), "{body}");
    assert!(!body["output"].as_str().unwrap().contains("ran offline"), "an index is configured: {body}");
    assert_eq!(other.requests(), "", "the repository's index heard nothing");
}

/// A wheel of `skyfoo` 1.0 (pure Python), made with the host's Python.
fn make_wheel(dir: &Path) {
    let script = r#"
import sys, zipfile, hashlib, base64
path = sys.argv[1] + "/skyfoo-1.0-py3-none-any.whl"
files = {
    "skyfoo/__init__.py": "def shout(text):\n    return text.upper() + '!'\n",
    "skyfoo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: skyfoo\nVersion: 1.0\n",
    "skyfoo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(path, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    record.append("skyfoo-1.0.dist-info/RECORD,,")
    z.writestr("skyfoo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    run(Command::new("python3").args(["-c", script]).arg(dir));
}
