//! A process: its parts connected once ([`Engine::connect`]), the pipelines and the daily
//! application it is given ([`Engine::pipeline`], [`Engine::daily`]), and its life cycle:
//! served until SIGTERM/SIGINT ([`Engine::run`]: HTTP, back-office, the paced worker, the
//! governors, the schedule) or one day processed in this process and reported
//! ([`Engine::process_day`]). It knows no application: what is not registered does not exist
//! here (no pipeline, planner, schedule or index). [`main`] is a program's whole `main`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::control::pacer::Pacer;
use crate::control::probe::ProbeError;
use crate::http::admin::AdminState;
use crate::http::{self, AppState};
use crate::notify::Notifier;
use crate::pipeline::{Pipeline, Router};
use crate::progress::Progress;
use crate::queue::{self, Queue};
use crate::runs::{RunError, RunRecord, Runs};
use crate::schedule::{Daily, PlanError, Planner};
use crate::store::{Index, Store};
use crate::telemetry;
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot reach Redis at REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "REDIS_URL names a Redis Cluster, where one script must find all its keys in one slot: \
         TIDEGATE_QUEUE_PREFIX {0:?} has no hash tag; use one such as `{{bull}}` (BullMQ's convention)"
    )]
    ClusterPrefix(String),
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("in-flight work did not finish within the shutdown timeout ({0:?})")]
    ShutdownTimeout(Duration),
    #[error("worker: {0}")]
    Queue(#[from] queue::QueueError),
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    #[error("run: {0}")]
    Run(#[from] RunError),
    #[error("run reports: {0}")]
    Notify(reqwest::Error),
    #[error("load control: {0}")]
    Probe(#[from] ProbeError),
    #[error("this program has no daily application: it plans no day")]
    NoDaily,
    #[error("{0}")]
    UnknownJobs(#[from] crate::worker::UnknownNames),
    #[error(
        "nothing to run: the program registers no pipeline and TIDEGATE_GOVERN names no queue (the BullMQ queues your workers take from, such as `visits,emails:0.5`)"
    )]
    NothingToRun,
    #[error("stopped by a signal before the run ended")]
    Interrupted,
    #[error("stopped by a signal during start-up")]
    StartInterrupted,
    #[error("{what} at {shown} did not answer before TIDEGATE_START_TIMEOUT ({}) ran out: {last}", humantime::format_duration(*.limit))]
    Unreachable {
        what: &'static str,
        shown: String,
        limit: Duration,
        last: String,
    },
}

/// A process's connected parts, with the pipelines and the daily application it was given.
#[derive(Clone)]
pub struct Engine {
    pub settings: Settings,
    pub redis: crate::queue::Redis,
    pub store: Store,
    pub queue: Queue,
    pub runs: Runs,
    /// Plans the days of the daily application, if the program has one.
    pub planner: Option<Planner>,
    /// The pipelines, by job name.
    router: Router,
}

impl Engine {
    /// Connects to Redis and MongoDB (now, so a wrong URL stops start-up), with no pipeline
    /// and no daily application yet. Creates nothing. Says at once what it waits for, retries
    /// until `TIDEGATE_START_TIMEOUT`, and gives up at SIGINT or SIGTERM.
    pub async fn connect(settings: Settings) -> Result<Self, AppError> {
        let interrupted = shutdown_signal();
        tokio::select! {
            connected = Self::connect_now(settings) => connected,
            () = interrupted => Err(AppError::StartInterrupted),
        }
    }

    async fn connect_now(settings: Settings) -> Result<Self, AppError> {
        let limit = settings.start_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        wait_for(
            "Redis",
            crate::redact::redact_url(&settings.redis_url),
            (deadline, limit),
            || queue::ping_once(&settings.redis_url),
        )
        .await?;
        let redis = queue::connect(&settings.redis_url).await?;
        if redis.is_cluster() && queue::keys::hash_tag(&settings.queue_prefix).is_none() {
            return Err(AppError::ClusterPrefix(settings.queue_prefix.clone()));
        }
        let store = Store::connect(
            &settings.mongodb_uri,
            &settings.database,
            settings.store.clone(),
        )
        .await?;
        wait_for(
            "MongoDB",
            crate::redact::redact_url(&settings.mongodb_uri),
            (deadline, limit),
            || store.ping(),
        )
        .await?;
        let queue = Queue::new(redis.clone(), &settings.queue_prefix, &settings.queue);
        let mut runs = Runs::new(redis.clone(), store.clone(), &settings.queue_prefix);
        if let Some(url) = &settings.slack_webhook_url {
            runs = runs.with_notifier(Notifier::new(url.clone()).map_err(AppError::Notify)?);
        }
        Ok(Self {
            settings,
            redis,
            store,
            queue,
            runs,
            planner: None,
            router: Router::new(),
        })
    }

    /// Works jobs named any of `names` with `pipeline` (the first registration of a name
    /// wins); the queue's jobs of other names are left to its other workers
    /// (`TIDEGATE_UNKNOWN_JOBS`).
    pub fn pipeline(mut self, names: &'static [&'static str], pipeline: impl Pipeline) -> Self {
        self.router = self.router.route(names, pipeline);
        self
    }

    /// Plans the days of `daily` (the schedule, re-runs, the back-office's runs). Its jobs are
    /// worked by the pipeline registered under their names.
    pub fn daily(mut self, daily: impl Daily) -> Self {
        let s = &self.settings;
        self.planner = Some(Planner {
            daily: Arc::new(daily),
            queue: self.queue.clone(),
            store: self.store.clone(),
            runs: self.runs.clone(),
            redis: self.redis.clone(),
            tz: s.timezone,
            attempts: s.job_attempts,
            backoff: s.job_backoff,
            lease: s.plan_lease,
        });
        self
    }

    /// What the back-office serves, behind `token`.
    pub fn admin_state(&self, token: String) -> AdminState {
        AdminState {
            token,
            budget: self.settings.control.budget.clone(),
            queue: self.queue.clone(),
            runs: self.runs.clone(),
            planner: self.planner.clone(),
            schedule: self.settings.schedule.clone(),
            timezone: self.settings.timezone,
            catch_up: self.settings.schedule_catch_up,
            database: self.store.circuit().clone(),
        }
    }

    /// The planner, or why there is none.
    pub fn planner(&self) -> Result<&Planner, AppError> {
        self.planner.as_ref().ok_or(AppError::NoDaily)
    }

    /// The registered pipelines, by job name.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Creates the indexes the daily application needs that do not exist yet, and
    /// returns them: for the commands that write its data (`demo`, `seed-data`), never for
    /// `run`, which creates nothing it was not asked to (`tidegate setup` is how a team asks).
    pub async fn create_missing_indexes(&self) -> Result<Vec<Index>, AppError> {
        let mut created = Vec::new();
        for (index, exists) in self.indexes().await? {
            if !exists {
                self.store.create_index(&index).await?;
                created.push(index);
            }
        }
        Ok(created)
    }

    /// The indexes the daily application needs, each with whether it exists.
    pub async fn indexes(&self) -> Result<Vec<(Index, bool)>, AppError> {
        let Some(planner) = &self.planner else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for index in planner.daily.indexes() {
            let exists = self.store.has_index(&index).await?;
            found.push((index, exists));
        }
        Ok(found)
    }

    /// A worker of `pipeline` on the queue, counting its jobs in their runs, paced by a
    /// load-control loop that shares the database's write budget with every other process
    /// writing to the database; the loop runs until `stop`. [`Engine::run`] passes the
    /// registered pipelines.
    pub fn paced_worker<P: Pipeline>(
        &self,
        pipeline: P,
        stop: &CancellationToken,
    ) -> Result<(Worker<P>, tokio::task::JoinHandle<()>), AppError> {
        let (pacer, throttle) = Pacer::build(
            self.settings.control.clone(),
            self.redis.clone(),
            self.queue.name(),
            self.store.clone(),
            self.settings.worker.batch_docs,
        )?;
        let control = tokio::spawn(pacer.run(stop.clone()));
        let worker = Worker::new(
            self.queue.clone(),
            &self.settings.redis_url,
            pipeline,
            self.settings.worker.clone(),
        )
        .observed_by(self.runs.clone())
        .with_throttle(throttle)
        .needs(self.store.circuit().clone());
        Ok((worker, control))
    }

    /// A pacer per queue of `TIDEGATE_GOVERN`, each setting its queue's global rate limit
    /// until `stop`.
    fn governors(&self, stop: &CancellationToken) -> Result<Vec<JoinHandle<()>>, AppError> {
        let mut tasks = Vec::new();
        for (queue, weight) in &self.settings.govern {
            let pacer = Pacer::govern(
                self.settings.control.clone(),
                self.redis.clone(),
                self.store.clone(),
                (&self.settings.queue_prefix, queue, *weight),
                self.settings.govern_fallback,
            )?;
            tasks.push(tokio::spawn(pacer.run(stop.clone())));
        }
        Ok(tasks)
    }

    /// Starts what every long-lived command runs until `stop`: the metrics upkeep, the HTTP
    /// server (/metrics, /healthz, /readyz; it finishes open requests on stop), the
    /// back-office when asked for, the governors of `TIDEGATE_GOVERN`, and the paced worker
    /// of `pipeline`, if given. Refuses first when the queue holds jobs the pipeline would
    /// leave (`TIDEGATE_UNKNOWN_JOBS=refuse`).
    async fn start<P: Pipeline>(
        &self,
        pipeline: Option<P>,
        stop: &CancellationToken,
    ) -> Result<Running, AppError> {
        // First, so that every part records into it from its start.
        let metrics = telemetry::metrics();
        let mut control = self.governors(stop)?;
        let worker = match pipeline {
            Some(pipeline) => {
                let unknown = self.settings.worker.unknown_jobs;
                crate::worker::check_names(&self.queue, pipeline.job_names(), unknown).await??;
                let (worker, pacer) = self.paced_worker(pipeline, stop)?;
                control.push(pacer);
                Some(tokio::spawn(worker.run(stop.clone())))
            }
            None => None,
        };
        let addr = self.settings.http_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Listen { addr, source })?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        let state = AppState {
            redis: self.redis.clone(),
            store: self.store.clone(),
            metrics,
            ready_timeout: self.settings.ready_timeout,
            dependencies: http::Dependencies::default(),
        };
        let server_stop = stop.clone();
        let admin = match &self.settings.admin_token {
            Some(token) => {
                let addr = self.settings.admin_addr;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| AppError::Listen { addr, source })?;
                tracing::info!(%addr, "serving the back-office API at /api");
                let router = http::admin::router(self.admin_state(token.clone()));
                let admin_stop = stop.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move { admin_stop.cancelled().await })
                        .await
                }))
            }
            None => None,
        };
        Ok(Running {
            admin,
            control,
            upkeep: tokio::spawn(telemetry::run_upkeep(metrics, Duration::from_secs(5))),
            server: tokio::spawn(http::serve(listener, state, async move {
                server_stop.cancelled().await;
            })),
            worker,
        })
    }
}

