//! MongoDB access: the client and database, bulk upserts through the `update` command (many
//! statements, one round trip, `ordered: false`) with its reply parsed per statement, inserts,
//! batch splitting under the server's limits, and the one place errors are classified as
//! transient (retry the batch later) or permanent (the job fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mongodb::bson::{Bson, doc};
use mongodb::error::Error as MongoError;
use mongodb::options::{ClientOptions, ConnectionString, WriteConcern};
use mongodb::{Client, Database};
use tokio::sync::OnceCell;

use crate::telemetry::names;

mod indexes;
mod write;

pub use indexes::Index;
pub use write::{
    BulkSummary, ItemResults, Upsert, WriteFailure, classify, parse_update_reply, split,
    unreachable,
};

use crate::circuit::Circuit;

impl crate::retry::Transient for MongoError {
    fn transient(&self) -> bool {
        classify(self).transient
    }
}

impl crate::retry::Transient for WriteFailure {
    fn transient(&self) -> bool {
        self.transient
    }
}

/// How to connect and write: what the connection string says, and the `TIDEGATE_MONGODB_*`
/// settings for what it does not ([`StoreOptions::under`]).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub pool_size: u32,
    /// Connect and server-selection time limits.
    pub connect_timeout: Duration,
    pub selection_timeout: Duration,
    /// The name the server's logs and `currentOp` show for this client.
    pub app_name: String,
    /// Time limit of each operation: sent as `maxTimeMS` where the command takes one, and kept
    /// here too, for a server or a connection that never answers.
    pub op_timeout: Duration,
    /// `None` leaves the server's default write concern.
    pub write_concern: Option<WriteConcern>,
    /// Upper bound on one write command's statements (the server's own limit also applies).
    pub batch_docs: usize,
    /// Upper bound on one write command's statement bytes (at most the server's 16 MiB).
    pub batch_bytes: usize,
}

/// Statements per bulk write, and jobs per batch, unless `TIDEGATE_BATCH_DOCS` says: the one
/// default the worker, the controller's largest batch and the store's writes share.
pub const BATCH_DOCS: usize = 500;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 50,
            connect_timeout: Duration::from_secs(10),
            selection_timeout: Duration::from_secs(10),
            app_name: "tidegate".to_owned(),
            op_timeout: Duration::from_secs(30),
            write_concern: None,
            batch_docs: BATCH_DOCS,
            batch_bytes: 8 * 1024 * 1024,
        }
    }
}

impl StoreOptions {
    /// These options under a connection string: where it says (`maxPoolSize`,
    /// `connectTimeoutMS`, `serverSelectionTimeoutMS`, `appName`, `w`/`journal`/`wtimeoutMS`),
    /// it wins; the settings fill only what it does not say. Returns the options and the
    /// names of the URI's options that won.
    pub fn under(mut self, uri: &ConnectionString) -> (Self, Vec<&'static str>) {
        let mut said = Vec::new();
        if let Some(pool) = uri.max_pool_size {
            self.pool_size = pool;
            said.push("maxPoolSize");
        }
        if let Some(limit) = uri.connect_timeout {
            self.connect_timeout = limit;
            said.push("connectTimeoutMS");
        }
        if let Some(limit) = uri.server_selection_timeout {
            self.selection_timeout = limit;
            said.push("serverSelectionTimeoutMS");
        }
        if let Some(name) = &uri.app_name {
            self.app_name = name.clone();
            said.push("appName");
        }
        if let Some(concern) = &uri.write_concern {
            self.write_concern = Some(concern.clone());
            said.push("w");
        }
        (self, said)
    }
}

/// What the server accepts in one write command (from `hello`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_write_batch: usize,
    pub max_bson: usize,
    /// Update statements this process keeps in flight at most, over all its commands; `None`
    /// when the server needs no such bound.
    pub max_in_flight: Option<usize>,
}

impl Default for ServerLimits {
    /// MongoDB's values since 3.6, used when `hello` does not report them.
    fn default() -> Self {
        Self {
            max_write_batch: 100_000,
            max_bson: 16 * 1024 * 1024,
            max_in_flight: None,
        }
    }
}

