//! Faults injected into real services while a real `tidegate run` works: Toxiproxy (started by
//! `scripts/services`) between tidegate and Redis or the database, to make a service silent
//! (connections accepted, nothing answered) or gone; and a start-up against a Redis that is not
//! there. Every scenario checks with counts of its own, not tidegate's: every job ends, none is
//! lost, no effect is applied twice (the effects are upserts keyed by job: one document each),
//! the run the jobs belong to ends with the test's counts in its record, and recovery is
//! bounded (each test states its bound).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::scenario::{
    Scenario, all_jobs_done, aof_redis, attempts_of_completed, command, ferretdb, listening,
    patient, start, work_resumes,
};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use tidegate::queue::{Backoff, BackoffKind, NewJob, Queue, connect};

/// One scenario at a time: each runs tidegate processes against the shared services, and
/// its recovery bounds are for a machine that is not also running the others.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Toxiproxy's HTTP API (https://github.com/Shopify/toxiproxy#http-api), just what these tests
/// use. Proxies are named uniquely and deleted at the end.
struct Toxiproxy {
    http: reqwest::Client,
    api: String,
}

impl Toxiproxy {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
            api: common::env("TOXIPROXY_URL"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("toxiproxy answers");
        let status = response.status();
        let text = response.text().await.expect("toxiproxy body");
        assert!(status.is_success(), "toxiproxy {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A proxy to `upstream` on a free loopback port; returns its address.
    async fn proxy(&self, name: &str, upstream: &str) -> String {
        let created = self
            .call(
                reqwest::Method::POST,
                "/proxies",
                Some(json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": true})),
            )
            .await;
        created["listen"]
            .as_str()
            .expect("listen address")
            .to_owned()
    }

    /// Adds a toxic named `toxic` of `kind` (Toxiproxy's types: timeout, latency, reset_peer, …)
    /// on the replies (`downstream`) of proxy `name`.
    async fn add(&self, name: &str, toxic: &str, kind: &str, attributes: Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{name}/toxics"),
            Some(json!({"name": toxic, "type": kind, "stream": "downstream",
                        "toxicity": 1.0, "attributes": attributes})),
        )
        .await;
    }

    async fn remove(&self, name: &str, toxic: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/proxies/{name}/toxics/{toxic}"),
            None,
        )
        .await;
    }

    /// Connections stay open and nothing comes back until [`Toxiproxy::answer`].
    async fn silence(&self, name: &str) {
        self.add(name, "silent", "timeout", json!({"timeout": 0}))
            .await;
    }

    async fn answer(&self, name: &str) {
        self.remove(name, "silent").await;
    }

    /// Disabled: open connections are closed and new ones refused, as when a server is down.
    async fn set_enabled(&self, name: &str, enabled: bool) {
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{name}"),
            Some(json!({"enabled": enabled})),
        )
        .await;
    }

    async fn delete(&self, name: &str) {
        self.call(reqwest::Method::DELETE, &format!("/proxies/{name}"), None)
            .await;
    }
}

/// `host:port` of a `redis://` or `mongodb://` URL without credentials or options.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned()
}

