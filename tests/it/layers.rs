//! The rooms of `src/` depend on each other one way: this reads every
//! `crate::` path in the sources, builds the graph between top-level
//! modules (`src/api/*.rs` is `api`, `src/service.rs` is `service`), and
//! fails on any cycle, naming the imports that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One import: the file and line it is on.
type Evidence = Vec<String>;
/// from module -> to module -> where.
type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules: `src/x.rs` and `src/x/`, but not lib.rs or main.rs.
fn top_modules() -> BTreeSet<String> {
    std::fs::read_dir(src_dir())
        .expect("read src")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_stem()?.to_string_lossy().into_owned();
            let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            (is_module && name != "lib" && name != "main").then_some(name)
        })
        .collect()
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first names after `crate::` in `rest`: one, or each of a `{…}` group.
fn names_after_crate(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest).to_string()];
    };
    let mut names = Vec::new();
    let mut depth = 0;
    let mut start_of_item = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start_of_item = true,
            c if start_of_item && !c.is_whitespace() => {
                start_of_item = false;
                names.push(ident(&group[i..]).to_string());
            }
            _ => {}
        }
    }
    names
}

/// Drops `//` comments (doc comments included), keeping line breaks.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A URL in a string ("http://") is not a comment.
            Some(i) if !l[..i].ends_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> Graph {
    let src = src_dir();
    let modules = top_modules();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let from = Path::new(first.as_os_str())
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if !modules.contains(&from) {
            continue;
        }
        let text = without_comments(&std::fs::read_to_string(&file).expect("read source"));
        // Line by line would miss a `use crate::{` group spread over lines.
        let mut at = 0;
        while let Some(i) = text[at..].find("crate::") {
            let pos = at + i;
            at = pos + "crate::".len();
            let line = text[..pos].matches('\n').count() + 1;
            for to in names_after_crate(&text[at..]) {
                if to != from && modules.contains(&to) {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .push(format!("{}:{line}", rel.display()));
                }
            }
        }
    }
    graph
}

/// Strongly connected groups of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                s.groups.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.groups
}

#[test]
fn the_graph_sees_the_imports_it_must() {
    // A reader that found nothing would pass the cycle test below for the
    // wrong reason: these imports are the spine of the layering.
    let g = graph();
    for (from, to) in [
        ("cli", "client"),
        ("api", "service"),
        ("service", "reconcile"),
        ("reconcile", "store"),
        ("reconcile", "supervise"),
    ] {
        assert!(
            g.get(from).is_some_and(|m| m.contains_key(to)),
            "{from} -> {to} not seen; the graph: {g:?}"
        );
    }
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = graph();
    let groups = cycles(&g);
    let mut report = String::new();
    for group in &groups {
        report += &format!(
            "\ncycle among {}:\n",
            group.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for from in group {
            for (to, places) in g.get(from).into_iter().flatten() {
                if group.contains(to) {
                    report += &format!("  {from} -> {to}  ({})\n", places.join(", "));
                }
            }
        }
    }
    assert!(groups.is_empty(), "import cycles in src/:{report}");
}

#[test]
fn lower_rooms_never_import_higher_ones() {
    // The layers, top to bottom (ARCHITECTURE.md): a module may import
    // only modules on a lower line.
    let g = graph();
    let forbidden: &[(&str, &[&str])] = &[
        ("role", &["cli", "daemon", "api", "service"]),
        ("service", &["cli", "daemon", "api", "client"]),
        (
            "reconcile",
            &["cli", "daemon", "api", "client", "service", "role"],
        ),
        (
            "store",
            &[
                "cli",
                "daemon",
                "api",
                "client",
                "service",
                "role",
                "reconcile",
                "supervise",
            ],
        ),
        (
            "supervise",
            &[
                "cli",
                "daemon",
                "api",
                "client",
                "service",
                "role",
                "reconcile",
                "store",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (from, higher) in forbidden {
        for to in *higher {
            if let Some(places) = g.get(*from).and_then(|m| m.get(*to)) {
                wrong.push(format!("{from} -> {to} ({})", places.join(", ")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that go up a layer:\n{}",
        wrong.join("\n")
    );
}
