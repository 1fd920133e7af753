//! Helpers shared by the integration tests: the real `buildr` binary and scratch repositories.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn buildr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildr"))
}

/// `buildr ARGS` with a quiet console, run to completion.
pub fn buildr(args: &[&str]) -> Output {
    Command::new(buildr_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("buildr runs")
}

/// Writes `files` (path, contents) under `root`, creating directories.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// Every path under `root`, relative and sorted, directories included.
pub fn tree(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path.clone());
            }
            paths.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    paths.sort();
    paths
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
