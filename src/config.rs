//! Settings: every tunable of tidegate, read once from environment variables.
//!
//! Each variable is declared once in [`VARS`] with its meaning, default and accepted values; the
//! README's table and `tidegate config` are generated from that list. [`Settings::from_lookup`]
//! validates every variable and reports all bad ones together, so a misconfigured deployment is
//! fixed in one round instead of one variable per restart.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use mongodb::options::WriteConcern;

use crate::control::controller;
use crate::control::pacer::ControlOptions;
use crate::queue::{Backoff, BackoffKind, Retention};
use crate::redact::{redact_path, redact_url};
use crate::schedule::cron_schedule;
use crate::store::StoreOptions;
use crate::telemetry::LogFormat;
use crate::worker::WorkerOptions;

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
        "a redis:// or rediss:// URL",
        "Redis that holds the job queues",
    )
};
pub const MONGODB_URI: Var = Var {
    secret: Secret::Credentials,
    ..var(
        "MONGODB_URI",
        "mongodb://127.0.0.1:27017",
        "a mongodb:// or mongodb+srv:// connection string",
        "MongoDB (or a wire-compatible server) that the pipelines write to",
    )
};
pub const DATABASE: Var = var(
    "TIDEGATE_DATABASE",
    "tidegate",
    "a MongoDB database name: 1-63 characters, no slash, backslash, dot, space, quote or dollar",
    "database the pipelines read and write",
);
pub const HTTP_ADDR: Var = var(
    "TIDEGATE_HTTP_ADDR",
    "127.0.0.1:9840",
    "an IP:port socket address",
    "where /metrics, /healthz and /readyz are served",
);
pub const LOG: Var = var(
    "TIDEGATE_LOG",
    "info",
    "a tracing filter such as `info` or `tidegate=debug,warn`",
    "which log events are written",
);
pub const LOG_FORMAT: Var = var(
    "TIDEGATE_LOG_FORMAT",
    "text",
    "`text` or `json`",
    "log line format on stderr",
);
pub const SHUTDOWN_TIMEOUT: Var = var(
    "TIDEGATE_SHUTDOWN_TIMEOUT",
    "30s",
    "a duration such as `500ms`, `30s`, `2m`",
    "how long SIGTERM/SIGINT waits for in-flight work before exiting",
);
pub const READY_TIMEOUT: Var = var(
    "TIDEGATE_READY_TIMEOUT",
    "2s",
    "a duration such as `500ms`, `2s`",
    "time limit of each dependency check: /readyz's, and those every 5 s in the background whose last result /metrics reports",
);
pub const START_TIMEOUT: Var = var(
    "TIDEGATE_START_TIMEOUT",
    "1m",
    "a duration of at least 1s",
    "how long start-up waits for Redis and MongoDB to answer before it gives up (exit 1); each failed attempt is logged",
);
pub const SCHEDULE: Var = var(
    "TIDEGATE_SCHEDULE",
    "0 1 * * *",
    "a cron expression: 5 fields (minute hour day month weekday) or 6-7 with seconds first",
    "when each day's run is planned",
);
pub const TIMEZONE: Var = var(
    "TIDEGATE_TIMEZONE",
    "Asia/Seoul",
    "an IANA timezone name such as `Asia/Seoul` or `UTC`",
    "timezone of the schedule and of a run's date",
);
pub const RATE_FLOOR: Var = var(
    "TIDEGATE_RATE_FLOOR",
    "50",
    "a number > 0 (documents/second), at most TIDEGATE_RATE_CEILING",
    "write pace while the database cannot be observed (a blind probe); never a minimum load: with the database seen over its target, batches wait entirely",
);
pub const RATE_CEILING: Var = var(
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
pub const TARGET_LATENCY: Var = var(
    "TIDEGATE_TARGET_LATENCY",
    "50ms",
    "a duration > 0 such as `50ms`",
    "mean write latency (as the database reports it) above which the batches' CPU budget is cut",
);
pub const TARGET_READ_LATENCY: Var = var(
    "TIDEGATE_TARGET_READ_LATENCY",
    "",
    "empty (no read latency guard), or a duration > 0 such as `20ms`",
    "mean read latency (serverStatus `opLatencies.reads`, or TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY) above which the batches' CPU budget is cut: what the service's users feel",
);
pub const CONTROL_INTERVAL: Var = var(
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
pub const PROMETHEUS_CPU_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_CPU_QUERY",
    "",
    "empty, or PromQL giving the database's CPU in percent of one core; needs TIDEGATE_PROMETHEUS_URL",
    "CPU from Prometheus instead of serverStatus (e.g. FerretDB: `irate(process_cpu_seconds_total{job=\"ferretdb\"}[3s]) * 100`)",
);
pub const PROMETHEUS_LATENCY_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_LATENCY_QUERY",
    "",
    "empty, or PromQL giving the database's mean write latency in seconds; needs TIDEGATE_PROMETHEUS_URL",
    "write latency from Prometheus instead of serverStatus",
);
pub const PROMETHEUS_READ_LATENCY_QUERY: Var = var(
    "TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY",
    "",
    "empty, or PromQL giving a mean read latency in seconds; needs TIDEGATE_PROMETHEUS_URL",
    "read latency from Prometheus instead of serverStatus, e.g. the service's own request latency",
);
pub const BUDGET: Var = var(
    "TIDEGATE_BUDGET",
    "",
    "empty (the hosts of MONGODB_URI), or a name without `{`, `}` or spaces",
    "names the database's write budget: every process of every queue writing to the same database must share it",
);
pub const BUDGET_WEIGHT: Var = var(
    "TIDEGATE_BUDGET_WEIGHT",
    "1",
    "a number > 0",
    "this queue's part of the database's budget against the other queues' that have work",
);

