//! Faults injected into real services while a real `tidegate run` works: Toxiproxy (started by
//! `scripts/services`) between tidegate and Redis or the database, to make a service silent
//! (connections accepted, nothing answered) or gone; and a start-up against a Redis that is not
//! there. Every scenario checks with counts of its own, not tidegate's: every job ends, none is
//! lost, no effect is applied twice (the effects are upserts keyed by job: one document each),
//! and recovery is bounded (each test states its bound).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use tidegate::queue::{Backoff, BackoffKind, JobOptions, NewJob, Queue, connect};

/// A `tidegate run` child, killed if the test ends first.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

    /// Connections stay open and nothing comes back until [`Toxiproxy::answer`].
    async fn silence(&self, name: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{name}/toxics"),
            Some(
                json!({"name": "silent", "type": "timeout", "stream": "downstream",
                        "toxicity": 1.0, "attributes": {"timeout": 0}}),
            ),
        )
        .await;
    }

    async fn answer(&self, name: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/proxies/{name}/toxics/silent"),
            None,
        )
        .await;
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

/// `tidegate run` on `queue`, with short time limits so that faults show within seconds.
fn tidegate(queue: &str, database: &str, redis_url: &str, mongodb_uri: &str) -> Running {
    start(
        command(queue, database, redis_url, mongodb_uri)
            .env("TIDEGATE_WORKERS", "2")
            .env("TIDEGATE_BATCH_DOCS", "20")
            .env("TIDEGATE_RATE_FLOOR", "200")
            .env("TIDEGATE_LOCK_DURATION", "2s")
            .env("TIDEGATE_STALLED_INTERVAL", "500ms")
            .env("TIDEGATE_MONGODB_TIMEOUT", "2s")
            .env("TIDEGATE_MONGODB_OP_TIMEOUT", "1s")
            .env("TIDEGATE_BATCH_TIMEOUT", "4s"),
    )
}

fn command(queue: &str, database: &str, redis_url: &str, mongodb_uri: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    command
        .arg("run")
        .env("REDIS_URL", redis_url)
        .env("MONGODB_URI", mongodb_uri)
        .env("TIDEGATE_QUEUE", queue)
        .env("TIDEGATE_DATABASE", database)
        .env("TIDEGATE_HTTP_ADDR", "127.0.0.1:0")
        .env("TIDEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

fn start(command: &mut Command) -> Running {
    Running(command.spawn().expect("start tidegate"))
}

/// `n` upserts, each writing one document keyed by its job, retried every 200 ms for as long
/// as any fault here lasts.
async fn add_jobs(queue: &Queue, n: usize) {
    let opts = JobOptions {
        attempts: Some(100),
        backoff: Some(Backoff::Spec {
            kind: BackoffKind::Fixed,
            delay: 200,
            jitter: None,
        }),
        ..JobOptions::default()
    };
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            NewJob::new(
                "upsert",
                json!({"collection": "effects", "key": ["job"],
                       "document": {"job": format!("j{i}"), "n": i}}),
            )
            .with_opts(opts.clone())
        })
        .collect();
    queue.add_bulk(&jobs).await.expect("add");
}

/// Every job completed, once each: as many documents as jobs, one per job (counted on the
/// database directly, not through the proxy).
async fn assert_each_effect_once(database: &str, jobs: usize) {
    let store =
        tidegate::store::Store::connect(&common::mongodb_uri(), database, Default::default())
            .await
            .expect("mongo");
    let effects = store.database().collection::<Document>("effects");
    assert_eq!(
        effects.count_documents(doc! {}).await.expect("count"),
        jobs as u64
    );
    let distinct = effects.distinct("job", doc! {}).await.expect("distinct");
    assert_eq!(distinct.len(), jobs, "one effect per job");
    store.database().drop().await.expect("drop");
}

