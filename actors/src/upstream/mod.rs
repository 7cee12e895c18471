//! The UpstreamRegistry actor: one per upstream registry. It owns that
//! registry's HTTP client (connection pool, TLS session cache) and its auth
//! state (bearer tokens), and turns requests into verified-ready answers:
//! manifest bytes, or a blob body as a bounded channel of chunks.
//!
//! awc clients are bound to one thread, so each actor lives on an arbiter
//! and hands bodies to other threads only as `Send` chunks.

mod auth;
pub mod guard;
mod health;
mod proxy;
mod settings;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use actix::prelude::*;
use awc::http::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use awc::http::{Method, StatusCode};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use self::auth::{Challenge, TokenCache, TokenResponse};
pub use self::proxy::{ProxyEnvError, ProxyError, ProxyRules};
pub use self::settings::{
    default_endpoint, require_native_roots, Credentials, ParallelFetch, PreparedCerts, ServerCerts,
    ServerTlsSettings, Timeouts, TlsError, TlsSettings, UpstreamSettings,
};
use crate::error::FetchError;
use crate::listing::{check_referrers, merge_referrer_pages, MAX_LISTING_BYTES};
use crate::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX, UPSTREAM_ACCEPT};
use crate::metrics::{self, METRICS};
use crate::names::{Digest, Reference, RepoName, Tag};
/// The server-side TLS configuration [`ServerTlsSettings::server_config`] builds.
pub use rustls::ServerConfig as ServerTlsConfig;

/// Batches buffered between an upstream body and the blob writer: bounds
/// memory per download while keeping the socket busy.
const BODY_CHANNEL_BATCHES: usize = 16;
/// Most bytes passed on in one batch of an upstream body's chunks.
const BODY_BATCH: usize = 256 * 1024;
/// Largest token-server answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Redirects followed (blob downloads from CDNs and object stores).
const MAX_REDIRECTS: u8 = 10;

/// The UpstreamRegistry actor. See the module documentation.
pub struct UpstreamRegistry {
    /// State shared with the request futures the actor spawns.
    inner: Rc<Inner>,
}

/// What the request futures need.
struct Inner {
    /// Endpoints, credentials, timeouts.
    settings: UpstreamSettings,
    /// Connection pool and TLS configuration for this registry.
    client: awc::Client,
    /// Bearer tokens by scope.
    tokens: RefCell<TokenCache>,
    /// Set once the registry asked for Basic auth: later requests send it at once.
    basic_required: Cell<bool>,
    /// Connection failures and back-off.
    health: RefCell<health::Health>,
    /// Registry-scoped logger.
    log: slog::Logger,
    /// This registry's metrics label.
    label: metrics::RegistryLabel,
}

impl UpstreamRegistry {
    /// Starts the actor on `arbiter`, building its client there.
    pub fn start_on(
        arbiter: &actix::ArbiterHandle,
        settings: UpstreamSettings,
        tls: std::sync::Arc<rustls::ClientConfig>,
        log: slog::Logger,
    ) -> Addr<Self> {
        Self::start_in_arbiter(arbiter, move |_| {
            let timeouts = settings.timeouts;
            let builder = awc::Client::builder()
                .timeout(timeouts.response)
                .max_redirects(MAX_REDIRECTS);
            let connector = awc::Connector::new()
                .rustls_0_23(tls)
                .timeout(timeouts.connect)
                .handshake_timeout(timeouts.connect);
            let tcp = proxy::Dialer::new(settings.proxy.clone(), settings.guard.clone());
            let client = builder.connector(connector.connector(tcp)).finish();
            let log = log.new(slog::o!("upstream" => settings.name.to_string()));
            let label = metrics::registry_label(if settings.unlisted {
                metrics::OTHER_REGISTRY
            } else {
                settings.name.as_str()
            });
            Self {
                inner: Rc::new(Inner {
                    label,
                    settings,
                    client,
                    tokens: RefCell::default(),
                    basic_required: Cell::new(false),
                    health: RefCell::default(),
                    log,
                }),
            }
        })
    }
}

