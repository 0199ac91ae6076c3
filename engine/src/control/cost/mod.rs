//! What the database's load is made of, learned online: the live load (everything but the
//! batches) and what each kind of batch costs, a fixed part per batch (a command, a read, a
//! scan) and a part per document. A kind ("class") is one queue's job: two queues writing to
//! one database cost differently. Pure: times are seconds on the caller's clock; nothing here
//! reads one.
//!
//! Each probe reading is the mean CPU over a window of time. The batches that ran in that
//! window explain part of it: a batch's cost is spread evenly over the time it was in flight
//! (a batch still in flight is expected to last as long as recent ones did), so a window holds
//! a fraction of it. The reading is then `live + Σ (C0·batches/s + C1·documents/s)` over the
//! classes, linear in the unknowns, and a Kalman filter tracks them: the live load moves
//! quickly (a service joins), the costs slowly (a collection grows). Pauses pin the live load
//! down (no batch in the window); batches that leave less often than every interval, or vary
//! in size, tell the costs apart. A CUSUM on the innovations notices a step in the live load
//! within about two readings and lets the filter jump to it instead of drifting, so a step is
//! not mistaken for a change of cost.
//!
//! Where a probe's window really lies is not known exactly: `serverStatus` between two of our
//! calls, PromQL's `irate` a scrape interval or so earlier. So one filter runs per candidate
//! lag, and the one that has predicted the readings best lately is the one believed.
//!
//! Units: CPU in percent of one core; costs in percent-seconds (100 = one CPU-second).

/// One batch as the workers report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch {
    /// Which class (queue) it belongs to: an index from [`CostModel::class`].
    pub class: usize,
    /// When its work on the database began, seconds.
    pub start: f64,
    /// When it ended; `None` while in flight.
    pub end: Option<f64>,
    pub documents: f64,
}

/// Candidate lags of a probe's window behind the moment it was read, in intervals.
const LAGS: [f64; 5] = [0.0, 0.5, 1.0, 1.5, 2.0];
/// Weight of the newest squared innovation in a filter's score (about the last 20 readings).
const SCORE_WEIGHT: f64 = 0.05;
/// A filter must predict this much better than the believed one to replace it.
const SWITCH_MARGIN: f64 = 0.8;

/// The share of each batch of `class` that ran in `[from, to)`: (batches, documents) per
/// second. A batch in flight at `now` is expected to run `expected` seconds in all.
pub(crate) fn attribute(
    batches: &[Batch],
    class: usize,
    from: f64,
    to: f64,
    now: f64,
    expected: f64,
) -> (f64, f64) {
    let span = to - from;
    if span <= 0.0 {
        return (0.0, 0.0);
    }
    let (mut per_batch, mut per_doc) = (0.0, 0.0);
    for b in batches.iter().filter(|b| b.class == class) {
        let end = b.end.unwrap_or_else(|| (b.start + expected).max(now));
        let share = if end > b.start {
            (end.min(to) - b.start.max(from)).max(0.0) / (end - b.start)
        } else if (from..to).contains(&b.start) {
            1.0
        } else {
            0.0
        };
        per_batch += share;
        per_doc += share * b.documents;
    }
    (per_batch / span, per_doc / span)
}

/// What is believed of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Percent-seconds per batch, whatever it carries.
    pub per_batch: f64,
    /// Percent-seconds per document.
    pub per_document: f64,
}

/// Scales that make the filter's noise, priors and bounds fit any database: the target CPU,
/// the interval, and the fastest pace allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scale {
    pub target: f64,
    pub interval: f64,
    pub ceiling: f64,
}

/// A Kalman filter over `[live, C0 of class 0, C1 of class 0, C0 of class 1, ...]`.
#[derive(Debug, Clone)]
struct Filter {
    lag: f64,
    theta: Vec<f64>,
    p: Vec<Vec<f64>>,
    score: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct CostModel {
    scale: Scale,
    classes: Vec<String>,
    filters: Vec<Filter>,
    best: usize,
    /// Mean squared innovation of the believed filter: the readings' own noise.
    noise: f64,
    /// Recent batches' mean time in flight, seconds.
    duration: Option<f64>,
    observed: u64,
    /// CUSUM of the believed filter's innovations, upwards and downwards.
    cusum: (f64, f64),
}

impl CostModel {
    pub fn new(scale: Scale) -> Self {
        let filters = LAGS
            .iter()
            .map(|l| Filter {
                lag: l * scale.interval,
                theta: vec![0.0],
                p: vec![vec![scale.target.powi(2)]],
                score: 0.0,
            })
            .collect();
        Self {
            scale,
            classes: Vec::new(),
            filters,
            best: 0,
            noise: (0.2 * scale.target).powi(2),
            duration: None,
            observed: 0,
            cusum: (0.0, 0.0),
        }
    }

