//! The ssh backend: a task on any machine the user can `ssh` to, through their own OpenSSH
//! client and one ControlMaster connection per run ([`connection`]).
//!
//! A run's life on the host ([`remote`] has its scripts): one round trip makes a private (0700)
//! run directory under `$XDG_RUNTIME_DIR`, else `/tmp`, reads `uname -m` and finds out whether
//! the executor binary is already in the user's cache (copied into the run directory, and that
//! copy hashed by the host's own tool: a task could have replaced the cached file);
//! the binary (unless cached), the tools, the secret and the inputs go in by the upload every
//! remote backend shares; the executor starts detached, on a Unix socket in the run directory
//! (never TCP), which the connection forwards to a socket in a private local directory.
//! While the task runs, `lost` checks the executor's process over the connection every second.
//! `clean_up` stops the executor (its task's process group with it) and removes the run
//! directory on every path out, then ends the connection.

pub mod connection;
pub mod remote;
pub mod resolve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::binary::{BinaryError, ExecutorBinary};
use super::by_content;
use super::executor_command::IDLE_TIMEOUT;
use super::upload::{self, Layout, RemoteCommand, UploadError};
use super::{Backend, StartedExecutor};
use crate::backend::arch::kubernetes_arch;
use crate::backend::process::last_line;
use crate::secret::Secret;
use crate::snapshot::KnownPacks;
use crate::task::InputFile;
use crate::timeline::Timeline;
use crate::tools::Tool;
use connection::{CommandError, Link, Sessions, Ssh};
use remote::{Check, Probe, RunDir};

/// How long the clean-up on the host may take: the executor's own stop takes at most 10 s.
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the clean-up waits for the connection to close the master: nothing holds it once
/// the run is ending.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a running executor's process is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One run's settings, resolved from the task and the command line (`cli::run_ssh`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[user@]host`, or a `Host` of the user's ssh config.
    pub destination: String,
    /// Passed to every `ssh` as they are, before the destination.
    pub options: Vec<String>,
    pub binary: ExecutorBinary,
    pub tools: Vec<Tool>,
    pub keep: bool,
    /// What confines the task on the host.
    pub sandbox: crate::sandbox::Policy,
    /// Where this machine keeps what it knows: the stat cache of the inputs' digests, and the
    /// packs sent to each host (none: inputs are sent whole).
    pub known: Option<crate::snapshot::known::Records>,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "no host to run on: give --host, or set `host` in the task's `ssh` block (ssh backend)"
    )]
    NoHost,
    #[error("the host `{0}` starts with `-`; give it as ssh takes it: [user@]host")]
    BadHost(String),
    #[error("--ssh-option `{0}` is not an option of ssh (it does not start with `-`)")]
    BadOption(String),
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error("cannot create a private local directory for the ssh connection")]
    LocalDir(#[source] std::io::Error),
    #[error("cannot connect to {host}: {}", connect_failure(.error))]
    Connect { host: String, error: CommandError },
    #[error("{host} has no `sh` on the PATH of its login shell; buildr needs `sh` and `tar` there")]
    NoSh { host: String },
    #[error("cannot make a run directory on {host}{}", said(.error))]
    RunDir { host: String, error: CommandError },
    #[error("cannot prepare the run on {host}")]
    Prepare { host: String, source: CommandError },
    #[error("{host} did not say where the run goes (its answer: `{answer}`)")]
    Unreadable { host: String, answer: String },
    #[error(
        "{host} is {machine} ({arch}), but the executor binary {} is built for {}; \
         give --executor-binary a build for {arch}",
        binary.display(), binary_arch
    )]
    Arch {
        host: String,
        machine: String,
        arch: String,
        binary: PathBuf,
        binary_arch: String,
    },
    #[error(transparent)]
    Upload(#[from] UploadError<CommandError>),
    #[error("cannot start the executor on {host}")]
    Launch { host: String, source: CommandError },
    #[error("cannot forward the executor's socket from {host}")]
    Forward { host: String, source: CommandError },
}

