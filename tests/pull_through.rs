//! End to end: real clients (containerd's ctr, skopeo) pull through the
//! server from a real upstream (CNCF Distribution) on 127.0.0.1.

mod common;

use std::collections::BTreeSet;

use awc::http::StatusCode;
use common::{
    assert_success, client, digest_of, dir_blob_digests, docker_io_config, log_tail, push_image,
    push_index, read_dir_manifest, skopeo_copy_from_mirror, Containerd, Server, TestImage,
    TestIndex, Upstream,
};

/// An image pushed to the upstream, and what a pull of it must produce.
struct Pushed {
    /// `repo:tag` under docker.io.
    reference: String,
    /// The repository.
    repo: String,
    /// The tag.
    tag: String,
    /// Digest containerd records for the image.
    digest: String,
    /// The image manifest skopeo writes (the amd64 one for an index).
    manifest: Vec<u8>,
    /// Blobs of that manifest.
    blobs: BTreeSet<String>,
}

impl Pushed {
    fn image(repo: &str, tag: &str, img: &TestImage) -> Pushed {
        Pushed {
            reference: format!("docker.io/{repo}:{tag}"),
            repo: repo.into(),
            tag: tag.into(),
            digest: img.manifest_digest.clone(),
            manifest: img.manifest.clone(),
            blobs: img.blobs().map(|b| b.digest.clone()).collect(),
        }
    }

    fn index(repo: &str, tag: &str, index: &TestIndex) -> Pushed {
        let amd64 = &index.images[0];
        Pushed {
            digest: index.digest.clone(),
            ..Pushed::image(repo, tag, amd64)
        }
    }
}

/// skopeo (in-path registry form) and ctr (`?ns=`) pull every image and get
/// exactly the upstream's bytes.
fn pull_all(server: &Server, ctr: &mut Containerd, images: &[Pushed]) {
    ctr.reset();
    ctr.write_mirror_hosts(&server.url());
    for img in images {
        let dest = tempfile::tempdir().unwrap();
        let out = skopeo_copy_from_mirror(&server.host_port(), &img.reference, dest.path(), false);
        let context = |what: &str| {
            format!(
                "{what} {}; server log:\n{}",
                img.reference,
                log_tail(&server.log_path(), 8)
            )
        };
        assert_success(&out, &context("skopeo copy"));
        assert_eq!(
            read_dir_manifest(dest.path()),
            img.manifest,
            "{}: manifest bytes",
            img.reference
        );
        let blobs: BTreeSet<String> = dir_blob_digests(dest.path()).into_iter().collect();
        assert_eq!(blobs, img.blobs, "{}: blobs", img.reference);

        assert_success(
            &ctr.pull(&img.reference),
            &format!("ctr pull {}", img.reference),
        );
        assert_eq!(
            ctr.image_digest(&img.reference).as_deref(),
            Some(img.digest.as_str())
        );
    }
}

