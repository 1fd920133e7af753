//! Signed entries for the shared cache. A writer (CI on a protected branch, say) holds an
//! Ed25519 signing key and signs every entry it pushes; a reader replays a pulled entry only
//! when a key it trusts signed it. Readers hold public keys only, so reading a cache never
//! gives the power to write one (unlike a shared HMAC secret).
//!
//! What is signed ([`message`]) is the cache key and each layer's media type, digest and size:
//! the layers' digests pin their bytes, and the key pins the entry to the one tag it answers,
//! so a signed entry copied under another key does not verify there.
//!
//! Files:
//! - a signing key (`buildr cache keygen FILE`, mode 0600): one line,
//!   `buildr-cache-signing-key-v1 <64 hex digits of the Ed25519 seed>`;
//! - trusted keys (`.buildr/cache-trust` in the repository, `BUILDR_CACHE_TRUST`): one public
//!   key per line as `keygen` prints it, `ed25519:<64 hex digits>`; `#` starts a comment.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};

use super::Key;

/// The manifest annotations an entry's signature travels in.
pub const SIGNATURE_ANNOTATION: &str = "dev.buildr.cache.signature";
pub const SIGNER_ANNOTATION: &str = "dev.buildr.cache.signer";

const SIGNING_KEY_TAG: &str = "buildr-cache-signing-key-v1";
const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// What a signed message starts with, so that a signature made for anything else never
/// verifies as an entry's.
const MESSAGE_TAG: &[u8] = b"buildr cache entry v1\n";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} exists already: keygen never overwrites a key (delete it first, or pick another file)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot draw random bytes for a key: {0}")]
    Random(String),
}

/// A private key that signs the entries this machine pushes.
pub struct SigningKey(ed25519_dalek::SigningKey);

/// A public key, written as `ed25519:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl PublicKey {
    fn parse(text: &str) -> Result<Self, String> {
        let digits = text.strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            format!("expected a public key `{PUBLIC_KEY_PREFIX}<64 hex digits>`, found `{text}`")
        })?;
        let bytes: [u8; 32] = hex::decode(digits)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!("`{text}` does not have 64 hex digits after `{PUBLIC_KEY_PREFIX}`")
            })?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| format!("`{text}` is not an Ed25519 public key"))
    }
}

/// Why a pulled entry is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    Unsigned,
    /// Signed by a key that is not in the trusted list (its text, as the registry gave it).
    UnknownSigner(String),
    /// Signed in the name of a trusted key, but the signature does not match the entry.
    BadSignature,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::Unsigned => f.write_str("it is not signed"),
            Untrusted::UnknownSigner(signer) => write!(
                f,
                "its signer `{}` is not a trusted key",
                crate::printable::Printable(signer)
            ),
            Untrusted::BadSignature => {
                f.write_str("its signature does not match its content (altered after signing)")
            }
        }
    }
}

impl SigningKey {
    /// Makes a new key and writes it to `path` (mode 0600), which must not exist yet.
    pub fn generate_into(path: &Path) -> Result<Self, SignError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
        let key = Self(ed25519_dalek::SigningKey::from_bytes(&seed));
        let write_err = |source: io::Error| match source.kind() {
            io::ErrorKind::AlreadyExists => SignError::Exists {
                path: path.to_path_buf(),
            },
            _ => SignError::Write {
                path: path.to_path_buf(),
                source,
            },
        };
        let mut file = fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        writeln!(file, "{SIGNING_KEY_TAG} {}", hex::encode(seed))
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        Ok(key)
    }

    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text = fs::read_to_string(path).map_err(|source| SignError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = || SignError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            reason: format!(
                "expected `{SIGNING_KEY_TAG} <64 hex digits>`, as `buildr cache keygen` writes"
            ),
        };
        let seed: [u8; 32] = text
            .trim()
            .strip_prefix(SIGNING_KEY_TAG)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|digits| hex::decode(digits).ok())
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(malformed)?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature of `message`, in hex.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }
}

/// The public keys whose entries this run replays.
#[derive(Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

/// Where a repository lists the keys it trusts.
pub const REPO_TRUST_FILE: &str = ".buildr/cache-trust";

