//! Task files and input collection, from the outside: the example `.buildr/` of this
//! repository, errors from real files, and inputs gathered from real directory trees.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::fs;
use std::path::{Path, PathBuf};

use buildr::task::{InputFile, InputMapping, Run, TaskError, TaskSet, collect_inputs};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_tasks_load() {
    let set = TaskSet::load(repo_root()).expect("the example task files load");
    let names: Vec<&str> = set.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fail", "hello", "test"]);

    let hello = set.get("hello").unwrap();
    let Run::Script { shell, script } = &hello.run else {
        panic!("hello is a script")
    };
    assert_eq!(shell, &["/bin/sh", "-eu", "-c"]);
    assert!(
        script.starts_with("echo \"hello from $GREETING"),
        "{script}"
    );
    assert!(!script.starts_with(' '), "the heredoc is dedented");
    assert!(
        script.contains("\nmkdir -p out\n"),
        "every line is dedented"
    );
    assert!(
        script.contains(r#"printf '#!/bin/sh\necho"#),
        "heredoc backslashes are literal"
    );
    assert_eq!(hello.env["GREETING"], "buildr");
    assert_eq!(hello.outputs, ["out/**"]);
    let file = repo_root().join(".buildr/tasks.hcl");
    assert_eq!(hello.defined_at.file, file);
    assert_eq!(hello.argv().len(), 4);

    let test = set.get("test").unwrap();
    assert_eq!(
        test.inputs,
        [InputMapping {
            from: "src".into(),
            to: "src".into()
        }]
    );
    assert!(matches!(&test.run, Run::Command(argv) if argv[0] == "sh"));
}

#[test]
fn the_example_inputs_exist() {
    let set = TaskSet::load(repo_root()).unwrap();
    let files = collect_inputs(repo_root(), &set.get("test").unwrap().inputs).unwrap();
    assert!(files.iter().any(|f| f.dest == Path::new("src/lib.rs")));
    assert!(files.iter().all(|f| f.dest.starts_with("src")));
}

#[test]
fn no_task_dir_is_an_empty_set() {
    let repo = tempfile::tempdir().unwrap();
    let set = TaskSet::load(repo.path()).unwrap();
    assert!(set.is_empty());
    let err = set.get("hello").unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "no task named `hello`; no tasks are defined (task files are {}/*.hcl)",
            repo.path().join(".buildr").display()
        )
    );
}

/// A repository with the given task files under `.buildr/`.
fn repo_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join(".buildr");
    fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
    repo
}

fn load_error(files: &[(&str, &str)]) -> (String, PathBuf) {
    let repo = repo_with(files);
    let err = TaskSet::load(repo.path()).expect_err("loading fails");
    (err.to_string(), repo.path().join(".buildr"))
}

