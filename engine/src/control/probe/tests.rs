use super::*;
use serde_json::json;

#[test]
fn an_instant_vector_gives_its_largest_value() {
    let body = json!({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"instance": "a"}, "value": [1.0, "120.5"]},
        {"metric": {"instance": "b"}, "value": [1.0, "310"]},
    ]}});
    assert_eq!(parse_vector(&body), Ok(Some(310.0)));
}

#[test]
fn no_series_or_nan_is_no_value_and_errors_say_why() {
    let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
    assert_eq!(parse_vector(&empty), Ok(None));
    let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, "NaN"]}]}});
    assert_eq!(parse_vector(&nan), Ok(None));
    let bad = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
    assert!(parse_vector(&bad).is_err_and(|e| e.contains("parse error")));
    let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
    assert!(parse_vector(&matrix).is_err());
}

struct Fixed(Result<Reading, &'static str>);
impl Probe for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn sample(&mut self) -> BoxFuture<'_, Result<Reading, ProbeError>> {
        let r = self.0.clone().map_err(|m| ProbeError {
            probe: "fixed",
            message: m.into(),
        });
        Box::pin(async move { r })
    }
}

#[tokio::test]
async fn the_first_source_to_report_a_signal_gives_it() {
    let prometheus = Reading {
        cpu_percent: Some(150.0),
        read_latency: Some(0.004),
        unreported: vec!["write_latency", "queued_ops", "write_tickets"],
        ..Reading::default()
    };
    let server = Reading {
        cpu_percent: Some(90.0),
        read_latency: Some(0.002),
        queued_ops: Some(3),
        write_tickets_total: Some(128),
        router: true,
        unreported: vec!["write_latency", "write_tickets"],
        ..Reading::default()
    };
    let mut probes = Probes::new(vec![
        Box::new(Fixed(Ok(prometheus))),
        Box::new(Fixed(Ok(server))),
    ]);
    let r = probes.sample().await.expect("both sources answer");
    assert_eq!(r.cpu_percent, Some(150.0));
    assert_eq!(r.read_latency, Some(0.004));
    assert_eq!(r.queued_ops, Some(3));
    assert_eq!(r.write_tickets_total, Some(128));
    assert!(r.router, "a router behind any source is worth a warning");
    assert_eq!(r.unreported, vec!["write_latency", "write_tickets"]);
}

#[tokio::test]
async fn a_signal_neither_source_reports_is_unreported() {
    let only_cpu = Reading {
        cpu_percent: Some(10.0),
        unreported: vec![
            "write_latency",
            "read_latency",
            "queued_ops",
            "write_tickets",
        ],
        ..Reading::default()
    };
    let mut probes = Probes::new(vec![
        Box::new(Fixed(Ok(only_cpu.clone()))),
        Box::new(Fixed(Ok(only_cpu))),
    ]);
    let r = probes.sample().await.expect("both sources answer");
    assert_eq!(
        r.unreported,
        vec![
            "write_latency",
            "read_latency",
            "queued_ops",
            "write_tickets"
        ]
    );
    assert!(!r.router);
}

fn counters() -> Counters {
    Counters {
        cpu_time_us: Some(5_000_000),
        write_latency_us: Some(1_000),
        write_ops: Some(10),
        read_latency_us: Some(2_000),
        read_ops: Some(40),
        queued_ops: Some(2),
        write_tickets_available: Some(20),
        write_tickets_out: Some(0),
        write_tickets_total: Some(20),
        router: false,
    }
}

/// `before` advanced by one second: 1.5 cores busy, 4 writes of 5 ms, 10 reads of 1 ms.
fn one_second_later(before: &Counters) -> Counters {
    let add = |counter: Option<u64>, by: u64| counter.map(|c| c + by);
    Counters {
        cpu_time_us: add(before.cpu_time_us, 1_500_000),
        write_latency_us: add(before.write_latency_us, 20_000),
        write_ops: add(before.write_ops, 4),
        read_latency_us: add(before.read_latency_us, 10_000),
        read_ops: add(before.read_ops, 10),
        ..*before
    }
}

#[test]
fn the_first_server_status_reading_primes_the_rates_and_reports_every_signal() {
    let reading = server_status_reading(&counters(), None);
    assert_eq!(reading.cpu_percent, None);
    assert_eq!(reading.write_latency, None);
    assert_eq!(reading.read_latency, None);
    assert_eq!(reading.queued_ops, Some(2));
    assert_eq!(reading.write_tickets, Some(20));
    assert_eq!(reading.write_tickets_total, Some(20));
    assert!(reading.unreported.is_empty(), "{:?}", reading.unreported);
    assert!(!reading.router);
}

#[test]
fn a_server_status_reading_gives_the_rates_over_the_interval() {
    let before = counters();
    let after = one_second_later(&before);
    let rates = server_status::interval(&before, &after, Duration::from_secs(1));
    let reading = server_status_reading(&after, Some(&rates));
    assert_eq!(reading.cpu_percent, Some(150.0));
    assert_eq!(reading.write_latency, Some(0.005));
    assert_eq!(reading.read_latency, Some(0.001));
}

#[test]
fn through_a_router_only_the_latencies_count() {
    let before = Counters {
        router: true,
        ..counters()
    };
    let after = one_second_later(&before);
    let rates = server_status::interval(&before, &after, Duration::from_secs(1));
    let reading = server_status_reading(&after, Some(&rates));
    assert!(reading.router);
    assert_eq!(reading.cpu_percent, None);
    assert_eq!(reading.queued_ops, None);
    assert_eq!(reading.write_tickets, None);
    assert_eq!(reading.write_tickets_total, None);
    assert_eq!(reading.write_latency, Some(0.005));
    assert_eq!(reading.read_latency, Some(0.001));
    assert_eq!(
        reading.unreported,
        vec!["cpu", "queued_ops", "write_tickets"]
    );
}

#[test]
fn a_server_reporting_nothing_has_every_signal_unreported() {
    let reading = server_status_reading(&Counters::default(), Some(&Interval::default()));
    assert_eq!(reading.unreported, SIGNALS.to_vec());
}

#[tokio::test]
async fn one_failing_source_fails_the_sample() {
    let mut probes = Probes::new(vec![
        Box::new(Fixed(Ok(Reading::default()))),
        Box::new(Fixed(Err("connection refused"))),
    ]);
    assert!(probes.sample().await.is_err());
}
