//! Tools (`tools = [...]`, `--tool`): programs sent along with the task, first in its PATH. On
//! the local backend with real files and processes, and in real pods on the cluster of
//! tests/cluster (marked `#[ignore = "needs the cluster ..."]`; tests/run-all.sh, the README's
//! test command, runs them with the cluster up).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cluster::{BUSYBOX_IMAGE, Namespace, base_image};
use common::{buildr_bin, stderr, stdout, write_files};

/// A repository with a task `greet` that uses two tools of its own: `greet`, a shell script,
/// and `say`, a copy of this machine's `echo` (a dynamically linked ELF).
fn repo_with_tools() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[(
            ".buildr/tasks.hcl",
            r#"
task "greet" {
  tools  = ["./bin/greet", "./bin/say"]
  script = "greet world > greeting.txt && say done > said.txt && command -v greet > where.txt"
}
"#,
        )],
    );
    add_tool(
        repo.path(),
        "bin/greet",
        b"#!/bin/sh\necho \"hello, $1\"\n",
        0o755,
    );
    add_tool(repo.path(), "bin/say", &host_program("echo"), 0o755);
    repo
}

fn add_tool(repo: &Path, path: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = repo.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The bytes of a program from this machine's PATH.
fn host_program(name: &str) -> Vec<u8> {
    let path = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is in PATH"));
    fs::read(path).unwrap()
}

/// `buildr ARGS` run in `dir`.
fn buildr_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(buildr_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("buildr runs")
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn a_tasks_tools_come_first_in_its_path_and_v_lists_them() {
    let repo = repo_with_tools();
    let out = tempfile::tempdir().unwrap();
    let output = buildr_in(
        repo.path(),
        &["-v", "run", "--out", out.path().to_str().unwrap(), "greet"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(read(out.path(), "greeting.txt"), "hello, world\n");
    assert_eq!(read(out.path(), "said.txt"), "done\n");
    // From the tools directory, not from the workspace's copy of bin/.
    assert!(
        read(out.path(), "where.txt").ends_with("/tools/greet\n"),
        "{}",
        read(out.path(), "where.txt")
    );
    let say_size = host_program("echo").len() as f64 / 1e3;
    let listed = format!(
        "sending tool say ({}, {say_size:.1} kB, dynamically linked)",
        repo.path().join("bin/say").display(),
    );
    assert!(err.contains(&listed), "{err}");
    let listed = format!(
        "sending tool greet ({}, 27 B, a script)",
        repo.path().join("bin/greet").display(),
    );
    assert!(err.contains(&listed), "{err}");
    assert!(err.contains("check and copy tools"), "{err}");
}

#[test]
fn tool_flags_add_to_the_tasks_and_take_paths_from_the_current_directory() {
    let repo = tempfile::tempdir().unwrap();
    let here = tempfile::tempdir().unwrap();
    add_tool(
        here.path(),
        "mine/shout",
        b"#!/bin/sh\necho \"$1!\"\n",
        0o755,
    );
    let out = tempfile::tempdir().unwrap();
    let output = buildr_in(
        here.path(),
        &[
            "run",
            "--repo",
            repo.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--tool",
            "./mine/shout",
            "--",
            "sh",
            "-c",
            "shout hey > shouted.txt",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(read(out.path(), "shouted.txt"), "hey!\n");
}

#[test]
fn a_tool_that_cannot_run_is_refused_in_one_line_before_the_task_starts() {
    let repo = tempfile::tempdir().unwrap();
    add_tool(repo.path(), "bin/plain", b"#!/bin/sh\n", 0o644);
    add_tool(repo.path(), "bin/lost", b"#!/no/such/shell\n", 0o755);
    let mut other_arch = host_program("true");
    // e_machine (offset 18) relabelled: the same program, as if built for another machine.
    let (machine, arch) = if cfg!(target_arch = "aarch64") {
        (62u16, "amd64") // EM_X86_64
    } else {
        (183u16, "arm64") // EM_AARCH64
    };
    other_arch[18..20].copy_from_slice(&machine.to_le_bytes());
    add_tool(repo.path(), "bin/foreign", &other_arch, 0o755);

    for (tool, expected) in [
        (
            "no-such-tool-anywhere",
            "tool `no-such-tool-anywhere` is not in PATH",
        ),
        ("./bin/missing", "bin/missing does not exist"),
        ("./bin/plain", "is not executable (mode 644); `chmod +x` it"),
        (
            "./bin/foreign",
            &format!("bin/foreign is built for {arch}, but the task runs on"),
        ),
        (
            "./bin/lost",
            "tool `lost` cannot run on this machine: it is a script for /no/such/shell, which is not there",
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let marker = out.path().join("the-task-ran");
        let output = buildr_in(
            repo.path(),
            &[
                "run",
                "--out",
                out.path().to_str().unwrap(),
                "--tool",
                tool,
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{tool}: {err}");
        assert_eq!(err.lines().count(), 1, "{tool}: {err}");
        assert!(err.contains(expected), "{tool}: {err}");
        assert!(!marker.exists(), "{tool}: the task ran");
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_static_tool_the_image_lacks_runs_in_the_pod() {
    let ns = Namespace::new("tools");
    let repo = repo_with_tools();
    write_files(repo.path(), &[("input.txt", "checksum me\n")]);
    let out = tempfile::tempdir().unwrap();
    // Debian's static BusyBox from this machine, into the base image, which has no BusyBox;
    // and the task's own script tool beside it.
    let output = ns.run(
        repo.path(),
        out.path(),
        &base_image(),
        &[
            "-v",
            "--tool",
            "/bin/busybox",
            "--",
            "sh",
            "-c",
            "busybox sha256sum input.txt > sum.txt && command -v busybox > where.txt",
        ],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let expected = format!(
        "{:x}  input.txt\n",
        <sha2::Sha256 as sha2::Digest>::digest(b"checksum me\n")
    );
    assert_eq!(read(out.path(), "sum.txt"), expected);
    assert_eq!(read(out.path(), "where.txt"), "/buildr/tools/busybox\n");
    assert!(err.contains("copy binary, tools and inputs"), "{err}");
    assert!(err.contains("statically linked)"), "{err}");
    ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_tasks_tools_run_in_the_pod_when_the_image_has_what_they_need() {
    let ns = Namespace::new("tools-task");
    let repo = repo_with_tools();
    let out = tempfile::tempdir().unwrap();
    // `say` is a glibc program: the base image has its loader and libraries.
    let output = ns.run(repo.path(), out.path(), &base_image(), &["greet"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(read(out.path(), "greeting.txt"), "hello, world\n");
    assert_eq!(read(out.path(), "said.txt"), "done\n");
    assert_eq!(read(out.path(), "where.txt"), "/buildr/tools/greet\n");
    ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_dynamic_tool_is_refused_by_an_image_without_its_loader_and_nothing_is_left() {
    let ns = Namespace::new("tools-dynamic");
    let repo = repo_with_tools();
    let out = tempfile::tempdir().unwrap();
    // BusyBox has no C library: this machine's `echo` (by name, from PATH) cannot run there.
    // Had the task run, in the pod, it would have said so and its file would have come back.
    let output = ns.run(
        repo.path(),
        out.path(),
        BUSYBOX_IMAGE,
        &[
            "--tool",
            "echo",
            "--",
            "sh",
            "-c",
            "busybox echo the-task-ran; touch the-task-ran",
        ],
    );
    let err = stderr(&output);
    assert!(
        !stdout(&output).contains("the-task-ran"),
        "the task ran: {err}"
    );
    assert!(
        !out.path().join("the-task-ran").exists(),
        "the task ran: {err}"
    );
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "tool `echo` cannot run in the image `{BUSYBOX_IMAGE}`: it is dynamically linked and its loader /"
        )),
        "{err}"
    );
    ns.assert_nothing_left();
}
