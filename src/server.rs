//! Start-up: open the cache, start the actors, bind, serve.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::{middleware::from_fn, web, App, HttpServer};
use ociregistry_actors::coordinator::{PullCoordinator, Unlisted};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::storage::{Prune, Storage};
use ociregistry_actors::upstream::{require_native_roots, ProxyRules, TlsError};

use crate::admin::{self, AdminState, Counters};
use crate::config::{Config, ConfigError};
use crate::preload::{Loader, Source};
use crate::prune::PruneSpec;

/// Images preloaded at once.
const PRELOAD_CONCURRENCY: usize = 4;

/// The lock file a running server holds in its cache directory.
const LOCK_FILE: &str = ".lock";
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
    /// Another server holds the cache directory.
    #[error("another ociregistry serves the cache at {}", .0.display())]
    CacheBusy(PathBuf),
    /// The listening socket could not be opened.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// host:port.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The cache and its actors, opened for one process.
pub struct Cache {
    /// The Storage actor.
    pub storage: actix::Addr<Storage>,
    /// The PullCoordinator actor.
    pub coordinator: actix::Addr<PullCoordinator>,
    /// The cache lock, held while this lives.
    _lock: std::fs::File,
    /// The Storage actor's thread.
    _storage_thread: Arbiter,
}

impl Cache {
    /// Locks and loads the cache, and starts the actors.
    pub async fn open(
        config: &Config,
        hello_world: bool,
        log: &slog::Logger,
    ) -> Result<Self, StartError> {
        let insecure = config
            .registries
            .iter()
            .filter(|r| r.tls.as_ref().is_some_and(|t| t.insecure_skip_verify));
        for registry in insecure {
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
        std::fs::create_dir_all(&config.image_path).map_err(cache_error)?;
        let lock = lock_cache(&config.image_path)?;
        let storage = Storage::open(&config.image_path, config.retention()?, log.clone())
            .map_err(cache_error)?;
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
        let coordinator =
            PullCoordinator::start(storage.clone(), upstreams, unlisted, log.clone())?;
        Ok(Self {
            storage,
            coordinator,
            _lock: lock,
            _storage_thread: storage_thread,
        })
    }
}

/// Runs the server until it is stopped (SIGINT/SIGTERM: graceful).
/// Prints `ociregistry listening on http://ADDR` on stdout once it accepts.
/// Images listed in `preload` are loaded in the background: what is
/// cached serves at once, and an unreachable upstream never delays start-up.
pub async fn run(
    config: Config,
    hello_world: bool,
    preload: Option<Source>,
    log: slog::Logger,
) -> Result<(), StartError> {
    let cache = Cache::open(&config, hello_world, &log).await?;
    let (storage, coordinator) = (cache.storage.clone(), cache.coordinator.clone());
    if let Some(source) = preload {
        actix::spawn(preload_in_background(
            storage.clone(),
            coordinator.clone(),
            source,
            config.image_path.clone(),
            log.clone(),
        ));
    }

    let addr = format!("{}:{}", config.host, config.port);
    let listen_error = |source| StartError::Listen {
        addr: addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&addr).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let counters = web::Data::new(Counters::default());
    let state = web::Data::new(AppState {
        counters: counters.clone(),
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
    if let Some((every, spec)) = config.scheduled_prune()? {
        actix::spawn(scheduled_prune(
            state.storage.clone(),
            every,
            spec,
            log.clone(),
        ));
    }
    let admin = match config.admin_port {
        Some(port) => Some(admin_server(&config, port, &state, counters, &log)?),
        None => None,
    };
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
    match admin {
        Some(admin) => futures::future::try_join(server, admin).await.map(|_| ()),
        None => server.await,
    }
    .map_err(listen_error)?;
    Ok(())
}

/// Takes the cache's lock file: one server per cache directory; also tells
/// `ociregistry prune` that a server owns the cache.
fn lock_cache(root: &Path) -> Result<std::fs::File, StartError> {
    let path = root.join(LOCK_FILE);
    let file = std::fs::File::create(&path).map_err(|source| StartError::Cache {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::CacheBusy(root.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(StartError::Cache { path, source }),
    }
}

/// Whether a server holds the cache at `root`.
pub fn cache_in_use(root: &Path) -> bool {
    std::fs::File::open(root.join(LOCK_FILE))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Runs `spec` every `every`.
async fn scheduled_prune(
    storage: actix::Addr<Storage>,
    every: Duration,
    spec: PruneSpec,
    log: slog::Logger,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Ok(by) = spec.by() else { return };
        let msg = Prune {
            by,
            count: spec.count,
            dry_run: spec.dry_run,
        };
        match storage.send(msg).await {
            Ok(report) => slog::info!(log, "scheduled prune"; "dry_run" => report.dry_run,
                "images" => report.images.len(), "bytes" => report.bytes),
            Err(_) => return,
        }
    }
}

/// The admin API's server, on its own address.
fn admin_server(
    config: &Config,
    port: u16,
    state: &web::Data<AppState>,
    counters: web::Data<Counters>,
    log: &slog::Logger,
) -> Result<actix_web::dev::Server, StartError> {
    let addr = format!("{}:{port}", config.admin_host);
    let listen_error = |source| StartError::Listen {
        addr: addr.clone(),
        source,
    };
    let token = config.admin_token()?;
    if token.is_none() {
        slog::warn!(log, "the admin API has no token: anyone who reaches it can prune"; "addr" => &addr);
    }
    let admin = web::Data::new(AdminState {
        storage: state.storage.clone(),
        coordinator: state.coordinator.clone(),
        root: config.image_path.clone(),
        token,
        counters,
    });
    let listener = TcpListener::bind(&addr).map_err(listen_error)?;
    slog::info!(log, "admin API listening"; "addr" => %listener.local_addr().map_err(listen_error)?);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(admin.clone())
            .wrap(from_fn(admin::require_token))
            .configure(admin::routes)
    })
    .workers(1)
    .listen(listener)
    .map_err(listen_error)?
    .run())
}

/// Loads a preload source while the server already serves.
async fn preload_in_background(
    storage: actix::Addr<Storage>,
    coordinator: actix::Addr<PullCoordinator>,
    source: Source,
    root: PathBuf,
    log: slog::Logger,
) {
    match source {
        Source::List(images) => {
            let loader = Loader {
                storage,
                coordinator,
                platforms: Vec::new(),
                log: log.clone(),
            };
            let summary = loader.load_all(images, PRELOAD_CONCURRENCY).await;
            slog::info!(log, "preload finished"; "loaded" => summary.loaded, "failed" => summary.failed);
        }
        Source::Tarball(path) => match crate::tarball::import(&storage, &path, &root, None).await {
            Ok(names) => slog::info!(log, "preload finished"; "images" => names.join(", ")),
            Err(e) => {
                slog::error!(log, "preload failed"; "tarball" => %path.display(), "error" => e)
            }
        },
    }
}
