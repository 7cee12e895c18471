//! Start-up: open the cache, start the actors, bind, serve.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_http::HttpService;
use actix_server::{GracefulShutdownSignal, Server};
use actix_service::{fn_service, map_config, ServiceFactory, ServiceFactoryExt};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::rt::net::{TcpSocket, TcpStream};
use actix_web::{middleware::from_fn, web, App, HttpServer};
use futures::future::ready;
use futures::future::Either;
use ociregistry_actors::coordinator::{Drain, PullCoordinator, Unlisted};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::storage::{Flush, Layout, Prune, Storage};
use ociregistry_actors::upstream::{
    require_native_roots, ProxyEnvError, ProxyRules, ServerTlsConfig, TlsError,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admin::{self, AdminState};
use crate::config::{ClientLimits, Config, ConfigError};
use crate::connections::{ClientStream, Connections, Refused};
use crate::preload::{Loader, Source};
use crate::prune::PruneSpec;

/// Images preloaded at once.
const PRELOAD_CONCURRENCY: usize = 4;

/// Connections the kernel queues before the server accepts them (a node
/// fleet starting at once connects in a burst).
const LISTEN_BACKLOG: u32 = 4096;

/// The lock file a running server holds in its cache directory.
const LOCK_FILE: &str = ".lock";
use crate::handlers;
use crate::state::{AppState, Policy};

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
    /// `HTTP_PROXY`, `HTTPS_PROXY` or `NO_PROXY` is unusable.
    #[error("egress proxy: {0}")]
    Proxy(#[from] ProxyEnvError),
    /// `serverTlsConfig` is unusable.
    #[error("serverTlsConfig: {0}")]
    ServerTls(TlsError),
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
        let env_proxy = ProxyRules::from_env()?;
        let upstreams = config.upstreams(&env_proxy)?;
        let cache_error = |source| StartError::Cache {
            path: config.image_path.clone(),
            source,
        };
        std::fs::create_dir_all(&config.image_path).map_err(cache_error)?;
        let lock = lock_cache(&config.image_path)?;
        let storage = Storage::open(
            config.backend()?,
            Layout::new(&config.image_path),
            config.retention()?,
            log.clone(),
        )
        .await
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
        let unlisted = unlisted(config, env_proxy)?;
        let coordinator = PullCoordinator::start(
            storage.clone(),
            upstreams,
            unlisted,
            config.fetch_limits()?,
            log.clone(),
        )?;
        Ok(Self {
            storage,
            coordinator,
            _lock: lock,
            _storage_thread: storage_thread,
        })
    }
}

/// The serving policy `config` says.
pub fn policy(config: &Config) -> Result<Policy, ConfigError> {
    Ok(Policy {
        default_ns: config.default_ns.clone(),
        air_gapped: config.air_gapped,
        tags: config.tag_policies(),
        pull_timeout: config.pull_timeout(),
        listed: config.registry_names()?,
        hosts: config.host_rules()?,
        catalog: config.catalog,
    })
}

/// How `config` reaches registries it does not list (`proxy`: the
/// environment's egress proxies).
pub fn unlisted(config: &Config, proxy: ProxyRules) -> Result<Unlisted, ConfigError> {
    Ok(Unlisted {
        timeouts: config.timeouts()?,
        proxy,
        mirror: config.upstream_mirror.as_ref().map(|u| u.0.clone()),
        guard: Arc::new(config.host_rules()?),
    })
}

/// Runs the server on the configured registry address until SIGTERM or
/// SIGINT (a second signal exits at once), then shuts down as [`serve`]
/// says.
pub async fn run(config: Config, start: Start, log: slog::Logger) -> Result<(), StartError> {
    let listen = |e| listen_error(&config.host, config.port, e);
    let registry = bind((config.host.as_str(), config.port)).map_err(listen)?;
    let signalled = async {
        let name = shutdown_signal().await;
        actix::spawn(async {
            shutdown_signal().await;
            std::process::exit(1);
        });
        name
    };
    serve(config, registry, start, signalled, log).await
}

