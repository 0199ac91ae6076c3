//! MongoDB access: the client and database, bulk upserts through the `update` command (many
//! statements, one round trip, `ordered: false`) with its reply parsed per statement, inserts,
//! batch splitting under the server's limits, and the one place errors are classified as
//! transient (retry the batch later) or permanent (the job fails).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Database};
use tokio::sync::OnceCell;

use crate::telemetry::names;

/// How to connect and write; from the `TIDEGATE_MONGODB_*` settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub pool_size: u32,
    pub connect_timeout: Duration,
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

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 50,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(30),
            write_concern: None,
            batch_docs: 500,
            batch_bytes: 8 * 1024 * 1024,
        }
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

/// Statements per write command on FerretDB, and in flight per process (see
/// [`Store::limits`]).
pub const FERRETDB_MAX_WRITE_BATCH: usize = 32;

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

/// One upsert: `update` (an update document such as `{$set: …}`) on the document matching
/// `filter`, inserting it when none matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub filter: Document,
    pub update: Document,
}

/// Why a statement (or a whole write) did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteFailure {
    /// Retrying later may succeed (network, failover, timeout, write conflict).
    pub transient: bool,
    pub message: String,
}

/// Counts the server reported for one bulk upsert.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BulkSummary {
    pub matched: u64,
    pub modified: u64,
    pub upserted: u64,
    pub failed: u64,
    pub round_trips: u64,
}

impl BulkSummary {
    fn add(&mut self, other: &BulkSummary) {
        self.matched += other.matched;
        self.modified += other.modified;
        self.upserted += other.upserted;
        self.failed += other.failed;
        self.round_trips += other.round_trips;
    }
}

/// Per statement, in input order: written, or why not.
pub type ItemResults = Vec<Result<(), WriteFailure>>;

/// Server error codes after which the same write may succeed later: network and failover
/// (`HostUnreachable` … `NotPrimaryOrSecondary`), time limits, lock and write conflicts, and an
/// unsatisfied write concern.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 24, 46, 50, 64, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// An operation that got no reply within its time limit (see [`Store::bounded`]).
#[derive(Debug, Clone, Copy)]
pub struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no reply from MongoDB within {:?}", self.0)
    }
}

/// The single place errors are classified.
pub fn classify(error: &MongoError) -> WriteFailure {
    if let Some(timed_out) = error.get_custom::<TimedOut>() {
        return WriteFailure {
            transient: true,
            message: timed_out.to_string(),
        };
    }
    let transient = error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError")
        || match error.kind.as_ref() {
            ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. } => true,
            ErrorKind::Command(e) => TRANSIENT_CODES.contains(&e.code),
            _ => false,
        };
    WriteFailure {
        transient,
        message: error.to_string(),
    }
}

fn code_failure(code: i32, message: &str) -> WriteFailure {
    WriteFailure {
        transient: TRANSIENT_CODES.contains(&code),
        message: format!("{message} (code {code})"),
    }
}

/// A write concern error: the statements that did not fail on their own happened but were not
/// confirmed, so they are transient failures (repeating an idempotent write is harmless).
fn fail_unconfirmed(results: &mut ItemResults, code: i32, message: &str) {
    for slot in results.iter_mut().filter(|r| r.is_ok()) {
        *slot = Err(WriteFailure {
            transient: true,
            message: format!("write concern: {message} (code {code})"),
        });
    }
}

