//! Start-up: open the cache, start the actors, bind, serve.

use std::net::TcpListener;
use std::path::PathBuf;

use actix::{Actor, Arbiter};
use actix_web::{middleware::from_fn, web, App, HttpServer};
use ociregistry_actors::coordinator::{PullCoordinator, Unlisted};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::storage::Storage;
use ociregistry_actors::upstream::{require_native_roots, ProxyRules, TlsError};

use crate::config::{Config, ConfigError};
use crate::handlers::{self, AppState, Policy};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cache root could not be opened.
    #[error("cache at {path}: {source} (set imagePath / --image-path to a writable directory)")]
    Cache {
        /// The cache root.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An upstream's TLS settings are unusable.
    #[error("upstream TLS: {0}")]
    Tls(#[from] TlsError),
    /// The embedded image could not be stored.
    #[error("embedded image: {0}")]
    HelloWorld(FetchError),
    /// The listening socket could not be opened.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// host:port.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs the server until it is stopped (SIGINT/SIGTERM: graceful).
/// Prints `ociregistry listening on http://ADDR` on stdout once it accepts.
pub async fn run(config: Config, hello_world: bool, log: slog::Logger) -> Result<(), StartError> {
    for registry in config
        .registries
        .iter()
        .filter(|r| r.tls.as_ref().is_some_and(|t| t.insecure_skip_verify))
    {
        slog::warn!(log, "TLS verification is off for this upstream"; "registry" => &registry.name);
    }
    if !config.air_gapped {
        require_native_roots()?;
    }
    let env_proxy = ProxyRules::from_env();
    let upstreams = config.upstreams(&env_proxy)?;
    let cache_error = |source| StartError::Cache {
        path: config.image_path.clone(),
        source,
    };
    let storage =
        Storage::open(&config.image_path, config.retention()?, log.clone()).map_err(cache_error)?;
    let storage_thread = Arbiter::new();
    let storage = Storage::start_in_arbiter(&storage_thread.handle(), |_| storage);
    if hello_world {
        crate::hello_world::install(&storage)
            .await
            .map_err(StartError::HelloWorld)?;
        slog::info!(
            log,
            "serving the embedded image docker.io/library/hello-world:latest (air-gapped)"
        );
    }
    let unlisted = Unlisted {
        timeouts: config.timeouts(),
        proxy: env_proxy,
        mirror: config
            .upstream_mirror
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string()),
    };
    let coordinator = PullCoordinator::start(storage.clone(), upstreams, unlisted, log.clone())?;

    let addr = format!("{}:{}", config.host, config.port);
    let listen_error = |source| StartError::Listen {
        addr: addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&addr).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let state = web::Data::new(AppState {
        storage,
        coordinator,
        policy: Policy {
            default_ns: config.default_ns(),
            air_gapped: config.air_gapped,
            tags: config.tag_policies()?,
            pull_timeout: config.pull_timeout(),
        },
        log: log.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(crate::access_log::log_request))
            .default_service(web::to(handlers::dispatch))
    })
    .listen(listener)
    .map_err(listen_error)?
    .run();
    slog::info!(log, "listening"; "addr" => %local, "cache" => %config.image_path.display(),
        "air_gapped" => config.air_gapped);
    println!("ociregistry listening on http://{local}");
    server.await.map_err(listen_error)?;
    storage_thread.stop();
    Ok(())
}
