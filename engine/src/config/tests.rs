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
    assert_eq!(s.timezone, chrono_tz::UTC);
    assert_eq!(s.http_addr.port(), 9840);
    assert_eq!(s.log_format, LogFormat::Text);
}

/// A part's `Default` is where its defaults are written; the env list writes them out as
/// text (the README's table, `tidegate config`), and that text must read back as the same
/// values: a formatting the readers do not parse (`1m` against `60s`, `8MiB`) fails here.
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
    assert_eq!(s.timezone, chrono_tz::UTC);
}

#[test]
fn by_default_no_schedule_fires() {
    let s = read(&[]).expect("defaults");
    assert!(s.schedule.is_none(), "the schedule is off unless asked for");
    let s = read(&[("TIDEGATE_SCHEDULE", "0 1 * * 0")]).expect("valid");
    assert_eq!(s.schedule.as_ref().map(|c| c.source()), Some("0 1 * * 0"));
    assert!(
        read(&[("TIDEGATE_SCHEDULE", "off")])
            .expect("off")
            .schedule
            .is_none()
    );
}

#[test]
fn a_bad_schedule_is_quoted_as_written() {
    let err = read(&[("TIDEGATE_SCHEDULE", "0 1 * * 8")]).expect_err("weekday 8");
    let text = err.to_string();
    assert!(
        text.contains("TIDEGATE_SCHEDULE: \"0 1 * * 8\" is invalid ("),
        "{text}"
    );
    assert!(!text.contains("0 0 1"), "no rewritten expression: {text}");
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

#[test]
fn redis_url_takes_a_server_a_clusters_nodes_or_sentinels() {
    for ok in [
        "redis://127.0.0.1:6379",
        "redis://a:7000,redis://b:7001",
        "redis+sentinel://:pw@s1:26379,s2:26379/mymaster",
    ] {
        assert_eq!(read(&[("REDIS_URL", ok)]).expect(ok).redis_url, ok);
    }
    for bad in [
        "redis://a:7000,http://b",
        "redis+sentinel://s1:26379",
        "127.0.0.1:6379",
    ] {
        let err = read(&[("REDIS_URL", bad)]).expect_err(bad);
        assert_eq!(err.0[0].var, "REDIS_URL", "{bad}");
    }
}

#[test]
fn a_secret_can_be_a_file_but_not_both() {
    let dir = std::env::temp_dir().join(format!("tidegate_config_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("mongodb_uri");
    std::fs::write(&file, "mongodb://app:from-file@db1:27017/prod\n").expect("write");
    let path = file.to_string_lossy().into_owned();
    let s = read(&[("MONGODB_URI_FILE", &path)]).expect("valid");
    assert_eq!(s.mongodb_uri, "mongodb://app:from-file@db1:27017/prod");
    assert_eq!(s.source("MONGODB_URI"), "file");
    assert_eq!(
        s.database, "prod",
        "the URI from the file names the database"
    );
    let err = read(&[
        ("MONGODB_URI_FILE", &path),
        ("MONGODB_URI", "mongodb://db2"),
    ])
    .expect_err("both");
    assert!(
        err.to_string()
            .contains("both MONGODB_URI and MONGODB_URI_FILE"),
        "{err}"
    );
    let err = read(&[("TIDEGATE_ADMIN_TOKEN_FILE", "/nonexistent/token")]).expect_err("missing");
    assert_eq!(err.0[0].var, "TIDEGATE_ADMIN_TOKEN");
    assert!(
        err.to_string()
            .contains("TIDEGATE_ADMIN_TOKEN_FILE=\"/nonexistent/token\""),
        "{err}"
    );
    // Only secrets are read from files.
    let s = read(&[("TIDEGATE_QUEUE_FILE", &path)]).expect("ignored");
    assert_eq!(s.queue, "scoreCollect");
    let _ = std::fs::remove_dir_all(&dir);
}
