//! The controller: once per interval, what the probe saw and the batches that ran in, a pace
//! out for each queue sharing the database: how many documents its batches carry and how many
//! documents a second may leave. A pure state machine: no clock, no I/O.
//!
//! The law works in CPU, not in documents. A [`CostModel`] learns, from every reading, the
//! live load (what the database does without the batches) and what each queue's batch costs
//! (a fixed part and a part per document). The batches' CPU budget is the target minus the
//! live load: cut at once when the live load rises, grown back by a share of the gap per
//! interval. It is split among the queues that have work, by weight, and each queue's pace
//! follows from its share and its cost: `documents/s = share × n / cost(n)`. So a batch whose
//! fixed cost dominates leaves less often, not with fewer documents, and when the live load
//! alone reaches the target the budget is zero and every batch waits. A batch carries enough
//! documents for its fixed cost to be at most a tenth of it (at most the largest batch),
//! growing there by at most ×2 at a time as the cost becomes known, and now and then fewer,
//! so that the two costs can be told apart; and no more than fit two intervals of the target
//! in one batch's cost (a larger batch is a lump no pace can hold the readings through). Whatever the
//! model believes, CPU readings well over the target for three intervals cut the budget in
//! proportion.
//!
//! Guards come first: transient write errors, write latency above its target, or read latency
//! above its target (what the service's users feel) cut the budget by ×0.7 per interval
//! (AIMD's decrease). A blind probe paces at the floor, in batches of the size last chosen:
//! the floor is the pace for a database nobody can see, not a minimum load. With no CPU
//! signal at all it runs AIMD on latency alone, in documents/second. Every decision says which
//! signal limits it.

use crate::control::cost::{Batch, CostModel, Scale};

mod decision;

pub(crate) use decision::Share;
pub use decision::{Config, Decision, Limiter, Pace, Sample};

/// A fixed cost at most this share of a batch's cost: batches are as large as that needs.
const FIXED_SHARE: f64 = 0.1;
/// Every `DITHER`-th decision asks for batches this much smaller, so that batch sizes vary
/// and the fixed and per-document costs can be told apart.
const DITHER: u64 = 4;
const DITHER_SHARE: f64 = 0.6;
/// A batch expected to cost more than this many intervals of the whole target is a lump the
/// readings cannot be held through: it is cut to the size that fits.
const LUMP_INTERVALS: f64 = 2.0;
/// The cost counts as learned once its uncertainty is under this share of it, and as unknown
/// again only past twice that: a margin for a cold start, not for the noise of a steady one.
const LEARNED: f64 = 0.5;
/// A batch may grow once its cost's uncertainty is under this share of one interval of the
/// whole target, known or not: an error that small in one batch is lost in the readings' own
/// noise. On a database with indexes a batch can be too cheap to tell from that noise (a few
/// milliseconds of CPU), and judged by its share alone it would never grow: batches of ten
/// documents would pace a cheap queue, too many for the turns to start. The pace itself never
/// goes by this: a cost whose mean is lost in the noise is not known, however small.
const NEGLIGIBLE: f64 = 0.02;
/// Readings averaged by the model-free check, and how far over the target their mean may go.
const OVER_READINGS: usize = 3;
const OVER: f64 = 1.25;

