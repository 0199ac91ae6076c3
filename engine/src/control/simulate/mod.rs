//! `tidegate simulate`: the original story replayed in virtual time. This is a SIMULATION: no
//! database and no clock; every figure it prints or draws comes from the model below (the
//! [`plant`]), never from a measurement, and every output says so. Deterministic for a seed.
//!
//! It owns the original team's database as a plant, the three ways of working a day ([`Strategy`]), the
//! summary figures, and the CSV, SVG and table outputs. The controller and the worker's pacing
//! are the real ones; what the plant does to them is what a real database does to them: lumps,
//! noise, probe lag, live traffic that changes, and cores that everything shares.
//!
//! # The model (an Atlas M50, as in the original story)
//! - **8 cores** (M50: 8 vCPU), shared by everything in flight; past 128 operations in flight
//!   (WiredTiger's default tickets in MongoDB 6.0) each does less per core-second,
//!   `1 / (1 + (n − 128) / 1100)`: the original script keeps ~2,500 in flight (it saw 2,000-3,000
//!   connections), so the server does ~32% of its usual work while pegged. That, not the total
//!   work, is why it took ~10 minutes at 800%; the scale 1100 is the one free parameter, chosen
//!   for the original 10 minutes at 50,000 users (~50,000 jobs/day, the story's figure).
//! - **The service**: 200 operations/s of 5 ms each (one core, 100%: the story does not give
//!   the normal CPU; one core puts Bull's 5 jobs/s at ~110%, the low end of the "steady
//!   100–200%" the story reports for it), Poisson arrivals, rising to 300/s (1.5 cores) for a
//!   minute from the 30th second: the service's own busy spell in the middle of the batch.
//! - **A user's job** is one read of 3 event documents and one write of its score. A round trip
//!   costs 8 ms of CPU (parsing, planning, the lookup in an under-indexed collection: the story
//!   says missing indexes made it worse), a document 0.5 ms. So a batch (one read, one bulk
//!   write) costs 16 ms plus 2 ms per user: 18 ms for the naive script's single users, ~1 s for
//!   tidegate's batches of 500. Batching, not pacing alone, is most of the saving.
//! - **The probe** reads the CPU of the interval that ended a second before (as Prometheus'
//!   `irate` does); the service's latency is what the read latency guard would see.
//!
//! Not modelled: memory and cache pressure (the story saw 25 GB), failures and retries. The
//! story's own figures do not fit one day: 5 jobs/s for 3 minutes is 900 jobs, while 50,000 jobs
//! at 5 jobs/s take 2 h 47 min; the simulation shows the latter.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::control::controller::{Config, Controller, Share};
use crate::control::plant::{self, Database, Interval, Pace, Traffic, Worker};

/// Seconds per control interval.
const INTERVAL: f64 = 1.0;
/// A run that has not finished after a virtual day is reported unfinished rather than looping.
const MAX_SECONDS: f64 = 86_400.0;
/// Within this share of the target, CPU counts as held.
const BAND: f64 = 0.10;