/// How much longer than `maxTimeMS` tidegate waits for a reply before it gives up itself.
const GRACE: Duration = Duration::from_secs(2);

/// Time limit of a ping while the database's circuit is open (the bound adds [`GRACE`]): short,
/// so that its return is seen within seconds.
const PROBE_LIMIT: Duration = Duration::from_millis(500);

/// Statements per write command on FerretDB, and in flight per process (see
/// [`Store::limits`]).
pub(crate) const FERRETDB_MAX_WRITE_BATCH: usize = 32;

/// A connected MongoDB client and tidegate's database. Cheap to clone: the driver's client is a
/// handle to one shared connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
    options: Arc<StoreOptions>,
    limits: Arc<OnceCell<ServerLimits>>,
    /// Update statements in flight, where the server needs a bound (`max_in_flight`).
    in_flight: Arc<tokio::sync::Semaphore>,
    traffic: Arc<Traffic>,
    /// Open while the database is found down or silent.
    circuit: Circuit,
}

/// Round trips this process made for the pipelines, for run reports and metrics.
#[derive(Debug, Default)]
pub struct Traffic {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub statements: AtomicU64,
    /// Summed round-trip time of the write commands, microseconds.
    pub write_rtt_us: AtomicU64,
    /// Write commands that failed transiently, or had a statement that did.
    pub write_errors: AtomicU64,
}

/// An operation that got no reply within its time limit (see [`Store::bounded`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no reply from MongoDB within {:?}", self.0)
    }
}

impl Store {
    /// Parses the connection string and builds the pool, the URI's own options first
    /// ([`StoreOptions::under`]; its TLS, read preference and the rest are the driver's). No
    /// round trip happens here: the driver connects on first use, so a database that is down
    /// shows up in [`Store::ping`].
    pub async fn connect(
        uri: &str,
        database: &str,
        options: StoreOptions,
    ) -> mongodb::error::Result<Self> {
        let (options, _) = options.under(&ConnectionString::parse(uri)?);
        let mut client_options = ClientOptions::parse(uri).await?;
        client_options.app_name = Some(options.app_name.clone());
        client_options.max_pool_size = Some(options.pool_size.max(1));
        client_options.connect_timeout = Some(options.connect_timeout);
        client_options.server_selection_timeout = Some(options.selection_timeout);
        client_options.write_concern = options.write_concern.clone();
        let client = Client::with_options(client_options)?;
        let db = client.database(database);
        Ok(Self {
            client,
            db,
            options: Arc::new(options),
            limits: Arc::new(OnceCell::new()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(FERRETDB_MAX_WRITE_BATCH)),
            traffic: Arc::new(Traffic::default()),
            circuit: Circuit::new("mongodb"),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The database's circuit: open while this process finds it down or silent.
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// Opens the database's circuit when `error` says it cannot be reached (see [`trip`]).
    ///
    /// [`trip`]: Store::trip
    pub fn note_unreachable(&self, error: &MongoError) {
        if unreachable(error) {
            self.trip(&classify(error).message);
        }
    }

    /// Opens the database's circuit (`reason`: what said it is down), then pings the database
    /// every second, each ping bounded by [`PROBE_LIMIT`], until it answers, which closes it.
    pub fn trip(&self, reason: &str) {
        if !self.circuit.open(reason) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let admin = store.client.database("admin");
                let ping = admin.run_command(doc! { "ping": 1 });
                if store.bounded_for(PROBE_LIMIT, ping).await.is_ok() {
                    store.circuit.close();
                    return;
                }
            }
        });
    }

    /// The time limit of one operation (`TIDEGATE_MONGODB_OP_TIMEOUT`): for a pipeline's own
    /// reads, as the cursor's `maxTimeMS`.
    pub fn op_timeout(&self) -> Duration {
        self.options.op_timeout
    }

