//! The worker: concurrent batch loops that take jobs from a queue, hand each batch to a
//! [`Pipeline`], and settle every job by its own outcome; plus the upkeep every worker shares
//! (stalled-job recovery, queue depth sampling). A throttle, when given, paces the batches: each
//! is paid for before it is taken. Locks are extended while a batch is in flight.
//! On shutdown the loops stop taking jobs, give in-flight batches a grace period, and release
//! what is still unfinished back to wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::control::throttle::Throttle;
use crate::pipeline::{Outcome, Pipeline};
use crate::queue::{self, Job, Queue, QueueError, Retention, Settled, Settlement};
use crate::runs::Runs;
use crate::telemetry::names;

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
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            workers: 4,
            batch_docs: 500,
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
        }
    }
}

/// Decides how a job leaves active given its outcome: the job's own options first, then the
/// worker's defaults. `random` in [0, 1) feeds the backoff's jitter.
pub fn settlement_for(
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

/// A worker for one queue and one pipeline.
pub struct Worker<P> {
    queue: Queue,
    redis_url: String,
    pipeline: Arc<P>,
    options: WorkerOptions,
    throttle: Option<Throttle>,
    runs: Option<Runs>,
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
            runs: None,
        }
    }

    /// Counts each job that names a run (`runId` in its data) in that run, atomically with its
    /// settlement, and ends runs whose jobs have all finished.
    pub fn with_runs(mut self, runs: Runs) -> Self {
        self.runs = Some(runs);
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

    /// Runs until `shutdown` is cancelled and in-flight batches are settled or released.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerStats, QueueError> {
        let options = Arc::new(self.options);
        let worker_id = format!("{:016x}", rand::random::<u64>());
        let upkeep_stop = CancellationToken::new();
        let upkeep = tokio::spawn(upkeep(
            self.queue.clone(),
            options.clone(),
            self.throttle.clone(),
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
                runs: self.runs.clone(),
                token_base: format!("{worker_id}-{n}"),
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

struct BatchLoop<P> {
    queue: Queue,
    pipeline: Arc<P>,
    options: Arc<WorkerOptions>,
    throttle: Option<Throttle>,
    runs: Option<Runs>,
    token_base: String,
    /// Its own connection for blocking waits (see [`Queue::wait_for_work`]).
    blocking: redis::aio::ConnectionManager,
    shutdown: CancellationToken,
}

impl<P> BatchLoop<P> {
    /// Where `job`'s finish is counted: its run's counters, when runs are counted.
    fn count_for(&self, job: &Job) -> Option<queue::FinishCount> {
        self.runs.as_ref().and_then(|_| Runs::count_for(job))
    }

    /// Jobs to take now: the batch size, or less when the controller chose smaller batches.
    fn batch_size(&self) -> usize {
        let max = self.options.batch_docs.max(1);
        self.throttle
            .as_ref()
            .map_or(max, |t| t.batch_hint().min(max))
    }
}

/// Waits `delay` unless shutdown comes first; returns false on shutdown.
async fn pause_unless_stopped(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

async fn batch_loop<P: Pipeline>(mut l: BatchLoop<P>) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut batch_no = 0u64;
    while !l.shutdown.is_cancelled() {
        batch_no += 1;
        let token = format!("{}:{batch_no}", l.token_base);
        let want = l.batch_size();
        // Paid before taking, so a batch never sits locked waiting for a budget that has
        // shrunk meanwhile; budget paid for jobs that were not there is simply not used. And
        // no more batches in flight than the pace needs: overlapping batches contend.
        let mut slot = None;
        if let Some(throttle) = &l.throttle {
            tokio::select! {
                () = l.shutdown.cancelled() => break,
                claimed = throttle.claim() => slot = Some(claimed),
            }
            tokio::select! {
                () = l.shutdown.cancelled() => break,
                _ = throttle.acquire(want) => {}
            }
        }
        let taken = match l.queue.take(want, &token, l.options.lock_duration).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(queue = l.queue.name(), error = %e, "cannot take jobs; retrying in 1 s");
                if !pause_unless_stopped(&l.shutdown, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        if taken.jobs.is_empty() && taken.malformed.is_empty() {
            let mut wait = l.options.idle_block;
            if let Some(due) = taken.next_delayed {
                wait = wait.min(Duration::from_millis(due.saturating_sub(queue::now_ms())));
            }
            let queue = l.queue.clone();
            tokio::select! {
                () = l.shutdown.cancelled() => break,
                woke = queue.wait_for_work(&mut l.blocking, wait) => {
                    if let Err(e) = woke {
                        tracing::warn!(queue = l.queue.name(), error = %e, "cannot wait for jobs; retrying in 1 s");
                        if !pause_unless_stopped(&l.shutdown, Duration::from_secs(1)).await {
                            break;
                        }
                    }
                }
            }
            continue;
        }
        let taken = fill(&l, &token, taken, want).await;
        stats += run_batch(&l, &token, taken).await;
        drop(slot);
    }
    stats
}

/// Tops a short batch up once after `batch_wait`, so that a trickle of jobs still travels in
/// few, large writes. A plain timer, not a blocking wait on the marker: Redis checks blocking
/// timeouts only every ~100 ms, and an abandoned blocking pop could swallow another worker's
/// wake-up. Jobs taken here share the batch's lock token.
async fn fill<P: Pipeline>(
    l: &BatchLoop<P>,
    token: &str,
    mut taken: queue::Taken,
    want: usize,
) -> queue::Taken {
    let have = taken.jobs.len() + taken.malformed.len();
    if have >= want
        || l.options.batch_wait.is_zero()
        || !pause_unless_stopped(&l.shutdown, l.options.batch_wait).await
    {
        return taken;
    }
    match l
        .queue
        .take(want - have, token, l.options.lock_duration)
        .await
    {
        Ok(more) => {
            taken.jobs.extend(more.jobs);
            taken.malformed.extend(more.malformed);
        }
        Err(e) => tracing::warn!(queue = l.queue.name(), error = %e, "cannot top up a batch"),
    }
    taken
}

async fn run_batch<P: Pipeline>(l: &BatchLoop<P>, token: &str, taken: queue::Taken) -> WorkerStats {
    let started = std::time::Instant::now();
    let pipeline = l.pipeline.name();
    let queue_name = l.queue.name().to_owned();
    metrics::histogram!(names::BATCH_SIZE, "queue" => queue_name.clone())
        .record((taken.jobs.len() + taken.malformed.len()) as f64);

    let mut settlements = Vec::with_capacity(taken.jobs.len() + taken.malformed.len());
    let mut cannot_run = Vec::with_capacity(taken.malformed.len());
    for (job, reason) in taken.malformed {
        tracing::warn!(job = %job.id, pipeline, %reason, "job cannot run; failing it");
        settlements.push(Settlement::Failed {
            id: job.id.clone(),
            reason,
            stacktrace: Vec::new(),
            keep: l.options.keep_failed,
            exhausted: false,
            count: l.count_for(&job),
        });
        cannot_run.push(job);
    }
    let jobs = taken.jobs;
    for job in &jobs {
        tracing::debug!(job = %job.id, pipeline, attempt = job.attempts_made + 1, "active");
    }

    // The batch's work on the database, for the controller to learn what a batch costs.
    let noted = l.throttle.as_ref().map(|t| (t, t.start_batch(jobs.len())));
    let finished = process_with_locks(l, token, &jobs).await;
    if let Some((throttle, seq)) = noted {
        throttle.end_batch(seq);
    }
    let Some(outcomes) = finished else {
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let released = l.queue.release(token, &ids).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot release unfinished jobs; the stalled check will recover them");
            0
        });
        tracing::warn!(
            pipeline,
            released,
            "shutdown timeout: released unfinished jobs to wait"
        );
        let known: Vec<&Job> = cannot_run.iter().collect();
        let mut stats = settle(l, token, &settlements, &known).await;
        stats.released = released;
        return stats;
    };

    let mut outcomes = outcomes.into_iter();
    let processed = jobs.len();
    for job in &jobs {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Outcome::transient(format!(
                "pipeline {pipeline} returned fewer outcomes than the {processed} jobs it was given"
            ))
        });
        match &outcome {
            Outcome::Completed(_) => {
                tracing::debug!(job = %job.id, pipeline, attempt = job.attempts_made + 1, "completed")
            }
            Outcome::Failed { reason, retry } => {
                tracing::debug!(job = %job.id, pipeline, attempt = job.attempts_made + 1, %reason, retry, "failed attempt")
            }
        }
        settlements.push(
            settlement_for(job, outcome, &l.options, rand::random()).counted_in(l.count_for(job)),
        );
    }
    let known: Vec<&Job> = jobs.iter().chain(&cannot_run).collect();
    let stats = settle(l, token, &settlements, &known).await;
    tracing::info!(
        queue = %queue_name,
        pipeline,
        jobs = settlements.len(),
        completed = stats.completed,
        failed = stats.failed,
        retried = stats.retried,
        lost = stats.lost,
        ms = started.elapsed().as_millis() as u64,
        "batch settled"
    );
    stats
}

