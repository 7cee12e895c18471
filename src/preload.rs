//! Filling the cache ahead of need: `ociregistry load --image-file FILE`
//! and `serve --preload-images FILE`. Each image is pulled with all its
//! platforms (or the chosen ones), manifests and blobs, through the same
//! single-flight fetches clients use; what is cached already is skipped.
//! `load --referrers` also pulls what refers to each image (signatures,
//! SBOMs) and keeps the referrers lists.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use actix::Addr;
use futures::stream::{self, StreamExt};
use ociregistry_actors::coordinator::{FetchBlob, FetchListing, FetchManifest, PullCoordinator};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::listing::{referrer_digests, Listed, ListingKey};
use ociregistry_actors::manifest::Manifest;
use ociregistry_actors::names::{Digest, Reference};
use ociregistry_actors::storage::{LookupBlob, LookupManifest, Storage};

use crate::image_ref::ImageRef;

/// Where images to load come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A list of references, pulled from their registries.
    List(Vec<ImageRef>),
    /// A tarball (OCI layout or `docker save`).
    Tarball(std::path::PathBuf),
}

impl Source {
    /// A tarball if the file is one (by content), else a list.
    pub fn of(path: &Path) -> Result<Self, String> {
        if crate::tarball::is_tarball(path) {
            Ok(Self::Tarball(path.to_path_buf()))
        } else {
            read_list(path).map(Self::List)
        }
    }
}

/// Reads a list file: one reference per line; blank lines and `#` comments ignored.
pub fn read_list(path: &Path) -> Result<Vec<ImageRef>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|line| ImageRef::parse(line).map_err(|e| e.to_string()))
        .collect()
}

/// What a load did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Images complete in the cache.
    pub loaded: usize,
    /// Images that failed.
    pub failed: usize,
    /// Blobs fetched from upstream (the others were cached).
    pub fetched_blobs: usize,
    /// Bytes of those blobs.
    pub fetched_bytes: u64,
}

/// Pulls images into the cache.
pub struct Loader {
    /// The cache.
    pub storage: Addr<Storage>,
    /// Upstream fetches.
    pub coordinator: Addr<PullCoordinator>,
    /// `os/arch[/variant]` to keep from indexes; all when empty.
    pub platforms: Vec<String>,
    /// Also load the referrers of each image and of its chosen platform
    /// manifests (one level: not the referrers of referrers).
    pub referrers: bool,
    /// Progress lines.
    pub log: slog::Logger,
}

impl Loader {
    /// Loads every image, `concurrency` at a time; one log line per image.
    pub async fn load_all(&self, images: Vec<ImageRef>, concurrency: usize) -> Summary {
        let total = images.len();
        let progress = std::cell::Cell::new(Summary::default());
        let terminal = std::io::stderr().is_terminal();
        stream::iter(images)
            .map(|image| async move { (self.load(&image).await, image) })
            .buffer_unordered(concurrency.max(1))
            .for_each(|(result, image)| {
                let mut s = progress.get();
                match &result {
                    Ok((blobs, bytes)) => {
                        s.loaded += 1;
                        s.fetched_blobs += blobs;
                        s.fetched_bytes += bytes;
                        slog::debug!(self.log, "image loaded"; "image" => %image,
                            "fetched_blobs" => blobs, "fetched_bytes" => bytes);
                    }
                    Err(e) => {
                        s.failed += 1;
                        slog::error!(self.log, "image not loaded"; "image" => %image, "error" => %e);
                    }
                }
                progress.set(s);
                let line = format!(
                    "{}/{total} images loaded, {} failed, {:.1} MiB fetched",
                    s.loaded,
                    s.failed,
                    s.fetched_bytes as f64 / 1_048_576.0
                );
                if terminal {
                    eprint!("\r{line}");
                } else {
                    slog::info!(self.log, "loading"; "image" => %image, "progress" => line);
                }
                async {}
            })
            .await;
        if terminal {
            eprintln!();
        }
        progress.get()
    }