    /// Runs one MongoDB operation under the time limit: every call tidegate makes goes through
    /// here, since the driver has no socket timeout and a server or connection that stops
    /// answering would otherwise hold the caller (and a batch's locks) forever. A little longer
    /// than the `maxTimeMS` sent with the commands that take one, so that the server's own
    /// limit answers first when the server is alive. Dropping the operation closes its
    /// connection; the driver opens another.
    pub async fn bounded<T>(
        &self,
        operation: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> mongodb::error::Result<T> {
        self.bounded_for(self.options.op_timeout, operation).await
    }

    /// [`Store::bounded`] with a limit of its own, for the few operations that are long by
    /// nature (planning's aggregation over a whole day).
    pub async fn bounded_for<T>(
        &self,
        limit: Duration,
        operation: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> mongodb::error::Result<T> {
        let limit = limit + GRACE;
        match tokio::time::timeout(limit, operation.into_future()).await {
            Ok(result) => result,
            Err(_) => Err(MongoError::custom(TimedOut(limit))),
        }
    }

    /// `maxTimeMS` for commands that take it.
    pub(crate) fn max_time_ms(&self) -> i64 {
        i64::try_from(self.options.op_timeout.as_millis()).unwrap_or(i64::MAX)
    }

    /// Counts one read round trip made for a pipeline.
    pub fn count_read(&self) {
        self.traffic.reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::DB_ROUND_TRIPS, "op" => "read").increment(1);
    }

    /// Classifies a failed pipeline call to the database (a batch's read, or a write that
    /// failed as a whole) and counts a transient one for the load controller: a database that
    /// is down or silent must not look healthy to it.
    pub fn failed(&self, error: &MongoError) -> WriteFailure {
        let failure = classify(error);
        if failure.transient {
            self.count_write_error();
        }
        self.note_unreachable(error);
        failure
    }

    /// A write the load controller should hear about: the database pushed back.
    fn count_write_error(&self) {
        self.traffic.write_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::WRITE_ERRORS).increment(1);
    }

    /// One `ping` round trip.
    pub async fn ping(&self) -> mongodb::error::Result<()> {
        self.bounded(
            self.client
                .database("admin")
                .run_command(doc! { "ping": 1 }),
        )
        .await
        .map(drop)
    }

    /// The server's write limits, asked once.
    pub async fn limits(&self) -> mongodb::error::Result<ServerLimits> {
        self.limits
            .get_or_try_init(|| async {
                let hello = self
                    .bounded(
                        self.client
                            .database("admin")
                            .run_command(doc! { "hello": 1 }),
                    )
                    .await?;
                let read = |key: &str, default: usize| match hello.get(key) {
                    Some(Bson::Int32(n)) => usize::try_from(*n).unwrap_or(default),
                    Some(Bson::Int64(n)) => usize::try_from(*n).unwrap_or(default),
                    _ => default,
                };
                let d = ServerLimits::default();
                let mut limits = ServerLimits {
                    max_write_batch: read("maxWriteBatchSize", d.max_write_batch),
                    max_bson: read("maxBsonObjectSize", d.max_bson),
                    max_in_flight: None,
                };
                // FerretDB 1.x (SQLite) holds one of a database's 100 pooled connections for
                // each update statement that matches an existing document until the whole
                // command ends; once ~100 are in flight on one database, over every command of
                // every process, the next waits forever and so does the database (seen with
                // 1.24.2: one command of 99 returns in 0.1 s, of 100 hangs; four loops of 40
                // hang). So each process keeps at most 32 in flight, in commands of at most 32:
                // up to three processes per FerretDB database stay under the bound. FerretDB 2
                // (PostgreSQL; its buildInfo has `ferretdb`, not `ferretdbFeatures`) has no such
                // stall: 16 commands of 200 such updates at once return in 5 s (BENCHMARKS.md).
                let build = self
                    .bounded(
                        self.client
                            .database("admin")
                            .run_command(doc! { "buildInfo": 1 }),
                    )
                    .await?;
                if build.contains_key("ferretdbFeatures") {
                    limits.max_write_batch = limits.max_write_batch.min(FERRETDB_MAX_WRITE_BATCH);
                    limits.max_in_flight = Some(FERRETDB_MAX_WRITE_BATCH);
                    tracing::info!(
                        max_statements = limits.max_write_batch,
                        in_flight = FERRETDB_MAX_WRITE_BATCH,
                        "FerretDB 1.x detected: bulk writes split and kept few in flight to stay under its stall"
                    );
                }
                Ok(limits)
            })
            .await
            .copied()
    }
}

#[cfg(test)]
mod tests;
