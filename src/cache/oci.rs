//! The shared cache in an OCI registry, through the `oci-client` crate: each stored result is an
//! OCI artifact in one repository, tagged by its key, whose layers are the record (JSON), the
//! recorded output and the result archive (the last two left out when empty: registries refuse
//! empty layers). Every entry is signed ([`super::sign`]): a pull reads the manifest first and
//! downloads nothing of an entry that no trusted key signed or that is larger than a run may
//! bring back; the layers then stream into temporary files, each checked against its
//! announced size and digest.
//!
//! Credentials are the registry's usual ones: `~/.docker/config.json` (or `$DOCKER_CONFIG`),
//! and the credential helpers it names, read by the `docker_credential` crate as `docker` and
//! `oras` read them; without any, access is anonymous. A registry on a loopback address
//! (`localhost`, `127.x.x.x`, `[::1]`) is spoken to over plain HTTP, as Docker does; every
//! other one over HTTPS.

use std::io::Read;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::sign::{
    self, SIGNATURE_ANNOTATION, SIGNER_ANNOTATION, SignedLayer, SigningKey, TrustedKeys,
};
use super::{CacheError, Entry, Key, Record};
use crate::printable::Printable;

const RECORD_TYPE: &str = "application/vnd.buildr.cache.record.v1+json";
const OUTPUT_TYPE: &str = "application/vnd.buildr.cache.output.v1";
const ARCHIVE_TYPE: &str = "application/vnd.buildr.cache.archive.v1.tar+s2";
/// OCI 1.1's empty config, for artifacts that are not images.
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";