/// What a server does once at start-up besides opening the cache.
#[derive(Debug, Default)]
pub struct Start {
    /// Install the embedded demo image.
    pub hello_world: bool,
    /// Images to load in the background: what is cached serves at once,
    /// and an unreachable upstream never delays start-up.
    pub preload: Option<Source>,
    /// The command line the configuration came from: reloaded on SIGHUP
    /// and when its files change ([`crate::reload`]).
    pub reload: Option<crate::cli::Cli>,
}

/// Serves the registry port on `registry` (bound by the caller: [`run`],
/// or a test on `127.0.0.1:0`), and the admin, metrics and health ports
/// the configuration names, until `shutdown` resolves (with a name for the
/// log); then stops accepting, lets client transfers and upstream fetches
/// in flight finish within `drainTimeout`, saves what is pending and
/// returns. Prints `ociregistry listening on http(s)://ADDR` on stdout once
/// it accepts.
pub async fn serve(
    config: Config,
    registry: Vec<std::net::TcpListener>,
    start: Start,
    shutdown: impl Future<Output = &'static str>,
    log: slog::Logger,
) -> Result<(), StartError> {
    let Start {
        hello_world,
        preload,
        reload,
    } = start;
    let limits = config.client_limits()?;
    let (tls, certs) = match config.server_tls()? {
        Some(settings) => {
            let (tls, certs) = settings.server_config().map_err(StartError::ServerTls)?;
            (Some(tls), Some(certs))
        }
        None => (None, None),
    };
    let cache = Cache::open(&config, hello_world, &log).await?;
    let (storage, coordinator) = (cache.storage.clone(), cache.coordinator.clone());
    if let Some(source) = preload {
        actix::spawn(preload_in_background(
            storage.clone(),
            coordinator.clone(),
            source,
            Layout::new(&config.image_path).scratch(),
            config.import_limit(),
            log.clone(),
        ));
    }
    let state = web::Data::new(AppState {
        stopping: Default::default(),
        certs,
        storage,
        coordinator,
        policy: std::sync::RwLock::new(Arc::new(policy(&config)?)),
        log: log.clone(),
    });
    if let Some(cli) = reload {
        actix::spawn(crate::reload::watch(
            cli,
            config.clone(),
            state.clone(),
            log.clone(),
        ));
    }
    if let Some((every, spec)) = config.scheduled_prune()? {
        actix::spawn(scheduled_prune(
            state.storage.clone(),
            every,
            spec,
            log.clone(),
        ));
    }

    raise_open_files_limit(limits.max_connections, &log);
    let (registry, local, scheme) = registry_server(&config, registry, &limits, tls, &state)?;
    let mut servers = vec![registry];
    if let Some(port) = config.admin_port {
        servers.push(admin_server(&config, port, &state, limits.drain, &log)?);
    }
    if let Some(port) = config.metrics {
        let server = side_server(&config.host, port, &state, limits.drain, |app| {
            app.route("/metrics", web::get().to(crate::probes::metrics));
        })?;
        slog::info!(log, "metrics listening"; "addr" => format!("{}:{port}", config.host));
        servers.push(server);
    }
    if let Some(port) = config.health {
        let server = side_server(&config.host, port, &state, limits.drain, |app| {
            app.default_service(web::to(crate::probes::probe));
        })?;
        slog::info!(log, "health checks listening"; "addr" => format!("{}:{port}", config.host));
        servers.push(server);
    }
    slog::info!(log, "listening"; "addr" => %local, "scheme" => scheme,
        "cache" => %config.image_path.display(), "air_gapped" => config.air_gapped);
    println!("ociregistry listening on {scheme}://{local}");

    serve_until(servers, shutdown, &state, &limits, &log)
        .await
        .map_err(|e| listen_error(&config.host, config.port, e))?;
    let _ = state.storage.send(Flush).await;
    slog::info!(log, "stopped");
    Ok(())
}

