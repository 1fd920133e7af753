//! One repository of an OCI registry, as snapshots use it: blobs sent unless present, a
//! snapshot's index found by tag or digest, blobs read back checked against their size and
//! digest.

use futures::StreamExt;
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::index::{BadIndex, Index, PackRef};
use crate::cache::oci::{
    RegistryError, client_for, credentials as docker_credentials, is_not_found,
};

/// The media type of a snapshot's index.
pub const INDEX_TYPE: &str = "application/vnd.buildr.inputs.index.v2";
/// How much of a blob each upload request carries: the registry takes a blob in chunks, one
/// request each, so small chunks (a reader's default 4 KiB) make a pack thousands of requests.
const UPLOAD_CHUNK: usize = 8 << 20;
/// The most an index may weigh when read back (100,000 entries take about 20 MB).
const MAX_INDEX: u64 = 256 << 20;
/// The most a blob's buffer is sized for before it arrives.
const PRESIZED: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(
        "the inputs registry `{0}` is not REGISTRY/REPOSITORY (e.g. registry.example.com/team/inputs)"
    )]
    BadLocation(String),
    #[error("`{0}` is not a valid tag or digest (a tag: letters, digits, `_`, `.`, `-`)")]
    BadTag(String),
    /// Credentials that cannot be read, or a request that failed (as the cache's registry
    /// says them).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the snapshot {0} has no index")]
    NoIndex(String),
    #[error("the snapshot {snapshot} has a damaged index: {reason}")]
    BadIndex { snapshot: String, reason: String },
    #[error("the blob {digest} from {location} is not what its digest says")]
    Tampered { location: String, digest: String },
}

/// Credentials for a registry, as they travel to a pod's pull: one line of JSON on its stdin,
/// never on a command line nor in an object the task could read.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl Credentials {
    /// Those Docker would use for the registry of `location`; none when access is anonymous.
    pub fn of(location: &str) -> Result<Option<Self>, RepositoryError> {
        let registry = location
            .split_once('/')
            .map_or(location, |(registry, _)| registry);
        Ok(match docker_credentials(registry)? {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic(username, password) => Some(Self::Basic { username, password }),
            RegistryAuth::Bearer(token) => Some(Self::Bearer { token }),
        })
    }
}

impl From<Credentials> for RegistryAuth {
    fn from(credentials: Credentials) -> Self {
        match credentials {
            Credentials::Basic { username, password } => Self::Basic(username, password),
            Credentials::Bearer { token } => Self::Bearer(token),
        }
    }
}

/// `REGISTRY/REPOSITORY`, with a client and the user's credentials for it.
pub struct Repository {
    client: Client,
    auth: RegistryAuth,
    location: String,
    registry: String,
    repository: String,
}

impl Repository {
    /// `location`, with the credentials Docker would use for its registry.
    pub async fn open(location: &str) -> Result<Self, RepositoryError> {
        Self::open_as(location, None).await
    }

