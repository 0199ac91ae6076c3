//! MongoDB `serverStatus` as the probe sees it: the command that asks for only the sections
//! the controller reads (which depends on the server's version), a tolerant parser of one reply
//! into cumulative counters (and whether a router sent it), and the arithmetic that turns two
//! readings into one interval's signals. Pure: no I/O here.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};

/// Sections every supported server includes by default that the probe never reads. Turning
/// them off keeps the reply small and spares the server the work of building them: `metrics`,
/// `locks` and `tcmalloc` alone are most of a default reply. Names a server does not know are
/// ignored by it, so one list serves 6.0 to 8.0 (and FerretDB, which ignores all of them).
const EXCLUDED_SECTIONS: &[&str] = &[
    "asserts",
    "batchedDeletes",
    "bucketCatalog",
    "catalogStats",
    "changeStreamPreImages",
    "collectionCatalog",
    "connections",
    "defaultRWConcern",
    "electionMetrics",
    "flowControl",
    "health",
    "indexBuilds",
    "indexBulkBuilder",
    "indexStats",
    "locks",
    "logicalSessionRecordCache",
    "mem",
    "metrics",
    "network",
    "opReadConcernCounters",
    "opWriteConcernCounters",
    "opcounters",
    "opcountersRepl",
    "oplogTruncation",
    "planCache",
    "queryAnalyzers",
    "querySettings",
    "readConcernCounters",
    "readPreferenceCounters",
    "repl",
    "scramCache",
    "security",
    "sharding",
    "shardedIndexConsistency",
    "shardingStatistics",
    "storageEngine",
    "tcmalloc",
    "tenantMigrations",
    "trafficRecording",
    "transactions",
    "transportSecurity",
    "twoPhaseCommitCoordinator",
    "watchdog",
];

/// The `serverStatus` command for one probe reading, for a server of `major_version` (from the
/// last reply's `version`; `None` before the first reply).
///
/// Kept (all included by default): `extra_info` (process CPU time), `opLatencies` (write and
/// read latency), `globalLock` (queued operations), `queues` (8.0+ execution tickets) and, before
/// 8.0, `wiredTiger`. Up to 7.0 the write tickets are reported only inside `wiredTiger`
/// (`wiredTiger.concurrentTransactions`) and the section cannot be narrowed to that part, so it
/// stays. From 8.0 the tickets are in `queues.execution` and `wiredTiger` is most of the reply
/// (53 KB of the 58 KB of BSON this command gets from a real 8.0.28), so it goes. An unknown
/// version keeps it: one reply too large, rather than no tickets.
pub fn command(major_version: Option<u32>) -> Document {
    let mut command = doc! { "serverStatus": 1 };
    for section in EXCLUDED_SECTIONS {
        command.insert(*section, 0);
    }
    if major_version.is_some_and(|major| major >= TICKETS_IN_QUEUES_SINCE) {
        command.insert("wiredTiger", 0);
    }
    command
}

/// The first major version that reports its write tickets in `queues.execution`.
const TICKETS_IN_QUEUES_SINCE: u32 = 8;

/// The major version in a reply's `version` ("8.0.28-12" is 8). `None` when it is missing or
/// does not start with a number. FerretDB reports the MongoDB version it emulates ("7.0.42"),
/// which is what the command's shape should follow anyway: it ignores exclusions.
pub fn major_version(reply: &Document) -> Option<u32> {
    let version = reply.get_str("version").ok()?;
    let digits = version
        .find(|c: char| !c.is_ascii_digit())
        .map_or(version, |end| &version[..end]);
    digits.parse().ok()
}

/// Cumulative counters read from one reply. `None` = the server does not report it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Process CPU time, user + system, microseconds since the server started.
    pub cpu_time_us: Option<u64>,
    /// Total time spent in write operations, microseconds since the server started.
    pub write_latency_us: Option<u64>,
    /// Write operations counted in `write_latency_us`.
    pub write_ops: Option<u64>,
    /// Total time spent in read operations, microseconds since the server started.
    pub read_latency_us: Option<u64>,
    /// Read operations counted in `read_latency_us`.
    pub read_ops: Option<u64>,
    /// Operations queued for the global lock right now (readers + writers).
    pub queued_ops: Option<u64>,
    /// Write execution tickets free right now.
    pub write_tickets_available: Option<i64>,
    /// Write execution tickets held right now.
    pub write_tickets_out: Option<i64>,
    /// The size of the write ticket pool right now. Fixed (128) up to 6.0; 7.0 and later size
    /// it dynamically, so `available` alone does not say how full the pool is.
    pub write_tickets_total: Option<i64>,
    /// The reply is a `mongos` router's: its CPU and lock queue are the router's own, not the
    /// shards', and it has no tickets.
    pub router: bool,
}

/// Where each version reports its write tickets, newest first: 8.0 moved them from
/// `wiredTiger.concurrentTransactions` (3.6 to 7.0) to `queues.execution`.
const WRITE_TICKET_SOURCES: &[&[&str]] = &[
    &["queues", "execution", "write"],
    &["wiredTiger", "concurrentTransactions", "write"],
];

