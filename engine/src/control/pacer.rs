//! The control loop of one process: every interval it reports to its database's [`Budget`]
//! (its batches, errors and backlog); while it holds the lease it reads the ledger, samples
//! the [`Probes`], steps the [`Controller`] and publishes a pace per queue; in every case it
//! sets its [`Throttle`] to its share of its queue's pace and to the chosen batch size. It owns
//! the loop's metrics and its warnings (each unreported signal once, probe failures once per
//! streak, a router once). What only the leader knows (the database's load, the budget, the
//! limiter) it exports as held series, dropped the moment it stops leading.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::queue::Redis;
use tokio_util::sync::CancellationToken;

use crate::control::budget::{self, Budget, Ledger, Report, Tick, Turns};
use crate::control::controller::{Config, Controller, Decision, Limiter, Sample, Share};
use crate::control::cost::Batch;
use crate::control::govern::{self, Fallback, Governor, Lease};
use crate::control::probe::{
    Probe, ProbeError, Probes, PrometheusProbe, SIGNALS, ServerStatusProbe,
};
use crate::control::throttle::Throttle;
use crate::queue::keys::BudgetKeys;
use crate::store::Store;
use crate::telemetry::{held, names};

/// The loop's settings (from the environment; see `config`).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlOptions {
    pub interval: Duration,
    pub controller: Config,
    /// Names the database's budget: every process writing to it, of any queue, shares it.
    pub budget: String,
    /// This process's queue's part of the budget against other queues'.
    pub weight: f64,
    /// Prometheus base URL and PromQL per signal; `None` leaves that signal to serverStatus.
    pub prometheus_url: Option<String>,
    pub prometheus_cpu: Option<String>,
    pub prometheus_latency: Option<String>,
    pub prometheus_read_latency: Option<String>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            controller: Config::default(),
            budget: "default".into(),
            weight: 1.0,
            prometheus_url: None,
            prometheus_cpu: None,
            prometheus_latency: None,
            prometheus_read_latency: None,
        }
    }
}

/// What a queue's pace drives.
enum Actuator {
    /// This process's worker, through its throttle.
    Worker(Throttle),
    /// The workers of a BullMQ queue others run, through the queue's global rate limit.
    Governor(Box<Governed>),
}

/// A governed queue, and what this process has seen of its workers.
struct Governed {
    governor: Governor,
    /// This process holds the queue's lease (and so is the queue's member of the budget).
    holds: bool,
    /// The window the workers' own limiter imposes (ms), once seen: a worker's
    /// `limiter.duration` overrides the queue's.
    theirs: Option<f64>,
    /// The limit last written: jobs/s, and its window (ms).
    written: Option<(f64, u64)>,
    /// When every window opened under a duration other than the one written last has ended
    /// (ms, Redis' clock): until then a long time left may be theirs.
    older_windows_end: u64,
    /// Intervals in a row in which jobs started well above the limit.
    over: u32,
    warned_ignored: bool,
    warned_version: bool,
}

/// Intervals in a row of starts above the limit before the workers are said to ignore it.
const IGNORED_AFTER: u32 = 3;

pub struct Pacer {
    options: ControlOptions,
    budget: Budget,
    probes: Probes,
    actuator: Actuator,
    store: Store,
    /// Some while this process leads.
    controller: Option<Controller>,
    /// Own write errors already reported to the budget.
    reported_errors: u64,
    /// The budget's error total at the leader's last tick.
    seen_errors: Option<u64>,
    /// When the leader last sampled the probes, on Redis' clock (seconds).
    last_sample: Option<f64>,
    queue_members: u64,
    warned_unreported: HashSet<&'static str>,
    warned_router: bool,
    blind_streak: bool,
    /// The budget could not be reached at the last tick (said once per streak).
    budget_lost: bool,
    last_limiter: Option<Limiter>,
}

impl Pacer {
    /// A pacer for a worker's `throttle` (see [`Pacer::build`] and [`Pacer::govern`]).
    pub fn new(
        options: ControlOptions,
        budget: Budget,
        probes: Probes,
        throttle: Throttle,
        store: Store,
    ) -> Self {
        Self::driving(options, budget, probes, Actuator::Worker(throttle), store)
    }

