//! A runtime's *layer*: the `/usr` its execution jails see. It holds the interpreter, the
//! shared libraries it and its standard library's extension modules load (found with
//! `ldd`) and those binary packages may assume a system has (`BINARY_PACKAGE_LIBS`), its
//! standard library (Python's, without `site-packages`/`dist-packages`: no
//! package the host installed is visible), the time zones, and our runner; nothing else
//! of the host. Laid down once per (runtime, version, runner) under
//! `<data_dir>/runtimes/`, with hard links where the filesystem allows (copies elsewhere),
//! under a temporary name renamed into place when complete.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use skyisland_config::Config;

use super::Runtime;

/// Bumped when what a layer holds changes: a new layer is laid down.
const LAYER_VERSION: &str = "layer 3";

/// The system libraries binary packages may load without shipping them, where the host
/// has them: the manylinux policy's (PEP 600: C and C++ runtimes, libm, libdl, libpthread,
/// librt, libutil, libnsl, libresolv, libcrypt), plus zlib and expat, which Debian's
/// interpreters load anyway. Wheels such as numpy's or pydantic-core's, and prebuilt npm
/// addons, need libstdc++ or libgcc_s, which neither interpreter itself loads.
const BINARY_PACKAGE_LIBS: [&str; 13] = [
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libnsl.so.1",
    "libresolv.so.2",
    "libcrypt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
    "libexpat.so.1",
];

/// Python's standard library directories left out: third-party packages, tests, GUIs.
const PYTHON_SKIP: [&str; 7] =
    ["site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip"];

/// The runners, embedded.
pub const RUN_PY: &str = include_str!("../../runners/run.py");
pub const RUN_JS: &str = include_str!("../../runners/run.js");
pub const RUN_LUA: &str = include_str!("../../runners/run.lua");

/// An interpreter ready for execution jails.
#[derive(Debug)]
pub struct Interpreter {
    pub runtime: Runtime,
    /// `3.11.2`, `20.20.2`, `5.4.4`.
    pub version: String,
    /// The host directory whose `usr` is the jails' `/usr`.
    pub layer: PathBuf,
    /// The interpreter inside the jail (`argv[0]`).
    pub program_inside: PathBuf,
    /// The runner inside the jail.
    pub runner_inside: PathBuf,
    /// The interpreter's file in the layer, which jails execute (`execveat`).
    program: OwnedFd,
}

impl Interpreter {
    /// `python-3.11.2`: part of every key of what it runs.
    pub fn id(&self) -> String {
        format!("{}-{}", self.runtime, self.version)
    }

    /// A descriptor of the interpreter for one jail.
    pub fn program(&self) -> std::io::Result<OwnedFd> {
        self.program.try_clone()
    }
}

/// The interpreted runtimes this server has, or why it has not each one.
#[derive(Debug, Default)]
pub struct Interpreters {
    found: Vec<(Runtime, Result<Arc<Interpreter>, String>)>,
}

impl Interpreters {
    /// Finds the configured interpreters and lays down their layers (blocking: file work).
    pub fn prepare(config: &Config) -> Interpreters {
        let dir = config.data_dir.join("runtimes");
        let found = [
            (Runtime::Python, &config.python.program),
            (Runtime::Node, &config.node.program),
            (Runtime::Lua, &config.lua.program),
        ]
        .into_iter()
        .map(|(runtime, program)| {
            let prepared = prepare(runtime, program, &dir).map(Arc::new);
            if let Err(e) = &prepared {
                tracing::warn!(%runtime, "{e}");
            }
            (runtime, prepared)
        })
        .collect();
        Interpreters { found }
    }

    pub fn get(&self, runtime: Runtime) -> Result<&Arc<Interpreter>, String> {
        match self.found.iter().find(|(r, _)| *r == runtime) {
            Some((_, Ok(found))) => Ok(found),
            Some((_, Err(e))) => Err(e.clone()),
            None => Err(format!("this server has no {runtime} runtime")),
        }
    }

