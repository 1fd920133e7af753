//! The `ssh { host = "..." }` block: the machine the ssh backend runs the task on.
//!
//! A task file is input from whoever wrote the repository, and its `options` go to the `ssh` the
//! user runs on their own machine, so they are an allow-list ([`ALLOWED`]): options that choose
//! *where* to connect (port, user, host name, jump host, address family) and *how patiently*
//! (timeouts, keep-alives, compression), never what runs on this machine (`ProxyCommand`,
//! `LocalCommand`, `KnownHostsCommand`, `Match exec` through `-F` or `Include`), which files ssh
//! reads or writes (`-F`, `-E`, `-S`, `IdentityFile`, `UserKnownHostsFile`), what it trusts
//! (`StrictHostKeyChecking`, ciphers) or what it hands over (agent, X11 and port forwarding,
//! `SendEnv`). Values are checked too: ssh expands `%` tokens in some settings and passes user and
//! host names to the user's own `ProxyCommand` and `Match exec` lines, where shell
//! metacharacters would run (OpenSSH before 9.6 does not refuse them), so names are plain.
//! Anything else belongs on the command line (`--ssh-option`) or in `~/.ssh/config`, the user's
//! own.

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
            if !Value::Destination.admits(&host) {
                return Err(file.invalid(
                    attr.value.span(),
                    format!(
                        "`{what}` in {here}: expected `[user@]host` as ssh takes it (letters, \
                         digits and `._-@:[]`, not starting with `-`), found {host:?}"
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
            let elements = file.string_elements(&attr.value, what, here)?;
            let options: Vec<&str> = elements.iter().map(|(option, _)| option.as_str()).collect();
            if let Err((at, why)) = check_options(&options) {
                let span = elements[at].1.span();
                return Err(file.invalid(span, format!("`{what}` in {here}: {why}")));
            }
            ssh.options = elements.into_iter().map(|(option, _)| option).collect();
            Ok(())
        }),
    },
];

/// An option a task file may give ssh: its `-o` keyword (lower case), the short flag that means
/// the same, if any, and what its value may be.
struct Allowed {
    keyword: &'static str,
    flag: Option<char>,
    value: Value,
}

/// The options a task file may set; everything else is refused. Each only chooses where and how
/// patiently to connect.
const ALLOWED: &[Allowed] = &[
    Allowed {
        keyword: "port",
        flag: Some('p'),
        value: Value::Port,
    },
    Allowed {
        keyword: "user",
        flag: Some('l'),
        value: Value::User,
    },
    Allowed {
        keyword: "hostname",
        flag: None,
        value: Value::Host,
    },
    Allowed {
        keyword: "proxyjump",
        flag: Some('J'),
        value: Value::Jump,
    },
    Allowed {
        keyword: "addressfamily",
        flag: None,
        value: Value::OneOf(&["any", "inet", "inet6"]),
    },
    Allowed {
        keyword: "connecttimeout",
        flag: None,
        value: Value::Time,
    },
    Allowed {
        keyword: "connectionattempts",
        flag: None,
        value: Value::Time,
    },
    Allowed {
        keyword: "serveraliveinterval",
        flag: None,
        value: Value::Time,
    },
    Allowed {
        keyword: "serveralivecountmax",
        flag: None,
        value: Value::Time,
    },
    Allowed {
        keyword: "tcpkeepalive",
        flag: None,
        value: Value::OneOf(&["yes", "no"]),
    },
    Allowed {
        keyword: "compression",
        flag: None,
        value: Value::OneOf(&["yes", "no"]),
    },
    // Only narrows the keys offered to those the user's own config names.
    Allowed {
        keyword: "identitiesonly",
        flag: None,
        value: Value::OneOf(&["yes", "no"]),
    },
];

/// Flags without a value a task file may give: the address family (`-4`, `-6`) and compression
/// (`-C`).
const FLAGS: &[char] = &['4', '6', 'C'];

/// What the refusal lists as allowed.
const ALLOWED_TEXT: &str = "-p, -l, -J, -4, -6, -C, and -o with Port, User, HostName, ProxyJump, \
                            AddressFamily, ConnectTimeout, ConnectionAttempts, \
                            ServerAliveInterval, ServerAliveCountMax, TCPKeepAlive, Compression, \
                            IdentitiesOnly";

