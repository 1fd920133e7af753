//! Input snapshots against a real OCI registry (the CNCF Distribution registry that
//! tests/cluster/build-tools.sh builds, on 127.0.0.1): what `buildr inputs push` stores is the
//! tree (paths, kinds, modes, contents, link targets), read back from the registry's own
//! storage; and only what changed travels, counted in the registry's access log.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildr::snapshot::{Index, Kind};
use common::registry::RegistryServer;
use common::{buildr_bin, stderr, stdout};
use sha2::{Digest, Sha256};

const NEEDS: &str = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)";
const REPOSITORY: &str = "team/inputs";

/// A tree as a user compares it: each path's kind, mode, and content or link target.
type Tree = BTreeMap<String, (Kind, u32, Vec<u8>)>;

/// A registry with its storage.
struct Registry {
    server: RegistryServer,
    storage: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        let storage = tempfile::tempdir().unwrap();
        let server = RegistryServer::start(storage.path(), &[], false);
        Self { server, storage }
    }

    fn location(&self) -> String {
        format!("{}/{REPOSITORY}", self.server.address)
    }

    /// Blobs uploaded so far (each upload ends with one `PUT` to its upload session).
    fn uploads(&self) -> usize {
        let put = format!("\"PUT /v2/{REPOSITORY}/blobs/uploads/");
        self.server
            .served()
            .lines()
            .filter(|line| line.contains(&put))
            .count()
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        fs::read(self.blob_path(digest)).unwrap()
    }

    /// Where the registry keeps the blob `digest`.
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.path().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// The snapshot `reference` (`…@sha256:…`) names, built into a fresh directory as a
    /// workspace would be, from the registry's own copy of its index and packs: the index, and
    /// the tree.
    fn snapshot(&self, reference: &str) -> (Index, Tree) {
        let (_, digest) = reference.rsplit_once('@').unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&self.blob(digest)).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.buildr.inputs.index.v2"
        );
        let index = Index::from_bytes(&self.blob(layers[0]["digest"].as_str().unwrap())).unwrap();
        for pack in &index.packs {
            assert!(
                layers.iter().any(|layer| layer["digest"] == pack.digest),
                "the manifest references every pack, so that garbage collection keeps it"
            );
        }
        let workspace = tempfile::tempdir().unwrap();
        buildr::snapshot::apply(&index, |digest| self.blob_path(digest), workspace.path()).unwrap();
        (index, tree_of(workspace.path()))
    }
}