/// ssh's own words for why it could not connect ("Host key verification failed.",
/// "Permission denied (publickey).", "connect to host … port 22: Connection refused").
fn connect_failure(error: &CommandError) -> String {
    match error {
        CommandError::Exited { stderr, .. } | CommandError::Killed { stderr } => {
            last_line(stderr).unwrap_or("ssh gave up").to_string()
        }
        other => other.to_string(),
    }
}

fn said(error: &CommandError) -> String {
    match error {
        CommandError::Exited { stderr, .. } => match last_line(stderr) {
            Some(line) => format!(": {line}"),
            None => String::new(),
        },
        other => format!(": {other}"),
    }
}

/// What a run leaves on the host after its clean-up.
#[derive(Debug, thiserror::Error)]
pub enum Leftover {
    #[error("keeping the run directory {dir} on {host}; look inside with `ssh {host}`")]
    Kept { host: String, dir: String },
    #[error(
        "the run directory {dir} on {host} is left behind ({why}); its executor removes it when \
         it exits, within {}s of the run",
        IDLE_TIMEOUT.as_secs()
    )]
    NotRemoved {
        host: String,
        dir: String,
        why: String,
    },
}

/// A run on a host over ssh.
pub struct SshBackend {
    settings: Settings,
    run_id: String,
    /// The private local directory of the control socket and the forwarded executor socket.
    local: Option<tempfile::TempDir>,
    /// How the run's commands reach the host, once connected.
    ssh: Option<Ssh>,
    link: Option<Arc<Mutex<Link>>>,
    /// Cancelled when the clean-up begins: no dial holds the connection after that.
    ending: CancellationToken,
    /// Set before the probe that makes the run directory is sent, so that a start cut short
    /// still removes it.
    probed: bool,
    /// Where the run directory is, once the host said.
    run_dir: Option<String>,
    /// The run's paths on the host, once its executor listens.
    started: Option<RunDir>,
}

impl SshBackend {
    pub fn new(settings: Settings, run_id: &str) -> Self {
        Self {
            settings,
            run_id: run_id.to_string(),
            local: None,
            ssh: None,
            link: None,
            ending: CancellationToken::new(),
            probed: false,
            run_dir: None,
            started: None,
        }
    }

    fn host(&self) -> String {
        self.settings.destination.clone()
    }

