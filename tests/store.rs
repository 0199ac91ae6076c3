//! Bulk writes against the real MongoDB-compatible server: upserts in one round trip, a write
//! error failing only its own statement, splitting under limits, and error classes.

mod common;

use mongodb::bson::{Document, doc};
use tidegate::store::{Store, StoreOptions, Upsert};

async fn store(options: StoreOptions) -> Store {
    Store::connect(
        &common::mongodb_uri(),
        &common::unique("tidegate_store"),
        options,
    )
    .await
    .expect("connect")
}

fn upsert(user: &str, score: i32) -> Upsert {
    Upsert {
        filter: doc! { "userId": user, "date": "2026-11-24" },
        update: doc! { "$set": { "userId": user, "date": "2026-11-24", "score": score } },
    }
}

#[tokio::test]
async fn upserts_insert_then_update_in_one_round_trip() {
    let store = store(StoreOptions::default()).await;
    let (results, summary) = store
        .upsert_many("scores", &[upsert("u1", 1), upsert("u2", 2)])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!((summary.upserted, summary.round_trips), (2, 1));

    let (results, summary) = store
        .upsert_many("scores", &[upsert("u1", 10), upsert("u2", 2)])
        .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        (summary.matched, summary.modified, summary.upserted),
        (2, 1, 0)
    );
    let coll = store.database().collection::<Document>("scores");
    assert_eq!(coll.count_documents(doc! {}).await.expect("count"), 2);
    let u1 = coll
        .find_one(doc! { "userId": "u1" })
        .await
        .expect("find")
        .expect("u1");
    assert_eq!(u1.get_i32("score").expect("score"), 10);
    store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn a_write_error_fails_only_its_own_statement() {
    let store = store(StoreOptions::default()).await;
    let coll = store.database().collection::<Document>("scores");
    coll.insert_one(doc! { "userId": "u2", "date": "2026-11-24", "score": "not a number" })
        .await
        .expect("insert");
    let bad = Upsert {
        filter: doc! { "userId": "u2", "date": "2026-11-24" },
        update: doc! { "$inc": { "score": 1 } },
    };
    let (results, summary) = store
        .upsert_many("scores", &[upsert("u1", 1), bad, upsert("u3", 3)])
        .await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let failure = results[1].clone().expect_err("the $inc on a string fails");
    assert!(!failure.transient, "{failure:?}");
    assert_eq!(summary.failed, 1);
    assert_eq!(coll.count_documents(doc! {}).await.expect("count"), 3);
    store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn batches_split_under_the_limits() {
    let store = store(StoreOptions {
        batch_docs: 2,
        ..StoreOptions::default()
    })
    .await;
    let upserts: Vec<_> = (0..5).map(|i| upsert(&format!("u{i}"), i)).collect();
    let (results, summary) = store.upsert_many("scores", &upserts).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!((summary.upserted, summary.round_trips), (5, 3));
    store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn inserts_report_duplicates_alone() {
    let store = store(StoreOptions::default()).await;
    let docs = vec![doc! { "_id": 1 }, doc! { "_id": 1 }, doc! { "_id": 2 }];
    let results = store.insert_many("events", docs).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let failure = results[1].clone().expect_err("duplicate key");
    assert!(
        failure.message.contains("11000") && !failure.transient,
        "{failure:?}"
    );
    store.database().drop().await.expect("drop");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_failure() {
    let store = Store::connect(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300",
        "tidegate_unreachable",
        StoreOptions {
            connect_timeout: std::time::Duration::from_millis(300),
            ..StoreOptions::default()
        },
    )
    .await
    .expect("parse");
    let (results, _) = store.upsert_many("scores", &[upsert("u1", 1)]).await;
    let failure = results[0].clone().expect_err("unreachable");
    assert!(failure.transient, "{failure:?}");
}

#[tokio::test]
async fn a_large_batch_modifying_existing_documents_completes() {
    // FerretDB 1.24 never answers an update that modifies 100+ documents; the store splits.
    let store = store(StoreOptions::default()).await;
    let first: Vec<_> = (0..150).map(|i| upsert(&format!("u{i}"), 1)).collect();
    let (results, _) = store.upsert_many("scores", &first).await;
    assert!(results.iter().all(Result::is_ok));
    let second: Vec<_> = (0..150).map(|i| upsert(&format!("u{i}"), 2)).collect();
    let (results, summary) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.upsert_many("scores", &second),
    )
    .await
    .expect("the write must not hang");
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(summary.modified, 150);
    store.database().drop().await.expect("drop");
}
