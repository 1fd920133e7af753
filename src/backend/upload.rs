//! What every remote backend sends before the executor starts, over "a command on the other
//! side with stdin, stdout and stderr" ([`RemoteCommand`]: the Kubernetes exec API, or `ssh`):
//! the executor binary, the task's tools and the run's secret (a tar stream into the remote
//! `tar`, as `kubectl cp` does, where the binary checks its own SHA-256 before it is renamed
//! into place) and, in a session opened at the same time, the inputs as a `.tar.s2` stream into
//! the copied binary's own safe extractor, so that the inputs are checked on arrival by the same
//! code that checks every archive.

use std::future::Future;
use std::io::{self, Write};
use std::time::Duration;

use super::binary::ExecutorBinary;
use super::executor_command::quote;
use crate::archive::Limits;
use crate::secret::Secret;
use crate::snapshot::Credentials;
use crate::snapshot::pull::EXIT_UNREACHABLE as PULL_UNREACHABLE;
use crate::task::InputFile;
use crate::tools::{Check, Tool, ToolError};

/// A shell command on the executor's machine: `/bin/sh -c SCRIPT` there, its stdin written
/// here by `feed`, its stdout handed back.
pub trait RemoteCommand {
    /// What the command's stdin is on this side.
    type Stdin: Write + Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs `script`; `feed` writes its stdin on a blocking thread and hands it back, then stdin
    /// is closed. Returns stdout once the command exited with status 0.
    fn run<F>(&self, script: String, feed: F) -> impl Future<Output = Result<Vec<u8>, Self::Error>>
    where
        F: FnOnce(Self::Stdin) -> io::Result<Self::Stdin> + Send + 'static;

    /// The command's exit status, when `error` is that it exited with one other than 0.
    fn exit_code(error: &Self::Error) -> Option<i32>;

    /// What the command said on stderr before it failed, when `error` keeps it.
    fn said(_error: &Self::Error) -> Option<String> {
        None
    }
}

/// Where the upload lands on the executor's machine (absolute paths there).
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where the checked binary is renamed to: its appearance means it is complete.
    pub binary: String,
    pub tools: String,
    pub secret: String,
    pub workspace: String,
    /// Where the tar stream is unpacked before the binary is checked.
    pub incoming: String,
    /// Where whatever waits for the secret (a warm pod's main process, which sleeps a second at
    /// a time) writes the process id of its sleep, so that the secret's arrival wakes it.
    pub secret_waiter: Option<String>,
}

/// What one upload of [`binary`] carries, in one tar stream.
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    /// The executor binary; `false` when it is there already (a warm pod's, copied in by the
    /// pool's controller).
    pub binary: bool,
    pub tools: &'a [Tool],
    /// The run's secret; `None` when a pool's controller fills a warm pod, which waits for the
    /// secret of the run that takes it (sent with the inputs then, see [`inputs`]).
    pub secret: Option<&'a Secret>,
}

/// Where an upload goes, as its errors name it.
#[derive(Debug, Clone)]
pub enum Destination {
    /// An ssh host, as ssh takes it: `[user@]host`.
    Host(String),
    /// A pod, and its image: what a missing `tar` or tool is the image's to fix.
    Pod { pod: String, image: String },
}

impl Destination {
    /// "to HOST", "into pod POD".
    fn to(&self) -> String {
        match self {
            Self::Host(host) => format!("to {host}"),
            Self::Pod { pod, .. } => format!("into pod {pod}"),
        }
    }

    /// Where a tool's refusal says its needs are missing: "on HOST", "in the image `IMAGE`".
    fn place(&self) -> String {
        match self {
            Self::Host(host) => format!("on {host}"),
            Self::Pod { image, .. } => format!("in the image `{image}`"),
        }
    }

    fn no_tar(&self) -> String {
        match self {
            Self::Host(host) => format!(
                "{host} has no `tar`; buildr needs `sh` and `tar` there to copy the executor in"
            ),
            Self::Pod { image, .. } => format!(
                "the image `{image}` has no `tar`; buildr needs an image with `sh` and `tar`, \
                 which copy the executor in"
            ),
        }
    }
}

/// Why an upload failed, naming where it went: the one error the remote backends' own wrap;
/// `E` is the way of running commands' own error.
#[derive(Debug, thiserror::Error)]
pub enum UploadError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{}", .to.no_tar())]
    NoTar { to: Destination },
    #[error("copying {what} {} did not finish within {}s", .to.to(), .waited.as_secs())]
    Timeout {
        what: &'static str,
        to: Destination,
        waited: Duration,
    },
    #[error("cannot copy {what} {}", .to.to())]
    Failed {
        what: &'static str,
        to: Destination,
        #[source]
        source: E,
    },
}

