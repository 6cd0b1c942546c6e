//! The seccomp policy is an allow-list, so a system call a real program needs and the
//! policy forgot would break that program in every jail. This test runs the programs the
//! jails run (a Go program using the network, threads and processes; the shell; git; the
//! Go toolchain building a module; python3; node; lua5.4) outside any jail under `strace`, and
//! runs every system call they made, with its real arguments, through the compiled policy.
//! A refused call fails the test unless it is a probe the program is known to fall back
//! from (listed below, each with the reason).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use skyisland_jail::seccomp::{Policy, syscall_number};

/// System calls the programs probe for and do without when refused, with what they do.
const KNOWN_PROBES: &[(&str, &str)] = &[
    ("clone3", "glibc and Go fall back to clone on ENOSYS"),
    ("io_uring_setup", "libuv (node) falls back to its thread pool"),
    ("personality", "only the query and harmless personas are allowed; a refused one is reported by the program"),
];

fn require(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{program} is missing (scripts/setup.sh installs it)");
        eprintln!("skipping: {program} is missing");
    }
    found
}

/// Runs `command` under strace and returns the system calls it made: name → the distinct
/// argument lists seen (raw numbers).
fn trace(dir: &Path, label: &str, command: &mut Command) -> BTreeMap<String, BTreeSet<Vec<u64>>> {
    let out = dir.join(format!("{label}.trace"));
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let mut traced = Command::new("strace");
    traced.args(["-f", "-qq", "-e", "raw=all", "-o"]).arg(&out).arg("--").arg(program).args(args);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => traced.env(key, value),
            None => traced.env_remove(key),
        };
    }
    if let Some(cwd) = command.get_current_dir() {
        traced.current_dir(cwd);
    }
    let status = traced.output().expect("strace runs");
    assert!(status.status.success(), "{label}: {}", String::from_utf8_lossy(&status.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut calls: BTreeMap<String, BTreeSet<Vec<u64>>> = BTreeMap::new();
    for line in text.lines() {
        // "1234  name(0x1, 0x2) = 0", "1234  name(0x1, <unfinished ...>", "1234  <... name resumed>..."
        let rest = line.split_once(char::is_whitespace).map_or(line, |(_, rest)| rest.trim_start());
        if rest.starts_with("<...") || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else { continue };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let args = args.split([')', '<']).next().unwrap_or("");
        let values: Vec<u64> = args
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                let a = a.trim_start_matches("0x");
                u64::from_str_radix(a, 16).unwrap_or(0)
            })
            .collect();
        calls.entry(name.to_owned()).or_default().insert(values);
    }
    assert!(!calls.is_empty(), "{label}: no system calls traced");
    calls
}

fn go_env<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .env("HOME", home)
        .env("GOCACHE", home.join("gocache"))
        .env("GOPATH", home.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
}

const GO_PROGRAM: &str = r#"package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"
)

func main() {
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); time.Sleep(time.Millisecond) }()
	}
	wg.Wait()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		go func() { c, _ := ln.Accept(); c.Close() }()
		c, _ := net.Dial("tcp", ln.Addr().String())
		c.Close()
	}
	ifaces, _ := net.Interfaces()
	if len(os.Args) > 1 {
		out, _ := exec.Command(os.Args[0]).Output()
		fmt.Print(string(out))
	}
	os.WriteFile(os.TempDir()+"/x", []byte("x"), 0o600)
	fmt.Println("ok", len(ifaces))
}
"#;

