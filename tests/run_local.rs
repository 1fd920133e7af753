//! `buildr run` on the local backend, through the real binary: real processes, real gRPC on
//! loopback, real files.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{buildr, buildr_bin, stderr, stdout, tree, write_files};
use nix::sys::signal::Signal;

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs an ad-hoc shell script on the repo, writing changes to `out`.
fn run_script(repo: &Path, out: &Path, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["run", "--repo", path_str(repo), "--out", path_str(out)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    buildr(&args)
}

#[test]
fn changed_files_come_back_exactly_and_unchanged_ones_do_not() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            ("keep.txt", "unchanged"),
            ("edit.txt", "before"),
            ("gone.txt", "to be deleted"),
            ("src/lib/deep.txt", "deep before"),
        ],
    );
    let script = r#"
        set -eu
        echo after > edit.txt
        echo deep after > src/lib/deep.txt
        rm gone.txt
        mkdir -p new/nested/dir empty/dir
        echo nested > new/nested/dir/file.txt
        printf '#!/bin/sh\necho run\n' > new/tool.sh && chmod 755 new/tool.sh
        ln -s nested/dir/file.txt new/link
        echo spaced > 'with space.txt'
        echo unicode > 'héllo wörld ✓.txt'
    "#;
    let output = run_script(repo.path(), out.path(), &[], script);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    assert_eq!(
        tree(out.path()),
        [
            "edit.txt",
            "empty",
            "empty/dir",
            "héllo wörld ✓.txt",
            "new",
            "new/link",
            "new/nested",
            "new/nested/dir",
            "new/nested/dir/file.txt",
            "new/tool.sh",
            "src",
            "src/lib",
            "src/lib/deep.txt",
            "with space.txt",
        ]
    );
    let read = |p: &str| fs::read_to_string(out.path().join(p)).unwrap();
    assert_eq!(read("edit.txt"), "after\n");
    assert_eq!(read("src/lib/deep.txt"), "deep after\n");
    assert_eq!(read("new/nested/dir/file.txt"), "nested\n");
    assert_eq!(read("with space.txt"), "spaced\n");
    assert_eq!(read("héllo wörld ✓.txt"), "unicode\n");
    let mode = fs::metadata(out.path().join("new/tool.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        fs::read_link(out.path().join("new/link")).unwrap(),
        Path::new("nested/dir/file.txt")
    );
    assert!(out.path().join("empty/dir").is_dir());
    assert!(stderr(&output).contains("deleted 1 path; not applied"));
    // The repository itself was not touched by the run.
    assert_eq!(
        fs::read_to_string(repo.path().join("edit.txt")).unwrap(),
        "before"
    );
}

#[test]
fn deletions_are_applied_only_when_asked() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[("a.txt", "a"), ("dir/b.txt", "b"), ("c.txt", "c")],
    );
    for (apply, expect_gone) in [(false, false), (true, true)] {
        let out = tempfile::tempdir().unwrap();
        write_files(
            out.path(),
            &[("a.txt", "a"), ("dir/b.txt", "b"), ("c.txt", "c")],
        );
        let extra: &[&str] = if apply { &["--apply-deletions"] } else { &[] };
        let output = run_script(repo.path(), out.path(), extra, "rm a.txt && rm -r dir");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(!out.path().join("a.txt").exists(), expect_gone);
        assert_eq!(!out.path().join("dir").exists(), expect_gone);
        assert!(out.path().join("c.txt").exists());
    }
}

