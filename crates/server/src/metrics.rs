//! Metrics: every crate records through the `metrics` facade; the server installs one
//! process-wide recorder that feeds Prometheus (`GET /metrics`) and, when `statsd_addr`
//! is set, StatsD over UDP as the original did.
//!
//! The names, for the code map: `skyisland_http_requests_total{route,status}`,
//! `skyisland_http_request_duration_seconds{route}`, `skyisland_function_duration_seconds`,
//! `skyisland_builds_total{result}`, `skyisland_build_duration_seconds`,
//! `skyisland_clones_total{result}`, `skyisland_clone_duration_seconds`,
//! `skyisland_jails_created_total{kind}`, `skyisland_jails_removed_total{kind}`,
//! `skyisland_jails_running{kind}`, `skyisland_cache_hits_total{tier}`,
//! `skyisland_cache_misses_total{tier}`, `skyisland_ip4_addresses_in_use`,
//! `skyisland_ip4_pool_exhausted_total`, `skyisland_rate_limited_total{by}`,
//! `skyisland_auth_rejected_total{reason}`, `skyisland_overloaded_total`,
//! `skyisland_circuit_opened_total`, `skyisland_circuit_rejected_total`,
//! `skyisland_redis_up`, `skyisland_accept_errors_total`; pre-started jails:
//! `skyisland_prestarted_jails{state}`, `skyisland_prestart_calls_total{outcome}`,
//! `skyisland_prestart_evictions_total{reason}`, `skyisland_prestart_failures_total`; set at
//! each scrape: `skyisland_queued{what}`, `skyisland_jail_capacity{kind}`,
//! `skyisland_warm_jails`, `skyisland_data_dir_free_bytes`, `skyisland_data_dir_size_bytes`.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use cadence::{BufferedUdpMetricSink, MetricSink, QueuingMetricSink, SinkStats};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_exporter_statsd::StatsdBuilder;
use metrics_util::layers::FanoutBuilder;
use skyisland_config::Config;

/// Latency buckets (seconds) of every histogram.
const BUCKETS: [f64; 16] =
    [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0];

/// StatsD datagrams carry up to this many bytes of metrics (well under any MTU).
const STATSD_DATAGRAM: usize = 1432;
/// Metrics waiting for the sending thread; beyond this, new ones are dropped.
const STATSD_QUEUE: usize = 8192;
/// How long a metric may wait in a datagram that is not full yet.
const STATSD_FLUSH: Duration = Duration::from_secs(1);

/// cadence's buffered UDP sink, shared so that a timer can flush it: by itself it sends
/// only when a datagram is full, which on a quiet server may be never.
#[derive(Clone)]
struct FlushedSink(Arc<BufferedUdpMetricSink>);

impl MetricSink for FlushedSink {
    fn emit(&self, metric: &str) -> io::Result<usize> {
        self.0.emit(metric)
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    fn stats(&self) -> SinkStats {
        self.0.stats()
    }
}

/// Installs the process's recorder; returns the handle `/metrics` renders. Call once.
pub fn install(config: &Config) -> anyhow::Result<PrometheusHandle> {
    let prometheus = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?;
    let prometheus = prometheus.build_recorder();
    let handle = prometheus.handle();
    let mut fanout = FanoutBuilder::default().add_recorder(prometheus);
    if let Some(addr) = config.statsd_addr {
        let socket = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        socket.set_nonblocking(true)?;
        let sink = FlushedSink(Arc::new(BufferedUdpMetricSink::with_capacity(addr, socket, STATSD_DATAGRAM)?));
        // Sending happens on the queue's own thread, never on a request's.
        let queued = QueuingMetricSink::with_capacity(sink.clone(), STATSD_QUEUE);
        let statsd =
            StatsdBuilder::from("", 0).with_sink(queued).histogram_is_timer().build(Some(&config.statsd_prefix))?;
        fanout = fanout.add_recorder(statsd);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STATSD_FLUSH).await;
                // A full buffer was sent already; this sends what a quiet second left.
                if let Err(err) = sink.flush() {
                    tracing::debug!(%err, "StatsD flush failed");
                }
            }
        });
        tracing::info!(%addr, "sending metrics to StatsD");
    }
    metrics::set_global_recorder(fanout.build())
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    // Histograms are kept as raw samples between renders; upkeep folds them in.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
