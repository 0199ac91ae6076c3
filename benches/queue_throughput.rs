//! Add and drain rates of the queue on real Redis, through a no-op pipeline, in one process:
//! the figures to put beside BullMQ's reference benchmark (`../shared/anchors`) run on the same
//! Redis in the same session.
//!
//!     eval "$(scripts/services env)"
//!     cargo bench --bench queue_throughput            # N=100000 jobs, 5 rounds
//!     N=200000 ROUNDS=3 LOOPS=4 BATCH=500 cargo bench --bench queue_throughput
//!     NAMED=1 cargo bench --bench queue_throughput    # takes by job name, as `tidegate run`
//!
//! Jobs carry `removeOnComplete: true`, as the BullMQ anchor's do. Prints the median of the
//! rounds and each round, in jobs/second, and how soon an idle worker picks up a new job.

mod common;

use std::time::{Duration, Instant};

use common::{NamedNoop, Noop};
use serde_json::json;
use tidegate::pipeline::{Outcome, Pipeline};
use tidegate::queue::{Job, JobOptions, Keep, NewJob, Queue, connect};
use tidegate::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

/// Reports the moment each batch reaches the pipeline.
struct Stamp(tokio::sync::mpsc::UnboundedSender<Instant>);

impl Pipeline for Stamp {
    fn name(&self) -> &str {
        "stamp"
    }
    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let _ = self.0.send(Instant::now());
        jobs.iter()
            .map(|_| Outcome::Completed(serde_json::Value::Null))
            .collect()
    }
}

/// Add → pipeline delay for single jobs reaching an idle worker, in ms: (median, max).
async fn pickup_latency(url: &str, queue: Queue, samples: usize) -> (f64, f64) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let options = WorkerOptions {
        workers: 1,
        ..WorkerOptions::default()
    };
    let worker =
        tokio::spawn(Worker::new(queue.clone(), url, Stamp(tx), options).run(stop.clone()));
    let mut delays = Vec::with_capacity(samples);
    for i in 0..=samples {
        // Let the worker settle the previous job and go back to its blocking wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let added = Instant::now();
        queue
            .add(NewJob::new("ping", json!({ "i": i })))
            .await
            .expect("add");
        let reached = rx.recv().await.expect("worker alive");
        if i > 0 {
            delays.push(reached.duration_since(added).as_secs_f64() * 1000.0);
        }
    }
    stop.cancel();
    let _ = worker.await;
    let max = delays.iter().copied().fold(0.0, f64::max);
    (median(delays), max)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!(
            "queue_throughput: REDIS_URL is not set; run `eval \"$(scripts/services env)\"` first"
        );
        return;
    };
    // `cargo test --benches` runs bench targets with --bench absent: stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_or("N", 100_000);
    let rounds = env_or("ROUNDS", 5);
    let loops = env_or("LOOPS", 4);
    let batch = env_or("BATCH", 500);
    let named = env_or("NAMED", 0) == 1;
    let conn = connect(&url).await.expect("connect to Redis");
    let opts = JobOptions {
        remove_on_complete: Some(Keep::Flag(true)),
        ..JobOptions::default()
    };
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            NewJob::new(
                "collect",
                json!({ "userId": format!("u{i}"), "collectDate": "2026-11-24" }),
            )
            .with_opts(opts.clone())
        })
        .collect();

    let (mut adds, mut drains) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let name = format!("bench{}-{round}", tidegate::queue::now_ms());
        let queue = Queue::new(conn.clone(), "bull", &name);

        let started = Instant::now();
        queue.add_bulk(&jobs).await.expect("add");
        let add = n as f64 / started.elapsed().as_secs_f64();

        let options = WorkerOptions {
            workers: loops,
            batch_docs: batch,
            idle_block: Duration::from_millis(50),
            ..WorkerOptions::default()
        };
        let stop = CancellationToken::new();
        let started = Instant::now();
        let worker = if named {
            tokio::spawn(
                Worker::new(queue.clone(), &url, NamedNoop("collect"), options).run(stop.clone()),
            )
        } else {
            tokio::spawn(Worker::new(queue.clone(), &url, Noop, options).run(stop.clone()))
        };
        loop {
            let c = queue.counts().await.expect("counts");
            if c.waiting == 0 && c.active == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drain = n as f64 / started.elapsed().as_secs_f64();
        stop.cancel();
        let stats = worker.await.expect("join").expect("worker");
        assert_eq!(stats.completed as usize, n, "every job completed once");
        let _: () = redis::cmd("DEL")
            .arg(queue.keys().events())
            .arg(queue.keys().id())
            .arg(queue.keys().meta())
            .arg(queue.keys().marker())
            .query_async(&mut conn.clone())
            .await
            .expect("cleanup");
        println!("round {round}: add {add:>9.0} jobs/s   drain {drain:>9.0} jobs/s");
        adds.push(add);
        drains.push(drain);
    }
    let idle = Queue::new(
        conn.clone(),
        "bull",
        &format!("bench{}-idle", tidegate::queue::now_ms()),
    );
    let (median_ms, max_ms) = pickup_latency(&url, idle, 50).await;
    println!(
        "idle worker pick-up (add -> pipeline), 50 jobs: median {median_ms:.2} ms, max {max_ms:.2} ms"
    );
    println!(
        "median of {rounds}: add {:.0} jobs/s, drain {:.0} jobs/s (N={n}, {loops} loops x batch {batch}{})",
        median(adds),
        median(drains),
        if named { ", taken by name" } else { "" }
    );
}