    fn driving(
        options: ControlOptions,
        budget: Budget,
        probes: Probes,
        actuator: Actuator,
        store: Store,
    ) -> Self {
        let c = &options.controller;
        metrics::gauge!(names::TARGET, "signal" => "cpu").set(c.target_cpu);
        metrics::gauge!(names::TARGET, "signal" => "write_latency").set(c.target_latency);
        if let Some(read) = c.target_read_latency {
            metrics::gauge!(names::TARGET, "signal" => "read_latency").set(read);
        }
        Self {
            options,
            budget,
            probes,
            actuator,
            store,
            controller: None,
            reported_errors: 0,
            seen_errors: None,
            last_sample: None,
            queue_members: 1,
            warned_unreported: HashSet::new(),
            warned_router: false,
            blind_streak: false,
            budget_lost: false,
            last_limiter: None,
        }
    }

    /// The probes of `options`' database: Prometheus, when configured, first; serverStatus
    /// always, as the database's own word on whether it can be reached.
    fn probes(options: &ControlOptions, store: &Store) -> Result<Probes, ProbeError> {
        // A probe must answer within the interval, so an unreachable database is seen as
        // blind in time to drop the rate at the next step.
        let timeout = options.interval.mul_f64(0.8);
        let mut sources: Vec<Box<dyn Probe>> = Vec::new();
        if let Some(url) = &options.prometheus_url
            && (options.prometheus_cpu.is_some()
                || options.prometheus_latency.is_some()
                || options.prometheus_read_latency.is_some())
        {
            sources.push(Box::new(PrometheusProbe::new(
                url,
                options.prometheus_cpu.clone(),
                options.prometheus_latency.clone(),
                options.prometheus_read_latency.clone(),
                timeout,
            )?));
        }
        sources.push(Box::new(ServerStatusProbe::new(store, timeout)));
        Ok(Probes::new(sources))
    }

    /// A pacer for `queue` on its database's budget, and the throttle it sets; the worker's
    /// batches are at most `burst` documents.
    pub fn build(
        options: ControlOptions,
        redis: Redis,
        queue: &str,
        store: Store,
        burst: usize,
    ) -> Result<(Self, Throttle), ProbeError> {
        let probes = Self::probes(&options, &store)?;
        let keys = BudgetKeys::new(&options.budget);
        let budget = Budget::new(
            redis.clone(),
            keys.clone(),
            queue,
            options.weight,
            options.interval,
        );
        let turns = Turns::new(redis, &keys, queue, budget.id());
        let throttle = Throttle::new(options.controller.floor, burst, Some(turns));
        let pacer = Self::new(options, budget, probes, throttle.clone(), store);
        Ok((pacer, throttle))
    }

