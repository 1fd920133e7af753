//! The seccomp filter: system calls a build step has no business making (mounting, kernel
//! keyrings, loading BPF or modules) fail with EPERM; so do tracing and reading other processes
//! where Landlock (which confines them to the task's own tree) is missing, and with
//! `egress = "none"` where no network namespace is to be had, IPv4 and IPv6 sockets.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Refused outright. `mount`, `umount2` and friends keep a task that is root in its user
/// namespace from uncovering what the mount namespace hides; `unshare` and `setns` from making
/// namespaces of its own.
const REFUSED: &[i64] = &[
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    // io_uring's own socket and connect operations would pass around the socket rule.
    libc::SYS_io_uring_setup,
];

/// Tracing and reading other processes: refused only without Landlock, which allows them
/// within the task's own tree (sanitizers and debuggers in tests need them) and not outside.
const TRACING: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
];

/// The filter, compiled for this machine's architecture; `refuse_tracing` adds [`TRACING`];
/// `refuse_inet` refuses IPv4 and IPv6 sockets (a private loopback without a network namespace
/// is not to be had: none at all).
pub fn filter(refuse_tracing: bool, refuse_inet: bool) -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))?;
    let refused = REFUSED
        .iter()
        .chain(if refuse_tracing { TRACING } else { &[] });
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        refused.map(|&call| (call, Vec::new())).collect();
    if refuse_inet {
        let domain = |family: i32| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, family as u64)
                .and_then(|c| SeccompRule::new(vec![c]))
        };
        let inet = [domain(libc::AF_INET), domain(libc::AF_INET6)]
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        rules.insert(libc::SYS_socket, inet);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Installs `program` on the calling thread (with no_new_privs). Only plain system calls: fit
/// for a forked child.
pub fn apply(program: &BpfProgram) -> std::io::Result<()> {
    seccompiler::apply_filter(program).map_err(|_| std::io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_with_and_without_the_socket_rule() {
        let plain = filter(false, false).unwrap();
        let inet = filter(false, true).unwrap();
        assert!(
            inet.len() > plain.len(),
            "{} vs {}",
            inet.len(),
            plain.len()
        );
    }
}
