//! The controller in virtual time on plants that behave like the real database (a cost per
//! batch and per document, lumps, noise, probe lag, live traffic that changes), judged by
//! issue 12's measures: after the service joins, the 5-s mean CPU is back within ±20% of
//! the target within 10 intervals and mostly stays there, the mean over the service's
//! window is within ±10%, the overshoot after it leaves is at most 20%, and when the
//! service alone uses the target the batch's own load falls under 5% of a core.
use super::*;
use crate::control::cost::Batch;
use crate::control::plant::{self, Database, Interval, Traffic, Worker};

const TARGET: f64 = 100.0;

fn config() -> Config {
    Config {
        target_cpu: TARGET,
        floor: 50.0,
        ceiling: 5000.0,
        interval: 1.0,
        ..Config::default()
    }
}

/// The settings of `tests/control.rs` on the indexed FerretDB: a target of 40%, batches of at
/// most 100, paces from 20 to 50,000 documents/s.
fn indexed_ferretdb() -> Config {
    Config {
        target_cpu: 40.0,
        floor: 20.0,
        ceiling: 50_000.0,
        max_batch: 100,
        ..config()
    }
}

/// The plant's pace from the controller, for one queue that always has work.
fn pacing(ctl: &mut Controller) -> impl FnMut(&Sample, &[Batch]) -> plant::Pace + '_ {
    let shares = [Share {
        queue: "day".into(),
        weight: 1.0,
        active: true,
        largest: None,
    }];
    ctl.class("day");
    move |s, batches| {
        let d = ctl.step(s, batches, &shares);
        plant::Pace {
            rate: d.paces[0].rate,
            batch: d.paces[0].batch,
            limiter: d.limiter.name(),
        }
    }
}

fn worker(config: &Config) -> Worker {
    Worker {
        interval: config.interval,
        loops: 4,
        burst: config.max_batch,
        jobs: None,
    }
}

fn run(db: &Database, config: Config, seconds: f64, seed: u64) -> Vec<Interval> {
    let mut ctl = Controller::new(config);
    plant::run(db, worker(&config), seconds, seed, pacing(&mut ctl))
}

/// The judgement of one window `(from, to]` that starts with a change of the live load.
#[derive(Debug)]
struct Judged {
    /// Intervals from the change until the 5-s mean CPU is back within ±20% of the target
    /// after the change pushed it out (0 if it never left the band).
    settled: Option<usize>,
    /// Share of 5-s means within ±20% from the tenth interval on.
    held: f64,
    mean: f64,
    /// The 90th percentile of the 5-s means: the overshoot, not one batch more in a window.
    peak: f64,
    /// The batch's own mean CPU (total minus live) from the tenth interval on.
    batch_cpu: f64,
    documents: f64,
}

fn judge(run: &[Interval], target: f64, from: f64, to: f64) -> Judged {
    let smooth: Vec<f64> = (0..run.len())
        .map(|i| {
            let w = &run[i.saturating_sub(4)..=i];
            w.iter().map(|r| r.cpu).sum::<f64>() / w.len() as f64
        })
        .collect();
    let idx: Vec<usize> = (0..run.len())
        .filter(|&i| run[i].t > from && run[i].t <= to)
        .collect();
    let within = |i: &usize| (smooth[*i] - target).abs() <= 0.2 * target;
    let late = &idx[10.min(idx.len())..];
    let mean_of = |v: &[usize], f: &dyn Fn(&Interval) -> f64| {
        v.iter().map(|&i| f(&run[i])).sum::<f64>() / v.len().max(1) as f64
    };
    Judged {
        settled: match idx.iter().position(|i| !within(i)) {
            None => Some(0),
            Some(out) => idx[out..].iter().position(within).map(|back| out + back),
        },
        held: late.iter().filter(|i| within(i)).count() as f64 / late.len().max(1) as f64,
        mean: mean_of(&idx, &|r| r.cpu),
        peak: {
            let mut means: Vec<f64> = idx.iter().map(|&i| smooth[i]).collect();
            means.sort_by(f64::total_cmp);
            means.get(means.len() * 9 / 10).copied().unwrap_or(0.0)
        },
        batch_cpu: mean_of(late, &|r| r.cpu - r.live_cpu),
        documents: idx.iter().map(|&i| run[i].documents).sum(),
    }
}