/// The database stops answering mid-run (connections open, replies never sent): no batch holds
/// its jobs past the batch timeout (4 s) plus a lock (2 s) and a margin; once it answers again,
/// every job completes, each effect once.
#[tokio::test]
async fn a_silent_database_releases_its_batches_and_the_work_finishes_when_it_answers() {
    const JOBS: usize = 600;
    let toxi = Toxiproxy::new();
    let proxy = common::unique("mongo");
    let listen = toxi.proxy(&proxy, &host_port(&common::mongodb_uri())).await;
    let queue_name = common::unique("faults_silent_db");
    let database = common::unique("tidegate_faults");
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue_name,
    );
    add_jobs(&q, JOBS).await;
    let _running = tidegate(
        &queue_name,
        &database,
        &common::redis_url(),
        &format!("mongodb://{listen}/?directConnection=true"),
    );
    common::eventually(
        "the first jobs to complete",
        Duration::from_secs(60),
        || async { (q.counts().await.expect("counts").completed >= 20).then_some(()) },
    )
    .await;

    toxi.silence(&proxy).await;
    // A batch may have started just before the silence: its jobs are given back within the
    // batch timeout, and none is taken for long after.
    let bound = Duration::from_secs(4 + 2 + 3);
    let silent = Instant::now();
    common::eventually(
        "no job left active while the database is silent",
        bound,
        || async { (q.counts().await.expect("counts").active == 0).then_some(()) },
    )
    .await;
    let released = silent.elapsed();
    // It stays so: batches that start meet the silence and give their jobs back in time.
    let mut longest_active = Duration::ZERO;
    let mut active_since: Option<Instant> = None;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        let active = q.counts().await.expect("counts").active;
        match (active > 0, active_since) {
            (true, None) => active_since = Some(Instant::now()),
            (false, Some(_)) => active_since = None,
            _ => {}
        }
        if let Some(since) = active_since {
            longest_active = longest_active.max(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        longest_active <= bound,
        "jobs stayed active {longest_active:?} while the database was silent"
    );
    let before = q.counts().await.expect("counts");
    assert!(
        before.completed < JOBS as u64,
        "the silence came too late to test: {before:?}"
    );

    toxi.answer(&proxy).await;
    let answered = Instant::now();
    common::eventually("every job to complete", Duration::from_secs(90), || async {
        let c = q.counts().await.expect("counts");
        (c.completed == JOBS as u64 && c.active == 0).then_some(())
    })
    .await;
    let counts = q.counts().await.expect("counts");
    assert_eq!(counts.failed, 0, "{counts:?}");
    eprintln!(
        "silent database: active jobs released {released:?} after the silence (bound {bound:?}), longest active spell after it {longest_active:?}; the rest done {:?} after it answered",
        answered.elapsed()
    );
    assert_each_effect_once(&database, JOBS).await;
    toxi.delete(&proxy).await;
}

/// Redis goes away (connections closed, new ones refused) for 3 s and comes back with its data:
/// work resumes within 5 s, and every job completes once.
#[tokio::test]
async fn work_resumes_within_seconds_of_redis_coming_back() {
    const JOBS: usize = 1500;
    let toxi = Toxiproxy::new();
    let proxy = common::unique("redis");
    let listen = toxi.proxy(&proxy, &host_port(&common::redis_url())).await;
    let queue_name = common::unique("faults_redis_back");
    let database = common::unique("tidegate_faults");
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue_name,
    );
    add_jobs(&q, JOBS).await;
    let _running = tidegate(
        &queue_name,
        &database,
        &format!("redis://{listen}"),
        &common::mongodb_uri(),
    );
    common::eventually(
        "the first jobs to complete",
        Duration::from_secs(60),
        || async { (q.counts().await.expect("counts").completed >= 20).then_some(()) },
    )
    .await;

    toxi.set_enabled(&proxy, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself, not a wait for a condition
    let at_return = q.counts().await.expect("counts").completed;
    assert!(at_return < JOBS as u64, "the outage came too late to test");
    toxi.set_enabled(&proxy, true).await;
    let back = Instant::now();
    common::eventually(
        "a job to complete after Redis came back",
        Duration::from_secs(5),
        || async { (q.counts().await.expect("counts").completed > at_return).then_some(()) },
    )
    .await;
    let resumed = back.elapsed();
    common::eventually(
        "every job to complete",
        Duration::from_secs(120),
        || async {
            let c = q.counts().await.expect("counts");
            (c.completed == JOBS as u64 && c.active == 0).then_some(())
        },
    )
    .await;
    eprintln!("redis back: work resumed {resumed:?} after it returned (bound 5 s)");
    assert_eq!(q.counts().await.expect("counts").failed, 0);
    assert_each_effect_once(&database, JOBS).await;
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

/// FerretDB 1.x waits forever once ~100 update statements that match existing documents are in
/// flight on one database (issue 13: 300,000 upserts on 50 keys hung it within a minute, with
/// tidegate's four loops sending commands of 64). Two processes at the defaults (four loops,
/// batches of 500) on 50 keys: every job completes within 2 minutes.
#[tokio::test]
async fn upserts_on_few_keys_never_wedge_ferretdb() {
    const JOBS: usize = 8000;
    const KEYS: usize = 50;
    let store = tidegate::store::Store::connect(
        &common::mongodb_uri(),
        &common::unique("tidegate_faults"),
        Default::default(),
    )
    .await
    .expect("mongo");
    if store
        .limits()
        .await
        .expect("limits")
        .max_in_flight
        .is_none()
    {
        eprintln!("skipped: a FerretDB limit; MONGODB_URI points at another server");
        return;
    }
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
            .with_opts(JobOptions {
                attempts: Some(100),
                backoff: Some(Backoff::Spec {
                    kind: BackoffKind::Fixed,
                    delay: 200,
                    jitter: None,
                }),
                ..JobOptions::default()
            })
        })
        .collect();
    q.add_bulk(&jobs).await.expect("add");
    let processes: Vec<Running> = (0..2)
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
    common::eventually(
        "every job to complete",
        Duration::from_secs(120),
        || async {
            let c = q.counts().await.expect("counts");
            (c.completed == JOBS as u64 && c.active == 0).then_some(())
        },
    )
    .await;
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
