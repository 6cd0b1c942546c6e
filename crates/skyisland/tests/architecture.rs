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
