//! `buildr run --backend ssh` against a real OpenSSH server on 127.0.0.1, for a second local user
//! (see `common::sshd`): the same results as the local backend, Ctrl-C, a connection killed
//! mid-task, faults in one line, and what is left on the remote side (nothing). The tests run
//! one at a time: each checks that the test user has no process and no run directory left,
//! which another test's run would be.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

/// The tests, in a module of their own so that a runner without root can leave them out by name
/// (`--skip over_sshd::`) and run them as root apart.
mod over_sshd {
    use super::common;
    use std::fs;
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::ExitStatusExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use common::cluster::static_executor;
    use common::sshd::{self, HOST, Sshd};
    use common::{buildr_bin, child_of, stderr, stdout, tree, write_files};
    use nix::sys::signal::Signal;

    /// One test at a time (see the module doc).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `buildr run` with `backend_args`, on `repo`, writing to `out`, of `what` (a task's name,
    /// or `--` and a command), with a private TMPDIR (to see what it leaves on this side).
    fn command(
        backend_args: &[String],
        repo: &Path,
        out: &Path,
        tmp: &Path,
        what: &[&str],
    ) -> Command {
        let mut command = Command::new(buildr_bin());
        command
            .arg("run")
            .args(backend_args)
            .arg("--repo")
            .arg(repo)
            .arg("--out")
            .arg(out)
            .args(what)
            .env_remove("RUST_LOG")
            .env("TMPDIR", tmp);
        // SIGINT's default action, as a terminal gives it: a suite run in the background
        // (`cmd &` in a script, as CI may) has SIGINT ignored, the child would inherit that,
        // and a Ctrl-C sent before buildr listens for it would vanish instead of ending it.
        // SAFETY: sigaction is async-signal-safe, and the closure touches nothing else.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigDfl)
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        command
    }

    fn ssh_args(sshd: &Sshd) -> Vec<String> {
        vec![
            "--backend".into(),
            "ssh".into(),
            "--host".into(),
            HOST.into(),
            sshd.option(),
            "--executor-binary".into(),
            static_executor().display().to_string(),
        ]
    }

    struct Scratch {
        repo: tempfile::TempDir,
        out: tempfile::TempDir,
        tmp: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Scratch {
            Scratch {
                repo: tempfile::tempdir().unwrap(),
                out: tempfile::tempdir().unwrap(),
                tmp: tempfile::tempdir().unwrap(),
            }
        }

        fn run(&self, backend_args: &[String], script: &str) -> Output {
            self.run_task(backend_args, &["--", "sh", "-c", script])
        }

        /// A run of `what`: a task's name, or `--` and a command.
        fn run_task(&self, backend_args: &[String], what: &[&str]) -> Output {
            command(
                backend_args,
                self.repo.path(),
                self.out.path(),
                self.tmp.path(),
                what,
            )
            .output()
            .unwrap()
        }

        fn spawn(&self, backend_args: &[String], script: &str) -> Running {
            // A file, not a pipe: a run that hangs is shown with what it said so far.
            let stderr = tempfile::NamedTempFile::new().unwrap();
            let mut child = command(
                backend_args,
                self.repo.path(),
                self.out.path(),
                self.tmp.path(),
                &["--", "sh", "-c", script],
            )
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Running {
                child,
                stdout,
                stderr,
            }
        }
    }

