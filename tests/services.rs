//! Each real service is really used: a Redis round trip, an insert and find through the
//! `mongodb` crate, and `/readyz` telling which dependency is down.

mod common;

use std::time::Duration;

use mongodb::bson::{Document, doc};
use tidegate::http::{AppState, Dependencies, serve};
use tidegate::store::{Store, StoreOptions};
use tokio::net::TcpListener;

#[tokio::test]
async fn redis_round_trip() {
    let mut conn = tidegate::queue::connect(&common::redis_url())
        .await
        .expect("connect to Redis");
    let key = common::unique("tidegate_test_key");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("tide")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let got: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(got, "tide");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

#[tokio::test]
async fn mongodb_insert_and_find() {
    let db_name = common::unique("tidegate_test");
    let store = Store::connect(&common::mongodb_uri(), &db_name, StoreOptions::default())
        .await
        .expect("connect");
    let coll = store.database().collection::<Document>("probe");
    coll.insert_one(doc! { "_id": "u1", "score": 42 })
        .await
        .expect("insert");
    let found = coll
        .find_one(doc! { "_id": "u1" })
        .await
        .expect("find")
        .expect("the inserted document");
    assert_eq!(found.get_i32("score").expect("score field"), 42);
    store.database().drop().await.expect("drop test database");
}

async fn spawn_server(store: Store) -> (String, tokio::sync::oneshot::Sender<()>) {
    let redis = tidegate::queue::connect(&common::redis_url())
        .await
        .expect("connect to Redis");
    let state = AppState {
        redis,
        store,
        metrics: tidegate::telemetry::metrics(),
        ready_timeout: Duration::from_secs(2),
        dependencies: Dependencies::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

#[tokio::test]
async fn health_ready_and_metrics_when_all_dependencies_answer() {
    let store = common::store("tidegate_test").await;
    let (base, _stop) = spawn_server(store).await;
    let http = reqwest::Client::new();

    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["redis"]["ok"], true);
    assert_eq!(body["checks"]["mongodb"]["ok"], true);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tidegate_build_info{version="),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidegate_dependency_up{dependency=\"mongodb\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_names_the_dependency_that_is_down() {
    // Nothing listens on port 1; a short server selection keeps the check brief.
    let store = Store::connect(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300",
        "tidegate_unreachable",
        StoreOptions::default(),
    )
    .await
    .expect("parse");
    let (base, _stop) = spawn_server(store).await;
    let ready = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["redis"]["ok"], true);
    assert_eq!(body["checks"]["mongodb"]["ok"], false);
    assert!(body["checks"]["mongodb"]["error"].is_string(), "{body}");
}

/// /metrics answers at once from the last known dependency state, even while the database is a
/// black hole (it accepts connections and never answers): before, it checked the dependencies
/// first and took the whole check's time limit per scrape, so a scrape timed out exactly
/// during an outage and Prometheus lost every series.
#[tokio::test]
async fn metrics_answer_at_once_while_the_database_is_a_black_hole() {
    // A listener that never accepts: the kernel completes the connections, nothing answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = hole.local_addr().expect("addr");
    let store = Store::connect(
        &format!("mongodb://{addr}/?directConnection=true"),
        &common::unique("tidegate_black_hole"),
        StoreOptions::default(),
    )
    .await
    .expect("parse");
    let (base, _stop) = spawn_server(store).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/metrics");
    let down = "tidegate_dependency_up{dependency=\"mongodb\"} 0";
    let (http, url) = (&http, &url);
    let text = common::eventually(
        "/metrics to report the database down",
        Duration::from_secs(15),
        || async move {
            let asked = std::time::Instant::now();
            let answer = http
                .get(url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .expect("/metrics answers");
            let text = answer.text().await.expect("text");
            let took = asked.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "/metrics took {took:?} with the database silent"
            );
            text.contains(down).then_some(text)
        },
    )
    .await;
    assert!(
        text.contains("tidegate_dependency_check_age_seconds{dependency=\"mongodb\"}"),
        "{text}"
    );
    drop(hole);
}
