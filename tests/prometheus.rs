//! The real binary end to end: `tidegate run` becomes ready, the local Prometheus scrapes it
//! (target up, samples newer than this test), and SIGTERM stops it cleanly.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kills the child if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn instant_query(prometheus: &str, query: &str) -> Option<f64> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_scrapes_tidegate_and_sigterm_stops_it() {
    let addr = common::env("TIDEGATE_HTTP_ADDR");
    let prometheus = common::env("PROMETHEUS_URL");
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();

    let child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("run")
        .env("TIDEGATE_DATABASE", common::unique("tidegate_test"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tidegate");
    let mut child = Running(child);

    let ready_url = format!("http://{addr}/readyz");
    common::eventually(
        "tidegate to become ready",
        Duration::from_secs(30),
        || async {
            let response = reqwest::get(&ready_url).await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;

    // The live exposition passes Prometheus' own linter (naming, suffixes, units, help).
    let exposition = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) on PATH");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let linted = promtool.wait_with_output().expect("promtool");
    assert!(
        linted.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    // A sample of tidegate's own metric stamped after this test began proves a fresh scrape.
    let query = r#"timestamp(tidegate_build_info{job="tidegate"})"#;
    common::eventually(
        "Prometheus to scrape tidegate",
        Duration::from_secs(30),
        || async {
            let stamp = instant_query(&prometheus, query).await?;
            (stamp >= started).then_some(())
        },
    )
    .await;
    let up = instant_query(&prometheus, r#"up{job="tidegate"}"#).await;
    assert_eq!(up, Some(1.0));

    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = common::eventually(
        "tidegate to exit after SIGTERM",
        Duration::from_secs(30),
        || {
            let status = child.0.try_wait().expect("wait for tidegate");
            async move { status }
        },
    )
    .await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
