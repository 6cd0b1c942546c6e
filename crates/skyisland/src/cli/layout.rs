//! The data directory's layout version: `<data_dir>/LAYOUT` holds the number of the
//! layout its contents follow. A server migrates an older layout to its own, step by
//! step, before it uses anything in it, and refuses to start on a newer one (made by a
//! newer Sky Island) with a message that says so, touching nothing.
//!
//! Layouts:
//! 1. Everything up to the version that introduced this file (none was written): `base/`,
//!    `build/` (clones, sources, Go caches), `binaries/`, `artifacts/`, `runtimes/`,
//!    `repos/` (state files), `network/ip4-states.json`, `api-keys.json`.
//! 2. The same directories, stamped. From 1: nothing moves; the stamp is written.
//!    Since added within it (new files only, which older servers of layout 2 ignore):
//!    `async.sqlite3` (with its `-wal` and `-shm`): asynchronous invocations, builds and
//!    schedules; `api-keys.lock`, held while `api-keys.json` changes (older versions
//!    change the file without it); `build/dependencies/`, installed dependencies kept for
//!    later commits (older versions ignore it).

use std::path::Path;

use anyhow::{Context, bail};

/// The layout this build writes and reads.
pub const CURRENT: u32 = 2;
const FILE: &str = "LAYOUT";

/// What [`ensure`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already the current layout.
    Current,
    /// An empty data directory, stamped with the current layout.
    New,
    /// Migrated from this layout.
    Migrated(u32),
}

/// Makes `data_dir` follow the current layout (call with the data directory locked).
pub fn ensure(data_dir: &Path) -> anyhow::Result<Outcome> {
    let path = data_dir.join(FILE);
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u32>().ok().filter(|v| *v > 0).with_context(|| {
            format!(
                "{} says {:?}, not a layout number: it is not Sky Island's, or it was damaged",
                path.display(),
                text.trim()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let from = match found {
        Some(v) if v == CURRENT => return Ok(Outcome::Current),
        Some(v) if v > CURRENT => bail!(
            "data_dir {} has layout {v}, written by a newer Sky Island; this one reads layouts up to {CURRENT}. \
             Run the newer version, or give this one another data_dir (nothing was changed)",
            data_dir.display()
        ),
        Some(v) => v,
        // Unstamped: layout 1, unless there is nothing in it yet.
        None if is_empty(data_dir)? => {
            stamp(data_dir)?;
            return Ok(Outcome::New);
        }
        None => 1,
    };
    for step in from..CURRENT {
        migrate(data_dir, step).with_context(|| format!("migrating data_dir from layout {step} to {}", step + 1))?;
    }
    stamp(data_dir)?;
    Ok(Outcome::Migrated(from))
}

/// One step, from layout `from` to `from + 1`.
fn migrate(_data_dir: &Path, from: u32) -> anyhow::Result<()> {
    match from {
        // Layout 2 is layout 1 stamped: nothing moves.
        1 => Ok(()),
        other => bail!("no migration from layout {other}"),
    }
}

/// Nothing but the server's lock file.
fn is_empty(data_dir: &Path) -> anyhow::Result<bool> {
    let entries = std::fs::read_dir(data_dir).with_context(|| format!("cannot read {}", data_dir.display()))?;
    for entry in entries {
        if entry?.file_name() != ".lock" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes the current layout number, whole (a temporary name renamed).
fn stamp(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(FILE);
    let temporary = data_dir.join(format!(".{FILE}.new"));
    std::fs::write(&temporary, format!("{CURRENT}\n"))
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_current_older_newer_and_damaged_layouts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".lock"), "").unwrap();
        assert_eq!(ensure(dir.path()).unwrap(), Outcome::New);
        assert_eq!(ensure(dir.path()).unwrap(), Outcome::Current);
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE)).unwrap(), format!("{CURRENT}\n"));

        // Layout 1: contents without a stamp.
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        std::fs::create_dir(dir.path().join("binaries")).unwrap();
        assert_eq!(ensure(dir.path()).unwrap(), Outcome::Migrated(1));
        assert!(dir.path().join("binaries").is_dir());
        assert_eq!(ensure(dir.path()).unwrap(), Outcome::Current);

        std::fs::write(dir.path().join(FILE), "99\n").unwrap();
        let newer = ensure(dir.path()).unwrap_err().to_string();
        assert!(newer.contains("layout 99, written by a newer Sky Island"), "{newer}");
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE)).unwrap(), "99\n", "nothing was changed");

        std::fs::write(dir.path().join(FILE), "two").unwrap();
        let damaged = format!("{:#}", ensure(dir.path()).unwrap_err());
        assert!(damaged.contains("not a layout number"), "{damaged}");
    }
}
