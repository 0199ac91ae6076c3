//! Every environment variable tidegate reads, declared once: name, default, accepted values,
//! meaning and what of it is secret. A table: the README's and `tidegate config`'s lists are
//! generated from [`VARS`].

/// One environment variable: the single place its name, default and meaning are written.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
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
    default: &'static str,
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
        "redis://127.0.0.1:6379",
        "a redis:// or rediss:// URL (TLS: the server's certificate is checked against the system's CAs, or the file SSL_CERT_FILE names); for a Redis Cluster, any node's URL or several, comma-separated; for Sentinel, redis+sentinel://[:password@]host:port[,host:port...]/<master name>",
        "Redis (a server or a cluster, which tidegate detects, or the master Sentinels name) that holds the job queues",
    )
};
pub const MONGODB_URI: Var = Var {
    secret: Secret::Credentials,
    ..var(
        "MONGODB_URI",
        "mongodb://127.0.0.1:27017",
        "a mongodb:// or mongodb+srv:// connection string; what it says (its database, maxPoolSize, connectTimeoutMS, serverSelectionTimeoutMS, appName, w, readPreference, tls...) wins over the TIDEGATE_* settings, which fill only what it does not say",
        "MongoDB (or a wire-compatible server) that the pipelines write to",
    )
};
pub(crate) const DATABASE: Var = var(
    "TIDEGATE_DATABASE",
    "tidegate",
    "a MongoDB database name: 1-63 characters, no slash, backslash, dot, space, quote or dollar",
    "database the pipelines read and write, when MONGODB_URI names none",
);
pub(crate) const HTTP_ADDR: Var = var(
    "TIDEGATE_HTTP_ADDR",
    "127.0.0.1:9840",
    "an IP:port socket address",
    "where /metrics, /healthz and /readyz are served",
);
pub(crate) const LOG: Var = var(
    "TIDEGATE_LOG",
    "info",
    "a tracing filter such as `info` or `tidegate=debug,warn`",
    "which log events are written",
);
pub(crate) const LOG_FORMAT: Var = var(
    "TIDEGATE_LOG_FORMAT",
    "text",
    "`text` or `json`",
    "log line format on stderr",
);
pub(crate) const SHUTDOWN_TIMEOUT: Var = var(
    "TIDEGATE_SHUTDOWN_TIMEOUT",
    "30s",
    "a duration such as `500ms`, `30s`, `2m`",
    "how long SIGTERM/SIGINT waits for in-flight work before exiting",
);
pub(crate) const READY_TIMEOUT: Var = var(
    "TIDEGATE_READY_TIMEOUT",
    "2s",
    "a duration such as `500ms`, `2s`",
    "time limit of each dependency check: /readyz's, and those every 5 s in the background whose last result /metrics reports",
);
pub(crate) const START_TIMEOUT: Var = var(
    "TIDEGATE_START_TIMEOUT",
    "1m",
    "a duration of at least 1s",
    "how long start-up waits for Redis and MongoDB to answer before it gives up (exit 1); each failed attempt is logged",
);
pub const APPS: Var = var(
    "TIDEGATE_APPS",
    "upsert",
    "`none`, or a comma-separated list of `upsert` (the generic pipeline: jobs named `upsert`) and `score` (the daily score: jobs named `collect` or `score`; plans days)",
    "the built-in applications `tidegate run` works and plans: no other's job, index, schedule or run exists",
);
pub(crate) const UNKNOWN_JOBS: Var = var(
    "TIDEGATE_UNKNOWN_JOBS",
    "refuse",
    "`refuse` (start-up stops while such jobs wait, naming them; left alone afterwards), `leave` (never taken: other workers of the queue run them) or `fail` (taken and failed for good)",
    "what becomes of jobs on the queue whose name no enabled pipeline handles (a queue shared with BullMQ workers)",
);
pub(crate) const SCHEDULE: Var = var(
    "TIDEGATE_SCHEDULE",
    "off",
    "`off`, or a crontab expression: 5 fields (minute hour day-of-month month day-of-week; 0 and 7 are Sunday; names such as `MON-FRI`), or `@daily`, `@hourly`, `@weekly`, `@monthly`",
    "when each enabled daily application (TIDEGATE_APPS) plans the day that just ended, in TIDEGATE_TIMEZONE; `tidegate config` shows the next three firings",
);
pub(crate) const SCHEDULE_CATCH_UP: Var = var(
    "TIDEGATE_SCHEDULE_CATCH_UP",
    "6h",
    "a duration; `0s` runs no missed firing (one at most a minute late is on time)",
    "how late a firing missed while no process was up (a deploy, an outage) may still run when one starts; older ones are reported as missed (metric, alert, log) and not run",
);
pub(crate) const TIMEZONE: Var = var(
    "TIDEGATE_TIMEZONE",
    "UTC",
    "an IANA timezone name such as `UTC` or `Asia/Seoul`",
    "timezone of the schedule and of a run's date",
);
pub(crate) const RATE_FLOOR: Var = var(
    "TIDEGATE_RATE_FLOOR",
    "50",
    "a number > 0 (documents/second), at most TIDEGATE_RATE_CEILING",
    "write pace while the database cannot be observed (a blind probe); never a minimum load: with the database seen over its target, batches wait entirely",
);
pub(crate) const RATE_CEILING: Var = var(
    "TIDEGATE_RATE_CEILING",
    "20000",
    "a number > 0 (documents/second)",
    "fastest write pace the controller may choose for a queue",
);
pub const TARGET_CPU: Var = var(
    "TIDEGATE_TARGET_CPU",
    "200",
    "a number > 0: percent of one core (800 = 8 busy cores)",
    "database CPU the controller holds while there is work",
);
pub(crate) const TARGET_LATENCY: Var = var(
    "TIDEGATE_TARGET_LATENCY",
    "50ms",
    "a duration > 0 such as `50ms`",
    "mean write latency (as the database reports it) above which the batches' CPU budget is cut",
);
pub(crate) const TARGET_READ_LATENCY: Var = var(
    "TIDEGATE_TARGET_READ_LATENCY",
    "",
    "empty (no read latency guard), or a duration > 0 such as `20ms`",
    "mean read latency (serverStatus `opLatencies.reads`, or TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY) above which the batches' CPU budget is cut: what the service's users feel",
);
pub(crate) const CONTROL_INTERVAL: Var = var(
    "TIDEGATE_CONTROL_INTERVAL",
    "5s",
    "a duration of at least 100ms",
    "how often the database is probed and the rate set",
);
pub const PROMETHEUS_URL: Var = Var {
    secret: Secret::Credentials,
    ..var(
        "TIDEGATE_PROMETHEUS_URL",
        "",
        "empty, or an http:// or https:// URL such as `http://prometheus:9090`",
        "Prometheus to ask for the signals given as PromQL below",
    )
};
pub(crate) const PROMETHEUS_CPU_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_CPU_QUERY",
    "",
    "empty, or PromQL giving the database's CPU in percent of one core; needs TIDEGATE_PROMETHEUS_URL",
    "CPU from Prometheus instead of serverStatus (e.g. process-exporter's: `sum(irate(namedprocess_namegroup_cpu_seconds_total{job=\"database\"}[3s])) * 100`)",
);
pub(crate) const PROMETHEUS_LATENCY_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_LATENCY_QUERY",
    "",
    "empty, or PromQL giving the database's mean write latency in seconds; needs TIDEGATE_PROMETHEUS_URL",
    "write latency from Prometheus instead of serverStatus",
);
pub(crate) const PROMETHEUS_READ_LATENCY_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY",
    "",
    "empty, or PromQL giving a mean read latency in seconds; needs TIDEGATE_PROMETHEUS_URL",
    "read latency from Prometheus instead of serverStatus, e.g. the service's own request latency",
);
pub(crate) const BUDGET: Var = var(
    "TIDEGATE_BUDGET",
    "",
    "empty (the hosts of MONGODB_URI), or a name without `{`, `}` or spaces",
    "names the database's write budget: every process of every queue writing to the same database must share it",
);
pub(crate) const BUDGET_WEIGHT: Var = var(
    "TIDEGATE_BUDGET_WEIGHT",
    "1",
    "a number > 0",
    "this queue's part of the database's budget against the other queues' that have work",
);
pub(crate) const GOVERN: Var = var(
    "TIDEGATE_GOVERN",
    "",
    "empty (none), or BullMQ queue names under TIDEGATE_QUEUE_PREFIX, comma-separated, each with an optional `:weight` (a number > 0, 1 when absent): `visits,emails:0.5`",
    "queues worked by other BullMQ workers (Node, Python; BullMQ >= 5.60) whose global rate limit tidegate sets from the database's budget: `tidegate govern` does only that, `tidegate run` beside its own queue",
);
pub(crate) const GOVERN_FALLBACK: Var = var(
    "TIDEGATE_GOVERN_FALLBACK",
    "found",
    "`found` (the limit the queue had when first governed, or none), `none`, or MAX/DURATION (`5/1s`)",
    "the global rate limit a governed queue is left with when tidegate stops cleanly (a governor that dies leaves its last limit, and the next one says so)",
);