#[actix_web::test]
async fn ctr_and_skopeo_pull_through_then_from_cache_with_upstream_gone_and_after_restart() {
    if !common::e2e(common::REAL_CLIENTS, true) {
        return;
    }
    let mut upstream = Upstream::start();
    let client = client();
    let oci = TestImage::oci(1, &[300_000, 40_000]);
    let docker = TestImage::docker(2, &[200_000]);
    let multi = TestIndex::oci_multiarch(3);
    let docker_multi = TestIndex::docker_multiarch(6);
    push_image(&client, &upstream.url(), "library/oci-app", "1.0", &oci).await;
    push_image(
        &client,
        &upstream.url(),
        "library/docker-app",
        "v1.0-RC1",
        &docker,
    )
    .await;
    push_index(&client, &upstream.url(), "library/multi", "latest", &multi).await;
    push_index(
        &client,
        &upstream.url(),
        "library/docker-multi",
        "2",
        &docker_multi,
    )
    .await;
    push_image(
        &client,
        &upstream.url(),
        "group/sub.team/project/image",
        "x_1",
        &oci,
    )
    .await;
    let images = [
        Pushed::image("library/oci-app", "1.0", &oci),
        Pushed::image("library/docker-app", "v1.0-RC1", &docker),
        Pushed::index("library/multi", "latest", &multi),
        Pushed::index("library/docker-multi", "2", &docker_multi),
        Pushed::image("group/sub.team/project/image", "x_1", &oci),
    ];

    let mut server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    let mut ctr = Containerd::start();
    pull_all(&server, &mut ctr, &images);
    for img in &images {
        let path = format!("/v2/{}/manifests/{} ", img.repo, img.tag);
        assert_eq!(
            upstream.count_requests("GET", &path.replace(' ', "")),
            1,
            "{}: the tag is fetched from upstream once, then served from the cache",
            img.reference
        );
    }
    for blob in &images[0].blobs {
        assert_eq!(
            upstream.count_requests("GET", &format!("/blobs/{blob}")),
            1,
            "{blob}: shared by two repositories, fetched once"
        );
    }

    upstream.stop();
    pull_all(&server, &mut ctr, &images);

    server.shut_down();
    server.restart();
    pull_all(&server, &mut ctr, &images);

    // The cache directory is portable: a copy elsewhere serves the same images.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&server.cache_dir(), copy.path());
    server.kill();
    let moved = Server::start_with_cache("{}", copy.path(), &["--air-gapped"]);
    pull_all(&moved, &mut ctr, &images);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[actix_web::test]
async fn fifty_concurrent_gets_of_an_uncached_blob_make_one_upstream_get() {
    if !common::e2e(common::REAL_CLIENTS, true) {
        return;
    }
    let upstream = Upstream::start();
    let client = client();
    let big = TestImage::oci(4, &[50 << 20]);
    push_image(&client, &upstream.url(), "library/big", "1", &big).await;
    let server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    let digest = big.layers[0].digest.clone();
    let url = format!(
        "{}/v2/library/big/blobs/{digest}?ns=docker.io",
        server.url()
    );

    let gets = (0..50).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut res = client.get(&url).send().await.expect("response headers");
            assert_eq!(res.status(), StatusCode::OK);
            digest_of(&res.body().limit(64 << 20).await.expect("body"))
        }
    });
    let digests = futures::future::join_all(gets).await;
    assert!(
        digests.iter().all(|d| *d == digest),
        "every client got the right bytes"
    );
    assert_eq!(
        upstream.count_requests("GET", &format!("/blobs/{digest}")),
        1
    );
}

