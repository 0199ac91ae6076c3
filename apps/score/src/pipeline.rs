//! The score pipeline: a batch reads all its users' events with one query (`$in`) and writes all
//! its scores with one bulk update.

use std::collections::HashMap;

use chrono::NaiveDate;
use chrono_tz::Tz;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use tidegate::pipeline::{Outcome, Outcomes, Pipeline};
use tidegate::queue::Job;
use tidegate::store::{Store, Upsert, WriteFailure};

use super::{DAILY_SCORES, EVENTS, ScoreJob, Tally, day_filter, number, score_upsert};

/// The day's events of `users`, tallied per user, in one query.
pub(crate) async fn read_tallies(
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
        let mut outcomes = Outcomes::new(jobs.len());
        let mut by_date: HashMap<NaiveDate, Vec<(usize, ScoreJob)>> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            match job.data::<ScoreJob>() {
                Ok(data) => by_date
                    .entry(data.collect_date)
                    .or_default()
                    .push((i, data)),
                Err(e) => outcomes.set(i, Outcome::permanent(format!("invalid score job: {e}"))),
            }
        }
        for (date, group) in by_date {
            let users: Vec<String> = group.iter().map(|(_, j)| j.user_id.clone()).collect();
            let tallies = match read_tallies(&self.store, &users, date, self.tz).await {
                Ok(tallies) => tallies,
                Err(failure) => {
                    for (i, _) in &group {
                        outcomes.set(*i, failure.clone().into());
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
                outcomes.set(
                    *i,
                    match result {
                        Ok(()) => Outcome::Completed(
                            serde_json::json!({ "score": tally.score, "events": tally.events }),
                        ),
                        Err(failure) => failure.into(),
                    },
                );
            }
        }
        outcomes.into_vec()
    }
}
