//! `server_status` and the probe's reading against real `serverStatus` replies of MongoDB 3.6 to
//! 8.0 (replica-set members, a shard member, mongos routers, a Windows 4.2 server), and pairs of
//! replies of one server N seconds apart under load.
//!
//! The replies are not in this repository: several are GPL-3.0, so they are read where they
//! are kept, `../shared/mongodb-serverstatus/` beside the checkout (or the directory named by
//! `TIDEGATE_SERVERSTATUS_REPLIES`); without them each test fails, unless skips are allowed
//! (`common::skip`). Their
//! origins and licences are in that directory's `SOURCES.md`.
//!
//! What the parser should find is read from each file's JSON by a reader of its own (Extended
//! JSON's number wrappers, or plain JSON numbers), not through `bson`, and which signals each
//! file carries is written down per file in [`EXPECTED`] from SOURCES.md and the files.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mongodb::bson::{Bson, Document};
use serde_json::Value;
use tidegate::control::probe::server_status_reading;
use tidegate::control::server_status::{self, Counters};

/// The replies' directory, or `None` (with the message saying so) when it is absent.
fn replies_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TIDEGATE_SERVERSTATUS_REPLIES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/mongodb-serverstatus"),
        PathBuf::from,
    );
    if dir.is_dir() {
        Some(dir)
    } else {
        common::skip(&format!(
            "no real serverStatus replies at {} (set TIDEGATE_SERVERSTATUS_REPLIES)",
            dir.display()
        ));
        None
    }
}

/// Where the write tickets are in a reply.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tickets {
    /// `wiredTiger.concurrentTransactions.write` (3.6 to 7.0).
    WiredTiger,
    /// `queues.execution.write` (8.0 on).
    Queues,
    Absent,
}

/// Which of the probe's fields one file holds, from SOURCES.md and a look at the file.
struct Expected {
    /// A part of the file name that no other entry's file has.
    file: &'static str,
    major: Option<u32>,
    router: bool,
    cpu: bool,
    writes: bool,
    reads: bool,
    queue: bool,
    tickets: Tickets,
    /// Extended JSON with the server's own BSON types (FTDC captures and the shell prints
    /// converted from `NumberLong`): the counters must come through as Int64 and the queue and
    /// tickets as Int32. The others are plain JSON, whose types are lost.
    typed: bool,
}

const fn expected(
    file: &'static str,
    major: Option<u32>,
    router: bool,
    [cpu, writes, reads, queue]: [bool; 4],
    tickets: Tickets,
    typed: bool,
) -> Expected {
    Expected {
        file,
        major,
        router,
        cpu,
        writes,
        reads,
        queue,
        tickets,
        typed,
    }
}

use Tickets::{Absent, Queues, WiredTiger};

const ALL: [bool; 4] = [true; 4];

const EXPECTED: &[Expected] = &[
    // 6.0.12 on Kubernetes, printed by mongosh (`Long()` kept).
    expected("kubedb-files__", Some(6), false, ALL, WiredTiger, true),
    // Windows has no CPU times in `extra_info`.
    expected(
        "4.2.2-windows",
        Some(4),
        false,
        [false, true, true, true],
        WiredTiger,
        true,
    ),
    // Atlas M10 rows of flattened FTDC, re-nested: no reads, and a `version` that is a note
    // starting with the version.
    expected(
        "atlas-8.0.16",
        Some(8),
        false,
        [true, true, false, true],
        Queues,
        true,
    ),
    expected("metrics.interim", Some(8), false, ALL, Queues, true),
    expected("ftdc-rs__", Some(8), false, ALL, Queues, true),
    // 6.0's mongos has neither `opLatencies` nor `globalLock`.
    expected(
        "mongos60",
        Some(6),
        true,
        [true, false, false, false],
        Absent,
        true,
    ),
    expected(
        "mongos70",
        Some(7),
        true,
        [true, true, true, false],
        Absent,
        true,
    ),
    // 8.0's mongos reports a `globalLock.currentQueue`: the router's own.
    expected("mongos80", Some(8), true, ALL, Absent, true),
    expected("rs-mongo03", Some(8), false, ALL, Queues, true),
    expected("rs60-mongo01", Some(6), false, ALL, WiredTiger, true),
    expected("rs70-mongo01", Some(7), false, ALL, WiredTiger, true),
    expected("shard80", Some(8), false, ALL, Queues, true),
    expected(
        "v5.0.0_serverStatus",
        Some(5),
        false,
        ALL,
        WiredTiger,
        false,
    ),
    // 3.6 has no CPU times in `extra_info`.
    expected(
        "diagnostic_data_3.6",
        Some(3),
        false,
        [false, true, true, true],
        WiredTiger,
        false,
    ),
    expected(
        "get_diagnostic_data.serverStatus",
        Some(4),
        false,
        ALL,
        WiredTiger,
        false,
    ),
    // An excerpt: `opLatencies` and `metrics.query` only, no `version`.
    expected(
        "get_diagnostic_data_8.3@",
        None,
        false,
        [false, true, true, false],
        Absent,
        false,
    ),
];