#[actix_web::test]
async fn bad_input_gets_oci_errors_and_ranges_work_on_cached_blobs() {
    if !common::e2e(common::REAL_CLIENTS, true) {
        return;
    }
    let upstream = Upstream::start();
    let client = client();
    let img = TestImage::oci(5, &[100_000]);
    push_image(&client, &upstream.url(), "library/app", "1", &img).await;
    let server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    let base = server.url();
    let layer = &img.layers[0];

    let expect = |status: u16, code: &'static str| (StatusCode::from_u16(status).unwrap(), code);
    let cases = [
        (
            "GET",
            "/v2/Upper/manifests/1?ns=docker.io",
            expect(400, "NAME_INVALID"),
        ),
        // A manifest reference that is neither a tag nor a digest: no such
        // manifest, and the upstream is not asked (checked below).
        (
            "GET",
            "/v2/library/app/manifests/bad!tag?ns=docker.io",
            expect(404, "MANIFEST_UNKNOWN"),
        ),
        (
            "GET",
            "/v2/library/app/manifests/.INVALID_MANIFEST_NAME?ns=docker.io",
            expect(404, "MANIFEST_UNKNOWN"),
        ),
        (
            "HEAD",
            "/v2/library/app/manifests/sha256:abc?ns=docker.io",
            expect(404, ""),
        ),
        (
            "GET",
            "/v2/library/app/blobs/sha256:..%2F..%2Fetc?ns=docker.io",
            expect(400, "DIGEST_INVALID"),
        ),
        (
            "GET",
            "/v2/library/app/manifests/1?ns=bad_host!",
            expect(400, "NAME_INVALID"),
        ),
        (
            "GET",
            "/v2/library/app/manifests/1",
            expect(404, "NAME_UNKNOWN"),
        ),
        (
            "GET",
            "/v2/library/app/manifests/missing?ns=docker.io",
            expect(404, "MANIFEST_UNKNOWN"),
        ),
        (
            "PUT",
            "/v2/library/app/manifests/1?ns=docker.io",
            expect(405, "UNSUPPORTED"),
        ),
        (
            "DELETE",
            "/v2/library/app/manifests/1?ns=docker.io",
            expect(405, "UNSUPPORTED"),
        ),
        (
            "POST",
            "/v2/library/app/blobs/uploads/?ns=docker.io",
            expect(405, "UNSUPPORTED"),
        ),
        (
            "PATCH",
            "/v2/library/app/blobs/uploads/x?ns=docker.io",
            expect(405, "UNSUPPORTED"),
        ),
    ];
    for (method, path, (status, code)) in cases {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut res = client
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        if method == awc::http::Method::HEAD {
            continue;
        }
        let body: serde_json::Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(body["errors"][0]["code"], code, "{method} {path}");
    }
    for reference in ["bad!tag", ".INVALID_MANIFEST_NAME", "sha256:abc"] {
        assert_eq!(upstream.count_requests("GET", reference), 0, "{reference}");
        assert_eq!(upstream.count_requests("HEAD", reference), 0, "{reference}");
    }
    // A 405 lists what the endpoint accepts, never the method refused.
    for (method, path, allow) in [
        (
            "PUT",
            "/v2/library/app/manifests/1?ns=docker.io",
            "GET, HEAD",
        ),
        ("POST", "/v2/library/app/blobs/uploads/?ns=docker.io", ""),
        ("GET", "/v2/library/app/blobs/uploads/x?ns=docker.io", ""),
    ] {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let res = client
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let got = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
    }
    for (path, status) in [("/health", "ok"), ("/ready", "ready")] {
        let mut res = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap()["status"],
            status
        );
    }
    let missing_blob = format!(
        "{base}/v2/library/app/blobs/{}?ns=docker.io",
        digest_of(b"missing")
    );
    assert_eq!(
        client.get(missing_blob).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    let blob_url = format!("{base}/v2/docker.io/library/app/blobs/{}", layer.digest);
    let mut whole = client.get(&blob_url).send().await.unwrap();
    assert_eq!(
        whole.body().limit(1 << 20).await.unwrap().to_vec(),
        layer.bytes
    );
    let mut part = client
        .get(&blob_url)
        .insert_header(("Range", "bytes=10-19"))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.body().await.unwrap().to_vec(),
        layer.bytes[10..20].to_vec()
    );
    let beyond = format!("bytes={}-", layer.bytes.len());
    let res = client
        .get(&blob_url)
        .insert_header(("Range", beyond))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let head = client
        .head(format!("{base}/v2/docker.io/library/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers().get("docker-content-digest").unwrap(),
        &img.manifest_digest
    );
    assert_eq!(
        head.headers().get("content-length").unwrap(),
        &img.manifest.len().to_string()
    );
    let entries: Vec<_> = std::fs::read_dir(server.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries.iter().all(
            |n| ["blobs", "manifests", "index.jsonl", "pulled.json", ".lock"]
                .contains(&n.to_str().unwrap())
        ),
        "{entries:?}"
    );
}

