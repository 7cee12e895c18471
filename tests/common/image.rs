//! Deterministic test images: OCI and Docker schema 2, single- and
//! multi-platform.
//!
//! Every layer is a valid gzip'd tar holding one file of pseudo-random bytes,
//! so containerd can unpack the images.

use serde_json::{json, Value};

use super::{digest_of, Rng};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip'd layer media type.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip'd layer media type.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `Accept` value listing every manifest media type above.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Size of the single layer file of each image in a multi-platform index.
const INDEX_LAYER_SIZE: usize = 1024;

/// A content-addressed blob: config or layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The blob content.
    pub bytes: Vec<u8>,
    /// Media type used in manifest descriptors.
    pub media_type: String,
}

impl Blob {
    fn new(bytes: Vec<u8>, media_type: &str) -> Blob {
        Blob {
            digest: digest_of(&bytes),
            bytes,
            media_type: media_type.to_owned(),
        }
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// A single-platform image: manifest, config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    /// Manifest bytes exactly as pushed.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of `manifest`.
    pub manifest_digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Image config blob.
    pub config: Blob,
    /// Layer blobs, in manifest order.
    pub layers: Vec<Blob>,
}

/// A multi-platform image: an index (or manifest list) and its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestIndex {
    /// Index bytes exactly as pushed.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Index media type.
    pub media_type: String,
    /// The referenced images: linux/amd64 first, then linux/arm64/v8.
    pub images: Vec<TestImage>,
}

#[derive(Clone, Copy)]
enum Format {
    Oci,
    Docker,
}

impl Format {
    fn manifest(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }

    fn index(self) -> &'static str {
        match self {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    fn config(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }

    fn layer(self) -> &'static str {
        match self {
            Format::Oci => OCI_LAYER,
            Format::Docker => DOCKER_LAYER,
        }
    }
}

#[derive(Clone, Copy)]
struct Platform {
    architecture: &'static str,
    variant: Option<&'static str>,
}

impl Platform {
    const AMD64: Platform = Platform {
        architecture: "amd64",
        variant: None,
    };
    const ARM64_V8: Platform = Platform {
        architecture: "arm64",
        variant: Some("v8"),
    };

    fn to_json(self) -> Value {
        let mut platform = json!({ "architecture": self.architecture, "os": "linux" });
        if let Some(variant) = self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

impl TestImage {
    /// An OCI linux/amd64 image with one layer per entry of `layer_sizes`,
    /// each holding a file of that many pseudo-random bytes derived from
    /// `seed` and the layer index. Same arguments, same bytes.
    pub fn oci(seed: u64, layer_sizes: &[usize]) -> TestImage {
        Self::build(Format::Oci, seed, layer_sizes, Platform::AMD64)
    }

    /// Like [`TestImage::oci`], with Docker schema 2 media types.
    pub fn docker(seed: u64, layer_sizes: &[usize]) -> TestImage {
        Self::build(Format::Docker, seed, layer_sizes, Platform::AMD64)
    }

    /// An OCI artifact (a signature, an SBOM) of `artifact_type` whose
    /// subject is the manifest `subject` (`digest`, `size`, `mediaType`):
    /// the empty config and one layer of `payload`.
    pub fn artifact(artifact_type: &str, payload: &[u8], subject: Value) -> TestImage {
        let config = Blob::new(b"{}".to_vec(), "application/vnd.oci.empty.v1+json");
        let layer = Blob::new(payload.to_vec(), "application/octet-stream");
        let manifest = to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "subject": subject,
        }));
        TestImage {
            manifest_digest: digest_of(&manifest),
            manifest,
            media_type: OCI_MANIFEST.to_owned(),
            config,
            layers: vec![layer],
        }
    }

    /// This manifest's descriptor.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.manifest_digest,
            "size": self.manifest.len(),
        })
    }

    /// Config first, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    fn build(format: Format, seed: u64, layer_sizes: &[usize], platform: Platform) -> TestImage {
        let (layers, diff_ids): (Vec<Blob>, Vec<String>) = layer_sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                let name = format!("{}-{seed}-{index}.bin", platform.architecture);
                let content = Rng::new(fnv1a(name.as_bytes())).bytes(size);
                let tar = tar_single_file(&name, &content);
                let diff_id = digest_of(&tar);
                (Blob::new(gzip_stored(&tar), format.layer()), diff_id)
            })
            .unzip();
        let mut config = platform.to_json();
        config["config"] = json!({ "Labels": { "ociregistry.test.seed": seed.to_string() } });
        config["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
        let config = Blob::new(to_json_bytes(&config), format.config());
        let manifest = to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": format.manifest(),
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }));
        TestImage {
            manifest_digest: digest_of(&manifest),
            manifest,
            media_type: format.manifest().to_owned(),
            config,
            layers,
        }
    }
}