#[test]
fn real_programs_need_nothing_the_policy_refuses() {
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "needs root in CI");
        return;
    }
    let Some(_) = require("strace") else { return };
    let policy = Policy::compile().expect("the policy compiles");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let mut all: BTreeMap<String, (String, BTreeSet<Vec<u64>>)> = BTreeMap::new();
    let mut add = |label: &str, calls: BTreeMap<String, BTreeSet<Vec<u64>>>| {
        for (name, args) in calls {
            all.entry(name).or_insert_with(|| (label.to_owned(), BTreeSet::new())).1.extend(args);
        }
    };

    add(
        "sh",
        trace(
            home,
            "sh",
            Command::new("/bin/sh").args(["-c", "echo hi > x; cat x; ls -la / > /dev/null; rm x"]).current_dir(home),
        ),
    );
    if let (Some(go), Some(_)) = (require("go"), require("git")) {
        let module = home.join("prog");
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(module.join("go.mod"), "module prog\n\ngo 1.19\n").unwrap();
        std::fs::write(module.join("main.go"), GO_PROGRAM).unwrap();
        add(
            "go build",
            trace(
                home,
                "go-build",
                go_env(Command::new(&go).args(["build", "-trimpath", "-o", "prog", "."]), home).current_dir(&module),
            ),
        );
        add("a Go program", trace(home, "go-program", Command::new(module.join("prog")).arg("child")));
        let git = |label: &str, args: &[&str], cwd: &Path| {
            trace(
                home,
                label,
                Command::new("git")
                    .args(args)
                    .current_dir(cwd)
                    .env("HOME", home)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .env("GIT_AUTHOR_NAME", "t")
                    .env("GIT_AUTHOR_EMAIL", "t@example.test")
                    .env("GIT_COMMITTER_NAME", "t")
                    .env("GIT_COMMITTER_EMAIL", "t@example.test"),
            )
        };
        add("git init", git("git-init", &["init", "-q", "-b", "main", "."], &module));
        add("git add", git("git-add", &["add", "-A"], &module));
        add("git commit", git("git-commit", &["commit", "-q", "-m", "x"], &module));
        let bare = home.join("bare.git");
        add("git fetch", git("git-init-bare", &["init", "-q", "--bare", bare.to_str().unwrap()], home));
        let url = format!("file://{}", module.display());
        add(
            "git fetch",
            git("git-fetch", &["-C", bare.to_str().unwrap(), "fetch", "-q", "--depth=1", &url, "HEAD"], home),
        );
        let work = home.join("checkout");
        std::fs::create_dir_all(&work).unwrap();
        add(
            "git checkout",
            git(
                "git-checkout",
                &[
                    "--git-dir",
                    bare.to_str().unwrap(),
                    "--work-tree",
                    work.to_str().unwrap(),
                    "checkout",
                    "-q",
                    "-f",
                    "FETCH_HEAD",
                    "--",
                    ".",
                ],
                home,
            ),
        );
    }
    if let Some(python) = ["/usr/bin/python3"].into_iter().map(PathBuf::from).find(|p| p.is_file()) {
        let script = "import json, os, socket, threading, asyncio, subprocess, tempfile, hashlib, random\n\
                      async def f():\n    await asyncio.sleep(0.001)\n    return 1\n\
                      print(json.dumps(asyncio.run(f())))\n\
                      t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
                      s = socket.socket(); s.close()\n\
                      subprocess.run(['/bin/true'])\n\
                      print(hashlib.sha256(os.urandom(8)).hexdigest(), random.random())\n";
        add("python3", trace(home, "python3", Command::new(python).args(["-c", script]).current_dir(home)));
    } else {
        assert!(std::env::var_os("CI").is_none(), "/usr/bin/python3 is missing (scripts/setup.sh installs it)");
    }
    if let Some(node) = require("node") {
        let script = "const fs = require('fs'); const os = require('os'); const cp = require('child_process');\
                      fs.writeFileSync(os.tmpdir() + '/sky-node-' + process.pid, 'x');\
                      fs.readFile(os.tmpdir() + '/sky-node-' + process.pid, () => {});\
                      cp.execFileSync('/bin/true');\
                      (async () => { await new Promise(r => setTimeout(r, 1)); console.log(JSON.stringify({ok: 1})); })();";
        add("node", trace(home, "node", Command::new(node).args(["-e", script]).current_dir(home)));
    }
    if let Some(lua) = require("lua5.4") {
        let script = "local f = io.open(os.tmpname(), 'w'); f:write('x'); f:close(); print(os.time(), os.clock())";
        add("lua5.4", trace(home, "lua5.4", Command::new(lua).args(["-e", script]).current_dir(home)));
    }

    let mut refused = Vec::new();
    for (name, (label, arg_sets)) in &all {
        // strace names a number it does not know `syscall_0x…`. Far beyond x86-64's table
        // (~470 entries) it is no system call at all — seen once from `go build` as
        // syscall_0x8000, a number strace misread around a signal — and the kernel's
        // answer to it is the same ENOSYS as the policy's. A number strace does not know
        // within the table's range is still reported: a newer call the policy may lack.
        if name
            .strip_prefix("syscall_0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|nr| nr >= 1024)
        {
            continue;
        }
        let Some(nr) = syscall_number(name) else {
            refused.push(format!("{name} (by {label}): not in the system call table"));
            continue;
        };
        for args in arg_sets {
            let mut six = [0u64; 6];
            for (slot, value) in six.iter_mut().zip(args) {
                *slot = *value;
            }
            if let Err(errno) = policy.check(nr, six) {
                if KNOWN_PROBES.iter().any(|(probe, _)| probe == name) {
                    continue;
                }
                // One line per system call is enough to see what is missing.
                refused.push(format!("{name}{args:x?} (by {label}): refused with errno {errno:?}"));
                break;
            }
        }
    }
    assert!(refused.is_empty(), "the policy refuses what real programs need:\n{}", refused.join("\n"));
}