    /// The index of the class `name`, added (with no cost known) when new.
    pub(crate) fn class(&mut self, name: &str) -> usize {
        if let Some(i) = self.classes.iter().position(|c| c == name) {
            return i;
        }
        // Priors: no cost known, with a spread as wide as a batch costing a whole interval of
        // the target, or a document costing so much that a tenth of the ceiling would use it.
        let s = self.scale;
        let c0 = s.target * s.interval;
        let c1 = s.target / s.ceiling.max(1e-9) * 10.0;
        for f in &mut self.filters {
            f.theta.extend([0.0, 0.0]);
            for row in &mut f.p {
                row.extend([0.0, 0.0]);
            }
            let n = f.theta.len();
            let mut r0 = vec![0.0; n];
            r0[n - 2] = c0 * c0;
            let mut r1 = vec![0.0; n];
            r1[n - 1] = c1 * c1;
            f.p.push(r0);
            f.p.push(r1);
        }
        self.classes.push(name.to_owned());
        self.classes.len() - 1
    }

    /// Starts a class from costs learned elsewhere (another leader): believed, with a spread
    /// of a third of themselves, and learned again from here.
    pub fn seed(&mut self, class: usize, cost: Cost) {
        let (i, j) = (1 + 2 * class, 2 + 2 * class);
        for f in &mut self.filters {
            if j < f.theta.len() {
                f.theta[i] = cost.per_batch.max(0.0);
                f.theta[j] = cost.per_document.max(0.0);
                f.p[i][i] = (cost.per_batch / 3.0).powi(2);
                f.p[j][j] = (cost.per_document / 3.0).powi(2);
            }
        }
    }

    /// Learns from one reading: `cpu` percent over the `elapsed` seconds that ended at `at`,
    /// with the batches that may have run then (finished ones and those in flight at `at`).
    pub(crate) fn observe(&mut self, at: f64, elapsed: f64, cpu: f64, batches: &[Batch]) {
        if !(cpu.is_finite() && elapsed > 0.0) {
            return;
        }
        let done: Vec<f64> = batches
            .iter()
            .filter_map(|b| b.end.map(|e| e - b.start))
            .collect();
        if !done.is_empty() {
            let mean = done.iter().sum::<f64>() / done.len() as f64;
            self.duration = Some(self.duration.map_or(mean, |d| 0.8 * d + 0.2 * mean));
        }
        let expected = self.duration.unwrap_or(self.scale.interval);
        let first = self.observed == 0;
        self.observed += 1;
        let (noise, q) = (self.noise, self.process_noise());
        // Costs stay within reason whatever the readings: no batch costs more than a hundred
        // intervals of the whole target, no document more than one.
        let s = self.scale;
        let bounds = (100.0 * s.target * s.interval, s.target * s.interval);
        let classes = self.classes.len();
        let mut innovations = Vec::with_capacity(self.filters.len());
        for f in &mut self.filters {
            let mut phi = Vec::with_capacity(1 + 2 * classes);
            phi.push(1.0);
            for class in 0..classes {
                let (b, d) = attribute(
                    batches,
                    class,
                    at - f.lag - elapsed,
                    at - f.lag,
                    at,
                    expected,
                );
                phi.extend([b, d]);
            }
            if first {
                // The first reading sets the live load: what the batches do not explain.
                f.theta[0] = cpu - dot(&phi[1..], &f.theta[1..]);
            }
            let e = f.update(&phi, cpu, noise, &q, &bounds);
            f.score = if first {
                e * e
            } else {
                (1.0 - SCORE_WEIGHT) * f.score + SCORE_WEIGHT * e * e
            };
            innovations.push(e);
        }
        let leader = self
            .filters
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.score.total_cmp(&b.1.score))
            .map_or(0, |(i, _)| i);
        if self.filters[leader].score < SWITCH_MARGIN * self.filters[self.best].score {
            self.best = leader;
        }
        let e = innovations[self.best];
        // A step in the live load (a service joins or leaves) shows as innovations of one sign
        // beyond the noise. A two-sided CUSUM (slack half a deviation, alarm at 2.5) notices
        // it within about two readings; the live load's uncertainty then widens by the step,
        // so the filter moves there at once, and the costs keep what they learned.
        let sd = self.noise.sqrt();
        let (up, down) = self.cusum;
        let (up, down) = ((up + e - 0.5 * sd).max(0.0), (down - e - 0.5 * sd).max(0.0));
        if up.max(down) > 2.5 * sd {
            let step = up.max(down);
            for f in &mut self.filters {
                f.p[0][0] += step * step;
            }
            self.cusum = (0.0, 0.0);
        } else {
            self.cusum = (up, down);
            let (lo, hi) = (
                (0.02 * self.scale.target).powi(2),
                self.scale.target.powi(2),
            );
            self.noise = (0.9 * self.noise + 0.1 * e * e).clamp(lo, hi);
        }
    }