    /// A pacer that governs BullMQ queue `queue` (under `prefix`), worked by others, on its
    /// database's budget with `weight`: its pace becomes the queue's global rate limit. The
    /// queue's lease lasts as long as a budget membership.
    pub fn govern(
        options: ControlOptions,
        redis: Redis,
        store: Store,
        (prefix, queue, weight): (&str, &str, f64),
        fallback: Fallback,
    ) -> Result<Self, ProbeError> {
        let probes = Self::probes(&options, &store)?;
        let keys = BudgetKeys::new(&options.budget);
        let budget =
            Budget::new(redis.clone(), keys, queue, weight, options.interval).with_largest(1);
        let governor = Governor::new(redis, prefix, queue, budget.id(), budget.ttl(), fallback);
        let actuator = Actuator::Governor(Box::new(Governed {
            governor,
            holds: false,
            theirs: None,
            written: None,
            older_windows_end: 0,
            over: 0,
            warned_ignored: false,
            warned_version: false,
        }));
        Ok(Self::driving(options, budget, probes, actuator, store))
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
        held::clear(self.holder());
        if let Actuator::Governor(g) = &mut self.actuator
            && g.holds
        {
            let queue = g.governor.queue().to_owned();
            match g.governor.release().await {
                Ok(Some(limit)) => {
                    tracing::info!(%queue, %limit, "handed the queue's rate limit back")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "cannot hand the queue's rate limit back: it keeps the limit last written until a governor takes it over")
                }
            }
        }
        if let Err(e) = self.budget.leave().await {
            tracing::debug!(error = %e, "cannot leave the write budget; it lapses by itself");
        }
    }

    /// The name under which this process's leader-only series are held.
    fn holder(&self) -> &str {
        self.budget.id()
    }

    /// One interval.
    pub async fn tick(&mut self) {
        let floor = self.options.controller.floor;
        // A governor writes nothing itself: the store's errors are its worker's, if any.
        let own_errors = match &self.actuator {
            Actuator::Worker(_) => self.store.traffic().write_errors.load(Ordering::Relaxed),
            Actuator::Governor(_) => self.reported_errors,
        };
        let (started, finished, backlog) = match &mut self.actuator {
            Actuator::Worker(throttle) => {
                let (started, finished) = throttle.report(Instant::now());
                (started, finished, throttle.backlog())
            }
            Actuator::Governor(g) => match g.look(self.options.interval).await {
                Some(seen) => (seen.started, seen.finished, seen.backlog),
                None => {
                    // Another process governs the queue: this one stands by, no member.
                    held::clear(self.holder());
                    self.controller = None;
                    return;
                }
            },
        };
        let report = Report {
            errors: own_errors.saturating_sub(self.reported_errors),
            backlog,
            started,
            finished,
        };
        let ticked = self.budget.tick(&report).await;
        let at = Instant::now();
        let tick = match ticked {
            Ok(tick) => tick,
            Err(e) => {
                // Without the budget no process knows the others' pace: the floor is safe. Nor
                // does it know whether it still leads: another may, so it exports nothing of it.
                if !self.budget_lost {
                    self.budget_lost = true;
                    tracing::warn!(error = %e, "cannot reach the shared write budget; pacing at the floor until it answers");
                }
                held::clear(self.holder());
                self.controller = None;
                self.actuate(floor, None).await;
                return;
            }
        };
        if self.budget_lost {
            self.budget_lost = false;
            tracing::info!("the shared write budget answers again");
        }
        self.reported_errors = own_errors;
        self.queue_members = tick.queue_members.max(1);
        metrics::gauge!(names::CONTROL_LEADER).set(if tick.leader { 1.0 } else { 0.0 });
        if let Actuator::Worker(throttle) = &self.actuator {
            throttle.set_reports_depth(tick.queue_reporter);
        }

        let pace = if tick.leader {
            held::set(
                self.holder(),
                names::CONTROL_MEMBERS,
                &[],
                tick.members as f64,
            );
            self.lead(&tick, at).await
        } else {
            held::clear(self.holder());
            self.controller = None;
            self.seen_errors = None;
            tick.pace
        };
        let total = pace.map_or(floor, |p| p.0);
        self.actuate(total, pace.map(|p| p.1)).await;
    }

    /// Sets what the pace drives: the throttle to this process's share of the queue's pace
    /// `total` and to `batch`, or the governed queue's limit to `total`.
    async fn actuate(&mut self, total: f64, batch: Option<usize>) {
        let holder = self.budget.id().to_owned();
        match &mut self.actuator {
            Actuator::Worker(throttle) => {
                let batch = batch.unwrap_or_else(|| throttle.batch_hint());
                throttle.set_share(total, self.queue_members);
                throttle.set_batch(batch);
                metrics::gauge!(names::RATE, "scope" => "total").set(total);
                metrics::gauge!(names::RATE, "scope" => "local").set(throttle.rate());
                metrics::gauge!(names::BATCH_TARGET).set(batch as f64);
            }
            Actuator::Governor(g) => g.limit(total, &holder).await,
        }
    }

    /// The leader's part: read the ledger, sample, decide, publish. Returns this process's
    /// queue's pace.
    async fn lead(&mut self, tick: &Tick, ticked: Instant) -> Option<(f64, usize)> {
        let ledger = match self.budget.ledger().await {
            Ok(ledger) => ledger,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the write budget's ledger; holding the pace");
                return tick.pace;
            }
        };
        let new_errors = self
            .seen_errors
            .map_or(0, |seen| tick.errors.saturating_sub(seen));
        self.seen_errors = Some(tick.errors);
        let mut sample = self.sample(new_errors).await;
        // The reading's moment on Redis' clock: the tick's, plus what passed since.
        let at = tick.now_ms as f64 / 1000.0 + ticked.elapsed().as_secs_f64();
        sample.at = at;
        sample.elapsed = self
            .last_sample
            .map_or(self.options.interval.as_secs_f64(), |last| {
                (at - last).max(1e-3)
            });
        self.last_sample = Some(at);
        let shares = shares(&ledger);
        let decision = match &mut self.controller {
            Some(controller) => {
                let batches = batches(controller, &ledger);
                controller.step(&sample, &batches, &shares)
            }
            None => {
                // A new leader goes on from what was published; its first sample only primes
                // the probes' counters (a rate needs two readings).
                let queues: Vec<String> = shares.iter().map(|s| s.queue.clone()).collect();
                let (budget, paces) = self.budget.published(&queues).await.unwrap_or_default();
                let mut controller = Controller::resume(self.options.controller, budget, &paces);
                let decision = if sample.probe_ok {
                    controller.hold(&shares)
                } else {
                    let batches = batches(&mut controller, &ledger);
                    controller.step(&sample, &batches, &shares)
                };
                self.controller = Some(controller);
                tracing::info!(process = self.budget.id(), budget = %self.options.budget, "leading the write budget");
                decision
            }
        };
        self.export(&decision, &sample);
        let why = budget::DecidedFrom {
            limiter: decision.limiter.name(),
            cpu: sample.db_cpu,
            write_latency: sample.write_latency,
            read_latency: sample.read_latency,
            target_cpu: self.options.controller.target_cpu,
            target_latency: self.options.controller.target_latency,
        };
        match self.budget.publish(&decision, &why).await {
            Ok(true) => {}
            Ok(false) => self.controller = None,
            Err(e) => tracing::warn!(error = %e, "cannot publish the write pace"),
        }
        decision
            .pace(self.budget.queue())
            .map(|p| (p.rate, p.batch))
    }

    /// The decision's metrics and its log line (one per interval, from the leader only, so
    /// the log alone tells the load story).
    fn export(&mut self, decision: &Decision, sample: &Sample) {
        for limiter in Limiter::ALL {
            let on = if limiter == decision.limiter {
                1.0
            } else {
                0.0
            };
            held::set(
                self.holder(),
                names::LIMITER,
                &[("signal", limiter.name())],
                on,
            );
        }
        if let Some(budget) = decision.budget {
            held::set(self.holder(), names::CPU_BUDGET, &[], budget);
        }
        if let Some(controller) = &self.controller {
            let model = controller.cost();
            held::set(self.holder(), names::LIVE_LOAD, &[], model.live());
            held::set(self.holder(), names::PROBE_LAG, &[], model.lag());
        }
        for pace in &decision.paces {
            if let Some(cost) = pace.cost {
                let queue = pace.queue.as_str();
                let holder = self.holder();
                let labels = |part| [("queue", queue), ("part", part)];
                held::set(
                    holder,
                    names::BATCH_COST,
                    &labels("batch"),
                    cost.per_batch / 100.0,
                );
                held::set(
                    holder,
                    names::BATCH_COST,
                    &labels("document"),
                    cost.per_document / 100.0,
                );
            }
        }
        let mine = decision.pace(self.budget.queue());
        let lag = self.controller.as_ref().map(|c| c.cost().lag());
        let cost = mine.and_then(|p| p.cost);
        tracing::info!(
            limiter = decision.limiter.name(),
            changed = self.last_limiter != Some(decision.limiter),
            rate = mine.map(|p| format!("{:.1}", p.rate)),
            batch = mine.map(|p| p.batch),
            budget = decision.budget.map(|b| format!("{b:.1}")),
            live = decision.live.map(|l| format!("{l:.1}")),
            cost_per_batch = cost.map(|c| format!("{:.1}", c.per_batch)),
            cost_per_document = cost.map(|c| format!("{:.3}", c.per_document)),
            lag = lag.map(|l| format!("{l:.1}")),
            cpu = sample.db_cpu.map(|c| format!("{c:.0}")),
            write_latency_ms = sample.write_latency.map(|l| format!("{:.1}", l * 1e3)),
            read_latency_ms = sample.read_latency.map(|l| format!("{:.1}", l * 1e3)),
            write_errors = sample.write_errors,
            queues = decision.paces.len(),
            // Every queue's, as the fields above are this process's queue's alone.
            paces = %decision
                .paces
                .iter()
                .map(|p| format!("{}={:.1}/s×{}", p.queue, p.rate, p.batch))
                .collect::<Vec<_>>()
                .join(" "),
            "write pace set"
        );
        self.last_limiter = Some(decision.limiter);
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
                    tracing::warn!(error = %e, "the probe cannot see the database; the pace falls to its floor");
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
            let available = if reported { 1.0 } else { 0.0 };
            held::set(
                self.holder(),
                names::SIGNAL_AVAILABLE,
                &[("signal", signal)],
                available,
            );
            if !reported && self.warned_unreported.insert(signal) {
                tracing::warn!(
                    signal,
                    "the database does not report this signal; the controller goes on without it"
                );
            }
        }
        if reading.router && !self.warned_router {
            self.warned_router = true;
            tracing::warn!(
                "the database is reached through a mongos: its CPU, lock queue and tickets are the router's, so the controller runs on latency only (README: Through a mongos)"
            );
        }
        let holder = self.budget.id().to_owned();
        let set = |name, value| held::set(&holder, name, &[], value);
        if let Some(cpu) = reading.cpu_percent {
            set(names::DB_CPU, cpu);
            let now = crate::queue::now_ms();
            if let Err(e) = budget::record_cpu(self.budget.connection(), now, cpu).await {
                tracing::debug!(error = %e, "cannot record the database's CPU for run reports");
            }
        }
        if let Some(latency) = reading.write_latency {
            set(names::DB_WRITE_LATENCY, latency);
        }
        if let Some(latency) = reading.read_latency {
            set(names::DB_READ_LATENCY, latency);
        }
        if let Some(queued) = reading.queued_ops {
            set(names::DB_QUEUED_OPS, queued as f64);
        }
        if let Some(tickets) = reading.write_tickets {
            set(names::DB_WRITE_TICKETS, tickets as f64);
        }
        if let Some(pool) = reading.write_tickets_total {
            set(names::DB_WRITE_TICKETS_POOL, pool as f64);
        }
        Sample {
            probe_ok: true,
            db_cpu: reading.cpu_percent,
            write_latency: reading.write_latency,
            read_latency: reading.read_latency,
            write_errors,
            ..Sample::default()
        }
    }
}