    /// One image: its manifest, the chosen platform manifests, every blob;
    /// with `referrers`, the same for each artifact referring to it.
    /// Returns the blobs and bytes fetched.
    async fn load(&self, image: &ImageRef) -> Result<(usize, u64), FetchError> {
        let mut images = self.platforms_of(image, image.reference.clone()).await?;
        if self.referrers {
            let subjects: Vec<Digest> = images.iter().map(|m| m.digest.clone()).collect();
            for subject in subjects {
                for digest in self.referrers_of(image, subject).await? {
                    let artifact = self.platforms_of(image, Reference::Digest(digest));
                    images.extend(artifact.await?);
                }
            }
        }
        let blobs: Vec<Digest> = images.iter().flat_map(|m| m.blobs()).collect();
        let fetched = stream::iter(blobs)
            .map(|digest| self.blob(image, digest))
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let mut total = (0, 0);
        for f in fetched {
            if let Some(bytes) = f? {
                total = (total.0 + 1, total.1 + bytes);
            }
        }
        Ok(total)
    }

    /// The manifest `reference` names and, for an index, its chosen
    /// platform manifests.
    async fn platforms_of(
        &self,
        image: &ImageRef,
        reference: Reference,
    ) -> Result<Vec<Arc<Manifest>>, FetchError> {
        let top = self.manifest(image, reference).await?;
        let children = top.children();
        let mut manifests = vec![top];
        let wanted = children
            .into_iter()
            .filter(|c| self.wants(c.platform.as_deref()));
        for child in wanted {
            let reference = Reference::Digest(child.digest);
            manifests.push(self.manifest(image, reference).await?);
        }
        Ok(manifests)
    }

    /// The referrers of `subject`, asked of the upstream and kept (none
    /// when the upstream has no referrers API).
    async fn referrers_of(
        &self,
        image: &ImageRef,
        subject: Digest,
    ) -> Result<Vec<Digest>, FetchError> {
        let key = ListingKey {
            registry: image.registry.clone(),
            repo: image.repo.clone(),
            listed: Listed::Referrers(subject),
        };
        let listing = self.coordinator.send(FetchListing(key)).await??;
        Ok(referrer_digests(&listing.value.body))
    }

    /// Whether an index entry's platform is wanted.
    fn wants(&self, platform: Option<&str>) -> bool {
        let Some(p) = platform else {
            return self.platforms.is_empty();
        };
        self.platforms.is_empty()
            || self
                .platforms
                .iter()
                .any(|w| p == w || p.starts_with(&format!("{w}/")))
    }

    /// A manifest from the cache, or fetched.
    async fn manifest(
        &self,
        image: &ImageRef,
        reference: Reference,
    ) -> Result<Arc<Manifest>, FetchError> {
        let lookup = LookupManifest {
            registry: image.registry.clone(),
            repo: image.repo.clone(),
            reference: reference.clone(),
        };
        if let Some(cached) = self.storage.send(lookup).await? {
            return Ok(cached.manifest);
        }
        let fetch = FetchManifest {
            registry: image.registry.clone(),
            repo: image.repo.clone(),
            reference,
            cached: None,
        };
        Ok(self.coordinator.send(fetch).await??.value)
    }

    /// Fetches a blob unless cached; `Some(size)` when it was fetched.
    async fn blob(&self, image: &ImageRef, digest: Digest) -> Result<Option<u64>, FetchError> {
        if self
            .storage
            .send(LookupBlob(digest.clone()))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let fetch = FetchBlob {
            registry: image.registry.clone(),
            repo: image.repo.clone(),
            digest,
            upstream: true,
        };
        let joined = self.coordinator.send(fetch).await?;
        joined.value.finished().await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_skip_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.txt");
        let digest = Digest::of(b"x");
        let text =
            format!("# base images\nalpine:3.20\n\n  busybox # shell\nquay.io/a/b:1@{digest}\n");
        std::fs::write(&path, text).unwrap();
        let list = read_list(&path).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[1].to_string(), "docker.io/library/busybox:latest");
        assert_eq!(list[2].reference, Reference::Digest(digest));
        std::fs::write(&path, "alpine\nalpine@latest\n").unwrap();
        let e = read_list(&path).unwrap_err();
        assert!(e.contains("alpine@latest"), "{e}");
    }
}