/// The registry port's server with the client limits, over TLS when
/// configured; also its bound address and scheme.
///
/// Assembled like actix-web's `HttpServer` does it, plus a
/// [`ClientStream`] around every connection: see [`crate::connections`].
fn registry_server(
    config: &Config,
    listeners: Vec<std::net::TcpListener>,
    limits: &ClientLimits,
    tls: Option<ServerTlsConfig>,
    state: &web::Data<AppState>,
) -> Result<(actix_web::dev::Server, SocketAddr, &'static str), StartError> {
    let listen = |e| listen_error(&config.host, config.port, e);
    let first = listeners
        .first()
        .ok_or_else(|| listen(std::io::Error::other("no listener")));
    let local = first?.local_addr().map_err(listen)?;
    let connections = Connections::new(limits);
    let mut builder = Server::build()
        .workers(workers())
        .max_concurrent_connections(limits.max_connections.div_ceil(workers()))
        .shutdown_timeout(drain_secs(limits.drain))
        .disable_signals();
    let shutdown = builder.graceful_shutdown_signal();
    let limits = *limits;
    for listener in listeners {
        let addr = listener.local_addr().map_err(listen)?;
        let (connections, state, shutdown) = (connections.clone(), state.clone(), shutdown.clone());
        builder = match tls.clone() {
            None => builder.listen("registry", listener, move || {
                admission(&connections).and_then(http_service::<ClientStream>(
                    &limits, addr, &state, &shutdown,
                ))
            }),
            Some(tls) => builder.listen("registry", listener, move || {
                admission(&connections)
                    .and_then(Acceptor::new(tls.clone()).map_err(ConnectionError::Tls))
                    .and_then(http_service::<TlsStream<ClientStream>>(
                        &limits, addr, &state, &shutdown,
                    ))
            }),
        }
        .map_err(listen)?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok((builder.run(), local, scheme))
}

/// What ended a client connection early (actix-server drops it).
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// Refused before it was served.
    #[error(transparent)]
    Refused(Refused),
    /// The TLS handshake failed.
    #[error("TLS: {0:?}")]
    Tls(actix_tls::accept::TlsError<std::io::Error, std::convert::Infallible>),
    /// HTTP failed.
    #[error("HTTP: {0}")]
    Http(actix_http::error::DispatchError),
}

/// A client connection's stream as HTTP reads it: plain or TLS.
trait ClientIo: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The TCP stream underneath.
    fn client(&self) -> &ClientStream;
}

impl ClientIo for ClientStream {
    fn client(&self) -> &ClientStream {
        self
    }
}

impl ClientIo for TlsStream<ClientStream> {
    fn client(&self) -> &ClientStream {
        self.get_ref().0
    }
}

/// Takes each accepted connection into `connections`, or refuses it.
fn admission(
    connections: &Arc<Connections>,
) -> impl ServiceFactory<
    TcpStream,
    Config = (),
    Response = ClientStream,
    Error = ConnectionError,
    InitError = (),
> {
    let connections = connections.clone();
    fn_service(move |io| ready(connections.admit(io).map_err(ConnectionError::Refused)))
}

