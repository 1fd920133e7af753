//! NetworkPolicy, enforced: buildr's build pods and the per-run policies its code builds
//! (`PodPlan::pod` and `PodPlan::network_policy`) for each egress mode, on a real cluster whose
//! CNI enforces policies (kube-router's firewall in tests/cluster, kindnet on kind).
//!
//! Every "cannot reach" is paired with a control that reaches the same address from a pod
//! without a policy, so a test fails if the network is simply broken rather than filtered.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use buildr::task::{Container, Egress};
use common::cluster::{Namespace, api_server_vip, apply, unique};
use common::eventually;
use common::helm::helm_install;
use common::manifests::{build_pod_yaml, plain_pod_yaml, run_plan, run_pod_json, run_policy_json};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

/// How long a freshly created pod or policy may take to be enforced.
const SETTLE: Duration = Duration::from_secs(30);

/// A namespace with a server pod (echo servers on 8080 and 53, no policy) and a client pod
/// (no policy), both Ready.
struct Net {
    ns: Namespace,
    server_ip: String,
    node_ip: String,
    api: (String, u16),
}

impl Net {
    fn new() -> Net {
        let ns = Namespace::create("chart-netpol", &[]);
        apply(&plain_pod_yaml(
            &ns.name,
            "server",
            "echoserver -listen 0.0.0.0:53 & exec echoserver -listen 0.0.0.0:8080",
        ));
        apply(&plain_pod_yaml(&ns.name, "client", "exec sleep infinity"));
        ns.wait_ready("server");
        ns.wait_ready("client");
        let server_ip = ns.pod_ip("server");
        let node_ip = ns.host_ip("server");
        let net = Net {
            ns,
            server_ip,
            node_ip,
            api: api_server_vip(),
        };
        // Controls: without a policy all of these are reachable.
        for (what, host, port) in net.targets() {
            assert!(
                eventually(SETTLE, || net.ns.connects("client", &host, port)),
                "control: a pod without a policy cannot reach {what} ({host}:{port}); the test network is broken"
            );
        }
        net
    }

    /// What a build pod might try to reach: another pod (two ports), the node, the API server.
    fn targets(&self) -> Vec<(&'static str, String, u16)> {
        vec![
            ("another pod, port 8080", self.server_ip.clone(), 8080),
            ("another pod, port 53", self.server_ip.clone(), 53),
            ("the node (kubelet)", self.node_ip.clone(), 10250),
            ("the API server", self.api.0.clone(), self.api.1),
        ]
    }

    /// buildr's pod for a run with EGRESS (None: the task does not say, so the default),
    /// listening on 0.0.0.0:8080 instead of running an executor, and buildr's policy for it,
    /// owned by it; Ready.
    fn build_pod(&self, run_id: &str, egress: Option<Egress>) -> String {
        let container = Container {
            egress,
            ..Container::default()
        };
        let plan = run_plan(&self.ns.name, run_id, "2099-01-01T00:00:00Z", container);
        apply(&run_pod_json(&plan, "exec echoserver -listen 0.0.0.0:8080"));
        let pod = plan.name();
        let uid = self
            .ns
            .kubectl(&["get", "pod", &pod, "-o", "jsonpath={.metadata.uid}"]);
        apply(&run_policy_json(&plan, Some(&uid)));
        self.ns.wait_ready(&pod);
        pod
    }

    fn assert_blocked(&self, pod: &str, what: &str, host: &str, port: u16) {
        assert!(
            eventually(SETTLE, || !self.ns.connects(pod, host, port)),
            "{pod} can still reach {what} ({host}:{port}) {}s after it started",
            SETTLE.as_secs()
        );
    }

