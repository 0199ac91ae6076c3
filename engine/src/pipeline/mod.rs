//! What a job means. A [`Pipeline`] turns a batch of jobs into one outcome per job; the worker
//! settles each job by its outcome. A [`Router`] sends each job of a mixed batch to the pipeline
//! registered for its name, as a BullMQ worker picks its processor by name. [`upsert`] is the
//! generic pipeline any producer can use; applications bring their own. [`Outcomes`] keeps a
//! batch's outcomes as a pipeline learns them, in any order.

pub mod upsert;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

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

    /// The job names it handles; `None`: every job on the queue (the default). A worker
    /// leaves jobs of other names to the queue's other workers (`TIDEGATE_UNKNOWN_JOBS`), so a
    /// pipeline on a queue shared with BullMQ workers should say, or be put in a [`Router`].
    fn job_names(&self) -> Option<Vec<String>> {
        None
    }
}

/// The object-safe face of a [`Pipeline`], so that a [`Router`] can hold pipelines of any type.
trait Route: Send + Sync {
    fn process_boxed<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>>;
}

impl<P: Pipeline> Route for P {
    fn process_boxed<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.process(jobs))
    }
}

/// Routes each job of a batch to the pipeline registered for its name, as a BullMQ worker picks
/// its processor by name; the parts of a mixed batch run at once. A name no pipeline answers to
/// fails that job alone, saying which names are known.
#[derive(Default, Clone)]
pub struct Router {
    routes: Vec<(&'static [&'static str], Arc<dyn Route>)>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Jobs named any of `names` go to `pipeline` (the first registration of a name wins).
    pub fn route(mut self, names: &'static [&'static str], pipeline: impl Pipeline) -> Self {
        self.routes.push((names, Arc::new(pipeline)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every job name a pipeline answers to, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.routes
            .iter()
            .flat_map(|(n, _)| n.iter().copied())
            .collect()
    }
}

impl Pipeline for Router {
    fn name(&self) -> &str {
        "tidegate"
    }

    fn job_names(&self) -> Option<Vec<String>> {
        Some(self.names().into_iter().map(str::to_owned).collect())
    }

    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes = Outcomes::new(jobs.len());
        let mut groups: Vec<(Vec<usize>, Vec<Job>)> =
            vec![(Vec::new(), Vec::new()); self.routes.len()];
        for (i, job) in jobs.iter().enumerate() {
            match self
                .routes
                .iter()
                .position(|(names, _)| names.contains(&job.name.as_str()))
            {
                Some(route) => {
                    groups[route].0.push(i);
                    groups[route].1.push(job.clone());
                }
                None => outcomes.set(
                    i,
                    Outcome::permanent(format!(
                        "no pipeline for job name {:?} (known: {})",
                        job.name,
                        self.names().join(", ")
                    )),
                ),
            }
        }
        let results = futures::future::join_all(
            self.routes
                .iter()
                .zip(&groups)
                .filter(|(_, (_, group))| !group.is_empty())
                .map(|((_, pipeline), (idx, group))| async move {
                    (idx, pipeline.process_boxed(group).await)
                }),
        )
        .await;
        for (idx, out) in results {
            for (&i, outcome) in idx.iter().zip(out) {
                outcomes.set(i, outcome);
            }
        }
        outcomes.into_vec()
    }
}

/// A batch's outcomes, one per job, set in any order as a pipeline learns them (bad data at
/// once, the rest when its bulk write answers). A job left without one fails for a retry: a
/// pipeline that forgets a job never completes it by mistake.
#[derive(Debug)]
pub struct Outcomes(Vec<Option<Outcome>>);

impl Outcomes {
    /// Room for the outcomes of a batch of `jobs` jobs.
    pub fn new(jobs: usize) -> Self {
        Self(vec![None; jobs])
    }

    /// What became of the batch's `i`th job (a later call for the same job wins).
    pub fn set(&mut self, i: usize, outcome: Outcome) {
        if let Some(slot) = self.0.get_mut(i) {
            *slot = Some(outcome);
        }
    }

    /// Each job of `jobs` (places in the batch) by the fate of its statement in a bulk write,
    /// in the same order: completed with `value(i)`, or failed as the write failure says.
    pub fn written(
        &mut self,
        jobs: impl IntoIterator<Item = usize>,
        results: impl IntoIterator<Item = Result<(), WriteFailure>>,
        mut value: impl FnMut(usize) -> serde_json::Value,
    ) {
        for (i, result) in jobs.into_iter().zip(results) {
            self.set(
                i,
                match result {
                    Ok(()) => Outcome::Completed(value(i)),
                    Err(failure) => failure.into(),
                },
            );
        }
    }

    /// One outcome per job, in the batch's order.
    pub fn into_vec(self) -> Vec<Outcome> {
        self.0
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::transient("the pipeline gave no outcome")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::JobOptions;

    /// Completes each job with its pipeline's tag and the job's place in the batch it saw.
    struct Tag(&'static str);

    impl Pipeline for Tag {
        fn name(&self) -> &str {
            self.0
        }

        async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
            jobs.iter()
                .enumerate()
                .map(|(i, j)| Outcome::Completed(serde_json::json!([self.0, i, j.id])))
                .collect()
        }
    }

    fn job(id: &str, name: &str) -> Job {
        Job {
            id: id.into(),
            name: name.into(),
            raw_data: "{}".into(),
            opts: JobOptions::default(),
            timestamp: 0,
            attempts_made: 0,
        }
    }

    #[tokio::test]
    async fn each_job_reaches_the_pipeline_of_its_name_and_keeps_its_place() {
        let router = Router::new()
            .route(&["a", "alias"], Tag("A"))
            .route(&["b"], Tag("B"));
        let jobs = [
            job("1", "b"),
            job("2", "a"),
            job("3", "nope"),
            job("4", "alias"),
        ];
        let out = router.process(&jobs).await;
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], Outcome::Completed(serde_json::json!(["B", 0, "1"])));
        assert_eq!(out[1], Outcome::Completed(serde_json::json!(["A", 0, "2"])));
        assert_eq!(
            out[2],
            Outcome::permanent("no pipeline for job name \"nope\" (known: a, alias, b)")
        );
        assert_eq!(out[3], Outcome::Completed(serde_json::json!(["A", 1, "4"])));
    }
}