#[test]
fn a_deleted_directory_takes_only_what_the_task_was_given() {
    // The results go into the repository itself, as by default. `vendor/lib` is a submodule
    // (its `.git` a file), `vendor/nested` a repository of its own, and `config/.env` is
    // ignored: none of these reached the task, so deleting their directories cannot take them.
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            (".gitignore", ".env\n"),
            (".git/HEAD", "ref: refs/heads/main\n"),
            ("vendor/README", "vendored\n"),
            ("vendor/lib/.git", "gitdir: ../../.git/modules/lib\n"),
            ("vendor/lib/lib.c", "int lib;\n"),
            ("vendor/lib/src/impl.c", "int impl;\n"),
            ("vendor/nested/.git/config", "[core]\n"),
            ("config/.env", "SECRET=1\n"),
            ("config/app.toml", "port = 1\n"),
            ("keep.txt", "kept\n"),
        ],
    );
    // The task sees neither, and deletes both directories whole.
    let script = "test ! -e config/.env && test ! -e vendor/lib/.git && rm -r vendor config";
    let output = run_script(repo.path(), repo.path(), &["--apply-deletions"], script);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let read = |p: &str| fs::read_to_string(repo.path().join(p)).unwrap();
    assert_eq!(read("vendor/lib/.git"), "gitdir: ../../.git/modules/lib\n");
    assert_eq!(read("vendor/nested/.git/config"), "[core]\n");
    assert_eq!(read("config/.env"), "SECRET=1\n");
    assert_eq!(
        tree(repo.path()),
        [
            ".git",
            ".git/HEAD",
            ".gitignore",
            "config",
            "config/.env",
            "keep.txt",
            "vendor",
            "vendor/lib",
            "vendor/lib/.git",
            "vendor/nested",
            "vendor/nested/.git",
            "vendor/nested/.git/config",
        ],
        "{err}"
    );
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("kept")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("buildr: warning: kept 3 paths under deleted directories")
            && warnings[0].contains("(the first: `config/.env`)"),
        "{err}"
    );
}

#[test]
fn a_replayed_result_deletes_only_what_the_task_was_given() {
    // The cache stores the run's deletions and replays them into another checkout of the same
    // inputs, where `vendor/lib` is a submodule and `config/.env` an ignored file.
    let repo = tempfile::tempdir().unwrap();
    let files = [
        (".gitignore", ".env\n"),
        ("vendor/lib/.git", "gitdir: ../../.git/modules/lib\n"),
        ("vendor/lib/lib.c", "int lib;\n"),
        ("config/.env", "SECRET=1\n"),
        ("config/app.toml", "port = 1\n"),
    ];
    write_files(repo.path(), &files);
    let xdg = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        Command::new(buildr_bin())
            .args(["run", "--cache", "--apply-deletions", "--repo"])
            .args([repo.path(), Path::new("--out"), out])
            .args(["--", "sh", "-c", "rm -r vendor config"])
            .env("XDG_CACHE_HOME", xdg.path())
            .env_remove("BUILDR_CACHE_REGISTRY")
            .env_remove("BUILDR_CACHE_MAX")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let first = tempfile::tempdir().unwrap();
    let output = run(first.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = tempfile::tempdir().unwrap();
    write_files(out.path(), &files);
    let output = run(out.path());
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("buildr: cached: replaying"), "{err}");
    let read = |p: &str| fs::read_to_string(out.path().join(p)).unwrap();
    assert_eq!(read("vendor/lib/.git"), "gitdir: ../../.git/modules/lib\n");
    assert_eq!(read("config/.env"), "SECRET=1\n");
    assert_eq!(
        tree(out.path()),
        [
            ".gitignore",
            "config",
            "config/.env",
            "vendor",
            "vendor/lib",
            "vendor/lib/.git"
        ],
        "{err}"
    );
    assert!(
        err.contains("buildr: warning: kept 2 paths under deleted directories"),
        "{err}"
    );
}

