//! Logs and metrics plumbing: the `tracing` subscriber, the process-wide Prometheus recorder, and
//! the name, unit and help text of every metric tidegate exports (defined here once; code
//! elsewhere refers to these constants, never to a string literal). [`held`] keeps the few
//! series a process exports only while it holds a shared responsibility.

pub mod held;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Metric names. Labels are bounded: a queue, a state, a dependency name; never a job or user.
pub mod names {
    pub(crate) const BUILD_INFO: &str = "tidegate_build_info";
    pub(crate) const DEPENDENCY_UP: &str = "tidegate_dependency_up";
    pub(crate) const DEPENDENCY_CHECK_AGE: &str = "tidegate_dependency_check_age_seconds";
    pub(crate) const CIRCUIT_OPEN: &str = "tidegate_circuit_open";
    pub(crate) const OUTAGES: &str = "tidegate_outages_total";
    pub(crate) const JOBS_ADDED: &str = "tidegate_jobs_added_total";
    pub(crate) const JOBS_COMPLETED: &str = "tidegate_jobs_completed_total";
    pub(crate) const JOBS_FAILED: &str = "tidegate_jobs_failed_total";
    pub(crate) const JOBS_RETRIED: &str = "tidegate_jobs_retried_total";
    pub(crate) const JOBS_STALLED: &str = "tidegate_jobs_stalled_total";
    pub(crate) const QUEUE_JOBS: &str = "tidegate_queue_jobs";
    pub(crate) const BATCH_SIZE: &str = "tidegate_batch_jobs";
    pub(crate) const BATCHES_ABANDONED: &str = "tidegate_batches_abandoned_total";
    pub(crate) const JOB_LATENCY: &str = "tidegate_job_latency_seconds";
    pub(crate) const RUNS_ENDED: &str = "tidegate_runs_ended_total";
    pub(crate) const RUNS_PLANNED: &str = "tidegate_runs_planned_total";
    pub(crate) const SCHEDULE_MISSED: &str = "tidegate_schedule_missed_total";
    pub(crate) const SCHEDULE_LAST_FIRING: &str = "tidegate_schedule_last_firing_timestamp_seconds";
    pub(crate) const SCHEDULE_LAST_SUCCESS: &str =
        "tidegate_schedule_last_success_timestamp_seconds";
    pub(crate) const DB_ROUND_TRIPS: &str = "tidegate_db_round_trips_total";
    pub(crate) const WRITE_STATEMENTS: &str = "tidegate_write_statements";
    pub(crate) const WRITE_RTT: &str = "tidegate_db_write_rtt_seconds";
    pub(crate) const WRITE_ERRORS: &str = "tidegate_db_write_errors_total";
    // The load-control loop.
    pub(crate) const DB_CPU: &str = "tidegate_db_cpu_percent";
    pub(crate) const DB_WRITE_LATENCY: &str = "tidegate_db_write_latency_seconds";
    pub(crate) const DB_READ_LATENCY: &str = "tidegate_db_read_latency_seconds";
    pub(crate) const DB_QUEUED_OPS: &str = "tidegate_db_queued_operations";
    pub(crate) const DB_WRITE_TICKETS: &str = "tidegate_db_write_tickets_available";
    // Not `_total`: that suffix is for counters (promtool rejects it on a gauge).
    pub(crate) const DB_WRITE_TICKETS_POOL: &str = "tidegate_db_write_tickets_pool";
    pub(crate) const SIGNAL_AVAILABLE: &str = "tidegate_signal_available";
    pub(crate) const PROBE_ERRORS: &str = "tidegate_probe_errors_total";
    pub(crate) const RATE: &str = "tidegate_rate_documents_per_second";
    pub(crate) const TARGET: &str = "tidegate_target";
    pub(crate) const LIMITER: &str = "tidegate_limiting_signal";
    pub(crate) const CPU_BUDGET: &str = "tidegate_cpu_budget_percent";
    pub(crate) const LIVE_LOAD: &str = "tidegate_live_load_percent";
    pub(crate) const BATCH_COST: &str = "tidegate_batch_cost_cpu_seconds";
    pub(crate) const BATCH_TARGET: &str = "tidegate_batch_target_documents";
    pub(crate) const PROBE_LAG: &str = "tidegate_probe_lag_seconds";
    pub(crate) const CONTROL_MEMBERS: &str = "tidegate_control_members";
    pub(crate) const CONTROL_LEADER: &str = "tidegate_control_leader";
    pub(crate) const THROTTLE_WAIT: &str = "tidegate_throttle_wait_seconds";
    pub(crate) const GOVERNED_LIMIT: &str = "tidegate_governed_limit_jobs_per_second";
    pub(crate) const GOVERNED_STARTS: &str = "tidegate_governed_jobs_started_total";
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

/// How log lines are written: `TIDEGATE_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global `tracing` subscriber writing to stderr. A second call (tests) is a no-op.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

/// `/metrics`: the recorder's series, then the held ones.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    held::render(&mut out);
    out
}

