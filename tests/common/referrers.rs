//! An upstream with the referrers API, which the real registry (2.8)
//! lacks: answers `GET /v2/<repo>/referrers/<digest>` from what the test
//! registered, as the OCI distribution spec 1.1 says (an image index,
//! `artifactType` filtering with `OCI-Filters-Applied`), or as a registry
//! without the API (404) or a broken one would; every other request goes
//! to the real registry behind it.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// How the referrers endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// As the spec says.
    Index,
    /// 404: no referrers API.
    Unsupported,
    /// 200 with a JSON document that is not an image index.
    NotAnIndex,
    /// 200 with an index larger than the mirror accepts.
    Oversized,
}

struct State {
    /// The real registry, `http://127.0.0.1:PORT`.
    registry: String,
    /// Referrer descriptors by subject digest.
    referrers: Mutex<HashMap<String, Vec<Value>>>,
    answer: Mutex<Answer>,
    /// Referrers requests answered.
    asked: AtomicUsize,
}

/// A running referrers front on 127.0.0.1.
pub struct ReferrersFront {
    state: Arc<State>,
    url: String,
    server: actix_web::dev::ServerHandle,
}

impl ReferrersFront {
    /// Starts in front of the registry at `registry_url`.
    pub fn start(registry_url: &str) -> ReferrersFront {
        let state = Arc::new(State {
            registry: registry_url.to_string(),
            referrers: Mutex::new(HashMap::new()),
            answer: Mutex::new(Answer::Index),
            asked: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind referrers front");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = super::serve_in_thread(listener, Arc::clone(&state), |cfg| {
            cfg.default_service(web::to(answer));
        });
        ReferrersFront { state, url, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lists `artifact` (a manifest descriptor; `artifactType` added) as a
    /// referrer of `subject`.
    pub fn refer(&self, subject: &str, mut artifact: Value, artifact_type: &str) {
        artifact["artifactType"] = json!(artifact_type);
        let mut all = self.state.referrers.lock().unwrap();
        all.entry(subject.to_string()).or_default().push(artifact);
    }

    /// The index the spec's answer for `subject` carries, unfiltered.
    pub fn index(&self, subject: &str) -> Vec<u8> {
        let all = self.state.referrers.lock().unwrap();
        index(all.get(subject).cloned().unwrap_or_default())
    }

    /// How the referrers endpoint answers from now on.
    pub fn set_answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Referrers requests answered so far.
    pub fn asked(&self) -> usize {
        self.state.asked.load(Ordering::SeqCst)
    }

    /// Stops answering anything.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

/// An image index of `entries`.
fn index(entries: Vec<Value>) -> Vec<u8> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    serde_json::to_vec(&index).unwrap()
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let path = req.uri().path();
    if let Some((_, subject)) = path.rsplit_once("/referrers/") {
        state.asked.fetch_add(1, Ordering::SeqCst);
        let oci_index = ("content-type", "application/vnd.oci.image.index.v1+json");
        return match *state.answer.lock().unwrap() {
            Answer::Unsupported => HttpResponse::NotFound().finish(),
            Answer::NotAnIndex => HttpResponse::Ok().json(json!({"tags": []})),
            Answer::Oversized => {
                let mut big = index(Vec::new());
                big.resize(5 << 20, b' ');
                HttpResponse::Ok().insert_header(oci_index).body(big)
            }
            Answer::Index => {
                let all = state.referrers.lock().unwrap();
                let mut entries = all.get(subject).cloned().unwrap_or_default();
                let query = web::Query::<HashMap<String, String>>::from_query(req.query_string());
                let wanted = query.ok().and_then(|q| q.get("artifactType").cloned());
                let mut res = HttpResponse::Ok();
                res.insert_header(oci_index);
                if let Some(wanted) = wanted {
                    entries.retain(|e| e["artifactType"] == json!(wanted));
                    res.insert_header(("OCI-Filters-Applied", "artifactType"));
                }
                res.body(index(entries))
            }
        };
    }
    forward(&req, body, &state.registry).await
}

/// Passes a request to the registry and its answer back.
async fn forward(req: &HttpRequest, body: web::Bytes, registry: &str) -> HttpResponse {
    let url = format!("{registry}{}", req.uri());
    let mut out = awc::Client::default().request(req.method().clone(), url);
    for (name, value) in req.headers() {
        if name != "host" {
            out = out.insert_header((name.clone(), value.clone()));
        }
    }
    let Ok(mut resp) = out.send_body(body).await else {
        return HttpResponse::BadGateway().finish();
    };
    let Ok(bytes) = resp.body().limit(64 << 20).await else {
        return HttpResponse::BadGateway().finish();
    };
    let mut back = HttpResponse::build(resp.status());
    for (name, value) in resp.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            back.insert_header((name.clone(), value.clone()));
        }
    }
    back.body(bytes)
}
