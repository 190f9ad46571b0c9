//! The layering of ARCHITECTURE.md, read from the code: every `crate::`
//! path in `src/` (comments and `#[cfg(test)]` parts aside) points to the
//! module's own layer or one below, there is no cycle between modules, and
//! the protocol core has no sockets, threads, clock or files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom up.
const LAYERS: [&str; 7] = [
    "support",
    "protocol",
    "policy",
    "integrity",
    "machine",
    "runtime",
    "app",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `layer` or `layer/module` for a file under `src/`; `None` for the crate
/// root, binaries and test files.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix("src").ok()?;
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
    match parts.as_slice() {
        ["machine.rs"] => Some("machine".into()),
        ["machine", _] | ["bin", _] | ["lib.rs"] => None,
        [layer, "mod.rs"] => Some(layer.to_string()),
        [layer, file] => Some(format!("{layer}/{}", file.trim_end_matches(".rs"))),
        [layer, module, ..] => Some(format!("{layer}/{module}")),
        _ => None,
    }
}

/// Modules each module's code names, as `layer/module` (or `machine`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let Some(me) = module_of(&file) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let mut uses = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let path: Vec<&str> = text[at + 7..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap()
                .split("::")
                .collect();
            let target = match path.as_slice() {
                ["machine", ..] => "machine".to_string(),
                [layer, module, ..] if module.starts_with(|c: char| c.is_lowercase()) => {
                    format!("{layer}/{module}")
                }
                [layer, ..] => layer.to_string(),
                [] => continue,
            };
            if target != me {
                uses.insert(target);
            }
        }
        graph.insert(me, uses);
    }
    graph
}

fn layer(module: &str) -> usize {
    let name = module.split('/').next().unwrap();
    LAYERS
        .iter()
        .position(|l| *l == name)
        .unwrap_or_else(|| panic!("{module} is in no layer of ARCHITECTURE.md"))
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let graph = imports();
    assert!(graph.len() > 30, "the modules were found: {graph:?}");
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |t| (from, t)))
        .filter(|(from, to)| layer(to) > layer(from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(upward.is_empty(), "imports pointing up: {upward:?}");
}

#[test]
fn no_two_modules_import_each_other_even_indirectly() {
    let graph = imports();
    for (start, direct) in &graph {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = direct.iter().collect();
        while let Some(m) = todo.pop() {
            assert!(m != start, "{start} imports itself through {seen:?}");
            if seen.insert(m.clone()) {
                todo.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
}

#[test]
fn the_protocol_core_does_no_io() {
    let text = code(&std::fs::read_to_string("src/machine.rs").unwrap());
    for banned in [
        "std::net",
        "std::thread",
        "std::fs",
        "Instant::now",
        "SystemTime",
        "TcpStream",
        "crossbeam",
        "crate::runtime",
    ] {
        assert!(!text.contains(banned), "src/machine.rs uses {banned}");
    }
}
