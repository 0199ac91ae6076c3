//! A simulated database for virtual-time runs of the controller: cores, live traffic using part
//! of them, a CPU cost per document written, and queueing delay that grows as the cores fill.
//! It is a model, labelled a simulation wherever its numbers appear.

use crate::control::controller::Sample;

#[derive(Debug, Clone)]
pub struct Plant {
    pub cores: f64,
    /// Cores the live traffic keeps busy.
    pub baseline_cores: f64,
    /// Core-seconds per document written.
    pub cost_per_doc: f64,
    /// Write latency of an idle server, seconds.
    pub base_latency: f64,
}

impl Plant {
    pub fn new(cores: f64, baseline_cores: f64, cost_per_doc: f64, base_latency: f64) -> Self {
        Self {
            cores,
            baseline_cores,
            cost_per_doc,
            base_latency,
        }
    }

    /// One interval at `rate` documents/second: what a probe would observe.
    pub fn interval(&self, rate: f64) -> Sample {
        let demand = self.baseline_cores + rate.max(0.0) * self.cost_per_doc;
        let busy = demand.min(self.cores);
        let utilisation = (demand / self.cores).min(0.99);
        // M/M/1-like delay; past saturation the backlog makes it far worse.
        let mut latency = self.base_latency / (1.0 - utilisation);
        if demand > self.cores {
            latency *= 1.0 + 10.0 * (demand - self.cores) / self.cores;
        }
        Sample {
            probe_ok: true,
            db_cpu: Some(busy * 100.0),
            write_latency: Some(latency),
            write_errors: 0,
            demand: None,
        }
    }
}