/// The registry's HTTP/1 service over client streams of type `T`; each
/// request carries its [`Connection`] (see [`crate::connections::track`]).
fn http_service<T: ClientIo>(
    limits: &ClientLimits,
    addr: SocketAddr,
    state: &web::Data<AppState>,
    shutdown: &GracefulShutdownSignal,
) -> impl ServiceFactory<T, Config = (), Response = (), Error = ConnectionError, InitError = ()> {
    let shutdown = shutdown.clone();
    // `AppConfig` feeds only `ConnectionInfo` (scheme and host when a
    // request names none), which this server never reads; actix-web keeps
    // its constructor to itself.
    let app = map_config(registry_app(state.clone()), |_| AppConfig::default());
    let h1 = HttpService::build()
        .client_request_timeout(limits.header_timeout)
        .keep_alive(limits.keep_alive)
        .local_addr(addr)
        // On shutdown, idle connections close and answers in flight end
        // their connection (as in actix-web's `HttpServer`).
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .on_connect_ext(|io: &T, data| {
            data.insert(io.client().connection().clone());
        })
        .h1(app);
    fn_service(|io: T| {
        let peer = Some(io.client().peer());
        ready(Ok((io, peer)))
    })
    .and_then(h1.map_err(ConnectionError::Http))
}

/// The registry's application: every request tracked on its connection,
/// logged, then dispatched.
fn registry_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap(nosniff())
        .wrap(from_fn(crate::access_log::log_request))
        .wrap(from_fn(crate::connections::track))
        .default_service(web::to(handlers::dispatch))
}

/// Listening sockets on every address `addr` resolves to (at least one),
/// with the server's backlog.
fn bind(addr: impl ToSocketAddrs) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::new();
    let mut failure = None;
    for addr in addr.to_socket_addrs()? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let listener = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(LISTEN_BACKLOG)?.into_std()
        });
        match listener {
            Ok(l) => listeners.push(l),
            Err(e) => failure = Some(e),
        }
    }
    match (listeners.is_empty(), failure) {
        (false, _) => Ok(listeners),
        (true, Some(e)) => Err(e),
        (true, None) => Err(std::io::Error::other("the address resolves to nothing")),
    }
}

/// Runs `servers` until one fails or `shutdown` resolves; then turns
/// `/ready` to 503, keeps accepting for the shutdown delay (load balancers
/// stop sending meanwhile), stops the servers gracefully (in-flight
/// responses finish) and waits, up to the drain time in all, for the
/// coordinator's upstream fetches.
async fn serve_until(
    servers: Vec<actix_web::dev::Server>,
    shutdown: impl Future<Output = &'static str>,
    state: &AppState,
    limits: &ClientLimits,
    log: &slog::Logger,
) -> std::io::Result<()> {
    let drain = limits.drain;
    let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
    let stopped = futures::future::try_join_all(servers);
    futures::pin_mut!(stopped);
    futures::pin_mut!(shutdown);
    let (name, mut stopped) = match futures::future::select(stopped, shutdown).await {
        Either::Left((result, _)) => return result.map(drop),
        Either::Right(signalled) => signalled,
    };
    state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    slog::info!(log, "shutting down: unready, still accepting";
        "by" => name, "shutdown_delay_ms" => limits.shutdown_delay.as_millis() as u64);
    let delay = tokio::time::sleep(limits.shutdown_delay);
    futures::pin_mut!(delay);
    if let Either::Left((result, _)) = futures::future::select(stopped.as_mut(), delay).await {
        return result.map(drop);
    }
    slog::info!(log, "shutting down: draining transfers in flight";
        "drain_timeout_ms" => drain.as_millis() as u64);
    let deadline = tokio::time::Instant::now() + drain;
    // The servers' futures must run while they process the stop.
    let stops = futures::future::join_all(handles.iter().map(|h| h.stop(true)));
    let _ = futures::future::join(stops, stopped).await;
    if tokio::time::timeout_at(deadline, state.coordinator.send(Drain))
        .await
        .is_err()
    {
        slog::warn!(
            log,
            "drain timeout: upstream fetches still in flight are abandoned"
        );
    }
    Ok(())
}

/// Resolves with the signal's name on SIGTERM or SIGINT.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// actix's shutdown timeout (whole seconds) for a drain time, rounded up.
fn drain_secs(drain: Duration) -> u64 {
    drain.as_secs() + u64::from(drain.subsec_nanos() > 0)
}