    fn assert_reaches(&self, pod: &str, what: &str, host: &str, port: u16) {
        assert!(
            eventually(SETTLE, || self.ns.connects(pod, host, port)),
            "{pod} cannot reach {what} ({host}:{port})"
        );
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn egress_none_reaches_nothing() {
    let net = Net::new();
    let pod = net.build_pod("none1", Some(Egress::None));
    for (what, host, port) in net.targets() {
        net.assert_blocked(&pod, what, &host, port);
    }
    // Loopback inside the pod is not the network: the executor's own port stays usable.
    assert!(
        net.ns.connects(&pod, "127.0.0.1", 8080),
        "{pod} cannot reach its own 127.0.0.1:8080"
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn egress_dns_reaches_only_port_53() {
    let net = Net::new();
    let pod = net.build_pod("dns1", Some(Egress::Dns));
    net.assert_reaches(&pod, "another pod on port 53", &net.server_ip, 53);
    for (what, host, port) in net.targets() {
        if port != 53 {
            net.assert_blocked(&pod, what, &host, port);
        }
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn egress_all_reaches_another_pod_and_the_api_server() {
    let net = Net::new();
    let pod = net.build_pod("all1", Some(Egress::All));
    for (what, host, port) in net.targets() {
        net.assert_reaches(&pod, what, &host, port);
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn the_default_egress_reaches_another_pod_the_node_and_the_api_server() {
    let net = Net::new();
    let pod = net.build_pod("default1", None);
    for (what, host, port) in net.targets() {
        net.assert_reaches(&pod, what, &host, port);
    }
}

/// A link-local address the test adds to the node's loopback interface (so that it is one of
/// the node's addresses, reachable from its pods the way 169.254.169.254 is on a cloud VM),
/// with a TCP listener on it; both removed when dropped.
struct LinkLocalListener {
    address: &'static str,
    port: u16,
    // Never accepted from: the kernel completes the handshakes a probe needs.
    _listener: TcpListener,
}

impl LinkLocalListener {
    const ADDRESS: &'static str = "169.254.77.1";

    fn new() -> LinkLocalListener {
        // `replace`, not `add`: an address left by a killed run is taken over.
        ip(&[
            "addr",
            "replace",
            &format!("{}/32", Self::ADDRESS),
            "dev",
            "lo",
        ]);
        let listener = TcpListener::bind((Self::ADDRESS, 0)).unwrap_or_else(|e| {
            ip(&["addr", "del", &format!("{}/32", Self::ADDRESS), "dev", "lo"]);
            panic!("listen on {}: {e}", Self::ADDRESS)
        });
        LinkLocalListener {
            address: Self::ADDRESS,
            port: listener.local_addr().unwrap().port(),
            _listener: listener,
        }
    }
}

impl Drop for LinkLocalListener {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.address), "dev", "lo"])
            .status();
    }
}

/// `ip ARGS`; panics when it fails (adding an address needs root).
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed (the test adds a link-local address to the node's loopback: run it as \
         root on the cluster's node): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh), run as root on its node (it adds 169.254.77.1 to lo)"]
fn the_default_egress_refuses_link_local_addresses_and_all_reaches_them() {
    let net = Net::new();
    let metadata = LinkLocalListener::new();
    let (what, host, port) = (
        "a link-local address of the node",
        metadata.address,
        metadata.port,
    );
    // Control: a pod without a policy reaches the listener.
    net.assert_reaches("client", what, host, port);
    let default = net.build_pod("ll-default", None);
    net.assert_blocked(&default, what, host, port);
    // Refused, not unreachable: the same pod still reaches the rest of the node.
    net.assert_reaches(&default, "the node (kubelet)", &net.node_ip, 10250);
    let all = net.build_pod("ll-all", Some(Egress::All));
    net.assert_reaches(&all, what, host, port);
    let named = net.build_pod("ll-named", Some(Egress::NoLinkLocal));
    net.assert_blocked(&named, what, host, port);
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn nothing_reaches_a_build_pod() {
    let net = Net::new();
    // Even with egress "all" and a server on 0.0.0.0, ingress stays closed.
    let pod = net.build_pod("ing1", Some(Egress::All));
    let ip = net.ns.pod_ip(&pod);
    assert!(
        net.ns.connects(&pod, "127.0.0.1", 8080),
        "{pod}'s server is not listening"
    );
    net.assert_blocked("client", &format!("build pod {pod}"), &ip, 8080);
    net.assert_blocked("server", &format!("build pod {pod}"), &ip, 8080);
    // The other build pod of the namespace cannot reach it either.
    let other = net.build_pod("ing2", Some(Egress::All));
    net.assert_blocked(&other, &format!("build pod {pod}"), &ip, 8080);
    // Control: the same client still reaches a pod without a policy.
    net.assert_reaches("client", "the server pod", &net.server_ip, 8080);
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn chart_default_deny_holds_for_buildr_pods_without_their_own_policy() {
    let net = Net::new();
    let _release = helm_install(
        &unique("chart-deny"),
        &net.ns.name,
        &[
            "namespace.create=false",
            "namespace.name=",
            "networkPolicy.enabled=true",
        ],
    );
    // A buildr pod whose run policy is missing (not yet created, or lost).
    apply(&build_pod_yaml(
        &net.ns.name,
        "nopolicy1",
        "2099-01-01T00:00:00Z",
        "exec echoserver -listen 0.0.0.0:8080",
    ));
    let pod = "buildr-nopolicy1";
    net.ns.wait_ready(pod);
    for (what, host, port) in net.targets() {
        net.assert_blocked(pod, what, &host, port);
    }
    let ip = net.ns.pod_ip(pod);
    net.assert_blocked("client", &format!("build pod {pod}"), &ip, 8080);
    // Pods that are not buildr's are not affected by the chart's policy.
    for (what, host, port) in net.targets() {
        net.assert_reaches("client", what, &host, port);
    }
}
