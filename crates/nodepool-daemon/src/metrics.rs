//! Prometheus metrics. Executors record launch and build durations as they finish; the loop
//! sets the gauges (nodes, images, requests) from each round's snapshot and copies each
//! provider's call counters from its rate limiter. `docs/metrics.md` lists every metric and
//! the 2014 statsd name it replaces.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nodepool_config::Config;
use nodepool_executor::clouds::Clouds;
use nodepool_model::Snapshot;

/// Histogram buckets for every `*_seconds` metric: from an API answer (milliseconds) to an
/// image build (hours).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 7200.0,
];

/// The process's recorder, installed on first use. When an embedder has installed another
/// recorder first, ours still renders (empty); theirs gets the values.
pub(crate) fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Gauge series set in the last round, so that a series whose count fell to nothing is set
/// to 0 rather than left at its last value.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    nodes: BTreeSet<(String, String, &'static str)>,
    images: BTreeSet<(String, String, &'static str)>,
}

impl Gauges {
    /// Sets the gauges from one round's snapshot and the clouds' call counters.
    pub(crate) fn update(&mut self, snapshot: &Snapshot, clouds: &Clouds, config: &Config) {
        for provider in &config.providers {
            metrics::gauge!("nodepool_provider_max_servers", "provider" => provider.name.to_string())
                .set(f64::from(provider.max_servers));
        }
        let mut nodes: BTreeMap<(String, String, &'static str), usize> = BTreeMap::new();
        for node in &snapshot.nodes {
            *nodes
                .entry((
                    node.provider.to_string(),
                    node.label.to_string(),
                    node.state.as_str(),
                ))
                .or_default() += 1;
        }
        for key in self.nodes.difference(&nodes.keys().cloned().collect()) {
            let (provider, label, state) = key.clone();
            metrics::gauge!("nodepool_nodes", "provider" => provider, "label" => label, "state" => state).set(0.0);
        }
        for ((provider, label, state), count) in &nodes {
            metrics::gauge!("nodepool_nodes", "provider" => provider.clone(), "label" => label.clone(), "state" => *state)
                .set(*count as f64);
        }
        self.nodes = nodes.into_keys().collect();

        let mut images: BTreeMap<(String, String, &'static str), usize> = BTreeMap::new();
        for image in &snapshot.images {
            *images
                .entry((
                    image.provider.to_string(),
                    image.name.to_string(),
                    image.state.as_str(),
                ))
                .or_default() += 1;
        }
        for key in self.images.difference(&images.keys().cloned().collect()) {
            let (provider, image, state) = key.clone();
            metrics::gauge!("nodepool_images", "provider" => provider, "image" => image, "state" => state).set(0.0);
        }
        for ((provider, image, state), count) in &images {
            metrics::gauge!("nodepool_images", "provider" => provider.clone(), "image" => image.clone(), "state" => *state)
                .set(*count as f64);
        }
        self.images = images.into_keys().collect();

        metrics::gauge!("nodepool_requests_waiting").set(snapshot.requests.len() as f64);

        for (provider, cloud) in &clouds.by_name {
            for (operation, stats) in cloud.connection.stats() {
                let labels = [
                    ("provider", provider.to_string()),
                    ("operation", operation.to_owned()),
                ];
                metrics::counter!("nodepool_cloud_calls_total", &labels).absolute(stats.calls);
                metrics::counter!("nodepool_cloud_errors_total", &labels).absolute(stats.errors);
                metrics::gauge!("nodepool_cloud_call_seconds_total", &labels)
                    .set(stats.latency.as_secs_f64());
                metrics::gauge!("nodepool_rate_limit_wait_seconds_total", &labels)
                    .set(stats.waited.as_secs_f64());
            }
        }
    }
}
