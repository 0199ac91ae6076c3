//! The worker against real Redis: batches, per-job outcomes, wake-up on new work, lock
//! extension, stalled recovery and graceful shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tidegate::pipeline::{Outcome, Pipeline};
use tidegate::queue::{Counts, Job, JobOptions, NewJob, Queue, connect};
use tidegate::worker::{Worker, WorkerOptions, WorkerStats};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

async fn queue() -> Queue {
    let conn = connect(&common::redis_url()).await.expect("connect");
    Queue::new(conn, "bull", &common::unique("w"))
}

fn options() -> WorkerOptions {
    WorkerOptions {
        workers: 2,
        batch_docs: 100,
        idle_block: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(10),
        ..WorkerOptions::default()
    }
}

/// Starts a worker; returns its stop switch and its result.
fn start<P: Pipeline>(
    q: &Queue,
    pipeline: P,
    options: WorkerOptions,
) -> (CancellationToken, tokio::task::JoinHandle<WorkerStats>) {
    let stop = CancellationToken::new();
    let worker = Worker::new(q.clone(), &common::redis_url(), pipeline, options);
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await.expect("worker") }
    });
    (stop, handle)
}

async fn counts_until(q: &Queue, what: &str, done: impl Fn(&Counts) -> bool) -> Counts {
    common::eventually(what, Duration::from_secs(30), || async {
        let counts = q.counts().await.expect("counts");
        done(&counts).then_some(counts)
    })
    .await
}

/// Completes every job, recording batch sizes.
#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Pipeline for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        self.batches.lock().expect("lock").push(jobs.len());
        jobs.iter()
            .map(|j| Outcome::Completed(json!({ "id": j.id })))
            .collect()
    }
}

#[tokio::test]
async fn drains_a_queue_in_batches() {
    let metrics = tidegate::telemetry::metrics();
    let q = queue().await;
    let jobs: Vec<_> = (0..1000)
        .map(|i| NewJob::new("collect", json!({ "i": i })))
        .collect();
    q.add_bulk(&jobs).await.expect("add");
    let recorder = Recorder::default();
    let (stop, handle) = start(&q, recorder.clone(), options());
    counts_until(&q, "all jobs completed", |c| c.completed == 1000).await;
    // The queue's depth, while the worker runs (an unpaced worker reports it).
    let depth = format!(
        "tidegate_queue_jobs{{queue=\"{}\",state=\"completed\"}}",
        q.name()
    );
    common::eventually(
        "the depth to be sampled",
        Duration::from_secs(10),
        || async {
            tidegate::telemetry::render(metrics)
                .contains(&format!("{depth} 1000"))
                .then_some(())
        },
    )
    .await;
    stop.cancel();
    let stats = handle.await.expect("join");
    assert_eq!(stats.completed, 1000);
    let batches = recorder.batches.lock().expect("lock").clone();
    assert_eq!(batches.iter().sum::<usize>(), 1000);
    assert!(
        batches.iter().all(|&n| (1..=100).contains(&n)),
        "{batches:?}"
    );
    assert!(
        batches.len() <= 20,
        "jobs should travel in batches: {batches:?}"
    );

    let text = tidegate::telemetry::render(metrics);
    let label = format!("{{queue=\"{}\"}}", q.name());
    for line in [
        format!("tidegate_jobs_added_total{label} 1000"),
        format!("tidegate_jobs_completed_total{label} 1000"),
    ] {
        assert!(text.contains(&line), "no `{line}` in /metrics");
    }
    for name in [
        "tidegate_batch_jobs_bucket",
        "tidegate_job_latency_seconds_bucket",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(q.name())),
            "no {name} for this queue in /metrics"
        );
    }
    // A worker that stopped no longer reports the queue's depth: another may.
    assert!(!text.contains(&depth), "`{depth}` after the worker stopped");
}

/// Outcome by data: ok, bad (permanent), flaky (transient on the first attempt).
struct ByKind;

impl Pipeline for ByKind {
    fn name(&self) -> &str {
        "by-kind"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        jobs.iter()
            .map(|job| match job.data::<serde_json::Value>() {
                Err(e) => Outcome::permanent(format!("data is not JSON: {e}")),
                Ok(data) => match data["kind"].as_str() {
                    Some("ok") => Outcome::Completed(json!(true)),
                    Some("flaky") if job.attempts_made == 0 => Outcome::transient("timed out"),
                    Some("flaky") => Outcome::Completed(json!("second try")),
                    _ => Outcome::permanent("unknown kind"),
                },
            })
            .collect()
    }
}

