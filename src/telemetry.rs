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
    pub const WRITE_RTT: &str = "tidegate_db_write_rtt_seconds";
    pub const WRITE_ERRORS: &str = "tidegate_db_write_errors_total";
    // The load-control loop.
    pub const DB_CPU: &str = "tidegate_db_cpu_percent";
    pub const DB_WRITE_LATENCY: &str = "tidegate_db_write_latency_seconds";
    pub const DB_QUEUED_OPS: &str = "tidegate_db_queued_operations";
    pub const DB_WRITE_TICKETS: &str = "tidegate_db_write_tickets_available";
    pub const SIGNAL_AVAILABLE: &str = "tidegate_signal_available";
    pub const PROBE_ERRORS: &str = "tidegate_probe_errors_total";
    pub const RATE: &str = "tidegate_rate_documents_per_second";
    pub const TARGET: &str = "tidegate_target";
    pub const LIMITER: &str = "tidegate_limiting_signal";
    pub const CONTROL_MEMBERS: &str = "tidegate_control_members";
    pub const CONTROL_LEADER: &str = "tidegate_control_leader";
    pub const THROTTLE_WAIT: &str = "tidegate_throttle_wait_seconds";
}

/// Histogram buckets per metric, chosen for the quantity measured.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
];
/// Round trips and throttle waits: a millisecond to a long wait at the floor rate.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
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
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::WRITE_RTT.into()), WAIT_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::THROTTLE_WAIT.into()), WAIT_BUCKETS)
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
    describe_histogram!(
        names::WRITE_RTT,
        Unit::Seconds,
        "Round-trip time of each bulk write command, as the client saw it"
    );
    describe_counter!(
        names::WRITE_ERRORS,
        "Bulk write commands that failed transiently (network, timeout, overload, conflict)"
    );
    describe_gauge!(
        names::DB_CPU,
        "Database CPU over the last control interval, percent of one core (800 = 8 busy cores)"
    );
    describe_gauge!(
        names::DB_WRITE_LATENCY,
        Unit::Seconds,
        "Mean write latency the database reported over the last control interval"
    );
    describe_gauge!(
        names::DB_QUEUED_OPS,
        "Operations queued for locks on the database (globalLock.currentQueue.total)"
    );
    describe_gauge!(
        names::DB_WRITE_TICKETS,
        "Write tickets the database's admission control had free"
    );
    describe_gauge!(
        names::SIGNAL_AVAILABLE,
        "1 when the probes report the signal (cpu, write_latency, queued_ops, write_tickets), 0 when the server does not"
    );
    describe_counter!(
        names::PROBE_ERRORS,
        "Probe samples that failed, by probe (serverstatus, prometheus)"
    );
    describe_gauge!(
        names::RATE,
        "Write budget in documents/second: scope=total for all workers of the queue, scope=local for this process"
    );
    describe_gauge!(
        names::TARGET,
        "The controller's targets, by signal (cpu in percent, write_latency in seconds)"
    );
    describe_gauge!(
        names::LIMITER,
        "1 for the signal that set the rate in the last interval (cpu, latency, errors, blind, probing, floor, ceiling), else 0"
    );
    describe_gauge!(
        names::CONTROL_MEMBERS,
        "Worker processes sharing the queue's write budget"
    );
    describe_gauge!(
        names::CONTROL_LEADER,
        "1 when this process runs the queue's controller, else 0"
    );
    describe_histogram!(
        names::THROTTLE_WAIT,
        Unit::Seconds,
        "Time a batch waited for the throttle before its writes"
    );
    describe_histogram!(names::BATCH_SIZE, "Jobs taken per batch by a worker loop");
    describe_histogram!(
        names::JOB_LATENCY,
        Unit::Seconds,
        "Time from a job being added to it being settled (completed or failed for good)"
    );
}