/// What the binary's copy is called in errors.
pub const BINARY: &str = "the executor binary";
/// What the inputs' copy is called in errors.
pub const INPUTS: &str = "the inputs";

/// How long the binary may take to arrive: tens of megabytes, which take well under a second
/// on a healthy connection. A stalled session ends here rather than hanging the run.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the inputs' session looks for the binary in place.
const BINARY_POLL: Duration = Duration::from_millis(20);

/// The exit status of the preflight when there is no `tar`.
const NO_TAR: i32 = 90;

/// Copies the payload: the executor binary, the task's tools and the run's secret (the secret
/// travels only this way, or with the inputs), checks the binary's SHA-256 there (it hashes
/// itself), and moves them into place, the binary last: whatever waits for it starts it as soon
/// as it appears. The other side is asked at the same time whether it has `tar` and what the
/// tools need, and its answer wins: a copy that cannot land is dropped the moment it says no.
/// `to` is named in its errors (and a tool's refusal: "in the image `debian`").
pub async fn binary<R: RemoteCommand>(
    remote: &R,
    layout: &Layout,
    binary: &ExecutorBinary,
    payload: Payload<'_>,
    to: &Destination,
) -> Result<(), UploadError<R::Error>> {
    let check = Check::new(payload.tools, &binary.arch);
    let checked = preflight(remote, &check, to);
    let Layout {
        binary: target,
        tools: tools_dir,
        secret: secret_path,
        incoming,
        ..
    } = layout;
    let bin_dir = std::path::Path::new(target)
        .parent()
        .map_or_else(|| "/".to_string(), |p| p.display().to_string());
    let failed = failed_mark(layout);
    let [bin_dir, target, tools_dir, secret_path, incoming] =
        [&bin_dir, target, tools_dir, secret_path, incoming].map(|p| quote(p));
    // A copy that fails says so to the inputs' session, which waits for the binary.
    let mut script = format!(
        "set -e; umask 077; failed={failed}; trap '[ $? -eq 0 ] || : > \"$failed\"' EXIT; \
         mkdir -p {incoming} {bin_dir}; \
         tar -xf - -C {incoming}; \
         if [ -d {incoming}/tools ]; then mv {incoming}/tools {tools_dir}; fi; "
    );
    let mut files = Vec::new();
    if payload.binary {
        script += &format!(
            "{incoming}/buildr self-check --sha256 {sha256}; ",
            sha256 = binary.sha256
        );
        files.push((
            binary.path.clone(),
            binary.size,
            "buildr".to_string(),
            0o700,
        ));
    }
    if payload.secret.is_some() {
        script += &format!("mv {incoming}/secret {secret_path}; ");
    }
    if payload.binary {
        script += &format!("mv {incoming}/buildr {target}");
    }
    for tool in payload.tools {
        let name = format!("tools/{}", tool.name);
        files.push((tool.source.clone(), tool.size, name, 0o755));
    }
    let secret = payload
        .secret
        .map(|secret| format!("{}\n", secret.to_hex()));
    let copy = remote.run(script, move |stdin| {
        write_binary_tar(stdin, secret.as_deref(), &files)
    });
    let copy = tokio::time::timeout(COPY_TIMEOUT, copy);
    tokio::pin!(checked, copy);
    // One round trip instead of two: the copy does not wait for the answer. A copy that fails
    // first (no `tar` to read it) still waits for the answer, which says why in better words.
    let copied = tokio::select! {
        answer = &mut checked => {
            answer?;
            copy.await
        }
        copied = &mut copy => {
            checked.await?;
            copied
        }
    };
    match copied {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(UploadError::Failed {
            what: BINARY,
            to: to.clone(),
            source,
        }),
        Err(_) => Err(UploadError::Timeout {
            what: BINARY,
            to: to.clone(),
            waited: COPY_TIMEOUT,
        }),
    }
}

