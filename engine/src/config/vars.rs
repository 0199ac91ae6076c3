//! Every environment variable tidegate reads, declared once: name, default, accepted values,
//! meaning and what of it is secret. A table: the README's and `tidegate config`'s lists are
//! generated from [`VARS`]. A default a part has (`WorkerOptions`, `StoreOptions`, the
//! controller's `Config`, `ControlOptions`) is read from its `Default`, written there alone.

use std::time::Duration;

use crate::control::controller::Config;
use crate::control::pacer::ControlOptions;
use crate::store::StoreOptions;
use crate::worker::WorkerOptions;

/// A part's default written as the variable would be (the settings' readers parse it back:
/// `each_parts_default_is_the_env_lists`).
mod text {
    use std::time::Duration;

    use crate::queue::Retention;

    pub fn duration(d: Duration) -> String {
        humantime::format_duration(d).to_string()
    }

    pub fn bytes(n: usize) -> String {
        match (n % (1024 * 1024), n % 1024) {
            (0, _) => format!("{}MiB", n / (1024 * 1024)),
            (_, 0) => format!("{}KiB", n / 1024),
            _ => n.to_string(),
        }
    }

    pub fn retention(keep: Retention) -> String {
        let parts: Vec<String> = keep
            .count
            .map(|c| c.to_string())
            .into_iter()
            .chain(keep.age.map(duration))
            .collect();
        if parts.is_empty() {
            "all".to_owned()
        } else {
            parts.join(",")
        }
    }
}

/// One environment variable: the single place its name, default and meaning are written.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    /// The default's text, as the variable would be written; a part's own default where the
    /// part has one (its `Default`), so that each default is written once.
    pub default: fn() -> String,
    pub accepted: &'static str,
    pub meaning: &'static str,
    /// What of the value must never be printed or logged.
    pub secret: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    No,
    /// A URL whose userinfo (a password) is secret.
    Credentials,
    /// A URL that is itself the credential (a webhook): only its scheme and host are shown.
    Url,
    /// A token: nothing of it is shown.
    Whole,
}

const fn var(
    name: &'static str,
    default: fn() -> String,
    accepted: &'static str,
    meaning: &'static str,
) -> Var {
    Var {
        name,
        default,
        accepted,
        meaning,
        secret: Secret::No,
    }
}

