//! `storage` and `localCache`: where the cache is kept for good (the
//! cache directory, or a bucket shared by replicas), and how much of the
//! local directory holds copies of a bucket's blobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::{ClientOptions, ObjectStore, RetryConfig};
use ociregistry_actors::storage::{Backend, Bucket, Filesystem};
use serde::Deserialize;

use super::{secret, Config, ConfigError};
use crate::units::Size;

/// How long one bucket request may be retried before it fails (a bucket
/// that is down must not hold clients for minutes).
const BUCKET_RETRY: Duration = Duration::from_secs(5);

/// `storage.kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// The cache directory (`imagePath`).
    #[default]
    Filesystem,
    /// Amazon S3 or an S3-compatible store (MinIO, Ceph RGW, ...).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

/// `storage`.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageEntry {
    /// Which store.
    #[serde(default)]
    pub kind: StorageKind,
    /// Bucket (or Azure container) name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Key prefix of this cache inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint of an S3-compatible store (`http://minio:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style S3 URLs (`endpoint/bucket/key`), as most S3-compatible
    /// stores want; virtual-hosted style otherwise.
    #[serde(default)]
    pub path_style: bool,
    /// Access key id; unset: the provider's usual chain (environment,
    /// web identity, instance profile).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key, inline.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Name of an environment variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_from_env: Option<String>,
    /// File holding the secret access key (a mounted Secret).
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// A PEM CA bundle the store's certificate chains to (private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This replica's name among those sharing the bucket (its records
    /// and last-pulled times are written under it); default: the host name.
    #[serde(default)]
    pub replica: Option<String>,
}

impl std::fmt::Debug for StorageEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageEntry")
            .field("kind", &self.kind)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// `localCache`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalCacheEntry {
    /// Most bytes of blob copies kept in `imagePath` when the store is a
    /// bucket (unbounded when unset).
    #[serde(default)]
    pub max_size: Option<Size>,
}

impl Config {
    /// The store of record this configuration names, opened (a bucket is
    /// not contacted yet: Storage's first read is the check).
    pub fn backend(&self) -> Result<Arc<dyn Backend>, ConfigError> {
        let invalid = |reason: String| ConfigError::Value {
            path: "storage".into(),
            reason,
        };
        let s = &self.storage;
        if s.kind == StorageKind::Filesystem {
            let fs = Filesystem::open(&self.image_path).map_err(|e| ConfigError::Value {
                path: "imagePath".into(),
                reason: e.to_string(),
            })?;
            return Ok(Arc::new(fs));
        }
        let bucket = s
            .bucket
            .clone()
            .ok_or_else(|| invalid("storage.bucket is required for a bucket".into()))?;
        let store = s.object_store(&bucket).map_err(invalid)?;
        let replica = s.replica.clone().unwrap_or_else(host_name);
        Ok(Arc::new(Bucket::new(store, &s.prefix, &replica)))
    }
}

impl StorageEntry {
    /// The client of the store `kind` names, for `bucket`.
    fn object_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        // The bucket clients' TLS (rustls without a bundled provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = ClientOptions::new();
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("caFile {}: {e}", ca.display()))?;
            let cert = object_store::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
            options = options.with_root_certificate(cert);
        }
        let plain_http = self
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        options = options.with_allow_http(plain_http);
        let retry = RetryConfig {
            retry_timeout: BUCKET_RETRY,
            max_retries: 3,
            ..RetryConfig::default()
        };
        let secret = secret(
            "storage.secretAccessKey",
            &self.secret_access_key,
            &self.secret_access_key_from_env,
            &self.secret_access_key_file,
        )?;
        let store: Arc<dyn ObjectStore> = match self.kind {
            StorageKind::Filesystem => unreachable!("not a bucket"),
            StorageKind::S3 => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(!self.path_style)
                    .with_client_options(options)
                    .with_retry(retry);
                if let Some(endpoint) = &self.endpoint {
                    b = b.with_endpoint(endpoint);
                }
                if let Some(region) = &self.region {
                    b = b.with_region(region);
                }
                if let Some(id) = &self.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(secret) = secret {
                    b = b.with_secret_access_key(secret);
                }
                Arc::new(b.build().map_err(|e| e.to_string())?)
            }
            StorageKind::Gcs => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            StorageKind::Azure => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_client_options(options)
                    .with_retry(retry);
                if let Some(account) = &self.access_key_id {
                    b = b.with_account(account);
                }
                if let Some(key) = secret {
                    b = b.with_access_key(key);
                }
                Arc::new(b.build().map_err(|e| e.to_string())?)
            }
        };
        Ok(store)
    }
}

/// This host's name (a pod's name in Kubernetes).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ociregistry".into())
}