pub const SLACK_WEBHOOK_URL: Var = Var {
    secret: Secret::Url,
    ..var(
        "TIDEGATE_SLACK_WEBHOOK_URL",
        "",
        "empty (no reports), or the https:// URL of a Slack-compatible incoming webhook (http:// only to a loopback host)",
        "where each run's end is reported (a secret: never printed or logged)",
    )
};

pub const ADMIN_TOKEN: Var = Var {
    secret: Secret::Whole,
    ..var(
        "TIDEGATE_ADMIN_TOKEN",
        "",
        "empty (the back-office is off), or a token of at least 16 characters",
        "bearer token of the back-office at TIDEGATE_ADMIN_ADDR (a secret: never printed or logged)",
    )
};
pub const ADMIN_ADDR: Var = var(
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
pub const WORKERS: Var = var(
    "TIDEGATE_WORKERS",
    "4",
    "an integer 1-256",
    "batch loops per process, each with one batch in flight",
);
pub const BATCH_DOCS: Var = var(
    "TIDEGATE_BATCH_DOCS",
    "500",
    "an integer 1-100000",
    "most jobs per batch, and statements per MongoDB write",
);
pub const BATCH_BYTES: Var = var(
    "TIDEGATE_BATCH_BYTES",
    "8MiB",
    "a size such as `8MiB`, `512KiB` or bytes, at most 16MiB",
    "most statement bytes per MongoDB write command",
);
pub const BATCH_WAIT: Var = var(
    "TIDEGATE_BATCH_WAIT",
    "20ms",
    "a duration; `0s` writes whatever one take returns",
    "longest a short batch waits for more jobs before it is written",
);
pub const LOCK_DURATION: Var = var(
    "TIDEGATE_LOCK_DURATION",
    "30s",
    "a duration of at least 100ms",
    "how long a taken job stays locked without an extension (extended every half of it)",
);
pub const BATCH_TIMEOUT: Var = var(
    "TIDEGATE_BATCH_TIMEOUT",
    "1m",
    "a duration of at least 1s",
    "a batch still in the pipeline after this long is abandoned (its database calls dropped): its jobs go back to be retried with backoff, an attempt counted, instead of holding their locks",
);
pub const STALLED_INTERVAL: Var = var(
    "TIDEGATE_STALLED_INTERVAL",
    "30s",
    "a duration of at least 10ms",
    "how often the stalled check runs, across all workers of a queue",
);
pub const MAX_STALLED: Var = var(
    "TIDEGATE_MAX_STALLED",
    "1",
    "an integer 0-1000",
    "times a job may stall (its worker lost) before it fails",
);
pub const KEEP_COMPLETED: Var = var(
    "TIDEGATE_KEEP_COMPLETED",
    "50000",
    "`all`, a count (`0` removes at once), an age such as `7d`, or both: `50000,7d`",
    "completed jobs kept in Redis, unless a job's own `removeOnComplete` says otherwise",
);
pub const KEEP_FAILED: Var = var(
    "TIDEGATE_KEEP_FAILED",
    "all",
    "as TIDEGATE_KEEP_COMPLETED",
    "failed jobs kept in Redis, unless a job's own `removeOnFail` says otherwise",
);
pub const ATTEMPTS: Var = var(
    "TIDEGATE_ATTEMPTS",
    "3",
    "an integer 1-100",
    "tries per job tidegate plans (the first included)",
);
pub const BACKOFF: Var = var(
    "TIDEGATE_BACKOFF",
    "exponential:5s",
    "`fixed:<duration>` or `exponential:<duration>`",
    "wait before a planned job's next try (exponential doubles it each time)",
);
pub const MONGODB_POOL_SIZE: Var = var(
    "TIDEGATE_MONGODB_POOL_SIZE",
    "50",
    "an integer 1-1000",
    "most connections to MongoDB per process",
);
pub const MONGODB_TIMEOUT: Var = var(
    "TIDEGATE_MONGODB_TIMEOUT",
    "10s",
    "a duration",
    "connect and server-selection time limit",
);
pub const MONGODB_OP_TIMEOUT: Var = var(
    "TIDEGATE_MONGODB_OP_TIMEOUT",
    "30s",
    "a duration of at least 100ms",
    "time limit of each MongoDB operation: sent as `maxTimeMS` where the command takes one, and kept by tidegate too (2 s later) for a server or connection that never answers",
);
pub const WRITE_CONCERN: Var = var(
    "TIDEGATE_WRITE_CONCERN",
    "server",
    "`server` (the server's default), `majority`, or a number of nodes",
    "write concern of the bulk writes",
);
pub const PLAN_LEASE: Var = var(
    "TIDEGATE_PLAN_LEASE",
    "10m",
    "a duration",
    "how long one replica holds the right to plan a scheduled run",
);
pub const RUN_STALL_AFTER: Var = var(
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
    &SCHEDULE,
    &TIMEZONE,
    &RATE_FLOOR,
    &RATE_CEILING,
    &TARGET_CPU,
    &TARGET_LATENCY,
    &TARGET_READ_LATENCY,
    &CONTROL_INTERVAL,
    &BUDGET,
    &BUDGET_WEIGHT,
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

/// The effective configuration. Built only by [`Settings::from_lookup`], so every value in it
/// has been validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis_url: String,
    pub mongodb_uri: String,
    pub database: String,
    pub http_addr: SocketAddr,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub ready_timeout: Duration,
    pub start_timeout: Duration,
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub control: ControlOptions,
    pub slack_webhook_url: Option<String>,
    /// The back-office: its token (off when `None`) and address.
    pub admin_token: Option<String>,
    pub admin_addr: SocketAddr,
    pub queue: String,
    pub queue_prefix: String,
    pub worker: WorkerOptions,
    pub store: StoreOptions,
    /// Attempts and backoff of the jobs tidegate plans.
    pub job_attempts: u32,
    pub job_backoff: Backoff,
    pub plan_lease: Duration,
    pub run_stall_after: Duration,
    /// Each variable's effective text, secrets redacted, for `tidegate config`.
    effective: Vec<(&'static Var, String)>,
}

/// One rejected variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub var: &'static str,
    pub message: String,
}

/// All rejected variables of one read.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Invalid>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.0.len())?;
        if self.0.len() != 1 {
            write!(f, "s")?;
        }
        write!(f, "):")?;
        for invalid in &self.0 {
            write!(f, "\n  {}: {}", invalid.var, invalid.message)?;
        }
        Ok(())
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every variable through `lookup` (an empty value counts as unset) and validates it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup: &lookup,
            errors: Vec::new(),
            effective: Vec::new(),
        };
        let redis_url = r.read(&REDIS_URL, |v| url_with_scheme(v, &["redis", "rediss"]));
        let mongodb_uri = r.read(&MONGODB_URI, |v| {
            url_with_scheme(v, &["mongodb", "mongodb+srv"])
        });
        let database = r.read(&DATABASE, database_name);
        let http_addr = r.read(&HTTP_ADDR, |v| {
            SocketAddr::from_str(v).map_err(|e| e.to_string())
        });
        let log_filter = r.read(&LOG, |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| v.to_owned())
                .map_err(|e| e.to_string())
        });
        let log_format = r.read(&LOG_FORMAT, |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("unknown format".into()),
        });
        let shutdown_timeout = r.read(&SHUTDOWN_TIMEOUT, duration);
        let ready_timeout = r.read(&READY_TIMEOUT, duration);
        let start_timeout = r.read(&START_TIMEOUT, |v| at_least(v, Duration::from_secs(1)));
        let schedule = r.read(&SCHEDULE, cron_schedule);
        let timezone = r.read(&TIMEZONE, |v| {
            chrono_tz::Tz::from_str(v).map_err(|_| "unknown timezone".into())
        });
        let rate_floor = r.read(&RATE_FLOOR, positive_number);
        let rate_ceiling = r.read(&RATE_CEILING, positive_number);
        if let (Some(floor), Some(ceiling)) = (rate_floor, rate_ceiling)
            && floor > ceiling
        {
            r.errors.push(Invalid {
                var: RATE_FLOOR.name,
                message: format!(
                    "{floor} is above {}={ceiling}; accepted: {}",
                    RATE_CEILING.name, RATE_FLOOR.accepted
                ),
            });
        }
        let target_cpu = r.read(&TARGET_CPU, positive_number);
        let target_latency = r.read(&TARGET_LATENCY, |v| at_least(v, Duration::from_micros(1)));
        let target_read_latency = r.read(&TARGET_READ_LATENCY, |v| {
            optional(v, |v| at_least(v, Duration::from_micros(1)))
        });
        let control_interval = r.read(&CONTROL_INTERVAL, |v| {
            at_least(v, Duration::from_millis(100))
        });
        let budget = r.read(&BUDGET, |v| {
            optional(v, |v| match v.chars().find(|c| "{} ".contains(*c)) {
                Some(c) => Err(format!("contains {c:?}")),
                None => Ok(v.to_owned()),
            })
        });
        let budget_weight = r.read(&BUDGET_WEIGHT, positive_number);
        let prometheus_url = r.read(&PROMETHEUS_URL, |v| {
            optional(v, |v| url_with_scheme(v, &["http", "https"]))
        });
        let prometheus_cpu = r.read(&PROMETHEUS_CPU_QUERY, |v| optional(v, |v| Ok(v.to_owned())));
        let prometheus_latency = r.read(&PROMETHEUS_LATENCY_QUERY, |v| {
            optional(v, |v| Ok(v.to_owned()))
        });
        let prometheus_read_latency = r.read(&PROMETHEUS_READ_LATENCY_QUERY, |v| {
            optional(v, |v| Ok(v.to_owned()))
        });
        if let Some(None) = prometheus_url {
            for (var, query) in [
                (&PROMETHEUS_CPU_QUERY, &prometheus_cpu),
                (&PROMETHEUS_LATENCY_QUERY, &prometheus_latency),
                (&PROMETHEUS_READ_LATENCY_QUERY, &prometheus_read_latency),
            ] {
                if let Some(Some(_)) = query {
                    r.errors.push(Invalid {
                        var: var.name,
                        message: format!(
                            "is set but {} is empty; accepted: {}",
                            PROMETHEUS_URL.name, var.accepted
                        ),
                    });
                }
            }
        }
        let slack_webhook_url = r.read(&SLACK_WEBHOOK_URL, |v| {
            optional(v, |v| {
                let url = url_with_scheme(v, &["https", "http"])?;
                if url.starts_with("http://") && !loopback(&url) {
                    return Err("http:// is accepted only to a loopback host (the URL is a secret: use https://)".into());
                }
                Ok(url)
            })
        });
        let admin_token = r.read(&ADMIN_TOKEN, |v| {
            optional(v, |v| {
                if v.chars().count() < 16 {
                    Err("shorter than 16 characters".into())
                } else {
                    Ok(v.to_owned())
                }
            })
        });
        let admin_addr = r.read(&ADMIN_ADDR, |v| {
            SocketAddr::from_str(v).map_err(|e| e.to_string())
        });
        let queue = r.read(&QUEUE, key_part);
        let queue_prefix = r.read(&QUEUE_PREFIX, key_part);
        let workers = r.read(&WORKERS, |v| integer(v, 1, 256));
        let batch_docs = r.read(&BATCH_DOCS, |v| integer(v, 1, 100_000));
        let batch_bytes = r.read(&BATCH_BYTES, byte_size);
        let batch_wait = r.read(&BATCH_WAIT, duration);
        let lock_duration = r.read(&LOCK_DURATION, |v| at_least(v, Duration::from_millis(100)));
        let batch_timeout = r.read(&BATCH_TIMEOUT, |v| at_least(v, Duration::from_secs(1)));
        let stalled_interval = r.read(&STALLED_INTERVAL, |v| {
            at_least(v, Duration::from_millis(10))
        });
        let max_stalled = r.read(&MAX_STALLED, |v| integer(v, 0, 1000));
        let keep_completed = r.read(&KEEP_COMPLETED, retention);
        let keep_failed = r.read(&KEEP_FAILED, retention);
        let attempts = r.read(&ATTEMPTS, |v| integer(v, 1, 100));
        let backoff = r.read(&BACKOFF, backoff_spec);
        let pool_size = r.read(&MONGODB_POOL_SIZE, |v| integer(v, 1, 1000));
        let mongodb_timeout = r.read(&MONGODB_TIMEOUT, duration);
        let mongodb_op_timeout = r.read(&MONGODB_OP_TIMEOUT, |v| {
            at_least(v, Duration::from_millis(100))
        });
        let write_concern = r.read(&WRITE_CONCERN, write_concern);
        let plan_lease = r.read(&PLAN_LEASE, duration);
        let run_stall_after = r.read(&RUN_STALL_AFTER, |v| at_least(v, Duration::from_secs(1)));

        let budget = budget.map(|name| {
            name.unwrap_or_else(|| database_hosts(mongodb_uri.as_deref().unwrap_or_default()))
        });
        // Every field is Some exactly when its variable was valid.
        let settings = (|| {
            Some(Settings {
                redis_url: redis_url?,
                mongodb_uri: mongodb_uri?,
                database: database?,
                http_addr: http_addr?,
                log_filter: log_filter?,
                log_format: log_format?,
                ready_timeout: ready_timeout?,
                start_timeout: start_timeout?,
                schedule: schedule?,
                timezone: timezone?,
                control: ControlOptions {
                    interval: control_interval?,
                    controller: controller::Config {
                        target_cpu: target_cpu?,
                        target_latency: target_latency?.as_secs_f64(),
                        target_read_latency: target_read_latency?.map(|d| d.as_secs_f64()),
                        floor: rate_floor?,
                        ceiling: rate_ceiling?,
                        interval: control_interval?.as_secs_f64(),
                        max_batch: batch_docs? as usize,
                        ..controller::Config::default()
                    },
                    budget: budget?,
                    weight: budget_weight?,
                    prometheus_url: prometheus_url?,
                    prometheus_cpu: prometheus_cpu?,
                    prometheus_latency: prometheus_latency?,
                    prometheus_read_latency: prometheus_read_latency?,
                },
                slack_webhook_url: slack_webhook_url?,
                admin_token: admin_token?,
                admin_addr: admin_addr?,
                queue: queue?,
                queue_prefix: queue_prefix?,
                worker: WorkerOptions {
                    workers: workers? as usize,
                    batch_docs: batch_docs? as usize,
                    batch_wait: batch_wait?,
                    lock_duration: lock_duration?,
                    batch_timeout: batch_timeout?,
                    stalled_interval: stalled_interval?,
                    max_stalled: max_stalled? as u32,
                    shutdown_timeout: shutdown_timeout?,
                    keep_completed: keep_completed?,
                    keep_failed: keep_failed?,
                    ..WorkerOptions::default()
                },
                store: StoreOptions {
                    pool_size: pool_size? as u32,
                    connect_timeout: mongodb_timeout?,
                    op_timeout: mongodb_op_timeout?,
                    write_concern: write_concern?,
                    batch_docs: batch_docs? as usize,
                    batch_bytes: batch_bytes?,
                },
                job_attempts: attempts? as u32,
                job_backoff: backoff?,
                plan_lease: plan_lease?,
                run_stall_after: run_stall_after?,
                effective: std::mem::take(&mut r.effective),
            })
        })();
        match settings {
            Some(settings) if r.errors.is_empty() => Ok(settings),
            _ => Err(ConfigError(r.errors)),
        }
    }

    /// The effective value of each variable, as `tidegate config` prints it: secrets redacted.
    pub fn effective(&self) -> &[(&'static Var, String)] {
        &self.effective
    }
}

