//! The values of a `container` block that follow Kubernetes' rules: labels, annotations,
//! object names, quantities, the network policy, the user and the pod's deadline. Each is
//! checked on load, where the file can still be pointed at, rather than at pod creation.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::PossibleValue;
use hcl_edit::expr::Expression;

use crate::task::quantity::{self, QUANTITY_RULE};
use crate::task::reader::{Entry, Reader};
use crate::task::{Egress, TaskError, names};

/// Kubernetes keeps user ids to 32-bit signed integers.
const MAX_USER_ID: i64 = i32::MAX as i64;

/// Which side of a resource a quantity bounds.
#[derive(Clone, Copy)]
pub(super) enum Bound {
    Request,
    Limit,
}

/// Labels or a node selector: qualified-name keys, label values, no key under one of
/// `reserved`.
pub(super) fn labels(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
    reserved: &[&str],
) -> Result<BTreeMap<String, String>, TaskError> {
    let mut labels = BTreeMap::new();
    for entry in qualified_entries(file, expr, what, context)? {
        if reserved.iter().any(|prefix| entry.key.starts_with(prefix)) {
            return Err(file.invalid(
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
            file.invalid(
                entry.value_at,
                format!("`{what}.{}` in {context}: {reason}", entry.key),
            )
        })?;
        labels.insert(entry.key, entry.value);
    }
    Ok(labels)
}

/// An object of strings whose keys are Kubernetes qualified names (labels, annotations).
pub(super) fn qualified_entries(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
) -> Result<Vec<Entry>, TaskError> {
    let entries = file.string_entries(
        expr,
        what,
        context,
        "an object of strings, like { \"example.com/key\" = \"value\" }",
    )?;
    for entry in &entries {
        names::qualified_name(&entry.key).map_err(|reason| {
            file.invalid(
                entry.key_at.clone(),
                format!("`{what}` in {context}: {reason}"),
            )
        })?;
    }
    Ok(entries)
}

pub(super) fn object_names(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
) -> Result<Vec<String>, TaskError> {
    let mut list: Vec<String> = Vec::new();
    for (_, element) in file.string_elements(expr, what, context)? {
        let name = object_name(file, element, what, context)?;
        if list.contains(&name) {
            return Err(file.complaint(
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
pub(super) fn object_name(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
) -> Result<String, TaskError> {
    let name = file.required(expr, what, context)?;
    names::object_name(&name).map_err(|reason| file.complaint(expr, what, context, &reason))?;
    Ok(name)
}

/// The words are `Egress`'s clap value names, so that a task file and the command line
/// spell them alike.
pub(super) fn egress(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
) -> Result<Egress, TaskError> {
    let values: Vec<PossibleValue> = Egress::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value)
        .collect();
    let names: Vec<&str> = values.iter().map(PossibleValue::get_name).collect();
    let name = file.one_of(expr, what, context, &names)?;
    Ok(<Egress as ValueEnum>::from_str(name, false).expect("`one_of` returns a value name"))
}

/// A user id other than root's.
pub(super) fn run_as_user(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
) -> Result<i64, TaskError> {
    let expected = format!("a user id from 1 to {MAX_USER_ID}");
    let uid = file.integer(expr, what, context, &expected)?;
    let reason = match uid {
        0 => format!(
            "0 is root, and the pod must run as non-root (the restricted Pod Security \
             Standard); expected {expected}"
        ),
        1..=MAX_USER_ID => return Ok(uid),
        _ => format!("expected {expected}, found {uid}"),
    };
    Err(file.complaint(expr, what, context, &reason))
}

/// A quantity of a request (zero or more) or of a limit (more than zero): its text, as
/// written, and its value.
pub(super) fn quantity(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
    bound: Bound,
) -> Result<(String, f64), TaskError> {
    let text = file.string(expr, what, context)?;
    let amount =
        quantity::value(&text).map_err(|reason| file.complaint(expr, what, context, &reason))?;
    let refused = match bound {
        Bound::Request if amount < 0.0 => Some("zero or more"),
        Bound::Limit if amount <= 0.0 => Some("more than zero"),
        _ => None,
    };
    match refused {
        Some(expected) => Err(file.complaint(
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
pub(super) fn active_deadline(
    file: &Reader,
    expr: &Expression,
    what: &str,
    context: &str,
    task_timeout: Option<Duration>,
) -> Result<Duration, TaskError> {
    let deadline = file.duration(expr, what, context)?;
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
    Err(file.complaint(expr, what, context, &reason))
}
