//! `skyisland jail run`: a host program in a fresh jail, its output and status passed
//! through. The program is executed from a descriptor, so it needs no copy in the jail;
//! a dynamically linked one also gets the host's /usr, read-only, for its libraries.
//! `skyisland jail clean`: the slots `jail run` leaves ready, removed.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use skyisland_config::{Size, Span};
use skyisland_jail::Bind;
use skyisland_runner::{End, Jails, Output, RunError, RunRequest};

use crate::load;

#[derive(Debug, Subcommand)]
pub enum JailCommand {
    /// Copy a host program into a fresh jail and run it; its output and exit status pass
    /// through. A timeout exits 124; a kill by another limit exits 137.
    Run(JailRunArgs),
    /// Remove what `jail run` leaves ready for its next run: the cgroups, scratch
    /// directories and network namespaces of the slots no process holds (after killing
    /// anything left in them).
    Clean,
}

#[derive(Debug, clap::Args)]
pub struct JailRunArgs {
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

/// Runs a `jail` command (both programs come here).
pub fn run_command(config: Option<PathBuf>, command: JailCommand) -> anyhow::Result<ExitCode> {
    match command {
        JailCommand::Run(args) => run(config, args),
        JailCommand::Clean => clean(config),
    }
}

fn run(config: Option<PathBuf>, args: JailRunArgs) -> anyhow::Result<ExitCode> {
    let mut config = load(config)?;
    // The flags are configuration for this one jail, checked like the file's own values.
    let j = &mut config.jails;
    j.memory_limit = args.memory.unwrap_or(j.memory_limit);
    j.disk_limit = args.disk.unwrap_or(j.disk_limit);
    j.exec_timeout = args.timeout.unwrap_or(j.exec_timeout);
    j.pids_limit = args.pids.unwrap_or(j.pids_limit);
    // One jail and done: nothing to warm.
    j.warm_jails = 0;
    config.validate().map_err(|e| e.at("the command line"))?;
    skyisland_runner::machine::require_root("jail run")?;
    if args.net && config.network.ip4.is_none() {
        bail!("--net needs an IPv4 pool: configure [network.ip4]");
    }
    let (program_path, program) = open_program(&args.program[0])?;
    let dynamic = needs_loader(&program_path)?;
    skyisland_runner::machine::init(&config)?;
    // Without a network, this thread clones the jail itself, so no other thread may exist
    // until then: the runtime is a current-thread one, and nothing uses its blocking pool
    // before. Setting up a network needs threads: then a spawner process clones it.
    let jails = if args.net { Jails::open(&config)? } else { Jails::open_one_shot(&config)? };

    let j = &config.jails;
    let memory = j.memory_limit.bytes();
    let timeout = j.exec_timeout.get();
    let mut launch = skyisland_runner::machine::exec_launch(&config, args.program.clone());
    if dynamic {
        launch.binds.push(Bind { source: "/usr".into(), target: "/usr".into(), writable: false });
    }
    let request = RunRequest {
        launch,
        label: args.program.join(" "),
        timeout,
        output_limit: j.output_limit.bytes(),
        output: Output::PassThrough,
        exec: Some(program),
        network: None,
        input: None,
        prestart: None,
        reports_end: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let mut request = request;
        let network = if args.net { skyisland_net::Ip4Network::open(&config).await? } else { None };
        if let Some(network) = &network {
            request.network = Some(network.request("skyisland jail run")?);
        }
        let report = jails.run(request).await;
        jails.shutdown(std::time::Duration::from_secs(5)).await?;
        if let Some(network) = network {
            network.shutdown().await;
        }
        anyhow::Ok(report)
    })?;
    let report = match result {
        Ok(report) => report,
        Err(RunError::Setup(reason)) => bail!("{reason}"),
        Err(e) => return Err(e.into()),
    };
    let code = match report.end {
        End::Exited => report.status.code(),
        End::TimedOut => {
            eprintln!("skyisland: killed: the jail ran longer than its {} timeout", humanize(timeout));
            124
        }
        End::MemoryLimit => {
            eprintln!("skyisland: killed: the jail exceeded its memory limit ({memory} bytes)");
            137
        }
        End::OutputLimit => {
            eprintln!("skyisland: killed: the jail wrote more than its output limit ({})", j.output_limit);
            137
        }
        End::Killed => {
            eprintln!("skyisland: killed by an administrator");
            137
        }
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `skyisland jail clean`: removes the slots `jail run` left ready, and any other slot no
/// process holds (a running server keeps the slots it holds).
fn clean(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    skyisland_runner::machine::require_root("jail clean")?;
    let host = match skyisland_jail::JailHost::open(skyisland_runner::machine::host_config(&config, true)?) {
        Ok(host) => host,
        // No base root filesystem: no jail has run here, so there is no slot to remove.
        Err(skyisland_jail::HostError::NotInitialised) => {
            println!("removed 0 free jail slots");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    let removed = host.remove_free_slots()?;
    println!("removed {removed} free jail slot{}", if removed == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

fn humanize(d: std::time::Duration) -> String {
    Span(d).to_string()
}

/// Finds `name` like a shell would (a path if it has a slash, else on PATH) and opens it.
fn open_program(name: &str) -> anyhow::Result<(PathBuf, OwnedFd)> {
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![PathBuf::from(name)]
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).collect())
            .unwrap_or_default()
    };
    for path in candidates {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o111 == 0 {
                bail!("{} is not executable", path.display());
            }
            let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
            return Ok((path, file.into()));
        }
    }
    bail!("program {name:?} not found")
}

/// Whether an ELF executable names a program interpreter (the dynamic loader).
fn needs_loader(path: &Path) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    let mut data = Vec::new();
    File::open(path)?.take(64 * 1024).read_to_end(&mut data)?;
    let bytes = |at: usize, n: usize| data.get(at..at + n);
    if bytes(0, 4) != Some(b"\x7fELF") {
        // A script: its interpreter lives in /usr.
        return Ok(true);
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        bail!("{} is not a 64-bit little-endian ELF executable", path.display());
    }
    let u16_at = |at| bytes(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |at| bytes(at, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        bail!("{} has a truncated ELF header", path.display());
    };
    Ok((0..phnum).any(|i| {
        bytes(phoff + i * phentsize, 4).is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    }))
}