/// What the controller keeps per queue.
#[derive(Debug, Clone)]
struct Queue {
    name: String,
    class: usize,
    /// Base batch size (before dithering).
    batch: usize,
    /// The largest batch its member allows, if smaller than the configured one.
    largest: Option<usize>,
    learned: bool,
    rate: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Controller {
    config: Config,
    cost: CostModel,
    /// CPU percent all batches may use.
    budget: f64,
    queues: Vec<Queue>,
    steps: u64,
    /// Recent CPU readings, for the check that does not rely on the model.
    recent: std::collections::VecDeque<f64>,
}

impl Controller {
    pub fn new(config: Config) -> Self {
        let cost = CostModel::new(Scale {
            target: config.target_cpu,
            interval: config.interval,
            ceiling: config.ceiling,
        });
        Self {
            budget: 0.0,
            cost,
            config,
            queues: Vec::new(),
            steps: 0,
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Goes on from what another process published: the budget, and each queue's pace and
    /// learned cost (a starting point, learned again from here).
    pub fn resume(config: Config, budget: Option<f64>, paces: &[Pace]) -> Self {
        let mut controller = Self::new(config);
        controller.budget = budget.unwrap_or(0.0).max(0.0);
        for pace in paces {
            let q = controller.queue(&pace.queue);
            let queue = &mut controller.queues[q];
            queue.rate = pace.rate.clamp(0.0, config.ceiling);
            queue.batch = pace.batch.clamp(1, config.max_batch.max(1));
            if let Some(cost) = pace.cost {
                let class = queue.class;
                controller.cost.seed(class, cost);
            }
        }
        controller
    }

    /// The index of `name`'s state, created when new.
    fn queue(&mut self, name: &str) -> usize {
        if let Some(i) = self.queues.iter().position(|q| q.name == name) {
            return i;
        }
        let class = self.cost.class(name);
        self.queues.push(Queue {
            name: name.to_owned(),
            class,
            batch: (self.config.max_batch / 10).max(1),
            largest: None,
            learned: false,
            rate: self.config.floor,
        });
        self.queues.len() - 1
    }

    /// The class a queue's batches are reported under (see [`Batch::class`]).
    pub(crate) fn class(&mut self, queue: &str) -> usize {
        let q = self.queue(queue);
        self.queues[q].class
    }

    /// Each sharing queue's state, created when new, with the largest batch its member allows.
    fn enroll(&mut self, shares: &[Share]) {
        for share in shares {
            let q = self.queue(&share.queue);
            let queue = &mut self.queues[q];
            queue.largest = share.largest;
            if let Some(largest) = share.largest {
                queue.batch = queue.batch.min(largest.max(1));
            }
        }
    }

    /// Keeps the current paces for one interval.
    pub fn hold(&mut self, shares: &[Share]) -> Decision {
        self.enroll(shares);
        let paces = shares
            .iter()
            .map(|s| {
                let q = self.queue(&s.queue);
                let queue = &self.queues[q];
                Pace {
                    queue: s.queue.clone(),
                    rate: queue.rate,
                    batch: queue.batch,
                    budget: None,
                    cost: None,
                }
            })
            .collect();
        Decision {
            budget: Some(self.budget),
            live: None,
            limiter: Limiter::Resuming,
            paces,
        }
    }

    /// The live load and the batches' costs as currently believed.
    pub fn cost(&self) -> &CostModel {
        &self.cost
    }

    /// One interval: the paces for the next one. `batches` are those of the last minute or so
    /// (finished or in flight, on the clock of `sample.at`, classed by [`Controller::class`]);
    /// `shares` the queues that share the budget.
    pub fn step(&mut self, sample: &Sample, batches: &[Batch], shares: &[Share]) -> Decision {
        self.steps += 1;
        self.enroll(shares);
        let c = self.config;
        if !sample.probe_ok {
            // Whatever the batches may use is unknown: the floor, shared by weight.
            self.budget = self.budget.min(self.floor_budget(shares));
            let paces = self.split(shares, |ctl, q, weight| {
                let queue = &ctl.queues[q];
                (c.floor * weight, queue.batch, None)
            });
            return Decision {
                budget: None,
                live: None,
                limiter: Limiter::Blind,
                paces,
            };
        }
        let Some(cpu) = sample.db_cpu else {
            return self.without_cpu(sample, shares);
        };
        self.cost.observe(sample.at, sample.elapsed, cpu, batches);
        self.recent.push_back(cpu);
        if self.recent.len() > OVER_READINGS {
            self.recent.pop_front();
        }
        let live = self.cost.live();
        let mut wanted = c.target_cpu - live.max(0.0);
        // Whatever the model believes, readings well over the target for several intervals
        // mean the batches must give way (a model can be wrong: a saturated server's CPU is
        // capped at its cores, and a lag can be misjudged). The cut is in proportion to the
        // excess: at twice the target, to under half.
        let recent = self.recent.iter().sum::<f64>() / OVER_READINGS as f64;
        if self.recent.len() == OVER_READINGS && recent > OVER * c.target_cpu {
            wanted = wanted.min(0.9 * self.budget * c.target_cpu / recent);
        }
        let guard = if sample.write_errors > 0 {
            Some(Limiter::Errors)
        } else if sample.write_latency.is_some_and(|l| l > c.target_latency) {
            Some(Limiter::Latency)
        } else if let (Some(l), Some(t)) = (sample.read_latency, c.target_read_latency)
            && l > t
        {
            Some(Limiter::ReadLatency)
        } else {
            None
        };
        let mut limiter = if let Some(guard) = guard {
            self.budget = (self.budget * 0.7).min(wanted.max(0.0));
            guard
        } else if wanted <= 0.0 {
            self.budget = 0.0;
            Limiter::NoHeadroom
        } else if wanted < self.budget {
            self.budget = wanted;
            Limiter::Cpu
        } else {
            let grown = self.budget + c.gain * (wanted - self.budget);
            // Never more than double (and a twentieth of the target) in one interval.
            self.budget = grown.min(2.0 * self.budget + 0.05 * c.target_cpu);
            Limiter::Cpu
        };
        let budget = self.budget;
        let mut probing = false;
        let mut ceiling = false;
        let paces = self.split(shares, |ctl, q, weight| {
            let share = budget * weight;
            let (rate, batch, learning) = ctl.pace(q, share);
            probing |= learning;
            ceiling |= rate >= c.ceiling;
            (rate.min(c.ceiling), batch, Some(share))
        });
        if limiter == Limiter::Cpu {
            if probing {
                limiter = Limiter::Probing;
            } else if ceiling {
                limiter = Limiter::Ceiling;
            }
        }
        Decision {
            budget: Some(budget),
            live: Some(live),
            limiter,
            paces,
        }
    }

    /// One pace per share: `pace(controller, queue index, weight share)` for active queues (a
    /// share of the weights of active queues), nothing for the others.
    fn split(
        &mut self,
        shares: &[Share],
        mut pace: impl FnMut(&mut Self, usize, f64) -> (f64, usize, Option<f64>),
    ) -> Vec<Pace> {
        let total: f64 = shares
            .iter()
            .filter(|s| s.active)
            .map(|s| s.weight.max(0.0))
            .sum();
        shares
            .iter()
            .map(|s| {
                let q = self.queue(&s.queue);
                let weight = if s.active && total > 0.0 {
                    s.weight.max(0.0) / total
                } else {
                    0.0
                };
                let (rate, batch, budget) = if weight > 0.0 {
                    pace(self, q, weight)
                } else {
                    (0.0, self.queues[q].batch, Some(0.0))
                };
                let queue = &mut self.queues[q];
                queue.rate = rate;
                let learned = self.cost.observed() > 0;
                Pace {
                    queue: s.queue.clone(),
                    rate,
                    batch,
                    budget,
                    cost: learned.then(|| self.cost.cost(self.queues[q].class)),
                }
            })
            .collect()
    }

    /// Queue `q`'s rate and batch size for `budget` CPU percent, and whether its cost is still
    /// being learned.
    fn pace(&mut self, q: usize, budget: f64) -> (f64, usize, bool) {
        let c = self.config;
        let largest = self.largest(q);
        let class = self.queues[q].class;
        let cost = self.cost.cost(class);
        let rule = if cost.per_document > 0.0 {
            let n = (cost.per_batch * (1.0 - FIXED_SHARE) / FIXED_SHARE / cost.per_document).ceil();
            if n.is_finite() {
                (n.max(1.0) as usize).min(largest)
            } else {
                largest
            }
        } else {
            largest
        };
        // Batches grow towards the rule's size by at most ×2 at a time, and only once the cost
        // of the current size is known or too small to matter: each step extrapolates the cost
        // model a little. They shrink to it only once the smaller batch's cost is known: a
        // fixed cost believed to be nought while it is lost in the readings' noise would
        // otherwise shrink the batches to one document and pace them as if free.
        let current = self.queues[q].batch.clamp(1, largest);
        let mut n = if rule > current && self.negligible(q, current) {
            rule.min(2 * current)
        } else if rule < current && self.known(q, rule) {
            rule
        } else {
            current
        };
        // A batch dearer than a few intervals of the target runs the database over it for as
        // long, whatever the pace (FerretDB's upserts late in a large day, ~40 ms of a core
        // each, make a batch of 500 a 20-s lump): it is cut to the size that fits, when its
        // fixed part alone does (a batch whose read alone is the lump would only pay that
        // read for fewer documents).
        let lump = LUMP_INTERVALS * c.target_cpu * c.interval;
        if cost.per_document > 0.0
            && cost.per_batch < lump
            && self.cost.batch_cost(class, n as f64).0 > lump
        {
            let fits = ((lump - cost.per_batch) / cost.per_document).floor() as usize;
            n = fits.clamp(1, n);
        }
        let learned = self.known(q, n);
        self.queues[q].learned = learned;
        // The base size is kept; only this decision's batches are smaller.
        self.queues[q].batch = n;
        if self.steps.is_multiple_of(DITHER) {
            n = ((n as f64 * DITHER_SHARE).ceil() as usize).max(1);
        }
        let (mean, spread) = self.cost.batch_cost(class, n as f64);
        let pace = |cost: f64| {
            if cost > 0.0 {
                budget * n as f64 / cost
            } else {
                c.ceiling
            }
        };
        if learned {
            return (pace(mean), n, false);
        }
        // A cost not yet learned is counted one deviation high, but the pace may still grow
        // ×1.5 per interval up to what its expectation allows: a batch too cheap to see
        // against the live load's noise must grow until it can be seen.
        let grown = 1.5 * self.queues[q].rate.max(c.floor);
        (pace(mean + spread).max(grown.min(pace(mean))), n, true)
    }

    /// The largest batch queue `q` may have: the configured one, or its member's if smaller.
    fn largest(&self, q: usize) -> usize {
        self.config
            .max_batch
            .min(self.queues[q].largest.unwrap_or(usize::MAX))
            .max(1)
    }

    /// Whether the cost of a batch of `n` of queue `q` is known well enough to pace by its
    /// expectation, with hysteresis around [`LEARNED`]. Only a share of itself will do: the
    /// pace is the budget over the cost, so its error is the cost's relative error.
    fn known(&self, q: usize, n: usize) -> bool {
        self.uncertain_within(q, n, 0.0)
    }

    /// Whether the cost of a batch of `n` of queue `q` is known or its uncertainty too small
    /// for one batch to matter ([`NEGLIGIBLE`]): enough to let the batches grow.
    fn negligible(&self, q: usize, n: usize) -> bool {
        self.uncertain_within(
            q,
            n,
            NEGLIGIBLE * self.config.target_cpu * self.config.interval,
        )
    }

    fn uncertain_within(&self, q: usize, n: usize, absolute: f64) -> bool {
        let queue = &self.queues[q];
        let (mean, spread) = self.cost.batch_cost(queue.class, n as f64);
        let hysteresis = if queue.learned { 2.0 } else { 1.0 };
        self.cost.observed() > 0 && spread <= hysteresis * (LEARNED * mean.max(1e-9)).max(absolute)
    }

    /// The CPU the floor's pace would use, each queue at its current batch size.
    fn floor_budget(&self, shares: &[Share]) -> f64 {
        let active = shares.iter().filter(|s| s.active).count().max(1) as f64;
        self.queues
            .iter()
            .map(|q| {
                let n = q.batch.max(1) as f64;
                let (mean, spread) = self.cost.batch_cost(q.class, n);
                let cost = if spread.is_finite() {
                    mean + spread
                } else {
                    mean
                };
                self.config.floor / active * cost / n
            })
            .fold(0.0, f64::max)
    }

    /// No CPU signal: additive increase in documents/second while latency is fine, per queue,
    /// one interval's worth per batch (with no CPU signal there is no cost to weigh).
    fn without_cpu(&mut self, sample: &Sample, shares: &[Share]) -> Decision {
        let c = self.config;
        let high = sample.write_errors > 0
            || sample.write_latency.is_some_and(|l| l > c.target_latency)
            || matches!((sample.read_latency, c.target_read_latency), (Some(l), Some(t)) if l > t);
        let mut limiter = if high {
            Limiter::Latency
        } else {
            Limiter::Probing
        };
        let paces = self.split(shares, |ctl, q, _| {
            let rate = ctl.queues[q].rate;
            let rate = if high {
                rate * 0.7
            } else {
                rate + c.floor.max(0.1 * rate)
            };
            let rate = rate.clamp(c.floor.min(c.ceiling), c.ceiling);
            let batch = ((rate * c.interval).ceil() as usize).clamp(1, ctl.largest(q));
            ctl.queues[q].batch = batch;
            (rate, batch, None)
        });
        if paces.iter().any(|p| p.rate >= c.ceiling) {
            limiter = Limiter::Ceiling;
        }
        Decision {
            budget: None,
            live: None,
            limiter,
            paces,
        }
    }
}

#[cfg(test)]
mod scenarios;
