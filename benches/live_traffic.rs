//! The live-traffic benchmark: what a batch does to the service that shares its database.
//!
//! A service workload (lookups by an indexed field and small updates on its own collection,
//! Poisson arrivals, every operation's latency measured from its scheduled start, so a stalled
//! database cannot hide its queue) runs in this process while the real `tidegate` binary runs
//! the batch as a child process, as a user would run it. The database's CPU is read once a
//! second from /proc by `scripts/services cpu` (FerretDB 2 and PostgreSQL, the stand-in here)
//! or from `serverStatus` (a real MongoDB), and tidegate's pace from its own `/metrics`. Phases:
//!
//! - `alone`: the service alone (its latency is the reference);
//! - `naive`: the service beside the original script (every user at once);
//! - `paced`: the service beside tidegate, the same day;
//! - `trace`: tidegate alone on a larger day, then the service joins, turns heavy (more than
//!   the target on its own), and leaves, while tidegate goes on;
//! - `upserts` (not by default): the same trace on generic upsert jobs keyed by `_id`, as a
//!   BullMQ producer adds them (no read per batch: a cost per document). On the local
//!   FerretDB 2 an upsert costs ~20 µs of CPU: 600,000 of them drain at the default ceiling
//!   (20,000/s) in half a minute, under the target, before the service turns heavy; a trace
//!   at the target would need millions of jobs. It is for a database where writes cost more.
//! - `node-free`, `node-fixed`, `node-governed` (not by default; `scripts/bench-govern`): the
//!   same day worked by a team's own BullMQ workers (Node, `tests/interop/governed.mjs`: four
//!   processes, ten jobs at a time each; a job reads one user's events and upserts the score,
//!   as the seed's did), without a limiter (the seed's 800%), with the team's fixed one
//!   (`{ max: 5, duration: 1000 }`: measured for `LIVE_FIXED_SECS`, its day's wall time
//!   projected) and governed by `tidegate govern`, unchanged;
//! - `node-trace` (not by default): the trace with the Node workers governed, on a day of
//!   `LIVE_NODE_TRACE_USERS` (150,000).
//!
//! It writes `live.csv` (one row per second), `ops.csv` (one row per service operation),
//! `summary.md` and `live.svg` (CPU, pace and service p99 over time, phases marked) to
//! `LIVE_OUT`, and prints the summary. Every figure is a measurement; nothing asserts.
//!
//!     scripts/bench-live                    # starts the services, builds, runs this
//!     LIVE_PHASES=alone,trace scripts/bench-live
//!
//! Settings (environment), calibrated for the local FerretDB 2 on DocumentDB, where a service
//! operation (an indexed lookup, or an update by `_id`) costs ~0.5-1 ms of CPU and a user's
//! score ~0.1 ms: `LIVE_TARGET` (CPU %, default 50), `LIVE_USERS` (the naive/paced day, the
//! seed's 50,000), `LIVE_TRACE_USERS` (the trace's day, and the upserts trace's jobs: 600,000,
//! enough to outlast the trace at the target), `LIVE_SERVICE_RATE` (operations/s, 200: ~15%),
//! `LIVE_HEAVY_RATE` (1,500: over the target on its own), `LIVE_SERVICE_DOCS` (the service's
//! accounts, 6000), `LIVE_ALONE_SECS` (40), `LIVE_OUT`
//! (benches/results/live), `LIVE_READ_TARGET` (unset; e.g. `90ms`: tidegate holds the service's own
//! mean latency under it, read through Prometheus from the histogram the service publishes on
//! `LIVE_SERVICE_ADDR`, 127.0.0.1:9843). Any `TIDEGATE_*` setting exported is passed on to
//! tidegate unchanged; the benchmark itself sets only the target, a 1 s control interval and,
//! on FerretDB, the Prometheus CPU query (`DATABASE_CPU_QUERY` from `scripts/services env`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, IndexModel};
use plotters::prelude::*;
use tokio::sync::watch;

const DATE: &str = "2026-11-24";
const TICK: Duration = Duration::from_secs(1);
/// Window of the rolling service percentiles drawn and of the CPU mean judged.
const P99_WINDOW: Duration = Duration::from_secs(10);
const CPU_MEAN_SECS: usize = 5;
/// No service operation waits longer: past this it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// The service's own latency histogram, as a real service would publish it for Prometheus.
const SERVICE_LATENCY: &str = "live_service_operation_seconds";
/// Its mean over the last 5 s, as tidegate's read latency guard reads it (`LIVE_READ_TARGET`).
const SERVICE_LATENCY_QUERY: &str = "sum(rate(live_service_operation_seconds_sum[5s])) / sum(rate(live_service_operation_seconds_count[5s]))";

/// Documents the `upserts` trace's jobs update, over and over.
const COUNTERS: u64 = 1000;

/// Operations in flight at most; past this an arrival is dropped and counted failed.
const MAX_IN_FLIGHT: usize = 256;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn must_env(name: &str) -> Result<String, BoxError> {
    std::env::var(name)
        .map_err(|_| format!("{name} is not set: eval \"$(scripts/services env)\" first").into())
}

#[derive(Clone)]
struct Settings {
    target: f64,
    users: u64,
    trace_users: u64,
    service_rate: f64,
    heavy_rate: f64,
    service_docs: u64,
    alone: Duration,
    out: PathBuf,
    phases: Vec<String>,
    prometheus_url: Option<String>,
    ferretdb: bool,
    http_addr: String,
    /// The service's mean latency tidegate must keep it under (`LIVE_READ_TARGET`, e.g.
    /// `90ms`); unset: no read latency guard.
    read_target: Option<String>,
    tidegate: PathBuf,
    run_id: String,
    node_trace_users: u64,
    fixed: Duration,
}

/// One service operation.
#[derive(Clone, Copy)]
struct Op {
    /// Scheduled start, seconds since the benchmark began.
    at: f64,
    lookup: bool,
    latency: f64,
    ok: bool,
}

/// The service: its own collection in the phase's database, and a stream of operations whose
/// rate can change at any time (0 = the service is away).
struct Service {
    ops: Arc<Mutex<Vec<Op>>>,
    rate: watch::Sender<f64>,
    task: tokio::task::JoinHandle<()>,
}

fn account_id(n: u64) -> String {
    format!("a{n:07}")
}

