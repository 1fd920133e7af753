//! The task's sandbox on the local backend, through the real `buildr` binary: a fake HOME with
//! canary secrets and a listening agent socket, listeners the test owns on loopback, and a task
//! that tries each forbidden thing before a real build step (`cc`). Under the default each
//! attempt fails while the build works and its outputs come back; the same task with
//! `sandbox = "none"` is the control that proves each attempt can succeed. As root, and as an
//! unprivileged user (`nobody`, dropped to in buildr's child) when the test runs as root.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{buildr_bin, stderr, stdout, write_files};

const CANARY_SSH: &str = "CANARY-SSH-7f3a";
const CANARY_AWS: &str = "CANARY-AWS-91bc";
const CANARY_ENV: &str = "CANARY-ENV-c0de";
const CANARY_UDP: &str = "CANARY-UDP-5eed";
/// The user the unprivileged runs drop to.
const NOBODY: u32 = 65534;

/// Each forbidden attempt prints `LEAK:NAME` when it succeeds.
const LEAKS: &[&str] = &[
    "ssh-key",
    "aws",
    "home-write",
    "tmp-write",
    "repo-write",
    "signal",
    "environ",
    "tcp",
    "unix-socket",
    "executor-secret",
];

/// The attempts, then a real build step that must work (`set -e` from there on).
const SCRIPT: &str = r#"
try() { name=$1; shift; if "$@"; then echo "LEAK:$name"; fi; }
BUILDR=$(awk '/^PPid:/ {print $2}' /proc/$PPID/status)
try ssh-key cat "$HOME/.ssh/id_ed25519"
try aws cat "$HOME/.aws/credentials"
try home-write sh -c 'echo x > "$HOME/pwned"'
try tmp-write sh -c 'echo x > "$OUTSIDE"'
try repo-write sh -c 'echo x > "$REPO/pwned"'
try signal kill -0 "$BUILDR"
try environ sh -c 'tr "\0" "\n" < /proc/$0/environ | grep CANARY' "$BUILDR"
try tcp perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ENV{TCP}", Timeout => 3) or exit 1'
perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ENV{UDP}", Proto => "udp") or exit 1; $s->send("CANARY-UDP-5eed")'
try executor-secret cat ../state/secret
try unix-socket perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => "$ENV{HOME}/.ssh/agent.sock") or exit 1'
set -e
echo built > in-workspace.txt
echo scratch > "$TMPDIR/scratch" && cat "$TMPDIR/scratch" > from-tmpdir.txt
ls /usr/bin > /dev/null
cc -o hello hello.c && ./hello > hello.txt
echo BUILD-OK
"#;

/// A fake home, a repository with the probing tasks, an output directory and the listeners,
/// all owned by the user buildr runs as.
struct Scene {
    root: tempfile::TempDir,
    tcp: TcpListener,
    udp: UdpSocket,
    agent: UnixListener,
    /// Whom buildr runs as: `nobody` for the unprivileged runs as root.
    user: Option<u32>,
}

