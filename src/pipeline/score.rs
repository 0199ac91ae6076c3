//! The seed's job: for one day in a timezone, each user active that day gets a score computed
//! from that day's events, upserted into `daily_scores` keyed by (user, date). A batch reads
//! all its users' events with one query (`$in`) and writes all its scores with one bulk update.
//! Also here: the day's targets, the indexes the job needs, realistic sample data, and the
//! naive mode that reproduces the seed's original script on the same code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use futures::{StreamExt, TryStreamExt};
use mongodb::IndexModel;
use mongodb::bson::{self, Bson, Document, doc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::pipeline::{Outcome, Pipeline};
use crate::queue::Job;
use crate::store::{Store, Upsert, WriteFailure, classify};

pub const EVENTS: &str = "events";
pub const DAILY_SCORES: &str = "daily_scores";

/// A score job's data, in the seed's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreJob {
    pub user_id: String,
    pub collect_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// The instants that bound `date` in `tz`: [start, end).
pub fn day_bounds(date: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
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
pub struct Tally {
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

fn number(value: Option<&Bson>) -> f64 {
    match value {
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        Some(Bson::Double(n)) => *n,
        _ => 0.0,
    }
}

fn day_filter(date: NaiveDate, tz: Tz) -> Document {
    let (start, end) = day_bounds(date, tz);
    doc! { "$gte": bson::DateTime::from_millis(start.timestamp_millis()), "$lt": bson::DateTime::from_millis(end.timestamp_millis()) }
}

/// The day's events of `users`, tallied per user, in one query.
pub async fn read_tallies(
    store: &Store,
    users: &[String],
    date: NaiveDate,
    tz: Tz,
) -> Result<HashMap<String, Tally>, WriteFailure> {
    store.count_read();
    let filter = doc! { "userId": { "$in": users }, "ts": day_filter(date, tz) };
    let projection = doc! { "_id": 0, "userId": 1, "kind": 1, "value": 1 };
    let events = store.database().collection::<Document>(EVENTS);
    let find = events
        .find(filter)
        .projection(projection)
        .batch_size(10_000)
        .max_time(store.op_timeout());
    let read = async {
        let mut cursor = find.await?;
        let mut tallies: HashMap<String, Tally> = HashMap::with_capacity(users.len());
        while let Some(event) = cursor.try_next().await? {
            if let Ok(user) = event.get_str("userId") {
                let kind = event.get_str("kind").unwrap_or("");
                tallies
                    .entry(user.to_owned())
                    .or_default()
                    .add(kind, number(event.get("value")));
            }
        }
        Ok(tallies)
    };
    store.bounded(read).await.map_err(|e| store.failed(&e))
}

/// The `_id` of a user's score for a day: the natural key (date, user) as one string, so the
/// upsert finds its document through `_id` (an equality every server indexes; FerretDB pushes
/// nothing else down to SQLite and would scan the collection per statement).
pub fn score_id(user: &str, date: NaiveDate) -> String {
    format!("{date}:{user}")
}

/// The write that stores one user's score: keyed on (date, user), so writing it twice changes
/// nothing.
pub fn score_upsert(user: &str, date: NaiveDate, tally: Tally, run_id: Option<&str>) -> Upsert {
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

/// Creates the indexes the job reads and writes by; safe to repeat. One index per command:
/// FerretDB 1.24 drops the connection on a `createIndexes` that names several.
pub async fn ensure_indexes(store: &Store) -> mongodb::error::Result<()> {
    let db = store.database();
    let events = db.collection::<Document>(EVENTS);
    store
        .bounded(
            events.create_index(
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "ts": 1 })
                    .build(),
            ),
        )
        .await?;
    store
        .bounded(events.create_index(IndexModel::builder().keys(doc! { "ts": 1 }).build()))
        .await?;
    // `_id` is the (date, user) key; this index serves lookups by user.
    store
        .bounded(
            db.collection::<Document>(DAILY_SCORES).create_index(
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "date": 1 })
                    .build(),
            ),
        )
        .await?;
    Ok(())
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

/// Deletes the day's results of users outside `targeted`, as the seed's back-office deleted a
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

pub struct ScorePipeline {
    store: Store,
    tz: Tz,
}

impl ScorePipeline {
    pub fn new(store: Store, tz: Tz) -> Self {
        Self { store, tz }
    }
}

impl Pipeline for ScorePipeline {
    fn name(&self) -> &str {
        "score"
    }

    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        let mut by_date: HashMap<NaiveDate, Vec<(usize, ScoreJob)>> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            match job.data::<ScoreJob>() {
                Ok(data) => by_date
                    .entry(data.collect_date)
                    .or_default()
                    .push((i, data)),
                Err(e) => outcomes[i] = Some(Outcome::permanent(format!("invalid score job: {e}"))),
            }
        }
        for (date, group) in by_date {
            let users: Vec<String> = group.iter().map(|(_, j)| j.user_id.clone()).collect();
            let tallies = match read_tallies(&self.store, &users, date, self.tz).await {
                Ok(tallies) => tallies,
                Err(failure) => {
                    for (i, _) in &group {
                        outcomes[*i] = Some(failure.clone().into());
                    }
                    continue;
                }
            };
            let upserts: Vec<Upsert> = group
                .iter()
                .map(|(_, j)| {
                    let tally = tallies.get(&j.user_id).copied().unwrap_or_default();
                    score_upsert(&j.user_id, date, tally, j.run_id.as_deref())
                })
                .collect();
            let (results, _) = self.store.upsert_many(DAILY_SCORES, &upserts).await;
            for ((i, j), result) in group.iter().zip(results) {
                let tally = tallies.get(&j.user_id).copied().unwrap_or_default();
                outcomes[*i] = Some(match result {
                    Ok(()) => Outcome::Completed(
                        serde_json::json!({ "score": tally.score, "events": tally.events }),
                    ),
                    Err(failure) => failure.into(),
                });
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::transient("no result")))
            .collect()
    }
}

