//! Several Go toolchains side by side, and which one builds a module: the oldest whose
//! version satisfies the module's `go` line (and, when one does, its `toolchain` line),
//! as `GOTOOLCHAIN=local` would have it. A module that no configured toolchain satisfies
//! is refused before anything is built.

use std::cmp::Ordering;
use std::fmt;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// A Go version as `go` lines, `toolchain` lines and `go env GOVERSION` write it, ordered
/// as Go orders them: 1.21 < 1.21rc1 < 1.21.0 < 1.21.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    major: u64,
    minor: u64,
    /// 0: a language version ("1.21"); 1, 2, 3: alpha, beta, rc; 4: a release ("1.21.0").
    stage: u8,
    /// The prerelease's or the release's number.
    number: u64,
}

impl GoVersion {
    /// Parses "1.21", "1.21.3", "1.21rc2", "go1.22.1" (with or without "go").
    pub fn parse(text: &str) -> Option<GoVersion> {
        let text = text.strip_prefix("go").unwrap_or(text);
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0')))
                .then(|| s.parse().ok())
                .flatten()
        };
        let mut parts = text.splitn(3, '.');
        let major = number(parts.next()?)?;
        let Some(minor) = parts.next() else {
            return Some(GoVersion { major, minor: 0, stage: 0, number: 0 });
        };
        match parts.next() {
            Some(patch) => Some(GoVersion { major, minor: number(minor)?, stage: 4, number: number(patch)? }),
            None => {
                let digits = minor.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor.len());
                let (minor, pre) = minor.split_at(digits);
                let minor = number(minor)?;
                if pre.is_empty() {
                    return Some(GoVersion { major, minor, stage: 0, number: 0 });
                }
                for (stage, name) in [(1, "alpha"), (2, "beta"), (3, "rc")] {
                    if let Some(n) = pre.strip_prefix(name) {
                        return Some(GoVersion { major, minor, stage, number: number(n)? });
                    }
                }
                None
            }
        }
    }

    /// The language version: "1.21".
    pub fn language(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            0 => write!(f, "{}.{}", self.major, self.minor),
            1 => write!(f, "{}.{}alpha{}", self.major, self.minor, self.number),
            2 => write!(f, "{}.{}beta{}", self.major, self.minor, self.number),
            3 => write!(f, "{}.{}rc{}", self.major, self.minor, self.number),
            _ => write!(f, "{}.{}.{}", self.major, self.minor, self.number),
        }
    }
}

/// One Go toolchain.
#[derive(Clone, Debug)]
pub struct GoToolchain {
    /// Its `go` command on the host.
    pub go: PathBuf,
    pub goroot: PathBuf,
    /// Its `go` command and GOROOT inside the build jail (see [`crate::toolchain`]).
    pub go_inside: PathBuf,
    pub goroot_inside: PathBuf,
    /// As `go env GOVERSION` says: "go1.19.8".
    pub name: String,
    pub version: GoVersion,
}

impl GoToolchain {
    /// The `go` line written into a go.mod for a repository without one.
    pub fn language(&self) -> String {
        self.version.language()
    }
}

/// What a go.mod says about the Go it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoMod {
    /// Where the go.mod is, relative to the repository.
    pub path: String,
    pub go: Option<String>,
    pub toolchain: Option<String>,
}

impl GoMod {
    /// Reads the `go` and `toolchain` lines (the rest is the toolchain's business).
    pub fn parse(path: &str, text: &str) -> GoMod {
        let mut gomod = GoMod { path: path.to_owned(), ..GoMod::default() };
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or_default().trim();
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("go"), Some(version), None) => gomod.go = Some(version.to_owned()),
                (Some("toolchain"), Some(name), None) => gomod.toolchain = Some(name.to_owned()),
                _ => {}
            }
        }
        gomod
    }
}

