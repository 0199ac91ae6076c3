//! Probes: what the database says about its own load, sampled once per control interval. Each
//! source is a small type behind [`Probe`]: `serverStatus` over the driver, and PromQL over
//! Prometheus' HTTP API. [`Probes`] merges them: the first source that reports a signal gives
//! it, a signal no source reports is listed as unreported (a metric and one warning, never a
//! zero), and any source failing makes the whole sample blind, so the rate falls to its floor.
//! The client's own view (round-trip time and errors of the bulk writes) is counted by the
//! store and shared through the budget, not probed here.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mongodb::Database;

use crate::control::server_status::{self, Counters};

/// One interval's signals from one source. `None`: not reported (see `unreported`) or, for
/// write latency, no writes happened in the interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Percent of one core (800 = 8 busy cores).
    pub cpu_percent: Option<f64>,
    /// Mean write latency, seconds.
    pub write_latency: Option<f64>,
    pub queued_ops: Option<u64>,
    pub write_tickets: Option<i64>,
    /// Signals this source does not report at all (by [`SIGNALS`] name).
    pub unreported: Vec<&'static str>,
}

/// Every signal a probe may report, by the name metrics and logs use.
pub const SIGNALS: [&str; 4] = ["cpu", "write_latency", "queued_ops", "write_tickets"];

#[derive(Debug, thiserror::Error)]
#[error("{probe}: {message}")]
pub struct ProbeError {
    pub probe: &'static str,
    pub message: String,
}

/// A source of database signals.
pub trait Probe: Send {
    fn name(&self) -> &'static str;
    /// This interval's reading. Sources that need two readings for a rate keep the last one.
    fn sample(&mut self) -> BoxFuture<'_, Result<Reading, ProbeError>>;
}

/// `serverStatus`, asking only for the sections it reads. CPU and write latency are rates of
/// cumulative counters, so the first sample only primes them.
pub struct ServerStatusProbe {
    admin: Database,
    timeout: Duration,
    last: Option<(Instant, Counters)>,
}

impl ServerStatusProbe {
    pub fn new(client: &mongodb::Client, timeout: Duration) -> Self {
        Self {
            admin: client.database("admin"),
            timeout,
            last: None,
        }
    }
}

impl Probe for ServerStatusProbe {
    fn name(&self) -> &'static str {
        "serverstatus"
    }

    fn sample(&mut self) -> BoxFuture<'_, Result<Reading, ProbeError>> {
        Box::pin(async move {
            let error = |message: String| ProbeError {
                probe: "serverstatus",
                message,
            };
            let reply = tokio::time::timeout(
                self.timeout,
                self.admin.run_command(server_status::command()),
            )
            .await
            .map_err(|_| error(format!("no reply within {:?}", self.timeout)))?
            .map_err(|e| error(e.to_string()))?;
            let now = Instant::now();
            let counters = server_status::parse(&reply);
            let mut unreported = Vec::new();
            if counters.cpu_time_us.is_none() {
                unreported.push("cpu");
            }
            if counters.write_latency_us.is_none() || counters.write_ops.is_none() {
                unreported.push("write_latency");
            }
            if counters.queued_ops.is_none() {
                unreported.push("queued_ops");
            }
            if counters.write_tickets_available.is_none() {
                unreported.push("write_tickets");
            }
            let rates = self
                .last
                .map(|(then, before)| server_status::interval(&before, &counters, now - then))
                .unwrap_or_default();
            self.last = Some((now, counters));
            Ok(Reading {
                cpu_percent: rates.cpu_percent,
                write_latency: rates.write_latency,
                queued_ops: counters.queued_ops,
                write_tickets: counters.write_tickets_available,
                unreported,
            })
        })
    }
}

/// PromQL over Prometheus' HTTP API, one expression per signal. An expression returning no
/// series means the signal is unreported; several series, the largest (the busiest node).
pub struct PrometheusProbe {
    http: reqwest::Client,
    query_url: String,
    cpu: Option<String>,
    write_latency: Option<String>,
}