    /// Nothing of a run is left: no process of the test user, no run directory of it, and nothing
    /// in the client's TMPDIR (the control socket's directory).
    fn assert_nothing_left(tmp: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(sshd::processes().is_empty() && sshd::run_dirs().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (processes, run_dirs) = (sshd::processes(), sshd::run_dirs());
        let holding: Vec<_> = run_dirs.iter().flat_map(|dir| tree(dir)).collect();
        if !(processes.is_empty() && run_dirs.is_empty()) {
            sshd::clear_leftovers();
        }
        assert_eq!(processes, Vec::<String>::new(), "processes left");
        assert_eq!(
            run_dirs,
            Vec::<PathBuf>::new(),
            "run directories left, holding {holding:?}"
        );
        let local: Vec<_> = fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(local, Vec::<PathBuf>::new(), "left in the client's TMPDIR");
    }

    /// Every path under `root` with what a user compares: its kind, mode and contents (or target).
    fn snapshot(root: &Path) -> Vec<(String, String)> {
        tree(root)
            .into_iter()
            .map(|path| {
                let full = root.join(&path);
                let meta = fs::symlink_metadata(&full).unwrap();
                let what = if meta.file_type().is_symlink() {
                    format!("link -> {}", fs::read_link(&full).unwrap().display())
                } else if meta.is_dir() {
                    format!("dir {:o}", meta.permissions().mode() & 0o7777)
                } else {
                    format!(
                        "file {:o} {:?}",
                        meta.permissions().mode() & 0o7777,
                        fs::read(&full).unwrap()
                    )
                };
                (path, what)
            })
            .collect()
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn the_round_trip_equals_the_local_backends_byte_for_byte_and_mode_for_mode() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let files = [
            ("same.txt", "left as it is"),
            ("changed.txt", "old"),
            ("removed.txt", "to go"),
            ("lib/a/b/appended.txt", "first line\n"),
        ];
        // Every kind of change a build makes, with modes, links and names that need care.
        let script = r#"
            set -eu
            printf 'new\n' > changed.txt
            printf 'second line\n' >> lib/a/b/appended.txt
            chmod 600 lib/a/b/appended.txt
            rm removed.txt
            mkdir -p made/x/y made/empty/z
            printf 'leaf\n' > made/x/y/leaf.txt
            printf '#!/bin/sh\nexit 0\n' > made/run.sh && chmod 755 made/run.sh
            printf 'only mine' > made/private && chmod 600 made/private
            head -c 300000 /dev/urandom > made/random.bin
            ln -s x/y/leaf.txt made/leaf-link
            printf 'spaces' > 'a name with spaces.txt'
            printf 'unicode' > 'ünïcødé ✓.txt'
            id -u
        "#;
        let local = Scratch::new();
        write_files(local.repo.path(), &files);
        let remote = Scratch::new();
        write_files(remote.repo.path(), &files);
        let local_run = local.run(&[], script);
        assert_eq!(local_run.status.code(), Some(0), "{}", stderr(&local_run));
        let remote_run = remote.run(&ssh_args(&sshd), script);
        assert_eq!(remote_run.status.code(), Some(0), "{}", stderr(&remote_run));

        // The task ran as the other user, on the other side of ssh.
        assert_eq!(stdout(&remote_run).trim(), sshd::uid().to_string());
        assert_eq!(stdout(&local_run).trim(), "0");
        assert_eq!(
            stderr(&remote_run),
            stderr(&local_run).replace(
                &local.out.path().display().to_string(),
                &remote.out.path().display().to_string(),
            )
        );
        // The random file differs from run to run: its size and mode are compared, the rest byte
        // for byte.
        let without_random = |mut snapshot: Vec<(String, String)>, root: &Path| {
            let random = snapshot
                .iter_mut()
                .find(|(path, _)| path == "made/random.bin")
                .expect("the random file came back");
            let meta = fs::metadata(root.join("made/random.bin")).unwrap();
            random.1 = format!("{:o} {}", meta.mode() & 0o7777, meta.len());
            snapshot
        };
        let local_files = without_random(snapshot(local.out.path()), local.out.path());
        let remote_files = without_random(snapshot(remote.out.path()), remote.out.path());
        assert_eq!(remote_files, local_files);
        assert!(remote_files.iter().any(|(p, _)| p == "made/run.sh"));
        assert_nothing_left(remote.tmp.path());
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn the_exit_status_is_the_tasks_and_the_streams_come_apart_and_complete() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let args = ssh_args(&sshd);
        for (script, code) in [
            ("exit 0", 0),
            ("exit 1", 1),
            ("exit 7", 7),
            ("kill -KILL $$", 128 + 9),
        ] {
            let output = scratch.run(&args, script);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{script}: {}",
                stderr(&output)
            );
        }
        let script =
            "i=0; while [ $i -lt 3000 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done";
        let output = scratch.run(&args, script);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let expected =
            |stream: &str| -> String { (0..3000).map(|i| format!("{stream} {i}\n")).collect() };
        assert_eq!(stdout(&output), expected("out"));
        assert_eq!(stderr(&output), expected("err"));
        assert_nothing_left(scratch.tmp.path());
    }