/// The database stops answering mid-run (connections open, replies never sent): no batch holds
/// its jobs past the batch timeout (4 s) plus a lock (2 s) and a margin; once it answers again,
/// every job completes, each effect once.
#[tokio::test]
async fn a_silent_database_releases_its_batches_and_the_work_finishes_when_it_answers() {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 600;
    let toxi = Toxiproxy::new();
    let proxy = common::unique("mongo");
    let listen = toxi.proxy(&proxy, &host_port(&common::mongodb_uri())).await;
    let s = Scenario::new(
        "faults_silent_db",
        &common::redis_url(),
        &common::mongodb_uri(),
        JOBS,
    )
    .await;
    let q = &s.q;
    let _running = s
        .start(
            &common::redis_url(),
            &format!("mongodb://{listen}/?directConnection=true"),
        )
        .await;

    toxi.silence(&proxy).await;
    // Batches keep starting (the pace falls to the floor, blind): each meets the silence and
    // must give its jobs back within the batch timeout. So no job may stay active longer than
    // that, a lock and a margin; each job's spell in `active` is timed from the first sample
    // that saw it there.
    let bound = Duration::from_secs(4 + 2 + 3);
    let mut since: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let mut longest_active = Duration::ZERO;
    let watch = Instant::now();
    while watch.elapsed() < bound + Duration::from_secs(5) {
        let (_, active) = q
            .jobs(tidegate::queue::JobState::Active, 0, 10_000)
            .await
            .expect("active jobs");
        let now = Instant::now();
        since.retain(|id, _| active.iter().any(|j| &j.id == id));
        for job in &active {
            let first = *since.entry(job.id.clone()).or_insert(now);
            longest_active = longest_active.max(now - first);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        longest_active <= bound,
        "a job stayed active {longest_active:?} while the database was silent (bound {bound:?})"
    );
    let before = q.counts().await.expect("counts");
    assert!(
        before.completed < JOBS as u64,
        "the silence came too late to test: {before:?}"
    );

    toxi.answer(&proxy).await;
    let answered = Instant::now();
    all_jobs_done(q, JOBS, Duration::from_secs(90)).await;
    eprintln!(
        "silent database: longest spell of a job in active {longest_active:?} (bound {bound:?}); every job done {:?} after it answered",
        answered.elapsed()
    );
    s.assert_done_once(&common::mongodb_uri()).await;
    toxi.delete(&proxy).await;
}

/// Redis goes away (connections closed, new ones refused) for 3 s and comes back with its data:
/// work resumes within 5 s, and every job completes once.
#[tokio::test]
async fn work_resumes_within_seconds_of_redis_coming_back() {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 1500;
    let toxi = Toxiproxy::new();
    let proxy = common::unique("redis");
    let listen = toxi.proxy(&proxy, &host_port(&common::redis_url())).await;
    let s = Scenario::new(
        "faults_redis_back",
        &common::redis_url(),
        &common::mongodb_uri(),
        JOBS,
    )
    .await;
    let q = &s.q;
    let _running = s
        .start(&format!("redis://{listen}"), &common::mongodb_uri())
        .await;

    toxi.set_enabled(&proxy, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself, not a wait for a condition
    let at_return = q.counts().await.expect("counts").completed;
    assert!(at_return < JOBS as u64, "the outage came too late to test");
    toxi.set_enabled(&proxy, true).await;
    let resumed = work_resumes(q, at_return).await;
    all_jobs_done(q, JOBS, Duration::from_secs(120)).await;
    eprintln!("redis back: work resumed {resumed:?} after it returned (bound 5 s)");
    s.assert_done_once(&common::mongodb_uri()).await;
    toxi.delete(&proxy).await;
}

/// A Redis that is not there at start: tidegate says at once what it waits for, and a SIGINT
/// stops it promptly (it used to log nothing, ignore SIGINT and exit after 210 s).
#[test]
fn startup_says_what_it_waits_for_and_obeys_sigint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("run")
        .env("REDIS_URL", "redis://:hunter2@127.0.0.1:1")
        .env("TIDEGATE_HTTP_ADDR", "127.0.0.1:0")
        .env("TIDEGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidegate");
    let started = Instant::now();
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    let within = started + Duration::from_secs(1);
    while !said
        .iter()
        .any(|l: &String| l.contains("connecting to Redis at redis://:****@127.0.0.1:1"))
    {
        let left = within.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => panic!("no word of what it waits for within 1 s: {said:?}"),
        }
    }
    let signal = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(signal.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 3 s after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "interrupted start-up is a failure");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        said.iter().chain(&rest).all(|l| !l.contains("hunter2")),
        "the password is never printed: {said:?} {rest:?}"
    );
    eprintln!(
        "start-up without Redis: first line after {:?}, stopped by SIGINT",
        started.elapsed()
    );
}

