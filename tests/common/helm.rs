//! Helm, as tests/cluster builds it, and releases of charts/buildr that uninstall themselves.

use super::cluster::tool;
use super::{Run, run};

/// helm ARGS from the repository's root, whatever the outcome.
pub fn helm(args: &[&str]) -> Run {
    run(&tool("helm"), args, None)
}

/// A Helm release that is uninstalled when dropped (also when the test panics).
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]);
    }
}

/// Installs charts/buildr as release NAME into NAMESPACE with `--set` VALUES; panics on failure.
pub fn helm_install(name: &str, namespace: &str, values: &[&str]) -> Release {
    let mut args = vec![
        "install",
        name,
        "charts/buildr",
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "120s",
    ];
    for v in values {
        args.push("--set");
        args.push(v);
    }
    let r = helm(&args);
    // Made before the check, so that a half-installed release is uninstalled too.
    let release = Release {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    };
    assert!(r.ok, "helm {} failed:\n{}", args.join(" "), r.stderr);
    release
}