#[test]
fn a_link_into_git_does_not_come_back() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            ("src.txt", "source"),
            (".git/hooks/pre-commit.sample", "#!/bin/sh\n"),
        ],
    );
    // The user's next tool that writes `hook` or `sub/cfg` would write the hook or the config.
    let script = r#"
        ln -s .git/hooks/pre-commit hook
        mkdir sub
        ln -s ../.git/config sub/cfg
        ln -s ../src.txt sub/fine
        echo built > built.txt
    "#;
    let output = run_script(repo.path(), repo.path(), &[], script);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        fs::symlink_metadata(repo.path().join("hook")).is_err(),
        "{err}"
    );
    assert!(
        fs::symlink_metadata(repo.path().join("sub/cfg")).is_err(),
        "{err}"
    );
    assert_eq!(
        fs::read_link(repo.path().join("sub/fine")).unwrap(),
        Path::new("../src.txt")
    );
    assert_eq!(
        fs::read_to_string(repo.path().join("built.txt")).unwrap(),
        "built\n"
    );
    let warnings: Vec<_> = err.lines().filter(|l| l.contains(".git")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("left out 2 paths under or linking into .git (the first: `hook`)"),
        "{err}"
    );
}

#[test]
fn the_exit_status_is_the_tasks() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 7", 7),
        ("kill -KILL $$", 128 + 9),
        ("kill -TERM $$", 128 + 15),
    ] {
        let output = run_script(repo.path(), out.path(), &[], script);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{script}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_command_that_cannot_start_exits_as_a_shell_would() {
    let repo = tempfile::tempdir().unwrap();
    write_files(repo.path(), &[("not-executable", "data")]);
    for (command, code) in [("no-such-command-here", 127), ("./not-executable", 126)] {
        let output = buildr(&["run", "--repo", path_str(repo.path()), "--", command]);
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
        assert!(stderr(&output).contains(command), "{}", stderr(&output));
    }
}

#[test]
fn what_the_executor_reports_cannot_drive_the_terminal() {
    // The executor quotes the command in its error; a command named with escape sequences must
    // reach the console escaped (only the task's own stdout and stderr are passed through raw).
    let repo = tempfile::tempdir().unwrap();
    let command = "no-such\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}cmd";
    let output = buildr(&["run", "--repo", path_str(repo.path()), "--", command]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(127), "{err}");
    for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(
            !err.contains(raw),
            "{raw:?} reached the console raw: {err:?}"
        );
    }
    assert!(
        err.contains("no-such\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{202e}cmd"),
        "{err}"
    );
}

#[test]
fn the_sandbox_is_private_and_the_executor_listens_inside_it() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Unconfined: the sandbox hides the executor's state from the task (tests/sandbox.rs).
    let output = run_script(
        repo.path(),
        out.path(),
        &["--sandbox", "none"],
        "stat -c %a ..; ls ../state",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    let mut lines = printed.lines();
    assert_eq!(lines.next(), Some("700"));
    assert!(lines.any(|l| l == "executor.sock"), "{printed}");
}

#[test]
fn stdout_and_stderr_arrive_separately_and_complete() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let script = "i=0; while [ $i -lt 3000 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done";
    let output = run_script(repo.path(), out.path(), &[], script);
    assert_eq!(output.status.code(), Some(0));
    let expected =
        |stream: &str| -> String { (0..3000).map(|i| format!("{stream} {i}\n")).collect() };
    assert_eq!(stdout(&output), expected("out"));
    assert_eq!(stderr(&output), expected("err"));
}

#[test]
fn a_burst_of_50000_files_all_come_back() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let script =
        "mkdir burst && cd burst && seq 1 50000 | awk '{ print $1 > (\"f\" $1); close(\"f\" $1) }'";
    let output = run_script(repo.path(), out.path(), &[], script);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let burst = out.path().join("burst");
    let names = fs::read_dir(&burst).unwrap().count();
    assert_eq!(names, 50_000);
    for i in [1, 2, 777, 25_000, 49_999, 50_000] {
        assert_eq!(
            fs::read_to_string(burst.join(format!("f{i}"))).unwrap(),
            format!("{i}\n")
        );
    }
}

