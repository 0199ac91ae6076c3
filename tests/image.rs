//! The container image without a Docker engine: exactly what the Dockerfile copies (less what
//! `.dockerignore` leaves out) compiles, in an empty directory, with `--locked`, as its `RUN`
//! builds it (the binary and a program of one's own); and that program, `examples/
//! own_pipeline.rs`, serves like `tidegate run`, so the image's HEALTHCHECK (`tidegate health`)
//! answers for it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::scenario::{self, free_port};
use serde_json::json;
use tidegate::queue::{NewJob, Queue, connect};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The build stage's `COPY <source>... <destination>` instructions.
fn copies(dockerfile: &str) -> Vec<(Vec<String>, String)> {
    let stage = dockerfile
        .split("\nFROM ")
        .nth(1)
        .expect("a build stage after the first FROM");
    stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .map(|l| {
            let mut words: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            let destination = words.pop().expect("a destination");
            (words, destination)
        })
        .collect()
}

/// The `cargo build ...` commands of the build stage's `RUN`, as cargo's arguments, with
/// `$EXAMPLE` as `example`.
fn builds(dockerfile: &str, example: &str) -> Vec<Vec<String>> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .match_indices("cargo build ")
        .map(|(at, _)| {
            let rest = &joined[at + "cargo ".len()..];
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            rest[..end]
                .split_whitespace()
                .map(|w| w.replace("\"$EXAMPLE\"", example))
                .collect()
        })
        .collect()
}

/// Copies `from` to `to` (a file or a directory), leaving out what `.dockerignore` names.
fn copy(from: &Path, to: &Path, ignored: &[PathBuf]) {
    if ignored.iter().any(|i| from.starts_with(i)) {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("dir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            copy(&entry.path(), &to.join(entry.file_name()), ignored);
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from:?}: {e}"));
    }
}

#[test]
fn exactly_what_the_dockerfile_copies_compiles_locked_in_an_empty_directory() {
    let dockerfile =
        std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let ignored: Vec<PathBuf> = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore"))
        .expect(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Path::new(ROOT).join(l))
        .collect();
    let context = std::env::temp_dir().join(common::unique("tidegate_image"));
    std::fs::create_dir_all(&context).expect("context");
    for (sources, destination) in copies(&dockerfile) {
        for source in sources {
            let to = if destination.ends_with('/') {
                context
                    .join(destination.trim_start_matches("./"))
                    .join(&source)
            } else {
                context.join(destination.trim_start_matches("./"))
            };
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).expect("parent");
            }
            copy(&Path::new(ROOT).join(&source), &to, &ignored);
        }
    }
    let commands = builds(&dockerfile, "own_pipeline");
    assert_eq!(
        commands.len(),
        2,
        "the binary's and the example's: {commands:?}"
    );
    // The test build's own target directory, whose dependencies `cargo clippy` has checked:
    // `check` writes no binary, so nothing the other tests run is replaced.
    let target = Path::new(env!("CARGO_BIN_EXE_tidegate"))
        .ancestors()
        .nth(2)
        .expect("the target directory")
        .to_owned();
    for command in commands {
        let mut args: Vec<String> = command.into_iter().filter(|a| a != "--release").collect();
        assert_eq!(args[0], "build");
        assert!(args.contains(&"--locked".to_owned()), "{args:?}");
        args[0] = "check".into();
        let out = Command::new(env!("CARGO"))
            .args(&args)
            .arg("--offline")
            .current_dir(&context)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "cargo {args:?} in what the Dockerfile copies:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&context);
}

/// `tidegate health` (or `--ready`) for a process on `port`, as the image's HEALTHCHECK runs it
/// (the image listens on every interface).
fn health(port: u16, ready: bool) -> bool {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    command
        .arg("health")
        .env("TIDEGATE_HTTP_ADDR", format!("0.0.0.0:{port}"))
        .env("TIDEGATE_LOG", "error");
    if ready {
        command.arg("--ready");
    }
    command.output().is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn a_program_of_ones_own_serves_like_tidegate_run_and_answers_the_health_check() {
    let example = Path::new(env!("CARGO_BIN_EXE_tidegate"))
        .parent()
        .expect("the binaries' directory")
        .join("examples/own_pipeline");
    assert!(
        example.is_file(),
        "cargo test builds the examples: {example:?}"
    );
    let queue = common::unique("visits");
    let database = common::unique("tidegate_visits");
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue,
    );
    let jobs: Vec<NewJob> = (0..6)
        .map(|hour| {
            NewJob::new(
                "visit",
                json!({ "page": "/pricing", "day": "2026-11-24", "hour": hour, "visits": 10 + hour }),
            )
        })
        .collect();
    q.add_bulk(&jobs).await.expect("add");
    let port = free_port();
    let mut command = scenario::command(
        &queue,
        &database,
        &common::redis_url(),
        &common::mongodb_uri(),
    );
    command
        .env("TIDEGATE_HTTP_ADDR", format!("0.0.0.0:{port}"))
        .env("TIDEGATE_BUDGET", common::unique("visits"));
    // The same variables, its own program: `run` is the only argument `scenario` gives.
    let process = scenario::start(
        Command::new(&example)
            .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdout(std::process::Stdio::null()),
    );
    common::eventually(
        "the visits to be written",
        Duration::from_secs(60),
        || async { q.counts().await.ok().filter(|c| c.completed == 6).map(drop) },
    )
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("its /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "tidegate_jobs_completed_total{{queue=\"{queue}\"}} 6"
        )),
        "{metrics}"
    );
    assert!(health(port, false) && health(port, true));
    drop(process);
    assert!(!health(port, false), "nothing answers once it is gone");
    let store =
        tidegate::store::Store::connect(&common::mongodb_uri(), &database, Default::default())
            .await
            .expect("mongo");
    let day = store
        .database()
        .collection::<mongodb::bson::Document>("page_days")
        .find_one(mongodb::bson::doc! {})
        .await
        .expect("find")
        .expect("the page's day");
    assert_eq!(day.get_document("hours").expect("hours").len(), 6);
    store.database().drop().await.expect("drop");
}
