//! The `task "NAME" { ... }` block: what runs, where, with which inputs and outputs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block};

use super::{Expects, Field, check_body, container, input, ssh};
use crate::sandbox::{Mode, TaskSandbox};
use crate::task::inputs::clean_relative;
use crate::task::reader::Reader;
use crate::task::{
    CacheSettings, Container, DEFAULT_SHELL, InputMapping, Location, Run, SshHost, Task, TaskError,
};

/// A task as its attributes and blocks are read.
#[derive(Default)]
struct TaskDraft {
    description: String,
    // `command`, `script` and `shell` are read together once all three are known.
    command: Option<Attribute>,
    script: Option<Attribute>,
    shell: Option<Attribute>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    timeout: Option<Duration>,
    outputs: Vec<String>,
    tools: Vec<String>,
    cache: CacheSettings,
    inputs_registry: Option<String>,
    sandbox: TaskSandbox,
    inputs: Vec<InputMapping>,
    /// With where it is, to point at the first when there is a second.
    container: Option<(Container, Location)>,
    ssh: Option<(SshHost, Location)>,
}

/// The task's time limit, which `container` checks its `active_deadline` against.
const TIMEOUT: &str = "timeout";
/// Read, with the fields that say what the task runs, before the other attributes.
const DESCRIPTION: &str = "description";
const COMMAND: &str = "command";
const SCRIPT: &str = "script";
const SHELL: &str = "shell";

/// What a task block admits.
const TABLE: &[Field<TaskDraft>] = &[
    Field {
        name: DESCRIPTION,
        expects: Expects::Attribute(|file, attr, here, task| {
            task.description = file.string(&attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: COMMAND,
        expects: Expects::Attribute(|_, attr, _, task| {
            task.command = Some(attr.clone());
            Ok(())
        }),
    },
    Field {
        name: SCRIPT,
        expects: Expects::Attribute(|_, attr, _, task| {
            task.script = Some(attr.clone());
            Ok(())
        }),
    },
    Field {
        name: SHELL,
        expects: Expects::Attribute(|_, attr, _, task| {
            task.shell = Some(attr.clone());
            Ok(())
        }),
    },
    Field {
        name: "env",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.env = env(file, &attr.value, here)?;
            Ok(())
        }),
    },
    Field {
        name: "workdir",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.workdir = Some(workdir(file, attr, here)?);
            Ok(())
        }),
    },
    Field {
        name: TIMEOUT,
        expects: Expects::Attribute(|file, attr, here, task| {
            task.timeout = Some(file.duration(&attr.value, attr.key.as_str(), here)?);
            Ok(())
        }),
    },
    Field {
        name: "outputs",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.outputs = outputs(file, &attr.value, here)?;
            Ok(())
        }),
    },
    Field {
        name: "tools",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.tools = tools(file, &attr.value, here)?;
            Ok(())
        }),
    },
    Field {
        name: "cache",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.cache.enabled = file.boolean(&attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: "cache_key",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.cache.key = file.string_list(&attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: "cache_failures",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.cache.failures = file.boolean(&attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: "cache_registry",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.cache.registry = Some(file.string(&attr.value, attr.key.as_str(), here)?);
            Ok(())
        }),
    },
    Field {
        name: "inputs_registry",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.inputs_registry = Some(file.string(&attr.value, attr.key.as_str(), here)?);
            Ok(())
        }),
    },
    Field {
        name: "sandbox",
        expects: Expects::Attribute(|file, attr, here, task| {
            let names: Vec<&str> = Mode::value_variants().iter().map(|m| m.name()).collect();
            let name = file.one_of(&attr.value, attr.key.as_str(), here, &names)?;
            task.sandbox.mode = Mode::from_str(name, false).expect("`one_of` returns a name");
            Ok(())
        }),
    },
    Field {
        name: "writable",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.sandbox.writable = sandbox_paths(file, attr, here)?;
            Ok(())
        }),
    },
    Field {
        name: "readable",
        expects: Expects::Attribute(|file, attr, here, task| {
            task.sandbox.readable = sandbox_paths(file, attr, here)?;
            Ok(())
        }),
    },
    Field {
        name: "input",
        expects: Expects::Block {
            syntax: input::SYNTAX,
            read: |file, block, here, task| {
                task.inputs.push(input::read(file, block, here)?);
                Ok(())
            },
        },
    },
    Field {
        name: "container",
        expects: Expects::Block {
            syntax: container::SYNTAX,
            read: |file, block, here, task| {
                let at = file.at(block.span());
                if let Some((_, first)) = &task.container {
                    return Err(second_block(at, here, "container", first));
                }
                task.container = Some((container::read(file, block, here, task.timeout)?, at));
                Ok(())
            },
        },
    },
    Field {
        name: "ssh",
        expects: Expects::Block {
            syntax: ssh::SYNTAX,
            read: |file, block, here, task| {
                let at = file.at(block.span());
                if let Some((_, first)) = &task.ssh {
                    return Err(second_block(at, here, "ssh", first));
                }
                task.ssh = Some((ssh::read(file, block, here)?, at));
                Ok(())
            },
        },
    },
];

