//! The subcommands: `serve`, `load`, `list`, `prune`, `node-config`.

use std::path::PathBuf;

use ociregistry_actors::storage::{unix, Flush, ImageInfo, Layout, Prune, PruneReport, Storage};
use regex::Regex;

use crate::cli::{Cli, ListArgs, LoadArgs, NodeConfigAction, PruneArgs, ServeArgs};
use crate::config::{Config, ConfigError};
use crate::image_ref::ImageRef;
use crate::node_config::{self, NodeConfig, Report};
use crate::preload::{Loader, Source};
use crate::prune::PruneSpec;
use crate::server::cache_in_use;
use crate::server::{self, Cache, Start, StartError};
use crate::tarball::{self, ImportError};

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server, or the cache, could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A tarball could not be imported.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// An argument or a file it names is malformed (an image list, an
    /// image reference, a pattern, a prune request).
    #[error("{0}")]
    Input(String),
    /// The cache could not be read or changed.
    #[error("{path}: {source}")]
    Cache {
        /// The cache root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Some images of a `load` could not be loaded (each was reported).
    #[error("{0} images could not be loaded")]
    LoadFailed(usize),
    /// A server holds the cache and offers no admin API to prune through.
    #[error("a server is using this cache and has no adminPort: prune through its admin API, or stop it")]
    NoAdminPort,
    /// The running server's admin API refused or failed the request.
    #[error("admin API: {0}")]
    Admin(String),
}

/// Serves until stopped, reloading the configuration `cli` names when it
/// changes.
pub fn serve(
    config: Config,
    cli: &Cli,
    args: &ServeArgs,
    log: &slog::Logger,
) -> Result<(), CommandError> {
    let preload = args.preload_images.as_deref().map(Source::of).transpose();
    let start = Start {
        hello_world: args.hello_world,
        preload: preload.map_err(CommandError::Input)?,
        reload: Some(cli.clone()),
    };
    actix::System::new().block_on(server::run(config, start, log.clone()))?;
    Ok(())
}

/// Pulls the listed images into the cache; fails if any image could not be loaded.
pub fn load(config: &Config, args: &LoadArgs, log: &slog::Logger) -> Result<(), CommandError> {
    let source = Source::of(&args.image_file).map_err(CommandError::Input)?;
    let resolve_ref = args
        .resolve_ref
        .as_deref()
        .map(ImageRef::parse)
        .transpose()
        .map_err(|e| CommandError::Input(e.to_string()))?;
    actix::System::new().block_on(async {
        let cache = Cache::open(config, false, log).await?;
        let loaded = load_into(&cache, source, config, args, resolve_ref.as_ref(), log).await;
        // Last-pulled times of what was loaded.
        let _ = cache.storage.send(Flush).await;
        loaded
    })
}

