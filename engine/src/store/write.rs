//! Writing in bulk: upserts through the `update` command with the reply read per statement,
//! inserts, splitting a write under the server's limits, and the one classifier that says whether
//! a failure is transient.

use std::ops::Range;
use std::sync::atomic::Ordering;

use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind};

use super::{Store, TimedOut};
use crate::telemetry::names;

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
    /// The server's error code, when it gave one.
    pub code: Option<i32>,
}

impl WriteFailure {
    /// A document with this key exists already (E11000).
    pub fn duplicate_key(&self) -> bool {
        self.code == Some(11000)
    }
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

/// Server error codes that say the database is down, shutting down or without a primary now:
/// network (`HostUnreachable`, `HostNotFound`, `NetworkTimeout`, `SocketException`), shutdown
/// and fail-over.
const UNREACHABLE_CODES: &[i32] = &[6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436];

/// Whether an error says the database cannot be reached (down, silent, or without a primary),
/// rather than that it refused or could not do this one operation: what opens its circuit.
pub fn unreachable(error: &MongoError) -> bool {
    if error.get_custom::<TimedOut>().is_some() {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => true,
        ErrorKind::Command(e) => UNREACHABLE_CODES.contains(&e.code),
        _ => false,
    }
}

/// The single place errors are classified.
pub fn classify(error: &MongoError) -> WriteFailure {
    if let Some(timed_out) = error.get_custom::<TimedOut>() {
        return WriteFailure {
            transient: true,
            message: timed_out.to_string(),
            code: None,
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
    let code = match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        _ => None,
    };
    WriteFailure {
        transient,
        message: error.to_string(),
        code,
    }
}

fn code_failure(code: i32, message: &str) -> WriteFailure {
    WriteFailure {
        transient: TRANSIENT_CODES.contains(&code),
        message: format!("{message} (code {code})"),
        code: Some(code),
    }
}

/// A write concern error: the statements that did not fail on their own happened but were not
/// confirmed, so they are transient failures (repeating an idempotent write is harmless).
fn fail_unconfirmed(results: &mut ItemResults, code: i32, message: &str) {
    for slot in results.iter_mut().filter(|r| r.is_ok()) {
        *slot = Err(WriteFailure {
            transient: true,
            message: format!("write concern: {message} (code {code})"),
            code: Some(code),
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

fn bson_size(document: &Document) -> usize {
    let mut buf = Vec::new();
    match document.to_writer(&mut buf) {
        Ok(()) => buf.len(),
        // A document that cannot be encoded fails when sent; count it as large so it goes alone.
        Err(_) => usize::MAX / 2,
    }
}

impl Store {
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

    /// The `update` command of `statements`: unordered, with the operation's time limit and
    /// the write concern (the connection string's, else `TIDEGATE_WRITE_CONCERN`'s; none
    /// leaves the server's default).
    pub fn update_command(&self, collection: &str, statements: &[Document]) -> Document {
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
        command
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
        let command = self.update_command(collection, statements);
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
                _ => vec![Err(self.failed(&e)); count],
            },
        }
    }
}
