//! The controller: samples in, a write rate (documents/second, within [floor, ceiling]) out,
//! once per interval. A pure state machine: no clock, no I/O.
//!
//! The law: hold database CPU at its target by integral control in rate space, with the gain
//! normalised by the plant's sensitivity (CPU points per document/second), estimated online
//! from the last rate change and what CPU did. Until it has an estimate it grows the rate by
//! at most ×1.5 per interval from a low start. Each step changes the rate by at most ×2 or ÷2,
//! so it never swings wildly. Guards come first: write latency above its target cuts the rate
//! (×0.7, AIMD's multiplicative decrease), and so do transient write errors; a blind probe drops
//! it to the floor (fail safe, never open); with no CPU signal it runs AIMD on latency alone.
//! It never raises a rate the workers use less than half of (anti-windup: an idle queue must
//! not wind the rate up to a burst). Every decision says which signal
//! limits it and why.

/// One interval's observations. `None` means the server does not report that signal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// False when the probe could not reach the database this interval.
    pub probe_ok: bool,
    /// Database CPU, percent of one core (800 = 8 busy cores).
    pub db_cpu: Option<f64>,
    /// Mean write latency over the interval, seconds.
    pub write_latency: Option<f64>,
    /// Writes that failed transiently (timeouts, network, overload) this interval, as the
    /// client saw them.
    pub write_errors: u64,
    /// Documents/second the workers actually took this interval; `None` when unknown.
    pub demand: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub target_cpu: f64,
    /// Seconds.
    pub target_latency: f64,
    pub floor: f64,
    pub ceiling: f64,
    /// Share of the remaining CPU error closed per interval (0-1].
    pub gain: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target_cpu: 200.0,
            target_latency: 0.050,
            floor: 50.0,
            ceiling: 20_000.0,
            gain: 0.5,
        }
    }
}

/// Which signal set the rate this interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limiter {
    /// Holding CPU at its target.
    Cpu,
    /// Write latency above its target.
    Latency,
    /// Writes failed transiently: back off.
    Errors,
    /// The probe cannot see the database: the rate is at its floor.
    Blind,
    /// Still searching upwards (no sensitivity estimate yet).
    Probing,
    Floor,
    Ceiling,
    /// A new leader holding the rate it took over while its probes prime.
    Resuming,
    /// The workers use under half the budget: raising it would only store up a burst.
    Demand,
}

impl Limiter {
    pub const ALL: [Limiter; 9] = [
        Limiter::Cpu,
        Limiter::Latency,
        Limiter::Errors,
        Limiter::Blind,
        Limiter::Probing,
        Limiter::Floor,
        Limiter::Ceiling,
        Limiter::Resuming,
        Limiter::Demand,
    ];

    /// The name metrics, logs and the simulation's CSV use.
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Cpu => "cpu",
            Limiter::Latency => "latency",
            Limiter::Errors => "errors",
            Limiter::Blind => "blind",
            Limiter::Probing => "probing",
            Limiter::Floor => "floor",
            Limiter::Ceiling => "ceiling",
            Limiter::Resuming => "resuming",
            Limiter::Demand => "demand",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub rate: f64,
    pub limiter: Limiter,
}

#[derive(Debug, Clone)]
pub struct Controller {
    config: Config,
    rate: f64,
    /// The previous interval's (rate, cpu), to estimate sensitivity.
    last: Option<(f64, f64)>,
    /// CPU points per document/second.
    sensitivity: Option<f64>,
}

impl Controller {
    pub fn new(config: Config) -> Self {
        Self {
            rate: config.floor,
            config,
            last: None,
            sensitivity: None,
        }
    }

    /// Goes on from `rate` (within bounds), e.g. the rate another process last published.
    pub fn resume(config: Config, rate: f64) -> Self {
        let mut controller = Self::new(config);
        controller.set(rate, Limiter::Resuming);
        controller
    }