/// What the naive mode did.
#[derive(Debug, Default, Clone, Copy)]
pub struct NaiveReport {
    pub users: u64,
    pub written: u64,
    pub failed: u64,
    pub round_trips: u64,
    pub wall: Duration,
    /// Mean round-trip time of the writes, as the client saw it.
    pub write_rtt: Duration,
}

/// The naive mode's time limit per user. The seed's script had none, and its users queue for
/// the driver's pool for minutes, so one operation's limit would fail most of them; this only
/// keeps a silent server from holding the comparison forever.
const NAIVE_LIMIT: Duration = Duration::from_secs(600);

/// The seed's original script on the same code: every user at once (no limit of its own; the
/// driver's pool is the only bound), one read and one write per user, no pacing. Kept only so
/// that benchmarks compare like with like; tidegate never runs this by default.
pub async fn run_naive(store: &Store, date: NaiveDate, tz: Tz, users: Vec<String>) -> NaiveReport {
    let started = Instant::now();
    let events = store.database().collection::<Document>(EVENTS);
    let scores = store.database().collection::<Document>(DAILY_SCORES);
    let day = day_filter(date, tz);
    let one_user = |user: String| {
        let (events, scores, day) = (events.clone(), scores.clone(), day.clone());
        async move {
            let mut tally = Tally::default();
            let mut cursor = events
                .find(doc! { "userId": &user, "ts": day })
                .projection(doc! { "_id": 0, "kind": 1, "value": 1 })
                .await?;
            while let Some(event) = cursor.try_next().await? {
                tally.add(
                    event.get_str("kind").unwrap_or(""),
                    number(event.get("value")),
                );
            }
            let upsert = score_upsert(&user, date, tally, None);
            let sent = Instant::now();
            scores
                .update_one(upsert.filter, upsert.update)
                .upsert(true)
                .await
                .map(|_| sent.elapsed())
        }
    };
    let results: Vec<mongodb::error::Result<Duration>> = futures::future::join_all(
        users
            .into_iter()
            .map(|user| store.bounded_for(NAIVE_LIMIT, one_user(user))),
    )
    .await;
    let rtts: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    let written = rtts.len() as u64;
    NaiveReport {
        users: results.len() as u64,
        written,
        failed: results.len() as u64 - written,
        round_trips: results.len() as u64 * 2,
        wall: started.elapsed(),
        write_rtt: rtts.iter().sum::<Duration>() / (written.max(1) as u32),
    }
}

/// What `seed_day` wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeedReport {
    pub users: u64,
    pub events: u64,
    pub replaced: u64,
}

/// Writes a realistic day of events for `users` users (ids `u000001`, ...): skewed, a few heavy
/// users and many light ones (events per user ~ 1/u^0.6, capped at 200), 70% views, 25% clicks,
/// 5% purchases, spread over the day in `tz`. Deterministic for a given `seed`; the day's
/// previous events are replaced, so seeding twice gives the same data.
pub async fn seed_day(
    store: &Store,
    date: NaiveDate,
    tz: Tz,
    users: u64,
    seed: u64,
    mut on_progress: impl FnMut(u64),
) -> Result<SeedReport, WriteFailure> {
    let events = store.database().collection::<Document>(EVENTS);
    let replaced = store
        .bounded(events.delete_many(doc! { "ts": day_filter(date, tz) }))
        .await
        .map_err(|e| classify(&e))?
        .deleted_count;
    let (start, end) = day_bounds(date, tz);
    let span_ms = (end - start).num_milliseconds().max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = SeedReport {
        users,
        replaced,
        ..SeedReport::default()
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
            chunk.push(doc! {
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

async fn insert_all(store: &Store, docs: Vec<Document>) -> Result<u64, WriteFailure> {
    let results = store.insert_many(EVENTS, docs).await;
    match results.iter().find_map(|r| r.as_ref().err()) {
        Some(failure) => Err(failure.clone()),
        None => Ok(results.len() as u64),
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
    fn jobs_use_the_seeds_field_names() {
        let job: ScoreJob =
            serde_json::from_str(r#"{"userId":"u1","collectDate":"2026-11-24"}"#).expect("parse");
        assert_eq!(job.user_id, "u1");
        assert!(
            serde_json::from_str::<ScoreJob>(r#"{"userId":"u1","collectDate":"24/11"}"#).is_err()
        );
    }
}
