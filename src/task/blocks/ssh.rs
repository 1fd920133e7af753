//! The `ssh { host = "..." }` block: the machine the ssh backend runs the task on.

use hcl_edit::Span;
use hcl_edit::structure::Block;

use super::{Expects, Field, no_label, read_body};
use crate::task::reader::Reader;
use crate::task::{SshHost, TaskError};

/// How the block is written, for messages.
pub(super) const SYNTAX: &str = "`ssh { host = \"[user@]host\" }`";

const TABLE: &[Field<SshHost>] = &[
    Field {
        name: "host",
        expects: Expects::Attribute(|file, attr, here, ssh| {
            let what = attr.key.as_str();
            let host = file.string(&attr.value, what, here)?;
            if host.is_empty() || host.starts_with('-') {
                return Err(file.invalid(
                    attr.value.span(),
                    format!(
                        "`{what}` in {here}: expected `[user@]host` as ssh takes it, found {host:?}"
                    ),
                ));
            }
            ssh.host = Some(host);
            Ok(())
        }),
    },
    Field {
        name: "options",
        expects: Expects::Attribute(|file, attr, here, ssh| {
            let what = attr.key.as_str();
            for (option, expr) in file.string_elements(&attr.value, what, here)? {
                if !option.starts_with('-') {
                    return Err(file.invalid(
                        expr.span(),
                        format!(
                            "`{what}` in {here}: {option:?} is not an option of ssh; expected \
                             arguments such as \"-p2222\" or \"-oProxyJump=gateway\""
                        ),
                    ));
                }
                ssh.options.push(option);
            }
            Ok(())
        }),
    },
];

/// Reads the `ssh` block of the task `context` names.
pub(super) fn read(file: &Reader, block: &Block, context: &str) -> Result<SshHost, TaskError> {
    let here = format!("`ssh` in {context}");
    no_label(file, block, &here)?;
    let mut ssh = SshHost::default();
    read_body(file, block, &here, TABLE, &mut ssh)?;
    Ok(ssh)
}

#[cfg(test)]
mod tests {
    use crate::task::parse::testing::assert_errors;

    #[test]
    fn ssh_errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    hots = \"b\"\n  }\n}\n",
                "t.hcl:4:5: unknown attribute `hots` in `ssh` in task \"a\"; expected one of: host, options (did you mean `host`?)",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    host = \"-oProxyCommand=x\"\n  }\n}\n",
                "t.hcl:4:12: `host` in `ssh` in task \"a\": expected `[user@]host` as ssh takes it, found \"-oProxyCommand=x\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    options = [\"-p2\", \"x\"]\n  }\n}\n",
                "t.hcl:4:23: `options` in `ssh` in task \"a\": \"x\" is not an option of ssh; expected arguments such as \"-p2222\" or \"-oProxyJump=gateway\"",
            ),
        ];
        assert_errors(cases, str::to_string);
    }
}
