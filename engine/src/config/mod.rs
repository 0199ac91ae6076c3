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

use mongodb::options::{ConnectionString, WriteConcern};

use crate::control::controller;
use crate::control::govern::Fallback;
use crate::control::pacer::ControlOptions;
use crate::queue::{Backoff, BackoffKind, Retention};
use crate::redact::{redact_path, redact_url};
use crate::schedule::Schedule;
use crate::schedule::cron::schedule_setting;
use crate::store::StoreOptions;
use crate::telemetry::LogFormat;
use crate::worker::{UnknownJobs, WorkerOptions};

mod vars;

pub use vars::*;

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
    /// `None`: no scheduled planning (`off`).
    pub schedule: Option<Schedule>,
    pub schedule_catch_up: Duration,
    pub timezone: chrono_tz::Tz,
    pub control: ControlOptions,
    /// BullMQ queues others work, governed through their global rate limit, with weights.
    pub govern: Vec<(String, f64)>,
    pub govern_fallback: Fallback,
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
    /// Where each effective value came from: `env`, `default`, or `MONGODB_URI` (the
    /// connection string said it, and it wins).
    sources: Vec<(&'static str, &'static str)>,
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
            sources: Vec::new(),
        };
        let redis_url = r.read(&REDIS_URL, |v| {
            if let Some(checked) = crate::queue::check_sentinel_url(v) {
                return checked.map(|()| v.to_owned());
            }
            // Several URLs are a cluster's seed nodes; each must be a URL of its own.
            for node in v.split(',') {
                url_with_scheme(node.trim(), &["redis", "rediss"])?;
            }
            Ok(v.to_owned())
        });
        let mongodb_uri = r.read(&MONGODB_URI, |v| {
            url_with_scheme(v, &["mongodb", "mongodb+srv"])?;
            ConnectionString::parse(v)
                .map(|_| v.to_owned())
                .map_err(|e| without_password(&e.to_string(), v))
        });
        let uri = mongodb_uri
            .as_deref()
            .and_then(|v| ConnectionString::parse(v).ok());
        let mut database = r.read(&DATABASE, database_name);
        if let Some(named) = uri.as_ref().and_then(|u| u.default_database.clone()) {
            r.said_by_uri(&DATABASE, &named);
            database = Some(named);
        }
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
        let unknown_jobs = r.read(&UNKNOWN_JOBS, |v| match v {
            "refuse" => Ok(UnknownJobs::Refuse),
            "leave" => Ok(UnknownJobs::Leave),
            "fail" => Ok(UnknownJobs::Fail),
            _ => Err("unknown choice".into()),
        });
        let schedule = r.read(&SCHEDULE, schedule_setting);
        let schedule_catch_up = r.read(&SCHEDULE_CATCH_UP, duration);
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
        let govern = r.read(&GOVERN, governed_queues);
        let govern_fallback = r.read(&GOVERN_FALLBACK, Fallback::parse);
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

        // The connection string is authoritative: the settings fill what it does not say.
        let store = (|| {
            let options = StoreOptions {
                pool_size: pool_size? as u32,
                connect_timeout: mongodb_timeout?,
                selection_timeout: mongodb_timeout?,
                op_timeout: mongodb_op_timeout?,
                write_concern: write_concern?,
                batch_docs: batch_docs? as usize,
                batch_bytes: batch_bytes?,
                ..StoreOptions::default()
            };
            let Some(uri) = &uri else {
                return Some(options);
            };
            let (options, said) = options.under(uri);
            for option in said {
                match option {
                    "maxPoolSize" => {
                        r.said_by_uri(&MONGODB_POOL_SIZE, &options.pool_size.to_string())
                    }
                    "connectTimeoutMS" | "serverSelectionTimeoutMS" => r.said_by_uri(
                        &MONGODB_TIMEOUT,
                        &format!(
                            "connect {}, server selection {}",
                            humantime::format_duration(options.connect_timeout),
                            humantime::format_duration(options.selection_timeout)
                        ),
                    ),
                    "w" => {
                        let w = options.write_concern.as_ref().and_then(|c| c.w.as_ref());
                        r.said_by_uri(&WRITE_CONCERN, &format!("w: {w:?}"));
                    }
                    _ => {}
                }
            }
            Some(options)
        })();
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
                schedule_catch_up: schedule_catch_up?,
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
                govern: govern?,
                govern_fallback: govern_fallback?,
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
                    unknown_jobs: unknown_jobs?,
                    ..WorkerOptions::default()
                },
                store: store?,
                job_attempts: attempts? as u32,
                job_backoff: backoff?,
                plan_lease: plan_lease?,
                run_stall_after: run_stall_after?,
                effective: std::mem::take(&mut r.effective),
                sources: std::mem::take(&mut r.sources),
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

    /// Where the effective value of the variable `name` came from: `env`, `default`, or
    /// `MONGODB_URI` (the connection string said it, and it wins over the variable).
    pub fn source(&self, name: &str) -> &'static str {
        self.sources
            .iter()
            .find(|(var, _)| *var == name)
            .map_or("default", |(_, source)| source)
    }
}

