//! Installing an interpreted function's package: once per (repository, commit, package
//! directory, runtime version, dependency sources), in a build jail, its checked-out
//! tree is copied and its dependencies installed — Python's with pip (`requirements.txt`,
//! or `pyproject.toml`'s `[project] dependencies`) into `deps/`, JavaScript's with npm
//! (`npm ci` with a lock file, `npm install` without) into the tree's `node_modules`, Lua
//! needs none. What an install runs (a `setup.py`, an install script once the operator
//! allows them) is the repository's code: the jail sees, writable, only this install's
//! own output directory; read-only, the sources of this commit and the host's /usr;
//! nothing of Go's caches, other repositories or other installs. The result goes to the
//! artifact cache (the binary cache's machinery, keyed the same way) and execution jails
//! see it read-only at `/fn`.

use std::path::{Path, PathBuf};

use skyisland_config::Config;

use super::Runtime;

/// What an installed package holds, inside the execution jail.
pub const FN_MOUNT: &str = "/fn";

/// The install script: `$1` the package directory, `$2` the runtime, `$3` for node
/// whether package.json declares dependencies (`yes`, `no`, or `ask` when the server could
/// not read it safely: node then reads it, in the jail). pip and npm options
/// come in `$PIP_OPTIONS` and `$NPM_OPTIONS` (the operator's, never the repository's).
/// `/build/deps-cache`, when mounted, holds an earlier commit's dependencies to copy
/// instead of installing them (`runtimes::reuse`); if the copy fails, they are installed.
pub const INSTALL: &str = r#"set -eu
umask 022
mkdir /build/out/tree
cp -R /build/src/. /build/out/tree/
cd "/build/out/tree/$1"
case "$2" in
python)
    reqs=
    if [ -f requirements.txt ]; then
        reqs=requirements.txt
    elif [ -f pyproject.toml ]; then
        python3 -I -S -c 'import sys, tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f).get("project", {}).get("dependencies", [])))' > /tmp/requirements.txt
        reqs=/tmp/requirements.txt
    fi
    if [ -n "$reqs" ] && grep -q '^[[:space:]]*[^#[:space:]]' "$reqs"; then
        # An earlier commit's install of the same requirements (runtimes::reuse), else pip.
        if ! { [ -d /build/deps-cache ] && mkdir /build/out/deps && cp -R /build/deps-cache/. /build/out/deps/; }; then
            rm -rf /build/out/deps
            # shellcheck disable=SC2086
            python3 -I -m pip install --no-cache-dir --disable-pip-version-check --no-input \
                --no-warn-script-location --progress-bar off --target /build/out/deps $PIP_OPTIONS -r "$reqs"
        fi
    fi
    ;;
