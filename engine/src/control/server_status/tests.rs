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
        "../../../tests/fixtures/server_status/mongodb-6.0.json"
    ))
}
fn mongodb_7_0() -> Document {
    fixture(include_str!(
        "../../../tests/fixtures/server_status/mongodb-7.0.json"
    ))
}
fn mongodb_8_0() -> Document {
    fixture(include_str!(
        "../../../tests/fixtures/server_status/mongodb-8.0.json"
    ))
}
fn ferretdb_1_24() -> Document {
    fixture(include_str!(
        "../../../tests/fixtures/server_status/ferretdb-1.24.json"
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
