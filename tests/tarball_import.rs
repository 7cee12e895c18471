//! Tarball imports in process (Storage on a temporary directory, no
//! external tools): an archive is untrusted, so nothing it names outside
//! itself is read, links, devices and sparse entries are refused, sizes are
//! capped, and scratch space never outlives an import.

use std::path::Path;

use actix::{Actor, Addr};
use ociregistry::tarball::{import, ImportError};
use ociregistry_actors::names::Digest;
use ociregistry_actors::storage::{Filesystem, GetStats, Layout, LookupBlob, Retention, Storage};

const NO_LIMIT: u64 = u64::MAX;

/// Storage on the filesystem backend at `root`.
async fn open(root: &Path) -> Storage {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let backend = std::sync::Arc::new(Filesystem::open(root).unwrap());
    Storage::open(backend, Layout::new(root), Retention::default(), log)
        .await
        .unwrap()
}

async fn storage(root: &Path) -> Addr<Storage> {
    open(root).await.start()
}

/// An archive builder writing into memory.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, name: &str, content: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        self.0.append_data(&mut h, name, content).unwrap();
        self
    }

    fn special(mut self, name: &str, kind: tar::EntryType, target: &str) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o644);
        self.0.append_link(&mut h, name, target).unwrap();
        self
    }

    fn write(self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("image.tar");
        std::fs::write(&path, self.0.into_inner().unwrap()).unwrap();
        path
    }
}

/// A `docker save` manifest.json naming `config` and `layers`.
fn saved(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([{
        "Config": config,
        "RepoTags": ["registry.test/app:1"],
        "Layers": layers,
    }]))
    .unwrap()
}

/// Files anywhere under `dir`, with their sizes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    out
}

/// Imports `tarball` into a fresh cache; returns the result and the cache.
async fn import_into_fresh_cache(
    tarball: &Path,
    limit: u64,
) -> (
    Result<Vec<String>, ImportError>,
    tempfile::TempDir,
    Addr<Storage>,
) {
    let cache = tempfile::tempdir().unwrap();
    let storage = storage(cache.path()).await;
    let scratch = Layout::new(cache.path()).scratch();
    let result = import(&storage, tarball, &scratch, None, limit).await;
    (result, cache, storage)
}

/// Nothing was stored and no scratch file is left.
async fn assert_nothing_kept(cache: &Path, storage: &Addr<Storage>) {
    let stats = storage.send(GetStats { images: false }).await.unwrap();
    assert_eq!((stats.blobs, stats.manifests), (0, 0));
    let scratch = Layout::new(cache).scratch();
    let left = if scratch.exists() {
        files_under(&scratch)
    } else {
        Vec::new()
    };
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

#[actix_web::test]
async fn a_docker_save_archive_is_imported_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#, vec![9u8; 5000]);
    let tarball = Tar::new()
        .file("manifest.json", &saved("./c.json", &["l/layer.tar"]))
        .file("c.json", config)
        .file("l/layer.tar", &layer)
        .write(dir.path());
    let (result, cache, storage) = import_into_fresh_cache(&tarball, NO_LIMIT).await;
    assert_eq!(result.unwrap(), vec!["registry.test/app:1".to_string()]);
    for content in [&config[..], &layer[..]] {
        let blob = storage
            .send(LookupBlob(Digest::of(content)))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(std::fs::read(blob.path).unwrap(), content);
    }
    assert!(!Layout::new(cache.path())
        .scratch()
        .read_dir()
        .unwrap()
        .any(|_| true));
}

#[actix_web::test]
async fn names_outside_the_archive_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let host_secret = dir.path().join("secret");
    std::fs::write(&host_secret, b"host file").unwrap();
    let secret = host_secret.to_str().unwrap();
    let escape = format!("../../../../../../../..{secret}");
    for (config, layers) in [
        (secret, vec![]),
        (escape.as_str(), vec![]),
        ("c.json", vec![secret]),
        ("c.json", vec!["/proc/self/environ"]),
        ("/dev/zero", vec![]),
    ] {
        let tarball = Tar::new()
            .file("manifest.json", &saved(config, &layers))
            .file("c.json", b"{}")
            .write(dir.path());
        let (result, cache, storage) = import_into_fresh_cache(&tarball, NO_LIMIT).await;
        assert!(
            matches!(result, Err(ImportError::Missing(_))),
            "{config} {layers:?}: {result:?}"
        );
        assert_nothing_kept(cache.path(), &storage).await;
    }
}

