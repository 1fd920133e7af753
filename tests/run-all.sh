#!/usr/bin/env bash
# The whole test suite, as README.md gives it and CI runs it: brings up the real single-node
# Kubernetes of tests/cluster/ (building it on first use), runs its smoke test and every Rust
# test including those marked #[ignore = "needs the cluster ..."], and brings the cluster
# down again, also on failure or Ctrl-C. Needs root (it starts containerd and a kubelet).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# rustup's default place, for shells that did not source ~/.cargo/env.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "run-all: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
# The ssh backend's tests (tests/ssh.rs) start a real OpenSSH server themselves: Debian's.
if [[ ! -x /usr/sbin/sshd ]]; then
  echo "run-all: installing openssh-server for the ssh backend's tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi
# Build before the cluster comes up, so that the cluster is not idling through a compile: the
# tests, the static buildr that the Kubernetes tests send into their pods (`cargo dist`), and
# the tools the tests run (tests/cluster/test-tools.txt).
cargo build --tests --bins
cargo dist
tests/cluster/build-tools.sh --tests

exec tests/cluster/with-cluster.sh bash -c 'tests/cluster/smoke.sh && cargo test -- --include-ignored'