/// The toolchain for a module: the oldest that satisfies its `go` line and its `toolchain`
/// line; failing the latter, the oldest that satisfies the `go` line (which is what
/// `GOTOOLCHAIN=local` requires). `toolchains` is sorted, oldest first. The error says
/// what the module needs and what there is.
pub fn choose<'a>(toolchains: &'a [GoToolchain], gomod: Option<&GoMod>) -> Result<&'a GoToolchain, String> {
    let Some(gomod) = gomod else {
        return toolchains.first().ok_or_else(|| "no Go toolchain is configured".to_owned());
    };
    let invalid = |what: &str, value: &str| format!("{}: invalid {what} {value:?}", gomod.path);
    let mut need = match &gomod.go {
        Some(go) => Some(GoVersion::parse(go).ok_or_else(|| invalid("go version", go))?),
        None => None,
    };
    let mut prefer = need;
    if let Some(toolchain) = &gomod.toolchain {
        let wanted = match toolchain.strip_prefix("go").and_then(|v| GoVersion::parse(v.split('-').next()?)) {
            Some(version) => version,
            None if toolchain == "default" => GoVersion::parse("1.21").expect("a version"),
            None => return Err(invalid("toolchain", toolchain)),
        };
        // Toolchains before 1.21 cannot read a go.mod with a toolchain line at all.
        let reads_it = GoVersion::parse("1.21").expect("a version");
        need = need.max(Some(reads_it));
        prefer = prefer.max(Some(wanted)).max(need);
    }
    let satisfies = |t: &&GoToolchain, v: Option<GoVersion>| v.is_none_or(|v| t.version >= v);
    if let Some(found) = toolchains.iter().find(|t| satisfies(t, prefer)) {
        return Ok(found);
    }
    if let Some(found) = toolchains.iter().find(|t| satisfies(t, need)) {
        return Ok(found);
    }
    let have: Vec<&str> = toolchains.iter().map(|t| t.name.as_str()).collect();
    let need = need.map_or_else(String::new, |v| v.to_string());
    let why = match (&gomod.go, &gomod.toolchain) {
        (Some(go), Some(toolchain)) => format!("go {go}, toolchain {toolchain}"),
        (Some(go), None) => format!("go {go}"),
        (None, Some(toolchain)) => format!("toolchain {toolchain}"),
        (None, None) => String::new(),
    };
    Err(format!(
        "the module needs Go {need} or later ({}: {why}); this server's toolchains are {} (go.toolchains)",
        gomod.path,
        have.join(", ")
    ))
}

/// The go.mod that governs the package in `subdir` of the sources at `root`: the nearest
/// at or above it. Read without following any symbolic link and without leaving `root`,
/// whatever the repository holds; `None` when there is none.
pub fn read_gomod(root: &Path, subdir: &str) -> std::io::Result<Option<GoMod>> {
    let root_fd: OwnedFd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut dir = PathBuf::from(subdir.trim_matches('/'));
    loop {
        let rel = dir.join("go.mod");
        let opened = rustix::fs::openat2(
            &root_fd,
            &rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        );
        match opened {
            Ok(fd) => {
                let file = std::fs::File::from(fd);
                if !file.metadata()?.is_file() {
                    return Err(std::io::Error::other(format!("{} is not a regular file", rel.display())));
                }
                const MAX: u64 = 1 << 20;
                let mut text = String::new();
                file.take(MAX + 1).read_to_string(&mut text)?;
                if text.len() as u64 > MAX {
                    return Err(std::io::Error::other(format!("{} is larger than 1 MiB", rel.display())));
                }
                return Ok(Some(GoMod::parse(&rel.to_string_lossy(), &text)));
            }
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {}
            Err(e) => return Err(std::io::Error::other(format!("reading {}: {e}", rel.display()))),
        }
        if !dir.pop() {
            return Ok(None);
        }
    }
}

/// Finds the toolchains: `program` (looked up on PATH) and each of `patterns` (a `go`
/// command or a GOROOT; `*` stands for any one directory name, and may match nothing),
/// asking each its version and GOROOT. Sorted oldest first; of two with one version, the
/// first found is kept.
pub fn discover(program: &Path, patterns: &[String]) -> Result<Vec<GoToolchain>, String> {
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(go) = crate::toolchain::which(program) {
        candidates.push((go, true));
    }
    for pattern in patterns {
        for path in expand(pattern) {
            let go = if path.is_dir() { path.join("bin/go") } else { path };
            candidates.push((go, !pattern.contains('*')));
        }
    }
    let mut found: Vec<GoToolchain> = Vec::new();
    for (go, explicit) in candidates {
        let Ok(go) = std::fs::canonicalize(&go) else {
            if explicit {
                return Err(format!("the Go toolchain {} was not found", go.display()));
            }
            continue;
        };
        if found.iter().any(|t| t.go == go) {
            continue;
        }
        let toolchain = probe(&go)?;
        if !found.iter().any(|t| t.version == toolchain.version) {
            found.push(toolchain);
        }
    }
    found.sort_by(|a, b| a.version.cmp(&b.version).then(Ordering::Equal));
    if found.is_empty() {
        return Err(format!(
            "no Go toolchain was found ({} is not on PATH, and go.toolchains matches none): install golang-go or run scripts/setup.sh",
            program.display()
        ));
    }
    Ok(found)
}

/// The paths a pattern with at most one `*` (a whole directory name) matches, sorted.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let Some((before, after)) = pattern.split_once("/*") else {
        return vec![PathBuf::from(pattern)];
    };
    let Ok(entries) = std::fs::read_dir(if before.is_empty() { "/" } else { before }) else {
        return Vec::new();
    };
    let mut matches: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| PathBuf::from(format!("{}{}", e.path().display(), after)))
        .filter(|p| p.exists())
        .collect();
    matches.sort();
    matches
}