/// What the value of an allowed option may be.
#[derive(Clone, Copy)]
enum Value {
    /// 1 to 65535.
    Port,
    /// A number, or a time as ssh writes it (`30`, `1m`).
    Time,
    /// A user name: letters, digits, `._-`.
    User,
    /// A host name or address: letters, digits, `._-:[]`.
    Host,
    /// `[user@]host`, as the `host` attribute takes it.
    Destination,
    /// `none`, or jump hosts `[user@]host[:port]` separated by commas.
    Jump,
    OneOf(&'static [&'static str]),
}

impl Value {
    fn admits(self, value: &str) -> bool {
        let plain = |text: &str, extra: &str| {
            !text.is_empty()
                && !text.starts_with('-')
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        match self {
            Value::Port => value
                .parse::<u16>()
                .is_ok_and(|port| port > 0 && value.chars().all(|c| c.is_ascii_digit())),
            Value::Time => {
                value.starts_with(|c: char| c.is_ascii_digit())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_digit() || "smhdwSMHDW".contains(c))
            }
            Value::User => plain(value, "._-"),
            Value::Host => plain(value, "._-:[]"),
            Value::Destination => match value.split_once('@') {
                Some((user, host)) => plain(user, "._-") && plain(host, "._-:[]"),
                None => plain(value, "._-:[]"),
            },
            Value::Jump => {
                value.eq_ignore_ascii_case("none")
                    || value.split(',').all(|hop| {
                        let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
                        Value::Destination.admits(hop)
                    })
            }
            Value::OneOf(words) => words.iter().any(|word| value.eq_ignore_ascii_case(word)),
        }
    }

    /// What it takes, for the message that refuses a value.
    fn expected(self) -> String {
        match self {
            Value::Port => "a port number from 1 to 65535".to_string(),
            Value::Time => "a number (or a time such as 30s)".to_string(),
            Value::User => "a user name (letters, digits and `._-`)".to_string(),
            Value::Host => "a host name or address (letters, digits and `._-:[]`)".to_string(),
            Value::Destination => "[user@]host".to_string(),
            Value::Jump => {
                "`none` or jump hosts `[user@]host[:port]`, separated by commas".to_string()
            }
            Value::OneOf(words) => format!("one of: {}", words.join(", ")),
        }
    }
}

/// Checks the `options` list as ssh reads its arguments (getopt: flags may be bundled, `-p2222`
/// and `-p 2222` in two elements are the same, `-oKey=value`, `-o Key=value` and `-oKey value`
/// too, keywords in any case) against [`ALLOWED`] and [`FLAGS`]. A refusal names the element to
/// point at (its index) and says why.
fn check_options(elements: &[&str]) -> Result<(), (usize, String)> {
    let mut index = 0;
    while let Some(&option) = elements.get(index) {
        let Some(letters) = option.strip_prefix('-').filter(|l| !l.is_empty()) else {
            return Err((
                index,
                format!(
                    "{option:?} is not an option of ssh; expected arguments such as \"-p2222\" \
                     or \"-oProxyJump=gateway\""
                ),
            ));
        };
        for (at, flag) in letters.char_indices() {
            if FLAGS.contains(&flag) {
                continue;
            }
            let by_flag = ALLOWED.iter().find(|a| a.flag == Some(flag));
            if flag != 'o' && by_flag.is_none() {
                return Err((index, refused(option, &format!("-{flag}"))));
            }
            // The rest of the element is the value, else the next element is.
            let inline = &letters[at + flag.len_utf8()..];
            if inline.is_empty() {
                index += 1;
            }
            let Some(&value) = (if inline.is_empty() {
                elements.get(index)
            } else {
                Some(&inline)
            }) else {
                return Err((index - 1, format!("{option:?} needs a value after it")));
            };
            let (name, allowed, value) = match by_flag {
                Some(allowed) => (format!("-{flag}"), allowed, value),
                None => {
                    let (keyword, setting) = split_setting(value);
                    let lower = keyword.to_ascii_lowercase();
                    match ALLOWED.iter().find(|a| a.keyword == lower) {
                        Some(allowed) => (keyword.to_string(), allowed, setting),
                        None => return Err((index, refused(elements[index], keyword))),
                    }
                }
            };
            if !allowed.value.admits(value) {
                return Err((
                    index,
                    format!(
                        "{:?}: {name} takes {}, found {value:?}",
                        elements[index],
                        allowed.value.expected()
                    ),
                ));
            }
            break;
        }
        index += 1;
    }
    Ok(())
}

/// `Key=value`, `Key value` or `Key = value`, as ssh reads a setting: the keyword and the value.
fn split_setting(setting: &str) -> (&str, &str) {
    let setting = setting.trim_start();
    let end = setting
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(setting.len());
    let (keyword, rest) = setting.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (keyword, rest.trim_end())
}

