//! A worker process killed with SIGKILL mid-batch: its jobs stay active under expired locks,
//! the next worker's stalled check hands them out again, every job completes, and the effects
//! (upserts keyed by job) are each applied once.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tidegate::queue::{NewJob, Queue, connect};

fn worker(queue: &str, database: &str) -> common::Running {
    let child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("run")
        .env("TIDEGATE_QUEUE", queue)
        .env("TIDEGATE_DATABASE", database)
        .env("TIDEGATE_HTTP_ADDR", "127.0.0.1:0")
        .env("TIDEGATE_WORKERS", "1")
        .env("TIDEGATE_BATCH_DOCS", "50")
        .env("TIDEGATE_LOCK_DURATION", "1s")
        .env("TIDEGATE_STALLED_INTERVAL", "200ms")
        .env("TIDEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tidegate");
    common::Running(child)
}

#[tokio::test]
async fn a_killed_worker_loses_no_job_and_applies_no_effect_twice() {
    const JOBS: usize = 400;
    let queue_name = common::unique("crash");
    let database = common::unique("tidegate_crash");
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue_name,
    );
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| {
            NewJob::new(
                "upsert",
                json!({
                    "collection": "effects", "key": ["job"],
                    "document": { "job": format!("j{i}"), "n": i }
                }),
            )
        })
        .collect();
    q.add_bulk(&jobs).await.expect("add");

    // Between batches a worker holds no job, and a batch of upserts is settled in milliseconds
    // (on FerretDB 2, ~10 ms a second at the floor's pace), so the state is polled every few
    // milliseconds, and a kill can still land between two: that proves nothing, and a new
    // first worker is tried. A queue drained first is a failure, not a wait.
    let mut attempts = 0;
    let at_kill = loop {
        attempts += 1;
        let mut first = worker(&queue_name, &database);
        common::eventually_every(
            "the first worker to be mid-run",
            Duration::from_secs(60),
            Duration::from_millis(2),
            || async {
                let c = q.counts().await.expect("counts");
                assert!(
                    c.completed < JOBS as u64,
                    "every job completed before a kill landed mid-batch: {c:?}"
                );
                (c.active > 0 && c.completed > 0).then_some(())
            },
        )
        .await;
        first.0.kill().expect("SIGKILL");
        first.0.wait().expect("reap");
        let counts = q.counts().await.expect("counts");
        if counts.active > 0 || attempts == 10 {
            break counts;
        }
    };
    assert!(
        at_kill.active > 0,
        "ten kills all landed between batches: {at_kill:?}"
    );

    let _second = worker(&queue_name, &database);
    common::eventually("every job to complete", Duration::from_secs(90), || async {
        let c = q.counts().await.expect("counts");
        (c.completed == JOBS as u64 && c.active == 0).then_some(())
    })
    .await;

    common::assert_each_effect_once(&common::mongodb_uri(), &database, JOBS).await;
}