/// The original team's M50 with its service, as the module's doc comment describes it.
pub fn m50() -> Database {
    Database {
        cores: 8.0,
        per_batch: 0.016,
        per_document: 0.002,
        batch_cores: 2.0,
        cost_spread: 0.1,
        traffic: Traffic::Steps(vec![(0.0, 200.0), (30.0, 300.0), (90.0, 200.0)]),
        op_cost: 0.005,
        probe_lag: 1.0,
        blind: None,
        contention: Some((128.0, 1100.0)),
        step: plant::STEP,
        probe_noise: 0.0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// The original script: every user's read and write fired at once, as many in flight as the
    /// connections allow.
    Naive { connections: usize },
    /// Bull's limiter: a hand-picked number of jobs per second, one at a time.
    Fixed { jobs_per_s: f64 },
    /// tidegate: batches paced by the controller, four loops.
    Tidegate,
}

impl Strategy {
    /// The original day: the script, Bull's 5 jobs/s, and tidegate.
    pub fn day() -> [Strategy; 3] {
        [
            Strategy::Naive { connections: 2500 },
            Strategy::Fixed { jobs_per_s: 5.0 },
            Strategy::Tidegate,
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Naive { .. } => "naive",
            Strategy::Fixed { .. } => "fixed",
            Strategy::Tidegate => "tidegate",
        }
    }

    fn label(&self) -> String {
        match self {
            Strategy::Naive { .. } => "naive (all at once)".into(),
            Strategy::Fixed { jobs_per_s } => format!("fixed ({jobs_per_s} jobs/s)"),
            Strategy::Tidegate => "tidegate (controller)".into(),
        }
    }
}

/// One interval of one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Virtual seconds at the end of the interval.
    pub t: u64,
    pub strategy: &'static str,
    pub cpu_percent: f64,
    /// The service's 99th percentile latency in the interval, seconds.
    pub service_p99: f64,
    /// Users finished in the interval, per second.
    pub rate: f64,
    /// Users finished by the end of the interval.
    pub done: u64,
    /// What set the pace: the controller's limiter for tidegate, `unpaced` or `fixed` otherwise.
    pub limiter: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub strategy: &'static str,
    pub label: String,
    pub finished: bool,
    /// Virtual seconds until the last user finished (or the cut-off).
    pub wall: u64,
    pub mean_cpu: f64,
    pub peak_cpu: f64,
    /// The service's latency over the whole run, seconds: the worst interval's 99th percentile.
    pub service_p99: f64,
    /// Share of 5-s mean CPU within ±10% of the target, from the first such mean until the day
    /// runs short of work. `None` when it never got there.
    pub held: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub cores: f64,
    pub users: u64,
    pub target_cpu: f64,
    pub rows: Vec<Row>,
    pub summaries: Vec<Summary>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw the simulation chart: {0}")]
    Chart(String),
}

/// The original day on the original team's M50 with the controller's defaults but `target_cpu`.
pub fn day(users: u64, target_cpu: f64) -> Series {
    let config = Config {
        target_cpu,
        interval: INTERVAL,
        ..Config::default()
    };
    simulate(&m50(), users, config, &Strategy::day())
}

pub fn simulate(db: &Database, users: u64, config: Config, strategies: &[Strategy]) -> Series {
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    for strategy in strategies {
        let (mut strategy_rows, summary) = run(db, users, config, *strategy);
        rows.append(&mut strategy_rows);
        summaries.push(summary);
    }
    Series {
        cores: db.cores,
        users,
        target_cpu: config.target_cpu,
        rows,
        summaries,
    }
}

fn run(db: &Database, users: u64, config: Config, strategy: Strategy) -> (Vec<Row>, Summary) {
    let worker = |loops| Worker {
        interval: INTERVAL,
        loops,
        burst: config.max_batch,
        jobs: Some(users),
    };
    let seed = 42;
    let intervals = match strategy {
        Strategy::Naive { connections } => {
            plant::run(db, worker(connections), MAX_SECONDS, seed, |_, _| Pace {
                rate: f64::INFINITY,
                batch: 1,
                limiter: "unpaced",
            })
        }
        Strategy::Fixed { jobs_per_s } => {
            plant::run(db, worker(1), MAX_SECONDS, seed, |_, _| Pace {
                rate: jobs_per_s,
                batch: 1,
                limiter: "fixed",
            })
        }
        Strategy::Tidegate => {
            let mut controller = Controller::new(config);
            controller.class("day");
            let shares = [Share {
                queue: "day".into(),
                weight: 1.0,
                active: true,
                largest: None,
            }];
            plant::run(db, worker(4), MAX_SECONDS, seed, |sample, batches| {
                let d = controller.step(sample, batches, &shares);
                Pace {
                    rate: d.paces[0].rate,
                    batch: d.paces[0].batch,
                    limiter: d.limiter.name(),
                }
            })
        }
    };
    let mut done = 0.0;
    let rows: Vec<Row> = intervals
        .iter()
        .map(|i: &Interval| {
            done += i.documents;
            Row {
                t: i.t.round() as u64,
                strategy: strategy.name(),
                cpu_percent: i.cpu,
                service_p99: i.latency.map_or(0.0, |l| l.1),
                rate: i.documents / INTERVAL,
                done: done.round() as u64,
                limiter: i.pace.limiter,
            }
        })
        .collect();
    let summary = summarise(&strategy, &rows, users, config.target_cpu);
    (rows, summary)
}

