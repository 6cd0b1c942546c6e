//! ARCHITECTURE.md's mechanical claims, checked: where `unsafe` lives, which crate depends
//! on which, and that every module says what it is for.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = support::workspace();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.strip_prefix(&root).unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

#[test]
fn unsafe_code_lives_only_where_the_architecture_says() {
    let documented: BTreeSet<&str> = [
        "crates/jail/src/sys.rs",
        "crates/jail/src/rootfs/btrfs.rs",
        "crates/jail/src/spawner.rs",
        "crates/runner/src/lib.rs",
    ]
    .into();
    let mut found = BTreeSet::new();
    for (path, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl") {
                found.insert(path.clone());
                if code.contains("unsafe {") {
                    let before: Vec<&str> = text.lines().take(n + 1).collect();
                    let documented = before.iter().rev().take(8).any(|l| l.contains("// SAFETY:"));
                    assert!(documented, "{path}:{}: an unsafe block without a SAFETY comment", n + 1);
                }
            }
        }
    }
    let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, documented, "update ARCHITECTURE.md (the jail crate's invariants) or move the unsafe code");
}

#[test]
fn crates_depend_on_each_other_in_one_direction() {
    let allowed: BTreeMap<&str, &[&str]> = [
        ("config", &[][..]),
        ("jail", &[][..]),
        ("client", &[][..]),
        ("runner", &["config", "jail"][..]),
        ("net", &["config", "jail", "runner"][..]),
        ("functions", &["config", "jail", "runner", "net"][..]),
        ("server", &["config", "jail", "runner", "functions", "net"][..]),
        ("bench", &["config", "jail", "runner"][..]),
        ("skyisland", &["config", "jail", "runner", "server", "functions", "net", "client"][..]),
    ]
    .into();
    let root = support::workspace();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let name = krate.file_name().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(krate.path().join("Cargo.toml")).unwrap();
        let manifest: toml::Table = manifest.parse().unwrap();
        let deps: BTreeSet<String> = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| d.keys().filter_map(|k| k.strip_prefix("skyisland-")).map(str::to_owned).collect())
            .unwrap_or_default();
        let expected = allowed.get(name.as_str()).unwrap_or_else(|| panic!("crate {name} is not in ARCHITECTURE.md"));
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(deps, expected, "crate {name}'s dependencies on our crates");
    }
}

#[test]
fn every_module_says_what_it_is_for() {
    for (path, text) in sources() {
        assert!(text.starts_with("//!"), "{path} starts without a //! header");
    }
}

#[test]
fn the_jail_crate_never_links_tokio() {
    let root = support::workspace();
    let manifest = std::fs::read_to_string(root.join("crates/jail/Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().unwrap();
    assert!(!manifest["dependencies"].as_table().unwrap().contains_key("tokio"));
}

/// `skyisland` is the small program: `jail run` starts no faster than the program it is,
/// so it must not carry the server (src/lib.rs). Crate names appear in a binary's symbols
/// only when the crate is linked in.
#[test]
fn the_small_program_carries_none_of_the_server() {
    let small = std::fs::read(support::bin()).unwrap();
    let full = std::fs::read(PathBuf::from(env!("CARGO_BIN_EXE_skyisland-full"))).unwrap();
    let has = |binary: &[u8], name: &str| binary.windows(name.len()).any(|w| w == name.as_bytes());
    for krate in ["skyisland_server", "skyisland_functions", "skyisland_client"] {
        assert!(has(&full, krate), "the whole program links {krate} (the check can see a crate)");
        assert!(!has(&small, krate), "skyisland links {krate}: only skyisland-full may");
    }
    assert!(has(&small, "skyisland_jail"), "skyisland runs jails itself");
}

/// The small program runs `jail` commands without the whole program, hands it everything
/// else (found beside it or in ../libexec/skyisland/), and says so when it is missing.
#[test]
fn the_small_program_hands_every_other_command_to_the_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("bin/skyisland");
    std::fs::create_dir_all(alone.parent().unwrap()).unwrap();
    std::fs::copy(support::bin(), &alone).unwrap();
    let run = |args: &[&str]| std::process::Command::new(&alone).args(args).output().unwrap();

    let version = run(&["--version"]);
    let stderr = String::from_utf8_lossy(&version.stderr);
    assert_eq!(version.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("skyisland: the whole program is missing: neither "), "{stderr}");
    assert!(stderr.contains("libexec/skyisland/skyisland-full"), "{stderr}");

    // Run here, without the whole program: the jail command's own error, not a missing program.
    let jail = run(&["jail", "run", "--", "/nonexistent/program"]);
    let stderr = String::from_utf8_lossy(&jail.stderr);
    assert_eq!(jail.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("skyisland: ") && !stderr.contains("whole program"), "{stderr}");
    assert!(stderr.contains("/nonexistent/program") || stderr.contains("root"), "{stderr}");

    let libexec = dir.path().join("libexec/skyisland");
    std::fs::create_dir_all(&libexec).unwrap();
    std::os::unix::fs::symlink(PathBuf::from(env!("CARGO_BIN_EXE_skyisland-full")), libexec.join("skyisland-full"))
        .unwrap();
    let version = run(&["--version"]);
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("skyisland {}", env!("CARGO_PKG_VERSION")));
    // A mistake in a jail command is the whole program's message, exit 2.
    let mistake = run(&["jail", "run", "--memory", "lots", "--", "/bin/true"]);
    let stderr = String::from_utf8_lossy(&mistake.stderr);
    assert_eq!(mistake.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("skyisland: invalid value 'lots' for '--memory"), "{stderr}");
}