impl Governed {
    /// Keeps or takes the queue's lease and reads what its workers did since the last look;
    /// `None` while another process governs it (or Redis cannot say).
    async fn look(&mut self, interval: Duration) -> Option<govern::Seen> {
        let queue = self.governor.queue().to_owned();
        let lease = match self.governor.hold(None).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot reach the governed queue; its limit stays as last written");
                return None;
            }
        };
        self.leased(&lease);
        if !lease.holds {
            return None;
        }
        let seen = match self.governor.look().await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot read the governed queue's events");
                return None;
            }
        };
        self.check_honoured(seen.starts, interval);
        Some(seen)
    }

    /// What a lease says: a queue taken over, one given up, the producers' BullMQ version.
    fn leased(&mut self, lease: &Lease) {
        let queue = self.governor.queue();
        match (self.holds, lease.holds) {
            (false, true) => match &lease.orphaned {
                Some((until, limit)) => tracing::warn!(
                    %queue,
                    left_at = %limit,
                    lease_ended_ms = until,
                    "governing the queue, taken over from a governor that stopped without handing it back (its last limit, max:duration:at, held meanwhile)"
                ),
                None => tracing::info!(%queue, "governing the queue's rate limit"),
            },
            (true, false) => {
                tracing::warn!(%queue, holder = %lease.holder, "another process governs the queue now")
            }
            _ => {}
        }
        self.holds = lease.holds;
        if !self.warned_version && !lease.version.is_empty() {
            self.warned_version = true;
            if !govern::honours(&lease.version) {
                tracing::warn!(%queue, version = %lease.version, "the queue's producers run a BullMQ older than 5.60: workers of that age ignore the queue's rate limit");
            }
        }
        if lease.holds {
            self.learn_window(lease);
        }
    }

    /// A window left longer than any the governor wrote lately is the workers' own. Its length
    /// is learned from below, as the longest time left seen (read at each of the two calls of
    /// an interval, so at two phases of it): the limit is lower than the pace until it is
    /// learned, never higher.
    fn learn_window(&mut self, lease: &Lease) {
        let left = lease.window_left_ms as f64;
        if left <= 0.0 {
            return;
        }
        match (self.theirs, self.written) {
            (Some(theirs), _) => self.theirs = Some(theirs.max(left)),
            (None, Some((_, duration)))
                if lease.now_ms >= self.older_windows_end
                    && left > 1.2 * duration as f64 + 10.0 =>
            {
                tracing::warn!(queue = %self.governor.queue(), window_ms = left, "the workers' own limiter sets the rate limit's window (a worker's limiter.duration overrides the queue's): the governor counts its max for that window");
                self.theirs = Some(left);
            }
            _ => {}
        }
    }

    /// Whether jobs started as fast as the limit allows at most (with room for a window's
    /// edge): workers that ignore it (too old, or a limiter of their own with a larger `max`)
    /// are said once.
    fn check_honoured(&mut self, starts: u64, interval: Duration) {
        let Some((rate, _)) = self.written else {
            return;
        };
        let allowed = 1.5 * rate * interval.as_secs_f64() + 2.0;
        if (starts as f64) > allowed {
            self.over += 1;
        } else {
            self.over = 0;
        }
        if self.over >= IGNORED_AFTER && !self.warned_ignored {
            self.warned_ignored = true;
            tracing::warn!(queue = %self.governor.queue(), starts, allowed, "jobs start faster than the queue's rate limit allows: its workers do not honour it (BullMQ older than 5.60, or a limiter of their own)");
        }
        metrics::counter!(names::GOVERNED_STARTS, "queue" => self.governor.queue().to_owned())
            .increment(starts);
    }

    /// Writes `rate` jobs/s as the queue's limit, while this process holds its lease.
    async fn limit(&mut self, rate: f64, holder: &str) {
        if !self.holds {
            return;
        }
        let (max, duration) = govern::limit(rate, self.theirs);
        let queue = self.governor.queue().to_owned();
        match self.governor.hold(Some((max, duration))).await {
            Ok(lease) if lease.holds => {
                let written = max as f64 * 1000.0 / duration as f64;
                if let Some(before) = lease.duration_ms
                    && before != duration
                {
                    self.older_windows_end = self.older_windows_end.max(lease.now_ms + before);
                }
                self.written = Some((written, duration));
                tracing::debug!(%queue, max, duration, theirs = ?self.theirs, window_left_ms = lease.window_left_ms, "rate limit written");
                self.learn_window(&lease);
                held::set(
                    holder,
                    names::GOVERNED_LIMIT,
                    &[("queue", queue.as_str())],
                    written,
                );
            }
            Ok(lease) => self.leased(&lease),
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot write the queue's rate limit; it stays as last written")
            }
        }
    }
}

