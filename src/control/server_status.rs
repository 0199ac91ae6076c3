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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(json: &str) -> Document {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        match Bson::try_from(value).unwrap() {
            Bson::Document(document) => document,
            other => panic!("fixture is not a document: {other:?}"),
        }
    }

    fn mongodb_6_0() -> Document {
        fixture(include_str!(
            "../../tests/fixtures/server_status/mongodb-6.0.json"
        ))
    }
    fn mongodb_7_0() -> Document {
        fixture(include_str!(
            "../../tests/fixtures/server_status/mongodb-7.0.json"
        ))
    }
    fn mongodb_8_0() -> Document {
        fixture(include_str!(
            "../../tests/fixtures/server_status/mongodb-8.0.json"
        ))
    }
    fn ferretdb_1_24() -> Document {
        fixture(include_str!(
            "../../tests/fixtures/server_status/ferretdb-1.24.json"
        ))
    }

    /// Replaces the value at a dotted path, creating nothing: the path must exist.
    fn set(reply: &mut Document, path: &str, value: impl Into<Bson>) {
        let keys: Vec<&str> = path.split('.').collect();
        let (last, parents) = keys.split_last().unwrap();
        let mut document = reply;
        for key in parents {
            document = document.get_document_mut(key).unwrap();
        }
        assert!(document.contains_key(last), "{path} is not in the fixture");
        document.insert(*last, value.into());
    }

    fn remove(reply: &mut Document, path: &str) {
        let keys: Vec<&str> = path.split('.').collect();
        let (last, parents) = keys.split_last().unwrap();
        let mut document = reply;
        for key in parents {
            document = document.get_document_mut(key).unwrap();
        }
        assert!(
            document.remove(last).is_some(),
            "{path} is not in the fixture"
        );
    }

    #[test]
    fn command_keeps_what_the_parser_reads_and_drops_the_heavy_sections() {
        let command = command(Some(7));
        assert_eq!(
            command.keys().next().map(String::as_str),
            Some("serverStatus")
        );
        for kept in [
            "extra_info",
            "opLatencies",
            "globalLock",
            "queues",
            "wiredTiger",
        ] {
            assert!(!command.contains_key(kept), "{kept} must stay in the reply");
        }
        for dropped in [
            "metrics",
            "locks",
            "tcmalloc",
            "repl",
            "network",
            "opcounters",
        ] {
            assert_eq!(
                command.get_i32(dropped),
                Ok(0),
                "{dropped} should be excluded"
            );
        }
    }

    #[test]
    fn mongodb_6_0_reads_tickets_from_wired_tiger() {
        assert_eq!(
            parse(&mongodb_6_0()),
            Counters {
                cpu_time_us: Some(91_483_245_112 + 12_034_882_761),
                write_latency_us: Some(4_821_337_791),
                write_ops: Some(38_120_455),
                read_latency_us: Some(1_203_344_511),
                read_ops: Some(220_045_113),
                queued_ops: Some(3),
                write_tickets_available: Some(121),
                write_tickets_out: Some(7),
                write_tickets_total: Some(128),
                router: false,
            }
        );
    }

    #[test]
    fn mongodb_7_0_reads_tickets_from_wired_tiger() {
        assert_eq!(
            parse(&mongodb_7_0()),
            Counters {
                cpu_time_us: Some(52_310_998_231 + 7_133_120_981),
                write_latency_us: Some(2_210_554_872),
                write_ops: Some(19_022_371),
                read_latency_us: Some(611_203_877),
                read_ops: Some(98_120_334),
                queued_ops: Some(0),
                write_tickets_available: Some(14),
                write_tickets_out: Some(2),
                write_tickets_total: Some(16),
                router: false,
            }
        );
    }

    #[test]
    fn mongodb_8_0_reads_tickets_from_queues_execution() {
        assert_eq!(
            parse(&mongodb_8_0()),
            Counters {
                cpu_time_us: Some(17_220_331_458 + 2_877_612_094),
                write_latency_us: Some(733_210_554),
                write_ops: Some(8_120_945),
                read_latency_us: Some(244_120_087),
                read_ops: Some(41_220_398),
                queued_ops: Some(1),
                write_tickets_available: Some(11),
                write_tickets_out: Some(5),
                write_tickets_total: Some(16),
                router: false,
            }
        );
    }

    #[test]
    fn ferretdb_reports_none_of_the_signals() {
        // FerretDB calls itself 7.0.x in `version`; the parser must not trust that.
        let reply = ferretdb_1_24();
        assert_eq!(reply.get_str("process"), Ok("ferretdb-v1.24.2"));
        let counters = parse(&reply);
        assert_eq!(counters, Counters::default());
        let signals = interval(&counters, &counters, Duration::from_secs(5));
        assert_eq!(signals.cpu_percent, None);
        assert_eq!(signals.write_latency, None);
    }

    #[test]
    fn queues_execution_wins_when_both_ticket_layouts_are_present() {
        let mut reply = mongodb_8_0();
        let legacy = mongodb_6_0().get_document("wiredTiger").unwrap().clone();
        reply.insert("wiredTiger", legacy);
        let counters = parse(&reply);
        assert_eq!(counters.write_tickets_available, Some(11));
        assert_eq!(counters.write_tickets_out, Some(5));
    }

    #[test]
    fn interval_from_a_fixture_and_the_same_fixture_advanced() {
        let before_reply = mongodb_7_0();
        let mut after_reply = before_reply.clone();
        // Ten seconds in which the process used 32 core-seconds and 40 000 writes took
        // 100 s in total: 320% CPU and 2.5 ms per write.
        set(
            &mut after_reply,
            "extra_info.user_time_us",
            52_310_998_231_i64 + 30_000_000,
        );
        set(
            &mut after_reply,
            "extra_info.system_time_us",
            7_133_120_981_i64 + 2_000_000,
        );
        set(
            &mut after_reply,
            "opLatencies.writes.latency",
            2_210_554_872_i64 + 100_000_000,
        );
        set(
            &mut after_reply,
            "opLatencies.writes.ops",
            19_022_371_i64 + 40_000,
        );
        // And 2 000 reads took 3 s: 1.5 ms per read.
        set(
            &mut after_reply,
            "opLatencies.reads.latency",
            611_203_877_i64 + 3_000_000,
        );
        set(
            &mut after_reply,
            "opLatencies.reads.ops",
            98_120_334_i64 + 2_000,
        );
        set(&mut after_reply, "globalLock.currentQueue.total", 9);
        set(
            &mut after_reply,
            "wiredTiger.concurrentTransactions.write.available",
            0,
        );

        let signals = interval(
            &parse(&before_reply),
            &parse(&after_reply),
            Duration::from_secs(10),
        );
        let cpu = signals.cpu_percent.unwrap();
        assert!((cpu - 320.0).abs() < 1e-9, "cpu {cpu}");
        let latency = signals.write_latency.unwrap();
        assert!((latency - 0.0025).abs() < 1e-12, "latency {latency}");
        let read_latency = signals.read_latency.unwrap();
        assert!(
            (read_latency - 0.0015).abs() < 1e-12,
            "read latency {read_latency}"
        );
        assert_eq!(signals.write_tickets_total, Some(16));
        assert_eq!(signals.queued_ops, Some(9));
        assert_eq!(signals.write_tickets_available, Some(0));
    }

    #[test]
    fn no_writes_in_the_interval_is_no_latency_not_zero() {
        let counters = parse(&mongodb_8_0());
        let signals = interval(&counters, &counters, Duration::from_secs(1));
        assert_eq!(signals.cpu_percent, Some(0.0));
        assert_eq!(signals.write_latency, None);
        assert_eq!(signals.read_latency, None);
    }

    #[test]
    fn counters_that_went_backwards_give_none() {
        // A restart between readings: the 8.0 server's counters are far below 6.0's.
        let before = parse(&mongodb_6_0());
        let after = parse(&mongodb_8_0());
        let signals = interval(&before, &after, Duration::from_secs(5));
        assert_eq!(signals.cpu_percent, None);
        assert_eq!(signals.write_latency, None);
        // Gauges are not deltas: they still come through.
        assert_eq!(signals.queued_ops, Some(1));
        assert_eq!(signals.write_tickets_available, Some(11));
    }

    #[test]
    fn latency_counter_backwards_with_ops_forward_gives_none() {
        let before = parse(&mongodb_7_0());
        let after = Counters {
            write_latency_us: Some(1),
            write_ops: before.write_ops.map(|ops| ops + 10),
            ..before
        };
        assert_eq!(
            interval(&before, &after, Duration::from_secs(1)).write_latency,
            None
        );
    }

    #[test]
    fn zero_elapsed_gives_no_rates() {
        let before = parse(&mongodb_7_0());
        let after = Counters {
            cpu_time_us: before.cpu_time_us.map(|cpu| cpu + 1_000),
            write_latency_us: before.write_latency_us.map(|latency| latency + 1_000),
            write_ops: before.write_ops.map(|ops| ops + 1),
            ..before
        };
        let signals = interval(&before, &after, Duration::ZERO);
        assert_eq!(signals.cpu_percent, None);
        assert_eq!(signals.write_latency, None);
        assert_eq!(signals.queued_ops, Some(0));
    }

    #[test]
    fn wrong_types_give_none() {
        let mut reply = mongodb_6_0();
        set(&mut reply, "extra_info.user_time_us", "91483245112");
        set(&mut reply, "opLatencies.writes.latency", Bson::Null);
        set(&mut reply, "opLatencies.writes.ops", true);
        set(&mut reply, "globalLock.currentQueue.total", doc! { "n": 3 });
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.available",
            "121",
        );
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.out",
            Bson::Array(vec![]),
        );
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.totalTickets",
            Bson::Null,
        );
        set(&mut reply, "opLatencies.reads.latency", "1203344511");
        set(&mut reply, "opLatencies.reads.ops", Bson::Null);
        assert_eq!(parse(&reply), Counters::default());
    }

    #[test]
    fn a_section_of_the_wrong_type_gives_none() {
        let mut reply = mongodb_8_0();
        reply.insert("extra_info", "fields vary by platform");
        reply.insert("opLatencies", 7);
        reply.insert("queues", doc! { "execution": [1, 2] });
        let counters = parse(&reply);
        assert_eq!(counters.cpu_time_us, None);
        assert_eq!(counters.write_latency_us, None);
        assert_eq!(counters.write_ops, None);
        assert_eq!(counters.write_tickets_available, None);
        assert_eq!(counters.queued_ops, Some(1));
    }

    #[test]
    fn half_of_the_cpu_time_is_no_cpu_time() {
        let mut reply = mongodb_8_0();
        remove(&mut reply, "extra_info.system_time_us");
        assert_eq!(parse(&reply).cpu_time_us, None);
    }

    #[test]
    fn every_numeric_type_is_read() {
        let mut reply = mongodb_6_0();
        set(&mut reply, "extra_info.user_time_us", 1_000_i32);
        set(&mut reply, "extra_info.system_time_us", 250.0_f64);
        set(&mut reply, "opLatencies.writes.latency", 5e9_f64);
        set(&mut reply, "opLatencies.writes.ops", 3_i64);
        set(&mut reply, "globalLock.currentQueue.total", 4_i64);
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.available",
            12.0_f64,
        );
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.out",
            1_i64,
        );
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.totalTickets",
            13.0_f64,
        );
        set(&mut reply, "opLatencies.reads.latency", 7_i32);
        set(&mut reply, "opLatencies.reads.ops", 2.0_f64);
        assert_eq!(
            parse(&reply),
            Counters {
                cpu_time_us: Some(1_250),
                write_latency_us: Some(5_000_000_000),
                write_ops: Some(3),
                read_latency_us: Some(7),
                read_ops: Some(2),
                queued_ops: Some(4),
                write_tickets_available: Some(12),
                write_tickets_out: Some(1),
                write_tickets_total: Some(13),
                router: false,
            }
        );
    }

    #[test]
    fn negative_or_unrepresentable_numbers_give_none() {
        let mut reply = mongodb_6_0();
        set(&mut reply, "extra_info.user_time_us", -1_i64);
        set(&mut reply, "opLatencies.writes.latency", f64::NAN);
        set(&mut reply, "opLatencies.writes.ops", -0.5_f64);
        set(&mut reply, "globalLock.currentQueue.total", f64::INFINITY);
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.available",
            1e19_f64,
        );
        let counters = parse(&reply);
        assert_eq!(counters.cpu_time_us, None);
        assert_eq!(counters.write_latency_us, None);
        assert_eq!(counters.write_ops, None);
        assert_eq!(counters.queued_ops, None);
        assert_eq!(counters.write_tickets_available, None);
        // A negative ticket count is odd but representable, so it is passed on as reported.
        set(
            &mut reply,
            "wiredTiger.concurrentTransactions.write.available",
            -2_i32,
        );
        assert_eq!(parse(&reply).write_tickets_available, Some(-2));
    }

    #[test]
    fn from_8_0_the_command_leaves_wired_tiger_out() {
        for (major, excluded) in [
            (None, false),
            (Some(3), false),
            (Some(7), false),
            (Some(8), true),
            (Some(9), true),
        ] {
            let command = command(major);
            assert_eq!(
                command.get_i32("wiredTiger").is_ok(),
                excluded,
                "major version {major:?}: {command}"
            );
            // Everything else is the same whatever the version.
            for kept in ["extra_info", "opLatencies", "globalLock", "queues"] {
                assert!(!command.contains_key(kept), "{kept} must stay in the reply");
            }
        }
    }

    #[test]
    fn the_major_version_is_read_from_the_reply() {
        assert_eq!(major_version(&mongodb_6_0()), Some(6));
        assert_eq!(major_version(&mongodb_7_0()), Some(7));
        assert_eq!(major_version(&mongodb_8_0()), Some(8));
        // FerretDB says 7.0.42: the command keeps `wiredTiger`, which FerretDB ignores anyway.
        assert_eq!(major_version(&ferretdb_1_24()), Some(7));
        for (version, major) in [
            (Bson::from("8.0.28-12"), Some(8)),
            (Bson::from("10.1.0-rc0"), Some(10)),
            (Bson::from("8"), Some(8)),
            (Bson::from("v8.0.0"), None),
            (Bson::from(""), None),
            (Bson::from(8), None),
            (Bson::from("99999999999.0"), None),
        ] {
            assert_eq!(
                major_version(&doc! { "version": version.clone() }),
                major,
                "{version}"
            );
        }
        assert_eq!(major_version(&Document::new()), None);
    }

    #[test]
    fn a_missing_ticket_total_is_out_plus_available() {
        let mut reply = mongodb_8_0();
        remove(&mut reply, "queues.execution.write.totalTickets");
        assert_eq!(parse(&reply).write_tickets_total, Some(5 + 11));
        remove(&mut reply, "queues.execution.write.out");
        assert_eq!(parse(&reply).write_tickets_total, None);
    }

    #[test]
    fn a_router_is_known_by_its_process_or_its_service() {
        assert!(!parse(&mongodb_8_0()).router);
        assert!(!parse(&ferretdb_1_24()).router);
        let mut reply = mongodb_7_0();
        set(&mut reply, "process", "mongos");
        assert!(parse(&reply).router);
        // 8.0 names its roles too; either is enough.
        let mut reply = mongodb_8_0();
        reply.insert("service", vec![Bson::from("router")]);
        assert!(parse(&reply).router);
        reply.insert("service", vec![Bson::from("shard")]);
        assert!(!parse(&reply).router);
    }

    #[test]
    fn an_empty_reply_gives_nothing() {
        assert_eq!(parse(&Document::new()), Counters::default());
    }

    fn any_bson() -> impl Strategy<Value = Bson> {
        prop_oneof![
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            any::<f64>().prop_map(Bson::Double),
            Just(Bson::Null),
            any::<bool>().prop_map(Bson::Boolean),
            ".{0,8}".prop_map(Bson::String),
            any::<i64>().prop_map(|v| Bson::Document(doc! { "v": v })),
        ]
    }

    fn any_counters() -> impl Strategy<Value = Counters> {
        let counter = || proptest::option::of(any::<u64>());
        (
            counter(),
            counter(),
            counter(),
            counter(),
            counter(),
            counter(),
        )
            .prop_map(
                |(cpu, latency, ops, read_latency, read_ops, queued)| Counters {
                    cpu_time_us: cpu,
                    write_latency_us: latency,
                    write_ops: ops,
                    read_latency_us: read_latency,
                    read_ops,
                    queued_ops: queued,
                    ..Counters::default()
                },
            )
    }

    proptest! {
        #[test]
        fn signals_are_never_negative_or_nan(
            before in any_counters(),
            after in any_counters(),
            elapsed_us in any::<u64>(),
        ) {
            let signals = interval(&before, &after, Duration::from_micros(elapsed_us));
            if let Some(cpu) = signals.cpu_percent {
                prop_assert!(cpu.is_finite() && cpu >= 0.0, "cpu {}", cpu);
            }
            for latency in [signals.write_latency, signals.read_latency].into_iter().flatten() {
                prop_assert!(latency.is_finite() && latency >= 0.0, "latency {}", latency);
            }
        }

        #[test]
        fn any_value_in_any_field_parses_without_panicking(
            user in any_bson(),
            system in any_bson(),
            latency in any_bson(),
            ops in any_bson(),
            queued in any_bson(),
            available in any_bson(),
        ) {
            let reply = doc! {
                "extra_info": { "user_time_us": user.clone(), "system_time_us": system },
                "opLatencies": { "writes": { "latency": latency, "ops": ops.clone() } },
                "globalLock": { "currentQueue": { "total": queued } },
                "queues": { "execution": { "write": { "available": available.clone() } } },
            };
            let counters = parse(&reply);
            match ops {
                Bson::Int32(v) => prop_assert_eq!(counters.write_ops, u64::try_from(v).ok()),
                Bson::Int64(v) => prop_assert_eq!(counters.write_ops, u64::try_from(v).ok()),
                Bson::Double(_) => {}
                _ => prop_assert_eq!(counters.write_ops, None),
            }
            match available {
                Bson::Int32(v) => {
                    prop_assert_eq!(counters.write_tickets_available, Some(i64::from(v)));
                }
                Bson::Int64(v) => prop_assert_eq!(counters.write_tickets_available, Some(v)),
                Bson::Double(_) => {}
                _ => prop_assert_eq!(counters.write_tickets_available, None),
            }
            if !matches!(user, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_)) {
                prop_assert_eq!(counters.cpu_time_us, None);
            }
        }
    }
}
