//! The shared cache in an OCI registry, through the `oci-client` crate: each stored result is an
//! OCI artifact in one repository, tagged by its key, whose layers are the record (JSON), the
//! recorded output and the result archive (the last two left out when empty: registries refuse
//! empty layers). A pull lands in the disk store as any run's result does, so that what is
//! replayed has passed the store's own checks too; `oci-client` checks each layer's digest.
//!
//! Credentials are the registry's usual ones: `~/.docker/config.json` (or `$DOCKER_CONFIG`),
//! and the credential helpers it names, read by the `docker_credential` crate as `docker` and
//! `oras` read them; without any, access is anonymous. A registry on a loopback address
//! (`localhost`, `127.x.x.x`, `[::1]`) is spoken to over plain HTTP, as Docker does; every
//! other one over HTTPS.

use std::io::{Read, Write};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{CacheError, Entry, Key, Record, Store};

const RECORD_TYPE: &str = "application/vnd.buildr.cache.record.v1+json";
const OUTPUT_TYPE: &str = "application/vnd.buildr.cache.output.v1";
const ARCHIVE_TYPE: &str = "application/vnd.buildr.cache.archive.v1.tar+s2";
/// OCI 1.1's empty config, for artifacts that are not images.
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// How long a registry may take to accept a connection, or to send the next bytes: a registry
/// that is down costs a run this much at most, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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

    /// Fetches the result of `key` into `store`; false when the registry has none.
    pub async fn pull(&self, key: &Key, store: &Store) -> Result<bool, RegistryError> {
        let accepted = vec![RECORD_TYPE, OUTPUT_TYPE, ARCHIVE_TYPE];
        let image = match self
            .client
            .pull(&self.reference(key), &self.auth, accepted)
            .await
        {
            Ok(image) => image,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(self.oci_error("cannot pull from", e)),
        };
        let layer = |media_type: &str| {
            image
                .layers
                .iter()
                .find(|l| l.media_type == media_type)
                .map(|l| &l.data[..])
        };
        let record = layer(RECORD_TYPE).ok_or_else(|| RegistryError::NoRecord {
            location: self.location.clone(),
        })?;
        let record: Record =
            serde_json::from_slice(record).map_err(|source| RegistryError::BadRecord {
                location: self.location.clone(),
                source,
            })?;
        let spill = |data: &[u8]| -> Result<std::fs::File, CacheError> {
            let write_err = |source| CacheError::Write {
                dir: std::env::temp_dir(),
                source,
            };
            let mut file = tempfile::tempfile().map_err(write_err)?;
            file.write_all(data).map_err(write_err)?;
            std::io::Seek::rewind(&mut file).map_err(write_err)?;
            Ok(file)
        };
        // An empty output has no layer; an empty archive means no changed files.
        let mut output = spill(layer(OUTPUT_TYPE).unwrap_or_default())?;
        let mut archive = layer(ARCHIVE_TYPE).map(spill).transpose()?;
        store.put(key, &record, &mut output, archive.as_mut())?;
        Ok(true)
    }

    /// Pushes `entry`, stored under `key`, to the registry.
    pub async fn push(&self, key: &Key, entry: &Entry) -> Result<(), RegistryError> {
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
        self.client
            .push(&self.reference(key), &layers, config, &self.auth, None)
            .await
            .map_err(|e| self.oci_error("cannot push to", e))?;
        Ok(())
    }
}

/// A manifest the registry does not have (or a repository it has never seen).
fn is_not_found(error: &OciDistributionError) -> bool {
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

/// Whether `registry` (a host with an optional port) is this machine.
/// A client for `registry`: plain HTTP to a loopback one, HTTPS to any other.
fn client_for(registry: &str) -> Client {
    // reqwest is built without a crypto provider: use ring, as kube does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if is_loopback(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    })
}

/// How long an image's registry may take to name the image's digest for a key.
const IMAGE_DIGEST_TIMEOUT: Duration = Duration::from_secs(3);

/// `image` as a key should name it: pinned to the digest its registry gives for it now, so that
/// a tag moved to another image makes another key (`IMAGE@sha256:…`); as written when it is
/// pinned already, or when its registry cannot be asked within [`IMAGE_DIGEST_TIMEOUT`] (no
/// network, a registry that does not know it, refused credentials).
pub async fn pinned_image(image: &str) -> String {
    let Ok(reference) = image.parse::<Reference>() else {
        return image.to_string();
    };
    if reference.digest().is_some() {
        return image.to_string();
    }
    let Ok(auth) = credentials(reference.resolve_registry()) else {
        return image.to_string();
    };
    let client = client_for(reference.resolve_registry());
    let digest = client.fetch_manifest_digest(&reference, &auth);
    match tokio::time::timeout(IMAGE_DIGEST_TIMEOUT, digest).await {
        Ok(Ok(digest)) => format!("{image}@{digest}"),
        _ => image.to_string(),
    }
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
fn credentials(registry: &str) -> Result<RegistryAuth, RegistryError> {
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