node)
    deps="$3"
    if [ "$deps" = ask ]; then
        deps=no
        if [ -f package.json ] && [ "$(node -e 'const p = require("./package.json"); process.stdout.write(String(Object.keys(p.dependencies || {}).length))')" != 0 ]; then
            deps=yes
        fi
    fi
    if [ "$deps" = yes ]; then
        # An earlier commit's install of the same dependencies (runtimes::reuse), else npm.
        reused=
        if [ -d /build/deps-cache ] && [ ! -e node_modules ]; then
            if mkdir node_modules && cp -R /build/deps-cache/. node_modules/; then
                reused=1
            else
                rm -rf node_modules
            fi
        fi
        if [ -n "$reused" ]; then
            :
        elif [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
            # shellcheck disable=SC2086
            npm ci --omit=dev --no-audit --no-fund --no-update-notifier $NPM_OPTIONS
        else
            # shellcheck disable=SC2086
            npm install --omit=dev --no-audit --no-fund --no-update-notifier --no-package-lock $NPM_OPTIONS
        fi
    fi
    ;;
esac
"#;

/// How this server installs dependencies: options, read-only binds of local indexes, and
/// whether installs need the egress proxy. Part of every artifact's key.
#[derive(Debug, Clone, Default)]
pub struct InstallPolicy {
    pub pip_options: String,
    pub npm_options: String,
    /// Host directories (local indexes, find-links) and where installs see them.
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub python_network: bool,
    pub node_network: bool,
    /// Whether npm runs packages' install scripts (`[node] install_scripts`).
    pub node_scripts: bool,
    /// No index, find-links or registry is configured, nor downloads allowed: installs
    /// run offline and find nothing to install.
    pub python_offline: bool,
    pub node_offline: bool,
}

impl InstallPolicy {
    pub fn new(config: &Config) -> InstallPolicy {
        let mut policy = InstallPolicy::default();
        let downloads = config.allow_downloads();
        let local = |url: &str, name: &str, binds: &mut Vec<(PathBuf, PathBuf)>| -> Option<String> {
            let path = url.strip_prefix("file://").or_else(|| url.starts_with('/').then_some(url))?;
            let inside = PathBuf::from(format!("/build/{name}/{}", binds.len()));
            binds.push((PathBuf::from(path.trim_end_matches('/')), inside.clone()));
            Some(inside.display().to_string())
        };
        let is_remote = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        let py = &config.python;
        let mut pip = Vec::new();
        // Without any index, building an sdist uses the host's setuptools rather than
        // fetching one.
        if !downloads && py.index_url.is_none() {
            pip.push("--no-build-isolation".to_owned());
        }
        match &py.index_url {
            Some(url) => {
                let url = match local(url, "pyindex", &mut policy.binds) {
                    Some(inside) => format!("file://{inside}"),
                    None => url.clone(),
                };
                pip.push(format!("--index-url {url}"));
            }
            None if !downloads => pip.push("--no-index".to_owned()),
            None => {}
        }
        for link in &py.find_links {
            let link = local(link, "pylinks", &mut policy.binds).unwrap_or_else(|| link.clone());
            pip.push(format!("--find-links {link}"));
        }
        policy.python_network =
            downloads || py.index_url.as_deref().is_some_and(is_remote) || py.find_links.iter().any(|l| is_remote(l));
        policy.pip_options = pip.join(" ");
        let node = &config.node;
        let mut npm = vec!["--cache /tmp/npm-cache".to_owned()];
        if !node.install_scripts {
            npm.push("--ignore-scripts".to_owned());
        }
        match &node.registry {
            Some(registry) => npm.push(format!("--registry {registry}")),
            None if !downloads => npm.push("--offline".to_owned()),
            None => {}
        }
        policy.node_network = downloads || node.registry.as_deref().is_some_and(is_remote);
        policy.python_offline = !downloads && py.index_url.is_none() && py.find_links.is_empty();
        policy.node_offline = !downloads && node.registry.is_none();
        policy.node_scripts = node.install_scripts;
        policy.npm_options = npm.join(" ");
        policy
    }

    /// What decides an install besides the package: part of the artifact's key.
    pub fn fingerprint(&self, runtime: Runtime) -> String {
        match runtime {
            Runtime::Python => format!("pip {}", self.pip_options),
            Runtime::Node => format!("npm {}", self.npm_options),
            _ => String::new(),
        }
    }

    /// What a failed install's output ends with when it could only have run offline: the
    /// settings that give it somewhere to install from.
    pub fn offline_hint(&self, runtime: Runtime) -> Option<&'static str> {
        match runtime {
            Runtime::Python if self.python_offline => Some(
                "skyisland: no package index is configured, so pip ran offline: the operator can set \
                 [build] allow_downloads = true (PyPI) or [python] index_url / find_links",
            ),
            Runtime::Node if self.node_offline => Some(
                "skyisland: no registry is configured, so npm ran offline: the operator can set \
                 [build] allow_downloads = true (registry.npmjs.org) or [node] registry",
            ),
            _ => None,
        }
    }

    pub fn network(&self, runtime: Runtime) -> bool {
        match runtime {
            Runtime::Python => self.python_network,
            Runtime::Node => self.node_network,
            _ => false,
        }
    }

    pub fn env(&self) -> Vec<String> {
        vec![
            format!("PIP_OPTIONS={}", self.pip_options),
            format!("NPM_OPTIONS={}", self.npm_options),
            // No pip configuration file of anyone's.
            "PIP_CONFIG_FILE=/dev/null".to_owned(),
            "PIP_ROOT_USER_ACTION=ignore".to_owned(),
            "NO_UPDATE_NOTIFIER=1".to_owned(),
            "npm_config_update_notifier=false".to_owned(),
        ]
    }
}

/// Gives every file of an installed package to root, so that no jail's uid owns any of it.
pub fn seal(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    rustix::fs::chownat(
        rustix::fs::CWD,
        dir,
        Some(rustix::fs::Uid::ROOT),
        Some(rustix::fs::Gid::ROOT),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            seal(&entry?.path())?;
        }
    }
    Ok(())
}

/// Moves an installed package `out` into a new directory `package`, below a name of its
/// own (a *generation*), and returns `package`. Execution jails bind the generation: a
/// warm jail set up with an older install of the same key (one a `cache_bust` removed)
/// has another bind source, so it is never handed a call of the new one.
pub fn generation(out: &Path, package: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir(package)?;
    std::fs::rename(out, package.join(format!("{:016x}", rand::random::<u64>())))?;
    Ok(package.to_owned())
}

/// The generation directory of an installed package in the artifact cache.
pub fn generation_of(package: &Path) -> std::io::Result<PathBuf> {
    let mut found =
        std::fs::read_dir(package)?.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one.path()),
        _ => Err(std::io::Error::other(format!("{} does not hold one installed package", package.display()))),
    }
}