/// Loads `source` into the open `cache`.
async fn load_into(
    cache: &Cache,
    source: Source,
    config: &Config,
    args: &LoadArgs,
    resolve_ref: Option<&ImageRef>,
    log: &slog::Logger,
) -> Result<(), CommandError> {
    let images = match source {
        Source::Tarball(path) => {
            let names = tarball::import(
                &cache.storage,
                &path,
                &Layout::new(&config.image_path).scratch(),
                resolve_ref,
                config.import_limit(),
            )
            .await?;
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
        referrers: args.referrers,
        log: log.clone(),
    };
    let summary = loader.load_all(images, args.concurrency).await;
    println!(
        "loaded {} images ({} failed); fetched {} blobs, {} bytes",
        summary.loaded, summary.failed, summary.fetched_blobs, summary.fetched_bytes
    );
    if summary.failed > 0 {
        return Err(CommandError::LoadFailed(summary.failed));
    }
    Ok(())
}

/// Prints the cached images (or the tag history).
pub fn list(config: &Config, args: &ListArgs, log: &slog::Logger) -> Result<(), CommandError> {
    let root = &config.image_path;
    let cache = |source| CommandError::Cache {
        path: root.clone(),
        source,
    };
    let backend = config.backend()?;
    if args.history {
        let history = actix::System::new().block_on(Storage::history(&*backend));
        for record in history.map_err(cache)? {
            println!("{record}");
        }
        return Ok(());
    }
    let pattern = args
        .pattern
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| CommandError::Input(e.to_string()))?;
    let pins = config.retention()?.pins;
    let images = actix::System::new()
        .block_on(Storage::list(&*backend, &pins, log))
        .map_err(cache)?;
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
pub fn prune(config: &Config, args: &PruneArgs, log: &slog::Logger) -> Result<(), CommandError> {
    let spec = PruneSpec {
        kind: args.kind,
        duration: args.duration,
        expr: args.expr.clone(),
        count: args.count,
        dry_run: args.dry_run,
    };
    let by = spec.by().map_err(CommandError::Input)?;
    let report = if cache_in_use(&config.image_path) {
        let port = config.admin_port.ok_or(CommandError::NoAdminPort)?;
        let token = config.admin_token()?;
        actix::System::new().block_on(prune_remote(&config.admin_host, port, token, &spec))?
    } else {
        let retention = config.retention()?;
        let request = Prune {
            by,
            count: spec.count,
            dry_run: spec.dry_run,
        };
        let cache = |source| CommandError::Cache {
            path: config.image_path.clone(),
            source,
        };
        let backend = config.backend()?;
        let prune = Storage::prune_offline(&*backend, &retention, request, log);
        let report: PruneReport = actix::System::new().block_on(prune).map_err(cache)?;
        serde_json::json!(report)
    };
    println!("{report:#}");
    Ok(())
}

/// `POST /admin/prune` to the running server.
async fn prune_remote(
    host: &str,
    port: u16,
    token: Option<String>,
    spec: &PruneSpec,
) -> Result<serde_json::Value, CommandError> {
    let body = serde_json::json!({
        "type": spec.kind, "duration": spec.duration, "expr": spec.expr,
        "count": spec.count, "dryRun": spec.dry_run,
    });
    let mut req = awc::Client::default().post(format!("http://{host}:{port}/admin/prune"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let admin = |e: &dyn std::fmt::Display| CommandError::Admin(e.to_string());
    let mut res = req.send_json(&body).await.map_err(|e| admin(&e))?;
    let bytes = res.body().await.map_err(|e| admin(&e))?;
    if !res.status().is_success() {
        let answer = format!("{}: {}", res.status(), String::from_utf8_lossy(&bytes));
        return Err(admin(&answer));
    }
    serde_json::from_slice(&bytes).map_err(|e| admin(&e))
}

/// `node-config apply`, `remove` or `wait`: one log line per file changed
/// or left alone, and each warning.
pub fn node_config(action: &NodeConfigAction, log: &slog::Logger) -> Result<(), CommandError> {
    let (args, remove) = match action {
        NodeConfigAction::Wait(args) => {
            let ready = node_config::wait(args).map_err(CommandError::Input)?;
            slog::info!(log, "every node is done"; "endpoint" => &args.endpoint, "pods" => ready);
            return Ok(());
        }
        NodeConfigAction::Apply(args) => (args, false),
        NodeConfigAction::Remove(args) => (args, true),
    };
    let node = NodeConfig::new(args).map_err(CommandError::Input)?;
    let once = || -> Result<(), CommandError> {
        let done = if remove { node.remove() } else { node.apply() };
        let report = done.map_err(|source| CommandError::Cache {
            path: args.root.clone(),
            source,
        })?;
        log_report(&report, log);
        Ok(())
    };
    once()?;
    if let Some(port) = args.ready_port {
        node_config::serve_ready(port)
            .map_err(|e| CommandError::Input(format!("--ready-port {port}: {e}")))?;
    }
    let Some(every) = args.every else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Input(e.to_string()))?;
    runtime.block_on(async {
        let stop = server::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                name = &mut stop => {
                    slog::info!(log, "stopping"; "signal" => name);
                    return Ok(());
                }
                () = tokio::time::sleep(every) => once()?,
            }
        }
    })
}

/// Logs what a `node-config` run did.
fn log_report(report: &Report, log: &slog::Logger) {
    for path in &report.written {
        slog::info!(log, "written"; "file" => %path.display());
    }
    for path in &report.removed {
        slog::info!(log, "removed"; "file" => %path.display());
    }
    for path in &report.left_alone {
        slog::warn!(log, "left alone: written by someone else (nodeConfig.overwrite replaces it)";
            "file" => %path.display());
    }
    for warning in &report.warnings {
        slog::warn!(log, "{}", warning);
    }
}
