//! The module layering of ARCHITECTURE.md ("Module map"), held by a test:
//! each top-level module of `src/` names (`crate::x`) only modules listed
//! before it, so the top-level import graph has no cycles. The order is
//! read from ARCHITECTURE.md itself, so the map and the code cannot drift
//! apart unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules in the order ARCHITECTURE.md's module map lists
/// them: the first backticked name of each table row, `lib.rs` and
/// `main.rs` aside.
fn documented_order(root: &Path) -> Vec<String> {
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = map
        .split("## Module map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a module map section");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .map(|name| name.trim_end_matches('/').to_owned())
        .filter(|name| name != "lib.rs" && name != "main.rs")
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable src/") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file, less its `#[cfg(test)]` module (tests may reach
/// anywhere) and its comments (docs may name anything).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which top-level modules a piece of code names: `crate::x` paths and
/// `crate::{x, y::z}` groups.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let group: Vec<&str> = match rest.strip_prefix('{') {
            Some(inner) => inner
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for item in group {
            let name: String = item
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn each_top_level_module_names_only_those_listed_before_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = documented_order(root);
    assert!(order.len() >= 10, "the module map lists {order:?}");
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs").to_owned())
            .expect("a name");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(&own) = rank.get(top.as_str()) else {
            wrong.push(format!("{top} is not in ARCHITECTURE.md's module map"));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).expect("a readable file"));
        for name in named_modules(&code) {
            if name == top {
                continue;
            }
            match rank.get(name.as_str()) {
                Some(&theirs) if theirs < own => {}
                Some(_) => wrong.push(format!(
                    "{} names `crate::{name}`, which the map lists after `{top}`",
                    relative.display()
                )),
                // Items of the crate root (`crate::StartError`) are not modules.
                None if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => {
                    wrong.push(format!(
                        "{} names `crate::{name}`, which the map does not list",
                        relative.display()
                    ))
                }
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_reader_sees_paths_and_groups() {
    let code = "use crate::body::{self, Body};\nuse crate::{error, facade::x};\nlet a = crate::telemetry::m();";
    let names: Vec<String> = named_modules(code).into_iter().collect();
    assert_eq!(names, ["body", "error", "facade", "telemetry"]);
}