fn refused(element: &str, what: &str) -> String {
    format!(
        "{element:?} is refused: `{what}` is not an option a task file may set (a task file's options only \
         choose where to connect: {ALLOWED_TEXT}); give it on the command line with \
         --ssh-option, or in your ~/.ssh/config"
    )
}

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
    use super::refused;
    use crate::task::parse::testing::{assert_errors, error, parse};

    #[test]
    fn ssh_errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    hots = \"b\"\n  }\n}\n",
                "t.hcl:4:5: unknown attribute `hots` in `ssh` in task \"a\"; expected one of: host, options (did you mean `host`?)",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    host = \"-oProxyCommand=x\"\n  }\n}\n",
                "t.hcl:4:12: `host` in `ssh` in task \"a\": expected `[user@]host` as ssh takes it (letters, digits and `._-@:[]`, not starting with `-`), found \"-oProxyCommand=x\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    host = \"a$(touch x)\"\n  }\n}\n",
                "t.hcl:4:12: `host` in `ssh` in task \"a\": expected `[user@]host` as ssh takes it (letters, digits and `._-@:[]`, not starting with `-`), found \"a$(touch x)\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    options = [\"-p2\", \"x\"]\n  }\n}\n",
                "t.hcl:4:23: `options` in `ssh` in task \"a\": \"x\" is not an option of ssh; expected arguments such as \"-p2222\" or \"-oProxyJump=gateway\"",
            ),
            (
                "task \"a\" {\n  script = \"x\"\n  ssh {\n    options = [\"-C\", \"-oProxyCommand=sh -c 'touch /tmp/x'\"]\n  }\n}\n",
                "t.hcl:4:22: `options` in `ssh` in task \"a\": \"-oProxyCommand=sh -c 'touch /tmp/x'\" is refused: `ProxyCommand` is not an option a task file may set (a task file's options only choose where to connect: -p, -l, -J, -4, -6, -C, and -o with Port, User, HostName, ProxyJump, AddressFamily, ConnectTimeout, ConnectionAttempts, ServerAliveInterval, ServerAliveCountMax, TCPKeepAlive, Compression, IdentitiesOnly); give it on the command line with --ssh-option, or in your ~/.ssh/config",
            ),
        ];
        assert_errors(cases, str::to_string);
    }

    /// A task whose `ssh.options` are `options`, the list starting on line 4, column 15.
    fn with_options(options: &[&str]) -> String {
        let list: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
        format!(
            "task \"a\" {{\n  script = \"x\"\n  ssh {{\n    options = [{}]\n  }}\n}}\n",
            list.join(", ")
        )
    }

    #[test]
    fn options_that_choose_where_to_connect_are_taken_as_written() {
        let allowed: &[&[&str]] = &[
            &["-p2222"],
            &["-p", "2222"],
            &["-lbuilder", "-l", "builder"],
            &["-J", "gw", "-Jme@gw:22,other"],
            &["-4", "-6C", "-Cp2222", "-C4l", "me"],
            &[
                "-oPort=2222",
                "-o",
                "Port=2222",
                "-oPort 2222",
                "-o Port=2222",
                "-oport = 2222",
            ],
            &["-oPROXYJUMP=none", "-oProxyJump=ssh://me@gw:2200,[::1]:22"],
            &[
                "-oConnectTimeout=10",
                "-oServerAliveInterval=15s",
                "-oServerAliveCountMax=3",
            ],
            &[
                "-oConnectionAttempts=2",
                "-oCompression=yes",
                "-oTCPKeepAlive=no",
            ],
            &[
                "-oAddressFamily=inet6",
                "-oHostName=10.0.0.7",
                "-oHostName=::1",
            ],
            &["-oIdentitiesOnly=yes", "-oUser=build.er_1"],
        ];
        for options in allowed {
            let tasks =
                parse(&with_options(options)).unwrap_or_else(|e| panic!("{options:?}: {e}"));
            assert_eq!(tasks[0].ssh.options, *options);
        }
    }

    #[test]
    fn options_that_run_read_trust_or_forward_are_refused_with_the_way_to_get_them() {
        // The options, the element pointed at, and what is refused there.
        let refusals: &[(&[&str], usize, &str)] = &[
            (&["-oProxyCommand=sh -c 'touch /tmp/x'"], 0, "ProxyCommand"),
            (&["-p2", "-o", "ProxyCommand=x"], 2, "ProxyCommand"),
            (&["-oProxyCommand x"], 0, "ProxyCommand"),
            (&["-o proxycommand=x"], 0, "proxycommand"),
            (&["-oKnownHostsCommand=/bin/x"], 0, "KnownHostsCommand"),
            (
                &["-oPermitLocalCommand=yes", "-oLocalCommand=x"],
                0,
                "PermitLocalCommand",
            ),
            (&["-oLocalCommand=touch x"], 0, "LocalCommand"),
            (&["-oStrictHostKeyChecking=no"], 0, "StrictHostKeyChecking"),
            (&["-oUserKnownHostsFile=/dev/null"], 0, "UserKnownHostsFile"),
            (&["-oInclude=./evil"], 0, "Include"),
            (&["-oIdentityFile=./key"], 0, "IdentityFile"),
            (&["-oControlPath=/tmp/x"], 0, "ControlPath"),
            (&["-oLocalForward=1:h:2"], 0, "LocalForward"),
            (&["-oSendEnv=*"], 0, "SendEnv"),
            (&["-oForwardAgent=yes"], 0, "ForwardAgent"),
            (&["-F./evil_config"], 0, "-F"),
            (&["-F", "./evil_config"], 0, "-F"),
            (&["-p2", "-E", "log"], 1, "-E"),
            (&["-S/tmp/x"], 0, "-S"),
            (&["-L1:h:2"], 0, "-L"),
            (&["-R1:h:2"], 0, "-R"),
            (&["-D1080"], 0, "-D"),
            (&["-i./key"], 0, "-i"),
            (&["-4A"], 0, "-A"),
            (&["-Cv"], 0, "-v"),
            (&["-G"], 0, "-G"),
            (&["-W", "h:2"], 0, "-W"),
            (&["--", "evil"], 0, "--"),
        ];
        for (options, at, what) in refusals {
            let column = 16 + options[..*at].iter().map(|o| o.len() + 4).sum::<usize>();
            assert_eq!(
                error(&with_options(options)),
                format!(
                    "t.hcl:4:{column}: `options` in `ssh` in task \"a\": {}",
                    refused(options[*at], what)
                ),
                "{options:?}"
            );
        }
    }

    #[test]
    fn values_are_plain_so_that_nothing_is_expanded_or_run() {
        let cases: &[(&[&str], usize, &str)] = &[
            (
                &["-p0"],
                0,
                "\"-p0\": -p takes a port number from 1 to 65535, found \"0\"",
            ),
            (
                &["-p", "22x"],
                1,
                "\"22x\": -p takes a port number from 1 to 65535, found \"22x\"",
            ),
            (
                &["-oPort=22 ProxyCommand=x"],
                0,
                "\"-oPort=22 ProxyCommand=x\": Port takes a port number from 1 to 65535, found \"22 ProxyCommand=x\"",
            ),
            (
                &["-l$(id)"],
                0,
                "\"-l$(id)\": -l takes a user name (letters, digits and `._-`), found \"$(id)\"",
            ),
            (
                &["-oUser=%u"],
                0,
                "\"-oUser=%u\": User takes a user name (letters, digits and `._-`), found \"%u\"",
            ),
            (
                &["-J-oProxyCommand=x"],
                0,
                "\"-J-oProxyCommand=x\": -J takes `none` or jump hosts `[user@]host[:port]`, separated by commas, found \"-oProxyCommand=x\"",
            ),
            (
                &["-oHostName=%h.evil"],
                0,
                "\"-oHostName=%h.evil\": HostName takes a host name or address (letters, digits and `._-:[]`), found \"%h.evil\"",
            ),
            (
                &["-oCompression=maybe"],
                0,
                "\"-oCompression=maybe\": Compression takes one of: yes, no, found \"maybe\"",
            ),
            (
                &["-oConnectTimeout=-1"],
                0,
                "\"-oConnectTimeout=-1\": ConnectTimeout takes a number (or a time such as 30s), found \"-1\"",
            ),
            (&["-C", "-p"], 1, "\"-p\" needs a value after it"),
            (&["-o"], 0, "\"-o\" needs a value after it"),
        ];
        for (options, at, why) in cases {
            let column = 16 + options[..*at].iter().map(|o| o.len() + 4).sum::<usize>();
            assert_eq!(
                error(&with_options(options)),
                format!("t.hcl:4:{column}: `options` in `ssh` in task \"a\": {why}"),
                "{options:?}"
            );
        }
    }
}
