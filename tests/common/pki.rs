//! Test certificates made with the `openssl` command: a CA, a server
//! certificate for 127.0.0.1, a client certificate (ECDSA, PKCS#8 key) for
//! mTLS, and a self-signed ECDSA key pair that signs bearer tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A directory of PEM files.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// Generates every file (a second or two).
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("ociregistry-pki-")
            .tempdir()
            .expect("pki dir");
        let pki = Pki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ociregistry test CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ]);
        pki.leaf(
            "server",
            "rsa:2048",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.ec_key("client-key.pem");
        pki.leaf("client", "", "extendedKeyUsage=clientAuth\n");
        pki.ec_key("signer-key.pem");
        pki.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "signer-key.pem",
            "-days",
            "2",
            "-subj",
            "/CN=token signer",
            "-out",
            "signer.pem",
        ]);
        pki
    }

    /// A certificate `<name>.pem` signed by the CA; a new key of `newkey`
    /// kind, or the existing `<name>-key.pem` when `newkey` is empty.
    fn leaf(&self, name: &str, newkey: &str, extensions: &str) {
        let (key, csr, cert, ext) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(self.path(&ext), extensions).expect("write extensions");
        let subject = format!("/CN={name}");
        let mut req = vec![
            "req",
            "-new",
            "-subj",
            subject.as_str(),
            "-out",
            csr.as_str(),
        ];
        if newkey.is_empty() {
            req.extend(["-key", key.as_str()]);
        } else {
            req.extend(["-newkey", newkey, "-nodes", "-keyout", key.as_str()]);
        }
        self.openssl(&req);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
    }

    /// A new P-256 key in PKCS#8 PEM.
    fn ec_key(&self, file: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            file,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        super::assert_success(&out, &format!("openssl {}", args.join(" ")));
    }

    /// The configuration of an HTTPS server holding the certificate for
    /// 127.0.0.1 and localhost.
    pub fn server_tls(&self) -> ociregistry_actors::upstream::ServerTlsConfig {
        ociregistry_actors::upstream::ServerTlsSettings {
            cert: self.path("server.pem"),
            key: self.path("server-key.pem"),
            client_ca: None,
        }
        .server_config()
        .expect("server TLS configuration")
        .0
    }

    /// A file of the PKI, e.g. `ca.pem`, `server-key.pem`, `client.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registry configuration lines serving HTTPS with the server certificate
    /// (for [`super::Upstream::secured`]); with client certificates required
    /// when `mtls` is set.
    pub fn registry_tls(&self, mtls: bool) -> String {
        let mut yaml = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            self.path("server.pem").display(),
            self.path("server-key.pem").display()
        );
        if mtls {
            yaml.push_str(&format!(
                "    clientcas:\n      - {}\n",
                self.path("ca.pem").display()
            ));
        }
        yaml
    }
}

/// Writes a bcrypt htpasswd file for `user`/`password` (with `htpasswd`)
/// into `dir` and returns its path.
pub fn htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd");
    super::assert_success(&out, "htpasswd");
    let path = dir.join("htpasswd");
    std::fs::write(&path, out.stdout).expect("write htpasswd");
    path
}
