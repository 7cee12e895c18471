//! Three replicas on one bucket behind a round-robin TCP balancer (haproxy,
//! standing in for a Kubernetes Service), with a real S3 server (moto) and
//! the real upstream registry: a herd of clients, a replica killed in the
//! middle of it, and a rolling restart under load. Clients retry a failed
//! request as containerd does; a pull counts as failed when a request
//! still fails or any byte differs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::balancer::Balancer;
use common::s3::{S3Server, S3_SERVER};
use common::{client, docker_io_config, free_port, push_image, Server, TestImage, Upstream};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

/// Attempts per request before a pull fails.
const ATTEMPTS: u32 = 5;

/// A bucket, an upstream with one image, three replicas on fixed ports and
/// the balancer in front of them.
struct Cluster {
    s3: S3Server,
    upstream: Upstream,
    image: TestImage,
    replicas: Vec<Server>,
    balancer: Balancer,
}

impl Cluster {
    async fn start(layer_sizes: &[usize]) -> Cluster {
        let s3 = S3Server::start();
        s3.create_bucket("replicas").await;
        let upstream = Upstream::start();
        let image = TestImage::oci(91, layer_sizes);
        push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let replicas = ports
            .iter()
            .enumerate()
            .map(|(n, &port)| {
                let config = docker_io_config(&upstream.url(), "")
                    + &s3.storage_config("replicas", &format!("r{n}"));
                Server::start_on_port(&config, port)
            })
            .collect();
        let balancer = Balancer::start(&ports);
        Cluster {
            s3,
            upstream,
            image,
            replicas,
            balancer,
        }
    }

    /// Upstream GETs of each blob of the image, most first.
    fn upstream_gets_per_blob(&self) -> Vec<usize> {
        let mut gets: Vec<usize> = self
            .image
            .blobs()
            .map(|b| {
                self.upstream
                    .count_requests("GET", &format!("/blobs/{}", b.digest))
            })
            .collect();
        gets.sort_unstable_by(|a, b| b.cmp(a));
        gets
    }
}