/// The tasks [`Engine::start`] runs.
struct Running {
    admin: Option<JoinHandle<std::io::Result<()>>>,
    control: Vec<JoinHandle<()>>,
    upkeep: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
    worker: Option<JoinHandle<Result<crate::worker::WorkerStats, queue::QueueError>>>,
}

impl Running {
    /// Waits for the server and the worker to end (after `stop`), then ends the upkeep.
    async fn join(self) -> Result<(), AppError> {
        let worker = match self.worker {
            Some(worker) => Some(worker.await),
            None => None,
        };
        let server = self.server.await;
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
        // The pacers leave the budget and hand governed queues back.
        for control in self.control {
            let _ = control.await;
        }
        self.upkeep.abort();
        match (worker, server) {
            (Some(Ok(Err(e))), _) => Err(e.into()),
            (_, Ok(Err(e))) => Err(AppError::Serve(e)),
            _ => Ok(()),
        }
    }
}

impl Engine {
    /// Serves until SIGTERM or SIGINT: HTTP (/metrics, /healthz, /readyz), the back-office
    /// when its token is set, the governors of `TIDEGATE_GOVERN`, and, when pipelines are
    /// registered, their paced worker in the database's write budget with run counts, stall
    /// checks and reports, and the daily application's schedule (`TIDEGATE_SCHEDULE`). At the
    /// signal each part finishes or hands back what it holds, within the shutdown timeout.
    pub async fn run(self) -> Result<(), AppError> {
        let stop = CancellationToken::new();
        tokio::spawn(cancel_at_signal(stop.clone()));
        self.run_until(stop).await
    }

