//! HCL task files to [`Task`]s, with a location on every error.
//!
//! hcl-rs's serde path would lose the spans, so the file is parsed with hcl-edit, whose
//! structures keep byte ranges into the source, and read by hand.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::PossibleValue;
use hcl_edit::Span;
use hcl_edit::expr::{Expression, ObjectKey, UnaryOperator};
use hcl_edit::structure::{Attribute, Block, Structure};
use hcl_edit::template::{Element, Template};

use super::inputs::clean_relative;
use super::names;
use super::quantity::{self, QUANTITY_RULE};
use super::{
    Container, DEFAULT_SHELL, Egress, InputMapping, Location, Run, Task, TaskError, Toleration,
    closest,
};

const TASK_ATTRIBUTES: &[&str] = &[
    "description",
    "command",
    "script",
    "shell",
    "env",
    "workdir",
    "timeout",
    "outputs",
    "tools",
];
const TASK_BLOCKS: &[&str] = &["input", "container"];
const INPUT_ATTRIBUTES: &[&str] = &["to"];
const CONTAINER_ATTRIBUTES: &[&str] = &[
    "image",
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
    "ephemeral_storage_request",
    "ephemeral_storage_limit",
    "workspace_size_limit",
    "node_selector",
    "service_account",
    "image_pull_secrets",
    "labels",
    "annotations",
    "env_from_secrets",
    "env_from_config_maps",
    "egress",
    "start_timeout",
    "active_deadline",
    "run_as_user",
];
const CONTAINER_BLOCKS: &[&str] = &["toleration"];
const TOLERATION_ATTRIBUTES: &[&str] =
    &["key", "operator", "value", "effect", "toleration_seconds"];
