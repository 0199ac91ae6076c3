//! What the controller reads and what it decides: one interval's [`Sample`], its [`Config`],
//! the queues' shares, and the [`Decision`]: a [`Pace`] per queue and the signal that limits it.

use crate::control::cost::Cost;

/// One interval's observations. `None` means the server does not report that signal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// False when the probe could not reach the database this interval.
    pub probe_ok: bool,
    /// Database CPU, percent of one core (800 = 8 busy cores).
    pub db_cpu: Option<f64>,
    /// Mean write latency over the interval, seconds.
    pub write_latency: Option<f64>,
    /// Mean read latency over the interval, seconds.
    pub read_latency: Option<f64>,
    /// Writes that failed transiently (timeouts, network, overload) this interval, as the
    /// client saw them.
    pub write_errors: u64,
    /// When the reading was taken, seconds on the clock the batches' times use.
    pub at: f64,
    /// Seconds the reading covers.
    pub elapsed: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub target_cpu: f64,
    /// Seconds.
    pub target_latency: f64,
    /// Seconds; `None`: no read latency guard.
    pub target_read_latency: Option<f64>,
    /// Documents/second while the probe is blind.
    pub floor: f64,
    /// Documents/second at most, per queue.
    pub ceiling: f64,
    /// Share of the gap to the budget closed per interval when the budget grows (0-1].
    pub gain: f64,
    /// Seconds between decisions.
    pub interval: f64,
    /// The largest batch, documents.
    pub max_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target_cpu: 200.0,
            target_latency: 0.050,
            target_read_latency: None,
            floor: 50.0,
            ceiling: 20_000.0,
            gain: 0.5,
            interval: 5.0,
            max_batch: crate::store::BATCH_DOCS,
        }
    }
}

/// Which signal set the pace this interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limiter {
    /// Holding CPU at its target.
    Cpu,
    /// The live load alone uses the target: the batches wait.
    NoHeadroom,
    /// Write latency above its target.
    Latency,
    /// Read latency above its target.
    ReadLatency,
    /// Writes failed transiently: back off.
    Errors,
    /// The probe cannot see the database: the pace is the floor.
    Blind,
    /// A batch's cost is still being learned: paced as if it were high.
    Probing,
    Ceiling,
    /// A new leader holding the pace it took over while its probes prime.
    Resuming,
}

impl Limiter {
    pub const ALL: [Limiter; 9] = [
        Limiter::Cpu,
        Limiter::NoHeadroom,
        Limiter::Latency,
        Limiter::ReadLatency,
        Limiter::Errors,
        Limiter::Blind,
        Limiter::Probing,
        Limiter::Ceiling,
        Limiter::Resuming,
    ];

    /// The name metrics, logs and the simulation's CSV use.
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Cpu => "cpu",
            Limiter::NoHeadroom => "no_headroom",
            Limiter::Latency => "latency",
            Limiter::ReadLatency => "read_latency",
            Limiter::Errors => "errors",
            Limiter::Blind => "blind",
            Limiter::Probing => "probing",
            Limiter::Ceiling => "ceiling",
            Limiter::Resuming => "resuming",
        }
    }
}

/// A queue that shares the budget, as the leader sees it this interval.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Share {
    pub queue: String,
    /// Its part of the budget against the other queues' (> 0).
    pub weight: f64,
    /// It has work: jobs waiting, or batches in flight. Queues without get no budget.
    pub active: bool,
    /// Its batches never carry more (a governed queue's workers take one job at a time).
    pub largest: Option<usize>,
}

/// One queue's pace.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    pub queue: String,
    /// Documents/second, for all of the queue's processes together.
    pub rate: f64,
    /// Documents per batch.
    pub batch: usize,
    /// CPU percent this queue's batches may use; `None` when the pace is not set from CPU.
    pub budget: Option<f64>,
    /// What is believed of its batches' cost, once anything is.
    pub cost: Option<Cost>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// CPU percent all batches together may use; `None` when the pace is not set from CPU.
    pub budget: Option<f64>,
    /// The live load as believed, CPU percent.
    pub live: Option<f64>,
    pub limiter: Limiter,
    /// One per queue of the step's shares, in their order.
    pub paces: Vec<Pace>,
}

impl Decision {
    pub fn pace(&self, queue: &str) -> Option<&Pace> {
        self.paces.iter().find(|p| p.queue == queue)
    }
}
