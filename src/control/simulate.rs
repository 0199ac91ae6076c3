//! `tidegate simulate`: the seed's story replayed in virtual time. This is a SIMULATION: no
//! database, no clock, no randomness; every figure it prints or draws comes from the model below,
//! never from a measurement, and every output says so.
//!
//! It owns the database model ([`Model`]), the three ways of working a day ([`Strategy`]), the
//! loop that feeds the real [`Controller`] from the model once per interval, the summary figures,
//! and the CSV, SVG and table outputs.
//!
//! # The model (an Atlas M50, as in the seed)
//! Fixed one-second steps, one per control interval. Work is fluid, in core-seconds of CPU, and
//! is done first come first served; a batch is a token bucket in continuous form.
//! - **8 cores** (M50: 8 vCPU).
//! - **Live traffic** keeps 1 core busy (100%) and makes 200 writes/s that each take 2 ms. The
//!   seed does not give the normal CPU; one core puts Bull's 5 jobs/s at ~110%, the low end of
//!   the "steady 100–200%" the seed reports for it.
//! - **8 ms of CPU per round trip** (read or write): parsing, planning, the lookup in an
//!   under-indexed collection (the seed says missing indexes made it worse), connection work.
//!   **0.5 ms per document** read or written (the controller tests' plant uses the same).
//!   A user is 3 event documents read and 1 score written, so a user costs 18 ms when it has a
//!   read and a write of its own, and 2.03 ms in a batch of 500 that shares one read and one
//!   bulk write. Batching, not pacing alone, is most of the saving.
//! - **Contention**: up to 128 operations in flight (WiredTiger's default tickets in MongoDB
//!   6.0) cost nothing extra; past that, the work done per core-second is
//!   `1 / (1 + (n − 128) / 1100)`. The naive script keeps 2,500 operations in flight (the seed
//!   saw 2,000–3,000 connections), so the server does ~32% of its usual work per core-second.
//!   That, not the total work, is why it takes ~10 minutes pegged at 800%: the same work
//!   uncontended takes about two. The scale 1100 is the one free parameter, chosen for the
//!   seed's 10 minutes at 50,000 users (~50,000 jobs/day, the seed's figure).
//! - **Write latency**, as `serverStatus`'s `opLatencies` reports it: the mean over the
//!   interval's writes, live and batch. Each takes its CPU time stretched by contention and by
//!   M/M/1 queueing (`1 / (1 − u)`, utilisation capped at 0.99), plus the wait behind the
//!   work already queued in the server (what is in flight, not what the client still holds).
//!
//! Not modelled: memory and cache pressure (the seed saw 25 GB), changes in live traffic,
//! failures and retries. The seed's own figures do not fit one day: 5 jobs/s for 3 minutes is
//! 900 jobs, while 50,000 jobs at 5 jobs/s take 2 h 47 min; the simulation shows the latter.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::control::controller::{Config, Controller, Sample};

/// Seconds per step: one control interval.
const DT: f64 = 1.0;
/// A run that has not finished after a virtual week is reported unfinished rather than looping.
const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Within this share of the target, CPU counts as held.
const BAND: f64 = 0.10;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    pub cores: f64,
    /// Cores the live traffic keeps busy.
    pub baseline_cores: f64,
    pub live_writes_per_s: f64,
    /// CPU seconds of one live write.
    pub live_write_cost: f64,
    /// CPU seconds per round trip, whatever it carries.
    pub cost_per_op: f64,
    /// CPU seconds per document read or written.
    pub cost_per_doc: f64,
    pub docs_read_per_user: f64,
    pub docs_written_per_user: f64,
    /// Operations in flight the server handles without contention.
    pub free_concurrency: f64,
    /// Operations in flight past `free_concurrency` that halve the work done per core-second.
    pub contention_scale: f64,
}

impl Model {
    /// The M50 of the seed; the module's doc comment says where each number comes from.
    pub fn m50() -> Self {
        Self {
            cores: 8.0,
            baseline_cores: 1.0,
            live_writes_per_s: 200.0,
            live_write_cost: 0.002,
            cost_per_op: 0.008,
            cost_per_doc: 0.0005,
            docs_read_per_user: 3.0,
            docs_written_per_user: 1.0,
            free_concurrency: 128.0,
            contention_scale: 1100.0,
        }
    }