// A registry that is down or stalls costs a run these at most, not a hang.
/// How long a registry may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a registry may take to send the next bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the cache registry `{0}` is not REGISTRY/REPOSITORY (e.g. registry.example.com/team/buildr-cache)"
    )]
    BadLocation(String),
    #[error("cannot read the credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },
    #[error("{what} {location}: {source}")]
    Oci {
        what: &'static str,
        location: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("the cached result in {location} has no record layer")]
    NoRecord { location: String },
    #[error("the cached result in {location} has a damaged record: {source}")]
    BadRecord {
        location: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// One repository of a registry, with the credentials to use there.
pub struct Registry {
    client: Client,
    location: String,
    registry: String,
    repository: String,
    auth: RegistryAuth,
}

impl Registry {
    /// `location` is `REGISTRY/REPOSITORY`, e.g. `127.0.0.1:5000/buildr-cache`.
    pub fn new(location: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::BadLocation(location.to_string());
        let (registry, repository) = location.split_once('/').ok_or_else(bad)?;
        if registry.is_empty() || repository.is_empty() {
            return Err(bad());
        }
        // Checked as a reference (lowercase repository path, valid host) with a sample tag.
        Reference::try_from(format!("{location}:probe")).map_err(|_| bad())?;
        Ok(Self {
            client: client_for(registry),
            location: location.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            auth: credentials(registry)?,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn reference(&self, key: &Key) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            key.to_string(),
        )
    }

    fn oci_error(&self, what: &'static str, source: OciDistributionError) -> RegistryError {
        RegistryError::Oci {
            what,
            location: self.location.clone(),
            source,
        }
    }

    /// Looks for the result of `key`: its manifest first, whose signature must be a key in
    /// `trusted`'s and whose layers must fit `bounds`; only then are the layers downloaded,
    /// each into a temporary file, checked against its size and digest as it arrives.
    pub async fn pull(
        &self,
        key: &Key,
        trusted: &TrustedKeys,
        bounds: PullBounds,
    ) -> Result<Pulled, RegistryError> {
        let reference = self.reference(key);
        let manifest = match self
            .client
            .pull_image_manifest(&reference, &self.auth)
            .await
        {
            Ok((manifest, _digest)) => manifest,
            Err(e) if is_not_found(&e) => return Ok(Pulled::Missing),
            Err(e) => return Err(self.oci_error("cannot pull from", e)),
        };
        let annotation = |name| {
            manifest
                .annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .map(String::as_str)
        };
        let signed = sign::message(key, &signed_layers(&manifest.layers));
        if let Err(why) = trusted.verify(
            annotation(SIGNER_ANNOTATION),
            annotation(SIGNATURE_ANNOTATION),
            &signed,
        ) {
            return Ok(Pulled::Refused(format!("{why}")));
        }
        let layers = match Layers::of(&manifest.layers, bounds) {
            Ok(layers) => layers,
            Err(why) => return Ok(Pulled::Refused(why)),
        };
        let record = self.download(&reference, layers.record).await?;
        let record: Record =
            serde_json::from_reader(record).map_err(|source| RegistryError::BadRecord {
                location: self.location.clone(),
                source,
            })?;
        let output = match layers.output {
            Some(layer) => self.download(&reference, layer).await?,
            None => spill_empty()?,
        };
        let archive = match layers.archive {
            Some(layer) => Some(self.download(&reference, layer).await?),
            None => None,
        };
        Ok(Pulled::Entry(PulledEntry {
            record,
            output,
            archive,
            bytes: layers.bytes,
        }))
    }

    /// One layer into a temporary file, no longer than its descriptor says and with its
    /// digest (oci-client checks the digest at the end).
    async fn download(
        &self,
        reference: &Reference,
        layer: &OciDescriptor,
    ) -> Result<std::fs::File, RegistryError> {
        let write_err = |source| {
            RegistryError::Cache(CacheError::Write {
                dir: std::env::temp_dir(),
                source,
            })
        };
        let file = tempfile::tempfile().map_err(write_err)?;
        let size = u64::try_from(layer.size).unwrap_or(0);
        let mut capped = Capped::new(tokio::fs::File::from_std(file), size);
        self.client
            .pull_blob(reference, layer, &mut capped)
            .await
            .map_err(|e| self.oci_error("cannot pull from", e))?;
        let mut file = capped.into_inner().into_std().await;
        std::io::Seek::rewind(&mut file).map_err(write_err)?;
        Ok(file)
    }

    /// Pushes `entry`, stored under `key`, to the registry, signed by `signer`.
    pub async fn push(
        &self,
        key: &Key,
        entry: &Entry,
        signer: &SigningKey,
    ) -> Result<(), RegistryError> {
        let read_err = |source| {
            RegistryError::Cache(CacheError::Read {
                path: std::path::PathBuf::from(key.as_str()),
                source,
            })
        };
        let record = serde_json::to_vec(&entry.record).expect("a record always serializes");
        let mut layers = vec![ImageLayer::new(record, RECORD_TYPE.to_string(), None)];
        let mut output = Vec::new();
        entry
            .output()
            .and_then(|mut r| r.read_to_end(&mut output))
            .map_err(read_err)?;
        if !output.is_empty() {
            layers.push(ImageLayer::new(output, OUTPUT_TYPE.to_string(), None));
        }
        if let Some(mut archive) = entry.archive().map_err(read_err)? {
            let mut data = Vec::new();
            archive.read_to_end(&mut data).map_err(read_err)?;
            layers.push(ImageLayer::new(data, ARCHIVE_TYPE.to_string(), None));
        }
        let config = Config::new(b"{}".to_vec(), EMPTY_CONFIG_TYPE.to_string(), None);
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        let signature = signer.sign(&sign::message(key, &signed_layers(&manifest.layers)));
        manifest.annotations = Some(
            [
                (SIGNER_ANNOTATION.to_string(), signer.public().to_string()),
                (SIGNATURE_ANNOTATION.to_string(), signature),
            ]
            .into(),
        );
        self.client
            .push(
                &self.reference(key),
                &layers,
                config,
                &self.auth,
                Some(manifest),
            )
            .await
            .map_err(|e| self.oci_error("cannot push to", e))?;
        Ok(())
    }
}

/// How large a pulled entry may be, known before anything but its manifest is downloaded.
#[derive(Debug, Clone, Copy)]
pub struct PullBounds {
    /// Its recorded output and result archive together (`--max-output-bytes`).
    pub max_bytes: u64,
}

/// The most a record layer (a few fields and the deleted paths) may hold.
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// What a pull found.
pub enum Pulled {
    /// The registry has no entry for the key.
    Missing,
    /// It has one, not replayed: why (not signed by a trusted key, too large, not ours).
    Refused(String),
    Entry(PulledEntry),
}

/// A verified entry in temporary files, not yet in the disk store.
pub struct PulledEntry {
    pub record: Record,
    pub output: std::fs::File,
    pub archive: Option<std::fs::File>,
    /// The layers' total size.
    pub bytes: u64,
}

/// An entry's layers, by role, as its manifest describes them.
struct Layers<'a> {
    record: &'a OciDescriptor,
    output: Option<&'a OciDescriptor>,
    archive: Option<&'a OciDescriptor>,
    bytes: u64,
}

impl<'a> Layers<'a> {
    /// The layers of `manifest`, when they are one record and at most one output and one
    /// archive, within `bounds`; else why not.
    fn of(layers: &'a [OciDescriptor], bounds: PullBounds) -> Result<Self, String> {
        let (mut record, mut output, mut archive) = (None, None, None);
        let mut bytes: u64 = 0;
        for layer in layers {
            let slot = match layer.media_type.as_str() {
                RECORD_TYPE => &mut record,
                OUTPUT_TYPE => &mut output,
                ARCHIVE_TYPE => &mut archive,
                other => {
                    return Err(format!(
                        "it has a layer of type `{}`, which buildr never writes",
                        Printable(other)
                    ));
                }
            };
            if slot.replace(layer).is_some() {
                return Err(format!("it has two `{}` layers", layer.media_type));
            }
            let size = u64::try_from(layer.size)
                .map_err(|_| format!("it announces a layer of {} bytes", layer.size))?;
            bytes = bytes.saturating_add(size);
        }
        let record = record.ok_or("it has no record layer")?;
        let record_size = u64::try_from(record.size).unwrap_or(0);
        if record_size > MAX_RECORD_BYTES {
            return Err(format!(
                "its record announces {record_size} bytes, more than the {MAX_RECORD_BYTES} a record may have"
            ));
        }
        let results = bytes - record_size;
        if results > bounds.max_bytes {
            return Err(format!(
                "it announces {results} bytes of output and results, more than --max-output-bytes \
                 ({}) lets a run bring back",
                bounds.max_bytes
            ));
        }
        Ok(Self {
            record,
            output,
            archive,
            bytes,
        })
    }
}

/// The manifest's layers as an entry's signature covers them.
fn signed_layers(layers: &[OciDescriptor]) -> Vec<SignedLayer<'_>> {
    layers
        .iter()
        .map(|l| SignedLayer {
            media_type: &l.media_type,
            digest: &l.digest,
            size: l.size,
        })
        .collect()
}

