//! The binary's configuration surface: bad values stop startup with every problem named, secrets
//! stay hidden, and the README's settings table is the generated one.

use std::process::Command;

fn tidegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    // Start from the defaults whatever the calling shell exported.
    for var in tidegate_cli::vars() {
        cmd.env_remove(var.name);
    }
    cmd
}

#[test]
fn bad_values_stop_startup_naming_each_variable() {
    let out = tidegate()
        .args(["run"])
        .env("TIDEGATE_RATE_CEILING", "lots")
        .env("TIDEGATE_TIMEZONE", "Asia/Seol")
        .env("TIDEGATE_APPS", "upsert,scores")
        .output()
        .expect("run tidegate");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The command's own variable is named beside the engine's, in the one list.
    assert!(
        stderr.contains("3 problems")
            && stderr.contains("TIDEGATE_APPS: \"upsert,scores\" is invalid (no application \"scores\"); accepted: `none`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TIDEGATE_RATE_CEILING: \"lots\" is invalid (not a number)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TIDEGATE_TIMEZONE: \"Asia/Seol\" is invalid (unknown timezone)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("accepted: an IANA timezone name"),
        "{stderr}"
    );
}

#[test]
fn config_prints_effective_settings_with_secrets_redacted() {
    let out = tidegate()
        .args(["config"])
        .env(
            "MONGODB_URI",
            "mongodb://app:hunter2@db1:27017,db2:27017/?replicaSet=rs0",
        )
        .env("TIDEGATE_TIMEZONE", "UTC")
        .output()
        .expect("run tidegate");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("mongodb://app:****@db1:27017,db2:27017/?replicaSet=rs0"),
        "{stdout}"
    );
    let tz = stdout
        .lines()
        .find(|l| l.starts_with("TIDEGATE_TIMEZONE"))
        .expect("timezone line");
    assert!(tz.contains("UTC") && tz.contains("(env)"), "{tz}");
}

#[test]
fn readme_settings_table_is_generated_from_the_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = tidegate::config::markdown_table(&[&tidegate_cli::APPS]);
    assert!(
        readme.contains(&table),
        "README's settings table is stale; regenerate it with `tidegate config --markdown`:\n{table}"
    );
}

#[test]
fn metrics_md_lists_every_metric_and_every_panel_uses_known_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/METRICS.md")).expect("METRICS.md");
    let table = tidegate::telemetry::markdown_catalogue();
    assert!(
        doc.contains(&table),
        "METRICS.md's table is stale; regenerate it with `tidegate metrics`:\n{table}"
    );
    let known: Vec<&str> = tidegate::telemetry::CATALOGUE
        .iter()
        .map(|m| m.name)
        .collect();
    let dashboards = std::fs::read_dir(format!("{root}/dashboards")).expect("dashboards/");
    for entry in dashboards {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title");
            assert!(
                doc.contains(&format!("**{title}**")),
                "METRICS.md does not list the panel {title:?} of {path:?}"
            );
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("tidegate_") {
                        continue;
                    }
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        known.contains(&base),
                        "panel {title:?} uses {word}, which tidegate does not export"
                    );
                }
            }
        }
    }
}

#[test]
fn simulate_needs_no_services_or_settings_and_writes_its_files() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "tidegate-simulate-cli-{}-{nanos}",
        std::process::id()
    ));
    let out = tidegate()
        .args(["simulate", "--users", "2000", "--out"])
        .arg(&dir)
        // Settings that stop every other command: simulate must not read them.
        .env("TIDEGATE_TIMEZONE", "Asia/Seol")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .expect("run tidegate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("SIMULATION"), "{stdout}");
    for strategy in ["naive", "fixed", "tidegate"] {
        assert!(stdout.lines().any(|l| l.starts_with(strategy)), "{stdout}");
    }
    let csv = std::fs::read_to_string(dir.join("simulation.csv")).expect("csv written");
    assert!(csv.starts_with("t_seconds,strategy,"), "{csv}");
    let svg = std::fs::read_to_string(dir.join("simulation.svg")).expect("svg written");
    assert!(svg.contains("simulat"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A date that cannot be a run's day stops every command that takes one (exit 2), naming the
/// accepted range, before it connects to anything: a run of 1900-01-01 was planned and
/// "succeeded" empty. Today is refused too: a day still going has no complete data.
#[test]
fn dates_that_cannot_be_runs_are_refused_with_the_accepted_range() {
    let today = || chrono::Utc::now().date_naive();
    let before = today();
    let yesterday = before.pred_opt().expect("a day before");
    let dates = [
        "1900-01-01".to_owned(),
        "1999-12-31".to_owned(),
        before.to_string(),
        before.succ_opt().expect("a day after").to_string(),
    ];
    for command in ["rerun", "naive", "seed-data", "demo"] {
        for date in &dates {
            let out = tidegate()
                .args([command, "--date", date])
                .env("TIDEGATE_TIMEZONE", "UTC")
                // Were the date taken, the command would wait for this Redis, then exit 1.
                .env("REDIS_URL", "redis://127.0.0.1:1")
                .env("TIDEGATE_START_TIMEOUT", "1s")
                .output()
                .expect("run tidegate");
            if today() != before {
                return; // the day turned meanwhile: yesterday moved
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} --date {date}: {stderr}"
            );
            assert!(
                stderr.contains(&format!("accepted from 2000-01-01 to {yesterday}"))
                    && stderr.contains(date.as_str()),
                "{command} --date {date}: {stderr}"
            );
        }
    }
}

/// `tidegate config`'s line of the schedule's next firings, with `schedule` in Seoul.
fn next_firings(schedule: &str) -> String {
    let out = tidegate()
        .args(["config"])
        .env("TIDEGATE_SCHEDULE", schedule)
        .env("TIDEGATE_TIMEZONE", "Asia/Seoul")
        .env("TIDEGATE_APPS", "score")
        .output()
        .expect("run tidegate");
    assert!(out.status.success(), "{schedule}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("next firings"))
        .expect("a next firings line")
        .to_owned()
}

#[test]
fn the_schedule_is_read_as_crontab_and_config_shows_its_next_three_firings() {
    let weekdays = next_firings("0 1 * * 1-5");
    let days: Vec<&str> = weekdays
        .split_once(": ")
        .expect("firings")
        .1
        .split(", ")
        .map(|firing| &firing[..3])
        .collect();
    assert_eq!(days.len(), 3, "{weekdays}");
    assert!(
        days.iter()
            .all(|d| ["Mon", "Tue", "Wed", "Thu", "Fri"].contains(d)),
        "crontab's 1-5 is Monday to Friday: {weekdays}"
    );
    assert!(weekdays.contains("01:00 KST"), "{weekdays}");
    for sunday in ["0 1 * * 0", "0 1 * * 7", "0 1 * * SUN"] {
        let line = next_firings(sunday);
        assert_eq!(line.matches("Sun ").count(), 3, "{sunday}: {line}");
    }
    assert!(next_firings("off").contains("none"));
    let out = tidegate()
        .args(["run"])
        .env("TIDEGATE_SCHEDULE", "0 1 * * 8")
        .output()
        .expect("run tidegate");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIDEGATE_SCHEDULE: \"0 1 * * 8\" is invalid ("),
        "{stderr}"
    );
}