    /// Connects: the master, in a fresh private local directory.
    async fn connect(&mut self) -> Result<(Ssh, Arc<Mutex<Link>>, PathBuf), SshError> {
        let local = self.local.insert(
            tempfile::Builder::new()
                .prefix("buildr-ssh-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .map_err(SshError::LocalDir)?,
        );
        let ssh = Ssh {
            destination: self.settings.destination.clone(),
            options: self.settings.options.clone(),
            control_path: local.path().join("control"),
            sessions: Sessions::default(),
        };
        let socket = local.path().join("executor.sock");
        let link = Link::open(ssh.clone())
            .await
            .map_err(|error| SshError::Connect {
                host: self.host(),
                error,
            })?;
        self.link = Some(link.clone());
        self.ssh = Some(ssh.clone());
        Ok((ssh, link, socket))
    }

    /// The first round trip: the run directory, the machine, the cache.
    async fn probe(&mut self, ssh: &Ssh) -> Result<Probe, SshError> {
        let script = remote::probe(&self.run_id, &self.settings.binary.sha256);
        self.probed = true;
        let output = ssh.run(script, Ok).await.map_err(|source| match &source {
            CommandError::Exited { code: 127, .. } => SshError::NoSh { host: self.host() },
            CommandError::Exited {
                code: remote::NO_RUN_DIR,
                ..
            } => SshError::RunDir {
                host: self.host(),
                error: source,
            },
            _ => SshError::Prepare {
                host: self.host(),
                source,
            },
        })?;
        let answer = String::from_utf8_lossy(&output);
        let probe = Probe::parse(&answer).ok_or_else(|| SshError::Unreadable {
            host: self.host(),
            answer: answer.trim().to_string(),
        })?;
        self.run_dir = Some(probe.run_dir.clone());
        let arch = kubernetes_arch(&probe.machine).to_string();
        if arch != self.settings.binary.arch {
            return Err(SshError::Arch {
                host: self.host(),
                machine: probe.machine,
                arch,
                binary: self.settings.binary.path.clone(),
                binary_arch: self.settings.binary.arch.clone(),
            });
        }
        Ok(probe)
    }
}

impl SshBackend {
    /// The inputs into the run's workspace: by content when the host keeps packs and this
    /// machine has its records (the index and the packs the host lacks), else whole; whole too,
    /// with one warning line, when by content fails. The digest of the tree sent, and what went
    /// by content.
    async fn send_inputs(
        &self,
        ssh: &Ssh,
        layout: &Layout,
        probe: &Probe,
        run: &RunDir,
        inputs: &[InputFile],
    ) -> Result<(Option<[u8; 32]>, Option<by_content::Sent>), UploadError<CommandError>> {
        let to = upload::Destination::Host(self.host());
        let (Some(packs), Some(known)) = (&probe.packs, &self.settings.known) else {
            return Ok((upload::inputs(ssh, layout, inputs, None, &to).await?, None));
        };
        let mut record = KnownPacks::load(&known.cache_dir, &format!("ssh://{}", self.host()));
        let snapshot = run.path("snapshot");
        let there = by_content::There {
            layout,
            snapshot_dir: &snapshot,
            packs,
            to: &to,
        };
        let stat_cache = Some(known.stat_cache.clone());
        match by_content::send(ssh, there, inputs, stat_cache, &mut record).await {
            Ok(sent) => {
                tracing::info!(
                    packs = sent.packs,
                    sent = sent.packs_sent,
                    bytes = sent.bytes_sent,
                    "inputs sent by content"
                );
                Ok((Some(sent.tree), Some(sent)))
            }
            Err(failed) => {
                // Said only when the whole copy works: a binary that did not come fails both,
                // and its own error says why.
                let whole = upload::inputs(ssh, layout, inputs, None, &to).await?;
                let why = format!("{:#}", anyhow::Error::new(failed));
                eprintln!(
                    "buildr: warning: the inputs went whole: sending them by content failed: {}",
                    crate::printable::Printable(&why)
                );
                Ok((whole, None))
            }
        }
    }
}

impl Backend for SshBackend {
    type Error = SshError;
    type Leftover = Leftover;

    async fn start(
        &mut self,
        inputs: &Arc<[InputFile]>,
        secret: &Secret,
        timeline: &mut Timeline,
    ) -> Result<StartedExecutor, SshError> {
        let mut step = Instant::now();
        let (ssh, link, local_socket) = self.connect().await?;
        timeline.record("ssh connect", &mut step);
        let probe = self.probe(&ssh).await?;
        timeline.record("make run directory", &mut step);

        let run = RunDir {
            dir: probe.run_dir.clone(),
            cache_as: match &probe.cache {
                Some(cache) if !probe.cached => {
                    Some(format!("{cache}/{}", self.settings.binary.sha256))
                }
                _ => None,
            },
        };
        let layout = Layout {
            binary: run.binary(),
            tools: run.path("tools"),
            secret: run.path("secret"),
            workspace: run.path("workspace"),
            incoming: run.path("incoming"),
            secret_waiter: None,
        };
        let to = upload::Destination::Host(self.host());
        let settings = &self.settings;
        let payload = upload::Payload {
            binary: !probe.cached,
            tools: &settings.tools,
            secret: Some(secret),
        };
        let (sent, copied) = tokio::join!(
            upload::binary(&ssh, &layout, &settings.binary, payload, &to),
            self.send_inputs(&ssh, &layout, &probe, &run, inputs),
        );
        let (inputs_sent, by_content) = sent.and(copied)?;
        let copied = if probe.cached {
            "copy tools and inputs (binary cached)"
        } else {
            "copy binary, tools and inputs"
        };
        match by_content {
            Some(sent) => timeline.record(
                &format!(
                    "{copied}, by content: {} of {} packs sent, {}",
                    sent.packs_sent,
                    sent.packs,
                    crate::tools::human_size(sent.bytes_sent)
                ),
                &mut step,
            ),
            None => timeline.record(copied, &mut step),
        }

        ssh.run(
            remote::launch(&run, IDLE_TIMEOUT, settings.keep, &settings.sandbox),
            Ok,
        )
        .await
        .map_err(|source| SshError::Launch {
            host: self.host(),
            source,
        })?;
        link.lock()
            .await
            .forward(local_socket, run.socket())
            .await
            .map_err(|source| SshError::Forward {
                host: self.host(),
                source,
            })?;
        timeline.record("start executor", &mut step);
        self.started = Some(run.clone());
        let ending = self.ending.clone();
        Ok(StartedExecutor {
            channel: crate::client::connect::channel_through(move || {
                connection::dial(link.clone(), ending.clone())
            }),
            workspace_root: run.path("workspace"),
            inputs_sent,
        })
    }