impl Actor for UpstreamRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

/// Fetch a manifest (bytes not yet verified: the coordinator checks them).
#[derive(Message)]
#[rtype(result = "Result<ManifestResponse, FetchError>")]
pub struct GetManifest {
    /// Repository in the upstream.
    pub repo: RepoName,
    /// Tag or digest.
    pub reference: Reference,
}

/// An upstream's manifest answer.
#[derive(Debug)]
pub struct ManifestResponse {
    /// The body, at most [`MAX_MANIFEST_BYTES`].
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its `Docker-Content-Digest`.
    pub digest: Option<String>,
}

impl Handler<GetManifest> for UpstreamRegistry {
    type Result = ResponseFuture<Result<ManifestResponse, FetchError>>;

    fn handle(&mut self, msg: GetManifest, _: &mut Self::Context) -> Self::Result {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            let path = inner.manifest_path(&msg.repo, &msg.reference);
            let mut resp = inner.get(&path, UPSTREAM_ACCEPT, &msg.repo).await?;
            check_status(&resp)?;
            if content_length(&resp).is_some_and(|l| l > MAX_MANIFEST_BYTES as u64) {
                return Err(FetchError::BadResponse(format!(
                    "manifest larger than {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (content_type, digest) = (
                header(CONTENT_TYPE.as_str()),
                header("docker-content-digest"),
            );
            let bytes = tokio::time::timeout(
                inner.settings.timeouts.idle,
                resp.body().limit(MAX_MANIFEST_BYTES),
            )
            .await
            .map_err(|_| FetchError::Timeout("manifest body stalled".into()))?
            .map_err(|e| FetchError::BadResponse(format!("manifest body: {e}")))?;
            Ok(ManifestResponse {
                bytes,
                content_type,
                digest,
            })
        })
    }
}

/// How an upstream is doing.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamHealth {
    /// The registry.
    pub registry: String,
    /// Consecutive requests on which it could not be reached.
    pub failures: u32,
    /// Seconds it is still backed off (not dialled), if it is.
    pub backed_off_for: Option<u64>,
}

/// Ask an upstream actor for its [`UpstreamHealth`].
#[derive(Message)]
#[rtype(result = "UpstreamHealth")]
pub struct GetHealth;

impl Handler<GetHealth> for UpstreamRegistry {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Self::Context) -> Self::Result {
        let health = self.inner.health.borrow();
        MessageResult(UpstreamHealth {
            registry: self.inner.settings.name.to_string(),
            failures: health.failures(),
            backed_off_for: health.backing_off().map(|d| d.as_secs() + 1),
        })
    }
}

/// Ask for a tag's current digest with a HEAD (cheaper than a GET, and not
/// counted against Docker Hub's pull limits).
#[derive(Message)]
#[rtype(result = "Result<Option<Digest>, FetchError>")]
pub struct HeadManifest {
    /// Repository in the upstream.
    pub repo: RepoName,
    /// Tag or digest.
    pub reference: Reference,
}

impl Handler<HeadManifest> for UpstreamRegistry {
    type Result = ResponseFuture<Result<Option<Digest>, FetchError>>;

    fn handle(&mut self, msg: HeadManifest, _: &mut Self::Context) -> Self::Result {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            let path = inner.manifest_path(&msg.repo, &msg.reference);
            let resp = inner
                .request(Method::HEAD, &path, UPSTREAM_ACCEPT, &msg.repo, None)
                .await?;
            check_status(&resp)?;
            Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Digest::parse(v).ok()))
        })
    }
}

/// Every tag of a repository, as the upstream lists them (all pages).
#[derive(Message)]
#[rtype(result = "Result<Vec<Tag>, FetchError>")]
pub struct ListTags {
    /// Repository.
    pub repo: RepoName,
}

