//! Load control on the real services: the write budget shared in Redis (one leader, equal
//! shares, failover), and the whole loop on the database: probes → controller → budget →
//! throttle → worker, holding the database's CPU near a target that the naive mode exceeds,
//! with one worker process, with three, and with two queues. The database is the local FerretDB
//! 2 on PostgreSQL with DocumentDB, whose CPU (PostgreSQL's processes and FerretDB's) comes
//! from process-exporter through Prometheus.

mod common;

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::doc;
use serde_json::json;
use tidegate::control::budget::{self, Budget, DecidedFrom, Finished, Report, Started, Turns};
use tidegate::control::controller::{Config, Decision, Limiter, Pace};
use tidegate::control::cost::Cost;
use tidegate::control::pacer::{ControlOptions, Pacer};
use tidegate::control::probe::{Probe, PrometheusProbe};
use tidegate::control::throttle::Throttle;
use tidegate::engine::Engine as App;
use tidegate::queue::keys::BudgetKeys;
use tidegate::queue::{NewJob, connect};
use tidegate::store::{Store, StoreOptions};
use tidegate::worker::{Worker, WorkerOptions};
use tidegate_score as score;
use tokio_util::sync::CancellationToken;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Seoul;
const INTERVAL: Duration = Duration::from_secs(1);
/// Well below what the naive mode reaches on two cores, and above what the database costs idle.
const TARGET_CPU: f64 = 40.0;
/// A day that outlasts the judged window at the target, in batches of at most `BATCH` users:
/// on FerretDB 2 with the score's indexes a batch of 100 costs a few milliseconds of CPU to
/// read and about ten to upsert, so the day must be large for a minute of it to be judged.
const DAY_USERS: u64 = 200_000;
/// Users the naive mode scores at once to show that it exceeds the target: each is its own
/// read and upsert, all in flight together.
const NAIVE_USERS: usize = 10_000;
/// Settled one-second CPU readings judged per test: enough for the mean of readings that swing
/// with each batch to say where the load sits, and no more, as the whole day adds minutes to
/// CI and says nothing a minute does not.
const JUDGED: usize = 60;
const BATCH: usize = 100;
/// The CPU tests measure one shared database process: they must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")
}

fn why() -> DecidedFrom {
    DecidedFrom {
        limiter: "cpu",
        cpu: Some(150.0),
        write_latency: None,
        read_latency: Some(0.004),
        target_cpu: 200.0,
        target_latency: 0.05,
    }
}

fn pace(queue: &str, rate: f64, batch: usize) -> Pace {
    Pace {
        queue: queue.into(),
        rate,
        batch,
        budget: None,
        cost: Some(Cost {
            per_batch: 30.0,
            per_document: 0.2,
        }),
    }
}

fn decision(paces: Vec<Pace>) -> Decision {
    Decision {
        budget: Some(80.0),
        live: Some(20.0),
        limiter: Limiter::Cpu,
        paces,
    }
}