    /// The executor's process, checked over the connection every [`CHECK_EVERY`], as the k8s
    /// backend watches its pod: one that died is noticed in seconds, not after the client's
    /// redials give up. A lost connection is redialled, not an end: a check that gets no answer
    /// (the master is being started again) is simply tried again.
    async fn lost(&mut self) -> String {
        let (Some(link), Some(run)) = (self.link.clone(), self.started.clone()) else {
            return std::future::pending().await;
        };
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // Not while the connection is being made again: a session would connect on its own.
            let ssh = match link.try_lock() {
                Ok(mut link) => match link.is_up() {
                    true => link.ssh.clone(),
                    false => continue,
                },
                Err(_) => continue,
            };
            let answer = tokio::time::timeout(CHECK_EVERY * 5, ssh.run(remote::check(&run), Ok));
            let Ok(Ok(answer)) = answer.await else {
                continue;
            };
            if let Some(how) = Check::parse(&String::from_utf8_lossy(&answer))
                .as_ref()
                .and_then(Check::describe)
            {
                return format!("{how} on {}", self.host());
            }
        }
    }

    async fn clean_up(&mut self) -> Vec<Leftover> {
        let (Some(link), Some(ssh)) = (self.link.take(), self.ssh.take()) else {
            return Vec::new();
        };
        // A dial under way (a master being started again) gives up, and lets go of the
        // connection.
        self.ending.cancel();
        let mut leftovers = Vec::new();
        if std::mem::take(&mut self.probed) {
            let host = self.host();
            let dir = self
                .run_dir
                .take()
                .unwrap_or_else(|| format!("buildr-{}", self.run_id));
            let cleaned = async {
                // After every session of the run: one that a Ctrl-C cut short still runs on the
                // host, and could make again what this removes.
                ssh.sessions.drained().await;
                // Over the master when it is up; else ssh makes a connection of its own, so
                // this never waits for a master to be started again.
                let script = remote::clean_up(&self.run_id, self.settings.keep);
                ssh.run(script, Ok).await.map(drop)
            };
            // A host that went away must not hold the run's end: its executor ends by itself.
            match tokio::time::timeout(CLEAN_UP_TIMEOUT, cleaned).await {
                Ok(Ok(())) if self.settings.keep => leftovers.push(Leftover::Kept { host, dir }),
                Ok(Ok(())) => {}
                Ok(Err(e)) => leftovers.push(Leftover::NotRemoved {
                    host,
                    dir,
                    why: e.to_string(),
                }),
                Err(_) => leftovers.push(Leftover::NotRemoved {
                    host,
                    dir,
                    why: format!("no answer within {}s", CLEAN_UP_TIMEOUT.as_secs()),
                }),
            }
        }
        // Were it still held, the master goes with the last handle on it (killed on drop).
        if let Ok(mut link) = tokio::time::timeout(CLOSE_TIMEOUT, link.lock()).await {
            link.close().await;
        }
        drop(self.local.take());
        leftovers
    }
}
