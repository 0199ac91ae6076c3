//! Every Grafana panel shows data after a real run: `tidegate demo` processes a small day on the
//! local services (paced, with FerretDB's CPU through Prometheus when FerretDB is the database)
//! while Prometheus scrapes it; then each panel's PromQL is evaluated on that Prometheus at a
//! moment during the run, and each panel must return at least one series.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

async fn series_at(prometheus: &str, expr: &str, at: f64) -> usize {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr), ("time", &at.to_string())])
        .send()
        .await
        .expect("Prometheus answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn every_panel_shows_data_after_a_real_run() {
    let prometheus = common::env("PROMETHEUS_URL");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    demo.args(["demo", "--users", "1500", "--date", "2026-11-17"])
        .env("TIDEGATE_DATABASE", common::unique("tidegate_dash"))
        .env("TIDEGATE_QUEUE", common::unique("dash"))
        .env("TIDEGATE_LOG", "warn")
        .env("TIDEGATE_CONTROL_INTERVAL", "1s")
        .env("TIDEGATE_TARGET_CPU", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if std::env::var("FERRETDB_METRICS_URL").is_ok() {
        demo.env("TIDEGATE_PROMETHEUS_URL", &prometheus).env(
            "TIDEGATE_PROMETHEUS_CPU_QUERY",
            r#"irate(process_cpu_seconds_total{job="ferretdb"}[3s]) * 100"#,
        );
    }
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
    // Two seconds before the end, the run was still being scraped.
    let during = unix_now() - 2.0;

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title");
            let mut series = 0;
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                series += series_at(&prometheus, expr, during).await;
            }
            assert!(series > 0, "panel {title:?} of {path:?} shows no data");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} panels found");
}
