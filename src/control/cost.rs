//! What the database's load is made of, learned online: the live load (everything but the
//! batch) and the batch's cost, a fixed part per batch (a command, a read, a scan) and a part
//! per document. Pure: times are seconds on the caller's clock, nothing here reads one.
//!
//! Each probe reading is the mean CPU over a window of time. The batches that ran in that
//! window explain part of it: a batch's cost is spread evenly over the time it was in flight
//! (a batch still in flight is expected to last as long as recent ones did), so a window holds
//! a fraction of it. The reading is then `live + C0·batches/s + C1·documents/s`, linear in the
//! three unknowns, and a Kalman filter tracks them: the live load moves quickly (a service
//! joins), the costs slowly (a collection grows). Pauses pin the live load down (no batch in
//! the window), and batches that leave less often than every interval, or vary in size, tell
//! the two costs apart.
//!
//! Where a probe's window really lies is not known exactly: `serverStatus` between two of our
//! calls, PromQL's `irate` a scrape interval or so earlier. So one filter runs per candidate
//! lag, and the one that has predicted the readings best lately is the one believed.
//!
//! Units: CPU in percent of one core; costs in percent-seconds (100 = one CPU-second).

/// One batch as the workers report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch {
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

/// The batch work a window `[from, to)` held: (batches, documents) per second.
pub fn attribute(batches: &[Batch], from: f64, to: f64, now: f64, expected: f64) -> (f64, f64) {
    let span = to - from;
    if span <= 0.0 {
        return (0.0, 0.0);
    }
    let (mut per_batch, mut per_doc) = (0.0, 0.0);
    for b in batches {
        let end = b.end.unwrap_or_else(|| (b.start + expected).max(now));
        let share = if end > b.start {
            let overlap = (end.min(to) - b.start.max(from)).max(0.0);
            overlap / (end - b.start)
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

/// The estimate the controller uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// CPU percent the database would use without the batch.
    pub live: f64,
    /// Percent-seconds per batch, whatever it carries.
    pub per_batch: f64,
    /// Percent-seconds per document.
    pub per_document: f64,
    /// The lag believed, seconds.
    pub lag: f64,
}

#[derive(Debug, Clone)]
struct Filter {
    lag: f64,
    /// [live, per batch, per document].
    theta: [f64; 3],
    p: [[f64; 3]; 3],
    score: f64,
}

/// Scales that make the filter's noise and bounds fit any database: the target CPU, the
/// interval, and the fastest pace allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub target: f64,
    pub interval: f64,
    pub ceiling: f64,
}

#[derive(Debug, Clone)]
pub struct CostModel {
    scale: Scale,
    filters: Vec<Filter>,
    best: usize,
    /// Mean squared innovation of the believed filter: the readings' own noise.
    noise: f64,
    /// Recent batches' mean time in flight, seconds.
    duration: Option<f64>,
    observed: u64,
    /// CUSUM of the believed filter's innovations, upwards and downwards: evidence that the
    /// live load stepped.
    cusum: (f64, f64),
}

impl CostModel {
    pub fn new(scale: Scale) -> Self {
        // Priors: no cost known, with a spread as wide as a batch costing a whole interval of
        // the target, or a document costing so much that the ceiling would use the target.
        let c0 = scale.target * scale.interval;
        let c1 = scale.target / scale.ceiling.max(1e-9) * 10.0;
        let p = [
            [scale.target.powi(2), 0.0, 0.0],
            [0.0, c0 * c0, 0.0],
            [0.0, 0.0, c1 * c1],
        ];
        let filters = LAGS
            .iter()
            .map(|l| Filter {
                lag: l * scale.interval,
                theta: [0.0, 0.0, 0.0],
                p,
                score: 0.0,
            })
            .collect();
        Self {
            scale,
            filters,
            best: 0,
            noise: (0.2 * scale.target).powi(2),
            duration: None,
            observed: 0,
            cusum: (0.0, 0.0),
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
        let noise = self.noise;
        let q = self.process_noise();
        let mut innovations = Vec::with_capacity(self.filters.len());
        for f in &mut self.filters {
            let (per_batch, per_doc) =
                attribute(batches, at - f.lag - elapsed, at - f.lag, at, expected);
            if first {
                // The first reading sets the live load: before any batch it is all there is.
                f.theta[0] = cpu - f.theta[1] * per_batch - f.theta[2] * per_doc;
            }
            let e = f.update([1.0, per_batch, per_doc], cpu, noise, &q);
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
        // so the filter moves there at once instead of drifting, and the costs keep what
        // they learned.
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
    /// (steps are caught apart, see `observe`), the costs by 5% of themselves.
    fn process_noise(&self) -> [f64; 3] {
        let s = self.scale;
        let theta = self.filters[self.best].theta;
        let c0_floor = 0.001 * s.target * s.interval;
        let c1_floor = 0.001 * s.target / s.ceiling.max(1e-9);
        [
            (0.05 * s.target).powi(2),
            (0.05 * theta[1] + c0_floor).powi(2),
            (0.05 * theta[2] + c1_floor).powi(2),
        ]
    }

    /// Starts from costs another process learned: believed, with a spread of a third of
    /// themselves, and learned again from here.
    pub fn seed(&mut self, per_batch: f64, per_document: f64) {
        for f in &mut self.filters {
            f.theta[1] = per_batch.max(0.0);
            f.theta[2] = per_document.max(0.0);
            f.p[1][1] = (per_batch / 3.0).powi(2);
            f.p[2][2] = (per_document / 3.0).powi(2);
        }
    }

    /// How many readings it has learned from.
    pub fn observed(&self) -> u64 {
        self.observed
    }

    pub fn estimate(&self) -> Estimate {
        let f = &self.filters[self.best];
        Estimate {
            live: f.theta[0],
            per_batch: f.theta[1],
            per_document: f.theta[2],
            lag: f.lag,
        }
    }

    /// A batch of `documents`: its expected cost, and one standard deviation of what is still
    /// unknown about it.
    pub fn batch_cost(&self, documents: f64) -> (f64, f64) {
        let f = &self.filters[self.best];
        let mean = f.theta[1] + f.theta[2] * documents;
        let phi = [0.0, 1.0, documents];
        (mean, quad(&f.p, &phi).max(0.0).sqrt())
    }

    /// The live load as the believed filter sees it, and how sure it is (one deviation).
    pub fn live(&self) -> (f64, f64) {
        let f = &self.filters[self.best];
        (f.theta[0], f.p[0][0].max(0.0).sqrt())
    }
}

impl Filter {
    /// One Kalman step: returns the innovation (reading minus prediction).
    fn update(&mut self, phi: [f64; 3], y: f64, r: f64, q: &[f64; 3]) -> f64 {
        for (i, qi) in q.iter().enumerate() {
            self.p[i][i] += qi;
        }
        let ph = mul(&self.p, &phi);
        let s = dot(&phi, &ph) + r;
        let e = y - dot(&phi, &self.theta);
        if s <= 0.0 || !s.is_finite() {
            return e;
        }
        let k = ph.map(|v| v / s);
        for (t, ki) in self.theta.iter_mut().zip(k) {
            *t += ki * e;
        }
        // P ← P − K·φᵀP, kept symmetric.
        let mut p = self.p;
        for (i, row) in p.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v -= k[i] * ph[j];
            }
        }
        for i in 0..3 {
            for j in 0..i {
                let m = 0.5 * (p[i][j] + p[j][i]);
                p[i][j] = m;
                p[j][i] = m;
            }
        }
        self.p = p;
        // Costs are never negative (a clamped one keeps its spread). The live load is left
        // free: clamping it at zero would bias it upwards when it is near zero.
        self.theta[1] = self.theta[1].max(0.0);
        self.theta[2] = self.theta[2].max(0.0);
        e
    }
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mul(m: &[[f64; 3]; 3], v: &[f64; 3]) -> [f64; 3] {
    [dot(&m[0], v), dot(&m[1], v), dot(&m[2], v)]
}

fn quad(m: &[[f64; 3]; 3], v: &[f64; 3]) -> f64 {
    dot(v, &mul(m, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_holds_the_share_of_each_batch_that_ran_in_it() {
        let batches = [
            // Ran 1-3: half of it in [2, 4).
            Batch {
                start: 1.0,
                end: Some(3.0),
                documents: 100.0,
            },
            // Wholly inside.
            Batch {
                start: 2.5,
                end: Some(3.0),
                documents: 10.0,
            },
            // In flight since 3.5, expected to last 1 s: half of it by 4.
            Batch {
                start: 3.5,
                end: None,
                documents: 50.0,
            },
            // Before the window.
            Batch {
                start: 0.0,
                end: Some(1.0),
                documents: 7.0,
            },
        ];
        let (b, d) = attribute(&batches, 2.0, 4.0, 3.6, 1.0);
        assert!((b - (0.5 + 1.0 + 0.5) / 2.0).abs() < 1e-9, "{b}");
        assert!((d - (50.0 + 10.0 + 25.0) / 2.0).abs() < 1e-9, "{d}");
    }

    /// Readings of a plant with `live` CPU and batches costing `c0 + c1·n` percent-seconds,
    /// one batch of `n` every `every` seconds, each in flight for `duration`; the probe's
    /// window lags by `lag`.
    fn learn(
        model: &mut CostModel,
        plant: (f64, f64, f64),
        n: &dyn Fn(usize) -> f64,
        seconds: std::ops::RangeInclusive<usize>,
        lag: f64,
    ) {
        let (live, c0, c1) = plant;
        let (every, duration) = (3usize, 0.8);
        let mut batches: Vec<Batch> = Vec::new();
        for t in seconds {
            if (t - 1) % every == 0 {
                let docs = n(t);
                batches.push(Batch {
                    start: (t - 1) as f64 + 0.1,
                    end: Some((t - 1) as f64 + 0.1 + duration),
                    documents: docs,
                });
            }
            let (b, d) = attribute(
                &batches,
                t as f64 - 1.0 - lag,
                t as f64 - lag,
                t as f64,
                duration,
            );
            let cpu = live + c0 * b + c1 * d;
            model.observe(t as f64, 1.0, cpu, &batches);
        }
    }

    #[test]
    fn it_learns_both_costs_and_the_live_load_and_finds_the_lag() {
        let scale = Scale {
            target: 100.0,
            interval: 1.0,
            ceiling: 20_000.0,
        };
        let mut model = CostModel::new(scale);
        // 40 %·s per batch, 0.2 %·s per document; sizes vary between 200 and 500.
        learn(
            &mut model,
            (50.0, 40.0, 0.2),
            &|t| if t % 2 == 0 { 200.0 } else { 500.0 },
            1..=120,
            1.0,
        );
        let e = model.estimate();
        assert!((e.live - 50.0).abs() < 3.0, "{e:?}");
        assert!((e.per_batch - 40.0).abs() < 8.0, "{e:?}");
        assert!((e.per_document - 0.2).abs() < 0.03, "{e:?}");
        assert_eq!(e.lag, 1.0, "{e:?}");
    }

    #[test]
    fn a_wrong_cost_recovers_within_a_few_batches() {
        let scale = Scale {
            target: 100.0,
            interval: 1.0,
            ceiling: 20_000.0,
        };
        let mut model = CostModel::new(scale);
        learn(&mut model, (30.0, 60.0, 0.1), &|_| 300.0, 1..=60, 0.0);
        let (before, _) = model.batch_cost(300.0);
        assert!((before - 90.0).abs() < 15.0, "learned first: {before}");
        // The collection grew: every batch now costs three times as much.
        learn(&mut model, (30.0, 180.0, 0.3), &|_| 300.0, 61..=90, 0.0);
        let after = model.estimate();
        let cost = after.per_batch + after.per_document * 300.0;
        assert!((cost - 270.0).abs() < 0.25 * 270.0, "{after:?}");
        assert!((after.live - 30.0).abs() < 10.0, "{after:?}");
    }

    #[test]
    fn an_unlearned_cost_is_uncertain() {
        let model = CostModel::new(Scale {
            target: 100.0,
            interval: 1.0,
            ceiling: 20_000.0,
        });
        let (mean, spread) = model.batch_cost(500.0);
        assert_eq!(mean, 0.0);
        assert!(spread >= 100.0, "{spread}");
    }
}
