//! One task's confinement: the policy and what this machine supports turned into the layers to
//! apply (or the one line that says why the run is refused), prepared before the fork and
//! applied in the child just before exec.

use std::path::{Path, PathBuf};

use ::landlock::RulesetCreated;
use seccompiler::BpfProgram;

use super::landlock::{self, Rules};
use super::namespaces::Namespaces;
use super::policy::{CREDENTIALS, Mode, Net, Policy, expand_home};
use super::probe::Support;
use super::seccomp;

/// The first Landlock ABI with the signal scope, without which `strict` refuses.
const SCOPES_ABI: i32 = 6;

/// Where the task works: the only places it writes, with the `writable` additions.
pub struct Places<'a> {
    pub workspace: &'a Path,
    /// The task's private TMPDIR.
    pub tmpdir: &'a Path,
    /// The executor's home directory, where the credentials are and `~/` points.
    pub home: Option<&'a Path>,
}

/// The layers one task runs under.
pub struct Confinement {
    namespaces: Option<Namespaces>,
    landlock: Option<RulesetCreated>,
    seccomp: Option<BpfProgram>,
    /// What `-v` says: `namespaces(user,mount,net) + landlock abi 7 + seccomp`.
    pub summary: String,
}

/// The paths that exist, symlinks resolved (Landlock and the mounts act on what is there; the
/// walk around hidden paths compares real paths).
fn canonical(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    paths
        .into_iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect()
}

/// Why a run cannot be confined as its policy asks: one line, with the way out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

const OPT_OUT: &str = "run it unconfined with `sandbox = \"none\"` in the task or `--sandbox none`";

impl Confinement {
    /// The layers for `policy` on a machine that supports `support`; `None` for `sandbox =
    /// "none"`.
    pub fn prepare(
        policy: &Policy,
        support: &Support,
        places: &Places,
    ) -> Result<Option<Self>, Refused> {
        let mode = policy.task.mode;
        if mode == Mode::None {
            return Ok(None);
        }
        let net_none = policy.net == Net::None;
        let landlock_abi = support.landlock.as_ref().ok().copied();
        if mode == Mode::Strict {
            let mut missing = Vec::new();
            if let Err(e) = &support.namespaces {
                missing.push(format!("namespaces: {e}"));
            }
            match &support.landlock {
                Err(e) => missing.push(format!("landlock: {e}")),
                Ok(abi) if *abi < SCOPES_ABI => missing.push(format!(
                    "landlock: abi {abi} lacks the signal scope (abi {SCOPES_ABI}, Linux 6.12)"
                )),
                Ok(_) => {}
            }
            if let Err(e) = &support.seccomp {
                missing.push(format!("seccomp: {e}"));
            }
            if !missing.is_empty() {
                return Err(Refused(format!(
                    "sandbox = \"strict\": not every layer can be enforced here: {}; use \
                     `sandbox = \"auto\"` for what this machine allows, or {OPT_OUT}",
                    missing.join("; ")
                )));
            }
        }
        if let (Err(ns), Err(ll)) = (&support.namespaces, &support.landlock) {
            return Err(Refused(format!(
                "sandbox: nothing confines the task on this machine (tried namespaces: {ns}; \
                 landlock: {ll}); {OPT_OUT}"
            )));
        }
        if net_none && let (Err(ns), Err(sc)) = (&support.namespaces, &support.seccomp) {
            return Err(Refused(format!(
                "sandbox: `egress = \"none\"` cannot be enforced here (tried a network \
                 namespace: {ns}; a seccomp filter: {sc}); {OPT_OUT}, or allow egress"
            )));
        }

        let home = places.home;
        let mut writable = vec![places.workspace.to_path_buf(), places.tmpdir.to_path_buf()];
        for path in &policy.task.writable {
            let path = expand_home(path, home);
            // A cache the task fills may not exist yet; Landlock grants only what exists.
            let _ = std::fs::create_dir_all(&path);
            writable.push(path);
        }
        let writable = canonical(writable);
        let readable = canonical(policy.task.readable.iter().map(|p| expand_home(p, home)));
        let credentials = home
            .into_iter()
            .flat_map(|home| CREDENTIALS.iter().map(move |c| home.join(c)));
        let hidden = canonical(credentials.chain(policy.hide.iter().cloned()));

        let mut layers = Vec::new();
        let namespaces = support.namespaces.is_ok().then(|| {
            // A mount over a directory would hide what the task must reach beneath it: there
            // Landlock alone keeps the rest out.
            let kept = |hidden: &&PathBuf| {
                !writable
                    .iter()
                    .chain(&readable)
                    .any(|k| k.starts_with(hidden))
            };
            let namespaces =
                Namespaces::new(hidden.iter().filter(kept).map(PathBuf::as_path), net_none);
            layers.push(format!("namespaces({})", namespaces.names()));
            namespaces
        });
        let landlock = match landlock_abi {
            Some(abi) => {
                let ruleset = landlock::ruleset(&Rules {
                    hidden: &hidden,
                    readable: &readable,
                    writable: &writable,
                    no_tcp: net_none && namespaces.is_none(),
                })
                .map_err(|e| Refused(format!("sandbox: cannot build the Landlock rules: {e}")))?;
                layers.push(format!("landlock abi {abi}"));
                Some(ruleset)
            }
            None => None,
        };
        let seccomp = match &support.seccomp {
            Ok(()) => {
                let program = seccomp::filter(landlock.is_none(), net_none && namespaces.is_none())
                    .map_err(|e| Refused(format!("sandbox: {e}")))?;
                layers.push("seccomp".to_string());
                Some(program)
            }
            Err(_) => None,
        };
        let mut summary = layers.join(" + ");
        let off: Vec<String> = [
            support
                .namespaces
                .as_ref()
                .err()
                .map(|e| format!("namespaces: {e}")),
            support
                .landlock
                .as_ref()
                .err()
                .map(|e| format!("landlock: {e}")),
            support
                .seccomp
                .as_ref()
                .err()
                .map(|e| format!("seccomp: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !off.is_empty() {
            summary.push_str(&format!(" (without {})", off.join("; ")));
        }
        Ok(Some(Self {
            namespaces,
            landlock,
            seccomp,
            summary,
        }))
    }

    /// Applies the layers in the task's process between fork and exec: the namespaces first
    /// (mounting is over once Landlock is on), then Landlock, then the seccomp filter.
    pub fn install(self, command: &mut tokio::process::Command) {
        let Self {
            namespaces,
            mut landlock,
            seccomp,
            ..
        } = self;
        // SAFETY: each layer makes plain system calls on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if let Some(namespaces) = &namespaces {
                    namespaces.enter().map_err(|(_, e)| e)?;
                }
                if let Some(ruleset) = landlock.take() {
                    landlock::restrict(ruleset)?;
                }
                if let Some(program) = &seccomp {
                    seccomp::apply(program)?;
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::TaskSandbox;

    fn policy(mode: Mode, net: Net) -> Policy {
        Policy {
            task: TaskSandbox {
                mode,
                ..TaskSandbox::default()
            },
            net,
            ..Policy::default()
        }
    }

    fn refusal(policy: &Policy, support: Support) -> String {
        let dir = tempfile::tempdir().unwrap();
        let places = Places {
            workspace: dir.path(),
            tmpdir: dir.path(),
            home: None,
        };
        match Confinement::prepare(policy, &support, &places) {
            Err(refused) => refused.to_string(),
            Ok(_) => panic!("not refused"),
        }
    }

    fn support(namespaces: bool, landlock: Option<i32>, seccomp: bool) -> Support {
        let why = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("no {what}"))
            }
        };
        Support {
            namespaces: why(namespaces, "userns"),
            landlock: landlock.ok_or_else(|| "no landlock".to_string()),
            seccomp: why(seccomp, "seccomp"),
        }
    }

