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
    /// Tries each mechanism in a child of its own.
    pub fn probe() -> Self {
        Self {
            namespaces: probe_namespaces(),
            landlock: probe_landlock(),
            seccomp: probe_seccomp(),
        }
    }
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

fn probe_namespaces() -> Result<(), String> {
    // A directory to cover, as the real run covers ~/.ssh; the child's mount stays its own.
    let scratch = std::env::temp_dir();
    let namespaces = Namespaces::new([scratch.as_path()], true);
    // Only the errno comes back from the child: on failure, each step is tried alone.
    trial(move || namespaces.enter().map_err(|(_, e)| e)).map_err(|e| why_namespaces(&e))
}

/// The step that fails, tried one by one, and its error.
fn why_namespaces(first: &io::Error) -> String {
    let scratch = std::env::temp_dir();
    let tries = [
        ("user", Namespaces::new([], false)),
        ("mount", Namespaces::new([scratch.as_path()], false)),
        ("net", Namespaces::new([scratch.as_path()], true)),
    ];
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
    let ruleset = landlock::ruleset(&landlock::Rules {
        hidden: &[],
        readable: &[],
        writable: &[],
        no_tcp: false,
    })?;
    let mut ruleset = Some(ruleset);
    trial(move || match ruleset.take() {
        Some(ruleset) => landlock::restrict(ruleset),
        None => Ok(()),
    })
    .map_err(|e| format!("restricting a trial process failed: {e}"))?;
    Ok(abi)
}

fn probe_seccomp() -> Result<(), String> {
    let program = seccomp::filter(true)?;
    trial(move || seccomp::apply(&program))
        .map_err(|e| format!("installing a trial filter failed: {e}"))
}
