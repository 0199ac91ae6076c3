//! The layers of ARCHITECTURE.md, checked on the engine's source (`engine/src/`): every path
//! that names a module of the crate (`crate::`, in `use` items and in code, macros included,
//! groups at any depth; `super::` and `self::` resolved from where they stand) is an edge from
//! the module whose file names it to the module it names. Test code (`#[cfg(test)]` modules)
//! may name anything of its crate and is left out. The layers are read from ARCHITECTURE.md's
//! "Import rules" section, so the page and the check cannot drift apart: a module names only
//! modules of the layers above its own, none of its own layer; every module of a scope has a
//! layer, and a name that is no module fails the check, as does a line it cannot read.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::source::{block_end, code_only, rust_files};
use std::path::Path;

/// Module path → the module paths it names, e.g. `control::pacer` → {`queue::keys`, ...}.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// `engine/src/control/pacer.rs` → `control::pacer`; `queue/mod.rs` → `queue`; `lib.rs` → ``.
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

/// `code` with every `#[cfg(test)]` item's body cut out: an inline `mod tests { ... }` or a
/// test-only function; a `#[cfg(test)] mod x;` file is left out by [`test_modules`].
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` (a declaration) or at the brace closing its body.
        let (Some(semi), open) = (rest.find(';'), rest.find('{')) else {
            break;
        };
        match open.filter(|&open| open < semi) {
            None => rest = &rest[semi + 1..],
            Some(open) => rest = &rest[block_end(rest, open).unwrap_or(rest.len())..],
        }
    }
    out.push_str(rest);
    out
}

/// The modules declared test-only by `#[cfg(test)] mod x;` in `code` of module `module`.
fn test_modules(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        rest = &rest[at + "#[cfg(test)]".len()..];
        let item = rest.trim_start();
        if let Some(decl) = item.strip_prefix("mod ")
            && let Some(name) = decl.split(';').next().filter(|n| !n.contains('{'))
        {
            out.push(join(module, name.trim()));
        }
    }
    out
}

fn join(module: &str, name: &str) -> String {
    if module.is_empty() {
        name.to_owned()
    } else {
        format!("{module}::{name}")
    }
}

/// The parent of `module` (`control::budget` → `control`; a top-level module → the crate).
fn parent(module: &str) -> String {
    module.rsplit_once("::").map_or("", |(p, _)| p).to_owned()
}

/// The full paths of one use tree: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut branches, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                branches.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    branches.push(&inner[start..]);
    branches
        .into_iter()
        .filter(|b| !b.trim().is_empty())
        .flat_map(expand)
        .map(|path| match (prefix.is_empty(), path.as_str()) {
            (true, _) => path,
            (false, "self") => prefix.to_owned(),
            (false, _) => format!("{prefix}::{path}"),
        })
        .collect()
}

/// The use tree or path starting at `text`: up to the end of its braces, or of its last
/// path segment.
fn tree_at(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return &text[..=i];
                }
            }
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => {
                return &text[..i];
            }
            _ => {}
        }
    }
    text
}

/// The module paths the code of `module` names: `crate::a::b::Item` names `a::b` (the longest
/// known module the path starts with), `super::x` the parent's `x`, `self::x` its own `x`.
fn named_modules(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (root, base) in [
        ("crate::", String::new()),
        ("super::", parent(module)),
        ("self::", module.to_owned()),
    ] {
        for (at, _) in code.match_indices(root) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | ':')) {
                // `$crate::`, `other_crate::`, `xsuper::`; `super::super::` is read from its
                // first `super`.
                continue;
            }
            let mut path_start = &code[at..];
            // Each further `super::` climbs one more level.
            let mut base = base.clone();
            path_start = &path_start[root.len()..];
            while let Some(more) = path_start.strip_prefix("super::") {
                base = parent(&base);
                path_start = more;
            }
            for path in expand(tree_at(path_start)) {
                let full = if path == "self" {
                    base.clone()
                } else {
                    join(&base, &path)
                };
                if let Some(m) = longest_module(&full, modules) {
                    named.insert(m);
                }
            }
        }
    }
    named
}

/// The longest known module that `path` starts with.
fn longest_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

