//! Load control on the real services: the write budget shared in Redis (one leader, equal
//! shares, failover), and the whole loop on the database: probes → controller → budget →
//! throttle → worker, holding the database's CPU near a target that the naive mode exceeds,
//! with one worker process and with three. On FerretDB the CPU comes from Prometheus (FerretDB's
//! own `process_cpu_seconds_total`); on a real MongoDB, from serverStatus.

mod common;

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::doc;
use tidegate::control::budget::{self, Budget, Why};
use tidegate::control::controller::Config;
use tidegate::control::pacer::{ControlOptions, Pacer};
use tidegate::control::probe::{Probe, PrometheusProbe};
use tidegate::control::throttle::Throttle;
use tidegate::pipeline::Pipelines;
use tidegate::pipeline::score::{self, ScorePipeline};
use tidegate::pipeline::upsert::UpsertPipeline;
use tidegate::queue::{Backoff, Queue, connect};
use tidegate::runs::Runs;
use tidegate::schedule::Planner;
use tidegate::store::{Store, StoreOptions};
use tidegate::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Seoul;
const INTERVAL: Duration = Duration::from_secs(1);
/// Below what the naive mode reaches on two cores, above the floor's load.
const TARGET_CPU: f64 = 70.0;
/// `irate`: the last two scrapes (1 s apart), so the controller sees about one interval of lag.
const FERRETDB_CPU: &str = r#"irate(process_cpu_seconds_total{job="ferretdb"}[3s]) * 100"#;

/// The CPU tests measure one shared database process: they must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")
}

#[tokio::test]
async fn one_leader_sets_the_rate_and_every_member_takes_an_equal_share() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let queue = Queue::new(redis.clone(), "bull", &common::unique("budget"));
    let interval = Duration::from_millis(500);
    let mut members: Vec<Budget> = (0..3)
        .map(|_| Budget::new(redis.clone(), queue.keys(), interval))
        .collect();
    let mut ticks = Vec::new();
    for m in &mut members {
        ticks.push(m.tick(0, 0).await.expect("tick"));
    }
    // All three have joined once the last one ticks; the first to tick leads.
    assert!(ticks[0].leader && !ticks[1].leader && !ticks[2].leader);
    assert_eq!(ticks[2].members, 3);
    assert_eq!(ticks[2].rate, None, "nothing published yet");

    let why = Why {
        limiter: "cpu",
        cpu: Some(150.0),
        latency: None,
        target_cpu: 200.0,
        target_latency: 0.05,
    };
    assert!(members[0].publish(900.0, &why).await.expect("publish"));
    assert!(
        !members[1].publish(5.0, &why).await.expect("publish"),
        "only the leader publishes"
    );
    // What the back-office shows.
    let status = budget::status(&mut redis.clone(), queue.keys())
        .await
        .expect("status");
    assert_eq!(
        (status.rate, status.members, status.limiter.as_deref()),
        (Some(900.0), 3, Some("cpu"))
    );
    assert_eq!(
        (status.db_cpu, status.target_cpu),
        (Some(150.0), Some(200.0))
    );
    assert_eq!(status.write_latency, None, "not measured is not 0");
    let tick = members[1].tick(2, 0).await.expect("tick");
    assert_eq!(tick.rate, Some(900.0));
    assert_eq!(tick.share(900.0), 300.0);
    assert_eq!(tick.errors, 2, "write errors add up across members");

    // The leader leaves: the next member to tick takes over, and shares grow.
    members[0].leave().await.expect("leave");
    let tick = members[2].tick(0, 0).await.expect("tick");
    assert!(tick.leader);
    assert_eq!(tick.members, 2);
    assert_eq!(tick.share(900.0), 450.0);
}

#[tokio::test]
async fn an_unreachable_database_drops_the_rate_to_the_floor_within_one_interval() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let queue = Queue::new(redis.clone(), "bull", &common::unique("blind"));
    let interval = Duration::from_millis(500);
    // Another process was writing at 1,000 documents/s, then went away.
    let mut before = Budget::new(redis.clone(), queue.keys(), interval);
    before.tick(0, 0).await.expect("tick");
    let why = Why {
        limiter: "cpu",
        cpu: Some(100.0),
        latency: Some(0.01),
        target_cpu: 200.0,
        target_latency: 0.05,
    };
    assert!(before.publish(1000.0, &why).await.expect("publish"));
    before.leave().await.expect("leave");

    // Nothing listens on port 1: every serverStatus fails.
    let store = Store::connect("mongodb://127.0.0.1:1", "blind", StoreOptions::default())
        .await
        .expect("a client connects lazily");
    let options = ControlOptions {
        interval,
        controller: Config {
            floor: 7.0,
            ..Config::default()
        },
        ..ControlOptions::default()
    };
    let (mut pacer, throttle) =
        Pacer::build(options, redis.clone(), &queue, store, 100).expect("pacer");
    pacer.tick().await;
    assert_eq!(
        throttle.rate(),
        7.0,
        "blind: the floor, at the first interval"
    );
    let mut reader = Budget::new(redis, queue.keys(), interval);
    let tick = reader.tick(0, 0).await.expect("tick");
    assert_eq!(
        tick.rate,
        Some(7.0),
        "and the floor is what the others are told"
    );
}

