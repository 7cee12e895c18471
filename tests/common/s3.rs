//! A real S3 API server on 127.0.0.1: moto in server mode (`moto_server`,
//! PyPI `moto[server]`), which keeps buckets in memory, accepts any
//! credentials and implements multipart uploads and listing like S3. It
//! stands in for AWS S3, MinIO or Ceph RGW.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use super::{free_port, http_get_status, kill_child, wait_until, STARTUP_DEADLINE};

/// The program the tests start.
pub const S3_SERVER: &str = "moto_server";

/// A running S3 API server. Dropping it stops it (and loses its buckets).
pub struct S3Server {
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> S3Server {
        let port = free_port();
        let child = Command::new(S3_SERVER)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let mut server = S3Server {
            port,
            child: Some(child),
        };
        let host_port = server.host_port();
        let up = wait_until(STARTUP_DEADLINE, || {
            http_get_status(&host_port, "/").is_some()
        });
        if !up {
            kill_child(&mut server.child);
            panic!("{S3_SERVER} did not answer on {host_port}");
        }
        server
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host_port())
    }

    /// Creates bucket `name`.
    pub async fn create_bucket(&self, name: &str) {
        let res = super::client()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(res.status().is_success(), "create bucket: {}", res.status());
    }

    /// The `storage:` section of a server configuration for `bucket`, as
    /// replica `replica`.
    pub fn storage_config(&self, bucket: &str, replica: &str) -> String {
        storage_config_via(&self.endpoint(), bucket, replica)
    }

    /// A client of `bucket`, to look at what the server stored.
    pub fn client(&self, bucket: &str) -> Arc<dyn object_store::ObjectStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test-secret")
            .with_allow_http(true)
            .build()
            .expect("S3 client");
        Arc::new(store)
    }

    /// Stops the server now (a bucket that fails mid-run).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// The `storage:` section for `bucket` reached at `endpoint` (this server,
/// or a proxy in front of it), as replica `replica`.
pub fn storage_config_via(endpoint: &str, bucket: &str, replica: &str) -> String {
    format!(
        "storage:\n  kind: s3\n  bucket: {bucket}\n  prefix: cache\n  endpoint: {endpoint}\n  region: us-east-1\n  pathStyle: true\n  accessKeyId: test\n  secretAccessKey: test-secret\n  replica: {replica}\n"
    )
}