#[tokio::test]
async fn one_leader_publishes_a_pace_per_queue_and_members_share_their_queues() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let name = common::unique("budget");
    let keys = BudgetKeys::new(&name);
    let interval = Duration::from_millis(500);
    let mut members: Vec<Budget> = ["a", "a", "b"]
        .iter()
        .map(|q| Budget::new(redis.clone(), keys.clone(), q, 1.0, interval))
        .collect();
    let mut ticks = Vec::new();
    for m in &mut members {
        ticks.push(m.tick(&Report::default()).await.expect("tick"));
    }
    // All three have joined once the last one ticks; the first to tick leads.
    assert!(ticks[0].leader && !ticks[1].leader && !ticks[2].leader);
    assert_eq!((ticks[2].members, ticks[2].queue_members), (3, 1));
    assert_eq!(ticks[1].queue_members, 2, "two processes work queue a");
    assert_eq!(ticks[2].pace, None, "nothing published yet");

    let decided = decision(vec![pace("a", 900.0, 500), pace("b", 300.0, 100)]);
    assert!(members[0].publish(&decided, &why()).await.expect("publish"));
    assert!(
        !members[1].publish(&decided, &why()).await.expect("publish"),
        "only the leader publishes"
    );
    // What the back-office shows for queue a.
    let status = budget::status(&mut redis.clone(), &keys, &name, "a")
        .await
        .expect("status");
    assert_eq!(
        (
            status.rate,
            status.batch,
            status.members,
            status.limiter.as_deref()
        ),
        (Some(900.0), Some(500), 3, Some("cpu"))
    );
    assert_eq!(
        (status.cpu_budget, status.live_load),
        (Some(80.0), Some(20.0))
    );
    assert_eq!(
        (status.db_cpu, status.read_latency),
        (Some(150.0), Some(0.004))
    );
    assert_eq!(status.write_latency, None, "not measured is not 0");

    let tick = members[1]
        .tick(&Report {
            errors: 2,
            ..Report::default()
        })
        .await
        .expect("tick");
    assert_eq!(tick.pace, Some((900.0, 500)), "queue a's pace");
    assert_eq!(tick.errors, 2, "write errors add up across members");
    let tick = members[2].tick(&Report::default()).await.expect("tick");
    assert_eq!(tick.pace, Some((300.0, 100)), "queue b's pace");

    // The leader leaves: the next member to tick takes over, and queue a's share grows.
    members[0].leave().await.expect("leave");
    let tick = members[1].tick(&Report::default()).await.expect("tick");
    assert!(tick.leader);
    assert_eq!((tick.members, tick.queue_members), (2, 1));
}

#[tokio::test]
async fn the_leader_reads_every_members_batches_on_redis_clock() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let keys = BudgetKeys::new(&common::unique("ledger"));
    let interval = Duration::from_millis(500);
    let mut leader = Budget::new(redis.clone(), keys.clone(), "a", 1.0, interval);
    let mut other = Budget::new(redis.clone(), keys.clone(), "b", 3.0, interval);
    leader.tick(&Report::default()).await.expect("tick");
    let tick = other
        .tick(&Report {
            backlog: 40,
            started: vec![Started {
                seq: 1,
                ago_ms: 100,
                documents: 50,
            }],
            finished: vec![Finished {
                seq: 2,
                started_ago_ms: 900,
                ended_ago_ms: 400,
                documents: 30,
            }],
            ..Report::default()
        })
        .await
        .expect("tick");
    let ledger = leader.ledger().await.expect("ledger");
    let b = ledger
        .members
        .iter()
        .find(|m| m.queue == "b")
        .expect("member b");
    assert_eq!((b.weight, b.backlog), (3.0, 40));
    let mut batches = ledger.batches.clone();
    batches.sort_by_key(|b| b.start_ms);
    assert_eq!(batches.len(), 2, "{batches:?}");
    let (done, flying) = (&batches[0], &batches[1]);
    assert_eq!((done.queue.as_str(), done.documents), ("b", 30));
    assert_eq!(done.start_ms, tick.now_ms - 900);
    assert_eq!(done.end_ms, Some(tick.now_ms - 400));
    assert_eq!((flying.documents, flying.end_ms), (50, None));
    assert_eq!(flying.start_ms, tick.now_ms - 100);

    // The batch in flight ends; then its process dies with another one in flight, which no
    // longer loads the database and leaves the ledger.
    other
        .tick(&Report {
            started: vec![Started {
                seq: 3,
                ago_ms: 10,
                documents: 5,
            }],
            finished: vec![Finished {
                seq: 1,
                started_ago_ms: 300,
                ended_ago_ms: 50,
                documents: 50,
            }],
            ..Report::default()
        })
        .await
        .expect("tick");
    let ledger = leader.ledger().await.expect("ledger");
    assert_eq!(
        ledger.batches.iter().filter(|b| b.end_ms.is_some()).count(),
        2
    );
    assert_eq!(
        ledger.batches.iter().filter(|b| b.end_ms.is_none()).count(),
        1
    );
    other.leave().await.expect("leave");
    let ledger = leader.ledger().await.expect("ledger");
    assert_eq!(
        ledger.batches.iter().filter(|b| b.end_ms.is_none()).count(),
        0
    );
    assert_eq!(ledger.members.len(), 1);
}