/// Drains the recorder's histogram buffers now and then, as metrics-exporter-prometheus asks of
/// anyone who renders it without its built-in HTTP listener.
pub(crate) async fn run_upkeep(handle: &'static PrometheusHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric, as `/metrics`, `tidegate metrics` and METRICS.md describe it.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// `None`: a plain count or ratio.
    pub unit: Option<Unit>,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric tidegate exports, in the order METRICS.md lists them.
pub const CATALOGUE: &[Metric] = &[
    metric(
        names::BUILD_INFO,
        Gauge,
        None,
        &["version"],
        "Always 1; the label carries the tidegate version",
    ),
    metric(
        names::DEPENDENCY_UP,
        Gauge,
        None,
        &["dependency"],
        "1 when the last check reached the dependency (redis, mongodb) within TIDEGATE_READY_TIMEOUT, else 0; checked every 5 s in the background and by /readyz, never during a scrape",
    ),
    metric(
        names::DEPENDENCY_CHECK_AGE,
        Gauge,
        Some(Unit::Seconds),
        &["dependency"],
        "How long ago the check behind tidegate_dependency_up ended: above 5 s plus TIDEGATE_READY_TIMEOUT, the checks themselves are stuck",
    ),
    metric(
        names::CIRCUIT_OPEN,
        Gauge,
        None,
        &["dependency"],
        "1 while this process finds the dependency (mongodb, redis) down or silent: it takes no jobs and releases what it holds, attempts untouched; 0 once it answers",
    ),
    metric(
        names::OUTAGES,
        Counter,
        None,
        &["dependency"],
        "Times this process found the dependency down or silent (its circuit opened)",
    ),
    metric(
        names::JOBS_ADDED,
        Counter,
        None,
        &["queue"],
        "Jobs added to a queue (duplicates of an existing id not counted)",
    ),
    metric(
        names::JOBS_COMPLETED,
        Counter,
        None,
        &["queue"],
        "Jobs that completed",
    ),
    metric(
        names::JOBS_FAILED,
        Counter,
        None,
        &["queue"],
        "Jobs that failed for good (no attempt left, or a permanent error)",
    ),
    metric(
        names::JOBS_RETRIED,
        Counter,
        None,
        &["queue"],
        "Failed attempts that were scheduled for another try",
    ),
    metric(
        names::JOBS_STALLED,
        Counter,
        None,
        &["queue"],
        "Jobs whose worker lost them (lock expired), moved back to wait",
    ),
    metric(
        names::QUEUE_JOBS,
        Gauge,
        None,
        &["queue", "state"],
        "Jobs in each state of a queue, sampled",
    ),
    metric(
        names::BATCH_SIZE,
        Histogram,
        None,
        &["queue"],
        "Jobs taken per batch by a worker loop",
    ),
    metric(
        names::BATCHES_ABANDONED,
        Counter,
        None,
        &[],
        "Batches abandoned after TIDEGATE_BATCH_TIMEOUT (their jobs retried): the database stopped answering",
    ),
    metric(
        names::JOB_LATENCY,
        Histogram,
        Some(Unit::Seconds),
        &["queue"],
        "Time from a job being added to it being settled (completed or failed for good)",
    ),
    metric(
        names::RUNS_PLANNED,
        Counter,
        None,
        &["trigger"],
        "Runs planned, by trigger (schedule, rerun, demo)",
    ),
    metric(
        names::RUNS_ENDED,
        Counter,
        None,
        &["outcome"],
        "Runs whose every job finished, by outcome (succeeded, failed)",
    ),
    metric(
        names::SCHEDULE_MISSED,
        Counter,
        None,
        &["application"],
        "Scheduled firings missed while no process was up, longer ago than TIDEGATE_SCHEDULE_CATCH_UP: not run (re-run their days)",
    ),
    metric(
        names::SCHEDULE_LAST_FIRING,
        Gauge,
        Some(Unit::Seconds),
        &["application"],
        "When the application's schedule last fired (Unix time; every replica with the schedule reports the same)",
    ),
    metric(
        names::SCHEDULE_LAST_SUCCESS,
        Gauge,
        Some(Unit::Seconds),
        &["application"],
        "When a run of the application last succeeded (Unix time, any trigger), or when its schedule first started if none has; reported where the schedule runs",
    ),
    metric(
        names::DB_ROUND_TRIPS,
        Counter,
        None,
        &["op"],
        "Database round trips made by the pipelines, by op (read, write)",
    ),
    metric(
        names::WRITE_STATEMENTS,
        Histogram,
        None,
        &[],
        "Statements (documents) per bulk write command",
    ),
    metric(
        names::WRITE_RTT,
        Histogram,
        Some(Unit::Seconds),
        &[],
        "Round-trip time of each bulk write command, as the client saw it",
    ),
    metric(
        names::WRITE_ERRORS,
        Counter,
        None,
        &[],
        "Pipeline calls to the database (bulk writes, their reads) that failed transiently (network, timeout, overload, conflict)",
    ),
    metric(
        names::DB_CPU,
        Gauge,
        Some(Unit::Percent),
        &[],
        "Database CPU over the last control interval, percent of one core (800 = 8 busy cores)",
    ),
    metric(
        names::DB_WRITE_LATENCY,
        Gauge,
        Some(Unit::Seconds),
        &[],
        "Mean write latency the database reported over the last control interval",
    ),
    metric(
        names::DB_READ_LATENCY,
        Gauge,
        Some(Unit::Seconds),
        &[],
        "Mean read latency the database reported over the last control interval (what its other users feel)",
    ),
    metric(
        names::DB_QUEUED_OPS,
        Gauge,
        None,
        &[],
        "Operations queued for locks on the database (globalLock.currentQueue.total)",
    ),
    metric(
        names::DB_WRITE_TICKETS,
        Gauge,
        None,
        &[],
        "Write tickets the database's admission control had free",
    ),
    metric(
        names::DB_WRITE_TICKETS_POOL,
        Gauge,
        None,
        &[],
        "Size of the database's write ticket pool (totalTickets; 7.0 and later resize it)",
    ),
    metric(
        names::SIGNAL_AVAILABLE,
        Gauge,
        None,
        &["signal"],
        "1 when the probes report the signal (cpu, write_latency, read_latency, queued_ops, write_tickets), 0 when the server does not",
    ),
    metric(
        names::PROBE_ERRORS,
        Counter,
        None,
        &["probe"],
        "Probe samples that failed, by probe (serverstatus, prometheus)",
    ),
    metric(
        names::RATE,
        Gauge,
        None,
        &["scope"],
        "Write pace in documents/second: scope=total for all processes of this queue, scope=local for this process's own bucket (the queue's pace when its batches take turns in Redis)",
    ),
    metric(
        names::CPU_BUDGET,
        Gauge,
        Some(Unit::Percent),
        &[],
        "Database CPU all batches on this database may use: the target minus the live load, 0 when there is no headroom (leader only)",
    ),
    metric(
        names::LIVE_LOAD,
        Gauge,
        Some(Unit::Percent),
        &[],
        "Database CPU without the batches (the service's own load), as the controller learned it (leader only)",
    ),
    metric(
        names::BATCH_COST,
        Gauge,
        Some(Unit::Seconds),
        &["queue", "part"],
        "Database CPU-seconds a queue's batch costs, as learned: part=batch (fixed, whatever it carries) and part=document (each)",
    ),
    metric(
        names::BATCH_TARGET,
        Gauge,
        None,
        &[],
        "Documents per batch the controller chose for this process's queue",
    ),
    metric(
        names::PROBE_LAG,
        Gauge,
        Some(Unit::Seconds),
        &[],
        "How far the probe's readings lag behind, as the controller found (leader only)",
    ),
    metric(
        names::TARGET,
        Gauge,
        None,
        &["signal"],
        "The controller's targets, by signal (cpu in percent, write_latency and read_latency in seconds)",
    ),
    metric(
        names::LIMITER,
        Gauge,
        None,
        &["signal"],
        "1 for the signal that set the pace in the last interval (cpu, no_headroom, latency, read_latency, errors, blind, probing, ceiling, resuming), else 0",
    ),
    metric(
        names::CONTROL_MEMBERS,
        Gauge,
        None,
        &[],
        "Worker processes sharing the database's write budget (every queue's)",
    ),
    metric(
        names::CONTROL_LEADER,
        Gauge,
        None,
        &[],
        "1 when this process runs the database's controller, else 0",
    ),
    metric(
        names::GOVERNED_LIMIT,
        Gauge,
        None,
        &["queue"],
        "The global rate limit this process last wrote on a governed BullMQ queue, in jobs/second (the process holding the queue's lease only; absent while none does, when the queue keeps the limit last written)",
    ),
    metric(
        names::GOVERNED_STARTS,
        Counter,
        None,
        &["queue"],
        "Jobs of a governed BullMQ queue its workers started, as its event stream tells them (the process holding the queue's lease counts them)",
    ),
    metric(
        names::THROTTLE_WAIT,
        Histogram,
        Some(Unit::Seconds),
        &[],
        "Time a batch loop waited for the throttle before taking its batch",
    ),
];

fn describe() {
    for m in CATALOGUE {
        let (name, help) = (m.name, m.help);
        match (m.kind, m.unit) {
            (Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Counter, None) => describe_counter!(name, help),
            (Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Gauge, None) => describe_gauge!(name, help),
            (Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (Histogram, None) => describe_histogram!(name, help),
        }
    }
}

/// METRICS.md's table, generated so that it cannot drift from [`CATALOGUE`].
pub fn markdown_catalogue() -> String {
    let mut out =
        String::from("| Metric | Type | Unit | Labels | Meaning |\n|---|---|---|---|---|\n");
    for m in CATALOGUE {
        let kind = match m.kind {
            Counter => "counter",
            Gauge => "gauge",
            Histogram => "histogram",
        };
        let unit = m.unit.map_or("", |u| u.as_str());
        let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
        out.push_str(&format!(
            "| `{}` | {kind} | {unit} | {} | {} |\n",
            m.name,
            labels.join(", "),
            m.help
        ));
    }
    out
}