/// Worker threads of the registry port: one per core.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Raises the soft open-files limit to the hard one: every client
/// connection and every blob being served holds a descriptor, and soft
/// limits of 1024 are common. Warns when the limit stays below what
/// `maxConnections` needs.
fn raise_open_files_limit(max_connections: usize, log: &slog::Logger) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 2 * max_connections as u64 => {
            slog::warn!(log, "open-files limit is below twice maxConnections";
                "limit" => limit, "max_connections" => max_connections)
        }
        Ok(_) => {}
        Err(e) => slog::warn!(log, "could not raise the open-files limit"; "error" => %e),
    }
}

/// The error of a listener on `host:port`.
fn listen_error(host: &str, port: u16, source: std::io::Error) -> StartError {
    StartError::Listen {
        addr: format!("{host}:{port}"),
        source,
    }
}

/// A plain-HTTP server of one worker on `host:port` (metrics, health).
fn side_server(
    host: &str,
    port: u16,
    state: &web::Data<AppState>,
    drain: Duration,
    routes: fn(&mut web::ServiceConfig),
) -> Result<actix_web::dev::Server, StartError> {
    let state = state.clone();
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(nosniff())
            .configure(routes)
    })
    .workers(1)
    .shutdown_timeout(drain_secs(drain))
    .disable_signals()
    .bind((host, port))
    .map_err(|e| listen_error(host, port, e))?
    .run())
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
            Ok(Ok(report)) => slog::info!(log, "scheduled prune"; "dry_run" => report.dry_run,
                "images" => report.images.len(), "bytes" => report.bytes),
            // Another replica of the shared store prunes.
            Ok(Err(e)) => slog::debug!(log, "scheduled prune skipped"; "reason" => %e),
            Err(_) => return,
        }
    }
}

/// `X-Content-Type-Options: nosniff` on every response of every port:
/// browsers never guess a type for cached content.
fn nosniff() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff"))
}

/// The admin API's server, on its own address.
fn admin_server(
    config: &Config,
    port: u16,
    state: &web::Data<AppState>,
    drain: Duration,
    log: &slog::Logger,
) -> Result<actix_web::dev::Server, StartError> {
    let token = config.admin_token()?;
    let addr = format!("{}:{port}", config.admin_host);
    if token.is_none() {
        slog::warn!(log, "the admin API has no token: it listens on loopback only, and any local process can prune"; "addr" => &addr);
    }
    let admin = web::Data::new(AdminState {
        storage: state.storage.clone(),
        coordinator: state.coordinator.clone(),
        token,
    });
    slog::info!(log, "admin API listening"; "addr" => &addr);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(admin.clone())
            .wrap(nosniff())
            .wrap(from_fn(admin::require_token))
            .configure(admin::routes)
    })
    .workers(1)
    .shutdown_timeout(drain_secs(drain))
    .disable_signals()
    .bind((config.admin_host.as_str(), port))
    .map_err(|e| listen_error(&config.admin_host, port, e))?
    .run())
}

/// Loads a preload source while the server already serves.
async fn preload_in_background(
    storage: actix::Addr<Storage>,
    coordinator: actix::Addr<PullCoordinator>,
    source: Source,
    scratch: PathBuf,
    limit: u64,
    log: slog::Logger,
) {
    match source {
        Source::List(images) => {
            let loader = Loader {
                storage,
                coordinator,
                platforms: Vec::new(),
                referrers: false,
                log: log.clone(),
            };
            let summary = loader.load_all(images, PRELOAD_CONCURRENCY).await;
            slog::info!(log, "preload finished"; "loaded" => summary.loaded, "failed" => summary.failed);
        }
        Source::Tarball(path) => {
            match crate::tarball::import(&storage, &path, &scratch, None, limit).await {
                Ok(names) => slog::info!(log, "preload finished"; "images" => names.join(", ")),
                Err(e) => {
                    slog::error!(log, "preload failed"; "tarball" => %path.display(), "error" => %e)
                }
            }
        }
    }
}