    /// [`Engine::run`] until `stop` is cancelled instead of a signal.
    pub async fn run_until(self, stop: CancellationToken) -> Result<(), AppError> {
        let works = !self.router.is_empty();
        if !works && self.settings.govern.is_empty() {
            return Err(AppError::NothingToRun);
        }
        for (index, exists) in self.indexes().await? {
            if !exists {
                tracing::warn!(%index, "an index the application reads by is missing: its reads scan the collection; `tidegate setup` creates it");
            }
        }
        let running = self
            .start(works.then(|| self.router.clone()), &stop)
            .await?;
        let mut tasks = Vec::new();
        if works {
            if let (Some(planner), Some(schedule)) = (&self.planner, &self.settings.schedule) {
                tasks.push(tokio::spawn(crate::schedule::firings::run_schedule(
                    planner.clone(),
                    schedule.clone(),
                    self.settings.schedule_catch_up,
                    stop.clone(),
                )));
            }
            tasks.push(tokio::spawn(watch_for_stalls(
                self.runs.clone(),
                self.settings.run_stall_after,
                stop.clone(),
            )));
        }
        let s = &self.settings;
        tracing::info!(
            queue = %if works { s.queue.as_str() } else { "(none: no pipeline)" },
            jobs = %self.router.names().join(","),
            governed = %s.govern.iter().map(|(q, w)| format!("{q}:{w}")).collect::<Vec<_>>().join(","),
            schedule = %match (&self.planner, &s.schedule) {
                (Some(_), Some(schedule)) if works => schedule.source().to_owned(),
                (None, Some(_)) => "off (no daily application)".to_owned(),
                _ => "off".to_owned(),
            },
            timezone = %s.timezone,
            budget = %s.control.budget,
            target_cpu = s.control.controller.target_cpu,
            metrics = %format!("http://{}/metrics", s.http_addr),
            prometheus = s.control.prometheus_url.as_deref().map_or_else(
                || "(not configured: set TIDEGATE_PROMETHEUS_URL)".to_owned(),
                crate::redact::redact_url,
            ),
            "tidegate running"
        );
        stop.cancelled().await;
        tracing::info!("shutting down");
        // The worker itself gives in-flight batches the shutdown timeout; this bounds the rest.
        let grace = s.worker.shutdown_timeout;
        let stopped = tokio::time::timeout(grace + Duration::from_secs(5), async {
            for task in tasks {
                let _ = task.await;
            }
            running.join().await
        })
        .await
        .map_err(|_| AppError::ShutdownTimeout(grace));
        self.runs.close(REPORTS_AT_STOP).await;
        stopped?
    }
}