/// A second `ident` block in a task, which takes at most one.
fn second_block(at: Location, here: &str, ident: &str, first: &Location) -> TaskError {
    TaskError::Invalid {
        at,
        message: format!(
            "{here} has a second `{ident}` block; expected at most one (the first is at {first})"
        ),
    }
}

/// Reads a `task` block.
pub(in crate::task) fn read(file: &Reader, block: &Block) -> Result<Task, TaskError> {
    let name = task_name(file, block)?;
    let defined_at = file.at(block.span());
    let context = format!("task \"{name}\"");
    let mut task = TaskDraft::default();
    let body = check_body(file, block, &context, TABLE)?;
    // The order errors have always been found in: `timeout` (which `container` needs), the
    // blocks, `description`, what the task runs, then the other attributes in table order.
    let read_in_order = |wanted: &dyn Fn(&str) -> bool, task: &mut TaskDraft| {
        body.read_attributes_in_table_order(file, &context, TABLE, wanted, task)
    };
    read_in_order(&|name| name == TIMEOUT, &mut task)?;
    body.read_blocks(file, &context, &mut task)?;
    let first = |name: &str| [DESCRIPTION, COMMAND, SCRIPT, SHELL].contains(&name);
    read_in_order(&first, &mut task)?;
    let run = run(file, block, &task, &context)?;
    read_in_order(&|name| name != TIMEOUT && !first(name), &mut task)?;
    Ok(Task {
        name,
        description: task.description,
        run,
        env: task.env,
        workdir: task.workdir.unwrap_or_else(|| ".".to_string()),
        timeout: task.timeout,
        inputs: task.inputs,
        outputs: task.outputs,
        tools: task.tools,
        cache: task.cache,
        inputs_registry: task.inputs_registry,
        sandbox: task.sandbox,
        container: task.container.map(|(c, _)| c).unwrap_or_default(),
        ssh: task.ssh.map(|(s, _)| s).unwrap_or_default(),
        defined_at,
    })
}

fn task_name(file: &Reader, block: &Block) -> Result<String, TaskError> {
    let Some(label) = block.labels.first() else {
        return Err(file.invalid(
            block.span(),
            "task block without a name; expected `task \"NAME\" { ... }`",
        ));
    };
    if let Some(extra) = block.labels.get(1) {
        return Err(file.invalid(
            extra.span(),
            format!(
                "task \"{}\" has more than one label; expected exactly one, the task name",
                label.as_str()
            ),
        ));
    }
    let name = label.as_str();
    if name.is_empty() || name.starts_with('-') || name.chars().any(char::is_whitespace) {
        return Err(file.invalid(
            label.span(),
            format!(
                "invalid task name {name:?}; expected a non-empty name without whitespace, not starting with `-`"
            ),
        ));
    }
    Ok(name.to_string())
}