struct World {
    store: Store,
    planner: Planner,
    runs: Runs,
    queue: Queue,
    redis: redis::aio::ConnectionManager,
    ferretdb: bool,
}

async fn world(users: u64) -> World {
    let store = Store::connect(
        &common::mongodb_uri(),
        &common::unique("tidegate_control"),
        StoreOptions::default(),
    )
    .await
    .expect("connect");
    score::ensure_indexes(&store).await.expect("indexes");
    score::seed_day(&store, day(), TZ, users, 11, |_| {})
        .await
        .expect("seed");
    let build = store
        .client()
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
        .expect("buildInfo");
    let redis = connect(&common::redis_url()).await.expect("redis");
    let queue = Queue::new(redis.clone(), "bull", &common::unique("control"));
    let runs = Runs::new(redis.clone(), store.clone());
    let planner = Planner {
        queue: queue.clone(),
        store: store.clone(),
        runs: runs.clone(),
        redis: redis.clone(),
        tz: TZ,
        attempts: 3,
        backoff: Backoff::Millis(10),
    };
    World {
        store,
        planner,
        runs,
        queue,
        redis,
        ferretdb: build.contains_key("ferretdbFeatures"),
    }
}

fn control_options(w: &World) -> ControlOptions {
    let mut options = ControlOptions {
        interval: INTERVAL,
        controller: Config {
            target_cpu: TARGET_CPU,
            floor: 20.0,
            ceiling: 5_000.0,
            ..Config::default()
        },
        ..ControlOptions::default()
    };
    if w.ferretdb {
        options.prometheus_url = Some(common::env("PROMETHEUS_URL"));
        options.prometheus_cpu = Some(FERRETDB_CPU.to_owned());
    }
    options
}

/// Database CPU as the test sees it: the same source the pacer uses.
struct CpuGauge(Box<dyn Probe>);

impl CpuGauge {
    async fn new(w: &World) -> Self {
        if w.ferretdb {
            let probe = PrometheusProbe::new(
                &common::env("PROMETHEUS_URL"),
                Some(FERRETDB_CPU.to_owned()),
                None,
                None,
                Duration::from_secs(2),
            )
            .expect("prometheus probe");
            return Self(Box::new(probe));
        }
        let mut probe = tidegate::control::probe::ServerStatusProbe::new(
            w.store.client(),
            Duration::from_secs(2),
        );
        probe.sample().await.expect("prime serverStatus");
        Self(Box::new(probe))
    }

