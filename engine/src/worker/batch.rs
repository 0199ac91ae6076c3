//! One batch loop: pay the throttle, take, top up a short batch, run the pipeline while the
//! locks are extended (within the batch timeout and shutdown's grace), and settle every job by
//! its outcome, each finish counted where the observer says, in the same call. While a
//! dependency is down (its circuit open) it takes nothing, releases the batch it holds, and
//! releases rather than retries a job that failed for it: an outage spends no attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Observer, WorkerOptions, WorkerStats, settlement_for};
use crate::circuit::Circuit;
use crate::control::throttle::Throttle;
use crate::pipeline::{Outcome, Pipeline};
use crate::queue::{self, Job, Queue, Settled, Settlement};
use crate::telemetry::names;

pub(super) struct BatchLoop<P> {
    pub(super) queue: Queue,
    pub(super) pipeline: Arc<P>,
    pub(super) options: Arc<WorkerOptions>,
    pub(super) throttle: Option<Throttle>,
    pub(super) observer: Option<Arc<dyn Observer>>,
    pub(super) token_base: String,
    /// The job names it takes; empty: every name.
    pub(super) names: Arc<[String]>,
    /// Its own connection for blocking waits (see [`Queue::wait_for_work`]).
    pub(super) blocking: crate::queue::Redis,
    /// What the pipeline needs (the database): while one is down, nothing is taken.
    pub(super) needs: Arc<[Circuit]>,
    /// Redis, as this worker's loops find it.
    pub(super) redis: Circuit,
    pub(super) shutdown: CancellationToken,
}

impl<P> BatchLoop<P> {
    /// Where `job`'s finish is counted, as the observer says.
    fn count_for(&self, job: &Job) -> Option<queue::FinishCount> {
        self.observer.as_ref().and_then(|o| o.count_for(job))
    }

    /// A dependency of the pipeline that is down now, if any.
    fn down(&self) -> Option<&Circuit> {
        self.needs.iter().find(|c| c.is_open())
    }

    /// Notes a failed Redis call: a Redis out of reach opens its circuit (said once), any other
    /// error is logged as `what`.
    fn redis_failed(&self, e: &queue::QueueError, what: &str) {
        if e.unreachable() {
            self.redis.open(&e.to_string());
        } else {
            tracing::warn!(queue = self.queue.name(), error = %e, "{what}; retrying in 1 s");
        }
    }

    /// Jobs to take now: the controller's batch, which the throttle carries (within its
    /// burst, the batch size); unpaced, the batch size.
    fn batch_size(&self) -> usize {
        self.throttle
            .as_ref()
            .map_or(self.options.batch_docs.max(1), |t| t.batch_hint())
    }
}

