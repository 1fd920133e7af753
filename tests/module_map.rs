//! README.md's module map names every module of the crate, and nothing that is gone: each
//! directory under `src/` and each top-level file is a line of its own.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The `src/...` paths the map's lines start with.
fn named_in_map(readme: &str) -> BTreeSet<String> {
    let map = readme
        .split_once("### Module map")
        .expect("README.md has a \"### Module map\" section")
        .1;
    let map = map.split("\n#").next().unwrap_or(map);
    map.lines()
        .filter_map(|line| line.strip_prefix("- "))
        .flat_map(|line| {
            let head = line.split(": ").next().unwrap_or("");
            head.split(", ")
                .filter_map(|p| p.strip_prefix('`')?.strip_suffix('`'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every directory under `src/` (as `src/a/b/`) and every file directly in it (`src/x.rs`).
fn modules(src: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(src.parent().unwrap()).unwrap();
            let name = relative.to_str().unwrap().to_string();
            if path.is_dir() {
                found.insert(format!("{name}/"));
                dirs.push(path);
            } else if dir == src {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn the_readme_names_every_module_and_only_those_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let named = named_in_map(&readme);
    let modules = modules(&root.join("src"));
    let missing: Vec<_> = modules.difference(&named).collect();
    let gone: Vec<_> = named.difference(&modules).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "README.md's module map: add a line for {missing:?}; remove the line of {gone:?}"
    );
}