struct Reply {
    name: String,
    json: Value,
    document: Document,
}

/// Every reply in `dir`: the `.json` files that are not FTDC metadata documents.
fn replies(dir: &Path) -> Vec<Reply> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the replies' directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json") && !name.ends_with(".metadata.json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("read a reply");
            let json: Value = serde_json::from_str(&text).expect("a reply is JSON");
            // bson's own Extended JSON reading (canonical and relaxed), as a driver would
            // hand the reply over.
            let document = match Bson::try_from(json.clone()) {
                Ok(Bson::Document(document)) => document,
                other => panic!("{name} is not an Extended JSON document: {other:?}"),
            };
            Reply {
                name,
                json,
                document,
            }
        })
        .collect()
}

fn expected_for(name: &str) -> &'static Expected {
    let matching: Vec<&Expected> = EXPECTED.iter().filter(|e| name.contains(e.file)).collect();
    match matching.as_slice() {
        [one] => one,
        _ => panic!(
            "{name}: {} entries of EXPECTED match it; say what it holds",
            matching.len()
        ),
    }
}

/// A number as the file spells it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int32(f64),
    Int64(f64),
    Double(f64),
    /// A plain JSON number: the BSON type was lost before the file was written.
    Plain(f64),
}

impl Number {
    fn value(self) -> f64 {
        match self {
            Number::Int32(v) | Number::Int64(v) | Number::Double(v) | Number::Plain(v) => v,
        }
    }
}

fn raw<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(json, |value, key| value.get(key))
}

fn number(json: &Value, path: &str) -> Option<Number> {
    let value = raw(json, path)?;
    if let Some(n) = value.as_f64() {
        return Some(Number::Plain(n));
    }
    let wrapped = |key: &str| value.get(key)?.as_str()?.parse::<f64>().ok();
    wrapped("$numberInt")
        .map(Number::Int32)
        .or_else(|| wrapped("$numberLong").map(Number::Int64))
        .or_else(|| wrapped("$numberDouble").map(Number::Double))
}

/// The counters in these files are below 2^53, so f64 holds them exactly.
fn count(json: &Value, path: &str) -> Option<u64> {
    let n = number(json, path)?.value();
    assert!(
        (0.0..9_007_199_254_740_992.0).contains(&n) && n.fract() == 0.0,
        "{path} = {n} is not a whole count"
    );
    Some(n as u64)
}

fn gauge(json: &Value, path: &str) -> Option<i64> {
    number(json, path).map(|n| n.value() as i64)
}

const CPU: [&str; 2] = ["extra_info.user_time_us", "extra_info.system_time_us"];
const WRITES: [&str; 2] = ["opLatencies.writes.latency", "opLatencies.writes.ops"];
const READS: [&str; 2] = ["opLatencies.reads.latency", "opLatencies.reads.ops"];
const QUEUE: &str = "globalLock.currentQueue.total";
const WIRED_TIGER_TICKETS: &str = "wiredTiger.concurrentTransactions.write";
const QUEUES_TICKETS: &str = "queues.execution.write";

fn tickets_in(json: &Value) -> Tickets {
    if raw(json, QUEUES_TICKETS).is_some_and(Value::is_object) {
        Queues
    } else if raw(json, WIRED_TIGER_TICKETS).is_some_and(Value::is_object) {
        WiredTiger
    } else {
        Absent
    }
}

/// The document holding the write tickets, as a dotted path.
fn tickets_path(json: &Value) -> Option<&'static str> {
    match tickets_in(json) {
        Queues => Some(QUEUES_TICKETS),
        WiredTiger => Some(WIRED_TIGER_TICKETS),
        Absent => None,
    }
}

/// The counters the file holds, read without the parser.
fn counters_in(json: &Value) -> Counters {
    let cpu = count(json, CPU[0]).zip(count(json, CPU[1]));
    let tickets = tickets_path(json);
    let ticket = |field: &str| tickets.and_then(|t| gauge(json, &format!("{t}.{field}")));
    let process = raw(json, "process").and_then(Value::as_str);
    let services = raw(json, "service").and_then(Value::as_array);
    Counters {
        cpu_time_us: cpu.map(|(user, system)| user + system),
        write_latency_us: count(json, WRITES[0]),
        write_ops: count(json, WRITES[1]),
        read_latency_us: count(json, READS[0]),
        read_ops: count(json, READS[1]),
        queued_ops: count(json, QUEUE),
        write_tickets_available: ticket("available"),
        write_tickets_out: ticket("out"),
        write_tickets_total: ticket("totalTickets"),
        router: process == Some("mongos")
            || services.is_some_and(|s| s.iter().any(|r| r == "router")),
    }
}