/// Reads the counters out of one `serverStatus` reply. A field that is missing, of a
/// non-numeric type or out of range is `None`, never 0: a zero would read as an idle server.
pub fn parse(reply: &Document) -> Counters {
    let unsigned = |path: &[&str]| lookup(reply, path).and_then(to_u64);
    // Windows and 3.6 servers have an `extra_info` without these: no CPU signal from them.
    let cpu_time_us = unsigned(&["extra_info", "user_time_us"])
        .zip(unsigned(&["extra_info", "system_time_us"]))
        .and_then(|(user, system)| user.checked_add(system));
    // All ticket numbers come from one place, so a reply carrying both layouts cannot pair
    // one version's `available` with the other's `out`.
    let tickets = WRITE_TICKET_SOURCES
        .iter()
        .find_map(|path| lookup_document(reply, path));
    let ticket = |field: &str| tickets.and_then(|t| t.get(field)).and_then(to_i64);
    let (available, out) = (ticket("available"), ticket("out"));
    // Every real reply seen (3.6 to 8.0) has `totalTickets`; the sum is its definition, kept
    // for a server that leaves it out.
    let total = ticket("totalTickets").or_else(|| out?.checked_add(available?));
    Counters {
        cpu_time_us,
        write_latency_us: unsigned(&["opLatencies", "writes", "latency"]),
        write_ops: unsigned(&["opLatencies", "writes", "ops"]),
        read_latency_us: unsigned(&["opLatencies", "reads", "latency"]),
        read_ops: unsigned(&["opLatencies", "reads", "ops"]),
        queued_ops: unsigned(&["globalLock", "currentQueue", "total"]),
        write_tickets_available: available,
        write_tickets_out: out,
        write_tickets_total: total,
        router: is_router(reply),
    }
}

/// Whether the reply comes from a `mongos`. Every version names its binary in `process`
/// ("mongos"; Windows drops the ".exe"); 8.0 also lists its roles in `service` (["router"]).
pub fn is_router(reply: &Document) -> bool {
    let by_process = reply.get_str("process").is_ok_and(|p| p == "mongos");
    let by_service = reply.get_array("service").is_ok_and(|roles| {
        roles
            .iter()
            .any(|role| matches!(role, Bson::String(r) if r == "router"))
    });
    by_process || by_service
}

/// One interval's signals from two readings `elapsed` wall time apart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Interval {
    /// Server process CPU over the interval, percent of one core: 800 = eight busy cores.
    pub cpu_percent: Option<f64>,
    /// Mean seconds per write operation completed in the interval; `None` when none completed.
    pub write_latency: Option<f64>,
    /// Mean seconds per read operation completed in the interval; `None` when none completed.
    pub read_latency: Option<f64>,
    /// Operations queued at the end of the interval.
    pub queued_ops: Option<u64>,
    /// Write tickets free at the end of the interval.
    pub write_tickets_available: Option<i64>,
    /// The write ticket pool's size at the end of the interval.
    pub write_tickets_total: Option<i64>,
}

/// The signals between `before` and `after`. A counter that went backwards means the server
/// restarted in between, and its signal is `None` rather than a negative or wrapped number.
/// A zero `elapsed` is not an interval, so the rate signals are `None`; the gauges are
/// `after`'s either way.
pub fn interval(before: &Counters, after: &Counters, elapsed: Duration) -> Interval {
    let wall_us = elapsed.as_secs_f64() * 1e6;
    let measured = wall_us > 0.0;
    let cpu_percent = delta(before.cpu_time_us, after.cpu_time_us)
        .filter(|_| measured)
        .map(|cpu_us| cpu_us as f64 / wall_us * 100.0);
    let mean_latency = |latency_us: [Option<u64>; 2], ops: [Option<u64>; 2]| {
        delta(latency_us[0], latency_us[1])
            .zip(delta(ops[0], ops[1]))
            .filter(|&(_, ops)| measured && ops > 0)
            .map(|(latency_us, ops)| latency_us as f64 / ops as f64 / 1e6)
    };
    Interval {
        cpu_percent,
        write_latency: mean_latency(
            [before.write_latency_us, after.write_latency_us],
            [before.write_ops, after.write_ops],
        ),
        read_latency: mean_latency(
            [before.read_latency_us, after.read_latency_us],
            [before.read_ops, after.read_ops],
        ),
        queued_ops: after.queued_ops,
        write_tickets_available: after.write_tickets_available,
        write_tickets_total: after.write_tickets_total,
    }
}

fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    after?.checked_sub(before?)
}

fn lookup_document<'a>(reply: &'a Document, path: &[&str]) -> Option<&'a Document> {
    match lookup(reply, path)? {
        Bson::Document(document) => Some(document),
        _ => None,
    }
}

fn lookup<'a>(reply: &'a Document, path: &[&str]) -> Option<&'a Bson> {
    let (last, parents) = path.split_last()?;
    let mut document = reply;
    for key in parents {
        document = document.get_document(key).ok()?;
    }
    document.get(last)
}

// 2^64 and 2^63 are exact in f64; a double at or past them does not fit. The range checks
// also turn NaN and the infinities away.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Servers send these counters as Int64, but Int32 and Double occur too (small values, and
/// FerretDB), so any numeric type is taken.
fn to_u64(value: &Bson) -> Option<u64> {
    match *value {
        Bson::Int32(v) => u64::try_from(v).ok(),
        Bson::Int64(v) => u64::try_from(v).ok(),
        Bson::Double(v) if (0.0..TWO_POW_64).contains(&v) => Some(v as u64),
        _ => None,
    }
}

fn to_i64(value: &Bson) -> Option<i64> {
    match *value {
        Bson::Int32(v) => Some(i64::from(v)),
        Bson::Int64(v) => Some(v),
        Bson::Double(v) if (-TWO_POW_63..TWO_POW_63).contains(&v) => Some(v as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