impl Handler<ListTags> for UpstreamRegistry {
    type Result = ResponseFuture<Result<Vec<Tag>, FetchError>>;

    fn handle(&mut self, msg: ListTags, _: &mut Self::Context) -> Self::Result {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            let path = format!("/v2/{}/tags/list{}", msg.repo, inner.ns_query());
            let pages = inner.pages(path, "application/json", &msg.repo).await?;
            #[derive(serde::Deserialize)]
            struct List {
                tags: Option<Vec<String>>,
            }
            let mut tags = Vec::new();
            for page in pages {
                let list: List = serde_json::from_slice(&page)
                    .map_err(|e| FetchError::BadResponse(format!("tag list: {e}")))?;
                let names = list.tags.unwrap_or_default();
                tags.extend(names.iter().filter_map(|t| Tag::parse(t).ok()));
            }
            Ok(tags)
        })
    }
}

/// The referrers of a manifest: an OCI image index, checked, the pages of
/// a paginated answer merged. `NotFound` when the upstream has no
/// referrers API.
#[derive(Message)]
#[rtype(result = "Result<Bytes, FetchError>")]
pub struct GetReferrers {
    /// Repository.
    pub repo: RepoName,
    /// The subject manifest.
    pub subject: Digest,
}

impl Handler<GetReferrers> for UpstreamRegistry {
    type Result = ResponseFuture<Result<Bytes, FetchError>>;

    fn handle(&mut self, msg: GetReferrers, _: &mut Self::Context) -> Self::Result {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            let path = format!(
                "/v2/{}/referrers/{}{}",
                msg.repo,
                msg.subject,
                inner.ns_query()
            );
            let pages = inner.pages(path, OCI_INDEX, &msg.repo).await?;
            let checked = pages
                .into_iter()
                .map(|page| check_referrers(&page).map(|index| (page, index)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(merge_referrer_pages(checked))
        })
    }
}

/// Most pages of one listing followed (upstreams page tag lists at 50 to
/// 1,000; the 4 MiB bound on all pages holds memory).
const MAX_PAGES: usize = 1024;

/// Start downloading a blob, or the bytes `range` of it.
#[derive(Message)]
#[rtype(result = "Result<BlobBody, FetchError>")]
pub struct OpenBlob {
    /// Repository the client asked through (upstreams authorise per repository).
    pub repo: RepoName,
    /// The blob.
    pub digest: Digest,
    /// Only these bytes (`start..end`), if set. An upstream may answer
    /// with the whole blob instead: see [`BlobBody::start`].
    pub range: Option<std::ops::Range<u64>>,
}

/// A blob body arriving from upstream.
#[derive(Debug)]
pub struct BlobBody {
    /// The announced `Content-Length` of this body.
    pub size: Option<u64>,
    /// Where in the blob this body starts: 0 for a whole blob (also when
    /// a range was asked and the upstream ignored it), else the start of
    /// the range asked.
    pub start: u64,
    /// The whole blob's size when known: from `Content-Range` of a ranged
    /// answer, else `size`.
    pub total: Option<u64>,
    /// Body chunks, in batches of those that arrived together (up to 256
    /// KiB, never copied); an `Err` ends the transfer (reset, stall).
    pub chunks: mpsc::Receiver<Result<Vec<Bytes>, FetchError>>,
}

impl Handler<OpenBlob> for UpstreamRegistry {
    type Result = ResponseFuture<Result<BlobBody, FetchError>>;

