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

/// One environment variable: the single place its name, default and meaning are written.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub accepted: &'static str,
    pub meaning: &'static str,
    /// Secret values (or the credentials inside them) are never printed or logged.
    pub secret: bool,
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
        secret: false,
    }
}

pub const REDIS_URL: Var = Var {
    secret: true,
    ..var(
        "REDIS_URL",
        "redis://127.0.0.1:6379",
        "a redis:// or rediss:// URL",
        "Redis that holds the job queues",
    )
};
pub const MONGODB_URI: Var = Var {
    secret: true,
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
    "time limit of each dependency check behind /readyz",
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
    "slowest write pace; used when the database cannot be observed",
);
pub const RATE_CEILING: Var = var(
    "TIDEGATE_RATE_CEILING",
    "20000",
    "a number > 0 (documents/second)",
    "fastest write pace the controller may choose",
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
    &SCHEDULE,
    &TIMEZONE,
    &RATE_FLOOR,
    &RATE_CEILING,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

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
    pub shutdown_timeout: Duration,
    pub ready_timeout: Duration,
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub rate_floor: f64,
    pub rate_ceiling: f64,
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

        // Every field is Some exactly when its variable was valid.
        let settings = (|| {
            Some(Settings {
                redis_url: redis_url?,
                mongodb_uri: mongodb_uri?,
                database: database?,
                http_addr: http_addr?,
                log_filter: log_filter?,
                log_format: log_format?,
                shutdown_timeout: shutdown_timeout?,
                ready_timeout: ready_timeout?,
                schedule: schedule?,
                timezone: timezone?,
                rate_floor: rate_floor?,
                rate_ceiling: rate_ceiling?,
            })
        })();
        match settings {
            Some(settings) if r.errors.is_empty() => Ok(settings),
            _ => Err(ConfigError(r.errors)),
        }
    }

    /// The effective value of each variable, as `tidegate config` prints it: secrets redacted.
    pub fn effective(&self) -> Vec<(&'static Var, String)> {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        vec![
            (&REDIS_URL, redact_url(&self.redis_url)),
            (&MONGODB_URI, redact_url(&self.mongodb_uri)),
            (&DATABASE, self.database.clone()),
            (&HTTP_ADDR, self.http_addr.to_string()),
            (&LOG, self.log_filter.clone()),
            (&LOG_FORMAT, format.to_owned()),
            (
                &SHUTDOWN_TIMEOUT,
                humantime::format_duration(self.shutdown_timeout).to_string(),
            ),
            (
                &READY_TIMEOUT,
                humantime::format_duration(self.ready_timeout).to_string(),
            ),
            (&SCHEDULE, self.schedule.source().to_owned()),
            (&TIMEZONE, self.timezone.name().to_owned()),
            (&RATE_FLOOR, self.rate_floor.to_string()),
            (&RATE_CEILING, self.rate_ceiling.to_string()),
        ]
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
            Ok(parsed) => Some(parsed),
            Err(reason) => {
                let shown = if var.secret {
                    "<redacted>".to_owned()
                } else {
                    format!("{text:?}")
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

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| e.to_string())
}

fn positive_number(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        Ok(_) => Err("not a positive finite number".into()),
        Err(_) => Err("not a number".into()),
    }
}

/// Cron in the 5-field form people write, or the `cron` crate's own 6/7-field form.
pub fn cron_schedule(value: &str) -> Result<cron::Schedule, String> {
    let fields = value.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {value}")
    } else {
        value.to_owned()
    };
    cron::Schedule::from_str(&full).map_err(|e| e.to_string())
}

/// Hides the password in a URL's user info (`scheme://user:pass@host` → `scheme://user:****@host`).
/// Written by hand because a MongoDB seed list (`h1:1,h2:2`) is not a URL the `url` crate parses.
pub fn redact_url(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return value.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let masked = if userinfo.contains(':') {
        format!("{user}:****")
    } else {
        "****".to_owned()
    };
    format!("{scheme}://{masked}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
    fn cron_accepts_five_and_six_fields() {
        assert!(cron_schedule("0 1 * * *").is_ok());
        assert!(cron_schedule("30 0 1 * * *").is_ok());
        assert!(cron_schedule("61 1 * * *").is_err());
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact_url("mongodb://app:s3cret@h1:27017,h2:27017/db?replicaSet=rs0"),
            "mongodb://app:****@h1:27017,h2:27017/db?replicaSet=rs0"
        );
        assert_eq!(
            redact_url("redis://:pw@localhost:6379/0"),
            "redis://:****@localhost:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6390"),
            "redis://127.0.0.1:6390"
        );
        assert_eq!(
            redact_url("mongodb://h/?authSource=a@b"),
            "mongodb://h/?authSource=a@b"
        );
    }

    #[test]
    fn effective_lists_every_variable_once() {
        let s = read(&[]).expect("valid");
        let names: Vec<_> = s.effective().iter().map(|(v, _)| v.name).collect();
        let all: Vec<_> = VARS.iter().map(|v| v.name).collect();
        assert_eq!(names, all);
    }
}