/// What the task runs, from `command`, `script` and `shell` together.
fn run(file: &Reader, block: &Block, task: &TaskDraft, context: &str) -> Result<Run, TaskError> {
    let shell = task.shell.as_ref();
    match (task.command.as_ref(), task.script.as_ref()) {
        (Some(command), Some(script)) => {
            // Point at whichever of the two comes second.
            let later = if command.span().map(|s| s.start) > script.span().map(|s| s.start) {
                command
            } else {
                script
            };
            Err(file.invalid(
                later.span(),
                format!("{context} sets both `command` and `script`; expected exactly one of them"),
            ))
        }
        (None, None) => Err(file.invalid(
            block.span(),
            format!(
                "{context} has neither `command` nor `script`; expected exactly one of them \
                 (`command = [\"PROGRAM\", \"ARG\"]` or `script = \"...\"`)"
            ),
        )),
        (Some(command), None) => {
            if let Some(shell) = shell {
                return Err(file.invalid(
                    shell.span(),
                    format!(
                        "`shell` in {context} only applies to `script`; with `command`, put the program in the list itself"
                    ),
                ));
            }
            let argv = file.string_list(&command.value, "command", context)?;
            if argv.first().is_none_or(String::is_empty) {
                return Err(file.invalid(
                    command.value.span(),
                    format!(
                        "`command` in {context}: expected a non-empty list of strings starting with the program"
                    ),
                ));
            }
            Ok(Run::Command(argv))
        }
        (None, Some(script)) => {
            let script = file.string(&script.value, "script", context)?;
            let shell = match shell {
                Some(shell) => {
                    let argv = file.string_list(&shell.value, "shell", context)?;
                    if argv.first().is_none_or(String::is_empty) {
                        return Err(file.invalid(
                            shell.value.span(),
                            format!(
                                "`shell` in {context}: expected a non-empty list of strings starting with the program, like [\"/bin/sh\", \"-c\"]"
                            ),
                        ));
                    }
                    argv
                }
                None => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
            };
            Ok(Run::Script { shell, script })
        }
    }
}

/// `writable` and `readable`: absolute paths, or under the home directory (`~/...`) of the
/// machine the task runs on; a relative one would depend on where the executor started.
fn sandbox_paths(file: &Reader, attr: &Attribute, context: &str) -> Result<Vec<String>, TaskError> {
    let what = attr.key.as_str();
    let paths = file.string_list(&attr.value, what, context)?;
    if let Some(bad) = paths
        .iter()
        .find(|p| !(p.starts_with('/') || p.as_str() == "~" || p.starts_with("~/")))
    {
        return Err(file.invalid(
            attr.value.span(),
            format!(
                "`{what}` in {context}: {bad:?} is neither absolute nor under `~/`; expected \
                 paths like \"~/.cache/go-build\" or \"/opt/sdk\""
            ),
        ));
    }
    Ok(paths)
}

/// Relative to the workspace root, cleaned (`./sub/` is `sub`).
fn workdir(file: &Reader, attr: &Attribute, context: &str) -> Result<String, TaskError> {
    let workdir = file.string(&attr.value, "workdir", context)?;
    let clean = clean_relative(Path::new(&workdir)).map_err(|reason| {
        file.invalid(
            attr.value.span(),
            format!("`workdir` in {context}: {reason}"),
        )
    })?;
    Ok(clean.to_string_lossy().into_owned())
}

fn env(
    file: &Reader,
    expr: &Expression,
    context: &str,
) -> Result<BTreeMap<String, String>, TaskError> {
    let entries = file.string_entries(
        expr,
        "env",
        context,
        "an object of strings, like { NAME = \"value\" }",
    )?;
    let mut env = BTreeMap::new();
    for entry in entries {
        let name = entry.key;
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(file.invalid(
                entry.key_at,
                format!(
                    "`env` in {context}: invalid variable name {name:?}; expected a non-empty name without `=`"
                ),
            ));
        }
        if entry.value.contains('\0') {
            return Err(file.invalid(
                entry.value_at,
                format!("`env.{name}` in {context}: a value may not contain a NUL byte"),
            ));
        }
        env.insert(name, entry.value);
    }
    Ok(env)
}

fn outputs(file: &Reader, expr: &Expression, context: &str) -> Result<Vec<String>, TaskError> {
    let elements = file.string_elements(expr, "outputs", context)?;
    for (pattern, element) in &elements {
        let complaint = if pattern.is_empty() {
            Some("an empty pattern matches nothing".to_string())
        } else if pattern.starts_with('/') {
            Some(format!(
                "{pattern:?} is absolute; patterns match paths relative to the workspace, drop the leading `/`"
            ))
        } else {
            globset::Glob::new(pattern)
                .err()
                .map(|e| format!("invalid glob {pattern:?}: {}", e.kind()))
        };
        if let Some(complaint) = complaint {
            return Err(file.invalid(
                element.span(),
                format!(
                    "`outputs` in {context}: {complaint}; expected glob patterns like \"out/**\""
                ),
            ));
        }
    }
    Ok(elements.into_iter().map(|(pattern, _)| pattern).collect())
}