    fn handle(&mut self, msg: OpenBlob, _: &mut Self::Context) -> Self::Result {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            let path = format!("/v2/{}/blobs/{}{}", msg.repo, msg.digest, inner.ns_query());
            let asked = msg
                .range
                .as_ref()
                .map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
            let mut resp = inner
                .request(Method::GET, &path, "*/*", &msg.repo, asked.as_deref())
                .await?;
            if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                // An empty blob has no byte 0: asked again whole.
                resp = inner.get(&path, "*/*", &msg.repo).await?;
            }
            let (start, total, size) = match (resp.status(), &msg.range) {
                (StatusCode::PARTIAL_CONTENT, Some(range)) => {
                    let answered = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(content_range);
                    let size = content_length(&resp);
                    match answered {
                        Some((start, end, total))
                            if start == range.start
                                && end == range.end.min(total)
                                && size.is_none_or(|s| s == end - start) =>
                        {
                            (start, Some(total), Some(end - start))
                        }
                        _ => {
                            return Err(FetchError::BadResponse(
                                "a ranged answer for other bytes than asked".into(),
                            ))
                        }
                    }
                }
                _ => {
                    check_status(&resp)?;
                    let size = content_length(&resp);
                    (0, size, size)
                }
            };
            let (tx, chunks) = mpsc::channel(BODY_CHANNEL_BATCHES);
            let fetched = METRICS.upstream_bytes.get_or_create(&inner.label).clone();
            actix::spawn(pump(resp, tx, inner.settings.timeouts.idle, fetched));
            Ok(BlobBody {
                size,
                start,
                total,
                chunks,
            })
        })
    }
}

