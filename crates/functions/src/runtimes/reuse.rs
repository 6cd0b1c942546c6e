//! Dependencies installed for one commit, reused by the next commit of the same repository
//! (same package directory, interpreter and install options) when what decides them has
//! not changed: a commit that changes a function's code but not its dependencies is
//! installed by copying the earlier install's dependencies instead of running pip or npm.
//!
//! Reuse is offered only where the repository's declared dependencies are all that decides
//! the install — so the earlier install could not have taken anything else of the
//! repository (of an earlier commit) into what it left:
//! - Python: a `requirements.txt` whose lines name index packages only (`name[extras]`,
//!   version specifiers, environment markers; no paths, URLs, options or includes);
//!   `pyproject.toml`-only packages are installed every time.
//! - Node: install scripts off; no `.npmrc` and no committed `node_modules`; no
//!   `workspaces` or bundled dependencies; every dependency a registry version range, or a
//!   `file:` tarball inside the package directory (its bytes are part of the fingerprint);
//!   a lock file, if any, without `file:`, `link:` or git sources.
//!
//! The fingerprint covers what of those files decides the install (the requirements
//! without comments; package.json without its version, description and other fields npm
//! installs nothing by; the lock without the package's own version) and the tarballs'
//! bytes; the cache entry's name adds the repository,
//! the package directory, the interpreter and the install options (`deps_key`), so one
//! repository's install is never offered to another. Anything unexpected (a symlink, a
//! file too large, an unreadable one) means: install as usual.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::Runtime;

/// How many reusable installs are kept (the least recently used go first).
pub const KEEP: usize = 64;
const MANIFEST_LIMIT: u64 = 1 << 20;
const LOCK_LIMIT: u64 = 32 << 20;
const TARBALL_LIMIT: u64 = 64 << 20;

/// What a file of the package directory is, read without following links.
enum Found {
    Absent,
    Bytes(Vec<u8>),
}

/// The package directory `subdir` of the checked-out `tree`, if it is inside the tree
/// (no link leads out of it).
fn package_dir(tree: &Path, subdir: &str) -> Option<PathBuf> {
    let dir = tree.join(subdir);
    let (tree, dir) = (tree.canonicalize().ok()?, dir.canonicalize().ok()?);
    dir.starts_with(&tree).then_some(dir)
}

/// `name` below `dir` (a canonical path): absent, or its bytes if it is a regular file of
/// at most `limit` bytes reached through no link; `None` for anything else (a link, a
/// directory, too large, unreadable, outside `dir`).
fn read(dir: &Path, name: &str, limit: u64) -> Option<Found> {
    let path = dir.join(name);
    match path.parent().map(Path::canonicalize) {
        Some(Ok(parent)) if parent == path.parent()? && parent.starts_with(dir) => {}
        Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Some(Found::Absent),
        _ => return None,
    }
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Found::Absent),
        Err(_) => None,
        Ok(meta) if !meta.is_file() || meta.len() > limit => None,
        Ok(_) => std::fs::read(&path).ok().map(Found::Bytes),
    }
}

fn exists(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name)).is_ok()
}