/// The README's settings table, generated so that it cannot drift from [`VARS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| Variable | Meaning | Default | Accepted |\n|---|---|---|---|\n");
    for v in VARS {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            v.name,
            v.meaning,
            v.default,
            v.accepted.replace('|', "\\|")
        ));
    }
    out
}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
    errors: Vec<Invalid>,
    effective: Vec<(&'static Var, String)>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn read<T>(
        &mut self,
        var: &'static Var,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = (self.lookup)(var.name).filter(|v| !v.trim().is_empty());
        let text = value.as_deref().unwrap_or(var.default).trim();
        match parse(text) {
            Ok(parsed) => {
                let shown = match var.secret {
                    Secret::No => text.to_owned(),
                    Secret::Credentials => redact_url(text),
                    Secret::Url => redact_path(text),
                    Secret::Whole if text.is_empty() => String::new(),
                    Secret::Whole => "****".to_owned(),
                };
                self.effective.push((var, shown));
                Some(parsed)
            }
            Err(reason) => {
                let shown = match var.secret {
                    Secret::No => format!("{text:?}"),
                    Secret::Credentials | Secret::Url | Secret::Whole => "<redacted>".to_owned(),
                };
                self.errors.push(Invalid {
                    var: var.name,
                    message: format!("{shown} is invalid ({reason}); accepted: {}", var.accepted),
                });
                None
            }
        }
    }
}