/// Asks a `go` command its version and GOROOT.
fn probe(go: &Path) -> Result<GoToolchain, String> {
    let out = std::process::Command::new(go)
        .args(["env", "GOVERSION", "GOROOT"])
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .output()
        .map_err(|e| format!("`{} env` failed: {e}", go.display()))?;
    if !out.status.success() {
        return Err(format!("`{} env` failed: {}", go.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let name = lines.next().unwrap_or_default().trim().to_owned();
    let goroot = PathBuf::from(lines.next().unwrap_or_default().trim());
    // Development builds ("devel go1.23-abc") carry their release after "go".
    let version = name
        .split_whitespace()
        .find_map(|word| GoVersion::parse(word.split('-').next().unwrap_or(word)))
        .ok_or_else(|| format!("{} says its version is {name:?}, which is not a Go version", go.display()))?;
    Ok(GoToolchain {
        go: go.to_owned(),
        go_inside: go.to_owned(),
        goroot_inside: goroot.clone(),
        goroot,
        name,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> GoVersion {
        GoVersion::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn versions_order_as_go_orders_them() {
        let ordered = [
            "1",
            "1.9",
            "1.19",
            "1.19.8",
            "1.21",
            "1.21alpha1",
            "1.21beta2",
            "1.21rc1",
            "1.21rc2",
            "1.21.0",
            "1.21.10",
            "1.27.3",
            "2.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("go1.27.3"), v("1.27.3"));
        assert_eq!(v("1.21rc2").to_string(), "1.21rc2");
        assert_eq!(v("go1.19.8").language(), "1.19");
        for bad in ["", "1.", "1.x", "1.21.x", "01.2", "1.2gamma1", "1.2.3.4", "go", "1.21rc"] {
            assert!(GoVersion::parse(bad).is_none(), "{bad}");
        }
    }

    fn toolchains(names: &[&str]) -> Vec<GoToolchain> {
        names
            .iter()
            .map(|n| GoToolchain {
                go: PathBuf::from(n),
                goroot: PathBuf::new(),
                go_inside: PathBuf::from(n),
                goroot_inside: PathBuf::new(),
                name: format!("go{n}"),
                version: v(n),
            })
            .collect()
    }

    #[test]
    fn the_oldest_toolchain_that_satisfies_the_module_builds_it() {
        let have = toolchains(&["1.19.8", "1.22.5", "1.27.3"]);
        let pick = |text: &str| choose(&have, Some(&GoMod::parse("go.mod", text))).map(|t| t.name.clone());
        assert_eq!(choose(&have, None).unwrap().name, "go1.19.8", "no go.mod: the oldest");
        assert_eq!(pick("module m\n").unwrap(), "go1.19.8");
        assert_eq!(pick("module m\n\ngo 1.18\n").unwrap(), "go1.19.8");
        assert_eq!(pick("module m\ngo 1.21 // comment\n").unwrap(), "go1.22.5");
        assert_eq!(pick("module m\ngo 1.22.5\n").unwrap(), "go1.22.5");
        assert_eq!(pick("module m\ngo 1.22.6\n").unwrap(), "go1.27.3");
        // A toolchain line: preferred when a toolchain satisfies it...
        assert_eq!(pick("module m\ngo 1.21\ntoolchain go1.23.1\n").unwrap(), "go1.27.3");
        // ...and otherwise the go line decides, as GOTOOLCHAIN=local does.
        assert_eq!(pick("module m\ngo 1.21\ntoolchain go1.30.0\n").unwrap(), "go1.22.5");
        // A toolchain line needs a toolchain that can read it.
        assert_eq!(pick("module m\ngo 1.20\ntoolchain go1.20.1\n").unwrap(), "go1.22.5");
        let error = pick("module m\ngo 1.28\n").unwrap_err();
        assert!(error.contains("needs Go 1.28 or later") && error.contains("go1.19.8, go1.22.5, go1.27.3"), "{error}");
        assert!(pick("module m\ngo 1.x\n").unwrap_err().contains("invalid go version \"1.x\""));
        let only_old = toolchains(&["1.19.8"]);
        let gomod = GoMod::parse("sub/go.mod", "module m\ngo 1.21\n");
        let error = choose(&only_old, Some(&gomod)).unwrap_err();
        assert!(error.contains("sub/go.mod: go 1.21") && error.contains("go1.19.8 (go.toolchains)"), "{error}");
    }

    #[test]
    fn go_mod_is_read_from_the_nearest_directory_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("go.mod"), "module r\ngo 1.19\n").unwrap();
        std::fs::write(root.join("a/go.mod"), "module r/a\ngo 1.22\ntoolchain go1.23.0\n").unwrap();
        let found = read_gomod(root, "a/b/c").unwrap().unwrap();
        assert_eq!(
            (found.path.as_str(), found.go.as_deref(), found.toolchain.as_deref()),
            ("a/go.mod", Some("1.22"), Some("go1.23.0"))
        );
        assert_eq!(read_gomod(root, "").unwrap().unwrap().go.as_deref(), Some("1.19"));
        // A link named go.mod, or a directory on the way that is a link, is refused.
        std::fs::create_dir_all(root.join("l")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("l/go.mod")).unwrap();
        assert!(read_gomod(root, "l").is_err());
        std::os::unix::fs::symlink(root.join("a"), root.join("x")).unwrap();
        assert!(read_gomod(root, "x/b").is_err());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(read_gomod(empty.path(), "p").unwrap(), None);
    }
}