impl Scene {
    fn new(unprivileged: bool) -> Scene {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        write_files(
            &home,
            &[
                (".ssh/id_ed25519", &format!("{CANARY_SSH}\n")),
                (".aws/credentials", &format!("{CANARY_AWS}\n")),
                (".cargo/config.toml", "# readable"),
            ],
        );
        let agent = UnixListener::bind(home.join(".ssh/agent.sock")).unwrap();
        agent.set_nonblocking(true).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let outside = root.path().join("outside-tmp");
        let task = |name: &str, extra: &str| {
            format!(
                "task \"{name}\" {{\n  script = <<-SH\n{SCRIPT}  SH\n  env = {{\n    \
                 REPO = \"{repo}\"\n    OUTSIDE = \"{outside}\"\n    TCP = \"{tcp}\"\n    \
                 UDP = \"{udp}\"\n  }}\n  container {{\n    egress = \"none\"\n  }}\n{extra}}}\n",
                repo = root.path().join("repo").display(),
                outside = outside.display(),
                tcp = tcp.local_addr().unwrap().port(),
                udp = udp.local_addr().unwrap().port(),
            )
        };
        let tasks = [
            task("probe", ""),
            task("control", "  sandbox = \"none\"\n"),
            task("strict", "  sandbox = \"strict\"\n"),
        ]
        .concat();
        write_files(
            &root.path().join("repo"),
            &[
                (".buildr/tasks.hcl", &tasks),
                (
                    "hello.c",
                    "#include <stdio.h>\nint main(void) { puts(\"hello from cc\"); return 0; }\n",
                ),
            ],
        );
        fs::create_dir(root.path().join("out")).unwrap();
        let user = (unprivileged && nix::unistd::geteuid().is_root()).then_some(NOBODY);
        if let Some(uid) = user {
            let status = Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}")])
                .arg(root.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        Scene {
            root,
            tcp,
            udp,
            agent,
            user,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `buildr run TASK` in the fake home, holding a canary in its environment; `filter`
    /// (system calls refused with an errno) is installed in buildr's process first, to take
    /// mechanisms away as a locked-down machine would.
    fn run(&self, args: &[&str], filter: &[(i64, i32)]) -> Output {
        let mut command = Command::new(buildr_bin());
        command
            .arg("run")
            .arg("--repo")
            .arg(self.path("repo"))
            .arg("--out")
            .arg(self.path("out"))
            .args(args)
            .current_dir(self.root.path())
            .env("HOME", self.path("home"))
            .env("BUILDR_TEST_CANARY", CANARY_ENV)
            .env_remove("RUST_LOG")
            .env_remove("TMPDIR");
        if let Some(uid) = self.user {
            command.uid(uid).gid(uid);
        }
        install(&mut command, refusing(filter));
        command.output().expect("buildr runs")
    }

    /// The leaks the run printed, and every other sign of one: files written outside, a
    /// connection or datagram that reached the test's listeners.
    fn leaks(&self, output: &Output) -> BTreeSet<String> {
        let mut leaks: BTreeSet<String> = stdout(output)
            .lines()
            .filter_map(|line| line.strip_prefix("LEAK:"))
            .map(str::to_string)
            .collect();
        let mut evidence = |what: &str, seen: bool| {
            if seen {
                leaks.insert(format!("evidence:{what}"));
            }
        };
        evidence("home-write", self.path("home/pwned").exists());
        evidence("tmp-write", self.path("outside-tmp").exists());
        evidence("repo-write", self.path("repo/pwned").exists());
        evidence("tcp", self.tcp.accept().is_ok());
        let mut datagram = [0u8; 64];
        evidence(
            "udp",
            matches!(self.udp.recv(&mut datagram), Ok(n) if &datagram[..n] == CANARY_UDP.as_bytes()),
        );
        evidence(
            "unix-socket",
            !matches!(self.agent.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        );
        let everything = format!("{}{}", stdout(output), stderr(output));
        for canary in [CANARY_SSH, CANARY_AWS, CANARY_ENV] {
            evidence(canary, everything.contains(canary));
        }
        leaks
    }
}

/// Seccomp filters, one per `(system call, errno)`, each failing its call and allowing the
/// rest; stacked, as the kernel allows.
fn refusing(calls: &[(i64, i32)]) -> Vec<seccompiler::BpfProgram> {
    calls
        .iter()
        .map(|&(call, errno)| {
            seccompiler::SeccompFilter::new(
                [(call, Vec::new())].into_iter().collect(),
                seccompiler::SeccompAction::Allow,
                seccompiler::SeccompAction::Errno(errno as u32),
                std::env::consts::ARCH.try_into().unwrap(),
            )
            .and_then(TryInto::try_into)
            .unwrap()
        })
        .collect()
}

/// Installs `filters` in `command`'s process before it runs.
fn install(command: &mut Command, filters: Vec<seccompiler::BpfProgram>) {
    // SAFETY: installing a filter is two plain system calls on a program built before.
    unsafe {
        command.pre_exec(move || {
            for filter in &filters {
                seccompiler::apply_filter(filter).map_err(std::io::Error::other)?;
            }
            Ok(())
        });
    }
}

/// Every leak the control shows: what the default must prevent.
fn all_leaks() -> BTreeSet<String> {
    let mut all: BTreeSet<String> = LEAKS.iter().map(|s| s.to_string()).collect();
    for what in [
        "home-write",
        "tmp-write",
        "repo-write",
        "tcp",
        "udp",
        "unix-socket",
        CANARY_SSH,
        CANARY_AWS,
        CANARY_ENV,
    ] {
        all.insert(format!("evidence:{what}"));
    }
    all
}

fn the_default_refuses_each_forbidden_thing_and_the_build_works(unprivileged: bool) {
    let scene = Scene::new(unprivileged);
    let output = scene.run(&["-v", "probe"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("sandbox: namespaces(user,mount,net) + landlock abi"),
        "{}",
        stderr(&output)
    );
    assert_eq!(scene.leaks(&output), BTreeSet::new(), "{}", stdout(&output));
    assert!(stdout(&output).contains("BUILD-OK"), "{}", stdout(&output));
    let read = |name: &str| fs::read_to_string(scene.path("out").join(name)).unwrap();
    assert_eq!(read("in-workspace.txt"), "built\n");
    assert_eq!(read("from-tmpdir.txt"), "scratch\n");
    assert_eq!(read("hello.txt"), "hello from cc\n");
    assert!(
        fs::metadata(scene.path("out/hello"))
            .unwrap()
            .permissions()
            .mode()
            & 0o100
            != 0,
        "the built program comes back executable"
    );

    // The control: the same task unconfined, as before the sandbox, leaks everything.
    let scene = Scene::new(unprivileged);
    let output = scene.run(&["-v", "control"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("sandbox: none (the task runs unconfined)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(scene.leaks(&output), all_leaks(), "{}", stdout(&output));
}

#[test]
fn the_default_refuses_each_forbidden_thing_and_the_build_works_as_this_user() {
    the_default_refuses_each_forbidden_thing_and_the_build_works(false);
}

#[test]
fn the_default_refuses_each_forbidden_thing_and_the_build_works_as_an_unprivileged_user() {
    the_default_refuses_each_forbidden_thing_and_the_build_works(true);
}

#[test]
fn sandbox_none_on_the_command_line_runs_unconfined() {
    let scene = Scene::new(false);
    let output = scene.run(&["--sandbox", "none", "probe"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(scene.leaks(&output), all_leaks(), "{}", stdout(&output));
}

#[test]
fn strict_fails_naming_the_missing_layer_where_auto_runs_with_the_rest() {
    let scene = Scene::new(true);
    let output = scene.run(&["-v", "strict"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(scene.leaks(&output), BTreeSet::new(), "{}", stdout(&output));

    // No user namespaces, as under Docker's default seccomp profile.
    let no_namespaces = [(libc::SYS_unshare, libc::EPERM)];
    let output = scene.run(&["strict"], &no_namespaces);
    assert_ne!(output.status.code(), Some(0), "{}", stdout(&output));
    let refusal = stderr(&output);
    assert!(
        refusal.contains("sandbox = \"strict\": not every layer can be enforced here: namespaces: the user namespace: Operation not permitted"),
        "{refusal}"
    );
    assert!(!stdout(&output).contains("LEAK:"), "{}", stdout(&output));

    // Auto takes what there is: Landlock keeps the files and processes, seccomp the network.
    let scene = Scene::new(true);
    let output = scene.run(&["-v", "probe"], &no_namespaces);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("sandbox: landlock abi"), "{err}");
    assert!(
        err.contains("(without namespaces: the user namespace:"),
        "{err}"
    );
    let leaks = scene.leaks(&output);
    // Only the mount namespace hid the agent's socket: Landlock (before ABI 9) lets a
    // connect through, and the listener shows it.
    let expected: BTreeSet<String> = ["unix-socket", "evidence:unix-socket"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(leaks, expected, "{}", stdout(&output));
}

#[test]
fn where_nothing_confines_auto_refuses_in_one_line_naming_what_was_tried() {
    let scene = Scene::new(true);
    let nothing = [
        (libc::SYS_unshare, libc::EPERM),
        (libc::SYS_landlock_create_ruleset, libc::ENOSYS),
    ];
    let output = scene.run(&["probe"], &nothing);
    assert_ne!(output.status.code(), Some(0), "{}", stdout(&output));
    let err = stderr(&output);
    let line = err
        .lines()
        .find(|line| line.contains("nothing confines the task"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("tried namespaces: the user namespace: Operation not permitted"),
        "{line}"
    );
    assert!(line.contains("landlock: not in this kernel"), "{line}");
    assert!(line.contains("`--sandbox none`"), "{line}");
    assert!(!stdout(&output).contains("BUILD-OK"), "{}", stdout(&output));

    let output = scene.run(&["--sandbox", "none", "probe"], &nothing);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn unknown_sandbox_values_are_refused_with_file_and_line() {
    let repo = tempfile::tempdir().unwrap();
    for (field, value, expected) in [
        ("sandbox", "\"off\"", "expected one of"),
        (
            "writable",
            "[\"build/cache\"]",
            "is neither absolute nor under `~/`",
        ),
        (
            "readable",
            "[\"~other/x\"]",
            "is neither absolute nor under `~/`",
        ),
    ] {
        write_files(
            repo.path(),
            &[(
                ".buildr/tasks.hcl",
                &format!("task \"t\" {{\n  command = [\"true\"]\n  {field} = {value}\n}}\n"),
            )],
        );
        let output = common::buildr(&["tasks", "--repo", repo.path().to_str().unwrap()]);
        assert_ne!(output.status.code(), Some(0));
        let err = stderr(&output);
        assert!(err.contains("tasks.hcl:3:"), "{field}: {err}");
        assert!(err.contains(expected), "{field}: {err}");
        if field == "sandbox" {
            assert!(err.contains("auto") && err.contains("strict"), "{err}");
        }
    }
}

#[test]
fn sandbox_check_prints_one_table_of_what_works_here() {
    let output = common::buildr(&["sandbox", "check"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    for row in ["namespaces  yes", "landlock    abi ", "seccomp     yes"] {
        assert!(table.contains(row), "{table}");
    }
    assert!(
        table.contains("sandbox = \"strict\": namespaces(user,mount) + landlock abi"),
        "{table}"
    );

    // Where nothing works, the table says why and `auto` is refused.
    let mut command = Command::new(buildr_bin());
    command.args(["sandbox", "check"]);
    install(
        &mut command,
        refusing(&[
            (libc::SYS_unshare, libc::EPERM),
            (libc::SYS_landlock_create_ruleset, libc::ENOSYS),
        ]),
    );
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(
        table.contains("namespaces  no      the user namespace: Operation not permitted"),
        "{table}"
    );
    assert!(
        table.contains("sandbox = \"auto\": refused: sandbox: nothing confines"),
        "{table}"
    );
}
