//! What the two programs of the `skyisland` command share: `jail run` and `jail clean`, the
//! configuration's loading, and how a command's error is printed.
//!
//! `skyisland` (src/main.rs) is a small program that runs `jail run` and `jail clean`
//! itself and hands every other command line to `skyisland-full` (src/full.rs), the whole
//! program, which also runs these two. Why two: a jail started by hand is started as
//! often as the program in it, and the whole program's own start is most of a run's cost
//! beyond bubblewrap's — the dynamic loader relocating its 15 MB of code (~60,000
//! pointers, most of 1.5 MB of relocated read-only data written, page by page); the small
//! program has a sixth of them (BENCHMARKS.md, "jail run").

pub mod jail;

use std::path::PathBuf;
use std::process::ExitCode;

use skyisland_config::Config;

/// The configuration, its warnings (keys of the original's that mean nothing here) on
/// stderr.
pub fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let (config, warnings) = Config::load(path.as_deref())?;
    for warning in warnings {
        eprintln!("skyisland: warning: {warning}");
    }
    Ok(config)
}

/// A command's exit status: its own, or after its error, on one line on stderr, failure.
pub fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skyisland: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line (a cause that its error's text already ends with
/// is not repeated).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if line.ends_with(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}
