//! A real OpenSSH server (Debian's `openssh-server`) on 127.0.0.1, for the ssh backend's tests:
//! started on a free port with a generated host key, for a second local user (created here, so
//! that the remote side really is another uid), with a generated client key in a test-only
//! `ssh_config` that `buildr run` is given with `--ssh-option=-F…`. Needs root (`useradd`, and
//! sshd switching to that user).

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the tasks run as on the "remote" side, created once and reused.
pub const USER: &str = "buildr-ssh-test";
/// The `Host` the test config defines.
pub const HOST: &str = "buildr-test-host";

/// A running sshd and the client files that reach it, removed when dropped.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd; its clients trust its host key and hold a key it accepts.
    pub fn start() -> Sshd {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the ssh tests need root (tests/run-all.sh runs them as root)"
        );
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server (tests/run-all.sh does)"
        );
        ensure_user();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        // sshd reads the authorized keys as the user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = |name: &str| dir.path().join(name);
        for key in ["host_key", "client_key", "other_key"] {
            keygen(&path(key));
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).unwrap();
        std::fs::set_permissions(
            path("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let port = free_port();
        let host_key = std::fs::read_to_string(path("host_key.pub")).unwrap();
        std::fs::write(
            path("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .unwrap();
        std::fs::write(path("no_known_hosts"), "").unwrap();
        std::fs::write(
            path("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PidFile none\nStrictModes no\nAllowUsers {USER}\n",
                path("host_key").display(),
                path("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("sshd.log")).unwrap())
            .spawn()
            .expect("sshd starts");
        let sshd = Sshd { child, port, dir };
        sshd.write_config("ssh_config", "client_key", "known_hosts", port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    /// A client config named `name` for the test host, with `key` and `known_hosts`, to
    /// `port`; its path.
    pub fn write_config(&self, name: &str, key: &str, known_hosts: &str, port: u16) -> PathBuf {
        let path = |name: &str| self.dir.path().join(name);
        std::fs::write(
            path(name),
            format!(
                "Host {HOST}\n  HostName 127.0.0.1\n  Port {port}\n  User {USER}\n  \
                 IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
                 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                path(key).display(),
                path(known_hosts).display()
            ),
        )
        .unwrap();
        path(name)
    }

    /// `--ssh-option` for the config that reaches this server.
    pub fn option(&self) -> String {
        format!(
            "--ssh-option=-F{}",
            self.dir.path().join("ssh_config").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test user, created once (idempotent): a home, `sh`, and an account sshd does not take
/// for locked.
fn ensure_user() {
    let exists = Command::new("id")
        .arg("-u")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !exists {
        // Two tests may race to create it: a failure is fine if the user is there after.
        let _ = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", USER])
            .status();
    }
    let unlocked = Command::new("usermod")
        .args(["-p", "*", USER])
        .status()
        .unwrap();
    assert!(unlocked.success(), "usermod -p '*' {USER} failed");
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

/// A port nothing listens on (the kernel's pick, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The uid of the test user.
pub fn uid() -> u32 {
    nix::unistd::User::from_name(USER)
        .unwrap()
        .expect("the test user exists")
        .uid
        .as_raw()
}

/// The test user's processes that still run (zombies, already dead, left out), as `ps` lines.
pub fn processes() -> Vec<String> {
    let output = Command::new("ps")
        .args(["-u", USER, "-o", "stat=,args="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim_start().starts_with('Z'))
        .map(str::to_string)
        .collect()
}

/// The run directories the test user has under /tmp (where runs go when the user has no
/// `$XDG_RUNTIME_DIR`, as over sshd without PAM).
pub fn run_dirs() -> Vec<PathBuf> {
    let uid = uid();
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let owned = std::os::unix::fs::MetadataExt::uid(&entry.metadata().ok()?) == uid;
            (owned && name.starts_with("buildr-")).then(|| entry.path())
        })
        .collect()
}

/// Kills the test user's processes and removes its run directories: what a failed test left,
/// so that it fails alone and not every test after it too (they share the one user).
pub fn clear_leftovers() {
    let _ = Command::new("pkill").args(["-9", "-u", USER]).status();
    for dir in run_dirs() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