/// The fingerprint of what decides the install of `runtime`'s dependencies in `subdir` of
/// `tree`, when only the declared dependencies do; `None` when the install must run.
pub fn fingerprint(tree: &Path, subdir: &str, runtime: Runtime, node_scripts: bool) -> Option<String> {
    let dir = package_dir(tree, subdir)?;
    let mut hash = Sha256::new();
    hash.update(runtime.name().as_bytes());
    match runtime {
        Runtime::Python => {
            let Found::Bytes(requirements) = read(&dir, "requirements.txt", MANIFEST_LIMIT)? else { return None };
            let text = std::str::from_utf8(&requirements).ok()?;
            if !text.lines().all(index_requirement) {
                return None;
            }
            // What pip reads: the requirements without comments and blank lines.
            for line in text.lines().map(requirement).filter(|line| !line.is_empty()) {
                hash.update(line.as_bytes());
                hash.update(b"\n");
            }
        }
        Runtime::Node => {
            if node_scripts || exists(&dir, ".npmrc") || exists(&dir, "node_modules") {
                return None;
            }
            let Found::Bytes(manifest) = read(&dir, "package.json", MANIFEST_LIMIT)? else { return None };
            let package: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
            let package = package.as_object()?;
            if ["workspaces", "bundleDependencies", "bundledDependencies"].iter().any(|k| package.contains_key(*k)) {
                return None;
            }
            hash.update(install_fields(package).to_string().as_bytes());
            for field in ["dependencies", "optionalDependencies", "peerDependencies", "overrides"] {
                let Some(specs) = package.get(field) else { continue };
                for spec in strings(specs)? {
                    match spec.strip_prefix("file:") {
                        Some(file) => {
                            let Found::Bytes(tarball) = read(&dir, tarball_path(file)?, TARBALL_LIMIT)? else {
                                return None;
                            };
                            hash.update(b"\0file\0");
                            hash.update(file.as_bytes());
                            hash.update(&tarball);
                        }
                        None if registry_range(spec) => {}
                        None => return None,
                    }
                }
            }
            for lock in ["package-lock.json", "npm-shrinkwrap.json"] {
                if let Found::Bytes(bytes) = read(&dir, lock, LOCK_LIMIT)? {
                    let text = std::str::from_utf8(&bytes).ok()?;
                    if ["\"file:", "\"link:", "git+", "git:", "github:"].iter().any(|s| text.contains(s)) {
                        return None;
                    }
                    let mut lock: serde_json::Value = serde_json::from_str(text).ok()?;
                    // The package's own version is written twice in a lock; npm installs
                    // nothing by it.
                    if let Some(lock) = lock.as_object_mut() {
                        lock.remove("version");
                    }
                    if let Some(root) = lock.pointer_mut("/packages/").and_then(serde_json::Value::as_object_mut) {
                        root.remove("version");
                    }
                    hash.update(b"\0lock\0");
                    hash.update(lock.to_string().as_bytes());
                }
            }
        }
        Runtime::Go | Runtime::Lua => return None,
    }
    Some(hex::encode(hash.finalize()))
}

/// Fields of a package.json that npm installs nothing by (with install scripts off, as
/// reuse requires): a release's version bump or a new description reuses the install.
/// Every other field, known or not, is part of the fingerprint.
const NOT_FOR_INSTALL: [&str; 24] = [
    "version",
    "description",
    "keywords",
    "author",
    "contributors",
    "maintainers",
    "license",
    "homepage",
    "repository",
    "bugs",
    "funding",
    "scripts",
    "main",
    "module",
    "browser",
    "exports",
    "imports",
    "type",
    "types",
    "typings",
    "files",
    "directories",
    "sideEffects",
    "publishConfig",
];

/// The fields of a package.json that can change what npm installs.
fn install_fields(package: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let kept = package.iter().filter(|(name, _)| !NOT_FOR_INSTALL.contains(&name.as_str()));
    serde_json::Value::Object(kept.map(|(name, value)| (name.clone(), value.clone())).collect())
}

/// Whether the package directory `subdir` of `tree` declares npm dependencies to install
/// (`dependencies` not empty); `None` when that cannot be read safely here (a link, a
/// malformed file): the install script then asks node.
pub fn node_dependencies(tree: &Path, subdir: &str) -> Option<bool> {
    let dir = package_dir(tree, subdir)?;
    match read(&dir, "package.json", MANIFEST_LIMIT)? {
        Found::Absent => Some(false),
        Found::Bytes(bytes) => {
            let package: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            match package.as_object()?.get("dependencies") {
                None | Some(serde_json::Value::Null) => Some(false),
                Some(serde_json::Value::Object(map)) => Some(!map.is_empty()),
                Some(_) => None,
            }
        }
    }
}

/// A requirements line as pip reads it: without its comment, trimmed.
fn requirement(line: &str) -> &str {
    let line = match line.find('#') {
        // pip drops a comment at the start or after whitespace.
        Some(0) => "",
        Some(at) if line[..at].ends_with(char::is_whitespace) => &line[..at],
        _ => line,
    };
    line.trim()
}

/// Whether a requirements line is blank, a comment, or one index package with version
/// specifiers and markers: nothing pip would read as a path, URL, option or include.
fn index_requirement(line: &str) -> bool {
    let line = requirement(line);
    if line.is_empty() {
        return true;
    }
    let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))).unwrap_or(line.len());
    let (name, rest) = line.split_at(name_end);
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || " \t[],<>=!~.*;\"'()_-".contains(c))
}

/// Whether a package.json version spec is a registry version range (`^1.2.3`, `~1`,
/// `>=1 <2 || 3.x`, `*`, `latest`): no protocol, path or URL.
fn registry_range(spec: &str) -> bool {
    !spec.is_empty() && spec.chars().all(|c| c.is_ascii_alphanumeric() || " .^~<>=|*+-".contains(c))
}