/// The queues sharing the budget: each member's queue once, at the largest weight its members
/// report, active when it has jobs waiting or batches in flight.
fn shares(ledger: &Ledger) -> Vec<Share> {
    let mut shares: Vec<Share> = Vec::new();
    for member in &ledger.members {
        let busy = member.backlog > 0
            || ledger
                .batches
                .iter()
                .any(|b| b.queue == member.queue && b.end_ms.is_none());
        match shares.iter_mut().find(|s| s.queue == member.queue) {
            Some(share) => {
                share.weight = share.weight.max(member.weight);
                share.active |= busy;
                share.largest = share.largest.min(member.largest).or(member.largest);
            }
            None => shares.push(Share {
                queue: member.queue.clone(),
                weight: member.weight,
                active: busy,
                largest: member.largest,
            }),
        }
    }
    shares
}

/// The ledger's batches as the controller counts them: seconds on Redis' clock, classed by
/// queue.
fn batches(controller: &mut Controller, ledger: &Ledger) -> Vec<Batch> {
    ledger
        .batches
        .iter()
        .map(|b| Batch {
            class: controller.class(&b.queue),
            start: b.start_ms as f64 / 1000.0,
            end: b.end_ms.map(|e| e as f64 / 1000.0),
            documents: b.documents as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::budget::{LedgerBatch, Member};

    #[test]
    fn queues_share_by_their_largest_weight_and_are_active_with_work() {
        let member = |queue: &str, weight, backlog| Member {
            queue: queue.into(),
            weight,
            backlog,
            largest: None,
        };
        let ledger = Ledger {
            members: vec![
                member("a", 1.0, 0),
                member("a", 2.0, 0),
                member("b", 1.0, 30),
                member("c", 1.0, 0),
            ],
            batches: vec![LedgerBatch {
                queue: "a".into(),
                start_ms: 1,
                end_ms: None,
                documents: 10,
            }],
        };
        let shares = shares(&ledger);
        let view: Vec<(&str, f64, bool)> = shares
            .iter()
            .map(|s| (s.queue.as_str(), s.weight, s.active))
            .collect();
        assert_eq!(
            view,
            vec![("a", 2.0, true), ("b", 1.0, true), ("c", 1.0, false)]
        );
    }
}