/// Asks the other side, with nothing to send, whether it has `tar` and what the tools need: a
/// command that exits without reading its stdin can leave a bulk upload stalled behind a
/// session the server keeps open, so it is this answer, not the copy's, that says no.
async fn preflight<R: RemoteCommand>(
    remote: &R,
    tools: &Check,
    to: &Destination,
) -> Result<(), UploadError<R::Error>> {
    let tar = format!("command -v tar >/dev/null || exit {NO_TAR}\n");
    match check_tools(remote, &tar, tools, &to.place()).await {
        Ok(verdict) => Ok(verdict?),
        Err(e) if R::exit_code(&e) == Some(NO_TAR) => Err(UploadError::NoTar { to: to.clone() }),
        Err(source) => Err(UploadError::Failed {
            what: BINARY,
            to: to.clone(),
            source,
        }),
    }
}

/// The one check of what the tools need, wherever the executor runs (a pod, an ssh host, this
/// machine's `/bin/sh`): runs `first` (what else the caller asks in the same round trip; it may
/// end the script with a status of its own) and the tools' script on the other side, and reads
/// the verdict, which names `place`. The outer error is that the command failed.
pub async fn check_tools<R: RemoteCommand>(
    remote: &R,
    first: &str,
    tools: &Check,
    place: &str,
) -> Result<Result<(), ToolError>, R::Error> {
    let stdout = remote.run(format!("{first}{}", tools.script()), Ok).await?;
    Ok(tools.verdict(&String::from_utf8_lossy(&stdout), place))
}

/// The start of a script that needs the executor binary, which another session is copying:
/// waits until it is in place, and fails when its copy failed or it does not come.
pub fn wait_for_binary(layout: &Layout) -> String {
    let polls = COPY_TIMEOUT.as_millis() / BINARY_POLL.as_millis();
    let (binary, failed) = (quote(&layout.binary), failed_mark(layout));
    format!(
        "i=0; while [ ! -x {binary} ]; do \
           if [ -e {failed} ]; then echo 'the executor binary was not copied' >&2; exit 1; fi; \
           i=$((i+1)); if [ $i -gt {polls} ]; then echo 'no executor binary arrived' >&2; exit 1; fi; \
           sleep {poll}; \
         done; ",
        poll = BINARY_POLL.as_secs_f64(),
    )
}

/// Where the binary's copy marks that it failed (a copy cut short by a Ctrl-C included), so
/// that the inputs' session stops waiting for a binary that will not come, and ends.
fn failed_mark(layout: &Layout) -> String {
    quote(&format!("{}.failed", layout.incoming))
}

/// `secret` if any, private to its owner, then each of `files`: (source, size, name, mode).
fn write_binary_tar<W: Write>(
    out: W,
    secret: Option<&str>,
    files: &[(std::path::PathBuf, u64, String, u32)],
) -> io::Result<W> {
    let header = |size: u64, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        header
    };
    let mut builder = tar::Builder::new(out);
    if let Some(secret) = secret {
        builder.append_data(
            &mut header(secret.len() as u64, 0o600),
            "secret",
            secret.as_bytes(),
        )?;
    }
    for (source, size, name, mode) in files {
        let mut file = std::fs::File::open(source)?;
        builder.append_data(&mut header(*size, *mode), name, &mut file)?;
    }
    builder.into_inner()
}

/// The start of a script that takes a warm pod's `secret`, if any, as the first line of its
/// stdin: a shell's `read` takes it (it reads a pipe byte by byte, so what comes after it stays
/// whole), it is moved into place and the secret's waiter woken; the secret is never on a
/// command line.
fn take_secret(layout: &Layout, secret: Option<&Secret>) -> String {
    if secret.is_none() {
        return String::new();
    }
    let path = quote(&layout.secret);
    let incoming = quote(&format!("{}.incoming", layout.secret));
    let wake = layout
        .secret_waiter
        .as_deref()
        .map_or_else(String::new, |waiter| {
            format!("kill $(cat {} 2>/dev/null) 2>/dev/null; ", quote(waiter))
        });
    format!(
        "IFS= read -r secret; (umask 077; printf '%s\\n' \"$secret\" > {incoming}); \
         mv {incoming} {path}; unset secret; {wake}"
    )
}

/// How a pull of the inputs by content ended, when its command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    Done,
    /// The registry could not be reached from there; what the other side said. The secret,
    /// if any, is in place.
    Unreachable(String),
}

/// What the pull of the inputs by content is called in errors.
pub const PULL: &str = "the inputs by content";

/// What the other side pulls its workspace from.
pub struct PullFrom<'a> {
    /// `REGISTRY/REPOSITORY@sha256:…`.
    pub snapshot: &'a str,
    /// The registry's credentials, if it needs any.
    pub credentials: Option<&'a Credentials>,
    /// The pull's environment there (no credentials).
    pub env: &'a [(&'a str, &'a str)],
    /// Where the packs are kept there until they are applied.
    pub packs: &'a str,
    /// The index of the seed the workspace holds there (a warm pod's): only the difference
    /// is pulled.
    pub onto: Option<&'a str>,
    /// Where to keep the pulled snapshot's index there (a seed's).
    pub keep_index: Option<&'a str>,
}