#[tokio::test]
async fn each_job_settles_by_its_own_outcome() {
    let q = queue().await;
    let three_tries = JobOptions {
        attempts: Some(3),
        ..JobOptions::default()
    };
    let job =
        |kind: &str| NewJob::new("collect", json!({ "kind": kind })).with_opts(three_tries.clone());
    q.add_bulk(&[job("ok"), job("bad"), job("flaky"), job("ok")])
        .await
        .expect("add");
    // A job whose stored options are not JSON fails alone, with its reason.
    let broken = q.add(job("ok")).await.expect("add");
    let mut conn = connect(&common::redis_url()).await.expect("connect");
    let _: i64 = redis::cmd("HSET")
        .arg(q.keys().job(&broken.id))
        .arg("opts")
        .arg("{oops")
        .query_async(&mut conn)
        .await
        .expect("HSET");

    let (stop, handle) = start(&q, ByKind, options());
    let counts = counts_until(&q, "every job settled", |c| c.completed + c.failed == 5).await;
    stop.cancel();
    let stats = handle.await.expect("join");
    assert_eq!((counts.completed, counts.failed), (3, 2));
    assert_eq!((stats.completed, stats.failed, stats.retried), (3, 2, 1));
    let reason: String = redis::cmd("HGET")
        .arg(q.keys().job("2"))
        .arg("failedReason")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(reason, "unknown kind");
    let reason: String = redis::cmd("HGET")
        .arg(q.keys().job(&broken.id))
        .arg("failedReason")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert!(reason.starts_with("job options are not valid"), "{reason}");
    let flaky: String = redis::cmd("HGET")
        .arg(q.keys().job("3"))
        .arg("returnvalue")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(flaky, "\"second try\"");
}

#[tokio::test]
async fn an_idle_worker_wakes_for_a_new_job() {
    let q = queue().await;
    // Without the marker's wake-up the job would wait for the full minute.
    let idle = WorkerOptions {
        idle_block: Duration::from_secs(60),
        ..options()
    };
    let (stop, handle) = start(&q, Recorder::default(), idle);
    // Let the loops reach their blocking wait: the marker is empty and nothing is active.
    counts_until(&q, "an empty queue", |c| *c == Counts::default()).await;
    q.add(NewJob::new("collect", json!({}))).await.expect("add");
    counts_until(&q, "the job completed", |c| c.completed == 1).await;
    stop.cancel();
    assert_eq!(handle.await.expect("join").completed, 1);
}

/// Holds every batch until released.
#[derive(Clone, Default)]
struct Gate {
    entered: Arc<Notify>,
    open: Arc<Notify>,
}

impl Pipeline for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        self.entered.notify_one();
        self.open.notified().await;
        jobs.iter()
            .map(|_| Outcome::Completed(json!(null)))
            .collect()
    }
}

#[tokio::test]
async fn locks_are_extended_while_a_batch_runs() {
    let q = queue().await;
    q.add(NewJob::new("collect", json!({}))).await.expect("add");
    let gate = Gate::default();
    let lock = Duration::from_millis(300);
    let short = WorkerOptions {
        workers: 1,
        lock_duration: lock,
        ..options()
    };
    let (stop, handle) = start(&q, gate.clone(), short);
    gate.entered.notified().await;
    let since = Instant::now();
    let mut conn = connect(&common::redis_url()).await.expect("connect");
    let lock_key = format!("{}:lock", q.keys().job("1"));
    // Wait for the point where an unextended lock would be long gone, checking it never lapses.
    common::eventually(
        "three lock durations to pass",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            let lock_key = lock_key.clone();
            async move {
                let held: bool = redis::cmd("EXISTS")
                    .arg(&lock_key)
                    .query_async(&mut conn)
                    .await
                    .expect("EXISTS");
                assert!(held, "the lock lapsed while the batch was in flight");
                (since.elapsed() > lock * 3).then_some(())
            }
        },
    )
    .await;
    gate.open.notify_one();
    counts_until(&q, "the job completed", |c| c.completed == 1).await;
    stop.cancel();
    assert_eq!(handle.await.expect("join").lost, 0);
    let _: i64 = redis::cmd("DEL")
        .arg(&lock_key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_batches() {
    let q = queue().await;
    q.add_bulk(&[NewJob::new("a", json!({})), NewJob::new("b", json!({}))])
        .await
        .expect("add");
    let gate = Gate::default();
    let one = WorkerOptions {
        workers: 1,
        ..options()
    };
    let (stop, handle) = start(&q, gate.clone(), one);
    gate.entered.notified().await;
    stop.cancel();
    gate.open.notify_one();
    let stats = handle.await.expect("join");
    assert_eq!((stats.completed, stats.released), (2, 0));
}

#[tokio::test]
async fn shutdown_releases_what_does_not_finish_in_time() {
    let q = queue().await;
    q.add_bulk(&[NewJob::new("a", json!({})), NewJob::new("b", json!({}))])
        .await
        .expect("add");
    let gate = Gate::default();
    let impatient = WorkerOptions {
        workers: 1,
        shutdown_timeout: Duration::from_millis(100),
        ..options()
    };
    let (stop, handle) = start(&q, gate.clone(), impatient);
    gate.entered.notified().await;
    stop.cancel();
    let stats = handle.await.expect("join");
    assert_eq!((stats.completed, stats.released), (0, 2));
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.waiting, counts.active), (2, 0));
}

#[tokio::test]
async fn a_job_lost_by_a_dead_worker_is_recovered_and_completed() {
    let q = queue().await;
    q.add(NewJob::new("collect", json!({}))).await.expect("add");
    // A worker that took the job and died: its lock lapses at once and nothing settles it.
    let taken = q
        .take(1, "dead", Duration::from_millis(1))
        .await
        .expect("take");
    assert_eq!(taken.jobs.len(), 1);
    let watchful = WorkerOptions {
        stalled_interval: Duration::from_millis(100),
        ..options()
    };
    let (stop, handle) = start(&q, Recorder::default(), watchful);
    counts_until(&q, "the stalled job to complete", |c| c.completed == 1).await;
    stop.cancel();
    assert_eq!(handle.await.expect("join").completed, 1);
}
