//! The layering ARCHITECTURE.md states, checked on the source: in the
//! controller arrows point down only (face → reconcile → io; nothing below
//! imports a face, io never imports a reconcile), API handles are built only
//! in io/ and the files named in [`API_OUTSIDE_IO`] (each with its reason),
//! and in every crate of the workspace no two files import each other,
//! directly or in a circle.
//!
//! Read from the files' `crate::` and `super::` paths (braced lists
//! included), so a new import that breaks the layout fails `make unit` with
//! the offending file named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src dir") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `io/cache.rs` → `io::cache`; `face/admission/mod.rs` → `face::admission`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The code outside `#[cfg(test)] mod tests` (tests may reach anywhere).
fn product_code(text: &str) -> &str {
    // `mod tests {` inline; a `mod tests;` declaration (its file is read on
    // its own) cuts nothing.
    text.split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or(text)
}

/// Modules named by `crate::a::b` or `super::x` paths in `text`, resolved to
/// the longest known module.
fn imports(
    module: &str,
    is_mod_file: bool,
    text: &str,
    known: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        if !is_mod_file {
            p.pop();
        }
        p
    };
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            // `crate::{a, b::c}`: each item of the list is a path of its own.
            let items: Vec<&str> = match rest.strip_prefix('{') {
                Some(list) => list
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for item in items {
                let path: Vec<&str> = item
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty() && *s != "self")
                    .collect();
                let mut full: Vec<&str> = base.clone();
                full.extend(path);
                while !full.is_empty() {
                    let m = full.join("::");
                    if known.contains(&m) {
                        if m != module {
                            out.insert(m);
                        }
                        break;
                    }
                    full.pop();
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// The import graph of one crate's `src/` (binaries' mains left out: each is
/// a crate of its own).
fn graph_of(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = src.to_path_buf();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<(String, bool, PathBuf)> = files
        .iter()
        .map(|f| {
            let is_mod = f
                .file_name()
                .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
            (module_of(&src, f), is_mod, f.clone())
        })
        .collect();
    let known: BTreeSet<String> = modules.iter().map(|(m, _, _)| m.clone()).collect();
    modules
        .iter()
        .filter(|(m, _, _)| {
            !m.is_empty() && m != "main" && m != "fixtures" && !m.starts_with("bin")
        })
        .map(|(m, is_mod, f)| {
            let text = std::fs::read_to_string(f).expect("read source");
            let mut deps = imports(m, *is_mod, product_code(&text), &known);
            // A parent's `pub mod child;` is structure, not a use.
            deps.retain(|d| !d.starts_with(&format!("{m}::")) && !m.starts_with(&format!("{d}::")));
            deps.remove("");
            (m.clone(), deps)
        })
        .collect()
}

fn layer(m: &str) -> Option<u8> {
    match m.split("::").next() {
        Some("io") => Some(0),
        Some("reconcile") => Some(1),
        Some("face") => Some(2),
        _ => None, // wiring and shared: run, config, error
    }
}

#[test]
fn arrows_point_down_only() {
    let mut wrong = Vec::new();
    for (m, deps) in graph() {
        let Some(from) = layer(&m) else { continue };
        for d in deps {
            if layer(&d).is_some_and(|to| to > from) || d == "run" || d == "config" {
                wrong.push(format!("{m} imports {d}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

/// Every crate of the workspace, by its source directory.
const CRATES: &[&str] = &[
    "agent/src",
    "api/src",
    "core/src",
    "http/src",
    "controller/src",
    "plugin/src",
    "e2e/src",
];

/// Files outside io/ that build `Api` handles, and why the rule allows them.
/// io/ owns the connection, the caches and the one writer; everything that
/// writes as the leader hands its call to `io::writer` (leader gate,
/// `--write-timeout`, counters), but the call itself names its `Api` where
/// the decision is made, so the writer stays one generic function.
const API_OUTSIDE_IO: &[(&str, &str)] = &[
    (
        "reconcile/mod.rs",
        "the pod and PDB handles a reconcile hands the writer",
    ),
    (
        "reconcile/pdb.rs",
        "create/delete of our PDB, through the writer",
    ),
    ("reconcile/pod.rs", "the pod patch, through the writer"),
    (
        "reconcile/rollout.rs",
        "StatefulSet status and pod deletes, through the writer",
    ),
    (
        "reconcile/notices.rs",
        "the report status patch, through the writer",
    ),
    (
        "face/admission/record.rs",
        "interaction records: every replica writes them (not leader-gated), each under io::writer::timed",
    ),
    (
        "face/admission/eviction.rs",
        "EvictionBlocked events from every replica's webhook, under io::writer::timed",
    ),
    (
        "face/admission/mod.rs",
        "SelfSubjectReview: who the webhook is, once at start",
    ),
    (
        "face/admission/certs/mod.rs",
        "the certificate Secret and caBundle: every replica keeps its serving certificate",
    ),
    (
        "face/admission/certs/publish.rs",
        "caBundle into our two webhook configurations",
    ),
    ("face/admission/certs/store.rs", "the certificate Secret"),
    (
        "cleanup.rs",
        "the uninstall run, a process of its own with its own Lease take-over",
    ),
    (
        "cleanup_reports.rs",
        "the post-uninstall run: lists agent pods, deletes SessionReports, each under io::writer::timed",
    ),
];

#[test]
fn api_handles_are_built_in_io_or_the_named_files_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = BTreeSet::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("io/") || rel.starts_with("fixtures") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        let code = product_code(&text);
        if code.contains("Api::") || code.contains("Api<") {
            found.insert(rel);
        }
    }
    let allowed: BTreeSet<String> = API_OUTSIDE_IO.iter().map(|(f, _)| f.to_string()).collect();
    let new: Vec<&String> = found.difference(&allowed).collect();
    assert!(
        new.is_empty(),
        "Api handles outside io/ and not named in API_OUTSIDE_IO (move the call behind io, \
         or name the file with its reason): {new:?}"
    );
    let stale: Vec<&String> = allowed.difference(&found).collect();
    assert!(
        stale.is_empty(),
        "named in API_OUTSIDE_IO but no longer building Api handles: {stale:?}"
    );
}

/// The first import cycle of `g`, as the path around it.
fn cycle_in(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search for a back edge; the path names the circle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycle_in_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in CRATES {
        let src = root.join(krate);
        assert!(src.join("lib.rs").is_file(), "{krate} is a crate's source");
        let g = graph_of(&src);
        if let Some(cycle) = cycle_in(&g) {
            panic!("import cycle in {krate}: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("cli", vec!["drains", "output"]),
        ("drains", vec!["cli"]),
        ("output", vec![]),
    ]
    .into_iter()
    .map(|(m, d)| (m.to_string(), d.into_iter().map(String::from).collect()))
    .collect();
    let c = cycle_in(&g).expect("the cycle");
    assert_eq!(c, ["cli", "drains", "cli"]);
    let known: BTreeSet<String> = ["cli", "drains", "extend"].map(String::from).into();
    assert_eq!(
        imports("cli", false, "use crate::{drains, extend::x};", &known),
        ["drains", "extend"].map(String::from).into()
    );
}

#[test]
fn the_controller_has_no_import_cycle() {
    let g = graph();
    if let Some(cycle) = cycle_in(&g) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
    assert!(g.len() > 20, "the source was read: {} modules", g.len());
}
