//! The runtimes: Go (built by the generator, see the crate root) and the interpreted
//! ones — Python, JavaScript (Node.js) and Lua — which share one pipeline: the call is
//! parsed into literal values ([`literal`]), the package's tree and its dependencies are
//! installed once per commit in a build jail ([`install`]), and each call runs a fixed
//! runner program of ours (`runners/`) in a fresh execution jail of the runtime's type:
//! its `/usr` is the runtime's *layer* ([`layer`]) — the interpreter, its standard library
//! and the shared libraries they load, nothing else of the host — and `/fn` the installed
//! package, both read-only.

pub mod install;
pub mod layer;
pub mod literal;
pub mod reuse;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use literal::{Dialect, ScriptCall, Value};

/// A function's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Go,
    Python,
    Node,
    Lua,
}

impl Runtime {
    pub const ALL: [Runtime; 4] = [Runtime::Go, Runtime::Python, Runtime::Node, Runtime::Lua];

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Go => "go",
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Lua => "lua",
        }
    }

    /// The request's `runtime` field; also accepts the languages' names.
    pub fn parse(text: &str) -> Option<Runtime> {
        match text.to_ascii_lowercase().as_str() {
            "go" | "golang" => Some(Runtime::Go),
            "python" | "python3" | "py" => Some(Runtime::Python),
            "node" | "nodejs" | "javascript" | "js" => Some(Runtime::Node),
            "lua" => Some(Runtime::Lua),
            _ => None,
        }
    }

    /// How its calls are spelled (Go's have a parser of their own).
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            Runtime::Go => None,
            Runtime::Python => Some(Dialect::Python),
            Runtime::Node => Some(Dialect::JavaScript),
            Runtime::Lua => Some(Dialect::Lua),
        }
    }

    /// What marks a package directory as this runtime's.
    fn marks(self, name: &str) -> bool {
        match self {
            Runtime::Go => name == "go.mod" || name.ends_with(".go"),
            Runtime::Python => {
                matches!(name, "pyproject.toml" | "setup.py" | "requirements.txt") || name.ends_with(".py")
            }
            Runtime::Node => name == "package.json" || name.ends_with(".js") || name.ends_with(".mjs"),
            Runtime::Lua => name.ends_with(".lua") || name.ends_with(".rockspec"),
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a package's runtime cannot be detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undetected {
    /// No directory, or nothing any runtime runs: the package is the problem.
    #[error("{0}")]
    Nothing(String),
    /// Files of several runtimes: the request must say which.
    #[error("{0}")]
    Several(String),
}

/// The runtime of the package directory `dir` (checked-out sources: no symbolic links),
/// from the files it holds.
pub fn detect(dir: &Path) -> Result<Runtime, Undetected> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Undetected::Nothing("the package directory does not exist in the repository".into()));
        }
        Err(e) => return Err(Undetected::Nothing(format!("cannot list the package directory: {e}"))),
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        for runtime in Runtime::ALL {
            if runtime.marks(&name) && !found.contains(&runtime) {
                found.push(runtime);
            }
        }
    }
    found.sort();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Undetected::Nothing("the package directory holds no Go, Python, JavaScript or Lua files".into())),
        several => Err(Undetected::Several(format!(
            "the package directory holds files of several runtimes ({}): say which with \"runtime\"",
            several.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The runner's exit status for "no such module or function" (with a `skyisland-runner:`
/// line on stderr).
pub const RUNNER_NOT_FOUND: i32 = 87;
/// The runner's exit status for "the package does not load" (a syntax error).
pub const RUNNER_LOAD_FAILED: i32 = 88;
/// How a runner's own messages start.
pub const RUNNER_PREFIX: &str = "skyisland-runner: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), "").unwrap();
        assert!(matches!(detect(dir.path()), Err(Undetected::Nothing(m)) if m.contains("no Go")));
        touch("main.py");
        touch("requirements.txt");
        assert_eq!(detect(dir.path()), Ok(Runtime::Python));
        touch("index.js");
        assert!(matches!(detect(dir.path()), Err(Undetected::Several(m)) if m.contains("python, node")));
        assert!(detect(&dir.path().join("nope")).unwrap_err().to_string().contains("does not exist"));
        for name in ["go", "golang", "python", "node", "JavaScript", "lua"] {
            assert!(Runtime::parse(name).is_some(), "{name}");
        }
        assert_eq!(Runtime::parse("ruby"), None);
    }
}
