//! Every Grafana panel shows data after a real run: `tidegate demo` processes a small day on the
//! local services (paced, with FerretDB's CPU through Prometheus when FerretDB is the database)
//! while Prometheus scrapes it, beside a `tidegate run` whose schedule is on and which governs
//! a BullMQ queue; then each panel's
//! PromQL (its variables at "All", its metrics of ours narrowed to this test's two processes by
//! the label their scrape targets carry, so that series an earlier run left within
//! Prometheus' lookback do not count) is evaluated on that Prometheus over the run, as a
//! panel's time range, and each panel must return at least one series. And every dashboard can be imported
//! into any Grafana: its data source and the scrape job are variables, not our names.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The series `expr` returns over `[from, to]`, a second apart, as a Grafana panel asks.
async fn series_between(prometheus: &str, expr: &str, (from, to): (f64, f64)) -> usize {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query_range"))
        .query(&[
            ("query", expr),
            ("start", &from.to_string()),
            ("end", &to.to_string()),
            ("step", "1"),
        ])
        .send()
        .await
        .expect("Prometheus answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"].as_array().map_or(0, Vec::len)
}

/// Each dashboard file, parsed.
fn dashboards() -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        found.push((path, serde_json::from_str(&text).expect("JSON")));
    }
    found
}

/// A panel's query as Grafana sends it with every variable at "All" (`.*`).
fn at_all(expr: &str) -> String {
    ["$job", "$instance", "$queue"]
        .iter()
        .fold(expr.to_owned(), |e, var| e.replace(var, ".*"))
}

/// [`at_all`], with each selector of a metric of ours (each filters by the job variable, as
/// the test above holds) narrowed to the scrape targets labelled `test`.
fn only_of(expr: &str, test: &str) -> String {
    at_all(expr).replace("job=~\".*\"", &format!("job=~\".*\",test=\"{test}\""))
}

#[test]
fn dashboards_ask_for_their_data_source_and_filter_by_job_instance_and_queue() {
    for (path, dashboard) in dashboards() {
        let vars: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(vars, ["datasource", "job", "instance", "queue"], "{path:?}");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{path:?}: panel {title:?} names a data source of ours"
            );
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                assert!(!expr.contains("job=\""), "{title:?} names a job: {expr}");
                // Each selector of a metric of ours (or of `up`) filters by the job variable.
                for (at, _) in expr
                    .match_indices("tidegate_")
                    .chain(expr.match_indices("up{"))
                {
                    let selector = &expr[at..];
                    let open = selector
                        .find(['{', '[', ')', ' '])
                        .unwrap_or(selector.len());
                    if selector[open..].starts_with('{') {
                        let close = selector.find('}').expect("a closed selector");
                        assert!(
                            selector[open..close].contains("job=~\"$job\""),
                            "{path:?}: {title:?}: {expr}"
                        );
                    } else {
                        panic!("{path:?}: {title:?}: a selector without the job filter: {expr}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn every_panel_shows_data_after_a_real_run() {
    let prometheus = common::env("PROMETHEUS_URL");
    // A process whose schedule is on (it fires nothing during the test), for the schedule's
    // panels; scraped under the `workers` job.
    let port = common::scenario::free_port();
    let scheduled = common::scenario::start(
        common::scenario::command(
            &common::unique("dash_scheduled"),
            &common::unique("tidegate_dash_scheduled"),
            &common::redis_url(),
            &common::mongodb_uri(),
        )
        .env("TIDEGATE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        // Its own budget: leading the demo's, it would see no CPU (no probe configured here).
        .env("TIDEGATE_BUDGET", common::unique("dash_scheduled"))
        .env("TIDEGATE_APPS", "score")
        .env("TIDEGATE_SCHEDULE", "@yearly")
        // And a BullMQ queue of no one's it governs, for the governed queues' panel.
        .env("TIDEGATE_GOVERN", common::unique("dash_governed")),
    );
    let demo_port = common::scenario::free_port();
    let scraped = common::Scraped::new(
        "dash",
        &[
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{demo_port}"),
        ],
    );
    let mut demo = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    demo.args(["demo", "--users", "1500", "--date", "2026-11-17"])
        .env("TIDEGATE_HTTP_ADDR", format!("127.0.0.1:{demo_port}"))
        .env("TIDEGATE_DATABASE", common::unique("tidegate_dash"))
        .env("TIDEGATE_QUEUE", common::unique("dash"))
        .env("TIDEGATE_LOG", "warn")
        .env("TIDEGATE_CONTROL_INTERVAL", "1s")
        .env("TIDEGATE_TARGET_CPU", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(cpu) = common::database_cpu_query() {
        demo.env("TIDEGATE_PROMETHEUS_URL", &prometheus)
            .env("TIDEGATE_PROMETHEUS_CPU_QUERY", cpu);
    }
    let started = unix_now();
    let mut child = demo.spawn().expect("start tidegate demo");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("demo status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not end in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "demo failed: {status}");
    let during = (started, unix_now());

    let mut checked = 0;
    for (path, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title");
            let mut series = 0;
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                series += series_between(&prometheus, &only_of(expr, &scraped.label), during).await;
            }
            assert!(series > 0, "panel {title:?} of {path:?} shows no data");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} panels found");
    drop(scheduled);
}