/// Waits `delay` unless shutdown comes first; returns false on shutdown.
async fn pause_unless_stopped(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// How soon a loop looks again when all it found was left for other workers.
const LEFT_POLL: Duration = Duration::from_secs(1);

/// How long after Redis answers again the jobs of takes whose answers were lost are released:
/// the takes themselves, queued in the server while it was frozen, run as soon as it thaws.
const LOST_TAKES_SETTLE: Duration = Duration::from_secs(1);

pub(super) async fn batch_loop<P: Pipeline>(mut l: BatchLoop<P>) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut warned_left = false;
    // Tokens of takes that failed with Redis out of reach: each may have taken jobs all the
    // same, whose answer was lost; they are released once Redis answers.
    let mut lost: Vec<String> = Vec::new();
    let mut batch_no = 0u64;
    while !l.shutdown.is_cancelled() {
        // While the pipeline's database is down, jobs stay in wait, their attempts untouched.
        if let Some(down) = l.down() {
            tokio::select! {
                () = l.shutdown.cancelled() => break,
                () = down.closed() => continue,
            }
        }
        batch_no += 1;
        let token = format!("{}:{batch_no}", l.token_base);
        let want = l.batch_size();
        // Paid before taking, so a batch never sits locked waiting for a budget that has
        // shrunk meanwhile; budget paid for jobs that were not there is simply not used. And
        // no more batches in flight than the pace needs: overlapping batches contend.
        let mut slot = None;
        if let Some(throttle) = &l.throttle {
            let mut claimed = tokio::select! {
                () = l.shutdown.cancelled() => break,
                claimed = throttle.claim() => claimed,
            };
            tokio::select! {
                () = l.shutdown.cancelled() => break,
                _ = throttle.acquire(want, &mut claimed) => {}
            }
            slot = Some(claimed);
        }
        // The throttle's wait may have outlasted the database.
        if l.down().is_some() {
            continue;
        }
        let taken = match l
            .queue
            .take_named(want, &token, l.options.lock_duration, &l.names)
            .await
        {
            Ok(taken) => {
                l.redis.close();
                release_lost(&l, std::mem::take(&mut lost));
                taken
            }
            Err(e) => {
                if e.unreachable() {
                    lost.push(token);
                }
                l.redis_failed(&e, "cannot take jobs");
                if !pause_unless_stopped(&l.shutdown, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        if taken.left > 0 && !warned_left {
            warned_left = true;
            tracing::warn!(queue = l.queue.name(), left = taken.left, handled = %l.names.join(", "),
                "jobs whose names no enabled pipeline handles wait on this queue; left for its other workers (TIDEGATE_UNKNOWN_JOBS)");
        }
        if taken.jobs.is_empty() && taken.malformed.is_empty() {
            if taken.left > 0 {
                // Jobs left for other workers keep the queue's marker set: a blocking wait on
                // it would return at once, so look again after a pause instead.
                if !pause_unless_stopped(&l.shutdown, LEFT_POLL).await {
                    break;
                }
                continue;
            }
            let mut wait = l.options.idle_block;
            if let Some(due) = taken.next_delayed {
                wait = wait.min(Duration::from_millis(due.saturating_sub(queue::now_ms())));
            }
            let queue = l.queue.clone();
            tokio::select! {
                () = l.shutdown.cancelled() => break,
                woke = queue.wait_for_work(&mut l.blocking, wait) => {
                    if let Err(e) = woke {
                        l.redis_failed(&e, "cannot wait for jobs");
                        if !pause_unless_stopped(&l.shutdown, Duration::from_secs(1)).await {
                            break;
                        }
                    }
                }
            }
            continue;
        }
        let (taken, top_up_lost) = fill(&l, &token, taken, want).await;
        stats += run_batch(&l, &token, taken).await;
        if top_up_lost {
            lost.push(token);
        }
        drop(slot);
    }
    stats
}

/// Releases, a moment after Redis answers again, whatever the takes of `tokens` took while
/// their answers were lost.
fn release_lost<P: Pipeline>(l: &BatchLoop<P>, tokens: Vec<String>) {
    if tokens.is_empty() {
        return;
    }
    let queue = l.queue.clone();
    tokio::spawn(async move {
        tokio::time::sleep(LOST_TAKES_SETTLE).await;
        for token in tokens {
            match queue.release_all(&token).await {
                Ok(0) => {}
                Ok(released) => tracing::info!(
                    queue = queue.name(),
                    released,
                    "released to wait the jobs of a take whose answer was lost, attempts untouched"
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot release a lost take's jobs; the stalled check will")
                }
            }
        }
    });
}

/// Tops a short batch up once after `batch_wait`, so that a trickle of jobs still travels in
/// few, large writes. A plain timer, not a blocking wait on the marker: Redis checks blocking
/// timeouts only every ~100 ms, and an abandoned blocking pop could swallow another worker's
/// wake-up. Jobs taken here share the batch's lock token; whether the top-up's answer was
/// lost with Redis out of reach (the jobs it may have taken are then released by token).
async fn fill<P: Pipeline>(
    l: &BatchLoop<P>,
    token: &str,
    mut taken: queue::Taken,
    want: usize,
) -> (queue::Taken, bool) {
    let have = taken.jobs.len() + taken.malformed.len();
    if have >= want
        || l.options.batch_wait.is_zero()
        || !pause_unless_stopped(&l.shutdown, l.options.batch_wait).await
    {
        return (taken, false);
    }
    match l
        .queue
        .take_named(want - have, token, l.options.lock_duration, &l.names)
        .await
    {
        Ok(more) => {
            taken.jobs.extend(more.jobs);
            taken.malformed.extend(more.malformed);
            (taken, false)
        }
        Err(e) => {
            l.redis_failed(&e, "cannot top up a batch");
            (taken, e.unreachable())
        }
    }
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
    let outcomes = match finished {
        Finished::Done(outcomes) => outcomes,
        Finished::Shutdown | Finished::Down(_) => {
            let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let released = release(l, token, &ids).await;
            match finished {
                Finished::Down(dependency) => tracing::warn!(
                    pipeline,
                    released,
                    "{dependency} is unreachable: released the batch's jobs to wait, attempts untouched"
                ),
                _ => tracing::warn!(
                    pipeline,
                    released,
                    "shutdown timeout: released unfinished jobs to wait"
                ),
            }
            let known: Vec<&Job> = cannot_run.iter().collect();
            let mut stats = settle(l, token, &settlements, &known).await;
            stats.released = released;
            return stats;
        }
    };

    // A job that failed while the database was found down failed for the outage: it goes back
    // to wait, its attempt not counted, instead of spending one of its retries.
    let down = l.down().map(Circuit::dependency);
    let mut outage = Vec::new();
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
        if down.is_some() && matches!(outcome, Outcome::Failed { retry: true, .. }) {
            outage.push(job.id.clone());
            continue;
        }
        settlements.push(
            settlement_for(job, outcome, &l.options, rand::random()).counted_in(l.count_for(job)),
        );
    }
    let known: Vec<&Job> = jobs.iter().chain(&cannot_run).collect();
    let mut stats = settle(l, token, &settlements, &known).await;
    if let Some(dependency) = down
        && !outage.is_empty()
    {
        stats.released = release(l, token, &outage).await;
        tracing::warn!(
            pipeline,
            released = stats.released,
            "{dependency} is unreachable: released the jobs that failed for it to wait, attempts untouched"
        );
    }
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

/// How a batch left its pipeline.
enum Finished {
    Done(Vec<Outcome>),
    /// Shutdown's grace period ran out first.
    Shutdown,
    /// A dependency of the pipeline went down (its circuit opened): the batch was dropped.
    Down(&'static str),
}

/// Resolves with the first of `circuits` to open (at once if one is); never, for none.
async fn any_opens(circuits: &[Circuit]) -> &'static str {
    if circuits.is_empty() {
        return std::future::pending().await;
    }
    let opens = circuits.iter().map(|c| {
        Box::pin(async move {
            c.opened().await;
            c.dependency()
        })
    });
    futures::future::select_all(opens).await.0
}

/// Releases `ids` (held under `token`) to the front of wait, their attempts untouched; how
/// many. When Redis cannot be asked, the stalled check recovers them once their locks lapse.
async fn release<P: Pipeline>(l: &BatchLoop<P>, token: &str, ids: &[String]) -> u64 {
    l.queue.release(token, ids).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot release unfinished jobs; the stalled check will recover them");
        0
    })
}

/// Runs the pipeline while extending the batch's locks. The pipeline's future is dropped
/// (its database calls with it) when shutdown's grace period runs out, or when a dependency of
/// the pipeline goes down: the caller then releases the jobs. A batch that outlives the batch
/// timeout is dropped too, and each of its jobs fails this attempt transiently: they are
/// retried with backoff rather than held, locks extended, by a pipeline that stopped moving.
async fn process_with_locks<P: Pipeline>(l: &BatchLoop<P>, token: &str, jobs: &[Job]) -> Finished {
    if jobs.is_empty() {
        return Finished::Done(Vec::new());
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
    let down = any_opens(&l.needs);
    tokio::pin!(down);
    let mut extend = tokio::time::interval(l.options.lock_duration / 2);
    extend.tick().await; // the first tick is immediate; the locks are fresh
    loop {
        tokio::select! {
            outcomes = &mut processing => return Finished::Done(outcomes),
            () = &mut grace => return Finished::Shutdown,
            dependency = &mut down => return Finished::Down(dependency),
            () = &mut timeout => {
                let reason = format!(
                    "the batch did not finish within {} (TIDEGATE_BATCH_TIMEOUT); abandoned",
                    humantime::format_duration(l.options.batch_timeout)
                );
                tracing::warn!(pipeline = l.pipeline.name(), jobs = jobs.len(), "{reason}");
                metrics::counter!(names::BATCHES_ABANDONED).increment(1);
                return Finished::Done(jobs.iter().map(|_| Outcome::transient(reason.clone())).collect());
            }
            _ = extend.tick() => {
                match l.queue.extend_locks(token, &ids, l.options.lock_duration).await {
                    Ok(lost) if !lost.is_empty() => tracing::warn!(
                        pipeline = l.pipeline.name(), lost = lost.len(),
                        "lost the lock of jobs in flight; they may run twice"
                    ),
                    Ok(_) => {}
                    Err(e) => l.redis_failed(&e, "cannot extend locks"),
                }
            }
        }
    }
}

/// Settles with a few retries: if Redis stays away, the locks expire and the stalled check
/// hands the jobs out again (at-least-once). `jobs` are those settled whose data could be read
/// (a job that could not run, too: its run counts it); the observer hears of those that
/// finished whether or not this call saw its own settlement (a reply lost after the script ran
/// makes the retry find the locks gone, yet the finishes were counted).
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
    // Redis out of reach: tried again (quietly, its circuit says it once) until it answers,
    // or until shutdown. A settle that comes after its locks lapsed still lands while nobody
    // took the jobs since (see settle.lua). Any other error: a few tries.
    let mut delay = Duration::from_millis(200);
    let results = loop {
        match l.queue.settle(token, settlements).await {
            Ok(results) => {
                l.redis.close();
                break results;
            }
            Err(e) if e.unreachable() && !l.shutdown.is_cancelled() => {
                l.redis.open(&e.to_string());
                tokio::select! {
                    () = l.shutdown.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
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
    if let Some(observer) = &l.observer {
        let finished: Vec<&Job> = settlements
            .iter()
            .filter(|s| !matches!(s, Settlement::Retry { .. }))
            .filter_map(|s| by_id.get(s.id()).copied())
            .collect();
        observer.finished(&finished).await;
    }
    stats
}
