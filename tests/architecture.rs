//! The import rules of ARCHITECTURE.md, checked on the source: every `crate::` path in `src/`
//! (in `use` items and in code, macros included; comments left out) is an edge from the module
//! whose file names it to the module it names. The rules are read from ARCHITECTURE.md's
//! "Import rules" section, so the page and the check cannot drift apart: no circle among the
//! crate's modules, and each "`a` knows nothing of `b`, `c`" line (or "`a` and `b` know nothing
//! of ...") forbids those edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path → the module paths it names, e.g. `control::pacer` → {`queue::keys`, ...}.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// `src/control/pacer.rs` → `control::pacer`; `src/queue/mod.rs` → `queue`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments; string literals are kept (a `//` inside one is no comment).
fn without_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '/' if chars.peek() == Some(&'/') => {
                for rest in chars.by_ref() {
                    if rest == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for rest in chars.by_ref() {
                    if last == '*' && rest == '/' {
                        break;
                    }
                    last = rest;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The module paths a source names with `crate::`: `crate::a::b::Item` names `a::b` (the path
/// up to its first segment that is not a module, i.e. not lowercase), and each branch of
/// `crate::{a, b::c}` is read the same way.
fn named_modules(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let source = without_comments(source);
    let mut named = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '$')) {
            continue; // `$crate::`, `other_crate::`, a path that only ends in `crate`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for branch in group[..end].split(',') {
                named.extend(longest_module(branch.trim(), modules));
            }
        } else {
            named.extend(longest_module(rest, modules));
        }
    }
    named
}

/// The longest known module that `path` (text starting at a module name) starts with.
fn longest_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(path.len());
    let segments: Vec<&str> = path[..end].split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

fn crate_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // main.rs is the binary's own crate: it reaches the library as `tidegate::`.
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        let source = std::fs::read_to_string(file).expect("read source");
        let named = named_modules(&source, &modules)
            .into_iter()
            .filter(|m| !within(&module, m) && !within(m, &module))
            .collect();
        graph.insert(module, named);
    }
    graph
}

/// Whether `inner` is `outer` or inside it (`queue::keys` is within `queue`).
fn within(inner: &str, outer: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"))
}

/// The graph between top-level modules (`control::pacer` → `queue::keys` is `control` →
/// `queue`), where the circles that matter live.
fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
    let mut out = Graph::new();
    for (from, tos) in graph {
        let entry = out.entry(top(from)).or_default();
        for to in tos {
            if top(to) != top(from) {
                entry.insert(top(to));
            }
        }
    }
    out
}

/// One circle of `graph`, if it has any: the modules in order, the first repeated at the end.
fn a_circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// One "`a` knows nothing of `b`, `c`" line of ARCHITECTURE.md.
#[derive(Debug)]
struct Rule {
    subject: String,
    forbidden: Vec<String>,
}

fn rules() -> Vec<Rule> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let section = page
        .split("\n## ")
        .find(|s| s.starts_with("Import rules"))
        .expect("ARCHITECTURE.md has an \"Import rules\" section");
    let mut rules = Vec::new();
    for line in section.lines().filter_map(|l| l.strip_prefix("- ")) {
        let Some((subject, forbidden)) = line
            .split_once(" knows nothing of ")
            .or_else(|| line.split_once(" know nothing of "))
        else {
            continue;
        };
        let names = |text: &str| -> Vec<String> {
            text.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let subjects = names(subject);
        let forbidden = names(forbidden.split('(').next().unwrap_or(forbidden));
        assert!(
            !subjects.is_empty() && !forbidden.is_empty(),
            "cannot read the rule {line:?}"
        );
        for subject in subjects {
            rules.push(Rule {
                subject,
                forbidden: forbidden.clone(),
            });
        }
    }
    assert!(!rules.is_empty(), "the Import rules section states no rule");
    rules
}

/// The edges of `graph` that break a rule, as "`from` names `to` (rule: ...)".
fn broken(graph: &Graph, rules: &[Rule]) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in graph {
        for rule in rules.iter().filter(|r| within(from, &r.subject)) {
            for to in tos {
                if let Some(f) = rule.forbidden.iter().find(|f| within(to, f)) {
                    out.push(format!(
                        "{from} names {to}: `{}` knows nothing of `{f}`",
                        rule.subject
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_modules_import_in_one_direction() {
    let graph = crate_graph();
    assert!(graph.len() > 20, "read too few modules: {graph:?}");
    if let Some(circle) = a_circle(&top_level(&graph)) {
        panic!("the modules import in a circle: {}", circle.join(" → "));
    }
    let broken = broken(&graph, &rules());
    assert!(broken.is_empty(), "rules broken:\n{}", broken.join("\n"));
}

/// The check can fail: one forbidden `use` or one edge that closes a circle, added to the real
/// graph, is caught.
#[test]
fn a_forbidden_use_fails_the_check() {
    let rules = rules();
    let mut graph = crate_graph();
    let rule = &rules[0];
    let from = graph
        .keys()
        .find(|m| within(m, &rule.subject))
        .expect("the rule's subject is a module")
        .clone();
    graph
        .get_mut(&from)
        .expect("module")
        .insert(rule.forbidden[0].clone());
    assert_eq!(broken(&graph, &rules).len(), 1);

    let mut graph = crate_graph();
    let (a, b) = ("queue".to_owned(), "worker".to_owned());
    graph.entry(a.clone()).or_default().insert(b.clone());
    graph.entry(b).or_default().insert(a);
    assert!(a_circle(&top_level(&graph)).is_some());
}

#[test]
fn paths_are_read_from_use_items_groups_and_code_but_not_comments() {
    let modules: BTreeSet<String> = ["queue", "queue::keys", "store", "runs", "telemetry"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let source = r#"
        use crate::queue::keys::{Keys, BudgetKeys};
        use crate::{store::Store, runs};
        // use crate::telemetry;
        let url = "http://x"; let n = crate::queue::now_ms();
        /* crate::telemetry::names */
        macro_rules! m { () => { $crate::telemetry::x() } }
    "#;
    let named: Vec<String> = named_modules(source, &modules).into_iter().collect();
    assert_eq!(named, ["queue", "queue::keys", "runs", "store"]);
}
