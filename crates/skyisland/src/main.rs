//! `skyisland`: runs `jail run` and `jail clean` itself and hands every other command
//! line to the whole program, `skyisland-full`, by exec (same process, same arguments).
//! A command line this program cannot parse — help, a mistake, the original's flags —
//! goes there too, so the whole program's messages stay the only ones. Why two programs:
//! the crate's documentation (src/lib.rs).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skyisland_cli::jail::JailCommand;

/// The part of `skyisland-full`'s command line this program runs itself.
#[derive(Debug, Parser)]
#[command(name = "skyisland")]
struct Cli {
    #[arg(long, short, global = true, env = "SKYISLAND_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Jail {
        #[command(subcommand)]
        command: JailCommand,
    },
}

/// The whole program's name, beside this one (a build tree, a tarball) or in
/// `../libexec/skyisland/` from it (the Debian package).
const FULL: &str = "skyisland-full";

fn main() -> ExitCode {
    // A server's spawner helper (skyisland_jail::spawner): before anything else, while
    // this process has one thread.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|arg| arg == skyisland_jail::spawner::SPAWNER_ARG) {
        return ExitCode::from(u8::try_from(skyisland_jail::spawner::run_as_program(args)).unwrap_or(1));
    }
    match Cli::try_parse() {
        Ok(Cli { config, command: Command::Jail { command } }) => {
            skyisland_cli::finish(skyisland_cli::jail::run_command(config, command))
        }
        Err(_) => {
            let error = match full_program() {
                Ok(path) => {
                    let mut args = std::env::args_os();
                    let name = args.next().unwrap_or_else(|| "skyisland".into());
                    let error = std::process::Command::new(&path).arg0(name).args(args).exec();
                    format!("cannot run {}: {error}", path.display())
                }
                Err(error) => error,
            };
            eprintln!("skyisland: {error}");
            ExitCode::FAILURE
        }
    }
}

fn full_program() -> Result<PathBuf, String> {
    let this = std::env::current_exe().map_err(|e| format!("cannot find this program's own path: {e}"))?;
    let dir = this.parent().ok_or_else(|| format!("{} has no directory", this.display()))?;
    let candidates = [dir.join(FULL), dir.join("../libexec/skyisland").join(FULL)];
    candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
        format!("the whole program is missing: neither {} nor {}", candidates[0].display(), candidates[1].display())
    })
}
