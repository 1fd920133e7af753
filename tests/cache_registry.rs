//! The shared action cache against a real OCI registry: the CNCF Distribution registry that
//! tests/cluster/build-tools.sh builds (tests/run-all.sh runs it), started here on 127.0.0.1 on
//! a free port, once without auth and once with htpasswd basic auth (a bcrypt line made here).
//! Each `buildr run` has a cache directory of its own (`XDG_CACHE_HOME`) and Docker
//! credentials of its own (`DOCKER_CONFIG`); whether the task ran is told by a counter file
//! the task appends to.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::registry::{REPOSITORY, RegistryServer, free_port};
use common::{buildr_bin, stderr, stdout, write_files};

const NEEDS: &str = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)";

/// One machine's view: a cache directory and Docker credentials of its own, the cache keys
/// it trusts and the one it signs with, if any.
struct Machine {
    xdg: tempfile::TempDir,
    docker: tempfile::TempDir,
    /// Its signing key (`signing.key`) and its trust file (`trust`).
    keys: tempfile::TempDir,
    signs: bool,
    trusts: bool,
}

/// Where the machines' credential helpers live (one directory: see `with_helper`).
fn helpers_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

/// The CI's signing key, made once per test process with `buildr cache keygen`, and its public
/// key: what a repository's `.buildr/cache-trust` lists.
fn ci_key() -> &'static (std::path::PathBuf, String) {
    static KEY: std::sync::OnceLock<(std::path::PathBuf, String)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        keygen(&dir.join("ci.key"))
    })
}

