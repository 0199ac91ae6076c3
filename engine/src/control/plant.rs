//! A simulated database for virtual-time runs of the controller (its tests and `tidegate
//! simulate`). It is a model, labelled a simulation wherever its numbers appear, built to make
//! a bad controller fail the way the real database makes it fail:
//!
//! - **Batches are lumps.** A batch costs CPU for its fixed part (a command, a read, a scan)
//!   plus a part per document, with some spread, and does that work over time, using up to
//!   `batch_cores` cores (a scan may use more than one): a big batch is a spike, not a level.
//! - **Live traffic is operations**, Poisson arrivals at a rate that follows a trace (steps,
//!   or any series), each with its own CPU: the load is noisy, and it changes.
//! - **Cores are shared.** Past full use every operation and batch slows in proportion, so
//!   the live operations' latency (reported as a distribution) shows what the batch costs
//!   the service.
//! - **The probe lags**: it reports the mean CPU over one interval that ended `probe_lag`
//!   seconds before it was read (Prometheus' `irate` over a scrape interval does), and can go
//!   blind for a while.
//! - **The worker is tidegate's**: a token bucket in documents paid before a batch is taken,
//!   at most `loops` batches in flight, batch sizes as the pacing says, a finite day of jobs.
//!
//! It runs in fixed steps of `step` seconds (a database's own: at most one batch starts per
//! step, so a step must be shorter than its batches), deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::control::controller::Sample;
use crate::control::cost::Batch;
use crate::control::law;

/// Seconds per simulation step, for batches of tens of milliseconds and more.
pub(crate) const STEP: f64 = 0.02;
/// A live operation gives up after this long (as the benchmark's service does), counted at
/// this latency.
const OP_TIMEOUT: f64 = 30.0;

/// What the pacing decides each interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Documents/second.
    pub rate: f64,
    /// Documents per batch.
    pub batch: usize,
    pub limiter: &'static str,
}

/// Live operations per second over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// (from second, operations/second), in order.
    Steps(Vec<(f64, f64)>),
    /// One rate per second, repeated when the run is longer.
    Trace(Vec<f64>),
}

