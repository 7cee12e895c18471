//! The subcommands: `serve`, `load`, `list`, `prune`.

use ociregistry_actors::storage::{unix, ImageInfo, Layout, Prune, PruneReport, Storage};
use regex::Regex;

use crate::cli::{ListArgs, LoadArgs, PruneArgs, ServeArgs};
use crate::config::Config;
use crate::image_ref::ImageRef;
use crate::preload::{Loader, Source};
use crate::prune::PruneSpec;
use crate::server::cache_in_use;
use crate::server::{self, Cache};
use crate::tarball;

/// Serves until stopped.
pub fn serve(config: Config, args: &ServeArgs, log: &slog::Logger) -> Result<(), String> {
    let preload = args.preload_images.as_deref().map(Source::of).transpose()?;
    actix::System::new()
        .block_on(server::run(config, args.hello_world, preload, log.clone()))
        .map_err(|e| e.to_string())
}

/// Pulls the listed images into the cache; fails if any image could not be loaded.
pub fn load(config: &Config, args: &LoadArgs, log: &slog::Logger) -> Result<(), String> {
    let source = Source::of(&args.image_file)?;
    let resolve_ref = args
        .resolve_ref
        .as_deref()
        .map(ImageRef::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    actix::System::new().block_on(async {
        let cache = Cache::open(config, false, log)
            .await
            .map_err(|e| e.to_string())?;
        let images = match source {
            Source::Tarball(path) => {
                let names = tarball::import(
                    &cache.storage,
                    &path,
                    &Layout::new(&config.image_path).scratch(),
                    resolve_ref.as_ref(),
                    config.import_limit(),
                )
                .await
                .map_err(|e| e.to_string())?;
                println!(
                    "loaded {} images from {}: {}",
                    names.len(),
                    path.display(),
                    names.join(", ")
                );
                return Ok(());
            }
            Source::List(images) => images,
        };
        let loader = Loader {
            storage: cache.storage.clone(),
            coordinator: cache.coordinator.clone(),
            platforms: args.platform.clone(),
            log: log.clone(),
        };
        let summary = loader.load_all(images, args.concurrency).await;
        println!(
            "loaded {} images ({} failed); fetched {} blobs, {} bytes",
            summary.loaded, summary.failed, summary.fetched_blobs, summary.fetched_bytes
        );
        if summary.failed > 0 {
            return Err(format!("{} images could not be loaded", summary.failed));
        }
        Ok(())
    })
}

/// Prints the cached images (or the tag history).
pub fn list(config: &Config, args: &ListArgs, log: &slog::Logger) -> Result<(), String> {
    let root = &config.image_path;
    if args.history {
        for record in Storage::history(root).map_err(|e| e.to_string())? {
            println!("{record}");
        }
        return Ok(());
    }
    let pattern = args
        .pattern
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let pins = config.retention().map_err(|e| e.to_string())?.pins;
    let images = Storage::list(root, &pins, log).map_err(|e| format!("{}: {e}", root.display()))?;
    println!("NAME\tDIGEST\tMEDIA TYPE\tSIZE\tCREATED\tLAST PULLED");
    for image in images
        .iter()
        .filter(|i| pattern.as_ref().is_none_or(|p| p.is_match(&i.name)))
    {
        println!("{}", row(image, args.digests));
    }
    Ok(())
}

/// One line of `list`.
fn row(i: &ImageInfo, full_digest: bool) -> String {
    let digest = if full_digest {
        &i.digest
    } else {
        &i.digest[..i.digest.len().min(19)]
    };
    let pulled = i
        .last_pulled
        .map_or("-".to_string(), |t| unix(t).to_string());
    let pinned = if i.pinned { "\tpinned" } else { "" };
    format!(
        "{}\t{digest}\t{}\t{}\t{}\t{pulled}{pinned}",
        i.name,
        i.media_type,
        i.size,
        unix(i.created)
    )
}

/// Prunes: directly when no server holds the cache, else through its admin API.
pub fn prune(config: &Config, args: &PruneArgs, log: &slog::Logger) -> Result<(), String> {
    let spec = PruneSpec {
        kind: args.kind.clone(),
        duration: args.duration.clone(),
        expr: args.expr.clone(),
        count: args.count,
        dry_run: args.dry_run,
    };
    let by = spec.by()?;
    let report = if cache_in_use(&config.image_path) {
        let port = config
            .admin_port
            .ok_or("a server is using this cache and has no adminPort: prune through its admin API, or stop it")?;
        let token = config.admin_token().map_err(|e| e.to_string())?;
        actix::System::new().block_on(prune_remote(&config.admin_host, port, token, &spec))?
    } else {
        let retention = config.retention().map_err(|e| e.to_string())?;
        let request = Prune {
            by,
            count: spec.count,
            dry_run: spec.dry_run,
        };
        let report: PruneReport =
            Storage::prune_offline(&config.image_path, &retention, request, log)
                .map_err(|e| e.to_string())?;
        serde_json::to_value(report).map_err(|e| e.to_string())?
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// `POST /admin/prune` to the running server.
async fn prune_remote(
    host: &str,
    port: u16,
    token: Option<String>,
    spec: &PruneSpec,
) -> Result<serde_json::Value, String> {
    let body = serde_json::json!({
        "type": spec.kind, "duration": spec.duration, "expr": spec.expr,
        "count": spec.count, "dryRun": spec.dry_run,
    });
    let mut req = awc::Client::default().post(format!("http://{host}:{port}/admin/prune"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut res = req
        .send_json(&body)
        .await
        .map_err(|e| format!("admin API: {e}"))?;
    let bytes = res.body().await.map_err(|e| format!("admin API: {e}"))?;
    if !res.status().is_success() {
        return Err(format!(
            "admin API answered {}: {}",
            res.status(),
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("admin API: {e}"))
}
