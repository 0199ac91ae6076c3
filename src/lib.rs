//! The `tidegate` command's applications: the engine's generic upsert and the daily score,
//! each enabled by `TIDEGATE_APPS` ([`APPS`]) and registered on the engine by [`register`].
//! Nothing of an application that is not enabled exists in the process: no pipeline, planner,
//! schedule or index.

use tidegate::config::{self, Invalid, Secret, Var};
use tidegate::engine::Engine;
use tidegate::pipeline::upsert::{self, UpsertPipeline};
use tidegate_score::{Score, ScorePipeline};

pub const APPS: Var = Var {
    name: "TIDEGATE_APPS",
    default: || "upsert".into(),
    accepted: "`none`, or a comma-separated list of `upsert` (the generic pipeline: jobs named `upsert`) and `score` (the daily score: jobs named `collect` or `score`; plans days)",
    meaning: "the built-in applications `tidegate run` works and plans: no other's job, index, schedule or run exists",
    secret: Secret::No,
};

/// Every variable the `tidegate` command reads: the engine's, then its own.
pub fn vars() -> impl Iterator<Item = &'static Var> {
    config::VARS.iter().copied().chain([&APPS])
}

/// A built-in application `TIDEGATE_APPS` can enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Application {
    /// The generic upsert pipeline: jobs named `upsert`.
    Upsert,
    /// The daily score: its pipeline, its indexes (`tidegate setup`), its planned days.
    Score,
}

impl Application {
    pub const ALL: [Application; 2] = [Application::Upsert, Application::Score];

    pub fn name(self) -> &'static str {
        match self {
            Application::Upsert => "upsert",
            Application::Score => "score",
        }
    }
}

/// The applications `TIDEGATE_APPS` (read through `lookup`) enables, in the order given, with
/// its effective text and where it came from (`env` or `default`).
pub fn read_apps(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(Vec<Application>, String, &'static str), Invalid> {
    config::read_var(&APPS, lookup, applications)
}

/// `none`, or applications by name, each once.
fn applications(value: &str) -> Result<Vec<Application>, String> {
    if value == "none" {
        return Ok(Vec::new());
    }
    let mut apps = Vec::new();
    for name in value.split(',').map(str::trim) {
        let app = Application::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| format!("no application {name:?}"))?;
        if !apps.contains(&app) {
            apps.push(app);
        }
    }
    Ok(apps)
}

/// `engine` with each of `apps` registered: its pipeline under its job names and, for the
/// score, its days planned.
pub fn register(mut engine: Engine, apps: &[Application]) -> Engine {
    for app in apps {
        engine = match app {
            Application::Upsert => {
                let pipeline = UpsertPipeline::new(engine.store.clone());
                engine.pipeline(upsert::JOB_NAMES, pipeline)
            }
            Application::Score => {
                let pipeline = ScorePipeline::new(engine.store.clone(), engine.settings.timezone);
                engine
                    .pipeline(tidegate_score::JOB_NAMES, pipeline)
                    .daily(Score)
            }
        };
    }
    engine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: Option<&str>) -> Result<Vec<Application>, Invalid> {
        read_apps(|name| {
            (name == "TIDEGATE_APPS")
                .then(|| value.map(str::to_owned))
                .flatten()
        })
        .map(|(apps, _, _)| apps)
    }

    #[test]
    fn by_default_only_the_generic_upsert_runs_and_names_are_checked() {
        assert_eq!(read(None), Ok(vec![Application::Upsert]));
        assert_eq!(
            read(Some("score, upsert,score")),
            Ok(vec![Application::Score, Application::Upsert])
        );
        assert_eq!(read(Some("none")), Ok(vec![]));
        let err = read(Some("upsert,scores")).expect_err("unknown");
        assert_eq!(err.var, "TIDEGATE_APPS");
        assert!(
            err.message.contains("no application \"scores\"") && err.message.contains("accepted"),
            "{}",
            err.message
        );
    }
}