pub const REDIS_URL: Var = Var {
    secret: Secret::Credentials,
    ..var(
        "REDIS_URL",
        || "redis://127.0.0.1:6379".into(),
        "a redis:// or rediss:// URL (TLS: the server's certificate is checked against the system's CAs, or the file SSL_CERT_FILE names); for a Redis Cluster, any node's URL or several, comma-separated; for Sentinel, redis+sentinel://[:password@]host:port[,host:port...]/<master name>",
        "Redis (a server or a cluster, which tidegate detects, or the master Sentinels name) that holds the job queues",
    )
};
pub const MONGODB_URI: Var = Var {
    secret: Secret::Credentials,
    ..var(
        "MONGODB_URI",
        || "mongodb://127.0.0.1:27017".into(),
        "a mongodb:// or mongodb+srv:// connection string; what it says (its database, maxPoolSize, connectTimeoutMS, serverSelectionTimeoutMS, appName, w, readPreference, tls...) wins over the TIDEGATE_* settings, which fill only what it does not say",
        "MongoDB (or a wire-compatible server) that the pipelines write to",
    )
};
pub(crate) const DATABASE: Var = var(
    "TIDEGATE_DATABASE",
    || "tidegate".into(),
    "a MongoDB database name: 1-63 characters, no slash, backslash, dot, space, quote or dollar",
    "database the pipelines read and write, when MONGODB_URI names none",
);
pub(crate) const HTTP_ADDR: Var = var(
    "TIDEGATE_HTTP_ADDR",
    || "127.0.0.1:9840".into(),
    "an IP:port socket address",
    "where /metrics, /healthz and /readyz are served",
);
pub(crate) const LOG: Var = var(
    "TIDEGATE_LOG",
    || "info".into(),
    "a tracing filter such as `info` or `tidegate=debug,warn`",
    "which log events are written",
);
pub(crate) const LOG_FORMAT: Var = var(
    "TIDEGATE_LOG_FORMAT",
    || "text".into(),
    "`text` or `json`",
    "log line format on stderr",
);
pub(crate) const SHUTDOWN_TIMEOUT: Var = var(
    "TIDEGATE_SHUTDOWN_TIMEOUT",
    || text::duration(WorkerOptions::default().shutdown_timeout),
    "a duration such as `500ms`, `30s`, `2m`",
    "how long SIGTERM/SIGINT waits for in-flight work before exiting",
);
pub(crate) const READY_TIMEOUT: Var = var(
    "TIDEGATE_READY_TIMEOUT",
    || "2s".into(),
    "a duration such as `500ms`, `2s`",
    "time limit of each dependency check: /readyz's, and those every 5 s in the background whose last result /metrics reports",
);
pub(crate) const START_TIMEOUT: Var = var(
    "TIDEGATE_START_TIMEOUT",
    || "1m".into(),
    "a duration of at least 1s",
    "how long start-up waits for Redis and MongoDB to answer before it gives up (exit 1); each failed attempt is logged",
);
pub(crate) const UNKNOWN_JOBS: Var = var(
    "TIDEGATE_UNKNOWN_JOBS",
    || "refuse".into(),
    "`refuse` (start-up stops while such jobs wait, naming them; left alone afterwards), `leave` (never taken: other workers of the queue run them) or `fail` (taken and failed for good)",
    "what becomes of jobs on the queue whose name no enabled pipeline handles (a queue shared with BullMQ workers)",
);
pub(crate) const SCHEDULE: Var = var(
    "TIDEGATE_SCHEDULE",
    || "off".into(),
    "`off`, or a crontab expression: 5 fields (minute hour day-of-month month day-of-week; 0 and 7 are Sunday; names such as `MON-FRI`), or `@daily`, `@hourly`, `@weekly`, `@monthly`",
    "when the program's daily application (the `tidegate` command's: TIDEGATE_APPS) plans the day that just ended, in TIDEGATE_TIMEZONE; `tidegate config` shows the next three firings",
);
pub(crate) const SCHEDULE_CATCH_UP: Var = var(
    "TIDEGATE_SCHEDULE_CATCH_UP",
    || "6h".into(),
    "a duration; `0s` runs no missed firing (one at most a minute late is on time)",
    "how late a firing missed while no process was up (a deploy, an outage) may still run when one starts; older ones are reported as missed (metric, alert, log) and not run",
);
pub(crate) const TIMEZONE: Var = var(
    "TIDEGATE_TIMEZONE",
    || "UTC".into(),
    "an IANA timezone name such as `UTC` or `Asia/Seoul`",
    "timezone of the schedule and of a run's date",
);
pub(crate) const RATE_FLOOR: Var = var(
    "TIDEGATE_RATE_FLOOR",
    || Config::default().floor.to_string(),
    "a number > 0 (documents/second), at most TIDEGATE_RATE_CEILING",
    "write pace while the database cannot be observed (a blind probe); never a minimum load: with the database seen over its target, batches wait entirely",
);
pub(crate) const RATE_CEILING: Var = var(
    "TIDEGATE_RATE_CEILING",
    || Config::default().ceiling.to_string(),
    "a number > 0 (documents/second)",
    "fastest write pace the controller may choose for a queue",
);
pub const TARGET_CPU: Var = var(
    "TIDEGATE_TARGET_CPU",
    || Config::default().target_cpu.to_string(),
    "a number > 0: percent of one core (800 = 8 busy cores)",
    "database CPU the controller holds while there is work",
);
pub(crate) const TARGET_LATENCY: Var = var(
    "TIDEGATE_TARGET_LATENCY",
    || text::duration(Duration::from_secs_f64(Config::default().target_latency)),
    "a duration > 0 such as `50ms`",
    "mean write latency (as the database reports it) above which the batches' CPU budget is cut",
);
pub(crate) const TARGET_READ_LATENCY: Var = var(
    "TIDEGATE_TARGET_READ_LATENCY",
    || "".into(),
    "empty (no read latency guard), or a duration > 0 such as `20ms`",
    "mean read latency (serverStatus `opLatencies.reads`, or TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY) above which the batches' CPU budget is cut: what the service's users feel",
);
pub(crate) const CONTROL_INTERVAL: Var = var(
    "TIDEGATE_CONTROL_INTERVAL",
    || text::duration(ControlOptions::default().interval),
    "a duration of at least 100ms",
    "how often the database is probed and the rate set",
);
pub const PROMETHEUS_URL: Var = Var {
    secret: Secret::Credentials,
    ..var(
        "TIDEGATE_PROMETHEUS_URL",
        || "".into(),
        "empty, or an http:// or https:// URL such as `http://prometheus:9090`",
        "Prometheus to ask for the signals given as PromQL below",
    )
};
pub(crate) const PROMETHEUS_CPU_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_CPU_QUERY",
    || "".into(),
    "empty, or PromQL giving the database's CPU in percent of one core; needs TIDEGATE_PROMETHEUS_URL",
    "CPU from Prometheus instead of serverStatus (e.g. process-exporter's: `sum(irate(namedprocess_namegroup_cpu_seconds_total{job=\"database\"}[3s])) * 100`)",
);
pub(crate) const PROMETHEUS_LATENCY_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_LATENCY_QUERY",
    || "".into(),
    "empty, or PromQL giving the database's mean write latency in seconds; needs TIDEGATE_PROMETHEUS_URL",
    "write latency from Prometheus instead of serverStatus",
);
pub(crate) const PROMETHEUS_READ_LATENCY_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY",
    || "".into(),
    "empty, or PromQL giving a mean read latency in seconds; needs TIDEGATE_PROMETHEUS_URL",
    "read latency from Prometheus instead of serverStatus, e.g. the service's own request latency",
);
pub(crate) const BUDGET: Var = var(
    "TIDEGATE_BUDGET",
    || "".into(),
    "empty (the hosts of MONGODB_URI), or a name without `{`, `}` or spaces",
    "names the database's write budget: every process of every queue writing to the same database must share it",
);
pub(crate) const BUDGET_WEIGHT: Var = var(
    "TIDEGATE_BUDGET_WEIGHT",
    || ControlOptions::default().weight.to_string(),
    "a number > 0",
    "this queue's part of the database's budget against the other queues' that have work",
);
pub(crate) const GOVERN: Var = var(
    "TIDEGATE_GOVERN",
    || "".into(),
    "empty (none), or BullMQ queue names under TIDEGATE_QUEUE_PREFIX, comma-separated, each with an optional `:weight` (a number > 0, 1 when absent): `visits,emails:0.5`",
    "queues worked by other BullMQ workers (Node, Python; BullMQ >= 5.60) whose global rate limit tidegate sets from the database's budget: `tidegate govern` does only that, `tidegate run` beside its own queue",
);
pub(crate) const GOVERN_FALLBACK: Var = var(
    "TIDEGATE_GOVERN_FALLBACK",
    || "found".into(),
    "`found` (the limit the queue had when first governed, or none), `none`, or MAX/DURATION (`5/1s`)",
    "the global rate limit a governed queue is left with when tidegate stops cleanly (a governor that dies leaves its last limit, and the next one says so)",
);