impl TestIndex {
    /// An OCI index over a linux/amd64 and a linux/arm64/v8 image, each with
    /// one small layer.
    pub fn oci_multiarch(seed: u64) -> TestIndex {
        Self::multiarch(Format::Oci, seed)
    }

    /// Like [`TestIndex::oci_multiarch`], as a Docker schema 2 manifest list.
    pub fn docker_multiarch(seed: u64) -> TestIndex {
        Self::multiarch(Format::Docker, seed)
    }

    fn multiarch(format: Format, seed: u64) -> TestIndex {
        let platforms = [Platform::AMD64, Platform::ARM64_V8];
        let images: Vec<TestImage> = platforms
            .iter()
            .map(|&p| TestImage::build(format, seed, &[INDEX_LAYER_SIZE], p))
            .collect();
        let manifests: Vec<Value> = images
            .iter()
            .zip(platforms)
            .map(|(image, platform)| {
                json!({
                    "mediaType": image.media_type,
                    "digest": image.manifest_digest,
                    "size": image.manifest.len(),
                    "platform": platform.to_json(),
                })
            })
            .collect();
        let bytes = to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": format.index(),
            "manifests": manifests,
        }));
        TestIndex {
            digest: digest_of(&bytes),
            bytes,
            media_type: format.index().to_owned(),
            images,
        }
    }
}

fn to_json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

/// FNV-1a hash, used to seed the generator from a file name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A ustar archive holding one regular file `name` (mode 0644).
fn tar_single_file(name: &str, content: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 512;
    assert!(name.len() < 100, "tar member name too long: {name}");
    let mut header = [0u8; BLOCK];
    header[..name.len()].copy_from_slice(name.as_bytes());
    put_octal(&mut header[100..108], 0o644); // mode
    put_octal(&mut header[108..116], 0); // uid
    put_octal(&mut header[116..124], 0); // gid
    put_octal(&mut header[124..136], content.len() as u64); // size
    put_octal(&mut header[136..148], 0); // mtime
    header[148..156].fill(b' '); // checksum counts as spaces while summing
    header[156] = b'0'; // regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let checksum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut header[148..155], checksum); // six digits, NUL, then the space

    let padded = content.len().div_ceil(BLOCK) * BLOCK;
    let mut tar = Vec::with_capacity(BLOCK + padded + 2 * BLOCK);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(content);
    tar.resize(BLOCK + padded + 2 * BLOCK, 0); // padding and two end-of-archive blocks
    tar
}

/// Writes `value` as zero-padded octal filling all but the last byte of
/// `field`, followed by NUL.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert_eq!(
        text.len(),
        digits,
        "{value} does not fit a tar header field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// gzip (RFC 1952) of `data` using DEFLATE stored blocks: valid, not smaller.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const MAX_STORED: usize = 0xFFFF;
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_STORED).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let mut out = Vec::with_capacity(10 + data.len() + 5 * chunks.len() + 8);
    // magic, CM=deflate, no flags, mtime 0, no extra flags, OS=unix
    out.extend_from_slice(&[0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3]);
    let last = chunks.len() - 1;
    for (index, chunk) in chunks.iter().enumerate() {
        let len = u16::try_from(chunk.len()).expect("stored block fits u16");
        out.push(u8::from(index == last)); // BFINAL, BTYPE=00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes()); // ISIZE: length mod 2^32
    out
}

/// CRC-32 (IEEE 802.3, reflected) lookup table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// CRC-32 as used by gzip.
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8)
    })
}