/// A `file:` dependency's path when it is a tarball inside the package directory.
fn tarball_path(file: &str) -> Option<&str> {
    let relative = Path::new(file);
    let inside = relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    (inside && (file.ends_with(".tgz") || file.ends_with(".tar.gz"))).then_some(file)
}

/// Every string in a JSON value (a dependency map, or nested `overrides`); `None` if a
/// value is neither a string nor a map.
fn strings(value: &serde_json::Value) -> Option<Vec<&str>> {
    match value {
        serde_json::Value::String(s) => Some(vec![s]),
        serde_json::Value::Object(map) => {
            let mut all = Vec::new();
            for value in map.values() {
                all.extend(strings(value)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// Keeps a copy of an install's dependencies `from` as `cache/name` (hard links: no bytes
/// copied; the install's files are never written again), then drops the least recently
/// used entries beyond [`KEEP`].
pub fn keep(from: &Path, cache: &Path, name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(cache)?;
    let staging = cache.join(format!(".{name}-{:08x}", rand::random::<u32>()));
    let made = link_tree(from, &staging).and_then(|()| std::fs::rename(&staging, cache.join(name)));
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    made?;
    prune(cache);
    Ok(())
}

/// Marks an entry as just used (for [`prune`]).
pub fn touch(entry: &Path) {
    if let Ok(dir) = std::fs::File::open(entry) {
        let _ = dir.set_modified(SystemTime::now());
    }
}

fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&source, &target)?;
        } else if kind.is_file() {
            std::fs::hard_link(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            return Err(std::io::Error::other(format!("{} is not a file, directory or link", source.display())));
        }
    }
    Ok(())
}

fn prune(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let mut kept: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if kept.len() <= KEEP {
        return;
    }
    kept.sort();
    for (_, path) in &kept[..kept.len() - KEEP] {
        let _ = std::fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_index_packages_are_reusable_requirements() {
        for line in ["", "# c", "skyfoo==1.0", "requests[socks] >=2, <3 ; python_version >= '3.8'", "a.b-c_d~=1.2 # x"]
        {
            assert!(index_requirement(line), "{line:?}");
        }
        for line in [
            "./local",
            "-e .",
            "-r other.txt",
            "--index-url http://x",
            "foo @ https://x/foo.whl",
            "file:///etc",
            "../up",
            "foo==${VERSION}",
            "git+https://x/y",
            "foo#egg=bar",
        ] {
            assert!(!index_requirement(line), "{line:?}");
        }
        for spec in ["^1.2.3", "~1", ">=1 <2 || 3.x", "*", "latest", "1.0.0-beta.1"] {
            assert!(registry_range(spec), "{spec:?}");
        }
        for spec in ["file:../x", "git+https://x", "npm:foo@1", "http://x/y.tgz", "github:a/b", "link:x", ""] {
            assert!(!registry_range(spec), "{spec:?}");
        }
        assert_eq!(tarball_path("leftpad-1.0.0.tgz"), Some("leftpad-1.0.0.tgz"));
        assert_eq!(tarball_path("./vendor/a.tar.gz"), Some("./vendor/a.tar.gz"));
        for file in ["../a.tgz", "/etc/a.tgz", "vendor/../../a.tgz", "dir", "a.zip"] {
            assert_eq!(tarball_path(file), None, "{file:?}");
        }
    }

    #[test]
    fn fingerprints_follow_the_declared_dependencies_only() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("pkg");
        std::fs::create_dir(&dir).unwrap();
        let print = |runtime| fingerprint(tree.path(), "pkg", runtime, false);
        assert_eq!(print(Runtime::Python), None, "no requirements.txt");
        std::fs::write(dir.join("requirements.txt"), "skyfoo==1.0\n").unwrap();
        let first = print(Runtime::Python).unwrap();
        std::fs::write(dir.join("main.py"), "x = 1\n").unwrap();
        assert_eq!(print(Runtime::Python).unwrap(), first, "code is not a dependency");
        std::fs::write(dir.join("requirements.txt"), "# pinned\n\nskyfoo==1.0   # why\n").unwrap();
        assert_eq!(print(Runtime::Python).unwrap(), first, "comments and blank lines install nothing");
        std::fs::write(dir.join("requirements.txt"), "skyfoo==1.1\n").unwrap();
        assert_ne!(print(Runtime::Python).unwrap(), first);
        std::fs::write(dir.join("requirements.txt"), "./skyfoo\n").unwrap();
        assert_eq!(print(Runtime::Python), None);
        std::fs::remove_file(dir.join("requirements.txt")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("requirements.txt")).unwrap();
        assert_eq!(print(Runtime::Python), None, "a link is not read");
        assert_eq!(fingerprint(tree.path(), "../..", Runtime::Python, false), None, "outside the tree");
        std::os::unix::fs::symlink("/usr/share", dir.join("vendor")).unwrap();
        std::fs::write(dir.join("package.json"), r#"{"dependencies": {"x": "file:vendor/x.tgz"}}"#).unwrap();
        assert_eq!(print(Runtime::Node), None, "no link is followed to a tarball");
        std::fs::remove_file(dir.join("vendor")).unwrap();

        std::fs::write(dir.join("package.json"), r#"{"dependencies": {"leftpad": "file:l.tgz"}}"#).unwrap();
        assert_eq!(print(Runtime::Node), None, "the tarball is missing");
        std::fs::write(dir.join("l.tgz"), "one").unwrap();
        let first = print(Runtime::Node).unwrap();
        std::fs::write(dir.join("l.tgz"), "two").unwrap();
        assert_ne!(print(Runtime::Node).unwrap(), first, "the tarball's bytes count");
        assert_eq!(fingerprint(tree.path(), "pkg", Runtime::Node, true), None, "install scripts run repository code");
        std::fs::write(dir.join(".npmrc"), "registry=http://x\n").unwrap();
        assert_eq!(print(Runtime::Node), None);
        std::fs::remove_file(dir.join(".npmrc")).unwrap();
        std::fs::write(dir.join("package.json"), r#"{"dependencies": {"a": "^1"}, "workspaces": ["x"]}"#).unwrap();
        assert_eq!(print(Runtime::Node), None);
        std::fs::write(dir.join("package.json"), r#"{"dependencies": {"a": "^1"}}"#).unwrap();
        let first = print(Runtime::Node).unwrap();
        std::fs::write(dir.join("package.json"), r#"{"version": "2.0.0", "dependencies": {"a": "^1"}}"#).unwrap();
        assert_eq!(print(Runtime::Node).unwrap(), first, "a release's version bump installs the same");
        for changed in [r#"{"dependencies": {"a": "^2"}}"#, r#"{"dependencies": {"a": "^1"}, "overrides": {"b": "1"}}"#]
        {
            std::fs::write(dir.join("package.json"), changed).unwrap();
            assert_ne!(print(Runtime::Node).unwrap(), first, "{changed}");
        }
        std::fs::write(dir.join("package.json"), r#"{"dependencies": {"a": "^1"}}"#).unwrap();
        let lock = |version: &str, a: &str| {
            format!(
                r#"{{"version": "{version}", "packages": {{"": {{"version": "{version}"}}, "node_modules/a": {{"version": "{a}"}}}}}}"#
            )
        };
        std::fs::write(dir.join("package-lock.json"), lock("1.0.0", "1.0.0")).unwrap();
        let locked = print(Runtime::Node).unwrap();
        std::fs::write(dir.join("package-lock.json"), lock("1.0.1", "1.0.0")).unwrap();
        assert_eq!(print(Runtime::Node).unwrap(), locked, "the package's own version in the lock");
        std::fs::write(dir.join("package-lock.json"), lock("1.0.1", "1.0.2")).unwrap();
        assert_ne!(print(Runtime::Node).unwrap(), locked, "a locked dependency's version");
        std::fs::write(dir.join("package-lock.json"), r#"{"packages": {"a": {"resolved": "file:../x"}}}"#).unwrap();
        assert_eq!(print(Runtime::Node), None);
    }

    #[test]
    fn kept_installs_are_linked_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("deps");
        std::fs::create_dir_all(from.join("pkg/sub")).unwrap();
        std::fs::write(from.join("pkg/sub/a.py"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a.py", from.join("pkg/link")).unwrap();
        let cache = dir.path().join("cache");
        keep(&from, &cache, "one").unwrap();
        assert_eq!(std::fs::read_to_string(cache.join("one/pkg/sub/a.py")).unwrap(), "a");
        assert_eq!(std::fs::read_link(cache.join("one/pkg/link")).unwrap(), Path::new("sub/a.py"));
        for i in 0..KEEP + 2 {
            keep(&from, &cache, &format!("n{i}")).unwrap();
        }
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), KEEP);
    }
}
