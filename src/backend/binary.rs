//! The executor binary that travels to every remote backend (a pod, an ssh host): what architecture it needs (read by
//! [`crate::elf`]), whether it brings its own C library, and its digest for the check after
//! the copy.

use std::path::{Path, PathBuf};

/// What is known of an executor binary before it is sent.
#[derive(Debug, Clone)]
pub struct ExecutorBinary {
    pub path: PathBuf,
    pub size: u64,
    /// Lower-hex SHA-256 of the file.
    pub sha256: String,
    /// `kubernetes.io/arch` of the machines it runs on.
    pub arch: String,
    /// The dynamic loader it needs (`None`: statically linked, runs in any Linux image).
    pub interpreter: Option<String>,
}

/// The file name of the lean build that runs send (`src/bin/buildr-executor.rs`).
pub const LEAN_EXECUTOR: &str = "buildr-executor";

/// What a run sends when not told otherwise: the lean `buildr-executor` beside this binary,
/// where `cargo dist` and `cargo install` put it, else this binary itself (which serves too).
pub fn default_executor() -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let lean = me.with_file_name(LEAN_EXECUTOR);
    Ok(if lean.is_file() { lean } else { me })
}

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("cannot read the executor binary {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the executor binary {} is not an ELF executable ({reason})", path.display())]
    NotElf { path: PathBuf, reason: String },
}

impl ExecutorBinary {
    /// A warning when the binary is dynamically linked, which runs only where a compatible C
    /// library is (`machines`: "in images", "on hosts").
    pub fn dynamic_warning(&self, machines: &str) -> Option<String> {
        let interpreter = self.interpreter.as_ref()?;
        Some(format!(
            "the executor binary {} is dynamically linked (it needs {interpreter}) and runs only \
             {machines} with a compatible glibc; `cargo dist` builds a static one (see \
             README, Install)",
            self.path.display()
        ))
    }

    pub fn inspect(path: &Path) -> Result<Self, BinaryError> {
        let read_error = |source| BinaryError::Read {
            path: path.to_path_buf(),
            source,
        };
        let data = std::fs::read(path).map_err(read_error)?;
        let not_elf = |reason: String| BinaryError::NotElf {
            path: path.to_path_buf(),
            reason,
        };
        let needs = crate::elf::needs(&data).map_err(not_elf)?;
        Ok(Self {
            path: path.to_path_buf(),
            size: data.len() as u64,
            // The bytes are in memory already: hashed here, not read a second time.
            sha256: crate::archive::sha256_hex(&data),
            arch: needs.arch,
            interpreter: needs.interpreter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_test_binary() {
        let me = std::env::current_exe().unwrap();
        let binary = ExecutorBinary::inspect(&me).unwrap();
        let expected = crate::backend::arch::host_arch();
        assert_eq!(binary.arch, expected);
        assert_eq!(binary.size, std::fs::metadata(&me).unwrap().len());
        assert_eq!(binary.sha256.len(), 64);
    }

    #[test]
    fn a_script_is_not_an_executor() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("buildr");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let error = ExecutorBinary::inspect(&script).unwrap_err();
        assert!(
            error.to_string().contains("is not an ELF executable"),
            "{error}"
        );
    }
}