/// Builds the workspace on the other side from a snapshot, which its binary pulls from the
/// registry (see [`crate::snapshot::pull`]). A warm pod's `secret` goes first, as with
/// [`inputs`], then the registry's credentials: on stdin, so that they are never on a command
/// line, nor anywhere the task could read them.
pub async fn pull<R: RemoteCommand>(
    remote: &R,
    layout: &Layout,
    from: PullFrom<'_>,
    secret: Option<&Secret>,
    to: &Destination,
) -> Result<Pulled, UploadError<R::Error>> {
    let PullFrom {
        snapshot,
        credentials,
        env,
        packs,
        onto,
        keep_index,
    } = from;
    let mut options = String::new();
    if let Some(onto) = onto {
        options += &format!(" --onto {}", quote(onto));
    }
    if let Some(keep) = keep_index {
        options += &format!(" --keep-index {}", quote(keep));
    }
    if credentials.is_some() {
        options += " --credentials-stdin";
    }
    let exports: String = env
        .iter()
        .map(|(name, value)| format!("export {name}={}; ", quote(value)))
        .collect();
    let script = format!(
        "{}{}{exports}exec {binary} inputs-pull --snapshot {snapshot} --packs {packs} --to {workspace}{options}",
        wait_for_binary(layout),
        take_secret(layout, secret),
        binary = quote(&layout.binary),
        snapshot = quote(snapshot),
        packs = quote(packs),
        workspace = quote(&layout.workspace),
    );
    let mut lines = String::new();
    if let Some(secret) = secret {
        lines += &format!("{}\n", secret.to_hex());
    }
    if let Some(credentials) = credentials {
        let json = serde_json::to_string(credentials).expect("credentials serialize");
        lines += &format!("{json}\n");
    }
    let pulled = remote
        .run(script, move |mut stdin| {
            stdin.write_all(lines.as_bytes())?;
            Ok(stdin)
        })
        .await;
    pulled_as::<R>(pulled, PULL, to)
}

/// How a command that builds the workspace by content ended: [`Pulled::Unreachable`] when it
/// said so by its exit status (it left the workspace empty), what it said as the reason.
fn pulled_as<R: RemoteCommand>(
    ran: Result<Vec<u8>, R::Error>,
    what: &'static str,
    to: &Destination,
) -> Result<Pulled, UploadError<R::Error>> {
    match ran {
        Ok(_) => Ok(Pulled::Done),
        Err(e) if R::exit_code(&e) == Some(i32::from(PULL_UNREACHABLE)) => {
            let said = R::said(&e).map(|said| said.trim().to_string());
            Ok(Pulled::Unreachable(said.unwrap_or_else(|| e.to_string())))
        }
        Err(source) => Err(UploadError::Failed {
            what,
            to: to.clone(),
            source,
        }),
    }
}

/// What the difference onto a seed is called in errors.
pub const ONTO_SEED: &str = "the difference onto the seed";

/// A difference from the seed a workspace holds, as it travels ([`onto_seed`]): the
/// [`crate::snapshot::delta::Delta`]'s bytes and the packs of the contents it writes.
pub type Difference = (Vec<u8>, super::by_content::MadePacks);

/// Where a difference from a seed goes on the other side ([`onto_seed`]).
pub struct SeedDifference<'a> {
    /// Where it is unpacked there, then removed.
    pub dir: &'a str,
    /// The index of the seed the workspace holds there.
    pub seed_index: &'a str,
}