const TOLERATION_OPERATORS: &[&str] = &["Equal", "Exists"];
const TOLERATION_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
/// Label key prefixes buildr sets on its own pods (to find and clean them up); a task may not
/// set or shadow them.
const RESERVED_LABEL_PREFIXES: &[&str] = &["buildr.dev/", "app.kubernetes.io/managed-by"];
/// Kubernetes keeps user ids to 32-bit signed integers.
const MAX_USER_ID: i64 = i32::MAX as i64;

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

        let (attributes, blocks) = self.body(block, &context, TASK_ATTRIBUTES, TASK_BLOCKS)?;
        // The parser already refuses a key given twice.
        let attrs: BTreeMap<&str, &Attribute> = attributes
            .into_iter()
            .map(|attr| (attr.key.as_str(), attr))
            .collect();
        let timeout = match attrs.get("timeout") {
            Some(attr) => Some(self.duration(&attr.value, "timeout", &context)?),
            None => None,
        };
        let mut inputs = Vec::new();
        let mut container: Option<(Container, Location)> = None;
        for inner in blocks {
            if inner.ident.as_str() == "input" {
                inputs.push(self.input(inner, &context)?);
                continue;
            }
            let at = self.at(inner.span());
            if let Some((_, first)) = &container {
                return Err(TaskError::Invalid {
                    at,
                    message: format!(
                        "{context} has a second `container` block; expected at most one (the first is at {first})"
                    ),
                });
            }
            container = Some((self.container(inner, &context, timeout)?, at));
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
        let outputs = match attrs.get("outputs") {
            Some(attr) => self.outputs(&attr.value, &context)?,
            None => Vec::new(),
        };
        let tools = match attrs.get("tools") {
            Some(attr) => self.tools(&attr.value, &context)?,
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
            tools,
            container: container.map(|(c, _)| c).unwrap_or_default(),
            defined_at,
        })
    }

    /// The attributes and blocks of `block`, in the order written, checked against the names
    /// `here` admits: an unknown name, or an attribute written as a block (or the reverse), is
    /// refused with what was expected.
    fn body<'b>(
        &self,
        block: &'b Block,
        here: &str,
        attributes: &[&str],
        blocks: &[&str],
    ) -> Result<(Vec<&'b Attribute>, Vec<&'b Block>), TaskError> {
        let mut found_attributes = Vec::new();
        let mut found_blocks = Vec::new();
        for structure in block.body.iter() {
            let (span, message) = match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    if attributes.contains(&key) {
                        found_attributes.push(attr);
                        continue;
                    }
                    if !blocks.contains(&key) {
                        return Err(self.unknown_attribute(attr, here, attributes));
                    }
                    let message = format!(
                        "`{key}` in {here} is a block, not an attribute; expected {}",
                        block_syntax(key)
                    );
                    (attr.span(), message)
                }
                Structure::Block(inner) => {
                    let ident = inner.ident.as_str();
                    if blocks.contains(&ident) {
                        found_blocks.push(inner);
                        continue;
                    }
                    if attributes.contains(&ident) {
                        let message = format!(
                            "`{ident}` in {here} is an attribute, not a block; expected `{ident} = ...`"
                        );
                        (inner.span(), message)
                    } else if blocks.is_empty() {
                        let message = format!(
                            "unexpected block `{ident}` in {here}; expected only attributes: {}",
                            attributes.join(", ")
                        );
                        (inner.span(), message)
                    } else {
                        let message = format!(
                            "unknown block type `{ident}` in {here}; expected one of: {}{}",
                            blocks.join(", "),
                            did_you_mean(ident, blocks)
                        );
                        (inner.ident.span(), message)
                    }
                }
            };
            return Err(self.invalid(span, message));
        }
        Ok((found_attributes, found_blocks))
    }

    /// Refuses a label on a block that takes none (`container`, `toleration`).
    fn no_label(&self, block: &Block, here: &str) -> Result<(), TaskError> {
        match block.labels.first() {
            Some(label) => Err(self.invalid(
                label.span(),
                format!(
                    "{here} takes no label; expected `{} {{ ... }}`",
                    block.ident.as_str()
                ),
            )),
            None => Ok(()),
        }
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
        let (attributes, _) = self.body(block, &here, INPUT_ATTRIBUTES, &[])?;
        let mut to = None;
        // `to` is the only attribute `body` lets through.
        for attr in attributes {
            let text = self.string(&attr.value, "to", &here)?;
            let path = clean_relative(Path::new(&text)).map_err(|reason| {
                self.invalid(attr.value.span(), format!("`to` in {here}: {reason}"))
            })?;
            to = Some(path);
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

    /// The `container` block of a task whose `timeout` is `task_timeout`.
    fn container(
        &self,
        block: &Block,
        context: &str,
        task_timeout: Option<Duration>,
    ) -> Result<Container, TaskError> {
        let here = format!("`container` in {context}");
        self.no_label(block, &here)?;
        let (attributes, blocks) =
            self.body(block, &here, CONTAINER_ATTRIBUTES, CONTAINER_BLOCKS)?;
        let mut container = Container::default();
        // Each resource's request, checked against its limit once both are read.
        let mut requests: Vec<(&str, &Expression, f64)> = Vec::new();
        let mut limits: BTreeMap<&str, f64> = BTreeMap::new();
        for attr in attributes {
            let (key, value) = (attr.key.as_str(), &attr.value);
            match key {
                "image" => container.image = Some(self.required(value, key, &here)?),
                "cpu_request" | "memory_request" | "ephemeral_storage_request" => {
                    let (text, amount) = self.quantity(value, key, &here, Bound::Request)?;
                    requests.push((key, value, amount));
                    let field = match key {
                        "cpu_request" => &mut container.cpu_request,
                        "memory_request" => &mut container.memory_request,
                        _ => &mut container.ephemeral_storage_request,
                    };
                    *field = Some(text);
                }
                "cpu_limit" | "memory_limit" | "ephemeral_storage_limit" => {
                    let (text, amount) = self.quantity(value, key, &here, Bound::Limit)?;
                    limits.insert(key, amount);
                    let field = match key {
                        "cpu_limit" => &mut container.cpu_limit,
                        "memory_limit" => &mut container.memory_limit,
                        _ => &mut container.ephemeral_storage_limit,
                    };
                    *field = Some(text);
                }
                "workspace_size_limit" => {
                    let (text, _) = self.quantity(value, key, &here, Bound::Limit)?;
                    container.workspace_size_limit = Some(text);
                }
                // Node labels are labels, but the node's, so no key of them is reserved.
                "node_selector" => container.node_selector = self.labels(value, key, &here, &[])?,
                "labels" => {
                    container.labels = self.labels(value, key, &here, RESERVED_LABEL_PREFIXES)?;
                }
                "annotations" => {
                    container.annotations = self
                        .qualified_entries(value, key, &here)?
                        .into_iter()
                        .map(|entry| (entry.key, entry.value))
                        .collect();
                }
                "service_account" => {
                    container.service_account = Some(self.object_name(value, key, &here)?);
                }
                "image_pull_secrets" => {
                    container.image_pull_secrets = self.object_names(value, key, &here)?;
                }
                "env_from_secrets" => {
                    container.env_from_secrets = self.object_names(value, key, &here)?;
                }
                "env_from_config_maps" => {
                    container.env_from_config_maps = self.object_names(value, key, &here)?;
                }
                "egress" => container.egress = Some(self.egress(value, &here)?),
                "start_timeout" => {
                    container.start_timeout = Some(self.duration(value, key, &here)?)
                }
                "active_deadline" => {
                    container.active_deadline =
                        Some(self.active_deadline(value, &here, task_timeout)?);
                }
                "run_as_user" => container.run_as_user = Some(self.run_as_user(value, &here)?),
                _ => unreachable!("`body` lets only CONTAINER_ATTRIBUTES through, not {key}"),
            }
        }
        for (request_key, expr, request) in requests {
            let limit_key = request_key.replace("_request", "_limit");
            if let Some(&limit) = limits.get(limit_key.as_str())
                && request > limit
            {
                return Err(self.complaint(
                    expr,
                    request_key,
                    &here,
                    &format!(
                        "the request is more than `{limit_key}`, which Kubernetes refuses; \
                         expected at most the limit"
                    ),
                ));
            }
        }
        // `toleration` is the only block `body` lets through.
        container.tolerations = blocks
            .into_iter()
            .map(|inner| self.toleration(inner, &here))
            .collect::<Result<_, _>>()?;
        Ok(container)
    }

    fn toleration(&self, block: &Block, context: &str) -> Result<Toleration, TaskError> {
        let here = format!("`toleration` in {context}");
        self.no_label(block, &here)?;
        let (attributes, _) = self.body(block, &here, TOLERATION_ATTRIBUTES, &[])?;
        let mut toleration = Toleration::default();
        // Where `value` and `toleration_seconds` are, for the checks across attributes.
        let mut value_at = None;
        let mut seconds_at = None;
        for attr in attributes {
            let (key, expr) = (attr.key.as_str(), &attr.value);
            match key {
                "key" => {
                    // An empty key means "every taint" to Kubernetes; leaving the key out says
                    // so more plainly, so an empty string is taken for a mistake.
                    let text = self.string(expr, key, &here)?;
                    if text.is_empty() {
                        return Err(self.complaint(
                            expr,
                            key,
                            &here,
                            "expected a non-empty key; to tolerate every taint, leave `key` out \
                             and set operator = \"Exists\"",
                        ));
                    }
                    names::qualified_name(&text)
                        .map_err(|reason| self.complaint(expr, key, &here, &reason))?;
                    toleration.key = Some(text);
                }
                "operator" => {
                    let operator = self.one_of(expr, key, &here, TOLERATION_OPERATORS)?;
                    toleration.operator = Some(operator.to_string());
                }
                "value" => {
                    let text = self.string(expr, key, &here)?;
                    names::label_value(&text)
                        .map_err(|reason| self.complaint(expr, key, &here, &reason))?;
                    toleration.value = Some(text);
                    value_at = attr.span();
                }
                "effect" => {
                    let effect = self.one_of(expr, key, &here, TOLERATION_EFFECTS)?;
                    toleration.effect = Some(effect.to_string());
                }
                "toleration_seconds" => {
                    let expected = "a whole number of seconds, 0 or more";
                    let seconds = self.integer(expr, key, &here, expected)?;
                    if seconds < 0 {
                        return Err(self.complaint(
                            expr,
                            key,
                            &here,
                            &format!("expected {expected}, found {seconds}"),
                        ));
                    }
                    toleration.toleration_seconds = Some(seconds);
                    seconds_at = attr.span();
                }
                _ => unreachable!("`body` lets only TOLERATION_ATTRIBUTES through, not {key}"),
            }
        }

        // Kubernetes' own rules across the fields, which it would only apply at pod creation.
        let exists = toleration.operator.as_deref() == Some("Exists");
        if exists && toleration.value.is_some() {
            return Err(self.invalid(
                value_at,
                format!(
                    "`value` in {here}: operator \"Exists\" matches any value, and Kubernetes \
                     refuses a value with it; drop `value` or use operator = \"Equal\""
                ),
            ));
        }
        if !exists && toleration.key.is_none() {
            return Err(self.invalid(
                block.span(),
                format!(
                    "{here} has no `key`; expected `key = \"...\"`, or operator = \"Exists\" \
                     without a key to tolerate every taint"
                ),
            ));
        }
        if toleration.toleration_seconds.is_some()
            && toleration.effect.as_deref() != Some("NoExecute")
        {
            return Err(self.invalid(
                seconds_at,
                format!(
                    "`toleration_seconds` in {here} only applies to effect = \"NoExecute\" (how \
                     long the pod stays on a node once tainted); set that effect or drop it"
                ),
            ));
        }
        Ok(toleration)
    }

    fn env(&self, expr: &Expression, context: &str) -> Result<BTreeMap<String, String>, TaskError> {
        let entries = self.string_entries(
            expr,
            "env",
            context,
            "an object of strings, like { NAME = \"value\" }",
        )?;
        let mut env = BTreeMap::new();
        for entry in entries {
            let name = entry.key;
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(self.invalid(
                    entry.key_at,
                    format!(
                        "`env` in {context}: invalid variable name {name:?}; expected a non-empty name without `=`"
                    ),
                ));
            }
            if entry.value.contains('\0') {
                return Err(self.invalid(
                    entry.value_at,
                    format!("`env.{name}` in {context}: a value may not contain a NUL byte"),
                ));
            }
            env.insert(name, entry.value);
        }
        Ok(env)
    }

    /// Labels or a node selector: qualified-name keys, label values, no key under one of
    /// `reserved`.
    fn labels(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        reserved: &[&str],
    ) -> Result<BTreeMap<String, String>, TaskError> {
        let mut labels = BTreeMap::new();
        for entry in self.qualified_entries(expr, what, context)? {
            if reserved.iter().any(|prefix| entry.key.starts_with(prefix)) {
                return Err(self.invalid(
                    entry.key_at,
                    format!(
                        "`{what}` in {context}: the key {:?} is reserved (buildr labels its own \
                         pods with keys starting with {}); expected another key",
                        entry.key,
                        reserved.join(" or ")
                    ),
                ));
            }
            names::label_value(&entry.value).map_err(|reason| {
                self.invalid(
                    entry.value_at,
                    format!("`{what}.{}` in {context}: {reason}", entry.key),
                )
            })?;
            labels.insert(entry.key, entry.value);
        }
        Ok(labels)
    }

    /// An object of strings whose keys are Kubernetes qualified names (labels, annotations).
    fn qualified_entries(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<Vec<Entry>, TaskError> {
        let entries = self.string_entries(
            expr,
            what,
            context,
            "an object of strings, like { \"example.com/key\" = \"value\" }",
        )?;
        for entry in &entries {
            names::qualified_name(&entry.key).map_err(|reason| {
                self.invalid(
                    entry.key_at.clone(),
                    format!("`{what}` in {context}: {reason}"),
                )
            })?;
        }
        Ok(entries)
    }

    /// The entries of an object of strings, in the order written; a key given twice (`a` and
    /// `"a"` are the same key, which the HCL parser lets through) is refused.
    fn string_entries(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        expected: &str,
    ) -> Result<Vec<Entry>, TaskError> {
        let Expression::Object(object) = expr else {
            return Err(self.wrong_type(expr, what, context, expected));
        };
        let mut entries: Vec<Entry> = Vec::new();
        for (key, value) in object.iter() {
            let name = match key {
                ObjectKey::Ident(ident) => ident.as_str().to_string(),
                ObjectKey::Expression(expr) => self.string(expr, what, context)?,
            };
            if let Some(first) = entries.iter().find(|entry| entry.key == name) {
                return Err(self.invalid(
                    key.span(),
                    format!(
                        "`{what}` in {context}: the key {name:?} is given twice (first at {}); expected each key once",
                        self.at(first.key_at.clone())
                    ),
                ));
            }
            let text = self.string(value.expr(), &format!("{what}.{name}"), context)?;
            entries.push(Entry {
                key: name,
                key_at: key.span(),
                value: text,
                value_at: value.expr().span(),
            });
        }
        Ok(entries)
    }

    /// A list of Secret or ConfigMap names, each at most once.
    fn object_names(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<Vec<String>, TaskError> {
        let mut list: Vec<String> = Vec::new();
        for (_, element) in self.string_elements(expr, what, context)? {
            let name = self.object_name(element, what, context)?;
            if list.contains(&name) {
                return Err(self.complaint(
                    element,
                    what,
                    context,
                    &format!("{name:?} is listed twice; expected each name once"),
                ));
            }
            list.push(name);
        }
        Ok(list)
    }

    /// The name of a Kubernetes object (Secret, ConfigMap, ServiceAccount).
    fn object_name(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<String, TaskError> {
        let name = self.required(expr, what, context)?;
        names::object_name(&name).map_err(|reason| self.complaint(expr, what, context, &reason))?;
        Ok(name)
    }

    /// The words are `Egress`'s clap value names, so that a task file and the command line
    /// spell them alike.
    fn egress(&self, expr: &Expression, context: &str) -> Result<Egress, TaskError> {
        let values: Vec<PossibleValue> = Egress::value_variants()
            .iter()
            .filter_map(ValueEnum::to_possible_value)
            .collect();
        let names: Vec<&str> = values.iter().map(PossibleValue::get_name).collect();
        let name = self.one_of(expr, "egress", context, &names)?;
        Ok(<Egress as ValueEnum>::from_str(name, false).expect("`one_of` returns a value name"))
    }

    fn run_as_user(&self, expr: &Expression, context: &str) -> Result<i64, TaskError> {
        let what = "run_as_user";
        let expected = format!("a user id from 1 to {MAX_USER_ID}");
        let uid = self.integer(expr, what, context, &expected)?;
        let reason = match uid {
            0 => format!(
                "0 is root, and the pod must run as non-root (the restricted Pod Security \
                 Standard); expected {expected}"
            ),
            1..=MAX_USER_ID => return Ok(uid),
            _ => format!("expected {expected}, found {uid}"),
        };
        Err(self.complaint(expr, what, context, &reason))
    }

    /// A quantity of a request (zero or more) or of a limit (more than zero): its text, as
    /// written, and its value.
    fn quantity(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        bound: Bound,
    ) -> Result<(String, f64), TaskError> {
        let text = self.string(expr, what, context)?;
        let amount = quantity::value(&text)
            .map_err(|reason| self.complaint(expr, what, context, &reason))?;
        let refused = match bound {
            Bound::Request if amount < 0.0 => Some("zero or more"),
            Bound::Limit if amount <= 0.0 => Some("more than zero"),
            _ => None,
        };
        match refused {
            Some(expected) => Err(self.complaint(
                expr,
                what,
                context,
                &format!("{text:?} is out of range; expected {QUANTITY_RULE}, {expected}"),
            )),
            None => Ok((text, amount)),
        }
    }

    /// A whole number of seconds (Kubernetes' unit for it), longer than the task's timeout:
    /// a deadline within it would kill the pod before the task times out.
    fn active_deadline(
        &self,
        expr: &Expression,
        context: &str,
        task_timeout: Option<Duration>,
    ) -> Result<Duration, TaskError> {
        let what = "active_deadline";
        let deadline = self.duration(expr, what, context)?;
        let reason = if deadline.subsec_nanos() != 0 {
            format!(
                "{} is not a whole number of seconds; expected a duration like \"2h\" or \"90s\"",
                humantime::format_duration(deadline)
            )
        } else if let Some(timeout) = task_timeout.filter(|timeout| deadline <= *timeout) {
            format!(
                "{} is not longer than the task's timeout ({}), so the pod would be killed \
                 before the task times out; expected a longer deadline (the task's timeout plus \
                 the time to start the pod and copy files in and out)",
                humantime::format_duration(deadline),
                humantime::format_duration(timeout)
            )
        } else {
            return Ok(deadline);
        };
        Err(self.complaint(expr, what, context, &reason))
    }

    fn duration(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<Duration, TaskError> {
        let text = self.string(expr, what, context)?;
        let expected = "expected a duration like \"90s\", \"10m\" or \"1h 30m\"";
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if duration.is_zero() => Err(self.invalid(
                expr.span(),
                format!("`{what}` in {context} is zero; {expected}"),
            )),
            Ok(duration) => Ok(duration),
            Err(e) => Err(self.invalid(
                expr.span(),
                format!("`{what}` in {context}: invalid duration {text:?} ({e}); {expected}"),
            )),
        }
    }

    fn outputs(&self, expr: &Expression, context: &str) -> Result<Vec<String>, TaskError> {
        let elements = self.string_elements(expr, "outputs", context)?;
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
                return Err(self.invalid(
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
    fn tools(&self, expr: &Expression, context: &str) -> Result<Vec<String>, TaskError> {
        let elements = self.string_elements(expr, "tools", context)?;
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
                return Err(self.invalid(
                    element.span(),
                    format!(
                        "`tools` in {context}: {complaint}; expected program names found in \
                         PATH (\"jq\") or paths in the repository (\"./bin/lint\")"
                    ),
                ));
            }
            let name = crate::tools::name_of(spec);
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                return Err(self.invalid(
                    element.span(),
                    format!(
                        "`tools` in {context}: a second tool named `{name}` (the first is at {}); \
                         expected each name once",
                        self.at(first.span())
                    ),
                ));
            }
            names.push((name, element));
        }
        Ok(elements.into_iter().map(|(spec, _)| spec).collect())
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
        let elements = self.string_elements(expr, what, context)?;
        Ok(elements.into_iter().map(|(text, _)| text).collect())
    }

    /// A list of strings, each with its expression, to point at the one that is wrong.
    fn string_elements<'e>(
        &self,
        expr: &'e Expression,
        what: &str,
        context: &str,
    ) -> Result<Vec<(String, &'e Expression)>, TaskError> {
        let Expression::Array(array) = expr else {
            return Err(self.wrong_type(expr, what, context, "a list of strings"));
        };
        array
            .iter()
            .map(|element| match element {
                Expression::String(_)
                | Expression::StringTemplate(_)
                | Expression::HeredocTemplate(_) => {
                    Ok((self.string(element, what, context)?, element))
                }
                _ => Err(self.wrong_type(element, what, context, "a list of strings")),
            })
            .collect()
    }

    /// A string that may not be empty or blank.
    fn required(&self, expr: &Expression, what: &str, context: &str) -> Result<String, TaskError> {
        let text = self.string(expr, what, context)?;
        if text.trim().is_empty() {
            return Err(self.complaint(expr, what, context, "expected a non-empty string"));
        }
        Ok(text)
    }

    /// A string that is one of `choices` (spelled exactly), suggesting the closest one.
    fn one_of<'c>(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        choices: &[&'c str],
    ) -> Result<&'c str, TaskError> {
        let text = self.string(expr, what, context)?;
        choices
            .iter()
            .find(|choice| **choice == text)
            .copied()
            .ok_or_else(|| {
                let reason = format!(
                    "expected one of: {}; found {text:?}{}",
                    choices.join(", "),
                    did_you_mean(&text, choices)
                );
                self.complaint(expr, what, context, &reason)
            })
    }

    /// A whole number literal, negative ones included (HCL writes them as `-` applied to a
    /// number). The caller checks the range; `expected` says what it wants, for messages.
    fn integer(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        expected: &str,
    ) -> Result<i64, TaskError> {
        let found = match expr {
            Expression::Number(number) => match number.value().as_i64() {
                Some(n) => return Ok(n),
                None => number.value().to_string(),
            },
            Expression::UnaryOp(op) if *op.operator.value() == UnaryOperator::Neg => {
                if let Expression::Number(number) = &op.expr
                    && let Some(n) = number.value().as_i64().and_then(i64::checked_neg)
                {
                    return Ok(n);
                }
                "a number out of range".to_string()
            }
            Expression::Parenthesis(inner) => {
                return self.integer(inner.inner(), what, context, expected);
            }
            _ => return Err(self.wrong_type(expr, what, context, expected)),
        };
        Err(self.complaint(
            expr,
            what,
            context,
            &format!("expected {expected}, found {found}"),
        ))
    }

    /// An error about the value `expr` of `what`.
    fn complaint(&self, expr: &Expression, what: &str, context: &str, reason: &str) -> TaskError {
        self.invalid(expr.span(), format!("`{what}` in {context}: {reason}"))
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

/// Which side of a resource a quantity bounds.
#[derive(Clone, Copy)]
enum Bound {
    Request,
    Limit,
}

fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates.iter().copied())
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn block_syntax(ident: &str) -> &'static str {
    match ident {
        "input" => "`input \"REPO/PATH\" { to = \"WORKSPACE/PATH\" }`",
        "toleration" => "`toleration { key = \"...\" }` (one block per toleration)",
        _ => "`container { image = \"...\" }`",
    }
}

