//! The daily score, the application this project was built for: for one day in a timezone,
//! each user active that day gets a score computed from that day's events, upserted into
//! `daily_scores` keyed by (user, date). Here: the job's data, the scoring rule, the day's
//! targets, the indexes, the purge of a re-run, and [`Score`], the application the planner and
//! the process are given. [`pipeline`] works the jobs in batches, [`naive`] is the original
//! script kept for comparison, [`sample`] writes realistic days of events.

pub mod naive;
pub mod pipeline;
pub mod sample;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use futures::{Stream, StreamExt, TryStreamExt};
use mongodb::bson::{self, Bson, Document, doc};
use serde::{Deserialize, Serialize};

use tidegate::queue::NewJob;
use tidegate::schedule::Daily;
use tidegate::store::{Index, Store, Upsert};

pub use naive::{NaiveReport, run_naive};
pub use pipeline::ScorePipeline;
pub use sample::{SampleReport, sample_day};

/// Job names the score pipeline answers to: `collect` as the original producer named its jobs.
pub const JOB_NAMES: &[&str] = &["collect", "score"];
pub const EVENTS: &str = "events";
pub const DAILY_SCORES: &str = "daily_scores";

/// A score job's data, in the original producer's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScoreJob {
    pub user_id: String,
    pub collect_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// The instants that bound `date` in `tz`: [start, end).
pub(crate) fn day_bounds(date: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let start_of = |d: NaiveDate| {
        let midnight = d.and_time(chrono::NaiveTime::MIN);
        // A DST gap at midnight moves the start to the first instant that exists.
        tz.from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map_or_else(
                || Utc.from_utc_datetime(&midnight),
                |t| t.with_timezone(&Utc),
            )
    };
    let next = date.succ_opt().unwrap_or(date);
    (start_of(date), start_of(next))
}

/// One user's day.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Tally {
    pub events: u64,
    pub score: f64,
}

/// How much one event of a kind is worth per unit of its value.
pub fn weight(kind: &str) -> f64 {
    match kind {
        "view" => 1.0,
        "click" => 3.0,
        "purchase" => 10.0,
        _ => 0.0,
    }
}

impl Tally {
    pub fn add(&mut self, kind: &str, value: f64) {
        self.events += 1;
        self.score += weight(kind) * value;
    }
}

pub(crate) fn number(value: Option<&Bson>) -> f64 {
    match value {
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        Some(Bson::Double(n)) => *n,
        _ => 0.0,
    }
}

pub(crate) fn day_filter(date: NaiveDate, tz: Tz) -> Document {
    let (start, end) = day_bounds(date, tz);
    doc! { "$gte": bson::DateTime::from_millis(start.timestamp_millis()), "$lt": bson::DateTime::from_millis(end.timestamp_millis()) }
}

/// The `_id` of a user's score for a day: the natural key (date, user) as one string, so the
/// upsert finds its document through `_id` (an equality every server indexes; FerretDB pushes
/// nothing else down to SQLite and would scan the collection per statement).
pub(crate) fn score_id(user: &str, date: NaiveDate) -> String {
    format!("{date}:{user}")
}

/// The write that stores one user's score: keyed on (date, user), so writing it twice changes
/// nothing.
pub(crate) fn score_upsert(
    user: &str,
    date: NaiveDate,
    tally: Tally,
    run_id: Option<&str>,
) -> Upsert {
    let id = score_id(user, date);
    let date = date.to_string();
    let mut set = doc! {
        "userId": user,
        "date": &date,
        "score": tally.score,
        "events": tally.events as i64,
        "computedAt": bson::DateTime::now(),
    };
    if let Some(run) = run_id {
        set.insert("runId", run);
    }
    Upsert {
        filter: doc! { "_id": id },
        update: doc! { "$set": set },
    }
}

/// The indexes the job reads and writes by: the day's events of a batch's users, the day's
/// users for planning, and scores by user (`_id` is the (date, user) key).
pub fn indexes() -> Vec<Index> {
    vec![
        Index {
            collection: EVENTS,
            keys: doc! { "userId": 1, "ts": 1 },
        },
        Index {
            collection: EVENTS,
            keys: doc! { "ts": 1 },
        },
        Index {
            collection: DAILY_SCORES,
            keys: doc! { "userId": 1, "date": 1 },
        },
    ]
}