#[tokio::test]
async fn a_queues_batches_take_turns_across_processes_at_its_current_pace() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let keys = BudgetKeys::new(&common::unique("turns"));
    let a = Turns::new(redis.clone(), &keys, "q", "pa");
    let b = Turns::new(redis.clone(), &keys, "q", "pb");
    let other = Turns::new(redis, &keys, "r", "pc");
    assert_eq!(
        a.take(100, 10.0, "a1").await.expect("turn"),
        None,
        "a free turn"
    );
    // 100 documents at 10/s hold the queue's turn for 10 s, whichever process asks next. (These
    // processes are no members of a budget, so their batches' slots lapse at once: only the
    // turn is at play until the slots below.)
    let wait = b
        .take(100, 10.0, "b1")
        .await
        .expect("turn")
        .expect("b waits");
    assert!(
        wait > Duration::from_secs(8) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    assert_eq!(
        other.take(100, 10.0, "r1").await.expect("turn"),
        None,
        "another queue's turns are its own"
    );
    // The pace raised tenfold, the batch holds the turn a tenth as long: the wait shrinks now.
    let wait = b.take(100, 100.0, "b1").await.expect("turn");
    assert!(wait.is_none_or(|w| w <= Duration::from_secs(1)), "{wait:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(wait) = b.take(100, 100.0, "b1").await.expect("turn") {
        assert!(Instant::now() < deadline, "b never got its turn");
        tokio::time::sleep(wait).await;
    }
    assert!(
        a.take(100, 100.0, "a2").await.expect("turn").is_some(),
        "a now waits for b's batch"
    );

    // Slots: at 100 documents/s a batch of one holds the turn for 10 ms, and the queue's
    // batches may run at once as many as its pace needs, whichever processes (members of the
    // budget) run them: one until a batch has been timed; then, at 10 ms a batch, two (1.5 ×
    // 100/s × 10 ms, rounded up). A batch beyond them waits for one to end, or for its
    // process's membership to lapse.
    let keys = BudgetKeys::new(&common::unique("slots"));
    let redis = connect(&common::redis_url()).await.expect("redis");
    let interval = Duration::from_millis(100);
    let mut pa = Budget::new(redis.clone(), keys.clone(), "q", 1.0, interval);
    let mut pb = Budget::new(redis.clone(), keys.clone(), "q", 1.0, interval);
    pa.tick(&Report::default()).await.expect("tick");
    pb.tick(&Report::default()).await.expect("tick");
    let a = Turns::new(redis.clone(), &keys, "q", pa.id());
    let b = Turns::new(redis.clone(), &keys, "q", pb.id());
    // The queue's batches' mean run time, ms, as turn.lua reads it; pinned to 10 ms after each
    // release below, as the test's own batches run for however long the test takes.
    let turn = keys.turn("q");
    let took = || {
        let (mut redis, turn) = (redis.clone(), turn.clone());
        async move {
            let took: Option<f64> = redis::cmd("HGET")
                .arg(&turn)
                .arg("took")
                .query_async(&mut redis)
                .await
                .expect("took");
            took
        }
    };
    let pin = || {
        let (mut redis, turn) = (redis.clone(), turn.clone());
        async move {
            let _: () = redis::cmd("HSET")
                .arg(&turn)
                .arg("took")
                .arg(10)
                .query_async(&mut redis)
                .await
                .expect("pin took");
        }
    };
    assert!(starts(&a, &a.batch_id(1)).await);
    assert!(
        !starts(&b, &b.batch_id(1)).await,
        "one slot until a batch is timed"
    );
    a.release(&a.batch_id(1)).await.expect("release");
    let timed = took().await.expect("a's batch was timed");
    assert!(timed > 0.0 && timed < 10_000.0, "{timed} ms");
    pin().await;
    assert!(starts(&a, &a.batch_id(2)).await);
    assert!(starts(&b, &b.batch_id(1)).await, "two slots at 10 ms");
    assert!(!starts(&a, &a.batch_id(3)).await, "but no third");
    b.release(&b.batch_id(1)).await.expect("release");
    pin().await;
    assert!(starts(&a, &a.batch_id(3)).await, "b's batch ended");
    // a's second batch ends, b takes a slot again and dies: once b's membership lapses (3
    // intervals), its slot frees.
    a.release(&a.batch_id(2)).await.expect("release");
    pin().await;
    assert!(starts(&b, &b.batch_id(2)).await);
    assert!(!starts(&a, &a.batch_id(4)).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        pa.tick(&Report::default()).await.expect("tick");
        if starts(&a, &a.batch_id(4)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b's slot never lapsed with its membership"
        );
        tokio::time::sleep(interval).await;
    }
}

