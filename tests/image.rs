//! The container image without a Docker engine: exactly what the Dockerfile copies (less what
//! `.dockerignore` leaves out) compiles, in an empty directory, with `--locked`, as its `RUN`
//! builds it (the binary and a program of one's own, `examples/visits`, whose own test serves
//! it on the real services).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

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
    let commands = builds(&dockerfile, "visits");
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