async fn seed_service(db: &mongodb::Database, docs: u64) -> Result<(), BoxError> {
    let accounts: Collection<Document> = db.collection("service_accounts");
    accounts.drop().await?;
    let mut batch = Vec::new();
    for n in 0..docs {
        let id = account_id(n);
        batch.push(doc! { "_id": &id, "email": format!("{id}@example.com"), "visits": 0i64, "plan": "basic" });
        if batch.len() == 1000 {
            accounts.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        accounts.insert_many(batch).await?;
    }
    accounts
        .create_index(IndexModel::builder().keys(doc! { "email": 1 }).build())
        .await?;
    Ok(())
}

impl Service {
    fn start(client: &Client, database: &str, docs: u64, epoch: Instant) -> Self {
        let accounts: Collection<Document> =
            client.database(database).collection("service_accounts");
        let ops = Arc::new(Mutex::new(Vec::new()));
        let (rate, mut rate_rx) = watch::channel(0.0);
        let task = tokio::spawn({
            let ops = ops.clone();
            async move {
                let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
                let mut next = Instant::now();
                loop {
                    let rate = *rate_rx.borrow_and_update();
                    if rate <= 0.0 {
                        if rate_rx.changed().await.is_err() {
                            return;
                        }
                        next = Instant::now();
                        continue;
                    }
                    // Poisson arrivals: exponential gaps at the current rate.
                    let gap = -(1.0 - rand::random::<f64>()).ln() / rate;
                    next += Duration::from_secs_f64(gap);
                    tokio::select! {
                        () = tokio::time::sleep_until(next.into()) => {}
                        changed = rate_rx.changed() => {
                            if changed.is_err() { return; }
                            next = Instant::now();
                            continue;
                        }
                    }
                    let scheduled = next;
                    let at = (scheduled - epoch).as_secs_f64();
                    let lookup = rand::random::<f64>() < 0.8;
                    let account = account_id((rand::random::<f64>() * docs as f64) as u64);
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        push(
                            &ops,
                            Op {
                                at,
                                lookup,
                                latency: OP_TIMEOUT.as_secs_f64(),
                                ok: false,
                            },
                        );
                        continue;
                    };
                    let (accounts, ops) = (accounts.clone(), ops.clone());
                    tokio::spawn(async move {
                        let work = async {
                            if lookup {
                                accounts
                                    .find_one(doc! { "email": format!("{account}@example.com") })
                                    .await
                                    .map(|_| ())
                            } else {
                                accounts
                                    .update_one(
                                        doc! { "_id": &account },
                                        doc! { "$inc": { "visits": 1i64 }, "$set": { "seenAt": mongodb::bson::DateTime::now() } },
                                    )
                                    .await
                                    .map(|_| ())
                            }
                        };
                        let ok = matches!(tokio::time::timeout(OP_TIMEOUT, work).await, Ok(Ok(())));
                        let latency = scheduled.elapsed().as_secs_f64();
                        metrics::histogram!(SERVICE_LATENCY).record(latency);
                        push(
                            &ops,
                            Op {
                                at,
                                lookup,
                                latency,
                                ok,
                            },
                        );
                        drop(permit);
                    });
                }
            }
        });
        Self { ops, rate, task }
    }

    fn set_rate(&self, rate: f64) {
        self.rate.send_replace(rate);
    }

    fn stop(self) -> Vec<Op> {
        self.task.abort();
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// Publishes the service's metrics on `addr` for the local Prometheus (`scripts/services`
/// scrapes it as job `service`).
async fn serve_metrics(addr: &str) -> Result<(), BoxError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])?
        .install_recorder()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

fn push(ops: &Mutex<Vec<Op>>, op: Op) {
    if let Ok(mut ops) = ops.lock() {
        ops.push(op);
    }
}

/// The database's CPU, percent of one core, per call since the previous call.
enum CpuMeter {
    /// `scripts/services cpu`: the local database's processes (PostgreSQL's and FerretDB's),
    /// read from /proc, independently of the Prometheus series tidegate's controller reads.
    Services { last: Option<(Instant, f64)> },
    ServerStatus {
        client: Client,
        last: Option<(Instant, f64)>,
    },
}

impl CpuMeter {
    async fn read(&mut self) -> Option<f64> {
        let now = Instant::now();
        let (seconds, last) = match self {
            CpuMeter::Services { last } => (services_cpu().await?, last),
            CpuMeter::ServerStatus { client, last } => {
                let reply = client
                    .database("admin")
                    .run_command(doc! { "serverStatus": 1, "extra_info": 1 })
                    .await
                    .ok()?;
                let info = reply.get_document("extra_info").ok()?;
                let us = |f: &str| {
                    info.get(f)
                        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|x| x as i64)))
                };
                (
                    ((us("user_time_us")? + us("system_time_us")?) as f64) / 1e6,
                    last,
                )
            }
        };
        let value =
            last.map(|(then, before)| (seconds - before) / (now - then).as_secs_f64() * 100.0);
        *last = Some((now, seconds));
        value
    }
}

fn cpu_meter(settings: &Settings, client: &Client) -> CpuMeter {
    if settings.ferretdb {
        CpuMeter::Services { last: None }
    } else {
        CpuMeter::ServerStatus {
            client: client.clone(),
            last: None,
        }
    }
}

/// The local database's CPU time so far, in seconds (`scripts/services cpu`).
async fn services_cpu() -> Option<f64> {
    let out = tokio::process::Command::new("scripts/services")
        .arg("cpu")
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// What tidegate's `/metrics` says right now.
#[derive(Debug, Default, Clone)]
struct Pace {
    rate: Option<f64>,
    limiter: Option<String>,
    completed: Option<f64>,
    batch: Option<f64>,
    /// Batches taken so far (a counter).
    batches: Option<f64>,
}

async fn scrape(http: &reqwest::Client, addr: &str) -> Pace {
    let Ok(response) = http.get(format!("http://{addr}/metrics")).send().await else {
        return Pace::default();
    };
    let Ok(body) = response.text().await else {
        return Pace::default();
    };
    let mut pace = Pace::default();
    for line in body.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name == r#"tidegate_rate_documents_per_second{scope="total"}"# {
            pace.rate = Some(value);
        } else if name.starts_with("tidegate_limiting_signal{") && value == 1.0 {
            pace.limiter = name.split('"').nth(1).map(str::to_owned);
        } else if name.starts_with("tidegate_jobs_completed_total{") {
            *pace.completed.get_or_insert(0.0) += value;
        } else if name.starts_with("tidegate_batch_target_documents") {
            pace.batch = Some(value);
        } else if name.starts_with("tidegate_batch_jobs_count{")
            || name.starts_with("tidegate_governed_jobs_started_total{")
        {
            // A governed queue's jobs are its batches (of one).
            *pace.batches.get_or_insert(0.0) += value;
        } else if name.starts_with("tidegate_governed_limit_jobs_per_second{") {
            pace.rate = Some(value);
        }
    }
    pace
}

