//! Realistic days of events for demos, benchmarks and tests.

use chrono::NaiveDate;
use chrono_tz::Tz;
use mongodb::bson::{self, Document, doc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{EVENTS, day_bounds, day_filter};
use tidegate::retry::ride_through;
use tidegate::store::{Store, WriteFailure, classify};

/// What `sample_day` wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SampleReport {
    pub users: u64,
    pub events: u64,
    pub replaced: u64,
}

/// Writes a realistic day of events for `users` users (ids `u000001`, ...): skewed, a few heavy
/// users and many light ones (events per user ~ 1/u^0.6, capped at 200), 70% views, 25% clicks,
/// 5% purchases, spread over the day in `tz`. Deterministic for a given `seed`; the day's
/// previous events are replaced, so writing it twice gives the same data.
pub async fn sample_day(
    store: &Store,
    date: NaiveDate,
    tz: Tz,
    users: u64,
    seed: u64,
    mut on_progress: impl FnMut(u64),
) -> Result<SampleReport, WriteFailure> {
    let events = store.database().collection::<Document>(EVENTS);
    let replaced = ride_through("deleting the day's earlier events", None, || async {
        store
            .bounded(events.delete_many(doc! { "ts": day_filter(date, tz) }))
            .await
            .map_err(|e| classify(&e))
    })
    .await?
    .deleted_count;
    let (start, end) = day_bounds(date, tz);
    let span_ms = (end - start).num_milliseconds().max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = SampleReport {
        users,
        replaced,
        ..SampleReport::default()
    };
    let mut chunk = Vec::with_capacity(10_000);
    for n in 1..=users {
        let user = format!("u{n:06}");
        let u: f64 = rng.random::<f64>().max(1e-9);
        let count = (u.powf(-0.6).ceil() as u64).min(200);
        for _ in 0..count {
            let roll: f64 = rng.random();
            let (kind, value) = if roll < 0.70 {
                ("view", 1)
            } else if roll < 0.95 {
                ("click", 1)
            } else {
                ("purchase", rng.random_range(1..=100))
            };
            let at = start + chrono::Duration::milliseconds(rng.random_range(0..span_ms));
            // An id of its own, so that writing the chunk again after an outage adds nothing
            // twice (the ones already written fail as duplicates).
            chunk.push(doc! {
                "_id": bson::oid::ObjectId::new(),
                "userId": &user,
                "ts": bson::DateTime::from_millis(at.timestamp_millis()),
                "kind": kind,
                "value": value,
            });
            if chunk.len() == chunk.capacity() {
                report.events += insert_all(store, std::mem::take(&mut chunk)).await?;
                chunk.reserve(10_000);
                on_progress(n);
            }
        }
    }
    report.events += insert_all(store, chunk).await?;
    on_progress(users);
    Ok(report)
}

/// Inserts `docs`, riding through an outage: a chunk written again after one is written once
/// (each document's `_id` is its own, and a duplicate is one the last try wrote).
async fn insert_all(store: &Store, docs: Vec<Document>) -> Result<u64, WriteFailure> {
    ride_through("seeding events", None, || async {
        let results = store.insert_many(EVENTS, docs.clone()).await;
        let failed = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .find(|failure| !failure.duplicate_key());
        match failed {
            Some(failure) => Err(failure.clone()),
            None => Ok(results.len() as u64),
        }
    })
    .await
}