    #[test]
    fn each_refusal_is_one_line_naming_what_was_tried_and_the_way_out() {
        let cases = [
            (
                policy(Mode::Auto, Net::Default),
                support(false, None, true),
                "sandbox: nothing confines the task on this machine (tried namespaces: no \
                 userns; landlock: no landlock); run it unconfined with `sandbox = \"none\"` in \
                 the task or `--sandbox none`",
            ),
            (
                policy(Mode::Strict, Net::Default),
                support(true, Some(5), false),
                "sandbox = \"strict\": not every layer can be enforced here: landlock: abi 5 \
                 lacks the signal scope (abi 6, Linux 6.12); seccomp: no seccomp; use `sandbox \
                 = \"auto\"` for what this machine allows, or run it unconfined with `sandbox = \
                 \"none\"` in the task or `--sandbox none`",
            ),
            (
                policy(Mode::Auto, Net::None),
                support(false, Some(7), false),
                "sandbox: `egress = \"none\"` cannot be enforced here (tried a network \
                 namespace: no userns; a seccomp filter: no seccomp); run it unconfined with \
                 `sandbox = \"none\"` in the task or `--sandbox none`, or allow egress",
            ),
        ];
        for (policy, support, expected) in cases {
            let line = refusal(&policy, support);
            assert_eq!(line, expected);
            assert_eq!(line.lines().count(), 1);
        }
    }

    #[test]
    fn none_confines_nothing_even_where_nothing_works() {
        let dir = tempfile::tempdir().unwrap();
        let places = Places {
            workspace: dir.path(),
            tmpdir: dir.path(),
            home: None,
        };
        let prepared = Confinement::prepare(
            &policy(Mode::None, Net::None),
            &support(false, None, false),
            &places,
        );
        assert!(matches!(prepared, Ok(None)));
    }
}
