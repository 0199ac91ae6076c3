//! Logs and metrics plumbing: the `tracing` subscriber, the process-wide Prometheus recorder, and
//! the name, unit and help text of every metric tidegate exports (defined here once; code
//! elsewhere refers to these constants, never to a string literal).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Metric names. Labels are bounded: a queue, a state, a dependency name; never a job or user.
pub mod names {
    pub const BUILD_INFO: &str = "tidegate_build_info";
    pub const DEPENDENCY_UP: &str = "tidegate_dependency_up";
    pub const JOBS_ADDED: &str = "tidegate_jobs_added_total";
    pub const JOBS_COMPLETED: &str = "tidegate_jobs_completed_total";
    pub const JOBS_FAILED: &str = "tidegate_jobs_failed_total";
    pub const JOBS_RETRIED: &str = "tidegate_jobs_retried_total";
    pub const JOBS_STALLED: &str = "tidegate_jobs_stalled_total";
    pub const QUEUE_JOBS: &str = "tidegate_queue_jobs";
    pub const BATCH_SIZE: &str = "tidegate_batch_jobs";
    pub const JOB_LATENCY: &str = "tidegate_job_latency_seconds";
    pub const RUNS_ENDED: &str = "tidegate_runs_ended_total";
    pub const RUNS_PLANNED: &str = "tidegate_runs_planned_total";
    pub const DB_ROUND_TRIPS: &str = "tidegate_db_round_trips_total";
    pub const WRITE_STATEMENTS: &str = "tidegate_write_statements";
}

/// Histogram buckets per metric, chosen for the quantity measured.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
];
/// Added → settled: from a busy moment's milliseconds to a whole night's run.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

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
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), BATCH_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::JOB_LATENCY.into()), LATENCY_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(names::WRITE_STATEMENTS.into()),
                    BATCH_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
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
    describe_counter!(
        names::JOBS_ADDED,
        "Jobs added to a queue (duplicates of an existing id not counted)"
    );
    describe_counter!(names::JOBS_COMPLETED, "Jobs that completed");
    describe_counter!(
        names::JOBS_FAILED,
        "Jobs that failed for good (no attempt left, or a permanent error)"
    );
    describe_counter!(
        names::JOBS_RETRIED,
        "Failed attempts that were scheduled for another try"
    );
    describe_counter!(
        names::JOBS_STALLED,
        "Jobs whose worker lost them (lock expired), moved back to wait"
    );
    describe_gauge!(names::QUEUE_JOBS, "Jobs in each state of a queue, sampled");
    describe_counter!(
        names::RUNS_PLANNED,
        "Runs planned, by trigger (schedule, rerun, demo)"
    );
    describe_counter!(
        names::RUNS_ENDED,
        "Runs whose every job finished, by outcome (succeeded, failed)"
    );
    describe_counter!(
        names::DB_ROUND_TRIPS,
        "Database round trips made by the pipelines, by op (read, write)"
    );
    describe_histogram!(
        names::WRITE_STATEMENTS,
        "Statements (documents) per bulk write command"
    );
    describe_histogram!(names::BATCH_SIZE, "Jobs taken per batch by a worker loop");
    describe_histogram!(
        names::JOB_LATENCY,
        Unit::Seconds,
        "Time from a job being added to it being settled (completed or failed for good)"
    );
}
