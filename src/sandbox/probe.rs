//! What this machine allows, found by a real trial of each mechanism in a forked child (the
//! return of `unshare` in a process that never uses the namespace proves little: AppArmor and
//! container runtimes refuse later steps). Each trial's child exits without exec.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::landlock;
use super::namespaces::Namespaces;
use super::seccomp;

/// Each mechanism: `Ok` (with the Landlock ABI) or why not.
#[derive(Debug, Clone)]
pub struct Support {
    pub namespaces: Result<(), String>,
    pub landlock: Result<i32, String>,
    pub seccomp: Result<(), String>,
}

impl Support {
    /// Tries every mechanism at once in one child (the common case costs one fork), and only
    /// if that fails each in a child of its own, to say which fails and why. `net` tries a
    /// network namespace too (its creation alone costs milliseconds: only for `egress = "none"`).
    pub fn probe(net: bool) -> Self {
        if let (Ok(abi), Ok(ruleset), Ok(program)) = (
            landlock::kernel_abi(),
            landlock_trial_ruleset(),
            seccomp::filter(true, true),
        ) {
            let namespaces = namespaces_trial(net);
            let mut ruleset = Some(ruleset);
            let all = trial(move || {
                namespaces.enter().map_err(|(_, e)| e)?;
                ruleset.take().map_or(Ok(()), landlock::restrict)?;
                seccomp::apply(&program)
            });
            if all.is_ok() {
                return Self {
                    namespaces: Ok(()),
                    landlock: Ok(abi),
                    seccomp: Ok(()),
                };
            }
        }
        Self {
            namespaces: probe_namespaces(net),
            landlock: probe_landlock(),
            seccomp: probe_seccomp(),
        }
    }
}

/// The namespaces of a run, covering a directory as a run covers `~/.ssh` (the child's mount
/// stays its own).
fn namespaces_trial(net: bool) -> Namespaces {
    Namespaces::new([std::env::temp_dir().as_path()], net)
}

/// A ruleset that reads everything and writes nothing: harmless for a child that only exits.
fn landlock_trial_ruleset() -> Result<::landlock::RulesetCreated, String> {
    landlock::ruleset(&landlock::Rules {
        hidden: &[],
        readable: &[],
        writable: &[],
        no_tcp: false,
    })
}

/// Runs `trial` in a forked child that exits 0 after it; its error's errno comes back.
fn trial(mut trial: impl FnMut() -> io::Result<()> + Send + Sync + 'static) -> io::Result<()> {
    let mut command = Command::new("/");
    // SAFETY: the trials make plain system calls on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            trial()?;
            libc::_exit(0)
        });
    }
    let status = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?
        .wait()?;
    match status.code() {
        Some(0) => Ok(()),
        _ => Err(io::Error::other(format!(
            "the trial child ended with {status}"
        ))),
    }
}

fn probe_namespaces(net: bool) -> Result<(), String> {
    let namespaces = namespaces_trial(net);
    // Only the errno comes back from the child: on failure, each step is tried alone.
    trial(move || namespaces.enter().map_err(|(_, e)| e)).map_err(|e| why_namespaces(&e, net))
}

/// The step that fails, tried one by one, and its error.
fn why_namespaces(first: &io::Error, net: bool) -> String {
    let mut tries = vec![
        ("user", Namespaces::new([], false)),
        ("mount", namespaces_trial(false)),
    ];
    if net {
        tries.push(("net", namespaces_trial(true)));
    }
    for (name, namespaces) in tries {
        if let Err(e) = trial(move || namespaces.enter().map_err(|(_, e)| e)) {
            let hint = if name == "user" && e.raw_os_error() == Some(libc::EPERM) {
                " (refused by the kernel's or AppArmor's settings for unprivileged user \
                 namespaces, or by a container's seccomp profile)"
            } else {
                ""
            };
            return format!("the {name} namespace: {e}{hint}");
        }
    }
    first.to_string()
}

fn probe_landlock() -> Result<i32, String> {
    let abi = landlock::kernel_abi()?;
    let mut ruleset = Some(landlock_trial_ruleset()?);
    trial(move || ruleset.take().map_or(Ok(()), landlock::restrict))
        .map_err(|e| format!("restricting a trial process failed: {e}"))?;
    Ok(abi)
}

fn probe_seccomp() -> Result<(), String> {
    let program = seccomp::filter(true, true)?;
    trial(move || seccomp::apply(&program))
        .map_err(|e| format!("installing a trial filter failed: {e}"))
}