#[test]
fn every_reply_is_parsed_as_it_reads() {
    let Some(dir) = replies_dir() else { return };
    let replies = replies(&dir);
    assert!(
        replies.len() >= 25,
        "only {} replies in {}",
        replies.len(),
        dir.display()
    );
    for entry in EXPECTED {
        assert!(
            replies.iter().any(|r| r.name.contains(entry.file)),
            "no reply matches {:?}",
            entry.file
        );
    }
    for reply in &replies {
        let name = reply.name.as_str();
        let expected = expected_for(name);
        let json = &reply.json;
        let want = counters_in(json);
        let got = server_status::parse(&reply.document);

        // The file holds what it is said to hold...
        let has = |paths: [&str; 2]| paths.iter().all(|p| number(json, p).is_some());
        assert_eq!(has(CPU), expected.cpu, "{name}: CPU times");
        assert_eq!(has(WRITES), expected.writes, "{name}: opLatencies.writes");
        assert_eq!(has(READS), expected.reads, "{name}: opLatencies.reads");
        assert_eq!(
            number(json, QUEUE).is_some(),
            expected.queue,
            "{name}: globalLock"
        );
        assert_eq!(tickets_in(json), expected.tickets, "{name}: tickets");
        // ... and the parser finds all of it.
        assert_eq!(got, want, "{name}");
        assert_eq!(got.cpu_time_us.is_some(), expected.cpu, "{name}");
        assert_eq!(got.write_ops.is_some(), expected.writes, "{name}");
        assert_eq!(got.read_ops.is_some(), expected.reads, "{name}");
        assert_eq!(got.queued_ops.is_some(), expected.queue, "{name}");
        let has_tickets = expected.tickets != Absent;
        assert_eq!(got.write_tickets_available.is_some(), has_tickets, "{name}");
        assert_eq!(got.write_tickets_total.is_some(), has_tickets, "{name}");
        if let (Some(out), Some(available), Some(total)) = (
            got.write_tickets_out,
            got.write_tickets_available,
            got.write_tickets_total,
        ) {
            assert_eq!(
                out + available,
                total,
                "{name}: the pool is out + available"
            );
        }
        assert_eq!(got.router, expected.router, "{name}: router");
        assert_eq!(
            server_status::is_router(&reply.document),
            expected.router,
            "{name}"
        );

        if expected.typed {
            assert_types(name, json, &reply.document);
        }
    }
}

/// The Int64 counters and Int32 gauges the server sent come through `bson` as such.
fn assert_types(name: &str, json: &Value, document: &Document) {
    let bson_at = |path: &str| {
        let (parents, last) = path.rsplit_once('.').expect("a dotted path");
        parents
            .split('.')
            .try_fold(document, |d, key| d.get_document(key).ok())
            .and_then(|d| d.get(last))
    };
    let longs = CPU.iter().chain(&WRITES).chain(&READS);
    for path in longs {
        if number(json, path).is_some() {
            assert!(
                matches!(bson_at(path), Some(Bson::Int64(_))),
                "{name}: {path} should be Int64, is {:?}",
                bson_at(path)
            );
        }
    }
    let tickets = tickets_path(json);
    let ints = tickets
        .into_iter()
        .flat_map(|t| ["out", "available", "totalTickets"].map(|f| format!("{t}.{f}")))
        .chain(number(json, QUEUE).map(|_| QUEUE.to_owned()));
    for path in ints {
        assert!(
            matches!(bson_at(&path), Some(Bson::Int32(_))),
            "{name}: {path} should be Int32, is {:?}",
            bson_at(&path)
        );
    }
}