/// `buildr cache keygen FILE`: the file and the public key it printed.
fn keygen(file: &Path) -> (std::path::PathBuf, String) {
    let output = Command::new(buildr_bin())
        .args(["cache", "keygen"])
        .arg(file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    (file.to_path_buf(), stdout(&output).trim().to_string())
}

impl Machine {
    /// Trusts the CI's key, signs with none: a developer's machine, or a pull request's job.
    fn anonymous() -> Self {
        let keys = tempfile::tempdir().unwrap();
        fs::write(keys.path().join("trust"), format!("{}\n", ci_key().1)).unwrap();
        Self {
            xdg: tempfile::tempdir().unwrap(),
            docker: tempfile::tempdir().unwrap(),
            keys,
            signs: false,
            trusts: true,
        }
    }

    /// Signs with the CI's key: CI on a protected branch.
    fn ci() -> Self {
        Self::anonymous().signing_with(&ci_key().0)
    }

    /// Signs with a key of its own, which nobody trusts, and trusts no one's entries (so that
    /// it runs its own task even where a trusted entry is).
    fn stranger() -> Self {
        let machine = Self::anonymous().trusting_nobody();
        let (key, _public) = keygen(&machine.keys.path().join("own.key"));
        machine.signing_with(&key)
    }

    fn signing_with(mut self, key: &Path) -> Self {
        fs::copy(key, self.keys.path().join("signing.key")).unwrap();
        self.signs = true;
        self
    }

    /// Trusts no key at all.
    fn trusting_nobody(mut self) -> Self {
        self.trusts = false;
        self
    }

    /// Credentials in `config.json` itself.
    fn with_password(registry: &str, user: &str, password: &str) -> Self {
        let machine = Self::anonymous();
        let config = serde_json::json!({
            "auths": { registry: { "username": user, "password": password } }
        });
        fs::write(
            machine.docker.path().join("config.json"),
            config.to_string(),
        )
        .unwrap();
        machine
    }

    /// Credentials from a credential helper that `config.json` names, as Docker runs it.
    fn with_helper(registry: &str, user: &str, password: &str) -> Self {
        let machine = Self::anonymous();
        // Named after the machine's own directory, in a directory every machine has first in
        // PATH: the local backend's key has PATH in it, and the machines share results.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "buildrtest{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let config = serde_json::json!({ "credHelpers": { registry: name } });
        fs::write(
            machine.docker.path().join("config.json"),
            config.to_string(),
        )
        .unwrap();
        let helper = helpers_dir().join(format!("docker-credential-{name}"));
        let answer =
            serde_json::json!({ "ServerURL": registry, "Username": user, "Secret": password });
        fs::write(
            &helper,
            format!("#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >/dev/null\necho '{answer}'\n"),
        )
        .unwrap();
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
        machine
    }

    /// `buildr run --cache --cache-registry LOCATION [EXTRA] -- sh -c SCRIPT` into a fresh
    /// --out; the output, and what landed in --out/result.txt.
    fn run(&self, repo: &Repo, location: &str, extra: &[&str]) -> (Output, Option<String>) {
        let (output, result, _random) = self.run_with(repo, location, extra, &[]);
        (output, result)
    }

    /// As `run`, with `env` set too; also the size of --out/random.bin, if it came back.
    fn run_with(
        &self,
        repo: &Repo,
        location: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Output, Option<String>, Option<usize>) {
        let out = tempfile::tempdir().unwrap();
        let path = format!(
            "{}:{}",
            helpers_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(buildr_bin());
        command
            .args(["run", "--cache", "--cache-registry", location])
            // The task counts its runs in a file outside its workspace, which the default
            // sandbox would refuse; what is tested here is the registry, not the sandbox.
            .args(["--sandbox", "none", "--repo"])
            .arg(repo.dir.path())
            .arg("--out")
            .arg(out.path())
            .args(extra)
            .args(["--", "sh", "-c", &repo.script])
            .env("XDG_CACHE_HOME", self.xdg.path())
            .env("DOCKER_CONFIG", self.docker.path())
            .env("PATH", path)
            .env_remove("BUILDR_CACHE_REGISTRY")
            .env_remove("BUILDR_CACHE_SIGNING_KEY")
            .env_remove("BUILDR_CACHE_TRUST")
            .env_remove("RUST_LOG");
        if self.signs {
            command.env(
                "BUILDR_CACHE_SIGNING_KEY",
                self.keys.path().join("signing.key"),
            );
        }
        if self.trusts {
            command.env("BUILDR_CACHE_TRUST", self.keys.path().join("trust"));
        }
        let output = command.envs(env.iter().copied()).output().unwrap();
        let result = fs::read_to_string(out.path().join("result.txt")).ok();
        let random = fs::read(out.path().join("random.bin"))
            .ok()
            .map(|r| r.len());
        (output, result, random)
    }
}

/// A repository and the command run on it, which counts its runs. Where a flag file outside
/// the repository exists, the command writes `poisoned` instead: what an attacker's run, whose
/// key is the same, pushes.
struct Repo {
    dir: tempfile::TempDir,
    counter: tempfile::NamedTempFile,
    flag: tempfile::TempDir,
    script: String,
}

impl Repo {
    fn new(content: &str) -> Self {
        Self::with_script(content, "cat input.txt > result.txt")
    }

    /// `content` in input.txt, and a command that also writes `extra`.
    fn with_script(content: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &[("input.txt", content)]);
        let counter = tempfile::NamedTempFile::new().unwrap();
        let flag = tempfile::tempdir().unwrap();
        let script = format!(
            "echo run >> {}; echo shared; echo on stderr >&2; cat input.txt > result.txt; {extra}; \
             if [ -e {}/poison ]; then echo poisoned > result.txt; fi",
            counter.path().display(),
            flag.path().display()
        );
        Self {
            dir,
            counter,
            flag,
            script,
        }
    }

    /// Runs `machine` as an attacker would (the same key, another result), and checks that its
    /// push reached the registry (`storage`), so that what the test checks next is about that
    /// entry and not about an empty registry.
    fn poisoned_run(&self, machine: &Machine, location: &str, storage: &Path) {
        let before = RegistryServer::tag_digests(storage);
        fs::write(self.flag.path().join("poison"), "").unwrap();
        let (output, result) = machine.run(self, location, &[]);
        fs::remove_file(self.flag.path().join("poison")).unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(result.as_deref(), Some("poisoned\n"));
        let after = RegistryServer::tag_digests(storage);
        assert!(
            !after.is_empty() && after != before,
            "the poisoned run pushed nothing: {}",
            stderr(&output)
        );
    }

    fn runs(&self) -> usize {
        fs::read_to_string(self.counter.path())
            .unwrap()
            .lines()
            .count()
    }
}

fn is_hit(output: &Output) -> bool {
    stderr(output).contains("buildr: cached: replaying")
}

fn assert_ran(output: &Output, result: &Option<String>, content: &str) {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    assert_eq!(stdout(output), "shared\n");
    assert_eq!(result.as_deref(), Some(content));
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn a_result_pushed_from_one_cache_is_a_hit_from_another_empty_one() {
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("shared input\n");

    let (first, result) = Machine::ci().run(&repo, &registry.location(), &[]);
    assert_ran(&first, &result, "shared input\n");
    assert!(!is_hit(&first));
    assert_eq!(RegistryServer::tags(storage.path()).len(), 1, "{NEEDS}");

    let other = Machine::anonymous();
    let (second, result) = other.run(&repo, &registry.location(), &[]);
    assert_ran(&second, &result, "shared input\n");
    assert!(is_hit(&second), "{}", stderr(&second));
    assert!(stderr(&second).contains("on stderr"));
    assert_eq!(repo.runs(), 1, "the second machine did not run the task");
    // Now on the second machine's disk too: a hit without the registry.
    drop(registry);
    let (third, _) = other.run(&repo, "127.0.0.1:1/nothing-here", &[]);
    assert!(is_hit(&third), "{}", stderr(&third));
    assert!(!stderr(&third).contains("warning"), "{}", stderr(&third));
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn a_reader_without_a_signing_key_never_pushes_and_says_why_with_v() {
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("read only\n");
    let (ran, result) = Machine::anonymous().run(&repo, &registry.location(), &["-v"]);
    assert_ran(&ran, &result, "read only\n");
    assert!(
        stderr(&ran).contains(&format!(
            "buildr: results are not pushed to {}: no signing key",
            registry.location()
        )),
        "{}",
        stderr(&ran)
    );
    assert!(RegistryServer::tags(storage.path()).is_empty());
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn with_no_trusted_key_the_registry_is_not_read_and_the_run_says_so_once() {
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("trusted by none\n");
    let (pushed, _) = Machine::ci().run(&repo, &registry.location(), &[]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));
    let (ran, result) =
        Machine::anonymous()
            .trusting_nobody()
            .run(&repo, &registry.location(), &[]);
    assert_ran(&ran, &result, "trusted by none\n");
    assert!(!is_hit(&ran));
    let said = stderr(&ran);
    assert_eq!(
        said.matches("is not read: no key is trusted to sign its entries")
            .count(),
        1,
        "{said}"
    );
    assert_eq!(repo.runs(), 2);
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn with_basic_auth_writers_push_readers_hit_and_strangers_run() {
    let storage = tempfile::tempdir().unwrap();
    let users = [("ci", "ci-secret"), ("dev", "dev-secret")];
    let registry = RegistryServer::start(storage.path(), &users, false);
    let address = registry.address.clone();
    let repo = Repo::new("authenticated\n");

    // The CI pushes, with its password from a credential helper.
    let ci = Machine::with_helper(&address, "ci", "ci-secret").signing_with(&ci_key().0);
    let (pushed, result) = ci.run(&repo, &registry.location(), &[]);
    assert_ran(&pushed, &result, "authenticated\n");
    assert!(!stderr(&pushed).contains("warning"), "{}", stderr(&pushed));
    assert_eq!(RegistryServer::tags(storage.path()).len(), 1);

    // No credentials: a warning and a normal run, nothing pushed.
    let stranger = Machine::anonymous();
    let (ran, result) = stranger.run(&repo, &registry.location(), &[]);
    assert_ran(&ran, &result, "authenticated\n");
    assert!(!is_hit(&ran));
    assert!(
        stderr(&ran).contains("buildr: warning: cannot pull from"),
        "{}",
        stderr(&ran)
    );
    assert_eq!(repo.runs(), 2);

    // A developer that only reads (--cache-push=false) hits, and pushes nothing for a new key.
    let dev = Machine::with_password(&address, "dev", "dev-secret");
    let (hit, result) = dev.run(&repo, &registry.location(), &["--cache-push=false"]);
    assert_ran(&hit, &result, "authenticated\n");
    assert!(is_hit(&hit), "{}", stderr(&hit));
    let other_repo = Repo::new("only here\n");
    let (ran, _) = dev.run(&other_repo, &registry.location(), &["--cache-push=false"]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    assert_eq!(
        RegistryServer::tags(storage.path()).len(),
        1,
        "nothing pushed"
    );

    // The same registry made read-only: a push fails with a warning, the run still succeeds,
    // and a stored result is still a hit.
    drop(registry);
    let registry = RegistryServer::start_at(&address, storage.path(), &users, true);
    let signing_dev =
        Machine::with_password(&address, "dev", "dev-secret").signing_with(&ci_key().0);
    let (refused, result) = signing_dev.run(&Repo::new("new\n"), &registry.location(), &[]);
    assert_ran(&refused, &result, "new\n");
    assert!(
        stderr(&refused).contains("buildr: warning: the result was not shared through"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(RegistryServer::tags(storage.path()).len(), 1);
    let fresh = Machine::with_password(&address, "dev", "dev-secret");
    let (hit, result) = fresh.run(&repo, &registry.location(), &[]);
    assert_ran(&hit, &result, "authenticated\n");
    assert!(is_hit(&hit), "{}", stderr(&hit));
    assert_eq!(repo.runs(), 2);
}

#[test]
fn a_registry_that_is_down_is_a_warning_and_a_normal_run() {
    // Nothing listens there.
    let location = format!("127.0.0.1:{}/{REPOSITORY}", free_port());
    let repo = Repo::new("offline\n");
    let machine = Machine::ci();
    let (first, result) = machine.run(&repo, &location, &[]);
    assert_ran(&first, &result, "offline\n");
    let said = stderr(&first);
    assert!(said.contains("buildr: warning: cannot pull from"), "{said}");
    assert!(
        said.contains("buildr: warning: the result was not shared through"),
        "{said}"
    );
    // Stored on disk all the same.
    let (second, _) = machine.run(&repo, &location, &[]);
    assert!(is_hit(&second), "{}", stderr(&second));
    assert_eq!(repo.runs(), 1);
}

#[test]
fn a_cache_registry_that_is_not_a_repository_is_refused_in_one_line() {
    let repo = Repo::new("x\n");
    let (output, _) = Machine::anonymous().run(&repo, "just-a-name", &[]);
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(
        stderr(&output),
        "buildr: the cache registry `just-a-name` is not REGISTRY/REPOSITORY (e.g. registry.example.com/team/buildr-cache)\n"
    );
    assert_eq!(repo.runs(), 0);
}

/// Pushes a one-layer image with `content` as `image` (on a loopback registry) and returns the
/// digest of its manifest, as the registry serves it.
async fn push_image(image: &str, content: &[u8]) -> String {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    // reqwest, as buildr builds it, has no crypto provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reference: oci_client::Reference = image.parse().unwrap();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let layer = ImageLayer::oci_v1(content.to_vec(), None);
    let config = Config::oci_v1(b"{}".to_vec(), None);
    let auth = RegistryAuth::Anonymous;
    client
        .push(&reference, &[layer], config, &auth, None)
        .await
        .unwrap();
    client.pull_manifest(&reference, &auth).await.unwrap().1
}

/// A key names a k8s run's image by the digest its registry gives now, so that a tag moved to
/// another image is a miss; an image already pinned is taken as written, and one whose
/// registry cannot be asked is not pinned (and then kept out of the shared cache).
#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn an_image_is_keyed_by_the_digest_its_registry_gives_now() {
    use buildr::cache::oci::pinned_image;
    let storage = tempfile::tempdir().unwrap();
    let server = RegistryServer::start(storage.path(), &[], false);
    let image = format!("{}/app:1", server.address);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = runtime.block_on(push_image(&image, b"one"));
    assert_eq!(
        runtime.block_on(pinned_image(&image)),
        Some(format!("{image}@{first}"))
    );
    let second = runtime.block_on(push_image(&image, b"two"));
    assert_ne!(first, second, "another image under the same tag");
    assert_eq!(
        runtime.block_on(pinned_image(&image)),
        Some(format!("{image}@{second}"))
    );
    let pinned = format!("{image}@{first}");
    assert_eq!(runtime.block_on(pinned_image(&pinned)), Some(pinned));
    let nowhere = format!("127.0.0.1:{}/app:1", free_port());
    assert_eq!(runtime.block_on(pinned_image(&nowhere)), None);
}

/// The manifest under the repository's only tag, and that tag.
async fn only_manifest(address: &str) -> (oci_client::manifest::OciImageManifest, String) {
    let storage_tags = {
        let client = registry_client();
        let reference: oci_client::Reference = format!("{address}/{REPOSITORY}:x").parse().unwrap();
        client
            .list_tags(
                &reference,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
                None,
            )
            .await
            .unwrap()
            .tags
    };
    assert_eq!(storage_tags.len(), 1, "{storage_tags:?}");
    let tag = storage_tags[0].clone();
    let reference: oci_client::Reference = format!("{address}/{REPOSITORY}:{tag}").parse().unwrap();
    let (manifest, _) = registry_client()
        .pull_image_manifest(&reference, &oci_client::secrets::RegistryAuth::Anonymous)
        .await
        .unwrap();
    (manifest, tag)
}

/// Puts `manifest` under `tag`, as anyone with push rights can with plain registry calls.
async fn put_manifest(address: &str, tag: &str, manifest: oci_client::manifest::OciImageManifest) {
    let reference: oci_client::Reference = format!("{address}/{REPOSITORY}:{tag}").parse().unwrap();
    let client = registry_client();
    client
        .store_auth_if_needed(address, &oci_client::secrets::RegistryAuth::Anonymous)
        .await;
    client
        .push_manifest(&reference, &manifest.into())
        .await
        .unwrap();
}

fn registry_client() -> oci_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}

/// A reader that trusts the CI's key runs the task; the poisoned entry is neither replayed nor
/// kept: its second run replays its own result.
fn assert_not_replayed(repo: &Repo, location: &str, why: &str) {
    let reader = Machine::anonymous();
    let runs = repo.runs();
    let (first, result) = reader.run(repo, location, &["-v"]);
    assert_ran(&first, &result, "real\n");
    assert!(!is_hit(&first), "{}", stderr(&first));
    assert!(
        stderr(&first).contains(&format!("is not replayed: {why}")),
        "{why}: {}",
        stderr(&first)
    );
    assert_eq!(repo.runs(), runs + 1, "the task ran");
    let (second, result) = reader.run(repo, location, &[]);
    assert!(is_hit(&second), "{}", stderr(&second));
    assert_eq!(
        result.as_deref(),
        Some("real\n"),
        "its own result, never the poisoned one"
    );
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn entries_no_trusted_key_signed_are_misses_and_never_kept() {
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Signed by a key nobody trusts (a pull request's job that has push rights).
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("real\n");
    repo.poisoned_run(&Machine::stranger(), &registry.location(), storage.path());
    assert_not_replayed(&repo, &registry.location(), "its signer `ed25519:");

    // The same entry with its signature taken off: plain registry calls under the right tag.
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("real\n");
    repo.poisoned_run(&Machine::stranger(), &registry.location(), storage.path());
    let (mut manifest, tag) = runtime.block_on(only_manifest(&registry.address));
    manifest.annotations = None;
    runtime.block_on(put_manifest(&registry.address, &tag, manifest));
    assert_not_replayed(&repo, &registry.location(), "it is not signed");

    // A trusted entry whose archive layer was swapped for another after signing.
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("real\n");
    repo.poisoned_run(&Machine::stranger(), &registry.location(), storage.path());
    let (poisoned, _) = runtime.block_on(only_manifest(&registry.address));
    let (ran, _) = Machine::ci().run(&repo, &registry.location(), &[]);
    assert!(
        !is_hit(&ran),
        "the CI trusts only its own key: {}",
        stderr(&ran)
    );
    let (mut signed, tag) = runtime.block_on(only_manifest(&registry.address));
    assert!(signed.annotations.is_some(), "the CI signed its push");
    let archive = |m: &oci_client::manifest::OciImageManifest| {
        m.layers
            .iter()
            .position(|l| l.media_type.contains("archive"))
            .unwrap()
    };
    let swapped = poisoned.layers[archive(&poisoned)].clone();
    let at = archive(&signed);
    signed.layers[at] = swapped;
    runtime.block_on(put_manifest(&registry.address, &tag, signed));
    assert_not_replayed(
        &repo,
        &registry.location(),
        "its signature does not match its content",
    );

    // A trusted entry overwritten by an untrusted push under its tag.
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::new("real\n");
    let (ran, _) = Machine::ci().run(&repo, &registry.location(), &[]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    repo.poisoned_run(&Machine::stranger(), &registry.location(), storage.path());
    assert_eq!(
        RegistryServer::tags(storage.path()).len(),
        1,
        "overwritten in place"
    );
    assert_not_replayed(&repo, &registry.location(), "its signer `ed25519:");
}

#[test]
#[ignore = "needs the registry built by tests/cluster/build-tools.sh (tests/run-all.sh)"]
fn an_entry_over_the_output_bound_is_refused_before_its_layers_are_downloaded() {
    let storage = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start(storage.path(), &[], false);
    let repo = Repo::with_script("real\n", "head -c 300000 /dev/urandom > random.bin");
    let (pushed, _) = Machine::ci().run(&repo, &registry.location(), &[]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (manifest, _) = runtime.block_on(only_manifest(&registry.address));
    let big = manifest.layers.iter().find(|l| l.size > 300_000).unwrap();

    let (refused, _) = Machine::anonymous().run(
        &repo,
        &registry.location(),
        &["-v", "--max-output-bytes", "100KiB"],
    );
    assert!(!is_hit(&refused), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("is not replayed: it announces"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("more than --max-output-bytes (102400)"),
        "{}",
        stderr(&refused)
    );
    let blob = format!("/blobs/{}", big.digest);
    assert!(
        !registry
            .served()
            .lines()
            .any(|l| l.contains("GET") && l.contains(&blob)),
        "the layer was downloaded:\n{}",
        registry.served()
    );
    assert_eq!(repo.runs(), 2);

    // Within --max-output-bytes but over BUILDR_CACHE_MAX: replayed, and not kept.
    let small_disk = Machine::anonymous();
    let (output, result, random) = small_disk.run_with(
        &repo,
        &registry.location(),
        &["-v"],
        &[("BUILDR_CACHE_MAX", "100KiB")],
    );
    assert_eq!(result.as_deref(), Some("real\n"));
    assert!(is_hit(&output), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("the pulled entry is replayed but not kept"),
        "{}",
        stderr(&output)
    );
    assert_eq!(random, Some(300_000), "random.bin came back whole");
    let entries = small_disk.xdg.path().join("buildr/entries");
    assert_eq!(
        fs::read_dir(&entries).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing kept in {}",
        entries.display()
    );
    assert_eq!(repo.runs(), 2);
}