/// One `key = "value"` of an object of strings, with where each side is.
struct Entry {
    key: String,
    key_at: Option<Range<usize>>,
    value: String,
    value_at: Option<Range<usize>>,
}

/// What an expression is, for "found ..." in messages.
fn describe(expr: &Expression) -> String {
    match expr {
        Expression::Null(_) => "null".into(),
        Expression::Bool(_) => "a bool".into(),
        Expression::Number(_) => "a number".into(),
        Expression::UnaryOp(op) if matches!(op.expr, Expression::Number(_)) => "a number".into(),
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

    /// Checks that each file, made from the first of a pair by `source`, fails with exactly the
    /// second.
    fn assert_errors(cases: &[(&str, &str)], source: impl Fn(&str) -> String) {
        for (input, expected) in cases {
            let source = source(input);
            assert_eq!(&error(&source), expected, "for source:\n{source}");
        }
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
                "t.hcl:2:3: unknown attribute `comand` in task \"a\"; expected one of: description, command, script, shell, env, workdir, timeout, outputs, tools (did you mean `command`?)",
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
                "t.hcl:4:5: unknown attribute `imag` in `container` in task \"a\"; expected one of: image, cpu_request, cpu_limit, memory_request, memory_limit, ephemeral_storage_request, ephemeral_storage_limit, workspace_size_limit, node_selector, service_account, image_pull_secrets, labels, annotations, env_from_secrets, env_from_config_maps, egress, start_timeout, active_deadline, run_as_user (did you mean `image`?)",
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

    #[test]
    fn every_container_field_lands_in_place() {
        let tasks = parse(
            r#"
task "a" {
  script = "x"
  container {
    image                = "debian:bookworm"
    cpu_request          = "500m"
    cpu_limit            = "2"
    memory_request       = "256Mi"
    memory_limit         = "1Gi"
    node_selector        = { "disktype" = "ssd", "topology.kubernetes.io/zone" = "" }
    service_account      = "builder"
    image_pull_secrets   = ["regcred", "mirror.creds"]
    labels               = { team = "infra" }
    annotations          = { "example.com/owner" = "me (any text: / , ;)" }
    env_from_secrets     = ["build-tokens"]
    env_from_config_maps = ["build-settings"]
    egress               = "dns"
    start_timeout        = "3m"
    active_deadline      = "2h"
    run_as_user          = 1000
    ephemeral_storage_request = "2Gi"
    ephemeral_storage_limit   = "20Gi"
    workspace_size_limit      = "15Gi"
    toleration {
      key                = "dedicated"
      operator           = "Equal"
      value              = "builds"
      effect             = "NoExecute"
      toleration_seconds = 60
    }
    toleration {
      operator = "Exists"
    }
  }
}
"#,
        )
        .unwrap();
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let strings =
            |items: &[&str]| -> Vec<String> { items.iter().map(|s| s.to_string()).collect() };
        assert_eq!(
            tasks[0].container,
            Container {
                image: Some("debian:bookworm".into()),
                cpu_request: Some("500m".into()),
                cpu_limit: Some("2".into()),
                memory_request: Some("256Mi".into()),
                memory_limit: Some("1Gi".into()),
                node_selector: map(&[("disktype", "ssd"), ("topology.kubernetes.io/zone", "")]),
                tolerations: vec![
                    Toleration {
                        key: Some("dedicated".into()),
                        operator: Some("Equal".into()),
                        value: Some("builds".into()),
                        effect: Some("NoExecute".into()),
                        toleration_seconds: Some(60),
                    },
                    Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    },
                ],
                service_account: Some("builder".into()),
                image_pull_secrets: strings(&["regcred", "mirror.creds"]),
                labels: map(&[("team", "infra")]),
                annotations: map(&[("example.com/owner", "me (any text: / , ;)")]),
                env_from_secrets: strings(&["build-tokens"]),
                env_from_config_maps: strings(&["build-settings"]),
                egress: Some(Egress::Dns),
                start_timeout: Some(Duration::from_secs(180)),
                active_deadline: Some(Duration::from_secs(7200)),
                run_as_user: Some(1000),
                ephemeral_storage_request: Some("2Gi".into()),
                ephemeral_storage_limit: Some("20Gi".into()),
                workspace_size_limit: Some("15Gi".into()),
            }
        );
    }

    #[test]
    fn egress_takes_every_value_name() {
        for (name, egress) in [
            ("none", Egress::None),
            ("dns", Egress::Dns),
            ("no-link-local", Egress::NoLinkLocal),
            ("all", Egress::All),
        ] {
            let source = format!(
                "task \"a\" {{\n  script = \"x\"\n  container {{ egress = \"{name}\" }}\n}}\n"
            );
            assert_eq!(parse(&source).unwrap()[0].container.egress, Some(egress));
        }
    }

    /// A task whose `container` block holds `body`, which starts on line 4.
    fn in_container(body: &str) -> String {
        format!("task \"a\" {{\n  script = \"x\"\n  container {{\n{body}\n  }}\n}}\n")
    }

    #[test]
    fn container_errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "    egres = \"dns\"",
                "t.hcl:4:5: unknown attribute `egres` in `container` in task \"a\"; expected one of: image, cpu_request, cpu_limit, memory_request, memory_limit, ephemeral_storage_request, ephemeral_storage_limit, workspace_size_limit, node_selector, service_account, image_pull_secrets, labels, annotations, env_from_secrets, env_from_config_maps, egress, start_timeout, active_deadline, run_as_user (did you mean `egress`?)",
            ),
            (
                "    tolerations {}",
                "t.hcl:4:5: unknown block type `tolerations` in `container` in task \"a\"; expected one of: toleration (did you mean `toleration`?)",
            ),
            (
                "    toleration = {}",
                "t.hcl:4:5: `toleration` in `container` in task \"a\" is a block, not an attribute; expected `toleration { key = \"...\" }` (one block per toleration)",
            ),
            (
                "    labels { team = \"infra\" }",
                "t.hcl:4:5: `labels` in `container` in task \"a\" is an attribute, not a block; expected `labels = ...`",
            ),
            (
                "    toleration \"x\" {}",
                "t.hcl:4:16: `toleration` in `container` in task \"a\" takes no label; expected `toleration { ... }`",
            ),
            (
                "    toleration {\n      key = \"a\"\n      efect = \"NoSchedule\"\n    }",
                "t.hcl:6:7: unknown attribute `efect` in `toleration` in `container` in task \"a\"; expected one of: key, operator, value, effect, toleration_seconds (did you mean `effect`?)",
            ),
            (
                "    toleration {\n      key = \"a\"\n      nested {}\n    }",
                "t.hcl:6:7: unexpected block `nested` in `toleration` in `container` in task \"a\"; expected only attributes: key, operator, value, effect, toleration_seconds",
            ),
            (
                "    egress = \"dsn\"",
                "t.hcl:4:14: `egress` in `container` in task \"a\": expected one of: none, dns, no-link-local, all; found \"dsn\" (did you mean `dns`?)",
            ),
            (
                "    egress = \"\"",
                "t.hcl:4:14: `egress` in `container` in task \"a\": expected one of: none, dns, no-link-local, all; found \"\"",
            ),
            (
                "    toleration {\n      operator = \"exists\"\n    }",
                "t.hcl:5:18: `operator` in `toleration` in `container` in task \"a\": expected one of: Equal, Exists; found \"exists\" (did you mean `Exists`?)",
            ),
            (
                "    toleration {\n      key = \"a\"\n      effect = \"NoSchedul\"\n    }",
                "t.hcl:6:16: `effect` in `toleration` in `container` in task \"a\": expected one of: NoSchedule, PreferNoSchedule, NoExecute; found \"NoSchedul\" (did you mean `NoSchedule`?)",
            ),
            (
                "    labels = { \"a/b/c\" = \"x\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": invalid key \"a/b/c\"; expected an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    labels = { \"Example.com/team\" = \"x\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": invalid key \"Example.com/team\": its prefix \"Example.com\" is not a DNS subdomain: at most 253 characters, lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit",
            ),
            (
                "    labels = { team = \"in fra\" }",
                "t.hcl:4:23: `labels.team` in `container` in task \"a\": invalid value \"in fra\"; expected an empty string or at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    node_selector = { \"disk type\" = \"ssd\" }",
                "t.hcl:4:23: `node_selector` in `container` in task \"a\": invalid key \"disk type\"; expected an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    annotations = { \"-x\" = \"any value / at all\" }",
                "t.hcl:4:21: `annotations` in `container` in task \"a\": invalid key \"-x\"; expected an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    labels = { \"buildr.dev/run\" = \"x\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": the key \"buildr.dev/run\" is reserved (buildr labels its own pods with keys starting with buildr.dev/ or app.kubernetes.io/managed-by); expected another key",
            ),
            (
                "    labels = { \"app.kubernetes.io/managed-by\" = \"me\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": the key \"app.kubernetes.io/managed-by\" is reserved (buildr labels its own pods with keys starting with buildr.dev/ or app.kubernetes.io/managed-by); expected another key",
            ),
            (
                "    labels = { team = \"a\", \"team\" = \"b\" }",
                "t.hcl:4:28: `labels` in `container` in task \"a\": the key \"team\" is given twice (first at t.hcl:4:16); expected each key once",
            ),
            (
                "    env_from_secrets = [\"Build_Tokens\"]",
                "t.hcl:4:25: `env_from_secrets` in `container` in task \"a\": invalid name \"Build_Tokens\"; expected a DNS subdomain: at most 253 characters, lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit",
            ),
            (
                "    service_account = \"Builder\"",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": invalid name \"Builder\"; expected a DNS subdomain: at most 253 characters, lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit",
            ),
            (
                "    image_pull_secrets = [\"regcred\", \"regcred\"]",
                "t.hcl:4:38: `image_pull_secrets` in `container` in task \"a\": \"regcred\" is listed twice; expected each name once",
            ),
            (
                "    env_from_config_maps = [\"\"]",
                "t.hcl:4:29: `env_from_config_maps` in `container` in task \"a\": expected a non-empty string",
            ),
            (
                "    service_account = \"\"",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": expected a non-empty string",
            ),
            (
                "    image = \" \"",
                "t.hcl:4:13: `image` in `container` in task \"a\": expected a non-empty string",
            ),
            (
                "    service_account = 5",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    labels = { team = 1 }",
                "t.hcl:4:23: `labels.team` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    env_from_secrets = [\"a\", 2]",
                "t.hcl:4:30: `env_from_secrets` in `container` in task \"a\": expected a list of strings, found a number",
            ),
            (
                "    image_pull_secrets = \"regcred\"",
                "t.hcl:4:26: `image_pull_secrets` in `container` in task \"a\": expected a list of strings, found a string",
            ),
            (
                "    run_as_user = \"1000\"",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found a string",
            ),
            (
                "    run_as_user = 0",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": 0 is root, and the pod must run as non-root (the restricted Pod Security Standard); expected a user id from 1 to 2147483647",
            ),
            (
                "    run_as_user = -1",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found -1",
            ),
            (
                "    run_as_user = 1.5",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found 1.5",
            ),
            (
                "    run_as_user = 4294967296",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found 4294967296",
            ),
            (
                "    start_timeout = \"0s\"",
                "t.hcl:4:21: `start_timeout` in `container` in task \"a\" is zero; expected a duration like \"90s\", \"10m\" or \"1h 30m\"",
            ),
            (
                "    start_timeout = 180",
                "t.hcl:4:21: `start_timeout` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    toleration {\n      key = \"a\"\n      operator = \"Exists\"\n      value = \"b\"\n    }",
                "t.hcl:7:7: `value` in `toleration` in `container` in task \"a\": operator \"Exists\" matches any value, and Kubernetes refuses a value with it; drop `value` or use operator = \"Equal\"",
            ),
            (
                "    toleration {}",
                "t.hcl:4:5: `toleration` in `container` in task \"a\" has no `key`; expected `key = \"...\"`, or operator = \"Exists\" without a key to tolerate every taint",
            ),
            (
                "    toleration {\n      key = \"a\"\n      toleration_seconds = 60\n    }",
                "t.hcl:6:7: `toleration_seconds` in `toleration` in `container` in task \"a\" only applies to effect = \"NoExecute\" (how long the pod stays on a node once tainted); set that effect or drop it",
            ),
            (
                "    toleration {\n      key = \"a\"\n      effect = \"NoExecute\"\n      toleration_seconds = -5\n    }",
                "t.hcl:7:28: `toleration_seconds` in `toleration` in `container` in task \"a\": expected a whole number of seconds, 0 or more, found -5",
            ),
            (
                "    toleration {\n      key = \"a\"\n      effect = \"NoExecute\"\n      toleration_seconds = \"60\"\n    }",
                "t.hcl:7:28: `toleration_seconds` in `toleration` in `container` in task \"a\": expected a whole number of seconds, 0 or more, found a string",
            ),
            (
                "    toleration {\n      key = \"\"\n    }",
                "t.hcl:5:13: `key` in `toleration` in `container` in task \"a\": expected a non-empty key; to tolerate every taint, leave `key` out and set operator = \"Exists\"",
            ),
            (
                "    toleration {\n      key = \"a\"\n      value = \"-b\"\n    }",
                "t.hcl:6:15: `value` in `toleration` in `container` in task \"a\": invalid value \"-b\"; expected an empty string or at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    service_account = -1",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    ephemeral_storage_limit = \"10GB\"",
                "t.hcl:4:31: `ephemeral_storage_limit` in `container` in task \"a\": invalid quantity \"10GB\"; expected RULE",
            ),
            (
                "    workspace_size_limit = \"0\"",
                "t.hcl:4:28: `workspace_size_limit` in `container` in task \"a\": \"0\" is out of range; expected RULE, more than zero",
            ),
            (
                "    ephemeral_storage_request = \"-1Gi\"",
                "t.hcl:4:33: `ephemeral_storage_request` in `container` in task \"a\": \"-1Gi\" is out of range; expected RULE, zero or more",
            ),
            (
                "    ephemeral_storage_limit = 10",
                "t.hcl:4:31: `ephemeral_storage_limit` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    cpu_limit = \"two\"",
                "t.hcl:4:17: `cpu_limit` in `container` in task \"a\": invalid quantity \"two\"; expected RULE",
            ),
            (
                "    ephemeral_storage_request = \"20Gi\"\n    ephemeral_storage_limit = \"10Gi\"",
                "t.hcl:4:33: `ephemeral_storage_request` in `container` in task \"a\": the request is more than `ephemeral_storage_limit`, which Kubernetes refuses; expected at most the limit",
            ),
            (
                "    memory_limit = \"1Gi\"\n    memory_request = \"2000Mi\"",
                "t.hcl:5:22: `memory_request` in `container` in task \"a\": the request is more than `memory_limit`, which Kubernetes refuses; expected at most the limit",
            ),
            (
                "    active_deadline = \"1.5s\"",
                "t.hcl:4:23: `active_deadline` in `container` in task \"a\": 1s 500ms is not a whole number of seconds; expected a duration like \"2h\" or \"90s\"",
            ),
            (
                "    active_deadline = \"0s\"",
                "t.hcl:4:23: `active_deadline` in `container` in task \"a\" is zero; expected a duration like \"90s\", \"10m\" or \"1h 30m\"",
            ),
            (
                "    active_dedline = \"1h\"",
                "t.hcl:4:5: unknown attribute `active_dedline` in `container` in task \"a\"; expected one of: LIST (did you mean `active_deadline`?)",
            ),
        ];
        let cases: Vec<(String, String)> = cases
            .iter()
            .map(|(body, expected)| {
                let expected = expected
                    .replace("RULE", QUANTITY_RULE)
                    .replace("LIST", &CONTAINER_ATTRIBUTES.join(", "));
                (body.to_string(), expected)
            })
            .collect();
        let cases: Vec<(&str, &str)> = cases
            .iter()
            .map(|(body, expected)| (body.as_str(), expected.as_str()))
            .collect();
        assert_errors(&cases, in_container);
    }

    #[test]
    fn an_active_deadline_must_outlast_the_task_timeout() {
        let source = |deadline: &str| {
            format!(
                "task \"a\" {{\n  script = \"x\"\n  timeout = \"1h\"\n  container {{\n    active_deadline = \"{deadline}\"\n  }}\n}}\n"
            )
        };
        assert_eq!(
            error(&source("1h")),
            "t.hcl:5:23: `active_deadline` in `container` in task \"a\": 1h is not longer than the task's timeout (1h), so the pod would be killed before the task times out; expected a longer deadline (the task's timeout plus the time to start the pod and copy files in and out)"
        );
        assert_eq!(
            parse(&source("1h 15m")).unwrap()[0]
                .container
                .active_deadline,
            Some(Duration::from_secs(4500))
        );
    }

    #[test]
    fn the_reference_examples_parse() {
        // The task-file reference is the doc comment of the module and the README; both must
        // stay valid task files.
        let doc: String = include_str!("mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
            .collect();
        let readme = include_str!("../../README.md");
        for text in [doc.as_str(), readme] {
            let start = text.find("```hcl\n").expect("an hcl example") + "```hcl\n".len();
            let end = start + text[start..].find("```").expect("the end of the example");
            let tasks = parse(&text[start..end]).unwrap();
            assert_eq!(tasks[0].container.tolerations.len(), 1);
            assert_eq!(tasks[0].container.run_as_user, Some(1000));
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
