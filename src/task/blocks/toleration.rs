//! The `toleration { ... }` block of `container`: a Kubernetes toleration, with Kubernetes'
//! rules across its fields checked on load.

use std::ops::Range;

use hcl_edit::Span;
use hcl_edit::structure::Block;

use super::{Expects, Field, no_label, read_body};
use crate::task::reader::Reader;
use crate::task::{TaskError, Toleration, names};

/// How the block is written, for messages.
pub(super) const SYNTAX: &str = "`toleration { key = \"...\" }` (one block per toleration)";

const OPERATORS: &[&str] = &["Equal", "Exists"];
const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// A toleration as it is read, with where `value` and `toleration_seconds` are, for the checks
/// across attributes.
#[derive(Default)]
struct TolerationDraft {
    toleration: Toleration,
    value_at: Option<Range<usize>>,
    seconds_at: Option<Range<usize>>,
}

const TABLE: &[Field<TolerationDraft>] = &[
    Field {
        name: "key",
        expects: Expects::Attribute(|file, attr, here, draft| {
            let (key, expr) = (attr.key.as_str(), &attr.value);
            // An empty key means "every taint" to Kubernetes; leaving the key out says so more
            // plainly, so an empty string is taken for a mistake.
            let text = file.string(expr, key, here)?;
            if text.is_empty() {
                return Err(file.complaint(
                    expr,
                    key,
                    here,
                    "expected a non-empty key; to tolerate every taint, leave `key` out and set \
                     operator = \"Exists\"",
                ));
            }
            names::qualified_name(&text)
                .map_err(|reason| file.complaint(expr, key, here, &reason))?;
            draft.toleration.key = Some(text);
            Ok(())
        }),
    },
    Field {
        name: "operator",
        expects: Expects::Attribute(|file, attr, here, draft| {
            let operator = file.one_of(&attr.value, attr.key.as_str(), here, OPERATORS)?;
            draft.toleration.operator = Some(operator.to_string());
            Ok(())
        }),
    },
    Field {
        name: "value",
        expects: Expects::Attribute(|file, attr, here, draft| {
            let (key, expr) = (attr.key.as_str(), &attr.value);
            let text = file.string(expr, key, here)?;
            names::label_value(&text).map_err(|reason| file.complaint(expr, key, here, &reason))?;
            draft.toleration.value = Some(text);
            draft.value_at = attr.span();
            Ok(())
        }),
    },
    Field {
        name: "effect",
        expects: Expects::Attribute(|file, attr, here, draft| {
            let effect = file.one_of(&attr.value, attr.key.as_str(), here, EFFECTS)?;
            draft.toleration.effect = Some(effect.to_string());
            Ok(())
        }),
    },
    Field {
        name: "toleration_seconds",
        expects: Expects::Attribute(|file, attr, here, draft| {
            let (key, expr) = (attr.key.as_str(), &attr.value);
            let expected = "a whole number of seconds, 0 or more";
            let seconds = file.integer(expr, key, here, expected)?;
            if seconds < 0 {
                return Err(file.complaint(
                    expr,
                    key,
                    here,
                    &format!("expected {expected}, found {seconds}"),
                ));
            }
            draft.toleration.toleration_seconds = Some(seconds);
            draft.seconds_at = attr.span();
            Ok(())
        }),
    },
];

/// Reads a `toleration` block of the `container` block `context` names.
pub(super) fn read(file: &Reader, block: &Block, context: &str) -> Result<Toleration, TaskError> {
    let here = format!("`toleration` in {context}");
    no_label(file, block, &here)?;
    let mut draft = TolerationDraft::default();
    read_body(file, block, &here, TABLE, &mut draft)?;
    let TolerationDraft {
        toleration,
        value_at,
        seconds_at,
    } = draft;

    // Kubernetes' own rules across the fields, which it would only apply at pod creation.
    let exists = toleration.operator.as_deref() == Some("Exists");
    if exists && toleration.value.is_some() {
        return Err(file.invalid(
            value_at,
            format!(
                "`value` in {here}: operator \"Exists\" matches any value, and Kubernetes \
                 refuses a value with it; drop `value` or use operator = \"Equal\""
            ),
        ));
    }
    if !exists && toleration.key.is_none() {
        return Err(file.invalid(
            block.span(),
            format!(
                "{here} has no `key`; expected `key = \"...\"`, or operator = \"Exists\" \
                 without a key to tolerate every taint"
            ),
        ));
    }
    if toleration.toleration_seconds.is_some() && toleration.effect.as_deref() != Some("NoExecute")
    {
        return Err(file.invalid(
            seconds_at,
            format!(
                "`toleration_seconds` in {here} only applies to effect = \"NoExecute\" (how \
                 long the pod stays on a node once tainted); set that effect or drop it"
            ),
        ));
    }
    Ok(toleration)
}

#[cfg(test)]
mod tests {
    use crate::task::parse::testing::{assert_errors, in_container};

    #[test]
    fn toleration_errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
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
                "    toleration {\n      operator = \"exists\"\n    }",
                "t.hcl:5:18: `operator` in `toleration` in `container` in task \"a\": expected one of: Equal, Exists; found \"exists\" (did you mean `Exists`?)",
            ),
            (
                "    toleration {\n      key = \"a\"\n      effect = \"NoSchedul\"\n    }",
                "t.hcl:6:16: `effect` in `toleration` in `container` in task \"a\": expected one of: NoSchedule, PreferNoSchedule, NoExecute; found \"NoSchedul\" (did you mean `NoSchedule`?)",
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
        ];
        assert_errors(cases, in_container);
    }
}