/// Whether batch `id` (one document at 100/s) starts once its turn comes (10 ms at most): a
/// wait longer than a turn is a wait for a slot.
async fn starts(turns: &Turns, id: &str) -> bool {
    // Turns of 10 ms: a batch still turned away after five seconds never gets one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match turns.take(1, 100.0, id).await.expect("turn") {
            None => return true,
            Some(wait) if wait <= Duration::from_millis(10) => tokio::time::sleep(wait).await,
            Some(_) => return false,
        }
    }
    panic!("batch {id} waited five seconds for its turn");
}

#[tokio::test]
async fn an_unreachable_database_drops_the_pace_to_the_floor_within_one_interval() {
    let redis = connect(&common::redis_url()).await.expect("redis");
    let name = common::unique("blind");
    let queue = common::unique("blind_queue");
    let interval = Duration::from_millis(500);
    // Another process was writing at 1,000 documents/s, then went away.
    let mut before = Budget::new(redis.clone(), BudgetKeys::new(&name), &queue, 1.0, interval);
    before.tick(&Report::default()).await.expect("tick");
    assert!(
        before
            .publish(&decision(vec![pace(&queue, 1000.0, 200)]), &why())
            .await
            .expect("publish")
    );
    before.leave().await.expect("leave");

    // Nothing listens on port 1: every serverStatus fails.
    let store = Store::connect("mongodb://127.0.0.1:1", "blind", StoreOptions::default())
        .await
        .expect("a client connects lazily");
    let options = ControlOptions {
        interval,
        budget: name.clone(),
        controller: Config {
            floor: 7.0,
            ..Config::default()
        },
        ..ControlOptions::default()
    };
    let (mut pacer, throttle) =
        Pacer::build(options, redis.clone(), &queue, store, 100).expect("pacer");
    throttle.set_backlog(10);
    pacer.tick().await;
    assert_eq!(
        throttle.rate(),
        7.0,
        "blind: the floor, at the first interval"
    );
    let mut reader = Budget::new(redis, BudgetKeys::new(&name), &queue, 1.0, interval);
    let tick = reader.tick(&Report::default()).await.expect("tick");
    assert_eq!(
        tick.pace.map(|p| p.0),
        Some(7.0),
        "and the floor is what the others are told"
    );
}

/// The parts as `tidegate run` builds them, set through its variables, on a day of the test's
/// own with the score's indexes, on the local FerretDB 2, paced by its CPU (PostgreSQL's and
/// FerretDB's processes through process-exporter and Prometheus, `irate` over 3 s: about one
/// interval of lag); `None` (the test skips) when MONGODB_URI names another server, for which
/// these figures are not calibrated.
async fn world(users: u64) -> Option<App> {
    let budget = common::unique("control_budget");
    let mut app = app("control", &settings(&budget, None)).await;
    let Some(cpu) = common::database_cpu_query() else {
        common::skip("calibrated for the local FerretDB 2; MONGODB_URI names another server");
        return None;
    };
    app.settings.control.prometheus_url = Some(common::env("PROMETHEUS_URL"));
    app.settings.control.prometheus_cpu = Some(cpu);
    app.create_missing_indexes()
        .await
        .expect("the score's indexes");
    score::sample_day(&app.store, day(), TZ, users, 11, |_| {})
        .await
        .expect("sample day");
    Some(app)
}

