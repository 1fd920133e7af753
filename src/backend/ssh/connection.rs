//! The run's one connection to the host: the user's own `ssh` as a ControlMaster, whose control
//! socket and forwarded executor socket live in a private local directory. Every command of the
//! run is a session multiplexed over it ([`Ssh`], a [`RemoteCommand`]); the executor's Unix
//! socket is forwarded to a local one with `ssh -O forward`. A master that dies (the network,
//! a kill) is started again, with its forward, by the next dial: the client's redial then
//! resumes the event stream as it does over a port-forward.
//!
//! Every wait here is bounded, and a run that ends stops what is still under way: a dial gives
//! up the moment the run ends ([`dial`]'s `ending`), and a session whose step was dropped (a
//! Ctrl-C mid-copy) stops being fed and is let end on the host, so that the clean-up, which
//! waits for those ([`Sessions::drained`]), never races a step that could make again what it
//! removes.
//!
//! Only `-o` settings that name buildr's own files are added (`ControlPath`, `ControlMaster`,
//! and on the master a `LocalCommand` that says it is up), and `BatchMode=yes`: ssh runs in a
//! process group of its own (so that Ctrl-C reaches `buildr run`, which cleans up over it), where
//! a prompt on the terminal would stop it, so it never prompts; keys come from the agent or
//! need no passphrase, and an unknown host key is refused, not asked about. The user's config,
//! keys, agent, `ProxyJump` and host-key checking all apply as they are.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::backend::executor_command::quote;
use crate::backend::process::{self, Feed, Stdin, said, tail};
use crate::backend::upload::RemoteCommand;

/// What the master's `LocalCommand` prints once it is authenticated and serving sessions.
const READY: &str = "buildr-ssh-master-ready";
/// How long the master gets to end after SIGTERM before it is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long the master may take to connect and authenticate: a host that accepts the TCP
/// connection and then says nothing must not hold the run (or its Ctrl-C) for ever.
const MASTER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `ssh -O forward`, a request to the local master, may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session whose step was dropped gets to end on the host once its stdin is closed
/// (a probe or a copy ends in milliseconds); then its `ssh` is killed.
const DRAIN: Duration = Duration::from_secs(5);