impl Traffic {
    pub(crate) fn rate_at(&self, t: f64) -> f64 {
        match self {
            Traffic::Steps(steps) => steps
                .iter()
                .take_while(|(from, _)| *from <= t)
                .last()
                .map_or(0.0, |(_, r)| *r),
            Traffic::Trace(rates) if rates.is_empty() => 0.0,
            Traffic::Trace(rates) => rates[(t.max(0.0) as usize) % rates.len()],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub cores: f64,
    /// Core-seconds per batch, whatever it carries.
    pub per_batch: f64,
    /// Core-seconds per document.
    pub per_document: f64,
    /// Cores one batch keeps busy while it runs.
    pub batch_cores: f64,
    /// A batch's cost varies uniformly by ± this share.
    pub cost_spread: f64,
    pub traffic: Traffic,
    /// Core-seconds of one live operation.
    pub op_cost: f64,
    /// Seconds the probe's window ends before the probe is read.
    pub probe_lag: f64,
    /// Seconds [from, to) in which the probe fails.
    pub blind: Option<(f64, f64)>,
    /// Batches in flight the server handles without contention, and how many more halve the
    /// work it does per core-second (`None`: no contention). Contended cores are busy but do
    /// less: the CPU shows it, the work does not.
    pub contention: Option<(f64, f64)>,
    /// Seconds per simulation step ([`STEP`] unless batches are shorter).
    pub step: f64,
    /// The readings' own noise, one standard deviation in CPU percent: an `irate` over
    /// scrapes a little more or less than a second apart, CPU counted in ticks of 10 ms.
    pub probe_noise: f64,
}

impl Database {
    /// The local FerretDB of the benchmark (2 cores), measured: a 20,000-user day's batch
    /// scans 61,000 events (1.5 core-seconds, ~1.4 cores busy) and costs 2.3 ms per user;
    /// the service's lookups take ~64 ms each, so 8 a second use half a core. Prometheus'
    /// `irate` over 1 s scrapes lags about one interval.
    /// Two batches at once cost it 1.48× as much each, four 2.7× (measured): `1 / (1 + (n −
    /// 1) / 2.1)`.
    pub fn ferretdb(traffic: Traffic) -> Self {
        Self {
            cores: 2.0,
            per_batch: 1.5,
            per_document: 0.0023,
            batch_cores: 1.4,
            cost_spread: 0.15,
            traffic,
            op_cost: 0.064,
            probe_lag: 1.0,
            blind: None,
            contention: Some((1.0, 2.1)),
            step: STEP,
            probe_noise: 0.0,
        }
    }

    /// The local FerretDB 2 on PostgreSQL with DocumentDB (2 cores), with the score's indexes,
    /// as the control tests' model learned it: a score batch costs ~1.2 ms of CPU plus 45 µs
    /// per user (a day of 5,000 users/s is ~37% of a core), and the idle database's
    /// background work (PostgreSQL's writers, DocumentDB's cron) wanders by a few percent,
    /// here as two 10-ms operations a second. Prometheus' `irate` lags about one interval.
    /// Batches of a few milliseconds need steps of one or two. Readings of a steady 37% wander
    /// by ±3% (measured).
    pub fn documentdb(traffic: Traffic) -> Self {
        Self {
            cores: 2.0,
            per_batch: 0.0012,
            per_document: 0.000045,
            batch_cores: 1.0,
            cost_spread: 0.3,
            traffic,
            op_cost: 0.01,
            probe_lag: 1.0,
            blind: None,
            contention: None,
            step: 0.002,
            probe_noise: 3.0,
        }
    }
}

/// One interval of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Seconds at the end of the interval.
    pub t: f64,
    /// True mean CPU over the interval, percent of one core.
    pub cpu: f64,
    /// Of which the live operations'.
    pub live_cpu: f64,
    /// What the probe reported at the end of the interval (`None`: blind).
    pub probe: Option<f64>,
    pub pace: Pace,
    /// Documents written in the interval.
    pub documents: f64,
    /// Live operations' latency, seconds: (50th, 99th percentile) of those finished in it.
    pub latency: Option<(f64, f64)>,
}

struct Running {
    start: f64,
    work: f64,
    documents: f64,
}

struct Op {
    arrived: f64,
    work: f64,
}

/// How tidegate's worker runs in the plant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Worker {
    /// Seconds between pacing decisions.
    pub interval: f64,
    /// Batches in flight at most.
    pub loops: usize,
    /// The token bucket's burst: the largest batch.
    pub burst: usize,
    /// Jobs in the day; `None`: more than the run needs.
    pub jobs: Option<u64>,
}

