//! Interpreted functions (Python, JavaScript, Lua) through a real `skyisland serve`, side
//! by side with the same interpreter running the same function: a cached call in a fresh
//! jail (`"cache": false`, the package already installed) against plain fork+exec of the
//! interpreter and against the same under bubblewrap, interleaved call by call so that the
//! machine's noise falls on all alike. Then a first call that installs a dependency (a new
//! commit each run) against the same steps by hand (git, pip or npm, the interpreter), and
//! the install alone against pip or npm alone.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::functions::{Args, call, client, commit_change, repository_from, start};
use crate::stats::{self, summarize};

/// One runtime's package and how to run its function outside Sky Island.
struct Case {
    runtime: &'static str,
    dir: &'static str,
    files: &'static [(&'static str, &'static str)],
    call: &'static str,
    /// The interpreter and its arguments, `{dir}` the package directory.
    plain: &'static [&'static str],
    answer: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        runtime: "python",
        dir: "py",
        files: &[("m.py", "def f(x):\n    return x + 1\n")],
        call: "m.f(1)",
        plain: &[
            "/usr/bin/python3",
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, '{dir}'); import m; print(m.f(1), end='')",
        ],
        answer: "2",
    },
    Case {
        runtime: "node",
        dir: "js",
        files: &[("index.js", "exports.f = (x) => x + 1;\n")],
        call: "f(1)",
        plain: &["/usr/bin/node", "-e", "process.stdout.write(String(require('{dir}/index.js').f(1)))"],
        answer: "2",
    },
    Case {
        runtime: "lua",
        dir: "lua",
        files: &[("m.lua", "local M = {}\nfunction M.f(x) return x + 1 end\nreturn M\n")],
        call: "m.f(1)",
        plain: &["/usr/bin/lua5.4", "-e", "package.path = '{dir}/?.lua'; io.write(require('m').f(1))"],
        answer: "2",
    },
];