    /// `location`, with `credentials` (when given) instead of Docker's.
    pub async fn open_as(
        location: &str,
        credentials: Option<Credentials>,
    ) -> Result<Self, RepositoryError> {
        let bad = || RepositoryError::BadLocation(location.to_string());
        let (registry, repository) = location.split_once('/').ok_or_else(bad)?;
        if registry.is_empty() || repository.is_empty() {
            return Err(bad());
        }
        Reference::try_from(format!("{location}:probe")).map_err(|_| bad())?;
        let client = client_for(registry);
        let auth = match credentials {
            Some(given) => given.into(),
            None => docker_credentials(registry)?,
        };
        client.store_auth_if_needed(registry, &auth).await;
        Ok(Self {
            client,
            auth,
            location: location.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// `tag` (or `sha256:…`) in this repository, checked.
    pub fn reference(&self, tag: &str) -> Result<Reference, RepositoryError> {
        let separator = if tag.starts_with("sha256:") { '@' } else { ':' };
        Reference::try_from(format!("{}{separator}{tag}", self.location))
            .map_err(|_| RepositoryError::BadTag(tag.to_string()))
    }

    fn any(&self) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            "probe".into(),
        )
    }

    pub(super) fn error(
        &self,
        what: &'static str,
    ) -> impl FnOnce(OciDistributionError) -> RepositoryError {
        let location = self.location.clone();
        move |source| {
            RepositoryError::Registry(RegistryError::Oci {
                what,
                location,
                source,
            })
        }
    }

    /// Whether the registry has the blob `digest`.
    async fn has(&self, digest: &str) -> Result<bool, RepositoryError> {
        self.client
            .blob_exists(&self.any(), digest)
            .await
            .map_err(self.error("cannot ask"))
    }

    /// Sends `bytes` as the blob `digest` unless the registry has it; says whether it sent.
    pub async fn put_missing(&self, digest: &str, bytes: Vec<u8>) -> Result<bool, RepositoryError> {
        if self.has(digest).await? {
            return Ok(false);
        }
        self.client
            .push_blob(&self.any(), bytes, digest)
            .await
            .map_err(self.error("cannot push to"))?;
        Ok(true)
    }

    /// Sends `file` (`size` bytes, from its start) as the blob `digest` unless the registry has
    /// it, streamed; says whether it sent.
    pub async fn put_missing_file(
        &self,
        digest: &str,
        file: std::fs::File,
        size: u64,
    ) -> Result<bool, RepositoryError> {
        if self.has(digest).await? {
            return Ok(false);
        }
        let mut file = tokio::fs::File::from_std(file);
        tokio::io::AsyncSeekExt::rewind(&mut file)
            .await
            .map_err(|e| self.error("cannot push to")(OciDistributionError::IoError(e)))?;
        // A buffer of the blob's size (most packs are 1 to 4 MiB, and a few are sent at once),
        // and one byte more, in which the end of the file is found without a buffer more.
        let chunk = usize::try_from(size.saturating_add(1))
            .map_or(UPLOAD_CHUNK, |size| size.min(UPLOAD_CHUNK));
        let stream = tokio_util::io::ReaderStream::with_capacity(file, chunk)
            .map(|chunk| chunk.map_err(OciDistributionError::IoError));
        self.client
            .push_blob_stream(&self.any(), stream, digest, Some(size))
            .await
            .map_err(self.error("cannot push to"))?;
        Ok(true)
    }

    /// Stores `manifest` (its bytes) under `tag`.
    pub async fn put_manifest(
        &self,
        tag: &str,
        manifest: Vec<u8>,
        media_type: &str,
    ) -> Result<(), RepositoryError> {
        self.client
            .push_manifest_raw(
                &self.reference(tag)?,
                manifest,
                media_type.parse().expect("a valid content type"),
            )
            .await
            .map_err(self.error("cannot push to"))?;
        Ok(())
    }

    /// The blob `digest`, no larger than `size`, checked against its digest.
    pub async fn blob(&self, digest: &str, size: u64) -> Result<Vec<u8>, RepositoryError> {
        // Sized as the manifest says (within reason: it is not trusted), so that a 9 MB index
        // is not held twice while its buffer grows.
        let mut bytes = Vec::with_capacity(usize::try_from(size.min(PRESIZED)).unwrap_or(0));
        self.read_blob(digest, size, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(bytes)
    }

    /// The blob `digest`, no larger than `size`, written to `file` as it arrives (a pack is
    /// never held in memory) and checked against its digest.
    pub async fn blob_to_file(
        &self,
        digest: &str,
        size: u64,
        file: &std::path::Path,
    ) -> Result<(), RepositoryError> {
        use std::io::Write;
        let mut out = std::fs::File::create(file)
            .map(std::io::BufWriter::new)
            .map_err(|e| self.error("cannot pull from")(OciDistributionError::IoError(e)))?;
        self.read_blob(digest, size, |chunk| out.write_all(chunk))
            .await?;
        out.flush()
            .map_err(|e| self.error("cannot pull from")(OciDistributionError::IoError(e)))
    }

    /// Streams the blob `digest` into `sink`, refused past `size` bytes or when its bytes are
    /// not what its digest says.
    async fn read_blob(
        &self,
        digest: &str,
        size: u64,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), RepositoryError> {
        let failed = |e| self.error("cannot pull from")(OciDistributionError::IoError(e));
        let stream = self
            .client
            .pull_blob_stream(&self.any(), digest)
            .await
            .map_err(self.error("cannot pull from"))?;
        let mut stream = stream.stream;
        let mut read = 0u64;
        while let Some(chunk) = stream.next().await {
            // The client hashes the blob as it streams and says at the stream's end whether it
            // was what its digest says (nothing of it is applied before that). It is not hashed
            // a second time here: each content is checked against its own digest as it is
            // applied too, and a third pass over every byte only cost a pull its CPU.
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if e.get_ref().is_some_and(|inner| inner.is::<DigestError>()) => {
                    return Err(self.tampered(digest));
                }
                Err(e) => return Err(failed(e)),
            };
            read += chunk.len() as u64;
            if read > size {
                return Err(self.tampered(digest));
            }
            sink(&chunk).map_err(failed)?;
        }
        Ok(())
    }

    fn tampered(&self, digest: &str) -> RepositoryError {
        RepositoryError::Tampered {
            location: self.location.clone(),
            digest: digest.to_string(),
        }
    }

    /// The digest of the manifest `tag` names now; `None` when there is no such tag.
    pub async fn digest(&self, tag: &str) -> Result<Option<String>, RepositoryError> {
        let reference = self.reference(tag)?;
        match self
            .client
            .fetch_manifest_digest(&reference, &self.auth)
            .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error("cannot ask")(e)),
        }
    }

    /// The index of the snapshot `tag` (or `sha256:…`), and its manifest's digest; `None`
    /// when the repository has no such snapshot.
    pub async fn index(&self, tag: &str) -> Result<Option<(Index, String)>, RepositoryError> {
        self.read_index(tag, Index::from_bytes).await
    }

    /// The packs of the snapshot `tag`, as [`Self::index`] reads it, without its entries.
    pub async fn packs(&self, tag: &str) -> Result<Option<Vec<PackRef>>, RepositoryError> {
        let read = self.read_index(tag, Index::packs_from_bytes).await?;
        Ok(read.map(|(packs, _)| packs))
    }

    /// What `decode` reads of the index of the snapshot `tag`, and its manifest's digest.
    async fn read_index<T>(
        &self,
        tag: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, BadIndex>,
    ) -> Result<Option<(T, String)>, RepositoryError> {
        let Some((bytes, digest)) = self.index_bytes(tag).await? else {
            return Ok(None);
        };
        let read = decode(&bytes).map_err(|e| RepositoryError::BadIndex {
            snapshot: format!("{}@{digest}", self.location),
            reason: e.to_string(),
        })?;
        Ok(Some((read, digest)))
    }

    /// The bytes of the index of the snapshot `tag` (or `sha256:…`), checked against their
    /// digest, and its manifest's digest; `None` when the repository has no such snapshot.
    pub async fn index_bytes(
        &self,
        tag: &str,
    ) -> Result<Option<(Vec<u8>, String)>, RepositoryError> {
        let reference = self.reference(tag)?;
        let (manifest, digest): (OciImageManifest, String) = match self
            .client
            .pull_image_manifest(&reference, &self.auth)
            .await
        {
            Ok(found) => found,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.error("cannot pull from")(e)),
        };
        let layer = manifest
            .layers
            .iter()
            .find(|layer| layer.media_type == INDEX_TYPE)
            .ok_or_else(|| RepositoryError::NoIndex(format!("{}@{digest}", self.location)))?;
        let size = u64::try_from(layer.size).unwrap_or(0).min(MAX_INDEX);
        let bytes = self.blob(&layer.digest, size).await?;
        Ok(Some((bytes, digest)))
    }
}
