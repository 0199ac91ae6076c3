//! A team's own pipeline on the tidegate engine: jobs named `visit` (`{"page": "/", "day":
//! "2026-11-24", "hour": 13, "visits": 42}`) store a page's visits per hour in `page_days`, a
//! batch as one bulk write paced by the database's load, and a nightly run totals each page's
//! day (`totals`); the engine adds /metrics, health, the back-office, the schedule, runs and
//! graceful shutdown. `TIDEGATE_QUEUE=visits TIDEGATE_SCHEDULE=@daily cargo run -p visits`.

mod totals;

use mongodb::bson::doc;
use serde::Deserialize;
use tidegate::pipeline::{Outcome, Outcomes, Pipeline};
use tidegate::queue::Job;
use tidegate::store::{Store, Upsert};
use totals::Totals;

#[derive(Deserialize)]
struct Visit {
    page: String,
    day: chrono::NaiveDate,
    hour: u8,
    visits: u32,
}

struct Visits(Store);

impl Pipeline for Visits {
    fn name(&self) -> &str {
        "visits"
    }

    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes = Outcomes::new(jobs.len());
        let (mut places, mut writes) = (Vec::new(), Vec::new());
        for (i, job) in jobs.iter().enumerate() {
            match job.data::<Visit>() {
                // Bad data never gets better: the job fails alone, for good, with its reason.
                Err(e) => outcomes.set(i, Outcome::permanent(format!("invalid visit: {e}"))),
                Ok(v) if v.hour > 23 => outcomes.set(i, Outcome::permanent("hour is not 0-23")),
                Ok(v) => {
                    // `$set`, not `$inc`: delivery is at least once, so a job may run twice.
                    places.push(i);
                    writes.push(Upsert {
                        filter: doc! { "_id": format!("{}:{}", v.day, v.page) },
                        update: doc! { "$set": {
                            "page": &v.page,
                            "day": v.day.to_string(),
                            format!("hours.{}", v.hour): v.visits,
                        } },
                    });
                }
            }
        }
        let (results, _) = self.0.upsert_many("page_days", &writes).await;
        outcomes.written(places, results, |_| serde_json::json!({ "written": true }));
        outcomes.into_vec()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tidegate::engine::main(|engine| {
        let store = engine.store.clone();
        engine
            .pipeline(&["visit"], Visits(store.clone()))
            .pipeline(totals::JOB_NAMES, Totals(store.clone()))
            .daily(Totals(store))
    })
    .await
}