fn timed(cmd: &mut Command, answer: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("{cmd:?}"))?;
    let took = started.elapsed();
    if !out.status.success() || String::from_utf8_lossy(&out.stdout) != answer {
        bail!("{cmd:?}: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// How long `cmd` took to succeed.
fn took(cmd: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    crate::functions::sh(cmd)?;
    Ok(started.elapsed())
}

/// The same command under bubblewrap: the host's /usr and the package read-only, new
/// namespaces of every kind.
fn bwrap(argv: &[String], package: &Path) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
        .args(["--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .arg("--ro-bind")
        .arg(package)
        .arg(package)
        .args(["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"])
        .args(argv);
    cmd
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(&args.dir);
    fs::create_dir_all(&args.dir)?;
    let mut files: Vec<(String, String)> = Vec::new();
    for case in &CASES {
        for (name, text) in case.files {
            files.push((format!("{}/{name}", case.dir), (*text).to_owned()));
        }
    }
    // The dependency cases: a wheel in a local find-links directory, an npm tarball.
    let wheels = args.dir.join("wheels");
    fs::create_dir_all(&wheels)?;
    make_wheel(&wheels, "1.0")?;
    files.push(("pydeps/requirements.txt".into(), "skyfoo==1.0\n".into()));
    files.push(("pydeps/main.py".into(), "import skyfoo\n\ndef shout(t):\n    return skyfoo.shout(t)\n".into()));
    files.push((
        "jsdeps/package.json".into(),
        r#"{"name": "d", "version": "1.0.0", "dependencies": {"leftpad": "file:leftpad-1.0.0.tgz"}}"#.into(),
    ));
    files.push(("jsdeps/index.js".into(), "exports.pad = (t, n) => require('leftpad')(t, n);\n".into()));
    repository_from(&args.dir, "rt", &files)?;
    let tarball =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../skyisland/tests/fixtures/rt-node/deps/leftpad-1.0.0.tgz");
    fs::copy(&tarball, args.dir.join("work/rt/jsdeps/leftpad-1.0.0.tgz"))?;
    commit_change(&args.dir, "rt", "jsdeps/leftpad-1.0.0.tgz")?;

    let config = format!("[cache]\nbust_interval = \"0s\"\n[python]\nfind_links = [\"{}\"]\n", wheels.display());
    let server = start(&args.dir, &config)?;
    let (tokio, http) = client()?;
    let url = server.url.clone();
    let work = args.dir.join("work/rt");
    println!("\n## Interpreted functions ({} interleaved runs each)\n", args.runs);
    stats::header();
    let mut ratios = Vec::new();
    for case in &CASES {
        let package = work.join(case.dir);
        let argv: Vec<String> = case.plain.iter().map(|a| a.replace("{dir}", &package.display().to_string())).collect();
        let body = json!({"url": format!("example.test/bench/rt/{}", case.dir), "call": case.call, "cache": false});
        // Installed, and the jails warm.
        for _ in 0..5 {
            let answer = tokio.block_on(call(&http, &url, body.clone()))?;
            if answer["data"] != case.answer {
                bail!("{}: {answer}", case.runtime);
            }
        }
        let (mut jail, mut plain, mut wrapped) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let started = Instant::now();
            tokio.block_on(call(&http, &url, body.clone()))?;
            jail.push(started.elapsed());
            plain.push(timed(Command::new(&argv[0]).args(&argv[1..]).env_clear(), case.answer)?);
            wrapped.push(timed(&mut bwrap(&argv, &package), case.answer)?);
        }
        let (jail, plain, wrapped) = (summarize(&mut jail), summarize(&mut plain), summarize(&mut wrapped));
        stats::row(&format!("{}: call through the server, fresh jail", case.runtime), &jail);
        stats::row(&format!("{}: fork+exec of the interpreter", case.runtime), &plain);
        stats::row(&format!("{}: the same under bubblewrap", case.runtime), &wrapped);
        ratios.push((case.runtime, jail.median, plain.median, wrapped.median));
    }
    println!();
    for (runtime, jail, plain, wrapped) in ratios {
        let target = if runtime == "lua" { 2.0 } else { 1.3 };
        stats::ratio(&format!("{runtime}: server call / fork+exec (target ≤ {target}×)"), jail, plain);
        stats::ratio(&format!("{runtime}: server call / bubblewrap"), jail, wrapped);
    }

    // A new commit: its first call through the server (fetch, check out, install, run)
    // against the same steps by hand — a `git fetch` and checkout of a clone, pip or npm,
    // the interpreter — on the same package, alternately; once with the dependencies as
    // they were (an earlier commit's install of them is reused; the commit also adds a
    // comment to requirements.txt and moves package.json's version, which install
    // nothing) and once with a dependency set never seen before (a new version of the
    // wheel, of the tarball: pip and npm run). Of a first call with new dependencies, the
    // install alone (the server's build jail: pip or npm, and keeping the result) is read
    // off the server's `skyisland_build_duration_seconds`, against pip or npm alone.
    let installs = args.runs.clamp(1, 10);
    let mut rows: Vec<(&str, Vec<Duration>)> = [
        "python: new commit, same dependencies",
        "python: new commit, dependencies changed",
        "python:   of which the install (build jail, pip)",
        "python: by hand: pip install",
        "python: by hand: fetch, check out, pip, call",
        "node: new commit, same dependencies",
        "node: new commit, dependencies changed",
        "node:   of which the install (build jail, npm)",
        "node: by hand: npm install",
        "node: by hand: fetch, check out, npm, call",
    ]
    .into_iter()
    .map(|name| (name, Vec::new()))
    .collect();
    let (py, js) = (0, 5);
    let hand = args.dir.join("hand");
    let bare = args.dir.join("git/example.test/bench/rt.git");
    crate::functions::sh(Command::new("git").args(["clone", "-q"]).arg(&bare).arg(&hand))?;
    let hand_deps = args.dir.join("hand-deps");
    let npm_cache = args.dir.join("npm-cache");
    for i in 0..installs * 2 {
        let changed = i % 2 == 1;
        fs::write(work.join("pydeps/extra.py"), format!("N = {i}\n"))?;
        fs::write(work.join("jsdeps/extra.js"), format!("exports.n = {i};\n"))?;
        // Unchanged: the same versions as the last changed commit's.
        let version = if changed { i } else { i.saturating_sub(1) };
        let comment = if changed { String::new() } else { format!("# {i}\n") };
        if changed {
            make_wheel(&wheels, &format!("1.{version}"))?;
            make_tarball(&tarball, &work.join(format!("jsdeps/leftpad-1.0.{version}.tgz")), version)?;
        }
        fs::write(work.join("pydeps/requirements.txt"), format!("{comment}skyfoo==1.{version}\n"))?;
        let manifest = format!(
            r#"{{"name": "d", "version": "1.0.{i}", "dependencies": {{"leftpad": "file:leftpad-1.0.{version}.tgz"}}}}"#
        );
        fs::write(work.join("jsdeps/package.json"), manifest)?;
        commit_change(&args.dir, "rt", ".")?;
        let row = usize::from(changed);
        for (base, package, call_text, expected) in
            [(py, "pydeps", "shout('a')", "A!"), (js, "jsdeps", "pad('a', 3)", "**a")]
        {
            let installed = tokio.block_on(build_seconds(&http, &url))?;
            let started = Instant::now();
            let answer = tokio.block_on(call(
                &http,
                &url,
                json!({"url": format!("example.test/bench/rt/{package}"), "call": call_text, "cache_bust": true}),
            ))?;
            rows[base + row].1.push(started.elapsed());
            if answer["data"] != expected {
                bail!("{package}: {answer}");
            }
            if changed {
                let installed = tokio.block_on(build_seconds(&http, &url))? - installed;
                rows[base + 2].1.push(Duration::from_secs_f64(installed));
            }
        }

        // By hand: the new commit into a clone, then each package's install and call.
        let _ = fs::remove_dir_all(&hand_deps);
        let _ = fs::remove_dir_all(hand.join("jsdeps/node_modules"));
        let fetched =
            took(Command::new("git").args(["fetch", "-q", "--depth=1", "origin", "HEAD"]).current_dir(&hand))?
                + took(Command::new("git").args(["checkout", "-q", "-f", "FETCH_HEAD"]).current_dir(&hand))?;
        let pip = took(
            Command::new("/usr/bin/python3")
                .args(["-I", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "--no-input"])
                .args(["--no-index", "--find-links"])
                .arg(&wheels)
                .arg("--target")
                .arg(&hand_deps)
                .args(["-r", "requirements.txt"])
                .current_dir(hand.join("pydeps")),
        )?;
        let called = timed(
            Command::new("/usr/bin/python3")
                .args([
                    "-I",
                    "-c",
                    "import sys; sys.path[:0] = sys.argv[1:]; import main; print(main.shout('a'), end='')",
                ])
                .arg(hand.join("pydeps"))
                .arg(&hand_deps),
            "A!",
        )?;
        rows[py + 3].1.push(pip);
        rows[py + 4].1.push(fetched + pip + called);
        let npm = took(
            Command::new("/usr/bin/npm")
                .args(["install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--offline"])
                .args(["--no-package-lock", "--cache"])
                .arg(&npm_cache)
                .current_dir(hand.join("jsdeps")),
        )?;
        let called = timed(
            Command::new("/usr/bin/node")
                .args(["-e", "process.stdout.write(require('./index.js').pad('a', 3))"])
                .current_dir(hand.join("jsdeps")),
            "**a",
        )?;
        rows[js + 3].1.push(npm);
        rows[js + 4].1.push(fetched + npm + called);
    }
    let rows: Vec<(&str, stats::Summary)> =
        rows.into_iter().map(|(name, mut runs)| (name, summarize(&mut runs))).collect();
    println!("\n## A new commit ({installs} runs of each kind, alternating)\n");
    stats::header();
    for (name, summary) in &rows {
        stats::row(name, summary);
    }
    println!();
    let ratio = |a: usize, b: usize, what: &str| stats::ratio(what, rows[a].1.median, rows[b].1.median);
    for (base, runtime, tool) in [(py, "python", "pip"), (js, "node", "npm")] {
        ratio(
            base + 2,
            base + 3,
            &format!("{runtime}: the install of new dependencies / {tool} by hand (target ≤ 1×)"),
        );
        ratio(base, base + 4, &format!("{runtime}: first call, same dependencies / the same steps by hand"));
        ratio(base + 1, base + 4, &format!("{runtime}: first call, dependencies changed / the same steps by hand"));
        ratio(base + 1, base + 3, &format!("{runtime}: first call, dependencies changed / {tool} alone by hand"));
    }
    drop(server);
    Ok(())
}

/// The seconds the server has spent building and installing so far, from its metrics.
async fn build_seconds(http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await?;
    let line = text.lines().find(|line| line.starts_with("skyisland_build_duration_seconds_sum"));
    match line.and_then(|line| line.split_whitespace().nth(1)) {
        Some(value) => Ok(value.parse()?),
        // Nothing built yet.
        None => Ok(0.0),
    }
}

/// A wheel of `skyfoo` `version` (pure Python), made with the host's Python.
fn make_wheel(dir: &Path, version: &str) -> anyhow::Result<()> {
    let script = r#"
import sys, zipfile, hashlib, base64
v = sys.argv[2]
path = sys.argv[1] + "/skyfoo-%s-py3-none-any.whl" % v
info = "skyfoo-%s.dist-info/" % v
files = {
    "skyfoo/__init__.py": "def shout(text):\n    return text.upper() + '!'\n",
    info + "METADATA": "Metadata-Version: 2.1\nName: skyfoo\nVersion: %s\n" % v,
    info + "WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(path, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    record.append(info + "RECORD,,")
    z.writestr(info + "RECORD", "\n".join(record) + "\n")
"#;
    crate::functions::sh(Command::new("/usr/bin/python3").args(["-c", script]).arg(dir).arg(version))?;
    Ok(())
}

/// The `leftpad` tarball `from` made again as version 1.0.`patch`, at `to`.
fn make_tarball(from: &Path, to: &Path, patch: usize) -> anyhow::Result<()> {
    let unpacked = tempfile::tempdir()?;
    crate::functions::sh(Command::new("tar").arg("-xzf").arg(from).arg("-C").arg(unpacked.path()))?;
    let manifest = unpacked.path().join("package/package.json");
    let text = fs::read_to_string(&manifest)?.replace("\"1.0.0\"", &format!("\"1.0.{patch}\""));
    fs::write(&manifest, text)?;
    crate::functions::sh(Command::new("tar").arg("-czf").arg(to).arg("-C").arg(unpacked.path()).arg("package"))?;
    Ok(())
}