/// Brings the workspace on the other side, which holds a seed, to the run's tree: the
/// difference and the packs of what it writes, in one tar stream into `dir` there, which the
/// binary applies onto the seed ([`crate::snapshot::delta`]) and then removes. A warm pod's
/// `secret` goes first, as with [`inputs`].
///
/// The command starts, and the secret goes, before the difference is made: the feeding thread
/// waits for it on `difference`, so that the session's set-up runs alongside the scan. A
/// sender dropped instead sends nothing, and nothing is applied: `None` once the command has
/// ended (the secret, if any, is in place; the workspace holds its seed). Otherwise
/// [`Pulled::Unreachable`] when the seed there is not the one the difference was made against:
/// the workspace is then empty.
pub async fn onto_seed<R: RemoteCommand>(
    remote: &R,
    layout: &Layout,
    to_seed: SeedDifference<'_>,
    difference: std::sync::mpsc::Receiver<Difference>,
    secret: Option<&Secret>,
    to: &Destination,
) -> Result<Option<Pulled>, UploadError<R::Error>> {
    let SeedDifference { dir, seed_index } = to_seed;
    let delta_file = format!("{dir}/{}", crate::snapshot::delta::DELTA_FILE);
    // A stream that ends before the difference came (an empty one) leaves no difference file:
    // the apply, which would empty the workspace for want of one, does not start.
    let script = format!(
        "{}{}umask 077; rm -rf {dir}; mkdir -p {dir} && tar -xf - -C {dir} && [ -f {delta_file} ] && \
         {binary} inputs-apply --snapshot {dir} --onto {seed_index} --to {workspace}; \
         status=$?; rm -rf {dir}; exit $status",
        wait_for_binary(layout),
        take_secret(layout, secret),
        dir = quote(dir),
        delta_file = quote(&delta_file),
        binary = quote(&layout.binary),
        seed_index = quote(seed_index),
        workspace = quote(&layout.workspace),
    );
    let secret_line = secret.map(|secret| format!("{}\n", secret.to_hex()));
    let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeding_cancelled = cancelled.clone();
    let sent = remote
        .run(script, move |mut stdin| {
            if let Some(line) = &secret_line {
                stdin.write_all(line.as_bytes())?;
                stdin.flush()?;
            }
            let Ok((delta, packs)) = difference.recv() else {
                feeding_cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(io::Error::other("no difference to send"));
            };
            let stream = (crate::snapshot::delta::DELTA_FILE, &delta[..]);
            super::by_content::write_stream(stdin, stream, &packs)
        })
        .await;
    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
        return match sent {
            // The command ran, and stopped for want of a difference.
            Err(e) if R::exit_code(&e).is_none() => Err(UploadError::Failed {
                what: ONTO_SEED,
                to: to.clone(),
                source: e,
            }),
            _ => Ok(None),
        };
    }
    pulled_as::<R>(sent, ONTO_SEED, to).map(Some)
}