    /// Each runtime's version, or why it is missing.
    pub fn status(&self) -> Vec<(Runtime, Result<String, String>)> {
        self.found
            .iter()
            .map(|(r, found)| (*r, found.as_ref().map(|i| i.version.clone()).map_err(Clone::clone)))
            .collect()
    }
}

fn runner(runtime: Runtime) -> (&'static str, &'static str) {
    match runtime {
        Runtime::Python => ("run.py", RUN_PY),
        Runtime::Node => ("run.js", RUN_JS),
        Runtime::Lua | Runtime::Go => ("run.lua", RUN_LUA),
    }
}

fn prepare(runtime: Runtime, program: &Path, dir: &Path) -> Result<Interpreter, String> {
    let real = std::fs::canonicalize(program)
        .map_err(|e| format!("{runtime} functions are unavailable: {}: {e}", program.display()))?;
    if !real.starts_with("/usr/") {
        return Err(format!(
            "{runtime} functions are unavailable: {} is not under /usr (its layer mirrors /usr)",
            real.display()
        ));
    }
    let version = version(runtime, &real)?;
    let (runner_name, runner_text) = runner(runtime);
    let hash = crate::binaries::key(&[LAYER_VERSION, &real.to_string_lossy(), &version, runner_text]);
    let layer = dir.join(format!("{runtime}-{version}-{}", &hash[..12]));
    let runner_source = PathBuf::from("/usr/lib/skyisland").join(runner_name);
    if !layer.join(".complete").is_file() {
        lay_down(runtime, &real, &version, &layer, &runner_source, runner_text)
            .map_err(|e| format!("preparing the {runtime} jail's layer failed: {e}"))?;
    }
    // Python runs its runner compiled: a script given by name is compiled at every start.
    let runner_inside = match runtime {
        Runtime::Python => runner_source.with_extension("pyc"),
        _ => runner_source,
    };
    let file = std::fs::File::open(layer.join(real.strip_prefix("/").expect("absolute")))
        .map_err(|e| format!("opening the {runtime} interpreter in its layer: {e}"))?;
    Ok(Interpreter { runtime, version, layer, program_inside: real, runner_inside, program: file.into() })
}

