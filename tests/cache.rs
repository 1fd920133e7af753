//! The action cache through the real binary on the local backend: real processes, real files,
//! a cache directory of each test's own (`XDG_CACHE_HOME`). Whether the task ran is told by a
//! counter file outside the repository that the task appends to: a hit never starts it.
//! The last test runs on the cluster of tests/cluster.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::cluster::{BUSYBOX_IMAGE, Namespace, base_image};
use common::{buildr_bin, stderr, stdout, tree, write_files};

/// A repository with one caching task `t`, a cache directory and a run counter.
struct Fixture {
    repo: tempfile::TempDir,
    xdg: tempfile::TempDir,
    counter: tempfile::NamedTempFile,
}

/// The task file, with `{COUNTER}` (twice) and `{EXTRA}` (more attributes) filled in.
const TASK: &str = r#"
task "t" {
  script  = <<-EOT
    echo run >> {COUNTER}
    echo "out 1"
    echo "err 1" >&2
    echo "out 2"
    mkdir -p out
    cat input.txt > out/copy.txt
    printf '%s\n' "$GREETING" > out/env.txt
    printf '#!/bin/sh\necho tool\n' > out/tool.sh
    chmod 755 out/tool.sh
    echo "err 2" >&2
  EOT
  env     = { GREETING = "hello" }
  outputs = ["out/**"]
  cache   = true
  # The counter is outside the workspace, where the sandbox lets a task write only when told.
  writable = ["{COUNTER}"]
  {EXTRA}
}
"#;

impl Fixture {
    fn new() -> Self {
        Self::with(TASK, "")
    }

    fn with(task: &str, extra: &str) -> Self {
        let fixture = Self {
            repo: tempfile::tempdir().unwrap(),
            xdg: tempfile::tempdir().unwrap(),
            counter: tempfile::NamedTempFile::new().unwrap(),
        };
        write_files(
            fixture.repo.path(),
            &[
                // The task file stays out of the inputs, so that editing it changes the key
                // through the task only.
                (".buildrignore", ".buildr/\n"),
                (".gitignore", "ignored.txt\n"),
                ("input.txt", "input\n"),
                ("ignored.txt", "ignored\n"),
                ("dir/nested.txt", "nested\n"),
            ],
        );
        fixture.write_task(task, extra);
        fixture
    }

    fn write_task(&self, task: &str, extra: &str) {
        let text = task
            .replace("{COUNTER}", self.counter.path().to_str().unwrap())
            .replace("{EXTRA}", extra);
        write_files(self.repo.path(), &[(".buildr/tasks.hcl", &text)]);
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.repo.path().join(rel)
    }

    fn command(&self, out: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(buildr_bin());
        command
            .args(["run", "--repo"])
            .arg(self.repo.path())
            .arg("--out")
            .arg(out)
            .args(extra)
            .env("XDG_CACHE_HOME", self.xdg.path())
            .env_remove("BUILDR_CACHE_MAX")
            .env_remove("RUST_LOG");
        command
    }

    /// `buildr run [EXTRA] t` into a fresh --out; the output and that --out.
    fn run(&self, extra: &[&str]) -> (Output, tempfile::TempDir) {
        let out = tempfile::tempdir().unwrap();
        let mut args = extra.to_vec();
        args.push("t");
        let output = self.command(out.path(), &args).output().unwrap();
        (output, out)
    }

    /// `buildr run NAME` with the cache bounded by `max` (`BUILDR_CACHE_MAX`), which must
    /// succeed.
    fn run_bounded(&self, name: &str, max: &str) -> Output {
        let out = tempfile::tempdir().unwrap();
        let output = self
            .command(out.path(), &[name])
            .env("BUILDR_CACHE_MAX", max)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        output
    }

    /// How many times the task has run.
    fn runs(&self) -> usize {
        fs::read_to_string(self.counter.path())
            .unwrap()
            .lines()
            .count()
    }

    fn entries(&self) -> Vec<PathBuf> {
        let dir = self.xdg.path().join("buildr/entries");
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        entries.sort();
        entries
    }