#[test]
fn the_example_task_runs_from_the_task_files() {
    let out = tempfile::tempdir().unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    let output = buildr(&[
        "run",
        "--repo",
        repo,
        "--out",
        path_str(out.path()),
        "hello",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("hello from buildr"));
    assert!(stderr(&output).contains("this line goes to stderr"));
    assert_eq!(
        fs::read_to_string(out.path().join("out/hello.txt")).unwrap(),
        "hi from buildr\n"
    );
    let failing = buildr(&["run", "--repo", repo, "--out", path_str(out.path()), "fail"]);
    assert_eq!(failing.status.code(), Some(7));
}

#[test]
fn a_task_over_its_timeout_is_stopped_and_reported() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[(
            ".buildr/tasks.hcl",
            "task \"slow\" {\n  script = \"echo partial > partial.txt; sleep 60\"\n  timeout = \"1s\"\n}\n",
        )],
    );
    let started = Instant::now();
    let output = buildr(&[
        "run",
        "--repo",
        path_str(repo.path()),
        "--out",
        path_str(out.path()),
        "slow",
    ]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(128 + 15), "{}", stderr(&output));
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    assert_eq!(
        fs::read_to_string(out.path().join("partial.txt")).unwrap(),
        "partial\n"
    );
}

#[test]
fn the_k8s_backend_asks_for_an_image_before_it_touches_a_cluster() {
    let output = buildr(&["run", "--backend", "k8s", "--", "true"]);
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("give --image"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_broken_task_file_is_reported_with_its_location_and_nothing_runs() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[(
            ".buildr/tasks.hcl",
            "task \"build\" {\n  comand = [\"make\"]\n}\n",
        )],
    );
    let output = buildr(&["run", "--repo", path_str(repo.path()), "build"]);
    assert_eq!(output.status.code(), Some(125));
    let message = stderr(&output);
    assert!(message.contains("tasks.hcl:2:3"), "{message}");
    assert!(message.contains("did you mean `command`"), "{message}");
    assert_eq!(message.lines().count(), 1, "one line without -v: {message}");

    let missing = buildr(&["run", "--repo", env!("CARGO_MANIFEST_DIR"), "helo"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(stderr(&missing).contains("hello"), "{}", stderr(&missing));
}

#[test]
fn ctrl_c_stops_the_task_and_its_children_and_exits_130() {
    // The task reports a background child's pid and its own, then waits.
    let (mut child, mut lines, _dirs) = spawn_run("sleep 300 & echo child $!; echo main $$; wait");
    let pids = [next_pid(&mut lines), next_pid(&mut lines)];
    let executor = executor_pid_of(child.id() as i32);
    assert!(alive(executor));
    signal(child.id() as i32, Signal::SIGINT);
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().chain([&executor]).any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids.iter().chain([&executor]) {
        assert!(!alive(*pid), "process {pid} is still running");
    }
}

#[test]
fn a_dead_executor_fails_the_run_at_once_and_takes_its_task_along() {
    let (mut child, mut lines, _dirs) = spawn_run("echo main $$; exec sleep 300");
    let task = next_pid(&mut lines);
    let executor = executor_pid_of(child.id() as i32);
    signal(executor, Signal::SIGKILL);
    let started = Instant::now();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(10), "noticed late");
    assert_eq!(status.code(), Some(125));
    let mut message = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut message).unwrap();
    assert!(
        message.contains("executor exited unexpectedly"),
        "{message}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(task) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(task), "the task {task} outlived its executor");
}

#[test]
fn an_executor_stopped_from_outside_fails_the_run_and_says_so() {
    // SIGTERM to the executor (as a kubelet sends a pod past its deadline): it cancels its task
    // and reports it cancelled, which the user did not ask for.
    let (mut child, mut lines, _dirs) = spawn_run("echo main $$; exec sleep 300");
    next_pid(&mut lines);
    signal(executor_pid_of(child.id() as i32), Signal::SIGTERM);
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let mut message = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut message).unwrap();
    assert_eq!(status.code(), Some(125), "{message}");
    assert!(
        message.contains("the executor exited unexpectedly"),
        "{message}"
    );
}

