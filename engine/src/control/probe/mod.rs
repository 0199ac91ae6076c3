//! Probes: what the database says about its own load, sampled once per control interval. Each
//! source is a small type behind [`Probe`]: `serverStatus` over the driver, and PromQL over
//! Prometheus' HTTP API. [`Probes`] merges them: the first source that reports a signal gives
//! it, a signal no source reports is listed as unreported (a metric and one warning, never a
//! zero), and any source failing makes the whole sample blind, so the rate falls to its floor.
//! Through a `mongos` only the latencies describe the database; such a reading is flagged.
//! The client's own view (round-trip time and errors of the bulk writes) is counted by the
//! store and shared through the budget, not probed here.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mongodb::Database;

use crate::control::server_status::{self, Counters, Interval};

/// One interval's signals from one source. `None`: not reported (see `unreported`) or, for
/// the latencies, no such operation completed in the interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Percent of one core (800 = 8 busy cores).
    pub cpu_percent: Option<f64>,
    /// Mean write latency, seconds.
    pub write_latency: Option<f64>,
    /// Mean read latency, seconds: what the database's other users feel.
    pub read_latency: Option<f64>,
    pub queued_ops: Option<u64>,
    /// Write tickets free.
    pub write_tickets: Option<i64>,
    /// The write ticket pool's size, reported with `write_tickets` (not a signal of its own).
    pub write_tickets_total: Option<i64>,
    /// The source is talking to a `mongos`: the shards' load is not visible through it (see
    /// [`server_status_reading`]).
    pub router: bool,
    /// Signals this source does not report at all (by [`SIGNALS`] name).
    pub unreported: Vec<&'static str>,
}

/// Every signal a probe may report, by the name metrics and logs use.
pub(crate) const SIGNALS: [&str; 5] = [
    "cpu",
    "write_latency",
    "read_latency",
    "queued_ops",
    "write_tickets",
];

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

/// `serverStatus`, asking only for the sections it reads. CPU and the latencies are rates of
/// cumulative counters, so the first sample only primes them.
/// How long `serverStatus` goes unanswered before the probe says the database is silent (its
/// circuit opens).
const SILENT: Duration = Duration::from_secs(5);

pub struct ServerStatusProbe {
    admin: Database,
    /// Told when the database does not answer (its circuit).
    store: crate::store::Store,
    timeout: Duration,
    /// Since when every sample has gone unanswered, if the last did.
    silent_since: Option<Instant>,
    last: Option<(Instant, Counters)>,
    /// The server's major version as of its last reply, which decides the next command's
    /// shape. Every reply carries `version`, so an upgrade is followed at the next sample.
    major_version: Option<u32>,
}

impl ServerStatusProbe {
    pub fn new(store: &crate::store::Store, timeout: Duration) -> Self {
        Self {
            admin: store.client().database("admin"),
            store: store.clone(),
            timeout,
            silent_since: None,
            last: None,
            major_version: None,
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
                self.admin
                    .run_command(server_status::command(self.major_version)),
            )
            .await
            .map_err(|_| {
                // One slow reply is load, not an outage (the timeout is most of an interval,
                // under a second at short intervals): silence for [`SILENT`] is.
                let since = *self.silent_since.get_or_insert_with(Instant::now);
                let message = format!("no reply within {:?}", self.timeout);
                if since.elapsed() >= SILENT {
                    self.store.trip(&format!(
                        "serverStatus: {message}, none for {:?}",
                        since.elapsed()
                    ));
                }
                error(message)
            })?
            .map_err(|e| {
                self.store.note_unreachable(&e);
                error(e.to_string())
            })?;
            self.silent_since = None;
            let now = Instant::now();
            self.major_version = server_status::major_version(&reply);
            let counters = server_status::parse(&reply);
            let rates = self
                .last
                .map(|(then, before)| server_status::interval(&before, &counters, now - then));
            self.last = Some((now, counters));
            Ok(server_status_reading(&counters, rates.as_ref()))
        })
    }
}

/// What the `serverStatus` probe reports from one reply's `counters` and the `rates` since the
/// previous one (`None` on the first reply, which only primes them).
///
/// Through a `mongos` the CPU and the lock queue are the router's own, which say nothing about
/// the shards doing the writes: a router idles while its shards are saturated, and the CPU
/// controller would read that as room to grow. So they count as unreported (the controller goes
/// on with its latency rules) and `router` lets the pacer say why. The latencies stay: a router
/// times each operation end to end, shards included.
pub fn server_status_reading(counters: &Counters, rates: Option<&Interval>) -> Reading {
    let rates = rates.copied().unwrap_or_default();
    let router = counters.router;
    let local = |reported: bool| reported && !router;
    let reported = [
        ("cpu", local(counters.cpu_time_us.is_some())),
        (
            "write_latency",
            counters.write_latency_us.is_some() && counters.write_ops.is_some(),
        ),
        (
            "read_latency",
            counters.read_latency_us.is_some() && counters.read_ops.is_some(),
        ),
        ("queued_ops", local(counters.queued_ops.is_some())),
        (
            "write_tickets",
            local(counters.write_tickets_available.is_some()),
        ),
    ];
    let unreported = reported
        .into_iter()
        .filter(|&(_, reported)| !reported)
        .map(|(signal, _)| signal)
        .collect();
    Reading {
        cpu_percent: rates.cpu_percent.filter(|_| !router),
        write_latency: rates.write_latency,
        read_latency: rates.read_latency,
        queued_ops: counters.queued_ops.filter(|_| !router),
        write_tickets: counters.write_tickets_available.filter(|_| !router),
        write_tickets_total: counters.write_tickets_total.filter(|_| !router),
        router,
        unreported,
    }
}

/// PromQL over Prometheus' HTTP API, one expression per signal. An expression returning no
/// series means the signal is unreported; several series, the largest (the busiest node).
pub struct PrometheusProbe {
    http: reqwest::Client,
    query_url: String,
    cpu: Option<String>,
    write_latency: Option<String>,
    read_latency: Option<String>,
}

impl PrometheusProbe {
    /// `base_url` as `http://host:9090`; `cpu` must yield percent of one core, `write_latency`
    /// and `read_latency` seconds.
    pub fn new(
        base_url: &str,
        cpu: Option<String>,
        write_latency: Option<String>,
        read_latency: Option<String>,
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
            read_latency,
        })
    }

    /// A failed request, said without the URL's credentials (reqwest's own message carries
    /// the whole URL).
    fn failed(&self, e: reqwest::Error) -> ProbeError {
        ProbeError {
            probe: "prometheus",
            message: format!(
                "{} ({})",
                e.without_url(),
                crate::redact::redact_url(&self.query_url)
            ),
        }
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
            .map_err(|e| self.failed(e))?
            .json()
            .await
            .map_err(|e| self.failed(e))?;
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
            if let Some(expr) = &self.read_latency {
                reading.read_latency = self.query(expr).await?;
            }
            for (signal, value) in [
                ("cpu", reading.cpu_percent),
                ("write_latency", reading.write_latency),
                ("read_latency", reading.read_latency),
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
pub(crate) fn parse_vector(body: &serde_json::Value) -> Result<Option<f64>, String> {
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
            merged.read_latency = merged.read_latency.or(r.read_latency);
            merged.queued_ops = merged.queued_ops.or(r.queued_ops);
            merged.write_tickets = merged.write_tickets.or(r.write_tickets);
            merged.write_tickets_total = merged.write_tickets_total.or(r.write_tickets_total);
            merged.router |= r.router;
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
mod tests;
