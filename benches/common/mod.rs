//! What the queue benchmarks share: a pipeline that completes every job and does nothing, so
//! that only the queue is measured.

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
