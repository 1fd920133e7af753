//! Kubernetes resource quantities ("500m", "1Gi", "2e3"), checked and compared on load.
//!
//! The API server would refuse a malformed quantity, or a request above its limit, only when the
//! pod is created, after the inputs are gathered and with no place in the task file. The text is
//! still passed to Kubernetes as written; the value here is only for checks and comparisons.

/// What a quantity is, for messages.
pub(super) const QUANTITY_RULE: &str = "a Kubernetes quantity: a number with an optional suffix, \
                                        binary (Ki, Mi, Gi, Ti, Pi, Ei), decimal (m, k, M, G, T, \
                                        P, E) or an exponent (e3)";

/// The value of a quantity in its base unit (cores, bytes), close enough to order two of them.
pub(crate) fn value(text: &str) -> Result<f64, String> {
    let invalid = || format!("invalid quantity {text:?}; expected {QUANTITY_RULE}");
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number = signed_number(number).ok_or_else(invalid)?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 2f64.powi(10),
        "Mi" => 2f64.powi(20),
        "Gi" => 2f64.powi(30),
        "Ti" => 2f64.powi(40),
        "Pi" => 2f64.powi(50),
        "Ei" => 2f64.powi(60),
        exponent => {
            let digits = exponent
                .strip_prefix(['e', 'E'])
                .filter(|digits| !digits.starts_with('.'))
                .ok_or_else(invalid)?;
            let power = signed_number(digits)
                .filter(|power| power.fract() == 0.0 && !digits.contains('.'))
                .ok_or_else(invalid)?;
            10f64.powf(power)
        }
    };
    Ok(number * multiplier)
}

/// `[+-]` then digits with at most one `.` and at least one digit.
fn signed_number(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let digits = unsigned.chars().filter(char::is_ascii_digit).count();
    let well_formed = digits > 0
        && unsigned.chars().filter(|c| *c == '.').count() <= 1
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.');
    well_formed.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_have_the_values_kubernetes_gives_them() {
        for (text, expected) in [
            ("0", 0.0),
            ("2", 2.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("+3", 3.0),
            ("-1", -1.0),
            ("1k", 1e3),
            ("10Gi", 10.0 * 1024.0 * 1024.0 * 1024.0),
            ("256Mi", 256.0 * 1024.0 * 1024.0),
            ("1.5Gi", 1.5 * 1024.0 * 1024.0 * 1024.0),
            ("2G", 2e9),
            ("1e3", 1e3),
            ("1E-3", 1e-3),
            ("12e+2", 1200.0),
        ] {
            assert_eq!(value(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_quantities_are_refused_with_the_rule() {
        for text in [
            "", "Gi", "10GB", "10gi", "10 Gi", " 10Gi", "1.2.3", "--1", "1-", "1e", "1e1.5",
            "1e.5", "0x10", "ten", "1Gi ",
        ] {
            let error = value(text).expect_err(text);
            assert_eq!(
                error,
                format!("invalid quantity {text:?}; expected {QUANTITY_RULE}")
            );
        }
    }
}