/// `buildr run -- sh -c script` in the background with its stdout's lines, and the repo and out
/// directories (removed when dropped).
fn spawn_run(
    script: &str,
) -> (
    std::process::Child,
    impl Iterator<Item = std::io::Result<String>>,
    [tempfile::TempDir; 2],
) {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(buildr_bin())
        .args([
            "run",
            "--repo",
            path_str(repo.path()),
            "--out",
            path_str(out.path()),
        ])
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, std::io::BufRead::lines(stdout), [repo, out])
}

/// The pid in the next `NAME PID` line the task printed.
fn next_pid(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> i32 {
    let line = lines.next().expect("the task prints a pid").unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn signal(pid: i32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

/// The `buildr executor` child of `parent`.
fn executor_pid_of(parent: i32) -> i32 {
    common::child_of(parent as u32, "executor") as i32
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}

fn wait_timeout(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "buildr run did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- issue 8: links, errors, inputs

#[test]
fn symlinks_go_into_the_sandbox_as_they_are_and_external_ones_come_back_only_when_allowed() {
    let repo = tempfile::tempdir().unwrap();
    write_files(repo.path(), &[("f", "f")]);
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("l")).unwrap();
    std::os::unix::fs::symlink("../../outside", repo.path().join("up")).unwrap();
    let script = r#"
        set -eu
        test "$(readlink l)" = /etc/passwd
        test "$(readlink up)" = ../../outside
        mkdir -p venv/bin
        ln -s /usr/bin/python3 venv/bin/python
        ln -s ../f venv/inside
        echo made > made.txt
        exit 3
    "#;
    let out = tempfile::tempdir().unwrap();
    let output = run_script(repo.path(), out.path(), &[], script);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("`venv/bin/python` -> `/usr/bin/python3`"),
        "{err}"
    );
    assert!(warnings[0].contains("--allow-external-links"), "{err}");
    assert_eq!(fs::read(out.path().join("made.txt")).unwrap(), b"made\n");
    assert_eq!(
        fs::read_link(out.path().join("venv/inside")).unwrap(),
        Path::new("../f")
    );
    assert!(fs::symlink_metadata(out.path().join("venv/bin/python")).is_err());

    let out = tempfile::tempdir().unwrap();
    let output = run_script(repo.path(), out.path(), &["--allow-external-links"], script);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    assert_eq!(
        fs::read_link(out.path().join("venv/bin/python")).unwrap(),
        Path::new("/usr/bin/python3")
    );
}

/// The parts of a `buildr: a: b: c` error line, each of which must appear once.
fn assert_each_cause_once(line: &str) {
    let parts: Vec<&str> = line.trim_start_matches("buildr: ").split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..]
                .iter()
                .any(|p| p == part || p.contains(part) && part.len() > 12),
            "`{part}` repeats in {line:?}"
        );
    }
}

