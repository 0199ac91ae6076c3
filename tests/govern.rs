//! Governing a queue others work: real BullMQ workers (Node, the pinned `bullmq` in
//! `tests/interop`) take jobs from a queue whose global rate limit a governor sets from the
//! database's budget; they honour it, with a limiter of their own too, and get the team's
//! limit back when the governor stops. A second governor stands by; when the first dies its
//! limit stays until the second takes over, which still hands back the limit first found.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tidegate::control::govern::Fallback;
use tidegate::control::pacer::Pacer;
use tidegate::engine::Engine as App;
use tidegate::queue::NewJob;
use tidegate::queue::keys::Keys;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The pace the governor sets: with no CPU signal (FerretDB reports none through serverStatus)
/// the controller raises the pace to its ceiling while latency is fine, so the limit it
/// writes is known, far under what the workers would do unlimited (10 at a time, 5 ms a job:
/// about 2,000 a second).
const CEILING: f64 = 40.0;
/// How long the jobs' start rate is measured once the limit is written.
const WINDOW: Duration = Duration::from_secs(6);

async fn app() -> App {
    common::app(
        "govern",
        &[
            ("TIDEGATE_CONTROL_INTERVAL", "500ms"),
            ("TIDEGATE_RATE_FLOOR", "10"),
            ("TIDEGATE_RATE_CEILING", &CEILING.to_string()),
            ("TIDEGATE_BUDGET", &common::unique("govern_budget")),
        ],
    )
    .await
}

/// A governor of `queue` on the app's budget, run until `stop` (or aborted, as a process
/// killed).
fn governor(app: &App, queue: &str, stop: &CancellationToken) -> JoinHandle<()> {
    let pacer = Pacer::govern(
        app.settings.control.clone(),
        app.redis.clone(),
        app.store.clone(),
        (&app.settings.queue_prefix, queue, 1.0),
        Fallback::Found,
    )
    .expect("a governor");
    tokio::spawn(pacer.run(stop.clone()))
}

/// A BullMQ Worker process on `queue`, ten jobs at a time, each waiting 5 ms, killed when
/// dropped; started once it says it is ready.
///
/// (PyPI's `bullmq`, 3.4.4, is not among them: its Lua scripts read the queue's limit, but its
/// Worker never waits out a limit it meets (`limitUntil` is set, never read): it blocks for its
/// `drainDelay` instead, and governed it stalls. See README, "Beside your BullMQ".)
fn workers(queue: &str, limiter: Option<&str>) -> common::Running {
    let mut command = Command::new("node");
    command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
        .args(["governed.mjs", queue, "10", "sleep:5"])
        .env("REDIS_URL", common::redis_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(limiter) = limiter {
        command.env("LIMITER", limiter);
    }
    let mut child = command
        .spawn()
        .expect("run node (is Node.js installed, and `npm ci` run in tests/interop?)");
    let stdout = child.stdout.take().expect("stdout");
    let running = common::Running(child);
    let mut line = String::new();
    // The worker prints "ready" or exits (and the read ends) on any error.
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the worker's output");
    assert_eq!(line.trim(), "ready", "the BullMQ worker did not start");
    running
}

/// The queue's global rate limit as BullMQ reads it: (max, duration ms).
async fn limit(app: &App) -> (Option<u64>, Option<u64>) {
    let keys = Keys::new(&app.settings.queue_prefix, app.queue.name());
    let mut redis = app.redis.clone();
    let (max, duration): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
        .arg(keys.meta())
        .arg("max")
        .arg("duration")
        .query_async(&mut redis)
        .await
        .expect("meta");
    (max, duration)
}

/// The team's own limit, as `queue.setGlobalRateLimit(7, 1000)` writes it.
async fn set_team_limit(app: &App) {
    let keys = Keys::new(&app.settings.queue_prefix, app.queue.name());
    let mut redis = app.redis.clone();
    let _: () = redis
        .hset_multiple(keys.meta(), &[("max", 7u64), ("duration", 1000)])
        .await
        .expect("set the team's limit");
}

async fn add_jobs(app: &App, n: usize) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("work", serde_json::json!({ "n": i })))
        .collect();
    app.queue.add_bulk(&jobs).await.expect("add jobs");
}

/// Waits until the governor has written the ceiling as the limit, for a window of at least
/// `window` ms; returns it in jobs/second. The workers' own window is learned from the
/// limiter's time left, read once an interval, so from below: until then the limit is lower.
async fn limit_at_ceiling(app: &App, window: u64) -> f64 {
    common::eventually(
        "the governor to write the pace's ceiling as the queue's limit",
        Duration::from_secs(30),
        || async {
            match limit(app).await {
                (Some(max), Some(duration)) if duration >= window => {
                    let rate = max as f64 * 1000.0 / duration as f64;
                    ((rate - CEILING).abs() <= 0.05 * CEILING).then_some(rate)
                }
                _ => None,
            }
        },
    )
    .await
}

/// Jobs that left the wait list per second over [`WINDOW`].
async fn start_rate(app: &App) -> f64 {
    let before = app.queue.counts().await.expect("counts").waiting;
    let at = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let after = app.queue.counts().await.expect("counts").waiting;
    assert!(after > 0, "the queue drained during the measurement");
    let rate = before.saturating_sub(after) as f64 / at.elapsed().as_secs_f64();
    eprintln!("jobs started at {rate:.1}/s");
    rate
}

