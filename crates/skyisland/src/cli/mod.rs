//! Command-line parsing and the commands. Each command turns its errors into one line on
//! stderr and a non-zero exit status.

mod api_key;
mod call;
mod doctor;
mod layout;
mod serve;
mod work;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use skyisland_cli::jail::{self, JailCommand};
use skyisland_cli::{finish, load};
use skyisland_config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "skyisland",
    version,
    about = "Functions from git repositories, run in fresh copy-on-write jails",
    after_help = "Without a command, serves (or with -i, initialises), as the original's `sky-island -c config.json [-i]` did."
)]
struct Cli {
    /// The configuration file: TOML, or the original Sky Island's JSON. Without one, the
    /// embedded defaults. Accepted before or after the command.
    #[arg(long, short, global = true, env = "SKYISLAND_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Initialise (lay down the base root filesystem) and exit: the original's `-i`.
    #[arg(short = 'i', long = "initialize")]
    initialize: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API server (initialising the base root filesystem if needed).
    Serve,
    /// Lay down the base root filesystem and its snapshot (idempotent).
    Init,
    /// Run programs in jails by hand.
    Jail {
        #[command(subcommand)]
        command: JailCommand,
    },
    /// Call a function through a running server and print what it printed.
    Call(CallArgs),
    /// Look up an asynchronous invocation (`skyisland call --async` prints its id).
    Invocation {
        #[command(subcommand)]
        command: work::InvocationCommand,
    },
    /// Fetch and build a package ahead of calls, through a running server.
    Build(work::BuildArgs),
    /// Calls a running server makes on a schedule (cron or a fixed interval).
    Schedule {
        #[command(subcommand)]
        command: work::ScheduleCommand,
    },
    /// Manage the API keys kept (hashed) in the data directory.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Show or convert configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script: `skyisland completions bash > /etc/bash_completion.d/skyisland`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `skyisland man > skyisland.1`.
    Man,
    /// Check the host: what Sky Island needs, what is there, what to do about the rest.
    /// Exits 1 if something needed is missing (`serve` runs the same checks first).
    Doctor,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the original Sky Island's JSON configuration as the equivalent TOML.
    Convert {
        /// The original's config.json.
        file: PathBuf,
    },
    /// Print the configuration in effect (every key, defaults included) as TOML.
    Show,
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
    /// The package's runtime (go, python, node, lua); without it the server detects it.
    #[arg(long)]
    runtime: Option<String>,
    /// Neither answer from nor store in the request cache.
    #[arg(long)]
    no_cache: bool,
    /// An API key (sent as a bearer token).
    #[arg(long, env = "SKYISLAND_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the whole answer as JSON.
    #[arg(long)]
    json: bool,
    /// Run it in the background: print the invocation's id at once (see `skyisland invocation`).
    #[arg(long = "async")]
    asynchronous: bool,
    /// With --async: where the server POSTs the finished invocation.
    #[arg(long, requires = "asynchronous")]
    callback_url: Option<String>,
    /// With --async: the same key names the same invocation.
    #[arg(long, requires = "asynchronous")]
    idempotency_key: Option<String>,
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
    List {
        /// One JSON object per key, for scripts (times as Unix seconds).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke { id: String },
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
    let config = cli.config;
    let result = match (cli.command, cli.initialize) {
        (Some(_), true) => Err(anyhow::anyhow!("-i initialises and exits: give it without a command")),
        (None, true) | (Some(Command::Init), false) => init(config),
        (None, false) | (Some(Command::Serve), false) => serve::run(config),
        (Some(Command::Jail { command }), false) => jail::run_command(config, command),
        (Some(Command::ApiKey { command }), false) => api_key::run(config, command),
        (Some(Command::Call(args)), false) => call::run(args),
        (Some(Command::Invocation { command }), false) => work::invocation(command),
        (Some(Command::Build(args)), false) => work::build(args),
        (Some(Command::Schedule { command }), false) => work::schedule(command),
        (Some(Command::Config { command }), false) => config_command(config, command),
        (Some(Command::Completions { shell }), false) => {
            // Into memory first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "skyisland", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from)
        }
        (Some(Command::Doctor), false) => load(config).map(|config| doctor::run(&config)),
        (Some(Command::Man), false) => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
    };
    finish(result)
}

fn config_command(path: Option<PathBuf>, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Convert { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if !text.trim_start().starts_with('{') {
                anyhow::bail!("{} is not JSON (the original's format); TOML needs no converting", file.display());
            }
            print!("{}", Config::convert_json(&text, &file)?);
        }
        ConfigCommand::Show => {
            let config = load(path)?;
            print!("{}", toml::to_string(&config).context("printing the configuration")?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs what [`layout::ensure`] did, when it did something.
fn report_layout(data_dir: &std::path::Path, outcome: &layout::Outcome) {
    if let layout::Outcome::Migrated(from) = outcome {
        let to = layout::CURRENT;
        tracing::info!(data_dir = %data_dir.display(), from, to, "migrated the data directory's layout");
    }
}

fn init(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    skyisland_runner::machine::require_root("init")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    if let layout::Outcome::Migrated(from) = layout::ensure(&config.data_dir)? {
        println!("migrated {} from layout {from} to {}", config.data_dir.display(), layout::CURRENT);
    }
    let created = skyisland_runner::machine::init(&config)?;
    println!(
        "{} base root filesystem ({} backend)",
        if created { "laid down the" } else { "already have the" },
        match config.storage.backend {
            skyisland_config::Backend::Overlay => "overlay",
            skyisland_config::Backend::Btrfs => "btrfs",
        }
    );
    // Each interpreted runtime's jail type: its layer of the host's /usr.
    for (runtime, found) in skyisland_functions::runtimes::layer::Interpreters::prepare(&config).status() {
        match found {
            Ok(version) => println!("{runtime} {version}: its jails' layer is ready"),
            Err(why) => println!("{runtime}: {why}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
