//! No test passes for having done nothing: every test function of the workspace (`#[test]`,
//! `#[tokio::test]`, in the engine, the score, the command, the example and `tests/`) checks
//! something: an `assert*!`, a `panic!` or an `unreachable!`, itself or through a function it
//! calls (by name, not as a method) of its own file or of `tests/common/` that does. An
//! `.expect(..)` does not count: most are a setup step's (a connection, a file), which a test
//! that checks nothing has as well.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::source::{block_end, code_only, rust_files};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What counts as checking something.
const CHECKS: &[&str] = &["assert", "panic!", "unreachable!"];

/// The body of the item whose `{` is the first at or after `from`, braces balanced.
fn body_at(code: &str, from: usize) -> Option<&str> {
    let open = from + code[from..].find('{')?;
    Some(&code[open..block_end(code, open)?])
}

/// Every `fn name` of `code` with its body.
fn functions(code: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("fn ") {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // A declaration without a body (a trait's) ends at `;` before any `{`.
        let rest = &code[at..];
        if rest
            .find(';')
            .is_some_and(|semi| rest.find('{').is_none_or(|open| semi < open))
        {
            continue;
        }
        if let Some(body) = body_at(code, at) {
            out.push((name, body));
        }
    }
    out
}

/// The test functions of `code`: those right after a `#[test]` or `#[tokio::test...]`.
fn tests(code: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for marker in ["#[test]", "#[tokio::test"] {
        for (at, _) in code.match_indices(marker) {
            let after = &code[at..];
            let Some(fn_at) = after.find("fn ") else {
                continue;
            };
            if let Some(first) = functions(&code[at + fn_at..]).into_iter().next() {
                out.push(first);
            }
        }
    }
    out
}

/// Whether `body` checks something, itself or through the functions of `helpers` it calls
/// (followed as deep as they go).
fn checks(body: &str, helpers: &BTreeMap<String, Vec<&str>>, seen: &mut Vec<String>) -> bool {
    if CHECKS.iter().any(|c| body.contains(c)) {
        return true;
    }
    helpers.iter().any(|(name, bodies)| {
        // A call of the helper itself: `name(`, or through the tests' own modules
        // (`common::name(`); not a method or another type's function of the same name.
        let called = body.match_indices(&format!("{name}(")).any(|(at, _)| {
            let before = &body[..at];
            before.ends_with("common::")
                || before.ends_with("scenario::")
                || !before
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':'))
        });
        if !called || seen.contains(name) {
            return false;
        }
        seen.push(name.clone());
        bodies.iter().any(|b| checks(b, helpers, seen))
    })
}

/// The test functions of `files` that check nothing, as `file: name`.
fn idle_tests(files: &[PathBuf]) -> Vec<String> {
    let common: Vec<String> = {
        let mut found = Vec::new();
        rust_files(&Path::new(ROOT).join("tests/common"), &mut found);
        found
            .iter()
            .map(|f| code_only(&std::fs::read_to_string(f).expect("read")))
            .collect()
    };
    let mut idle = Vec::new();
    for file in files {
        let code = code_only(&std::fs::read_to_string(file).expect("read"));
        let mut helpers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, body) in common
            .iter()
            .flat_map(|c| functions(c))
            .chain(functions(&code))
        {
            helpers.entry(name).or_default().push(body);
        }
        for (name, body) in tests(&code) {
            if !checks(body, &helpers, &mut Vec::new()) {
                idle.push(format!("{}: {name}", file.display()));
            }
        }
    }
    idle
}

fn workspace_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["engine", "apps", "src", "tests", "examples", "benches"] {
        rust_files(&Path::new(ROOT).join(dir), &mut files);
    }
    files
}

#[test]
fn every_test_checks_something() {
    let files = workspace_files();
    let counted: usize = files
        .iter()
        .map(|f| tests(&code_only(&std::fs::read_to_string(f).expect("read"))).len())
        .sum();
    assert!(counted > 250, "read too few tests: {counted}");
    let idle = idle_tests(&files);
    assert!(
        idle.is_empty(),
        "tests that check nothing:\n{}",
        idle.join("\n")
    );
}

/// The check can fail: a test that only awaits, one whose helper only awaits, and one that
/// only sets up (`.expect`) are found; one whose helper asserts is not.
#[test]
fn a_test_that_checks_nothing_is_found() {
    let dir = std::env::temp_dir().join(format!("tidegate_idle_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("idle.rs");
    std::fs::write(
        &file,
        r#"
        async fn only_awaits() { tokio::task::yield_now().await; }
        fn really_checks(n: u32) { assert_eq!(n, 1); }
        #[tokio::test]
        async fn awaits_and_nothing_else() { only_awaits().await; }
        #[test]
        fn checks_through_a_helper() { really_checks(1) }
        #[tokio::test(flavor = "multi_thread")]
        async fn does_nothing() {}
        #[test]
        fn only_sets_up() { std::fs::read("x").expect("read"); }
        "#,
    )
    .expect("write");
    let idle = idle_tests(std::slice::from_ref(&file));
    let _ = std::fs::remove_dir_all(&dir);
    let mut names: Vec<&str> = idle.iter().filter_map(|l| l.rsplit(": ").next()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["awaits_and_nothing_else", "does_nothing", "only_sets_up"]
    );
}