#[test]
fn from_8_0_the_probe_leaves_wired_tiger_out_and_loses_nothing() {
    let Some(dir) = replies_dir() else { return };
    let mut checked = [0, 0];
    for reply in replies(&dir) {
        let name = reply.name.as_str();
        let expected = expected_for(name);
        let major = server_status::major_version(&reply.document);
        assert_eq!(major, expected.major, "{name}: version");
        let command = server_status::command(major);
        let excluded = command.get_i32("wiredTiger") == Ok(0);
        assert_eq!(excluded, major.is_some_and(|m| m >= 8), "{name}: {command}");
        if !reply.document.contains_key("wiredTiger") {
            continue;
        }
        // What the reply would be without the section: nothing the parser reads may go with
        // it on a server the command leaves it out for, and tickets do go on one it keeps it.
        let (full, trimmed) = (
            server_status::parse(&reply.document),
            server_status::parse(&without_section(&reply.document)),
        );
        if excluded {
            assert_eq!(
                trimmed, full,
                "{name}: wiredTiger held something the probe reads"
            );
            // What leaving it out saves: the reply as the command asks for it, with and
            // without the section.
            let mut asked = reply.document.clone();
            for (section, value) in &command {
                if value == &Bson::Int32(0) && section != "wiredTiger" {
                    asked.remove(section);
                }
            }
            let size = |d: &Document| {
                let mut bytes = Vec::new();
                d.to_writer(&mut bytes).expect("BSON");
                bytes.len()
            };
            let with = size(&asked);
            let section = with - size(&without_section(&asked));
            println!("{name}: wiredTiger is {section} of {with} bytes asked for");
            assert!(section * 2 > with, "{name}: {section} of {with} bytes");
            checked[0] += 1;
        } else {
            assert_eq!(expected.tickets, WiredTiger, "{name}");
            assert_eq!(trimmed.write_tickets_available, None, "{name}");
            checked[1] += 1;
        }
    }
    assert!(
        checked[0] >= 4 && checked[1] >= 4,
        "too few replies with wiredTiger: {checked:?}"
    );
}

fn without_section(reply: &Document) -> Document {
    let mut reply = reply.clone();
    reply.remove("wiredTiger");
    reply
}

/// Two replies of one server and the seconds between them.
struct Pair {
    before: Reply,
    after: Reply,
    seconds: u64,
}

/// `X.ref.json` with its `X.plusN.json` (N from the name, and checked against `localTime`),
/// and the Atlas rows `X.first.json` with `X.last.json` (seconds from `localTime`).
fn pairs(replies: Vec<Reply>) -> Vec<Pair> {
    let mut pairs = Vec::new();
    let find = |replies: &[Reply], name: &str| {
        replies
            .iter()
            .position(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} has no partner"))
    };
    let mut rest = replies;
    while let Some(i) = rest
        .iter()
        .position(|r| r.name.ends_with(".ref.json") || r.name.ends_with(".first.json"))
    {
        let before = rest.remove(i);
        let (after, seconds) = if let Some(stem) = before.name.strip_suffix(".first.json") {
            let after = rest.remove(find(&rest, &format!("{stem}.last.json")));
            let at = |r: &Reply| {
                let text = raw(&r.json, "localTime")
                    .and_then(Value::as_str)
                    .expect("localTime");
                chrono::DateTime::parse_from_rfc3339(text).expect("an RFC 3339 localTime")
            };
            let seconds = (at(&after) - at(&before)).num_seconds();
            (after, u64::try_from(seconds).expect("after is later"))
        } else {
            let stem = before.name.trim_end_matches(".ref.json");
            let j = rest
                .iter()
                .position(|r| r.name.starts_with(&format!("{stem}.plus")))
                .unwrap_or_else(|| panic!("{} has no partner", before.name));
            let after = rest.remove(j);
            let seconds: u64 = after.name[stem.len() + ".plus".len()..]
                .trim_end_matches(".json")
                .parse()
                .expect("plusN.json");
            let millis = |r: &Reply| match r.document.get("localTime") {
                Some(Bson::DateTime(at)) => at.timestamp_millis(),
                other => panic!("{}: localTime is {other:?}", r.name),
            };
            let apart = millis(&after) - millis(&before);
            assert!(
                (apart - 1000 * seconds as i64).abs() <= 1_000,
                "{}: localTime says {apart} ms apart, the name {seconds} s",
                after.name
            );
            (after, seconds)
        };
        pairs.push(Pair {
            before,
            after,
            seconds,
        });
    }
    pairs
}

/// Mean seconds per operation between two readings of `[latency, ops]`, from the files.
fn mean(before: &Value, after: &Value, paths: [&str; 2]) -> Option<f64> {
    let delta = |path| Some(count(after, path)? - count(before, path)?);
    let (latency_us, ops) = (delta(paths[0])?, delta(paths[1])?);
    (ops > 0).then(|| latency_us as f64 / ops as f64 / 1e6)
}

fn close(got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
        (g, w) => g == w,
    }
}

