//! HCL task files to [`Task`]s, with a location on every error.
//!
//! hcl-rs's serde path would lose the spans, so the file is parsed with hcl-edit, whose
//! structures keep byte ranges into the source, and read by hand.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl_edit::Span;
use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{Attribute, Block, Structure};
use hcl_edit::template::{Element, Template};

use super::inputs::clean_relative;
use super::{Container, DEFAULT_SHELL, InputMapping, Location, Run, Task, TaskError, closest};

const TASK_ATTRIBUTES: &[&str] = &[
    "description",
    "command",
    "script",
    "shell",
    "env",
    "workdir",
    "timeout",
    "outputs",
];
const TASK_BLOCKS: &[&str] = &["input", "container"];
const INPUT_ATTRIBUTES: &[&str] = &["to"];
const CONTAINER_ATTRIBUTES: &[&str] = &[
    "image",
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
];

/// Parses the tasks of one task file, in the order they are written. `path` is only used in
/// locations. Duplicate names within the file are left to [`super::TaskSet`].
pub fn parse_file(path: &Path, source: &str) -> Result<Vec<Task>, TaskError> {
    let body = hcl_edit::parser::parse_body(source).map_err(|e| TaskError::Syntax {
        at: Location {
            file: path.to_path_buf(),
            line: e.location().line(),
            column: e.location().column(),
        },
        message: e.message().to_string(),
    })?;
    let file = File { path, source };
    body.iter().map(|structure| file.task(structure)).collect()
}

/// The file being read, to turn spans into locations.
struct File<'a> {
    path: &'a Path,
    source: &'a str,
}