    /// The sandbox holds on the host as it does locally: under the default, a task run as the
    /// host's user cannot read that user's ssh key, yet its files come back; with
    /// `--sandbox none` it can (the control that shows the check can fail).
    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn on_the_host_the_default_sandbox_hides_the_users_credentials_and_files_come_back() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let home = PathBuf::from(format!("/home/{}", sshd::USER));
        let key = home.join(".ssh/id_ed25519");
        fs::create_dir_all(key.parent().unwrap()).unwrap();
        fs::write(&key, "canary-host-key\n").unwrap();
        let owner = format!("{}:{}", sshd::USER, sshd::USER);
        let chown = Command::new("chown")
            .args(["-R", &owner])
            .arg(key.parent().unwrap())
            .status()
            .unwrap();
        assert!(chown.success());
        let script = "mkdir -p out && echo built > out/result.txt; cat ~/.ssh/id_ed25519; true";
        let args = ssh_args(&sshd);
        let confined = scratch.run(&args, script);
        let mut unconfined_args = args.clone();
        unconfined_args.extend(["--sandbox".to_string(), "none".to_string()]);
        let unconfined = scratch.run(&unconfined_args, script);
        fs::remove_dir_all(key.parent().unwrap()).unwrap();

        assert_eq!(confined.status.code(), Some(0), "{}", stderr(&confined));
        assert!(
            !stdout(&confined).contains("canary") && !stderr(&confined).contains("canary"),
            "the host user's key was read: {}",
            stdout(&confined)
        );
        assert_eq!(
            fs::read_to_string(scratch.out.path().join("out/result.txt")).unwrap(),
            "built\n"
        );
        assert_eq!(unconfined.status.code(), Some(0), "{}", stderr(&unconfined));
        assert_eq!(stdout(&unconfined), "canary-host-key\n");
        assert_nothing_left(scratch.tmp.path());
    }

    /// A `buildr run` in the background with its stdout, interrupted (Ctrl-C) and waited for
    /// when dropped unfinished, so that a failing test still lets it clean up.
    struct Running {
        child: Child,
        stdout: BufReader<std::process::ChildStdout>,
        stderr: tempfile::NamedTempFile,
    }

    impl Running {
        /// Reads stdout until a line equal to `wanted`.
        fn wait_for_line(&mut self, wanted: &str) {
            let mut line = String::new();
            loop {
                line.clear();
                let n = self.stdout.read_line(&mut line).unwrap();
                assert!(n > 0, "the run ended before printing {wanted:?}");
                if line.trim_end() == wanted {
                    return;
                }
            }
        }

        /// Waits for the exit without reading its output; past `limit`, says what it was
        /// doing and kills it.
        fn wait_at_most(&mut self, limit: Duration) -> std::process::ExitStatus {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                if Instant::now() > deadline {
                    let pid = self.child.id();
                    let ps = Command::new("ps")
                        .args(["-e", "-o", "pid,ppid,stat,wchan:32,args"])
                        .output()
                        .unwrap();
                    let stack =
                        fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                    let _ = self.child.kill();
                    sshd::clear_leftovers();
                    let children: Vec<_> = String::from_utf8_lossy(&ps.stdout)
                        .lines()
                        .filter(|l| l.contains(&format!(" {pid} ")))
                        .map(str::to_string)
                        .collect();
                    panic!(
                        "buildr run did not exit within {limit:?}: its stack:\n{stack}\n\
                         its children:\n{}\nwhat it said:\n{}",
                        children.join("\n"),
                        self.said()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn interrupt(&self) {
            signal(self.child.id(), Signal::SIGINT);
        }

        /// What the run wrote on stderr so far.
        fn said(&self) -> String {
            fs::read_to_string(self.stderr.path()).unwrap()
        }

        /// Waits for the end: exit status, the rest of stdout, and stderr.
        fn finish(&mut self, limit: Duration) -> (Option<i32>, String, String) {
            let mut rest = String::new();
            self.stdout.read_to_string(&mut rest).unwrap();
            let deadline = Instant::now() + limit;
            let status = loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < deadline, "buildr run did not exit");
                std::thread::sleep(Duration::from_millis(20));
            };
            (status.code(), rest, self.said())
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                self.interrupt();
                let _ = std::io::copy(&mut self.stdout, &mut std::io::sink());
                let _ = self.child.wait();
            }
        }
    }

    fn signal(pid: u32, signal: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn ctrl_c_mid_task_exits_130_brings_the_files_back_and_leaves_nothing() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let mut run = scratch.spawn(
            &ssh_args(&sshd),
            "echo done > written.txt; sleep 300 & echo started; wait",
        );
        run.wait_for_line("started");
        run.interrupt();
        let (status, _, err) = run.finish(Duration::from_secs(30));
        assert_eq!(status, Some(130), "{err}");
        assert_eq!(
            fs::read_to_string(scratch.out.path().join("written.txt")).unwrap(),
            "done\n"
        );
        assert_nothing_left(scratch.tmp.path());
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn a_connection_killed_mid_task_is_redialled_and_every_line_arrives_once() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let mut run = scratch.spawn(
            &ssh_args(&sshd),
            "echo line 0; i=1; while [ $i -le 60 ]; do sleep 0.05; echo line $i; i=$((i+1)); done; \
             echo finished > result.txt",
        );
        run.wait_for_line("line 0");
        signal(
            child_of(run.child.id(), "ControlMaster=yes"),
            Signal::SIGKILL,
        );
        let (status, rest, err) = run.finish(Duration::from_secs(60));
        assert_eq!(status, Some(0), "{err}");
        let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
        assert_eq!(rest, expected);
        // A new master carried the rest.
        assert!(
            err.contains("the ssh connection is gone; reconnecting"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(scratch.out.path().join("result.txt")).unwrap(),
            "finished\n"
        );
        assert_nothing_left(scratch.tmp.path());
    }

    /// A run that cannot connect: exit 125, one line naming the cause in ssh's words, nothing left.
    fn assert_refused(sshd: &Sshd, config: &Path, expected: &str) {
        let scratch = Scratch::new();
        let mut args = ssh_args(sshd);
        args[4] = format!("--ssh-option=-F{}", config.display());
        let output = scratch.run(&args, "echo ran > ran.txt");
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            err,
            format!("buildr: cannot connect to {HOST}: {expected}\n")
        );
        assert!(!scratch.out.path().join("ran.txt").exists());
        assert_nothing_left(scratch.tmp.path());
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn an_unknown_host_key_a_wrong_key_and_a_closed_port_are_one_line_each() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let unknown_host =
            sshd.write_config("unknown_host", "client_key", "no_known_hosts", sshd.port);
        assert_refused(&sshd, &unknown_host, "Host key verification failed.");
        let wrong_key = sshd.write_config("wrong_key", "other_key", "known_hosts", sshd.port);
        assert_refused(
            &sshd,
            &wrong_key,
            &format!("{}@127.0.0.1: Permission denied (publickey).", sshd::USER),
        );
        let closed = sshd::free_port();
        let closed_port = sshd.write_config("closed_port", "client_key", "known_hosts", closed);
        assert_refused(
            &sshd,
            &closed_port,
            &format!("ssh: connect to host 127.0.0.1 port {closed}: Connection refused"),
        );
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn keep_leaves_the_run_directory_says_where_and_stops_the_executor() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let mut args = ssh_args(&sshd);
        args.push("--keep".into());
        let output = scratch.run(&args, "echo kept > kept.txt");
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{err}");
        let run_dirs = sshd::run_dirs();
        assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
        let dir = &run_dirs[0];
        assert!(
            err.contains(&format!(
                "buildr: keeping the run directory {} on {HOST}",
                dir.display()
            )),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("workspace/kept.txt")).unwrap(),
            "kept\n"
        );
        fs::remove_dir_all(dir).unwrap();
        assert_nothing_left(scratch.tmp.path());
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn a_binary_for_another_architecture_is_refused_after_uname_and_leaves_nothing() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        // The static buildr relabelled (e_machine, offset 18): as if built for another machine.
        let mut foreign = fs::read(static_executor()).unwrap();
        let (machine, arch, host_arch) = if cfg!(target_arch = "aarch64") {
            (62u16, "amd64", "aarch64 (arm64)") // EM_X86_64
        } else {
            (183u16, "arm64", "x86_64 (amd64)") // EM_AARCH64
        };
        foreign[18..20].copy_from_slice(&machine.to_le_bytes());
        let binary = scratch.tmp.path().join("buildr-foreign");
        fs::write(&binary, foreign).unwrap();
        let mut args = ssh_args(&sshd);
        args[6] = binary.display().to_string();
        let output = scratch.run(&args, "echo ran > ran.txt");
        fs::remove_file(&binary).unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{err}");
        assert_eq!(
            err,
            format!(
                "buildr: {HOST} is {host_arch}, but the executor binary {} is built for {arch}; \
                 give --executor-binary a build for {}\n",
                binary.display(),
                &host_arch[host_arch.find('(').unwrap() + 1..host_arch.len() - 1],
            )
        );
        assert!(!scratch.out.path().join("ran.txt").exists());
        // The run directory the same round trip made is gone again.
        assert_nothing_left(scratch.tmp.path());
    }

    /// Whether the user `uid` (group `gid`) can connect to the Unix socket `socket` (perl's Socket
    /// is in perl-base, which every Debian has).
    fn can_connect_as(uid: u32, gid: u32, socket: &Path) -> Result<(), String> {
        let output = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .args([
                "perl",
                "-MSocket",
                "-e",
                "socket(S, PF_UNIX, SOCK_STREAM, 0) or die \"socket: $!\\n\"; \
                 connect(S, pack_sockaddr_un($ARGV[0])) or die \"$!\\n\";",
            ])
            .arg(socket)
            .output()
            .unwrap();
        if output.status.success() {
            Ok(())
        } else {
            Err(stderr(&output).trim().to_string())
        }
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn another_local_user_cannot_connect_to_the_executors_socket() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let mut run = scratch.spawn(&ssh_args(&sshd), "echo started; sleep 300");
        run.wait_for_line("started");
        let run_dirs = sshd::run_dirs();
        assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
        let socket = run_dirs[0].join("executor.sock");
        assert_eq!(fs::metadata(&run_dirs[0]).unwrap().mode() & 0o777, 0o700);
        // Its owner can: the check is able to succeed.
        let owner = fs::metadata(&run_dirs[0]).unwrap();
        assert_eq!(can_connect_as(owner.uid(), owner.gid(), &socket), Ok(()));
        let refused = can_connect_as(65534, 65534, &socket).unwrap_err();
        assert_eq!(refused, "Permission denied");
        run.interrupt();
        let (status, _, err) = run.finish(Duration::from_secs(30));
        assert_eq!(status, Some(130), "{err}");
        assert_nothing_left(scratch.tmp.path());
    }

    /// A file only a run of `command` would write, in a directory anyone may write to (a
    /// ProxyCommand runs here as root, a replaced binary there as the test user).
    fn canary() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let canary = dir.path().join("canary");
        (dir, canary)
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn a_task_files_proxy_command_is_refused_at_load_and_runs_nothing_here() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let (_dir, canary) = canary();
        let proxy = format!(
            "-oProxyCommand=sh -c 'echo ran > {}; exec ssh -F {} -W 127.0.0.1:{} {HOST}'",
            canary.display(),
            sshd.dir.path().join("ssh_config").display(),
            sshd.port
        );
        let task_file = scratch.repo.path().join(".buildr/build.hcl");
        write_files(
            scratch.repo.path(),
            &[(
                ".buildr/build.hcl",
                &format!(
                    "task \"build\" {{\n  script = \"echo built > built.txt\"\n  ssh {{\n    \
                     host    = \"{HOST}\"\n    options = [\"-p2222\", {proxy:?}]\n  }}\n}}\n"
                ),
            )],
        );
        let output = scratch.run_task(&ssh_args(&sshd), &["build"]);
        let err = stderr(&output);
        assert!(!canary.exists(), "the task file's ProxyCommand ran: {err}");
        assert_eq!(output.status.code(), Some(125), "{err}");
        assert_eq!(
            err,
            format!(
                "buildr: cannot load the tasks of {}: {}:5:26: `options` in `ssh` in task \"build\": \
                 {proxy:?} is refused: `ProxyCommand` is not an option a task file may set (a task \
                 file's options only choose where to connect: -p, -l, -J, -4, -6, -C, and -o with \
                 Port, User, HostName, ProxyJump, AddressFamily, ConnectTimeout, \
                 ConnectionAttempts, ServerAliveInterval, ServerAliveCountMax, TCPKeepAlive, \
                 Compression, IdentitiesOnly); give it on the command line with --ssh-option, or \
                 in your ~/.ssh/config\n",
                scratch.repo.path().display(),
                task_file.display()
            )
        );
        assert!(!scratch.out.path().join("built.txt").exists());
        assert_nothing_left(scratch.tmp.path());

        // The same option on the command line is the user's own, and is used.
        fs::remove_file(&task_file).unwrap();
        let mut args = ssh_args(&sshd);
        args.push(format!("--ssh-option={proxy}"));
        let output = scratch.run(&args, "echo built > built.txt");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(fs::read_to_string(&canary).unwrap(), "ran\n");
        assert_eq!(
            fs::read_to_string(scratch.out.path().join("built.txt")).unwrap(),
            "built\n"
        );
        assert_nothing_left(scratch.tmp.path());
    }

    /// The `sent=N` of a `-v` run's "inputs sent by content" line.
    fn packs_sent(stderr: &str) -> Option<usize> {
        let line = stderr
            .lines()
            .find(|l| l.contains("inputs sent by content"))?;
        let sent = line.split("sent=").nth(1)?;
        sent.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn inputs_go_by_content_one_changed_file_is_one_pack_and_a_tampered_cache_goes_whole() {
        use sha2::Digest;
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let client_cache = tempfile::tempdir().unwrap();
        let user = nix::unistd::User::from_name(sshd::USER).unwrap().unwrap();
        let host_packs = user.dir.join(".cache/buildr/packs");
        let _ = fs::remove_dir_all(&host_packs);
        let noise = |seed: u32| -> String {
            (0..128)
                .map(|i| hex::encode(sha2::Sha256::digest(format!("{seed}-{i}"))))
                .collect()
        };
        for i in 0..200 {
            let path = scratch.repo.path().join(format!("src/f{i:03}.txt"));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, noise(i)).unwrap();
        }
        let mut args = ssh_args(&sshd);
        args.push("-v".into());
        // What the task sees: every input's content, in order.
        let script = "cat $(find src -type f | sort) | sha256sum";
        let expected = |repo: &Path| {
            let mut all = Vec::new();
            for i in 0..200 {
                all.extend(fs::read(repo.join(format!("src/f{i:03}.txt"))).unwrap());
            }
            format!("{}  -", hex::encode(sha2::Sha256::digest(all)))
        };
        let run = || {
            let output = command(
                &args,
                scratch.repo.path(),
                scratch.out.path(),
                scratch.tmp.path(),
                &["--", "sh", "-c", script],
            )
            .env("XDG_CACHE_HOME", client_cache.path())
            .output()
            .unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            assert_eq!(stdout(&output).trim(), expected(scratch.repo.path()));
            stderr(&output)
        };

        // The first run sends every pack, and the host keeps them.
        let first = run();
        assert!(packs_sent(&first).is_some_and(|n| n > 0), "{first}");
        let kept: Vec<_> = fs::read_dir(&host_packs).unwrap().flatten().collect();
        assert!(!kept.is_empty());

        // One file changed: one small pack.
        fs::write(scratch.repo.path().join("src/f042.txt"), noise(1000)).unwrap();
        let second = run();
        assert_eq!(packs_sent(&second), Some(1), "{second}");

        // A cached pack changed on the host (a task of the same user could): nothing of it is
        // used, and the inputs go whole, saying so.
        let pack = kept[0].path();
        fs::write(&pack, "not the pack it was").unwrap();
        fs::write(scratch.repo.path().join("src/f043.txt"), noise(2000)).unwrap();
        let third = run();
        assert!(third.contains("the inputs went whole"), "{third}");
        assert!(third.contains("damaged or tampered with"), "{third}");
        // The damaged pack left the cache: the next run goes by content again.
        assert!(!pack.exists());
        let fourth = run();
        assert!(packs_sent(&fourth).is_some(), "{fourth}");
        assert!(!fourth.contains("went whole"), "{fourth}");
        assert_nothing_left(scratch.tmp.path());
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn a_cached_binary_replaced_on_the_host_is_never_run_and_the_run_goes_on() {
        use sha2::Digest;
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let mut args = ssh_args(&sshd);
        args.push("-v".into());
        let user = nix::unistd::User::from_name(sshd::USER).unwrap().unwrap();
        let binary = fs::read(static_executor()).unwrap();
        let cached = user
            .dir
            .join(".cache/buildr/executor")
            .join(hex::encode(sha2::Sha256::digest(&binary)));

        // The first run leaves the binary in the user's cache.
        let output = scratch.run(&args, "echo one");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(fs::read(&cached).unwrap() == binary, "not cached");

        // A task of some run, as the same user, replaces it with a binary of its own that
        // passes everything on to the real one: a run that starts it still works.
        let (_dir, canary) = canary();
        let real = user.dir.join(".cache/buildr/real-executor");
        fs::copy(static_executor(), &real).unwrap();
        fs::write(
            &cached,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
                canary.display(),
                real.display()
            ),
        )
        .unwrap();
        for path in [&real, &cached] {
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
        }

        let output = scratch.run(&args, "echo two");
        let err = stderr(&output);
        fs::remove_file(&real).unwrap();
        assert_eq!(output.status.code(), Some(0), "{err}");
        assert_eq!(stdout(&output), "two\n");
        assert!(
            !canary.exists(),
            "the replaced binary ran: {}",
            fs::read_to_string(&canary).unwrap_or_default()
        );
        assert!(err.contains("copy binary, tools and inputs"), "{err}");
        // Cached again, and used by the next run.
        assert!(fs::read(&cached).unwrap() == binary, "not cached again");
        let output = scratch.run(&args, "echo three");
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{err}");
        assert!(
            err.contains("copy tools and inputs (binary cached)"),
            "{err}"
        );
        assert_nothing_left(scratch.tmp.path());
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn an_executor_killed_on_the_host_ends_the_run_in_seconds_saying_so() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let mut run = scratch.spawn(&ssh_args(&sshd), "echo started; exec sleep 300");
        run.wait_for_line("started");
        let run_dirs = sshd::run_dirs();
        assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
        let pid = fs::read_to_string(run_dirs[0].join("executor.pid")).unwrap();
        let killed = Instant::now();
        signal(pid.trim().parse().unwrap(), Signal::SIGKILL);
        let (status, _, err) = run.finish(Duration::from_secs(30));
        let noticed = killed.elapsed();
        assert_eq!(status, Some(125), "{err}");
        // What happened, in the last line; before it, only the client's redials while the
        // check was on its way.
        let (before, last) = err
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", err.trim_end()));
        assert_eq!(
            last,
            format!("buildr: the executor exited unexpectedly (killed by SIGKILL on {HOST})")
        );
        assert!(
            before
                .lines()
                .all(|line| line.contains("lost the executor; reconnecting")),
            "{err}"
        );
        // Checked every second: well before the 60 s the redials would take to give up.
        assert!(
            noticed < Duration::from_secs(5),
            "noticed after {noticed:?}"
        );
        assert_nothing_left(scratch.tmp.path());
    }

    /// Busy shells that keep the machine's cores loaded until dropped.
    struct Load(Vec<Child>);

    impl Load {
        fn start(shells: usize) -> Load {
            Load(
                (0..shells)
                    .map(|_| {
                        Command::new("sh")
                            .args(["-c", "while :; do :; done"])
                            .spawn()
                            .unwrap()
                    })
                    .collect(),
            )
        }
    }

    impl Drop for Load {
        fn drop(&mut self) {
            for shell in &mut self.0 {
                let _ = shell.kill();
                let _ = shell.wait();
            }
        }
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn ctrl_c_at_any_moment_under_load_ends_the_run_in_bounded_time_and_leaves_nothing() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        let files: Vec<(String, String)> = (0..300)
            .map(|i| (format!("src/{i}.txt"), format!("input {i}\n")))
            .collect();
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (&p[..], &c[..])).collect();
        write_files(scratch.repo.path(), &files);
        let _load = Load::start(2);
        // Debug logs: a run that does not end is shown with what it was doing.
        let args = [ssh_args(&sshd), vec!["-vv".to_string()]].concat();
        // Ctrl-C (and every third time a second one) at moments spread over the run: the
        // connection, the copy, the start, the task, its fetch and extraction, the clean-up.
        for i in 0..16u64 {
            let delay = 200 * i;
            let mut run = scratch.spawn(
                &args,
                "for f in src/*; do cp $f $f.out; done; echo started; sleep 300",
            );
            std::thread::sleep(Duration::from_millis(delay));
            run.interrupt();
            if i % 3 == 2 {
                std::thread::sleep(Duration::from_millis(40));
                run.interrupt();
            }
            let interrupted = Instant::now();
            // Bounded, not instant: above the sum of the run's own bounds (20 s for the
            // result of a cancelled task, then the clean-up's 30 s on the host, 5 s for the
            // connection and 2 s for the master's kill), which a Ctrl-C under a whole suite's
            // load can meet (CI saw over 10 s, and once a run that never ended).
            let status = run.wait_at_most(Duration::from_secs(60));
            let (_, _, err) = run.finish(Duration::ZERO);
            let took = interrupted.elapsed();
            assert!(
                status.code() == Some(130) || status.signal() == Some(Signal::SIGINT as i32),
                "Ctrl-C {i} after {delay}ms: {status:?}: {err}"
            );
            eprintln!("Ctrl-C {i} after {delay}ms: {status:?} in {took:?}");
            assert_nothing_left(scratch.tmp.path());
        }
    }

    /// Local processes whose command line holds `marker`.
    fn local_processes(marker: &str) -> Vec<String> {
        let output = Command::new("pgrep")
            .args(["-a", "-f", "--", marker])
            .output()
            .unwrap();
        stdout(&output).lines().map(str::to_string).collect()
    }

    #[test]
    #[ignore = "needs root and openssh-server (tests/run-all.sh)"]
    fn ctrl_c_while_the_master_is_started_again_against_a_silent_host_ends_the_run_in_seconds() {
        let _one = one_at_a_time();
        let sshd = Sshd::start();
        let scratch = Scratch::new();
        // Every connection goes through this proxy: while the file `silent` is there, the next
        // one takes it away and hangs, as a host that accepts and then says nothing.
        let (dir, _) = canary();
        let silent = dir.path().join("silent");
        let mut args = ssh_args(&sshd);
        args.push(format!(
            "--ssh-option=-oProxyCommand=sh -c 'if rm {} 2>/dev/null; then exec sleep 600; fi; \
             exec ssh -F {} -W 127.0.0.1:{} {HOST}'",
            silent.display(),
            sshd.dir.path().join("ssh_config").display(),
            sshd.port
        ));
        let mut run = scratch.spawn(&args, "echo started; sleep 300");
        run.wait_for_line("started");
        fs::write(&silent, "").unwrap();
        signal(
            child_of(run.child.id(), "ControlMaster=yes"),
            Signal::SIGKILL,
        );
        // The new master is on its way, and hangs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while silent.exists() {
            assert!(Instant::now() < deadline, "no new master was started");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        run.interrupt();
        let interrupted = Instant::now();
        let status = run.wait_at_most(Duration::from_secs(10));
        let took = interrupted.elapsed();
        let (_, _, err) = run.finish(Duration::ZERO);
        assert_eq!(status.code(), Some(130), "{err}");
        eprintln!("ended {took:?} after the Ctrl-C: {err}");
        // The clean-up reached the host all the same, and the hung master went with its proxy.
        assert_nothing_left(scratch.tmp.path());
        assert_eq!(
            local_processes(&silent.display().to_string()),
            Vec::<String>::new()
        );
    }
}
