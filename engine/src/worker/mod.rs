//! The worker: concurrent batch loops that take jobs from a queue, hand each batch to a
//! [`Pipeline`], and settle every job by its own outcome; plus the upkeep every worker shares
//! (stalled-job recovery, queue depth sampling). A throttle, when given, paces the batches: each
//! is paid for before it is taken. Locks are extended while a batch is in flight.
//! On shutdown the loops stop taking jobs, give in-flight batches a grace period, and release
//! what is still unfinished back to wait.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::circuit::Circuit;
use crate::control::throttle::Throttle;
use crate::pipeline::{Outcome, Pipeline};
use crate::queue::{self, Job, Queue, QueueError, Retention, Settlement};
use crate::telemetry::{held, names};

mod batch;

use batch::{BatchLoop, batch_loop};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Batch loops running at once.
    pub workers: usize,
    /// Most jobs one loop takes at a time.
    pub batch_docs: usize,
    /// How long a short batch waits for more jobs before it runs; zero runs what one take got.
    pub batch_wait: Duration,
    /// How long a taken job stays locked without an extension.
    pub lock_duration: Duration,
    /// How long a batch may stay in its pipeline before it is abandoned and its jobs go back
    /// to be retried: the locks are extended only this long.
    pub batch_timeout: Duration,
    /// How often the stalled check runs (across all workers of the queue).
    pub stalled_interval: Duration,
    /// Times a job may stall before it fails.
    pub max_stalled: u32,
    /// Longest an idle loop blocks before looking again.
    pub idle_block: Duration,
    /// How often queue depth is sampled into metrics.
    pub depth_interval: Duration,
    /// Grace period for in-flight batches after shutdown is asked for.
    pub shutdown_timeout: Duration,
    /// Retention for jobs whose options do not set `removeOnComplete` / `removeOnFail`.
    pub keep_completed: Retention,
    pub keep_failed: Retention,
    /// What becomes of jobs whose name the pipeline does not handle.
    pub unknown_jobs: UnknownJobs,
}

/// What a worker does with jobs whose name its pipeline does not handle, on a queue it shares
/// with other workers (`TIDEGATE_UNKNOWN_JOBS`). A pipeline that handles every name
/// ([`Pipeline::job_names`] is `None`) meets none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownJobs {
    /// Refuse to start while such jobs wait ([`Worker::check_names`]); leave them afterwards.
    Refuse,
    /// Never take them: the queue's other workers run them.
    Leave,
    /// Take them and fail them for good, saying which names are handled.
    Fail,
}

/// Jobs waiting on a queue whose names the worker's pipeline does not handle.
#[derive(Debug, thiserror::Error)]
#[error(
    "queue {queue:?} holds jobs no enabled pipeline handles: {}; tidegate handles {handled}. \
     If other workers (BullMQ's) run them, set TIDEGATE_UNKNOWN_JOBS=leave; to fail them, \
     TIDEGATE_UNKNOWN_JOBS=fail; or enable the application that handles them (TIDEGATE_APPS)",
    listed(.found)
)]
pub struct UnknownNames {
    pub queue: String,
    /// Each name found, with how many jobs of it were seen.
    pub found: Vec<(String, u64)>,
    pub handled: String,
}

fn listed(found: &[(String, u64)]) -> String {
    let shown: Vec<String> = found.iter().map(|(n, c)| format!("{n:?} ({c})")).collect();
    shown.join(", ")
}

/// Jobs of each state looked at by [`check_names`].
const NAME_SAMPLE: usize = 1000;

/// Under [`UnknownJobs::Refuse`], the jobs waiting on `queue` that a pipeline handling
/// `handled` (`None`: every name) would never run, as an error that names them: a process that
/// starts on a queue shared with other workers says so before it leaves anything. `Ok` in the
/// other modes.
pub async fn check_names(
    queue: &Queue,
    handled: Option<Vec<String>>,
    mode: UnknownJobs,
) -> Result<Result<(), UnknownNames>, QueueError> {
    let (UnknownJobs::Refuse, Some(handled)) = (mode, handled) else {
        return Ok(Ok(()));
    };
    let found: Vec<(String, u64)> = queue
        .waiting_names(NAME_SAMPLE)
        .await?
        .into_iter()
        .filter(|(name, _)| !handled.contains(name))
        .collect();
    if found.is_empty() {
        return Ok(Ok(()));
    }
    Ok(Err(UnknownNames {
        queue: queue.name().to_owned(),
        found,
        handled: handled.join(", "),
    }))
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            workers: 4,
            batch_docs: crate::store::BATCH_DOCS,
            batch_wait: Duration::from_millis(20),
            lock_duration: Duration::from_secs(30),
            batch_timeout: Duration::from_secs(60),
            stalled_interval: Duration::from_secs(30),
            max_stalled: 1,
            idle_block: Duration::from_secs(5),
            depth_interval: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
            keep_completed: Retention::keep_last(50_000),
            keep_failed: Retention::KEEP_ALL,
            unknown_jobs: UnknownJobs::Refuse,
        }
    }
}