    async fn read(&mut self) -> Option<f64> {
        self.0.sample().await.ok().and_then(|r| r.cpu_percent)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The naive mode on `users` users, CPU sampled every second while it runs.
async fn naive_cpu(w: &World, users: usize, gauge: &mut CpuGauge) -> Vec<f64> {
    let targets = score::targets(&w.store, day(), TZ).await.expect("targets");
    let some: Vec<String> = targets.take(users).try_collect().await.expect("targets");
    let naive = tokio::spawn({
        let store = w.store.clone();
        async move { score::run_naive(&store, day(), TZ, some).await }
    });
    let mut samples = Vec::new();
    while !naive.is_finished() {
        tokio::time::sleep(INTERVAL).await;
        if let Some(cpu) = gauge.read().await {
            samples.push(cpu);
        }
    }
    let report = naive.await.expect("naive");
    assert_eq!(report.failed, 0);
    samples
}

struct Paced {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    throttles: Vec<Throttle>,
}

/// `processes` worker processes on the queue, each with its own pacer and throttle, sharing
/// the queue's budget as separate processes would.
fn start_paced(w: &World, processes: usize) -> Paced {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut throttles = Vec::new();
    for _ in 0..processes {
        let options = control_options(w);
        let (pacer, throttle) = Pacer::build(
            options,
            w.redis.clone(),
            &w.queue,
            w.store.clone(),
            WorkerOptions::default().batch_size,
        )
        .expect("pacer");
        let pipelines = Pipelines {
            score: ScorePipeline::new(w.store.clone(), TZ, Some(w.runs.clone())),
            upsert: UpsertPipeline::new(w.store.clone()),
        };
        let worker = Worker::new(
            w.queue.clone(),
            &common::redis_url(),
            pipelines,
            WorkerOptions {
                idle_block: Duration::from_millis(200),
                ..WorkerOptions::default()
            },
        )
        .with_throttle(throttle.clone(), INTERVAL);
        tasks.push(tokio::spawn(pacer.run(stop.clone())));
        tasks.push(tokio::spawn({
            let stop = stop.clone();
            async move {
                worker.run(stop).await.expect("worker");
            }
        }));
        throttles.push(throttle);
    }
    Paced {
        stop,
        tasks,
        throttles,
    }
}

/// CPU samples taken once the controller has had time to settle, while work was left.
struct Held {
    steady: Vec<f64>,
    /// Per sample, the sum of every process's local rate over the largest one: how many
    /// shares the total was split into.
    shares: Vec<f64>,
}

async fn run_paced(w: &World, processes: usize, gauge: &mut CpuGauge) -> Held {
    let run = w.planner.plan(day(), "test", false).await.expect("plan");
    let paced = start_paced(w, processes);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut held = Held {
        steady: Vec::new(),
        shares: Vec::new(),
    };
    let started = Instant::now();
    loop {
        tokio::time::sleep(INTERVAL).await;
        assert!(Instant::now() < deadline, "the run did not end in time");
        let counts = w.queue.counts().await.expect("counts");
        if counts.waiting + counts.active == 0 {
            break;
        }
        let cpu = gauge.read().await;
        // Ten intervals to settle (the issue's bound) from a cold start at the floor, and two
        // more for the CPU window to cover only settled intervals.
        if started.elapsed() >= INTERVAL * 12
            && let Some(cpu) = cpu
        {
            held.steady.push(cpu);
            let rates: Vec<f64> = paced.throttles.iter().map(Throttle::rate).collect();
            let max = rates.iter().copied().fold(0.0, f64::max);
            held.shares.push(rates.iter().sum::<f64>() / max);
        }
    }
    // The last seconds are the drain: the final batches, then nothing.
    let keep = held.steady.len().saturating_sub(3);
    held.steady.truncate(keep);
    held.shares.truncate(keep);
    let ended = w
        .runs
        .wait_for_end(&run.id, Duration::from_secs(120))
        .await
        .expect("run ends");
    assert_eq!(ended.failed, 0);
    paced.stop.cancel();
    for task in paced.tasks {
        task.await.expect("task");
    }
    held
}

async fn holds_the_target(processes: usize, users: u64) {
    let _serial = SERIAL.lock().await;
    let w = world(users).await;
    if !w.ferretdb {
        // The day is sized so that FerretDB (every query a scan) feels it on two cores; a real
        // MongoDB with its indexes would not, and the naive mode could stay under the target.
        eprintln!("skipped: calibrated for FerretDB; MONGODB_URI points at another server");
        return;
    }
    let mut gauge = CpuGauge::new(&w).await;

    let mut naive = naive_cpu(&w, 100, &mut gauge).await;
    let naive_median = median(&mut naive);
    assert!(
        naive_median > TARGET_CPU * 1.5,
        "the naive mode should exceed the target clearly: median {naive_median:.0}% {naive:?}"
    );

    let mut held = run_paced(&w, processes, &mut gauge).await;
    assert!(
        held.steady.len() >= 10,
        "too short to judge: {:?}",
        held.steady
    );
    let steady = held.steady.clone();
    let paced_median = median(&mut held.steady);
    eprintln!(
        "{processes} process(es): naive median {naive_median:.0}%, paced median {paced_median:.0}% (target {TARGET_CPU}%) over {} s: {:?}",
        steady.len(),
        steady.iter().map(|c| c.round()).collect::<Vec<_>>()
    );
    assert!(
        (paced_median - TARGET_CPU).abs() <= 0.4 * TARGET_CPU,
        "paced median {paced_median:.0}% is not near the target {TARGET_CPU}%: {steady:?}"
    );
    // Every process paces at an equal share of one total: the local rates add up to about N
    // times the largest (a share is total / members), not to N totals. Not exactly N: the
    // processes tick at different moments of an interval, some still on the last total.
    let mut shares = held.shares;
    let typical = median(&mut shares);
    assert!(
        (typical - processes as f64).abs() <= 0.15 * processes as f64,
        "local rates should be equal shares of one total: {shares:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_holds_the_database_near_a_target_the_naive_mode_exceeds() {
    holds_the_target(1, 2500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_hold_one_target_together() {
    holds_the_target(3, 2500).await;
}