/// How long a clean stop waits for the run checks and reports still pending.
const REPORTS_AT_STOP: Duration = Duration::from_secs(10);

/// A program's whole `main`: reads the settings (`TIDEGATE_*`; a bad one stops start-up with
/// exit code 2 and its name), starts the logs, connects, lets `build` register the program's
/// pipelines and daily application on the connected engine, and runs it until SIGTERM or
/// SIGINT (exit 0; 1 when it cannot start or fails).
pub async fn main(build: impl FnOnce(Engine) -> Engine) -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&settings.log_filter, settings.log_format);
    let stop = CancellationToken::new();
    match connect_until(settings, &stop).await.map(build) {
        Ok(engine) => match engine.run_until(stop).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "stopped");
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Connects as [`Engine::connect`] does, with the first SIGTERM or SIGINT from now on
/// cancelling `stop` (and start-up, if it comes first): for a process that runs
/// [`Engine::run_until`] `stop` next, so that no signal falls between the two.
pub async fn connect_until(
    settings: Settings,
    stop: &CancellationToken,
) -> Result<Engine, AppError> {
    tokio::spawn(cancel_at_signal(stop.clone()));
    tokio::select! {
        connected = Engine::connect_now(settings) => connected,
        () = stop.cancelled() => Err(AppError::StartInterrupted),
    }
}

/// Cancels `stop` at the first SIGTERM or SIGINT.
pub async fn cancel_at_signal(stop: CancellationToken) {
    shutdown_signal().await;
    stop.cancel();
}

/// Looks for stalled runs a few times per stall period, until `stop`. A check that fails (the
/// database or Redis away) is said once, and once more when checks work again.
async fn watch_for_stalls(runs: Runs, after: Duration, stop: CancellationToken) {
    let mut every =
        tokio::time::interval((after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)));
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => match runs.check_stalled(after).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("runs are checked for stalls again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot check runs for stalls; trying again each interval");
                }
                Err(_) => {}
            },
        }
    }
}

/// What processing one day produced.
#[derive(Debug, Clone)]
pub struct DayReport {
    pub run: RunRecord,
    /// The application's results for the date after the run, and where they are.
    pub documents: u64,
    pub results_in: &'static str,
    pub wall: Duration,
    /// Database round trips of this process during the run: reads, writes, statements written.
    pub reads: u64,
    pub writes: u64,
    pub statements: u64,
    /// Mean round-trip time of the write commands, as the client saw it.
    pub write_rtt: Duration,
}