/// Decides how a job leaves active given its outcome: the job's own options first, then the
/// worker's defaults. `random` in [0, 1) feeds the backoff's jitter.
pub(crate) fn settlement_for(
    job: &Job,
    outcome: Outcome,
    options: &WorkerOptions,
    random: f64,
) -> Settlement {
    let keep = |own: Option<queue::Keep>, default: Retention| own.map_or(default, Retention::from);
    match outcome {
        Outcome::Completed(value) => Settlement::Completed {
            id: job.id.clone(),
            returnvalue: value.to_string(),
            keep: keep(job.opts.remove_on_complete, options.keep_completed),
            count: None,
        },
        Outcome::Failed { reason, retry } => {
            let failures = job.attempts_made.saturating_add(1);
            if retry && failures < job.max_attempts() {
                let delay = job
                    .opts
                    .backoff
                    .map_or(Duration::ZERO, |b| b.delay(failures, random));
                Settlement::Retry {
                    id: job.id.clone(),
                    reason,
                    stacktrace: Vec::new(),
                    delay,
                    lifo: job.opts.lifo,
                }
            } else {
                Settlement::Failed {
                    id: job.id.clone(),
                    reason,
                    stacktrace: Vec::new(),
                    keep: keep(job.opts.remove_on_fail, options.keep_failed),
                    exhausted: failures >= job.max_attempts(),
                    count: None,
                }
            }
        }
    }
}

/// Told of the jobs a worker settles, in batches, as BullMQ's `completed` and `failed` events
/// tell their listeners; and asked where each finish is counted, so that the count is made in
/// the same script call as the settlement.
pub trait Observer: Send + Sync + 'static {
    /// Where the queue counts `job`'s finish (completed, or failed for good), if anywhere.
    fn count_for(&self, _job: &Job) -> Option<queue::FinishCount> {
        None
    }

    /// The jobs of a batch that finished, after the settle call (also when its reply was lost:
    /// the counts were made all the same). Must not hold the batch loop long.
    fn finished<'a>(&'a self, jobs: &'a [&'a Job]) -> BoxFuture<'a, ()>;
}

/// A worker for one queue and one pipeline.
pub struct Worker<P> {
    queue: Queue,
    redis_url: String,
    pipeline: Arc<P>,
    options: WorkerOptions,
    throttle: Option<Throttle>,
    observer: Option<Arc<dyn Observer>>,
    /// What the pipeline needs (the database), each as a circuit.
    needs: Vec<Circuit>,
}

/// Jobs settled by a worker over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub released: u64,
    /// Settlements refused because the job's lock had been lost (it may run again elsewhere).
    pub lost: u64,
}

impl std::ops::AddAssign for WorkerStats {
    fn add_assign(&mut self, o: Self) {
        self.completed += o.completed;
        self.failed += o.failed;
        self.retried += o.retried;
        self.released += o.released;
        self.lost += o.lost;
    }
}

impl<P: Pipeline> Worker<P> {
    /// `redis_url` opens each loop's blocking connection; everything else goes through `queue`.
    pub fn new(queue: Queue, redis_url: &str, pipeline: P, options: WorkerOptions) -> Self {
        Self {
            queue,
            redis_url: redis_url.to_owned(),
            pipeline: Arc::new(pipeline),
            options,
            throttle: None,
            observer: None,
            needs: Vec::new(),
        }
    }

    /// Takes no jobs while `circuit` (a dependency of the pipeline, such as the database) is
    /// open, releases in-flight batches when it opens, and releases rather than retries a job
    /// that failed while it was: the jobs wait, their attempts untouched, and work resumes when
    /// it closes.
    pub fn needs(mut self, circuit: Circuit) -> Self {
        self.needs.push(circuit);
        self
    }

