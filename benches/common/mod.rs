//! What the queue benchmarks share: a pipeline that completes every job and does nothing, so
//! that only the queue is measured.
#![allow(dead_code)] // each bench uses a different subset

use tidegate::pipeline::{Outcome, Pipeline};
use tidegate::queue::Job;

pub struct Noop;

impl Pipeline for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        jobs.iter()
            .map(|_| Outcome::Completed(serde_json::Value::Null))
            .collect()
    }
}

/// [`Noop`] that says which job names it handles, as `tidegate run`'s `Router` does: each take
/// then reads the names of the jobs it looks at (`TIDEGATE_UNKNOWN_JOBS`).
pub struct NamedNoop(pub &'static str);

impl Pipeline for NamedNoop {
    fn name(&self) -> &str {
        "noop"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        Noop.process(jobs).await
    }
    fn job_names(&self) -> Option<Vec<String>> {
        Some(vec![self.0.to_owned()])
    }
}