/// Upserts on few keys from two processes, every statement contending for the same 50
/// documents: every job completes within 2 minutes, on whatever database MONGODB_URI names.
/// (FerretDB 1.x waited forever once ~100 such statements were in flight on one database,
/// issue 13; `Store::limits` bounds what tidegate sends there.)
#[tokio::test]
async fn upserts_on_few_keys_from_two_processes_all_complete() {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 8000;
    const KEYS: usize = 50;
    let store = common::store("tidegate_faults").await;
    let database = store.database().name().to_owned();
    let queue_name = common::unique("faults_few_keys");
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue_name,
    );
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| {
            NewJob::new(
                "upsert",
                json!({"collection": "counters", "key": ["k"],
                       "document": {"k": format!("k{}", i % KEYS), "n": i}}),
            )
            .with_opts(patient())
        })
        .collect();
    q.add_bulk(&jobs).await.expect("add");
    let processes: Vec<common::Running> = (0..2)
        .map(|_| {
            start(
                command(
                    &queue_name,
                    &database,
                    &common::redis_url(),
                    &common::mongodb_uri(),
                )
                .env("TIDEGATE_TARGET_CPU", "10000")
                .env("TIDEGATE_RATE_CEILING", "100000"),
            )
        })
        .collect();
    let started = Instant::now();
    all_jobs_done(&q, JOBS, Duration::from_secs(120)).await;
    eprintln!(
        "{JOBS} upserts on {KEYS} keys, two processes: done in {:?}",
        started.elapsed()
    );
    drop(processes);
    let counters = store.database().collection::<Document>("counters");
    assert_eq!(
        counters.count_documents(doc! {}).await.expect("count"),
        KEYS as u64
    );
    store.database().drop().await.expect("drop");
}

/// Redis killed with SIGKILL mid-run and started again on its append-only file (`appendfsync
/// always`: what it acknowledged, it kept): work resumes within 5 s of its return and every
/// job completes, each effect once. Jobs whose locks lapsed meanwhile run again (at least
/// once); their upserts are idempotent.
#[tokio::test]
async fn redis_killed_and_restarted_on_its_aof_loses_no_job() {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 1500;
    let mut redis = aof_redis().await;
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let s = Scenario::new(
        "faults_redis_kill",
        &redis_url,
        &common::mongodb_uri(),
        JOBS,
    )
    .await;
    let q = &s.q;
    let _running = s.start(&redis_url, &common::mongodb_uri()).await;

    redis.kill();
    let down = Instant::now();
    redis.restart();
    listening(redis.port).await;
    let at_return =
        common::eventually("Redis to answer again", Duration::from_secs(30), || async {
            q.counts().await.ok().map(|c| c.completed)
        })
        .await;
    let back = Instant::now();
    assert!(at_return < JOBS as u64, "the kill came too late to test");
    let resumed = work_resumes(q, at_return).await;
    all_jobs_done(q, JOBS, Duration::from_secs(120)).await;
    eprintln!(
        "redis killed: back {:?} after the kill, work resumed {resumed:?} after that (bound 5 s)",
        back - down
    );
    s.assert_done_once(&common::mongodb_uri()).await;
}

/// The database killed with SIGKILL mid-run and started again on its files: the batches in
/// flight fail and are retried, and every job completes once it is back, each effect once.
/// FerretDB of the test's own (its binary from `scripts/services`), so the shared one is left
/// alone.
#[tokio::test]
async fn the_database_killed_and_restarted_loses_no_job() {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 1000;
    let Some(mut db) = ferretdb().await else {
        common::skip("FERRETDB_BIN is not set (MONGODB_URI points at another server)");
        return;
    };
    let mongodb_uri = format!("mongodb://127.0.0.1:{}/", db.port);
    let s = Scenario::new("faults_db_kill", &common::redis_url(), &mongodb_uri, JOBS).await;
    let q = &s.q;
    let _running = s.start(&common::redis_url(), &mongodb_uri).await;
    db.kill();
    let killed = q.counts().await.expect("counts").completed;
    assert!(killed < JOBS as u64, "the kill came too late to test");
    db.restart();
    listening(db.port).await;
    let back = Instant::now();
    all_jobs_done(q, JOBS, Duration::from_secs(120)).await;
    eprintln!(
        "database killed: every job done {:?} after it came back",
        back.elapsed()
    );
    s.assert_done_once(&mongodb_uri).await;
}

/// Jobs that ended (completed or failed), when Redis answers.
async fn ended_jobs(q: &Queue) -> Option<u64> {
    q.counts().await.ok().map(|c| c.completed + c.failed)
}