    /// Runs twice and checks the second is a hit; then `change`, and checks the third run is
    /// a miss (or a hit when `miss` is false).
    fn assert_change(&self, what: &str, miss: bool, change: impl FnOnce(&Self)) {
        let (first, _out) = self.run(&[]);
        assert_eq!(first.status.code(), Some(0), "{what}: {}", stderr(&first));
        let (second, _out) = self.run(&[]);
        assert!(is_hit(&second), "{what}: {}", stderr(&second));
        assert_eq!(self.runs(), 1, "{what}");
        change(self);
        let (third, _out) = self.run(&[]);
        assert_eq!(third.status.code(), Some(0), "{what}: {}", stderr(&third));
        if miss {
            assert!(
                !is_hit(&third),
                "{what} should be a miss: {}",
                stderr(&third)
            );
            assert_eq!(self.runs(), 2, "{what} should run the task again");
        } else {
            assert!(is_hit(&third), "{what} should be a hit: {}", stderr(&third));
            assert_eq!(self.runs(), 1, "{what} should not run the task");
        }
    }
}

fn is_hit(output: &Output) -> bool {
    stderr(output).contains("buildr: cached: replaying the result of task `t`")
}

/// stderr without buildr's own lines, which differ between a run and a replay.
fn task_stderr(output: &Output) -> String {
    stderr(output)
        .lines()
        .filter(|l| !l.starts_with("buildr: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every path under `root` with its mode and content (a link's target).
fn snapshot(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    tree(root)
        .into_iter()
        .map(|rel| {
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                fs::read(&path).unwrap()
            } else if meta.is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            (rel, meta.permissions().mode(), content)
        })
        .collect()
}

#[test]
fn a_hit_replays_the_output_the_files_and_the_status_without_running_the_task() {
    let fixture = Fixture::new();
    let (first, first_out) = fixture.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(!is_hit(&first));
    assert_eq!(fixture.runs(), 1);

    let (second, second_out) = fixture.run(&[]);
    assert!(is_hit(&second), "{}", stderr(&second));
    assert_eq!(fixture.runs(), 1, "a hit starts no executor");
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(stdout(&second), "out 1\nout 2\n");
    assert_eq!(task_stderr(&second), task_stderr(&first));
    assert_eq!(task_stderr(&second), "err 1\nerr 2\n");
    assert_eq!(snapshot(second_out.path()), snapshot(first_out.path()));
    assert_eq!(
        fs::read_to_string(second_out.path().join("out/copy.txt")).unwrap(),
        "input\n"
    );
    let mode = fs::metadata(second_out.path().join("out/tool.sh")).unwrap();
    assert_eq!(mode.permissions().mode() & 0o111, 0o111);
    // From when, and how long the original took.
    let said = stderr(&second);
    assert!(said.contains(" from 20"), "{said}");
    assert!(said.contains("(the run took "), "{said}");
    assert_eq!(fixture.entries().len(), 1);
}

#[test]
fn a_replay_interleaves_stdout_and_stderr_as_the_run_did() {
    let fixture = Fixture::new();
    let combined = |fixture: &Fixture| {
        let out = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        // One file in append mode for both, as a terminal shows them.
        let append = || fs::File::options().append(true).open(log.path()).unwrap();
        let status = fixture
            .command(out.path(), &["t"])
            .stdout(Stdio::from(append()))
            .stderr(Stdio::from(append()))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0));
        let text = fs::read_to_string(log.path()).unwrap();
        let task_lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("buildr: "))
            .map(str::to_string)
            .collect();
        (text.contains("buildr: cached:"), task_lines)
    };
    let (first_hit, first) = combined(&fixture);
    let (second_hit, second) = combined(&fixture);
    assert!(!first_hit && second_hit);
    assert_eq!(first.len(), 4, "{first:?}");
    assert_eq!(second, first);
}