pub(crate) const SLACK_WEBHOOK_URL: Var = Var {
    secret: Secret::Url,
    ..var(
        "TIDEGATE_SLACK_WEBHOOK_URL",
        || "".into(),
        "empty (no reports), or the https:// URL of a Slack-compatible incoming webhook (http:// only to a loopback host)",
        "where each run's end is reported (a secret: never printed or logged)",
    )
};

pub(crate) const ADMIN_TOKEN: Var = Var {
    secret: Secret::Whole,
    ..var(
        "TIDEGATE_ADMIN_TOKEN",
        || "".into(),
        "empty (the back-office is off), or a token of at least 16 characters",
        "bearer token of the back-office at TIDEGATE_ADMIN_ADDR (a secret: never printed or logged)",
    )
};
pub(crate) const ADMIN_ADDR: Var = var(
    "TIDEGATE_ADMIN_ADDR",
    || "127.0.0.1:9841".into(),
    "an IP:port socket address",
    "where the back-office (page at /, API at /api) is served when TIDEGATE_ADMIN_TOKEN is set",
);

pub const QUEUE: Var = var(
    "TIDEGATE_QUEUE",
    || "scoreCollect".into(),
    "a BullMQ queue name: no `:`",
    "the queue tidegate plans jobs into and works from",
);
pub const QUEUE_PREFIX: Var = var(
    "TIDEGATE_QUEUE_PREFIX",
    || "bull".into(),
    "a Redis key prefix without `:`; `{bull}` for Redis Cluster",
    "BullMQ key prefix (`<prefix>:<queue>:wait`, ...)",
);
pub(crate) const WORKERS: Var = var(
    "TIDEGATE_WORKERS",
    || WorkerOptions::default().workers.to_string(),
    "an integer 1-256",
    "batch loops per process, each with one batch in flight",
);
pub(crate) const BATCH_DOCS: Var = var(
    "TIDEGATE_BATCH_DOCS",
    || WorkerOptions::default().batch_docs.to_string(),
    "an integer 1-100000",
    "most jobs per batch, and statements per MongoDB write",
);
pub(crate) const BATCH_BYTES: Var = var(
    "TIDEGATE_BATCH_BYTES",
    || text::bytes(StoreOptions::default().batch_bytes),
    "a size such as `8MiB`, `512KiB` or bytes, at most 16MiB",
    "most statement bytes per MongoDB write command",
);
pub(crate) const BATCH_WAIT: Var = var(
    "TIDEGATE_BATCH_WAIT",
    || text::duration(WorkerOptions::default().batch_wait),
    "a duration; `0s` writes whatever one take returns",
    "longest a short batch waits for more jobs before it is written",
);
pub(crate) const LOCK_DURATION: Var = var(
    "TIDEGATE_LOCK_DURATION",
    || text::duration(WorkerOptions::default().lock_duration),
    "a duration of at least 100ms",
    "how long a taken job stays locked without an extension (extended every half of it)",
);
pub(crate) const BATCH_TIMEOUT: Var = var(
    "TIDEGATE_BATCH_TIMEOUT",
    || text::duration(WorkerOptions::default().batch_timeout),
    "a duration of at least 1s",
    "a batch still in the pipeline after this long is abandoned (its database calls dropped): its jobs go back to be retried with backoff, an attempt counted, instead of holding their locks",
);
pub(crate) const STALLED_INTERVAL: Var = var(
    "TIDEGATE_STALLED_INTERVAL",
    || text::duration(WorkerOptions::default().stalled_interval),
    "a duration of at least 10ms",
    "how often the stalled check runs, across all workers of a queue",
);
pub(crate) const MAX_STALLED: Var = var(
    "TIDEGATE_MAX_STALLED",
    || WorkerOptions::default().max_stalled.to_string(),
    "an integer 0-1000",
    "times a job may stall (its worker lost) before it fails",
);
pub(crate) const KEEP_COMPLETED: Var = var(
    "TIDEGATE_KEEP_COMPLETED",
    || text::retention(WorkerOptions::default().keep_completed),
    "`all`, a count (`0` removes at once), an age such as `7d`, or both: `50000,7d`",
    "completed jobs kept in Redis, unless a job's own `removeOnComplete` says otherwise",
);
pub(crate) const KEEP_FAILED: Var = var(
    "TIDEGATE_KEEP_FAILED",
    || text::retention(WorkerOptions::default().keep_failed),
    "as TIDEGATE_KEEP_COMPLETED",
    "failed jobs kept in Redis, unless a job's own `removeOnFail` says otherwise",
);
pub(crate) const ATTEMPTS: Var = var(
    "TIDEGATE_ATTEMPTS",
    || "3".into(),
    "an integer 1-100",
    "tries per job tidegate plans (the first included)",
);
pub(crate) const BACKOFF: Var = var(
    "TIDEGATE_BACKOFF",
    || "exponential:5s".into(),
    "`fixed:<duration>` or `exponential:<duration>`",
    "wait before a planned job's next try (exponential doubles it each time)",
);
pub(crate) const MONGODB_POOL_SIZE: Var = var(
    "TIDEGATE_MONGODB_POOL_SIZE",
    || StoreOptions::default().pool_size.to_string(),
    "an integer 1-1000",
    "most connections to MongoDB per process, unless MONGODB_URI says (maxPoolSize)",
);
pub(crate) const MONGODB_TIMEOUT: Var = var(
    "TIDEGATE_MONGODB_TIMEOUT",
    || text::duration(StoreOptions::default().connect_timeout),
    "a duration",
    "connect and server-selection time limit, unless MONGODB_URI says (connectTimeoutMS, serverSelectionTimeoutMS)",
);
pub(crate) const MONGODB_OP_TIMEOUT: Var = var(
    "TIDEGATE_MONGODB_OP_TIMEOUT",
    || text::duration(StoreOptions::default().op_timeout),
    "a duration of at least 100ms",
    "time limit of each MongoDB operation: sent as `maxTimeMS` where the command takes one, and kept by tidegate too (2 s later) for a server or connection that never answers",
);
pub(crate) const WRITE_CONCERN: Var = var(
    "TIDEGATE_WRITE_CONCERN",
    || "server".into(),
    "`server` (the server's default), `majority`, or a number of nodes",
    "write concern of the bulk writes, unless MONGODB_URI says (w, journal, wtimeoutMS)",
);
pub(crate) const PLAN_LEASE: Var = var(
    "TIDEGATE_PLAN_LEASE",
    || "10m".into(),
    "a duration",
    "how long one replica holds the right to plan a scheduled run",
);
pub(crate) const RUN_STALL_AFTER: Var = var(
    "TIDEGATE_RUN_STALL_AFTER",
    || "30m".into(),
    "a duration of at least 1s",
    "an unfinished run with no job finishing for this long is reported as stalled (once)",
);

