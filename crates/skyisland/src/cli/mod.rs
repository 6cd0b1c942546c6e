//! Command-line parsing and the commands. Each command turns its errors into one line on
//! stderr and a non-zero exit status.

mod api_key;
mod call;
mod jail_run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use skyisland_config::{Config, Size, Span};

#[derive(Debug, Parser)]
#[command(name = "skyisland", version, about = "Functions from git repositories, run in fresh copy-on-write jails")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API server (initialising the base root filesystem if needed).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Lay down the base root filesystem and its snapshot (idempotent).
    Init {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run programs in jails by hand.
    Jail {
        #[command(subcommand)]
        command: JailCommand,
    },
    /// Call a function through a running server and print what it printed.
    Call(CallArgs),
    /// Manage the API keys kept (hashed) in the data directory.
    ApiKey {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, clap::Args)]
struct CallArgs {
    /// The package's import path, e.g. github.com/mmcloughlin/geohash.
    url: String,
    /// The call, e.g. 'Encode(57.64911, 10.40744)'.
    call: String,
    /// The server's base URL.
    #[arg(long, env = "SKYISLAND_SERVER", default_value = "http://127.0.0.1:3280")]
    server: String,
    /// A commit, tag or branch.
    #[arg(long)]
    version: Option<String>,
    /// Fetch the repository again and drop its cached binaries and results.
    #[arg(long)]
    cache_bust: bool,
    /// Give the jail an address from the server's IPv4 pool.
    #[arg(long)]
    ip4: bool,
    /// Neither answer from nor store in the request cache.
    #[arg(long)]
    no_cache: bool,
    /// An API key (sent as a bearer token).
    #[arg(long, env = "SKYISLAND_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the whole answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Make a key and print it (once); only its hash is kept.
    New {
        /// What the key is for.
        #[arg(long, default_value = "")]
        name: String,
        /// This key's own rate limit (requests per second), instead of [rate_limit].
        #[arg(long)]
        per_second: Option<f64>,
        /// This key's burst (default: its rate rounded up).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// List the keys: id, creation time, name, rate.
    List,
    /// Revoke a key by its id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum JailCommand {
    /// Copy a host program into a fresh jail and run it; its output and exit status pass
    /// through. A timeout exits 124; a kill by another limit exits 137.
    Run(JailRunArgs),
}

#[derive(Debug, clap::Args)]
struct JailRunArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Memory limit, e.g. "256MiB" (default: jails.memory_limit).
    #[arg(long)]
    memory: Option<Size>,
    /// Maximum number of processes and threads (default: jails.pids_limit).
    #[arg(long)]
    pids: Option<u32>,
    /// Wall-clock limit, e.g. "5s" (default: jails.exec_timeout).
    #[arg(long)]
    timeout: Option<Span>,
    /// Writable space, e.g. "64MiB" (default: jails.disk_limit).
    #[arg(long)]
    disk: Option<Size>,
    /// Give the jail a network of its own.
    #[arg(long)]
    net: bool,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "PROGRAM [ARGS]...")]
    program: Vec<String>,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's first line names the problem; the rest is a pointer to --help.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!("skyisland: {} (see --help)", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve { config } => serve::run(config),
        Command::Init { config } => init(config),
        Command::Jail { command: JailCommand::Run(args) } => jail_run::run(args),
        Command::ApiKey { config, command } => api_key::run(config, command),
        Command::Call(args) => call::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skyisland: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(Config::load(path.as_deref())?)
}

fn init(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    skyisland_runner::machine::require_root("init")?;
    let created = skyisland_runner::machine::init(&config)?;
    println!(
        "{} base root filesystem ({} backend)",
        if created { "laid down the" } else { "already have the" },
        match config.storage.backend {
            skyisland_config::Backend::Overlay => "overlay",
            skyisland_config::Backend::Btrfs => "btrfs",
        }
    );
    Ok(ExitCode::SUCCESS)
}
