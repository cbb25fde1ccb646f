//! The agent's folders are layers, and its files stay readable (at most
//! 900 lines each). The folders: a module imports from its own folder,
//! from folders below it, and from the crate's leaf modules (`config`,
//! `failpoints`, the helpers in `lib.rs`); never from a folder above it,
//! and two folders of one layer never import each other both ways.
//!
//! | layer | folders |
//! |---|---|
//! | 0 | `host` |
//! | 1 | `net` |
//! | 2 | `fd` |
//! | 3 | `capture`, `rebuild`, `postcopy` |
//! | 4 | `session` |
//! | 5 | `daemon` |

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

fn layer(folder: &str) -> Option<u32> {
    match folder {
        "host" => Some(0),
        "net" => Some(1),
        "fd" => Some(2),
        "capture" | "rebuild" | "postcopy" => Some(3),
        "session" => Some(4),
        "daemon" => Some(5),
        _ => None,
    }
}

/// Every `crate::FOLDER` a source file names outside comments and its
/// tests, including inside `use crate::{...}` groups.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let head = item.trim().split("::").next().unwrap_or("");
                    if !head.is_empty() {
                        out.insert(head.to_string());
                    }
                }
            } else {
                let head: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(head);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_it_or_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let from = first.to_string_lossy().trim_end_matches(".rs").to_string();
        let Some(from_layer) = layer(&from) else {
            continue;
        };
        for to in imports(&fs::read_to_string(f).unwrap()) {
            let Some(to_layer) = layer(&to) else {
                continue;
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to.clone());
            }
            if to_layer > from_layer {
                wrong.push(format!("{} imports {to}, a layer above", rel.display()));
            }
        }
    }
    for (a, outs) in &edges {
        for b in outs {
            if edges.get(b).is_some_and(|o| o.contains(a)) && a < b {
                wrong.push(format!("{a} and {b} import each other"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The check sees the imports it is about.
    assert!(edges["session"].contains("capture"));
    assert!(edges["rebuild"].contains("fd") && edges["capture"].contains("fd"));
}

#[test]
fn imports_are_read_from_code_and_groups_only() {
    let text = "use crate::{host::sys, net::peer};\n// crate::session\nfn f() { crate::capture::dump::x(); }\n#[cfg(test)]\nuse crate::daemon;";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["capture", "host", "net"]);
}

#[test]
fn no_source_file_is_over_900_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 900)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}
