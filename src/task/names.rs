//! Kubernetes' rules for object names, label keys and label values.
//!
//! The API server would enforce them too, but only when the pod is created, after the inputs
//! are gathered and with no place in the task file; checking them on load points at the value.
//! Each check returns the reason as a sentence that says what was expected.

/// What a DNS subdomain (RFC 1123) is, for messages.
const SUBDOMAIN_RULE: &str = "a DNS subdomain: at most 253 characters, lowercase letters, digits, \
                              `-` and `.`, each dot-separated part starting and ending with a \
                              letter or digit";

/// What the name part of a qualified name, and a label value, is, for messages.
const NAME_RULE: &str = "at most 63 characters, letters, digits, `-`, `_` and `.`, starting and \
                         ending with a letter or digit";

/// The name of a Secret, ConfigMap or ServiceAccount.
pub(super) fn object_name(name: &str) -> Result<(), String> {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}; expected {SUBDOMAIN_RULE}"))
    }
}

/// A label, annotation, node-selector or toleration key: an optional DNS-subdomain prefix and
/// `/`, then a name.
pub(super) fn qualified_name(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!(
                    "invalid key {key:?}: its prefix {prefix:?} is not {SUBDOMAIN_RULE}"
                ));
            }
            name
        }
        None => key,
    };
    // A second `/` lands in `name`, where it is not allowed.
    if is_label_name(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid key {key:?}; expected an optional DNS-subdomain prefix and `/`, then a name \
             of {NAME_RULE}"
        ))
    }
}

/// A label value (also a node-selector or toleration value); empty is allowed.
pub(super) fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid value {value:?}; expected an empty string or {NAME_RULE}"
        ))
    }
}

fn is_dns_subdomain(text: &str) -> bool {
    let part_ok = |part: &str| {
        starts_and_ends_alphanumeric(part)
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    text.len() <= 253 && text.split('.').all(part_ok)
}

fn is_label_name(text: &str) -> bool {
    text.len() <= 63
        && starts_and_ends_alphanumeric(text)
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// False for an empty string.
fn starts_and_ends_alphanumeric(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sorts(check: fn(&str) -> Result<(), String>, good: &[&str], bad: &[&str]) {
        for text in good {
            assert!(check(text).is_ok(), "{text:?} should pass");
        }
        for text in bad {
            assert!(check(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        assert_sorts(
            object_name,
            &["regcred", "a", "build-tokens.v2", "0x", &"a".repeat(253)],
            &[
                "",
                "Regcred",
                "a..b",
                "a.-b",
                "-a",
                "a-",
                "a_b",
                "a/b",
                &"a".repeat(254),
            ],
        );
    }

    #[test]
    fn qualified_names_have_an_optional_prefix() {
        assert_sorts(
            qualified_name,
            &[
                "team",
                "Team_1.x",
                "example.com/owner",
                "app.kubernetes.io/name",
                &"a".repeat(63),
            ],
            &[
                "",
                "/x",
                "example.com/",
                "Example.com/x",
                "a/b/c",
                "-x",
                "x.",
                "a b",
                &"a".repeat(64),
            ],
        );
    }

    #[test]
    fn label_values_may_be_empty() {
        assert_sorts(
            label_value,
            &["", "infra", "v1.2_3-x", &"a".repeat(63)],
            &["-x", "a/b", "a b", "é", &"a".repeat(64)],
        );
    }
}
