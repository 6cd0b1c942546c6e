//! `skyisland serve`: the HTTP API until SIGTERM or SIGINT.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use skyisland_config::LogFormat;
use skyisland_functions::Functions;
use skyisland_runner::Jails;
use skyisland_server::App;
use tokio::signal::unix::{SignalKind, signal};

use super::load;

pub fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = Arc::new(load(config)?);
    skyisland_runner::machine::require_root("serve")?;
    if let Some(missing) = super::doctor::missing(&config) {
        anyhow::bail!("this host lacks what Sky Island needs (see `skyisland doctor`): {missing}");
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().init(),
    }
    let _data_dir = lock_data_dir(&config.data_dir)?;
    super::report_layout(&config.data_dir, &super::layout::ensure(&config.data_dir)?);
    raise_open_files_limit();
    if skyisland_runner::machine::init(&config)? {
        tracing::info!("laid down the base root filesystem");
    }
    // Before the runtime's threads exist: the spawner is forked from this thread.
    let jails = Jails::open(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let metrics = skyisland_server::metrics::install(&config)?;
        // Everything is ready before the address is announced.
        let network = skyisland_net::Ip4Network::open(&config).await?;
        let functions = Functions::new(Arc::clone(&config), jails.clone(), network.clone())?;
        tokio::spawn(jails.clone().share_slots());
        let warm = functions.clone();
        tokio::spawn(async move {
            if let Err(e) = warm.warm_up().await {
                tracing::error!(error = %e, "preparing the Go generator failed; function calls will retry");
            }
        });
        let app = Arc::new(
            App::new(Arc::clone(&config), jails, functions, network, Some(metrics)).context("reading the API keys")?,
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, git_sha = skyisland_server::GIT_SHA, "listening");
        // Tests and scripts read the address from this line.
        let mut stdout = std::io::stdout();
        writeln!(stdout, "skyisland listening on http://{addr}")?;
        stdout.flush()?;
        // Under systemd (Type=notify): ready now. Elsewhere NOTIFY_SOCKET is unset and
        // this does nothing.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "telling the service manager that the server is ready failed");
        }
        skyisland_server::serve(listener, app, async {
            shutdown_signal().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        })
        .await?;
        tracing::info!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Completes at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Raises the soft limit on open descriptors to the hard one: every connection, jail pipe,
/// slot and binary held in memory is one. The health check shows the limit.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
        }
    }
}

/// Takes the data directory for this server's life: two servers sharing one would evict
/// each other's sources and binaries. (Several servers on a host share the jail slots
/// through `run_dir`, and results and binaries through Redis.)
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        anyhow::bail!(
            "data_dir {} is in use by another running server: give each server on a host its own data_dir",
            dir.display()
        );
    }
    Ok(file)
}