/// An empty temporary file: the recorded output of a run that printed nothing has no layer.
fn spill_empty() -> Result<std::fs::File, RegistryError> {
    tempfile::tempfile().map_err(|source| {
        RegistryError::Cache(CacheError::Write {
            dir: std::env::temp_dir(),
            source,
        })
    })
}

/// A writer that fails once more than `left` bytes come: a registry that sends more than the
/// manifest announced is cut off there, not after it filled the disk.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W> Capped<W> {
    fn new(inner: W, cap: u64) -> Self {
        Self { inner, left: cap }
    }

    fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Capped<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the registry sent more bytes than the manifest announced",
            )));
        }
        let written = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.left -= written as u64;
        std::task::Poll::Ready(Ok(written))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A manifest the registry does not have (or a repository it has never seen).
pub(crate) fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        _ => false,
    }
}

/// A client for `registry`: plain HTTP to a loopback one or one listed in
/// `BUILDR_INSECURE_REGISTRIES` (`host:port`, comma-separated, as Docker's
/// `insecure-registries`), HTTPS to any other.
pub(crate) fn client_for(registry: &str) -> Client {
    // reqwest is built without a crypto provider: use ring, as kube does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if plain_http(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    };
    // The system's CA certificates: a process that may run on a system with none (the chart's
    // image, a pod's) is given the built-in ones first (`tls_roots::for_a_bare_system`), for
    // oci-client cannot make a client without any, not even for plain HTTP.
    Client::try_from(config).expect("a registry client can be made with the system's roots")
}

/// How long an image's registry may take to name the image's digest for a key.
const IMAGE_DIGEST_TIMEOUT: Duration = Duration::from_secs(3);

/// `image` pinned to the digest its registry gives for it now (`IMAGE@sha256:…`), as a key
/// names it and the pod then runs it, so that a tag moved to another image makes another key
/// and a node holding an older image under the tag does not run it; as written when it is
/// pinned already. `None` when its registry cannot be asked within [`IMAGE_DIGEST_TIMEOUT`]
/// (no network, a registry that does not know it, refused credentials).
pub async fn pinned_image(image: &str) -> Option<String> {
    let reference = image.parse::<Reference>().ok()?;
    if reference.digest().is_some() {
        return Some(image.to_string());
    }
    let auth = credentials(reference.resolve_registry()).ok()?;
    let client = client_for(reference.resolve_registry());
    let digest = client.fetch_manifest_digest(&reference, &auth);
    match tokio::time::timeout(IMAGE_DIGEST_TIMEOUT, digest).await {
        Ok(Ok(digest)) => Some(format!("{image}@{digest}")),
        _ => None,
    }
}

/// Whether `registry` (a host with an optional port) is this machine.
/// Whether `registry` is spoken to over plain HTTP: a loopback one, or one listed in
/// `BUILDR_INSECURE_REGISTRIES`.
pub(crate) fn plain_http(registry: &str) -> bool {
    let listed = std::env::var("BUILDR_INSECURE_REGISTRIES")
        .is_ok_and(|list| list.split(',').any(|insecure| insecure.trim() == registry));
    is_loopback(registry) || listed
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The credentials Docker would use for `registry`; anonymous when none are configured.
pub(crate) fn credentials(registry: &str) -> Result<RegistryAuth, RegistryError> {
    use docker_credential::{CredentialRetrievalError as Missing, DockerCredential};
    // Where Docker keeps its config; the crate reports a missing file as unreadable, which only
    // an existing file can be.
    let config_dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".docker"))
        });
    if !config_dir.is_some_and(|dir| dir.join("config.json").exists()) {
        return Ok(RegistryAuth::Anonymous);
    }
    match docker_credential::get_credential(registry) {
        Ok(DockerCredential::UsernamePassword(user, password)) => {
            Ok(RegistryAuth::Basic(user, password))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(Missing::ConfigNotFound | Missing::NoCredentialConfigured) => {
            Ok(RegistryAuth::Anonymous)
        }
        Err(e) => Err(RegistryError::Credentials {
            registry: registry.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for local in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in ["registry.example.com", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn a_location_needs_a_registry_and_a_repository() {
        for bad in ["buildr-cache", "/repo", "host:5000/", "host/UPPER"] {
            assert!(Registry::new(bad).is_err(), "{bad}");
        }
    }
}
