//! A real `tidegate run` on a queue and a database of a test's own, and servers of a test's
//! own to break: what the fault and topology tests share.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tidegate::queue::{Backoff, BackoffKind, JobOptions, NewJob, Queue, connect};
use tidegate::runs::Runs;
use tidegate::store::Store;

/// `tidegate run` on `queue`, with short time limits so that faults show within seconds, and
/// `vars` set over them.
pub fn tidegate(
    queue: &str,
    database: &str,
    redis_url: &str,
    mongodb_uri: &str,
    vars: &[(&str, &str)],
) -> super::Running {
    start(
        command(queue, database, redis_url, mongodb_uri)
            .env("TIDEGATE_WORKERS", "2")
            .env("TIDEGATE_BATCH_DOCS", "20")
            .env("TIDEGATE_RATE_FLOOR", "200")
            .env("TIDEGATE_LOCK_DURATION", "2s")
            .env("TIDEGATE_STALLED_INTERVAL", "500ms")
            .env("TIDEGATE_MONGODB_TIMEOUT", "2s")
            .env("TIDEGATE_MONGODB_OP_TIMEOUT", "1s")
            .env("TIDEGATE_BATCH_TIMEOUT", "4s")
            .envs(vars.iter().copied()),
    )
}

pub fn command(queue: &str, database: &str, redis_url: &str, mongodb_uri: &str) -> Command {
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

pub fn start(command: &mut Command) -> super::Running {
    super::Running(command.spawn().expect("start tidegate"))
}

/// One scenario's work: a queue of its own under `prefix` (on the Redis at `redis_url`) with
/// `jobs` upserts, all of one run recorded in a database of its own (on `mongodb_uri`), where
/// their effects go.
pub struct Scenario {
    pub q: Queue,
    pub queue_name: String,
    pub prefix: String,
    pub database: String,
    pub runs: Runs,
    pub run: String,
    pub jobs: usize,
}

impl Scenario {
    pub async fn new(name: &str, redis_url: &str, mongodb_uri: &str, jobs: usize) -> Self {
        let mut s = Self::empty("bull", name, redis_url, mongodb_uri).await;
        add_jobs(&s.q, jobs, &s.run).await;
        s.planned(jobs).await;
        s
    }

    /// A scenario whose run has no jobs yet: the test adds them (see [`upsert_data`]), then
    /// says how many with [`Scenario::planned`].
    pub async fn empty(prefix: &str, name: &str, redis_url: &str, mongodb_uri: &str) -> Self {
        let redis = connect(redis_url).await.expect("redis");
        let queue_name = super::unique(name);
        let database = super::unique("tidegate_faults");
        let store = Store::connect(mongodb_uri, &database, Default::default())
            .await
            .expect("mongo");
        let runs = Runs::new(redis.clone(), store, prefix);
        let run = runs
            .start("upsert", "2026-11-30", "test")
            .await
            .expect("run")
            .id;
        let q = Queue::new(redis, prefix, &queue_name);
        Self {
            q,
            queue_name,
            prefix: prefix.to_owned(),
            database,
            runs,
            run,
            jobs: 0,
        }
    }

    /// Records that the run has `jobs` jobs.
    pub async fn planned(&mut self, jobs: usize) {
        self.jobs = jobs;
        self.runs
            .planned(&self.run, jobs as u64, 0)
            .await
            .expect("planned");
    }

    /// `tidegate run` on this scenario's queue and database, once its first jobs are done, so
    /// that a fault lands mid-run.
    pub async fn start(&self, redis_url: &str, mongodb_uri: &str) -> super::Running {
        let running = tidegate(
            &self.queue_name,
            &self.database,
            redis_url,
            mongodb_uri,
            &[("TIDEGATE_QUEUE_PREFIX", &self.prefix)],
        );
        first_jobs_done(&self.q, Duration::from_secs(60)).await;
        running
    }

    /// Every job completed, none failed, its run's record says so (counted by tidegate, checked
    /// against the test's own count), and each effect is in the database once; then the
    /// database is dropped.
    pub async fn assert_done_once(&self, mongodb_uri: &str) {
        assert_eq!(self.q.counts().await.expect("counts").failed, 0);
        let run = self
            .runs
            .wait_for_end(&self.run, Duration::from_secs(60))
            .await
            .expect("the run ends");
        assert_eq!(
            (run.completed, run.failed, run.outcome.as_deref()),
            (self.jobs as i64, 0, Some("succeeded")),
            "the run's record"
        );
        super::assert_each_effect_once(mongodb_uri, &self.database, self.jobs).await;
    }
}

/// Waits (up to `limit`) until the run is under way, so that the fault lands mid-run.
pub async fn first_jobs_done(q: &Queue, limit: Duration) {
    super::eventually("the first jobs to complete", limit, || async {
        q.counts()
            .await
            .ok()
            .filter(|c| c.completed >= 20)
            .map(drop)
    })
    .await;
}

/// How soon a job completes after a fault ended, `completed` having completed before; at most
/// the 5 s issues 13 and 24 bound it by.
pub async fn work_resumes(q: &Queue, completed: u64) -> Duration {
    let back = Instant::now();
    super::eventually(
        "a job to complete after the fault ended",
        Duration::from_secs(5),
        || async {
            q.counts()
                .await
                .ok()
                .filter(|c| c.completed > completed)
                .map(drop)
        },
    )
    .await;
    back.elapsed()
}

/// The attempts (`atm`) of every completed job: 1 each when no fault spent one.
pub async fn attempts_of_completed(q: &Queue) -> Vec<u64> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.keys().completed())
        .arg(0)
        .arg(-1)
        .query_async(&mut q.connection())
        .await
        .expect("completed ids");
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGET").arg(q.keys().job(id)).arg("atm");
    }
    pipe.query_async(&mut q.connection())
        .await
        .expect("attempts")
}