/// A run of `db` worked by `worker`, paced by `pace` (called once per interval with the
/// probe's sample and the batches of the last minute), for `seconds` or until the jobs are done.
pub fn run(
    db: &Database,
    worker: Worker,
    seconds: f64,
    seed: u64,
    mut pace: impl FnMut(&Sample, &[Batch]) -> Pace,
) -> Vec<Interval> {
    let Worker {
        interval,
        loops,
        burst,
        jobs,
    } = worker;
    let burst = burst.max(1) as f64;
    let step = db.step;
    let mut rng = StdRng::seed_from_u64(seed);
    let steps_per_interval = (interval / step).round().max(1.0) as usize;
    let lag_steps = (db.probe_lag / step).round() as usize;
    let mut current = Pace {
        rate: 0.0,
        batch: 1,
        limiter: "start",
    };
    let mut left = jobs.map(|j| j as f64);
    let (mut tokens, mut t) = (0.0_f64, 0.0_f64);
    let mut running: Vec<Running> = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut done_batches: Vec<Batch> = Vec::new();
    // CPU percent of every step so far (the probe reads a lagged window of it).
    let mut history: Vec<f64> = Vec::new();
    let mut next_op = 0.0;
    let mut out = Vec::new();
    // The mean time a batch took, as the worker's throttle measures it.
    let mut took = 0.0_f64;
    while t < seconds && left.is_none_or(|l| l > 0.0 || !running.is_empty()) {
        let (mut cpu_sum, mut live_sum, mut documents) = (0.0, 0.0, 0.0);
        let mut latencies: Vec<f64> = Vec::new();
        for _ in 0..steps_per_interval {
            // Arrivals in this step.
            let rate = db.traffic.rate_at(t);
            if rate > 0.0 {
                if next_op < t {
                    next_op = t + exp(&mut rng, rate);
                }
                while next_op < t + step {
                    ops.push(Op {
                        arrived: next_op,
                        work: db.op_cost * (0.5 + rng.random::<f64>()),
                    });
                    next_op += exp(&mut rng, rate);
                }
            }
            // The worker: pay, then take (an infinite rate is an unpaced worker).
            if current.rate.is_finite() {
                tokens = (tokens + current.rate * step).min(burst);
            }
            // No more batches in flight than the pace needs (the throttle's rule).
            let slots = if current.rate.is_finite() {
                law::slots(current.rate, current.batch.max(1) as f64, took).clamp(1, loops)
            } else {
                loops
            };
            while running.len() < slots && left.is_none_or(|l| l > 0.0) {
                let want = current.batch.max(1) as f64;
                if current.rate.is_finite() {
                    if tokens < want {
                        break;
                    }
                    tokens -= want;
                }
                let n = left.map_or(want, |l| l.min(want));
                if let Some(l) = left.as_mut() {
                    *l -= n;
                }
                let spread = 1.0 + db.cost_spread * (2.0 * rng.random::<f64>() - 1.0);
                running.push(Running {
                    start: t,
                    work: (db.per_batch + db.per_document * n) * spread,
                    documents: n,
                });
            }
            // Processor sharing: each live operation wants up to a core, each batch up to
            // `batch_cores`, neither more than its remaining work fills in a step.
            let want = |work: f64, cores: f64| (work / step).min(cores);
            let demand: f64 = ops.iter().map(|o| want(o.work, 1.0)).sum::<f64>()
                + running
                    .iter()
                    .map(|b| want(b.work, db.batch_cores))
                    .sum::<f64>();
            let share = if demand > db.cores {
                db.cores / demand
            } else {
                1.0
            };
            // Contention comes from the batches' connections (the original script held ~2,500).
            let efficiency = db.contention.map_or(1.0, |(free, scale)| {
                1.0 / (1.0 + (running.len() as f64 - free).max(0.0) / scale)
            });
            let end = t + step;
            let mut live_done = 0.0;
            ops.retain_mut(|op| {
                let done = share * want(op.work, 1.0) * step;
                live_done += done;
                op.work -= done * efficiency;
                if op.work <= 1e-12 || end - op.arrived >= OP_TIMEOUT {
                    latencies.push((end - op.arrived).min(OP_TIMEOUT));
                    false
                } else {
                    true
                }
            });
            let mut batch_done = 0.0;
            running.retain_mut(|b| {
                let done = share * want(b.work, db.batch_cores) * step;
                batch_done += done;
                b.work -= done * efficiency;
                if b.work <= 1e-12 {
                    let duration = end - b.start;
                    took = law::mean_took(took, duration);
                    done_batches.push(Batch {
                        class: 0,
                        start: b.start,
                        end: Some(end),
                        documents: b.documents,
                    });
                    documents += b.documents;
                    false
                } else {
                    true
                }
            });
            let busy = (live_done + batch_done) / step * 100.0;
            cpu_sum += busy;
            live_sum += live_done / step * 100.0;
            history.push(busy);
            t = end;
        }
        let n = steps_per_interval as f64;
        let blind = db.blind.is_some_and(|(a, b)| (a..b).contains(&t));
        let probe = (!blind && history.len() >= lag_steps + steps_per_interval).then(|| {
            let to = history.len() - lag_steps;
            let mean = history[to - steps_per_interval..to].iter().sum::<f64>() / n;
            // No draw without noise: the other databases' runs keep their random streams.
            if db.probe_noise > 0.0 {
                (mean + db.probe_noise * normal(&mut rng)).max(0.0)
            } else {
                mean
            }
        });
        done_batches.retain(|b| b.end.is_some_and(|e| e > t - 60.0));
        let mut batches = done_batches.clone();
        batches.extend(running.iter().map(|r| Batch {
            class: 0,
            start: r.start,
            end: None,
            documents: r.documents,
        }));
        // The live operations' mean latency is what a read latency probe reports.
        let read_latency =
            (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64);
        let sample = Sample {
            probe_ok: !blind,
            db_cpu: probe,
            read_latency: read_latency.filter(|_| !blind),
            at: t,
            elapsed: interval,
            ..Sample::default()
        };
        current = pace(&sample, &batches);
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        out.push(Interval {
            t,
            cpu: cpu_sum / n,
            live_cpu: live_sum / n,
            probe,
            pace: current,
            documents,
            latency: (!latencies.is_empty()).then(|| (pick(0.5), pick(0.99))),
        });
    }
    out
}

/// A standard normal deviate (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let (u, v) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn exp(rng: &mut StdRng, rate: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() / rate
}