    /// How much each part may drift per reading: the live load by a twentieth of the target
    /// (steps are caught apart), the costs by 5% of themselves.
    fn process_noise(&self) -> Vec<f64> {
        let s = self.scale;
        let theta = &self.filters[self.best].theta;
        let c0_floor = 0.001 * s.target * s.interval;
        let c1_floor = 0.001 * s.target / s.ceiling.max(1e-9);
        let mut q = vec![(0.05 * s.target).powi(2)];
        for class in 0..self.classes.len() {
            q.push((0.05 * theta[1 + 2 * class] + c0_floor).powi(2));
            q.push((0.05 * theta[2 + 2 * class] + c1_floor).powi(2));
        }
        q
    }

    /// How many readings it has learned from.
    pub(crate) fn observed(&self) -> u64 {
        self.observed
    }

    /// The live load, CPU percent.
    pub fn live(&self) -> f64 {
        self.filters[self.best].theta[0]
    }

    /// The lag believed, seconds.
    pub fn lag(&self) -> f64 {
        self.filters[self.best].lag
    }

    pub fn cost(&self, class: usize) -> Cost {
        let theta = &self.filters[self.best].theta;
        Cost {
            per_batch: theta.get(1 + 2 * class).copied().unwrap_or(0.0),
            per_document: theta.get(2 + 2 * class).copied().unwrap_or(0.0),
        }
    }

    /// A batch of `documents` of `class`: its expected cost, and one standard deviation of what
    /// is still unknown about it.
    pub(crate) fn batch_cost(&self, class: usize, documents: f64) -> (f64, f64) {
        let f = &self.filters[self.best];
        let (i, j) = (1 + 2 * class, 2 + 2 * class);
        if j >= f.theta.len() {
            return (0.0, f64::INFINITY);
        }
        let mean = f.theta[i] + f.theta[j] * documents;
        let var = f.p[i][i] + 2.0 * documents * f.p[i][j] + documents * documents * f.p[j][j];
        (mean, var.max(0.0).sqrt())
    }
}

impl Filter {
    /// One Kalman step: returns the innovation (reading minus prediction).
    /// `bounds`: the largest cost per batch and per document.
    fn update(&mut self, phi: &[f64], y: f64, r: f64, q: &[f64], bounds: &(f64, f64)) -> f64 {
        let n = self.theta.len();
        for (i, qi) in q.iter().enumerate().take(n) {
            self.p[i][i] += qi;
        }
        let ph: Vec<f64> = self.p.iter().map(|row| dot(row, phi)).collect();
        let s = dot(phi, &ph) + r;
        let e = y - dot(phi, &self.theta);
        if s <= 0.0 || !s.is_finite() {
            return e;
        }
        for (t, v) in self.theta.iter_mut().zip(&ph) {
            *t += v / s * e;
        }
        // P ← P − (Pφ)(Pφ)ᵀ / s, kept symmetric.
        for i in 0..n {
            for j in 0..n {
                self.p[i][j] -= ph[i] * ph[j] / s;
            }
        }
        for i in 0..n {
            for j in 0..i {
                let m = 0.5 * (self.p[i][j] + self.p[j][i]);
                self.p[i][j] = m;
                self.p[j][i] = m;
            }
        }
        // Costs are never negative, nor beyond `bounds` (a clamped one keeps its spread). The
        // live load is left free: clamping it at zero would bias it upwards near zero.
        for (i, t) in self.theta.iter_mut().enumerate().skip(1) {
            let most = if i % 2 == 1 { bounds.0 } else { bounds.1 };
            *t = t.clamp(0.0, most);
        }
        e
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests;