/// Waits until all `jobs` completed and none is active.
pub async fn all_jobs_done(q: &Queue, jobs: usize, limit: Duration) {
    super::eventually("every job to complete", limit, || async {
        q.counts()
            .await
            .ok()
            .filter(|c| c.completed == jobs as u64 && c.active == 0)
            .map(drop)
    })
    .await;
}

/// `n` upserts of `run` (see [`upsert_data`]), retried every 200 ms for as long as any fault
/// here lasts.
pub async fn add_jobs(queue: &Queue, n: usize, run: &str) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("upsert", upsert_data(i, run)).with_opts(patient()))
        .collect();
    queue.add_bulk(&jobs).await.expect("add");
}

/// Options of a job that outlasts any fault here: 100 attempts, 200 ms apart.
pub fn patient() -> JobOptions {
    JobOptions {
        attempts: Some(100),
        backoff: Some(Backoff::Spec {
            kind: BackoffKind::Fixed,
            delay: 200,
            jitter: None,
        }),
        ..JobOptions::default()
    }
}

/// Job `i` of `run`: an upsert of one document keyed by the job, so a job run twice leaves one.
pub fn upsert_data(i: usize, run: &str) -> serde_json::Value {
    json!({"collection": "effects", "key": ["job"], "runId": run,
           "document": {"job": format!("j{i}"), "n": i}})
}

/// A server process of a test's own, on a free loopback port, with its state in a directory
/// that outlives a restart; killed with SIGKILL (no chance to flush) when asked or dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: std::path::PathBuf,
    program: String,
    args: Args,
}

/// A server's arguments, given its port and its state directory.
type Args = Box<dyn Fn(u16, &std::path::Path) -> Vec<String> + Send>;

impl Server {
    pub fn start(
        program: &str,
        args: impl Fn(u16, &std::path::Path) -> Vec<String> + Send + 'static,
    ) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(super::unique("tidegate_test_server"));
        std::fs::create_dir_all(&dir).expect("state dir");
        let mut server = Self {
            child: None,
            port,
            dir,
            program: program.to_owned(),
            args: Box::new(args),
        };
        server.restart();
        server
    }

    pub fn restart(&mut self) {
        let child = Command::new(&self.program)
            .args((self.args)(self.port, &self.dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program));
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }
}

/// A FerretDB of the test's own (the binary `scripts/services` built), in front of the services'
/// PostgreSQL, listening; `None` when FERRETDB_BIN is not set (MONGODB_URI points at another
/// server). Killing or freezing it takes the database away from its clients as a dead or silent
/// `mongod` would.
pub async fn ferretdb() -> Option<Server> {
    let bin = std::env::var("FERRETDB_BIN").ok()?;
    let server = Server::start(&bin, |port, dir| {
        let mut args = ferretdb_args(dir);
        args.push(format!("--listen-addr=127.0.0.1:{port}"));
        args
    });
    listening(server.port).await;
    Some(server)
}

/// What every FerretDB of a test's own is started with: the services' PostgreSQL
/// (FERRETDB_POSTGRESQL_URL), its state in `dir`, no metrics listener, no telemetry.
pub fn ferretdb_args(dir: &std::path::Path) -> Vec<String> {
    let postgresql = std::env::var("FERRETDB_POSTGRESQL_URL")
        .expect("FERRETDB_POSTGRESQL_URL comes with FERRETDB_BIN from `scripts/services env`");
    vec![
        format!("--postgresql-url={postgresql}"),
        "--no-auth".into(),
        format!("--state-dir={}", dir.display()),
        "--debug-addr=-".into(),
        "--telemetry=disable".into(),
        "--log-level=ERROR".into(),
    ]
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis of the test's own that keeps on its append-only file whatever it acknowledged
/// (`appendfsync always`), so a SIGKILL loses nothing it said it wrote.
pub async fn aof_redis() -> Server {
    let redis = Server::start("redis-server", aof_redis_args);
    listening(redis.port).await;
    redis
}

/// The arguments of such a Redis on `port`, its files in `dir`.
pub fn aof_redis_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dir",
        &dir,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Waits until something accepts connections on `port`.
pub async fn listening(port: u16) {
    super::eventually("the server to listen", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A plain connection to the Redis on `port` (no cluster routing, no Sentinel), with short
/// time limits; `None` when it does not answer.
pub async fn direct(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2));
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}