/// Runs the pipeline while extending the batch's locks. Returns `None` when shutdown's grace
/// period ran out first (the pipeline's future is dropped). A batch that outlives the batch
/// timeout is dropped too (its database calls with it), and each of its jobs fails this
/// attempt transiently: they are retried with backoff rather than held, locks extended, by a
/// database that stopped answering.
async fn process_with_locks<P: Pipeline>(
    l: &BatchLoop<P>,
    token: &str,
    jobs: &[Job],
) -> Option<Vec<Outcome>> {
    if jobs.is_empty() {
        return Some(Vec::new());
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let processing = l.pipeline.process(jobs);
    tokio::pin!(processing);
    let grace = async {
        l.shutdown.cancelled().await;
        tokio::time::sleep(l.options.shutdown_timeout).await;
    };
    tokio::pin!(grace);
    let timeout = tokio::time::sleep(l.options.batch_timeout);
    tokio::pin!(timeout);
    let mut extend = tokio::time::interval(l.options.lock_duration / 2);
    extend.tick().await; // the first tick is immediate; the locks are fresh
    loop {
        tokio::select! {
            outcomes = &mut processing => return Some(outcomes),
            () = &mut grace => return None,
            () = &mut timeout => {
                let reason = format!(
                    "the batch did not finish within {} (TIDEGATE_BATCH_TIMEOUT); abandoned",
                    humantime::format_duration(l.options.batch_timeout)
                );
                tracing::warn!(pipeline = l.pipeline.name(), jobs = jobs.len(), "{reason}");
                metrics::counter!(names::BATCHES_ABANDONED).increment(1);
                return Some(jobs.iter().map(|_| Outcome::transient(reason.clone())).collect());
            }
            _ = extend.tick() => {
                match l.queue.extend_locks(token, &ids, l.options.lock_duration).await {
                    Ok(lost) if !lost.is_empty() => tracing::warn!(
                        pipeline = l.pipeline.name(), lost = lost.len(),
                        "lost the lock of jobs in flight; they may run twice"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot extend locks"),
                }
            }
        }
    }
}

/// Settles with a few retries: if Redis stays away, the locks expire and the stalled check
/// hands the jobs out again (at-least-once). `jobs` are those settled whose data could be read
/// (a job that could not run, too: its run counts it); the runs of those that finished are
/// checked for their end, whether or not this call saw its own settlement (a reply lost after
/// the script ran makes the retry find the locks gone, yet the finishes were counted).
async fn settle<P: Pipeline>(
    l: &BatchLoop<P>,
    token: &str,
    settlements: &[Settlement],
    jobs: &[&Job],
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    if settlements.is_empty() {
        return stats;
    }
    let mut delay = Duration::from_millis(200);
    let results = loop {
        match l.queue.settle(token, settlements).await {
            Ok(results) => break results,
            Err(e) if delay <= Duration::from_secs(2) => {
                tracing::warn!(error = %e, "cannot settle jobs; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = settlements.len(), "cannot settle jobs; the stalled check will hand them out again");
                return stats;
            }
        }
    };
    let queue = l.queue.name().to_owned();
    let now = queue::now_ms();
    let by_id: std::collections::HashMap<&str, &Job> =
        jobs.iter().map(|j| (j.id.as_str(), *j)).collect();
    for (settlement, result) in settlements.iter().zip(results) {
        if result != Settled::Done {
            stats.lost += 1;
            tracing::warn!(
                job = settlement.id(),
                ?result,
                "job lost its lock before settling; it may run again"
            );
            continue;
        }
        let added = by_id.get(settlement.id()).map(|j| j.timestamp);
        let finished = |counter: &'static str| {
            metrics::counter!(counter, "queue" => queue.clone()).increment(1);
            if let Some(added) = added {
                let seconds = now.saturating_sub(added) as f64 / 1000.0;
                metrics::histogram!(names::JOB_LATENCY, "queue" => queue.clone()).record(seconds);
            }
        };
        match settlement {
            Settlement::Completed { .. } => {
                stats.completed += 1;
                finished(names::JOBS_COMPLETED);
            }
            Settlement::Failed { id, reason, .. } => {
                stats.failed += 1;
                tracing::info!(job = %id, pipeline = l.pipeline.name(), %reason, "job failed");
                finished(names::JOBS_FAILED);
            }
            Settlement::Retry {
                id, reason, delay, ..
            } => {
                stats.retried += 1;
                tracing::debug!(job = %id, pipeline = l.pipeline.name(), %reason, delay_ms = delay.as_millis() as u64, "retry scheduled");
                metrics::counter!(names::JOBS_RETRIED, "queue" => queue.clone()).increment(1);
            }
        }
    }
    if let Some(runs) = &l.runs {
        let finished: Vec<&Job> = settlements
            .iter()
            .filter(|s| !matches!(s, Settlement::Retry { .. }))
            .filter_map(|s| by_id.get(s.id()).copied())
            .collect();
        runs.check_ends(&finished).await;
    }
    stats
}

/// Stalled-job recovery and queue depth sampling (told to the throttle, when paced, as the
/// queue's backlog), until `stop`.
async fn upkeep(
    queue: Queue,
    options: Arc<WorkerOptions>,
    throttle: Option<Throttle>,
    stop: CancellationToken,
) {
    let mut stalled = tokio::time::interval(options.stalled_interval);
    let mut depth = tokio::time::interval(options.depth_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = stalled.tick() => match queue.recover_stalled(options.stalled_interval, options.max_stalled).await {
                Ok(check) => {
                    for id in &check.requeued {
                        tracing::warn!(queue = queue.name(), job = %id, "stalled: lock expired, moved back to wait");
                    }
                }
                Err(e) => tracing::warn!(queue = queue.name(), error = %e, "stalled check failed"),
            },
            _ = depth.tick() => match queue.counts().await {
                Ok(counts) => {
                    if let Some(throttle) = &throttle {
                        throttle.set_backlog(counts.waiting + counts.prioritized);
                    }
                    for (state, n) in counts.by_state() {
                        metrics::gauge!(names::QUEUE_JOBS, "queue" => queue.name().to_owned(), "state" => state)
                            .set(n as f64);
                    }
                }
                Err(e) => tracing::warn!(queue = queue.name(), error = %e, "cannot read queue depth"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Backoff, BackoffKind, JobOptions, Keep};

    fn job(attempts: Option<u32>, attempts_made: u32) -> Job {
        Job {
            id: "j".into(),
            name: "n".into(),
            raw_data: "{}".into(),
            opts: JobOptions {
                attempts,
                backoff: Some(Backoff::Spec {
                    kind: BackoffKind::Exponential,
                    delay: 100,
                    jitter: None,
                }),
                ..JobOptions::default()
            },
            timestamp: 0,
            attempts_made,
        }
    }

    #[test]
    fn transient_failures_retry_until_attempts_run_out() {
        let o = WorkerOptions::default();
        let first = settlement_for(&job(Some(3), 0), Outcome::transient("t"), &o, 0.5);
        assert!(
            matches!(first, Settlement::Retry { delay, .. } if delay == Duration::from_millis(100))
        );
        let second = settlement_for(&job(Some(3), 1), Outcome::transient("t"), &o, 0.5);
        assert!(
            matches!(second, Settlement::Retry { delay, .. } if delay == Duration::from_millis(200))
        );
        let last = settlement_for(&job(Some(3), 2), Outcome::transient("t"), &o, 0.5);
        assert!(matches!(
            last,
            Settlement::Failed {
                exhausted: true,
                ..
            }
        ));
    }

    #[test]
    fn permanent_failures_never_retry() {
        let o = WorkerOptions::default();
        let s = settlement_for(&job(Some(5), 0), Outcome::permanent("bad"), &o, 0.5);
        assert!(matches!(
            s,
            Settlement::Failed {
                exhausted: false,
                ..
            }
        ));
    }

    #[test]
    fn job_retention_overrides_the_worker_default() {
        let o = WorkerOptions::default();
        let mut j = job(None, 0);
        let done = settlement_for(&j, Outcome::Completed(serde_json::json!(1)), &o, 0.0);
        assert!(
            matches!(done, Settlement::Completed { keep, .. } if keep == Retention::keep_last(50_000))
        );
        j.opts.remove_on_complete = Some(Keep::Flag(true));
        let done = settlement_for(&j, Outcome::Completed(serde_json::json!(1)), &o, 0.0);
        assert!(
            matches!(done, Settlement::Completed { keep, .. } if keep == Retention::keep_last(0))
        );
    }
}
