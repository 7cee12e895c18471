//! The whole server in this test's process: `server::serve` on a listener
//! the test bound, a cache in a temporary directory, the fault upstream
//! (served from this process too) as the registry, and a shutdown the test
//! triggers. No root, no external tool, no child process.

mod common;

use std::net::TcpListener;
use std::path::Path;

use awc::http::StatusCode;
use clap::Parser;
use common::{client, digest_of, docker_io_config, Fault, FaultUpstream};
use ociregistry::cli::Cli;
use ociregistry::config::Config;
use ociregistry::server::{serve, Start};
use tokio::sync::oneshot;

/// These servers stop at once (no clients to hand over to).
const NO_DELAY: &str = "shutdownDelay: 0s\n";

/// A server of this process and the means to stop it.
struct InProcess {
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// Resolves the server's shutdown future.
    stop: oneshot::Sender<()>,
    /// The server's task: its result once it stopped.
    task: tokio::task::JoinHandle<Result<(), ociregistry::server::StartError>>,
}

impl InProcess {
    /// Starts the server on `127.0.0.1:0` with `config_yaml`, caching in `cache`.
    fn start(config_yaml: &str, cache: &Path) -> InProcess {
        let config_file = cache.with_extension("yaml");
        std::fs::write(&config_file, config_yaml).unwrap();
        let cli = Cli::parse_from([
            "ociregistry",
            "--config-file",
            config_file.to_str().unwrap(),
            "--image-path",
            cache.to_str().unwrap(),
            "serve",
        ]);
        let config = Config::load(&cli).unwrap().config;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
            "test"
        };
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let task = actix_web::rt::spawn(serve(
            config,
            vec![listener],
            Start::default(),
            shutdown,
            log,
        ));
        InProcess { url, stop, task }
    }

    /// GETs `path` (with its query) from the server: status and body.
    async fn get(&self, path: &str) -> (StatusCode, bytes::Bytes) {
        let mut res = client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let body = res.body().limit(64 << 20).await.unwrap();
        (res.status(), body)
    }

    /// Stops the server and waits until it has drained and returned.
    async fn shut_down(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[actix_web::test]
async fn pulls_through_the_server_in_this_process_and_stops_on_demand() {
    let blob: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
    let upstream = FaultUpstream::start(blob.clone(), manifest.to_vec());
    upstream.push_faults(&[Fault::Gated]);
    let cache = tempfile::tempdir().unwrap();
    let server = InProcess::start(
        &docker_io_config(upstream.url(), NO_DELAY),
        &cache.path().join("cache"),
    );
    let blob_url = format!(
        "{}/v2/library/app/blobs/{}?ns=docker.io",
        server.url,
        upstream.blob_digest()
    );

    // Twenty clients ask at once while the upstream holds its transfer:
    // one upstream fetch answers them all.
    let gets = (0..20).map(|_| async {
        let mut res = client().get(&blob_url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.body().limit(64 << 20).await.unwrap()
    });
    let all = futures::future::join_all(gets);
    futures::pin_mut!(all);
    let opened = async {
        let asked = || upstream.blob_gets() == 1;
        assert!(common::wait_for(std::time::Duration::from_secs(10), asked).await);
        upstream.open_gate();
    };
    let (bodies, ()) = futures::future::join(all, opened).await;
    for body in bodies {
        assert_eq!(digest_of(&body), upstream.blob_digest());
    }
    assert_eq!(upstream.blob_gets(), 1);

    let got = server.get("/v2/library/app/manifests/1?ns=docker.io").await;
    assert_eq!(got, (StatusCode::OK, bytes::Bytes::from_static(manifest)));

    server.shut_down().await;
    assert!(common::wait_stored(
        &cache.path().join("cache"),
        upstream.blob_digest()
    ));
}

#[actix_web::test]
async fn a_failed_fetch_is_not_remembered_and_the_cache_outlives_the_server() {
    let blob: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
    let upstream = FaultUpstream::start(blob, manifest.to_vec());
    upstream.push_faults(&[Fault::Status(500)]);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let server = InProcess::start(&docker_io_config(upstream.url(), NO_DELAY), &cache_dir);
    let path = format!(
        "/v2/library/app/blobs/{}?ns=docker.io",
        upstream.blob_digest()
    );
    let (status, _) = server.get(&path).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The next request fetches again, and succeeds.
    let (status, body) = server.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(digest_of(&body), upstream.blob_digest());
    assert_eq!(upstream.blob_gets(), 2);
    let manifest_path = "/v2/library/app/manifests/1?ns=docker.io";
    assert_eq!(server.get(manifest_path).await.0, StatusCode::OK);
    server.shut_down().await;

    // A new server on the same cache, air-gapped: both come from the cache.
    drop(upstream);
    let server = InProcess::start(
        "airGapped: true\nshutdownDelay: 0s\nregistries:\n  - name: docker.io\n    urls: [http://127.0.0.1:9]\n",
        &cache_dir,
    );
    assert_eq!(server.get(&path).await, (StatusCode::OK, body));
    let cached = (StatusCode::OK, bytes::Bytes::from_static(manifest));
    assert_eq!(server.get(manifest_path).await, cached);
    server.shut_down().await;
}

#[actix_web::test]
async fn the_catalog_lists_the_cached_repositories_page_by_page() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
    let upstream = FaultUpstream::start(b"blob".to_vec(), manifest.to_vec());
    let cache = tempfile::tempdir().unwrap();
    let server = InProcess::start(
        &docker_io_config(upstream.url(), NO_DELAY),
        &cache.path().join("cache"),
    );
    for repo in ["library/b", "other/c", "library/a"] {
        let path = format!("/v2/{repo}/manifests/1?ns=docker.io");
        assert_eq!(server.get(&path).await.0, StatusCode::OK);
    }
    let url = server.url.clone();
    let page = |path: &'static str| {
        let url = url.clone();
        async move {
            let mut res = client().get(format!("{url}{path}")).send().await.unwrap();
            let link = res
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = res.json().await.unwrap();
            (res.status(), body, link)
        }
    };
    let all = serde_json::json!({"repositories": [
        "docker.io/library/a", "docker.io/library/b", "docker.io/other/c"]});
    assert_eq!(page("/v2/_catalog").await, (StatusCode::OK, all, None));
    let (status, first, link) = page("/v2/_catalog?n=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        first,
        serde_json::json!({"repositories": ["docker.io/library/a", "docker.io/library/b"]})
    );
    assert_eq!(
        link.as_deref(),
        Some("</v2/_catalog?n=2&last=docker.io/library/b>; rel=\"next\"")
    );
    let (_, rest, link) = page("/v2/_catalog?n=2&last=docker.io/library/b").await;
    assert_eq!(
        rest,
        serde_json::json!({"repositories": ["docker.io/other/c"]})
    );
    assert_eq!(link, None, "the last page");
    for bad in [
        "/v2/_catalog?n=-1",
        "/v2/_catalog?n=two",
        "/v2/_catalog?n=99999999999999999999999",
    ] {
        let (status, body, _) = page(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID",
            "{bad}"
        );
    }
    server.shut_down().await;

    let off = InProcess::start(
        &docker_io_config(upstream.url(), "shutdownDelay: 0s\ncatalog: false\n"),
        &cache.path().join("cache"),
    );
    let (status, _) = off.get("/v2/_catalog").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    off.shut_down().await;
}