/// One variable a program declares beside the engine's (the `tidegate` command's
/// `TIDEGATE_APPS`), read as [`Settings::from_lookup`] reads each of [`VARS`]: its value, its
/// effective text (secrets redacted) and where it came from; or why it is invalid.
pub fn read_var<T>(
    var: &'static Var,
    lookup: impl Fn(&str) -> Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<(T, String, &'static str), Invalid> {
    let mut r = Reader {
        lookup: &lookup,
        errors: Vec::new(),
        effective: Vec::new(),
        sources: Vec::new(),
    };
    match r.read(var, parse) {
        Some(value) => {
            let shown = r
                .effective
                .pop()
                .map(|(_, shown)| shown)
                .unwrap_or_default();
            let source = r.sources.pop().map_or("default", |(_, source)| source);
            Ok((value, shown, source))
        }
        None => Err(r.errors.pop().unwrap_or(Invalid {
            var: var.name,
            message: "invalid".into(),
        })),
    }
}

/// The README's settings table: the engine's [`VARS`], then a program's own `extra`, generated
/// so that it cannot drift from them.
pub fn markdown_table(extra: &[&Var]) -> String {
    let mut out = String::from("| Variable | Meaning | Default | Accepted |\n|---|---|---|---|\n");
    for v in VARS.iter().chain(extra) {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            v.name,
            v.meaning,
            (v.default)(),
            v.accepted.replace('|', "\\|")
        ));
    }
    out
}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
    errors: Vec<Invalid>,
    effective: Vec<(&'static Var, String)>,
    sources: Vec<(&'static str, &'static str)>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn read<T>(
        &mut self,
        var: &'static Var,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (value, source) = match self.secret_file(var) {
            Ok(Some(value)) => (Some(value), "file"),
            Ok(None) => {
                let value = (self.lookup)(var.name).filter(|v| !v.trim().is_empty());
                let source = if value.is_some() { "env" } else { "default" };
                (value, source)
            }
            Err(message) => {
                self.errors.push(Invalid {
                    var: var.name,
                    message,
                });
                return None;
            }
        };
        self.sources.push((var.name, source));
        let default = (var.default)();
        let text = value.as_deref().unwrap_or(&default).trim();
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

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    /// A secret given as a file (`<NAME>_FILE`, as Docker and Kubernetes mount secrets): its
    /// contents without the trailing newline. Giving both the variable and its file is an
    /// error: which one was meant cannot be guessed.
    fn secret_file(&self, var: &'static Var) -> Result<Option<String>, String> {
        if var.secret == Secret::No {
            return Ok(None);
        }
        let file_var = format!("{}_FILE", var.name);
        let Some(path) = (self.lookup)(&file_var).filter(|p| !p.trim().is_empty()) else {
            return Ok(None);
        };
        if (self.lookup)(var.name).is_some_and(|v| !v.trim().is_empty()) {
            return Err(format!(
                "both {} and {file_var} are set; accepted: one of them",
                var.name
            ));
        }
        match std::fs::read_to_string(path.trim()) {
            Ok(text) => Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned())),
            Err(e) => Err(format!(
                "{file_var}={:?} cannot be read ({e}); accepted: a readable file holding the value",
                path.trim()
            )),
        }
    }

    /// Records that the connection string set what `var` would have: its value (`shown`) wins.
    fn said_by_uri(&mut self, var: &'static Var, shown: &str) {
        for (known, text) in &mut self.effective {
            if known.name == var.name {
                *text = shown.to_owned();
            }
        }
        for (name, source) in &mut self.sources {
            if *name == var.name {
                *source = if *source == "env" {
                    "MONGODB_URI; the variable is ignored"
                } else {
                    MONGODB_URI.name
                };
            }
        }
    }
}

/// `message` without the password of `uri`, should it quote it.
fn without_password(message: &str, uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    match authority
        .rsplit_once('@')
        .and_then(|(user, _)| user.split_once(':'))
    {
        Some((_, password)) if !password.is_empty() => message.replace(password, "****"),
        _ => message.to_owned(),
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
pub(crate) fn database_hosts(uri: &str) -> String {
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

/// `a,b:0.5`: queue names, each with an optional weight; each queue once.
fn governed_queues(value: &str) -> Result<Vec<(String, f64)>, String> {
    let mut queues: Vec<(String, f64)> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, weight) = match item.split_once(':') {
            Some((name, weight)) => (name.trim(), positive_number(weight.trim())?),
            None => (item, 1.0),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("`{item}` does not name a queue"));
        }
        if queues.iter().any(|(q, _)| q == name) {
            return Err(format!("`{name}` is named twice"));
        }
        queues.push((name.to_owned(), weight));
    }
    Ok(queues)
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
mod tests;