/// Streams the users with events on `date`, with a cursor (never the whole list at once).
/// The aggregation groups the whole day before its first reply, so it gets `limit` (planning's
/// own bound), not one operation's; the caller bounds each further read of the stream.
pub async fn targets(
    store: &Store,
    date: NaiveDate,
    tz: Tz,
    limit: Duration,
) -> mongodb::error::Result<impl futures::Stream<Item = mongodb::error::Result<String>>> {
    let events = store.database().collection::<Document>(EVENTS);
    let aggregate = events
        .aggregate([
            doc! { "$match": { "ts": day_filter(date, tz) } },
            doc! { "$group": { "_id": "$userId" } },
        ])
        .batch_size(10_000)
        .max_time(limit);
    let cursor = store.bounded_for(limit, aggregate).await?;
    Ok(cursor.filter_map(|doc| async move {
        match doc {
            Ok(doc) => match doc.get("_id") {
                Some(Bson::String(user)) => Some(Ok(user.clone())),
                _ => None,
            },
            Err(e) => Some(Err(e)),
        }
    }))
}

/// Deletes the day's results of users outside `targeted`, as the original back-office deleted a
/// day before collecting it again: called once a re-run is planned, so a re-run that fails to
/// start deletes nothing. The targeted users' results stay until the new run rewrites them,
/// so the purge never races those writes (a filter on the run's id would: FerretDB deletes
/// what matched when it looked, even if the run rewrote it since).
pub async fn purge(
    store: &Store,
    date: NaiveDate,
    targeted: &std::collections::HashSet<String>,
) -> mongodb::error::Result<u64> {
    let scores = store.database().collection::<Document>(DAILY_SCORES);
    let find = scores
        .find(doc! { "date": date.to_string() })
        .projection(doc! { "_id": 1, "userId": 1 })
        .max_time(store.op_timeout());
    let results: Vec<Document> = store
        .bounded(async { find.await?.try_collect().await })
        .await?;
    let stale: Vec<Bson> = results
        .iter()
        .filter(|d| {
            d.get_str("userId")
                .map_or(true, |user| !targeted.contains(user))
        })
        .filter_map(|d| d.get("_id").cloned())
        .collect();
    let mut deleted = 0;
    for ids in stale.chunks(1000) {
        deleted += store
            .bounded(scores.delete_many(doc! { "_id": { "$in": ids.to_vec() } }))
            .await?
            .deleted_count;
    }
    Ok(deleted)
}

/// The daily score as the planner and the process see it.
pub struct Score;

impl Daily for Score {
    fn name(&self) -> &'static str {
        "score"
    }

    fn indexes(&self) -> Vec<Index> {
        indexes()
    }

    async fn targets(
        &self,
        store: &Store,
        date: NaiveDate,
        tz: Tz,
        limit: Duration,
    ) -> mongodb::error::Result<impl Stream<Item = mongodb::error::Result<String>> + Send> {
        targets(store, date, tz, limit).await
    }

    fn job(&self, run: &str, date: NaiveDate, target: &str) -> NewJob {
        let data = ScoreJob {
            user_id: target.to_owned(),
            collect_date: date,
            run_id: Some(run.to_owned()),
        };
        NewJob::new(
            JOB_NAMES[0],
            serde_json::to_value(&data).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn purge(
        &self,
        store: &Store,
        date: NaiveDate,
        keep: &HashSet<String>,
    ) -> mongodb::error::Result<u64> {
        purge(store, date, keep).await
    }

    fn results_in(&self) -> &'static str {
        DAILY_SCORES
    }

    async fn results(&self, store: &Store, date: NaiveDate) -> mongodb::error::Result<u64> {
        let scores = store.database().collection::<Document>(DAILY_SCORES);
        let count = scores
            .count_documents(doc! { "date": date.to_string() })
            .max_time(store.op_timeout());
        store.bounded(count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_in_seoul_starts_at_15_utc_the_day_before() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
        let (start, end) = day_bounds(date, chrono_tz::Asia::Seoul);
        assert_eq!(start.to_rfc3339(), "2026-11-23T15:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2026-11-24T15:00:00+00:00");
    }

    #[test]
    fn a_dst_day_is_23_hours_long() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 29).expect("date");
        let (start, end) = day_bounds(date, chrono_tz::Europe::Berlin);
        assert_eq!((end - start).num_hours(), 23);
    }

    #[test]
    fn score_weighs_each_kind() {
        let mut t = Tally::default();
        t.add("view", 1.0);
        t.add("click", 1.0);
        t.add("purchase", 20.0);
        t.add("unknown", 5.0);
        assert_eq!(
            t,
            Tally {
                events: 4,
                score: 1.0 + 3.0 + 200.0
            }
        );
    }

    #[test]
    fn jobs_use_the_original_field_names() {
        let job: ScoreJob =
            serde_json::from_str(r#"{"userId":"u1","collectDate":"2026-11-24"}"#).expect("parse");
        assert_eq!(job.user_id, "u1");
        assert!(
            serde_json::from_str::<ScoreJob>(r#"{"userId":"u1","collectDate":"24/11"}"#).is_err()
        );
    }
}