impl std::fmt::Display for DayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = &self.run;
        let jobs = run.planned.unwrap_or(0);
        let secs = self.wall.as_secs_f64();
        writeln!(
            f,
            "run        {} ({} of {}, trigger {})",
            run.id, run.pipeline, run.date, run.trigger
        )?;
        writeln!(
            f,
            "jobs       {jobs} planned, {} completed, {} failed, {} skipped",
            run.completed, run.failed, run.skipped
        )?;
        writeln!(
            f,
            "documents  {} in {} for {}",
            self.documents, self.results_in, run.date
        )?;
        writeln!(
            f,
            "round trips {} reads + {} writes ({:.1} documents per write)",
            self.reads,
            self.writes,
            self.statements as f64 / self.writes.max(1) as f64
        )?;
        writeln!(
            f,
            "write rtt  {:.1} ms mean per write command",
            self.write_rtt.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "wall time  {secs:.2} s ({:.0} jobs/s)",
            jobs as f64 / secs.max(1e-9)
        )?;
        write!(
            f,
            "outcome    {}",
            run.outcome.as_deref().unwrap_or("unfinished")
        )
    }
}

impl Engine {
    /// Plans `date` as a new run of the daily application and processes it in this process with
    /// the registered pipelines (other replicas may help) until the run ends, serving metrics
    /// meanwhile. SIGTERM/SIGINT stops it early.
    pub async fn process_day(
        &self,
        date: NaiveDate,
        trigger: &str,
        purge: bool,
    ) -> Result<DayReport, AppError> {
        let planner = self.planner()?;
        let stop = CancellationToken::new();
        let running = self.start(Some(self.router.clone()), &stop).await?;
        let started = Instant::now();
        let traffic = self.store.traffic();
        let before = (
            traffic.reads.load(Ordering::Relaxed),
            traffic.writes.load(Ordering::Relaxed),
            traffic.statements.load(Ordering::Relaxed),
            traffic.write_rtt_us.load(Ordering::Relaxed),
        );
        let outcome = async {
            let run = planner.plan(date, trigger, purge).await?;
            let planned = u64::try_from(run.planned.unwrap_or(0)).unwrap_or(0);
            let mut progress = Progress::new(&format!("run {}", run.id), planned);
            let mut every = tokio::time::interval(Duration::from_millis(500));
            let ended = self
                .runs
                .wait_for_end(&run.id, Duration::from_secs(24 * 3600));
            tokio::pin!(ended);
            let signal = shutdown_signal();
            tokio::pin!(signal);
            let outcome = loop {
                tokio::select! {
                    ended = &mut ended => break Ok(ended?),
                    () = &mut signal => break Err(AppError::Interrupted),
                    _ = every.tick() => {
                        if let Ok(done) = self.runs.finished_jobs(&run.id).await {
                            progress.set(done);
                        }
                    }
                }
            };
            progress.finish();
            outcome
        }
        .await;
        let wall = started.elapsed();
        stop.cancel();
        let stopped = running.join().await;
        self.runs.close(REPORTS_AT_STOP).await;
        let run = outcome?;
        stopped?;
        let daily = &planner.daily;
        let documents = crate::retry::ride_through("counting the day's results", None, || {
            daily.results(&self.store, date)
        })
        .await?;
        Ok(DayReport {
            run,
            documents,
            results_in: daily.results_in(),
            wall,
            reads: traffic.reads.load(Ordering::Relaxed) - before.0,
            writes: traffic.writes.load(Ordering::Relaxed) - before.1,
            statements: traffic.statements.load(Ordering::Relaxed) - before.2,
            write_rtt: Duration::from_micros(
                (traffic.write_rtt_us.load(Ordering::Relaxed) - before.3)
                    / (traffic.writes.load(Ordering::Relaxed) - before.1).max(1),
            ),
        })
    }
}

/// Tries `attempt` until it succeeds or `deadline` (start-up's `limit` from its start) passes,
/// a second apart, logging each failure (`shown` is the dependency's address with its
/// credentials redacted).
async fn wait_for<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &'static str,
    shown: String,
    (deadline, limit): (tokio::time::Instant, Duration),
    mut attempt: impl FnMut() -> F,
) -> Result<T, AppError> {
    tracing::info!("connecting to {what} at {shown}");
    let mut last = String::from("no attempt finished");
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(e)) => {
                last = e.to_string();
                tracing::warn!(error = %last, "waiting for {what} at {shown}; retrying");
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(AppError::Unreachable {
                what,
                shown,
                limit,
                last,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Resolves on the first SIGTERM or SIGINT. Listens from the call, not from the first poll: a
/// signal that arrives between the two would otherwise be lost (tokio delivers only to
/// listeners that exist), and a SIGINT sent as start-up begins was ignored one time in ten.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        let listener = signal(kind);
        async move {
            match listener {
                Ok(mut listener) => {
                    listener.recv().await;
                    tracing::info!("{name} received");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
}
