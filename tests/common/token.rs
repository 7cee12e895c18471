//! A bearer-token server for CNCF Distribution's `auth.token` mode: signs
//! ES256 JWTs carrying the signing certificate in `x5c`, grants `pull` on
//! the scopes asked, anonymously or to one user, and counts what it issues.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::pki::Pki;

/// Service name the registry and the tokens agree on.
pub const SERVICE: &str = "ociregistry-test-registry";
/// Issuer the registry trusts.
pub const ISSUER: &str = "ociregistry-test-issuer";

struct State {
    key: EcdsaKeyPair,
    /// Base64 DER of the signing certificate.
    x5c: String,
    /// The one user (name, password); anonymous pulls are granted too when `anonymous`.
    user: (String, String),
    anonymous: bool,
    ttl_secs: u64,
    issued: AtomicUsize,
    refused: AtomicUsize,
}

/// A running token server on 127.0.0.1, over HTTPS with the PKI's server
/// certificate (realms of HTTPS registries must be HTTPS).
pub struct TokenServer {
    state: Arc<State>,
    url: String,
    server: actix_web::dev::ServerHandle,
}

impl TokenServer {
    /// Starts a token server signing with the PKI's signer key; tokens live `ttl_secs`.
    pub fn start(pki: &Pki, user: (&str, &str), anonymous: bool, ttl_secs: u64) -> TokenServer {
        let key_pem = std::fs::read_to_string(pki.path("signer-key.pem")).expect("signer key");
        let cert_pem = std::fs::read_to_string(pki.path("signer.pem")).expect("signer cert");
        let pkcs8 = STANDARD.decode(pem_body(&key_pem)).expect("key base64");
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .expect("PKCS#8 P-256 key");
        let state = Arc::new(State {
            key,
            x5c: pem_body(&cert_pem),
            user: (user.0.to_owned(), user.1.to_owned()),
            anonymous,
            ttl_secs,
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let url = format!("https://{}/token", listener.local_addr().expect("addr"));
        let tls = Some(pki.server_tls());
        let server = super::serve_in_thread_tls(listener, tls, Arc::clone(&state), |cfg| {
            cfg.default_service(web::to(issue));
        });
        TokenServer { state, url, server }
    }

    /// The realm URL.
    pub fn realm(&self) -> &str {
        &self.url
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Requests refused (bad credentials) so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Registry configuration lines (top-level `auth:`) trusting this server.
    pub fn registry_auth(&self, pki: &Pki) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.url,
            pki.path("signer.pem").display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

/// The base64 body of a single-block PEM file.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

async fn issue(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let user = match basic_user(&req) {
        Some((u, p))
            if (u.as_str(), p.as_str()) == (state.user.0.as_str(), state.user.1.as_str()) =>
        {
            u
        }
        None if state.anonymous => String::new(),
        _ => {
            state.refused.fetch_add(1, Ordering::SeqCst);
            return HttpResponse::Unauthorized().finish();
        }
    };
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string()).expect("query");
    let access: Vec<serde_json::Value> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let mut parts = scope.splitn(2, ':');
            let kind = parts.next()?.to_owned();
            let (name, _) = parts.next()?.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": ["pull"]}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + state.ttl_secs, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", state.issued.load(Ordering::SeqCst)),
        "access": access,
    });
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [state.x5c]});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = state
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("sign");
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    state.issued.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(serde_json::json!({"token": token, "expires_in": state.ttl_secs}))
}

/// The Basic credentials of a request, if any.
fn basic_user(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}
