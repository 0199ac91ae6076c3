//! The `tidegate` command line: thin wrappers over the engine and the built-in applications
//! (`tidegate_cli`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use futures::TryStreamExt;
use tidegate::config::{self, ConfigError, Settings};
use tidegate::control::{controller, simulate};
use tidegate::engine::{self, Engine};
use tidegate::progress::Progress;
use tidegate_cli::{APPS, Application, read_apps, register};
use tidegate_score as score;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Load-aware adaptive batch processor (Redis queue → MongoDB bulk writes)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /metrics, /healthz and /readyz, work the queue, and plan runs on the schedule, until
    /// SIGTERM or SIGINT.
    Run,
    /// Pace BullMQ workers you already run (Node, Python; BullMQ >= 5.60) without changing
    /// them: set the global rate limit of each queue TIDEGATE_GOVERN names from the database's
    /// load, and hand it back (TIDEGATE_GOVERN_FALLBACK) at SIGTERM or SIGINT. Takes no job.
    Govern,
    /// Create the indexes the enabled applications (TIDEGATE_APPS) read by, printing each and
    /// its collection first. Nothing else ever creates one: an index build scans its
    /// collection at a pace nothing controls, so run it when the database can take that.
    Setup {
        /// Print what would be created, and create nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit 0 when the tidegate process serving on TIDEGATE_HTTP_ADDR answers (its /healthz;
    /// with --ready, its /readyz: Redis and MongoDB reachable), else 1: for a container's
    /// HEALTHCHECK.
    Health {
        #[arg(long)]
        ready: bool,
    },
    /// Print the effective settings (secrets redacted), where each value came from, and the
    /// schedule's next three firings.
    Config {
        /// Print the settings table in Markdown, as the README shows it.
        #[arg(long)]
        markdown: bool,
    },
    /// Print every metric tidegate exports (name, type, unit, labels, meaning) as the Markdown
    /// table METRICS.md shows.
    Metrics,
    /// Write a realistic day of events (skewed: a few heavy users, many light ones), creating the
    /// score's indexes first where they are missing (the events are the score's sample).
    SeedData {
        #[arg(long, default_value_t = 50_000)]
        users: u64,
        /// The day, in TIDEGATE_TIMEZONE (default: yesterday there): from 2000-01-01 to the
        /// last day that has ended there.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Random seed: the same seed writes the same events.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Seed a day, run it through the queue into MongoDB in this process, and print a summary.
    Demo {
        #[arg(long, default_value_t = 50_000)]
        users: u64,
        /// The day (default: yesterday in TIDEGATE_TIMEZONE): from 2000-01-01 to the last day
        /// that has ended there.
        #[arg(long)]
        date: Option<NaiveDate>,
    },
    /// Plan a day again as a new run and process it in this process until it ends.
    Rerun {
        /// The day: from 2000-01-01 to the last day that has ended in TIDEGATE_TIMEZONE.
        #[arg(long)]
        date: NaiveDate,
        /// Also delete the day's results of users the run does not target, once it is planned
        /// (as when data was collected wrongly; those it targets it rewrites).
        #[arg(long)]
        purge: bool,
    },
    /// The original script, for benchmarks only: every user at once, one read and one
    /// write each, no pacing.
    Naive {
        /// The day (default: yesterday in TIDEGATE_TIMEZONE): from 2000-01-01 to the last day
        /// that has ended there.
        #[arg(long)]
        date: Option<NaiveDate>,
    },
    /// A SIMULATION, not a measurement: the original day in virtual time on a modelled M50 (naive,
    /// Bull's fixed 5 jobs/s, tidegate's controller). Writes simulation.csv and simulation.svg;
    /// needs no services and reads no settings.
    Simulate {
        #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
        users: u64,
        /// Database CPU to hold, percent of one core (800 = all 8 cores).
        #[arg(long, default_value_t = controller::Config::default().target_cpu)]
        target_cpu: f64,
        #[arg(long, default_value = "target/simulate")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config { markdown: true } = cli.command {
        print!("{}", config::markdown_table(&[&APPS]));
        return ExitCode::SUCCESS;
    }
    if let Command::Metrics = cli.command {
        print!("{}", tidegate::telemetry::markdown_catalogue());
        return ExitCode::SUCCESS;
    }
    // Pure virtual time: it must run where no service or setting exists.
    if let Command::Simulate {
        users,
        target_cpu,
        out,
    } = &cli.command
    {
        return run_simulation(*users, *target_cpu, out);
    }
    let lookup = |name: &str| std::env::var(name).ok();
    let (settings, apps) = match (Settings::from_lookup(lookup), read_apps(lookup)) {
        (Ok(settings), Ok(apps)) => (settings, apps),
        (settings, apps) => {
            let mut problems = settings.err().map(|e| e.0).unwrap_or_default();
            problems.extend(apps.err());
            eprintln!("tidegate: {}", ConfigError(problems));
            return ExitCode::from(2);
        }
    };
    let (apps, apps_shown, apps_source) = apps;
    if let Command::Config { .. } = cli.command {
        for (var, value) in settings.effective() {
            let source = settings.source(var.name);
            println!("{:<28} {:<40} ({source})", var.name, value);
        }
        println!("{:<28} {:<40} ({apps_source})", APPS.name, apps_shown);
        let tz = settings.timezone;
        match &settings.schedule {
            Some(schedule) => {
                let next: Vec<String> = schedule
                    .upcoming(chrono::Utc::now(), tz, 3)
                    .iter()
                    .map(|t| t.format("%a %Y-%m-%d %H:%M %Z").to_string())
                    .collect();
                println!("next firings ({tz}): {}", next.join(", "));
                if !apps.contains(&Application::Score) {
                    println!("(no enabled application plans days: the schedule fires nothing)");
                }
            }
            None => println!("next firings: none (TIDEGATE_SCHEDULE is off)"),
        }
        return ExitCode::SUCCESS;
    }
    // A day that cannot be a run's stops the command before it connects to anything.
    let refused = given_date(&cli.command)
        .map(|date| tidegate::schedule::check_run_date(date, settings.timezone, chrono::Utc::now()))
        .and_then(Result::err);
    if let Some(e) = refused {
        eprintln!("tidegate: --date {e}");
        return ExitCode::from(2);
    }
    tidegate::telemetry::init_tracing(&settings.log_filter, settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tidegate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, settings, apps)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tidegate stopped");
            eprintln!("tidegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The day a command was given with `--date`, if any.
fn given_date(command: &Command) -> Option<NaiveDate> {
    match command {
        Command::SeedData { date, .. } | Command::Demo { date, .. } | Command::Naive { date } => {
            *date
        }
        Command::Rerun { date, .. } => Some(*date),
        Command::Run
        | Command::Govern
        | Command::Setup { .. }
        | Command::Health { .. }
        | Command::Config { .. }
        | Command::Metrics
        | Command::Simulate { .. } => None,
    }
}

fn run_simulation(users: u64, target_cpu: f64, out: &Path) -> ExitCode {
    let cores = simulate::m50().cores;
    if !(target_cpu > 0.0 && target_cpu < cores * 100.0) {
        eprintln!(
            "tidegate: --target-cpu {target_cpu} is invalid (accepted: more than 0 and less than {})",
            cores * 100.0
        );
        return ExitCode::from(2);
    }
    let series = simulate::day(users, target_cpu);
    match simulate::write_files(&series, out) {
        Ok(paths) => {
            print!("{}", simulate::table(&series));
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Seeds a day of events, showing progress in users.
async fn seed_events(
    app: &Engine,
    date: NaiveDate,
    users: u64,
    seed: u64,
) -> Result<score::SampleReport, tidegate::store::WriteFailure> {
    let mut progress = Progress::new(&format!("seeding {date}"), users);
    let report = score::sample_day(
        &app.store,
        date,
        app.settings.timezone,
        users,
        seed,
        |done| progress.set(done),
    )
    .await;
    progress.finish();
    report
}

/// `tidegate health`: one GET of the local process's /healthz (or /readyz), two seconds at most.
async fn health(settings: &Settings, ready: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = settings.http_addr;
    // A process listening on every interface is asked on this machine's own.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/{}", if ready { "readyz" } else { "healthz" });
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()?
        .get(&url)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{url}: {status} {}", body.trim());
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {status}").into())
    }
}

/// The applications with the score enabled, for the commands that are the score's own (`demo`,
/// `seed-data`).
fn with_score(mut apps: Vec<Application>) -> Vec<Application> {
    if !apps.contains(&Application::Score) {
        apps.push(Application::Score);
    }
    apps
}

/// The engine with `apps` registered: as `tidegate run` builds it, for the other commands.
async fn connect(settings: Settings, apps: &[Application]) -> Result<Engine, engine::AppError> {
    Ok(register(Engine::connect(settings).await?, apps))
}

/// `tidegate setup`: the enabled applications' indexes, each printed with its collection and
/// whether it exists, then the missing ones created (unless `dry_run`).
async fn setup(
    settings: Settings,
    apps: &[Application],
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let database = settings.database.clone();
    let app = connect(settings, apps).await?;
    let indexes = app.indexes().await?;
    if indexes.is_empty() {
        println!("no enabled application (TIDEGATE_APPS) needs an index: nothing to create");
        return Ok(());
    }
    for (index, exists) in &indexes {
        let state = match (exists, dry_run) {
            (true, _) => "exists",
            (false, true) => "would create",
            (false, false) => "creating",
        };
        println!("{state:<13} database {database}, collection {index}");
        if !exists && !dry_run {
            app.store.create_index(index).await?;
            println!("created       {index}");
        }
    }
    Ok(())
}

/// The score's indexes, for the commands that write its sample events (`demo`, `seed-data`):
/// asked to write them, they bring what reading them needs, as a team's own data would have.
async fn create_missing_indexes(app: &Engine) -> Result<(), Box<dyn std::error::Error>> {
    for index in app.create_missing_indexes().await? {
        println!("index      created {index}");
    }
    Ok(())
}

fn yesterday(settings: &Settings) -> NaiveDate {
    tidegate::schedule::day_for(chrono::Utc::now().with_timezone(&settings.timezone))
}

/// `tidegate run` (`apps`, and the queues of `TIDEGATE_GOVERN`) or `tidegate govern` (no
/// application) until SIGTERM or SIGINT.
async fn serve(settings: Settings, apps: &[Application]) -> Result<(), engine::AppError> {
    let stop = CancellationToken::new();
    let engine = engine::connect_until(settings, &stop).await?;
    register(engine, apps).run_until(stop).await
}

async fn execute(
    command: Command,
    settings: Settings,
    apps: Vec<Application>,
) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        // Handled before settings are read.
        Command::Config { .. } | Command::Metrics | Command::Simulate { .. } => Ok(()),
        Command::Run if apps.is_empty() => Err(
            "TIDEGATE_APPS enables no pipeline (`none`): `tidegate run` would take no job; enable one (`upsert`, `score`)".into(),
        ),
        Command::Run => Ok(serve(settings, &apps).await?),
        Command::Govern if settings.govern.is_empty() => Err(
            "TIDEGATE_GOVERN names no queue: `tidegate govern` would pace nothing; name the BullMQ queues your workers take from (`visits,emails:0.5`)".into(),
        ),
        Command::Govern => Ok(serve(settings, &[]).await?),
        Command::Setup { dry_run } => setup(settings, &apps, dry_run).await,
        Command::Health { ready } => health(&settings, ready).await,
        Command::SeedData { users, date, seed } => {
            let date = date.unwrap_or_else(|| yesterday(&settings));
            let app = connect(settings, &with_score(apps)).await?;
            create_missing_indexes(&app).await?;
            let report = seed_events(&app, date, users, seed).await?;
            println!(
                "seeded {date}: {} users, {} events ({} earlier events of that day replaced)",
                report.users, report.events, report.replaced
            );
            Ok(())
        }
        Command::Demo { users, date } => {
            let date = date.unwrap_or_else(|| yesterday(&settings));
            let app = connect(settings, &with_score(apps)).await?;
            create_missing_indexes(&app).await?;
            let seeded = seed_events(&app, date, users, 7).await?;
            println!(
                "seeded     {date}: {} users, {} events",
                seeded.users, seeded.events
            );
            let report = app.process_day(date, "demo", true).await?;
            println!("{report}");
            Ok(())
        }
        Command::Rerun { .. } if !apps.contains(&Application::Score) => Err(
            "no daily application is enabled: set TIDEGATE_APPS to one that plans days (such as `score`)".into(),
        ),
        Command::Rerun { date, purge } => {
            let app = connect(settings, &apps).await?;
            let report = app.process_day(date, "rerun", purge).await?;
            println!("{report}");
            Ok(())
        }
        Command::Naive { date } => {
            let date = date.unwrap_or_else(|| yesterday(&settings));
            let app = Engine::connect(settings).await?;
            let tz = app.settings.timezone;
            let lease = app.settings.plan_lease;
            let users: Vec<String> = app
                .store
                .bounded_for(lease, async {
                    score::targets(&app.store, date, tz, lease)
                        .await?
                        .try_collect()
                        .await
                })
                .await?;
            let report = score::run_naive(&app.store, date, tz, users).await;
            println!(
                "naive      {date}: {} users, {} written, {} failed, {} round trips, {:.2} s, mean write round trip {:.1} ms",
                report.users,
                report.written,
                report.failed,
                report.round_trips,
                report.wall.as_secs_f64(),
                report.write_rtt.as_secs_f64() * 1e3
            );
            Ok(())
        }
    }
}