#[test]
fn a_missing_task_suggests_the_closest() {
    let repo = repo_with(&[(
        "tasks.hcl",
        "task \"hello\" {\n  command = [\"true\"]\n}\ntask \"test\" {\n  command = [\"true\"]\n}\n",
    )]);
    let set = TaskSet::load(repo.path()).unwrap();
    let err = set.get("helo").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no task named `helo`; did you mean `hello`? Available tasks: hello, test"
    );
    assert!(matches!(err, TaskError::Missing { suggestion: Some(s), .. } if s == "hello"));
    assert_eq!(
        set.get("deploy").unwrap_err().to_string(),
        "no task named `deploy`; available tasks: hello, test"
    );
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let (err, dir) = load_error(&[("tasks.hcl", "task \"a\" {\n  command = [\"x\",, ]\n}\n")]);
    let file = dir.join("tasks.hcl");
    assert!(
        err.starts_with(&format!(
            "{}:2:18: invalid expression; expected",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn an_unknown_attribute_is_located_and_corrected() {
    let (err, dir) = load_error(&[(
        "tasks.hcl",
        "task \"hello\" {\n  description = \"hi\"\n    comand = [\"echo\"]\n}\n",
    )]);
    assert_eq!(
        err,
        format!(
            "{}:3:5: unknown attribute `comand` in task \"hello\"; expected one of: description, \
             command, script, shell, env, workdir, timeout, outputs, tools, cache, cache_key, \
             cache_failures, cache_registry, inputs_registry, sandbox, writable, readable (did you mean \
             `command`?)",
            dir.join("tasks.hcl").display()
        )
    );
}

#[test]
fn a_wrong_type_is_located() {
    let (err, dir) = load_error(&[(
        "tasks.hcl",
        "task \"hello\" {\n  command = \"make -j4\"\n}\n",
    )]);
    assert_eq!(
        err,
        format!(
            "{}:2:13: `command` in task \"hello\": expected a list of strings, found a string",
            dir.join("tasks.hcl").display()
        )
    );
}

#[test]
fn command_and_script_together_are_refused() {
    let (err, dir) = load_error(&[(
        "tasks.hcl",
        "task \"hello\" {\n  command = [\"make\"]\n  script = \"make\"\n}\n",
    )]);
    assert_eq!(
        err,
        format!(
            "{}:3:3: task \"hello\" sets both `command` and `script`; expected exactly one of them",
            dir.join("tasks.hcl").display()
        )
    );
}

#[test]
fn a_container_mistake_is_located_and_corrected() {
    let (err, dir) = load_error(&[(
        "tasks.hcl",
        "task \"build\" {\n  command = [\"make\"]\n  container {\n    image  = \"debian\"\n    egress = \"dsn\"\n  }\n}\n",
    )]);
    assert_eq!(
        err,
        format!(
            "{}:5:14: `egress` in `container` in task \"build\": expected one of: none, dns, no-link-local, all; \
             found \"dsn\" (did you mean `dns`?)",
            dir.join("tasks.hcl").display()
        )
    );
}

#[test]
fn a_task_defined_in_two_files_names_both() {
    let (err, dir) = load_error(&[
        ("a.hcl", "task \"build\" {\n  command = [\"make\"]\n}\n"),
        (
            "b.hcl",
            "# the second one\n\ntask \"other\" {\n  command = [\"true\"]\n}\n  task \"build\" {\n  command = [\"make\"]\n}\n",
        ),
    ]);
    assert_eq!(
        err,
        format!(
            "{}:6:3: task \"build\" is defined twice; it is also defined at {}:1:1",
            dir.join("b.hcl").display(),
            dir.join("a.hcl").display()
        )
    );
}

#[test]
fn files_load_in_name_order_and_other_files_are_skipped() {
    let repo = repo_with(&[
        ("b.hcl", "task \"b\" {\n  command = [\"true\"]\n}\n"),
        ("a.hcl", "task \"a\" {\n  command = [\"true\"]\n}\n"),
        ("notes.txt", "not a task file {"),
    ]);
    let set = TaskSet::load(repo.path()).unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["a", "b"]);
}

// ---- inputs ----

/// Writes `files` (path -> contents; a path ending in `/` is an empty directory) under `root`.
fn tree(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        if path.to_string_lossy().ends_with('/') {
            fs::create_dir_all(&path).unwrap();
        } else {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
        }
    }
}

fn dests(files: &[InputFile]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.dest.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn whole_repo_skips_git_and_honours_gitignore_and_buildrignore_only() {
    let repo = tempfile::tempdir().unwrap();
    tree(
        repo.path(),
        &[
            (".git/HEAD", "ref: refs/heads/main"),
            (".gitignore", "target/\n*.log\n"),
            (".buildrignore", "big/\n"),
            (".hidden", "kept"),
            (".ignore", "src/main.rs\n"), // not an ignore file for buildr
            ("target/debug/x", ""),
            ("big/blob", ""),
            ("build.log", ""),
            ("src/main.rs", ""),
            ("src/.gitignore", "generated.rs\n"),
            ("src/generated.rs", ""),
            ("src/nested/.buildrignore", "secret\n"),
            ("src/nested/secret", ""),
            ("src/nested/public", ""),
            ("empty/", ""),
            ("sub/.git", "gitdir: elsewhere"),
            ("sub/file", ""),
        ],
    );
    std::os::unix::fs::symlink("src/main.rs", repo.path().join("link")).unwrap();
    std::os::unix::fs::symlink("src", repo.path().join("dirlink")).unwrap();

    let files = collect_inputs(repo.path(), &[]).unwrap();
    assert_eq!(
        dests(&files),
        [
            ".buildrignore",
            ".gitignore",
            ".hidden",
            ".ignore",
            "dirlink",
            "empty",
            "link",
            "src",
            "src/.gitignore",
            "src/main.rs",
            "src/nested",
            "src/nested/.buildrignore",
            "src/nested/public",
            "sub",
            "sub/file",
        ]
    );
    for file in &files {
        assert!(file.source.is_absolute());
        assert_eq!(file.source, repo.path().join(&file.dest));
    }
    let link = files.iter().find(|f| f.dest == Path::new("link")).unwrap();
    assert!(
        fs::symlink_metadata(&link.source)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let dirlink = files
        .iter()
        .find(|f| f.dest == Path::new("dirlink"))
        .unwrap();
    assert!(
        fs::symlink_metadata(&dirlink.source)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn gitignore_applies_without_a_git_repository() {
    let repo = tempfile::tempdir().unwrap();
    tree(
        repo.path(),
        &[(".gitignore", "/out\n"), ("out/x", ""), ("a/out/y", "")],
    );
    assert!(!repo.path().join(".git").exists());
    let files = collect_inputs(repo.path(), &[]).unwrap();
    assert_eq!(dests(&files), [".gitignore", "a", "a/out", "a/out/y"]);
}

#[test]
fn mappings_move_subdirs_and_files_and_still_honour_ignores() {
    let repo = tempfile::tempdir().unwrap();
    tree(
        repo.path(),
        &[
            (".gitignore", "*.o\n"),
            ("src/a.c", ""),
            ("src/a.o", ""),
            ("src/inner/b.c", ""),
            ("src/inner/empty/", ""),
            ("Makefile", ""),
            ("docs/readme", ""),
        ],
    );
    let mappings = [
        InputMapping {
            from: "src".into(),
            to: "code/c".into(),
        },
        InputMapping {
            from: "Makefile".into(),
            to: ".".into(),
        },
        InputMapping {
            from: "./src/inner/".into(),
            to: "again".into(),
        },
    ];
    let files = collect_inputs(repo.path(), &mappings).unwrap();
    assert_eq!(
        dests(&files),
        [
            "Makefile",
            "again",
            "again/b.c",
            "again/empty",
            "code/c",
            "code/c/a.c",
            "code/c/inner",
            "code/c/inner/b.c",
            "code/c/inner/empty",
        ]
    );
    let b = files
        .iter()
        .find(|f| f.dest == Path::new("again/b.c"))
        .unwrap();
    assert_eq!(b.source, repo.path().join("src/inner/b.c"));
}

#[test]
fn a_missing_mapping_source_is_named() {
    let repo = tempfile::tempdir().unwrap();
    let err = collect_inputs(
        repo.path(),
        &[InputMapping {
            from: "nope".into(),
            to: "x".into(),
        }],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "input `nope` does not exist: {} not found",
            repo.path().join("nope").display()
        )
    );
}

#[test]
fn an_ignored_or_escaping_mapping_source_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    tree(
        repo.path(),
        &[(".gitignore", "target/\n"), ("target/x", "")],
    );
    let err = collect_inputs(
        repo.path(),
        &[InputMapping {
            from: "target".into(),
            to: "t".into(),
        }],
    )
    .unwrap_err();
    assert!(matches!(err, TaskError::IgnoredInput { .. }), "{err}");

    let err = collect_inputs(
        repo.path(),
        &[InputMapping {
            from: "../etc".into(),
            to: "t".into(),
        }],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input mapping `../etc` -> `t`: `..` is not allowed in paths, found \"../etc\""
    );
}

#[test]
fn two_files_on_one_destination_conflict() {
    let repo = tempfile::tempdir().unwrap();
    tree(repo.path(), &[("a/f", ""), ("b/f", "")]);
    let mapping = |from: &str| InputMapping {
        from: from.into(),
        to: "same".into(),
    };
    let err = collect_inputs(repo.path(), &[mapping("a"), mapping("b")]).unwrap_err();
    assert!(
        matches!(err, TaskError::InputConflict { ref dest, .. } if dest == Path::new("same/f")),
        "{err}"
    );
}

#[test]
fn a_bad_ignore_pattern_is_reported_with_file_and_line() {
    for (file, content, line) in [
        (".buildrignore", "ok\nsrc/[z-a]\n", 2),
        ("sub/.gitignore", "# comment\n\nfine\n[b-a]x\n", 4),
    ] {
        let repo = tempfile::tempdir().unwrap();
        tree(repo.path(), &[(file, content), ("sub/a", "a")]);
        let err = collect_inputs(repo.path(), &[]).unwrap_err();
        assert!(
            matches!(&err, TaskError::BadIgnorePattern { line: l, .. } if *l == line),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{file}:{line}: ")), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn the_cache_fields_are_read_and_checked() {
    let repo = repo_with(&[(
        "tasks.hcl",
        "task \"c\" {\n  command = [\"true\"]\n  cache = true\n  cache_key = [\"gcc-13\", \"x\"]\n  \
         cache_failures = true\n  cache_registry = \"registry.example.com/team/cache\"\n}\n\
         task \"plain\" {\n  command = [\"true\"]\n}\n",
    )]);
    let set = TaskSet::load(repo.path()).unwrap();
    let cache = &set.get("c").unwrap().cache;
    assert!(cache.enabled && cache.failures);
    assert_eq!(cache.key, ["gcc-13", "x"]);
    assert_eq!(
        cache.registry.as_deref(),
        Some("registry.example.com/team/cache")
    );
    assert_eq!(set.get("plain").unwrap().cache, Default::default());

    let (err, dir) = load_error(&[(
        "tasks.hcl",
        "task \"c\" {\n  command = [\"true\"]\n  cache = \"yes\"\n}\n",
    )]);
    assert_eq!(
        err,
        format!(
            "{}:3:11: `cache` in task \"c\": expected true or false, found a string",
            dir.join("tasks.hcl").display()
        )
    );
}

#[test]
fn the_inputs_registry_is_read_and_checked() {
    let repo = repo_with(&[(
        "tasks.hcl",
        "task \"i\" {\n  command = [\"true\"]\n  inputs_registry = \"registry.example.com/team/inputs\"\n}\n\
         task \"plain\" {\n  command = [\"true\"]\n}\n",
    )]);
    let set = TaskSet::load(repo.path()).unwrap();
    assert_eq!(
        set.get("i").unwrap().inputs_registry.as_deref(),
        Some("registry.example.com/team/inputs")
    );
    assert_eq!(set.get("plain").unwrap().inputs_registry, None);

    let (err, dir) = load_error(&[(
        "tasks.hcl",
        "task \"i\" {\n  command = [\"true\"]\n  inputs_registry = [\"a\"]\n}\n",
    )]);
    assert!(
        err.starts_with(&format!(
            "{}:3:21: `inputs_registry` in task \"i\": expected a string",
            dir.join("tasks.hcl").display()
        )),
        "{err}"
    );
}