/// One second of the benchmark.
#[derive(Clone)]
struct Row {
    t: f64,
    phase: String,
    window: String,
    cpu: Option<f64>,
    service_rate: f64,
    pace: Pace,
    ops: usize,
    p50: Option<f64>,
    p99: Option<f64>,
}

fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

struct Bench {
    settings: Settings,
    client: Client,
    http: reqwest::Client,
    meter: CpuMeter,
    epoch: Instant,
    rows: Vec<Row>,
    ops: Vec<(String, Op)>,
    /// Phase name → (start, end) in seconds, and marks within phases (time, label).
    spans: Vec<(String, f64, f64)>,
    marks: Vec<(f64, String)>,
    /// Wall time of each phase's batch.
    walls: Vec<(String, Duration)>,
    notes: Vec<String>,
}

/// A batch process started for a phase.
struct Child {
    child: tokio::process::Child,
    started: Instant,
}

impl Child {
    /// SIGTERM, as a deploy stops it (it finishes or hands back what it holds), and up to
    /// `grace` for it to exit.
    async fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(grace, self.child.wait()).await;
    }
}

impl Bench {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn database(&self, phase: &str) -> String {
        format!("live_{}_{phase}", self.settings.run_id)
    }

    /// The environment a `tidegate` child gets for `phase`; it logs to `<log>.log`.
    fn tidegate(
        &self,
        phase: &str,
        log: &str,
        args: &[&str],
    ) -> Result<tokio::process::Command, BoxError> {
        let s = &self.settings;
        let log = std::fs::File::create(s.out.join(format!("{log}.log")))?;
        let mut cmd = tokio::process::Command::new(&s.tidegate);
        cmd.args(args)
            .env("TIDEGATE_APPS", "upsert,score")
            .env("TIDEGATE_DATABASE", self.database(phase))
            .env("TIDEGATE_QUEUE", format!("live_{}_{phase}", s.run_id))
            .env("TIDEGATE_TARGET_CPU", s.target.to_string())
            .env("TIDEGATE_CONTROL_INTERVAL", "1s")
            .env("TIDEGATE_HTTP_ADDR", &s.http_addr)
            .env(
                "TIDEGATE_LOG",
                std::env::var("TIDEGATE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let (Some(target), Some(url)) = (&s.read_target, &s.prometheus_url) {
            cmd.env("TIDEGATE_TARGET_READ_LATENCY", target)
                .env("TIDEGATE_PROMETHEUS_URL", url)
                .env(
                    "TIDEGATE_PROMETHEUS_READ_LATENCY_QUERY",
                    SERVICE_LATENCY_QUERY,
                );
        }
        if s.ferretdb
            && let Some(url) = &s.prometheus_url
        {
            cmd.env("TIDEGATE_PROMETHEUS_URL", url);
            if std::env::var("TIDEGATE_PROMETHEUS_CPU_QUERY").is_err()
                && let Ok(cpu) = std::env::var("DATABASE_CPU_QUERY")
            {
                cmd.env("TIDEGATE_PROMETHEUS_CPU_QUERY", cpu);
            }
        }
        Ok(cmd)
    }

    async fn seed_day(&self, phase: &str, users: u64) -> Result<(), BoxError> {
        let status = self
            .tidegate(
                phase,
                &format!("{phase}-seed"),
                &["seed-data", "--users", &users.to_string(), "--date", DATE],
            )?
            .status()
            .await?;
        if !status.success() {
            return Err(format!("seeding {phase} failed ({status}); see {phase}-seed.log").into());
        }
        Ok(())
    }

    async fn spawn(&self, phase: &str, args: &[&str]) -> Result<Child, BoxError> {
        Ok(Child {
            child: self.tidegate(phase, phase, args)?.spawn()?,
            started: Instant::now(),
        })
    }

    /// Samples one second: the database's CPU and tidegate's pace. The service's latency is
    /// added per second once the phase is over ([`Bench::end`]), from every operation's final
    /// latency: one still in flight now may be the slowest of all.
    async fn sample(&mut self, phase: &str, window: &str, service: &Service) {
        let cpu = self.meter.read().await;
        let pace = scrape(&self.http, &self.settings.http_addr).await;
        self.rows.push(Row {
            t: self.now(),
            phase: phase.to_owned(),
            window: window.to_owned(),
            cpu,
            service_rate: *service.rate.borrow(),
            pace,
            ops: 0,
            p50: None,
            p99: None,
        });
    }

    /// Samples every second until `until` says stop (or `limit` passes); returns the seconds.
    async fn run_for(
        &mut self,
        phase: &str,
        window: &str,
        service: &Service,
        limit: Duration,
        child: Option<&mut Child>,
    ) -> bool {
        let started = Instant::now();
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut child = child;
        while started.elapsed() < limit {
            every.tick().await;
            self.sample(phase, window, service).await;
            if let Some(c) = child.as_deref_mut()
                && let Ok(Some(_)) = c.child.try_wait()
            {
                return true;
            }
        }
        false
    }

    fn begin(&mut self, phase: &str) -> f64 {
        let t = self.now();
        self.spans.push((phase.to_owned(), t, t));
        t
    }

    fn end(&mut self, service: Service) {
        let t = self.now();
        if let Some(span) = self.spans.last_mut() {
            span.2 = t;
        }
        let phase = self.spans.last().map(|s| s.0.clone()).unwrap_or_default();
        let ops = service.stop();
        for row in self.rows.iter_mut().filter(|r| r.phase == phase) {
            let mut recent: Vec<f64> = ops
                .iter()
                .filter(|o| o.at >= row.t - P99_WINDOW.as_secs_f64() && o.at < row.t)
                .map(|o| o.latency)
                .collect();
            row.ops = ops
                .iter()
                .filter(|o| o.at >= row.t - TICK.as_secs_f64() && o.at < row.t)
                .count();
            row.p50 = percentile(&mut recent, 0.50);
            row.p99 = percentile(&mut recent, 0.99);
        }
        self.ops.extend(ops.into_iter().map(|o| (phase.clone(), o)));
    }

    async fn prepare(&self, phase: &str, users: Option<u64>) -> Result<(), BoxError> {
        let db = self.client.database(&self.database(phase));
        db.drop().await?;
        if let Some(users) = users {
            self.seed_day(phase, users).await?;
        }
        seed_service(&db, self.settings.service_docs).await?;
        // Let the database settle after seeding, so each phase starts from its idle load.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    }

    async fn alone(&mut self) -> Result<(), BoxError> {
        self.prepare("alone", None).await?;
        let service = Service::start(
            &self.client,
            &self.database("alone"),
            self.settings.service_docs,
            self.epoch,
        );
        self.meter.read().await;
        self.begin("alone");
        service.set_rate(self.settings.service_rate);
        let limit = self.settings.alone;
        self.run_for("alone", "service", &service, limit, None)
            .await;
        // The heavy service alone: what the database does with no batch at all, for the
        // trace's heavy window to be compared with.
        service.set_rate(self.settings.heavy_rate);
        self.marks.push((self.now(), "service heavy".into()));
        self.run_for(
            "alone",
            "service heavy",
            &service,
            Duration::from_secs(30),
            None,
        )
        .await;
        self.end(service);
        Ok(())
    }

    /// Seeds 1,000 counters and adds `LIVE_TRACE_USERS` upsert jobs updating them, as a BullMQ
    /// producer would. A fixed set of documents keeps the cost per document steady.
    async fn enqueue_upserts(&self, phase: &str) -> Result<(), BoxError> {
        let counters: Collection<Document> = self
            .client
            .database(&self.database(phase))
            .collection("counters");
        counters
            .insert_many((0..COUNTERS).map(|n| doc! { "_id": format!("k{n}"), "n": 0i64 }))
            .await?;
        let redis = tidegate::queue::connect(&must_env("REDIS_URL")?).await?;
        let queue = tidegate::queue::Queue::new(
            redis,
            "bull",
            &format!("live_{}_{phase}", self.settings.run_id),
        );
        let jobs = self.settings.trace_users;
        for chunk in (0..jobs).collect::<Vec<_>>().chunks(10_000) {
            let batch: Vec<tidegate::queue::NewJob> = chunk
                .iter()
                .map(|n| {
                    tidegate::queue::NewJob::new(
                        "upsert",
                        serde_json::json!({"collection": "counters", "key": ["_id"],
                            "document": {"_id": format!("k{}", n % COUNTERS), "n": n}}),
                    )
                })
                .collect();
            queue.add_bulk(&batch).await?;
        }
        Ok(())
    }

    /// One job per user of the phase's day, as the team's producer adds them: the user and
    /// the day's bounds (UTC, as seeded), for `governed.mjs`'s `score` work.
    async fn enqueue_day(&self, phase: &str) -> Result<tidegate::queue::Queue, BoxError> {
        let store = tidegate::store::Store::connect(
            &must_env("MONGODB_URI")?,
            &self.database(phase),
            Default::default(),
        )
        .await?;
        let date: chrono::NaiveDate = DATE.parse()?;
        let from = date.and_hms_opt(0, 0, 0).ok_or("date")?.and_utc();
        let to = from + chrono::Duration::days(1);
        let users: Vec<String> = futures::TryStreamExt::try_collect(
            tidegate_score::targets(&store, date, chrono_tz::UTC, Duration::from_secs(600)).await?,
        )
        .await?;
        let redis = tidegate::queue::connect(&must_env("REDIS_URL")?).await?;
        let queue = tidegate::queue::Queue::new(
            redis,
            "bull",
            &format!("live_{}_{}", self.settings.run_id, phase.replace('-', "_")),
        );
        for chunk in users.chunks(10_000) {
            let jobs: Vec<tidegate::queue::NewJob> = chunk
                .iter()
                .map(|user| {
                    tidegate::queue::NewJob::new(
                        "score",
                        serde_json::json!({"userId": user, "date": DATE,
                            "from": from.timestamp_millis(), "to": to.timestamp_millis()}),
                    )
                })
                .collect();
            queue.add_bulk(&jobs).await?;
        }
        Ok(queue)
    }

    /// The team's workers: `NODE_WORKERS` (4) Node processes of `governed.mjs`, ten jobs at a
    /// time each, on `queue`, with their own `limiter` if given; ready when returned, killed
    /// when dropped.
    async fn node_workers(
        &self,
        phase: &str,
        queue: &str,
        limiter: Option<&str>,
    ) -> Result<Vec<tokio::process::Child>, BoxError> {
        let mut workers = Vec::new();
        for n in 0..env_or("NODE_WORKERS", 4) {
            let log =
                std::fs::File::create(self.settings.out.join(format!("{phase}-node-{n}.log")))?;
            let mut command = tokio::process::Command::new("node");
            command
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
                .args(["governed.mjs", queue, "10", "score"])
                .env("REDIS_URL", must_env("REDIS_URL")?)
                .env("MONGODB_URI", must_env("MONGODB_URI")?)
                .env("SCORE_DATABASE", self.database(phase))
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            if let Some(limiter) = limiter {
                command.env("LIMITER", limiter);
            }
            let mut child = command.spawn()?;
            let stdout = child.stdout.take().ok_or("node's stdout")?;
            let mut line = String::new();
            tokio::time::timeout(
                Duration::from_secs(30),
                tokio::io::AsyncBufReadExt::read_line(
                    &mut tokio::io::BufReader::new(stdout),
                    &mut line,
                ),
            )
            .await??;
            if line.trim() != "ready" {
                return Err(format!(
                    "{phase}: a Node worker did not start; see {phase}-node-{n}.log"
                )
                .into());
            }
            workers.push(child);
        }
        Ok(workers)
    }

    /// The day worked by the team's Node workers beside the service: unlimited, with their
    /// fixed limiter, or governed by `tidegate govern`.
    async fn node(&mut self, phase: &str) -> Result<(), BoxError> {
        self.prepare(phase, Some(self.settings.users)).await?;
        let queue = self.enqueue_day(phase).await?;
        let jobs = queue.counts().await?.waiting;
        let service = self.service_first(phase).await;
        let mut governor = if phase == "node-governed" {
            let mut command = self.tidegate(phase, phase, &["govern"])?;
            command.env("TIDEGATE_GOVERN", queue.name());
            Some(Child {
                child: command.spawn()?,
                started: Instant::now(),
            })
        } else {
            None
        };
        let limiter = (phase == "node-fixed").then_some("5/1000");
        let workers = self.node_workers(phase, queue.name(), limiter).await?;
        let started = Instant::now();
        self.marks.push((self.now(), format!("{phase} starts")));
        let limit = if phase == "node-fixed" {
            self.settings.fixed
        } else {
            Duration::from_secs(1800)
        };
        let mut drained = false;
        while started.elapsed() < limit {
            self.run_for(phase, "batch", &service, TICK, governor.as_mut())
                .await;
            let counts = queue.counts().await?;
            if counts.waiting + counts.active + counts.delayed == 0 {
                drained = true;
                break;
            }
        }
        let wall = started.elapsed();
        let left = queue.counts().await?;
        for mut worker in workers {
            let _ = worker.kill().await;
        }
        if let Some(governor) = &mut governor {
            governor.terminate(Duration::from_secs(30)).await;
        }
        self.marks.push((self.now(), format!("{phase} ends")));
        self.end(service);
        let failed = left.failed;
        if failed > 0 {
            self.notes.push(format!(
                "{phase}: {failed} jobs failed; see {phase}-node-*.log"
            ));
        }
        if drained {
            self.walls.push((phase.to_owned(), wall));
        } else {
            let done = jobs.saturating_sub(left.waiting + left.active + left.delayed);
            let rate = done as f64 / wall.as_secs_f64();
            self.notes.push(format!(
                "{phase}: {done} of {jobs} jobs in {:.0} s ({rate:.1}/s): the day would take {:.0} s",
                wall.as_secs_f64(),
                jobs as f64 / rate.max(1e-9)
            ));
        }
        Ok(())
    }

    /// Begins `phase` with the service at its rate, alone for five seconds, so that the
    /// batch's start shows against it.
    async fn service_first(&mut self, phase: &str) -> Service {
        let service = Service::start(
            &self.client,
            &self.database(phase),
            self.settings.service_docs,
            self.epoch,
        );
        self.meter.read().await;
        self.begin(phase);
        service.set_rate(self.settings.service_rate);
        self.run_for(phase, "service", &service, Duration::from_secs(5), None)
            .await;
        service
    }

    /// The service beside a batch of one day (`naive` or `paced`), until the batch ends.
    async fn beside(&mut self, phase: &str) -> Result<(), BoxError> {
        self.prepare(phase, Some(self.settings.users)).await?;
        let service = self.service_first(phase).await;
        let args: &[&str] = if phase == "naive" {
            &["naive", "--date", DATE]
        } else {
            &["rerun", "--date", DATE]
        };
        let mut child = self.spawn(phase, args).await?;
        self.marks.push((self.now(), format!("{phase} starts")));
        let ended = self
            .run_for(
                phase,
                "batch",
                &service,
                Duration::from_secs(1800),
                Some(&mut child),
            )
            .await;
        let wall = child.started.elapsed();
        if !ended {
            return Err(format!("{phase}: the batch did not end within 30 minutes").into());
        }
        let status = child.child.wait().await?;
        self.marks.push((self.now(), format!("{phase} ends")));
        self.end(service);
        if !status.success() {
            return Err(format!("{phase}: tidegate exited {status}; see {phase}.log").into());
        }
        self.walls.push((phase.to_owned(), wall));
        Ok(())
    }

    /// tidegate alone on a larger day; the service joins, turns heavy, leaves.
    /// The trace on one shape of batch: `trace` is the score day (each batch reads its users'
    /// events, then upserts their scores), `upserts` generic upsert jobs keyed by `_id`, as a
    /// BullMQ producer adds them (a cost per document).
    async fn trace(&mut self, phase: &str) -> Result<(), BoxError> {
        let upserts = phase == "upserts";
        let node = phase == "node-trace";
        let day = if upserts {
            None
        } else if node {
            Some(self.settings.node_trace_users)
        } else {
            Some(self.settings.trace_users)
        };
        self.prepare(phase, day).await?;
        if upserts {
            self.enqueue_upserts(phase).await?;
        }
        let queue = if node {
            Some(self.enqueue_day(phase).await?)
        } else {
            None
        };
        let service = Service::start(
            &self.client,
            &self.database(phase),
            self.settings.service_docs,
            self.epoch,
        );
        self.meter.read().await;
        self.begin(phase);
        let args: &[&str] = if node {
            &["govern"]
        } else if upserts {
            &["run"]
        } else {
            &["rerun", "--date", DATE]
        };
        let mut command = self.tidegate(phase, phase, args)?;
        if let Some(queue) = &queue {
            command.env("TIDEGATE_GOVERN", queue.name());
        }
        let mut child = Child {
            child: command.spawn()?,
            started: Instant::now(),
        };
        let _workers = match &queue {
            Some(queue) => Some(self.node_workers(phase, queue.name(), None).await?),
            None => None,
        };
        // Planning a large day is itself load (an aggregation over every event of the day, which
        // the controller rightly counts as live load): the trace starts once jobs complete.
        self.marks.push((self.now(), "planning".into()));
        let planned = Instant::now();
        loop {
            if self
                .run_for(phase, "planning", &service, TICK, Some(&mut child))
                .await
            {
                return Err(
                    format!("{phase}: tidegate ended while planning; see {phase}.log").into(),
                );
            }
            // A governed queue's jobs are counted as they start, not as they complete.
            let begun = self.rows.last().is_some_and(|r| {
                r.pace.completed.unwrap_or(0.0) > 0.0
                    || (node && r.pace.batches.unwrap_or(0.0) > 0.0)
            });
            if begun {
                break;
            }
            if planned.elapsed() > Duration::from_secs(600) {
                return Err(format!(
                    "{phase}: no job completed within 10 minutes; see {phase}.log"
                )
                .into());
            }
        }
        let s = self.settings.clone();
        let steps: [(&str, f64, u64); 4] = [
            ("tidegate alone", 0.0, 40),
            ("service joins", s.service_rate, 60),
            ("service heavy", s.heavy_rate, 40),
            ("service leaves", 0.0, 40),
        ];
        let mut ended = false;
        for (window, rate, secs) in steps {
            service.set_rate(rate);
            self.marks.push((self.now(), window.to_owned()));
            ended = self
                .run_for(
                    phase,
                    window,
                    &service,
                    Duration::from_secs(secs),
                    Some(&mut child),
                )
                .await;
            if ended {
                break;
            }
        }
        if ended {
            self.notes.push(format!(
                "{phase}: the work ended before the trace did; use a larger LIVE_TRACE_USERS"
            ));
        }
        // Ended by itself, it exits at once; otherwise it is stopped as a deploy stops it.
        child.terminate(Duration::from_secs(60)).await;
        self.end(service);
        Ok(())
    }
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes --bench; this benchmark takes its settings from the environment.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let mongodb_uri = must_env("MONGODB_URI")?;
    let mut options = ClientOptions::parse(&mongodb_uri).await?;
    // The service's own connections: eight clients, as a small app server would hold.
    options.max_pool_size = Some(8);
    options.server_selection_timeout = Some(Duration::from_secs(10));
    options.connect_timeout = Some(Duration::from_secs(10));
    let client = Client::with_options(options)?;
    let build = client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await?;
    // The local database (`scripts/services`): its CPU is read from /proc and, by tidegate,
    // through Prometheus; another server reports its own in serverStatus.
    let ferretdb = (build.contains_key("ferretdb") || build.contains_key("ferretdbFeatures"))
        && std::env::var("DATABASE_CPU_QUERY").is_ok();
    let phases = std::env::var("LIVE_PHASES").unwrap_or_else(|_| "alone,naive,paced,trace".into());
    let settings = Settings {
        target: env_or("LIVE_TARGET", 50.0),
        users: env_or("LIVE_USERS", 50_000),
        trace_users: env_or("LIVE_TRACE_USERS", 600_000),
        service_rate: env_or("LIVE_SERVICE_RATE", 200.0),
        heavy_rate: env_or("LIVE_HEAVY_RATE", 1500.0),
        service_docs: env_or("LIVE_SERVICE_DOCS", 6000),
        alone: Duration::from_secs(env_or("LIVE_ALONE_SECS", 40)),
        out: PathBuf::from(
            std::env::var("LIVE_OUT").unwrap_or_else(|_| "benches/results/live".into()),
        ),
        phases: phases
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        prometheus_url: std::env::var("PROMETHEUS_URL").ok(),
        ferretdb,
        http_addr: std::env::var("TIDEGATE_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:9840".into()),
        read_target: std::env::var("LIVE_READ_TARGET")
            .ok()
            .filter(|v| !v.is_empty()),
        tidegate: PathBuf::from(env!("CARGO_BIN_EXE_tidegate")),
        run_id: format!("{}", std::process::id()),
        node_trace_users: env_or("LIVE_NODE_TRACE_USERS", 150_000),
        fixed: Duration::from_secs(env_or("LIVE_FIXED_SECS", 60)),
    };
    std::fs::create_dir_all(&settings.out)?;
    let service_addr =
        std::env::var("LIVE_SERVICE_ADDR").unwrap_or_else(|_| "127.0.0.1:9843".into());
    serve_metrics(&service_addr).await?;
    let meter = cpu_meter(&settings, &client);
    let mut bench = Bench {
        settings: settings.clone(),
        client,
        http: reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()?,
        meter,
        epoch: Instant::now(),
        rows: Vec::new(),
        ops: Vec::new(),
        spans: Vec::new(),
        marks: Vec::new(),
        walls: Vec::new(),
        notes: Vec::new(),
    };
    for phase in &settings.phases {
        eprintln!("live: phase {phase}");
        match phase.as_str() {
            "alone" => bench.alone().await?,
            "naive" | "paced" => bench.beside(phase).await?,
            "trace" | "upserts" => bench.trace(phase).await?,
            "node-free" | "node-fixed" | "node-governed" => bench.node(phase).await?,
            "node-trace" => bench.trace(phase).await?,
            other => {
                return Err(format!(
                    "LIVE_PHASES: unknown phase {other:?} (accepted: alone, naive, paced, trace, upserts, node-free, node-fixed, node-governed, node-trace)"
                )
                .into());
            }
        }
        // Each phase's database goes once measured: the next phase starts on a database that
        // holds only its own data.
        let _ = bench.client.database(&bench.database(phase)).drop().await;
    }
    let summary = summarise(&bench);
    print!("{summary}");
    write_outputs(&bench, &summary)?;
    Ok(())
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn fmt(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.0}{unit}"))
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.0} ms", v * 1e3))
}

/// Rows of `phase` (and of `window`, when given).
fn rows<'a>(bench: &'a Bench, phase: &str, window: Option<&str>) -> Vec<&'a Row> {
    bench
        .rows
        .iter()
        .filter(|r| r.phase == phase && window.is_none_or(|w| r.window == w))
        .collect()
}