/// Splits items of the given sizes into consecutive ranges of at most `max_docs` items and
/// `max_bytes` bytes. An item larger than `max_bytes` travels alone (the server then rejects
/// it, and only it).
pub fn split(sizes: &[usize], max_docs: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let max_docs = max_docs.max(1);
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start >= max_docs || (i > start && bytes + size > max_bytes);
        if full {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

/// Reads an `update` command's reply for `count` statements: `writeErrors` fail their own
/// statement; a `writeConcernError` makes the rest transient failures (the writes happened but
/// were not confirmed; repeating an upsert is harmless).
pub fn parse_update_reply(reply: &Document, count: usize) -> (ItemResults, BulkSummary) {
    let number = |key: &str| match reply.get(key) {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    };
    let mut results: ItemResults = vec![Ok(()); count];
    let mut summary = BulkSummary {
        matched: number("n"),
        modified: number("nModified"),
        upserted: reply.get_array("upserted").map_or(0, |a| a.len() as u64),
        failed: 0,
        round_trips: 1,
    };
    if let Ok(errors) = reply.get_array("writeErrors") {
        for error in errors.iter().filter_map(Bson::as_document) {
            let index = match error.get("index") {
                Some(Bson::Int32(i)) => usize::try_from(*i).ok(),
                Some(Bson::Int64(i)) => usize::try_from(*i).ok(),
                _ => None,
            };
            let code = error.get_i32("code").unwrap_or(0);
            let message = error.get_str("errmsg").unwrap_or("write error");
            if let Some(slot) = index.and_then(|i| results.get_mut(i)) {
                *slot = Err(code_failure(code, message));
            }
        }
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        let code = wce.get_i32("code").unwrap_or(64);
        let message = wce
            .get_str("errmsg")
            .unwrap_or("write concern not satisfied");
        fail_unconfirmed(&mut results, code, message);
    }
    summary.failed = results.iter().filter(|r| r.is_err()).count() as u64;
    (results, summary)
}

impl Store {
    /// Parses the connection string and builds the pool. No round trip happens here: the driver
    /// connects on first use, so a database that is down shows up in [`Store::ping`].
    pub async fn connect(
        uri: &str,
        database: &str,
        options: StoreOptions,
    ) -> mongodb::error::Result<Self> {
        let mut client_options = ClientOptions::parse(uri).await?;
        client_options.app_name = Some("tidegate".to_owned());
        client_options.max_pool_size = Some(options.pool_size.max(1));
        client_options.connect_timeout = Some(options.connect_timeout);
        client_options.server_selection_timeout = Some(options.connect_timeout);
        let client = Client::with_options(client_options)?;
        let db = client.database(database);
        Ok(Self {
            client,
            db,
            options: Arc::new(options),
            limits: Arc::new(OnceCell::new()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(FERRETDB_MAX_WRITE_BATCH)),
            traffic: Arc::new(Traffic::default()),
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

    /// The time limit of one operation (`TIDEGATE_MONGODB_OP_TIMEOUT`).
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
    pub fn max_time_ms(&self) -> i64 {
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
                // up to three processes per FerretDB database stay under the bound.
                let build = self
                    .bounded(
                        self.client
                            .database("admin")
                            .run_command(doc! { "buildInfo": 1 }),
                    )
                    .await?;
                if build.contains_key("ferretdbFeatures") || build.contains_key("ferretdb") {
                    limits.max_write_batch = limits.max_write_batch.min(FERRETDB_MAX_WRITE_BATCH);
                    limits.max_in_flight = Some(FERRETDB_MAX_WRITE_BATCH);
                    tracing::info!(
                        max_statements = limits.max_write_batch,
                        in_flight = FERRETDB_MAX_WRITE_BATCH,
                        "FerretDB detected: bulk writes split and kept few in flight to stay under its stall"
                    );
                }
                Ok(limits)
            })
            .await
            .copied()
    }

    /// Upserts many documents in as few `update` commands as the limits allow, unordered.
    /// Returns one result per upsert, in order. A failure of a whole command (network, server
    /// selection) fails that command's statements with its classification.
    pub async fn upsert_many(
        &self,
        collection: &str,
        upserts: &[Upsert],
    ) -> (ItemResults, BulkSummary) {
        let statements: Vec<Document> = upserts
            .iter()
            .map(|u| doc! { "q": u.filter.clone(), "u": u.update.clone(), "upsert": true, "multi": false })
            .collect();
        let sizes: Vec<usize> = statements.iter().map(bson_size).collect();
        let (max_docs, max_bytes, bound_in_flight) = match self.limits().await {
            Ok(limits) => (
                self.options.batch_docs.min(limits.max_write_batch),
                // Room for the command's own fields around the statements.
                self.options
                    .batch_bytes
                    .min(limits.max_bson.saturating_sub(16 * 1024)),
                limits.max_in_flight.is_some(),
            ),
            Err(e) => {
                let failure = self.failed(&e);
                return (
                    vec![Err(failure); upserts.len()],
                    BulkSummary {
                        failed: upserts.len() as u64,
                        ..BulkSummary::default()
                    },
                );
            }
        };
        let mut results = Vec::with_capacity(upserts.len());
        let mut total = BulkSummary::default();
        for range in split(&sizes, max_docs, max_bytes) {
            // A command never carries more statements than the bound has permits (the same
            // constant), so this always resolves once others finish.
            let _permits = if bound_in_flight {
                let n = u32::try_from(range.len()).unwrap_or(u32::MAX);
                self.in_flight.acquire_many(n).await.ok()
            } else {
                None
            };
            let (part, summary) = self.update(collection, &statements[range]).await;
            results.extend(part);
            total.add(&summary);
        }
        (results, total)
    }

    /// One `update` command. When the reply cannot say which statements failed (FerretDB 1.x
    /// stops at the first error despite `ordered: false`, reports index 0 and omits `n`), each
    /// statement is sent again on its own: upserts are idempotent, so this is safe, and each
    /// then gets its exact result. Only the error path pays for it.
    async fn update(
        &self,
        collection: &str,
        statements: &[Document],
    ) -> (ItemResults, BulkSummary) {
        let count = statements.len();
        let mut command = doc! {
            "update": collection,
            "updates": statements.to_vec(),
            "ordered": false,
            "maxTimeMS": self.max_time_ms(),
        };
        if let Some(wc) = &self.options.write_concern
            && let Ok(wc) = mongodb::bson::to_document(wc)
        {
            command.insert("writeConcern", wc);
        }
        self.traffic.writes.fetch_add(1, Ordering::Relaxed);
        self.traffic
            .statements
            .fetch_add(count as u64, Ordering::Relaxed);
        metrics::counter!(names::DB_ROUND_TRIPS, "op" => "write").increment(1);
        metrics::histogram!(names::WRITE_STATEMENTS).record(count as f64);
        let sent = std::time::Instant::now();
        let reply = self.bounded(self.db.run_command(command)).await;
        let rtt = sent.elapsed();
        self.traffic
            .write_rtt_us
            .fetch_add(rtt.as_micros() as u64, Ordering::Relaxed);
        metrics::histogram!(names::WRITE_RTT).record(rtt.as_secs_f64());
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                let summary = BulkSummary {
                    failed: count as u64,
                    round_trips: 1,
                    ..BulkSummary::default()
                };
                return (vec![Err(self.failed(&e)); count], summary);
            }
        };
        let ambiguous = count > 1 && reply.contains_key("writeErrors") && !reply.contains_key("n");
        if !ambiguous {
            let (results, summary) = parse_update_reply(&reply, count);
            if results
                .iter()
                .any(|r| r.as_ref().is_err_and(|f| f.transient))
            {
                self.count_write_error();
            }
            return (results, summary);
        }
        tracing::warn!(
            collection,
            statements = count,
            "the server's bulk write reply does not say which statements failed; sending them one by one"
        );
        let mut results = Vec::with_capacity(count);
        let mut total = BulkSummary {
            round_trips: 1,
            ..BulkSummary::default()
        };
        for statement in statements {
            let (part, summary) =
                Box::pin(self.update(collection, std::slice::from_ref(statement))).await;
            results.extend(part);
            total.add(&summary);
        }
        (results, total)
    }

    /// Inserts many documents, unordered; one result per document, in order.
    pub async fn insert_many(&self, collection: &str, docs: Vec<Document>) -> ItemResults {
        let count = docs.len();
        if count == 0 {
            return Vec::new();
        }
        let coll = self.db.collection::<Document>(collection);
        let mut action = coll.insert_many(docs).ordered(false);
        if let Some(wc) = &self.options.write_concern {
            action = action.write_concern(wc.clone());
        }
        match self.bounded(action).await {
            Ok(_) => vec![Ok(()); count],
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(many) => {
                    let mut results: ItemResults = vec![Ok(()); count];
                    for w in many.write_errors.iter().flatten() {
                        if let Some(slot) = results.get_mut(w.index) {
                            *slot = Err(code_failure(w.code, &w.message));
                        }
                    }
                    if let Some(wce) = &many.write_concern_error {
                        fail_unconfirmed(&mut results, wce.code, &wce.message);
                    }
                    results
                }
                _ => vec![Err(classify(&e)); count],
            },
        }
    }
}