/// The body of `url`, streamed into `sha256:<hex>` and its length (or the
/// whole body when `keep`), with up to [`ATTEMPTS`] tries.
async fn fetch(url: &str, keep: bool) -> Result<(String, Bytes), String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            // The client's back-off between tries, as containerd's.
            actix_web::rt::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let mut res = match client().get(url).send().await {
            Ok(res) if res.status().is_success() => res,
            Ok(res) => {
                last = format!("status {}", res.status());
                continue;
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let announced: Option<u64> = res
            .headers()
            .get(awc::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let (mut hasher, mut kept, mut failed) = (Sha256::new(), Vec::new(), None);
        let mut received = 0u64;
        while let Some(chunk) = res.next().await {
            match chunk {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    hasher.update(&chunk);
                    if keep {
                        kept.extend_from_slice(&chunk);
                    }
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        // A connection cut mid-body (a replica killed) can end the stream
        // quietly: the length tells, as clients check it.
        if failed.is_none() && announced.is_some_and(|n| n != received) {
            failed = Some(format!("{received} of {announced:?} bytes"));
        }
        match failed {
            None => {
                let digest = format!("sha256:{}", hex(&hasher.finalize()));
                return Ok((digest, Bytes::from(kept)));
            }
            Some(e) => last = e,
        }
    }
    Err(format!("{url}: {last}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One pull through `url`: the manifest by tag, then every blob.
async fn pull(url: &str, image: &TestImage) -> Result<(), String> {
    let manifest_url = format!("{url}/v2/library/app/manifests/1.0?ns=docker.io");
    let (_, manifest) = fetch(&manifest_url, true).await?;
    if manifest != image.manifest {
        return Err("the manifest differs".into());
    }
    for blob in image.blobs() {
        let blob_url = format!("{url}/v2/library/app/blobs/{}?ns=docker.io", blob.digest);
        let (digest, _) = fetch(&blob_url, false).await?;
        if digest != blob.digest {
            return Err(format!("{} arrived as {digest}", blob.digest));
        }
    }
    Ok(())
}

/// Runs `n` pulls at once; the failures.
async fn herd(url: &str, image: &TestImage, n: usize) -> Vec<String> {
    let pulls = (0..n).map(|_| pull(url, image));
    futures::future::join_all(pulls)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

fn tools() -> bool {
    common::e2e(&["docker-registry", "haproxy", S3_SERVER], false)
}

#[actix_web::test]
async fn a_herd_over_three_replicas_fetches_each_blob_at_most_once_per_replica() {
    if !tools() {
        return;
    }
    let cluster = Cluster::start(&[1 << 20, 8 << 20]).await;
    let failed = herd(&cluster.balancer.url(), &cluster.image, 50).await;
    assert_eq!(failed, Vec::<String>::new());
    let gets = cluster.upstream_gets_per_blob();
    eprintln!("upstream GETs per blob, 50 clients over 3 replicas: {gets:?}");
    assert!(gets.iter().all(|&g| (1..=3).contains(&g)), "{gets:?}");
}

#[actix_web::test]
async fn a_replica_killed_in_the_middle_of_a_herd_costs_no_pull() {
    if !tools() {
        return;
    }
    let mut cluster = Cluster::start(&[96 << 20]).await;
    let (url, image) = (cluster.balancer.url(), cluster.image.clone());
    let layer = image.layers[0].digest.clone();
    let all = herd(&url, &image, 20);
    futures::pin_mut!(all);
    // Once a replica fetches the layer, one of them dies.
    let (upstream, victim) = (&cluster.upstream, &mut cluster.replicas[0]);
    let kill = async {
        let fetching = || upstream.count_requests("GET", &layer) > 0;
        assert!(common::wait_for(Duration::from_secs(30), fetching).await);
        victim.kill();
    };
    let (failed, ()) = futures::future::join(all, kill).await;
    assert_eq!(failed, Vec::<String>::new());
    // Nothing half-written is visible: every object hashes to its name.
    let store = cluster.s3.client("replicas");
    let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
        .await
        .unwrap();
    for meta in listed {
        let key = meta.location.to_string();
        if let Some(hex) = key.strip_prefix("cache/blobs/sha256/") {
            let got = object_store::ObjectStoreExt::get(&*store, &meta.location)
                .await
                .unwrap();
            let bytes = got.bytes().await.unwrap();
            assert_eq!(common::digest_of(&bytes), format!("sha256:{hex}"), "{key}");
        }
    }
}

#[actix_web::test]
async fn a_rolling_restart_under_load_fails_no_pull() {
    if !tools() {
        return;
    }
    let mut cluster = Cluster::start(&[2 << 20]).await;
    let url = cluster.balancer.url();
    let done = Arc::new(AtomicBool::new(false));
    let (pulls, failures) = (AtomicUsize::new(0), std::sync::Mutex::new(Vec::new()));
    let image = cluster.image.clone();
    let load = futures::future::join_all((0..4).map(|_| async {
        while !done.load(Ordering::Relaxed) {
            if let Err(e) = pull(&url, &image).await {
                failures.lock().unwrap().push(e);
            }
            pulls.fetch_add(1, Ordering::Relaxed);
        }
    }));
    // The restarts block (processes), so they run beside the clients.
    let (mut replicas, stop) = (std::mem::take(&mut cluster.replicas), Arc::clone(&done));
    let restarts = actix_web::rt::task::spawn_blocking(move || {
        for replica in &mut replicas {
            // SIGTERM, drained, started again on its port, before the next.
            replica.terminate();
            let exited = replica.wait_exit(Duration::from_secs(60)).is_some();
            replica.restart();
            if !exited {
                stop.store(true, Ordering::Relaxed);
                panic!("a replica did not stop after SIGTERM");
            }
        }
        stop.store(true, Ordering::Relaxed);
        replicas
    });
    let (_, restarted) = futures::future::join(load, restarts).await;
    cluster.replicas = restarted.expect("the restarts");
    let failures = failures.into_inner().unwrap();
    let pulls = pulls.into_inner();
    eprintln!(
        "rolling restart of 3 replicas: {pulls} pulls, {} failed",
        failures.len()
    );
    assert_eq!(failures, Vec::<String>::new());
    assert!(pulls >= 4, "{pulls} pulls");
}
