//! The Landlock ruleset: read everything of the system except what is hidden (granted entry by
//! entry along the way to each hidden path, since a rule covers a whole hierarchy), write only
//! the workspace, the private TMPDIR, the `writable` additions and the harmless devices; no
//! signals to processes outside (scopes, ABI 6), no tracing them (any ABI), and with
//! `egress = "none"` no TCP bind or connect (ABI 4). Built before the fork, applied in the
//! child; best effort across ABI versions, the ABI reported for `-v` and `strict`.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, Scope,
};

/// The newest ABI whose rights this policy was written and tested for; older kernels get the
/// subset they know (the crate's best effort).
const ABI_TARGET: ABI = ABI::V6;

/// Devices every build writes to or reads from.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
];

/// The ABI this kernel offers, or why it offers none.
pub fn kernel_abi() -> Result<i32, String> {
    // SAFETY: the version query takes no pointer.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v >= 1 {
        return Ok(v as i32);
    }
    let e = std::io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => "built into the kernel but not enabled at boot (lsm=)".into(),
        Some(libc::ENOSYS) => {
            "not in this kernel (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)".into()
        }
        _ => format!("the version query failed: {e}"),
    })
}

/// What the ruleset grants.
pub struct Rules<'a> {
    /// Never readable (canonical paths); ancestors of these are granted entry by entry.
    pub hidden: &'a [PathBuf],
    /// Readable even if hidden.
    pub readable: &'a [PathBuf],
    pub writable: &'a [PathBuf],
    /// No TCP bind or connect at all.
    pub no_tcp: bool,
}

/// The ruleset, created and filled, to restrict the child with.
pub fn ruleset(rules: &Rules) -> Result<RulesetCreated, String> {
    let all = AccessFs::from_all(ABI_TARGET);
    let read = AccessFs::from_read(ABI_TARGET);
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(ABI_TARGET)))
        .map_err(|e| e.to_string())?;
    if rules.no_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(ABI_TARGET))
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    let mut readable = Vec::new();
    granted_around(Path::new("/"), rules.hidden, &mut readable);
    readable.extend(rules.readable.iter().cloned());
    let devices = DEVICES.iter().map(PathBuf::from);
    for (paths, access) in [
        (readable, read),
        (rules.writable.iter().cloned().chain(devices).collect(), all),
    ] {
        for path in paths {
            // A path that is not there has nothing to grant.
            let Ok(fd) = PathFd::new(&path) else { continue };
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(ABI_TARGET)
            };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| format!("cannot grant {}: {e}", path.display()))?;
        }
    }
    Ok(created)
}

/// Restricts the calling thread. Only plain system calls: fit for a forked child.
pub fn restrict(ruleset: RulesetCreated) -> std::io::Result<()> {
    ruleset
        .restrict_self()
        .map(|_| ())
        .map_err(|_| std::io::Error::last_os_error())
}

/// Adds to `out` the hierarchies under `dir` that hold nothing of `hidden`: `dir` itself if it
/// holds none, else each of its entries in turn.
fn granted_around(dir: &Path, hidden: &[PathBuf], out: &mut Vec<PathBuf>) {
    if hidden.iter().any(|h| h == dir) {
        return;
    }
    if !hidden.iter().any(|h| h.starts_with(dir)) {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        granted_around(&entry.path(), hidden, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hidden_paths_are_left_out_and_their_siblings_granted() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        for dir in [".ssh", ".cargo", "src"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        std::fs::write(home.join(".netrc"), "x").unwrap();
        let hidden = [home.join(".ssh"), home.join(".netrc")];
        let mut out = Vec::new();
        granted_around(root.path(), &hidden, &mut out);
        out.sort();
        assert_eq!(out, vec![home.join(".cargo"), home.join("src")]);
    }
}