fn bson_size(document: &Document) -> usize {
    let mut buf = Vec::new();
    match document.to_writer(&mut buf) {
        Ok(()) => buf.len(),
        // A document that cannot be encoded fails when sent; count it as large so it goes alone.
        Err(_) => usize::MAX / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reply_maps_write_errors_to_their_statements() {
        let reply = doc! {
            "n": 3, "nModified": 1,
            "upserted": [ { "index": 2, "_id": 1 } ],
            "writeErrors": [ { "index": 1, "code": 66, "errmsg": "Performing an update on the path '_id' would modify the immutable field '_id'" } ],
            "ok": 1.0,
        };
        let (results, summary) = parse_update_reply(&reply, 4);
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        let failure = results[1].clone().expect_err("statement 1 failed");
        assert!(!failure.transient);
        assert!(failure.message.contains("immutable field '_id' (code 66)"));
        assert_eq!(
            summary,
            BulkSummary {
                matched: 3,
                modified: 1,
                upserted: 1,
                failed: 1,
                round_trips: 1
            }
        );
    }

    #[test]
    fn write_concern_errors_make_the_rest_transient() {
        let reply = doc! {
            "n": 2, "nModified": 0,
            "writeErrors": [ { "index": 0, "code": 11000, "errmsg": "E11000 duplicate key" } ],
            "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" },
            "ok": 1,
        };
        let (results, _) = parse_update_reply(&reply, 2);
        assert!(!results[0].clone().expect_err("dup").transient);
        assert!(results[1].clone().expect_err("wce").transient);
    }

    #[test]
    fn write_conflicts_are_transient() {
        let reply = doc! { "n": 0, "writeErrors": [ { "index": 0i64, "code": 112, "errmsg": "WriteConflict" } ], "ok": 1 };
        let (results, _) = parse_update_reply(&reply, 1);
        assert!(results[0].clone().expect_err("conflict").transient);
    }

    #[test]
    fn oversized_items_travel_alone() {
        assert_eq!(split(&[5, 100, 5, 5], 10, 50), vec![0..1, 1..2, 2..4]);
        assert_eq!(split(&[1, 1, 1], 2, 50), vec![0..2, 2..3]);
        assert!(split(&[], 2, 50).is_empty());
    }

    proptest! {
        #[test]
        fn split_covers_every_item_in_order_within_bounds(
            sizes in proptest::collection::vec(0usize..200, 0..300),
            max_docs in 1usize..50,
            max_bytes in 1usize..1000,
        ) {
            let ranges = split(&sizes, max_docs, max_bytes);
            let mut next = 0;
            for r in &ranges {
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty() && r.len() <= max_docs);
                let bytes: usize = sizes[r.clone()].iter().sum();
                prop_assert!(bytes <= max_bytes || r.len() == 1);
                next = r.end;
            }
            prop_assert_eq!(next, sizes.len());
        }
    }
}
