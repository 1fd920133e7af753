//! Inputs by content on the real cluster of tests/cluster: `buildr run --backend k8s
//! --inputs-registry` pushes the inputs to a real Distribution registry on the node's address,
//! and the pod pulls them over the pod network, through a NetworkPolicy that lets it reach
//! only the registry (the CNI enforces it). The workspace equals today's whole copy; only what
//! changed is pushed, counted in the registry's access log; a pod that cannot reach the
//! registry gets the inputs whole; a tampered pack applies nothing and runs nothing.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::cluster::{BUSYBOX_IMAGE, Namespace, apply, kubectl};
use common::pool::{PoolController, install_crd, pool_pods, wait_full};
use common::registry::{RegistryServer, free_port};
use common::{buildr_bin, eventually, stderr, stdout, write_files};
use std::time::Duration;

const REPOSITORY: &str = "team/inputs";

/// What the task prints: every path of its workspace with its kind, mode, and the start of its
/// content's digest or its link's target, sorted.
const LISTING: &str = r#"find . | LC_ALL=C sort | while read -r p; do
  if [ "$p" = . ]; then continue; fi
  if [ -L "$p" ]; then echo "$p link $(readlink "$p")";
  elif [ -d "$p" ]; then echo "$p dir $(stat -c %a "$p")";
  else echo "$p file $(stat -c %a "$p") $(sha256sum < "$p" | cut -c1-16)"; fi
done"#;

/// The node's address, where pods reach the registry.
fn node_ip() -> String {
    kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ])
    .trim()
    .to_string()
}

/// A registry with its storage, and a machine's cache directory.
struct Setup {
    ns: Namespace,
    registry: RegistryServer,
    storage: tempfile::TempDir,
    cache: tempfile::TempDir,
    repo: tempfile::TempDir,
}

impl Setup {
    /// A registry on `host` (the node's address, or one the pod cannot reach).
    fn new(test: &str, host: &str) -> Self {
        Self::with_users(test, host, &[])
    }

