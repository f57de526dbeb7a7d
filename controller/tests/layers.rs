//! The controller's layering, checked on its source: arrows point down only
//! (face → reconcile → io; nothing below imports a face, io never imports a
//! reconcile) and no two files import each other, directly or in a circle.
//!
//! Read from the files' `crate::` and `super::` paths, so a new import that
//! breaks the layout fails `make unit` with the offending file named.

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
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
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
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
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
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
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
        .filter(|(m, _, _)| !m.is_empty() && m != "main" && m != "fixtures")
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

#[test]
fn no_import_cycles() {
    let g = graph();
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
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
    assert!(g.len() > 20, "the source was read: {} modules", g.len());
}
