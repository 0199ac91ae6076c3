//! Your own pipeline, worked by tidegate: jobs named `visit` (`{"page": "/pricing", "day":
//! "2026-11-24", "hour": 13, "visits": 42}`), each storing a page's visits in one hour of a day
//! in `page_days`, one document per (page, day) with a field per hour. A batch of any size
//! becomes one bulk write, paced by the database's load like the built-in pipelines, and the
//! jobs keep BullMQ's life cycle (retries, backoff, stalled recovery, runs when their data
//! carries a `runId`). The program gets everything `tidegate run` has: /metrics, /healthz,
//! /readyz, the back-office, the shared write budget, graceful shutdown; every `TIDEGATE_*`
//! setting applies.
//!
//! ```sh
//! eval "$(scripts/services env)"       # local Redis and FerretDB (scripts/services start)
//! TIDEGATE_QUEUE=visits cargo run --example own_pipeline
//! docker build -t visits --build-arg EXAMPLE=own_pipeline .   # its image (see Dockerfile)
//! ```
//! and from any BullMQ producer:
//! `new Queue("visits").add("visit", {page: "/", day: "2026-11-24", hour: 0, visits: 1})`.
//!
//! What makes a pipeline: a name, and `process`, which gets a batch of jobs and returns exactly
//! one [`Outcome`] per job, in order. Write in bulk, keep every write idempotent (a job may run
//! twice: delivery is at least once), and say for each failure whether a retry could help. Put
//! it in a [`Router`] under the job names it handles, so that on a queue shared with BullMQ
//! workers it never takes theirs (`TIDEGATE_UNKNOWN_JOBS`).

use std::process::ExitCode;

use mongodb::bson::doc;
use serde::Deserialize;
use tidegate::app::{self, App};
use tidegate::config::Settings;
use tidegate::pipeline::{Outcome, Pipeline, Router};
use tidegate::queue::Job;
use tidegate::store::{Store, Upsert};

/// A job's data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Visit {
    page: String,
    day: chrono::NaiveDate,
    hour: u8,
    visits: u32,
    #[serde(rename = "runId")]
    _run_id: Option<String>,
}

struct Visits {
    store: Store,
}

impl Pipeline for Visits {
    fn name(&self) -> &str {
        "visits"
    }

    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        let mut writes = Vec::new();
        let mut written = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            match job.data::<Visit>() {
                // Bad data never gets better: fail the job alone, with the reason.
                Err(e) => outcomes[i] = Some(Outcome::permanent(format!("invalid visit: {e}"))),
                Ok(visit) if visit.hour > 23 => {
                    outcomes[i] = Some(Outcome::permanent(format!(
                        "hour {} is not 0-23",
                        visit.hour
                    )))
                }
                Ok(visit) => {
                    // `$set`, not `$inc`: a job that runs twice writes the same value twice.
                    writes.push(Upsert {
                        filter: doc! { "_id": format!("{}:{}", visit.day, visit.page) },
                        update: doc! { "$set": {
                            "page": &visit.page,
                            "day": visit.day.to_string(),
                            format!("hours.{}", visit.hour): visit.visits,
                        } },
                    });
                    written.push(i);
                }
            }
        }
        // One bulk write for the batch; each statement's fate is its job's.
        let (results, _) = self.store.upsert_many("page_days", &writes).await;
        for (i, result) in written.into_iter().zip(results) {
            outcomes[i] = Some(match result {
                Ok(()) => Outcome::Completed(serde_json::json!({ "written": true })),
                // `WriteFailure` knows whether it is transient (retried with backoff) or not.
                Err(failure) => failure.into(),
            });
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::transient("no outcome")))
            .collect()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Every TIDEGATE_* setting applies, as for `tidegate run` (`tidegate config` lists them).
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tidegate::telemetry::init_tracing(&settings.log_filter, settings.log_format);
    let app = match App::connect(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let visits = Visits {
        store: app.store.clone(),
    };
    // Until SIGTERM or SIGINT, as `tidegate run`.
    match app::serve(app, Router::new().route(&["visit"], visits)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