fn url_with_scheme(value: &str, schemes: &[&str]) -> Result<String, String> {
    let scheme = value
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .ok_or("not a URL")?;
    if !schemes.contains(&scheme) {
        return Err(format!("scheme {scheme:?} is not supported"));
    }
    Ok(value.to_owned())
}

fn database_name(value: &str) -> Result<String, String> {
    if value.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    if let Some(c) = value.chars().find(|c| "/\\. \"$".contains(*c)) {
        return Err(format!("contains {c:?}"));
    }
    Ok(value.to_owned())
}

/// The longest duration any setting takes: longer ones are typos (and would overflow the
/// clocks and Redis' millisecond expiries they feed).
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn duration(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err(format!(
            "longer than {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// Whether a URL's host is a loopback address (`localhost`, 127.0.0.0/8, `[::1]`).
fn loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn integer(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} is outside {min}-{max}")),
        Err(_) => Err("not a whole number".into()),
    }
}

fn at_least(value: &str, min: Duration) -> Result<Duration, String> {
    let d = duration(value)?;
    if d < min {
        return Err(format!("shorter than {}", humantime::format_duration(min)));
    }
    Ok(d)
}

/// The hosts a MongoDB connection string names, sorted and joined by `,` (without scheme,
/// credentials, database or options): the default name of the database's write budget, the
/// same for every process that writes to that database however its URI is spelled.
pub fn database_hosts(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let mut hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts.join(",")
}

fn key_part(value: &str) -> Result<String, String> {
    if value.contains(':') {
        return Err("contains ':'".into());
    }
    Ok(value.to_owned())
}

fn byte_size(value: &str) -> Result<usize, String> {
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: usize = digits.parse().map_err(|_| "not a size".to_owned())?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        other => return Err(format!("unknown unit {other:?}")),
    };
    match n.checked_mul(scale) {
        Some(bytes) if (1..=16 * 1024 * 1024).contains(&bytes) => Ok(bytes),
        _ => Err("not between 1 byte and 16MiB".into()),
    }
}

