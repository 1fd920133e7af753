//! A CNCF Distribution registry (built by tests/cluster/build-tools.sh) on 127.0.0.1, for the
//! tests of the shared cache and of input snapshots.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cluster::tool;
use super::eventually;

/// The repository the cache's tests use.
pub const REPOSITORY: &str = "team/buildr-cache";

/// A registry process on 127.0.0.1, killed when dropped.
pub struct RegistryServer {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl RegistryServer {
    /// Serves `storage` (kept across restarts); with `users` (name, password) behind htpasswd
    /// basic auth; read-only when `read_only`.
    pub fn start(storage: &Path, users: &[(&str, &str)], read_only: bool) -> Self {
        Self::start_at(
            &format!("127.0.0.1:{}", free_port()),
            storage,
            users,
            read_only,
        )
    }

    pub fn start_at(
        address: &str,
        storage: &Path,
        users: &[(&str, &str)],
        read_only: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let address = address.to_string();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             maintenance:\n    readonly:\n      enabled: {read_only}\nhttp:\n  addr: {address}\n",
            storage.display()
        );
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let lines: String = users
                .iter()
                .map(|(user, password)| {
                    let hash = bcrypt::hash_with_result(password, 4)
                        .unwrap()
                        .format_for_version(bcrypt::Version::TwoY);
                    format!("{user}:{hash}\n")
                })
                .collect();
            fs::write(&htpasswd, lines).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: buildr-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let access_log = fs::File::create(dir.path().join("access.log")).unwrap();
        let child = Command::new(tool("registry"))
            .arg("serve")
            .arg(&config_path)
            .stdout(access_log)
            .stderr(Stdio::null())
            .spawn()
            .expect("the registry starts");
        let server = Self {
            child,
            address,
            _dir: dir,
        };
        assert!(
            eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
                &server.address
            )
            .is_ok()),
            "the registry did not listen on {} within 20 s",
            server.address
        );
        server
    }

    pub fn location(&self) -> String {
        format!("{}/{REPOSITORY}", self.address)
    }

    /// The requests it has served, one access-log line each.
    pub fn served(&self) -> String {
        fs::read_to_string(self._dir.path().join("access.log")).unwrap()
    }

    /// The tags of the repository, as the registry lists them (`_catalog` needs no auth
    /// here: read the storage instead).
    pub fn tags(storage: &Path) -> Vec<String> {
        let dir = storage.join(format!(
            "docker/registry/v2/repositories/{REPOSITORY}/_manifests/tags"
        ));
        let mut tags: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// The manifest digest each tag points at, read from the storage.
    pub fn tag_digests(storage: &Path) -> Vec<String> {
        let dir = storage.join(format!(
            "docker/registry/v2/repositories/{REPOSITORY}/_manifests/tags"
        ));
        Self::tags(storage)
            .iter()
            .map(|tag| fs::read_to_string(dir.join(tag).join("current/link")).unwrap())
            .collect()
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
