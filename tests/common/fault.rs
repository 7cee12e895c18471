//! A hand-written upstream for faults the real registry cannot produce:
//! connection resets mid-blob, wrong bytes, a transfer held at a gate,
//! no answer at all, and chosen error statuses; and for a hostile registry
//! that redirects or sends token challenges to a target of the test's
//! choosing. It answers `/token` with a bearer token, can serve HTTPS on
//! any loopback address, and records the `Authorization` headers it sees.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::body::SizedStream;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::Semaphore;

/// Chunk size the fault upstream sends blobs in.
const CHUNK: usize = 16 * 1024;

/// How the fault upstream answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Correct headers and bytes.
    Good,
    /// Announces the full length, sends half, then resets the connection.
    Reset,
    /// Announces the right length and sends other bytes.
    WrongBytes,
    /// Sends the first half, waits for [`FaultUpstream::open_gate`], then the rest.
    Gated,
    /// Never answers.
    Hang,
    /// Answers this status with an empty body (and `Retry-After: 7` on 429).
    Status(u16),
    /// Manifests only: correct bytes with a wrong `Docker-Content-Digest`.
    WrongDigestHeader,
    /// Announces the full length, sends half, then ends the body cleanly.
    Truncated,
    /// No `Content-Length`: the blob, then more bytes.
    ExtraBytes,
    /// Sends half, then nothing more, never closing.
    Stall,
    /// Sends half, waits for [`FaultUpstream::open_gate`], then resets.
    GatedReset,
    /// Manifests only: correct bytes without `Docker-Content-Digest`.
    NoDigestHeader,
    /// `307` to the [`FaultUpstream::set_target`] URL followed by the request's path.
    Redirect,
    /// `401` with a bearer challenge whose realm is the [`FaultUpstream::set_target`] URL.
    Challenge,
    /// Blobs: the whole blob (200) although a range was asked.
    IgnoreRange,
}

/// What the fault upstream serves and how.
struct State {
    /// The one blob it has.
    blob: Bytes,
    /// `sha256:<hex>` of `blob`.
    blob_digest: String,
    /// The one manifest it has (for any repository and tag).
    manifest: Bytes,
    /// Faults for the next requests, in order; then [`Fault::Good`].
    faults: Mutex<VecDeque<Fault>>,
    /// Requests answered, by kind.
    blob_gets: AtomicUsize,
    /// Manifest requests answered.
    manifest_gets: AtomicUsize,
    /// Opened by the test to release [`Fault::Gated`] transfers.
    gate: Semaphore,
    /// Where [`Fault::Redirect`] and [`Fault::Challenge`] send the server.
    target: Mutex<String>,
    /// Every request answered, token requests included.
    requests: AtomicUsize,
    /// The `Authorization` header of each request that had one.
    authorizations: Mutex<Vec<String>>,
    /// Whether `Range` requests of the blob are answered (206).
    ranges: std::sync::atomic::AtomicBool,
    /// Blob bytes sent, over all requests.
    blob_bytes: std::sync::atomic::AtomicU64,
}

/// A running fault upstream on 127.0.0.1.
pub struct FaultUpstream {
    state: Arc<State>,
    url: String,
    server: actix_web::dev::ServerHandle,
}

impl FaultUpstream {
    /// Serves `blob` (at its digest) and `manifest` (for any reference)
    /// over plain HTTP on 127.0.0.1.
    pub fn start(blob: Vec<u8>, manifest: Vec<u8>) -> FaultUpstream {
        Self::start_on("127.0.0.1:0", None, blob, manifest)
    }

    /// Like [`FaultUpstream::start`], listening on `addr` (`127.0.0.2:0`,
    /// `[::1]:0`), over HTTPS when `tls` is given.
    pub fn start_on(
        addr: &str,
        tls: Option<ociregistry_actors::upstream::ServerTlsConfig>,
        blob: Vec<u8>,
        manifest: Vec<u8>,
    ) -> FaultUpstream {
        let state = Arc::new(State {
            blob_digest: super::digest_of(&blob),
            blob: Bytes::from(blob),
            manifest: Bytes::from(manifest),
            faults: Mutex::new(VecDeque::new()),
            blob_gets: AtomicUsize::new(0),
            manifest_gets: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            target: Mutex::new(String::new()),
            requests: AtomicUsize::new(0),
            authorizations: Mutex::new(Vec::new()),
            ranges: std::sync::atomic::AtomicBool::new(false),
            blob_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let listener = TcpListener::bind(addr).expect("bind fault upstream");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().expect("local addr"));
        let server = super::serve_in_thread_tls(listener, tls, Arc::clone(&state), |cfg| {
            cfg.default_service(web::to(answer));
        });
        FaultUpstream { state, url, server }
    }

    /// `http(s)://ADDRESS:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ADDRESS:PORT` (`[::1]:PORT` for IPv6), the registry name clients use.
    pub fn host_port(&self) -> &str {
        self.url.split_once("://").expect("scheme").1
    }

    /// The URL [`Fault::Redirect`] and [`Fault::Challenge`] point to.
    pub fn set_target(&self, url: &str) {
        *self.state.target.lock().unwrap() = url.to_string();
    }

    /// From now on, answers `Range: bytes=A-B` requests of the blob with
    /// those bytes (206), the fault of the request applied half-way
    /// through them.
    pub fn serve_ranges(&self) {
        self.state.ranges.store(true, Ordering::SeqCst);
    }

    /// Blob bytes sent so far, over all requests.
    pub fn blob_bytes(&self) -> u64 {
        self.state.blob_bytes.load(Ordering::SeqCst)
    }

    /// Every request answered so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The `Authorization` headers received so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.authorizations.lock().unwrap().clone()
    }

