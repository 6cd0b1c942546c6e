//! The Sky Island server: an [`App`] (the core services) behind the HTTP [`api`].
//!
//! [`serve`] is a function of a bound listener and a shutdown future, so tests run the
//! real server on 127.0.0.1:0.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod history;
mod linger;
pub mod metrics;
pub mod stats;
pub mod work;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use skyisland_config::Config;
use skyisland_functions::Functions;
use skyisland_net::Ip4Network;
use skyisland_runner::Jails;
use tokio::net::TcpListener;
use tower::ServiceExt;

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
    /// Asynchronous invocations, builds and schedules.
    pub work: work::Work,
    /// The last 15 minutes, for the console.
    pub history: history::History,
    /// The functions called since start-up, for the console.
    pub catalog: catalog::Catalog,
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
        let work = work::Work::open(&config).map_err(std::io::Error::other)?;
        Ok(App {
            config,
            jails,
            functions,
            network,
            stats: stats::Stats::default(),
            admin_token,
            guard,
            metrics,
            work,
            history: history::History::default(),
            catalog: catalog::Catalog::default(),
        })
    }
}

/// After the drain period, how long killed requests get to be answered.
const ANSWER_KILLED: Duration = Duration::from_secs(5);

/// Serves the API on `listener` until `shutdown` completes, then stops accepting (new
/// connections are refused), lets running requests finish (up to `limits.drain`), kills
/// the jails left (their requests are answered 503), and cleans up.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = api::router(Arc::clone(&app));
    let mut background = work::start(Arc::clone(&app)).await;
    background.push(tokio::spawn(history::sample(Arc::clone(&app))));
    background.push(tokio::spawn(catalog::share(Arc::clone(&app))));
    // A client gets `client_timeout` to send a request's headers (slow clients hold no
    // connection for longer; this also bounds idle keep-alive connections), and as long
    // again for its body (the router's body timeout).
    let client_timeout = app.config.limits.client_timeout.get();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(client_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(client_timeout);
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the rate limits.
        let service = router.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(linger::Lingering::new(stream)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = app.config.limits.drain.get();
    tracing::info!(
        connections = connections.count(),
        ?drain,
        "not accepting any more; letting running requests finish"
    );
    // Idle connections close now, busy ones after their answer.
    let finished = connections.shutdown();
    tokio::pin!(finished);
    let cleaned = tokio::select! {
        () = &mut finished => app.jails.shutdown(Duration::from_secs(10)).await,
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, "requests still running after the drain period; killing their jails");
            // Connections are served meanwhile, so that the killed jails' requests are answered.
            let (cleaned, answered) = tokio::join!(
                app.jails.shutdown(Duration::from_secs(10)),
                tokio::time::timeout(ANSWER_KILLED, &mut finished)
            );
            if answered.is_err() {
                tracing::warn!("connections still open after the jails were killed; closing them");
            }
            cleaned
        }
    };
    if let Err(e) = cleaned {
        tracing::error!(error = %e, "cleaning up the jails at shutdown");
    }
    // An async attempt cut short here is counted and run again at the next start.
    for task in background {
        task.abort();
    }
    catalog::withdraw(&app).await;
    if let Some(network) = &app.network {
        network.shutdown().await;
    }
    Ok(())
}

/// Errors of `accept` that are about one connection are ignored; others (such as running
/// out of file descriptors) are logged and waited out, so the server keeps accepting.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted) {
        return;
    }
    ::metrics::counter!("skyisland_accept_errors_total").increment(1);
    tracing::error!(error = %e, "accepting a connection failed; retrying in 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