/// Forwards an upstream body into `tx`, cutting it when a chunk takes
/// longer than `idle` (a stalled transfer), however long the whole takes.
/// Chunks already received are sent together, up to [`BODY_BATCH`] bytes,
/// so the work per message downstream (thread wake-ups, waking readers) is
/// paid per batch rather than per socket read.
async fn pump<S>(
    mut body: S,
    tx: mpsc::Sender<Result<Vec<Bytes>, FetchError>>,
    idle: std::time::Duration,
    fetched: prometheus_client::metrics::counter::Counter,
) where
    S: futures::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    loop {
        let first = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Err(FetchError::Timeout(format!(
                "no data for {}s",
                idle.as_secs()
            ))),
            Ok(None) => return,
            Ok(Some(chunk)) => chunk.map_err(interrupted),
        };
        let chunk = match first {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let (batch, end) = gather(chunk, &mut body);
        fetched.inc_by(batch.iter().map(|c| c.len() as u64).sum());
        if tx.send(Ok(batch)).await.is_err() {
            return;
        }
        match end {
            None => {}
            Some(Ok(())) => return,
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// A body that broke off.
fn interrupted(e: awc::error::PayloadError) -> FetchError {
    FetchError::Unreachable(format!("transfer interrupted: {e}"))
}

/// Batches `first` with the chunks `body` has ready now, up to
/// [`BODY_BATCH`] bytes. Returns the batch and, if the body ended
/// meanwhile, how: `Ok` at its end, `Err` when it broke.
fn gather<S>(first: Bytes, body: &mut S) -> (Vec<Bytes>, Option<Result<(), FetchError>>)
where
    S: futures::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut len = first.len();
    let mut batch = vec![first];
    while len < BODY_BATCH {
        match body.next().now_or_never() {
            Some(Some(Ok(chunk))) => {
                len += chunk.len();
                batch.push(chunk);
            }
            Some(Some(Err(e))) => return (batch, Some(Err(interrupted(e)))),
            Some(None) => return (batch, Some(Ok(()))),
            None => break,
        }
    }
    (batch, None)
}

impl Inner {
    /// `?ns=<registry>` when the endpoint is another ociregistry, else nothing.
    fn ns_query(&self) -> String {
        self.settings
            .ns
            .as_ref()
            .map(|ns| format!("?ns={ns}"))
            .unwrap_or_default()
    }

    /// The upstream path of a manifest.
    fn manifest_path(&self, repo: &RepoName, reference: &Reference) -> String {
        format!("/v2/{repo}/manifests/{reference}{}", self.ns_query())
    }

    /// The bodies of `path` and of the pages its `Link: <...>; rel="next"`
    /// headers lead to (paths on this registry only), within
    /// [`MAX_LISTING_BYTES`] and [`MAX_PAGES`].
    async fn pages(
        &self,
        mut path: String,
        accept: &str,
        repo: &RepoName,
    ) -> Result<Vec<Bytes>, FetchError> {
        let mut pages: Vec<Bytes> = Vec::new();
        let mut read = 0;
        loop {
            let mut resp = self.get(&path, accept, repo).await?;
            check_status(&resp)?;
            let next = resp
                .headers()
                .get(awc::http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|link| self.next_page(link));
            let room = MAX_LISTING_BYTES - read;
            let body = tokio::time::timeout(self.settings.timeouts.idle, resp.body().limit(room))
                .await
                .map_err(|_| FetchError::Timeout("listing body stalled".into()))?
                .map_err(|e| FetchError::BadResponse(format!("listing body: {e}")))?;
            read += body.len();
            pages.push(body);
            match next {
                Some(next) if pages.len() < MAX_PAGES => path = next,
                Some(_) => {
                    return Err(FetchError::BadResponse(format!(
                        "listing of more than {MAX_PAGES} pages"
                    )))
                }
                None => return Ok(pages),
            }
        }
    }

    /// The path of a `Link` header's next page, when it is on this
    /// registry (a path, or a URL under one of its endpoints).
    fn next_page(&self, link: &str) -> Option<String> {
        let target = link
            .split(',')
            .find(|l| l.contains("rel=\"next\""))?
            .split_once('<')?
            .1
            .split_once('>')?
            .0;
        let path = match target.strip_prefix('/') {
            Some(_) => target,
            None => self
                .settings
                .endpoints
                .iter()
                .find_map(|e| target.strip_prefix(e.trim_end_matches('/')))?,
        };
        path.starts_with("/v2/").then(|| path.to_string())
    }

    /// GETs `path`, trying each endpoint in order: a connection error or a
    /// 5xx moves to the next one.
    async fn get(
        &self,
        path: &str,
        accept: &str,
        repo: &RepoName,
    ) -> Result<awc::ClientResponse, FetchError> {
        self.request(Method::GET, path, accept, repo, None).await
    }

    /// Sends `method path`, trying each endpoint in order: a connection
    /// error or a 5xx moves to the next one. While the registry is in
    /// back-off after repeated connection failures, fails at once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        repo: &RepoName,
        range: Option<&str>,
    ) -> Result<awc::ClientResponse, FetchError> {
        if let Some(wait) = self.health.borrow().backing_off() {
            return Err(FetchError::Unreachable(format!(
                "not dialled for another {}s after repeated connection failures",
                wait.as_secs() + 1
            )));
        }
        let mut last = FetchError::Unreachable("no endpoint configured".into());
        let mut dial_failures = 0;
        for endpoint in &self.settings.endpoints {
            match self
                .request_from(endpoint, method.clone(), path, accept, repo, range)
                .await
            {
                Ok(resp) if resp.status().is_server_error() => {
                    slog::warn!(self.log, "upstream error"; "endpoint" => endpoint, "status" => resp.status().as_u16());
                    last =
                        FetchError::Unreachable(format!("{endpoint} answered {}", resp.status()));
                }
                Err(FetchError::Guarded) => return Err(FetchError::Guarded),
                Err(e @ (FetchError::Unreachable(_) | FetchError::Timeout(_))) => {
                    slog::warn!(self.log, "upstream unreachable"; "endpoint" => endpoint, "error" => %e);
                    dial_failures += 1;
                    last = e;
                }
                other => {
                    self.health.borrow_mut().succeeded();
                    self.set_up(1);
                    return other;
                }
            }
        }
        if dial_failures == self.settings.endpoints.len() {
            if let Some(backoff) = self.health.borrow_mut().failed() {
                slog::warn!(self.log, "upstream marked down"; "retry_in_s" => backoff.as_secs());
                self.set_up(0);
            }
        } else {
            self.health.borrow_mut().succeeded();
        }
        Err(self.client_error(last))
    }

    /// The error clients see. For registries clients chose, connection
    /// details (addresses, ports, OS and TLS errors) stay in the log, so
    /// the mirror cannot be used to probe networks.
    fn client_error(&self, e: FetchError) -> FetchError {
        match e {
            FetchError::Unreachable(_) if self.settings.guard.is_some() => {
                FetchError::Unreachable("the registry could not be reached".into())
            }
            FetchError::Timeout(_) if self.settings.guard.is_some() => {
                FetchError::Timeout("the registry did not answer in time".into())
            }
            e => e,
        }
    }

    /// Sends `method path` to one endpoint, answering one auth challenge.
    async fn request_from(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        accept: &str,
        repo: &RepoName,
        range: Option<&str>,
    ) -> Result<awc::ClientResponse, FetchError> {
        let url = format!("{endpoint}{path}");
        let scope = format!("repository:{repo}:pull");
        let mut auth = match self.tokens.borrow().get(&scope) {
            Some(t) => Auth::Bearer(t.to_string()),
            None if self.basic_required.get() => Auth::Basic,
            None => Auth::None,
        };
        for retried in [false, true] {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .insert_header((ACCEPT, accept));
            if let Some(range) = range {
                req = req.insert_header((RANGE, range));
            }
            let req = self.authorize(req, &auth);
            let started = std::time::Instant::now();
            let resp = req.send().await.map_err(|e| self.send_error(endpoint, e))?;
            METRICS
                .upstream_latency
                .get_or_create(&self.label)
                .observe(started.elapsed().as_secs_f64());
            if resp.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            auth = match challenge {
                Some(Challenge::Basic) if self.settings.credentials.is_some() => {
                    self.basic_required.set(true);
                    Auth::Basic
                }
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                }) => {
                    self.tokens.borrow_mut().forget(&scope);
                    let (token, ttl) = self
                        .token(
                            endpoint,
                            &realm,
                            service.as_deref(),
                            asked.as_deref().unwrap_or(&scope),
                        )
                        .await?;
                    self.tokens.borrow_mut().put(&scope, token.clone(), ttl);
                    Auth::Bearer(token)
                }
                _ => return Ok(resp),
            };
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Classifies an awc send error (the URL is named, never credentials),
    /// with a hint for the TLS failures operators can fix in the config. A
    /// guard refusal is logged here with its details, which clients never
    /// see.
    fn send_error(&self, target: &str, e: awc::error::SendRequestError) -> FetchError {
        use awc::error::{ConnectError, SendRequestError};
        match e {
            SendRequestError::Timeout => {
                FetchError::Timeout(format!("{target}: no response headers in time"))
            }
            SendRequestError::Connect(ConnectError::Io(e)) if guard::refusal_in(&e).is_some() => {
                slog::warn!(self.log, "refused by the upstream guard"; "target" => target, "reason" => %e);
                FetchError::Guarded
            }
            e => match tls_hint(&e.to_string()) {
                Some(hint) => FetchError::Unreachable(format!("{target}: {e} ({hint})")),
                None => FetchError::Unreachable(format!("{target}: {e}")),
            },
        }
    }

    /// Records this registry's state in `ociregistry_upstream_up` (not for
    /// unlisted registries: one `other` series cannot describe them all).
    fn set_up(&self, up: i64) {
        if !self.settings.unlisted {
            METRICS.upstream_up.get_or_create(&self.label).set(up);
        }
    }

    /// Adds the configured credentials to a request.
    fn with_credentials(&self, req: awc::ClientRequest) -> awc::ClientRequest {
        match &self.settings.credentials {
            Some(c) => req.basic_auth(&c.user, &c.password),
            None => req,
        }
    }

    /// Adds the chosen `Authorization` to a request.
    fn authorize(&self, req: awc::ClientRequest, auth: &Auth) -> awc::ClientRequest {
        match auth {
            Auth::None => req,
            Auth::Basic => self.with_credentials(req),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }

    /// Gets a bearer token from the realm `endpoint` named, with the
    /// configured credentials when there are some. The realm must be https
    /// unless the registry is trusted and itself plain http.
    async fn token(
        &self,
        endpoint: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, std::time::Duration), FetchError> {
        let trusted = self.settings.guard.is_none();
        auth::check_realm(realm, endpoint, trusted).map_err(|e| {
            slog::warn!(self.log, "token realm refused"; "realm" => realm, "error" => %e);
            FetchError::BadResponse(e.to_string())
        })?;
        METRICS.token_refreshes.get_or_create(&self.label).inc();
        let url = auth::token_url(realm, service, scope);
        let req = self.client.get(&url);
        let mut resp = self
            .with_credentials(req)
            .send()
            .await
            .map_err(|e| self.send_error(realm, e))?;
        check_status(&resp)?;
        let body = resp
            .body()
            .limit(MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| FetchError::BadResponse(format!("token answer: {e}")))?;
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| FetchError::BadResponse("token answer holds no token".into()))
    }
}