    /// Useful work per core-second with `in_flight` operations competing for the server.
    fn efficiency(&self, in_flight: f64) -> f64 {
        1.0 / (1.0 + (in_flight - self.free_concurrency).max(0.0) / self.contention_scale)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// The seed's script: every user's read and write fired at once, as many in flight as the
    /// connections allow.
    Naive { connections: f64 },
    /// Bull's limiter: a hand-picked number of jobs per second, one read and one write each.
    Fixed { jobs_per_s: f64 },
    /// Batches of users, one read and one bulk write each, paced in documents/s by the
    /// controller.
    Tidegate { batch_users: f64 },
}

impl Strategy {
    /// The seed's day: the script, Bull's 5 jobs/s, and tidegate with batches of 500.
    pub fn day() -> [Strategy; 3] {
        [
            Strategy::Naive {
                connections: 2500.0,
            },
            Strategy::Fixed { jobs_per_s: 5.0 },
            Strategy::Tidegate { batch_users: 500.0 },
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Naive { .. } => "naive",
            Strategy::Fixed { .. } => "fixed",
            Strategy::Tidegate { .. } => "tidegate",
        }
    }

    fn label(&self) -> String {
        match self {
            Strategy::Naive { .. } => "naive (all at once)".into(),
            Strategy::Fixed { jobs_per_s } => format!("fixed ({jobs_per_s} jobs/s)"),
            Strategy::Tidegate { batch_users } => format!("tidegate (batches of {batch_users})"),
        }
    }

    /// Users that share one read and one write.
    fn users_per_write(&self) -> f64 {
        match self {
            Strategy::Naive { .. } | Strategy::Fixed { .. } => 1.0,
            Strategy::Tidegate { batch_users } => batch_users.max(1.0),
        }
    }