#[actix_web::test]
async fn a_tag_list_in_flight_counts_toward_the_fetch_limits() {
    let blob: Vec<u8> = (0..50_000u32).map(|i| (i % 239) as u8).collect();
    let upstream = FaultUpstream::start(blob, b"{}".to_vec());
    upstream.push_faults(&[Fault::Hang]);
    let cache = tempfile::tempdir().unwrap();
    let extra = "shutdownDelay: 0s\ndrainTimeout: 1s\npullTimeout: 2000\nmaxFetches: 1\n";
    let server = InProcess::start(
        &docker_io_config(upstream.url(), extra),
        &cache.path().join("cache"),
    );
    let blob_path = format!(
        "/v2/library/app/blobs/{}?ns=docker.io",
        upstream.blob_digest()
    );
    // A client lists tags of an upstream that never answers.
    let listing = server.get("/v2/library/app/tags/list?ns=docker.io");
    let meanwhile = async {
        let asked = || upstream.blob_gets() == 1;
        assert!(common::wait_for(std::time::Duration::from_secs(10), asked).await);
        // The only fetch slot is the list's: another client waits for it.
        let (status, _) = server.get(&blob_path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    };
    let ((status, _), ()) = futures::future::join(listing, meanwhile).await;
    // The client's wait timed out: it got what the cache knows.
    assert_eq!(status, StatusCode::OK);
    // The slot frees when the upstream request itself times out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let (status, body) = server.get(&blob_path).await;
        if status == StatusCode::OK {
            break body;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            std::time::Instant::now() < deadline,
            "the list's slot never freed"
        );
        actix_web::rt::time::sleep(common::POLL_INTERVAL).await;
    };
    assert_eq!(digest_of(&body), upstream.blob_digest());
    server.shut_down().await;
}