#[test]
fn an_out_that_cannot_be_written_is_found_before_the_task_runs_and_said_once() {
    let repo = tempfile::tempdir().unwrap();
    let marker = repo.path().join("the-task-ran");
    let script = format!("touch {}", path_str(&marker));
    let output = run_script(
        repo.path(),
        Path::new("/proc/buildr-no-such-dir"),
        &[],
        &script,
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert!(!marker.exists(), "the task ran");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/proc/buildr-no-such-dir"), "{err}");
    assert_each_cause_once(err.trim());
}

#[test]
fn each_cause_of_an_error_is_shown_once() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.s2");
    fs::write(&archive, b"").unwrap();
    // A destination under a file: the OS error, the destination and the archive, once each.
    fs::write(tmp.path().join("file"), "x").unwrap();
    let dest = tmp.path().join("file/dest");
    let extract = |verbose: &[&str]| {
        let mut args = verbose.to_vec();
        args.extend([
            "archive",
            "extract",
            "--to",
            path_str(&dest),
            path_str(&archive),
        ]);
        buildr(&args)
    };
    let output = extract(&[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_each_cause_once(err.trim());
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    // A bad ignore pattern fails the run before it starts, once.
    let repo = tempfile::tempdir().unwrap();
    write_files(repo.path(), &[(".buildrignore", "src/[z-a]\n")]);
    let output = run_script(repo.path(), tmp.path(), &[], "true");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert!(err.contains(".buildrignore:1: "), "{err}");
    assert_each_cause_once(err.trim());
    // A sandbox that cannot be prepared (a FIFO cannot be copied): said once.
    let repo = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&repo.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let output = run_script(repo.path(), tmp.path(), &[], "true");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert!(err.contains("FIFO"), "{err}");
    assert_eq!(err.matches("FIFO").count(), 1, "{err}");
    assert_each_cause_once(err.trim());
    // With -v the chain comes once more, only as the detailed list.
    let output = extract(&["-v"]);
    let err = stderr(&output);
    let first = err.lines().find(|l| l.starts_with("buildr: ")).unwrap();
    assert_each_cause_once(first);
    assert_eq!(err.matches("Not a directory").count(), 2, "{err}");
}

#[test]
fn a_task_whose_inputs_are_all_ignored_gets_a_warning() {
    let repo = tempfile::tempdir().unwrap();
    write_files(repo.path(), &[(".buildrignore", "*\n"), ("a", "a")]);
    let out = tempfile::tempdir().unwrap();
    let output = run_script(repo.path(), out.path(), &[], "true");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: task `ad-hoc` has no inputs"),
        "{err}"
    );
}

#[test]
fn a_task_cannot_plant_a_git_hook_in_the_repository() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            ("src.txt", "source"),
            (".git/HEAD", "ref: refs/heads/main\n"),
        ],
    );
    let script = r#"
        mkdir -p .git/hooks
        printf '#!/bin/sh\ntouch pwned\n' > .git/hooks/pre-commit
        chmod 755 .git/hooks/pre-commit
        echo built > built.txt
        exit 3
    "#;
    // The results go into the repository itself, as by default.
    let output = run_script(repo.path(), repo.path(), &[], script);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert_eq!(
        fs::read_to_string(repo.path().join("built.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(tree(&repo.path().join(".git")), ["HEAD"], "{err}");
    let warnings: Vec<_> = err.lines().filter(|l| l.contains(".git")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("left out 3 paths under or linking into .git (the first: `.git`)"),
        "{err}"
    );
}

#[test]
fn results_over_a_limit_are_refused_and_nothing_lands() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_files(out.path(), &[("a", "before"), ("keep/me", "mine")]);
    let before: Vec<_> = tree(out.path())
        .into_iter()
        .map(|p| (fs::read(out.path().join(&p)).ok(), p))
        .collect();
    let script = "head -c 3000 /dev/zero > a && echo b > b && echo c > c";
    for (flag, value) in [
        ("--max-output-entries", "2"),
        ("--max-output-bytes", "2KiB"),
    ] {
        let output = run_script(repo.path(), out.path(), &[flag, value], script);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{err}");
        assert!(err.contains(flag), "{err}");
        assert!(err.contains("nothing was extracted"), "{err}");
        let after: Vec<_> = tree(out.path())
            .into_iter()
            .map(|p| (fs::read(out.path().join(&p)).ok(), p))
            .collect();
        assert_eq!(after, before, "{flag}");
    }
}

#[test]
fn keep_leaves_the_sandbox_and_says_where_it_is() {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_files(repo.path(), &[("in.txt", "input")]);
    let output = run_script(repo.path(), out.path(), &["--keep"], "echo made > made.txt");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = stderr(&output);
    let sandbox = message
        .lines()
        .find_map(|line| line.strip_prefix("buildr: keeping the sandbox at "))
        .unwrap_or_else(|| panic!("does not say where the sandbox is:\n{message}"));
    let sandbox = Path::new(sandbox);
    let kept: Vec<_> = fs::read_dir(sandbox).unwrap().collect();
    assert!(!kept.is_empty(), "the kept sandbox {sandbox:?} is empty");
    fs::remove_dir_all(sandbox).unwrap();
}
