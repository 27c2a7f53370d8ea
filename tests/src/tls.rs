//! Test certificates: a private CA and a server certificate for 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ServerError;

/// Certificate files in a temporary folder, removed on drop.
pub struct TestCertificates {
    dir: tempfile::TempDir,
}

impl TestCertificates {
    /// Makes a CA and a server certificate for IP 127.0.0.1 signed by it,
    /// with the `openssl` command.
    ///
    /// # Errors
    /// When openssl is missing or fails.
    pub fn generate() -> Result<Self, ServerError> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let openssl = |args: &[&str]| -> Result<(), ServerError> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .map_err(|e| format!("openssl: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {}: {}",
                    args[0],
                    String::from_utf8_lossy(&output.stderr)
                )
                .into())
            }
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=lease-test-ca",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        std::fs::write(
            dir.path().join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(|e| format!("cannot write the extensions file: {e}"))?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ])?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server certificate file.
    pub fn cert(&self) -> String {
        self.path("server.crt").display().to_string()
    }

    /// The server key file.
    pub fn key(&self) -> String {
        self.path("server.key").display().to_string()
    }

    /// The CA certificate file.
    pub fn ca(&self) -> String {
        self.path("ca.crt").display().to_string()
    }

    /// The CA certificate, PEM, for clients to trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("ca.crt")).unwrap_or_default()
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