impl File<'_> {
    fn at(&self, span: Option<Range<usize>>) -> Location {
        Location::from_offset(self.path, self.source, span.map_or(0, |s| s.start))
    }

    fn invalid(&self, span: Option<Range<usize>>, message: impl Into<String>) -> TaskError {
        TaskError::Invalid {
            at: self.at(span),
            message: message.into(),
        }
    }

    fn task(&self, structure: &Structure) -> Result<Task, TaskError> {
        let block = match structure {
            Structure::Block(block) if block.ident.as_str() == "task" => block,
            Structure::Block(block) => {
                let ident = block.ident.as_str();
                return Err(self.invalid(
                    block.ident.span(),
                    format!(
                        "unknown block type `{ident}`; expected `task \"NAME\" {{ ... }}`{}",
                        did_you_mean(ident, &["task"])
                    ),
                ));
            }
            Structure::Attribute(attr) => {
                return Err(self.invalid(
                    attr.span(),
                    format!(
                        "unexpected attribute `{}` outside a task; expected `task \"NAME\" {{ ... }}` blocks",
                        attr.key.as_str()
                    ),
                ));
            }
        };
        let name = self.task_name(block)?;
        let defined_at = self.at(block.span());
        let context = format!("task \"{name}\"");

        let mut attrs: BTreeMap<&str, &Attribute> = BTreeMap::new();
        let mut inputs = Vec::new();
        let mut container: Option<(Container, Location)> = None;
        for structure in block.body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    if TASK_ATTRIBUTES.contains(&key) {
                        // The parser already refuses a key given twice.
                        attrs.insert(key, attr);
                    } else if TASK_BLOCKS.contains(&key) {
                        return Err(self.invalid(
                            attr.span(),
                            format!(
                                "`{key}` in {context} is a block, not an attribute; expected {}",
                                block_syntax(key)
                            ),
                        ));
                    } else {
                        return Err(self.unknown_attribute(attr, &context, TASK_ATTRIBUTES));
                    }
                }
                Structure::Block(inner) => match inner.ident.as_str() {
                    "input" => inputs.push(self.input(inner, &context)?),
                    "container" => {
                        let at = self.at(inner.span());
                        if let Some((_, first)) = &container {
                            return Err(TaskError::Invalid {
                                at,
                                message: format!(
                                    "{context} has a second `container` block; expected at most one (the first is at {first})"
                                ),
                            });
                        }
                        container = Some((self.container(inner, &context)?, at));
                    }
                    ident if TASK_ATTRIBUTES.contains(&ident) => {
                        return Err(self.invalid(
                            inner.span(),
                            format!(
                                "`{ident}` in {context} is an attribute, not a block; expected `{ident} = ...`"
                            ),
                        ));
                    }
                    ident => {
                        return Err(self.invalid(
                            inner.ident.span(),
                            format!(
                                "unknown block type `{ident}` in {context}; expected one of: {}{}",
                                TASK_BLOCKS.join(", "),
                                did_you_mean(ident, TASK_BLOCKS)
                            ),
                        ));
                    }
                },
            }
        }

        let description = match attrs.get("description") {
            Some(attr) => self.string(&attr.value, "description", &context)?,
            None => String::new(),
        };
        let run = self.run(block, &attrs, &context)?;
        let env = match attrs.get("env") {
            Some(attr) => self.env(&attr.value, &context)?,
            None => BTreeMap::new(),
        };
        let workdir = match attrs.get("workdir") {
            Some(attr) => {
                let workdir = self.string(&attr.value, "workdir", &context)?;
                let clean = clean_relative(Path::new(&workdir)).map_err(|reason| {
                    self.invalid(
                        attr.value.span(),
                        format!("`workdir` in {context}: {reason}"),
                    )
                })?;
                clean.to_string_lossy().into_owned()
            }
            None => ".".to_string(),
        };
        let timeout = match attrs.get("timeout") {
            Some(attr) => Some(self.timeout(&attr.value, &context)?),
            None => None,
        };
        let outputs = match attrs.get("outputs") {
            Some(attr) => self.outputs(&attr.value, &context)?,
            None => Vec::new(),
        };

        Ok(Task {
            name,
            description,
            run,
            env,
            workdir,
            timeout,
            inputs,
            outputs,
            container: container.map(|(c, _)| c).unwrap_or_default(),
            defined_at,
        })
    }

    fn task_name(&self, block: &Block) -> Result<String, TaskError> {
        let Some(label) = block.labels.first() else {
            return Err(self.invalid(
                block.span(),
                "task block without a name; expected `task \"NAME\" { ... }`",
            ));
        };
        if let Some(extra) = block.labels.get(1) {
            return Err(self.invalid(
                extra.span(),
                format!(
                    "task \"{}\" has more than one label; expected exactly one, the task name",
                    label.as_str()
                ),
            ));
        }
        let name = label.as_str();
        if name.is_empty() || name.starts_with('-') || name.chars().any(char::is_whitespace) {
            return Err(self.invalid(
                label.span(),
                format!(
                    "invalid task name {name:?}; expected a non-empty name without whitespace, not starting with `-`"
                ),
            ));
        }
        Ok(name.to_string())
    }

    fn run(
        &self,
        block: &Block,
        attrs: &BTreeMap<&str, &Attribute>,
        context: &str,
    ) -> Result<Run, TaskError> {
        let shell = attrs.get("shell");
        match (attrs.get("command"), attrs.get("script")) {
            (Some(command), Some(script)) => {
                // Point at whichever of the two comes second.
                let later = if command.span().map(|s| s.start) > script.span().map(|s| s.start) {
                    command
                } else {
                    script
                };
                Err(self.invalid(
                    later.span(),
                    format!(
                        "{context} sets both `command` and `script`; expected exactly one of them"
                    ),
                ))
            }
            (None, None) => Err(self.invalid(
                block.span(),
                format!(
                    "{context} has neither `command` nor `script`; expected exactly one of them \
                     (`command = [\"PROGRAM\", \"ARG\"]` or `script = \"...\"`)"
                ),
            )),
            (Some(command), None) => {
                if let Some(shell) = shell {
                    return Err(self.invalid(
                        shell.span(),
                        format!(
                            "`shell` in {context} only applies to `script`; with `command`, put the program in the list itself"
                        ),
                    ));
                }
                let argv = self.string_list(&command.value, "command", context)?;
                if argv.first().is_none_or(String::is_empty) {
                    return Err(self.invalid(
                        command.value.span(),
                        format!(
                            "`command` in {context}: expected a non-empty list of strings starting with the program"
                        ),
                    ));
                }
                Ok(Run::Command(argv))
            }
            (None, Some(script)) => {
                let script = self.string(&script.value, "script", context)?;
                let shell = match shell {
                    Some(shell) => {
                        let argv = self.string_list(&shell.value, "shell", context)?;
                        if argv.first().is_none_or(String::is_empty) {
                            return Err(self.invalid(
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

    fn input(&self, block: &Block, context: &str) -> Result<InputMapping, TaskError> {
        let syntax = block_syntax("input");
        let Some(label) = block.labels.first() else {
            return Err(self.invalid(
                block.span(),
                format!("`input` block in {context} without a source path; expected {syntax}"),
            ));
        };
        if let Some(extra) = block.labels.get(1) {
            return Err(self.invalid(
                extra.span(),
                format!("`input` block in {context} has more than one label; expected {syntax}"),
            ));
        }
        let from_text = label.as_str();
        let here = format!("input \"{from_text}\" in {context}");
        let from = clean_relative(Path::new(from_text))
            .map_err(|reason| self.invalid(label.span(), format!("{here}: {reason}")))?;
        let mut to = None;
        for structure in block.body.iter() {
            match structure {
                Structure::Attribute(attr) if attr.key.as_str() == "to" => {
                    let text = self.string(&attr.value, "to", &here)?;
                    let path = clean_relative(Path::new(&text)).map_err(|reason| {
                        self.invalid(attr.value.span(), format!("`to` in {here}: {reason}"))
                    })?;
                    to = Some(path);
                }
                Structure::Attribute(attr) => {
                    return Err(self.unknown_attribute(attr, &here, INPUT_ATTRIBUTES));
                }
                Structure::Block(inner) => {
                    return Err(self.invalid(
                        inner.span(),
                        format!(
                            "unexpected block `{}` in {here}; expected only `to = \"WORKSPACE/PATH\"`",
                            inner.ident.as_str()
                        ),
                    ));
                }
            }
        }
        let to: PathBuf = to.ok_or_else(|| {
            self.invalid(
                block.span(),
                format!(
                    "{here} has no `to`; expected `input \"{from_text}\" {{ to = \"WORKSPACE/PATH\" }}`"
                ),
            )
        })?;
        Ok(InputMapping { from, to })
    }

    fn container(&self, block: &Block, context: &str) -> Result<Container, TaskError> {
        let here = format!("`container` in {context}");
        if let Some(label) = block.labels.first() {
            return Err(self.invalid(
                label.span(),
                format!("{here} takes no label; expected `container {{ ... }}`"),
            ));
        }
        let mut container = Container::default();
        for structure in block.body.iter() {
            let attr = match structure {
                Structure::Attribute(attr) => attr,
                Structure::Block(inner) => {
                    return Err(self.invalid(
                        inner.span(),
                        format!(
                            "unexpected block `{}` in {here}; expected attributes: {}",
                            inner.ident.as_str(),
                            CONTAINER_ATTRIBUTES.join(", ")
                        ),
                    ));
                }
            };
            let key = attr.key.as_str();
            let slot = match key {
                "image" => &mut container.image,
                "cpu_request" => &mut container.cpu_request,
                "cpu_limit" => &mut container.cpu_limit,
                "memory_request" => &mut container.memory_request,
                "memory_limit" => &mut container.memory_limit,
                _ => return Err(self.unknown_attribute(attr, &here, CONTAINER_ATTRIBUTES)),
            };
            let value = self.string(&attr.value, key, &here)?;
            if value.trim().is_empty() {
                return Err(self.invalid(
                    attr.value.span(),
                    format!("`{key}` in {here}: expected a non-empty string"),
                ));
            }
            *slot = Some(value);
        }
        Ok(container)
    }

    fn env(&self, expr: &Expression, context: &str) -> Result<BTreeMap<String, String>, TaskError> {
        let Expression::Object(object) = expr else {
            return Err(self.wrong_type(
                expr,
                "env",
                context,
                "an object of strings, like { NAME = \"value\" }",
            ));
        };
        let mut env = BTreeMap::new();
        for (key, value) in object.iter() {
            let name = match key {
                ObjectKey::Ident(ident) => ident.as_str().to_string(),
                ObjectKey::Expression(expr) => self.string(expr, "env", context)?,
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(self.invalid(
                    key.span(),
                    format!(
                        "`env` in {context}: invalid variable name {name:?}; expected a non-empty name without `=`"
                    ),
                ));
            }
            let text = self.string(value.expr(), &format!("env.{name}"), context)?;
            if text.contains('\0') {
                return Err(self.invalid(
                    value.expr().span(),
                    format!("`env.{name}` in {context}: a value may not contain a NUL byte"),
                ));
            }
            env.insert(name, text);
        }
        Ok(env)
    }

    fn timeout(&self, expr: &Expression, context: &str) -> Result<Duration, TaskError> {
        let text = self.string(expr, "timeout", context)?;
        let expected = "expected a duration like \"90s\", \"10m\" or \"1h 30m\"";
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if duration.is_zero() => Err(self.invalid(
                expr.span(),
                format!("`timeout` in {context} is zero; {expected}"),
            )),
            Ok(duration) => Ok(duration),
            Err(e) => Err(self.invalid(
                expr.span(),
                format!("`timeout` in {context}: invalid duration {text:?} ({e}); {expected}"),
            )),
        }
    }

    fn outputs(&self, expr: &Expression, context: &str) -> Result<Vec<String>, TaskError> {
        let patterns = self.string_list(expr, "outputs", context)?;
        let elements: Vec<&Expression> = match expr {
            Expression::Array(array) => array.iter().collect(),
            _ => Vec::new(),
        };
        for (pattern, element) in patterns.iter().zip(elements) {
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
                return Err(self.invalid(
                    element.span(),
                    format!(
                        "`outputs` in {context}: {complaint}; expected glob patterns like \"out/**\""
                    ),
                ));
            }
        }
        Ok(patterns)
    }

    /// A string literal, a quoted string or a heredoc without interpolation.
    fn string(&self, expr: &Expression, what: &str, context: &str) -> Result<String, TaskError> {
        match expr {
            Expression::String(s) => Ok(s.value().clone()),
            Expression::StringTemplate(template) => self.template(template, what, context),
            Expression::HeredocTemplate(heredoc) => self.template(&heredoc.template, what, context),
            Expression::Parenthesis(inner) => self.string(inner.inner(), what, context),
            _ => Err(self.wrong_type(expr, what, context, "a string")),
        }
    }

    fn template(
        &self,
        template: &Template,
        what: &str,
        context: &str,
    ) -> Result<String, TaskError> {
        let mut text = String::new();
        for element in template.iter() {
            match element {
                Element::Literal(literal) => text.push_str(literal.value()),
                Element::Interpolation(interpolation) => {
                    return Err(self.invalid(
                        interpolation.span(),
                        format!(
                            "`{what}` in {context}: interpolation is not supported; use $VAR in the \
                             script, which the shell expands (write $${{ for a literal ${{)"
                        ),
                    ));
                }
                Element::Directive(directive) => {
                    return Err(self.invalid(
                        directive.span(),
                        format!(
                            "`{what}` in {context}: template directives are not supported \
                             (write %%{{ for a literal %{{)"
                        ),
                    ));
                }
            }
        }
        Ok(text)
    }

    fn string_list(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<Vec<String>, TaskError> {
        let Expression::Array(array) = expr else {
            return Err(self.wrong_type(expr, what, context, "a list of strings"));
        };
        array
            .iter()
            .map(|element| match element {
                Expression::String(_)
                | Expression::StringTemplate(_)
                | Expression::HeredocTemplate(_) => self.string(element, what, context),
                _ => Err(self.wrong_type(element, what, context, "a list of strings")),
            })
            .collect()
    }

    fn wrong_type(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        expected: &str,
    ) -> TaskError {
        let mut message = format!(
            "`{what}` in {context}: expected {expected}, found {}",
            describe(expr)
        );
        if let Expression::Variable(name) = expr {
            message.push_str(&format!(
                "; HCL reads a bare word as a variable, quote it: \"{}\"",
                name.as_str()
            ));
        }
        self.invalid(expr.span(), message)
    }

    fn unknown_attribute(&self, attr: &Attribute, context: &str, expected: &[&str]) -> TaskError {
        let key = attr.key.as_str();
        self.invalid(
            attr.span(),
            format!(
                "unknown attribute `{key}` in {context}; expected one of: {}{}",
                expected.join(", "),
                did_you_mean(key, expected)
            ),
        )
    }
}

fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates.iter().copied())
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn block_syntax(ident: &str) -> &'static str {
    match ident {
        "input" => "`input \"REPO/PATH\" { to = \"WORKSPACE/PATH\" }`",
        _ => "`container { image = \"...\" }`",
    }
}

/// What an expression is, for "found ..." in messages.
fn describe(expr: &Expression) -> String {
    match expr {
        Expression::Null(_) => "null".into(),
        Expression::Bool(_) => "a bool".into(),
        Expression::Number(_) => "a number".into(),
        Expression::String(_) | Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => {
            "a string".into()
        }
        Expression::Array(_) => "a list".into(),
        Expression::Object(_) => "an object".into(),
        Expression::Variable(name) => format!("the variable `{}`", name.as_str()),
        Expression::FuncCall(_) => "a function call".into(),
        _ => "an expression".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<Vec<Task>, TaskError> {
        parse_file(Path::new("t.hcl"), source)
    }

    fn error(source: &str) -> String {
        parse(source).expect_err("expected an error").to_string()
    }

    #[test]
    fn heredoc_is_dedented_and_escapes_are_kept_literal() {
        let tasks = parse(
            "task \"a\" {\n  script = <<-EOT\n    echo \"$GREETING $${HOME}\"\n      indented\n  EOT\n}\n",
        )
        .unwrap();
        let Run::Script { shell, script } = &tasks[0].run else {
            panic!("expected a script")
        };
        assert_eq!(script, "echo \"$GREETING ${HOME}\"\n  indented\n");
        assert_eq!(shell, &["/bin/sh", "-c"]);
    }

    #[test]
    fn plain_heredoc_keeps_its_indentation() {
        let tasks = parse("task \"a\" {\n  script = <<EOT\n  x\nEOT\n}\n").unwrap();
        assert_eq!(tasks[0].argv()[2], "  x\n");
    }

    #[test]
    fn quoted_string_escape_gives_a_literal_dollar_brace() {
        let tasks =
            parse("task \"a\" {\n  command = [\"echo\", \"$${HOME}\", \"%%{x}\"]\n}\n").unwrap();
        assert_eq!(tasks[0].argv(), ["echo", "${HOME}", "%{x}"]);
    }

    #[test]
    fn interpolation_is_refused_where_it_is() {
        assert_eq!(
            error("task \"a\" {\n  command = [\"echo\", \"${HOME}\"]\n}\n"),
            "t.hcl:2:23: `command` in task \"a\": interpolation is not supported; use $VAR in the \
             script, which the shell expands (write $${ for a literal ${)"
        );
        assert!(
            error("task \"a\" {\n  script = <<-EOT\n    echo ${x}\n  EOT\n}\n")
                .starts_with("t.hcl:3:10: `script` in task \"a\": interpolation is not supported")
        );
    }

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
        assert_eq!(task.container.image.as_deref(), Some("debian:bookworm"));
        assert_eq!(task.container.memory_limit.as_deref(), Some("1Gi"));
        assert_eq!(task.defined_at.to_string(), "t.hcl:2:1");
    }

    #[test]
    fn errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "task \"a\" {\n  comand = [\"x\"]\n}\n",
                "t.hcl:2:3: unknown attribute `comand` in task \"a\"; expected one of: description, command, script, shell, env, workdir, timeout, outputs (did you mean `command`?)",
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
                "task \"a\" {\n  script = \"x\"\n  input \"src\" {}\n}\n",
                "t.hcl:3:3: input \"src\" in task \"a\" has no `to`; expected `input \"src\" { to = \"WORKSPACE/PATH\" }`",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  input \"../up\" { to = \"x\" }\n}\n",
                "t.hcl:3:9: input \"../up\" in task \"a\": `..` is not allowed in paths, found \"../up\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  input \"src\" { to = \"/abs\" }\n}\n",
                "t.hcl:3:22: `to` in input \"src\" in task \"a\": expected a relative path, found the absolute path \"/abs\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  workdir = \"a/../..\"\n}\n",
                "t.hcl:3:13: `workdir` in task \"a\": `..` is not allowed in paths, found \"a/../..\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  inputs \"src\" { to = \"x\" }\n}\n",
                "t.hcl:3:3: unknown block type `inputs` in task \"a\"; expected one of: input, container (did you mean `input`?)",
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
                "t.hcl:4:5: unknown attribute `imag` in `container` in task \"a\"; expected one of: image, cpu_request, cpu_limit, memory_request, memory_limit (did you mean `image`?)",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  outputs = [\"out/[\"]\n}\n",
                "t.hcl:3:14: `outputs` in task \"a\": invalid glob \"out/[\": unclosed character class; missing ']'; expected glob patterns like \"out/**\"",
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
        for (source, expected) in cases {
            assert_eq!(&error(source), expected, "for source:\n{source}");
        }
    }

    #[test]
    fn no_prefix_of_a_valid_file_panics() {
        let source = include_str!("../../.buildr/tasks.hcl");
        assert!(parse(source).is_ok());
        for (end, _) in source.char_indices() {
            // Errors are fine, panics are not; and every error has a real line.
            if let Err(TaskError::Syntax { at, .. } | TaskError::Invalid { at, .. }) =
                parse(&source[..end])
            {
                assert!(at.line >= 1 && at.column >= 1, "{at}");
            }
        }
    }

    #[test]
    fn syntax_errors_carry_the_parser_location() {
        let err = parse("task \"a\" {\n  command = [\"x\",, ]\n}\n").unwrap_err();
        let TaskError::Syntax { at, message } = &err else {
            panic!("expected a syntax error, got {err:?}")
        };
        assert_eq!((at.line, at.column), (2, 18));
        assert!(
            message.starts_with("invalid expression; expected"),
            "{message}"
        );
        assert!(
            err.to_string()
                .starts_with("t.hcl:2:18: invalid expression; expected")
        );

        assert_eq!(
            error("task \"a\" {\n  script = \"x\"\n  script = \"y\"\n}\n"),
            "t.hcl:3:3: invalid attribute; expected unique attribute key; found redefined attribute"
        );
    }
}
