//! The control loop of one process: every interval it ticks the shared [`Budget`]; while it
//! holds the lease it samples the [`Probes`], steps the [`Controller`] and publishes the total
//! rate; in every case it sets its [`Throttle`] to its share. It owns the loop's metrics and
//! its warnings (each unreported signal once, probe failures once per streak).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::control::budget::{self, Budget, Tick};
use crate::control::controller::{Config, Controller, Limiter, Sample};
use crate::control::probe::{
    Probe, ProbeError, Probes, PrometheusProbe, SIGNALS, ServerStatusProbe,
};
use crate::control::throttle::Throttle;
use crate::queue::Queue;
use crate::store::Store;
use crate::telemetry::names;

/// The loop's settings (from the environment; see `config`).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlOptions {
    pub interval: Duration,
    pub controller: Config,
    /// Prometheus base URL and PromQL per signal; `None` leaves that signal to serverStatus.
    pub prometheus_url: Option<String>,
    pub prometheus_cpu: Option<String>,
    pub prometheus_latency: Option<String>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            controller: Config::default(),
            prometheus_url: None,
            prometheus_cpu: None,
            prometheus_latency: None,
        }
    }
}

pub struct Pacer {
    options: ControlOptions,
    budget: Budget,
    probes: Probes,
    throttle: Throttle,
    store: Store,
    /// Some while this process leads.
    controller: Option<Controller>,
    /// Own write errors already reported to the budget.
    reported_errors: u64,
    /// The budget's error and used totals at the leader's last tick, and when.
    seen: Option<(Instant, u64, u64)>,
    members: u64,
    warned_unreported: HashSet<&'static str>,
    blind_streak: bool,
    last_limiter: Option<Limiter>,
}

impl Pacer {
    pub fn new(
        options: ControlOptions,
        budget: Budget,
        probes: Probes,
        throttle: Throttle,
        store: Store,
    ) -> Self {
        let c = &options.controller;
        metrics::gauge!(names::TARGET, "signal" => "cpu").set(c.target_cpu);
        metrics::gauge!(names::TARGET, "signal" => "write_latency").set(c.target_latency);
        Self {
            options,
            budget,
            probes,
            throttle,
            store,
            controller: None,
            reported_errors: 0,
            seen: None,
            members: 1,
            warned_unreported: HashSet::new(),
            blind_streak: false,
            last_limiter: None,
        }
    }

    /// A pacer for `queue` and the throttle it sets; the worker's batches are at most `burst`
    /// documents. Prometheus, when configured, is asked first; serverStatus always runs, as the
    /// database's own word on whether it can be reached.
    pub fn build(
        options: ControlOptions,
        redis: ConnectionManager,
        queue: &Queue,
        store: Store,
        burst: usize,
    ) -> Result<(Self, Throttle), ProbeError> {
        // A probe must answer within the interval, so an unreachable database is seen as
        // blind in time to drop the rate at the next step.
        let timeout = options.interval.mul_f64(0.8);
        let mut sources: Vec<Box<dyn Probe>> = Vec::new();
        if let Some(url) = &options.prometheus_url
            && (options.prometheus_cpu.is_some() || options.prometheus_latency.is_some())
        {
            sources.push(Box::new(PrometheusProbe::new(
                url,
                options.prometheus_cpu.clone(),
                options.prometheus_latency.clone(),
                None,
                timeout,
            )?));
        }
        sources.push(Box::new(ServerStatusProbe::new(store.client(), timeout)));
        let throttle = Throttle::new(options.controller.floor, burst);
        let budget = Budget::new(redis, queue.keys(), options.interval);
        let pacer = Self::new(
            options,
            budget,
            Probes::new(sources),
            throttle.clone(),
            store,
        );
        Ok((pacer, throttle))
    }

