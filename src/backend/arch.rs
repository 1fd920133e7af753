//! Architectures in one vocabulary, Kubernetes' `kubernetes.io/arch` (`amd64`, `arm64`, …),
//! which the executor binary, the tools and every backend's machines are matched in.

/// `kubernetes.io/arch` for a Rust target architecture (`std::env::consts::ARCH`), which is
/// also what `uname -m` prints on Linux for the common ones.
pub fn kubernetes_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `kubernetes.io/arch` of this machine, the one the local backend's tools must be built for.
pub fn host_arch() -> &'static str {
    kubernetes_arch(std::env::consts::ARCH)
}