fn crate_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let source = std::fs::read_to_string(f).expect("read source");
            (module_of(&src, f), code_only(&source))
        })
        .collect();
    let tests: Vec<String> = sources
        .iter()
        .flat_map(|(m, code)| test_modules(m, code))
        .collect();
    let modules: BTreeSet<String> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, code) in &sources {
        if tests.iter().any(|t| within(module, t)) {
            continue;
        }
        let named = named_modules(module, &without_tests(code), &modules)
            .into_iter()
            .filter(|m| !within(module, m) && !within(m, module))
            .collect();
        graph.insert(module.clone(), named);
    }
    graph
}

/// Whether `inner` is `outer` or inside it (`queue::keys` is within `queue`).
fn within(inner: &str, outer: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"))
}

/// The module of `scope`'s level that `module` is in: with scope `control`,
/// `control::budget::turns` is in `control::budget`; with the crate's scope, in `control`.
/// `None` outside the scope or for the scope itself.
fn at_level(module: &str, scope: &str) -> Option<String> {
    let rest = if scope.is_empty() {
        module
    } else {
        module.strip_prefix(scope)?.strip_prefix("::")?
    };
    let first = rest.split("::").next().filter(|s| !s.is_empty())?;
    Some(join(scope, first))
}

/// The layers of one scope (the crate's top-level modules, or one module's children), lowest
/// first.
#[derive(Debug, Clone)]
struct Layers {
    scope: String,
    layers: Vec<Vec<String>>,
}

fn layers() -> Vec<Layers> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    read_layers(&page)
}

/// The "Import rules" section's lists: a line `Layers of the engine:` or ``Layers of
/// `control`:`` opens a scope, and each following `- ` line is a layer of backticked module
/// names, lowest first. Any other `- ` line is an error: a rule the check cannot read.
fn read_layers(page: &str) -> Vec<Layers> {
    let section = page
        .split("\n## ")
        .find(|s| s.starts_with("Import rules"))
        .expect("ARCHITECTURE.md has an \"Import rules\" section");
    let names = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut out: Vec<Layers> = Vec::new();
    for line in section.lines() {
        if let Some(scope) = line.strip_prefix("Layers of ") {
            let scope = match names(scope).as_slice() {
                [] if scope.starts_with("the engine") => String::new(),
                [one] => one.clone(),
                _ => panic!("cannot read the scope of {line:?}"),
            };
            out.push(Layers {
                scope,
                layers: Vec::new(),
            });
        } else if let Some(layer) = line.strip_prefix("- ") {
            let layer = names(layer.split(':').next().unwrap_or(layer));
            let scope = out
                .last_mut()
                .unwrap_or_else(|| panic!("a layer before any `Layers of` line: {line:?}"));
            assert!(!layer.is_empty(), "cannot read the layer {line:?}");
            scope.layers.push(
                layer
                    .into_iter()
                    .map(|name| join(&scope.scope, &name))
                    .collect(),
            );
        }
    }
    assert!(!out.is_empty(), "the Import rules section names no layer");
    out
}

/// What is wrong with `graph` under `layers`: names that are no module, modules of a scope
/// with no layer, and edges that go up or sideways.
fn broken(graph: &Graph, layers: &[Layers]) -> Vec<String> {
    let mut out = Vec::new();
    for scope in layers {
        let level: BTreeSet<String> = graph
            .keys()
            .filter_map(|m| at_level(m, &scope.scope))
            .collect();
        let layer_of = |m: &str| scope.layers.iter().position(|l| l.iter().any(|n| n == m));
        for name in scope.layers.iter().flatten() {
            if !level.contains(name) {
                out.push(format!("the layers name `{name}`, which is no module"));
            }
        }
        for module in &level {
            if layer_of(module).is_none() {
                out.push(format!("`{module}` has no layer"));
            }
        }
        for (from, tos) in graph {
            let Some(a) = at_level(from, &scope.scope) else {
                continue;
            };
            for to in tos {
                let Some(b) = at_level(to, &scope.scope) else {
                    continue;
                };
                if a == b {
                    continue;
                }
                if let (Some(la), Some(lb)) = (layer_of(&a), layer_of(&b))
                    && lb >= la
                {
                    let way = if lb == la {
                        "its own layer"
                    } else {
                        "a layer above it"
                    };
                    out.push(format!("{from} names {to}: `{b}` is in {way} (of `{a}`)"));
                }
            }
        }
    }
    out
}