    /// Most operations this strategy has in the server at once.
    fn concurrency(&self) -> f64 {
        match self {
            Strategy::Naive { connections } => *connections,
            // Bull's default concurrency: one job at a time.
            Strategy::Fixed { .. } => 1.0,
            // A worker awaits its read, then its bulk write.
            Strategy::Tidegate { .. } => 2.0,
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
    /// Mean write latency, seconds.
    pub write_latency: f64,
    /// Documents written per second in the interval (achieved, not asked for).
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
    pub peak_latency: f64,
    /// Share of intervals with CPU within ±10% of the target, from the first such interval to
    /// the last one with a full interval's work left to offer (the tail, when the day runs out,
    /// is not a failure to hold). `None` when CPU never reached the band while work remained.
    pub held: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub model: Model,
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

/// The seed's day on the seed's M50 with the controller's defaults but `target_cpu`.
pub fn day(users: u64, target_cpu: f64) -> Series {
    let config = Config {
        target_cpu,
        ..Config::default()
    };
    simulate(&Model::m50(), users, config, &Strategy::day())
}

pub fn simulate(model: &Model, users: u64, config: Config, strategies: &[Strategy]) -> Series {
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    for strategy in strategies {
        let (mut strategy_rows, summary) = run(model, users, config, *strategy);
        rows.append(&mut strategy_rows);
        summaries.push(summary);
    }
    Series {
        model: *model,
        users,
        target_cpu: config.target_cpu,
        rows,
        summaries,
    }
}

fn run(model: &Model, users: u64, config: Config, strategy: Strategy) -> (Vec<Row>, Summary) {
    let users = users as f64;
    let batch = strategy.users_per_write();
    let ops_per_user = 2.0 / batch;
    let work_per_user = ops_per_user * model.cost_per_op
        + (model.docs_read_per_user + model.docs_written_per_user) * model.cost_per_doc;
    let batch_write_cost =
        model.cost_per_op + batch * model.docs_written_per_user * model.cost_per_doc;
    let mut controller = Controller::new(config);
    // Users whose work has reached the server, and users finished.
    let (mut offered, mut done) = (0.0_f64, 0.0_f64);
    let mut rows = Vec::new();
    let mut last_full = 0;
    let mut t = 0;
    while done < users && t < MAX_SECONDS {
        t += 1;
        let wanted = match strategy {
            Strategy::Naive { .. } => users,
            Strategy::Fixed { jobs_per_s } => jobs_per_s * DT,
            Strategy::Tidegate { .. } => controller.rate() * DT / model.docs_written_per_user,
        };
        let left = users - offered;
        if left > 0.0 && wanted <= left {
            last_full = t;
        }
        offered += wanted.min(left);

        let queued_users = offered - done;
        let in_flight = (queued_users * ops_per_user).min(strategy.concurrency());
        let efficiency = model.efficiency(in_flight);
        let capacity = model.cores * DT * efficiency;
        // Live traffic comes first: it is many short operations the server interleaves; what
        // the outage costs it shows in its latency.
        let live = (model.baseline_cores * DT).min(capacity);
        let finished = queued_users.min((capacity - live) / work_per_user);
        done += finished;
        if offered >= users && users - done < 1e-6 {
            done = users;
        }

        let busy = (live + finished * work_per_user) / efficiency / DT;
        let utilisation = (busy / model.cores).min(0.99);
        let stretch = 1.0 / (efficiency * (1.0 - utilisation));
        let in_server =
            ((offered - done) * work_per_user).min(in_flight * work_per_user / ops_per_user);
        let wait = in_server / (model.cores * efficiency);
        let live_writes = model.live_writes_per_s * DT;
        let batch_writes = finished / batch;
        let writes = live_writes + batch_writes;
        // With no write at all, a probe would time a live-sized one.
        let write_latency = if writes > 0.0 {
            (live_writes * model.live_write_cost + batch_writes * batch_write_cost) * stretch
                / writes
                + wait
        } else {
            model.live_write_cost * stretch + wait
        };
        let cpu_percent = busy * 100.0;

        let limiter = match strategy {
            Strategy::Naive { .. } => "unpaced",
            Strategy::Fixed { .. } => "fixed",
            Strategy::Tidegate { .. } => {
                let decision = controller.step(
                    &Sample {
                        probe_ok: true,
                        db_cpu: Some(cpu_percent),
                        write_latency: Some(write_latency),
                        write_errors: 0,
                        ..Sample::default()
                    },
                    &[],
                );
                decision.limiter.name()
            }
        };
        rows.push(Row {
            t,
            strategy: strategy.name(),
            cpu_percent,
            write_latency,
            rate: finished * model.docs_written_per_user / DT,
            done: done.floor() as u64,
            limiter,
        });
    }
    let summary = summarise(
        &strategy,
        &rows,
        done >= users,
        config.target_cpu,
        last_full,
    );
    (rows, summary)
}

fn summarise(
    strategy: &Strategy,
    rows: &[Row],
    finished: bool,
    target: f64,
    last_full: u64,
) -> Summary {
    let n = rows.len().max(1) as f64;
    let in_band = |r: &Row| (r.cpu_percent - target).abs() <= BAND * target;
    let held = rows
        .iter()
        .take_while(|r| r.t <= last_full)
        .position(in_band)
        .map(|settled| {
            let window = &rows[settled..last_full as usize];
            window.iter().filter(|r| in_band(r)).count() as f64 / window.len() as f64
        });
    Summary {
        strategy: strategy.name(),
        label: strategy.label(),
        finished,
        wall: rows.last().map_or(0, |r| r.t),
        mean_cpu: rows.iter().map(|r| r.cpu_percent).sum::<f64>() / n,
        peak_cpu: rows.iter().map(|r| r.cpu_percent).fold(0.0, f64::max),
        peak_latency: rows.iter().map(|r| r.write_latency).fold(0.0, f64::max),
        held,
    }
}

/// One header line, then one line per interval per strategy.
pub fn csv(series: &Series) -> String {
    let mut out = String::from(
        "t_seconds,strategy,cpu_percent,write_latency_seconds,rate_docs_per_second,done_users,limiter\n",
    );
    for r in &series.rows {
        out.push_str(&format!(
            "{},{},{:.1},{:.6},{:.1},{},{}\n",
            r.t, r.strategy, r.cpu_percent, r.write_latency, r.rate, r.done, r.limiter
        ));
    }
    out
}

/// The summary table, labelled a simulation.
pub fn table(series: &Series) -> String {
    let mut out = format!(
        "SIMULATION (a model, not a measurement): {} users on a simulated M50 ({} cores), \
         live traffic {:.0}%, target CPU {:.0}%\n",
        series.users,
        series.model.cores,
        series.model.baseline_cores * 100.0,
        series.target_cpu
    );
    out.push_str(&format!(
        "{:<10} {:>14} {:>9} {:>9} {:>13} {:>10}\n",
        "strategy", "wall time", "mean CPU", "peak CPU", "peak latency", "held ±10%"
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
            "{:<10} {:>14} {:>8.0}% {:>8.0}% {:>12.3}s {:>10}\n",
            s.strategy, wall, s.mean_cpu, s.peak_cpu, s.peak_latency, held
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
    let y_max = (series.model.cores * 100.0 * 1.08).max(series.target_cpu * 1.2);
    let target = series.target_cpu;
    let root = SVGBackend::with_string(out, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "tidegate simulate — simulated M50 ({} cores), not a measurement",
            series.model.cores
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
                "simulated database CPU, % of one core — {} users, live traffic {:.0}%",
                series.users,
                series.model.baseline_cores * 100.0
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
    // Between the naive line at the top and the target below, where no line runs.
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
mod tests {
    use super::*;

    fn seed_day() -> Series {
        day(50_000, Config::default().target_cpu)
    }

    fn summary<'a>(series: &'a Series, strategy: &str) -> &'a Summary {
        series
            .summaries
            .iter()
            .find(|s| s.strategy == strategy)
            .expect("strategy simulated")
    }

    fn cpus<'a>(series: &'a Series, strategy: &'a str) -> impl Iterator<Item = f64> + 'a {
        series
            .rows
            .iter()
            .filter(move |r| r.strategy == strategy)
            .map(|r| r.cpu_percent)
    }

    #[test]
    fn naive_pegs_every_core_for_about_ten_minutes() {
        let series = seed_day();
        let naive = summary(&series, "naive");
        assert!(naive.peak_cpu >= 0.9 * 800.0, "{naive:?}");
        assert!(
            naive.finished && (480..=720).contains(&naive.wall),
            "{naive:?}"
        );
        assert!(naive.peak_latency > 1.0, "latency explodes: {naive:?}");
    }

    #[test]
    fn tidegate_holds_the_target_without_overshoot_and_finishes_first() {
        let series = seed_day();
        let tidegate = summary(&series, "tidegate");
        assert!(tidegate.finished, "{tidegate:?}");
        assert_eq!(tidegate.held, Some(1.0), "{tidegate:?}");
        assert!(tidegate.peak_cpu <= 1.2 * 200.0, "{tidegate:?}");
        assert!(tidegate.peak_latency <= Config::default().target_latency);
        assert!(tidegate.wall < summary(&series, "naive").wall, "{series:?}");
    }

    #[test]
    fn a_lower_target_is_held_too() {
        let series = day(20_000, 150.0);
        let tidegate = summary(&series, "tidegate");
        assert_eq!(tidegate.held, Some(1.0), "{tidegate:?}");
        assert!(cpus(&series, "tidegate").all(|c| c <= 1.2 * 150.0));
    }

    #[test]
    fn bulls_fixed_rate_stays_under_the_target_and_takes_hours_for_a_day() {
        let series = seed_day();
        assert!(cpus(&series, "fixed").all(|c| c < 200.0));
        let fixed = summary(&series, "fixed");
        assert!(fixed.finished && fixed.wall >= 10_000, "{fixed:?}");
    }

    #[test]
    fn the_csv_has_a_header_and_one_row_per_interval_per_strategy() {
        let series = day(2_000, 200.0);
        let text = csv(&series);
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .is_some_and(|h| h.starts_with("t_seconds,strategy,"))
        );
        for s in &series.summaries {
            let rows: Vec<&str> = text
                .lines()
                .filter(|l| l.split(',').nth(1) == Some(s.strategy))
                .collect();
            assert_eq!(rows.len() as u64, s.wall, "{}", s.strategy);
            assert!(rows[0].starts_with("1,"));
        }
        assert_eq!(lines.count(), series.rows.len());
    }

    #[test]
    fn it_is_deterministic() {
        assert_eq!(day(3_000, 200.0), day(3_000, 200.0));
    }

    #[test]
    fn the_chart_and_the_table_say_simulation() {
        let series = day(2_000, 200.0);
        let dir =
            std::env::temp_dir().join(format!("tidegate-simulate-unit-{}", std::process::id()));
        let [csv_path, svg_path] = write_files(&series, &dir).expect("write files");
        let svg = std::fs::read_to_string(&svg_path).expect("svg written");
        assert!(svg.starts_with("<svg") && svg.contains("simulat"), "{svg}");
        assert!(csv_path.exists());
        assert!(table(&series).starts_with("SIMULATION"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