    /// Ticks every interval until `stop`, then leaves the budget.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.options.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => self.tick().await,
            }
        }
        if let Err(e) = self.budget.leave().await {
            tracing::debug!(error = %e, "cannot leave the write budget; it lapses by itself");
        }
    }

    /// One interval.
    pub async fn tick(&mut self) {
        let floor = self.options.controller.floor;
        let own_errors = self.store.traffic().write_errors.load(Ordering::Relaxed);
        let used = self.throttle.take_used();
        let tick = match self
            .budget
            .tick(own_errors.saturating_sub(self.reported_errors), used)
            .await
        {
            Ok(tick) => tick,
            Err(e) => {
                // Without the budget no process knows the others' pace: the floor is safe.
                tracing::warn!(error = %e, "cannot reach the shared write budget; pacing at the floor");
                self.controller = None;
                self.throttle.set_share(floor, self.members);
                return;
            }
        };
        self.reported_errors = own_errors;
        self.members = tick.members.max(1);
        metrics::gauge!(names::CONTROL_MEMBERS).set(tick.members as f64);
        metrics::gauge!(names::CONTROL_LEADER).set(if tick.leader { 1.0 } else { 0.0 });

        let total = if tick.leader {
            self.lead(&tick).await
        } else {
            self.controller = None;
            self.seen = None;
            tick.rate.unwrap_or(floor)
        };
        let local = tick.share(total);
        self.throttle.set_share(total, self.members);
        metrics::gauge!(names::RATE, "scope" => "total").set(total);
        metrics::gauge!(names::RATE, "scope" => "local").set(local);
    }

    /// The leader's part: sample, decide, publish. Returns the total rate.
    async fn lead(&mut self, tick: &Tick) -> f64 {
        let published = tick.rate;
        let now = Instant::now();
        let (new_errors, demand) = match self.seen {
            Some((then, errors, used)) => (
                tick.errors.saturating_sub(errors),
                Some(tick.used.saturating_sub(used) as f64 / (now - then).as_secs_f64().max(1e-3)),
            ),
            None => (0, None),
        };
        self.seen = Some((now, tick.errors, tick.used));
        let mut sample = self.sample(new_errors).await;
        let _ = demand;
        let decision = match &mut self.controller {
            Some(controller) => controller.step(&sample, &[]),
            None => {
                // A new leader goes on from the published rate; its first sample only primes
                // the probes' counters (a rate needs two readings).
                let mut controller = Controller::resume(
                    self.options.controller,
                    &crate::control::controller::Handover {
                        rate: published.unwrap_or(self.options.controller.floor),
                        ..Default::default()
                    },
                );
                let decision = if sample.probe_ok {
                    controller.hold()
                } else {
                    controller.step(&sample, &[])
                };
                self.controller = Some(controller);
                tracing::info!(
                    process = self.budget.id(),
                    rate = decision.rate,
                    "leading the write budget"
                );
                decision
            }
        };
        for limiter in Limiter::ALL {
            let on = if limiter == decision.limiter {
                1.0
            } else {
                0.0
            };
            metrics::gauge!(names::LIMITER, "signal" => limiter.name()).set(on);
        }
        // One line per decision (one per interval, from the leader only), so the log alone
        // tells the load story.
        tracing::info!(
            limiter = decision.limiter.name(),
            changed = self.last_limiter != Some(decision.limiter),
            rate = format!("{:.1}", decision.rate),
            cpu = sample.db_cpu.map(|c| format!("{c:.0}")),
            write_latency_ms = sample.write_latency.map(|l| format!("{:.1}", l * 1e3)),
            write_errors = sample.write_errors,
            "write rate set"
        );
        self.last_limiter = Some(decision.limiter);
        let why = budget::Why {
            limiter: decision.limiter.name(),
            cpu: sample.db_cpu,
            latency: sample.write_latency,
            target_cpu: self.options.controller.target_cpu,
            target_latency: self.options.controller.target_latency,
        };
        match self.budget.publish(decision.rate, &why).await {
            Ok(true) => {}
            Ok(false) => self.controller = None,
            Err(e) => tracing::warn!(error = %e, "cannot publish the write rate"),
        }
        decision.rate
    }

    async fn sample(&mut self, write_errors: u64) -> Sample {
        let reading = match self.probes.sample().await {
            Ok(reading) => {
                if self.blind_streak {
                    tracing::info!("the probes see the database again");
                    self.blind_streak = false;
                }
                reading
            }
            Err(e) => {
                metrics::counter!(names::PROBE_ERRORS, "probe" => e.probe).increment(1);
                if !self.blind_streak {
                    tracing::warn!(error = %e, "the probe cannot see the database; the rate falls to its floor");
                    self.blind_streak = true;
                }
                return Sample {
                    probe_ok: false,
                    write_errors,
                    ..Sample::default()
                };
            }
        };
        for signal in SIGNALS {
            let reported = !reading.unreported.contains(&signal);
            metrics::gauge!(names::SIGNAL_AVAILABLE, "signal" => signal).set(if reported {
                1.0
            } else {
                0.0
            });
            if !reported && self.warned_unreported.insert(signal) {
                tracing::warn!(
                    signal,
                    "the database does not report this signal; the controller goes on without it"
                );
            }
        }
        if let Some(cpu) = reading.cpu_percent {
            metrics::gauge!(names::DB_CPU).set(cpu);
            let now = crate::queue::now_ms();
            if let Err(e) = budget::record_cpu(self.budget.connection(), now, cpu).await {
                tracing::debug!(error = %e, "cannot record the database's CPU for run reports");
            }
        }
        if let Some(latency) = reading.write_latency {
            metrics::gauge!(names::DB_WRITE_LATENCY).set(latency);
        }
        if let Some(queued) = reading.queued_ops {
            metrics::gauge!(names::DB_QUEUED_OPS).set(queued as f64);
        }
        if let Some(tickets) = reading.write_tickets {
            metrics::gauge!(names::DB_WRITE_TICKETS).set(tickets as f64);
        }
        Sample {
            probe_ok: true,
            db_cpu: reading.cpu_percent,
            write_latency: reading.write_latency,
            write_errors,
            ..Sample::default()
        }
    }
}