/// How soon work must go on after a fault: jobs of a killed worker wait for their lock (30 s)
/// and the next stalled check (every 30 s), and may be the only work left.
const RECOVERY: Duration = Duration::from_secs(75);

/// One kind of fault the chaos soak injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// Redis' proxy disabled: connections closed, new ones refused.
    RedisOutage,
    /// Redis killed with SIGKILL and started again on its append-only file.
    RedisKill,
    /// Redis' connections reset.
    RedisReset,
    /// The database's proxy answers nothing, connections open.
    DbSilent,
    /// The database's proxy disabled.
    DbOutage,
    /// 300 ms (±100) more on every reply of the database.
    DbLatency,
    /// One tidegate process killed with SIGKILL, a new one started.
    WorkerKill,
    /// Redis' proxy disabled for 1-3 minutes: longer than every time limit.
    RedisLongOutage,
    /// The database's proxy answering nothing for 1-3 minutes: longer than every time limit.
    DbLongSilence,
}

/// The faults of a few seconds, drawn most of the time.
const FAULTS: [Fault; 7] = [
    Fault::RedisOutage,
    Fault::RedisKill,
    Fault::RedisReset,
    Fault::DbSilent,
    Fault::DbOutage,
    Fault::DbLatency,
    Fault::WorkerKill,
];

/// The outages of minutes, drawn one time in eight.
const LONG_FAULTS: [Fault; 2] = [Fault::RedisLongOutage, Fault::DbLongSilence];