    /// Tells `observer` of the jobs that finish, as BullMQ's `completed` and `failed` events
    /// tell their listeners (runs observe this way).
    pub fn observed_by(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Paces batches through `throttle`: each loop pays for a batch of n jobs (one document
    /// written per job) before it takes them, n as the controller chose (see
    /// [`Throttle::batch_hint`]); each batch's work on the database is noted in the throttle's
    /// ledger, and the queue's backlog is told to it. Unpaced without a throttle.
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The names this worker takes; empty: every name (its pipeline handles all, or unknown
    /// jobs are taken to be failed).
    fn taken_names(&self) -> Vec<String> {
        match (self.options.unknown_jobs, self.pipeline.job_names()) {
            (UnknownJobs::Fail, _) | (_, None) => Vec::new(),
            (_, Some(names)) => names,
        }
    }

    /// Runs until `shutdown` is cancelled and in-flight batches are settled or released.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerStats, QueueError> {
        let names: Arc<[String]> = self.taken_names().into();
        let needs: Arc<[Circuit]> = self.needs.clone().into();
        let redis = Circuit::new("redis");
        let options = Arc::new(self.options);
        let worker_id = format!("{:016x}", rand::random::<u64>());
        let upkeep_stop = CancellationToken::new();
        let upkeep = tokio::spawn(upkeep(
            self.queue.clone(),
            options.clone(),
            self.throttle.clone(),
            format!("depth:{worker_id}"),
            redis.clone(),
            upkeep_stop.clone(),
        ));

        let mut loops = JoinSet::new();
        for n in 0..options.workers.max(1) {
            let blocking = queue::connect(&self.redis_url).await?;
            loops.spawn(batch_loop(BatchLoop {
                queue: self.queue.clone(),
                pipeline: self.pipeline.clone(),
                options: options.clone(),
                throttle: self.throttle.clone(),
                observer: self.observer.clone(),
                token_base: format!("{worker_id}-{n}"),
                names: names.clone(),
                needs: needs.clone(),
                redis: redis.clone(),
                blocking,
                shutdown: shutdown.clone(),
            }));
        }
        tracing::info!(
            queue = self.queue.name(),
            pipeline = self.pipeline.name(),
            loops = options.workers,
            batch_size = options.batch_docs,
            "worker started"
        );
        let mut stats = WorkerStats::default();
        while let Some(done) = loops.join_next().await {
            match done {
                Ok(loop_stats) => stats += loop_stats,
                Err(e) => tracing::error!(error = %e, "a batch loop panicked"),
            }
        }
        upkeep_stop.cancel();
        let _ = upkeep.await;
        tracing::info!(queue = self.queue.name(), ?stats, "worker stopped");
        Ok(stats)
    }
}

/// Stalled-job recovery and queue depth sampling (told to the throttle, when paced, as the
/// queue's backlog), until `stop`. The depth is exported, as `holder`, only while the throttle
/// says this process reports it (one process per queue does), so that N processes of a queue
/// do not show N times its depth.
async fn upkeep(
    queue: Queue,
    options: Arc<WorkerOptions>,
    throttle: Option<Throttle>,
    holder: String,
    redis: Circuit,
    stop: CancellationToken,
) {
    let mut stalled = tokio::time::interval(options.stalled_interval);
    let mut depth = tokio::time::interval(options.depth_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                held::clear(&holder);
                return;
            }
            _ = stalled.tick() => match queue.recover_stalled(options.stalled_interval, options.max_stalled).await {
                Ok(check) => {
                    redis.close();
                    for id in &check.requeued {
                        tracing::warn!(queue = queue.name(), job = %id, "stalled: lock expired, moved back to wait");
                    }
                }
                // Redis out of reach is said once, by its circuit.
                Err(e) if e.unreachable() => { redis.open(&e.to_string()); }
                Err(e) => tracing::warn!(queue = queue.name(), error = %e, "stalled check failed"),
            },
            _ = depth.tick() => match queue.counts().await {
                Ok(counts) => {
                    redis.close();
                    if let Some(throttle) = &throttle {
                        throttle.set_backlog(counts.waiting + counts.prioritized);
                    }
                    if throttle.as_ref().is_none_or(Throttle::reports_depth) {
                        for (state, n) in counts.by_state() {
                            let labels = [("queue", queue.name()), ("state", state)];
                            held::set(&holder, names::QUEUE_JOBS, &labels, n as f64);
                        }
                    } else {
                        held::clear(&holder);
                    }
                }
                Err(e) if e.unreachable() => { redis.open(&e.to_string()); }
                Err(e) => tracing::warn!(queue = queue.name(), error = %e, "cannot read queue depth"),
            },
        }
    }
}

#[cfg(test)]
mod tests;