fn trace(run: &[Interval]) -> String {
    run.iter()
        .map(|r| {
            format!(
                "{:.0}:{:.0}/{:.0}x{}/{}",
                r.t, r.cpu, r.pace.rate, r.pace.batch, r.pace.limiter
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Issue 12's failing case: tidegate alone, then the service joins (half a core) and
/// leaves, on a database where a batch costs half a CPU-second however small it is.
fn joins_and_leaves(lag: f64, seed: u64, held: f64) {
    let mut db = Database::ferretdb(Traffic::Steps(vec![(0.0, 0.0), (60.0, 8.0), (120.0, 0.0)]));
    db.per_batch = 0.5;
    db.per_document = 0.0008;
    db.batch_cores = 1.2;
    db.probe_lag = lag;
    let run = run(&db, config(), 180.0, seed);
    let joined = judge(&run, TARGET, 60.0, 120.0);
    assert!(
        joined.settled.is_some_and(|k| k <= 10),
        "{joined:?}: {}",
        trace(&run)
    );
    assert!(joined.held >= held, "{joined:?}: {}", trace(&run));
    assert!(
        (joined.mean - TARGET).abs() <= 0.1 * TARGET,
        "{joined:?}: {}",
        trace(&run)
    );
    let left = judge(&run, TARGET, 120.0, 180.0);
    assert!(
        left.peak <= 1.2 * TARGET,
        "overshoot {left:?}: {}",
        trace(&run)
    );
    assert!(
        left.mean >= 0.8 * TARGET,
        "it came back {left:?}: {}",
        trace(&run)
    );
}

#[test]
fn the_service_joining_and_leaving_with_one_interval_of_probe_lag() {
    for seed in [7, 8, 9] {
        joins_and_leaves(1.0, seed, 0.8);
    }
}

#[test]
fn the_service_joining_and_leaving_with_two_intervals_of_probe_lag() {
    // Two intervals of lag hold less: over 20 seeds all were back within 9 intervals with
    // means within ±10%, but 6 held under 80% of the window (the least 71%).
    for seed in [7, 8, 9] {
        joins_and_leaves(2.0, seed, 0.7);
    }
}

#[test]
fn the_service_joining_and_leaving_seen_without_lag() {
    joins_and_leaves(0.0, 7, 0.8);
}

#[test]
fn the_batch_stops_when_the_service_alone_uses_the_target_and_resumes_after() {
    // The 20,000-user day: 1.5 CPU-seconds per batch before its first document.
    let db = Database::ferretdb(Traffic::Steps(vec![(0.0, 4.0), (60.0, 24.0), (100.0, 4.0)]));
    let run = run(&db, config(), 160.0, 11);
    let heavy = judge(&run, TARGET, 60.0, 100.0);
    assert!(
        heavy.batch_cpu < 5.0,
        "the batch's own load {heavy:?}: {}",
        trace(&run)
    );
    let back = judge(&run, TARGET, 100.0, 160.0);
    assert!(back.documents > 0.0, "it resumed {back:?}: {}", trace(&run));
    // Each batch here costs 2.65 CPU-seconds however small: one more or less in a 5-s window
    // moves its mean by 26 points, so the hold is judged on the window's mean.
    let settled = judge(&run, TARGET, 110.0, 160.0);
    assert!(
        (settled.mean - TARGET).abs() <= 0.15 * TARGET,
        "{settled:?}: {}",
        trace(&run)
    );
}

#[test]
fn live_traffic_that_follows_a_trace_is_left_its_share() {
    // A day's shape compressed: the service's rate wanders between 1 and 12 operations/s
    // (6% to 77% of a core) and back, twice over.
    let rates: Vec<f64> = (0..240)
        .map(|t| 6.5 + 5.5 * (t as f64 / 240.0 * 4.0 * std::f64::consts::PI).sin())
        .collect();
    let mut db = Database::ferretdb(Traffic::Trace(rates));
    db.per_batch = 0.5;
    db.per_document = 0.0008;
    db.batch_cores = 1.2;
    let run = run(&db, config(), 240.0, 5);
    let all = judge(&run, TARGET, 20.0, 240.0);
    assert!(
        (all.mean - TARGET).abs() <= 0.1 * TARGET,
        "{all:?}: {}",
        trace(&run)
    );
    assert!(all.held >= 0.8, "{all:?}: {}", trace(&run));
}

#[test]
fn a_batch_that_grows_three_times_dearer_is_relearned() {
    // Tidegate alone; at 60 s the collection behind each batch's read triples.
    let mut db = Database::ferretdb(Traffic::Steps(vec![(0.0, 4.0)]));
    db.per_batch = 0.4;
    db.per_document = 0.0008;
    // The same controller across the change.
    let mut ctl = Controller::new(config());
    let mut pace = pacing(&mut ctl);
    let first = plant::run(&db, worker(&config()), 60.0, 3, &mut pace);
    db.per_batch = 1.2;
    let ctl_run = plant::run(&db, worker(&config()), 60.0, 4, &mut pace);
    let before = judge(&first, TARGET, 20.0, 60.0);
    let after = judge(&ctl_run, TARGET, 0.0, 60.0);
    assert!(
        (before.mean - TARGET).abs() <= 0.1 * TARGET,
        "{before:?}: {}",
        trace(&first)
    );
    assert!(
        after.settled.is_some_and(|k| k <= 10),
        "{after:?}: {}",
        trace(&ctl_run)
    );
    assert!(
        (after.mean - TARGET).abs() <= 0.15 * TARGET,
        "{after:?}: {}",
        trace(&ctl_run)
    );
}

#[test]
fn an_indexed_mongodb_is_held_at_its_target_and_steps_are_absorbed() {
    // The original team's M50: 8 cores, a cheap command per batch (5 ms), 0.5 ms per document,
    // one core of live traffic that steps to three and back; target 400%.
    let db = Database {
        cores: 8.0,
        per_batch: 0.005,
        per_document: 0.0005,
        batch_cores: 2.0,
        cost_spread: 0.1,
        traffic: Traffic::Steps(vec![(0.0, 100.0), (80.0, 300.0), (160.0, 100.0)]),
        op_cost: 0.01,
        probe_lag: 1.0,
        blind: None,
        contention: None,
        step: plant::STEP,
        probe_noise: 0.0,
    };
    let config = Config {
        target_cpu: 400.0,
        ceiling: 20_000.0,
        interval: 1.0,
        ..Config::default()
    };
    let run = run(&db, config, 240.0, 2);
    let steady = judge(&run, 400.0, 30.0, 80.0);
    assert!(
        (steady.mean - 400.0).abs() <= 40.0,
        "{steady:?}: {}",
        trace(&run)
    );
    let up = judge(&run, 400.0, 80.0, 160.0);
    assert!(
        up.settled.is_some_and(|k| k <= 10),
        "{up:?}: {}",
        trace(&run)
    );
    assert!(up.held >= 0.8, "{up:?}: {}", trace(&run));
    let down = judge(&run, 400.0, 160.0, 240.0);
    assert!(down.peak <= 480.0, "{down:?}: {}", trace(&run));
}

#[test]
fn a_blind_probe_paces_at_the_floor_and_control_resumes_after() {
    let mut db = Database::ferretdb(Traffic::Steps(vec![(0.0, 4.0)]));
    db.per_batch = 0.5;
    db.per_document = 0.0008;
    db.blind = Some((60.0, 80.0));
    let run = run(&db, config(), 140.0, 13);
    let blind: Vec<&Interval> = run.iter().filter(|r| r.t > 60.5 && r.t < 80.0).collect();
    assert!(
        blind
            .iter()
            .all(|r| r.pace.rate == 50.0 && r.pace.limiter == "blind"),
        "{}",
        trace(&run)
    );
    let after = judge(&run, TARGET, 80.0, 140.0);
    assert!(
        after.settled.is_some_and(|k| k <= 10),
        "{after:?}: {}",
        trace(&run)
    );
    assert!(after.peak <= 1.2 * TARGET, "{after:?}: {}", trace(&run));
}

#[test]
fn read_latency_over_its_target_holds_the_batch_back() {
    // The service's operations take ~64 ms of CPU; beside the batch, sharing the cores, they
    // average ~85 ms. Its users are promised 75 ms, which the CPU target alone would break.
    let mut db = Database::ferretdb(Traffic::Steps(vec![(0.0, 8.0)]));
    db.per_batch = 0.5;
    db.per_document = 0.0008;
    db.batch_cores = 1.2;
    let guarded = Config {
        target_read_latency: Some(0.075),
        ..config()
    };
    let mean_latency = |run: &[Interval]| {
        let l: Vec<f64> = run
            .iter()
            .filter(|r| r.t > 30.0)
            .filter_map(|r| r.latency.map(|l| l.0))
            .collect();
        l.iter().sum::<f64>() / l.len() as f64
    };
    let free = run(&db, config(), 150.0, 21);
    let held = run(&db, guarded, 150.0, 21);
    let (free_latency, held_latency) = (mean_latency(&free), mean_latency(&held));
    assert!(
        held_latency < free_latency,
        "{held_latency} vs {free_latency}"
    );
    assert!(
        held.iter().any(|r| r.pace.limiter == "read_latency"),
        "{}",
        trace(&held)
    );
    assert!(
        held.iter().map(|r| r.documents).sum::<f64>() > 0.0,
        "it still works: {}",
        trace(&held)
    );
}

#[test]
fn a_batch_is_no_dearer_than_two_intervals_of_the_target() {
    // Learned: 0.3 CPU-s per batch and 40 ms per document (FerretDB's upserts late in a large
    // day). The fixed-cost rule alone would take 68 documents: 3 CPU-s, four intervals of
    // the target.
    let config = Config {
        target_cpu: 70.0,
        ..config()
    };
    let learned = Pace {
        queue: "day".into(),
        rate: 10.0,
        batch: 500,
        budget: Some(60.0),
        cost: Some(crate::control::cost::Cost {
            per_batch: 30.0,
            per_document: 4.0,
        }),
    };
    let mut ctl = Controller::resume(config, Some(60.0), &[learned]);
    let sample = Sample {
        probe_ok: true,
        db_cpu: Some(60.0),
        at: 1.0,
        elapsed: 1.0,
        ..Sample::default()
    };
    let shares = [Share {
        queue: "day".into(),
        weight: 1.0,
        active: true,
        largest: None,
    }];
    let d = ctl.step(&sample, &[], &shares);
    let (mean, _) = ctl
        .cost
        .batch_cost(ctl.queues[0].class, d.paces[0].batch as f64);
    assert!(
        d.paces[0].batch < 68 && mean <= 2.0 * 70.0 + 1e-6,
        "{:?}: {mean} CPU-%s",
        d.paces[0]
    );
}

#[test]
fn a_day_of_lumps_reported_late_is_held_and_not_read_as_live_load() {
    // The fleet's day on FerretDB with no service: each batch a lump of 1.5 CPU-seconds (1.4
    // cores busy for about a second) against a target of 70% of a core, and the leader learns
    // of each batch's start and end only at its process's next tick (a phase of its own). The
    // late reports cost the mean some points (58–62% here; 66–72% seen at once, as one
    // process sees its own), as they did the fleet on FerretDB (62–63%).
    let config = Config {
        target_cpu: 70.0,
        max_batch: 100,
        ..config()
    };
    let db = Database::ferretdb(Traffic::Steps(vec![(0.0, 0.0)]));
    let shares = [Share {
        queue: "day".into(),
        weight: 1.0,
        active: true,
        largest: None,
    }];
    for seed in [1, 2, 3] {
        let mut ctl = Controller::new(config);
        ctl.class("day");
        let mut lives = Vec::new();
        let run = plant::run(&db, worker(&config), 150.0, seed, |s, b| {
            let seen: Vec<Batch> = b
                .iter()
                .filter_map(|x| {
                    let phase = (x.start * 7919.0).fract();
                    let reported = |t: f64| (t + phase).floor() - phase + 1.0 <= s.at;
                    reported(x.start).then(|| Batch {
                        end: x.end.filter(|e| reported(*e)),
                        ..*x
                    })
                })
                .collect();
            let d = ctl.step(s, &seen, &shares);
            lives.push(ctl.cost.live());
            plant::Pace {
                rate: d.paces[0].rate,
                batch: d.paces[0].batch,
                limiter: d.limiter.name(),
            }
        });
        let all = judge(&run, 70.0, 20.0, 150.0);
        let late = &lives[20..];
        let live = late.iter().sum::<f64>() / late.len() as f64;
        assert!(
            (all.mean - 70.0).abs() <= 0.2 * 70.0 && live.abs() < 7.0,
            "seed {seed}: {all:?}, live load believed {live:.1}%: {}",
            trace(&run)
        );
        assert!(
            run.iter()
                .all(|r| r.t <= 20.0 || r.pace.limiter != "no_headroom"),
            "no lump is taken for a service that leaves no headroom: {}",
            trace(&run)
        );
    }
}

#[test]
fn cheap_batches_on_an_indexed_ferretdb_hold_the_target_without_a_leap() {
    // A batch of ten costs 1.65 ms of CPU, lost in readings that wander by ±3%: for a while
    // its mean is not known to within half of itself. Paced by that mean all the same (its
    // error is "negligible" per batch, not per second), the pace leapt from 1,175 to 14,643
    // documents/s in one interval and the CPU to 2.5× the target; and a fixed part believed
    // nought shrank the real test's batches to one document, paced at the ceiling.
    let config = indexed_ferretdb();
    for seed in [1, 2, 3] {
        let db = Database::documentdb(Traffic::Steps(vec![(0.0, 2.0)]));
        let run = run(&db, config, 90.0, seed);
        let held = judge(&run, 40.0, 30.0, 90.0);
        assert!(
            (held.mean - 40.0).abs() <= 4.0 && held.held >= 0.7,
            "seed {seed}: {held:?}: {}",
            trace(&run)
        );
        assert!(
            run.iter()
                .all(|r| r.cpu <= 1.5 * 40.0 && r.pace.batch >= 10),
            "seed {seed}: no leap past the target, no batch of a few documents: {}",
            trace(&run)
        );
    }
}

#[test]
fn a_governed_queue_is_paced_in_jobs_of_one_and_holds_the_target() {
    // A BullMQ queue others work (`govern`): forty jobs at a time, each its own read and write
    // (a batch of one, 1.25 ms of CPU), on the indexed FerretDB. Its member says its batches
    // are of one, and every pace is for batches of one: a pace for larger ones extrapolates a
    // cost per document its workers never pay (and here, ignoring the member, the batches
    // grow to two and the plant's workers, like the queue's, never take them).
    let config = indexed_ferretdb();
    let shares = [Share {
        queue: "governed".into(),
        weight: 1.0,
        active: true,
        largest: Some(1),
    }];
    for seed in [1, 2, 3] {
        let mut ctl = Controller::resume(config, Some(0.0), &[]);
        assert_eq!(
            ctl.hold(&shares).paces[0].batch,
            1,
            "from the first decision"
        );
        ctl.class("governed");
        let db = Database::documentdb(Traffic::Steps(vec![(0.0, 2.0)]));
        let workers = Worker {
            interval: config.interval,
            loops: 40,
            burst: 1,
            jobs: None,
        };
        let run = plant::run(&db, workers, 90.0, seed, |s, batches| {
            let d = ctl.step(s, batches, &shares);
            plant::Pace {
                rate: d.paces[0].rate,
                batch: d.paces[0].batch,
                limiter: d.limiter.name(),
            }
        });
        // Judged as the two-queue test is: from above by the target's band, from below at
        // 60% of it, as a steady pace lets the cost model take part of the jobs' load for live
        // load (31-38% of 40% here; BENCHMARKS.md, issue 25).
        let held = judge(&run, 40.0, 30.0, 90.0);
        assert!(
            (0.6 * 40.0..=1.2 * 40.0).contains(&held.mean)
                && run.iter().all(|r| r.pace.batch == 1 && r.cpu <= 1.5 * 40.0),
            "seed {seed}: {held:?}: {}",
            trace(&run)
        );
    }
}