#[actix_web::test]
async fn a_node_cache_fills_from_a_cluster_cache_through_upstream_mirror() {
    if !common::e2e(common::REAL_CLIENTS, true) {
        return;
    }
    let upstream = Upstream::start();
    let img = TestImage::oci(7, &[60_000]);
    push_image(&client(), &upstream.url(), "library/chained", "1", &img).await;
    let central = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    let node = Server::start(&format!("upstreamMirror: {}\n", central.url()), &[]);

    let mut ctr = Containerd::start();
    let chained = [Pushed::image("library/chained", "1", &img)];
    pull_all(&node, &mut ctr, &chained);
    let central_log = central.log_contents();
    assert!(
        central_log.contains("/v2/library/chained/manifests/1?ns=docker.io"),
        "the node asks the central cache for docker.io's image by ?ns=: {central_log}"
    );
    assert_eq!(
        upstream.count_requests("GET", "/v2/library/chained/manifests/1"),
        1
    );
}

#[actix_web::test]
async fn one_clients_accept_never_changes_what_another_client_gets() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let list = TestIndex::docker_multiarch(77);
    push_index(&client(), &upstream.url(), "library/multi", "1", &list).await;
    let server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    let url = format!("{}/v2/library/multi/manifests/1?ns=docker.io", server.url());
    let get = |accept: &'static str| {
        let request = client().get(url.as_str());
        async move {
            let mut res = match accept {
                "" => request.send().await.unwrap(),
                a => request.insert_header(("Accept", a)).send().await.unwrap(),
            };
            let kind = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            (res.status(), kind, res.body().await.unwrap())
        }
    };
    // The first client accepts image manifests only: the tag is a list,
    // so it gets 404, never another document.
    let (status, _, _) = get("application/vnd.docker.distribution.manifest.v2+json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Every other client still gets the list, byte-exact.
    for accept in [
        "",
        "application/vnd.docker.distribution.manifest.list.v2+json, */*",
    ] {
        let (status, kind, body) = get(accept).await;
        assert_eq!(status, StatusCode::OK, "Accept {accept:?}");
        assert_eq!(kind.as_deref(), Some(list.media_type.as_str()));
        assert_eq!(digest_of(&body), list.digest);
    }
    // An excluded type (q=0) is not accepted either.
    let (status, _, _) =
        get("application/vnd.docker.distribution.manifest.list.v2+json;q=0, application/vnd.oci.image.manifest.v1+json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn a_manifest_is_typed_by_its_own_media_type_not_the_upstreams_header() {
    // The fault upstream labels every manifest as an OCI image manifest;
    // this one declares the Docker schema 2 type.
    let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
    let upstream = common::FaultUpstream::start(b"blob".to_vec(), docker.to_vec());
    let server = Server::start(&docker_io_config(upstream.url(), ""), &[]);
    let url = format!("{}/v2/library/app/manifests/1?ns=docker.io", server.url());
    for round in ["fetched", "cached"] {
        let mut res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{round}");
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/vnd.docker.distribution.manifest.v2+json",
            "{round}"
        );
        assert_eq!(
            res.headers().get("x-content-type-options").unwrap(),
            "nosniff"
        );
        assert_eq!(res.body().await.unwrap(), &docker[..]);
    }
    let missing = client()
        .get(format!("{}/v2/", server.url()) + "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
}

#[actix_web::test]
async fn tags_are_listed_through_the_mirror_page_by_page_and_from_the_cache_offline() {
    if !common::e2e(&["docker-registry", "skopeo"], false) {
        return;
    }
    let mut upstream = Upstream::start();
    let img = TestImage::oci(21, &[10_000]);
    for tag in ["2.0", "1.0", "1.1"] {
        push_image(&client(), &upstream.url(), "library/app", tag, &img).await;
    }
    push_image(&client(), &upstream.url(), "library/other", "5", &img).await;
    // Every list is asked of the upstream again (tagTtl 0).
    let config = docker_io_config(&upstream.url(), "tagTtl: 0s\n");
    let mut server = Server::start(&config, &[]);

    // skopeo, in-path form.
    let repo = format!("docker://{}/docker.io/library/app", server.host_port());
    let out = common::skopeo(&["list-tags", "--tls-verify=false", &repo]);
    assert_success(&out, "skopeo list-tags");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["Tags"], serde_json::json!(["1.0", "1.1", "2.0"]));

    // containerd's form, two to a page: the link comes back to the mirror.
    let get = |path: String| async move {
        let mut res = client().get(&path).send().await.unwrap();
        let header = |name| {
            res.headers()
                .get(name)
                .map(|v: &awc::http::header::HeaderValue| v.to_str().unwrap().to_string())
        };
        let (link, cache) = (header("link"), header("x-cache"));
        let body: serde_json::Value = res.json().await.unwrap();
        (res.status(), body, link, cache)
    };
    let base = server.url();
    let (status, body, link, cache) =
        get(format!("{base}/v2/library/app/tags/list?n=2&ns=docker.io")).await;
    // Asked again: a revalidated listing is a hit.
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("HIT")));
    assert_eq!(
        body,
        serde_json::json!({"name": "library/app", "tags": ["1.0", "1.1"]})
    );
    let next = "/v2/library/app/tags/list?n=2&last=1.1&ns=docker.io";
    assert_eq!(link, Some(format!("<{next}>; rel=\"next\"")));
    let (_, body, link, _) = get(format!("{base}{next}")).await;
    assert_eq!(body["tags"], serde_json::json!(["2.0"]));
    assert_eq!(link, None);

    // Bad input.
    for (query, code) in [
        ("n=-1", "PAGINATION_NUMBER_INVALID"),
        ("n=many", "PAGINATION_NUMBER_INVALID"),
        ("n=99999999999999999999999", "PAGINATION_NUMBER_INVALID"),
        ("last=bad!tag", "TAG_INVALID"),
    ] {
        let url = format!("{base}/v2/library/app/tags/list?{query}&ns=docker.io");
        let (status, body, _, _) = get(url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["errors"][0]["code"], code, "{query}");
    }
    // n=0: an empty page with a link to the rest is not useful; none.
    let (status, body, _, _) =
        get(format!("{base}/v2/library/app/tags/list?n=0&ns=docker.io")).await;
    assert_eq!(
        (status, body["tags"].clone()),
        (StatusCode::OK, serde_json::json!([]))
    );

    // A tag pushed later is listed (the list is revalidated).
    push_image(&client(), &upstream.url(), "library/app", "3.0", &img).await;
    let all = format!("{base}/v2/library/app/tags/list?ns=docker.io");
    let (_, body, _, _) = get(all.clone()).await;
    let every = serde_json::json!(["1.0", "1.1", "2.0", "3.0"]);
    assert_eq!(body["tags"], every);
    // A repository never listed, one image pulled.
    let other = format!("{base}/v2/library/other/manifests/5?ns=docker.io");
    assert_eq!(
        client().get(other).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Offline: the last upstream list; or, never listed, the tags the cache knows.
    upstream.stop();
    let others = |base: &str| format!("{base}/v2/library/other/tags/list?ns=docker.io");
    for (url, tags) in [(all, &every), (others(&base), &serde_json::json!(["5"]))] {
        let (status, body, _, cache) = get(url.clone()).await;
        assert_eq!(
            (status, cache.as_deref()),
            (StatusCode::OK, Some("STALE")),
            "{url}"
        );
        assert_eq!(&body["tags"], tags, "{url}");
    }

    // After a restart, air-gapped: the journal keeps the list.
    server.kill();
    let server = Server::start_with_cache(&config, &server.cache_dir(), &["--air-gapped"]);
    let base = server.url();
    let page = format!("{base}/v2/docker.io/library/app/tags/list?n=3");
    let (status, body, link, cache) = get(page).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("STALE")));
    assert_eq!(body["tags"], serde_json::json!(["1.0", "1.1", "2.0"]));
    let next = "/v2/docker.io/library/app/tags/list?n=3&last=2.0";
    assert_eq!(link, Some(format!("<{next}>; rel=\"next\"")));
    let (_, body, _, _) = get(others(&base)).await;
    assert_eq!(body["tags"], serde_json::json!(["5"]));
}