/// The chaos soak (`scripts/chaos`, not in CI): a real score day (`CHAOS_USERS`, default
/// 5,000) worked by two `tidegate run` processes through Toxiproxy while faults of every kind
/// above are injected at random (`CHAOS_SEED`) for `CHAOS_MINUTES` (default 5); then the same
/// checks as the scenarios: every job completed (none lost, none failed), one score per user
/// (no effect twice), the run's record agreeing, and each fault's recovery time (from its end
/// to the next completed job; bound [`RECOVERY`]). The day is worked again each time it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos soak: scripts/chaos runs it"]
async fn chaos() {
    let _serial = SERIAL.lock().await;
    use rand::{RngExt, SeedableRng};
    use tidegate_score::{self as score, DAILY_SCORES};
    let setting = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let minutes = setting("CHAOS_MINUTES", 5);
    let users = setting("CHAOS_USERS", 5_000);
    let seed = setting("CHAOS_SEED", rand::random::<u64>() % 1_000_000);
    eprintln!(
        "chaos: {minutes} min, {users} users, seed {seed} (CHAOS_SEED={seed} repeats the draw)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tz = chrono_tz::Asia::Seoul;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");

    let mut redis = aof_redis().await;
    let direct_redis = format!("redis://127.0.0.1:{}", redis.port);
    let toxi = Toxiproxy::new();
    let redis_proxy = common::unique("chaos_redis");
    let mongo_proxy = common::unique("chaos_mongo");
    let redis_listen = toxi
        .proxy(&redis_proxy, &format!("127.0.0.1:{}", redis.port))
        .await;
    let mongo_listen = toxi
        .proxy(&mongo_proxy, &host_port(&common::mongodb_uri()))
        .await;
    let proxied_redis = format!("redis://{redis_listen}");
    let proxied_mongo = format!("mongodb://{mongo_listen}/?directConnection=true");

    let database = common::unique("tidegate_chaos");
    let store =
        tidegate::store::Store::connect(&common::mongodb_uri(), &database, Default::default())
            .await
            .expect("mongo");
    for index in score::indexes() {
        store.create_index(&index).await.expect("index");
    }
    score::sample_day(&store, day, tz, users, 7, |_| {})
        .await
        .expect("seed");
    let conn = connect(&direct_redis).await.expect("redis");
    let queue_name = common::unique("chaos");
    let q = Queue::new(conn.clone(), "bull", &queue_name);
    let runs = tidegate::runs::Runs::new(conn.clone(), store.clone(), "bull");
    let planner = tidegate::schedule::Planner {
        daily: std::sync::Arc::new(tidegate_score::Score),
        queue: q.clone(),
        store: store.clone(),
        runs: runs.clone(),
        redis: conn,
        tz,
        attempts: 100,
        backoff: Backoff::Spec {
            kind: BackoffKind::Fixed,
            delay: 500,
            jitter: None,
        },
        lease: Duration::from_secs(600),
    };
    // The day is re-run each time it ends, so that faults land on work for the whole soak; a
    // re-run rewrites the same scores (upserts keyed by user and day).
    let mut run = planner.plan(day, "chaos", false).await.expect("plan");
    let mut planned = u64::try_from(run.planned.unwrap_or(0)).expect("a count");
    let mut runs_done = Vec::new();
    // Limits a score batch fits in: on FerretDB its read scans the day's events (about a
    // CPU-second at 5,000 users), which the scenarios' 1-s operation limit would never allow.
    // Locks at their default (30 s): the scenarios' 2-s locks lapse in every outage, and a job
    // whose lock lapses twice fails for good (BullMQ's stall limit, TIDEGATE_MAX_STALLED).
    // The soak SIGKILLs a worker every minute or so, at times four in half a minute: a job
    // whose worker is killed twice stalls twice, which BullMQ's stall limit (one, tidegate's
    // default too) fails for good as a job that may be killing its workers. Here the kills are
    // the soak's, so the limit is set above what they can reach.
    let start_process = || {
        start(
            command(&queue_name, &database, &proxied_redis, &proxied_mongo)
                .env("TIDEGATE_MAX_STALLED", "5")
                .env("TIDEGATE_WORKERS", "2")
                .env("TIDEGATE_BATCH_DOCS", "100")
                .env("TIDEGATE_MONGODB_TIMEOUT", "5s")
                .env("TIDEGATE_MONGODB_OP_TIMEOUT", "10s")
                .env("TIDEGATE_BATCH_TIMEOUT", "20s"),
        )
    };
    let mut processes = vec![start_process(), start_process()];
    let completed = || async { q.counts().await.ok().map(|c| c.completed) };

    let mut recoveries: Vec<(Fault, Duration)> = Vec::new();
    let mut unrecovered: Vec<Fault> = Vec::new();
    let started = Instant::now();
    let soak = started + Duration::from_secs(minutes * 60);
    while Instant::now() < soak {
        // The schedule of faults, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..8_000))).await;
        if ended_jobs(&q).await.is_some_and(|n| n >= planned) {
            runs_done.push(run.id.clone());
            run = planner.plan(day, "chaos", false).await.expect("re-run");
            planned += u64::try_from(run.planned.unwrap_or(0)).expect("a count");
        }
        let (fault, lasting) = if rng.random_range(0..8) == 0 {
            let fault = LONG_FAULTS[rng.random_range(0..LONG_FAULTS.len())];
            (
                fault,
                Duration::from_millis(rng.random_range(60_000..180_000)),
            )
        } else {
            let fault = FAULTS[rng.random_range(0..FAULTS.len())];
            (fault, Duration::from_millis(rng.random_range(1_000..6_000)))
        };
        match fault {
            Fault::RedisOutage | Fault::RedisLongOutage => {
                toxi.set_enabled(&redis_proxy, false).await;
                tokio::time::sleep(lasting).await;
                toxi.set_enabled(&redis_proxy, true).await;
            }
            Fault::RedisKill => {
                redis.kill();
                redis.restart();
                listening(redis.port).await;
            }
            Fault::RedisReset => {
                toxi.add(&redis_proxy, "reset", "reset_peer", json!({"timeout": 0}))
                    .await;
                tokio::time::sleep(lasting / 4).await;
                toxi.remove(&redis_proxy, "reset").await;
            }
            Fault::DbSilent | Fault::DbLongSilence => {
                toxi.silence(&mongo_proxy).await;
                tokio::time::sleep(lasting).await;
                toxi.answer(&mongo_proxy).await;
            }
            Fault::DbOutage => {
                toxi.set_enabled(&mongo_proxy, false).await;
                tokio::time::sleep(lasting).await;
                toxi.set_enabled(&mongo_proxy, true).await;
            }
            Fault::DbLatency => {
                toxi.add(
                    &mongo_proxy,
                    "slow",
                    "latency",
                    json!({"latency": 300, "jitter": 100}),
                )
                .await;
                tokio::time::sleep(lasting * 2).await;
                toxi.remove(&mongo_proxy, "slow").await;
            }
            Fault::WorkerKill => {
                let victim = rng.random_range(0..processes.len());
                processes[victim] = start_process(); // the old one is killed on drop
            }
        }
        let ended = Instant::now();
        let before = common::eventually(
            "Redis to answer the test",
            Duration::from_secs(30),
            completed,
        )
        .await;
        if ended_jobs(&q).await.is_some_and(|n| n >= planned) {
            continue;
        }
        let recovered = tokio::time::timeout(RECOVERY, async {
            loop {
                if completed().await.is_some_and(|c| c > before) {
                    return ended.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        eprintln!(
            "chaos: {fault:?} ended at {:.1?} into the soak; work again after {:?}",
            ended - started,
            recovered.as_ref().ok()
        );
        match recovered {
            Ok(took) => recoveries.push((fault, took)),
            Err(_) => unrecovered.push(fault),
        }
    }

    let finished = common::eventually(
        "every job to complete",
        Duration::from_secs(600),
        || async {
            q.counts()
                .await
                .ok()
                .filter(|c| c.completed + c.failed >= planned && c.active == 0)
        },
    )
    .await;
    runs_done.push(run.id.clone());
    // Judged after the figures are printed: an open run is a finding, not a reason to hide them.
    let mut records = Vec::new();
    let mut open_runs = Vec::new();
    for id in &runs_done {
        match runs.wait_for_end(id, Duration::from_secs(60)).await {
            Ok(record) => records.push(record),
            Err(e) => open_runs.push(format!(
                "{e} (counted {:?})",
                runs.finished_jobs(id).await.ok()
            )),
        }
    }
    let scores = store
        .database()
        .collection::<Document>(DAILY_SCORES)
        .count_documents(doc! { "runId": &run.id })
        .await
        .expect("count");
    drop(processes);

    println!(
        "\nchaos soak: {minutes} min, seed {seed}, a day of {users} users worked {} times ({planned} jobs), two processes\n",
        runs_done.len()
    );
    println!("| fault | injected | recovered (median / worst) |\n|---|---|---|");
    for kind in FAULTS.into_iter().chain(LONG_FAULTS) {
        let mut took: Vec<Duration> = recoveries
            .iter()
            .filter(|(f, _)| *f == kind)
            .map(|(_, d)| *d)
            .collect();
        took.sort();
        let missed = unrecovered.iter().filter(|f| **f == kind).count();
        let shown = match (took.get(took.len() / 2), took.last()) {
            (Some(median), Some(worst)) => format!("{median:.1?} / {worst:.1?}"),
            _ => "-".into(),
        };
        println!("| {kind:?} | {} | {shown} |", took.len() + missed);
    }
    // An outage is not a job's failure: how many jobs spent more than one attempt.
    let attempts = attempts_of_completed(&q).await;
    let retried = attempts.iter().filter(|&&a| a > 1).count();
    let runs_agree = open_runs.is_empty()
        && records.iter().all(|r| {
            r.failed == 0
                && r.planned == Some(r.completed)
                && r.outcome.as_deref() == Some("succeeded")
        });
    println!(
        "\njobs: {} completed, {} failed, {} lost, {retried} on more than one attempt; runs: {} ended, every one succeeded with its planned count: {runs_agree}; still open: {open_runs:?}; scores: {scores} written by the last run for {users} users",
        finished.completed,
        finished.failed,
        planned.saturating_sub(finished.completed + finished.failed),
        records.len(),
    );
    assert!(
        unrecovered.is_empty(),
        "no work within {RECOVERY:?} after {unrecovered:?}"
    );
    assert_eq!((finished.completed, finished.failed), (planned, 0));
    assert!(runs_agree, "{records:?}");
    assert_eq!(scores, users, "one score per user, written by the last run");
    store.database().drop().await.expect("drop");
    toxi.delete(&redis_proxy).await;
    toxi.delete(&mongo_proxy).await;
}