#[test]
fn each_change_the_result_can_depend_on_is_a_miss() {
    Fixture::new().assert_change("one byte of an input", true, |f| {
        fs::write(f.path("input.txt"), "inpuT\n").unwrap();
    });
    Fixture::new().assert_change("a mode bit", true, |f| {
        fs::set_permissions(f.path("input.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    });
    Fixture::new().assert_change("a file added", true, |f| {
        fs::write(f.path("dir/added.txt"), "").unwrap();
    });
    Fixture::new().assert_change("a file removed", true, |f| {
        fs::remove_file(f.path("dir/nested.txt")).unwrap();
    });
    Fixture::new().assert_change("an empty directory added", true, |f| {
        fs::create_dir(f.path("dir/empty")).unwrap();
    });
    let linked = Fixture::new();
    std::os::unix::fs::symlink("input.txt", linked.path("link")).unwrap();
    linked.assert_change("a symlink target", true, |f| {
        fs::remove_file(f.path("link")).unwrap();
        std::os::unix::fs::symlink("dir/nested.txt", f.path("link")).unwrap();
    });
    Fixture::new().assert_change("the command", true, |f| {
        f.write_task(&TASK.replace("echo \"out 2\"", "echo \"out 2!\""), "");
    });
    Fixture::new().assert_change("an env value", true, |f| {
        f.write_task(&TASK.replace("\"hello\"", "\"hellO\""), "");
    });
    Fixture::with(TASK, r#"cache_key = ["gcc-13"]"#).assert_change(
        "a cache_key entry",
        true,
        |f| f.write_task(TASK, r#"cache_key = ["gcc-14"]"#),
    );
    Fixture::new().assert_change("an ignored file", false, |f| {
        fs::write(f.path("ignored.txt"), "changed, but ignored\n").unwrap();
    });
    Fixture::new().assert_change("only timestamps", false, |f| {
        let input = f.path("input.txt");
        let before = fs::metadata(&input).unwrap().modified().unwrap();
        let content = fs::read(&input).unwrap();
        fs::remove_file(&input).unwrap();
        fs::write(&input, content).unwrap();
        let an_hour_ago = before - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&input)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        assert_ne!(fs::metadata(&input).unwrap().modified().unwrap(), before);
    });
}

#[test]
fn a_tools_content_is_in_the_key() {
    let fixture = Fixture::new();
    let tools = tempfile::tempdir().unwrap();
    let tool = tools.path().join("mytool");
    fs::write(&tool, "#!/bin/sh\necho one\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let with_tool = ["--tool", tool.to_str().unwrap()];
    let (first, _out) = fixture.run(&with_tool);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let (second, _out) = fixture.run(&with_tool);
    assert!(is_hit(&second), "{}", stderr(&second));
    fs::write(&tool, "#!/bin/sh\necho two\n").unwrap();
    let (third, _out) = fixture.run(&with_tool);
    assert!(!is_hit(&third), "{}", stderr(&third));
    assert_eq!(fixture.runs(), 2);
}

#[test]
fn a_changed_file_is_a_miss_even_with_its_size_and_mtime_restored() {
    // The stat cache must not trust size and mtime alone: the ctime tells.
    let fixture = Fixture::new();
    fixture.assert_change("same size, mtime put back", true, |f| {
        let path = f.path("input.txt");
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, "INPUT\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(before)
            .unwrap();
    });
}

#[test]
fn only_runs_that_exit_0_are_stored_unless_the_task_caches_failures() {
    let failing = TASK.replace("echo \"err 2\" >&2", "echo \"err 2\" >&2; exit 3");
    let fixture = Fixture::with(&failing, "");
    for _ in 0..2 {
        let (output, _out) = fixture.run(&[]);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        assert!(!is_hit(&output));
    }
    assert_eq!(fixture.runs(), 2);
    assert!(fixture.entries().is_empty());

    let fixture = Fixture::with(&failing, "cache_failures = true");
    let (first, first_out) = fixture.run(&[]);
    assert_eq!(first.status.code(), Some(3));
    let (second, second_out) = fixture.run(&[]);
    assert!(is_hit(&second), "{}", stderr(&second));
    assert_eq!(second.status.code(), Some(3), "the recorded status");
    assert_eq!(stdout(&second), stdout(&first));
    assert_eq!(snapshot(second_out.path()), snapshot(first_out.path()));
    assert_eq!(fixture.runs(), 1);
}

#[test]
fn no_cache_runs_again_and_refreshes_the_entry_and_without_opting_in_nothing_is_stored() {
    let fixture = Fixture::new();
    fixture.run(&[]);
    let before = fs::read(&fixture.entries()[0]).unwrap();
    // An entry records its time to the second: two runs within one second, as fast as each
    // other, store the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (refreshed, _out) = fixture.run(&["--no-cache"]);
    assert_eq!(refreshed.status.code(), Some(0), "{}", stderr(&refreshed));
    assert!(!is_hit(&refreshed));
    assert_eq!(fixture.runs(), 2);
    let after = fs::read(&fixture.entries()[0]).unwrap();
    assert_ne!(before, after, "the entry is the new run's");
    let (hit, _out) = fixture.run(&[]);
    assert!(is_hit(&hit));

    let plain = Fixture::with(&TASK.replace("cache   = true", ""), "");
    for _ in 0..2 {
        let (output, _out) = plain.run(&[]);
        assert!(!is_hit(&output));
    }
    assert_eq!(plain.runs(), 2);
    assert!(plain.entries().is_empty());
    // `--cache` opts in from the command line.
    for _ in 0..2 {
        plain.run(&["--cache"]);
    }
    assert_eq!(plain.runs(), 3);
}

#[test]
fn two_runs_of_one_key_at_once_are_both_correct_and_leave_one_entry() {
    let fixture = Fixture::new();
    let outs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            fixture
                .command(out.path(), &["t"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), "out 1\nout 2\n");
    }
    for out in &outs {
        assert_eq!(
            fs::read_to_string(out.path().join("out/copy.txt")).unwrap(),
            "input\n"
        );
    }
    let entries = fixture.entries();
    assert_eq!(entries.len(), 1, "one entry, no partial files: {entries:?}");
    let (hit, _out) = fixture.run(&[]);
    assert!(is_hit(&hit), "{}", stderr(&hit));
}

#[test]
fn a_corrupted_entry_is_a_warning_and_a_fresh_run() {
    // A flipped byte in the record (near the start) and in the archive (near the end).
    for at_end in [false, true] {
        let fixture = Fixture::new();
        fixture.run(&[]);
        let entry = fixture.entries().remove(0);
        let mut bytes = fs::read(&entry).unwrap();
        let at = if at_end { bytes.len() - 80 } else { 40 };
        bytes[at] ^= 0x01;
        fs::write(&entry, bytes).unwrap();

        let (output, out) = fixture.run(&[]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(!is_hit(&output));
        assert!(
            stderr(&output).contains("buildr: warning: the cache entry")
                && stderr(&output).contains("was damaged"),
            "{}",
            stderr(&output)
        );
        assert_eq!(fixture.runs(), 2, "a fresh run");
        assert_eq!(
            fs::read_to_string(out.path().join("out/copy.txt")).unwrap(),
            "input\n"
        );
        let (hit, _out) = fixture.run(&[]);
        assert!(is_hit(&hit), "the fresh run was stored: {}", stderr(&hit));
    }
}

#[test]
fn the_size_bound_evicts_the_least_recently_used() {
    // Three tasks (three keys) with incompressible outputs of 40 kB; room for two entries.
    let task = |name: &str| {
        TASK.replace("task \"t\"", &format!("task \"{name}\""))
            .replace("echo \"out 1\"", &format!("echo \"out 1 {name}\""))
            .replace(
                "mkdir -p out",
                "mkdir -p out; head -c 40000 /dev/urandom > out/random",
            )
    };
    let fixture = Fixture::with(&[task("a"), task("b"), task("c")].concat(), "");
    let run = |name: &str| stderr(&fixture.run_bounded(name, "100KiB")).contains("buildr: cached:");
    assert!(!run("a"));
    assert!(!run("b"));
    assert!(run("a"), "a is now the most recently used");
    assert!(!run("c"), "stores c, evicting b");
    assert_eq!(fixture.entries().len(), 2);
    assert!(run("a"));
    assert!(run("c"));
    assert!(!run("b"), "b was evicted");
    assert_eq!(fixture.runs(), 4);
}

#[test]
fn cache_info_and_prune() {
    let fixture = Fixture::new();
    fixture.run(&[]);
    let cache = |args: &[&str]| {
        Command::new(buildr_bin())
            .arg("cache")
            .args(args)
            .env("XDG_CACHE_HOME", fixture.xdg.path())
            .output()
            .unwrap()
    };
    let info = cache(&["info"]);
    assert_eq!(info.status.code(), Some(0), "{}", stderr(&info));
    assert!(stdout(&info).contains("entries:   1"), "{}", stdout(&info));

    // What a run that died while storing left: deleted once it is an hour old.
    let entries_dir = fixture.xdg.path().join("buildr/entries");
    let abandoned = entries_dir.join(".partial-abandoned");
    let live = entries_dir.join(".partial-live");
    for partial in [&abandoned, &live] {
        fs::write(partial, "half an entry").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&abandoned)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    let kept = cache(&["prune", "--older-than", "1h"]);
    assert_eq!(stdout(&kept), "deleted 0 entries (0 B)\n");
    assert!(!abandoned.exists() && live.exists());
    fs::remove_file(&live).unwrap();
    assert_eq!(fixture.entries().len(), 1);
    let pruned = cache(&["prune"]);
    assert!(
        stdout(&pruned).starts_with("deleted 1 entry ("),
        "{}",
        stdout(&pruned)
    );
    assert!(fixture.entries().is_empty());
    let (output, _out) = fixture.run(&[]);
    assert!(!is_hit(&output));
    assert_eq!(fixture.runs(), 2);

    let bad = Command::new(buildr_bin())
        .args(["cache", "info"])
        .env("XDG_CACHE_HOME", fixture.xdg.path())
        .env("BUILDR_CACHE_MAX", "lots")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("BUILDR_CACHE_MAX=lots is not a size"),
        "{}",
        stderr(&bad)
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn on_k8s_a_hit_needs_no_cluster_and_the_image_is_in_the_key() {
    let ns = Namespace::new("cache");
    let repo = tempfile::tempdir().unwrap();
    let xdg = tempfile::tempdir().unwrap();
    write_files(repo.path(), &[("input.txt", "input\n")]);
    let script = "mkdir -p out && cat input.txt > out/copy.txt && echo ran";
    let run = |image: &str, kubeconfig: Option<&Path>| {
        let out = tempfile::tempdir().unwrap();
        let mut command = ns.command(
            repo.path(),
            out.path(),
            image,
            &["--cache", "--", "sh", "-c", script],
        );
        command.env("XDG_CACHE_HOME", xdg.path());
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), "ran\n");
        assert_eq!(
            fs::read_to_string(out.path().join("out/copy.txt")).unwrap(),
            "input\n"
        );
        stderr(&output).contains("buildr: cached:")
    };
    assert!(!run(&base_image(), None));
    ns.assert_nothing_left();
    // A kubeconfig that names no cluster: a hit must not need one, so it creates no pod.
    let nowhere = tempfile::tempdir().unwrap();
    let missing = nowhere.path().join("missing-kubeconfig");
    // Exit 0 with a kubeconfig that cannot reach a cluster is the proof that a hit needs none.
    assert!(run(&base_image(), Some(&missing)));
    // Another image is another key: a real run, in a pod.
    assert!(!run(BUSYBOX_IMAGE, None));
    ns.assert_nothing_left();
    assert!(run(BUSYBOX_IMAGE, Some(&missing)));
}

/// The key `-v` printed for a run.
fn key_of(output: &Output) -> buildr::cache::Key {
    let said = stderr(output);
    let hex = said
        .lines()
        .find_map(|l| l.strip_prefix("buildr: cache key "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no key in: {said}"));
    buildr::cache::Key::from_hex(hex).unwrap()
}

/// `buildr run t` with `env` set on top of the test's own, into a fresh --out.
fn run_with_env(fixture: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let out = tempfile::tempdir().unwrap();
    let mut args = extra.to_vec();
    args.push("t");
    let mut command = fixture.command(out.path(), &args);
    command.envs(env.iter().copied());
    command.output().unwrap()
}

#[test]
fn the_environment_the_executor_passes_to_the_task_is_in_the_key() {
    let fixture = Fixture::new();
    let path = std::env::var("PATH").unwrap();
    let bin = tempfile::tempdir().unwrap();
    let other_path = format!("{}:{path}", bin.path().display());
    let first = run_with_env(&fixture, &[], &[("PATH", &path), ("LANG", "C.UTF-8")]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let same = run_with_env(&fixture, &[], &[("PATH", &path), ("LANG", "C.UTF-8")]);
    assert!(is_hit(&same), "{}", stderr(&same));
    // Another PATH finds other programs: another key, although nothing else changed.
    let moved = run_with_env(&fixture, &[], &[("PATH", &other_path), ("LANG", "C.UTF-8")]);
    assert!(!is_hit(&moved), "PATH changed: {}", stderr(&moved));
    let language = run_with_env(&fixture, &[], &[("PATH", &path), ("LANG", "de_DE.UTF-8")]);
    assert!(!is_hit(&language), "LANG changed: {}", stderr(&language));
    assert_eq!(fixture.runs(), 3);
}

#[test]
fn the_executor_binarys_content_is_in_the_key() {
    let fixture = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let executor = dir.path().join("buildr-executor");
    fs::copy(common::executor_bin(), &executor).unwrap();
    let with = ["--executor-binary", executor.to_str().unwrap()];
    let (first, _out) = fixture.run(&with);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let (second, _out) = fixture.run(&with);
    assert!(is_hit(&second), "{}", stderr(&second));
    // One byte more at its end: the same version of buildr, another binary (it still runs).
    let mut bytes = fs::read(&executor).unwrap();
    bytes.push(0);
    fs::write(&executor, bytes).unwrap();
    let (third, _out) = fixture.run(&with);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert!(!is_hit(&third), "another executor: {}", stderr(&third));
    assert_eq!(fixture.runs(), 2);
}

#[test]
fn a_failure_stored_by_a_task_that_caches_failures_is_not_replayed_to_one_that_does_not() {
    let failing = TASK.replace("echo \"err 2\" >&2", "echo \"err 2\" >&2; exit 3");
    let fixture = Fixture::with(&failing, "cache_failures = true");
    let (first, _out) = fixture.run(&[]);
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    fixture.write_task(&failing, "");
    let (second, _out) = fixture.run(&[]);
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    assert!(!is_hit(&second), "{}", stderr(&second));
    assert_eq!(fixture.runs(), 2);
}

#[test]
fn a_result_larger_than_the_bound_is_not_stored_and_evicts_nothing() {
    let big = TASK.replace("task \"t\"", "task \"big\"").replace(
        "mkdir -p out",
        "mkdir -p out; head -c 300000 /dev/urandom > out/random",
    );
    let fixture = Fixture::with(&[TASK, &big].concat(), "");
    let run = |name: &str| fixture.run_bounded(name, "100KiB");
    assert!(!is_hit(&run("t")));
    let big_run = run("big");
    assert!(
        stderr(&big_run).contains("buildr: warning: the result was not cached: the result takes"),
        "{}",
        stderr(&big_run)
    );
    assert_eq!(fixture.entries().len(), 1, "t is still there, big is not");
    assert!(
        is_hit(&run("t")),
        "t was not evicted for an entry that never fit"
    );
}

#[test]
fn a_cache_directory_others_can_write_to_is_refused() {
    let fixture = Fixture::new();
    let dir = fixture.xdg.path().join("buildr");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let (output, _out) = fixture.run(&[]);
    assert_eq!(output.status.code(), Some(125), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "buildr: the cache directory {0} can be written by others (mode 777): it must be \
             yours and writable by you alone (`chmod go-w {0}`, or set XDG_CACHE_HOME to a \
             directory of your own)\n",
            dir.display()
        )
    );
    assert_eq!(fixture.runs(), 0);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let (output, _out) = fixture.run(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn a_record_from_beyond_the_calendar_with_a_hostile_name_replays_without_a_panic() {
    use buildr::cache::{Record, Store};
    let fixture = Fixture::new();
    let (first, _out) = fixture.run(&["-v"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let key = key_of(&first);
    // As a registry could have sent it: a time no calendar holds, a name that drives the
    // terminal.
    let record = Record {
        task: "t\u{1b}]0;owned\u{7}\u{1b}[2J".to_string(),
        created_at: u64::MAX,
        duration_ms: u64::MAX,
        exit_code: 0,
        signal: 0,
        error: String::new(),
        deleted_paths: Vec::new(),
    };
    let store = Store::new(fixture.xdg.path().join("buildr"), 1 << 30);
    let mut output = tempfile::tempfile().unwrap();
    store.put(&key, &record, &mut output, None).unwrap();
    let (replayed, _out) = fixture.run(&[]);
    assert_eq!(replayed.status.code(), Some(0), "{}", stderr(&replayed));
    let said = stderr(&replayed);
    assert!(
        said.contains("an impossible time (18446744073709551615 s after 1970)"),
        "{said}"
    );
    assert!(!said.contains('\u{1b}'), "the name is escaped: {said:?}");
    assert_eq!(fixture.runs(), 1);
}
