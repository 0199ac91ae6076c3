//! What a job means. A [`Pipeline`] turns a batch of jobs into one outcome per job; the worker
//! settles each job by its outcome. [`upsert`] is the generic pipeline any producer can use,
//! [`score`] is the seed's daily score, and [`Pipelines`] routes a mixed batch by job name, as a
//! BullMQ worker picks its processor by name.

pub mod score;
pub mod upsert;

use std::future::Future;

use crate::queue::Job;
use crate::store::WriteFailure;

/// What became of one job in a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the value is stored as the job's `returnvalue`.
    Completed(serde_json::Value),
    /// Not done. `retry` says whether another attempt could succeed (a timeout, a primary
    /// stepdown) or not (bad data, a validation error); attempts and backoff come from the job.
    Failed { reason: String, retry: bool },
}

impl Outcome {
    pub fn transient(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            retry: true,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            retry: false,
        }
    }
}

impl From<WriteFailure> for Outcome {
    fn from(failure: WriteFailure) -> Self {
        Outcome::Failed {
            reason: failure.message,
            retry: failure.transient,
        }
    }
}

/// What a batch of jobs means: jobs in, exactly one outcome per job out, in the same order.
pub trait Pipeline: Send + Sync + 'static {
    /// A short, fixed name (a metric label and a log field).
    fn name(&self) -> &str;

    fn process(&self, jobs: &[Job]) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// Job names the seed's score pipeline answers to.
pub const SCORE_JOB_NAMES: &[&str] = &["collect", "score"];
/// Job name of the generic upsert pipeline.
pub const UPSERT_JOB_NAME: &str = "upsert";

/// Routes each job of a batch to the pipeline its name selects; a name no pipeline answers to
/// fails that job alone.
pub struct Pipelines {
    pub score: score::ScorePipeline,
    pub upsert: upsert::UpsertPipeline,
}

impl Pipeline for Pipelines {
    fn name(&self) -> &str {
        "tidegate"
    }

    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let (mut scores, mut upserts) = (Vec::new(), Vec::new());
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        for (i, job) in jobs.iter().enumerate() {
            if SCORE_JOB_NAMES.contains(&job.name.as_str()) {
                scores.push(i);
            } else if job.name == UPSERT_JOB_NAME {
                upserts.push(i);
            } else {
                outcomes[i] = Some(Outcome::permanent(format!(
                    "no pipeline for job name {:?} (known: {}, {UPSERT_JOB_NAME})",
                    job.name,
                    SCORE_JOB_NAMES.join(", ")
                )));
            }
        }
        let pick = |idx: &[usize]| idx.iter().map(|&i| jobs[i].clone()).collect::<Vec<_>>();
        let (score_jobs, upsert_jobs) = (pick(&scores), pick(&upserts));
        let (score_out, upsert_out) = tokio::join!(
            self.score.process(&score_jobs),
            self.upsert.process(&upsert_jobs)
        );
        for (i, outcome) in scores.into_iter().zip(score_out) {
            outcomes[i] = Some(outcome);
        }
        for (i, outcome) in upserts.into_iter().zip(upsert_out) {
            outcomes[i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::transient("pipeline returned no outcome")))
            .collect()
    }
}