/// Which `Authorization` a request carries.
enum Auth {
    /// Anonymous.
    None,
    /// The configured user and password.
    Basic,
    /// A bearer token from the registry's realm.
    Bearer(String),
}

/// Maps a non-200 upstream status to what it means for the client.
fn check_status(resp: &awc::ClientResponse) -> Result<(), FetchError> {
    match resp.status() {
        StatusCode::OK => Ok(()),
        StatusCode::NOT_FOUND => Err(FetchError::NotFound),
        StatusCode::UNAUTHORIZED => Err(FetchError::Unauthorized),
        StatusCode::FORBIDDEN => Err(FetchError::Denied),
        StatusCode::TOO_MANY_REQUESTS => Err(FetchError::TooManyRequests {
            retry_after: resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }),
        s => Err(FetchError::BadResponse(format!("upstream answered {s}"))),
    }
}

/// `Content-Range: bytes START-LAST/TOTAL` as `(start, end, total)`, `end`
/// exclusive.
fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, last) = range.split_once('-')?;
    let (start, last, total): (u64, u64, u64) =
        (start.parse().ok()?, last.parse().ok()?, total.parse().ok()?);
    (start <= last && last < total).then_some((start, last + 1, total))
}

/// The response's `Content-Length`, if it sent a valid one.
fn content_length(resp: &awc::ClientResponse) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// What to change in the configuration for a TLS error, if it is one.
fn tls_hint(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let hints = [
        (
            "unknownissuer",
            "unknown issuer: set tls.ca to the registry's CA certificate",
        ),
        (
            "notvalidforname",
            "the certificate does not name this host: fix the url or the certificate",
        ),
        (
            "certificaterequired",
            "the server asked for a client certificate: set tls.cert and tls.key",
        ),
        (
            "badcertificate",
            "the server refused the client certificate: set tls.cert and tls.key",
        ),
        ("expired", "the server certificate has expired"),
        (
            "invalid peer certificate",
            "the server certificate is not trusted: check tls.ca",
        ),
    ];
    hints
        .iter()
        .find(|(needle, _)| e.contains(needle))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::tls_hint;

    #[test]
    fn tls_errors_get_hints() {
        let unknown = "Failed to connect to host: invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(unknown).unwrap().contains("tls.ca"));
        assert!(tls_hint("received fatal alert: CertificateRequired")
            .unwrap()
            .contains("tls.cert"));
        assert!(tls_hint("received fatal alert: BadCertificate")
            .unwrap()
            .contains("tls.cert"));
        assert_eq!(tls_hint("Connection refused (os error 111)"), None);
    }
}