/// Service latencies of operations scheduled within [from, to).
fn latencies(bench: &Bench, from: f64, to: f64) -> Vec<f64> {
    bench
        .ops
        .iter()
        .filter(|(_, o)| o.at >= from && o.at < to)
        .map(|(_, o)| o.latency)
        .collect()
}

fn span_of(bench: &Bench, phase: &str, window: Option<&str>) -> Option<(f64, f64)> {
    let times: Vec<f64> = rows(bench, phase, window).iter().map(|r| r.t).collect();
    Some((*times.first()? - 1.0, *times.last()?))
}

/// The CPU's trailing mean over `CPU_MEAN_SECS`, one per row of `rows`.
fn smoothed(rows: &[&Row]) -> Vec<Option<f64>> {
    let mut window: VecDeque<f64> = VecDeque::new();
    rows.iter()
        .map(|r| {
            if let Some(c) = r.cpu {
                window.push_back(c);
            }
            while window.len() > CPU_MEAN_SECS {
                window.pop_front();
            }
            (window.len() == CPU_MEAN_SECS)
                .then(|| window.iter().sum::<f64>() / CPU_MEAN_SECS as f64)
        })
        .collect()
}

fn summarise(bench: &Bench) -> String {
    let target = bench.settings.target;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Live traffic: target {target:.0}% CPU, service {} ops/s ({} heavy), day {} users (trace {})\n",
        bench.settings.service_rate,
        bench.settings.heavy_rate,
        bench.settings.users,
        bench.settings.trace_users
    );
    let _ = writeln!(
        out,
        "| phase | window | seconds | DB CPU mean | DB CPU median | service p50 | service p99 | p99 / alone | failed ops |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let alone_p99 = span_of(bench, "alone", Some("service"))
        .and_then(|(a, b)| percentile(&mut latencies(bench, a, b), 0.99));
    let mut line = |phase: &str, window: Option<&str>| {
        let Some((from, to)) = span_of(bench, phase, window) else {
            return;
        };
        let cpus: Vec<f64> = rows(bench, phase, window)
            .iter()
            .filter_map(|r| r.cpu)
            .collect();
        let mut lat = latencies(bench, from, to);
        let failed = bench
            .ops
            .iter()
            .filter(|(_, o)| o.at >= from && o.at < to && !o.ok)
            .count();
        let p99 = percentile(&mut lat, 0.99);
        let _ = writeln!(
            out,
            "| {phase} | {} | {:.0} | {} | {} | {} | {} | {} | {failed} |",
            window.unwrap_or("all"),
            to - from,
            fmt(mean(&cpus), "%"),
            fmt(percentile(&mut cpus.clone(), 0.5), "%"),
            ms(percentile(&mut lat, 0.5)),
            ms(p99),
            match (p99, alone_p99) {
                (Some(p), Some(a)) if a > 0.0 && !lat.is_empty() => format!("{:.2}×", p / a),
                _ => "-".into(),
            },
        );
    };
    for phase in &bench.settings.phases {
        match phase.as_str() {
            "alone" => {
                line("alone", Some("service"));
                line("alone", Some("service heavy"));
            }
            "naive" | "paced" | "node-free" | "node-fixed" | "node-governed" => {
                line(phase, Some("batch"))
            }
            "trace" | "upserts" | "node-trace" => {
                for w in [
                    "planning",
                    "tidegate alone",
                    "service joins",
                    "service heavy",
                    "service leaves",
                ] {
                    line(phase, Some(w));
                }
            }
            _ => {}
        }
    }
    let _ = writeln!(out);
    let wall = |p: &str| {
        bench
            .walls
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, w)| w.as_secs_f64())
    };
    if let (Some(naive), Some(paced)) = (wall("naive"), wall("paced")) {
        let _ = writeln!(
            out,
            "- day of {} users: naive {naive:.1} s, tidegate {paced:.1} s ({:.1}× faster)",
            bench.settings.users,
            naive / paced
        );
    } else {
        for p in ["naive", "paced"] {
            if let Some(w) = wall(p) {
                let _ = writeln!(out, "- day of {} users: {p} {w:.1} s", bench.settings.users);
            }
        }
    }
    for p in ["node-free", "node-fixed", "node-governed"] {
        if let Some(w) = wall(p) {
            let _ = writeln!(
                out,
                "- day of {} users by the team's Node workers: {p} {w:.1} s",
                bench.settings.users
            );
        }
    }
    for phase in ["trace", "upserts", "node-trace"] {
        if bench.settings.phases.iter().any(|p| p == phase) {
            trace_summary(bench, phase, &mut out);
        }
    }
    for note in &bench.notes {
        let _ = writeln!(out, "- NOTE: {note}");
    }
    out
}