fn summarise(strategy: &Strategy, rows: &[Row], users: u64, target: f64) -> Summary {
    let n = rows.len().max(1) as f64;
    let smooth: Vec<f64> = (0..rows.len())
        .map(|i| {
            let w = &rows[i.saturating_sub(4)..=i];
            w.iter().map(|r| r.cpu_percent).sum::<f64>() / w.len() as f64
        })
        .collect();
    // The tail, when the day runs short of work, is not a failure to hold: judged until the
    // last interval with a full minute's work left at its pace.
    let last_full = rows
        .iter()
        .rposition(|r| r.rate > 0.0 && (users.saturating_sub(r.done) as f64) > 60.0 * r.rate)
        .unwrap_or(0);
    let in_band = |c: &f64| (c - target).abs() <= BAND * target;
    let held = smooth[..=last_full.min(smooth.len().saturating_sub(1))]
        .iter()
        .position(in_band)
        .map(|first| {
            let window = &smooth[first..=last_full.max(first)];
            window.iter().filter(|c| in_band(c)).count() as f64 / window.len() as f64
        });
    Summary {
        strategy: strategy.name(),
        label: strategy.label(),
        finished: rows.last().is_some_and(|r| r.done >= users),
        wall: rows.last().map_or(0, |r| r.t),
        mean_cpu: rows.iter().map(|r| r.cpu_percent).sum::<f64>() / n,
        peak_cpu: smooth.iter().copied().fold(0.0, f64::max),
        service_p99: rows.iter().map(|r| r.service_p99).fold(0.0, f64::max),
        held,
    }
}

/// One header line, then one line per interval per strategy.
pub fn csv(series: &Series) -> String {
    let mut out = String::from(
        "t_seconds,strategy,cpu_percent,service_p99_seconds,users_per_second,done_users,limiter\n",
    );
    for r in &series.rows {
        out.push_str(&format!(
            "{},{},{:.1},{:.4},{:.1},{},{}\n",
            r.t, r.strategy, r.cpu_percent, r.service_p99, r.rate, r.done, r.limiter
        ));
    }
    out
}

/// The summary table, labelled a simulation.
pub fn table(series: &Series) -> String {
    let mut out = format!(
        "SIMULATION (a model, not a measurement): {} users on a simulated M50 ({} cores), \
         service 100% with a 150% spell, target CPU {:.0}%\n",
        series.users, series.cores, series.target_cpu
    );
    out.push_str(&format!(
        "{:<10} {:>14} {:>9} {:>12} {:>13} {:>10}\n",
        "strategy", "wall time", "mean CPU", "peak CPU 5s", "service p99", "held ±10%"
    ));
    for s in &series.summaries {
        let wall = if s.finished {
            clock(s.wall)
        } else {
            format!(">{}", clock(s.wall))
        };
        let held = s
            .held
            .map_or_else(|| "-".to_string(), |h| format!("{:.0}%", h * 100.0));
        out.push_str(&format!(
            "{:<10} {:>14} {:>8.0}% {:>11.0}% {:>12.3}s {:>10}\n",
            s.strategy, wall, s.mean_cpu, s.peak_cpu, s.service_p99, held
        ));
    }
    out
}