/// A session that failed, or the master that would not start: ssh's own words.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `ssh` (the OpenSSH client)")]
    Spawn(#[source] io::Error),
    #[error("it exited with status {code}{}", said(.stderr))]
    Exited { code: i32, stderr: String },
    #[error("ssh was killed by a signal{}", said(.stderr))]
    Killed { stderr: String },
    #[error("cannot send the data")]
    Feed(#[source] io::Error),
    #[error("ssh did not answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

impl From<process::Failed> for CommandError {
    fn from(failed: process::Failed) -> Self {
        match failed {
            process::Failed::Spawn(e) => Self::Spawn(e),
            process::Failed::Exited { code, stderr } => Self::Exited { code, stderr },
            process::Failed::Killed { stderr } => Self::Killed { stderr },
            process::Failed::Feed(e) => Self::Feed(e),
        }
    }
}

/// How to reach the host: the destination as `ssh` takes it, the user's extra arguments, and
/// the control socket in the run's private local directory.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub destination: String,
    pub options: Vec<String>,
    pub control_path: PathBuf,
    /// The run's sessions that have not ended yet.
    pub sessions: Sessions,
}

/// The sessions of a run still under way, each holding a read guard until its `ssh` exited:
/// [`Sessions::drained`] waits for all of them. A session whose step was dropped still runs on
/// the host until its own end (killing the local `ssh` would not stop it there), and the
/// clean-up must come after it, or a copy cut short could make again the run directory the
/// clean-up has just removed.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<RwLock<()>>);

impl Sessions {
    /// Once every session under way ended: a session whose step was dropped ends within
    /// [`DRAIN`].
    pub async fn drained(&self) {
        drop(self.0.write().await);
    }
}

impl Ssh {
    /// `ssh` with buildr's settings first (ssh keeps the first value it is given for a
    /// setting), then the user's arguments.
    fn command(&self, master: bool) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-o")
            .arg(format!("ControlPath={}", self.control_path.display()))
            .arg("-o")
            .arg(if master {
                "ControlMaster=yes"
            } else {
                "ControlMaster=no"
            })
            .args(["-o", "BatchMode=yes"])
            .args(&self.options)
            .kill_on_drop(true)
            // Its own group: a Ctrl-C at the terminal reaches `buildr run`, which cancels and
            // cleans up over this connection, and not ssh behind its back.
            .process_group(0);
        command
    }

    /// Starts the master and waits until it serves sessions; fails with ssh's own words when
    /// it cannot connect (unreachable, authentication refused, host key unknown or changed).
    async fn start_master(&self) -> Result<Master, CommandError> {
        let mut command = self.command(true);
        command
            .args(["-o", "ControlPersist=no", "-o", "PermitLocalCommand=yes"])
            .arg("-o")
            .arg(format!("LocalCommand=echo {READY}"))
            .args(["-N", "-T", "--"])
            .arg(&self.destination)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A `buildr run` killed outright takes its connection with it (the executor on the
        // host then ends on its idle timeout).
        process::dies_with_parent(&mut command);
        // A stale control socket (a master killed outright) would make ssh refuse to listen.
        let _ = std::fs::remove_file(&self.control_path);
        let mut master = Master(command.spawn().map_err(CommandError::Spawn)?);
        let stdout = master.0.stdout.take().expect("stdout is piped");
        let stderr = master.0.stderr.take().expect("stderr is piped");
        let said = tokio::spawn(tail(stderr));
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.contains(READY) => return true,
                    Ok(Some(_)) => continue,
                    // No more output: the master gave up.
                    _ => return false,
                }
            }
        };
        match tokio::time::timeout(MASTER_TIMEOUT, ready).await {
            Ok(true) => {}
            Ok(false) => {
                let status = master.0.wait().await.map_err(CommandError::Spawn)?;
                let stderr = said.await.unwrap_or_default();
                return Err(match status.code() {
                    Some(code) => CommandError::Exited { code, stderr },
                    None => CommandError::Killed { stderr },
                });
            }
            // Killed on drop, with what it started.
            Err(_) => return Err(CommandError::Timeout(MASTER_TIMEOUT)),
        }
        // The rest of what it says is drained, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(master)
    }

    /// Forwards the local socket `local` to the host's socket `remote` through the master.
    async fn forward(&self, local: &Path, remote: &str) -> Result<(), CommandError> {
        // A socket file left by a previous master would make the new one refuse to bind.
        let _ = std::fs::remove_file(local);
        let mut command = self.command(false);
        command
            .args(["-O", "forward", "-L"])
            .arg(format!("{}:{remote}", local.display()))
            .args(["--", &self.destination]);
        match tokio::time::timeout(FORWARD_TIMEOUT, self.run_to_end(command, None)).await {
            Ok(forwarded) => forwarded.map(drop),
            Err(_) => Err(CommandError::Timeout(FORWARD_TIMEOUT)),
        }
    }

    /// Runs `command` to its end as one of the run's [`Sessions`], its stdin written by `feed`
    /// on a blocking thread (or empty), and returns its stdout once it exited with status 0.
    /// Dropped before that end, it stops feeding (stdin then ends) and leaves the session to
    /// end by itself, for at most [`DRAIN`].
    async fn run_to_end(
        &self,
        command: Command,
        feed: Option<Feed>,
    ) -> Result<Vec<u8>, CommandError> {
        // Held by the session itself, which outlives this future when it is dropped.
        let under_way = self.sessions.0.clone().read_owned().await;
        let dropped = CancellationToken::new();
        let ended = process::run_to_end(command, feed, dropped.clone(), DRAIN);
        let session = tokio::spawn(async move {
            let ended = ended.await;
            drop(under_way);
            ended
        });
        let _on_drop = dropped.drop_guard();
        session
            .await
            .expect("a session does not panic")
            .map_err(CommandError::from)
    }
}

impl RemoteCommand for Ssh {
    type Stdin = Stdin;
    type Error = CommandError;