/// The trace's judgements, as the controller's virtual-time tests judge them: after the
/// service joins, the intervals until the 5-s mean CPU is back within ±20% of the target (once
/// the join pushed it out) and the share of 5-s means within ±20% from the tenth interval on,
/// and the window's mean; while the service alone exceeds the target, the batches started
/// after the tenth interval and the database's CPU against the heavy service alone; after it
/// leaves, the overshoot (the 90th percentile of 5-s means, and the highest) and how soon
/// batches resume.
fn trace_summary(bench: &Bench, phase: &str, out: &mut String) {
    let target = bench.settings.target;
    let all = rows(bench, phase, None);
    let _ = writeln!(out, "\n{phase}:");
    let smooth = smoothed(&all);
    let window = |w: &str| -> Vec<(usize, &Row)> {
        all.iter()
            .enumerate()
            .filter(|(_, r)| r.window == w)
            .map(|(i, r)| (i, *r))
            .collect()
    };
    let within = |i: &usize| smooth[*i].is_some_and(|c| (c - target).abs() <= 0.2 * target);
    let cpu_mean =
        |rs: &[(usize, &Row)]| mean(&rs.iter().filter_map(|(_, r)| r.cpu).collect::<Vec<_>>());
    let joins = window("service joins");
    let idx: Vec<usize> = joins.iter().map(|(i, _)| *i).collect();
    let settled = match idx.iter().position(|i| !within(i)) {
        None => Some(0),
        Some(out) => idx[out..].iter().position(within).map(|back| out + back),
    };
    let late = &idx[10.min(idx.len())..];
    let held = late.iter().filter(|i| within(i)).count() as f64 / late.len().max(1) as f64;
    let join_cpu = cpu_mean(&joins);
    let _ = writeln!(
        out,
        "- service joins: back within ±20% of {target:.0}% (5-s mean) after {} intervals; {:.0}% of 5-s means within ±20% from the 10th on; mean {} ({})",
        settled.map_or_else(|| "never".into(), |s| s.to_string()),
        held * 100.0,
        fmt(join_cpu, "%"),
        join_cpu.map_or_else(
            || "-".into(),
            |c| format!("{:+.0}% of target", (c / target - 1.0) * 100.0)
        ),
    );
    let heavy = window("service heavy");
    let heavy_late = &heavy[10.min(heavy.len())..];
    let counter = |rs: &[(usize, &Row)], f: &dyn Fn(&Row) -> Option<f64>| match (
        rs.first().and_then(|(_, r)| f(r)),
        rs.last().and_then(|(_, r)| f(r)),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let alone_heavy = rows(bench, "alone", Some("service heavy"));
    let alone_heavy_cpu = mean(&alone_heavy.iter().filter_map(|r| r.cpu).collect::<Vec<_>>());
    let heavy_cpu = cpu_mean(heavy_late);
    let _ = writeln!(
        out,
        "- service heavy: from the 10th interval on, tidegate started {} batches and completed {} jobs; DB CPU mean {} against {} for the heavy service alone ({})",
        counter(heavy_late, &|r| r.pace.batches).map_or_else(|| "-".into(), |n| format!("{n:.0}")),
        counter(heavy_late, &|r| r.pace.completed)
            .map_or_else(|| "-".into(), |n| format!("{n:.0}")),
        fmt(heavy_cpu, "%"),
        fmt(alone_heavy_cpu, "%"),
        match (heavy_cpu, alone_heavy_cpu) {
            (Some(h), Some(a)) => format!("{:+.0} points", h - a),
            _ => "-".into(),
        },
    );
    let leaves = window("service leaves");
    let mut means: Vec<f64> = leaves.iter().filter_map(|(i, _)| smooth[*i]).collect();
    let p90 = percentile(&mut means, 0.9);
    let peak = means.last().copied();
    let resumed = leaves.iter().position(|(_, r)| {
        r.pace
            .batches
            .zip(leaves.first().and_then(|(_, f)| f.pace.batches))
            .is_some_and(|(n, first)| n > first)
    });
    let _ = writeln!(
        out,
        "- service leaves: overshoot (90th percentile of 5-s means) {} ({}), highest {}; mean {}; batches resume after {} intervals",
        fmt(p90, "%"),
        p90.map_or_else(
            || "-".into(),
            |p| format!("{:+.0}% of target", (p / target - 1.0) * 100.0)
        ),
        fmt(peak, "%"),
        fmt(cpu_mean(&leaves), "%"),
        resumed.map_or_else(|| "never".into(), |s| s.to_string()),
    );
}

fn write_outputs(bench: &Bench, summary: &str) -> Result<(), BoxError> {
    let dir = &bench.settings.out;
    let mut csv = String::from(
        "t,phase,window,db_cpu,target,service_rate,service_ops,service_p50_ms,service_p99_ms,pace,limiter,completed,batch\n",
    );
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    for r in &bench.rows {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.t,
            r.phase,
            r.window,
            opt(r.cpu),
            bench.settings.target,
            r.service_rate,
            r.ops,
            opt(r.p50.map(|v| v * 1e3)),
            opt(r.p99.map(|v| v * 1e3)),
            opt(r.pace.rate),
            r.pace.limiter.as_deref().unwrap_or(""),
            opt(r.pace.completed),
            opt(r.pace.batch),
        );
    }
    std::fs::write(dir.join("live.csv"), csv)?;
    let mut ops = String::from("at,phase,kind,latency_ms,ok\n");
    for (phase, o) in &bench.ops {
        let _ = writeln!(
            ops,
            "{:.3},{phase},{},{:.2},{}",
            o.at,
            if o.lookup { "lookup" } else { "update" },
            o.latency * 1e3,
            o.ok
        );
    }
    std::fs::write(dir.join("ops.csv"), ops)?;
    std::fs::write(dir.join("summary.md"), summary)?;
    let mut svg = String::new();
    chart(bench, &mut svg).map_err(|e| format!("chart: {e}"))?;
    std::fs::write(dir.join("live.svg"), svg)?;
    eprintln!(
        "live: wrote {}",
        ["live.csv", "ops.csv", "summary.md", "live.svg"]
            .map(|f| dir.join(f).display().to_string())
            .join(", ")
    );
    Ok(())
}

