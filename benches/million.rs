//! The queue at a million jobs: what Redis spends on each (memory queued and retained, CPU per
//! life cycle) and what the worker's process holds while a million wait. Run by
//! `scripts/bench-million`, which starts a Redis of its own and runs BullMQ's side beside it
//! (`tests/interop/million.mjs`) on the same Redis in the same session:
//!
//!     MODE=add   QUEUE=q N=1000000 BASE_MEMORY=<bytes> cargo bench --bench million
//!     MODE=drain QUEUE=q N=1000000 BASE_MEMORY=<bytes> cargo bench --bench million
//!
//! Two processes, so the drain's peak RSS is the worker's alone. Jobs are the BullMQ anchor's
//! (`collect`, `{userId, collectDate}`), kept after completion (`removeOnComplete: false`) so
//! that what a retained job costs can be read after the drain.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Noop;
use serde_json::json;
use tidegate::queue::{JobOptions, Keep, NewJob, Queue, Redis, connect};
use tidegate::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

/// Redis' own account of itself: memory in use, CPU seconds spent, and microseconds spent in
/// commands since the last `CONFIG RESETSTAT`.
struct Usage {
    memory: f64,
    cpu: f64,
    commands_us: f64,
}

async fn usage(conn: &mut Redis) -> Usage {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .arg("cpu")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    let fields: HashMap<&str, &str> = info
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .collect();
    let number = |k: &str| fields.get(k).and_then(|v| v.parse::<f64>().ok());
    let commands_us = fields
        .iter()
        .filter(|(k, _)| k.starts_with("cmdstat_"))
        .filter_map(|(_, v)| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|u| u.parse::<f64>().ok())
        })
        .sum();
    Usage {
        memory: number("used_memory").expect("used_memory"),
        cpu: number("used_cpu_user").unwrap_or(0.0) + number("used_cpu_sys").unwrap_or(0.0),
        commands_us,
    }
}

async fn reset_stats(conn: &mut Redis) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("CONFIG RESETSTAT");
}

/// This process's resident memory now and at its peak, MiB (Linux).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs bench targets without --bench: nothing to do there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (Some(url), Some(mode), Some(name)) = (var("REDIS_URL"), var("MODE"), var("QUEUE")) else {
        eprintln!(
            "million: set REDIS_URL, MODE (add or drain) and QUEUE; see scripts/bench-million"
        );
        return;
    };
    let n: usize = var("N").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let base: f64 = var("BASE_MEMORY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let mut conn = connect(&url).await.expect("connect to Redis");
    let queue = Queue::new(conn.clone(), "bull", &name);
    reset_stats(&mut conn).await;
    let before = usage(&mut conn).await;
    let started = Instant::now();
    let what = match mode.as_str() {
        "add" => {
            let opts = JobOptions {
                remove_on_complete: Some(Keep::Flag(false)),
                ..JobOptions::default()
            };
            for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
                let jobs: Vec<NewJob> = chunk
                    .iter()
                    .map(|i| {
                        NewJob::new(
                            "collect",
                            json!({ "userId": format!("u{i}"), "collectDate": "2026-11-24" }),
                        )
                        .with_opts(opts.clone())
                    })
                    .collect();
                queue.add_bulk(&jobs).await.expect("add");
            }
            "queued"
        }
        "drain" => {
            let stop = CancellationToken::new();
            let worker = tokio::spawn(
                Worker::new(
                    queue.clone(),
                    &url,
                    Noop,
                    WorkerOptions {
                        idle_block: Duration::from_millis(50),
                        ..WorkerOptions::default()
                    },
                )
                .run(stop.clone()),
            );
            loop {
                let c = queue.counts().await.expect("counts");
                if c.waiting == 0 && c.active == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.cancel();
            let stats = worker.await.expect("join").expect("worker");
            assert_eq!(stats.completed as usize, n, "every job completed once");
            "retained"
        }
        other => panic!("MODE must be add or drain, not {other:?}"),
    };
    let seconds = started.elapsed().as_secs_f64();
    let after = usage(&mut conn).await;
    let (rss, peak) = rss_mib();
    let per_job = |x: f64| x / n as f64;
    println!(
        "tidegate {mode}: {n} jobs in {seconds:.1} s ({:.0} jobs/s); Redis memory {:.0} B/job {what}; \
         Redis CPU {:.1} us/job (in commands {:.1} us/job); process RSS {rss:.1} MiB, peak {peak:.1} MiB",
        n as f64 / seconds,
        per_job(after.memory - base),
        per_job((after.cpu - before.cpu) * 1e6),
        per_job(after.commands_us),
    );
}