impl TrustedKeys {
    /// The keys of `repo`'s `.buildr/cache-trust` (if it has one) and of `extra` (the file
    /// `BUILDR_CACHE_TRUST` names, which must exist).
    pub fn load(repo: &Path, extra: Option<&Path>) -> Result<Self, SignError> {
        let mut keys = Vec::new();
        let in_repo = repo.join(REPO_TRUST_FILE);
        match fs::read_to_string(&in_repo) {
            Ok(text) => keys.extend(parse_trust(&in_repo, &text)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SignError::Read {
                    path: in_repo,
                    source,
                });
            }
        }
        if let Some(path) = extra {
            let text = fs::read_to_string(path).map_err(|source| SignError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            keys.extend(parse_trust(path, &text)?);
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `signature` (hex) by `signer` (as [`PublicKey`] writes it) is a trusted key's
    /// signature of `message`.
    pub fn verify(
        &self,
        signer: Option<&str>,
        signature: Option<&str>,
        message: &[u8],
    ) -> Result<(), Untrusted> {
        let (Some(signer), Some(signature)) = (signer, signature) else {
            return Err(Untrusted::Unsigned);
        };
        let key = PublicKey::parse(signer)
            .ok()
            .filter(|key| self.keys.contains(key))
            .ok_or_else(|| Untrusted::UnknownSigner(signer.to_string()))?;
        let signature: [u8; 64] = hex::decode(signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(Untrusted::BadSignature)?;
        key.0
            .verify(message, &Signature::from_bytes(&signature))
            .map_err(|_| Untrusted::BadSignature)
    }
}

fn parse_trust(path: &Path, text: &str) -> Result<Vec<PublicKey>, SignError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        keys.push(
            PublicKey::parse(line).map_err(|reason| SignError::Malformed {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            })?,
        );
    }
    Ok(keys)
}

/// One layer of an entry, as its manifest describes it.
pub struct SignedLayer<'a> {
    pub media_type: &'a str,
    pub digest: &'a str,
    pub size: i64,
}

/// What an entry's signature covers: its cache key and every layer, in manifest order.
pub fn message(key: &Key, layers: &[SignedLayer<'_>]) -> Vec<u8> {
    let mut message = MESSAGE_TAG.to_vec();
    message.extend_from_slice(format!("key {key}\n").as_bytes());
    for layer in layers {
        message.extend_from_slice(
            format!(
                "layer {} {} {}\n",
                layer.media_type, layer.digest, layer.size
            )
            .as_bytes(),
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex_digit: char) -> Key {
        Key::from_hex(&hex_digit.to_string().repeat(64)).unwrap()
    }

    fn layers(digest: &str) -> Vec<SignedLayer<'_>> {
        vec![SignedLayer {
            media_type: "application/x",
            digest,
            size: 3,
        }]
    }

    #[test]
    fn a_trusted_signature_verifies_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let signer = SigningKey::generate_into(&dir.path().join("ci.key")).unwrap();
        let stranger = SigningKey::generate_into(&dir.path().join("pr.key")).unwrap();
        let trust_file = dir.path().join("trust");
        fs::write(
            &trust_file,
            format!(
                "# the CI of main\n{}  # rotated 2026-12\n\n",
                signer.public()
            ),
        )
        .unwrap();
        let trusted = TrustedKeys::load(dir.path(), Some(&trust_file)).unwrap();
        let signed = message(&key('a'), &layers("sha256:aa"));
        let signature = signer.sign(&signed);
        let me = signer.public().to_string();
        assert_eq!(trusted.verify(Some(&me), Some(&signature), &signed), Ok(()));
        // Another key, the entry changed, or moved to another key: refused.
        let theirs = stranger.public().to_string();
        let forged = stranger.sign(&signed);
        assert_eq!(
            trusted.verify(Some(&theirs), Some(&forged), &signed),
            Err(Untrusted::UnknownSigner(theirs.clone()))
        );
        assert_eq!(
            trusted.verify(Some(&me), Some(&forged), &signed),
            Err(Untrusted::BadSignature)
        );
        let swapped = message(&key('a'), &layers("sha256:bb"));
        assert_eq!(
            trusted.verify(Some(&me), Some(&signature), &swapped),
            Err(Untrusted::BadSignature)
        );
        let moved = message(&key('b'), &layers("sha256:aa"));
        assert_eq!(
            trusted.verify(Some(&me), Some(&signature), &moved),
            Err(Untrusted::BadSignature)
        );
        assert_eq!(
            trusted.verify(None, None, &signed),
            Err(Untrusted::Unsigned)
        );
    }

    #[test]
    fn keygen_writes_a_private_file_once_and_load_reads_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let made = SigningKey::generate_into(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SigningKey::load(&path).unwrap().public(), made.public());
        assert!(matches!(
            SigningKey::generate_into(&path),
            Err(SignError::Exists { .. })
        ));
        assert_eq!(SigningKey::load(&path).unwrap().public(), made.public());
    }

    #[test]
    fn a_malformed_trust_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".buildr")).unwrap();
        fs::write(
            dir.path().join(REPO_TRUST_FILE),
            "# keys\n\nssh-ed25519 AAAA\n",
        )
        .unwrap();
        let error = TrustedKeys::load(dir.path(), None).unwrap_err().to_string();
        assert!(error.ends_with(".buildr/cache-trust:3: expected a public key `ed25519:<64 hex digits>`, found `ssh-ed25519 AAAA`"), "{error}");
    }
}