/// Streams the inputs as a `.tar.s2` archive into `buildr archive extract` on the other side.
/// Its session opens alongside the binary's copy, to save a round trip: there it waits for the
/// checked binary to be moved into place and then becomes that extractor, so the inputs are
/// read by nothing else. Until then what is sent waits in the session's buffers.
///
/// When the binary is there already (a warm pod's), the run's `secret` goes first in this same
/// stream ([`take_secret`]), moved into place before the extractor starts: one session in all.
///
/// Returns the digest of the tree sent ([`crate::archive::Summary::tree`]); `to` is named in
/// its errors.
pub async fn inputs<R: RemoteCommand>(
    remote: &R,
    layout: &Layout,
    inputs: &[InputFile],
    secret: Option<&Secret>,
    to: &Destination,
) -> Result<Option<[u8; 32]>, UploadError<R::Error>> {
    let (binary, workspace) = (quote(&layout.binary), quote(&layout.workspace));
    let take_secret = take_secret(layout, secret);
    // The task's world is its own: its links go in as they are (none is written through), and
    // the caps on what a task sends back do not bound the user's own inputs.
    let script = format!(
        "{}{take_secret}\
         exec {binary} archive extract - --to {workspace} --links allow \
           --max-output-bytes {max_bytes} --max-output-entries {max_entries}",
        wait_for_binary(layout),
        max_bytes = Limits::NONE.max_bytes,
        max_entries = Limits::NONE.max_entries,
    );
    let inputs = inputs.to_vec();
    let secret = secret.map(|secret| format!("{}\n", secret.to_hex()));
    // The digest of the tree the stream carried, out of the thread that wrote it.
    let sent = std::sync::Arc::new(std::sync::OnceLock::new());
    let sent_by_writer = std::sync::Arc::clone(&sent);
    remote
        .run(script, move |mut stdin| {
            if let Some(secret) = secret {
                stdin.write_all(secret.as_bytes())?;
            }
            let counted = crate::progress::Counted::new(stdin, crate::progress::stream("inputs"));
            let (counted, summary) =
                super::inputs::write_inputs(&inputs, counted).map_err(io::Error::other)?;
            let stdin = counted.into_inner();
            if let Some(tree) = summary.tree {
                let _ = sent_by_writer.set(tree);
            }
            Ok(stdin)
        })
        .await
        .map_err(|source| UploadError::Failed {
            what: INPUTS,
            to: to.clone(),
            source,
        })?;
    Ok(sent.get().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_tar_holds_the_secret_the_executable_and_the_tools() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("bin");
        std::fs::write(&source, b"\x7fELF and the rest").unwrap();
        let files = [
            (source.clone(), 17, "buildr".to_string(), 0o700),
            (source, 17, "tools/jq".to_string(), 0o755),
        ];
        let tar = write_binary_tar(Vec::new(), Some("abc\n"), &files).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    e.size(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("secret".to_string(), 0o600, 4),
                ("buildr".to_string(), 0o700, 17),
                ("tools/jq".to_string(), 0o755, 17)
            ]
        );
    }

    /// A layout under `root`, whose "binary" is a script that records its arguments and the
    /// difference it was given in `root/applied`.
    fn recording_layout(root: &std::path::Path) -> Layout {
        use std::os::unix::fs::PermissionsExt;
        let binary = root.join("buildr");
        // `$3` is the directory the difference was unpacked into.
        let record = format!(
            "#!/bin/sh\necho \"$@\" > '{0}/applied'; cat \"$3/delta\" >> '{0}/applied'\n",
            root.display()
        );
        std::fs::write(&binary, record).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(root.join("workspace")).unwrap();
        std::fs::write(root.join("workspace/seed.txt"), "the seed\n").unwrap();
        let at = |name: &str| root.join(name).display().to_string();
        Layout {
            binary: at("buildr"),
            tools: at("tools"),
            secret: at("secret"),
            workspace: at("workspace"),
            incoming: at("incoming"),
            secret_waiter: None,
        }
    }

    async fn onto_recording_seed(
        root: &std::path::Path,
        difference: std::sync::mpsc::Receiver<Difference>,
        secret: &Secret,
    ) -> Option<Pulled> {
        let (dir, seed_index) = (root.join("difference"), root.join("seed-index"));
        let to_seed = SeedDifference {
            dir: dir.to_str().unwrap(),
            seed_index: seed_index.to_str().unwrap(),
        };
        let layout = recording_layout(root);
        let to = Destination::Host("here".to_string());
        let shell = crate::backend::local::Shell;
        onto_seed(&shell, &layout, to_seed, difference, Some(secret), &to)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_seeds_session_that_is_sent_no_difference_applies_nothing_and_takes_the_secret() {
        let root = tempfile::tempdir().unwrap();
        let secret = Secret::generate().unwrap();
        let (sender, difference) = std::sync::mpsc::sync_channel(1);
        let cancel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(sender);
        });
        let ended = onto_recording_seed(root.path(), difference, &secret).await;
        cancel.join().unwrap();
        assert_eq!(ended, None);
        let taken = std::fs::read_to_string(root.path().join("secret")).unwrap();
        assert_eq!(taken, format!("{}\n", secret.to_hex()));
        assert!(!root.path().join("applied").exists(), "the apply ran");
        let seed = std::fs::read_to_string(root.path().join("workspace/seed.txt")).unwrap();
        assert_eq!(seed, "the seed\n");
        assert!(!root.path().join("difference").exists());
    }

    #[tokio::test]
    async fn a_difference_sent_after_the_session_opened_reaches_the_apply() {
        let root = tempfile::tempdir().unwrap();
        let secret = Secret::generate().unwrap();
        let (sender, difference) = std::sync::mpsc::sync_channel(1);
        let secret_file = root.path().join("secret");
        let send = std::thread::spawn(move || {
            // The secret is in place before the difference is made.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !secret_file.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(secret_file.exists(), "the secret waited for the difference");
            let (_, packs) = super::super::by_content::make_packs(&[], &[], Vec::new()).unwrap();
            sender.send((b"the delta".to_vec(), packs)).unwrap();
        });
        let ended = onto_recording_seed(root.path(), difference, &secret).await;
        send.join().unwrap();
        assert_eq!(ended, Some(Pulled::Done));
        let applied = std::fs::read_to_string(root.path().join("applied")).unwrap();
        let dir = root.path().join("difference");
        let expected = format!(
            "inputs-apply --snapshot {} --onto {} --to {}\nthe delta",
            dir.display(),
            root.path().join("seed-index").display(),
            root.path().join("workspace").display()
        );
        assert_eq!(applied, expected);
        // The difference was unpacked for the apply, then removed.
        assert!(!dir.exists());
    }
}
