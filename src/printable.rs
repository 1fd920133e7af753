//! Text from the other side, made safe for the terminal. The executor, the pod, its image and
//! the kubelet all supply strings that buildr prints (a result's error, log lines and their
//! fields, termination messages, a command's stderr, a reported digest): any of them could carry
//! escape sequences that move the cursor, rewrite earlier lines, set the window title or hide
//! text. Everything buildr prints that it did not write itself goes through [`Printable`] (or
//! [`crate::archive::Quoted`] for paths), which shows such characters as escapes instead. The
//! task's own stdout and stderr are the exception: they are passed through raw on purpose, as a
//! local run would show them.

use std::fmt;

/// `text` as it is shown on the console: control characters (ESC, BEL, CR, newlines, C1 codes),
/// the invisible marks that reorder text (bidirectional overrides and isolates) and backslashes
/// are escaped the way Rust writes them (`\u{1b}`, `\n`, `\\`), so the text can neither drive
/// the terminal nor break or disguise a line.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.chars().try_for_each(|c| write_char(f, c))
    }
}

/// Writes `c`, escaped if it could act on the terminal or reorder what is shown.
pub(crate) fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\t' => f.write_str("\\t"),
        '\r' => f.write_str("\\r"),
        c if c.is_control() || reorders_text(c) => write!(f, "\\u{{{:x}}}", c as u32),
        c => write!(f, "{c}"),
    }
}

/// The bidirectional formatting characters (Unicode's "Trojan Source" set): they are invisible
/// and make a terminal show text in another order than it is.
fn reorders_text(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::Printable;

    #[test]
    fn plain_text_and_unicode_are_shown_as_they_are() {
        let text = "cannot start `make`: No such file (exit 127) – naïve ✓";
        assert_eq!(Printable(text).to_string(), text);
    }

    #[test]
    fn what_could_drive_the_terminal_is_escaped() {
        let cases = [
            (
                "\u{1b}[2J\u{1b}]0;owned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;owned\\u{7}",
            ),
            ("line\nforged: ok\r", "line\\nforged: ok\\r"),
            ("tab\there", "tab\\there"),
            ("c1 \u{9b}31m", "c1 \\u{9b}31m"),
            ("del \u{7f}", "del \\u{7f}"),
            ("rlo \u{202e}txt.exe", "rlo \\u{202e}txt.exe"),
            ("isolate \u{2066}x\u{2069}", "isolate \\u{2066}x\\u{2069}"),
            ("a \\u{1b} b", "a \\\\u{1b} b"),
        ];
        for (raw, shown) in cases {
            assert_eq!(Printable(raw).to_string(), shown, "{raw:?}");
        }
    }
}