/// The interpreter's version, from itself.
fn version(runtime: Runtime, program: &Path) -> Result<String, String> {
    let args: &[&str] = match runtime {
        Runtime::Python => &["-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        Runtime::Node => &["--version"],
        Runtime::Lua | Runtime::Go => &["-v"],
    };
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .map_err(|e| format!("{runtime} functions are unavailable: running {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = match runtime {
        Runtime::Node => text.trim().trim_start_matches('v').to_owned(),
        Runtime::Lua => text.split_whitespace().nth(1).unwrap_or_default().to_owned(),
        _ => text.trim().to_owned(),
    };
    let plausible = !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !out.status.success() || !plausible {
        return Err(format!("{runtime} functions are unavailable: {} says {:?}", program.display(), text.trim()));
    }
    if runtime == Runtime::Lua && !version.starts_with("5.4") {
        return Err(format!("Lua functions need Lua 5.4; {} is {version}", program.display()));
    }
    Ok(version)
}

fn lay_down(
    runtime: Runtime,
    program: &Path,
    version: &str,
    layer: &Path,
    runner_inside: &Path,
    runner_text: &str,
) -> std::io::Result<()> {
    let parent = layer.parent().expect("in the runtimes directory");
    std::fs::create_dir_all(parent)?;
    let temp = parent.join(format!(".tmp-{:x}", rand::random::<u64>()));
    let result = (|| {
        let mut elves = vec![program.to_owned()];
        if runtime == Runtime::Python {
            let minor: Vec<&str> = version.split('.').take(2).collect();
            let stdlib = PathBuf::from(format!("/usr/lib/python{}", minor.join(".")));
            copy_tree(&stdlib, &temp, &mut elves)?;
        }
        let zoneinfo = Path::new("/usr/share/zoneinfo");
        if zoneinfo.is_dir() {
            copy_tree(zoneinfo, &temp, &mut Vec::new())?;
        }
        let mut libraries = BTreeSet::new();
        for elf in &elves {
            libraries.extend(needed(elf)?);
        }
        if matches!(runtime, Runtime::Python | Runtime::Node) {
            // Beside the C library the interpreter loads (`/usr/lib/<arch>` inside).
            let libc = libraries.iter().find(|(inside, _)| inside.file_name().is_some_and(|n| n == "libc.so.6"));
            if let Some(dir) = libc.and_then(|(inside, _)| inside.parent()).map(Path::to_path_buf) {
                for name in BINARY_PACKAGE_LIBS {
                    let inside = dir.join(name);
                    // Where it is on a host without merged /usr.
                    let host = Path::new("/").join(inside.strip_prefix("/usr").unwrap_or(&inside));
                    let Some(real) = [inside.clone(), host].into_iter().find_map(|p| std::fs::canonicalize(p).ok())
                    else {
                        continue;
                    };
                    libraries.extend(needed(&real)?);
                    libraries.insert((inside, real));
                }
            }
        }
        place(program, program, &temp)?;
        for (inside, real) in &libraries {
            place(real, inside, &temp)?;
        }
        let runner = temp.join(runner_inside.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(runner.parent().expect("has a parent"))?;
        std::fs::write(&runner, runner_text)?;
        if runtime == Runtime::Python {
            compile_python(program, &runner)?;
        }
        std::fs::write(temp.join(".complete"), LAYER_VERSION)?;
        match std::fs::rename(&temp, layer) {
            // Another server laid it down meanwhile.
            Err(_) if layer.join(".complete").is_file() => {
                let _ = std::fs::remove_dir_all(&temp);
                Ok(())
            }
            other => other,
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    tracing::info!(%runtime, layer = %layer.display(), "laid down the runtime's layer");
    result
}

/// Compiles the Python runner `source` into `<source stem>.pyc` beside it, with the
/// interpreter that will run it (checked by hash, never by the file's time).
fn compile_python(program: &Path, source: &Path) -> std::io::Result<()> {
    let script = "import sys, py_compile; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True, \
                  invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)";
    let out = Command::new(program)
        .args(["-I", "-S", "-c", script])
        .arg(source)
        .arg(source.with_extension("pyc"))
        .env_clear()
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "compiling the runner failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The shared libraries `elf` loads, per `ldd`: (the path the loader looks for, moved
/// under /usr as merged-/usr Debian has it; the file).
fn needed(elf: &Path) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let out = Command::new("ldd").arg(elf).env_clear().output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if !path.starts_with('/') {
            continue;
        }
        let inside = if path.starts_with("/usr/") { PathBuf::from(path) } else { Path::new("/usr").join(&path[1..]) };
        found.push((inside, std::fs::canonicalize(path)?));
    }
    Ok(found)
}

/// Puts the host file `real` at `inside` (an absolute path) below `root`: a hard link,
/// or a copy across filesystems.
fn place(real: &Path, inside: &Path, root: &Path) -> std::io::Result<()> {
    let target = root.join(inside.strip_prefix("/").expect("absolute"));
    if target.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(target.parent().expect("has a parent"))?;
    if std::fs::hard_link(real, &target).is_err() {
        std::fs::copy(real, &target)?;
    }
    Ok(())
}

/// Mirrors the host directory `from` below `root` (links as links), collecting the shared
/// objects in it into `elves`.
fn copy_tree(from: &Path, root: &Path, elves: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let target = root.join(from.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(&target)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if PYTHON_SKIP.iter().any(|skip| name == *skip) {
                continue;
            }
            copy_tree(&path, root, elves)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&path)?, target.join(&name))?;
        } else if kind.is_file() {
            if name.to_string_lossy().ends_with(".so") {
                elves.push(path.clone());
            }
            place(&path, &path, root)?;
        }
    }
    Ok(())
}
