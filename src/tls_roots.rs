//! CA certificates for a process that talks to a registry from a system with none: the chart's
//! image (`FROM scratch`, where the pool controller asks a seed's registry for its tag) and a
//! pod's BusyBox or distroless image (where `inputs-pull` fetches packs). oci-client makes a
//! default HTTP client beside the one it is configured with, and that one cannot be made
//! without system roots, not even for plain HTTP: the process panics. Such a process is given
//! Mozilla's roots, built into this binary, as its `SSL_CERT_FILE`, the file the system's store
//! is read from. A system with its own roots keeps them (a company's CA).

use std::io::Write;
use std::os::fd::IntoRawFd;

/// Names the built-in roots in `SSL_CERT_FILE` when the system's store has none (neither its
/// own nor the ones `SSL_CERT_FILE` and `SSL_CERT_DIR` name). They are held in
/// memory (a memfd named through `/proc/self/fd`), so that no file system needs to be
/// writable: the chart's controller has a read-only one.
///
/// Sets an environment variable: call it while the process has one thread.
pub fn for_a_bare_system() {
    // Read as the client reads them: `SSL_CERT_FILE` too, which may name a file the image lacks.
    if !rustls_native_certs::load_native_certs().certs.is_empty() {
        return;
    }
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let held = memfd_create("buildr-ca-roots", MFdFlags::MFD_CLOEXEC)
        .map_err(std::io::Error::from)
        .map(std::fs::File::from)
        .and_then(|mut file| {
            file.write_all(pem().as_bytes())?;
            Ok(file)
        });
    match held {
        Ok(file) => {
            // Open for as long as the process runs: every client made reads it again.
            let fd = file.into_raw_fd();
            // SAFETY: called before the runtime starts, while this is the process's only
            // thread: nothing reads the environment concurrently.
            unsafe { std::env::set_var("SSL_CERT_FILE", format!("/proc/self/fd/{fd}")) };
        }
        Err(e) => tracing::debug!("cannot hold the built-in CA roots in memory: {e}"),
    }
}

/// The built-in roots, PEM-encoded.
fn pem() -> String {
    use base64::Engine;
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|cert| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            let lines: Vec<&str> = encoded
                .as_bytes()
                .chunks(64)
                .map(|line| std::str::from_utf8(line).unwrap_or_default())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// What a bare system is given is what the system's store reads: every built-in root.
    #[test]
    fn the_built_in_roots_read_as_a_certificate_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), super::pem()).unwrap();
        let read = rustls_native_certs::load_certs_from_paths(Some(file.path()), None);
        assert!(read.errors.is_empty(), "{:?}", read.errors);
        assert_eq!(
            read.certs.len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
        );
    }
}