#[actix_web::test]
async fn referrers_revalidate_in_the_background_and_answer_air_gapped_after_a_restart() {
    // A registry with the referrers API (and nothing else: no registry behind it).
    let front = common::referrers::ReferrersFront::start("http://127.0.0.1:9");
    let subject = digest_of(b"subject");
    let artifact = |n: u8| {
        let digest = digest_of(&[n]);
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": 1})
    };
    front.refer(&subject, artifact(1), "sig");
    front.refer(&subject, artifact(2), "sbom");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let extra = "tagTtl: 0s\nstaleWhileRevalidate: true\nshutdownDelay: 0s\n";
    let server = InProcess::start(&docker_io_config(front.url(), extra), &cache_dir);
    let path = format!("/v2/library/app/referrers/{subject}?ns=docker.io");
    let get = |url: String| async move {
        let mut res = client().get(url).send().await.unwrap();
        let cache = res.headers().get("x-cache").cloned();
        let filters = res.headers().get("oci-filters-applied").cloned();
        let body = res.body().await.unwrap();
        (
            res.status(),
            cache.map(|v| v.to_str().unwrap().to_string()),
            filters,
            body,
        )
    };
    let url = format!("{}{path}", server.url);
    let (status, cache_outcome, _, first) = get(url.clone()).await;
    assert_eq!(
        (status, cache_outcome.as_deref()),
        (StatusCode::OK, Some("MISS"))
    );
    assert_eq!(first, front.index(&subject));

    // The upstream's list grows: the kept one answers at once, and is
    // asked again in the background.
    front.refer(&subject, artifact(3), "sig");
    let (_, cache_outcome, _, stale) = get(url.clone()).await;
    assert_eq!((cache_outcome.as_deref(), stale), (Some("STALE"), first));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let grown = front.index(&subject);
    while get(url.clone()).await.3 != grown {
        assert!(std::time::Instant::now() < deadline, "never revalidated");
        actix_web::rt::time::sleep(common::POLL_INTERVAL).await;
    }
    server.shut_down().await;

    // Restarted air-gapped: kept, and filtered here.
    drop(front);
    let air_gapped = "airGapped: true\nshutdownDelay: 0s\nregistries:\n  - name: docker.io\n    urls: [http://127.0.0.1:9]\n";
    let server = InProcess::start(air_gapped, &cache_dir);
    let url = format!("{}{path}&artifactType=sig", server.url);
    let (status, cache_outcome, filters, sigs) = get(url).await;
    assert_eq!(
        (status, cache_outcome.as_deref()),
        (StatusCode::OK, Some("STALE"))
    );
    assert_eq!(filters.unwrap(), "artifactType");
    let index: serde_json::Value = serde_json::from_slice(&sigs).unwrap();
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [digest_of(&[1]), digest_of(&[3])]);
    server.shut_down().await;
}
