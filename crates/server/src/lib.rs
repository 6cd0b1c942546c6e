//! The Sky Island server: an [`App`] (the core services) behind the HTTP [`api`].
//!
//! [`serve`] is a function of a bound listener and a shutdown future, so tests run the
//! real server on 127.0.0.1:0.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use skyisland_config::Config;
use skyisland_functions::Functions;
use skyisland_net::Ip4Network;
use skyisland_runner::Jails;
use tokio::net::TcpListener;

/// The commit this server was built from.
pub const GIT_SHA: &str = env!("SKYISLAND_GIT_SHA");

/// What the handlers share.
pub struct App {
    pub config: Arc<Config>,
    pub jails: Jails,
    pub functions: Functions,
    /// The jails' IPv4 network, when configured.
    pub network: Option<Arc<Ip4Network>>,
    pub stats: stats::Stats,
    pub admin_token: String,
    /// API keys, rate limits and the cap on requests in flight.
    pub guard: Arc<api::Guard>,
    /// Renders `/metrics`; `None` when no recorder was installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("jails", &self.jails).finish_non_exhaustive()
    }
}

impl App {
    /// `admin_token` is the configured one, or one made up for this run. Must be called
    /// within a Tokio runtime. Fails when the API keys file cannot be read.
    pub fn new(
        config: Arc<Config>,
        jails: Jails,
        functions: Functions,
        network: Option<Arc<Ip4Network>>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> std::io::Result<App> {
        let admin_token = config.admin.token.clone().unwrap_or_else(|| {
            let token = format!("{:032x}", rand::random::<u128>());
            tracing::warn!(%token, "admin.token is not configured; made one up for this run");
            token
        });
        let guard = api::Guard::new(Arc::clone(&config))?;
        Ok(App { config, jails, functions, network, stats: stats::Stats::default(), admin_token, guard, metrics })
    }
}

/// How long running requests get to finish after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets
/// running requests finish (up to [`DRAIN`]), and kills and cleans up the jails left.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = api::router(Arc::clone(&app));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    let mut stopping = stop_rx.clone();
    let drained = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        result = server => result?,
        () = drained => tracing::warn!("requests still running after the drain period; killing their jails"),
    }
    if let Err(e) = app.jails.shutdown(Duration::from_secs(10)).await {
        tracing::error!(error = %e, "cleaning up the jails at shutdown");
    }
    if let Some(network) = &app.network {
        network.shutdown().await;
    }
    Ok(())
}