    /// The blob's digest.
    pub fn blob_digest(&self) -> &str {
        &self.state.blob_digest
    }

    /// Queues faults for the next requests.
    pub fn push_faults(&self, faults: &[Fault]) {
        self.state.faults.lock().unwrap().extend(faults);
    }

    /// Blob GETs answered so far.
    pub fn blob_gets(&self) -> usize {
        self.state.blob_gets.load(Ordering::SeqCst)
    }

    /// Manifest GETs answered so far.
    pub fn manifest_gets(&self) -> usize {
        self.state.manifest_gets.load(Ordering::SeqCst)
    }

    /// Lets every gated transfer finish.
    pub fn open_gate(&self) {
        self.state.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.open_gate();
        drop(self.server.stop(false));
    }
}

async fn answer(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let path = req.path();
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(auth) = req.headers().get("authorization") {
        let auth = auth.to_str().unwrap_or("?").to_string();
        state.authorizations.lock().unwrap().push(auth);
    }
    if path == "/token" {
        return HttpResponse::Ok().json(serde_json::json!({"token": "fault-upstream-token"}));
    }
    let fault = state
        .faults
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Fault::Good);
    if path == "/v2/" || path == "/v2" {
        return HttpResponse::Ok().finish();
    }
    let is_manifest = path.contains("/manifests/");
    if is_manifest {
        state.manifest_gets.fetch_add(1, Ordering::SeqCst);
    } else {
        state.blob_gets.fetch_add(1, Ordering::SeqCst);
    }
    let target = state.target.lock().unwrap().clone();
    match fault {
        Fault::Hang => std::future::pending().await,
        Fault::Redirect => {
            return HttpResponse::TemporaryRedirect()
                .insert_header(("Location", format!("{target}{path}")))
                .finish()
        }
        Fault::Challenge => {
            return HttpResponse::Unauthorized()
                .insert_header((
                    "WWW-Authenticate",
                    format!(r#"Bearer realm="{target}",service="fault""#),
                ))
                .finish()
        }
        Fault::Status(code) => {
            let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap());
            if code == 429 {
                res.insert_header(("Retry-After", "7"));
            }
            return res.finish();
        }
        _ => {}
    }
    if is_manifest {
        let digest = if fault == Fault::WrongDigestHeader {
            super::digest_of(b"something else")
        } else {
            super::digest_of(&state.manifest)
        };
        let mut res = HttpResponse::Ok();
        res.content_type("application/vnd.oci.image.manifest.v1+json");
        if fault != Fault::NoDigestHeader {
            res.insert_header(("Docker-Content-Digest", digest));
        }
        return res.body(state.manifest.clone());
    }
    if !path.ends_with(&state.blob_digest) {
        return HttpResponse::NotFound().finish();
    }
    let blob = state.blob.clone();
    let len = blob.len() as u64;
    let half = blob.len() / 2;
    let data = match fault {
        Fault::WrongBytes => Bytes::from(blob.iter().map(|b| b ^ 0xff).collect::<Vec<u8>>()),
        Fault::ExtraBytes => Bytes::from([&blob[..], b"trailing bytes"].concat()),
        _ => blob,
    };
    let state = state.into_inner();
    let asked = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    if let (Some((first, last)), true, false) = (
        asked,
        state.ranges.load(Ordering::SeqCst),
        fault == Fault::IgnoreRange,
    ) {
        let end = (last + 1).min(len);
        let part = data.slice(first as usize..end as usize);
        let part_len = part.len() as u64;
        let body = async_stream(part, part_len as usize / 2, fault, state);
        return HttpResponse::PartialContent()
            .content_type("application/octet-stream")
            .insert_header(("Content-Range", format!("bytes {first}-{}/{len}", end - 1)))
            .body(SizedStream::new(part_len, body));
    }
    let body = async_stream(data, half, fault, state);
    let mut res = HttpResponse::Ok();
    res.content_type("application/octet-stream");
    if fault == Fault::ExtraBytes {
        return res.streaming(body);
    }
    res.body(SizedStream::new(len, body))
}

/// The blob body in chunks, with the fault applied at its half-way point.
fn async_stream(
    data: Bytes,
    half: usize,
    fault: Fault,
    state: Arc<State>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(0usize, move |pos| {
        let (data, state) = (data.clone(), Arc::clone(&state));
        async move {
            if pos >= data.len() {
                return None;
            }
            if pos == half {
                let reset = Some((Err(std::io::Error::other("reset")), data.len()));
                match fault {
                    Fault::Reset => return reset,
                    Fault::Truncated => return None,
                    Fault::Stall => std::future::pending::<()>().await,
                    Fault::Gated => drop(state.gate.acquire().await.expect("gate")),
                    Fault::GatedReset => {
                        drop(state.gate.acquire().await.expect("gate"));
                        return reset;
                    }
                    _ => {}
                }
            }
            let end = (pos + CHUNK)
                .min(data.len())
                .min(if pos < half { half } else { data.len() });
            state
                .blob_bytes
                .fetch_add((end - pos) as u64, Ordering::SeqCst);
            Some((Ok(data.slice(pos..end)), end))
        }
    })
}
