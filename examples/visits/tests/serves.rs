//! The program on the real services (`scripts/services start`, then `eval "$(scripts/services
//! env)"`): BullMQ-layout jobs in, the page's hours in MongoDB out, and what the engine gives
//! it without a line of its own: `/metrics` counting the jobs, `/healthz` and `/readyz` (what
//! the image's HEALTHCHECK asks), and an exit on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tidegate::queue::{NewJob, Queue, connect};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: see scripts/services env"))
}

/// Polls `probe` every 100 ms until it answers, failing the test after `limit`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

#[tokio::test]
async fn its_pipeline_is_worked_with_metrics_health_and_a_clean_stop() {
    let own = format!("visits_{}", std::process::id());
    let q = Queue::new(
        connect(&env("REDIS_URL")).await.expect("redis"),
        "bull",
        &own,
    );
    let jobs: Vec<NewJob> = (0..6)
        .map(|hour| NewJob::new("visit", json!({ "page": "/pricing", "day": "2026-11-24", "hour": hour, "visits": 10 + hour })))
        .chain([NewJob::new("visit", json!({ "page": "/", "day": "2026-11-24", "hour": 24, "visits": 1 }))])
        .collect();
    q.add_bulk(&jobs).await.expect("add");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut program = Command::new(env!("CARGO_BIN_EXE_visits"))
        .env("TIDEGATE_QUEUE", &own)
        .env("TIDEGATE_DATABASE", &own)
        .env("TIDEGATE_BUDGET", &own)
        .env("TIDEGATE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TIDEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the program");
    let settled = eventually("the visits to settle", Duration::from_secs(60), || async {
        q.counts()
            .await
            .ok()
            .filter(|c| c.completed + c.failed == 7)
    })
    .await;
    assert_eq!(
        (settled.completed, settled.failed),
        (6, 1),
        "hour 24 fails alone"
    );
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let (_, text) = get(&metrics).await.expect("its /metrics");
    assert!(
        text.contains(&format!(
            "tidegate_jobs_completed_total{{queue=\"{own}\"}} 6"
        )),
        "{text}"
    );
    for probe in ["healthz", "readyz"] {
        let (status, body) = get(&format!("http://127.0.0.1:{port}/{probe}"))
            .await
            .expect(probe);
        assert_eq!(status, 200, "/{probe}: {body}");
    }
    let store = tidegate::store::Store::connect(&env("MONGODB_URI"), &own, Default::default())
        .await
        .expect("mongo");
    let day = store
        .database()
        .collection::<mongodb::bson::Document>("page_days")
        .find_one(mongodb::bson::doc! { "_id": "2026-11-24:/pricing" })
        .await
        .expect("find")
        .expect("the page's day");
    assert_eq!(day.get_document("hours").expect("hours").len(), 6);
    // SIGTERM: it stops on its own, within its shutdown timeout.
    let _ = Command::new("kill").arg(program.id().to_string()).status();
    let exited = eventually("the program to exit", Duration::from_secs(40), || {
        std::future::ready(program.try_wait().ok().flatten())
    })
    .await;
    assert!(exited.success(), "{exited:?}");
    store.database().drop().await.expect("drop");
}
