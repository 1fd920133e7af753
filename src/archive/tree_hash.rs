//! The digest of a tree as a workspace holds it: each entry's name, kind, permission bits, and
//! content digest (files) or target (symlinks), fed in name order. Timestamps and owners are
//! left out. One encoding for both of its users: the cache key's digest of the inputs on disk
//! ([`crate::cache::tree`]) and the inputs archive's own pass over the bytes it sends
//! ([`super::Writer::hashing_tree`]), so that the two can be compared.

use sha2::{Digest, Sha256};

/// A tree's digest, fed one entry at a time.
#[derive(Clone, Default)]
pub struct TreeHasher {
    hasher: Sha256,
}

impl TreeHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A regular file whose content's SHA-256 is `content`.
    pub fn file(&mut self, name: &[u8], mode: u32, content: &[u8; 32]) {
        self.entry(b'f', name, mode);
        self.hasher.update(content);
    }

    pub fn dir(&mut self, name: &[u8], mode: u32) {
        self.entry(b'd', name, mode);
    }

    pub fn symlink(&mut self, name: &[u8], mode: u32, target: &[u8]) {
        self.entry(b'l', name, mode);
        self.field(target);
    }

    /// A FIFO, socket or device: an archive refuses it, but a digest still says it is there.
    pub fn other(&mut self, name: &[u8]) {
        self.hasher.update([b'o']);
        self.field(name);
    }

    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }

    fn entry(&mut self, kind: u8, name: &[u8], mode: u32) {
        self.hasher.update([kind]);
        self.field(name);
        self.hasher.update(mode.to_le_bytes());
    }

    /// A length-prefixed field, so that no two trees encode alike.
    fn field(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }
}
