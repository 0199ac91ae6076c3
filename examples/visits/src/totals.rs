//! The team's nightly job on the same engine: at TIDEGATE_SCHEDULE (in TIDEGATE_TIMEZONE)
//! each page seen the day before gets its day's total in `page_totals`, one job per page, so
//! the run can be followed, retried and re-run from the back-office or `/admin/api/runs`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use futures::{Stream, TryStreamExt};
use mongodb::bson::{Document, doc};
use serde::Deserialize;
use tidegate::pipeline::{Outcome, Outcomes, Pipeline};
use tidegate::queue::{Job, NewJob};
use tidegate::schedule::Daily;
use tidegate::store::{Index, Store, Upsert};

pub const JOB_NAMES: &[&str] = &["page-total"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageDay {
    page: String,
    day: NaiveDate,
}

pub struct Totals(pub Store);

impl Daily for Totals {
    fn name(&self) -> &'static str {
        "page-totals"
    }

    /// Planning finds a day's pages by `day` (`tidegate setup` creates it, nothing else does).
    fn indexes(&self) -> Vec<Index> {
        vec![Index {
            collection: "page_days",
            keys: doc! { "day": 1 },
        }]
    }

    async fn targets(
        &self,
        store: &Store,
        date: NaiveDate,
        _: Tz,
        limit: Duration,
    ) -> mongodb::error::Result<impl Stream<Item = mongodb::error::Result<String>> + Send> {
        let page_days = store.database().collection::<Document>("page_days");
        let find = page_days
            .find(doc! { "day": date.to_string() })
            .projection(doc! { "page": 1 })
            .max_time(limit);
        let pages = store.bounded_for(limit, find).await?;
        Ok(pages.map_ok(|d| d.get_str("page").unwrap_or_default().to_owned()))
    }

    fn job(&self, run: &str, date: NaiveDate, page: &str) -> NewJob {
        let data = serde_json::json!({ "page": page, "day": date, "runId": run });
        NewJob::new(JOB_NAMES[0], data)
    }

    /// A re-run rewrites the totals of the pages it plans; a page no longer seen loses its.
    async fn purge(
        &self,
        store: &Store,
        date: NaiveDate,
        keep: &HashSet<String>,
    ) -> mongodb::error::Result<u64> {
        let filter =
            doc! { "day": date.to_string(), "page": { "$nin": keep.iter().collect::<Vec<_>>() } };
        let totals = store.database().collection::<Document>("page_totals");
        Ok(store
            .bounded(totals.delete_many(filter))
            .await?
            .deleted_count)
    }

    fn results_in(&self) -> &'static str {
        "page_totals"
    }

    async fn results(&self, store: &Store, date: NaiveDate) -> mongodb::error::Result<u64> {
        let totals = store.database().collection::<Document>("page_totals");
        store
            .bounded(totals.count_documents(doc! { "day": date.to_string() }))
            .await
    }
}

impl Pipeline for Totals {
    fn name(&self) -> &str {
        "page-totals"
    }

    /// One read of the batch's page days, one bulk write of their totals.
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes = Outcomes::new(jobs.len());
        let mut wanted = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            match job.data::<PageDay>() {
                Ok(p) => wanted.push((i, format!("{}:{}", p.day, p.page), p)),
                Err(e) => outcomes.set(i, Outcome::permanent(format!("invalid page total: {e}"))),
            }
        }
        if wanted.is_empty() {
            return outcomes.into_vec();
        }
        let ids: Vec<&String> = wanted.iter().map(|(_, id, _)| id).collect();
        let store = &self.0;
        store.count_read();
        let page_days = store.database().collection::<Document>("page_days");
        let find = page_days
            .find(doc! { "_id": { "$in": ids } })
            .max_time(store.op_timeout());
        let days: Vec<Document> = match store
            .bounded(async { find.await?.try_collect().await })
            .await
        {
            Ok(days) => days,
            Err(e) => {
                let failure = store.failed(&e);
                for (i, _, _) in &wanted {
                    outcomes.set(*i, failure.clone().into());
                }
                return outcomes.into_vec();
            }
        };
        let mut totals: HashMap<&str, i64> = HashMap::new();
        for day in &days {
            if let (Ok(id), Ok(hours)) = (day.get_str("_id"), day.get_document("hours")) {
                let sum = hours
                    .values()
                    .filter_map(|v| v.as_i64().or(v.as_i32().map(i64::from)));
                totals.insert(id, sum.sum());
            }
        }
        // A place in the batch, and its page's total (0: the page day is gone since planning).
        let by_place: HashMap<usize, i64> = wanted
            .iter()
            .map(|(i, id, _)| (*i, totals.get(id.as_str()).copied().unwrap_or(0)))
            .collect();
        let writes: Vec<Upsert> = wanted.iter().map(|(i, id, p)| Upsert {
            filter: doc! { "_id": id },
            update: doc! { "$set": { "page": &p.page, "day": p.day.to_string(), "total": by_place[i] } },
        }).collect();
        let (results, _) = store.upsert_many("page_totals", &writes).await;
        outcomes.written(
            wanted.iter().map(|(i, _, _)| *i),
            results,
            |i| serde_json::json!({ "total": by_place.get(&i) }),
        );
        outcomes.into_vec()
    }
}
