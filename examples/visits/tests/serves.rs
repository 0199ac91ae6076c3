//! The program on the real services (`scripts/services start`, then `eval "$(scripts/services
//! env)"`): BullMQ-layout jobs in, the page's hours in MongoDB out, and what the engine gives
//! it without a line of its own: `/metrics` counting the jobs, `/healthz` and `/readyz` (what
//! the image's HEALTHCHECK asks), and an exit on SIGTERM.

use std::process::{Child, Command, Stdio};
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

/// The program, on a queue, database and budget named `own` and a free port, with `vars`;
/// killed if the test fails before it [`stop`](Program::stop)s it.
struct Program {
    child: Child,
    port: u16,
}

impl Program {
    fn start(own: &str, vars: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_visits"))
            .env("TIDEGATE_QUEUE", own)
            .env("TIDEGATE_DATABASE", own)
            .env("TIDEGATE_BUDGET", own)
            .env("TIDEGATE_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("TIDEGATE_LOG", "warn")
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start the program");
        Self { child, port }
    }

    /// SIGTERM: it stops on its own, within its shutdown timeout, and exits 0.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let exited = eventually("the program to exit", Duration::from_secs(40), || {
            std::future::ready(self.child.try_wait().ok().flatten())
        })
        .await;
        assert!(exited.success(), "{exited:?}");
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
    let program = Program::start(&own, &[]);
    let port = program.port;
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
    program.stop().await;
    store.database().drop().await.expect("drop");
}

/// The nightly run, from the engine's schedule: a firing missed two minutes ago (the process
/// was down, as Redis' schedule mark says) runs when the program starts, totals each page's
/// day, and ends its run.
#[tokio::test]
async fn its_nightly_run_totals_each_page_of_the_day() {
    use chrono::{Timelike, Utc};
    use mongodb::bson::{Document, doc};

    let own = format!("totals_{}", std::process::id());
    let store = tidegate::store::Store::connect(&env("MONGODB_URI"), &own, Default::default())
        .await
        .expect("mongo");
    let fired = (Utc::now() - chrono::Duration::minutes(2))
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("a minute");
    let day = fired
        .date_naive()
        .pred_opt()
        .expect("the day before")
        .to_string();
    let page_days = store.database().collection::<Document>("page_days");
    page_days
        .insert_many([
            doc! { "_id": format!("{day}:/a"), "page": "/a", "day": &day, "hours": { "0": 3, "5": 4 } },
            doc! { "_id": format!("{day}:/b"), "page": "/b", "day": &day, "hours": { "1": 10_i64 } },
        ])
        .await
        .expect("the day's pages");
    let mut redis = connect(&env("REDIS_URL")).await.expect("redis");
    let base = tidegate::queue::keys::Keys::new("bull", &own);
    let down = (Utc::now() - chrono::Duration::minutes(10)).timestamp_millis();
    let _: () = redis::cmd("HSET")
        .arg(tidegate::queue::keys::schedule(base.base(), "page-totals"))
        .arg(&["since", &down.to_string(), "through", &down.to_string()])
        .query_async(&mut redis)
        .await
        .expect("a schedule handled up to ten minutes ago");
    let schedule = format!("{} {} * * *", fired.minute(), fired.hour());
    let program = Program::start(
        &own,
        &[
            ("TIDEGATE_SCHEDULE", schedule),
            ("TIDEGATE_TIMEZONE", "UTC".into()),
        ],
    );
    let runs = store.database().collection::<Document>("runs");
    let run = eventually(
        "the nightly run to end",
        Duration::from_secs(60),
        || async {
            let filter = doc! { "pipeline": "page-totals", "date": &day, "trigger": "schedule" };
            let run = runs.find_one(filter).await.ok().flatten()?;
            run.get_str("outcome").is_ok().then_some(run)
        },
    )
    .await;
    assert_eq!(run.get_str("outcome"), Ok("succeeded"), "{run}");
    assert_eq!(run.get_i64("planned"), Ok(2), "{run}");
    let totals = store.database().collection::<Document>("page_totals");
    for (page, total) in [("/a", 7), ("/b", 10)] {
        let found = totals
            .find_one(doc! { "_id": format!("{day}:{page}") })
            .await
            .expect("find")
            .unwrap_or_else(|| panic!("{page}'s total"));
        assert_eq!(found.get_i64("total"), Ok(total), "{found}");
    }
    program.stop().await;
    store.database().drop().await.expect("drop");
}