/// Every variable, in the order the README and `tidegate config` list them.
pub const VARS: &[&Var] = &[
    &REDIS_URL,
    &MONGODB_URI,
    &DATABASE,
    &HTTP_ADDR,
    &LOG,
    &LOG_FORMAT,
    &SHUTDOWN_TIMEOUT,
    &READY_TIMEOUT,
    &START_TIMEOUT,
    &UNKNOWN_JOBS,
    &SCHEDULE,
    &SCHEDULE_CATCH_UP,
    &TIMEZONE,
    &RATE_FLOOR,
    &RATE_CEILING,
    &TARGET_CPU,
    &TARGET_LATENCY,
    &TARGET_READ_LATENCY,
    &CONTROL_INTERVAL,
    &BUDGET,
    &BUDGET_WEIGHT,
    &GOVERN,
    &GOVERN_FALLBACK,
    &PROMETHEUS_URL,
    &PROMETHEUS_CPU_QUERY,
    &PROMETHEUS_LATENCY_QUERY,
    &PROMETHEUS_READ_LATENCY_QUERY,
    &SLACK_WEBHOOK_URL,
    &ADMIN_TOKEN,
    &ADMIN_ADDR,
    &QUEUE,
    &QUEUE_PREFIX,
    &WORKERS,
    &BATCH_DOCS,
    &BATCH_BYTES,
    &BATCH_WAIT,
    &LOCK_DURATION,
    &BATCH_TIMEOUT,
    &STALLED_INTERVAL,
    &MAX_STALLED,
    &KEEP_COMPLETED,
    &KEEP_FAILED,
    &ATTEMPTS,
    &BACKOFF,
    &MONGODB_POOL_SIZE,
    &MONGODB_TIMEOUT,
    &MONGODB_OP_TIMEOUT,
    &WRITE_CONCERN,
    &PLAN_LEASE,
    &RUN_STALL_AFTER,
];