#[test]
fn each_pair_gives_the_rates_its_two_replies_imply() {
    let Some(dir) = replies_dir() else { return };
    let pairs = pairs(replies(&dir));
    assert!(pairs.len() >= 10, "only {} pairs", pairs.len());
    for Pair {
        before,
        after,
        seconds,
    } in &pairs
    {
        let name = after.name.as_str();
        let (b, a) = (&before.json, &after.json);
        let cpu_us = |json: &Value| Some(count(json, CPU[0])? + count(json, CPU[1])?);
        let want_cpu = cpu_us(a)
            .zip(cpu_us(b))
            .map(|(a, b)| (a - b) as f64 / (*seconds as f64 * 1e6) * 100.0);
        let want_writes = mean(b, a, WRITES);
        let want_reads = mean(b, a, READS);

        let signals = server_status::interval(
            &server_status::parse(&before.document),
            &server_status::parse(&after.document),
            Duration::from_secs(*seconds),
        );
        assert!(
            close(signals.cpu_percent, want_cpu),
            "{name}: CPU {:?}, the files say {want_cpu:?}",
            signals.cpu_percent
        );
        assert!(
            close(signals.write_latency, want_writes),
            "{name}: write latency {:?}, the files say {want_writes:?}",
            signals.write_latency
        );
        assert!(
            close(signals.read_latency, want_reads),
            "{name}: read latency {:?}, the files say {want_reads:?}",
            signals.read_latency
        );
        assert_eq!(signals.queued_ops, count(a, QUEUE), "{name}");
        let tickets = tickets_path(a);
        let ticket = |field: &str| tickets.and_then(|t| gauge(a, &format!("{t}.{field}")));
        assert_eq!(
            signals.write_tickets_available,
            ticket("available"),
            "{name}"
        );
        assert_eq!(
            signals.write_tickets_total,
            ticket("totalTickets"),
            "{name}"
        );
        println!(
            "{name}: {seconds} s, CPU {want_cpu:.1?}%, writes {:.2?} ms, reads {:.3?} ms",
            want_writes.map(|s| s * 1e3),
            want_reads.map(|s| s * 1e3)
        );
    }

    // The pair under a write load, against what its README says of it: ~399% CPU and ~29 ms
    // per write over 299 s.
    let loaded = pairs
        .iter()
        .find(|p| p.after.name.contains("ftdc-rs") && p.seconds == 299)
        .expect("the 8.0.28 pair under load");
    let signals = server_status::interval(
        &server_status::parse(&loaded.before.document),
        &server_status::parse(&loaded.after.document),
        Duration::from_secs(loaded.seconds),
    );
    let cpu = signals.cpu_percent.expect("CPU");
    assert!((cpu - 399.0).abs() < 1.0, "CPU {cpu}");
    let write = signals.write_latency.expect("write latency");
    assert!((write - 0.029).abs() < 0.0005, "write latency {write}");
    let read = signals.read_latency.expect("read latency");
    assert!(read > 0.0 && read < write, "read latency {read}");
}

#[test]
fn through_a_mongos_the_probe_gives_latencies_and_says_it_is_a_router() {
    let Some(dir) = replies_dir() else { return };
    let pairs = pairs(replies(&dir));
    let mut routers = 0;
    for pair in &pairs {
        let name = pair.after.name.as_str();
        let (before, after) = (
            server_status::parse(&pair.before.document),
            server_status::parse(&pair.after.document),
        );
        let rates = server_status::interval(&before, &after, Duration::from_secs(pair.seconds));
        let reading = server_status_reading(&after, Some(&rates));
        let expected = expected_for(name);
        assert_eq!(reading.router, expected.router, "{name}");
        if !expected.router {
            assert_eq!(reading.cpu_percent, rates.cpu_percent, "{name}");
            assert_eq!(reading.queued_ops, rates.queued_ops, "{name}");
            continue;
        }
        routers += 1;
        // The router's own CPU (it does use some) and lock queue are not the shards' load.
        assert!(rates.cpu_percent.is_some_and(|cpu| cpu > 0.0), "{name}");
        assert_eq!(reading.cpu_percent, None, "{name}");
        assert_eq!(reading.queued_ops, None, "{name}");
        assert_eq!(reading.write_tickets, None, "{name}");
        for signal in ["cpu", "queued_ops", "write_tickets"] {
            assert!(reading.unreported.contains(&signal), "{name}: {signal}");
        }
        assert_eq!(reading.write_latency, rates.write_latency, "{name}");
        assert_eq!(reading.read_latency, rates.read_latency, "{name}");
        assert_eq!(
            reading.unreported.contains(&"write_latency"),
            !expected.writes,
            "{name}"
        );
    }
    assert_eq!(routers, 3, "mongos 6.0, 7.0 and 8.0");
}