impl PrometheusProbe {
    /// `base_url` as `http://host:9090`; `cpu` must yield percent of one core, `write_latency`
    /// seconds.
    pub fn new(
        base_url: &str,
        cpu: Option<String>,
        write_latency: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ProbeError {
                probe: "prometheus",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            query_url: format!("{}/api/v1/query", base_url.trim_end_matches('/')),
            cpu,
            write_latency,
        })
    }

    async fn query(&self, expr: &str) -> Result<Option<f64>, ProbeError> {
        let error = |message: String| ProbeError {
            probe: "prometheus",
            message,
        };
        let body: serde_json::Value = self
            .http
            .get(&self.query_url)
            .query(&[("query", expr)])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| error(e.to_string()))?
            .json()
            .await
            .map_err(|e| error(e.to_string()))?;
        parse_vector(&body).map_err(|m| error(format!("{m} (query {expr})")))
    }
}

impl Probe for PrometheusProbe {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn sample(&mut self) -> BoxFuture<'_, Result<Reading, ProbeError>> {
        Box::pin(async move {
            let mut reading = Reading::default();
            if let Some(expr) = &self.cpu {
                reading.cpu_percent = self.query(expr).await?;
            }
            if let Some(expr) = &self.write_latency {
                reading.write_latency = self.query(expr).await?;
            }
            for (signal, value) in [
                ("cpu", reading.cpu_percent),
                ("write_latency", reading.write_latency),
            ] {
                if value.is_none() {
                    reading.unreported.push(signal);
                }
            }
            reading.unreported.extend(["queued_ops", "write_tickets"]);
            Ok(reading)
        })
    }
}

/// The value of an instant-vector answer: `None` for no series, the largest of several.
pub fn parse_vector(body: &serde_json::Value) -> Result<Option<f64>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            body["status"], body["error"]
        ));
    }
    let data = &body["data"];
    let samples: Vec<&serde_json::Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|r| r.iter().map(|s| &s["value"]).collect())
            .unwrap_or_default(),
        Some("scalar") => vec![&data["result"]],
        other => return Err(format!("expected a vector, got {other:?}")),
    };
    let mut best: Option<f64> = None;
    for value in samples {
        let number = value[1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("not a sample value: {value}"))?;
        // NaN (e.g. a rate over too few points) says nothing about load.
        if number.is_finite() {
            best = Some(best.map_or(number, |b| b.max(number)));
        }
    }
    Ok(best)
}

/// The sources in order of preference, merged per signal.
pub struct Probes {
    sources: Vec<Box<dyn Probe>>,
}

impl Probes {
    pub fn new(sources: Vec<Box<dyn Probe>>) -> Self {
        Self { sources }
    }

    /// One merged reading; an error if any source failed (the caller goes blind).
    pub async fn sample(&mut self) -> Result<Reading, ProbeError> {
        let mut merged = Reading::default();
        let mut reported = Vec::new();
        for source in &mut self.sources {
            let r = source.sample().await?;
            merged.cpu_percent = merged.cpu_percent.or(r.cpu_percent);
            merged.write_latency = merged.write_latency.or(r.write_latency);
            merged.queued_ops = merged.queued_ops.or(r.queued_ops);
            merged.write_tickets = merged.write_tickets.or(r.write_tickets);
            reported.extend(SIGNALS.iter().filter(|s| !r.unreported.contains(s)));
        }
        merged.unreported = SIGNALS
            .into_iter()
            .filter(|s| !reported.contains(&s))
            .collect();
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
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
            unreported: vec!["write_latency", "queued_ops", "write_tickets"],
            ..Reading::default()
        };
        let server = Reading {
            queued_ops: Some(3),
            unreported: vec!["cpu", "write_latency", "write_tickets"],
            ..Reading::default()
        };
        let mut probes = Probes::new(vec![
            Box::new(Fixed(Ok(prometheus))),
            Box::new(Fixed(Ok(server))),
        ]);
        let r = probes.sample().await.expect("both sources answer");
        assert_eq!(r.cpu_percent, Some(150.0));
        assert_eq!(r.queued_ops, Some(3));
        assert_eq!(r.unreported, vec!["write_latency", "write_tickets"]);
    }

    #[tokio::test]
    async fn one_failing_source_fails_the_sample() {
        let mut probes = Probes::new(vec![
            Box::new(Fixed(Ok(Reading::default()))),
            Box::new(Fixed(Err("connection refused"))),
        ]);
        assert!(probes.sample().await.is_err());
    }
}