fn chart(bench: &Bench, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let end = bench.rows.last().map_or(1.0, |r| r.t).max(1.0);
    let target = bench.settings.target;
    let root = SVGBackend::with_string(out, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        format!(
            "tidegate beside a live service (measured: FerretDB, {} cores; target {target:.0}% CPU)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        (20, 12),
        ("sans-serif", 20),
    ))?;
    let panels = body.split_evenly((3, 1));
    let max_cpu = bench
        .rows
        .iter()
        .filter_map(|r| r.cpu)
        .fold(target * 1.5, f64::max);
    let max_pace = bench
        .rows
        .iter()
        .filter_map(|r| r.pace.rate)
        .fold(10.0, f64::max);
    let max_p99 = bench.rows.iter().filter_map(|r| r.p99).fold(0.1, f64::max) * 1e3;
    let phases = bench.spans.clone();
    let colours = [
        RGBColor(240, 240, 250),
        RGBColor(250, 240, 235),
        RGBColor(235, 248, 238),
        RGBColor(248, 246, 230),
    ];
    let mut cpu = ChartBuilder::on(&panels[0])
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_cpu)?;
    cpu.configure_mesh()
        .y_desc("DB CPU %")
        .x_labels(12)
        .draw()?;
    for (i, (_, from, to)) in phases.iter().enumerate() {
        cpu.draw_series(std::iter::once(Rectangle::new(
            [(*from, 0.0), (*to, max_cpu)],
            colours[i % 4].filled(),
        )))?;
    }
    for (name, from, _) in &phases {
        cpu.draw_series(std::iter::once(Text::new(
            name.clone(),
            (*from + 1.0, max_cpu * 0.97),
            ("sans-serif", 14),
        )))?;
    }
    // A phase's own start and end need no label (the shading says it); windows within a
    // phase alternate between two heights so that neighbours do not overlap.
    let inner = bench
        .marks
        .iter()
        .filter(|(_, label)| !label.ends_with(" starts") && !label.ends_with(" ends"));
    for (n, (t, label)) in inner.enumerate() {
        cpu.draw_series(std::iter::once(PathElement::new(
            vec![(*t, 0.0), (*t, max_cpu)],
            BLACK.mix(0.3),
        )))?;
        let height = if n % 2 == 0 { 0.88 } else { 0.80 };
        cpu.draw_series(std::iter::once(Text::new(
            label.clone(),
            (*t + 0.5, max_cpu * height),
            ("sans-serif", 11),
        )))?;
    }
    let points = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<Vec<(f64, f64)>> {
        // Broken at phase changes, so no line crosses the gap between phases.
        let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut phase = "";
        for r in &bench.rows {
            if r.phase != phase {
                lines.push(Vec::new());
                phase = &r.phase;
            }
            if let (Some(v), Some(line)) = (f(r), lines.last_mut()) {
                line.push((r.t, v));
            }
        }
        lines
    };
    for line in points(&|r| r.cpu) {
        cpu.draw_series(LineSeries::new(line, RGBColor(200, 60, 40).stroke_width(1)))?;
    }
    cpu.draw_series(DashedLineSeries::new(
        vec![(0.0, target), (end, target)],
        6,
        4,
        BLACK.stroke_width(1),
    ))?;
    let mut pace = ChartBuilder::on(&panels[1])
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_pace * 1.1)?;
    pace.configure_mesh()
        .y_desc("tidegate pace, docs/s")
        .x_labels(12)
        .draw()?;
    for line in points(&|r| r.pace.rate) {
        pace.draw_series(LineSeries::new(line, RGBColor(40, 90, 200).stroke_width(2)))?;
    }
    // Logarithmic: the naive script's 30-s timeouts and the paced phases' tens of ms in one
    // panel.
    let mut lat = ChartBuilder::on(&panels[2])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, (10.0..max_p99 * 1.5).log_scale())?;
    lat.configure_mesh()
        .y_desc("service p50 / p99, ms (10 s, log)")
        .x_desc("seconds")
        .x_labels(12)
        .draw()?;
    for line in points(&|r| r.p99.map(|v| v * 1e3)) {
        lat.draw_series(LineSeries::new(line, RGBColor(30, 140, 60).stroke_width(2)))?;
    }
    for line in points(&|r| r.p50.map(|v| v * 1e3)) {
        lat.draw_series(LineSeries::new(
            line,
            RGBColor(30, 140, 60).mix(0.4).stroke_width(1),
        ))?;
    }
    root.present()?;
    Ok(())
}
