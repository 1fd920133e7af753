//! HCL task files to [`Task`]s, with a location on every error: the file's top level, whose
//! only blocks are `task` ones (read by [`super::blocks`]).

use std::path::Path;

use hcl_edit::Span;
use hcl_edit::structure::Structure;

use super::reader::{Reader, did_you_mean};
use super::{Location, Task, TaskError, blocks};

/// The one block type of a task file's top level.
const TASK_BLOCK: &str = "task";

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
    let file = Reader { path, source };
    body.iter()
        .map(|structure| task(&file, structure))
        .collect()
}

fn task(file: &Reader, structure: &Structure) -> Result<Task, TaskError> {
    match structure {
        Structure::Block(block) if block.ident.as_str() == TASK_BLOCK => {
            blocks::task::read(file, block)
        }
        Structure::Block(block) => {
            let ident = block.ident.as_str();
            Err(file.invalid(
                block.ident.span(),
                format!(
                    "unknown block type `{ident}`; expected `task \"NAME\" {{ ... }}`{}",
                    did_you_mean(ident, &[TASK_BLOCK])
                ),
            ))
        }
        Structure::Attribute(attr) => Err(file.invalid(
            attr.span(),
            format!(
                "unexpected attribute `{}` outside a task; expected `task \"NAME\" {{ ... }}` blocks",
                attr.key.as_str()
            ),
        )),
    }
}

/// Helpers for the tests of each block: parse a file named `t.hcl`, and compare errors.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;

    use super::parse_file;
    use crate::task::{Task, TaskError};

    pub(in crate::task) fn parse(source: &str) -> Result<Vec<Task>, TaskError> {
        parse_file(Path::new("t.hcl"), source)
    }

    pub(in crate::task) fn error(source: &str) -> String {
        parse(source).expect_err("expected an error").to_string()
    }

    /// Checks that each file, made from the first of a pair by `source`, fails with exactly the
    /// second.
    pub(in crate::task) fn assert_errors(cases: &[(&str, &str)], source: impl Fn(&str) -> String) {
        for (input, expected) in cases {
            let source = source(input);
            assert_eq!(&error(&source), expected, "for source:\n{source}");
        }
    }

    /// A task whose `container` block holds `body`, which starts on line 4.
    pub(in crate::task) fn in_container(body: &str) -> String {
        format!("task \"a\" {{\n  script = \"x\"\n  container {{\n{body}\n  }}\n}}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{error, parse};
    use super::*;

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