/// `all`, a count, an age, or `count,age`.
fn retention(value: &str) -> Result<Retention, String> {
    if value == "all" {
        return Ok(Retention::KEEP_ALL);
    }
    let mut keep = Retention::KEEP_ALL;
    for part in value.split(',').map(str::trim) {
        if let Ok(count) = part.parse::<u64>() {
            keep.count = Some(count);
        } else {
            keep.age = Some(
                duration(part).map_err(|_| format!("{part:?} is neither a count nor an age"))?,
            );
        }
    }
    Ok(keep)
}

fn backoff_spec(value: &str) -> Result<Backoff, String> {
    let (kind, delay) = value.split_once(':').ok_or("missing `:`")?;
    let kind = match kind {
        "fixed" => BackoffKind::Fixed,
        "exponential" => BackoffKind::Exponential,
        other => return Err(format!("unknown kind {other:?}")),
    };
    Ok(Backoff::Spec {
        kind,
        delay: duration(delay)?.as_millis() as u64,
        jitter: None,
    })
}

fn write_concern(value: &str) -> Result<Option<WriteConcern>, String> {
    match value {
        "server" => Ok(None),
        "majority" => Ok(Some(WriteConcern::majority())),
        n => n
            .parse::<u32>()
            .map(|w| Some(WriteConcern::nodes(w)))
            .map_err(|_| "not `server`, `majority` or a number".into()),
    }
}

