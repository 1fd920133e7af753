//! Reading the values of a task file: strings, lists, objects, numbers and durations, each
//! refused with its `file:line:column` and what was expected there.
//!
//! hcl-rs's serde path would lose the spans, so the file is parsed with hcl-edit, whose
//! structures keep byte ranges into the source, and read by hand.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use hcl_edit::Span;
use hcl_edit::expr::{Expression, ObjectKey, UnaryOperator};
use hcl_edit::template::{Element, Template};

use super::{Location, TaskError, closest};

/// The task file being read: turns spans into locations and reads values.
pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) source: &'a str,
}

impl Reader<'_> {
    /// Where the span starting at a byte offset is (the file's start without a span).
    pub(super) fn at(&self, span: Option<Range<usize>>) -> Location {
        Location::from_offset(self.path, self.source, span.map_or(0, |s| s.start))
    }

    /// The error for what is at `span`.
    pub(super) fn invalid(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> TaskError {
        TaskError::Invalid {
            at: self.at(span),
            message: message.into(),
        }
    }

    /// The entries of an object of strings, in the order written; a key given twice (`a` and
    /// `"a"` are the same key, which the HCL parser lets through) is refused.
    pub(super) fn string_entries(
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

    /// A non-zero humantime duration ("90s", "1h 30m").
    pub(super) fn duration(
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

    /// A string literal, a quoted string or a heredoc without interpolation.
    pub(super) fn string(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<String, TaskError> {
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

    /// A list of strings.
    pub(super) fn string_list(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<Vec<String>, TaskError> {
        let elements = self.string_elements(expr, what, context)?;
        Ok(elements.into_iter().map(|(text, _)| text).collect())
    }

    /// A list of strings, each with its expression, to point at the one that is wrong.
    pub(super) fn string_elements<'e>(
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
    pub(super) fn required(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<String, TaskError> {
        let text = self.string(expr, what, context)?;
        if text.trim().is_empty() {
            return Err(self.complaint(expr, what, context, "expected a non-empty string"));
        }
        Ok(text)
    }

    /// A string that is one of `choices` (spelled exactly), suggesting the closest one.
    pub(super) fn one_of<'c>(
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
    pub(super) fn integer(
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

    /// `true` or `false`.
    pub(super) fn boolean(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
    ) -> Result<bool, TaskError> {
        match expr {
            Expression::Bool(b) => Ok(*b.value()),
            Expression::Parenthesis(inner) => self.boolean(inner.inner(), what, context),
            _ => Err(self.wrong_type(expr, what, context, "true or false")),
        }
    }

    /// An error about the value `expr` of `what`.
    pub(super) fn complaint(
        &self,
        expr: &Expression,
        what: &str,
        context: &str,
        reason: &str,
    ) -> TaskError {
        self.invalid(expr.span(), format!("`{what}` in {context}: {reason}"))
    }

    /// An error about `expr`, of `what`, not being of the type `expected` says.
    pub(super) fn wrong_type(
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
}

/// " (did you mean `X`?)" for the candidate closest to `word`, or nothing.
pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates.iter().copied())
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// One `key = "value"` of an object of strings, with where each side is.
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) key_at: Option<Range<usize>>,
    pub(super) value: String,
    pub(super) value_at: Option<Range<usize>>,
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
    use crate::task::Run;
    use crate::task::parse::testing::{error, parse};

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
}