#[actix_web::test]
async fn links_devices_and_escaping_entry_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = saved("c.json", &["layer.tar"]);
    let archives = [
        Tar::new().special("layer.tar", tar::EntryType::Symlink, "/etc/passwd"),
        Tar::new().special("layer.tar", tar::EntryType::Link, "/etc/passwd"),
        Tar::new().special("layer.tar", tar::EntryType::Char, "x"),
        Tar::new().special("layer.tar", tar::EntryType::Fifo, "x"),
    ];
    for archive in archives {
        let tarball = archive
            .file("manifest.json", &manifest)
            .file("c.json", b"{}")
            .write(dir.path());
        let (result, cache, storage) = import_into_fresh_cache(&tarball, NO_LIMIT).await;
        assert!(
            matches!(result, Err(ImportError::Refused { .. })),
            "{result:?}"
        );
        assert_nothing_kept(cache.path(), &storage).await;
    }
    // A name with `..` or a root (written raw: the builder refuses them).
    for name in ["../escape.tar", "/abs.tar"] {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend_from_slice(&[b'x'; 3]);
        raw.resize(raw.len() + 509 + 1024, 0);
        let tarball = dir.path().join("raw.tar");
        std::fs::write(&tarball, raw).unwrap();
        let (result, cache, storage) = import_into_fresh_cache(&tarball, NO_LIMIT).await;
        assert!(
            matches!(result, Err(ImportError::Refused { .. })),
            "{name}: {result:?}"
        );
        assert_nothing_kept(cache.path(), &storage).await;
    }
}

#[actix_web::test]
async fn a_sparse_entry_is_refused_without_expanding_it() {
    let dir = tempfile::tempdir().unwrap();
    // A GNU sparse entry: 1 byte of data at the end of a 1 GiB file.
    let octal = |field: &mut [u8], n: u64| {
        let text = format!("{n:0w$o}\0", w = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    let mut h = tar::Header::new_gnu();
    h.set_path("layer.tar").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(1);
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, 1 << 30);
    octal(&mut gnu.sparse[0].offset, (1 << 30) - 1);
    octal(&mut gnu.sparse[0].numbytes, 1);
    h.set_cksum();
    let mut archive = tar::Builder::new(Vec::new());
    archive.append(&h, &b"x"[..]).unwrap();
    let manifest = saved("c.json", &["layer.tar"]);
    let mut m = tar::Header::new_gnu();
    m.set_size(manifest.len() as u64);
    archive
        .append_data(&mut m, "manifest.json", &manifest[..])
        .unwrap();
    let mut c = tar::Header::new_gnu();
    c.set_size(2);
    archive.append_data(&mut c, "c.json", &b"{}"[..]).unwrap();
    let tarball = dir.path().join("sparse.tar");
    std::fs::write(&tarball, archive.into_inner().unwrap()).unwrap();

    let (result, cache, storage) = import_into_fresh_cache(&tarball, NO_LIMIT).await;
    assert!(
        matches!(result, Err(ImportError::Refused { .. })),
        "{result:?}"
    );
    assert_nothing_kept(cache.path(), &storage).await;
    let largest = files_under(cache.path())
        .into_iter()
        .map(|(_, len)| len)
        .max();
    assert!(largest.unwrap_or(0) < 1 << 20, "nothing was expanded");
}

#[actix_web::test]
async fn an_archive_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = Tar::new()
        .file("manifest.json", &saved("c.json", &["layer.tar"]))
        .file("c.json", b"{}")
        .file("layer.tar", &[1u8; 8192])
        .write(dir.path());
    let (result, cache, storage) = import_into_fresh_cache(&tarball, 4096).await;
    assert!(
        matches!(result, Err(ImportError::TooLarge { limit: 4096 })),
        "{result:?}"
    );
    assert_nothing_kept(cache.path(), &storage).await;
}

#[actix_web::test]
async fn an_archive_of_too_many_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Tar::new().file("manifest.json", &saved("c.json", &[]));
    for n in 0..10_000 {
        archive = archive.file(&format!("empty/{n}"), b"");
    }
    let tarball = archive.write(dir.path());
    let (result, cache, storage) = import_into_fresh_cache(&tarball, NO_LIMIT).await;
    assert!(
        matches!(result, Err(ImportError::TooManyEntries)),
        "{result:?}"
    );
    assert_nothing_kept(cache.path(), &storage).await;
}

#[actix::test]
async fn start_up_removes_scratch_space_left_by_earlier_imports() {
    let cache = tempfile::tempdir().unwrap();
    let layout = Layout::new(cache.path());
    let leftovers = [
        layout.scratch().join("4242-0"),
        cache.path().join(".import-4242"),
    ];
    for dir in &leftovers {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256/x"), b"half an import").unwrap();
    }
    open(cache.path()).await;
    for dir in &leftovers {
        assert!(!dir.exists(), "{} survived start-up", dir.display());
    }
}