/// The variables of a paced process writing to `database` (the test's own when `None`) under
/// the write budget `budget`.
fn settings(budget: &str, database: Option<&str>) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("TIDEGATE_TIMEZONE", TZ.name().to_owned()),
        ("TIDEGATE_APPS", "upsert,score".to_owned()),
        ("TIDEGATE_ATTEMPTS", "3".to_owned()),
        ("TIDEGATE_BACKOFF", "fixed:10ms".to_owned()),
        ("TIDEGATE_BATCH_DOCS", BATCH.to_string()),
        (
            "TIDEGATE_CONTROL_INTERVAL",
            format!("{}ms", INTERVAL.as_millis()),
        ),
        ("TIDEGATE_TARGET_CPU", TARGET_CPU.to_string()),
        ("TIDEGATE_RATE_FLOOR", "20".to_owned()),
        ("TIDEGATE_RATE_CEILING", "50000".to_owned()),
        ("TIDEGATE_BUDGET", budget.to_owned()),
    ];
    if let Some(database) = database {
        vars.push(("TIDEGATE_DATABASE", database.to_owned()));
    }
    vars
}

async fn app(name: &str, vars: &[(&'static str, String)]) -> App {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::app(name, &vars).await
}

/// Database CPU as the test sees it: the source the pacer uses.
struct CpuGauge(PrometheusProbe);

impl CpuGauge {
    fn new() -> Self {
        let probe = PrometheusProbe::new(
            &common::env("PROMETHEUS_URL"),
            Some(common::database_cpu_query().expect("the local database's CPU query")),
            None,
            None,
            Duration::from_secs(2),
        )
        .expect("prometheus probe");
        Self(probe)
    }

    async fn read(&mut self) -> Option<f64> {
        self.0.sample().await.ok().and_then(|r| r.cpu_percent)
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The naive mode on `users` users, CPU sampled every second while it runs.
async fn naive_cpu(app: &App, users: usize, gauge: &mut CpuGauge) -> Vec<f64> {
    let targets = score::targets(&app.store, day(), TZ, Duration::from_secs(600))
        .await
        .expect("targets");
    let some: Vec<String> = targets.take(users).try_collect().await.expect("targets");
    let naive = tokio::spawn({
        let store = app.store.clone();
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

/// Worker processes, each with its own pacer and throttle, sharing the database's budget as
/// separate processes would.
#[derive(Default)]
struct Paced {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    throttles: Vec<Throttle>,
}

impl Paced {
    /// `processes` more working `app`'s queue, each built as [`App::paced_worker`] builds one,
    /// keeping its throttle to read its rate.
    fn start(&mut self, app: &App, processes: usize) {
        for _ in 0..processes {
            let (pacer, throttle) = Pacer::build(
                app.settings.control.clone(),
                app.redis.clone(),
                app.queue.name(),
                app.store.clone(),
                app.settings.worker.batch_docs,
            )
            .expect("pacer");
            let worker = Worker::new(
                app.queue.clone(),
                &app.settings.redis_url,
                app.router(),
                WorkerOptions {
                    // Not variables: a quick end to the test once the queue is empty.
                    idle_block: Duration::from_millis(200),
                    depth_interval: Duration::from_millis(500),
                    ..app.settings.worker.clone()
                },
            )
            .with_throttle(throttle.clone())
            .observed_by(app.runs.clone());
            self.tasks.push(tokio::spawn(pacer.run(self.stop.clone())));
            self.tasks.push(tokio::spawn({
                let stop = self.stop.clone();
                async move {
                    worker.run(stop).await.expect("worker");
                }
            }));
            self.throttles.push(throttle);
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("task");
        }
    }
}

/// CPU samples taken once the controller has settled, while work was left.
struct Held {
    steady: Vec<f64>,
    /// Per sample, the mean of the queue's processes' local rates and the pace its leader
    /// published for the queue.
    paces: Vec<(f64, f64)>,
    /// What the leader published each interval, from the start: printed with a failure, as
    /// the CPU readings alone cannot say which part of the loop went wrong.
    trail: Vec<String>,
}

impl Held {
    fn print(&self) {
        eprintln!("the leader's decisions, one per interval:");
        for line in &self.trail {
            eprintln!("  {line}");
        }
    }
}

/// Most intervals the controller may take to leave its cold start (probing costs it has not
/// learned), or to resume after a new leader: past it the test fails, as then it never held.
const SETTLE_WITHIN: u32 = 60;

/// Samples the CPU every interval until [`JUDGED`] settled readings are taken or `app`'s queue
/// is drained. Readings are judged from the first interval at least twelve in (the CPU window
/// then covers only what the controller chose) at which the leader no longer probes; on a
/// drain, the last three are not judged.
async fn hold(app: &App, paced: &Paced, processes: usize, gauge: &mut CpuGauge) -> Held {
    // A guard against a hang, not a bound on speed: how fast a day drains at the target
    // depends on how loaded this shared machine is.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut held = Held {
        steady: Vec::new(),
        paces: Vec::new(),
        trail: Vec::new(),
    };
    let queue = &app.queue;
    let keys = BudgetKeys::new(&app.settings.control.budget);
    let mut reader = Budget::new(app.redis.clone(), keys.clone(), queue.name(), 1.0, INTERVAL);
    let mut conn = app.redis.clone();
    let queues = [queue.name().to_owned()];
    let started = Instant::now();
    let mut settled = false;
    loop {
        tokio::time::sleep(INTERVAL).await;
        assert!(Instant::now() < deadline, "the run did not end in time");
        let counts = queue.counts().await.expect("counts");
        if counts.waiting + counts.active == 0 {
            let keep = held.steady.len().saturating_sub(3);
            held.steady.truncate(keep);
            held.paces.truncate(keep);
            break;
        }
        if held.steady.len() == JUDGED {
            break;
        }
        let cpu = gauge.read().await;
        let status = budget::status(&mut conn, &keys, "test", queue.name())
            .await
            .expect("the published pace");
        let limiter = status.limiter.unwrap_or_default();
        let number = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        held.trail.push(format!(
            "{:>3} s: {limiter} budget {} live {} cpu {} (test {}), rate {} batch {}",
            started.elapsed().as_secs(),
            number(status.cpu_budget),
            number(status.live_load),
            number(status.db_cpu),
            number(cpu),
            number(status.rate),
            status
                .batch
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
        ));
        let cold = matches!(limiter.as_str(), "probing" | "resuming" | "");
        if started.elapsed() >= INTERVAL * 12 && !cold {
            settled = true;
        }
        if !settled {
            if started.elapsed() >= INTERVAL * SETTLE_WITHIN {
                held.print();
                panic!("the controller did not settle within {SETTLE_WITHIN} intervals");
            }
            continue;
        }
        if let Some(cpu) = cpu {
            held.steady.push(cpu);
            let local = paced.throttles[..processes]
                .iter()
                .map(Throttle::rate)
                .sum::<f64>()
                / processes as f64;
            let (_, published) = reader.published(&queues).await.expect("published pace");
            let pace = published.first().map_or(0.0, |p| p.rate);
            held.paces.push((local, pace));
        }
    }
    held
}

async fn holds_the_target(processes: usize, users: u64) {
    let _serial = SERIAL.lock().await;
    let Some(w) = world(users).await else { return };
    let mut gauge = CpuGauge::new();

    let mut naive = naive_cpu(&w, NAIVE_USERS, &mut gauge).await;
    let naive_median = median(&mut naive);
    assert!(
        naive_median > TARGET_CPU * 1.5,
        "the naive mode should exceed the target clearly: median {naive_median:.0}% {naive:?}"
    );

    w.planner()
        .expect("score plans days")
        .plan(day(), "test", false)
        .await
        .expect("plan");
    let mut paced = Paced::default();
    paced.start(&w, processes);
    let held = hold(&w, &paced, processes, &mut gauge).await;
    held.print();
    paced.stop().await;
    let counts = w.queue.counts().await.expect("counts");
    assert_eq!(counts.failed, 0, "no job failed: {counts:?}");
    assert!(
        held.steady.len() >= 10,
        "too short to judge: {:?}",
        held.steady
    );
    let steady = held.steady.clone();
    let paced_mean = mean(&steady);
    eprintln!(
        "{processes} process(es): naive median {naive_median:.0}%, paced mean {paced_mean:.0}% (target {TARGET_CPU}%) over {} s: {:?}",
        steady.len(),
        steady.iter().map(|c| c.round()).collect::<Vec<_>>()
    );
    // One-second readings go up and down with the batches and the readings' own noise: the
    // hold is the mean's.
    assert!(
        (paced_mean - TARGET_CPU).abs() <= 0.3 * TARGET_CPU,
        "paced mean {paced_mean:.0}% is not near the target {TARGET_CPU}%: {steady:?}"
    );
    // Every process's bucket earns at its queue's one published pace, and the queue's turns
    // space the batches of all its processes by it (so N processes hold one target, above,
    // not N of it). Compared over the run, as the processes tick at different moments of an
    // interval and some are still on the last pace at any one sample.
    let local = mean(&held.paces.iter().map(|p| p.0).collect::<Vec<_>>());
    let pace = mean(&held.paces.iter().map(|p| p.1).collect::<Vec<_>>());
    assert!(
        (local - pace).abs() <= 0.2 * pace,
        "the processes' rates ({local:.1}/s on average) should be the queue's pace ({pace:.1}/s): {:?}",
        held.paces
    );
    w.store.database().drop().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_holds_the_database_near_a_target_the_naive_mode_exceeds() {
    holds_the_target(1, DAY_USERS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_hold_one_target_together() {
    holds_the_target(3, DAY_USERS).await;
}

/// Two queues write to one database: the score day (an indexed read and upserts per batch)
/// and generic upserts keyed by `_id` (a cost per document, little per batch). One budget:
/// together they hold the one target, and both make progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queues_on_one_database_hold_one_target() {
    let _serial = SERIAL.lock().await;
    let Some(w) = world(DAY_USERS).await else {
        return;
    };
    let mut gauge = CpuGauge::new();
    let mut upserts = app(
        "control_upserts",
        &settings(&w.settings.control.budget, Some(&w.settings.database)),
    )
    .await;
    upserts.settings.control = w.settings.control.clone();
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|n| {
            NewJob::new(
                "upsert",
                json!({"collection": "counters", "key": ["_id"],
                       "document": {"_id": format!("k{n}"), "n": n, "pad": "x".repeat(200)}}),
            )
        })
        .collect();
    upserts.queue.add_bulk(&jobs).await.expect("add upserts");
    w.planner()
        .expect("score plans days")
        .plan(day(), "test", false)
        .await
        .expect("plan");
    let mut paced = Paced::default();
    paced.start(&w, 1);
    paced.start(&upserts, 1);
    let held = hold(&w, &paced, 1, &mut gauge).await;
    held.print();
    paced.stop().await;
    let scores = w.queue.counts().await.expect("counts");
    let counts = upserts.queue.counts().await.expect("counts");
    let combined = mean(&held.steady);
    eprintln!(
        "two queues: combined mean {combined:.0}% (target {TARGET_CPU}%) over {} s; upserts left {}: {:?}",
        held.steady.len(),
        counts.waiting,
        held.steady.iter().map(|c| c.round()).collect::<Vec<_>>()
    );
    assert!(
        held.steady.len() >= 10,
        "too short to judge: {:?}",
        held.steady
    );
    // One budget, not one per queue: together they stay within the target's band above (two
    // budgets would take them to twice it). Below, they use less of it than one queue does:
    // 28-37% of 40% over six runs, as with two cheap classes at a steady pace the cost model
    // takes part of the batches' load for live load (BENCHMARKS.md, issue 25), so the floor is
    // the one that shows both queues still paced by the CPU, not starved.
    assert!(
        (0.6 * TARGET_CPU..=1.3 * TARGET_CPU).contains(&combined),
        "the two queues together should hold one target: mean {combined:.0}%: {:?}",
        held.steady
    );
    assert!(
        scores.completed > 0 && counts.completed > 0,
        "both queues made progress: {scores:?} {counts:?}"
    );
    assert_eq!(scores.failed + counts.failed, 0, "no job failed");
    w.store.database().drop().await.expect("drop");
}