/// Empty means "not used"; anything else must parse.
fn optional<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    parse(value).map(Some)
}

fn positive_number(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        Ok(_) => Err("not a positive finite number".into()),
        Err(_) => Err("not a number".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_webhook_url_shows_only_its_host() {
        let s = read(&[(
            "TIDEGATE_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/secretkey",
        )])
        .expect("valid");
        let shown = s
            .effective()
            .iter()
            .find(|(v, _)| v.name == "TIDEGATE_SLACK_WEBHOOK_URL")
            .map(|(_, shown)| shown.clone());
        assert_eq!(shown.as_deref(), Some("https://hooks.slack.com/****"));
        assert_eq!(redact_path(""), "");
    }

    #[test]
    fn a_prometheus_password_is_never_shown() {
        let s = read(&[(
            "TIDEGATE_PROMETHEUS_URL",
            "https://tidegate:pr0m-secret@prometheus.example.com:9090",
        )])
        .expect("valid");
        let shown = s
            .effective()
            .iter()
            .find(|(v, _)| v.name == "TIDEGATE_PROMETHEUS_URL")
            .map(|(_, shown)| shown.clone());
        assert_eq!(
            shown.as_deref(),
            Some("https://tidegate:****@prometheus.example.com:9090")
        );
    }

    #[test]
    fn a_webhook_over_plain_http_is_refused_unless_it_stays_on_this_machine() {
        let err = read(&[(
            "TIDEGATE_SLACK_WEBHOOK_URL",
            "http://hooks.example.com/services/T0/B0/key",
        )])
        .expect_err("plain http leaks the key");
        assert_eq!(err.0[0].var, "TIDEGATE_SLACK_WEBHOOK_URL");
        assert!(err.to_string().contains("loopback"), "{err}");
        for local in [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://[::1]:8080/hook",
        ] {
            read(&[("TIDEGATE_SLACK_WEBHOOK_URL", local)]).expect(local);
        }
        assert!(!loopback("http://127.0.0.1.example.com/x"));
        assert!(!loopback("http://localhost@evil.example.com/x"));
    }

    #[test]
    fn absurd_durations_are_refused() {
        let err = read(&[("TIDEGATE_LOCK_DURATION", "999999999999999h")]).expect_err("absurd");
        assert_eq!(err.0[0].var, "TIDEGATE_LOCK_DURATION");
        assert!(err.to_string().contains("longer than 30days"), "{err}");
        read(&[("TIDEGATE_LOCK_DURATION", "30days")]).expect("the longest accepted");
    }

    #[test]
    fn the_admin_token_is_never_shown_and_must_be_long() {
        let s = read(&[("TIDEGATE_ADMIN_TOKEN", "a-long-enough-token-1234")]).expect("valid");
        let shown = s
            .effective()
            .iter()
            .find(|(v, _)| v.name == "TIDEGATE_ADMIN_TOKEN")
            .map(|(_, shown)| shown.clone());
        assert_eq!(shown.as_deref(), Some("****"));
        let err = read(&[("TIDEGATE_ADMIN_TOKEN", "short")]).expect_err("too short");
        assert_eq!(err.0[0].var, "TIDEGATE_ADMIN_TOKEN");
        assert!(
            !err.to_string().contains("short\""),
            "the value is not echoed: {err}"
        );
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid() {
        let s = read(&[]).expect("defaults must validate");
        assert_eq!(s.timezone, chrono_tz::Asia::Seoul);
        assert_eq!(s.http_addr.port(), 9840);
        assert_eq!(s.log_format, LogFormat::Text);
    }

    /// The env list is where defaults are stated (and documented); each part's own `Default`,
    /// which its tests and library users start from, must say the same.
    #[test]
    fn each_parts_default_is_the_env_lists() {
        let s = read(&[]).expect("defaults");
        let same = |what: &str, settings: String, default: String| {
            assert_eq!(
                settings, default,
                "{what}: the env list's defaults and Default differ"
            );
        };
        same(
            "worker",
            format!("{:?}", s.worker),
            format!("{:?}", WorkerOptions::default()),
        );
        same(
            "store",
            format!("{:?}", s.store),
            format!("{:?}", StoreOptions::default()),
        );
        let mut control = ControlOptions::default();
        // The budget's name defaults to the URI's hosts, which no Default can know.
        control.budget = s.control.budget.clone();
        same(
            "control",
            format!("{:?}", s.control),
            format!("{control:?}"),
        );
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let err = read(&[
            ("TIDEGATE_RATE_CEILING", "fast"),
            ("TIDEGATE_TIMEZONE", "Mars/Olympus"),
            ("TIDEGATE_LOG_FORMAT", "xml"),
            ("TIDEGATE_SCHEDULE", "every day"),
        ])
        .expect_err("must fail");
        let vars: Vec<_> = err.0.iter().map(|i| i.var).collect();
        assert_eq!(
            vars,
            [
                "TIDEGATE_LOG_FORMAT",
                "TIDEGATE_SCHEDULE",
                "TIDEGATE_TIMEZONE",
                "TIDEGATE_RATE_CEILING"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("\"Mars/Olympus\" is invalid (unknown timezone)"),
            "{text}"
        );
        assert!(text.contains("accepted: an IANA timezone name"), "{text}");
        assert!(
            text.contains("\"fast\" is invalid (not a number)"),
            "{text}"
        );
    }

    #[test]
    fn floor_above_ceiling_is_rejected() {
        let err = read(&[
            ("TIDEGATE_RATE_FLOOR", "500"),
            ("TIDEGATE_RATE_CEILING", "100"),
        ])
        .expect_err("must fail");
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].var, "TIDEGATE_RATE_FLOOR");
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let err = read(&[("MONGODB_URI", "postgres://u:hunter2@db")]).expect_err("must fail");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn empty_means_default() {
        let s = read(&[("TIDEGATE_TIMEZONE", " ")]).expect("valid");
        assert_eq!(s.timezone, chrono_tz::Asia::Seoul);
    }

    #[test]
    fn limits_parse_into_worker_and_store_options() {
        let s = read(&[
            ("TIDEGATE_BATCH_DOCS", "250"),
            ("TIDEGATE_BATCH_BYTES", "512KiB"),
            ("TIDEGATE_KEEP_COMPLETED", "1000,7d"),
            ("TIDEGATE_KEEP_FAILED", "0"),
            ("TIDEGATE_BACKOFF", "fixed:2s"),
            ("TIDEGATE_WRITE_CONCERN", "majority"),
        ])
        .expect("valid");
        assert_eq!((s.worker.batch_docs, s.store.batch_docs), (250, 250));
        assert_eq!(s.store.batch_bytes, 512 * 1024);
        assert_eq!(s.worker.keep_completed.count, Some(1000));
        assert_eq!(
            s.worker.keep_completed.age,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(s.worker.keep_failed, Retention::keep_last(0));
        assert_eq!(
            s.job_backoff,
            Backoff::Spec {
                kind: BackoffKind::Fixed,
                delay: 2000,
                jitter: None
            }
        );
        assert!(s.store.write_concern.is_some());
    }

    #[test]
    fn bad_limits_name_their_bounds() {
        let err = read(&[
            ("TIDEGATE_WORKERS", "0"),
            ("TIDEGATE_BATCH_BYTES", "32MiB"),
            ("TIDEGATE_KEEP_COMPLETED", "lots"),
            ("TIDEGATE_BACKOFF", "linear:1s"),
            ("TIDEGATE_QUEUE", "a:b"),
        ])
        .expect_err("must fail");
        let text = err.to_string();
        for needle in [
            "TIDEGATE_WORKERS: \"0\" is invalid (0 is outside 1-256)",
            "TIDEGATE_BATCH_BYTES: \"32MiB\" is invalid (not between 1 byte and 16MiB)",
            "TIDEGATE_KEEP_COMPLETED: \"lots\" is invalid",
            "TIDEGATE_BACKOFF: \"linear:1s\" is invalid (unknown kind \"linear\")",
            "TIDEGATE_QUEUE: \"a:b\" is invalid (contains ':')",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn the_budget_is_named_by_the_databases_hosts_however_the_uri_spells_them() {
        assert_eq!(
            database_hosts("mongodb://127.0.0.1:27190"),
            "127.0.0.1:27190"
        );
        assert_eq!(
            database_hosts("mongodb://u:p%40ss@b:27017,a:27017/app?replicaSet=rs0"),
            "a:27017,b:27017"
        );
        assert_eq!(
            database_hosts("mongodb+srv://user:pw@cluster0.ab1cd.mongodb.net/?retryWrites=true"),
            "cluster0.ab1cd.mongodb.net"
        );
        let s = read(&[("MONGODB_URI", "mongodb://db1:27017,db0:27017/x")]).expect("valid");
        assert_eq!(s.control.budget, "db0:27017,db1:27017");
        let s = read(&[
            ("TIDEGATE_BUDGET", "orders-db"),
            ("TIDEGATE_BUDGET_WEIGHT", "3"),
        ])
        .expect("valid");
        assert_eq!(
            (s.control.budget.as_str(), s.control.weight),
            ("orders-db", 3.0)
        );
        let err = read(&[("TIDEGATE_BUDGET", "a{b}")]).expect_err("a hash tag");
        assert_eq!(err.0[0].var, "TIDEGATE_BUDGET");
    }

    #[test]
    fn effective_lists_every_variable_once() {
        let s = read(&[]).expect("valid");
        let names: Vec<_> = s.effective().iter().map(|(v, _)| v.name).collect();
        let all: Vec<_> = VARS.iter().map(|v| v.name).collect();
        assert_eq!(names, all);
    }
}