/// `limiter`: the workers' own (`max/duration ms`), if any.
async fn honoured_and_handed_back(limiter: Option<(u64, u64)>) {
    let app = app().await;
    set_team_limit(&app).await;
    add_jobs(&app, 5_000).await;
    let own = limiter.map(|(max, duration)| format!("{max}/{duration}"));
    let _workers = workers(app.queue.name(), own.as_deref());
    let stop = CancellationToken::new();
    let task = governor(&app, app.queue.name(), &stop);
    // Theirs, once learned; the governor's own is at least a tenth of a second.
    let window = limiter.map_or(100, |(_, duration)| duration * 9 / 10);
    let written = limit_at_ceiling(&app, window).await;
    let rate = start_rate(&app).await;
    assert!(
        (rate - written).abs() <= 0.2 * written,
        "the workers should start jobs at the limit written ({written:.1}/s), not {rate:.1}/s"
    );
    stop.cancel();
    task.await.expect("the governor stops");
    assert_eq!(
        limit(&app).await,
        (Some(7), Some(1000)),
        "the team's limit is back"
    );
    let keys = Keys::new(&app.settings.queue_prefix, app.queue.name());
    let mut redis = app.redis.clone();
    let left: bool = redis.exists(keys.governor()).await.expect("exists");
    assert!(!left, "no governor is left recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_bullmq_workers_honour_the_governed_limit_and_get_theirs_back() {
    honoured_and_handed_back(None).await;
}

/// The seed team's workers carry `limiter: { max: 5, duration: 1000 }`: BullMQ then counts the
/// queue's `max` per their one-second window, and the governor must count it so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_a_limiter_of_their_own_honour_it_per_their_window() {
    honoured_and_handed_back(Some((5, 1000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_governor_at_a_time_and_a_dead_ones_limit_is_taken_over() {
    let app = app().await;
    set_team_limit(&app).await;
    add_jobs(&app, 100).await;
    let keys = Keys::new(&app.settings.queue_prefix, app.queue.name());
    let mut redis = app.redis.clone();
    let holder = |mut redis: tidegate::queue::Redis| {
        let key = keys.governor();
        async move {
            let holder: Option<String> = redis.hget(key, "holder").await.expect("holder");
            holder
        }
    };

    let first_stop = CancellationToken::new();
    let first = governor(&app, app.queue.name(), &first_stop);
    let first_id = common::eventually(
        "the first governor to hold the queue",
        Duration::from_secs(10),
        || holder(redis.clone()),
    )
    .await;
    limit_at_ceiling(&app, 100).await;
    let second_stop = CancellationToken::new();
    let second = governor(&app, app.queue.name(), &second_stop);
    // The second stands by while the first renews its lease: over several of its intervals,
    // the holder stays the first.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            holder(redis.clone()).await.as_deref(),
            Some(first_id.as_str())
        );
    }

    // The first dies (no hand-back): its limit stays until the second takes the lease over.
    first.abort();
    let _ = first.await;
    let second_id = common::eventually(
        "the second governor to take over",
        Duration::from_secs(10),
        || {
            let redis = redis.clone();
            let first_id = first_id.clone();
            async move { holder(redis).await.filter(|h| *h != first_id) }
        },
    )
    .await;
    assert_ne!(second_id, first_id);
    let found: Option<String> = redis.hget(keys.governor(), "found").await.expect("found");
    assert_eq!(
        found.as_deref(),
        Some("7:1000"),
        "what the first governor found is kept"
    );

    second_stop.cancel();
    second.await.expect("the second stops");
    assert_eq!(
        limit(&app).await,
        (Some(7), Some(1000)),
        "the team's limit is back, not the dead governor's"
    );
    first_stop.cancel();
}

/// A governed queue and a queue tidegate works itself, on one database: one budget, with a pace
/// for each, and batches of one for the governed queue's workers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governed_queue_and_a_tidegate_queue_share_one_budget() {
    let app = app().await;
    let own: Vec<NewJob> = (0..20_000)
        .map(|n| {
            NewJob::new(
                "upsert",
                serde_json::json!({"collection": "effects", "key": ["job"],
                    "document": {"job": n}}),
            )
        })
        .collect();
    app.queue.add_bulk(&own).await.expect("add tidegate's jobs");
    let governed_name = common::unique("governed");
    let governed = tidegate::queue::Queue::new(
        app.redis.clone(),
        &app.settings.queue_prefix,
        &governed_name,
    );
    let jobs: Vec<NewJob> = (0..5_000)
        .map(|i| NewJob::new("work", serde_json::json!({ "n": i })))
        .collect();
    governed.add_bulk(&jobs).await.expect("add the team's jobs");
    let _workers = workers(&governed_name, None);

    let stop = CancellationToken::new();
    let governor = governor(&app, &governed_name, &stop);
    let (worker, control) = app
        .paced_worker(app.router(), &stop)
        .expect("tidegate's worker");
    let worker = tokio::spawn(worker.run(stop.clone()));

    let mut reader = tidegate::control::budget::Budget::new(
        app.redis.clone(),
        tidegate::queue::keys::BudgetKeys::new(&app.settings.control.budget),
        app.queue.name(),
        1.0,
        app.settings.control.interval,
    );
    let queues = [app.queue.name().to_owned(), governed_name.clone()];
    // Polled as `common::eventually` does; the reader is borrowed by each read.
    let deadline = Instant::now() + Duration::from_secs(30);
    let paces = loop {
        let (_, paces) = reader.published(&queues).await.expect("published");
        if let (Some(own), Some(governed)) = (paces.first(), paces.get(1))
            && own.rate > 0.0
            && governed.rate > 0.0
            && governed.batch == 1
            && own.batch > 1
        {
            break (own.clone(), governed.clone());
        }
        assert!(
            Instant::now() < deadline,
            "a pace for each queue, batches of one for the governed: {paces:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("paces: {paces:?}");
    stop.cancel();
    governor.await.expect("the governor stops");
    control.await.expect("the pacer stops");
    worker
        .await
        .expect("the worker stops")
        .expect("the worker ran");
    app.store.database().drop().await.expect("drop");
}