/// A machine pushing: its own cache directory.
struct Machine {
    cache: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        Self {
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// `buildr inputs push` of `repo`: the snapshot's pinned reference.
    fn push(&self, repo: &Path, registry: &Registry, tag: Option<&str>) -> String {
        let mut command = Command::new(buildr_bin());
        command
            .args(["inputs", "push", "--repo"])
            .arg(repo)
            .args(["--inputs-registry", &registry.location()])
            .env("XDG_CACHE_HOME", self.cache.path());
        if let Some(tag) = tag {
            command.args(["--tag", tag]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let reference = stdout(&output).trim().to_string();
        assert!(
            reference.starts_with(&format!("{}@sha256:", registry.location())),
            "{reference}"
        );
        reference
    }
}

/// Content that does not compress away: `len` bytes from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.to_le_bytes()).to_vec();
    while bytes.len() < len {
        bytes.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    bytes.truncate(len);
    bytes
}

/// A source-like tree: 400 files of 8 KiB in 10 directories, a 5 MiB file, two files with one
/// content, an executable, a symlink, an empty directory.
fn source_tree() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for i in 0..400u64 {
        let path = repo.path().join(format!("src/d{}/f{i}.rs", i % 10));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, noise(i, 8 << 10)).unwrap();
    }
    fs::write(repo.path().join("big.bin"), noise(1000, 5 << 20)).unwrap();
    fs::write(repo.path().join("same-a.txt"), "twice\n").unwrap();
    fs::write(repo.path().join("same-b.txt"), "twice\n").unwrap();
    fs::write(repo.path().join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        repo.path().join("run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/d0/f0.rs", repo.path().join("link")).unwrap();
    fs::create_dir(repo.path().join("empty")).unwrap();
    repo
}

/// What a workspace built from `repo` holds: each path with its kind, mode, and content or
/// target.
fn tree_of(repo: &Path) -> Tree {
    let mut tree = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(repo.join(&dir)).unwrap() {
            let entry = entry.unwrap();
            let relative = dir.join(entry.file_name());
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let name = relative.to_str().unwrap().to_string();
            if meta.is_dir() {
                tree.insert(name, (Kind::Dir, mode, Vec::new()));
                stack.push(relative);
            } else if meta.is_symlink() {
                let target = fs::read_link(entry.path()).unwrap();
                let target = target.to_str().unwrap().as_bytes().to_vec();
                tree.insert(name, (Kind::Symlink, 0o777, target));
            } else {
                tree.insert(name, (Kind::File, mode, fs::read(entry.path()).unwrap()));
            }
        }
    }
    tree
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn a_snapshot_holds_the_tree_exactly_and_only_what_changed_travels() {
    let registry = Registry::start();
    let repo = source_tree();
    let laptop = Machine::new();

    let first = laptop.push(repo.path(), &registry, Some("main"));
    let (index, tree) = registry.snapshot(&first);
    assert_eq!(tree, tree_of(repo.path()), "{NEEDS}");
    // The 5 MiB file is a pack of its own, the 3.2 MiB of small files a few more; one content
    // held twice travels once.
    assert!(index.packs.len() >= 2, "{:?}", index.packs.len());
    let held: usize = index.packs.iter().map(|pack| pack.blobs.len()).sum();
    let files = index
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .count();
    assert_eq!(held, files - 1);
    let first_uploads = registry.uploads();
    // Every pack, the index and the empty config.
    assert_eq!(first_uploads, index.packs.len() + 2);

    // One file changed: one small pack and the index.
    fs::write(repo.path().join("src/d3/f13.rs"), noise(5000, 8 << 10)).unwrap();
    let second = laptop.push(repo.path(), &registry, Some("main"));
    let (index, tree) = registry.snapshot(&second);
    assert_eq!(tree, tree_of(repo.path()));
    assert_eq!(registry.uploads() - first_uploads, 2);
    let new_pack = index.packs.last().unwrap();
    assert!(new_pack.size < 64 << 10, "{new_pack:?}");

    // A rename and a mode change: no content, only the index.
    let before = registry.uploads();
    fs::rename(
        repo.path().join("src/d4/f14.rs"),
        repo.path().join("src/d4/renamed.rs"),
    )
    .unwrap();
    fs::set_permissions(
        repo.path().join("src/d5/f15.rs"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let third = laptop.push(repo.path(), &registry, Some("main"));
    let (_, tree) = registry.snapshot(&third);
    assert_eq!(tree, tree_of(repo.path()));
    assert_eq!(registry.uploads() - before, 1);

    // Another machine, which has never pushed: it learns the packs from the tag, and sends
    // only its own change.
    let ci = Machine::new();
    let before = registry.uploads();
    fs::write(repo.path().join("src/d6/f16.rs"), noise(6000, 8 << 10)).unwrap();
    let fourth = ci.push(repo.path(), &registry, Some("main"));
    let (_, tree) = registry.snapshot(&fourth);
    assert_eq!(tree, tree_of(repo.path()));
    assert_eq!(registry.uploads() - before, 2);
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn a_bad_registry_or_tag_is_one_clear_line_and_pushes_nothing() {
    let registry = Registry::start();
    let repo = source_tree();
    let machine = Machine::new();
    for (location, tag, said) in [
        ("no-repository", "main", "is not REGISTRY/REPOSITORY"),
        (&registry.location()[..], "no spaces", "is not a valid tag"),
    ] {
        let output = Command::new(buildr_bin())
            .args(["inputs", "push", "--repo"])
            .arg(repo.path())
            .args(["--inputs-registry", location, "--tag", tag])
            .env("XDG_CACHE_HOME", machine.cache.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains(said), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(registry.uploads(), 0);
}

/// `buildr-executor inputs-pull`, as a pod runs it: its exit status, its stderr, and the
/// workspace it built (empty before).
fn pull(reference: &str, workspace: &Path) -> (Option<i32>, String) {
    let packs = tempfile::tempdir().unwrap();
    let output = Command::new(common::executor_bin())
        .args(["inputs-pull", "--snapshot", reference, "--packs"])
        .arg(packs.path().join("packs"))
        .arg("--to")
        .arg(workspace)
        .output()
        .unwrap();
    assert!(
        !packs.path().join("packs").exists(),
        "the packs are removed once applied, or on a failure"
    );
    (output.status.code(), stderr(&output))
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn a_pulled_snapshot_is_the_tree_and_a_tampered_pack_applies_nothing() {
    let registry = Registry::start();
    let repo = source_tree();
    let reference = Machine::new().push(repo.path(), &registry, None);

    let workspace = tempfile::tempdir().unwrap();
    let (code, said) = pull(&reference, workspace.path());
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(tree_of(workspace.path()), tree_of(repo.path()), "{NEEDS}");

    // A pack changed in the registry's storage, with other bytes of its size: refused, and the
    // status is not the one that makes a run copy the inputs whole.
    let (index, _) = registry.snapshot(&reference);
    let pack = index.packs.iter().max_by_key(|pack| pack.size).unwrap();
    let path = registry.blob_path(&pack.digest);
    let mut forged = fs::read(&path).unwrap();
    let middle = forged.len() / 2;
    forged[middle] ^= 0xff;
    fs::write(&path, forged).unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (code, said) = pull(&reference, workspace.path());
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("is not what its digest says"), "{said}");
    assert_eq!(fs::read_dir(workspace.path()).unwrap().count(), 0);
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn a_registry_out_of_reach_is_the_status_that_copies_the_inputs_whole() {
    let registry = Registry::start();
    let repo = source_tree();
    let reference = Machine::new().push(repo.path(), &registry, None);
    drop(registry);
    let workspace = tempfile::tempdir().unwrap();
    let (code, said) = pull(&reference, workspace.path());
    assert_eq!(code, Some(75), "{said}");
    assert!(said.contains("cannot pull from"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert_eq!(fs::read_dir(workspace.path()).unwrap().count(), 0);
}