    /// Keeps the current rate for one interval.
    pub fn hold(&self) -> Decision {
        Decision {
            rate: self.rate,
            limiter: Limiter::Resuming,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// One interval: the rate for the next one.
    pub fn step(&mut self, sample: &Sample) -> Decision {
        let c = self.config;
        if !sample.probe_ok {
            self.last = None;
            return self.set(c.floor, Limiter::Blind);
        }
        if sample.write_errors > 0 {
            self.last = None;
            return self.set(self.rate * 0.7, Limiter::Errors);
        }
        if let Some(latency) = sample.write_latency
            && latency > c.target_latency
        {
            self.last = None;
            return self.set(self.rate * 0.7, Limiter::Latency);
        }
        // Anti-windup: a rate the workers do not use says nothing about load, and would be let
        // loose at once when work arrives.
        let idle = sample.demand.is_some_and(|d| d < 0.5 * self.rate);
        let Some(cpu) = sample.db_cpu else {
            if idle {
                return self.set(self.rate, Limiter::Demand);
            }
            // No CPU signal: additive increase while latency is fine.
            return self.set(self.rate + (c.floor).max(self.rate * 0.1), Limiter::Probing);
        };
        if let Some((last_rate, last_cpu)) = self.last {
            let d_rate = self.rate - last_rate;
            let d_cpu = cpu - last_cpu;
            // Only a clear move of the rate says something about the plant.
            if d_rate.abs() > 0.05 * last_rate.max(1.0)
                && (d_cpu > 0.0) == (d_rate > 0.0)
                && d_cpu != 0.0
            {
                let observed = d_cpu / d_rate;
                self.sensitivity = Some(match self.sensitivity {
                    Some(s) => 0.5 * s + 0.5 * observed,
                    None => observed,
                });
            }
        }
        self.last = Some((self.rate, cpu));
        let error = c.target_cpu - cpu;
        let (wanted, limiter) = match self.sensitivity {
            Some(s) if s > 0.0 => (self.rate + c.gain * error / s, Limiter::Cpu),
            _ if error > 0.0 => (self.rate * 1.5, Limiter::Probing),
            _ => (self.rate * 0.7, Limiter::Cpu),
        };
        // Never more than ×2 or ÷2 in one interval.
        let bounded = wanted.clamp(self.rate * 0.5, self.rate * 2.0);
        if bounded > self.rate && idle {
            return self.set(self.rate, Limiter::Demand);
        }
        self.set(bounded, limiter)
    }

    fn set(&mut self, rate: f64, limiter: Limiter) -> Decision {
        let c = self.config;
        let (rate, limiter) = if !rate.is_finite() || rate <= c.floor {
            (
                c.floor,
                if limiter == Limiter::Blind {
                    limiter
                } else {
                    Limiter::Floor
                },
            )
        } else if rate >= c.ceiling {
            (c.ceiling, Limiter::Ceiling)
        } else {
            (rate, limiter)
        };
        self.rate = rate;
        Decision { rate, limiter }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::plant::Plant;
    use proptest::prelude::*;

    fn run(plant: &mut Plant, ctl: &mut Controller, intervals: usize) -> Vec<f64> {
        let mut cpus = Vec::new();
        for _ in 0..intervals {
            let sample = plant.interval(ctl.rate());
            cpus.push(sample.db_cpu.unwrap_or(0.0));
            ctl.step(&sample);
        }
        cpus
    }

    fn m50() -> Plant {
        // 8 cores, live traffic using half a core, 2,000 documents/s per core.
        Plant::new(8.0, 0.5, 0.0005, 0.002)
    }

    /// Intervals until CPU stays within ±10% of the target for good.
    fn settling(cpus: &[f64], target: f64) -> usize {
        (0..cpus.len())
            .find(|&i| cpus[i..].iter().all(|c| (c - target).abs() <= 0.1 * target))
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn settles_holds_and_does_not_overshoot_after_load_steps() {
        let mut plant = m50();
        let mut ctl = Controller::new(Config::default());
        run(&mut plant, &mut ctl, 40);
        // Live traffic doubles. The first interval shows the step itself, before any reaction.
        plant.baseline_cores = 1.0;
        let up = run(&mut plant, &mut ctl, 30);
        assert!(settling(&up, 200.0) <= 10, "{up:?}");
        assert!(up[1..].iter().all(|&c| c <= 240.0), "overshoot: {up:?}");
        // Live traffic falls away: the controller must climb without overshooting.
        plant.baseline_cores = 0.3;
        let down = run(&mut plant, &mut ctl, 30);
        assert!(settling(&down, 200.0) <= 10, "{down:?}");
        assert!(down.iter().all(|&c| c <= 240.0), "overshoot: {down:?}");
    }

    #[test]
    fn starts_low_and_reaches_the_target_without_overshoot() {
        let mut plant = m50();
        let mut ctl = Controller::new(Config::default());
        let cpus = run(&mut plant, &mut ctl, 40);
        assert!(cpus[0] < 100.0, "starts low: {cpus:?}");
        assert!(cpus.iter().all(|&c| c <= 240.0), "{cpus:?}");
        assert!(
            cpus[25..].iter().all(|c| (c - 200.0).abs() <= 20.0),
            "{cpus:?}"
        );
    }

    #[test]
    fn a_blind_probe_drops_to_the_floor_within_one_interval() {
        let mut plant = m50();
        let mut ctl = Controller::new(Config::default());
        run(&mut plant, &mut ctl, 30);
        assert!(ctl.rate() > 1000.0);
        let d = ctl.step(&Sample {
            probe_ok: false,
            ..Sample::default()
        });
        assert_eq!(
            d,
            Decision {
                rate: 50.0,
                limiter: Limiter::Blind
            }
        );
    }

    #[test]
    fn high_latency_cuts_the_rate_and_says_so() {
        let mut ctl = Controller::new(Config::default());
        for _ in 0..10 {
            ctl.step(&Sample {
                probe_ok: true,
                db_cpu: Some(50.0),
                write_latency: Some(0.01),
                write_errors: 0,
                demand: None,
            });
        }
        let before = ctl.rate();
        let d = ctl.step(&Sample {
            probe_ok: true,
            db_cpu: Some(50.0),
            write_latency: Some(0.5),
            write_errors: 0,
            demand: None,
        });
        assert_eq!(d.limiter, Limiter::Latency);
        assert!((d.rate - before * 0.7).abs() < 1e-6);
    }

    #[test]
    fn without_a_cpu_signal_latency_alone_paces_the_writes() {
        let plant = m50();
        let mut ctl = Controller::new(Config::default());
        let mut over = 0;
        for _ in 0..200 {
            let mut sample = plant.interval(ctl.rate());
            sample.db_cpu = None;
            if sample.write_latency.is_some_and(|l| l > 0.050) {
                over += 1;
            }
            ctl.step(&sample);
        }
        assert!(ctl.rate() > 1000.0, "it found headroom: {}", ctl.rate());
        assert!(over <= 40, "latency over target in {over} of 200 intervals");
    }

    #[test]
    fn an_unused_budget_is_not_wound_up() {
        let mut ctl = Controller::resume(Config::default(), 1000.0);
        // Low CPU, but the workers take only a tenth of the budget: no reason to raise it.
        for _ in 0..20 {
            let d = ctl.step(&Sample {
                probe_ok: true,
                db_cpu: Some(10.0),
                demand: Some(ctl.rate() * 0.1),
                ..Sample::default()
            });
            assert_eq!(d.limiter, Limiter::Demand);
        }
        assert_eq!(ctl.rate(), 1000.0);
        // Over target, it still cuts, whatever the demand.
        let d = ctl.step(&Sample {
            probe_ok: true,
            db_cpu: Some(400.0),
            demand: Some(0.0),
            ..Sample::default()
        });
        assert!(d.rate < 1000.0, "{d:?}");
        let d = ctl.step(&Sample {
            probe_ok: true,
            db_cpu: Some(10.0),
            demand: Some(ctl.rate()),
            ..Sample::default()
        });
        assert!(d.rate > 700.0, "used in full, it grows: {d:?}");
    }

    proptest! {
        #[test]
        fn the_rate_never_leaves_its_bounds(
            samples in proptest::collection::vec(
                (any::<bool>(), proptest::option::of(0.0f64..2000.0), proptest::option::of(0.0f64..2.0), 0u64..3),
                1..200,
            ),
        ) {
            let config = Config { floor: 10.0, ceiling: 5000.0, ..Config::default() };
            let mut ctl = Controller::new(config);
            for (probe_ok, db_cpu, write_latency, write_errors) in samples {
                let d = ctl.step(&Sample { probe_ok, db_cpu, write_latency, write_errors, demand: None });
                prop_assert!(d.rate >= 10.0 && d.rate <= 5000.0, "{d:?}");
            }
        }
    }
}
