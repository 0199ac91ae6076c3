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
pub fn attribute(
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
pub struct Scale {
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
pub struct CostModel {
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
    pub fn class(&mut self, name: &str) -> usize {
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
    pub fn observe(&mut self, at: f64, elapsed: f64, cpu: f64, batches: &[Batch]) {
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
    pub fn observed(&self) -> u64 {
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
    pub fn batch_cost(&self, class: usize, documents: f64) -> (f64, f64) {
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
mod tests {
    use super::*;

    fn scale() -> Scale {
        Scale {
            target: 100.0,
            interval: 1.0,
            ceiling: 20_000.0,
        }
    }

    #[test]
    fn a_window_holds_the_share_of_each_batch_that_ran_in_it() {
        let b = |class, start, end, documents| Batch {
            class,
            start,
            end,
            documents,
        };
        let batches = [
            b(0, 1.0, Some(3.0), 100.0),  // ran 1-3: half of it in [2, 4)
            b(0, 2.5, Some(3.0), 10.0),   // wholly inside
            b(0, 3.5, None, 50.0),        // in flight since 3.5, expected 1 s: half by 4
            b(0, 0.0, Some(1.0), 7.0),    // before the window
            b(1, 2.0, Some(3.0), 1000.0), // another class
        ];
        let (per_batch, per_doc) = attribute(&batches, 0, 2.0, 4.0, 3.6, 1.0);
        assert!(
            (per_batch - (0.5 + 1.0 + 0.5) / 2.0).abs() < 1e-9,
            "{per_batch}"
        );
        assert!(
            (per_doc - (50.0 + 10.0 + 25.0) / 2.0).abs() < 1e-9,
            "{per_doc}"
        );
        assert_eq!(attribute(&batches, 1, 2.0, 4.0, 3.6, 1.0), (0.5, 500.0));
    }

    /// Readings of a plant with `live` CPU where each class `k` costs `c0 + c1·n`, one batch
    /// every three seconds per class, in flight 0.8 s; the probe's window lags by `lag`.
    fn learn(
        model: &mut CostModel,
        live: f64,
        costs: &[(f64, f64)],
        n: &dyn Fn(usize, usize) -> f64,
        seconds: std::ops::RangeInclusive<usize>,
        lag: f64,
    ) {
        let classes: Vec<usize> = (0..costs.len())
            .map(|k| model.class(&format!("q{k}")))
            .collect();
        let mut batches: Vec<Batch> = Vec::new();
        for t in seconds {
            for (k, class) in classes.iter().enumerate() {
                if (t + k).is_multiple_of(3) {
                    let start = (t - 1) as f64 + 0.1;
                    batches.push(Batch {
                        class: *class,
                        start,
                        end: Some(start + 0.8),
                        documents: n(t, k),
                    });
                }
            }
            let mut cpu = live;
            for (k, (c0, c1)) in costs.iter().enumerate() {
                let (b, d) = attribute(
                    &batches,
                    classes[k],
                    t as f64 - 1.0 - lag,
                    t as f64 - lag,
                    t as f64,
                    0.8,
                );
                cpu += c0 * b + c1 * d;
            }
            model.observe(t as f64, 1.0, cpu, &batches);
        }
    }

    #[test]
    fn it_learns_both_costs_and_the_live_load_and_finds_the_lag() {
        let mut model = CostModel::new(scale());
        let sizes = |t: usize, _| if t.is_multiple_of(2) { 200.0 } else { 500.0 };
        learn(&mut model, 50.0, &[(40.0, 0.2)], &sizes, 1..=120, 1.0);
        let cost = model.cost(0);
        assert!((model.live() - 50.0).abs() < 3.0, "{}", model.live());
        assert!((cost.per_batch - 40.0).abs() < 8.0, "{cost:?}");
        assert!((cost.per_document - 0.2).abs() < 0.03, "{cost:?}");
        assert_eq!(model.lag(), 1.0);
    }

    #[test]
    fn two_classes_are_told_apart() {
        let mut model = CostModel::new(scale());
        let sizes = |t: usize, k: usize| {
            if (t + k).is_multiple_of(2) {
                100.0
            } else {
                300.0
            }
        };
        learn(
            &mut model,
            20.0,
            &[(60.0, 0.05), (10.0, 0.3)],
            &sizes,
            1..=240,
            0.0,
        );
        let (a, b) = (model.batch_cost(0, 300.0).0, model.batch_cost(1, 300.0).0);
        assert!((a - 75.0).abs() < 0.15 * 75.0, "class 0: {a}");
        assert!((b - 100.0).abs() < 0.15 * 100.0, "class 1: {b}");
        assert!((model.live() - 20.0).abs() < 5.0, "{}", model.live());
    }

    #[test]
    fn a_wrong_cost_recovers_within_a_few_batches() {
        let mut model = CostModel::new(scale());
        learn(&mut model, 30.0, &[(60.0, 0.1)], &|_, _| 300.0, 1..=60, 0.0);
        let (before, _) = model.batch_cost(0, 300.0);
        assert!((before - 90.0).abs() < 15.0, "learned first: {before}");
        // The collection grew: every batch now costs three times as much. Ten batches later
        // (30 readings) the cost is known again.
        learn(
            &mut model,
            30.0,
            &[(180.0, 0.3)],
            &|_, _| 300.0,
            61..=90,
            0.0,
        );
        let (after, _) = model.batch_cost(0, 300.0);
        assert!((after - 270.0).abs() < 0.25 * 270.0, "{after}");
        assert!((model.live() - 30.0).abs() < 10.0, "{}", model.live());
    }

    #[test]
    fn a_cost_believed_ten_times_too_high_recovers_within_a_few_batches() {
        // The failure issue 12 saw: an estimate stuck 5-10x too high paces far too slowly.
        let mut model = CostModel::new(scale());
        let class = model.class("q0");
        model.seed(
            class,
            Cost {
                per_batch: 500.0,
                per_document: 1.0,
            },
        );
        learn(
            &mut model,
            30.0,
            &[(50.0, 0.1)],
            &|t, _| if t % 2 == 0 { 200.0 } else { 400.0 },
            1..=30,
            0.0,
        );
        let (cost, _) = model.batch_cost(class, 300.0);
        assert!(
            (cost - 80.0).abs() < 0.25 * 80.0,
            "ten batches later: {cost}"
        );
    }

    #[test]
    fn costs_stay_bounded_whatever_the_readings() {
        let mut model = CostModel::new(scale());
        let class = model.class("q0");
        let batch = |start: f64| Batch {
            class,
            start,
            end: Some(start + 0.5),
            documents: 1.0,
        };
        let mut batches = Vec::new();
        for t in 1..=50 {
            batches.push(batch(t as f64 - 0.9));
            // Absurd readings: a tiny batch explaining a thousand cores.
            model.observe(t as f64, 1.0, if t % 2 == 0 { 1e5 } else { 0.0 }, &batches);
        }
        let cost = model.cost(class);
        assert!(cost.per_batch <= 100.0 * 100.0 * 1.0, "{cost:?}");
        assert!(cost.per_document <= 100.0, "{cost:?}");
    }

    #[test]
    fn an_unlearned_cost_is_uncertain_and_an_unknown_class_has_none() {
        let mut model = CostModel::new(scale());
        assert_eq!(model.batch_cost(0, 500.0), (0.0, f64::INFINITY));
        let class = model.class("q");
        let (mean, spread) = model.batch_cost(class, 500.0);
        assert_eq!(mean, 0.0);
        assert!(spread >= 100.0, "{spread}");
    }

    #[test]
    fn a_step_in_the_live_load_moves_the_estimate_within_a_few_readings() {
        let mut model = CostModel::new(scale());
        learn(&mut model, 10.0, &[(50.0, 0.1)], &|_, _| 300.0, 1..=60, 0.0);
        learn(
            &mut model,
            60.0,
            &[(50.0, 0.1)],
            &|_, _| 300.0,
            61..=65,
            0.0,
        );
        assert!((model.live() - 60.0).abs() < 10.0, "{}", model.live());
        let (cost, _) = model.batch_cost(0, 300.0);
        assert!(
            (cost - 80.0).abs() < 0.15 * 80.0,
            "the step is not a cost: {cost}"
        );
    }
}