/// `2h 46m 40s`, `10m 07s`, `42s`.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// CPU over time per strategy with the target, and the share of the day done, as SVG.
pub fn svg(series: &Series) -> Result<String, Error> {
    let mut out = String::new();
    draw(series, &mut out).map_err(|e| Error::Chart(e.to_string()))?;
    Ok(out)
}

/// The chart shows 1.25 × the second-longest run, so one very long run (Bull's fixed rate on a
/// full day) does not flatten the others; its legend says when it ends.
fn window(series: &Series) -> u64 {
    let mut walls: Vec<u64> = series.summaries.iter().map(|s| s.wall).collect();
    walls.sort_unstable();
    let second = walls.iter().rev().nth(1).or(walls.last()).copied();
    (second.unwrap_or(1) as f64 * 1.25).ceil().max(10.0) as u64
}

/// One strategy's line up to `window`: (virtual seconds, `y` of the row).
fn strategy_points<'a>(
    series: &'a Series,
    strategy: &'static str,
    window: u64,
    y: impl Fn(&Row) -> f64 + 'a,
) -> impl Iterator<Item = (f64, f64)> + 'a {
    series
        .rows
        .iter()
        .filter(move |r| r.strategy == strategy && r.t <= window)
        .map(move |r| (r.t as f64, y(r)))
}

fn draw(series: &Series, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    const COLOURS: [RGBColor; 4] = [RED, BLUE, RGBColor(0, 150, 60), MAGENTA];
    let window = window(series);
    let x_max = window as f64;
    let y_max = (series.cores * 100.0 * 1.08).max(series.target_cpu * 1.2);
    let target = series.target_cpu;
    let root = SVGBackend::with_string(out, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "tidegate simulate — simulated M50 ({} cores), not a measurement",
            series.cores
        ),
        ("sans-serif", 22),
    )?;
    let (top, bottom) = root.split_vertically(440);
    let legend = |s: &Summary| {
        if s.wall > window {
            format!("{} — ends at {}", s.label, clock(s.wall))
        } else {
            s.label.clone()
        }
    };

    let mut cpu = ChartBuilder::on(&top)
        .caption(
            format!(
                "simulated database CPU, % of one core — {} users; the service 100%, 150% from 30 s to 90 s",
                series.users
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    cpu.configure_mesh()
        .x_desc("virtual time, s")
        .y_desc("CPU %")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, s) in series.summaries.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = strategy_points(series, s.strategy, window, |r| r.cpu_percent);
        cpu.draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(legend(s))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    cpu.draw_series(DashedLineSeries::new(
        vec![(0.0, target), (x_max, target)],
        8,
        6,
        BLACK.stroke_width(1),
    ))?
    .label(format!("target {target:.0}%"))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let (w, h) = cpu.plotting_area().dim_in_pixel();
    cpu.configure_series_labels()
        .position(SeriesLabelPosition::Coordinate(
            w as i32 * 3 / 10,
            h as i32 * 3 / 10,
        ))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let users = series.users.max(1) as f64;
    let mut progress = ChartBuilder::on(&bottom)
        .caption("share of the day's users done, %", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..105.0)?;
    progress
        .configure_mesh()
        .x_desc("virtual time, s")
        .y_desc("done %")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, s) in series.summaries.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = strategy_points(series, s.strategy, window, |r| {
            r.done as f64 * 100.0 / users
        });
        progress.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

/// Writes `simulation.csv` and `simulation.svg` into `dir`, creating it.
pub fn write_files(series: &Series, dir: &Path) -> Result<[PathBuf; 2], Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let csv_path = dir.join("simulation.csv");
    std::fs::write(&csv_path, csv(series)).map_err(io(&csv_path))?;
    let svg_path = dir.join("simulation.svg");
    std::fs::write(&svg_path, svg(series)?).map_err(io(&svg_path))?;
    Ok([csv_path, svg_path])
}

#[cfg(test)]
mod tests;