pub(crate) const SLACK_WEBHOOK_URL: Var = Var {
    secret: Secret::Url,
    ..var(
        "TIDEGATE_SLACK_WEBHOOK_URL",
        "",
        "empty (no reports), or the https:// URL of a Slack-compatible incoming webhook (http:// only to a loopback host)",
        "where each run's end is reported (a secret: never printed or logged)",
    )
};

pub(crate) const ADMIN_TOKEN: Var = Var {
    secret: Secret::Whole,
    ..var(
        "TIDEGATE_ADMIN_TOKEN",
        "",
        "empty (the back-office is off), or a token of at least 16 characters",
        "bearer token of the back-office at TIDEGATE_ADMIN_ADDR (a secret: never printed or logged)",
    )
};
pub(crate) const ADMIN_ADDR: Var = var(
    "TIDEGATE_ADMIN_ADDR",
    "127.0.0.1:9841",
    "an IP:port socket address",
    "where the back-office (page at /, API at /api) is served when TIDEGATE_ADMIN_TOKEN is set",
);

pub const QUEUE: Var = var(
    "TIDEGATE_QUEUE",
    "scoreCollect",
    "a BullMQ queue name: no `:`",
    "the queue tidegate plans jobs into and works from",
);
pub const QUEUE_PREFIX: Var = var(
    "TIDEGATE_QUEUE_PREFIX",
    "bull",
    "a Redis key prefix without `:`; `{bull}` for Redis Cluster",
    "BullMQ key prefix (`<prefix>:<queue>:wait`, ...)",
);
pub(crate) const WORKERS: Var = var(
    "TIDEGATE_WORKERS",
    "4",
    "an integer 1-256",
    "batch loops per process, each with one batch in flight",
);
pub(crate) const BATCH_DOCS: Var = var(
    "TIDEGATE_BATCH_DOCS",
    "500",
    "an integer 1-100000",
    "most jobs per batch, and statements per MongoDB write",
);
pub(crate) const BATCH_BYTES: Var = var(
    "TIDEGATE_BATCH_BYTES",
    "8MiB",
    "a size such as `8MiB`, `512KiB` or bytes, at most 16MiB",
    "most statement bytes per MongoDB write command",
);
pub(crate) const BATCH_WAIT: Var = var(
    "TIDEGATE_BATCH_WAIT",
    "20ms",
    "a duration; `0s` writes whatever one take returns",
    "longest a short batch waits for more jobs before it is written",
);
pub(crate) const LOCK_DURATION: Var = var(
    "TIDEGATE_LOCK_DURATION",
    "30s",
    "a duration of at least 100ms",
    "how long a taken job stays locked without an extension (extended every half of it)",
);
pub(crate) const BATCH_TIMEOUT: Var = var(
    "TIDEGATE_BATCH_TIMEOUT",
    "1m",
    "a duration of at least 1s",
    "a batch still in the pipeline after this long is abandoned (its database calls dropped): its jobs go back to be retried with backoff, an attempt counted, instead of holding their locks",
);
pub(crate) const STALLED_INTERVAL: Var = var(
    "TIDEGATE_STALLED_INTERVAL",
    "30s",
    "a duration of at least 10ms",
    "how often the stalled check runs, across all workers of a queue",
);
pub(crate) const MAX_STALLED: Var = var(
    "TIDEGATE_MAX_STALLED",
    "1",
    "an integer 0-1000",
    "times a job may stall (its worker lost) before it fails",
);
pub(crate) const KEEP_COMPLETED: Var = var(
    "TIDEGATE_KEEP_COMPLETED",
    "50000",
    "`all`, a count (`0` removes at once), an age such as `7d`, or both: `50000,7d`",
    "completed jobs kept in Redis, unless a job's own `removeOnComplete` says otherwise",
);
pub(crate) const KEEP_FAILED: Var = var(
    "TIDEGATE_KEEP_FAILED",
    "all",
    "as TIDEGATE_KEEP_COMPLETED",
    "failed jobs kept in Redis, unless a job's own `removeOnFail` says otherwise",
);
pub(crate) const ATTEMPTS: Var = var(
    "TIDEGATE_ATTEMPTS",
    "3",
    "an integer 1-100",
    "tries per job tidegate plans (the first included)",
);
pub(crate) const BACKOFF: Var = var(
    "TIDEGATE_BACKOFF",
    "exponential:5s",
    "`fixed:<duration>` or `exponential:<duration>`",
    "wait before a planned job's next try (exponential doubles it each time)",
);
pub(crate) const MONGODB_POOL_SIZE: Var = var(
    "TIDEGATE_MONGODB_POOL_SIZE",
    "50",
    "an integer 1-1000",
    "most connections to MongoDB per process, unless MONGODB_URI says (maxPoolSize)",
);
pub(crate) const MONGODB_TIMEOUT: Var = var(
    "TIDEGATE_MONGODB_TIMEOUT",
    "10s",
    "a duration",
    "connect and server-selection time limit, unless MONGODB_URI says (connectTimeoutMS, serverSelectionTimeoutMS)",
);
pub(crate) const MONGODB_OP_TIMEOUT: Var = var(
    "TIDEGATE_MONGODB_OP_TIMEOUT",
    "30s",
    "a duration of at least 100ms",
    "time limit of each MongoDB operation: sent as `maxTimeMS` where the command takes one, and kept by tidegate too (2 s later) for a server or connection that never answers",
);
pub(crate) const WRITE_CONCERN: Var = var(
    "TIDEGATE_WRITE_CONCERN",
    "server",
    "`server` (the server's default), `majority`, or a number of nodes",
    "write concern of the bulk writes, unless MONGODB_URI says (w, journal, wtimeoutMS)",
);
pub(crate) const PLAN_LEASE: Var = var(
    "TIDEGATE_PLAN_LEASE",
    "10m",
    "a duration",
    "how long one replica holds the right to plan a scheduled run",
);
pub(crate) const RUN_STALL_AFTER: Var = var(
    "TIDEGATE_RUN_STALL_AFTER",
    "30m",
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
    &APPS,
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
