//! The daemon's modules form layers: no module reaches, through `crate::` paths, a module
//! that reaches back to it (docs/ARCHITECTURE.md, "Modules"). A cycle is reported with
//! the modules it goes through.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and the top-level modules it names as `crate::x`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let top = relative.iter().next().unwrap().to_string_lossy();
        let module = top.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue; // the roots: the library declares every module, main.rs runs it
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `use crate::{a, b::C};`
                Some(group) => group[..group.find('}').unwrap()]
                    .split(',')
                    .map(|item| item.trim().split("::").next().unwrap())
                    .collect(),
                None => vec![rest
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap()],
            };
            deps.extend(
                names
                    .into_iter()
                    .filter(|name| !name.is_empty() && *name != module)
                    .map(str::to_string),
            );
        }
    }
    graph
}

/// A path from `from` back to `to`, if there is one.
fn path_back(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(from)? {
        if next == to {
            return Some(vec![from.to_string(), to.to_string()]);
        }
        if seen.insert(next.clone()) {
            if let Some(mut path) = path_back(graph, next, to, seen) {
                path.insert(0, from.to_string());
                return Some(path);
            }
        }
    }
    None
}

#[test]
fn no_module_reaches_back_to_itself() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 20, "read the modules: {:?}", graph.keys());
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| path_back(&graph, module, module, &mut BTreeSet::new()))
        .map(|path| path.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_wsgi_module_knows_no_protocol() {
    // `wsgi/` is PEP 3333 only: each protocol frames its own responses and drives the app
    // through it (docs/ARCHITECTURE.md, "Modules").
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("wsgi"), "{:?}", graph.keys());
    for protocol in ["uwsgi", "http"] {
        let path = path_back(&graph, "wsgi", protocol, &mut BTreeSet::new());
        assert_eq!(path, None, "wsgi reaches {protocol}");
    }
}
