//! The round trip: a task that writes, edits, deletes, links and chmods every kind of file, run
//! locally and in a pod, whose two results must be the same tree.

use super::buildr;
use super::cluster::{Namespace, snapshot};
use super::{stderr, write_files};

/// What the round trip changes: every kind of file a build writes or removes.
const ROUND_TRIP: &str = r#"
    set -eu
    echo after > edit.txt
    echo deep after > src/lib/deep.txt
    rm gone.txt
    mkdir -p new/nested/dir empty/dir
    echo nested > new/nested/dir/file.txt
    printf '#!/bin/sh\necho run\n' > new/tool.sh && chmod 755 new/tool.sh
    chmod 600 src/lib/deep.txt
    ln -s nested/dir/file.txt new/link
    echo spaced > 'with space.txt'
    echo unicode > 'héllo wörld ✓.txt'
    head -c 300000 /dev/urandom > new/random.bin
"#;

fn round_trip_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            ("keep.txt", "unchanged"),
            ("edit.txt", "before"),
            ("gone.txt", "to be deleted"),
            ("src/lib/deep.txt", "deep before"),
        ],
    );
    repo
}

/// The local backend and a k8s run in `ns` and `image`, with `extra` options, bring back the
/// same tree.
pub fn matches_local(ns: &Namespace, image: &str, extra: &[&str]) {
    let repo = round_trip_repo();
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let script = ["--", "sh", "-c", ROUND_TRIP];
    let repo_arg = repo.path().to_str().unwrap();
    let mut local_args = vec!["run", "--repo", repo_arg, "--out"];
    local_args.push(local.path().to_str().unwrap());
    local_args.extend(script);
    let by_local = buildr(&local_args);
    assert_eq!(by_local.status.code(), Some(0), "{}", stderr(&by_local));

    let pod_args: Vec<&str> = extra.iter().copied().chain(script).collect();
    let by_pod = ns.run(repo.path(), remote.path(), image, &pod_args);
    assert_eq!(by_pod.status.code(), Some(0), "{}", stderr(&by_pod));
    assert!(stderr(&by_pod).contains("deleted 1 path; not applied"));

    let pod_tree = snapshot(remote.path());
    assert!(pod_tree.iter().any(|(path, _, _)| path == "new/random.bin"));
    // The random bytes differ between the runs; everything else is identical.
    let without_random = |tree: Vec<(String, String, Vec<u8>)>| -> Vec<_> {
        tree.into_iter()
            .map(|(p, k, d)| {
                if p == "new/random.bin" {
                    (p, k, d.len().to_le_bytes().to_vec())
                } else {
                    (p, k, d)
                }
            })
            .collect()
    };
    assert_eq!(
        without_random(pod_tree),
        without_random(snapshot(local.path()))
    );
}