#[test]
fn the_modules_import_down_their_layers() {
    let graph = crate_graph();
    assert!(graph.len() > 20, "read too few modules: {graph:?}");
    let layers = layers();
    assert!(
        layers.iter().any(|l| l.scope == "control"),
        "control's inside has layers"
    );
    let broken = broken(&graph, &layers);
    assert!(broken.is_empty(), "layers broken:\n{}", broken.join("\n"));
}

/// The check can fail: an edge up, an edge sideways, a name that is no module, a module left
/// out, and a line it cannot read are each caught, on the real graph and layers.
#[test]
fn each_kind_of_break_fails_the_check() {
    let layers = layers();
    let graph = crate_graph();
    let top = &layers[0];
    let (low, high) = (&top.layers[0][0], &top.layers[top.layers.len() - 1][0]);
    let mut up = graph.clone();
    up.entry(low.clone()).or_default().insert(high.clone());
    assert_eq!(broken(&up, &layers).len(), 1, "an edge up");
    let side = top
        .layers
        .iter()
        .find(|l| l.len() > 1)
        .expect("a wide layer");
    let mut sideways = graph.clone();
    sideways
        .entry(side[0].clone())
        .or_default()
        .insert(side[1].clone());
    assert_eq!(broken(&sideways, &layers).len(), 1, "an edge sideways");
    let control = layers
        .iter()
        .find(|l| l.scope == "control")
        .expect("control");
    let (inner_low, inner_high) = (&control.layers[0][0], &control.layers[1][0]);
    let mut inside = graph.clone();
    inside
        .entry(inner_low.clone())
        .or_default()
        .insert(inner_high.clone());
    assert_eq!(
        broken(&inside, &layers).len(),
        1,
        "an edge up inside control"
    );
    let mut renamed = layers.clone();
    renamed[0].layers[0].push("scores".into());
    assert_eq!(
        broken(&graph, &renamed).len(),
        1,
        "a name that is no module"
    );
    let mut missing = layers.clone();
    missing[0].layers[0].remove(0);
    assert!(
        !broken(&graph, &missing).is_empty(),
        "a module with no layer"
    );
    let unreadable = std::panic::catch_unwind(|| {
        read_layers("## Import rules\nLayers of the engine:\n- queue, store\n")
    });
    assert!(unreadable.is_err(), "a layer line with no module name");
}

#[test]
fn paths_are_read_in_every_form_but_not_in_comments_strings_or_tests() {
    let modules: BTreeSet<String> = [
        "queue",
        "queue::keys",
        "store",
        "runs",
        "telemetry",
        "control",
        "control::budget",
        "control::law",
        "control::budget::turns",
        "http",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let source = r##"
        use crate::queue::keys::{Keys, BudgetKeys};
        use crate::{store::{Store, write::X}, runs, control::{law, budget::{self}}};
        use super::turns::Turns;
        // use crate::telemetry;
        let url = "crate::http"; let n = crate::queue::now_ms(); let c = '{';
        let json = r#"{"a": "crate::http", "b": "}"#; let q = '\'';
        /* crate::telemetry::names */
        macro_rules! m { () => { $crate::telemetry::x() } }
        #[cfg(test)]
        mod tests { use crate::http::Server; }
    "##;
    let code = without_tests(&code_only(source));
    let named: Vec<String> = named_modules("control::budget::tick", &code, &modules)
        .into_iter()
        .collect();
    assert_eq!(
        named,
        [
            "control::budget",
            "control::budget::turns",
            "control::law",
            "queue",
            "queue::keys",
            "runs",
            "store"
        ]
    );
    let climbing = named_modules(
        "control::budget::turns",
        "super::super::law::slots()",
        &modules,
    );
    assert_eq!(climbing.into_iter().collect::<Vec<_>>(), ["control::law"]);
    assert_eq!(
        test_modules("control::controller", "#[cfg(test)]\nmod scenarios;"),
        ["control::controller::scenarios"]
    );
}
