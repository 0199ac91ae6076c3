//! Helpers shared by the integration tests: where the real services are (from the environment
//! `scripts/services env` prints), unique names so tests never share state, the parts built as
//! `tidegate run` builds them ([`app`]), and waiting for a condition with a deadline.
#![allow(dead_code)] // each test binary uses a different subset

pub mod scenario;
pub mod source;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `eval \"$(scripts/services env)\"` after `scripts/services start`")
    })
}

pub fn redis_url() -> String {
    env("REDIS_URL")
}

pub fn mongodb_uri() -> String {
    env("MONGODB_URI")
}

/// PromQL for the database's CPU in percent of one core (`scripts/services env`: PostgreSQL's
/// processes and FerretDB's, from process-exporter); `None` when MONGODB_URI names another
/// server, whose serverStatus reports its CPU.
pub fn database_cpu_query() -> Option<String> {
    std::env::var("DATABASE_CPU_QUERY").ok()
}

/// The engine as `tidegate run` builds it (`Settings` from the environment, connected, the
/// applications `TIDEGATE_APPS` enables registered), on a queue and a database of the test's
/// own; `overrides` are variables set for this test alone (`("TIDEGATE_ATTEMPTS", "3")`), and
/// win over the test's own names.
pub async fn app(name: &str, overrides: &[(&str, &str)]) -> tidegate::engine::Engine {
    // Tests print nothing of the engine's own logs unless asked (`RUST_LOG=tidegate=info`):
    // the decisions behind a failed control test are what it takes to read one.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let queue = unique(name);
    let database = unique(&format!("tidegate_{name}"));
    // Overrides come first, so a test can put two apps on one database or one queue.
    let lookup = |var: &str| {
        let own = match var {
            "TIDEGATE_QUEUE" => Some(queue.clone()),
            "TIDEGATE_DATABASE" => Some(database.clone()),
            _ => None,
        };
        overrides
            .iter()
            .find(|(name, _)| *name == var)
            .map(|(_, value)| (*value).to_owned())
            .or(own)
            .or_else(|| std::env::var(var).ok())
    };
    let settings =
        tidegate::config::Settings::from_lookup(lookup).expect("the test's settings are valid");
    let (apps, _, _) = tidegate_cli::read_apps(lookup).expect("the test's TIDEGATE_APPS is valid");
    let engine = tidegate::engine::Engine::connect(settings)
        .await
        .expect("the services answer");
    tidegate_cli::register(engine, &apps)
}

/// A test that cannot run here (a fixture or a server it needs is absent) fails, saying why,
/// unless `TIDEGATE_ALLOW_SKIP=1` allows such skips; then it says so, is counted as skipped
/// (a line in the file `TIDEGATE_SKIP_LOG` names, which `scripts/test` counts), and returns
/// early. A test never passes for having done nothing.
pub fn skip(reason: &str) {
    if std::env::var("TIDEGATE_ALLOW_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        if let Ok(path) = std::env::var("TIDEGATE_SKIP_LOG") {
            use std::io::Write;
            let logged = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut log| writeln!(log, "{reason}"));
            if let Err(e) = logged {
                panic!("cannot count the skip in {path}: {e}");
            }
        }
    } else {
        panic!("cannot run here: {reason} (TIDEGATE_ALLOW_SKIP=1 allows skipping such a test)");
    }
}

/// A store on a database of the test's own (`<prefix>_...`), with the default options.
pub async fn store(prefix: &str) -> tidegate::store::Store {
    tidegate::store::Store::connect(&mongodb_uri(), &unique(prefix), Default::default())
        .await
        .expect("MongoDB answers")
}

/// A name no other test (in this or a parallel process) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `probe` every 100 ms until it yields a value, failing the test with `what` after
/// `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(what, limit, Duration::from_millis(100), probe).await
}

/// [`eventually`], polling every `every`: for a state that lasts only milliseconds.
pub async fn eventually_every<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// A child process (a `tidegate run`), killed if the test ends first.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every job of an upsert test completed, once each: as many documents in `effects` as jobs,
/// one per job (each job upserts a document keyed by its `job` field), counted on the database
/// directly; then the test's database is dropped.
pub async fn assert_each_effect_once(mongodb_uri: &str, database: &str, jobs: usize) {
    use mongodb::bson::{Document, doc};
    let store = tidegate::store::Store::connect(mongodb_uri, database, Default::default())
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

/// Runs BullMQ itself (`node bullmq.mjs <args>` in `tests/interop`, Node.js) on the shared Redis
/// unless `env` says otherwise, with `input` on its standard input; parses the JSON it prints.
pub fn bullmq(args: &[&str], env: &[(&str, &str)], input: &str) -> serde_json::Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
        .arg("bullmq.mjs")
        .args(args)
        .env("REDIS_URL", redis_url())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (is Node.js installed, and `npm ci` run in tests/interop?)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("write to bullmq.mjs");
    }
    let out = child.wait_with_output().expect("bullmq.mjs ends");
    assert!(
        out.status.success(),
        "node bullmq.mjs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from bullmq.mjs")
}

/// Processes a test has the local Prometheus scrape (a file of its own under
/// `PROMETHEUS_TARGETS_DIR`, read by the `workers` job), labelled `test="<label>"`;
/// unregistered when dropped.
pub struct Scraped {
    path: std::path::PathBuf,
    pub label: String,
}

impl Scraped {
    pub fn new(name: &str, targets: &[String]) -> Self {
        let label = unique(name);
        let dir = env("PROMETHEUS_TARGETS_DIR");
        let path = std::path::Path::new(&dir).join(format!("{label}.json"));
        let body = serde_json::json!([{ "targets": targets, "labels": { "test": label } }]);
        // Written whole then renamed, so Prometheus never reads half a file.
        let partial = path.with_extension("part");
        std::fs::write(&partial, body.to_string()).expect("write the targets file");
        std::fs::rename(&partial, &path).expect("publish the targets file");
        Self { path, label }
    }
}

impl Drop for Scraped {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An instant PromQL query on the local Prometheus: each series' labels and value; empty when
/// Prometheus does not answer.
pub async fn promql(expr: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/query", env("PROMETHEUS_URL")))
        .query(&[("query", expr)])
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let Ok(body) = answer else { return Vec::new() };
    let body: serde_json::Value = body.json().await.unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| {
            let labels = series["metric"].as_object()?.clone();
            let value = series["value"][1].as_str()?.parse().ok()?;
            Some((labels, value))
        })
        .collect()
}