    /// A registry on `host` behind basic auth for `users`.
    fn with_users(test: &str, host: &str, users: &[(&str, &str)]) -> Self {
        let storage = tempfile::tempdir().unwrap();
        let address = format!("{host}:{}", free_port());
        let registry = RegistryServer::start_at(&address, storage.path(), users, false);
        let repo = tempfile::tempdir().unwrap();
        write_files(
            repo.path(),
            &[
                ("src/main.rs", "fn main() {}\n"),
                ("src/lib/a.rs", "pub fn a() {}\n"),
                ("same-1.txt", "twice\n"),
                ("same-2.txt", "twice\n"),
                ("run.sh", "#!/bin/sh\necho hi\n"),
            ],
        );
        fs::set_permissions(
            repo.path().join("run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(repo.path().join("big.bin"), noise(3 << 20)).unwrap();
        std::os::unix::fs::symlink("src/main.rs", repo.path().join("link")).unwrap();
        fs::create_dir(repo.path().join("empty")).unwrap();
        Self {
            ns: Namespace::new(test),
            registry,
            storage,
            cache: tempfile::tempdir().unwrap(),
            repo,
        }
    }

    fn location(&self) -> String {
        format!("{}/{REPOSITORY}", self.registry.address)
    }

    /// A run of `script` in BusyBox that lets the pod reach nothing but the registry; by
    /// content when `by_content`, else today's whole copy.
    fn run(&self, script: &str, by_content: bool) -> Output {
        self.run_as(script, by_content, None)
    }

    /// [`Setup::run`] with Docker's config in `docker_config`.
    fn run_as(&self, script: &str, by_content: bool, docker_config: Option<&Path>) -> Output {
        let out = tempfile::tempdir().unwrap();
        let location = self.location();
        let mut extra = vec!["-v", "--egress", "none"];
        if by_content {
            extra.extend(["--inputs-registry", &location]);
        }
        extra.extend(["--", "sh", "-c", script]);
        let mut command = self
            .ns
            .command(self.repo.path(), out.path(), BUSYBOX_IMAGE, &extra);
        command
            .env("BUILDR_INSECURE_REGISTRIES", &self.registry.address)
            .env("XDG_CACHE_HOME", self.cache.path())
            .env("DOCKER_CONFIG", docker_config.unwrap_or(self.cache.path()))
            .env_remove("BUILDR_INPUTS_REGISTRY");
        command.output().unwrap()
    }

    /// `buildr inputs push --tag TAG` of the repository, as CI on `main` would.
    fn push_seed(&self, tag: &str) {
        let output = std::process::Command::new(buildr_bin())
            .args(["inputs", "push", "--repo"])
            .arg(self.repo.path())
            .args(["--inputs-registry", &self.location(), "--tag", tag])
            .env("BUILDR_INSECURE_REGISTRIES", &self.registry.address)
            .env("XDG_CACHE_HOME", self.cache.path())
            .env("DOCKER_CONFIG", self.cache.path())
            .output()
            .unwrap();
        succeeded(&output);
    }

    /// A BuildrPool of one BusyBox pod, seeded with `seed` if any, full, and its controller.
    fn pool(&self, name: &str, seed: Option<&str>) -> PoolController {
        install_crd();
        let seed = seed.map_or_else(String::new, |seed| format!("  seed: {seed}\n"));
        apply(&format!(
            "apiVersion: buildr.dev/v1alpha1\nkind: BuildrPool\nmetadata:\n  name: {name}\n  \
             namespace: {}\nspec:\n  size: 1\n  maxIdle: 30m\n{seed}  container:\n    \
             image: {BUSYBOX_IMAGE}\n",
            self.ns.name,
        ));
        let cache = self.cache.path().to_str().unwrap();
        let controller = PoolController::start_with_env(
            &self.ns,
            &[
                ("BUILDR_INSECURE_REGISTRIES", &self.registry.address),
                ("DOCKER_CONFIG", cache),
            ],
        );
        wait_full(&self.ns, name, 1, &controller);
        controller
    }

    /// The listing, run in a warm pod of `pool` that lets it reach nothing but the registry,
    /// with `extra` options.
    fn run_in_pool(&self, pool: &str, extra: &[&str]) -> Output {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["-v", "--egress", "none", "--pool", pool];
        args.extend(extra);
        args.extend(["--", "sh", "-c", LISTING]);
        self.ns
            .command_without_image(self.repo.path(), out.path(), &args)
            .env("BUILDR_INSECURE_REGISTRIES", &self.registry.address)
            .env("XDG_CACHE_HOME", self.cache.path())
            .env("DOCKER_CONFIG", self.cache.path())
            .env_remove("BUILDR_INPUTS_REGISTRY")
            .output()
            .unwrap()
    }

    /// Blobs uploaded so far (each upload ends with one `PUT` to its upload session).
    fn uploads(&self) -> usize {
        let put = format!("\"PUT /v2/{REPOSITORY}/blobs/uploads/");
        let served = self.registry.served();
        served.lines().filter(|line| line.contains(&put)).count()
    }

    /// Manifests stored so far.
    fn manifests(&self) -> usize {
        let put = format!("\"PUT /v2/{REPOSITORY}/manifests/");
        let served = self.registry.served();
        served.lines().filter(|line| line.contains(&put)).count()
    }

    /// Where the registry keeps its largest blob.
    fn largest_blob(&self) -> std::path::PathBuf {
        let mut blobs = Vec::new();
        let root = self.storage.path().join("docker/registry/v2/blobs");
        for path in common::tree(&root) {
            let full = root.join(&path);
            if full.is_file() {
                blobs.push((fs::metadata(&full).unwrap().len(), full));
            }
        }
        blobs.into_iter().max().unwrap().1
    }
}

/// `len` bytes that do not compress away.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The run's one warning line, and all it said; fails unless there is exactly one.
fn the_one_warning(output: &Output) -> (String, String) {
    let said = stderr(output);
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("buildr: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{said}");
    let warning = warnings[0].to_string();
    (warning, said)
}

/// The run of `cat src/main.rs` succeeded on a whole copy, after one warning line that says
/// `why` and that the inputs are copied whole.
fn copied_whole_with_one_warning(output: &Output, why: &str) {
    assert_eq!(succeeded(output), "fn main() {}\n");
    let (warning, said) = the_one_warning(output);
    assert!(warning.contains(why), "{said}");
    assert!(warning.contains("copying them whole"), "{said}");
}

fn succeeded(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    stdout(output)
}

#[test]
#[ignore = "needs the cluster and the registry of tests/cluster (tests/run-all.sh)"]
fn a_pod_pulls_its_inputs_by_content_and_only_what_changed_travels() {
    let t = Setup::new("inputs-pull", &node_ip());

    let by_content = t.run(LISTING, true);
    let listed = succeeded(&by_content);
    let said = stderr(&by_content);
    assert!(!said.contains("whole"), "{said}");
    assert!(
        said.contains("by content: "),
        "the timeline says how: {said}"
    );
    let whole = t.run(LISTING, false);
    assert_eq!(
        listed,
        succeeded(&whole),
        "the same workspace as today's copy"
    );
    assert!(listed.contains("./empty dir") && listed.contains("./link link src/main.rs"));
    assert!(listed.contains("./run.sh file 755"), "{listed}");

    // One file changed: one new pack and the index, and the snapshot's manifest.
    let (uploads, manifests) = (t.uploads(), t.manifests());
    write_files(
        t.repo.path(),
        &[("src/lib/a.rs", "pub fn a() { changed() }\n")],
    );
    let listed = succeeded(&t.run(LISTING, true));
    assert_eq!(t.uploads() - uploads, 2, "{}", t.registry.served());
    assert_eq!(t.manifests() - manifests, 1);
    assert_eq!(listed, succeeded(&t.run(LISTING, false)));

    // A mode change: no content, only the index.
    let uploads = t.uploads();
    fs::set_permissions(
        t.repo.path().join("src/main.rs"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let listed = succeeded(&t.run(LISTING, true));
    assert!(listed.contains("./src/main.rs file 700"), "{listed}");
    assert_eq!(t.uploads() - uploads, 1);
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster and the registry of tests/cluster (tests/run-all.sh)"]
fn a_pod_that_cannot_reach_the_registry_gets_the_inputs_whole() {
    // On this machine's loopback: the client pushes, the pod cannot pull.
    let t = Setup::new("inputs-unreachable", "127.0.0.1");
    let output = t.run("cat src/main.rs", true);
    copied_whole_with_one_warning(&output, "cannot pull the inputs from");
    assert!(t.uploads() > 0, "the client did push");
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster and the registry of tests/cluster (tests/run-all.sh)"]
fn a_tampered_pack_applies_nothing_and_runs_nothing() {
    let t = Setup::new("inputs-tampered", &node_ip());
    succeeded(&t.run("true", true));
    // The 3 MiB file's pack, changed in the registry's storage; the next run of the same tree
    // pushes nothing new and the pod pulls it.
    let pack = t.largest_blob();
    let mut bytes = fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&pack, bytes).unwrap();
    let marker = "the task ran";
    let output = t.run(&format!("echo '{marker}'"), true);
    assert_eq!(output.status.code(), Some(125), "{}", stderr(&output));
    let said = stderr(&output);
    assert!(said.contains("is not what its digest says"), "{said}");
    assert!(!stdout(&output).contains(marker));
    assert!(!said.contains("copying them whole"), "{said}");
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster and the registry of tests/cluster (tests/run-all.sh)"]
fn a_pod_pulls_with_the_user_s_credentials_which_never_reach_its_spec() {
    let (user, password) = ("ci", "pull-s3cret");
    let t = Setup::with_users("inputs-auth", &node_ip(), &[(user, password)]);
    let docker = tempfile::tempdir().unwrap();
    let auth = base64_of(&format!("{user}:{password}"));
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
        t.registry.address
    );
    fs::write(docker.path().join("config.json"), config).unwrap();

    // The pod's own view of itself: its spec, its environment and every command line in it.
    let spy = "cat src/main.rs; cat /proc/*/cmdline /proc/*/environ 2>/dev/null | tr '\\0' ' '";
    let output = t.run_as(spy, true, Some(docker.path()));
    let seen = succeeded(&output);
    assert!(seen.starts_with("fn main() {}"), "{seen}");
    let said = stderr(&output);
    assert!(
        !said.contains("whole"),
        "pulled with the credentials: {said}"
    );
    assert!(!seen.contains(password) && !seen.contains(&auth), "{seen}");
    t.ns.assert_nothing_left();

    // Without them the push is refused: the inputs go whole, with one warning.
    let output = t.run("cat src/main.rs", true);
    copied_whole_with_one_warning(&output, "cannot send the inputs by content");
}

/// Standard base64, as Docker's config keeps `user:password`.
fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
#[ignore = "needs the cluster and the registry of tests/cluster (tests/run-all.sh)"]
fn a_seeded_pool_s_pod_gets_only_the_difference_and_a_moved_tag_replaces_its_pods() {
    let t = Setup::new("inputs-seed", &node_ip());
    t.push_seed("main");
    let pool = "seeded";
    let controller = t.pool(pool, Some(&format!("{}:main", t.location())));
    let seeded = pool_pods(&t.ns, pool, Some("ready"));

    // A developer's change on top of the seed: an edit, a new file, a deletion, a mode, a
    // link that points elsewhere, a file that became a directory.
    write_files(
        t.repo.path(),
        &[
            ("src/lib/a.rs", "pub fn a() { edited() }\n"),
            ("new.txt", "new\n"),
        ],
    );
    fs::remove_file(t.repo.path().join("same-2.txt")).unwrap();
    fs::set_permissions(
        t.repo.path().join("run.sh"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    fs::remove_file(t.repo.path().join("link")).unwrap();
    std::os::unix::fs::symlink("new.txt", t.repo.path().join("link")).unwrap();
    fs::remove_file(t.repo.path().join("same-1.txt")).unwrap();
    write_files(t.repo.path(), &[("same-1.txt/inside", "now a directory\n")]);

    let before = t.registry.served().lines().count();
    let output = t.run_in_pool(pool, &[]);
    let listed = succeeded(&output);
    let said = stderr(&output);
    assert!(
        said.contains("by content: the difference onto the pod's seed"),
        "{said}\ncontroller:\n{}",
        controller.log()
    );
    assert!(said.contains(&seeded[0]), "it took the seeded pod: {said}");
    // The difference and the new contents go through exec: no blob is sent to or read from
    // the registry (the client kept the seed's index when it pushed the tag; the controller
    // only looks at the tag).
    let served = t.registry.served();
    let blobs: Vec<&str> = served
        .lines()
        .skip(before)
        .filter(|l| l.contains("/blobs/"))
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert_eq!(
        listed,
        succeeded(&t.run(LISTING, false)),
        "the same workspace as a whole copy"
    );
    assert!(listed.contains("./same-1.txt/inside file"), "{listed}");

    // A run that matches the pool's template takes a seeded pod unasked and, naming no
    // registry, copies its inputs whole: into a workspace emptied of the seed first.
    wait_full(&t.ns, pool, 1, &controller);
    let waiting = pool_pods(&t.ns, pool, Some("ready"));
    let output = t.run(LISTING, false);
    assert!(stderr(&output).contains(&waiting[0]), "{}", stderr(&output));
    assert_eq!(succeeded(&output), listed);

    // Taken unasked by a run that names the registry, a seeded pod pulls the pushed
    // snapshot's difference from the registry: one new pack, and the index.
    wait_full(&t.ns, pool, 1, &controller);
    let waiting = pool_pods(&t.ns, pool, Some("ready"));
    write_files(t.repo.path(), &[("new.txt", "newer\n")]);
    let uploads = t.uploads();
    let output = t.run(LISTING, true);
    let said = stderr(&output);
    assert!(said.contains(&waiting[0]), "{said}");
    assert!(said.contains("pulled onto the pod's seed"), "{said}");
    assert_eq!(t.uploads() - uploads, 2, "{}", t.registry.served());
    assert_eq!(succeeded(&output), succeeded(&t.run(LISTING, false)));

    // The seed's tag moves: the waiting pods are replaced by pods of the new seed.
    wait_full(&t.ns, pool, 1, &controller);
    let waiting = pool_pods(&t.ns, pool, Some("ready"));
    t.push_seed("main");
    let replaced = eventually(Duration::from_secs(90), || {
        let now = pool_pods(&t.ns, pool, Some("ready"));
        now.len() == 1 && now != waiting
    });
    assert!(
        replaced,
        "{:?}\ncontroller:\n{}",
        pool_pods(&t.ns, pool, None),
        controller.log()
    );

    // A seed this client cannot diff against (its index gone, as from another version): the
    // inputs go whole into the emptied workspace, with one warning line.
    let seeded = pool_pods(&t.ns, pool, Some("ready"));
    t.ns.kubectl(&["exec", &seeded[0], "--", "rm", "/buildr/seed-index"]);
    let output = t.run_in_pool(pool, &[]);
    assert_eq!(succeeded(&output), succeeded(&t.run(LISTING, false)));
    let (warning, said) = the_one_warning(&output);
    assert!(
        warning.contains("cannot diff against the pod's seed"),
        "{said}"
    );

    // A tree this client cannot send by content (a name that is not UTF-8): the session it
    // opened when it took the seeded pod is closed unused, and the inputs go whole into the
    // emptied workspace (the seed's big.bin is gone), with one warning line.
    wait_full(&t.ns, pool, 1, &controller);
    let odd = t
        .repo
        .path()
        .join(std::ffi::OsStr::from_bytes(b"odd-\xff.txt"));
    fs::write(&odd, "odd\n").unwrap();
    fs::remove_file(t.repo.path().join("big.bin")).unwrap();
    let output = t.run_in_pool(pool, &[]);
    let listed = succeeded(&output);
    assert_eq!(listed, succeeded(&t.run(LISTING, false)));
    assert!(listed.contains("./odd-"), "{listed}");
    assert!(
        !listed.contains("./big.bin"),
        "the seed was not emptied: {listed}"
    );
    let (warning, said) = the_one_warning(&output);
    assert!(
        warning.contains("cannot send the inputs by content"),
        "{said}"
    );
    assert!(warning.contains("copying them whole"), "{said}");
    fs::remove_file(&odd).unwrap();

    // A run that needs a pod of its own (one it keeps) starts it from the pool's template: the
    // pod holds no seed and pulls the snapshot, pushed while it starts.
    let output = t.run_in_pool(pool, &["--keep"]);
    let said = stderr(&output);
    assert!(said.contains("starting a pod of its own"), "{said}");
    assert!(said.contains("by content: pulled"), "{said}");
    assert_eq!(succeeded(&output), succeeded(&t.run(LISTING, false)));
}

#[test]
#[ignore = "needs the cluster and the registry of tests/cluster (tests/run-all.sh)"]
fn a_warm_pod_without_a_seed_pulls_its_inputs_once_its_policy_lets_it() {
    let t = Setup::new("inputs-warm", &node_ip());
    let pool = "plain";
    let controller = t.pool(pool, None);
    let warm = pool_pods(&t.ns, pool, Some("ready"));
    let location = t.location();
    let output = t.run_in_pool(pool, &["--inputs-registry", &location]);
    let listed = succeeded(&output);
    let said = stderr(&output);
    assert!(said.contains(&warm[0]), "it took the warm pod: {said}");
    assert!(
        said.contains("by content: "),
        "{said}\ncontroller:\n{}",
        controller.log()
    );
    assert!(!said.contains("whole"), "{said}");
    assert_eq!(listed, succeeded(&t.run(LISTING, false)));
}
