//! The `input "REPO/PATH" { to = "WORKSPACE/PATH" }` block: a repository path sent to a
//! workspace path.

use std::path::{Path, PathBuf};

use hcl_edit::Span;
use hcl_edit::structure::Block;

use super::{Expects, Field, read_body};
use crate::task::inputs::clean_relative;
use crate::task::reader::Reader;
use crate::task::{InputMapping, TaskError};

/// How the block is written, for messages.
pub(super) const SYNTAX: &str = "`input \"REPO/PATH\" { to = \"WORKSPACE/PATH\" }`";

/// An input's workspace path, once read.
#[derive(Default)]
struct InputDraft {
    to: Option<PathBuf>,
}

const TABLE: &[Field<InputDraft>] = &[Field {
    name: "to",
    expects: Expects::Attribute(|file, attr, here, input| {
        let what = attr.key.as_str();
        let text = file.string(&attr.value, what, here)?;
        let path = clean_relative(Path::new(&text)).map_err(|reason| {
            file.invalid(attr.value.span(), format!("`{what}` in {here}: {reason}"))
        })?;
        input.to = Some(path);
        Ok(())
    }),
}];

/// Reads an `input` block of the task `context` names.
pub(super) fn read(file: &Reader, block: &Block, context: &str) -> Result<InputMapping, TaskError> {
    let Some(label) = block.labels.first() else {
        return Err(file.invalid(
            block.span(),
            format!("`input` block in {context} without a source path; expected {SYNTAX}"),
        ));
    };
    if let Some(extra) = block.labels.get(1) {
        return Err(file.invalid(
            extra.span(),
            format!("`input` block in {context} has more than one label; expected {SYNTAX}"),
        ));
    }
    let from_text = label.as_str();
    let here = format!("input \"{from_text}\" in {context}");
    let from = clean_relative(Path::new(from_text))
        .map_err(|reason| file.invalid(label.span(), format!("{here}: {reason}")))?;
    let mut input = InputDraft::default();
    read_body(file, block, &here, TABLE, &mut input)?;
    let to = input.to.ok_or_else(|| {
        file.invalid(
            block.span(),
            format!(
                "{here} has no `to`; expected `input \"{from_text}\" {{ to = \"WORKSPACE/PATH\" }}`"
            ),
        )
    })?;
    Ok(InputMapping { from, to })
}

#[cfg(test)]
mod tests {
    use crate::task::parse::testing::assert_errors;

    #[test]
    fn input_errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
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
        ];
        assert_errors(cases, str::to_string);
    }
}