    /// `sh -c SCRIPT` on the host, through the user's login shell there, as a session over the
    /// master.
    async fn run<F>(&self, script: String, feed: F) -> Result<Vec<u8>, CommandError>
    where
        F: FnOnce(Stdin) -> io::Result<Stdin> + Send + 'static,
    {
        let mut command = self.command(false);
        command
            .args(["-T", "--"])
            .arg(&self.destination)
            .arg(format!("sh -c {}", quote(&script)));
        self.run_to_end(command, Some(Box::new(move |stdin| feed(stdin).map(drop))))
            .await
    }

    fn exit_code(error: &CommandError) -> Option<i32> {
        match error {
            CommandError::Exited { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A master `ssh`, in a process group of its own: dropped (a dial given up, a start that
/// timed out), the whole group is killed, its `ProxyCommand` with it, which ssh would end
/// only on its own way out.
struct Master(Child);

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The master and the executor's forward, shared by the backend (which starts and stops them)
/// and the client's dialler (which starts them again when the master is gone).
pub struct Link {
    pub ssh: Ssh,
    master: Option<Master>,
    /// Local socket and the host's socket it forwards to, once the executor listens.
    forward: Option<(PathBuf, String)>,
}

impl Link {
    /// Connects: the master, authenticated and serving sessions.
    pub async fn open(ssh: Ssh) -> Result<Arc<Mutex<Link>>, CommandError> {
        let master = ssh.start_master().await?;
        Ok(Arc::new(Mutex::new(Link {
            ssh,
            master: Some(master),
            forward: None,
        })))
    }

    /// Forwards `local` to the executor's socket `remote`, now and after every reconnect.
    pub async fn forward(&mut self, local: PathBuf, remote: String) -> Result<(), CommandError> {
        self.ssh.forward(&local, &remote).await?;
        self.forward = Some((local, remote));
        Ok(())
    }

    /// Whether the master runs.
    pub fn is_up(&mut self) -> bool {
        self.master
            .as_mut()
            .is_some_and(|master| matches!(master.0.try_wait(), Ok(None)))
    }

    /// Starts the master again if it is gone (with its forward), so that sessions and the
    /// client's next dial go through.
    async fn ensure_up(&mut self) -> Result<(), CommandError> {
        if self.is_up() {
            return Ok(());
        }
        tracing::warn!(host = %self.ssh.destination, "the ssh connection is gone; reconnecting");
        self.master = Some(self.ssh.start_master().await?);
        if let Some((local, remote)) = self.forward.clone() {
            self.ssh.forward(&local, &remote).await?;
        }
        Ok(())
    }

    /// Ends the master: every session and forward over it ends with it. SIGTERM first, so
    /// that it says goodbye to the server; but a master has been seen to stay in its loop after
    /// a SIGTERM (once in a few dozen Ctrl-Cs under load), which held the run's end for ever:
    /// after [`CLOSE_GRACE`] it is killed.
    pub async fn close(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        process::terminate(&mut master.0);
        if tokio::time::timeout(CLOSE_GRACE, master.0.wait())
            .await
            .is_err()
        {
            tracing::debug!("the ssh master did not end on SIGTERM; killing it");
        }
        // Dropped: killed, with its group, unless it ended.
    }
}

/// A dial of the executor's forwarded socket: through the master as it is, or, when the master
/// is gone, through a new one with the forward set up again. Once `ending` (the run's
/// clean-up has begun) it gives up at once, a master it was starting killed, so that it never
/// holds the connection the clean-up needs.
pub async fn dial(
    link: Arc<Mutex<Link>>,
    ending: CancellationToken,
) -> io::Result<tokio::net::UnixStream> {
    let dialled = async {
        let mut link = link.lock().await;
        let local = match &link.forward {
            Some((local, _)) => local.clone(),
            None => return Err(io::Error::other("the executor's socket is not forwarded")),
        };
        link.ensure_up().await.map_err(io::Error::other)?;
        tokio::net::UnixStream::connect(&local).await
    };
    tokio::select! {
        dialled = dialled => dialled,
        () = ending.cancelled() => Err(io::Error::other("the run is ending")),
    }
}
