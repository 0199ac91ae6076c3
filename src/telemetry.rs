//! Logs and metrics plumbing: the `tracing` subscriber, the process-wide Prometheus recorder, and
//! the name, unit and help text of every metric tidegate exports (defined here once; code
//! elsewhere refers to these constants, never to a string literal).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::describe_gauge;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Metric names. Labels are bounded: a queue, a state, a dependency name; never a job or user.
pub mod names {
    pub const BUILD_INFO: &str = "tidegate_build_info";
    pub const DEPENDENCY_UP: &str = "tidegate_dependency_up";
}

/// Installs the global `tracing` subscriber writing to stderr. A second call (tests) is a no-op.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use. One recorder serves the whole
/// process (metrics' global recorder can be set only once), so every server in it renders it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// Drains the recorder's histogram buffers now and then, as metrics-exporter-prometheus asks of
/// anyone who renders it without its built-in HTTP listener.
pub async fn run_upkeep(handle: &'static PrometheusHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    describe_gauge!(
        names::BUILD_INFO,
        "Always 1; the label carries the tidegate version"
    );
    describe_gauge!(
        names::DEPENDENCY_UP,
        "1 when the last readiness check reached the dependency (redis, mongodb), else 0"
    );
}
