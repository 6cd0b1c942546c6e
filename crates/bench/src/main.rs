//! `skyisland-bench`: benchmarks that print figures and ratios. Run as root, from a
//! release build, on a quiet machine:
//!
//! ```sh
//! cargo build --release -p skyisland -p skyisland-bench
//! target/release/skyisland-bench jail
//! target/release/skyisland-bench functions
//! target/release/skyisland-bench cache
//! target/release/skyisland-bench async
//! ```

mod asynchronous;
mod functions;
mod jail;
mod runtimes;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Sky Island benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Jails against fork+exec, bubblewrap and crun.
    Jail {
        #[arg(long, default_value_t = 500)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-jail")]
        dir: PathBuf,
    },
    /// Function calls: first call, cached calls, new arguments, throughput.
    Functions {
        #[arg(long, default_value_t = 300)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-functions")]
        dir: PathBuf,
    },
    /// Request-cache hits against fresh-jail calls of the same function (wrk).
    Cache {
        #[arg(long, default_value_t = 300)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-cache")]
        dir: PathBuf,
    },
    /// A cached call with and without a network of its own (ip4).
    Net {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-net")]
        dir: PathBuf,
    },
    /// Python, JavaScript and Lua calls against their interpreters by fork+exec and
    /// bubblewrap; installs against pip and npm by hand.
    Runtimes {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-runtimes")]
        dir: PathBuf,
    },
    /// This build's server against another skyisland binary, called alternately.
    Compare {
        /// The other `skyisland` binary.
        other: PathBuf,
        #[arg(long, default_value_t = 300)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-compare")]
        dir: PathBuf,
    },
    /// Async calls: accepted per second (SQLite, and two servers on Redis), 202 to
    /// succeeded, synchronous latency with async work in the background.
    Async {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value = "/tmp/skyisland-bench-async")]
        dir: PathBuf,
    },
    /// The jail benchmark's helper (in a private mount namespace).
    #[command(hide = true)]
    External { dir: PathBuf, config: PathBuf, runs: usize, programs: Vec<PathBuf> },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Bench::Jail { runs, dir } => jail::run(jail::Args { runs, dir }),
        Bench::Functions { runs, dir } => functions::run(functions::Args { runs, dir }),
        Bench::Cache { runs, dir } => functions::run_cache(functions::Args { runs, dir }),
        Bench::Net { runs, dir } => functions::run_network(functions::Args { runs, dir }),
        Bench::Runtimes { runs, dir } => runtimes::run(functions::Args { runs, dir }),
        Bench::Compare { other, runs, dir } => functions::run_compare(functions::Args { runs, dir }, &other),
        Bench::Async { runs, dir } => asynchronous::run(functions::Args { runs, dir }),
        Bench::External { dir, config, runs, programs } => jail::external(&dir, &config, runs, &programs),
    }
}