/// Bare program names or repository paths, each sent under its file name, which must be
/// unique; kept as written, since `./x` is a path and `x` a name.
fn tools(file: &Reader, expr: &Expression, context: &str) -> Result<Vec<String>, TaskError> {
    let elements = file.string_elements(expr, "tools", context)?;
    let mut names: Vec<(&str, &Expression)> = Vec::new();
    for (spec, element) in &elements {
        let complaint = if spec.contains('/') {
            clean_relative(Path::new(spec)).err()
        } else if spec.is_empty() || spec == "." || spec == ".." {
            Some(format!("{spec:?} names no program"))
        } else {
            None
        };
        if let Some(complaint) = complaint {
            return Err(file.invalid(
                element.span(),
                format!(
                    "`tools` in {context}: {complaint}; expected program names found in \
                     PATH (\"jq\") or paths in the repository (\"./bin/lint\")"
                ),
            ));
        }
        let name = crate::tools::name_of(spec);
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
            return Err(file.invalid(
                element.span(),
                format!(
                    "`tools` in {context}: a second tool named `{name}` (the first is at {}); \
                     expected each name once",
                    file.at(first.span())
                ),
            ));
        }
        names.push((name, element));
    }
    Ok(elements.into_iter().map(|(spec, _)| spec).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::task::parse::testing::{assert_errors, parse};
    use crate::task::{InputMapping, Run};

    #[test]
    fn everything_parses() {
        let tasks = parse(
            r#"
task build {
  description = "all of it"
  command = ["make", "-j4"]
  env = { A = "1", "B.C" = "2" }
  workdir = "./sub/"
  timeout = "1h 30m"
  input "src" { to = "./code" }
  input "." { to = "all" }
  outputs = ["out/**", "*.log"]
  tools = ["jq", "./bin/lint"]
  container {
    image = "debian:bookworm"
    cpu_request = "500m"
    cpu_limit = "2"
    memory_request = "256Mi"
    memory_limit = "1Gi"
  }
}
"#,
        )
        .unwrap();
        let task = &tasks[0];
        assert_eq!(task.name, "build");
        assert_eq!(task.description, "all of it");
        assert_eq!(task.run, Run::Command(vec!["make".into(), "-j4".into()]));
        assert_eq!(task.env.get("B.C").map(String::as_str), Some("2"));
        assert_eq!(task.workdir, "sub");
        assert_eq!(task.timeout, Some(Duration::from_secs(5400)));
        assert_eq!(
            task.inputs,
            [
                InputMapping {
                    from: "src".into(),
                    to: "code".into()
                },
                InputMapping {
                    from: ".".into(),
                    to: "all".into()
                }
            ]
        );
        assert_eq!(task.outputs, ["out/**", "*.log"]);
        assert_eq!(task.tools, ["jq", "./bin/lint"]);
        assert_eq!(task.container.image.as_deref(), Some("debian:bookworm"));
        assert_eq!(task.container.memory_limit.as_deref(), Some("1Gi"));
        assert_eq!(task.defined_at.to_string(), "t.hcl:2:1");
    }

    #[test]
    fn errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "task \"a\" {\n  comand = [\"x\"]\n}\n",
                "t.hcl:2:3: unknown attribute `comand` in task \"a\"; expected one of: description, command, script, shell, env, workdir, timeout, outputs, tools, cache, cache_key, cache_failures, cache_registry, inputs_registry, sandbox, writable, readable (did you mean `command`?)",
            ),
            (
                "task \"a\" {\n  command = \"make\"\n}\n",
                "t.hcl:2:13: `command` in task \"a\": expected a list of strings, found a string",
            ),
            (
                "task \"a\" {\n  command = [\"make\", 4]\n}\n",
                "t.hcl:2:22: `command` in task \"a\": expected a list of strings, found a number",
            ),
            (
                "task \"a\" {\n  command = []\n}\n",
                "t.hcl:2:13: `command` in task \"a\": expected a non-empty list of strings starting with the program",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  command = [\"y\"]\n}\n",
                "t.hcl:3:3: task \"a\" sets both `command` and `script`; expected exactly one of them",
            ),
            (
                "task \"a\" {\n  description = \"d\"\n}\n",
                "t.hcl:1:1: task \"a\" has neither `command` nor `script`; expected exactly one of them (`command = [\"PROGRAM\", \"ARG\"]` or `script = \"...\"`)",
            ),
            (
                "task \"a\" {\n  command = [\"x\"]\n  shell = [\"bash\", \"-c\"]\n}\n",
                "t.hcl:3:3: `shell` in task \"a\" only applies to `script`; with `command`, put the program in the list itself",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  timeout = \"10 lightyears\"\n}\n",
                "t.hcl:3:13: `timeout` in task \"a\": invalid duration \"10 lightyears\" (unknown time unit \"lightyears\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); expected a duration like \"90s\", \"10m\" or \"1h 30m\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  timeout = 10\n}\n",
                "t.hcl:3:13: `timeout` in task \"a\": expected a string, found a number",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  workdir = \"a/../..\"\n}\n",
                "t.hcl:3:13: `workdir` in task \"a\": `..` is not allowed in paths, found \"a/../..\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  inputs \"src\" { to = \"x\" }\n}\n",
                "t.hcl:3:3: unknown block type `inputs` in task \"a\"; expected one of: input, container, ssh (did you mean `input`?)",
            ),
            (
                "tsk \"a\" {\n}\n",
                "t.hcl:1:1: unknown block type `tsk`; expected `task \"NAME\" { ... }` (did you mean `task`?)",
            ),
            (
                "\n\ntask {\n  script = \"x\"\n}\n",
                "t.hcl:3:1: task block without a name; expected `task \"NAME\" { ... }`",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  env = { A = 1 }\n}\n",
                "t.hcl:3:15: `env.A` in task \"a\": expected a string, found a number",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  env = [\"A=1\"]\n}\n",
                "t.hcl:3:9: `env` in task \"a\": expected an object of strings, like { NAME = \"value\" }, found a list",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  description = hello\n}\n",
                "t.hcl:3:17: `description` in task \"a\": expected a string, found the variable `hello`; HCL reads a bare word as a variable, quote it: \"hello\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  container {\n    imag = \"x\"\n  }\n}\n",
                "t.hcl:4:5: unknown attribute `imag` in `container` in task \"a\"; expected one of: image, cpu_request, cpu_limit, memory_request, memory_limit, ephemeral_storage_request, ephemeral_storage_limit, workspace_size_limit, node_selector, service_account, image_pull_secrets, labels, annotations, env_from_secrets, env_from_config_maps, egress, start_timeout, active_deadline, run_as_user, pool (did you mean `image`?)",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  outputs = [\"out/[\"]\n}\n",
                "t.hcl:3:14: `outputs` in task \"a\": invalid glob \"out/[\": unclosed character class; missing ']'; expected glob patterns like \"out/**\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  tools = [\"jq\", \"../bin/jq\"]\n}\n",
                "t.hcl:3:18: `tools` in task \"a\": `..` is not allowed in paths, found \"../bin/jq\"; expected program names found in PATH (\"jq\") or paths in the repository (\"./bin/lint\")",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  tools = [\"jq\", \"./bin/jq\"]\n}\n",
                "t.hcl:3:18: `tools` in task \"a\": a second tool named `jq` (the first is at t.hcl:3:12); expected each name once",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  tools = \"jq\"\n}\n",
                "t.hcl:3:11: `tools` in task \"a\": expected a list of strings, found a string",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  container = {}\n}\n",
                "t.hcl:3:3: `container` in task \"a\" is a block, not an attribute; expected `container { image = \"...\" }`",
            ),
            (
                "x = 1\n",
                "t.hcl:1:1: unexpected attribute `x` outside a task; expected `task \"NAME\" { ... }` blocks",
            ),
        ];
        assert_errors(cases, str::to_string);
    }
}
